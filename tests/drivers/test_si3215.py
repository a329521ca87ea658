"""The Si3215 FXS driver against its register-level twin, in fake time.

Real driver, real emulator behind a (recording) SimSpiDevice, a started PCM highway for
PCLK, a virtual phone on the loop: the bring-up sequence of DAHDI wctdm.c (part
detection, Si3215 indirect addresses, DC-DC, battery switching, the indirect table and
its verification, calibration and its fallback, PCM), hook debounce, flash/hang-up
boundaries, pulse dialling, ring cadences and ring trip, polarity, sense readouts,
power-alarm recovery, selftest and loopback, and the bring-up failures.
"""

import numpy as np
import pytest
from si3215_trace import DEFAULT_PART, INT, RESET, make_line, steps, writes

from drivers.bus import tdm
from drivers.chips import si3215_regs as R
from drivers.chips.si3215 import MAX_ALARMS, NO_PCLK
from drivers.sim.highway import SimPcmStream
from foundation.errors import ChipFailed
from foundation.reactor import NEVER


def kinds(line, since=0):
    return [e.kind for e in line.events[since:]]


def digits(line):
    return "".join(e.data["digit"] for e in line.events if e.kind == "digit")


def lift(line):
    line.phone.off_hook()
    line.reactor.run_for(0.5)
    assert kinds(line) == ["off_hook"]
    line.events.clear()


@pytest.fixture
def line(reactor):
    return make_line(reactor)


class Faulty:
    """An SPI target in front of the emulator that answers some reads its own way:
    `answer(reg, last_iaa, last_writes) -> int | None` (None: the chip's answer)."""

    def __init__(self, emu, answer):
        self.emu, self.answer = emu, answer
        self.ctrl, self.iaa, self.last = None, None, {}

    def spi_transfer(self, data: bytes) -> bytes:
        got = bytearray(self.emu.spi_transfer(data))
        for i, byte in enumerate(data):
            if self.ctrl is None:
                self.ctrl = byte
                continue
            reg, read = self.ctrl & 0x7F, self.ctrl & 0x80
            self.ctrl = None
            if not read:
                self.last[reg] = byte
                self.iaa = byte if reg == R.DR_IAA else self.iaa
            elif (forced := self.answer(reg, self.iaa, self.last)) is not None:
                got[i] = forced
        return bytes(got)


def with_faulty_chip(reactor, answer, **kw):
    line = make_line(reactor, start=False, **kw)
    line.spi.device.target = Faulty(line.emu, answer)
    return line


# ---------------------------------------------------------------- bring-up
def test_start_resets_identifies_calibrates_and_feeds_the_line(reactor):
    resets = []
    line = make_line(reactor, start=False)
    line.gpio.watch_output(RESET, resets.append)
    line.drv.start()
    st = line.drv.status()
    assert resets[-2:] == [False, True]
    assert st["state"] == "ok" and st["chip"] == DEFAULT_PART and st["hook"] == "on"
    assert st["linefeed"] == "forward_active"
    assert st["battery_v"] > 60
    assert line.drv.calibration["mode"] == "auto" and line.drv.calibration["attempts"] == 1
    assert writes(line, R.DR_CAL1)[0] == R.CAL_AUTO_START  # wctdm.c: 0x5f
    assert writes(line, R.DR_INT_ENABLE2)[-1] & R.IRQ2_LOOP
    assert line.emu.violations == []  # the twin found nothing wrong with the sequence


def test_si3215_and_si3210_are_told_apart_by_dr1(reactor):
    assert make_line(reactor, part="si3210").drv.status()["chip"] == "si3210"
    assert make_line(reactor, part="si3215").drv.chip == "si3215"


def test_si3215_uses_its_own_indirect_addresses(reactor):
    """wctdm.c translate_3215: RING_OSC is IR7 on an Si3215, IR20 on an Si3210."""
    line = make_line(reactor, part="si3215")
    done = steps(line.spi.frames)
    iw = {(reg, value) for op, reg, value in done if op == "iwrite"}
    assert (7, 0x7EF0) in iw and (8, 0x0160) in iw  # RING_OSC, RING_X
    assert (15, 0x1000) in iw and (64, 0x0C00) in iw  # LOOP_CLOSE_TRES, DCDC_MIN_V
    assert (20, 0x7EF0) not in iw and (21, 0x0160) not in iw  # Si3215 IR20/21: power alarms
    assert not {reg for op, reg, _ in done if op == "iwrite"} & {28, 41, 43}
    # DTMF and pulse-metering registers do not exist on the Si3215: never written
    assert (0, 0x55C2) not in iw and (23, 0x2000) not in iw


def test_si3210_keeps_the_si3210_addresses(reactor):
    line = make_line(reactor, part="si3210")
    iw = {(reg, value) for op, reg, value in steps(line.spi.frames) if op == "iwrite"}
    assert (20, 0x7EF0) in iw and (0, 0x55C2) in iw and (43, 0x1000) in iw


def test_dcdc_period_before_power_up_and_dr93_before_and_after_calibration(reactor):
    line = make_line(reactor, board={"slic_dcdc_period": 0xC0})
    acc = [(op, reg, v) for op, reg, v in steps(line.spi.frames) if op == "write"]
    first_power_up = acc.index(("write", R.DR_POWERDOWN1, R.POWER_UP))
    assert acc[first_power_up - 1] == ("write", R.DR_DCDC_PERIOD, 0xC0)
    assert writes(line, R.DR_DCDC) == [0x19, 0x19, 0x99]  # initial, final power-up, DC-DC cal
    cal = acc.index(("write", R.DR_CAL1, R.CAL_AUTO_START))
    assert acc.index(("write", R.DR_DCDC, 0x99)) > cal


def test_out_of_range_dc_dc_calibration_is_set_to_dahdis_fallback(reactor):
    line = with_faulty_chip(reactor, lambda reg, iaa, last: 0x0F if reg == R.DR_DCDC_PEAK_CAL else None)
    line.drv.start()
    assert writes(line, R.DR_DCDC_PEAK_CAL) == [R.DCDC_PEAK_FALLBACK]
    assert line.drv.calibration["dr107"]["fixed"]


@pytest.mark.parametrize("auto, dr67, dr66", [(False, [0x07], [0x01]), (True, [0x0F], [])])
def test_automatic_battery_switching_is_off_unless_the_board_is_built_for_it(reactor, auto, dr67, dr66):
    line = make_line(reactor, board={"slic_auto_battery": auto})
    assert writes(line, R.DR_AUTO) == dr67
    assert writes(line, R.DR_BAT_FEED) == dr66


@pytest.mark.parametrize("slot, law, dr1", [(0, "ulaw", 0x28), (2, "alaw", 0x20), (3, "ulaw", 0x28)])
def test_pcm_mode_and_timeslot_are_programmed(reactor, slot, law, dr1):
    line = make_line(reactor, {"timeslot": slot, "pcm_law": law})
    start = tdm.slot_start(slot)
    assert writes(line, R.DR_PCM_MODE) == [dr1]
    for reg, value in ((R.DR_PCM_TX_LO, start), (R.DR_PCM_TX_HI, 0),
                       (R.DR_PCM_RX_LO, start), (R.DR_PCM_RX_HI, 0)):
        assert writes(line, reg) == [value]


def test_filters_are_flushed_around_calibration_and_restored(reactor):
    line = make_line(reactor, part="si3210")
    iw = [(reg, v) for op, reg, v in steps(line.spi.frames) if op == "iwrite"]
    flushed = [iw.index((reg, 0x8000), 44) for reg in R.IR_FILTERS]  # after the table
    restored = [max(i for i, (r, _) in enumerate(iw) if r == reg) for reg in R.IR_FILTERS]
    assert all(f < r for f, r in zip(flushed, restored, strict=True))
    assert [iw[i][1] for i in restored] == [0x8000, 0x0320, 0x008C, 0x0100, 0x0010]


def test_table_mismatch_on_read_back_is_a_chip_fault(reactor):
    def corrupt(reg, iaa, last):  # LOOP_CLOSE_TRES (Si3215 IR15) reads back wrong
        return 0x00 if reg == R.DR_IDA_HI and iaa == 15 else None

    line = with_faulty_chip(reactor, corrupt, part="si3215")
    with pytest.raises(ChipFailed, match=r"IR28 \(Si3215 IR15\) LOOP_CLOSE_TRES reads 0x0000, "
                                         r"should be 0x1000"):
        line.drv.start()
    assert line.drv.status()["state"] == "failed"


def test_no_pclk_indirect_access_never_completes(reactor):
    line = with_faulty_chip(reactor, lambda reg, iaa, last: 0x01 if reg == R.DR_IAS else None)
    with pytest.raises(ChipFailed) as exc:
        line.drv.start()
    assert str(exc.value).endswith(NO_PCLK)
    assert "no PCLK: the PCM stream is not running (check the card's PCM link / overlay)" in str(exc.value)


def test_no_pclk_when_the_pcm_stream_is_not_running(reactor):
    line = make_line(reactor, start=False, clock=False)
    with pytest.raises(ChipFailed, match="no PCLK: the PCM stream is not running"):
        line.drv.start()
    line.highway.start()  # the core starts the stream first: then it comes up
    line.drv.start()
    assert line.drv.status()["state"] == "ok"


def test_pclk_lost_during_power_up_is_named(reactor):
    line = make_line(reactor, start=False)
    stop = reactor.register_timer(lambda t: line.highway.stop() or NEVER, reactor.now() + 0.035)
    with pytest.raises(ChipFailed, match=r"battery only \d+ V at the initial power-up: no PCLK: "
                                         r"the PCM stream is not running"):
        line.drv.start()
    reactor.unregister_timer(stop)


@pytest.mark.parametrize("how", ["empty_slot", "not_seated_mode"])
def test_card_not_seated_fails_with_one_clear_line(reactor, how):
    line = make_line(reactor, start=False, seated=how != "empty_slot",
                     **({"not_seated": True} if how == "not_seated_mode" else {}))
    with pytest.raises(ChipFailed) as exc:
        line.drv.start()
    assert str(exc.value) == ("SLIC on spidev0.1 answered 0xFF to its ID register: "
                              "card not seated?")
    assert line.drv.failed and line.drv.status()["state"] == "failed"
    assert line.drv.status()["loop_current_ma"] is None


def test_auto_calibration_failing_twice_falls_back_to_manual(reactor):
    def auto_never_ends(reg, iaa, last):
        return R.CAL_AUTO_START if reg == R.DR_CAL1 and last.get(R.DR_CAL1) == R.CAL_AUTO_START else None

    line = with_faulty_chip(reactor, auto_never_ends)
    line.drv.start()
    assert writes(line, R.DR_CAL1) == [0x5F, 0x5F, 0x47, 0x40]  # auto twice, manual, balance
    assert writes(line, R.DR_POWERDOWN1)[writes(line, R.DR_POWERDOWN1).index(0x10, 2) - 1:]  # sane: DR14=0x10
    assert line.drv.calibration["mode"] == "manual"
    assert line.drv.status()["state"] == "ok"


def test_manual_calibration_board_never_runs_auto(reactor):
    line = make_line(reactor, board={"slic_calibration": "manual"})  # OAK pitdm.c
    assert writes(line, R.DR_CAL1) == [R.CAL_MANUAL_DR96, R.CAL_RUN]
    assert writes(line, R.DR_CAL2) == [R.CAL_MANUAL_DR97, R.CAL_LONG_DR97]
    assert line.drv.calibration["mode"] == "manual"


def test_stuck_calibration_fails_after_auto_and_manual(reactor):
    line = make_line(reactor, start=False, stuck_calibration=True)
    t0 = reactor.now()
    with pytest.raises(ChipFailed, match="did not finish manual calibration"):
        line.drv.start()
    assert writes(line, R.DR_CAL1) == [0x5F, 0x5F, 0x47, 0x47]
    assert reactor.now() - t0 >= 2 * 2.0 + 2 * 0.8  # every wait ran on the reactor clock
    assert line.drv.status()["state"] == "failed"


def test_dead_battery_fails_power_up(reactor):
    line = make_line(reactor, start=False, dead_battery=True)
    with pytest.raises(ChipFailed, match="battery only 0 V .* initial power-up"):
        line.drv.start()


def test_restart_after_failure_recovers(reactor):
    line = make_line(reactor, start=False, not_seated=True)
    with pytest.raises(ChipFailed):
        line.drv.start()
    line.emu.not_seated = False
    line.drv.start()
    assert not line.drv.failed and line.drv.status()["state"] == "ok"


# ---------------------------------------------------------------- selftest and loopback
def test_selftest_reports_every_check(line):
    checks = line.drv.selftest()
    names = [c["check"] for c in checks]
    assert names == ["chip id", "battery", "dc-dc", "calibration", "power leak",
                     "indirect table", "pcm"]
    for c in checks:
        assert set(c) == {"check", "ok", "detail", "fix"} and c["detail"]
        assert (c["fix"] == "") == c["ok"]
    assert [c["check"] for c in checks if not c["ok"]] == []
    assert checks[names.index("indirect table")]["detail"].startswith("27 of 27")  # Si3215


def test_selftest_of_a_failed_chip_says_so(reactor):
    line = make_line(reactor, start=False, not_seated=True)
    with pytest.raises(ChipFailed):
        line.drv.start()
    (check,) = line.drv.selftest()
    assert not check["ok"] and "card not seated" in check["detail"] and check["fix"]


def test_pcm_loopback_writes_the_digital_loopback_mode(line):
    line.drv.pcm_loopback(True)
    line.drv.pcm_loopback(False)
    assert writes(line, R.DR_LOOPBACK)[-2:] == [R.LOOPBACK_DIGITAL, R.LOOPBACK_OFF]


@pytest.mark.parametrize("slot", [0, 3])
def test_pcm_loopback_returns_the_slot(reactor, slot):
    line = make_line(reactor, {"timeslot": slot})
    line.drv.pcm_loopback(True)
    stream = SimPcmStream(line.highway)
    pattern = np.full(160, 0x55, dtype=np.uint8)
    for _ in range(10):
        stream.write(tdm.pack_slots({slot: pattern}, 160))
    reactor.run_for(0.2)
    got = np.concatenate([tdm.slot_bytes(f, slot) for f in list(line.highway.capture)[-3:]])
    assert (got == 0x55).mean() > 0.5


# ---------------------------------------------------------------- hook debounce
def test_off_hook_with_contact_bounce_is_reported_once(line):
    t0 = line.reactor.now()
    line.phone.off_hook(bounce=(8, 8, 8, 8))  # 32 ms of chatter, each longer than the chip's 5 ms
    line.reactor.run_for(1.0)
    assert kinds(line) == ["off_hook"]
    # settled at t0+32 ms, chip debounce 5 ms, software debounce 20 ms
    assert line.events[0].time == pytest.approx(t0 + 0.032 + 0.005 + 0.020, abs=1e-6)


def test_hang_up_with_contact_bounce_is_reported_once(line):
    lift(line)
    line.phone.on_hook(bounce=(6, 9, 6, 9))
    line.reactor.run_for(2.0)
    assert kinds(line) == ["on_hook"]


def test_closure_shorter_than_debounce_is_not_an_off_hook(line):
    line.phone.off_hook()
    line.reactor.run_for(0.012)
    line.phone.on_hook()
    line.reactor.run_for(1.0)
    assert kinds(line) == []


def test_open_glitch_shorter_than_break_debounce_is_ignored(line):
    lift(line)
    line.phone.flash(ms=15)
    line.reactor.run_for(1.5)
    assert kinds(line) == []


def test_interrupts_are_cleared_after_service(line):
    lift(line)
    assert line.gpio.read(INT) is True  # every latched interrupt was cleared


# ---------------------------------------------------------------- flash and hang-up
@pytest.mark.parametrize("window", [(100, 800), (200, 600)])
@pytest.mark.parametrize("where, expect", [
    ("below_min", ["digit"]),  # a break under flash_min is a dial pulse
    ("above_min", ["flash"]),
    ("below_max", ["flash"]),
    ("above_max", ["on_hook", "off_hook"]),
])
def test_flash_window_boundaries(reactor, window, where, expect):
    fmin, fmax = window
    line = make_line(reactor, {"flash_min_ms": fmin, "flash_max_ms": fmax})
    lift(line)
    ms = {"below_min": fmin - 15, "above_min": fmin + 15,
          "below_max": fmax - 15, "above_max": fmax + 15}[where]
    t0 = line.phone.flash(ms=ms) - ms / 1000
    reactor.run_for(2.0)
    assert kinds(line) == expect
    if expect == ["flash"]:
        assert line.events[0].data["ms"] == pytest.approx(ms, abs=1)
    if where == "above_max":  # hang-up confirmed flash_max after the loop opened
        assert line.events[0].time == pytest.approx(t0 + 0.005 + fmax / 1000, abs=1e-6)
        assert line.drv.off_hook  # the loop closed again: a new off-hook


def test_long_open_is_a_hang_up_and_reported_at_flash_max(line):
    lift(line)
    t0 = line.reactor.now()
    line.phone.on_hook()
    line.reactor.run_for(0.79)
    assert kinds(line) == []
    line.reactor.run_for(0.1)
    assert kinds(line) == ["on_hook"] and not line.drv.off_hook
    assert line.events[0].time == pytest.approx(t0 + 0.005 + 0.8, abs=1e-6)


# ---------------------------------------------------------------- pulse dialling
@pytest.mark.parametrize("pps, break_pct", [(10, 60), (10, 66), (20, 60), (20, 66)])
def test_pulse_dialling_every_digit(reactor, pps, break_pct):
    line = make_line(reactor)
    lift(line)
    line.phone.dial_pulse("1234567890", pps=pps, break_pct=break_pct)
    reactor.run_for(15)
    assert digits(line) == "1234567890"
    assert set(kinds(line)) == {"digit"}
    assert all(e.data["method"] == "pulse" for e in line.events)


@pytest.mark.parametrize("pps, break_pct", [(10, 60), (20, 66)])
def test_pulse_dialling_a_number_with_bounce_free_short_gaps(reactor, pps, break_pct):
    line = make_line(reactor)
    lift(line)
    line.phone.dial_pulse("9005550", pps=pps, break_pct=break_pct, interdigit_ms=400)
    reactor.run_for(15)
    assert digits(line) == "9005550"


def test_digit_is_reported_after_the_interdigit_pause(line):
    lift(line)
    last_make = line.phone.dial_pulse("3", pps=10, break_pct=60)
    line.reactor.run_for(1.0)
    (event,) = line.events
    assert event.data["digit"] == "3"
    assert event.time == pytest.approx(last_make + 0.005 + 0.3, abs=1e-6)


def test_hang_up_mid_digit_drops_the_pulses(line):
    lift(line)
    line.phone.dial_pulse("2", pps=10)
    line.reactor.run_for(0.15)  # first break and make done, second break under way
    line.phone.on_hook()
    line.reactor.run_for(2)
    assert "digit" not in kinds(line) and kinds(line)[-1] == "on_hook"


# ---------------------------------------------------------------- ringing
def durations(bursts):
    return [round(b - a, 3) for a, b in bursts]


def gaps(bursts):
    return [round(bursts[i + 1][0] - bursts[i][1], 3) for i in range(len(bursts) - 1)]


def test_us_cadence_runs_on_the_chip_timers(line):
    assert line.drv.ring((2.0, 4.0))
    assert line.phone.is_ringing
    line.reactor.run_for(14.5)
    line.drv.stop_ring()
    bursts = line.phone.ring_bursts
    assert durations(bursts) == [2.0, 2.0, 2.0]
    assert gaps(bursts) == [4.0, 4.0]
    on = writes(line, R.DR_RING_ACTIVE_LO)[-1] | writes(line, R.DR_RING_ACTIVE_HI)[-1] << 8
    off = writes(line, R.DR_RING_INACTIVE_LO)[-1] | writes(line, R.DR_RING_INACTIVE_HI)[-1] << 8
    assert (on, off) == (16000, 32000)  # 2 s and 4 s in 125 us ticks
    assert line.drv.ring_settings() == pytest.approx((20.5, 63.9), abs=0.1)  # DAHDI's 0x7ef0/0x160
    assert not line.phone.is_ringing and line.drv.status()["linefeed"] == "forward_active"


def test_uk_double_ring_switches_the_linefeed_on_reactor_timers(line):
    line.drv.ring((0.4, 0.2, 0.4, 2.0))
    line.reactor.run_for(0.5)  # inside the 0.2 s gap
    assert line.drv.linefeed() == "on_hook_transmission"  # caller ID can pass in gaps
    line.reactor.run_for(5.6)
    bursts = line.phone.ring_bursts
    assert durations(bursts) == [0.4, 0.4, 0.4, 0.4]
    assert gaps(bursts) == [0.2, 2.0, 0.2]


def test_country_cadence_is_used_when_none_given(reactor):
    line = make_line(reactor, {"country": "us"})
    line.drv.ring()
    reactor.run_for(7.0)
    assert durations(line.phone.ring_bursts) == [2.0]


def test_bad_cadence_is_refused(line):
    with pytest.raises(ValueError, match="on/off pairs"):
        line.drv.ring((2.0, 4.0, 1.0))


@pytest.mark.parametrize("answer_at", [1.0, 3.0])  # in a burst, in a gap
def test_ring_trip_stops_ringing_and_reports_off_hook(line, answer_at):
    line.drv.ring((2.0, 4.0))
    line.reactor.run_for(answer_at)
    line.phone.off_hook()
    line.reactor.run_for(0.2)
    assert kinds(line) == ["off_hook"]
    assert line.events[0].data.get("ring_trip") is True
    assert line.events[0].time - line.reactor.now() < 0.2
    line.reactor.run_for(10)
    assert not line.phone.is_ringing and not line.drv.ringing
    assert len(line.phone.ring_bursts) == 1
    assert line.drv.off_hook and line.drv.loop_current_ma() > 20


def test_ring_trip_during_uk_gap(line):
    line.drv.ring((0.4, 0.2, 0.4, 2.0))
    line.reactor.run_for(1.5)  # in the long gap, linefeed in on-hook transmission
    line.phone.off_hook()
    line.reactor.run_for(3)
    assert kinds(line) == ["off_hook"] and len(line.phone.ring_bursts) == 2


def test_ring_refused_when_off_hook(line):
    lift(line)
    assert line.drv.ring((2.0, 4.0)) is False
    assert not line.phone.is_ringing


# ---------------------------------------------------------------- polarity and readouts
def test_readouts_on_hook_off_hook_and_ringing(line):
    st = line.drv.status()
    assert st["loop_current_ma"] == 0.0
    assert st["line_voltage_v"] == pytest.approx(48, abs=1)
    lift(line)
    st = line.drv.status()
    assert 20 <= st["loop_current_ma"] <= 30
    assert 0 < st["line_voltage_v"] < 15
    line.phone.on_hook()
    line.reactor.run_for(1)
    line.drv.ring((2.0, 4.0))
    line.reactor.run_for(0.5)
    ringing = line.drv.status()
    assert ringing["ring"] and 2 < ringing["loop_current_ma"] < 15  # 1 REN load


def test_polarity_reversal(line):
    lift(line)
    assert line.drv.line_voltage_v() > 0
    line.drv.reverse_polarity(True)
    assert line.drv.linefeed() == "reverse_active"
    assert line.drv.line_voltage_v() < 0
    assert line.drv.loop_current_ma() > 20
    assert kinds(line) == []  # a reversal is no hook change
    line.drv.reverse_polarity(False)
    assert line.drv.linefeed() == "forward_active" and line.drv.line_voltage_v() > 0


def test_set_linefeed_modes(line):
    for mode in ("open", "on_hook_transmission", "reverse_active", "forward_active"):
        line.drv.set_linefeed(mode)
        assert line.drv.linefeed() == mode
    with pytest.raises(ValueError, match="linefeed 'sideways'"):
        line.drv.set_linefeed("sideways")


def test_open_linefeed_sees_no_loop(line):
    line.drv.set_linefeed("open")
    line.phone.off_hook()
    line.reactor.run_for(0.5)
    assert kinds(line) == [] and line.drv.line_voltage_v() == 0
    line.drv.set_linefeed("forward_active")
    line.reactor.run_for(0.5)
    assert kinds(line) == ["off_hook"]


# ---------------------------------------------------------------- power alarm
def test_power_alarm_opens_the_line_and_the_linefeed_is_reapplied(line):
    lift(line)
    line.emu.inject_power_alarm(transistor=3)
    line.reactor.run_for(0.01)
    st = line.drv.status()
    assert st["linefeed"] == "open" and "Q3" in st["alarm"] and st["state"] == "ok"
    line.reactor.run_for(0.3)  # the next 256 ms sanity check re-applies it (wctdm.c)
    assert line.drv.status()["linefeed"] == "forward_active"
    assert line.drv.loop_current_ma() > 20
    line.reactor.run_for(1.0)
    st = line.drv.status()
    assert st["alarm"] == "" and st["power_alarms"] == 1 and st["state"] == "ok"
    # the call goes on: the break the alarm made is no flash, no hang-up, no event at all
    assert line.events == [] and line.drv.off_hook


def test_power_alarm_while_ringing_comes_back_active(line):
    line.drv.ring((2.0, 4.0))
    line.reactor.run_for(0.5)
    line.emu.inject_power_alarm(transistor=1)
    line.reactor.run_for(0.3)
    assert not line.drv.ringing and line.drv.linefeed() == "forward_active"


def test_too_many_power_alarms_mark_the_port_failed(line):
    for _ in range(MAX_ALARMS + 2):
        line.emu.inject_power_alarm(transistor=2)  # a short that will not go away
        line.reactor.run_for(0.3)
    (failed,) = line.events
    assert failed.kind == "chip_failed" and failed.data["transistors"] == ["Q2"]
    assert "10 power alarms (power alarm on Q2)" in failed.data["error"]
    st = line.drv.status()
    assert st["state"] == "failed" and "check tip/ring for a short" in st["reason"]
    assert line.emu.linefeed == R.LF_OPEN
    # opened at each alarm, fed again 9 times, opened for good at the 10th
    assert writes(line, R.DR_LINEFEED)[-2 * MAX_ALARMS:] == [0, 1] * (MAX_ALARMS - 1) + [0, 0]


def test_power_alarms_ten_seconds_apart_are_forgiven(line):
    for _ in range(MAX_ALARMS + 3):
        line.emu.inject_power_alarm(transistor=4)
        line.reactor.run_for(11.0)  # wctdm.c: one alarm forgiven per 10 s
    assert "chip_failed" not in kinds(line) and line.drv.status()["state"] == "ok"


def test_card_pulled_while_running_shows_failed(line):
    line.emu.not_seated = True
    st = line.drv.status()
    assert st["state"] == "failed" and "answered 0xFF" in st["reason"]
    assert line.drv.failed and st["loop_current_ma"] is None


def test_stop_opens_the_line(line):
    line.drv.stop()
    assert line.emu.linefeed == R.LF_OPEN
    assert line.drv.status()["state"] == "stopped"
    line.phone.off_hook()
    line.reactor.run_for(1)
    assert kinds(line) == []
