"""The real RAUC 1.8 with our tryboot backend on loop-device slots, judged by the Pi model.

Install writes the other slot and makes it the one-shot [tryboot] choice; the Pi model then
boots it only on a tryboot reboot; mark-good in the trial commits, mark-bad rolls back; and
RAUC itself refuses the unsigned, wrongly signed, wrong-board and corrupted bundles.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.update.tryboot import Autoboot, parse_autoboot
from lab.bundle import BundleKind
from lab.pifirmware import PiFirmware
from lab.rauc import RaucLab
from lab.slots import BOOT_A, BOOT_B, ROOT_B, Disk


def _autoboot(disk: Disk) -> Autoboot:
    return parse_autoboot((disk.bootsel / "autoboot.txt").read_text())


def _slots(status: dict) -> dict[str, dict]:
    return {name: info for entry in status["slots"] for name, info in entry.items()}


def _install_good(rauc_lab: RaucLab, bundles: dict[str, Path]) -> None:
    result = rauc_lab.install(bundles[BundleKind.GOOD])
    assert result.ok, result.last_error or result.stderr


def test_status_names_the_booted_slot_and_the_primary_from_autoboot(rauc_lab: RaucLab) -> None:
    status = rauc_lab.status()
    assert status["booted"] == "A"
    assert status["boot_primary"] == "rootfs.0"
    slots = _slots(status)
    assert slots["rootfs.0"]["boot_status"] == "good"
    assert slots["rootfs.1"]["boot_status"] == "bad"  # blank slot B was never installed


def test_install_writes_slot_b_and_makes_it_the_one_shot_tryboot_choice(
        rauc_lab: RaucLab, bundles: dict[str, Path], sdcard: Disk, pifw: PiFirmware) -> None:
    _install_good(rauc_lab, bundles)
    assert rauc_lab.backend_calls()[-2:] == ["set-state B bad", "set-primary B"]
    autoboot = _autoboot(sdcard)
    assert (autoboot.all_partition, autoboot.try_partition) == (BOOT_A, BOOT_B)
    assert sdcard.release("B") == "2.0.0"

    normal = pifw.reboot("0")  # a normal reboot, crash or power cut: still the old slot
    assert (normal.boot_partition, normal.version, normal.tryboot) == (BOOT_A, "1.0.0", False)
    trial = pifw.reboot("0 tryboot")
    assert (trial.boot_partition, trial.root_partition, trial.version) == (BOOT_B, ROOT_B, "2.0.0")
    assert trial.tryboot and trial.slot == "B"  # the bundle's hook pointed cmdline.txt at root B
    assert pifw.power_cycle().boot_partition == BOOT_A  # the flag was one-shot


def test_mark_good_in_the_trial_commits_slot_b(
        rauc_lab: RaucLab, bundles: dict[str, Path], sdcard: Disk, pifw: PiFirmware) -> None:
    _install_good(rauc_lab, bundles)
    rauc_lab.start(pifw.reboot("0 tryboot").slot)
    result = rauc_lab.mark("good")
    assert result.ok, result.stderr
    assert "marked slot rootfs.1 as good" in result.stdout
    autoboot = _autoboot(sdcard)
    assert (autoboot.all_partition, autoboot.try_partition) == (BOOT_B, BOOT_A)
    assert rauc_lab.status()["boot_primary"] == "rootfs.1"
    after = pifw.power_cycle()
    assert (after.boot_partition, after.version) == (BOOT_B, "2.0.0")


def test_mark_bad_in_the_trial_rolls_back_to_slot_a(
        rauc_lab: RaucLab, bundles: dict[str, Path], sdcard: Disk, pifw: PiFirmware) -> None:
    _install_good(rauc_lab, bundles)
    rauc_lab.start(pifw.reboot("0 tryboot").slot)
    result = rauc_lab.mark("bad")
    assert result.ok, result.stderr
    assert "marked slot rootfs.1 as bad" in result.stdout
    autoboot = _autoboot(sdcard)
    assert (autoboot.all_partition, autoboot.try_partition) == (BOOT_A, BOOT_A)
    assert (pifw.reboot("0").version, pifw.reboot("0 tryboot").version) == ("1.0.0", "1.0.0")
    assert _slots(rauc_lab.status())["rootfs.1"]["boot_status"] == "bad"


def test_mark_good_outside_a_trial_does_not_commit_the_new_slot(
        rauc_lab: RaucLab, bundles: dict[str, Path], sdcard: Disk) -> None:
    _install_good(rauc_lab, bundles)
    result = rauc_lab.mark("good", "other")
    assert not result.ok
    assert "Failed marking slot rootfs.1 as good" in result.stdout + result.stderr
    assert "not running a trial boot" in rauc_lab.service_log.read_text()
    assert _autoboot(sdcard).all_partition == BOOT_A


@pytest.mark.parametrize(("kind", "fragment"), [
    (BundleKind.UNSIGNED, "Signature size is 0"),
    (BundleKind.WRONGLY_SIGNED, "signature verification failed: Verify error: unable to get local issuer"),
    (BundleKind.WRONG_COMPATIBLE, "Compatible mismatch: Expected 'branchline-rpi'"),
    (BundleKind.CORRUPT, "CMS routines::verification failure"),
])
def test_rauc_refuses_bad_bundles_and_leaves_the_boot_choice_alone(
        rauc_lab: RaucLab, bundles: dict[str, Path], sdcard: Disk, kind: BundleKind,
        fragment: str) -> None:
    before = (sdcard.bootsel / "autoboot.txt").read_text()
    result = rauc_lab.install(bundles[kind])
    assert not result.ok
    assert fragment in result.last_error
    assert "set-primary B" not in rauc_lab.backend_calls()
    assert (sdcard.bootsel / "autoboot.txt").read_text() == before
    assert sdcard.release("B") is None


def test_rauc_info_reports_version_and_compatible_of_an_older_bundle(
        rauc_lab: RaucLab, bundles: dict[str, Path]) -> None:
    result = rauc_lab.info(bundles[BundleKind.OLDER])
    assert result.ok, result.stderr
    assert '"version":"0.9.0"' in result.stdout and '"compatible":"branchline-rpi"' in result.stdout
