"""The box's process tree on this machine: the product's own systemd/supervisord.conf run by
a real supervisord, with every BRANCHLINE_* path pointing into a temporary folder, the core
on the simulated twins (`--sim`, a sim config written here), the web page on a free
loopback port and the serial console on a pseudo-terminal this object keeps open.

    with LabSupervisor(tmp_path) as box:      # every program RUNNING
        box.api.sim_phone("fxs1", "off_hook")
        box.kill("web")                        # SIGKILL; supervisord starts it again
        box.wait_running(["web"], 5)

No systemd is needed: supervisord runs in the foreground as systemd would run it, and
supervisorctl/XML-RPC talk to it over its Unix socket. The programs run as root unless
`env` names other users (BRANCHLINE_CORE_USER, BRANCHLINE_USER, BRANCHLINE_GROUP): then
the run folder gets the group as the unit gives it (setgid, sticky, 0770), and
`branchline firstboot` lays out the data and config folders as branchline-firstboot.service
does; `root` must then be a folder those users can reach. When this Python lives under a
folder they cannot enter (a pyenv in /root), or this tree does (a clean clone in a 0700
temporary folder), supervisord runs in a mount namespace of its own where each such folder
is a tmpfs showing only what the programs need. stop() (also on exit) sends
SIGTERM to supervisord, waits for the programs' stop times, and kills whatever is left.
"""

from __future__ import annotations

import grp
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import xmlrpc.client
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from firmware.api.client import ApiClient, ApiError
from firmware.core.config import ConfigStore, default_document
from lab.ports import free_port
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "systemd" / "supervisord.conf"
PROGRAMS = ("watchdog", "core", "web", "console", "agent", "forward")
# what systemd would give it: the sum of the programs' stopwaitsecs and some slack
STOP_TIMEOUT_S = 90.0
START_TIMEOUT_S = 60.0
# forward needs a records URL to run; nothing listens here, so it keeps retrying
UNREACHABLE_RECORDS = "http://127.0.0.1:9/v1/records"
RUN_MODE = 0o3770  # branchline.service's RuntimeDirectoryMode
# run by unshare in a private mount namespace, per folder others cannot enter: park each
# entry the programs need (bind), cover the folder with an open tmpfs, put the entries back
REVEAL_STEPS = ('mkdir -p {park}; mount --bind {path} {park}',
                'mount -t tmpfs -o mode=0755,size=64k branchline-lab {folder}',
                'mkdir {path}; mount --move {park} {path}')


def lab_document() -> dict[str, Any]:
    """The default config, local SIP on a kernel-chosen loopback port, and a records URL
    nobody answers (so `forward` runs and retries)."""
    doc = default_document()
    doc["sip"].update(bind_address="127.0.0.1", local_port=0)
    doc["survive"]["records_url"] = UNREACHABLE_RECORDS
    return doc


class LabSupervisor:
    """See the module docstring. `env` adds or overrides environment variables of
    supervisord (its programs inherit them); `test_hooks` sets BRANCHLINE_TEST_HOOKS=1
    (SIGUSR2 freezes the core's reactor)."""

    def __init__(self, root: Path, *, conf: Path = CONF, test_hooks: bool = True,
                 env: Mapping[str, str] | None = None,
                 doc: dict[str, Any] | None = None) -> None:
        self.root, self.conf = Path(root), conf
        self.prefix, self.config_dir = self.root / "prefix", self.root / "etc"
        self.data, self.run, self.log = self.root / "data", self.root / "run", self.root / "log"
        self.web_port = free_port("tcp")
        self.doc = doc if doc is not None else lab_document()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pty_master: int | None = None
        self._pty_slave: int | None = None
        self.tty = ""
        self.env = self._environment(test_hooks, env or {})

    # ---- life cycle ----
    def start(self, timeout: float = START_TIMEOUT_S) -> LabSupervisor:
        """supervisord running and every program RUNNING (else stopped, and TimedOut)."""
        self._prepare()
        out = (self.root / "supervisord.out").open("wb")
        with out:
            self.proc = subprocess.Popen(
                [*self._namespace(), str(self.bin("supervisord")), "-n", "-c", str(self.conf)],
                env=self.env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            self.wait_running(PROGRAMS, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM to supervisord and wait; SIGKILL to it and every program after
        `timeout`. supervisord's exit code (None when it never started)."""
        if self.proc is None:
            self._close_pty()
            return None
        pids = self._known_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in pids:  # only what outlived supervisord (nothing, normally)
            _kill_quietly(pid)
        self._close_pty()
        return self.proc.returncode

    def __enter__(self) -> LabSupervisor:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- supervisord ----
    @property
    def rpc(self) -> Any:
        """supervisord's XML-RPC (`rpc.supervisor.getProcessInfo("core")`), over its socket."""
        url = f"unix://{self.run / 'supervisor.sock'}"
        return xmlrpc.client.ServerProxy("http://127.0.0.1",
                                         transport=SupervisorTransport(None, None, url))

    def info(self, name: str) -> dict[str, Any]:
        return dict(self.rpc.supervisor.getProcessInfo(name))

    def states(self) -> dict[str, str]:
        """{program: statename} of every program."""
        return {p["name"]: p["statename"] for p in self.rpc.supervisor.getAllProcessInfo()}

    def pid(self, name: str) -> int:
        return int(self.info(name)["pid"])

    def running(self, names: Iterable[str]) -> bool:
        try:
            states = self.states()
        except (OSError, xmlrpc.client.Error):
            return False
        return all(states.get(n) == "RUNNING" for n in names)

    def wait_running(self, names: Iterable[str], timeout: float) -> None:
        wanted = list(names)
        wait_until(lambda: self._alive() and self.running(wanted), timeout,
                   f"{', '.join(wanted)} RUNNING under supervisord", step=0.1,
                   detail=self.describe)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the program's process; its pid."""
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def supervisorctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin("supervisorctl")), "-c", str(self.conf), *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def program_log(self, name: str) -> str:
        path = self.log / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def describe(self) -> str:
        """States and the tail of supervisord's log, for a failure message."""
        try:
            states: object = self.states()
        except (OSError, xmlrpc.client.Error) as exc:
            states = f"supervisord does not answer ({exc})"
        tail = (self.log / "supervisord.log")
        lines = tail.read_text(errors="replace").splitlines()[-15:] if tail.exists() else []
        out = (self.root / "supervisord.out")
        early = out.read_text(errors="replace")[-800:] if out.exists() else ""
        return f"states {states}; supervisord.log: {lines}; output: {early!r}"

    # ---- the core ----
    @property
    def api(self) -> ApiClient:
        return ApiClient(unix_path=str(self.run / "core.sock"))

    def wait_core(self, timeout: float = 30.0) -> dict[str, Any]:
        """The core's status once its control API answers."""
        return wait_until(lambda: self.api.status(), timeout, "the core's control API",
                          step=0.1, retry=(ApiError,), detail=self.describe)

    # ---- setup ----
    def bin(self, name: str) -> Path:
        return self.prefix / "venv" / "bin" / name

    def _environment(self, test_hooks: bool, extra: Mapping[str, str]) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items()
                if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
                and not k.startswith("BRANCHLINE_")}
        env = {**base,
               "BRANCHLINE_PREFIX": str(self.prefix),
               "BRANCHLINE_CONFIG_DIR": str(self.config_dir),
               "BRANCHLINE_DATA": str(self.data),
               "BRANCHLINE_RUN": str(self.run),
               "BRANCHLINE_LOG": str(self.log),
               "BRANCHLINE_CORE_ARGS": "--sim",
               "BRANCHLINE_WEB_LISTEN": f"127.0.0.1:{self.web_port}",
               "BRANCHLINE_WEB_ARGS": "",
               "BRANCHLINE_CONSOLE_TTY": "",  # set when the pty is opened
               "BRANCHLINE_USER": "root",
               "BRANCHLINE_CORE_USER": "root",
               "BRANCHLINE_GROUP": "root"}
        if test_hooks:
            env["BRANCHLINE_TEST_HOOKS"] = "1"
        env.update(extra)
        return env

    def _prepare(self) -> None:
        for d in (self.config_dir, self.data, self.run, self.log, self.prefix):
            d.mkdir(parents=True, exist_ok=True)
        venv = self.prefix / "venv"
        if not venv.exists():
            venv.symlink_to(sys.prefix)
        for tool in ("branchline", "supervisord", "supervisorctl"):
            if not self.bin(tool).exists():
                raise FileNotFoundError(f"{self.bin(tool)} is missing: install the project "
                                        f"into {sys.prefix} (pip install -e .)")
        ConfigStore(self.config_dir).save(self.doc, "lab supervisor")
        self.pty_master, self._pty_slave = os.openpty()
        self.tty = os.ttyname(self._pty_slave)
        if not self.env["BRANCHLINE_CONSOLE_TTY"]:
            self.env["BRANCHLINE_CONSOLE_TTY"] = self.tty
        if self.users_differ():
            self._lay_out_for_users()

    def users_differ(self) -> bool:
        """Whether the programs run as users other than root."""
        return any(self.env[k] != "root" for k in
                   ("BRANCHLINE_CORE_USER", "BRANCHLINE_USER", "BRANCHLINE_GROUP"))

    def _lay_out_for_users(self) -> None:
        """What the units do before supervisord starts: the run folder's group and mode
        (branchline.service), the data and config folders (branchline-firstboot.service);
        the console's pty goes to the clients' user (on the box: dialout's tty)."""
        closed = _closed_ancestors(self.root / "data")
        if closed:
            raise AssertionError(f"{closed[0]} is closed to others: give LabSupervisor a "
                                 "folder the programs' users can reach (mode 0755 up to /)")
        os.chown(self.run, -1, grp.getgrnam(self.env["BRANCHLINE_GROUP"]).gr_gid)
        os.chmod(self.run, RUN_MODE)
        got = subprocess.run(
            [str(self.bin("branchline")), "firstboot", "--data-dir", str(self.data),
             "--config-dir", str(self.config_dir), "--owner", self.env["BRANCHLINE_USER"],
             "--core-user", self.env["BRANCHLINE_CORE_USER"],
             "--group", self.env["BRANCHLINE_GROUP"]],
            env=self.env, capture_output=True, text=True, timeout=60, check=False)
        if got.returncode != 0:
            raise AssertionError(f"branchline firstboot failed: {got.stderr.strip()}")
        shutil.chown(self.tty, user=self.env["BRANCHLINE_USER"])

    def _namespace(self) -> list[str]:
        """unshare's command line that shows the interpreter, the venv and this tree to the
        programs' users ([] when they see them, or run as root): a clean clone in a private
        temporary folder (mktemp's 0700) or a pyenv in /root is otherwise out of reach."""
        if not self.users_differ():
            return []
        hidden: dict[Path, set[str]] = {}
        for path in (Path(os.path.realpath(sys.executable)), Path(sys.prefix), ROOT):
            closed = _closed_ancestors(path)
            if len(closed) > 1 or (closed and shutil.which("unshare") is None):
                raise AssertionError(f"{path}: the programs' users cannot reach it "
                                     f"({closed[0]} is closed); put it where they can (0755)")
            if closed:
                hidden.setdefault(closed[0], set()).add(path.relative_to(closed[0]).parts[0])
        if not hidden:
            return []
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                _reveal_script(hidden, self.root / "park") + '; exec "$@"', "sh"]

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"supervisord exited with {self.proc.returncode}: "
                                 f"{self.describe()}")
        return True

    def _known_pids(self) -> list[int]:
        try:
            return [int(p["pid"]) for p in self.rpc.supervisor.getAllProcessInfo() if p["pid"]]
        except (OSError, xmlrpc.client.Error):
            return []

    def _close_pty(self) -> None:
        for fd in (self.pty_master, self._pty_slave):
            if fd is not None:
                os.close(fd)
        self.pty_master = self._pty_slave = None


# ---- a call on the sim core, through its control API --------------------------------------

def call_on(api: ApiClient, port: str) -> dict[str, Any] | None:
    """The call on `port` in the core's status (None: no call there)."""
    return next((c for c in api.status()["calls"] if c["port"] == port), None)


def _port(api: ApiClient, name: str) -> dict[str, Any]:
    return next(p for p in api.status()["ports"] if p["name"] == name)


def place_call(api: ApiClient, caller: str = "fxs1", callee: str = "fxs2",
               number: str = "202", timeout: float = 10.0) -> dict[str, Any]:
    """A local call from the `caller` phone to the `callee` phone (extension `number`),
    answered; the caller's call entry once it is connected."""
    api.sim_phone(caller, "off_hook")
    wait_until(lambda: _port(api, caller)["state"] == "off-hook", timeout,
               f"{caller} off hook", step=0.05)
    api.sim_phone(caller, "dial", digits=number)
    wait_until(lambda: _port(api, callee)["ringing"], timeout, f"{callee} ringing", step=0.1)
    api.sim_phone(callee, "off_hook")

    def connected() -> dict[str, Any] | None:
        call = call_on(api, caller)
        return call if call and call["state"] == "connected" else None
    return wait_until(connected, timeout, f"{caller} connected to {number}", step=0.1)


def hang_up(api: ApiClient, *ports: str) -> None:
    """Both ends (default fxs1 and fxs2) on hook, and no call left."""
    for port in ports or ("fxs1", "fxs2"):
        api.sim_phone(port, "on_hook")
    wait_until(lambda: not api.status()["calls"], 10, "every call ended", step=0.1)


def _reveal_script(hidden: Mapping[Path, set[str]], park: Path) -> str:
    """The shell steps of REVEAL_STEPS for every closed folder and its needed entries."""
    steps = ["set -e"]
    for i, (folder, entries) in enumerate(sorted(hidden.items())):
        names = [(folder / entry, park / f"{i}-{j}") for j, entry in enumerate(sorted(entries))]
        q = shlex.quote
        steps += [REVEAL_STEPS[0].format(park=q(str(pk)), path=q(str(pa))) for pa, pk in names]
        steps.append(REVEAL_STEPS[1].format(folder=q(str(folder))))
        steps += [REVEAL_STEPS[2].format(park=q(str(pk)), path=q(str(pa))) for pa, pk in names]
    return "; ".join(steps)


def _closed_ancestors(path: Path) -> list[Path]:
    """The folders on the way to `path` that others may not enter (no o+x), top first."""
    return [p for p in reversed(path.parents)
            if not stat.S_IMODE(p.stat().st_mode) & stat.S_IXOTH]


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
