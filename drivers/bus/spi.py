"""SPI: one chip-select on one bus, full-duplex byte transfers.

A chip driver only ever holds an `SpiDevice` (`transfer(bytes) -> bytes`, chip-select
held for the whole transfer). `SimSpiDevice` hands each transfer to a register-level
chip emulator; `SpidevDevice` opens /dev/spidevB.C on the box.
"""

from __future__ import annotations

from typing import Protocol


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
