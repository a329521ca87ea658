"""SPI: one chip-select on one bus, full-duplex byte transfers.

A chip driver only ever holds an `SpiDevice` (`transfer(bytes) -> bytes`, chip-select
held for the whole transfer). `SimSpiDevice` hands each transfer to a register-level
chip emulator; `SpidevDevice` opens /dev/spidevB.C on the box.
"""

from __future__ import annotations

import errno
import os
from types import ModuleType
from typing import Protocol

from foundation.errors import HardwareError


class SpiDevice(Protocol):
    name: str

    def transfer(self, data: bytes) -> bytes: ...

    def close(self) -> None: ...


class SpiTarget(Protocol):
    """What a simulated chip implements: one chip-select-framed transfer in, bytes out."""

    def spi_transfer(self, data: bytes) -> bytes: ...


class SimSpiDevice:
    """A virtual chip-select wired to a chip emulator (or to nothing: the bus floats high)."""

    def __init__(self, bus: int, cs: int, target: SpiTarget | None) -> None:
        self.name = f"spidev{bus}.{cs}"
        self.target = target
        self.transfers = 0

    def transfer(self, data: bytes) -> bytes:
        self.transfers += 1
        if self.target is None:  # nothing seated: MISO is pulled up
            return b"\xff" * len(data)
        return self.target.spi_transfer(bytes(data))

    def close(self) -> None:
        pass


# -- the real bus ------------------------------------------------------------------------

# dtparam=spi=on gives spidev0.0 and spidev0.1 only; the DAA's spidev0.2 (CE2 on GPIO 24)
# comes from the card's overlay, which also enables SPI0 and the PCM link.
SPI_HINT = ("install the card's overlay (image/overlays/branchline-card-overlay.dts: "
            "dtoverlay=branchline-card in /boot/firmware/config.txt, it creates "
            "spidev0.0-0.2) and check the card's chip-select")


def open_error(path: str, exc: OSError) -> HardwareError:
    """Turn an OSError from opening a spidev node into a line the technician can act on."""
    if exc.errno == errno.ENOENT:
        return HardwareError(f"{path} not found: {SPI_HINT}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return HardwareError(
            f"{path}: permission denied: add the service user to the 'spi' group "
            "(usermod -aG spi <user>) or run the core as root"
        )
    return HardwareError(f"{path} did not open ({exc.strerror or exc}): check the SPI overlay")


class SpidevDevice:
    """/dev/spidevB.C through the `spidev` module; nothing is imported until `open()`."""

    def __init__(self, bus: int, cs: int, mode: int = 0, hz: int = 2_000_000,
                 dev_dir: str = "/dev") -> None:
        self.name = f"spidev{bus}.{cs}"
        self.bus, self.cs, self.mode, self.hz = bus, cs, mode, hz
        self.path = os.path.join(dev_dir, self.name)
        self._spi = None

    def open(self) -> SpidevDevice:
        """Check the node first (the likelier fault on a new box), then the module."""
        try:
            os.close(os.open(self.path, os.O_RDWR))
        except OSError as exc:
            raise open_error(self.path, exc) from None
        spidev = _import_spidev()
        spi = spidev.SpiDev()
        try:
            spi.open(self.bus, self.cs)
        except OSError as exc:
            raise open_error(self.path, exc) from None
        spi.mode = self.mode
        spi.max_speed_hz = self.hz
        self._spi = spi
        return self

    def transfer(self, data: bytes) -> bytes:
        if self._spi is None:
            raise HardwareError(f"{self.path} used before open(): a driver bug, please report it")
        try:
            return bytes(self._spi.xfer2(list(data)))
        except OSError as exc:
            raise HardwareError(f"{self.path}: transfer failed ({exc.strerror or exc})") from None

    def close(self) -> None:
        if self._spi is not None:
            self._spi.close()
            self._spi = None


def _import_spidev() -> ModuleType:
    try:
        import spidev  # noqa: PLC0415 - only on the box
    except ImportError:
        raise HardwareError(
            "python module spidev is not installed: pip install 'branchline[hw]' on the box"
        ) from None
    return spidev
