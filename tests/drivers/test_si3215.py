"""The Si3215 FXS driver against its register-level twin, in fake time.

Real driver, real emulator behind a SimSpiDevice, virtual phone on the loop: hook
debounce, flash/hang-up boundaries, pulse dialling, ring cadences and ring trip,
polarity, sense readouts, power alarms and bring-up failures.
"""

from types import SimpleNamespace

import pytest

from drivers.bus.gpio import SimGpio
from drivers.bus.pcm import SimPcmLink
from drivers.bus.spi import SimSpiDevice
from drivers.chips import si3215_regs as R
from drivers.chips.si3215 import Si3215
from drivers.errors import ChipFailed
from drivers.sim.phone import VirtualPhone
from drivers.sim.si3215_sim import Si3215Emulator

RESET, INT = 17, 27


def make_line(reactor, settings=None, part="si3215", seated=True, start=True, **emu_opts):
    gpio = SimGpio()
    emu = Si3215Emulator(reactor, gpio, RESET, INT, part=part)
    for key, value in emu_opts.items():
        setattr(emu, key, value)
    spi = SimSpiDevice(0, 1, emu if seated else None)
    events = []
    drv = Si3215("fxs1", spi, gpio, RESET, INT, reactor, dict(settings or {}), events.append)
    link = SimPcmLink("fxs1")
    phone = VirtualPhone(reactor, emu, link.device)
    line = SimpleNamespace(gpio=gpio, emu=emu, spi=spi, drv=drv, phone=phone, link=link,
                           events=events, reactor=reactor)
    if start:
        drv.start()
    return line


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


# ---------------------------------------------------------------- bring-up
def test_start_resets_identifies_calibrates_and_feeds_the_line(reactor):
    resets = []
    gpio_line = make_line(reactor, start=False)
    gpio_line.gpio.watch_output(RESET, resets.append)
    gpio_line.drv.start()
    st = gpio_line.drv.status()
    assert resets[-2:] == [False, True]
    assert st["state"] == "ok" and st["chip"] == "si3215" and st["hook"] == "on"
    assert st["linefeed"] == "forward_active"
    assert st["battery_v"] > 60
    cal_writes = [v for _, reg, v in gpio_line.emu.writes if reg == R.DR_CAL1]
    assert cal_writes and cal_writes[-1] & R.CAL_RUN
    assert gpio_line.emu.read_reg(R.DR_CAL1) == 0  # the chip finished calibrating
    assert gpio_line.emu.regs[R.DR_INT_ENABLE2] & R.IRQ2_LOOP


def test_si3210_is_told_apart(reactor):
    assert make_line(reactor, part="si3210").drv.status()["chip"] == "si3210"


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


def test_stuck_calibration_times_out_on_the_reactor_clock(reactor):
    line = make_line(reactor, start=False, stuck_calibration=True)
    t0 = reactor.now()
    with pytest.raises(ChipFailed, match="did not finish calibration"):
        line.drv.start()
    assert 2.0 <= reactor.now() - t0 < 2.5
    assert line.drv.status()["state"] == "failed"


def test_dead_battery_fails_power_up(reactor):
    line = make_line(reactor, start=False, dead_battery=True)
    with pytest.raises(ChipFailed, match="battery only 0 V"):
        line.drv.start()


def test_restart_after_failure_recovers(reactor):
    line = make_line(reactor, start=False, not_seated=True)
    with pytest.raises(ChipFailed):
        line.drv.start()
    line.emu.not_seated = False
    line.drv.start()
    assert not line.drv.failed and line.drv.status()["state"] == "ok"


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
    assert line.gpio.read(INT) is True
    assert line.emu.regs[R.DR_INT_STATUS2] == 0


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
    regs = line.emu.regs
    assert regs[R.DR_RING_ACTIVE_LO] | regs[R.DR_RING_ACTIVE_HI] << 8 == 16000  # 2 s / 125 us
    assert regs[R.DR_RING_INACTIVE_LO] | regs[R.DR_RING_INACTIVE_HI] << 8 == 32000
    assert line.emu.ring_hz() == pytest.approx(20, abs=0.1)
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
    assert line.emu.reversed and line.drv.linefeed() == "reverse_active"
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
def test_power_alarm_opens_the_line_and_is_reported(line):
    lift(line)
    line.emu.inject_power_alarm(transistor=3)
    line.reactor.run_for(0.1)
    (event,) = line.events
    assert event.kind == "power_alarm" and event.data["transistors"] == ["Q3"]
    st = line.drv.status()
    assert st["linefeed"] == "open" and "Q3" in st["alarm"]
    assert st["loop_current_ma"] == 0.0
    line.drv.set_linefeed("forward_active")
    assert line.drv.status()["alarm"] == "" and line.drv.loop_current_ma() > 20


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
