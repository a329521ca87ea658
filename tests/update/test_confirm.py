"""The confirm step after a boot, against real sim cores (control API on a Unix socket), a
real HTTPS page and the firmware's device-tree flags in a folder (what lab/pifirmware.py
writes; BRANCHLINE_DT_DIR on the box's tests):

- REBOOTING + tryboot, a healthy core: TRIAL, all checks pass, mark-good, GOOD;
- a port that failed to initialise, or a core that does not answer: the failed checks in
  the state, mark-bad, reboot(tryboot=False); the next (normal) boot: ROLLED_BACK naming them;
- REBOOTING without tryboot: ROLLED_BACK "the trial boot did not come up";
- a check that failed before the update (the baseline) is not held against it.
RAUC's mark-good/mark-bad are recorded here (a stand-in of the `rauc status mark-*` CLI
until the RAUC-backed confirm runs on lab/rauc.py's slots)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.api.client import ApiClient
from firmware.api.selftest import selftest
from firmware.update.confirm import TRIAL_LOST, Confirm
from firmware.update.health import Check, Health, check_until
from firmware.update.rauc import Rauc, Reason
from firmware.update.state import Phase, StateFile, UpdateState
from foundation.reactor import MonotonicClock
from tests.update.updaterig import HttpsPage, LiveCore


class MarkRecorder(Rauc):
    """Records mark-good / mark-bad instead of asking a RAUC service (see the docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[str] = []

    def mark_good(self) -> None:
        self.marks.append("good")

    def mark_bad(self) -> None:
        self.marks.append("bad")


def dt_flags(folder: Path, tryboot: bool, partition: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tryboot").write_bytes(int(tryboot).to_bytes(4, "big"))
    (folder / "partition").write_bytes(partition.to_bytes(4, "big"))
    return folder


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsPage]:
    p = HttpsPage(tmp_path_factory.mktemp("web"))
    yield p
    p.close()


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCore]:
    rig = LiveCore(tmp_path_factory.mktemp("healthy"))
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCore]:
    rig = LiveCore(tmp_path_factory.mktemp("broken"), unseated=("slic1",))
    yield rig
    rig.close()


class Box:
    """The data partition's state file, the flags, and what confirm did."""

    def __init__(self, tmp: Path) -> None:
        self.file = StateFile(tmp / "data" / "update")
        self.dt = tmp / "dt"
        self.rauc = MarkRecorder()
        self.reboots: list[bool] = []
        self.running = "2.0.0"

    def installed(self, baseline: list[str] | None = None) -> None:
        self.file.save(UpdateState(phase=Phase.REBOOTING, version_from="2.0.0",
                                   version_to="2.1.0", progress=100, source="console",
                                   baseline=baseline or []))

    def confirm(self, api: ApiClient, web: str | None, tryboot: bool,
                timeout_s: float = 3.0) -> UpdateState:
        dt_flags(self.dt, tryboot, 3 if tryboot else 2)
        clock = MonotonicClock()

        def health(baseline: list[str]) -> list[Check]:
            return check_until(Health(api, web=web, selftest=selftest, baseline=baseline),
                               clock, timeout_s, interval_s=0.2)
        return Confirm(self.file, self.rauc, health, self.reboots.append, clock,
                       dt_dir=self.dt, version=lambda: self.running).run()


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_healthy_trial_is_marked_good(box: Box, healthy: LiveCore, page: HttpsPage) -> None:
    box.installed()
    state = box.confirm(healthy.api, page.listen, tryboot=True)
    assert state.phase == Phase.GOOD and box.rauc.marks == ["good"] and box.reboots == []
    assert state.message.startswith("version 2.1.0 is good: all 5 checks passed")
    assert box.file.load().phase == Phase.GOOD
    assert box.confirm(healthy.api, page.listen, tryboot=False).phase == Phase.GOOD  # once


def test_failed_port_rolls_back_naming_it(box: Box, broken: LiveCore,
                                          page: HttpsPage) -> None:
    box.installed()
    state = box.confirm(broken.api, page.listen, tryboot=True)
    assert state.phase == Phase.TRIAL and state.reason == Reason.HEALTH_FAILED
    assert box.rauc.marks == ["bad"] and box.reboots == [False]
    assert "ports: failed to initialise: fxs2" in state.message
    # the firmware boots the old slot (no tryboot): the record says what failed
    back = box.confirm(broken.api, page.listen, tryboot=False)
    assert back.phase == Phase.ROLLED_BACK and back.reason == Reason.HEALTH_FAILED
    assert back.message.startswith("rolled back to 2.0.0: health check failed: ports: "
                                   "failed to initialise: fxs2")


def test_core_that_does_not_answer_rolls_back(box: Box, tmp_path: Path,
                                              page: HttpsPage) -> None:
    box.installed()
    api = ApiClient(unix_path=str(tmp_path / "no-core.sock"), timeout=1)
    state = box.confirm(api, page.listen, tryboot=True, timeout_s=1.0)
    assert box.rauc.marks == ["bad"] and box.reboots == [False]
    assert "core: does not answer" in state.message


def test_web_not_answering_is_named(box: Box, healthy: LiveCore, tmp_path: Path) -> None:
    box.installed()
    state = box.confirm(healthy.api, "127.0.0.1:9", tryboot=True, timeout_s=0.5)
    assert box.reboots == [False]
    assert "web: https://127.0.0.1:9/ does not answer" in state.message
    assert "ports" not in state.message and "selftest" not in state.message


def test_a_port_failed_before_the_update_is_not_held_against_it(
        box: Box, broken: LiveCore, page: HttpsPage) -> None:
    before = [f"{r.get('port') or ''} {r['check']}".strip() for r in selftest(broken.api)
              if not r["pass"]]
    assert "fxs2 initialised" in before
    box.installed(baseline=before)
    state = box.confirm(broken.api, page.listen, tryboot=True)
    assert state.phase == Phase.GOOD and box.rauc.marks == ["good"], state.message


def test_trial_that_never_came_up_is_rolled_back(box: Box, healthy: LiveCore) -> None:
    box.installed()
    state = box.confirm(healthy.api, None, tryboot=False)
    assert state.phase == Phase.ROLLED_BACK and TRIAL_LOST in state.message
    assert box.rauc.marks == [] and box.reboots == []


def test_commit_whose_record_was_lost_is_good(box: Box, healthy: LiveCore) -> None:
    box.file.save(UpdateState(phase=Phase.TRIAL, version_from="2.0.0", version_to="2.1.0"))
    box.running = "2.1.0"  # autoboot.txt was committed, then the power went
    assert box.confirm(healthy.api, None, tryboot=False).phase == Phase.GOOD


def test_nothing_to_confirm(box: Box, healthy: LiveCore) -> None:
    assert box.confirm(healthy.api, None, tryboot=True).phase == Phase.IDLE
    assert box.rauc.marks == [] and box.reboots == []
