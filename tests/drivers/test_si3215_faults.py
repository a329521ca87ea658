"""Each Si3215 finding of issue 9, driven back into the driver, is caught by the twin.

For findings 1-6 and 9 a test double of the driver reverts that one fix (a subclass, or
a board option set wrong) and runs against the rewritten ProSLIC emulator; the emulator
must catch it: bring-up fails, no battery, power alarms, no ring voltage, no audio on
the slot or at the phone, and its `violations` list names the rule. The real driver, in the same
conditions, comes up clean (the first test).
"""

import numpy as np
import pytest
from si3215_trace import make_line

from cext import g711
from drivers.bus import tdm
from drivers.chips import si3215_regs as R
from drivers.chips.si3215 import MAX_ALARMS, Si3215
from drivers.sim import proslic_model as M  # the twin's own reading of the references
from drivers.sim.highway import SimPcmStream
from drivers.sim.phone import VirtualPhone
from foundation.errors import ChipFailed


def bring_up(reactor, driver_cls=Si3215, **kw):
    """A line whose start() failure is kept in `.error` instead of raised."""
    line = make_line(reactor, start=False, driver_cls=driver_cls, **kw)
    try:
        line.drv.start()
    except ChipFailed as exc:
        line.error = str(exc)
    return line


def dropping(*regs):
    """A driver double that never writes the direct registers `regs`."""
    class Double(Si3215):
        def _write(self, reg, value):
            if reg not in regs:
                super()._write(reg, value)
    return Double


def said(line, words: str) -> bool:
    return any(words in v for v in line.emu.violations)


def rings(line) -> bool:
    line.drv.ring((2.0, 4.0))
    line.reactor.run_for(0.5)
    return line.phone.is_ringing


def loopback(line, sent: dict[int, int]) -> dict[int, np.ndarray]:
    """With the chip in digital loopback and byte sent[slot] played on each slot: what
    comes back (captured) on every slot."""
    line.drv.pcm_loopback(True)
    stream = SimPcmStream(line.highway)
    for _ in range(8):
        stream.write(tdm.pack_slots({s: np.full(160, b, np.uint8) for s, b in sent.items()}, 160))
    line.reactor.run_for(0.16)
    frames = list(line.highway.capture)[-3:]
    return {s: np.concatenate([tdm.slot_bytes(f, s) for f in frames]) for s in range(tdm.SLOTS)}


def test_the_driver_itself_comes_up_clean(reactor):
    line = bring_up(reactor, settings={"timeslot": 2})
    assert line.error is None and line.emu.violations == []
    assert rings(line)
    line.drv.stop_ring()
    back = loopback(line, {0: 0x33, 2: 0x55})
    assert (back[2] == 0x55).all() and (back[0] == 0xFF).all()  # its slot, and only its slot
    line.reactor.run_for(3)
    assert line.emu.alarm_log == []


# ---------------------------------------------------------------- finding 1
class Si3210AddressesEverywhere(Si3215):
    """Reverts finding 1: Si3210 indirect addresses on both parts (no translate_3215)."""

    def ir_address(self, addr):
        return addr


def test_1_si3210_addresses_on_an_si3215_are_caught(reactor):
    line = bring_up(reactor, Si3210AddressesEverywhere, part="si3215")
    assert said(line, "does not exist on the si3215")
    assert line.error is not None or not rings(line)  # the ring oscillator was never set


# ---------------------------------------------------------------- finding 2
def test_2_no_pwm_period_before_power_up_gives_no_battery(reactor):
    line = bring_up(reactor, dropping(R.DR_DCDC_PERIOD))
    assert said(line, "before its PWM period DR92")
    assert line.error is not None and "battery only 0 V" in line.error


@pytest.mark.parametrize("board", [{"slic_dcdc_period": 0x20}, {"slic_dcdc_engage": 0x38}])
def test_2_dcdc_values_outside_the_board_are_caught(reactor, board):
    line = bring_up(reactor, board=board)
    assert said(line, "outside this board's inductor/transistor window")
    if line.error is None:
        line.reactor.run_for(2)
        assert line.emu.alarm_log  # the transistors overheat


# ---------------------------------------------------------------- finding 3
class NoPcmSetup(Si3215):
    """Reverts finding 3: DR1 and DR2-5 never written."""

    def _setup_pcm(self):
        pass


class TimeslotIgnored(Si3215):
    """Reverts half of finding 3: the line's timeslot setting ignored (slot 0 always)."""

    def _setup_pcm(self):
        self.settings = {**self.settings, "timeslot": 0}
        super()._setup_pcm()
        self.settings = {**self.settings, "timeslot": 2}


def test_3_pcm_never_enabled_carries_no_audio(reactor):
    line = bring_up(reactor, NoPcmSetup, settings={"timeslot": 2})
    assert line.error is None
    assert (loopback(line, {2: 0x55})[2] == 0xFF).all()  # nobody drives the slot: idle high


def test_3_timeslot_ignored_puts_the_audio_on_the_wrong_slot(reactor):
    line = bring_up(reactor, TimeslotIgnored, settings={"timeslot": 2})
    back = loopback(line, {0: 0x33, 2: 0x55})
    assert (back[2] == 0xFF).all() and (back[0] == 0x33).all()  # slot 0's audio, not slot 2's


# ---------------------------------------------------------------- finding 4
def test_4_automatic_battery_switching_left_on_heats_q7(reactor):
    line = bring_up(reactor, dropping(R.DR_AUTO, R.DR_BAT_FEED))
    assert said(line, "Q7 overheats")
    line.reactor.run_for(2)
    assert line.emu.alarm_log or line.error is not None


def test_4_the_board_option_keeps_it_on_only_when_asked(reactor):
    line = bring_up(reactor, board={"slic_auto_battery": True})  # a driver option, set wrong
    assert said(line, "Q7 overheats")


# ---------------------------------------------------------------- finding 5
class HandfulOfIndirectRegisters(Si3215):
    """Reverts finding 5: the old driver's five thresholds instead of the whole table,
    nothing read back."""

    OLD = {28: 0x1000, 29: 0x3600, 32: 0x07C0, 33: 0x376F, 34: 0x1B80}

    def _write_table(self):
        for addr, value in self.OLD.items():
            self._write_indirect(addr, value)

    def _verify_table(self):
        pass


def speech_both_ways(line, slot: int = 0) -> tuple[float, float]:
    """A phone off hook on the chip's analog side; a 1 kHz tone (8000 peak, -10 dBm0 or
    so) played to it on `slot` and the same tone spoken into it: (rms the phone heard,
    rms the slot carried back), both measured through the chip's codec."""
    phone = VirtualPhone(line.reactor, line.emu, line.emu.analog.device, name="ear")
    phone.off_hook()
    line.reactor.run_for(0.3)
    pcm = (8000 * np.sin(2 * np.pi * 1000 * np.arange(160 * 12) / 8000)).astype(np.int16)
    codes = g711.ulaw_encode(pcm)
    stream, heard_from = SimPcmStream(line.highway), len(phone.heard)
    phone.speak(pcm)
    for i in range(10):
        stream.write(tdm.pack_slots({slot: codes[i * 160:(i + 1) * 160]}, 160))
    line.highway.capture.clear()
    line.reactor.run_for(0.2)
    sent = np.concatenate([tdm.slot_bytes(f, slot) for f in list(line.highway.capture)[2:8]])
    heard = phone.heard[heard_from:]
    return float(np.sqrt(np.mean(heard.astype(float) ** 2))), rms_ulaw(sent)


def rms_ulaw(codes: np.ndarray) -> float:
    return float(np.sqrt(np.mean(g711.ulaw_decode(codes).astype(float) ** 2)))


def test_the_driver_itself_carries_speech_at_0_db_both_ways(reactor):
    line = bring_up(reactor)
    heard, sent = speech_both_ways(line)
    assert line.emu.gain_db(M.RX_GAIN) == 0 and line.emu.gain_db(M.TX_GAIN) == 0
    assert 5000 < heard < 6300 and 5000 < sent < 6300  # 8000 peak = 5657 rms, 0 dB
    assert line.emu.violations == []


def test_5_a_partial_indirect_table_is_caught(reactor):
    """The old driver's handful: thresholds only. The gains stay at their power-on 0: the
    phone hears nothing and the slot carries the idle code; the twin names the rule."""
    line = bring_up(reactor, HandfulOfIndirectRegisters, part="si3215")
    assert line.error is None  # nothing read back: the driver believes the chip is fine
    assert said(line, "before the indirect table's thresholds and gains were loaded")
    assert said(line, "RECV_DIGITAL_GAIN (IR13)") and said(line, "XMIT_DIGITAL_GAIN (IR14)")
    heard, sent = speech_both_ways(line)
    assert heard == 0 and sent == 0  # no speech either way
    assert line.emu.gain_db(M.RX_GAIN) == -np.inf


def test_5_the_driver_catches_a_table_that_does_not_read_back(reactor):
    line = make_line(reactor, start=False)
    emu = line.emu
    plain = emu.read_reg  # the chip loses IR LOOP_CLOSE_TRES (Si3215 IR15) writes

    def read_reg(reg):
        value = plain(reg)
        return 0 if reg == R.DR_IDA_HI and emu.regs[R.DR_IAA] == 15 else value

    emu.read_reg = read_reg
    with pytest.raises(ChipFailed, match="LOOP_CLOSE_TRES reads 0x0000, should be 0x1000"):
        line.drv.start()


# ---------------------------------------------------------------- finding 6
class NoFilterFlush(Si3215):
    """Reverts finding 6 (filters): calibration with IR35-39 as the table left them."""

    def _flush_filters(self):
        return {}


class OnePassCalibration(Si3215):
    """Reverts finding 6 (fallback): auto calibration once; its failure is final."""

    def _calibrate(self, manual):
        if detail := self._auto_calibration():
            raise ChipFailed(f"auto calibration failed: {detail}")
        self.calibration.update(mode="auto", attempts=1)


class NoDcdcCalibration(Si3215):
    """Reverts part of finding 6: DR107 checked, the DC-DC calibration (DR93 bit 7) never run."""

    def _dcdc_calibrate(self):
        peak = self._read(R.DR_DCDC_PEAK_CAL)
        self.calibration["dr107"] = {"read": peak, "fixed": False, "done": True}


def test_6_a_dr107_check_without_the_dc_dc_calibration_is_caught(reactor):
    line = bring_up(reactor, NoDcdcCalibration)
    assert line.error is None  # DR107's reset value 0x08 passes the 0x2..0xd check...
    assert said(line, "DR107 read before any DC-DC calibration")  # ...with nothing behind it


def test_6_calibration_without_flushed_filters_is_caught(reactor):
    line = bring_up(reactor, NoFilterFlush)
    assert said(line, "not flushed to 0x8000")


def test_6_no_manual_fallback_fails_where_the_driver_recovers(reactor):
    def auto_cal_broken(line):
        emu, plain = line.emu, line.emu.read_reg
        emu.read_reg = lambda reg: (R.CAL_AUTO_START if reg == R.DR_CAL1 and
                                    emu.regs[R.DR_CAL2] == R.CAL_ALL else plain(reg))

    reverted = make_line(reactor, start=False, driver_cls=OnePassCalibration)
    auto_cal_broken(reverted)
    with pytest.raises(ChipFailed, match="auto calibration failed"):
        reverted.drv.start()
    fixed = make_line(reactor, start=False)
    auto_cal_broken(fixed)
    fixed.drv.start()
    assert fixed.drv.calibration["mode"] == "manual" and fixed.emu.violations == []


# ---------------------------------------------------------------- finding 9
class AlarmLeavesTheLineOpen(Si3215):
    """Reverts finding 9: a power alarm opens the line until someone sets a linefeed."""

    def _recheck_sanity(self, eventtime):
        return eventtime + 0.256 if self.running else float("inf")


class AlarmsForever(Si3215):
    """Reverts the bound of finding 9: the linefeed re-applied however often it trips."""

    def _forgive(self, now):
        self._palarms = 0


def test_9_a_transient_alarm_without_recovery_leaves_the_phone_dead(reactor):
    line = bring_up(reactor, AlarmLeavesTheLineOpen)
    line.emu.inject_power_alarm(transistor=3)
    line.reactor.run_for(1.0)
    line.phone.off_hook()
    line.reactor.run_for(1.0)
    assert line.drv.loop_current_ma() == 0 and "off_hook" not in [e.kind for e in line.events]


def test_9_unbounded_recovery_never_takes_a_shorted_port_out(reactor):
    line = bring_up(reactor, AlarmsForever)
    for _ in range(MAX_ALARMS + 5):
        line.emu.inject_power_alarm(transistor=1)
        line.reactor.run_for(0.3)
    assert len(line.emu.alarm_log) > MAX_ALARMS
    assert "chip_failed" not in [e.kind for e in line.events]  # the port never gives up
