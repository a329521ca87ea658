"""`branchline watchdog`: the link between the core's health pings, supervisord and systemd.

The core sends sd_notify datagrams (READY=1, WATCHDOG=1 every second, STOPPING=1) from
its reactor thread to our socket ($BRANCHLINE_RUN/notify.sock, which supervisord gives
the core as NOTIFY_SOCKET). We accept them only from the core's current pid, read from
the kernel (SCM_CREDENTIALS) and compared with supervisord's getProcessInfo. A RUNNING
core whose last WATCHDOG=1 is older than --core-timeout (or that sent no READY=1 within
--start-grace of its start) gets SIGABRT (faulthandler dumps its stacks to its log) and
SIGKILL 3 s later; supervisord's autorestart brings it back.

Upwards we stand in for the whole service with systemd (Type=notify, WatchdogSec=): our
own environment's NOTIFY_SOCKET is systemd's, inherited through supervisord. We send
READY=1 once the core is first ready, and WATCHDOG=1 every WATCHDOG_USEC/2 only while
supervisord answers XML-RPC within 5 s and the core has been healthy within --give-up:
a hung supervisord, or a core that never comes back, makes systemd restart everything.

`WatchdogLogic` is the decision part: no sockets, no signals, time from an injected
clock. `run_watchdog` is the process around it: the socket, a thread that asks
supervisord (supervisor's own SupervisorTransport on its Unix socket), signals, relays.
"""

from __future__ import annotations

import grp
import logging
import os
import queue
import select
import signal
import socket
import stat
import struct
import threading
import xmlrpc.client
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

from foundation import sdnotify
from foundation.errors import BranchlineError
from foundation.reactor import NEVER, Clock, MonotonicClock

log = logging.getLogger(__name__)

RUN_DIR_DEFAULT = "/run/branchline"
SOCKET_MODE = 0o660
POLL_S = 1.0  # how often supervisord is asked about the core
RPC_TIMEOUT_S = 5.0  # supervisord must answer within this to count as alive
LOOP_S = 0.2  # the process loop's longest sleep
MAX_DATAGRAM = 4096
UNCLAIMED_PIDS = 4  # senders supervisord has not named yet (a new core's READY=1 is
UNCLAIMED_MESSAGES = 8  # often faster than our next question): kept, replayed if named
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def run_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("BRANCHLINE_RUN") or RUN_DIR_DEFAULT)


# -- the decisions -------------------------------------------------------------------------

class CoreState(StrEnum):
    DOWN = "down"          # supervisord does not report it RUNNING
    STARTING = "starting"  # running, no READY=1 yet (--start-grace)
    READY = "ready"        # pinging (--core-timeout)
    STOPPING = "stopping"  # sent STOPPING=1: hanging up calls, supervisord decides
    KILLING = "killing"    # SIGABRT sent, SIGKILL due


class ActionKind(StrEnum):
    ABORT = "abort"  # SIGABRT to pid: stack dump, then it dies
    KILL = "kill"    # SIGKILL to pid: still there after the abort
    RELAY = "relay"  # message to systemd's NOTIFY_SOCKET
    NOTE = "note"    # a decision worth one log line, nothing to do


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    text: str  # the log line (ABORT, KILL, NOTE) or the sd_notify message (RELAY)
    pid: int = 0


@dataclass(frozen=True)
class CoreInfo:
    """What supervisord says of the core: its pid (0: none) and whether it is RUNNING."""

    pid: int
    running: bool
    uptime_s: float = 0.0


@dataclass(frozen=True)
class Settings:
    core_timeout_s: float = 10.0
    start_grace_s: float = 90.0
    give_up_s: float = 300.0
    kill_after_s: float = 3.0
    stop_grace_s: float = 60.0  # STOPPING=1 sent, still RUNNING: hung in its stop
    rpc_timeout_s: float = RPC_TIMEOUT_S
    relay_interval_s: float | None = None  # WATCHDOG=1 to systemd; None: not watched
    relay: bool = False  # systemd's NOTIFY_SOCKET is set


@dataclass
class _Core:
    pid: int = 0
    state: CoreState = CoreState.DOWN
    since: float = 0.0  # its start, or when it sent STOPPING=1 (our clock)
    last_ping: float = -NEVER
    kill_at: float = NEVER
    status: str = ""


@dataclass
class WatchdogLogic:
    """Every decision of the watchdog; the caller feeds it and carries out the actions."""

    clock: Clock
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        self.core = _Core()
        self.answered = -NEVER  # supervisord's last answer
        self.healthy_at = self.clock.now()  # the core last known ready and pinging
        self.ready_relayed = False
        self.status_relayed = ""
        self.next_relay = -NEVER
        self.feeding = True  # still feeding systemd's watchdog (for the log lines)
        self._actions: list[Action] = []
        self._unclaimed: dict[int, list[tuple[float, str]]] = {}

    # ---- inputs ----
    def on_supervisor(self, info: CoreInfo) -> None:
        """supervisord answered: the core's pid and state."""
        now = self.clock.now()
        self.answered = now
        core = self.core
        if not info.running or info.pid <= 0:
            if core.state is not CoreState.DOWN:
                self._note(f"core pid {core.pid} is no longer running (supervisord)")
            self.core = _Core()
            return
        if info.pid != core.pid:
            self.core = _Core(pid=info.pid, state=CoreState.STARTING,
                              since=now - max(0.0, info.uptime_s))
            self._note(f"core pid {info.pid} running: waiting up to "
                       f"{self.settings.start_grace_s:g} s for READY=1")
            for at, text in self._unclaimed.pop(info.pid, []):
                self.on_message(info.pid, text, at)
            self._unclaimed.clear()

    def on_message(self, pid: int, text: str, at: float | None = None) -> bool:
        """A datagram from `pid` (received `at`, default now); False (not taken) unless
        it is the core's current pid. Others are kept a while: supervisord may name the
        sender as its new core on its next answer."""
        core = self.core
        now = self.clock.now() if at is None else at
        if pid <= 0 or pid != core.pid or core.state in (CoreState.DOWN, CoreState.KILLING):
            self._keep_unclaimed(pid, text, now)
            return False
        fields = parse_message(text)
        if "STATUS" in fields:
            core.status = fields["STATUS"]
        if fields.get("STOPPING") == "1":
            core.state, core.since = CoreState.STOPPING, now
            self._note(f"core pid {pid} is stopping")
        elif fields.get("READY") == "1" or fields.get("WATCHDOG") == "1":
            if core.state is CoreState.STARTING:  # a ping implies ready (READY=1 was missed)
                self._note(f"core pid {pid} ready after {now - core.since:.1f} s"
                           + (f": {core.status}" if core.status else ""))
            if core.state is not CoreState.STOPPING:
                core.state, core.last_ping = CoreState.READY, now
                self.healthy_at = now
        return True

    def _keep_unclaimed(self, pid: int, text: str, now: float) -> None:
        if pid <= 0 or pid == self.core.pid:
            return  # no credentials, or the core we are killing
        kept = self._unclaimed.setdefault(pid, [])
        kept.append((now, text))
        del kept[:-UNCLAIMED_MESSAGES]
        while len(self._unclaimed) > UNCLAIMED_PIDS:
            del self._unclaimed[next(iter(self._unclaimed))]

    # ---- decisions ----
    def tick(self) -> list[Action]:
        """The actions due now: kills first, then the relay to systemd."""
        now = self.clock.now()
        self._check_core(now)
        self._relay(now)
        actions, self._actions = self._actions, []
        return actions

    def supervisor_alive(self, now: float) -> bool:
        return now - self.answered <= self.settings.rpc_timeout_s

    def _check_core(self, now: float) -> None:
        core, s = self.core, self.settings
        if core.state is CoreState.KILLING:
            if now >= core.kill_at:
                core.kill_at = NEVER
                self._act(ActionKind.KILL, core.pid,
                          f"core pid {core.pid} still there {s.kill_after_s:g} s after "
                          "SIGABRT: SIGKILL")
            return
        if not self.supervisor_alive(now):
            return  # its pid may be stale: decide nothing on old news
        late = self._lateness(core, now)
        if late:
            core.state, core.kill_at = CoreState.KILLING, now + s.kill_after_s
            self._act(ActionKind.ABORT, core.pid,
                      f"core pid {core.pid} {late}: SIGABRT (stack dump in its log), "
                      f"SIGKILL in {s.kill_after_s:g} s; supervisord restarts it")

    def _lateness(self, core: _Core, now: float) -> str:
        """Why the core counts as hung ("" when it does not)."""
        s = self.settings
        if core.state is CoreState.STARTING and now - core.since > s.start_grace_s:
            return f"sent no READY=1 within {s.start_grace_s:g} s of its start"
        if core.state is CoreState.READY and now - core.last_ping > s.core_timeout_s:
            return (f"sent no WATCHDOG=1 for {now - core.last_ping:.1f} s "
                    f"(--core-timeout {s.core_timeout_s:g} s): its reactor is hung")
        if core.state is CoreState.STOPPING and now - core.since > s.stop_grace_s:
            return f"still running {s.stop_grace_s:g} s after STOPPING=1"
        return ""

    def _relay(self, now: float) -> None:
        s = self.settings
        if not s.relay:
            return
        core = self.core
        if not self.ready_relayed and core.state is CoreState.READY:
            self.ready_relayed, self.status_relayed = True, core.status
            self._act(ActionKind.RELAY, 0, "READY=1" + _status(core.status))
            self._note("told systemd READY=1 (the core is ready)")
        if s.relay_interval_s is None or now < self.next_relay:
            return
        why_not = self._why_not_feed(now)
        if why_not:
            if self.feeding:
                self.feeding = False
                self._note(f"not feeding systemd's watchdog: {why_not}")
            return
        if not self.feeding:
            self.feeding = True
            self._note("feeding systemd's watchdog again")
        status = core.status if core.status != self.status_relayed else ""
        self.status_relayed = core.status or self.status_relayed
        self.next_relay = now + s.relay_interval_s
        self._act(ActionKind.RELAY, 0, "WATCHDOG=1" + _status(status))

    def _why_not_feed(self, now: float) -> str:
        """Why systemd's watchdog must starve now ("" when all is well)."""
        if not self.supervisor_alive(now):
            return f"supervisord did not answer for {self.settings.rpc_timeout_s:g} s"
        if now - self.healthy_at > self.settings.give_up_s:
            return (f"the core has not been ready for {self.settings.give_up_s:g} s "
                    "(--give-up): systemd will restart the service")
        return ""

    def _act(self, kind: ActionKind, pid: int, text: str) -> None:
        self._actions.append(Action(kind, text, pid))

    def _note(self, text: str) -> None:
        self._act(ActionKind.NOTE, 0, text)


def parse_message(text: str) -> dict[str, str]:
    """sd_notify "KEY=value" lines as a dict (lines without '=' are dropped)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value
    return fields


def _status(line: str) -> str:
    return "\nSTATUS=core: " + line if line else ""


# -- the process ---------------------------------------------------------------------------

class _TimeoutConnection(UnixStreamHTTPConnection):
    """supervisor's Unix-socket HTTP connection, with a time limit on every socket call."""

    socketfile = ""

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(RPC_TIMEOUT_S)
        self.sock.connect(self.socketfile)


class TimeoutTransport(SupervisorTransport):
    """supervisor.xmlrpc.SupervisorTransport whose unix:// connections time out: a hung
    supervisord must show as "no answer", not block the watchdog."""

    def __init__(self, serverurl: str) -> None:
        super().__init__(serverurl=serverurl)
        if serverurl.startswith("unix://"):
            self._get_connection = self._unix_connection

    def _unix_connection(self) -> _TimeoutConnection:
        conn = _TimeoutConnection("localhost")
        conn.socketfile = self.serverurl[len("unix://"):]
        return conn


class SupervisorPoller(threading.Thread):
    """Asks supervisord every POLL_S for its state and the core's process info, and puts
    each answer (a CoreInfo) on `answers`; no answer puts nothing there."""

    def __init__(self, url: str, program: str, answers: queue.Queue[CoreInfo]) -> None:
        super().__init__(name="supervisord-poller", daemon=True)
        self.url, self.program, self.answers = url, program, answers
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._complaint = ""

    def run(self) -> None:
        proxy = self._proxy()
        while not self.stopping.is_set():
            try:
                self.answers.put(self._ask(proxy))
                self._complain("")
            except (OSError, xmlrpc.client.Error) as exc:
                self._complain(_rpc_problem(exc, self.url, self.program))
                proxy = self._proxy()
            self.wake.wait(POLL_S)
            self.wake.clear()

    def _proxy(self) -> Any:
        return xmlrpc.client.ServerProxy("http://127.0.0.1",
                                         transport=TimeoutTransport(self.url))

    def _ask(self, proxy: Any) -> CoreInfo:
        proxy.supervisor.getState()
        info = proxy.supervisor.getProcessInfo(self.program)
        running = info.get("statename") == "RUNNING"
        uptime = float(info.get("now", 0)) - float(info.get("start", 0))
        return CoreInfo(pid=int(info.get("pid") or 0), running=running, uptime_s=uptime)

    def _complain(self, problem: str) -> None:
        if problem != self._complaint:
            if problem:
                log.warning("supervisord: %s", problem)
            elif self._complaint:
                log.info("supervisord answers again")
            self._complaint = problem


def _rpc_problem(exc: BaseException, url: str, program: str) -> str:
    if isinstance(exc, xmlrpc.client.Fault) and "BAD_NAME" in exc.faultString:
        return (f"it has no program {program!r}: add [program:{program}] to its config "
                "or give --program")
    if isinstance(exc, xmlrpc.client.Fault):
        return f"it refused our question ({exc.faultString})"
    if isinstance(exc, TimeoutError):
        return f"no answer on {url} within {RPC_TIMEOUT_S:g} s (hung?)"
    return f"cannot ask it on {url} ({type(exc).__name__}: {exc}): is it running there?"


def bind_notify_socket(path: Path, group: str | None = None) -> socket.socket:
    """The AF_UNIX datagram socket the core's pings arrive on: SO_PASSCRED, mode 0660,
    group `group` (default: the group owning its folder), so a core running as another
    user of that group may send to it while we run as root."""
    named = _gid(group) if group else None
    path.parent.mkdir(parents=True, exist_ok=True)
    gid = named if named is not None else path.parent.stat().st_gid
    if path.is_socket():
        path.unlink()
    elif path.exists() or path.is_symlink():
        raise BranchlineError(f"{path} exists and is not a socket: remove it or give "
                              "another --socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
        os.chown(path, -1, gid)
    except OSError as exc:
        sock.close()
        raise BranchlineError(f"cannot listen on {path} ({exc.strerror}): check the "
                              "directory's permissions or give another --socket") from exc
    return sock


def _gid(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise BranchlineError(f"--socket-group {group}: no such group: give the core's "
                              "group (getent group)") from None


def receive(sock: socket.socket) -> tuple[int, str] | None:
    """One datagram and its sender's pid from SCM_CREDENTIALS (0: no credentials); None
    when nothing is waiting."""
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(MAX_DATAGRAM,
                                                     socket.CMSG_SPACE(_UCRED.size),
                                                     socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    pid = 0
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = _UCRED.unpack(payload[:_UCRED.size])[0]
    return pid, data.decode(errors="replace")


@dataclass
class Options:
    socket: Path
    supervisor_url: str
    program: str = "core"
    settings: Settings = field(default_factory=Settings)
    systemd_socket: str = ""  # systemd's NOTIFY_SOCKET ("" : not under systemd)
    socket_group: str | None = None  # the notify socket's group (None: its folder's)


def options_from_env(socket_path: Path, supervisor_url: str, program: str,
                     core_timeout_s: float, start_grace_s: float, give_up_s: float,
                     env: Mapping[str, str] = os.environ) -> Options:
    """The watchdog's options, with systemd's NOTIFY_SOCKET/WATCHDOG_USEC from `env`."""
    target = env.get("NOTIFY_SOCKET", "")
    if target and not target.startswith("@") and _same_file(target, socket_path):
        log.warning("NOTIFY_SOCKET is our own socket %s: not relaying to systemd (supervisord "
                    "must set NOTIFY_SOCKET for the core only)", socket_path)
        target = ""
    settings = Settings(core_timeout_s=core_timeout_s, start_grace_s=start_grace_s,
                        give_up_s=give_up_s, relay=bool(target),
                        relay_interval_s=sdnotify.watchdog_interval_s(env, check_pid=False)
                        if target else None)
    return Options(socket_path, supervisor_url, program, settings, target)


def _same_file(a: str, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


class WatchdogProcess:
    """The loop: datagrams in, supervisord's answers in, logic's actions out."""

    def __init__(self, options: Options, clock: Clock | None = None) -> None:
        self.options = options
        self.logic = WatchdogLogic(clock or MonotonicClock(), options.settings)
        self.answers: queue.Queue[CoreInfo] = queue.Queue()
        self.poller = SupervisorPoller(options.supervisor_url, options.program, self.answers)
        self.stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def stop(self) -> None:
        """Thread- and signal-safe: end run() at its next turn."""
        self.stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def run(self) -> None:
        sock = bind_notify_socket(self.options.socket, self.options.socket_group)
        self._say_where()
        self.poller.start()
        try:
            while not self.stopping.is_set():
                self._turn(sock)
        finally:
            self.poller.stopping.set()
            self.poller.wake.set()
            sock.close()
            _unlink_socket(self.options.socket)
            os.close(self._wake_r)
            os.close(self._wake_w)
            log.info("watchdog stopped")

    def _turn(self, sock: socket.socket) -> None:
        readable, _w, _x = select.select([sock.fileno(), self._wake_r], [], [], LOOP_S)
        if self._wake_r in readable:
            os.read(self._wake_r, 64)
        while (got := receive(sock)) is not None:
            pid, text = got
            if not self.logic.on_message(pid, text) and pid != self.logic.core.pid:
                self.poller.wake.set()  # maybe a new core: ask supervisord now
                log.debug("ignored %r from pid %d (core pid %d)", text, pid, self.logic.core.pid)
        while not self.answers.empty():
            self.logic.on_supervisor(self.answers.get_nowait())
        for action in self.logic.tick():
            self._carry_out(action)

    def _carry_out(self, action: Action) -> None:
        if action.kind is ActionKind.RELAY:
            if not sdnotify.notify(action.text, self.options.systemd_socket):
                log.warning("could not send %s to systemd at %s", action.text.split("\n")[0],
                            self.options.systemd_socket)
            return
        level = logging.INFO if action.kind is ActionKind.NOTE else logging.WARNING
        log.log(level, "%s", action.text)
        if action.kind is ActionKind.ABORT:
            _signal(action.pid, signal.SIGABRT)
        elif action.kind is ActionKind.KILL:
            _signal(action.pid, signal.SIGKILL)

    def _say_where(self) -> None:
        s, o = self.options.settings, self.options
        upward = (f"relaying to systemd at {o.systemd_socket}"
                  + (f" (WATCHDOG=1 every {s.relay_interval_s:g} s)" if s.relay_interval_s
                     else " (READY only: no WATCHDOG_USEC)")
                  if o.systemd_socket else "not under systemd (no NOTIFY_SOCKET)")
        log.info("watchdog on %s for program %r via %s: core-timeout %g s, start-grace %g s, "
                 "give-up %g s; %s", o.socket, o.program, o.supervisor_url, s.core_timeout_s,
                 s.start_grace_s, s.give_up_s, upward)


def _signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        log.info("core pid %d already gone", pid)
    except PermissionError:
        log.error("not allowed to signal core pid %d: run the watchdog as the core's user "
                  "or root", pid)


def _unlink_socket(path: Path) -> None:
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


def run_watchdog(options: Options,
                 install_signals: Callable[[WatchdogProcess], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop."""
    process = WatchdogProcess(options)
    (install_signals or _stop_on_signals)(process)
    process.run()
    return 0


def _stop_on_signals(process: WatchdogProcess) -> None:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        process.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

