"""Test helpers for the Si3215 driver: a recording SPI device, the trace decoded into
register accesses and bring-up steps, and a line built on the emulator and a PCM highway.

The recorder wraps a SimSpiDevice and keeps every transfer (Klipper-style batch traces);
`steps()` folds the byte frames into what a datasheet reader would write down: direct
reads and writes, indirect writes (IDA_LO, IDA_HI, IAA) and reads (IAA, IDA_LO, IDA_HI),
with the DR31 busy polls of wctdm.c __wait_access dropped and a register read several
times in a row (a poll loop) kept once. `make_line` puts the twin on a SimHighway, as
the core does: the stream runs (PCLK) before the driver starts, unless clock=False.
"""

from __future__ import annotations

from types import SimpleNamespace

from driver_settings import driver_settings

from drivers.bus.gpio import SimGpio
from drivers.bus.pcm import SimPcmLink
from drivers.bus.spi import SimSpiDevice
from drivers.chips.si3215 import Si3215
from drivers.sim.highway import SimHighway
from drivers.sim.phone import VirtualPhone
from drivers.sim.si3215_sim import Si3215Emulator

RESET, INT = 17, 27
DR_IDA_LO, DR_IDA_HI, DR_IAA, DR_IAS = 28, 29, 30, 31  # proslic.h (not the driver's file)
DEFAULT_PART = "si3215"


class SpiRecorder:
    """A SimSpiDevice that remembers every transfer as (bytes out, bytes in)."""

    def __init__(self, device: SimSpiDevice) -> None:
        self.device, self.name = device, device.name
        self.frames: list[tuple[bytes, bytes]] = []
        self.recording = True

    def transfer(self, data: bytes) -> bytes:
        got = self.device.transfer(data)
        if self.recording:
            self.frames.append((bytes(data), bytes(got)))
        return got

    def close(self) -> None:
        self.device.close()


def accesses(frames: list[tuple[bytes, bytes]]) -> list[tuple[str, int, int]]:
    """(op, register, value) per control+data pair: reads carry the value read."""
    out, ctrl = [], None
    for sent, got in frames:
        for i, byte in enumerate(sent):
            if ctrl is None:
                ctrl = byte
                continue
            reg = ctrl & 0x7F
            out.append(("read", reg, got[i]) if ctrl & 0x80 else ("write", reg, byte))
            ctrl = None
    return out


def steps(frames: list[tuple[bytes, bytes]]) -> list[tuple[str, int, int | None]]:
    """The trace as bring-up steps: (op, reg, value); value None for reads."""
    acc = [a for a in accesses(frames) if not (a[0] == "read" and a[1] == DR_IAS)]
    out: list[tuple[str, int, int | None]] = []
    i = 0
    while i < len(acc):
        step, used = _indirect(acc, i)
        if step is None:
            op, reg, value = acc[i]
            step, used = (op, reg, None if op == "read" else value), 1
        if not (step[0] == "read" and out and out[-1] == step):
            out.append(step)
        i += used
    return out


def _indirect(acc, i):
    w = [(op, reg) for op, reg, _ in acc[i:i + 3]]
    if w == [("write", DR_IDA_LO), ("write", DR_IDA_HI), ("write", DR_IAA)]:
        return ("iwrite", acc[i + 2][2], acc[i][2] | acc[i + 1][2] << 8), 3
    if w == [("write", DR_IAA), ("read", DR_IDA_LO), ("read", DR_IDA_HI)]:
        return ("iread", acc[i][2], None), 3
    return None, 0


def make_line(reactor, settings=None, part=DEFAULT_PART, seated=True, start=True,
              clock=True, board=None, driver_cls=Si3215, **emu_opts):
    """A driver on an emulated ProSLIC with a PCM highway (started unless clock=False)."""
    gpio = SimGpio()
    emu = Si3215Emulator(reactor, gpio, RESET, INT, part=part)
    for key, value in emu_opts.items():
        setattr(emu, key, value)
    highway = SimHighway(reactor)
    emu.attach_highway(highway)
    if clock:
        highway.start()
    spi = SpiRecorder(SimSpiDevice(0, 1, emu if seated else None))
    events: list = []
    full = driver_settings("fxs", board={"type": part, **(board or {})}, **(settings or {}))
    drv = driver_cls("fxs1", spi, gpio, RESET, INT, reactor, full, events.append)
    link = SimPcmLink("fxs1")
    phone = VirtualPhone(reactor, emu, link.device)
    line = SimpleNamespace(gpio=gpio, emu=emu, spi=spi, drv=drv, phone=phone, link=link,
                           events=events, reactor=reactor, highway=highway, error=None)
    if start:
        drv.start()
    return line


def writes(line, reg: int) -> list[int]:
    """Every value the driver wrote to direct register `reg`, in order."""
    return [v for op, r, v in accesses(line.spi.frames) if op == "write" and r == reg]
