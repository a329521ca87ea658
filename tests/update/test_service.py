"""The update service's waiting rules and its state, against a real sim core (its control
API on a Unix socket) and real `rauc info` on bundles signed at test time:

- a call up: WAITING (calls_up, naming the port), re-checked; `force` skips it;
- the quiet window `update.window`, read from the config store at each check, judged on
  the injected clock's wall time (FakeClock), also across midnight;
- one update at a time (BUSY), cancel before installing, a restart while waiting or
  installing recorded as FAILED;
- the state file: 0600, replaced atomically, and a torn or garbled one read as IDLE.
Without the RAUC service on D-Bus an install that starts fails with one line (the RAUC-
backed installs are in test_service_rauc.py)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.core.config import ConfigStore
from firmware.update.rauc import Rauc, Reason, UpdateError
from firmware.update.service import UpdateService, in_window
from firmware.update.state import Phase, StateFile, UpdateState
from foundation.reactor import FakeClock
from lab.wait import wait_until
from tests.update.updaterig import LiveCore, Signer, make_bundle

RUNNING = "2.0.0"


def local_clock(hour: int, minute: int = 0) -> FakeClock:
    """A FakeClock whose wall time is today at hour:minute local time."""
    now = time.localtime()
    epoch = time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hour, minute, 0, 0, 0, -1))
    return FakeClock(epoch=epoch)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCore]:
    rig = LiveCore(tmp_path_factory.mktemp("core"))
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Path]:
    d = tmp_path_factory.mktemp("bundle")
    signer = Signer(d, "fleet")
    return signer, make_bundle(d / "good.raucb", "2.1.0", signer)


class Services:
    def __init__(self, tmp: Path, core: LiveCore, signer: Signer) -> None:
        self.tmp, self.core, self.signer = tmp, core, signer
        self.made: list[UpdateService] = []
        self.reboots: list[bool] = []

    def __call__(self, clock: FakeClock | None = None, **kw: Any) -> UpdateService:
        svc = UpdateService(self.tmp / "data", Rauc(env={"DBUS_SYSTEM_BUS_ADDRESS":
                                                         f"unix:path={self.tmp}/no-bus"}),
                            lambda: self.core.api, clock or FakeClock(),
                            keyring=self.signer.ca, compatible="branchline-rpi",
                            reboot=self.reboots.append, config_dir=self.tmp / "etc",
                            retry_s=0.05, version=lambda: RUNNING, **kw)
        self.made.append(svc)
        return svc


@pytest.fixture
def services(tmp_path: Path, core: LiveCore,
             bundle: tuple[Signer, Path]) -> Iterator[Services]:
    made = Services(tmp_path, core, bundle[0])
    yield made
    for svc in made.made:
        svc.close()


def phase_of(svc: UpdateService, phase: Phase, timeout: float = 10) -> dict[str, Any]:
    def at() -> dict[str, Any] | None:
        state = svc.status()
        return state if state["phase"] == phase else None
    return wait_until(at, timeout, f"phase {phase}", detail=svc.status)


def left_waiting(svc: UpdateService) -> dict[str, Any]:
    """Past the gate: installing, or (no RAUC service here) failed at the install."""
    def gone() -> dict[str, Any] | None:
        state = svc.status()
        return state if state["phase"] in (Phase.INSTALLING, Phase.REBOOTING,
                                           Phase.FAILED) else None
    return wait_until(gone, 10, "the install started", detail=svc.status)


def test_a_call_up_makes_it_wait_and_force_skips_that(services: Services, core: LiveCore,
                                                      bundle: tuple[Signer, Path]) -> None:
    core.call_up()
    try:
        svc = services()
        svc.submit(bundle[1], "console")
        waiting = phase_of(svc, Phase.WAITING)
        assert waiting["reason"] == Reason.CALLS_UP
        assert "call(s) up on fxs1" in waiting["message"] and "force" in waiting["message"]
        with pytest.raises(UpdateError) as err:  # one update at a time
            svc.submit(bundle[1], "web")
        assert err.value.reason == Reason.BUSY and "already waiting" in str(err.value)
        assert svc.cancel()["phase"] == Phase.IDLE
        svc.submit(bundle[1], "console", force=True)
        done = left_waiting(svc)
        assert done["reason"] != Reason.CALLS_UP
        assert "the RAUC service does not answer on D-Bus" in done["message"]
        assert services.reboots == []
    finally:
        core.hang_up()


def test_the_call_ending_lets_it_go_on(services: Services, core: LiveCore,
                                       bundle: tuple[Signer, Path]) -> None:
    core.call_up()
    svc = services()
    try:
        svc.submit(bundle[1], "agent", job="j1")
        phase_of(svc, Phase.WAITING)
    finally:
        core.hang_up()
    assert left_waiting(svc)["job"] == "j1"


def test_quiet_window_from_the_store_on_the_injected_clock(services: Services,
                                                          bundle: tuple[Signer, Path]) -> None:
    store = ConfigStore(services.tmp / "etc")
    doc = store.load()
    doc["update"] = {"window": "01:00-05:00"}
    store.save(doc, "quiet window")
    clock = local_clock(12, 0)
    svc = services(clock)
    svc.submit(bundle[1], "web")
    waiting = phase_of(svc, Phase.WAITING)
    assert waiting["reason"] == Reason.OUTSIDE_WINDOW
    assert "outside the quiet window 01:00-05:00 (update.window, local time)" in \
        waiting["message"]
    clock.set(clock.now() + 12 * 3600 + 59 * 60)  # 00:59 next day: still outside
    svc.wake()
    time_ok = wait_until(lambda: svc.status()["phase"] == Phase.WAITING, 2, "still waiting")
    assert time_ok
    clock.set(clock.now() + 60)  # 01:00
    svc.wake()
    assert left_waiting(svc)["reason"] != Reason.OUTSIDE_WINDOW


def test_a_window_edit_counts_at_the_next_check(services: Services,
                                                bundle: tuple[Signer, Path]) -> None:
    store = ConfigStore(services.tmp / "etc")
    doc = store.load()
    doc["update"] = {"window": "01:00-05:00"}
    store.save(doc, "quiet window")
    svc = services(local_clock(9, 30))
    svc.submit(bundle[1], "web")
    phase_of(svc, Phase.WAITING)
    doc["update"]["window"] = ""
    store.save(doc, "any time")
    assert left_waiting(svc)["reason"] != Reason.OUTSIDE_WINDOW


@pytest.mark.parametrize("window, hhmm, inside", [
    ("", (3, 0), True), ("01:00-05:00", (1, 0), True), ("01:00-05:00", (4, 59), True),
    ("01:00-05:00", (5, 0), False), ("01:00-05:00", (0, 59), False),
    ("22:00-04:00", (23, 30), True), ("22:00-04:00", (3, 59), True),
    ("22:00-04:00", (12, 0), False)])
def test_in_window(window: str, hhmm: tuple[int, int], inside: bool) -> None:
    local = time.localtime(local_clock(*hhmm).wall())
    assert in_window(window, local) is inside


def test_restart_while_waiting_or_installing_is_recorded(services: Services) -> None:
    sf = StateFile(services.tmp / "data" / "update")
    sf.save(UpdateState(phase=Phase.WAITING, version_to="2.1.0", bundle="/x.raucb"))
    state = services().status()
    assert state["phase"] == Phase.FAILED and "restarted before installing 2.1.0" in \
        state["message"]
    sf.save(UpdateState(phase=Phase.INSTALLING, version_to="2.1.0"))
    state = services().status()
    assert state["phase"] == Phase.FAILED and state["reason"] == Reason.INSTALL_FAILED
    assert "interrupted (restart or power cut)" in state["message"]
    sf.save(UpdateState(phase=Phase.REBOOTING, version_to="2.1.0"))
    assert services().status()["phase"] == Phase.REBOOTING  # the confirm step's


def test_state_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "update")
    sf.save(UpdateState(phase=Phase.INSTALLING, progress=40, version_to="2.1.0"))
    assert stat.S_IMODE(os.stat(sf.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sf.dir).st_mode) == 0o700
    assert sorted(p.name for p in sf.dir.iterdir()) == ["state.json"]  # no temp file left
    doc = json.loads(sf.path.read_text())
    assert doc["phase"] == "INSTALLING" and doc["progress"] == 40
    assert set(doc) >= {"phase", "source", "bundle", "version_from", "version_to", "progress",
                        "message", "reason", "job", "started", "finished"}


@pytest.mark.parametrize("garbage", [b'{"phase": "INSTALL', b"\x00\x00\x00\x00", b"[1, 2]",
                                     b'{"phase": "EXPLODED"}', b'{"progress": 400}', b""])
def test_torn_or_garbled_state_is_reported_and_read_as_idle(
        services: Services, garbage: bytes, caplog: pytest.LogCaptureFixture) -> None:
    sf = StateFile(services.tmp / "data" / "update")
    sf.dir.mkdir(parents=True, exist_ok=True)
    sf.path.write_bytes(garbage)
    state = services().status()
    assert state["phase"] == Phase.IDLE
    assert "read as idle" in state["message"] and str(sf.path) in state["message"]
    assert any("read as idle" in r.getMessage() for r in caplog.records)


def test_bad_source_and_nothing_to_cancel(services: Services,
                                          bundle: tuple[Signer, Path]) -> None:
    svc = services()
    with pytest.raises(UpdateError) as err:
        svc.submit(bundle[1], "email")
    assert err.value.reason == Reason.BAD_INPUT and "'email'" in str(err.value)
    assert svc.cancel()["phase"] == Phase.IDLE


def test_no_space_is_refused_before_queueing(services: Services,
                                             bundle: tuple[Signer, Path]) -> None:
    svc = services(min_free_bytes=1 << 60)
    with pytest.raises(UpdateError) as err:
        svc.submit(bundle[1], "console", force=True)
    assert err.value.reason == Reason.NO_SPACE and "MB free" in str(err.value)
