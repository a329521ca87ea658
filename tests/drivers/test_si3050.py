"""The FXO driver (Si3050) against its register-level emulator and the virtual CO, in fake time.

Each test builds one FXO port as the box has it: SimGpio, a started SimHighway (the Pi's
PCM clock: the DAA's line side needs PCLK) attached to the Si3050Emulator behind a
SimSpiDevice, the real Si3050 driver, and a VirtualCO on the emulator's analog side
whose caller-ID audio is a plain burst (the FSK modem is tested with cext.callerid). A
reader drains the Pi's capture every 20 ms and decodes the port's timeslot, so audio
timing is checked through the chip's companding and timeslot.
"""

import math

import numpy as np
import pytest
from driver_settings import driver_settings

from cext import g711, toneplans
from drivers.bus import tdm
from drivers.bus.gpio import SimGpio
from drivers.bus.spi import SimSpiDevice
from drivers.chips import daa_countries as D
from drivers.chips import si3050_regs as R
from drivers.chips.si3050 import Si3050, country_registers
from drivers.sim.central_office import VirtualCO
from drivers.sim.highway import SimHighway, SimPcmStream
from drivers.sim.si3050_sim import RING_PEAK_V, Si3050Emulator
from foundation import events as ev
from foundation.errors import ChipFailed, HardwareError

RESET, INT = 22, 23
SLOT = 2
CID_S = 0.5
UK_PLAN = toneplans.plan("uk")  # double ring (0.4, 0.2, 0.4, 2.0), caller ID before ringing


def burst_audio(callerid, standard):
    """Stand-in caller-ID audio of known length (an 1800 Hz burst)."""
    n = int(CID_S * 8000)
    return (np.sin(2 * np.pi * 1800 * np.arange(n) / 8000) * 8000).astype(np.int16)


class Port:
    def __init__(self, reactor, plan=None, clock=True, **settings):
        self.reactor = reactor
        self.gpio = SimGpio()
        self.emu = Si3050Emulator(reactor, self.gpio, RESET, INT)
        self.highway = SimHighway(reactor)
        self.emu.attach_highway(self.highway)
        self.pi = SimPcmStream(self.highway)
        if clock:
            self.pi.start()  # the core starts the PCM stream before the chips
        self.spi = SimSpiDevice(1, 0, self.emu)
        self.events = []
        line = driver_settings("fxo", **{"country": "us", "timeslot": SLOT, "ring_min_ms": 200,
                                         "disconnect": ["loop_drop", "reversal", "tone"],
                                         **settings})
        self.daa = Si3050("fxo1", self.spi, self.gpio, RESET, INT, reactor, line, self.events.append)
        self.co = VirtualCO(reactor, self.emu, self.emu.analog.device, cid_audio=burst_audio,
                            plan=plan)
        self.frames = []  # (time, int16 frame) decoded from the port's timeslot
        reactor.register_timer(self._read_pcm, reactor.now() + 0.02)

    def _read_pcm(self, eventtime):
        decode = g711.alaw_decode if self.daa.settings["pcm_law"] == "alaw" else g711.ulaw_decode
        slot = self.daa.settings["timeslot"]
        while (frames := self.pi.read_all()) is not None:
            if 0 <= slot < tdm.SLOTS:
                self.frames.append((eventtime, decode(tdm.slot_bytes(frames, slot))))
        return eventtime + 0.02

    def kinds(self, *kinds):
        return [e for e in self.events if e.kind in kinds]

    def co_times(self, what):
        return [t for w, t in self.co.events if w == what]

    def loud_times(self):
        return [t for t, f in self.frames if np.abs(f.astype(float)).max() > 1000]


@pytest.fixture
def port(reactor):
    p = Port(reactor)
    p.daa.start()
    return p


# ---- start, identity, failure ----

def test_start_identifies_chip_powers_line_side_and_enables_ring_validation(port):
    st = port.daa.status()
    assert st["state"] == "ok" and st["line_side"] == "Si3019 rev 4"
    assert st["hook"] == "on" and st["line_voltage_v"] == pytest.approx(48, abs=1)
    assert st["fxo_mode"] == "FCC"
    assert not port.emu.regs[R.DAA_CONTROL2] & R.PDL  # line side powered
    assert port.emu.regs[R.RING_VALID3] & R.RNGV
    assert port.emu.regs[R.RING_VALID2] & 0x07 == R.RCC_MS.index(200)
    assert port.emu.violations == []


def test_every_access_is_three_one_byte_frames(port):
    """Finding 7: chip-select rises after every byte (wctdm.c __write_8bits, OAK pidma.c)."""
    sent = []
    real = port.spi.transfer
    port.spi.transfer = lambda data: sent.append(bytes(data)) or real(data)
    port.daa.measure()
    assert sent and all(len(frame) == 1 for frame in sent) and len(sent) % 3 == 0
    assert {frame[0] for frame in sent[::3]} == {R.SPI_CTRL_READ}


@pytest.mark.parametrize("law, reg33", [("ulaw", 0x28), ("alaw", 0x20)])
@pytest.mark.parametrize("slot", [0, 3])
def test_pcm_companded_in_the_boards_law_at_the_slots_bit(reactor, law, reg33, slot):
    p = Port(reactor, pcm_law=law, timeslot=slot)
    p.daa.start()
    assert p.emu.regs[R.PCM_SPI_MODE] == reg33  # wctdm.c: 0x28 mu-law, 0x20 A-law
    assert p.emu.pcm_law == law
    assert p.emu.tx_start == p.emu.rx_start == tdm.slot_start(slot) == 8 * slot


@pytest.mark.parametrize("code, name", sorted(D.COUNTRY_MODES.items()))
def test_country_settings_are_fxo_modes_rows_with_full(reactor, code, name):
    """Finding 8: registers 16, 26, 30, 31 as wctdm_init_voicedaa programs fxo_modes.h."""
    p = Port(reactor, country=code)
    p.daa.start()
    mode = D.FXO_MODES[name]
    assert {reg: p.emu.regs[reg] for reg in (16, 26, 30, 31)} == country_registers(mode)
    assert p.emu.regs[R.DAA_CONTROL5] & R.FULL
    assert p.emu.country_mismatches(name) == []


def test_uk_germany_france_are_not_generic_tbr21(reactor):
    acim = {}
    for code in ("uk", "de", "fr"):
        p = Port(reactor, country=code)
        p.daa.start()
        acim[code] = p.emu.line_settings()["acim"]
        assert p.emu.line_settings()["ohs2"] == 1  # TBR21 row has no OHS2
    assert acim == {"uk": 0x5, "de": 0x3, "fr": 0x2}  # fxo_modes.h "UK", "GERMANY", "FRANCE"


def test_a_line_may_name_any_fxo_modes_row(reactor):
    p = Port(reactor, fxo_mode="NEWZEALAND")
    p.daa.start()
    assert p.emu.line_settings()["acim"] == 0x4
    assert (p.emu.regs[R.TX_GAIN2], p.emu.regs[R.TX_GAIN3]) == (0, 7)  # wctdm: NZ tx +0.7 dB
    assert p.daa.status()["fxo_mode"] == "NEWZEALAND"


def test_driver_table_agrees_with_the_emulators_own_copy_of_fxo_modes():
    """Two transcriptions of fxo_modes.h, made apart (the emulator must not import the
    driver's): every row, and the registers wctdm_init_voicedaa computes from it."""
    from drivers.sim import daa_model as M

    assert list(D.FXO_MODES) == list(M.FXO_MODES)
    for name, mode in D.FXO_MODES.items():
        assert country_registers(mode) == M.reference_registers(M.FXO_MODES[name]), name


def test_every_country_code_the_schema_accepts_has_a_row():
    for code in toneplans.COUNTRIES:
        assert D.mode_for(code).name in D.FXO_MODES


def test_selftest_reports_every_check_ok(port):
    checks = port.daa.selftest()
    names = [c["check"] for c in checks]
    assert names == ["daa id", "daa line-side link", "line voltage", "country settings",
                     "pcm settings"]
    assert all(c["ok"] and c["fix"] == "" and c["detail"] for c in checks), checks
    assert "Si3019 rev 4" in checks[1]["detail"]


def test_selftest_names_a_missing_pstn_line(port):
    port.co.connect_line(False)
    port.reactor.run_for(0.2)
    (volts,) = [c for c in port.daa.selftest() if c["check"] == "line voltage"]
    assert not volts["ok"] and "PSTN line" in volts["fix"]


def test_selftest_names_a_lost_pclk(port):
    port.highway.stop()  # the PCM stream stopped: the isolation link loses its clock
    (link,) = [c for c in port.daa.selftest() if c["check"] == "daa line-side link"]
    assert not link["ok"] and link["fix"].startswith("no PCLK or line-side device")


def test_pcm_loopback_returns_what_the_pi_sends_on_the_slot(port):
    tone = (np.sin(2 * np.pi * 1000 * np.arange(160) / 8000) * 8000).astype(np.int16)
    slot_bytes = g711.ulaw_encode(tone)
    port.daa.pcm_loopback(True)
    assert port.emu.regs[R.PCM_SPI_MODE] & R.PCML and port.emu.loopback
    for _ in range(10):
        port.pi.write(tdm.pack_slots({SLOT: slot_bytes}, 160))
    port.reactor.run_for(0.2)
    heard = [f for _, f in port.frames[-3:]]
    assert all(np.array_equal(g711.ulaw_encode(f), slot_bytes) for f in heard)
    port.daa.pcm_loopback(False)
    assert port.emu.regs[R.PCM_SPI_MODE] == 0x28 and not port.emu.loopback


def test_unseated_card_fails_with_one_line_naming_the_device(reactor):
    p = Port(reactor)
    p.spi.target = None  # nothing on the chip-select: MISO floats high
    with pytest.raises(ChipFailed) as err:
        p.daa.start()
    assert str(err.value) == ("DAA on spidev1.0 answered 0xFF to Control 2 (an Si3050 reads "
                              "0x03): card not seated?")
    assert p.daa.failed and p.daa.status()["state"] == "failed"
    assert p.daa.selftest()[0]["ok"] is False


def test_missing_line_side_device_fails_after_waiting_for_the_link(reactor):
    p = Port(reactor)
    p.emu.line_side = False
    t0 = reactor.now()
    with pytest.raises(ChipFailed, match=r"^no PCLK or line-side device: DAA on spidev1\.0"):
        p.daa.start()
    assert reactor.now() - t0 == pytest.approx(2.1, abs=0.05)  # 100 ms soft reset + 2 s


def test_no_pclk_is_named_when_the_link_never_comes_up(reactor):
    p = Port(reactor, clock=False)  # the PCM stream was never started
    with pytest.raises(ChipFailed, match=r"no PCLK or line-side device: .*PCM stream is running"):
        p.daa.start()
    assert any("without PCLK" in v for v in p.emu.violations)


def test_timeslot_outside_the_frame_is_refused_by_name(reactor):
    p = Port(reactor)
    p.daa.settings = {**p.daa.settings, "timeslot": 5}  # past the schema's range
    with pytest.raises(ChipFailed, match=r"fxo1: lines\.fxo1\.timeslot = 5"):
        p.daa.start()


def test_other_chip_on_the_chip_select_is_named(reactor):
    class OtherChip:  # answers 0x5A to every byte
        def spi_transfer(self, data):
            return b"\x5a" * len(data)

    p = Port(reactor)
    p.spi.target = OtherChip()
    with pytest.raises(ChipFailed, match=r"reads 0x5A from Control 2 after reset.*spi_cs"):
        p.daa.start()


def test_card_pulled_while_running_marks_the_port_failed(port):
    port.emu.seated = False
    port.reactor.run_for(0.2)
    failed = port.kinds(ev.CHIP_FAILED)
    assert len(failed) == 1 and "stopped answering" in failed[0].data["error"]
    assert port.daa.status()["state"] == "failed"
    with pytest.raises(HardwareError, match="fxo1"):
        port.daa.seize()


def test_stop_goes_on_hook_and_powers_the_line_side_down(port):
    port.daa.seize()
    port.daa.stop()
    assert not port.emu.offhook and port.emu.regs[R.DAA_CONTROL2] & R.PDL
    assert port.daa.status()["state"] == "stopped"


# ---- ring detection and cadence validation ----

@pytest.mark.parametrize("burst_s", [0.05, 0.15])
def test_short_ring_bursts_are_not_rings(port, burst_s):
    port.co.ring(callerid=None, cadence=(burst_s, 4.0), count=3)
    port.reactor.run_for(14)
    assert port.kinds(ev.RING_START, ev.RING_STOP) == []
    assert not port.daa.ringing


def test_a_burst_of_ring_min_is_a_ring_raised_by_interrupt(port):
    port.co.ring(callerid=None, cadence=(0.25, 4.0), count=1)
    port.reactor.run_for(1)
    starts = port.kinds(ev.RING_START)
    assert len(starts) == 1
    # raised by RDTI the moment the chip confirms (200 ms), not on a 50 ms poll tick
    assert starts[0].time - port.co_times("ring_on")[0] == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize("burst_s, rings", [(0.28, 0), (0.33, 1)])
def test_software_checks_ring_min_beyond_the_chips_confirmation_step(reactor, burst_s, rings):
    p = Port(reactor, ring_min_ms=300)  # chip confirms at 256 ms; the driver checks 300
    p.daa.start()
    p.co.ring(callerid=None, cadence=(burst_s, 4.0), count=1)
    reactor.run_for(2)
    assert len(p.kinds(ev.RING_START)) == rings


def test_us_cadence_counts_rings_and_stops_after_the_caller_gives_up(port):
    port.co.ring(callerid=None, count=3)
    port.reactor.run_for(30)
    starts, stops = port.kinds(ev.RING_START), port.kinds(ev.RING_STOP)
    assert [e.data["count"] for e in starts] == [1, 2, 3]
    gaps = np.diff([e.time for e in starts])
    assert gaps == pytest.approx([6.0, 6.0], abs=0.01)
    bursts = port.daa.ring_bursts
    assert [round(end - start, 2) for start, end in bursts] == [2.0, 2.0, 2.0]
    assert len(stops) == 1 and stops[0].data["rings"] == 3
    # no RING_STOP during the 4 s off times; it comes ring_timeout after the last burst
    assert stops[0].time - bursts[-1][1] == pytest.approx(6.0, abs=0.06)
    assert not port.daa.ringing


def test_uk_double_ring_cadence_is_validated_burst_by_burst(reactor):
    p = Port(reactor, plan=UK_PLAN, country="uk")
    p.daa.start()
    p.co.ring(callerid=None, count=4)
    reactor.run_for(12)
    bursts = p.daa.ring_bursts
    assert len(p.kinds(ev.RING_START)) == 4
    starts = [round(s - bursts[0][0], 2) for s, _ in bursts]
    assert starts == [0.0, 0.6, 3.0, 3.6]
    assert len(p.kinds(ev.RING_STOP)) == 1


def test_out_of_band_ring_frequency_is_rejected_by_the_chip(port):
    port.co.ring_hz = 5.0  # far below any ring frequency: the RAS window times out
    port.co.ring(callerid=None, count=2)
    port.reactor.run_for(12)
    assert port.kinds(ev.RING_START) == []


# ---- caller ID window ----

def test_caller_id_burst_sits_between_first_and_second_ring(port):
    port.co.ring(count=2)
    port.reactor.run_for(10)
    first_off, second_on = port.co_times("ring_off")[0], port.co_times("ring_on")[1]
    (cid_start,), (cid_end,) = port.co_times("cid_start"), port.co_times("cid_end")
    assert cid_start - first_off >= 0.5
    assert second_on - cid_end >= 0.2
    assert cid_end - cid_start == pytest.approx(CID_S, abs=0.021)
    loud = port.loud_times()  # reader times lag the CO's frame by at most one period
    assert loud and min(loud) >= cid_start and max(loud) <= cid_end + 0.041
    assert len(port.kinds(ev.RING_START)) == 2  # the burst is not mistaken for ringing


def test_caller_id_too_long_for_the_off_time_is_not_sent(port):
    port.co.cid_audio = lambda cid, std: np.zeros(int(3.5 * 8000), np.int16)
    port.co.ring(count=2)
    port.reactor.run_for(10)
    assert port.co_times("cid_too_long") and not port.co_times("cid_start")


def test_uk_caller_id_comes_before_the_first_ring_after_a_reversal(reactor):
    p = Port(reactor, plan=UK_PLAN, country="uk")
    p.daa.start()
    p.co.ring(count=2)
    reactor.run_for(6)
    t = {w: p.co_times(w)[0] for w in ("reversal", "alert_start", "cid_start", "cid_end", "ring_on")}
    assert t["reversal"] < t["alert_start"] < t["cid_start"] < t["cid_end"] < t["ring_on"]
    reversals = p.kinds(ev.POLARITY_REVERSAL)
    first_ring = p.kinds(ev.RING_START)[0]
    assert reversals[0].time < t["cid_start"] and reversals[0].data["hook"] == "on"
    assert reversals[-1].time < first_ring.time  # polarity back to normal before ringing
    assert p.kinds(ev.DISCONNECT) == []


# ---- seize / release, readouts, answer ----

def test_seize_and_release_read_loop_current_and_line_voltage(port):
    port.daa.seize()
    port.reactor.run_for(0.5)
    st = port.daa.status()
    assert st["hook"] == "off" and port.co.answered
    assert 5 <= st["line_voltage_v"] <= 12 and 20 <= st["loop_current_ma"] <= 30
    port.daa.release()
    port.reactor.run_for(0.5)
    st = port.daa.status()
    assert st["hook"] == "on" and not port.co.answered
    assert st["line_voltage_v"] == pytest.approx(48, abs=1) and st["loop_current_ma"] == 0
    assert port.kinds(ev.DISCONNECT, ev.LINE_IN_USE) == []


def test_answering_stops_the_ring_without_ring_stop(port):
    port.co.ring(callerid=None)
    port.reactor.run_for(7)  # second ring is on
    assert port.daa.ringing
    port.daa.seize()
    port.reactor.run_for(10)
    assert port.co.state == "call" and port.co_times("answered")
    assert len(port.co_times("ring_on")) == 2 and not port.daa.ringing
    assert port.kinds(ev.RING_STOP) == []


def test_seize_mid_ring_at_the_sines_null_still_answers(port):
    """Battery plus the ring's sine passes near 0 V twice a cycle; an answer that samples
    LVS right there must not be taken for a missing line."""
    port.co.ring(callerid=None)
    port.reactor.run_for(7)  # the second ring is on
    assert port.daa.ringing
    emu = port.emu  # step to the instant where battery + ring sine reads 0 V
    target = math.asin(-emu.battery_v * emu.polarity / RING_PEAK_V)
    cycle = 2 * math.pi * emu.ring_freq
    phase = cycle * (port.reactor.now() - emu.ring_since) + 0.7
    port.reactor.run_for(((target - phase) % (2 * math.pi)) / cycle)
    assert abs(R.to_signed(port.daa._read(R.LINE_VOLTAGE)) * R.LVS_V_PER_BIT) < 2.5
    port.daa.seize()
    port.reactor.run_for(1)
    assert port.daa.offhook and port.co.state == "call"


def test_seize_refuses_a_line_without_voltage(port):
    port.co.connect_line(False)
    port.reactor.run_for(0.2)
    with pytest.raises(HardwareError, match=r"fxo1: no line voltage .*PSTN line plugged in"):
        port.daa.seize()
    assert not port.emu.offhook and not port.daa.offhook


# ---- polarity reversal and disconnect signals ----

def test_reversal_on_hook_is_reported_without_disconnect(port):
    port.co.reverse_polarity()
    port.reactor.run_for(0.3)
    (rev,) = port.kinds(ev.POLARITY_REVERSAL)
    assert rev.data == {"polarity": "reverse", "hook": "on"}
    assert port.daa.status()["line_voltage_v"] < -40
    assert port.kinds(ev.DISCONNECT) == []
    assert port.gpio.read(INT)  # the driver cleared POLI: INT released


@pytest.mark.parametrize("signal", ["loop_drop", "reversal"])
def test_disconnect_signals_while_seized(port, signal):
    port.daa.seize()
    port.reactor.run_for(1)
    t0 = port.reactor.now()
    port.co.disconnect(signal)
    port.reactor.run_for(2)
    (disc,) = port.kinds(ev.DISCONNECT)
    assert disc.data == {"signal": signal}
    assert 0 < disc.time - t0 <= (0.3 if signal == "loop_drop" else 0.15)


@pytest.mark.parametrize("signal", ["loop_drop", "reversal", "tone"])
def test_disconnect_signals_are_ignored_unless_enabled(reactor, signal):
    others = [s for s in ("loop_drop", "reversal", "tone") if s != signal]
    p = Port(reactor, disconnect=others)
    p.daa.start()
    p.daa.seize()
    reactor.run_for(1)
    p.co.disconnect(signal)
    reactor.run_for(2)
    assert p.daa.tone_disconnect() is (signal != "tone")  # the DSP's hook
    signals = [e.data["signal"] for e in p.kinds(ev.DISCONNECT)]
    assert signal not in signals


def test_short_loop_current_dip_is_not_a_disconnect(port):
    port.daa.seize()
    port.reactor.run_for(1)
    port.co.disconnect("loop_drop", seconds=0.1)
    port.reactor.run_for(1)
    assert port.kinds(ev.DISCONNECT) == []


def test_reversal_on_an_outgoing_seizure_is_answer_not_hang_up(port):
    port.daa.seize(in_call=False)
    port.reactor.run_for(1)
    port.co.reverse_polarity()  # answer supervision
    port.reactor.run_for(0.5)
    assert len(port.kinds(ev.POLARITY_REVERSAL)) == 1 and port.kinds(ev.DISCONNECT) == []
    port.daa.set_in_call(True)
    port.co.reverse_polarity()  # now the far end hangs up
    port.reactor.run_for(0.5)
    assert [e.data["signal"] for e in port.kinds(ev.DISCONNECT)] == ["reversal"]


def test_tone_disconnect_hook_raises_once_per_seizure(port):
    port.daa.seize()
    port.co.disconnect("tone")
    port.reactor.run_for(1)
    assert port.daa.tone_disconnect() is True
    assert port.daa.tone_disconnect() is False
    assert [e.data for e in port.kinds(ev.DISCONNECT)] == [{"signal": "tone"}]


# ---- line in use ----

def test_parallel_phone_off_hook_is_line_in_use(port):
    port.co.parallel_phone(True)
    port.reactor.run_for(0.5)
    (use,) = port.kinds(ev.LINE_IN_USE)
    st = port.daa.status()
    assert st["line_in_use"] and 3 < st["line_voltage_v"] < 24
    port.co.parallel_phone(False)
    port.reactor.run_for(0.5)
    assert len(port.kinds(ev.LINE_FREE)) == 1 and not port.daa.status()["line_in_use"]


def test_a_line_already_in_use_at_start_is_reported_at_once(reactor):
    """Someone on a PSTN call (e.g. through the power-fail lifeline) while the box boots:
    the off-hook voltage is not learnt as the idle one, LINE_IN_USE comes with start()."""
    p = Port(reactor)
    p.co.parallel_phone(True)
    p.daa.start()
    (use,) = p.kinds(ev.LINE_IN_USE)
    assert use.time == reactor.now() and p.daa.line_in_use
    p.co.parallel_phone(False)
    reactor.run_for(0.5)
    assert [e.kind for e in p.kinds(ev.LINE_IN_USE, ev.LINE_FREE)] == [ev.LINE_IN_USE, ev.LINE_FREE]


def test_unplugged_line_is_not_a_parallel_phone(port):
    port.co.connect_line(False)
    port.reactor.run_for(1)
    assert port.kinds(ev.LINE_IN_USE, ev.LINE_FREE, ev.POLARITY_REVERSAL) == []
    assert port.daa.status()["line_voltage_v"] == 0
