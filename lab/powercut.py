"""Power cuts and kill -9 for a box whose disk is a set of partition images on loop devices.

A power cut is modelled as the kernel would see it: every process of the box gets SIGKILL,
then the disk is taken as it is ON THE DEVICE — each loop device's backing file is copied.
The copy holds exactly what the loop devices have received (the loop driver writes into its
backing file, so a read of that file sees every block the file systems submitted); the dirty
pages still in the mounted file systems' caches (delayed allocation, an uncommitted journal
transaction, dirty buffer heads) never reached the loop device and so are not in it — that is
what a power cut loses. Then the old mounts are unmounted and the old loop devices detached:
whatever they flush on the way goes into the old backing files, which are discarded, and the
copies are attached in their place as the new disk. The copy is taken only while no write is in
flight and repeated until the loop devices' write counters (/sys/block/loopN/stat) did not move
during it, so it is one point in time even if the kernel's flusher or jbd2 wakes up meanwhile.

Limits: the SD card's own volatile write cache (a card that acknowledges a flush it has not
made durable) is not modelled: a flush on a loop device reaches the backing file's page cache,
which we copy. Torn sectors inside a single write are not modelled either. Block-level replay
of a write log (dm-log-writes) would be finer, but this kernel has no device-mapper.

kill -9 alone is SIGKILL to the same processes with the disk kept as it is: the kernel still
writes back its caches (here, when the old mounts are unmounted cleanly before the next boot).

Where a cut must land at an exact point, the process there freezes itself (SIGSTOP) and the
harness cuts once it sees it stopped: the tryboot backend's own test hook at its autoboot.txt
write (armed per boot through lab.rauc's backend environment), a `rauc` shim for `rauc info`,
a frozen web page for the health check's web step. Nothing after the point has run then.
The matrix (Cell, run_matrix) also installs a bad build and cuts during its rollback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from lab.wait import wait_until

SNAPSHOT_TRIES = 50  # a copy raced by the flusher is retried; 50 races in a row is a bug


class CutMode(StrEnum):
    KILL9 = "kill -9"
    POWER = "power cut"


class DiskError(RuntimeError):
    """A loop device, mount or copy step failed; the message names it and the fix."""


def _run(argv: Sequence[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise DiskError(f"{argv[0]} is missing: install util-linux/e2fsprogs") from None
    if done.returncode != 0:
        raise DiskError(f"{what}: `{' '.join(argv)}` failed ({done.returncode}): "
                        f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


# -- processes ---------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (a snapshot of /proc)."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(tree.get(p, []))
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class Processes:
    """The box's processes: spawned here in a session of their own, or adopted (started by
    another lab module). `kill()` stops every one of them and everything they forked at
    once (SIGSTOP the whole tree until it stops growing, then SIGKILL), like a power cut."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], log: Path,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(list(argv), env=dict(env), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=cwd, start_new_session=True)
        self.procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen[Any]) -> None:
        self.procs.append(proc)

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def kill(self) -> None:
        """SIGKILL every process of the box and its children; reap what is ours."""
        stopped: set[int] = set()
        while True:
            tree = {d for p in self.procs if p.poll() is None for d in descendants(p.pid)}
            if not tree - stopped:
                break
            for pid in tree - stopped:
                _signal(pid, signal.SIGSTOP)
            stopped |= tree
        for pid in stopped:
            _signal(pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(10)
        wait_until(lambda: not any(_exists(pid) for pid in stopped), 10,
                   "the killed processes to be gone")
        self.procs.clear()


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# -- the disk ----------------------------------------------------------------------------

def _loop_name(device: str) -> str:
    return Path(device).name


def write_counters(device: str) -> tuple[int, ...]:
    """The block layer's write-side figures of a device: write I/Os, write sectors,
    in flight, discard I/Os, discard sectors (in flight first, so callers can check it)."""
    fields = Path(f"/sys/block/{_loop_name(device)}/stat").read_text().split()
    return (int(fields[8]), int(fields[4]), int(fields[6]), int(fields[11]), int(fields[13]))


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` keeping holes (only data extents are read: fast on small images)."""
    size = src.stat().st_size
    with src.open("rb") as fin, dst.open("wb") as fout:
        fout.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole is left
                raise
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            _copy_range(fin, fout, start, end)
            offset = end


def _copy_range(fin: IO[bytes], fout: IO[bytes], start: int, end: int) -> None:
    pos = start
    while pos < end:
        chunk = os.pread(fin.fileno(), min(4 << 20, end - pos), pos)
        if not chunk:
            break
        os.pwrite(fout.fileno(), chunk, pos)
        pos += len(chunk)


@dataclass
class Disk:
    """Partition images (name -> file) attached to loop devices, and what is mounted from
    them. Files stay where they are across a power cut: the surviving copies replace them."""

    images: dict[str, Path]
    devices: dict[str, str] = field(default_factory=dict)
    mounts: list[Path] = field(default_factory=list)

    def attach(self) -> Disk:
        for name, image in self.images.items():
            if name not in self.devices:
                self.devices[name] = _run(["losetup", "--find", "--show", str(image)],
                                          f"attaching {image}").strip()
        return self

    def device(self, name: str) -> str:
        if name not in self.devices:
            raise DiskError(f"partition {name!r} is not attached (attach() the disk first)")
        return self.devices[name]

    def fsck(self, name: str) -> int:
        """`e2fsck -p` as the boot would run it; its exit code (0 clean, 1 fixed; 4 and up:
        left unfixed, which fails the boot)."""
        done = subprocess.run(["e2fsck", "-p", self.device(name)], capture_output=True,
                              text=True, timeout=60, check=False)
        if done.returncode >= 4:
            raise DiskError(f"fsck of {name} ({self.device(name)}) left errors: "
                            f"{(done.stdout + done.stderr).strip()}")
        return done.returncode

    def mount(self, name: str, where: Path, *, readonly: bool = False,
              fstype: str = "ext4") -> Path:
        where.mkdir(parents=True, exist_ok=True)
        opts = ["-o", "ro"] if readonly else []
        _run(["mount", "-t", fstype, *opts, self.device(name), str(where)], f"mounting {name}")
        self.mounts.append(where)
        return where

    def unmount(self, where: Path) -> None:
        """Unmount `where` (lazily when a leftover process still holds it)."""
        done = subprocess.run(["umount", str(where)], capture_output=True, timeout=60,
                              check=False)
        if done.returncode != 0 and os.path.ismount(where):
            _run(["umount", "-l", str(where)], f"unmounting {where}")
        if where in self.mounts:
            self.mounts.remove(where)

    def release(self) -> None:
        """Unmount everything mounted from the disk and detach its loop devices."""
        for where in reversed(list(self.mounts)):
            self.unmount(where)
        for where in _mounts_of(set(self.devices.values())):
            self.unmount(where)
        for name, device in list(self.devices.items()):
            _run(["losetup", "--detach", device], f"detaching {name} ({device})")
            del self.devices[name]

    def snapshot(self, suffix: str = ".cut") -> dict[str, Path]:
        """Copy every image as the loop devices have received it, at one point in time:
        retried while a write was in flight or completed during the copy."""
        copies = {n: p.with_name(p.name + suffix) for n, p in self.images.items()}
        devices = [self.device(n) for n in self.images]
        for _ in range(SNAPSHOT_TRIES):
            before = [write_counters(d) for d in devices]
            if any(c[0] for c in before):
                time.sleep(0.005)  # a write is being carried out; take the disk after it
                continue
            for name, image in self.images.items():
                sparse_copy(image, copies[name])
            if [write_counters(d) for d in devices] == before:
                return copies
        raise DiskError(f"no quiet moment to copy {sorted(self.images)} in {SNAPSHOT_TRIES} "
                        "tries: something keeps writing to the loop devices")


def _mounts_of(devices: set[str]) -> list[Path]:
    """Mount points whose source is one of `devices`, deepest first."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target = line.split()[:2]
        if source in devices:
            found.append(Path(target.replace("\\040", " ")))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


# -- the cut -----------------------------------------------------------------------------

def power_cut(procs: Processes, disk: Disk) -> Disk:
    """Kill every process, keep only what reached the loop devices, and return the disk
    as the next boot finds it (same image paths, detached: the boot attaches it)."""
    procs.kill()
    copies = disk.snapshot()
    disk.release()  # what unmounting flushes lands in the old files, thrown away next
    for name, copy in copies.items():
        os.replace(copy, disk.images[name])
    return Disk(dict(disk.images))


def kill9(procs: Processes, disk: Disk) -> Disk:
    """Kill every process; the kernel keeps its caches and writes them back (the mounts
    are released cleanly, as the reboot after it would). Returns the disk, detached."""
    procs.kill()
    disk.release()
    return Disk(dict(disk.images))


def cut(mode: CutMode, procs: Processes, disk: Disk) -> Disk:
    return power_cut(procs, disk) if mode is CutMode.POWER else kill9(procs, disk)


@contextlib.contextmanager
def attached(disk: Disk) -> Iterator[Disk]:
    """The disk attached for the block; released (unmounted, detached) afterwards."""
    try:
        yield disk.attach()
    finally:
        disk.release()


# -- the matrix's output -----------------------------------------------------------------

@dataclass
class Outcome:
    """What one cell of the matrix found after the cut and the boot(s)."""

    step: str
    mode: str
    expected_slot: str
    came_up: bool = False
    slot: str = ""
    version: str = ""
    phase: str = ""
    message: str = ""
    config_intact: bool = False
    records_intact: bool = False
    boots: int = 0
    fsck: list[int] = field(default_factory=list)
    error: str = ""
    note: str = ""  # what the cell saw on the surviving card before the boot, and why
    expected_phase: str = ""  # when set, the update state the box must end in
    expected_message: str = ""  # when set, words its message must hold (the failed check)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (self.came_up and self.slot == self.expected_slot and self.config_intact
                and self.records_intact and not self.error
                and self.phase == (self.expected_phase or self.phase)
                and self.expected_message in self.message)

    def verdict(self) -> str:
        if not self.came_up:
            return f"BRICKED: {self.error or 'did not come up'}"
        if self.error:
            return f"FAIL: {self.error}"
        mark = "ok" if self.passed else "FAIL"
        data = "config+records intact" if self.config_intact and self.records_intact else (
            f"config {'ok' if self.config_intact else 'LOST'}, "
            f"records {'ok' if self.records_intact else 'LOST'}")
        phase = self.phase or "-"
        if self.expected_phase and self.phase != self.expected_phase:
            phase += f" (want {self.expected_phase})"
        if self.expected_message:
            seen = "names" if self.expected_message in self.message else "does NOT name"
            phase += f" ({seen} \"{self.expected_message}\")"
        return (f"{mark}: slot {self.slot} (want {self.expected_slot}) v{self.version}, "
                f"{phase}, {data}")


def write_json(outcomes: Sequence[Outcome], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(o), "passed": o.passed} for o in outcomes]
    path.write_text(json.dumps({"matrix": rows}, indent=1) + "\n")


def markdown(outcomes: Sequence[Outcome]) -> str:
    """Step × cut mode, one cell per outcome; the cells' notes below the table."""
    modes = list(dict.fromkeys(o.mode for o in outcomes))
    steps = list(dict.fromkeys(o.step for o in outcomes))
    cell = {(o.step, o.mode): o.verdict() + (" [note]" if o.note else "") for o in outcomes}
    lines = ["| step | " + " | ".join(modes) + " |", "|---" * (len(modes) + 1) + "|"]
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(cell.get((step, m), "-") for m in modes)
                     + " |")
    lines += [f"\nnote, {o.step} × {o.mode}: {o.note}" for o in outcomes if o.note]
    return "\n".join(lines)


def copy_tree_file(src: Path, dst: Path) -> None:
    """Copy one base image for a cell (sparse), making its folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    sparse_copy(src, dst)
    shutil.copymode(src, dst)


# -- what must survive: config versions and records on the data partition ----------------

CONFIG_NAMES = ("branch-01", "branch-lobby", "branch-upstairs")


def seed_data(config_dir: Path, data_dir: Path) -> None:
    """A few saved config versions (ConfigStore) and a few CDRs (CdrStore, SQLite)."""
    from firmware.cdr import CDR_FILE, CdrStore
    from firmware.core.config import ConfigStore, default_document

    store = ConfigStore(config_dir, clock=iter(range(1_700_000_000, 1_800_000_000)).__next__)
    for n, name in enumerate(CONFIG_NAMES):
        doc = default_document()
        doc["system"]["name"] = name
        store.save(doc, reason=f"seed {n + 1}")
    data_dir.mkdir(parents=True, exist_ok=True)
    with CdrStore(data_dir / CDR_FILE, wall=lambda: 1_700_000_000.0) as cdrs:
        for n in range(5):
            uuid = cdrs.open_call("outbound", f"fxs{n % 2 + 1}", "200", f"55501{n:02d}",
                                  started=1_700_000_000.0 + n * 60)
            cdrs.answered(uuid, 1_700_000_005.0 + n * 60)
            cdrs.ended(uuid, 1_700_000_030.0 + n * 60, "answered")


def config_print(config_dir: Path) -> dict[str, Any]:
    """The saved versions (number, reason) with their bytes, and the live file's bytes."""
    from firmware.core.config import ConfigStore

    store = ConfigStore(config_dir)
    versions = [{"version": v["version"], "reason": v["reason"],
                 "body": (store.versions_dir / f"v{v['version']:06d}.toml").read_text()}
                for v in store.versions()]
    live = store.path.read_text() if store.path.exists() else None
    return {"versions": versions, "live": live}


def records_print(data_dir: Path) -> list[dict[str, Any]]:
    """Every CDR row, in a stable order (read-only: the check writes nothing)."""
    from firmware.cdr import CDR_FILE, CdrStore

    with CdrStore(data_dir / CDR_FILE, readonly=True) as cdrs:
        return sorted(cdrs.list(limit=1000), key=lambda r: str(r["uuid"]))


# -- the box: disk, Pi firmware model, RAUC, core, update service ------------------------

SYSTEMCTL_SHIM = """#!/bin/sh
# the box's `systemctl reboot ["0 tryboot"]`: the harness carries the reboot out (the Pi
# firmware model gets the argument), as the real one hands it to the kernel and firmware
echo "$*" >> '{log}'
"""
BROKEN_MARKER = "broken-core"  # a root whose marker says so starts no core: a bad build
CORE_ARGS = ("--sim",)


def card_images(root: Path) -> dict[str, Path]:
    from lab.slots import BOOT_A, BOOT_B, BOOTSEL, DATA, ROOT_A, ROOT_B

    return {f"p{p}": root / f"p{p}.img" for p in (BOOTSEL, BOOT_A, BOOT_B, ROOT_A, ROOT_B, DATA)}


@dataclass(frozen=True)
class Hook:
    """The tryboot backend's own crash point (firmware.update.tryboot, honoured with
    BRANCHLINE_TEST_HOOKS=1): `point` in the call `verb` names (set-primary, set-state:good,
    set-state:bad; RAUC calls the backend several times per install and the first write would
    hit the point otherwise). `stop`: the backend freezes itself there (SIGSTOP) instead of
    dying, so the harness cuts the power exactly at the point (nothing after it has run)."""

    point: str
    verb: str
    stop: bool = False

    def env(self) -> dict[str, str]:
        """What lab.rauc.RaucLab.start(backend_env=...) hands the backend."""
        return {"BRANCHLINE_TEST_HOOKS": "1", "BRANCHLINE_CRASH_AT": self.point,
                "BRANCHLINE_CRASH_VERB": self.verb,
                "BRANCHLINE_CRASH_SIGNAL": "STOP" if self.stop else "KILL"}


RAUC_FREEZE_SHIM = """#!/bin/sh
# the box's `rauc` with a harness freeze point: `rauc {word} ...` stops itself (SIGSTOP) as it
# starts, so a cut lands while the update service waits on it; everything else is the real one
case " $* " in *" {word} "*) kill -STOP $$ ;; esac
exec '{rauc}' "$@"
"""


@dataclass
class Boot:
    """What one boot of the box found and ran."""

    slot: str
    tryboot: bool
    version: str
    fsck: list[int]
    confirm: dict[str, Any] | None = None
    reboot_request: str | None = None


class PowerBox:
    """The box on this machine: an SD card of loop devices (lab.slots), the Pi firmware
    model, the real RAUC service on a private bus, a sim core and `branchline update
    serve` — every process in `procs`, so a cut takes them all. The config lives in
    <data>/config and the records in <data>/lib on the data partition."""

    def __init__(self, folder: Path, keyring: Path) -> None:
        from lab.slots import Disk as Card

        self.folder, self.keyring = folder, keyring
        self.card = Card(folder / "card")
        self.dt_dir = folder / "dt"
        self.run_dir = folder / "run"
        self.root_mnt = folder / "root"
        self.bin = folder / "bin"
        self.logs = folder / "logs"
        self.reboot_log = self.run_dir / "reboot-requests"
        self.procs = Processes()
        self.rauc: Any = None  # lab.rauc.RaucLab of the current boot
        self.web: subprocess.Popen[bytes] | None = None  # the web page of this boot, if any
        self.web_port = 0
        self._web_log_at = 0  # where this boot's lines start in logs/web.log
        self.boots: list[Boot] = []
        self._tryboot_pending = False
        for d in (self.run_dir, self.bin, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        shim = self.bin / "systemctl"
        shim.write_text(SYSTEMCTL_SHIM.format(log=self.reboot_log))
        shim.chmod(0o755)

    @property
    def config_dir(self) -> Path:
        return self.card.data / "config"

    @property
    def data_dir(self) -> Path:
        return self.card.data / "lib"

    def env(self) -> dict[str, str]:
        rauc_env = self.rauc.env if self.rauc is not None else {}
        return {**os.environ, **rauc_env, "PYTHONUNBUFFERED": "1",
                "PATH": f"{self.bin}:{os.environ.get('PATH', '')}",
                "BRANCHLINE_DT_DIR": str(self.dt_dir), "BRANCHLINE_RUN": str(self.run_dir),
                "BRANCHLINE_RELEASE_FILE": str(self.root_mnt / "etc" / "branchline-release"),
                "BRANCHLINE_DATA": str(self.data_dir),
                "BRANCHLINE_CONFIG_DIR": str(self.config_dir)}

    # ---- power on ----
    def power_on(self, hook: Hook | None = None, *, services: bool = True,
                 core: bool = True, web: bool = False) -> Boot:
        """Attach the card, fsck, let the firmware model choose, mount the root, start RAUC
        (and the core, the web page and the update service); `hook` arms the backend's
        crash point for this boot."""
        from lab.pifirmware import PiFirmware
        from lab.rauc import RaucLab
        from lab.slots import BOOTSEL, DATA, MARKER, ROOT_OF, attach

        shutil.rmtree(self.run_dir)  # /run is a tmpfs: sockets and reboot requests are gone
        self.run_dir.mkdir()
        for name, image in card_images(self.card.root).items():
            self.card.devices[int(name[1:])] = attach(image)
        fsck = [_fsck(self.card.device(BOOTSEL)), _fsck(self.card.device(DATA))]
        self.card.mount_all()
        firmware = PiFirmware(self.card, self.dt_dir, tryboot_flag=self._tryboot_pending)
        self._tryboot_pending = False
        booted = firmware.boot()
        root = self.card.device(ROOT_OF[booted.slot])
        fsck.append(_fsck(root))
        self.root_mnt.mkdir(exist_ok=True)
        _run(["mount", "-t", "ext4", "-o", "ro", str(root), str(self.root_mnt)], "mounting root")
        boot = Boot(booted.slot, booted.tryboot, booted.version, fsck)
        self.boots.append(boot)
        # the programs start side by side, as systemd and supervisord start them: the sim
        # core takes ~2 s to bring its lines up, RAUC, the update service and the web page
        # come up meanwhile; power_on returns when every one answers
        core_runs = services and core and (self.root_mnt / MARKER).read_text().strip() != BROKEN_MARKER
        if core_runs:
            self.spawn_core()
        self.rauc = RaucLab(self.folder / f"rauc{len(self.boots)}", self.card, self.keyring,
                            self.dt_dir)
        self.rauc.start(booted.slot, backend_env=hook.env() if hook is not None else None)
        self.procs.adopt(self.rauc.bus)
        self.procs.adopt(self.rauc.service)
        if services:
            if web:
                self._web_log_at = _size(self.logs / "web.log")
                self.web = self._spawn("web", ["web", "--listen", "127.0.0.1:0", "--api-socket",
                                               str(self.run_dir / "core.sock"), "--data-dir",
                                               str(self.data_dir)])
            self.start_update_service()
            if core_runs:
                wait_until((self.run_dir / "core.sock").exists, 30, "the core's API socket",
                           detail=lambda: self._log_tail("core"))
            if web:
                self._wait_web()
        return boot

    def spawn_core(self) -> None:
        """`branchline run --sim` on the card's config and data (not waited for)."""
        self._spawn("core", ["run", *CORE_ARGS, "--api-socket", str(self.run_dir / "core.sock"),
                             "--data-dir", str(self.data_dir), "--config-dir",
                             str(self.config_dir)])

    def _wait_web(self) -> None:
        """Until `branchline web` (on a free loopback port against this boot's core, its
        certificate and setup code on the data partition as on the box) says its port."""
        import re

        log = self.logs / "web.log"

        def port() -> re.Match[bytes] | None:
            with log.open("rb") as f:
                f.seek(self._web_log_at)
                return re.search(rb"https://127\.0\.0\.1:(\d+)/", f.read())
        found = wait_until(port, 60, "the web page", detail=lambda: self._log_tail("web"))
        self.web_port = int(found.group(1))

    def freeze_web(self) -> None:
        """SIGSTOP the web page: it still accepts connections (the kernel's backlog) but
        never answers, so the health check waits in its web step (WEB_TIMEOUT_S)."""
        if self.web is None:
            raise DiskError("no web page runs on this boot: power_on(web=True) first")
        _signal(self.web.pid, signal.SIGSTOP)

    def freeze_rauc(self, word: str) -> None:
        """From now on `rauc <word>` run by the box's services stops itself as it starts."""
        real = shutil.which("rauc")
        if real is None:
            raise DiskError("rauc is missing: apt-get install rauc rauc-service")
        shim = self.bin / "rauc"
        shim.write_text(RAUC_FREEZE_SHIM.format(word=word, rauc=real))
        shim.chmod(0o755)

    def start_update_service(self) -> None:
        self._spawn("update", ["update", "serve", *self._box_args()])
        from firmware.update.client import UpdateClient, UpdateError

        client = UpdateClient(str(self.run_dir / "update.sock"), timeout=30.0)
        wait_until(client.status, 30, "the update service", retry=(UpdateError,),
                   detail=lambda: self._log_tail("update"))

    def _box_args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--config-dir", str(self.config_dir),
                "--rauc-conf", str(self.rauc.conf), "--keyring", str(self.keyring),
                "--api-socket", str(self.run_dir / "core.sock")]

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        import sys

        return self.procs.spawn([sys.executable, "-m", "firmware", *args], self.env(),
                                self.logs / f"{name}.log", cwd=Path(__file__).resolve().parents[1])

    def _log_tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else "(no log)"

    def confirm(self, timeout_s: float = 20.0) -> subprocess.Popen[bytes]:
        """`branchline update confirm` as branchline-update-confirm.service runs it."""
        web = f"127.0.0.1:{self.web_port}" if self.web is not None else "none"
        return self._spawn("confirm", ["update", "confirm", *self._box_args(), "--web", web,
                                       "--timeout", str(timeout_s)])

    def state(self) -> dict[str, Any]:
        from firmware.update.state import StateFile

        return StateFile(self.data_dir / "update").load().to_json()

    def reboot_requests(self) -> list[str]:
        return self.reboot_log.read_text().splitlines() if self.reboot_log.exists() else []

    # ---- power off ----
    def shutdown(self) -> None:
        """A clean reboot's end: processes stopped, file systems unmounted, card detached."""
        from lab.procs import stop_process

        for proc in reversed(self.procs.procs):
            stop_process(proc, grace=10)
        self.procs.procs.clear()
        self._off()

    def take_reboot(self) -> None:
        """Carry out the last `systemctl reboot [ARG]` the box asked for, cleanly."""
        request = self.reboot_requests()[-1]
        self.boots[-1].reboot_request = request
        self.reboot_log.unlink()
        self.shutdown()
        self._tryboot_pending = "tryboot" in request

    def cut(self, mode: CutMode) -> None:
        """kill -9 of every process (then the box restarts: caches kept), or a power cut."""
        self.procs.kill()
        if mode is CutMode.POWER:
            images = card_images(self.card.root)
            disk = Disk(images, {n: str(self.card.device(int(n[1:]))) for n in images})
            copies = disk.snapshot()
            self._off()
            for name, copy in copies.items():
                os.replace(copy, images[name])
        else:
            self._off()
        self._tryboot_pending = False  # a power cycle or a watchdog reset: the flag is gone

    def _off(self) -> None:
        """Unmount what the box mounted (RAUC's own mounts too) and detach the card."""
        for where in _mounts_under(self.folder):
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30,
                           check=False)
        self.card.mounts.clear()
        _detach_under(self.folder)
        self.card.devices.clear()
        if self.rauc is not None:
            self.rauc.bus = self.rauc.service = None
            self.rauc = None
        self.web, self.web_port = None, 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.procs.kill()
        self._off()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _fsck(device: Path) -> int:
    done = subprocess.run(["e2fsck", "-p", str(device)], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode >= 4:
        raise DiskError(f"fsck of {device} left errors (exit {done.returncode}): "
                        f"{(done.stdout + done.stderr).strip()[-300:]}")
    return done.returncode


def _mounts_under(folder: Path) -> list[Path]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = Path(line.split()[1].replace("\\040", " "))
        if target == folder or folder in target.parents:
            found.append(target)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _detach_under(folder: Path) -> None:
    """Detach every loop device whose backing file lies under `folder` (the card, and the
    bundles RAUC mounted when they live there)."""
    for entry in Path("/sys/block").glob("loop*"):
        backing = entry / "loop" / "backing_file"
        try:
            path = Path(backing.read_text().strip().removesuffix(" (deleted)"))
        except OSError:
            continue
        if folder in path.parents:
            subprocess.run(["losetup", "-d", f"/dev/{entry.name}"], capture_output=True,
                           timeout=30, check=False)


DATA_MIB = 40  # the update service wants 16 MB free on the data partition


def make_base_card(folder: Path, version: str = "1.0.0") -> Path:
    """The factory card every cell copies: `version` in A committed (autoboot.txt), the
    data partition grown to DATA_MIB with saved config versions and records. Detached."""
    from firmware.update.tryboot import Backend, parse_settings
    from lab.slots import DATA
    from lab.slots import Disk as Card

    card = Card(folder / "card").create(version)
    try:
        card.unmount_all()
        data = card.device(DATA)
        with card.backing(DATA).open("r+b") as f:
            f.truncate(DATA_MIB << 20)
        _run(["losetup", "--set-capacity", str(data)], "growing the data partition")
        _run(["e2fsck", "-fp", str(data)], "checking the data partition")
        _run(["resize2fs", str(data)], "growing the data file system")
        card.mount_all()
        conf = card.tryboot_conf(folder / "tryboot.conf")
        Backend(parse_settings(conf.read_text()), folder / "dt").init("A")
        seed_data(card.data / "config", card.data / "lib")
    finally:
        card.close()
    return card.root


def copy_card(base: Path, root: Path) -> None:
    """A cell's own card: a sparse copy of every base image."""
    root.mkdir(parents=True, exist_ok=True)
    for image in card_images(base).values():
        sparse_copy(image, root / image.name)


# -- the matrix: one update cut at each step ---------------------------------------------

class Step(StrEnum):
    DOWNLOAD = "download (agent job into the data partition)"
    SIGNATURE = "signature check (rauc info)"
    SLOT_WRITE = "slot write (rauc install)"
    AUTOBOOT_TEMP = "autoboot.txt write: temp written"
    AUTOBOOT_RENAMED = "autoboot.txt write: renamed, dir not synced"
    TRIAL_BOOT = "trial boot, before the health check"
    HEALTH_CHECK = "health check running (its web step)"
    COMMIT_TEMP = "commit (mark-good): temp written"
    COMMIT_RENAMED = "commit (mark-good): renamed, dir not synced"
    BAD_BUILD = "bad build: health check fails, rollback"
    MARK_BAD_TEMP = "bad build, rollback (mark-bad): temp written"
    MARK_BAD_RENAMED = "bad build, rollback (mark-bad): renamed, dir not synced"
    MARK_BAD_DONE = "bad build, rollback: after mark-bad, before the reboot"


NO_CUT = "no cut"
HOOKS = {Step.AUTOBOOT_TEMP: Hook("autoboot-temp-written", "set-primary"),
         Step.AUTOBOOT_RENAMED: Hook("autoboot-renamed", "set-primary"),
         Step.COMMIT_TEMP: Hook("autoboot-temp-written", "set-state:good"),
         Step.COMMIT_RENAMED: Hook("autoboot-renamed", "set-state:good"),
         Step.MARK_BAD_TEMP: Hook("autoboot-temp-written", "set-state:bad"),
         Step.MARK_BAD_RENAMED: Hook("autoboot-renamed", "set-state:bad")}
INSTALL_HOOKS = (Step.AUTOBOOT_TEMP, Step.AUTOBOOT_RENAMED)  # armed in the install's boot
BAD_BUILD = (Step.BAD_BUILD, Step.MARK_BAD_TEMP, Step.MARK_BAD_RENAMED, Step.MARK_BAD_DONE)
WEB_STEPS = (Step.HEALTH_CHECK, Step.COMMIT_TEMP, Step.COMMIT_RENAMED)  # the check runs fully
FAILED_CHECK = "core: does not answer"  # what a bad build's rollback must name
BAD_HEALTH_TIMEOUT_S = 0.5  # the broken core never comes: two rounds of the check are enough
MAX_BOOTS = 4
DOWNLOAD_SCRIPT = """
import ssl, sys
from pathlib import Path
from firmware.agent.download import fetch, tls_context
url, dest, sha, size, ca = sys.argv[1:6]
fetch(url, Path(dest), sha, int(size), tls_context(Path(ca)), progress=lambda n: None,
      should_stop=lambda: False)
"""


@dataclass
class Fixtures:
    """What every cell shares: the base card, the keyring, the bundles, the expected data."""

    base: Path
    keyring: Path
    bundle: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    download_url: str = ""  # the cloud's file (bigger than the agent's 64 KiB read)
    download_ca: Path | None = None
    download_sha256: str = ""
    download_size: int = 0
    broken_bundle: Path | None = None  # a bad build: its root's marker is BROKEN_MARKER


class Cell:
    """One step × mode: copy the base card, boot 1.0.0, update to the step, cut, boot until
    the box settles, and say what came up. `mode` None: no cut (the bad build's own row)."""

    def __init__(self, fx: Fixtures, step: Step, mode: CutMode | None, folder: Path) -> None:
        self.fx, self.step, self.mode = fx, step, mode
        self.box = PowerBox(folder, fx.keyring)
        self.outcome = Outcome(str(step), str(mode or NO_CUT), "A")
        if step in BAD_BUILD:
            self.outcome.expected_phase, self.outcome.expected_message = "ROLLED_BACK", FAILED_CHECK
        copy_card(fx.base, self.box.card.root)

    def run(self) -> Outcome:
        started = time.monotonic()
        try:
            self._drive()
            self._settle()
        except Exception as exc:  # noqa: BLE001 - a cell reports, the matrix goes on
            self.outcome.error = f"{type(exc).__name__}: {exc}"[:400]
        finally:
            self.box.close()
            self.outcome.seconds = round(time.monotonic() - started, 1)
        return self.outcome

    @property
    def stops(self) -> bool:
        """A power cut at a backend point freezes the backend there first (SIGSTOP), then
        cuts. kill -9 lets the backend die at the point (SIGKILL) and RAUC, the update
        service and confirm react to that before the rest of the box is killed."""
        return self.mode is CutMode.POWER and self.step in HOOKS

    def _hook(self, armed_in: Sequence[Step]) -> Hook | None:
        hook = HOOKS.get(self.step)
        if hook is None or self.step not in armed_in:
            return None
        return replace(hook, stop=self.stops)

    def _cut(self) -> None:
        if self.mode is None:
            raise DiskError(f"{self.step}: a no-cut cell has nothing to cut")
        self.box.cut(self.mode)

    # ---- up to the cut ----
    def _client(self) -> Any:
        from firmware.update.client import UpdateClient

        return UpdateClient(str(self.box.run_dir / "update.sock"), timeout=60.0)

    def _submit_async(self) -> None:
        import threading

        bundle = self.fx.broken_bundle if self.step in BAD_BUILD else self.fx.bundle
        if bundle is None:
            raise DiskError(f"{self.step}: Fixtures.broken_bundle is not set")

        def submit() -> None:
            with contextlib.suppress(Exception):  # a cut answers nothing
                self._client().install(str(bundle), "console")
        threading.Thread(target=submit, daemon=True).start()

    def _drive(self) -> None:
        box, step = self.box, self.step
        box.power_on(self._hook(INSTALL_HOOKS))
        if step is Step.DOWNLOAD:
            return self._cut_download()
        if step is Step.SIGNATURE:
            box.freeze_rauc("info")
        self._submit_async()
        if step is Step.SIGNATURE:
            wait_until(lambda: _stopped(box.procs, b"rauc", b"info"), 30,
                       "rauc info frozen as it starts", detail=box.state)
            return self._cut()
        if step is Step.SLOT_WRITE:
            return self._cut_slot_write()
        if step in INSTALL_HOOKS:
            self._wait_backend_point()
            return self._cut()
        wait_until(box.reboot_requests, 60, "the reboot into the trial", detail=box.state)
        box.take_reboot()
        self._trial()

    def _wait_backend_point(self) -> None:
        """Until the backend is frozen at its point (STOP), or has died there and the
        install failed for it (KILL)."""
        box = self.box
        if self.stops:
            wait_until(lambda: _stopped(box.procs, b"branchline-tryboot", None), 60,
                       "the backend frozen at its crash point", detail=box.state)
        elif self.step in INSTALL_HOOKS:
            wait_until(lambda: box.state()["phase"] == "FAILED", 60, "the install to fail at "
                       "the backend's crash point", detail=box.state)

    def _cut_download(self) -> None:
        import sys

        dest = self.box.data_dir / "downloads" / "update.raucb"
        self.box.procs.spawn([sys.executable, "-c", DOWNLOAD_SCRIPT, self.fx.download_url,
                              str(dest), self.fx.download_sha256, str(self.fx.download_size),
                              str(self.fx.download_ca)], self.box.env(),
                             self.box.logs / "download.log",
                             cwd=Path(__file__).resolve().parents[1])
        part = dest.with_name(dest.name + ".part")
        wait_until(lambda: part.exists() and part.stat().st_size > 0, 30,
                   "the download under way", detail=lambda: self.box._log_tail("download"))
        self._cut()

    def _cut_slot_write(self) -> None:
        from lab.slots import BOOT_B, ROOT_B

        devices = [str(self.box.card.device(p)) for p in (BOOT_B, ROOT_B)]
        before = [write_counters(d)[1] for d in devices]
        wait_until(lambda: [write_counters(d)[1] for d in devices] != before, 60,
                   "RAUC writing the other slot", step=0.002, detail=self.box.state)
        self._cut()

    def _trial(self) -> None:
        box, step = self.box, self.step
        box.power_on(self._hook(tuple(HOOKS)), web=step in WEB_STEPS)
        if step is Step.TRIAL_BOOT:
            return self._cut()
        if step is Step.HEALTH_CHECK:
            return self._cut_health_check()
        confirm = box.confirm(timeout_s=BAD_HEALTH_TIMEOUT_S if step in BAD_BUILD else 60)
        if self.stops:
            self._wait_backend_point()
            return self._cut()
        if step is Step.MARK_BAD_DONE:  # mark-bad done, `systemctl reboot` asked: cut instead
            wait_until(box.reboot_requests, 60, "the rollback's reboot request",
                       detail=lambda: box._log_tail("confirm"))
            return self._cut()
        wait_until(lambda: confirm.poll() is not None, 90, "confirm to end",
                   detail=lambda: box._log_tail("confirm"))
        if self.mode is None:  # the bad build uncut: carry out the rollback's reboot
            return box.take_reboot()
        self._cut()

    def _cut_health_check(self) -> None:
        """Core and web page up, so the check runs every check; the web page frozen, so the
        check is held in its last step (web) after core, ports, selftest and registration
        passed: the cut lands there, before any verdict."""
        box = self.box
        box.freeze_web()
        box.confirm(timeout_s=60)
        wait_until(lambda: _connected_to(box.web_port), 30, "the health check at its web step",
                   step=0.01, detail=lambda: box._log_tail("confirm"))
        if box.state()["phase"] != "TRIAL":
            raise DiskError(f"the health check reached the web page outside TRIAL: {box.state()}")
        self._cut()

    # ---- after the cut ----
    def _settle(self) -> None:
        """Boot, confirm, follow a rollback's reboot; then read what the box holds."""
        box, out = self.box, self.outcome
        out.expected_slot = self._expected_slot()
        for _ in range(MAX_BOOTS):
            boot = box.power_on()
            out.came_up, out.boots = True, out.boots + 1
            out.fsck += boot.fsck
            confirm = box.confirm(timeout_s=30)
            confirm.wait(60)
            if not box.reboot_requests():
                break
            box.take_reboot()
        last = box.boots[-1]
        state = box.state()
        out.slot, out.version = last.slot, last.version
        out.phase, out.message = state["phase"], state["message"]
        out.config_intact = config_print(box.config_dir) == self.fx.config
        out.records_intact = records_print(box.data_dir) == self.fx.records
        box.shutdown()

    def _expected_slot(self) -> str:
        """Every cut lands on A (1.0.0) but a commit whose rename reached the disk: B."""
        if self.step is not Step.COMMIT_RENAMED:
            return "A"
        if self.mode is CutMode.KILL9:
            return "B"
        from lab.slots import BOOT_B, BOOTSEL, ext4_read

        text = ext4_read_image(self.box.card.root / f"p{BOOTSEL}.img", "autoboot.txt", ext4_read)
        committed = f"[all]\ntryboot_a_b=1\nboot_partition={BOOT_B}" in (text or "")
        self.outcome.note = (
            ("the rename reached the disk: B committed -> B, GOOD. " if committed else
             "the rename was lost: A still committed, the one-shot try spent -> A, "
             "ROLLED_BACK. ") + RENAME_NOTE)
        return "B" if committed else "A"


RENAME_NOTE = (
    "Either way is correct and neither is torn: the cut lands (backend frozen by SIGSTOP) "
    "after rename() and before the directory fsync, so the rename sits in ext4's running "
    "journal transaction; it is on the card only if that transaction was committed before "
    "the cut, which the harness does not control: ext4's 5 s commit timer, or a sync(2) "
    "by any other process on the machine (parallel cells, e2fsck, mount, umount). "
    "The expected slot is read from the surviving card (journal replayed on a copy).")


def _stopped(procs: Processes, name: bytes, word: bytes | None) -> bool:
    """Whether a process below the box's is stopped (SIGSTOP, state T) and runs a program
    whose path ends with `name` (with `word` among its arguments when given)."""
    for proc in list(procs.procs):
        for pid in descendants(proc.pid):
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if (stat == "T" and any(a.endswith(name) for a in argv[:2])
                        and (word is None or word in argv)):
                    return True
    return False


def _connected_to(port: int) -> bool:
    """Whether a loopback TCP client is connected to `port` (/proc/net/tcp, ESTABLISHED)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            return True
    return False


def ext4_read_image(image: Path, name: str, reader: Any) -> str | None:
    """A file of an ext4 image as the next mount will see it (journal replayed on a copy)."""
    probe = image.with_name(image.name + ".probe")
    sparse_copy(image, probe)
    try:
        subprocess.run(["e2fsck", "-p", str(probe)], capture_output=True, timeout=60, check=False)
        result: str | None = reader(probe, name)
        return result
    finally:
        probe.unlink(missing_ok=True)


def cells_of(steps: Sequence[Step], modes: Sequence[CutMode]) -> list[tuple[Step, CutMode | None]]:
    """Step × mode; the uncut bad build is one cell of its own."""
    return [(step, None) if step is Step.BAD_BUILD else (step, mode)
            for step in steps for mode in ((None,) if step is Step.BAD_BUILD else modes)]


def default_workers() -> int:
    """Cells at once: the CPUs, at least 2 (a cell waits on disks and processes half its
    time) and at most 4; so 2 on CI's 2-core machines."""
    return min(4, max(2, os.cpu_count() or 1))


def run_matrix(fx: Fixtures, folder: Path, steps: Sequence[Step] = tuple(Step),
               modes: Sequence[CutMode] = tuple(CutMode),
               workers: int | None = None) -> list[Outcome]:
    """Every step × mode; cells are independent boxes (own card, bus, sockets), so they
    run side by side, the longest first (those that reach the trial boot: three boots with
    two core starts), so the last ones to finish are short."""
    from concurrent.futures import ThreadPoolExecutor

    pairs = cells_of(steps, modes)
    cells = [Cell(fx, step, mode, folder / f"c{i}") for i, (step, mode) in enumerate(pairs)]
    trial = list(Step)[list(Step).index(Step.TRIAL_BOOT):]  # the trial boot and after
    order = sorted(cells, key=lambda c: (c.step in BAD_BUILD, c.step not in trial))
    with ThreadPoolExecutor(workers or default_workers()) as pool:
        done = dict(zip(map(id, order), pool.map(Cell.run, order), strict=True))
    return [done[id(c)] for c in cells]
