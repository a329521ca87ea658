"""Findings 7 and 8 of issue 9 driven back into the FXO driver: the emulator must catch them.

Each test double reverts one fix in a subclass of the real driver (the rest of the driver
unchanged) and runs it against the Si3050 emulator on a running PCM highway:
- finding 7: each register access as ONE three-byte chip-select frame (what the driver
  did before): the chip understands none of it, bring-up fails and `violations` names
  the per-byte chip-select rule (wctdm.c __write_8bits, OAK pidma.c __spi_write);
- finding 8: generic TBR21 for the UK and register 31 without FULL (0x23 | OHS2, what
  the driver did before): the registers read back differ from fxo_modes.h "UK" as
  wctdm_init_voicedaa programs it, and seizing the line is a violation;
- the old 16-bit linear slot (start = timeslot x 16): no audio on the line's slot.
An honest driver in the same rig is the control: no violations.
"""

from dataclasses import asdict, dataclass

import numpy as np
import pytest
from driver_settings import driver_settings

from cext import g711
from drivers.bus import tdm
from drivers.bus.gpio import SimGpio
from drivers.bus.spi import SimSpiDevice
from drivers.chips import daa_countries as D
from drivers.chips import si3050_regs as R
from drivers.chips.si3050 import Si3050, country_registers
from drivers.sim.highway import SimHighway, SimPcmStream
from drivers.sim.si3050_sim import Si3050Emulator
from foundation.errors import ChipFailed

RESET, INT = 22, 23


class ThreeByteFrames(Si3050):
    """Finding 7 reverted: control, register and data in one chip-select frame."""

    def _read(self, reg: int) -> int:
        return self.spi.transfer(bytes((R.SPI_CTRL_READ, reg, 0)))[2]

    def _write(self, reg: int, value: int) -> None:
        self.spi.transfer(bytes((R.SPI_CTRL_WRITE, reg, value & 0xFF)))


@dataclass(frozen=True)
class _NoFullMode(D.FxoMode):
    @property
    def reg31(self) -> int:
        return 0x20 | (self.ohs2 << 3) | 0x03  # FOH 128 ms, FILT, LVFD: no FULL


class GenericTbr21WithoutFull(Si3050):
    """Finding 8 reverted: the TBR21 row for every European country, FULL left out."""

    def _configure(self) -> None:
        self.mode = _NoFullMode(**asdict(D.FXO_MODES["TBR21"]))
        super()._configure()


class LinearSixteenBitSlots(Si3050):
    """The old PCM set-up: 16-bit linear samples at timeslot x 16 bit clocks."""

    def _pcm_mode(self) -> int:
        return R.PCME | R.PCMF_LINEAR16

    def _slot_start(self) -> int:
        return int(self.settings.get("timeslot", 0)) * 16


class Rig:
    def __init__(self, reactor, driver_cls=Si3050, **settings):
        self.reactor = reactor
        self.gpio = SimGpio()
        self.emu = Si3050Emulator(reactor, self.gpio, RESET, INT)
        self.highway = SimHighway(reactor)
        self.emu.attach_highway(self.highway)
        self.pi = SimPcmStream(self.highway).start()
        line = driver_settings("fxo", **{"country": "uk", "timeslot": 2,
                                         "disconnect": ["loop_drop"], **settings})
        self.daa = driver_cls("fxo1", SimSpiDevice(0, 2, self.emu), self.gpio, RESET, INT,
                              reactor, line, lambda event: None)

    def read_back(self, reg: int) -> int:
        """A register as the chip holds it, read with correct framing (not the double's)."""
        honest = Si3050.__new__(Si3050)
        honest.spi = self.daa.spi
        return Si3050._read(honest, reg)


def test_control_honest_driver_breaks_no_rule(reactor):
    rig = Rig(reactor)
    rig.daa.start()
    rig.emu.expect_country("UK")
    rig.daa.seize()
    reactor.run_for(0.5)
    assert rig.emu.violations == [] and rig.emu.offhook


def test_finding7_three_byte_frames_fail_bring_up_and_name_the_rule(reactor):
    rig = Rig(reactor, driver_cls=ThreeByteFrames)
    with pytest.raises(ChipFailed, match="card not seated"):
        rig.daa.start()
    assert rig.emu.violations, "the emulator accepted three bytes in one chip-select frame"
    assert "chip-select must rise after every byte" in rig.emu.violations[0]
    assert rig.emu.writes == type(rig.emu.writes)()  # nothing reached a register
    assert rig.read_back(R.PCM_SPI_MODE) == 0x00  # still at reset: PCM never enabled


def test_finding8_generic_tbr21_without_full_differs_from_fxo_modes_uk(reactor):
    rig = Rig(reactor, driver_cls=GenericTbr21WithoutFull)
    rig.daa.start()  # the chip takes any value: the fault only shows against the table
    uk = country_registers(D.FXO_MODES["UK"])
    held = {reg: rig.read_back(reg) for reg in uk}
    assert held != uk
    assert held[R.AC_TERM] == 0x02 and uk[R.AC_TERM] == 0x05  # TBR21's ACIM, not the UK's
    assert not held[R.DAA_CONTROL5] & R.FULL and uk[R.DAA_CONTROL5] & R.FULL
    mismatches = " ".join(rig.emu.country_mismatches("UK"))
    assert "register 30" in mismatches and "register 31" in mismatches
    rig.emu.expect_country("UK")
    rig.daa.seize()
    assert any("off hook with register 31" in v for v in rig.emu.violations)


def test_finding8_honest_selftest_flags_a_chip_left_with_tbr21(reactor):
    """The same fault seen by the real driver's selftest: it compares the chip with its
    own fxo_modes.h row, so a chip that holds generic TBR21 values is reported."""
    rig = Rig(reactor)
    rig.daa.start()
    broken = _NoFullMode(**asdict(D.FXO_MODES["TBR21"]))
    for reg, value in country_registers(broken).items():
        rig.daa._write(reg, value)
    (check,) = [c for c in rig.daa.selftest() if c["check"] == "country settings"]
    assert not check["ok"] and "want 0x05" in check["detail"] and check["fix"]


def test_old_sixteen_bit_slot_puts_no_audio_on_the_lines_slot(reactor):
    tone = (np.sin(2 * np.pi * 1000 * np.arange(160) / 8000) * 8000).astype(np.int16)
    heard = {}
    for cls in (Si3050, LinearSixteenBitSlots):
        rig = Rig(reactor, driver_cls=cls)
        rig.daa.start()
        rig.daa.pcm_loopback(True)
        for _ in range(10):
            rig.pi.write(tdm.pack_slots({2: g711.ulaw_encode(tone)}, 160))
        reactor.run_for(0.2)
        frames = []
        while (f := rig.pi.read_all()) is not None:
            frames.append(f)
        frames = frames[-3:]
        back = [g711.ulaw_decode(tdm.slot_bytes(f, 2)) for f in frames]
        heard[cls.__name__] = max(float(np.abs(b.astype(float)).max()) for b in back)
    assert heard["Si3050"] > 5000
    assert heard["LinearSixteenBitSlots"] < 100
