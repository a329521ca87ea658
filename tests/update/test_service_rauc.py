"""The update service and the confirm step on real RAUC (a `rauc service` on a private
D-Bus over loop-device slots, the tryboot backend, the Pi firmware model: lab/rauc.py,
lab/slots.py, lab/pifirmware.py; bundles from lab/bundle.py signed at test time):

- each bad bundle refused with its reason, before anything is written;
- a good bundle installs with rising progress, REBOOTING, reboot(tryboot=True) recorded;
- the trial boot (firmware model: `reboot "0 tryboot"`) passes the health check against a
  real sim core, RAUC marks the slot good (the backend commits autoboot.txt): GOOD, and
  the next normal boot stays on the new slot;
- a trial boot whose core has a failed port: mark-bad, reboot(False), the old slot, and
  ROLLED_BACK naming the port."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.api.selftest import selftest
from firmware.core.config import ConfigStore, default_document
from firmware.update.confirm import Confirm
from firmware.update.health import Check, Health, check_until
from firmware.update.rauc import Rauc, Reason, UpdateError
from firmware.update.service import UpdateService
from firmware.update.state import Phase
from foundation.reactor import FakeClock, MonotonicClock
from lab.bundle import BundleKind, BundlePki
from lab.pifirmware import PiFirmware
from lab.rauc import RaucLab
from lab.wait import wait_until
from tests.update.updaterig import LiveCore

RUNNING = "1.0.0"  # what the card's slot A holds


@pytest.fixture
def core(tmp_path: Path) -> Iterator[LiveCore]:
    rig = LiveCore(tmp_path / "core")
    yield rig
    rig.close()


class Run:
    def __init__(self, tmp: Path, lab: RaucLab, core: LiveCore, pki: BundlePki) -> None:
        self.reboots: list[bool] = []
        self.rauc = Rauc(conf=lab.conf, env=lab.env)
        self.service = UpdateService(tmp / "data", self.rauc, lambda: core.api, FakeClock(),
                                     keyring=pki.ca, compatible="branchline-rpi",
                                     reboot=self.reboots.append, config_dir=tmp / "etc",
                                     retry_s=0.05, version=lambda: RUNNING)


@pytest.fixture
def run(tmp_path: Path, rauc_lab: RaucLab, core: LiveCore, pki: BundlePki) -> Iterator[Run]:
    r = Run(tmp_path, rauc_lab, core, pki)
    yield r
    r.service.close()


@pytest.mark.parametrize("kind, reason", [
    (BundleKind.UNSIGNED, Reason.UNSIGNED), (BundleKind.WRONGLY_SIGNED, Reason.BAD_SIGNATURE),
    (BundleKind.WRONG_COMPATIBLE, Reason.WRONG_BOARD), (BundleKind.OLDER, Reason.DOWNGRADE),
    (BundleKind.CORRUPT, Reason.CORRUPT)])
def test_bad_bundles_refused_with_their_reason(run: Run, bundles: dict[str, Path],
                                               rauc_lab: RaucLab, kind: BundleKind,
                                               reason: Reason) -> None:
    with pytest.raises(UpdateError) as err:
        run.service.submit(bundles[kind], "console", force=True)
    assert err.value.reason == reason, str(err.value)
    assert "set-primary B" not in rauc_lab.backend_calls()
    assert run.reboots == []


def _install(run: Run, bundle: Path) -> list[int]:
    seen: list[int] = []

    def rebooting() -> bool:
        state = run.service.status()
        seen.append(state["progress"])
        assert state["phase"] != Phase.FAILED, state["message"]
        return state["phase"] == Phase.REBOOTING
    run.service.submit(bundle, "web")
    wait_until(rebooting, 120, "the install done", step=0.02)
    return seen


def test_good_bundle_installs_with_progress_then_tryboot(run: Run, bundles: dict[str, Path],
                                                         rauc_lab: RaucLab) -> None:
    seen = _install(run, bundles[BundleKind.GOOD])
    assert seen == sorted(seen) and seen[-1] == 100 and len(set(seen)) >= 2, seen
    assert run.reboots == [True]
    state = run.service.status()
    assert state["version_from"] == RUNNING and state["version_to"] == "2.0.0"
    assert "set-primary B" in rauc_lab.backend_calls()


def _confirm(run: Run, core: LiveCore, dt_dir: Path, version: str) -> list[bool]:
    reboots: list[bool] = []
    clock = MonotonicClock()

    def health(baseline: list[str]) -> list[Check]:
        return check_until(Health(core.api, web=None, selftest=selftest, baseline=baseline),
                           clock, 3.0, interval_s=0.2)
    Confirm(run.service.file, run.rauc, health, reboots.append, clock, dt_dir=dt_dir,
            version=lambda: version).run()
    return reboots


def test_trial_boot_healthy_is_committed(run: Run, bundles: dict[str, Path], core: LiveCore,
                                         rauc_lab: RaucLab, pifw: PiFirmware) -> None:
    _install(run, bundles[BundleKind.GOOD])
    booted = pifw.reboot("0 tryboot")
    assert booted.tryboot and booted.slot == "B"
    rauc_lab.start("B")
    assert _confirm(run, core, pifw.dt_dir, booted.version) == []
    assert run.service.status()["phase"] == Phase.GOOD
    assert any(c.startswith("set-state B good") for c in rauc_lab.backend_calls())
    again = pifw.reboot()
    assert not again.tryboot and again.slot == "B" and again.version == "2.0.0"


def test_trial_boot_with_a_failed_port_rolls_back(run: Run, bundles: dict[str, Path],
                                                  rauc_lab: RaucLab, pifw: PiFirmware,
                                                  tmp_path: Path) -> None:
    _install(run, bundles[BundleKind.GOOD])
    booted = pifw.reboot("0 tryboot")
    rauc_lab.start("B")
    broken = LiveCore(tmp_path / "broken", unseated=("slic1",))
    try:
        assert _confirm(run, broken, pifw.dt_dir, booted.version) == [False]
    finally:
        broken.close()
    old = pifw.reboot()
    assert old.slot == "A" and not old.tryboot
    rauc_lab.start("A")
    _confirm(run, broken, pifw.dt_dir, old.version)
    state = run.service.status()
    assert state["phase"] == Phase.ROLLED_BACK and state["reason"] == Reason.HEALTH_FAILED
    assert "ports: failed to initialise: fxs2" in state["message"]


def test_a_bundle_swapped_while_waiting_is_caught_before_the_reboot(
        run: Run, bundles: dict[str, Path], rauc_lab: RaucLab, pifw: PiFirmware,
        tmp_path: Path) -> None:
    """The service checks the version before it waits; RAUC checks only the signature
    when it installs. A client that swaps the file for an older signed release while the
    update waits for the quiet window must not get its downgrade: the written slot is read
    back, marked bad, and the box does not reboot (a normal or tryboot reboot stays on A)."""
    now = time.localtime(run.service.clock.wall())
    later = (now.tm_hour + 2) % 24
    doc = default_document()
    doc["update"] = {"window": f"{later:02d}:00-{(later + 1) % 24:02d}:00"}
    store = ConfigStore(tmp_path / "etc")
    store.save(doc)
    bundle = tmp_path / "incoming.raucb"
    shutil.copyfile(bundles[BundleKind.GOOD], bundle)
    run.service.submit(bundle, "web")
    wait_until(lambda: run.service.status()["phase"] == Phase.WAITING, 30, "WAITING")
    shutil.copyfile(bundles[BundleKind.OLDER], bundle)  # still signed by the release CA
    doc["update"] = {"window": ""}
    store.save(doc)
    run.service.wake()
    wait_until(lambda: run.service.status()["phase"] == Phase.FAILED, 120, "FAILED")
    state = run.service.status()
    assert state["reason"] == Reason.CORRUPT and "changed between its check" in state["message"]
    assert run.reboots == []
    calls = rauc_lab.backend_calls()
    assert calls.index("set-state B bad", calls.index("set-primary B")) > 0, calls
    assert pifw.reboot("0 tryboot").slot == "A"
