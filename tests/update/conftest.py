"""Fixtures for the update tests: an SD card of loop devices, the Pi firmware model, a test
PKI with bundles of every kind, and the real RAUC service on a private bus.

Each fixture undoes what it did (processes stopped, mounts unmounted, loop devices detached).
They need root and loop devices (we are root here and in CI); a missing tool fails with the
package to install.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.update.tryboot import Backend, parse_settings
from lab.bundle import BundleKind, BundleMaker, BundlePki, make_pki
from lab.pifirmware import PiFirmware
from lab.rauc import RaucLab
from lab.slots import Disk

TOOLS = {"losetup": "util-linux", "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs",
         "mkfs.vfat": "dosfstools", "mcopy": "mtools", "mksquashfs": "squashfs-tools",
         "rauc": "rauc", "dbus-daemon": "dbus"}


def _need_tools() -> None:
    missing = [f"{tool} (apt-get install {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        pytest.fail("missing: " + ", ".join(missing))


@pytest.fixture
def sdcard(tmp_path: Path) -> Iterator[Disk]:
    """A card with 1.0.0 in slot A, B blank, autoboot.txt committed to A."""
    _need_tools()
    disk = Disk(tmp_path / "card").create("1.0.0")
    try:
        conf = disk.tryboot_conf(tmp_path / "tryboot.conf")
        Backend(parse_settings(conf.read_text()), tmp_path / "dt").init("A")
        yield disk
    finally:
        disk.close()


@pytest.fixture
def dt_dir(tmp_path: Path) -> Path:
    return tmp_path / "dt"


@pytest.fixture
def pifw(sdcard: Disk, dt_dir: Path) -> PiFirmware:
    """The Pi firmware model, already booted once (normal boot of slot A)."""
    firmware = PiFirmware(sdcard, dt_dir)
    firmware.power_cycle()
    return firmware


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> BundlePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, pki: BundlePki) -> dict[str, Path]:
    """One bundle per kind: 2.0.0 for all but OLDER (0.9.0)."""
    _need_tools()
    maker = BundleMaker(tmp_path_factory.mktemp("bundles"), pki)
    return {kind: maker.build(kind, "0.9.0" if kind is BundleKind.OLDER else "2.0.0") for kind in BundleKind}


@pytest.fixture
def rauc_lab(tmp_path: Path, sdcard: Disk, pifw: PiFirmware, pki: BundlePki) -> Iterator[RaucLab]:
    """The real `rauc service` over the card, booted from the slot the model booted."""
    lab = RaucLab(tmp_path / "rauc", sdcard, pki.ca, pifw.dt_dir)
    try:
        lab.start(pifw.history[-1].slot)
        yield lab
    finally:
        lab.stop()
