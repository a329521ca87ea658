"""The box's watchdog (firmware.supervise.watchdog).

First its decisions, on a FakeClock: the start grace, the ping timeout, pings from other
pids, SIGABRT then SIGKILL, the relay of READY/WATCHDOG to systemd, giving up. Then the
real thing: supervisord (a minimal config written here; the product config has its own
tests) running the watchdog and a sim core with the freeze test hook; a fake systemd
socket as the watchdog's NOTIFY_SOCKET. A frozen or SIGSTOPped core is killed and comes
back with a new pid; a SIGSTOPped supervisord starves systemd's watchdog."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from supervisor.xmlrpc import SupervisorTransport

from firmware.supervise.watchdog import (
    ActionKind,
    CoreInfo,
    Settings,
    WatchdogLogic,
    bind_notify_socket,
    parse_message,
    receive,
)
from foundation import sdnotify
from foundation.errors import BranchlineError
from foundation.reactor import FakeClock
from lab.procs import stop_process
from lab.wait import wait_until
from tests.supervise.notifyrx import Receiver

ROOT = Path(__file__).resolve().parents[2]
CORE = 4242


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temp dir: AF_UNIX paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="bl-wd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the decisions, on a FakeClock ----------------------------------------------------------

def _logic(**kw: Any) -> tuple[FakeClock, WatchdogLogic]:
    clock = FakeClock()
    return clock, WatchdogLogic(clock, Settings(**kw))


def _after(clock: FakeClock, logic: WatchdogLogic, seconds: float,
           ping_from: int | None = None) -> list[tuple[ActionKind, int]]:
    """Let `seconds` pass in 0.5 s steps (supervisord answering, `ping_from` pinging);
    the ABORT/KILL actions taken, with their pids."""
    taken: list[tuple[ActionKind, int]] = []
    end = clock.now() + seconds
    while clock.now() < end:
        clock.set(min(end, clock.now() + 0.5))
        logic.on_supervisor(CoreInfo(logic.core.pid or CORE, True))
        if ping_from is not None:
            logic.on_message(ping_from, "WATCHDOG=1")
        taken += [(a.kind, a.pid) for a in logic.tick() if a.kind in (ActionKind.ABORT,
                                                                       ActionKind.KILL)]
    return taken


def test_a_starting_core_has_its_grace_then_is_aborted_and_killed() -> None:
    clock, logic = _logic(start_grace_s=90)
    logic.on_supervisor(CoreInfo(CORE, True, uptime_s=0))
    assert _after(clock, logic, 89) == []
    assert _after(clock, logic, 2) == [(ActionKind.ABORT, CORE)]
    assert _after(clock, logic, 2) == []  # aborted at 1090.5: SIGKILL due at 1093.5
    assert _after(clock, logic, 1) == [(ActionKind.KILL, CORE)]
    assert _after(clock, logic, 20) == []  # once


def test_the_grace_counts_from_the_cores_start_not_ours() -> None:
    clock, logic = _logic(start_grace_s=90)
    logic.on_supervisor(CoreInfo(CORE, True, uptime_s=85))
    assert _after(clock, logic, 4.5) == []
    assert _after(clock, logic, 1) == [(ActionKind.ABORT, CORE)]


def test_a_ready_core_is_aborted_when_its_pings_stop() -> None:
    clock, logic = _logic(core_timeout_s=10)
    logic.on_supervisor(CoreInfo(CORE, True))
    assert logic.on_message(CORE, "READY=1\nSTATUS=3 ports up")
    assert _after(clock, logic, 120, ping_from=CORE) == []
    assert _after(clock, logic, 10) == []
    assert _after(clock, logic, 0.5) == [(ActionKind.ABORT, CORE)]


def test_pings_from_another_pid_do_not_count() -> None:
    clock, logic = _logic(core_timeout_s=10)
    logic.on_supervisor(CoreInfo(CORE, True))
    logic.on_message(CORE, "READY=1")
    assert not logic.on_message(CORE + 1, "WATCHDOG=1")
    assert not logic.on_message(0, "WATCHDOG=1")  # no credentials
    assert _after(clock, logic, 10.5, ping_from=CORE + 1) == [(ActionKind.ABORT, CORE)]


def test_a_restarted_core_is_a_new_pid_with_a_new_grace() -> None:
    clock, logic = _logic(core_timeout_s=10, start_grace_s=30)
    logic.on_supervisor(CoreInfo(CORE, True))
    logic.on_message(CORE, "READY=1")
    assert _after(clock, logic, 14) == [(ActionKind.ABORT, CORE), (ActionKind.KILL, CORE)]
    logic.on_supervisor(CoreInfo(0, False))  # exited; supervisord restarts it
    logic.on_supervisor(CoreInfo(CORE + 7, True))
    assert not logic.on_message(CORE, "WATCHDOG=1")
    assert logic.core.state == "starting"
    assert _after(clock, logic, 29) == []
    assert logic.on_message(CORE + 7, "WATCHDOG=1")  # a ping stands for a missed READY=1
    assert logic.core.state == "ready"


def test_a_ready_that_beats_supervisords_answer_is_kept_for_it() -> None:
    clock, logic = _logic(relay=True, relay_interval_s=None, core_timeout_s=10)
    logic.on_supervisor(CoreInfo(0, False))
    clock.set(clock.now() + 0.5)
    assert not logic.on_message(CORE, "READY=1\nSTATUS=2 ports up")  # not named yet
    clock.set(clock.now() + 0.5)
    logic.on_supervisor(CoreInfo(CORE, True, uptime_s=1))
    assert logic.core.state == "ready" and logic.core.last_ping == 1000.5
    assert _relayed(logic) == ["READY=1\nSTATUS=core: 2 ports up"]


def test_no_decision_on_stale_news_from_supervisord() -> None:
    clock, logic = _logic(core_timeout_s=10)
    logic.on_supervisor(CoreInfo(CORE, True))
    logic.on_message(CORE, "READY=1")
    clock.set(clock.now() + 60)  # supervisord silent all along: its pid may be old
    assert [a for a in logic.tick() if a.kind is ActionKind.ABORT] == []
    logic.on_supervisor(CoreInfo(CORE, True))
    assert [a.kind for a in logic.tick()] == [ActionKind.ABORT]


def test_a_stopping_core_is_left_to_supervisord_for_a_while() -> None:
    clock, logic = _logic(core_timeout_s=10, stop_grace_s=60)
    logic.on_supervisor(CoreInfo(CORE, True))
    logic.on_message(CORE, "READY=1")
    logic.on_message(CORE, "STOPPING=1\nSTATUS=stopping")
    assert _after(clock, logic, 59) == []
    assert _after(clock, logic, 1.5) == [(ActionKind.ABORT, CORE)]


def _relayed(logic: WatchdogLogic) -> list[str]:
    return [a.text for a in logic.tick() if a.kind is ActionKind.RELAY]


def test_relay_ready_once_then_watchdog_every_interval() -> None:
    clock, logic = _logic(relay=True, relay_interval_s=15)
    logic.on_supervisor(CoreInfo(CORE, True))
    assert _relayed(logic) == ["WATCHDOG=1"]  # starting up: supervisord answers
    logic.on_message(CORE, "READY=1\nSTATUS=3 ports up; 0 calls; cloud up")
    assert _relayed(logic) == ["READY=1\nSTATUS=core: 3 ports up; 0 calls; cloud up"]
    sent = []
    for _ in range(60):
        clock.set(clock.now() + 1)
        logic.on_supervisor(CoreInfo(CORE, True))
        logic.on_message(CORE, "WATCHDOG=1")
        sent += [(clock.now(), text) for text in _relayed(logic)]
    assert [t for t, _text in sent] == [1015.0, 1030.0, 1045.0, 1060.0]
    assert {text for _t, text in sent} == {"WATCHDOG=1"}


def test_relay_stops_while_supervisord_does_not_answer() -> None:
    clock, logic = _logic(relay=True, relay_interval_s=1, core_timeout_s=1000)
    logic.on_supervisor(CoreInfo(CORE, True))
    logic.on_message(CORE, "READY=1")
    _relayed(logic)
    clock.set(clock.now() + 5)
    assert _relayed(logic) == ["WATCHDOG=1"]
    clock.set(clock.now() + 1)  # 6 s since the last answer
    notes = logic.tick()
    assert [a.kind for a in notes] == [ActionKind.NOTE]
    assert "supervisord did not answer for 5 s" in notes[0].text
    logic.on_supervisor(CoreInfo(CORE, True))
    assert _relayed(logic) == ["WATCHDOG=1"]


def test_give_up_when_the_core_does_not_come_back() -> None:
    clock, logic = _logic(relay=True, relay_interval_s=10, give_up_s=300, start_grace_s=90)
    logic.on_supervisor(CoreInfo(CORE, True))
    logic.on_message(CORE, "READY=1")
    logic.tick()
    logic.on_supervisor(CoreInfo(0, False))  # crashed, and keeps failing to start
    fed = []
    for _ in range(400):
        clock.set(clock.now() + 1)
        logic.on_supervisor(CoreInfo(0, False))
        fed += [clock.now() for _text in _relayed(logic)]
    assert fed[-1] <= 1000 + 300 and fed[-1] > 1000 + 280
    assert not logic.feeding
    logic.on_supervisor(CoreInfo(CORE + 1, True))
    logic.on_message(CORE + 1, "READY=1")
    assert _relayed(logic) == ["WATCHDOG=1"]  # READY=1 went up once only, long ago


def test_no_relay_without_systemd() -> None:
    _clock, logic = _logic(relay=False, relay_interval_s=None)
    logic.on_supervisor(CoreInfo(CORE, True))
    logic.on_message(CORE, "READY=1")
    assert _relayed(logic) == []


def test_parse_message() -> None:
    assert parse_message("READY=1\nSTATUS=a=b\nnoise\n") == {"READY": "1", "STATUS": "a=b"}


def test_the_notify_socket_is_0660_for_the_cores_group_and_names_senders(
        short_dir: Path) -> None:
    path = short_dir / "run" / "notify.sock"
    path.parent.mkdir()
    path.write_text("")  # a stale file that is not a socket is not ours to delete
    with pytest.raises(BranchlineError, match="not a socket"):
        bind_notify_socket(path)
    path.unlink()
    sock = bind_notify_socket(path, group="0")
    try:
        assert path.stat().st_mode & 0o777 == 0o660 and path.stat().st_gid == 0
        assert receive(sock) is None
        assert sdnotify.notify("WATCHDOG=1", str(path))
        assert receive(sock) == (os.getpid(), "WATCHDOG=1")
    finally:
        sock.close()
    with pytest.raises(BranchlineError, match="no such group"):
        bind_notify_socket(path, group="no-such-group-here")


# -- the real thing: supervisord, the watchdog, a sim core ----------------------------------

CORE_TIMEOUT_S = 3
KILL_AFTER_S = 3
RELAY_USEC = 4_000_000  # systemd's WatchdogSec=4: WATCHDOG=1 every 2 s


def _config(d: Path) -> str:
    py, root = sys.executable, str(ROOT)
    return f"""\
[supervisord]
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
[unix_http_server]
file={d}/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{d}/supervisor.sock

[program:watchdog]
command={py} -m firmware watchdog --socket {d}/notify.sock --supervisor-url unix://{d}/supervisor.sock --core-timeout {CORE_TIMEOUT_S} --start-grace 60 --give-up 300
directory={root}
environment=PYTHONPATH="{root}"
priority=1
autorestart=true
startsecs=1
stopsignal=TERM
stopwaitsecs=5
stdout_logfile={d}/watchdog.log
redirect_stderr=true

[program:core]
command={py} -m firmware run --sim --config-dir {d}/etc --data-dir {d}/data --api-socket {d}/core.sock
directory={root}
environment=PYTHONPATH="{root}",NOTIFY_SOCKET="{d}/notify.sock",WATCHDOG_USEC="2000000",WATCHDOG_PID="",BRANCHLINE_TEST_HOOKS="1"
priority=10
autorestart=true
startsecs=3
stopsignal=TERM
stopwaitsecs=10
stdout_logfile={d}/core.log
redirect_stderr=true
"""


class Rig:
    """supervisord with the watchdog and a sim core; `systemd` receives the relay."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        (d / "supervisord.conf").write_text(_config(d))
        self.systemd = Receiver(str(d / "systemd.sock"))
        env = {**os.environ, "NOTIFY_SOCKET": self.systemd.address,
               "WATCHDOG_USEC": str(RELAY_USEC), "WATCHDOG_PID": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c",
             str(d / "supervisord.conf")], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def rpc(self) -> Any:
        """A fresh proxy each time: a failed call leaves the transport unusable."""
        url = f"unix://{self.dir}/supervisor.sock"
        return xmlrpc.client.ServerProxy("http://127.0.0.1",
                                         transport=SupervisorTransport(serverurl=url))

    def info(self, program: str = "core") -> dict[str, Any]:
        return self.rpc.supervisor.getProcessInfo(program)

    def core_pid(self) -> int:
        info = wait_until(lambda: (lambda i: i if i["statename"] == "RUNNING" else None)(
            self.info()), 30, "a RUNNING core", step=0.2, retry=(OSError, xmlrpc.client.Error),
            detail=self.logs)
        return int(info["pid"])

    def wait_ready(self, pid: int, timeout: float = 40) -> None:
        wait_until(lambda: f"core pid {pid} ready" in self.log("watchdog"), timeout,
                   f"the watchdog seeing core pid {pid} ready", step=0.2, detail=self.logs)

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {n}:\n{self.log(n)[-1500:]}" for n in ("watchdog", "core",
                                                                       "supervisord"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        stop_process(self.proc, grace=30)
        self.systemd.close()


@pytest.fixture
def rig(short_dir: Path) -> Iterator[Rig]:
    r = Rig(short_dir)
    try:
        yield r
    finally:
        r.stop()


def _restarted(rig: Rig, old: int, freeze: signal.Signals) -> tuple[int, float]:
    rig.wait_ready(old)
    os.kill(old, freeze)
    t0 = time.monotonic()
    new = wait_until(lambda: (lambda i: i["pid"] if i["statename"] == "RUNNING"
                              and i["pid"] not in (0, old) else None)(rig.info()),
                     CORE_TIMEOUT_S + KILL_AFTER_S + 15, "a new core pid", step=0.2,
                     retry=(OSError, xmlrpc.client.Error), detail=rig.logs)
    return int(new), time.monotonic() - t0


def test_a_frozen_reactor_is_aborted_and_restarted(rig: Rig) -> None:
    old = rig.core_pid()
    new, took = _restarted(rig, old, signal.SIGUSR2)
    assert took < CORE_TIMEOUT_S + KILL_AFTER_S + 5, rig.logs()
    wd = rig.log("watchdog")
    assert f"core pid {old} sent no WATCHDOG=1" in wd and "SIGABRT" in wd, wd
    rig.wait_ready(new)
    core_log = rig.log("core")
    assert "Fatal Python error: Aborted" in core_log and "in freeze" in core_log


def test_a_stopped_core_is_killed_and_restarted(rig: Rig) -> None:
    old = rig.core_pid()
    new, took = _restarted(rig, old, signal.SIGSTOP)
    assert took < CORE_TIMEOUT_S + KILL_AFTER_S + 5, rig.logs()
    assert f"core pid {old} still there {KILL_AFTER_S} s after SIGABRT: SIGKILL" \
        in rig.log("watchdog"), rig.logs()
    rig.wait_ready(new)


def test_systemd_is_fed_only_while_supervisord_answers(rig: Rig) -> None:
    rig.wait_ready(rig.core_pid())
    sd = rig.systemd

    def fed_after_ready() -> list[str] | None:
        texts = sd.texts()
        ready = next((i for i, t in enumerate(texts) if t.startswith("READY=1")), None)
        after = [] if ready is None else texts[ready:]
        return after if any(t.startswith("WATCHDOG=1") for t in after) else None
    after = wait_until(fed_after_ready, 15, "READY=1 then WATCHDOG=1 to systemd", step=0.2,
                       detail=rig.logs)
    assert "STATUS=core: " in after[0] and "ports up" in after[0]
    assert len([t for t in sd.texts() if t.startswith("READY=1")]) == 1
    assert {pid for _t, pid, _text in sd.drain()} == {_watchdog_pid(rig)}  # not the core

    os.kill(rig.proc.pid, signal.SIGSTOP)
    stopped = time.monotonic()

    def starved() -> float | None:
        pings = sd.times_of("WATCHDOG=1")
        return pings[-1] if time.monotonic() - pings[-1] > 2.5 * RELAY_USEC / 2e6 else None
    last = wait_until(starved, 20, "systemd's watchdog starving", step=0.2, detail=rig.logs)
    assert last < stopped + 5 + 1 + RELAY_USEC / 2e6  # rpc timeout, poll, one interval
    os.kill(rig.proc.pid, signal.SIGCONT)
    n = len(sd.times_of("WATCHDOG=1"))
    wait_until(lambda: len(sd.times_of("WATCHDOG=1")) > n, 15, "feeding again", step=0.2,
               detail=rig.logs)
    assert "not feeding systemd's watchdog: supervisord did not answer" in rig.log("watchdog")


def _watchdog_pid(rig: Rig) -> int:
    return int(rig.info("watchdog")["pid"])


def test_the_watchdog_stops_cleanly_with_supervisord(rig: Rig) -> None:
    rig.wait_ready(rig.core_pid())
    assert (rig.dir / "notify.sock").is_socket()
    rig.proc.send_signal(signal.SIGTERM)
    assert rig.proc.wait(30) == 0
    sv = rig.log("supervisord")
    assert "stopped: watchdog (exit status 0)" in sv, sv[-2000:]
    assert "watchdog stopped" in rig.log("watchdog")
    assert not (rig.dir / "notify.sock").exists()
