"""A real update service (`branchline update serve`) on a Unix socket in a temp folder, for
the tests of its sources (web page, console, agent).

Two ways to run it:
- `UpdateService(tmp, keyring, api="HOST:PORT").start()`: the real RAUC command line checks
  the bundles' signatures against `keyring`; no RAUC D-Bus service runs, so an accepted
  bundle ends FAILED at the install step (install_failed).
- `UpdateService(tmp, keyring, api, box=RaucBox(...).start()).start()`: the service drives
  the real `rauc service` on a private bus over an SD card of loop devices (lab.slots,
  lab.rauc, the Pi firmware model of lab.pifirmware, booted once from slot A holding
  `RUNNING`), and `systemctl` on its PATH is a shim that records the reboot it asks for
  (lab.powercut does the same for the power-loss matrix): a good bundle installs into slot
  B and the service ends at REBOOTING with "reboot 0 tryboot" in `reboot_requests()`.
  `RaucBox.hold()` makes the next installs wait at their first write to the boot
  selection (the tryboot backend's `set-state <other> bad`, frozen by its own STOP test
  hook after RAUC has reported its checks' progress) until `release()` continues it, so a
  test sees the progress a source shows mid-install without racing a half-second
  install; `disarm()` (once the install is over) starts RAUC again without the hook.

`.client` asks the service; stop() ends it; reset() restarts it with no update state (a
module sharing one card runs one install per test). Every process is stopped and the card
unmounted and detached by stop()/close()."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from firmware.update.client import UpdateClient, UpdateError
from lab.pifirmware import PiFirmware
from lab.powercut import descendants
from lab.procs import stop_process
from lab.rauc import RaucLab
from lab.slots import Disk, make_boot_image, make_root_image
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]
RUNNING = "1.0.0"  # what slot A of the card holds and the service runs
TOOLS = {"losetup": "util-linux", "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs",
         "mkfs.vfat": "dosfstools", "mcopy": "mtools", "mksquashfs": "squashfs-tools",
         "rauc": "rauc", "dbus-daemon": "dbus"}

SYSTEMCTL_SHIM = """#!/bin/sh
# the box's `systemctl reboot ["0 tryboot"]`, recorded instead of carried out
echo "$*" >> '{log}'
"""

# the tryboot backend's own test hook (firmware/update/tryboot.py), exported to the backend
# alone by lab.rauc: the install's `set-state <other> bad` stops itself (SIGSTOP) once its
# autoboot.txt temp file is written, before the rename; RAUC waits for its backend
HOLD_ENV = {"BRANCHLINE_TEST_HOOKS": "1", "BRANCHLINE_CRASH_AT": "autoboot-temp-written",
            "BRANCHLINE_CRASH_SIGNAL": "STOP", "BRANCHLINE_CRASH_VERB": "set-state:bad"}


def need_tools() -> None:
    """AssertionError naming the packages when a tool of the RAUC lab is missing."""
    missing = [f"{tool} (apt-get install {pkg})" for tool, pkg in TOOLS.items()
               if shutil.which(tool) is None]
    if missing:
        raise AssertionError("missing: " + ", ".join(missing))


class RaucBox:
    """The SD card with RUNNING in slot A (autoboot.txt committed to A), booted once by the
    Pi firmware model, and the real `rauc service` over it trusting `keyring`."""

    def __init__(self, folder: Path, keyring: Path) -> None:
        need_tools()
        self.folder, self.keyring = folder, keyring
        self.disk = Disk(folder / "card")
        self.dt_dir = folder / "dt"
        self.rauc: RaucLab | None = None
        self.booted = "A"

    def start(self) -> RaucBox:
        from firmware.update.tryboot import Backend, parse_settings

        try:
            self.disk.create(RUNNING)
            conf = self.disk.tryboot_conf(self.folder / "tryboot.conf")
            Backend(parse_settings(conf.read_text()), self.dt_dir).init("A")
            firmware = PiFirmware(self.disk, self.dt_dir)
            firmware.power_cycle()
            self.rauc = RaucLab(self.folder / "rauc", self.disk, self.keyring, self.dt_dir)
            self.booted = firmware.history[-1].slot
            self.rauc.start(self.booted)
        except BaseException:
            self.close()
            raise
        return self

    def hold(self) -> None:
        """From now on an install waits at its first write to the boot selection (RAUC is
        started again with the backend's hook; between installs only)."""
        assert self.rauc is not None
        self.rauc.start(self.booted, backend_env=HOLD_ENV)

    def disarm(self) -> None:
        """RAUC without the hook again (between installs only)."""
        assert self.rauc is not None
        self.release()
        self.rauc.start(self.booted)

    def _frozen(self) -> list[int]:
        """The backend calls stopped at the hook (below our RAUC service)."""
        service = self.rauc.service if self.rauc is not None else None
        if service is None or service.poll() is not None:
            return []
        found = []
        for pid in descendants(service.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] == "T":
                found.append(pid)
        return found

    def holding(self) -> bool:
        """Whether an install waits at the hold now."""
        return bool(self._frozen())

    def release(self) -> None:
        """Let a held install go on."""
        for pid in self._frozen():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def backend_calls(self) -> list[str]:
        return self.rauc.backend_calls() if self.rauc is not None else []

    def close(self) -> None:
        """Stop RAUC and its bus, unmount and detach the card (safe to call twice)."""
        self.release()
        if self.rauc is not None:
            self.rauc.stop()
            self.rauc = None
        mounts = self.folder / "rauc" / "mnt"
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if Path(target).is_relative_to(mounts):
                subprocess.run(["umount", "-l", target], capture_output=True, timeout=30,
                               check=False)
        self.disk.close()


def signed_bundle(out: Path, version: str, cert: Path, key: Path, pad_bytes: int = 0) -> Path:
    """A good bundle for the card (lab.bundle's layout: boot.vfat, root.ext4, the boot
    slot's hook) signed with `cert`/`key`; `pad_bytes` of random data ride along in a file
    no slot takes, to make a download of several reads."""
    from lab.bundle import HOOK, manifest

    src = out.with_name(out.name + ".content")
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    make_boot_image(src / "boot.vfat", version)
    make_root_image(src / "root.ext4", version, f"built {version}")
    (src / "manifest.raucm").write_text(manifest(version))
    (src / "hook.sh").write_text(HOOK)
    (src / "hook.sh").chmod(0o755)
    if pad_bytes:
        (src / "padding.bin").write_bytes(os.urandom(pad_bytes))
    out.unlink(missing_ok=True)
    done = subprocess.run(["rauc", "bundle", f"--cert={cert}", f"--key={key}", str(src),
                           str(out)], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"rauc bundle failed: {done.stderr.strip()}")
    shutil.rmtree(src, ignore_errors=True)
    return out


class UpdateService:
    def __init__(self, tmp: Path, keyring: Path, api: str,
                 compatible: str = "branchline-rpi", box: RaucBox | None = None) -> None:
        self.tmp, self.keyring, self.api, self.compatible = tmp, keyring, api, compatible
        self.box = box
        self.socket = tmp / "run" / "update.sock"
        self.data_dir = tmp / "update-data"
        self.log = tmp / "update.log"
        self.bin = tmp / "bin"
        self.reboot_log = tmp / "reboot-requests"
        self.client = UpdateClient(str(self.socket), timeout=30.0)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> UpdateService:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firmware", "update", "serve", "--socket",
                 str(self.socket), "--data-dir", str(self.data_dir), "--config-dir",
                 str(self.tmp / "etc"), "--rauc-conf", str(self._conf()),
                 "--keyring", str(self.keyring), "--compatible", self.compatible,
                 "--api", self.api],
                cwd=ROOT, env=self._env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_until(self._up, 20, "the update service up", step=0.1,
                   detail=lambda: self.log.read_text()[-2000:])
        return self

    def _conf(self) -> Path:
        if self.box is not None and self.box.rauc is not None:
            return self.box.rauc.conf
        conf = self.tmp / "system.conf"  # the signature check only: no slots, no bootloader
        conf.write_text(f"[system]\ncompatible={self.compatible}\nbootloader=noop\n\n"
                        f"[keyring]\npath={self.keyring}\n")
        return conf

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BRANCHLINE_RUN": str(self.socket.parent)}
        if self.box is None or self.box.rauc is None:
            return env
        self.bin.mkdir(parents=True, exist_ok=True)
        shim = self.bin / "systemctl"
        shim.write_text(SYSTEMCTL_SHIM.format(log=self.reboot_log))
        shim.chmod(0o755)
        release = self.tmp / "branchline-release"
        release.write_text(f"VERSION={RUNNING}\n")
        return {**env, **self.box.rauc.env, "BRANCHLINE_RELEASE_FILE": str(release),
                "PATH": f"{self.bin}:{env.get('PATH', '')}"}

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("update service exited: " + self.log.read_text()[-2000:])
        try:
            self.client.status()
            return True
        except UpdateError:
            return False

    def reboot_requests(self) -> list[str]:
        """The `systemctl` command lines the service ran (e.g. "reboot 0 tryboot")."""
        return self.reboot_log.read_text().splitlines() if self.reboot_log.exists() else []

    def reset(self) -> None:
        """Restart with no update state and no recorded reboot (the card stays as it is)."""
        self.stop()
        (self.data_dir / "update" / "state.json").unlink(missing_ok=True)
        self.reboot_log.unlink(missing_ok=True)
        self.start()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
