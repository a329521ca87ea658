"""The Pi firmware model (lab/pifirmware.py) boots what Raspberry Pi's documentation says it
would, and says plainly when the card would not boot at all."""

from __future__ import annotations

import pytest

from firmware.update import bootflags
from lab.pifirmware import Bricked, PiFirmware, parse_autoboot
from lab.slots import BOOT_A, BOOT_B, BOOTSEL, ROOT_A, Disk, make_boot_image, make_root_image

STOCK = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"


def _give_b(disk: Disk, version: str = "2.0.0") -> None:
    """Write a complete slot B straight onto its loop devices (what RAUC would do)."""
    make_boot_image(disk.backing(BOOT_B), version, "B")
    make_root_image(disk.backing(6), version)


def test_filters_all_tryboot_and_none() -> None:
    text = STOCK + "[none]\nboot_partition=7\n"
    assert parse_autoboot(text, tryboot=False)["boot_partition"] == "2"
    assert parse_autoboot(text, tryboot=True)["boot_partition"] == "3"


def test_normal_boot_publishes_partition_and_no_tryboot(pifw: PiFirmware) -> None:
    booted = pifw.history[-1]
    assert (booted.boot_partition, booted.root_partition, booted.slot, booted.version) == (BOOT_A, ROOT_A, "A", "1.0.0")
    assert bootflags.boot_partition(pifw.dt_dir) == BOOT_A
    assert not bootflags.tryboot_active(pifw.dt_dir)


def test_tryboot_is_one_shot_and_consumed_even_when_the_trial_fails(pifw: PiFirmware, sdcard: Disk) -> None:
    (sdcard.bootsel / "autoboot.txt").write_text(STOCK)
    with pytest.raises(Bricked, match="partition 3 has no start4.elf"):  # B is blank
        pifw.reboot("0 tryboot")
    assert not pifw.tryboot_flag
    assert pifw.power_cycle().boot_partition == BOOT_A


def test_tryboot_boots_the_tryboot_section_and_sets_the_flag(pifw: PiFirmware, sdcard: Disk) -> None:
    _give_b(sdcard)
    (sdcard.bootsel / "autoboot.txt").write_text(STOCK)
    trial = pifw.reboot("0 tryboot")
    assert (trial.boot_partition, trial.version, trial.tryboot) == (BOOT_B, "2.0.0", True)
    assert bootflags.tryboot_active(pifw.dt_dir) and bootflags.boot_partition(pifw.dt_dir) == BOOT_B
    assert pifw.reboot("0").boot_partition == BOOT_A


def test_an_explicit_reboot_partition_wins_over_autoboot(pifw: PiFirmware, sdcard: Disk) -> None:
    _give_b(sdcard)
    assert pifw.reboot("3").boot_partition == BOOT_B


@pytest.mark.parametrize(("content", "says"), [
    (None, "no autoboot.txt"),
    ("[all]\ntryboot_a_b=1\nboot_partiti", "garbled"),
    ("[all]\ntryboot_a_b=1\n", "names no boot_partition"),
    ("[pi4]\nboot_partition=2\n", "not supported"),
    ("#" * 600 + "\n" + STOCK, "reads only 512"),
    ("[all]\nboot_partition=9\n", "does not exist"),
])
def test_a_missing_or_garbled_autoboot_bricks_the_box(pifw: PiFirmware, sdcard: Disk,
                                                        content: str | None, says: str) -> None:
    (sdcard.bootsel / "autoboot.txt").unlink()
    if content is not None:
        (sdcard.bootsel / "autoboot.txt").write_text(content)
    with pytest.raises(Bricked, match=says):
        pifw.power_cycle()


def test_tryboot_without_tryboot_a_b_wants_files_no_slot_has(pifw: PiFirmware, sdcard: Disk) -> None:
    (sdcard.bootsel / "autoboot.txt").write_text("[all]\nboot_partition=2\n[tryboot]\nboot_partition=3\n")
    with pytest.raises(Bricked, match="tryboot.txt"):
        pifw.reboot("0 tryboot")


def test_a_boot_slot_whose_root_is_empty_does_not_boot(pifw: PiFirmware, sdcard: Disk) -> None:
    make_boot_image(sdcard.backing(BOOT_B), "2.0.0", "B")  # boot files, but root B stays empty
    with pytest.raises(Bricked, match="root partition 6, which holds no valid root"):
        pifw.reboot("3")


def test_the_bootsel_partition_itself_is_not_bootable(pifw: PiFirmware, sdcard: Disk) -> None:
    (sdcard.bootsel / "autoboot.txt").write_text(f"[all]\nboot_partition={BOOTSEL}\n")
    with pytest.raises(Bricked, match="not bootable"):
        pifw.power_cycle()
