"""The core's health ping (firmware.core.health): READY=1 with a STATUS line, WATCHDOG=1
from a reactor timer, STOPPING=1 — first on a FakeClock reactor into a real datagram
socket, then from a real `branchline run --sim` process: the pings keep coming about
every second, and stop when the reactor is frozen (SIGUSR2 test hook, while the control
API still accepts connections) or the whole process is SIGSTOPped."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.core.health import HealthPing, ping_interval_s, status_line
from foundation import sdnotify
from foundation.reactor import FakeClock, Reactor
from lab.procs import stop_process
from lab.wait import wait_until
from tests.supervise.notifyrx import Receiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temp dir: AF_UNIX paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="bl-wd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver(short_dir: Path) -> Iterator[Receiver]:
    rx = Receiver(str(short_dir / "notify.sock"))
    yield rx
    rx.close()

STATUS = {
    "ports": {"fxs1": {"kind": "fxs", "state": "idle", "call": ""},
              "fxs2": {"kind": "fxs", "state": "failed", "call": ""},
              "fxo1": {"kind": "fxo", "state": "idle", "call": "talking"},
              "headset": {"kind": "headset", "state": "idle", "call": ""}},
    "cloud_up": True, "no_cloud": "", "survivability": {"state": "cloud"},
}


# -- unit: FakeClock reactor, real socket ---------------------------------------------------

def _ping(receiver: Receiver, status: dict | None = None,
          interval: float | None = 1.0) -> tuple[Reactor, HealthPing]:
    reactor = Reactor(FakeClock())
    notify = functools.partial(sdnotify.notify, socket_path=receiver.address)
    return reactor, HealthPing(reactor, notify=notify, interval_s=interval,
                               status=(lambda: status) if status is not None else None)


def test_ready_carries_a_status_line_then_watchdog_every_interval(receiver: Receiver) -> None:
    reactor, ping = _ping(receiver, STATUS)
    ping.start()
    assert receiver.texts() == ["READY=1\nSTATUS=2 ports up, 1 failed; 1 call; cloud up"]
    reactor.run_for(3.5)
    assert receiver.texts()[1:] == ["WATCHDOG=1"] * 3
    ping.stop()
    reactor.run_for(5)
    assert receiver.texts()[4:] == ["STOPPING=1\nSTATUS=stopping"]


def test_the_status_line_is_refreshed_when_it_changes(receiver: Receiver) -> None:
    status = {**STATUS, "cloud_up": False}
    reactor, ping = _ping(receiver, status)
    ping.start()
    status["cloud_up"] = True
    reactor.run_for(10.5)
    changed = [t for t in receiver.texts() if "STATUS=" in t]
    assert changed[-1] == "WATCHDOG=1\nSTATUS=2 ports up, 1 failed; 1 call; cloud up"
    assert "survivable (cloud)" in changed[0]


def test_a_failing_status_does_not_stop_the_pings(receiver: Receiver) -> None:
    reactor = Reactor(FakeClock())

    def broken() -> dict:
        raise KeyError("ports")

    ping = HealthPing(reactor, functools.partial(sdnotify.notify, socket_path=receiver.address),
                      1.0, broken)
    ping.start()
    reactor.run_for(2.5)
    assert receiver.texts() == ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]


def test_no_interval_means_ready_and_stopping_only(receiver: Receiver) -> None:
    reactor, ping = _ping(receiver, interval=None)
    ping.start()
    reactor.run_for(10)
    ping.stop()
    assert receiver.texts() == ["READY=1", "STOPPING=1\nSTATUS=stopping"]


def test_a_blocked_reactor_sends_nothing(receiver: Receiver) -> None:
    reactor, ping = _ping(receiver)
    ping.start()
    reactor.run_for(1.5)
    assert isinstance(reactor.clock, FakeClock)
    reactor.clock.set(reactor.now() + 30)  # thirty seconds pass without the reactor running
    assert receiver.texts() == ["READY=1", "WATCHDOG=1"]


@pytest.mark.parametrize(("status", "line"), [
    ({**STATUS, "cloud_up": False, "survivability": {"state": "survivable"}},
     "2 ports up, 1 failed; 1 call; survivable (survivable)"),
    ({**STATUS, "no_cloud": "no cloud edge configured"},
     "2 ports up, 1 failed; 1 call; no cloud: no cloud edge configured"),
    ({"ports": {}, "cloud_up": False}, "0 ports up; 0 calls; survivable (cloud down)"),
])
def test_status_line(status: dict, line: str) -> None:
    assert status_line(status) == line


@pytest.mark.parametrize(("env", "interval"), [
    ({"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "2000000"}, 1.0),
    ({"NOTIFY_SOCKET": "/run/x.sock"}, 1.0),
    ({"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "6000000"}, 3.0),
    ({}, None),
])
def test_ping_interval(env: dict[str, str], interval: float | None) -> None:
    assert ping_interval_s(env) == interval


# -- a real `branchline run --sim` ----------------------------------------------------------

class SimCore:
    """`python -m firmware run --sim` with its pings going to `receiver`."""

    def __init__(self, tmp: Path, rx: Receiver, hooks: bool = True) -> None:
        self.api_socket = tmp / "core.sock"
        self.log = tmp / "core.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": rx.address,
               "WATCHDOG_USEC": "2000000", "BRANCHLINE_TEST_HOOKS": "1" if hooks else "0"}
        env.pop("WATCHDOG_PID", None)
        cmd = [sys.executable, "-m", "firmware", "run", "--sim", "--config-dir",
               str(tmp / "etc"), "--data-dir", str(tmp / "data"),
               "--api-socket", str(self.api_socket)]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        self.rx = rx

    def wait_ready(self) -> None:
        wait_until(lambda: self.rx.times_of("READY=1", self.proc.pid), 30,
                   "READY=1 from the core", step=0.1, detail=self.tail)

    def wait_pings(self, n: int) -> list[float]:
        return wait_until(lambda: (lambda t: t if len(t) >= n else None)(
            self.rx.times_of("WATCHDOG=1", self.proc.pid)), n * 2 + 5,
            f"{n} WATCHDOG=1 pings", step=0.1, detail=self.tail)

    def wait_silence(self, gap: float = 3.0) -> float:
        """Poll until no WATCHDOG=1 came for `gap` seconds (3 intervals); the last ping."""
        def quiet() -> float | None:
            pings = self.rx.times_of("WATCHDOG=1", self.proc.pid)
            return pings[-1] if pings and time.monotonic() - pings[-1] > gap else None
        return wait_until(quiet, gap + 10, f"{gap:g} s without WATCHDOG=1", step=0.1,
                          detail=self.tail)

    def tail(self) -> str:
        return self.log.read_text()[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        stop_process(self.proc, grace=10)


@pytest.fixture
def sim_core(short_dir: Path, receiver: Receiver) -> Iterator[SimCore]:
    core = SimCore(short_dir, receiver)
    try:
        yield core
    finally:
        core.stop()


def _api_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        return True


def test_a_running_core_pings_about_every_second(sim_core: SimCore) -> None:
    sim_core.wait_ready()
    ready = sim_core.rx.drain()[0][2]
    assert ready.startswith("READY=1\nSTATUS=") and "ports up" in ready
    pings = sim_core.wait_pings(4)
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert all(0.5 < g < 1.6 for g in gaps), gaps
    sim_core.proc.send_signal(signal.SIGTERM)
    assert sim_core.proc.wait(20) == 0, sim_core.tail()
    assert "STOPPING=1" in sim_core.rx.texts()[-1].splitlines()


def test_a_frozen_reactor_stops_the_pings_while_the_api_accepts(sim_core: SimCore) -> None:
    sim_core.wait_ready()
    sim_core.wait_pings(2)
    sim_core.proc.send_signal(signal.SIGUSR2)
    frozen_at = time.monotonic()
    last = sim_core.wait_silence()
    assert last < frozen_at + 1.5, "pings went on after the freeze"
    assert _api_accepts(sim_core.api_socket)
    assert sim_core.proc.poll() is None
    # what the watchdog does next: SIGABRT, and faulthandler dumps the stacks to the log
    sim_core.proc.send_signal(signal.SIGABRT)
    assert sim_core.proc.wait(10) == -signal.SIGABRT
    log = sim_core.log.read_text()
    assert "Fatal Python error: Aborted" in log and "in freeze" in log, log[-3000:]


def test_a_stopped_process_stops_the_pings_and_resumes(sim_core: SimCore) -> None:
    sim_core.wait_ready()
    sim_core.wait_pings(2)
    sim_core.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    assert sim_core.wait_silence() < stopped_at + 1.5
    n = len(sim_core.rx.times_of("WATCHDOG=1"))
    sim_core.proc.send_signal(signal.SIGCONT)
    sim_core.wait_pings(n + 2)
