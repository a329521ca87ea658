"""The virtual central office: tones, ring script, answer, disconnect styles, line audio.

The CO is driven as call control would (through the real Si3050 driver on the
emulator); what it puts on the line is checked at the emulator's line side and at the
gateway's PCM end, in fake time.
"""

import numpy as np
import pytest
from driver_settings import driver_settings

from cext import toneplans
from drivers.bus.gpio import SimGpio
from drivers.bus.pcm import TdmBus
from drivers.bus.spi import SimSpiDevice
from drivers.chips.si3050 import Si3050
from drivers.sim.central_office import VirtualCO, tone_samples
from drivers.sim.highway import SimHighway, SimPcmStream
from drivers.sim.si3050_sim import Si3050Emulator

US = toneplans.plan("us")


def peaks(samples, n=2):
    """The n strongest frequencies in Hz (up to one second of 8 kHz audio)."""
    samples = samples[:8000].astype(float)
    spectrum = np.abs(np.fft.rfft(samples))
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    return sorted(int(round(freqs[i])) for i in np.argsort(spectrum)[-n:])


def rms_dbm0(samples):
    rms = np.sqrt(np.mean(samples.astype(float) ** 2))
    return 20 * np.log10(rms / (22800 / np.sqrt(2)))


def quiet_cid(callerid, standard):
    return np.zeros(800, np.int16)


class Line:
    """One FXO port and its CO on the PCM highway (timeslot 2, as on the default board);
    cid_audio=None uses the real modem (cext.callerid)."""

    def __init__(self, reactor, country="us", cid_audio=quiet_cid):
        self.reactor = reactor
        gpio = SimGpio()
        self.emu = Si3050Emulator(reactor, gpio, 22, 23)
        highway = SimHighway(reactor)
        self.emu.attach_highway(highway)
        highway.attach(self.emu)
        bus = TdmBus(SimPcmStream(highway), "ulaw", reactor).start()  # PCLK before the chip
        self.port = bus.port(2, "fxo1")
        self.daa = Si3050("fxo1", SimSpiDevice(1, 0, self.emu), gpio, 22, 23, reactor,
                          driver_settings("fxo", country=country, ring_min_ms=200, timeslot=2),
                          lambda e: None)
        self.co = VirtualCO(reactor, self.emu, self.emu.analog.device, country=country,
                            cid_audio=cid_audio)
        self.daa.start()

    def received(self, seconds):
        """Run for `seconds`, collecting what the gateway's PCM end receives."""
        out = []

        def drain(eventtime):
            while (frame := self.port.read()) is not None:
                out.append(frame)
            return eventtime + 0.02

        timer = self.reactor.register_timer(drain, self.reactor.now())
        self.reactor.run_for(seconds)
        self.reactor.unregister_timer(timer)
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    def times(self, what):
        return [t for w, t in self.co.events if w == what]


@pytest.fixture
def line(reactor):
    return Line(reactor)


def test_dial_tone_frequencies_and_level():
    dial = tone_samples(US.tones["dial"], 0, 8000)
    assert peaks(dial) == [350, 440]
    assert rms_dbm0(dial) == pytest.approx(-13 + 10 * np.log10(2), abs=0.2)  # two components


def test_busy_tone_follows_its_cadence():
    busy = tone_samples(US.tones["busy"], 0, 8000)
    on, off = busy[:4000], busy[4000:]
    assert np.abs(off).max() == 0 and peaks(on) == [480, 620]
    assert rms_dbm0(on) == pytest.approx(-24 + 10 * np.log10(2), abs=0.2)


def test_tone_phase_continues_across_frames():
    whole = tone_samples(US.tones["dial"], 0, 480)
    pieces = np.concatenate([tone_samples(US.tones["dial"], i, 160) for i in (0, 160, 320)])
    assert np.array_equal(whole, pieces)


def test_ring_script_follows_cadence_and_count(line):
    line.co.ring(callerid=None, cadence=(1.0, 3.0), count=2)
    line.reactor.run_for(0.5)
    assert line.emu.ring_freq == 20.0 and line.co.state == "ringing"
    line.reactor.run_for(10)
    on, off = line.times("ring_on"), line.times("ring_off")
    assert np.diff(on) == pytest.approx([4.0]) and np.subtract(off, on) == pytest.approx([1.0, 1.0])
    (gave_up,) = line.times("caller_gave_up")
    assert gave_up - off[-1] == pytest.approx(3.0)
    assert line.emu.ring_freq == 0 and line.co.state == "idle"


def test_seizing_while_ringing_answers_and_trips_the_ring(line):
    line.co.ring(callerid=None)
    line.reactor.run_for(1)
    line.daa.seize()
    assert line.co.answered and line.co.state == "call" and line.emu.ring_freq == 0
    line.co.play(np.full(800, 5000, np.int16))
    heard = line.received(0.5)
    # far-end audio reaches the gateway, through the chip's mu-law (G.711 steps: ~3 %)
    assert np.count_nonzero(np.abs(heard.astype(int) - 5000) < 200) == 800


def test_gateway_audio_reaches_the_co_only_while_seized(line):
    line.port.write(np.full(160, 1234, np.int16))
    line.reactor.run_for(0.1)
    assert len(line.co.heard) == 0
    line.daa.seize()
    line.port.write(np.full(160, 1234, np.int16))
    line.reactor.run_for(0.1)
    assert np.count_nonzero(np.abs(np.asarray(line.co.heard, int) - 1234) < 50) == 160


def test_outgoing_seizure_gets_dial_tone(line):
    line.daa.seize()
    audio = line.received(1.1)
    assert line.co.state == "dialtone" and peaks(audio[-8000:]) == [350, 440]


def test_loop_drop_removes_battery_for_its_duration(line):
    line.daa.seize()
    line.co.disconnect("loop_drop", seconds=0.5)
    line.reactor.run_for(0.25)
    assert line.emu.loop_current() == 0 and line.emu.line_voltage() == 0
    line.reactor.run_for(0.5)
    assert line.emu.loop_current() > 20
    assert line.times("loop_restored")[0] - line.times("loop_drop")[0] == pytest.approx(0.5)


def test_disconnect_then_reorder_while_still_off_hook(line):
    line.daa.seize()
    line.co.disconnect("reversal")
    assert line.emu.polarity == -1
    audio = line.received(7)
    assert line.co.state == "reorder" and peaks(audio[-8000:]) == [480, 620]


def test_tone_disconnect_plays_busy(line):
    line.daa.seize()
    line.co.disconnect("tone")
    audio = line.received(2)
    assert line.co.state == "busy"
    tail = audio[-8000:]
    assert peaks(tail) == [480, 620] and np.count_nonzero(tail) == pytest.approx(4000, abs=200)


def test_unknown_disconnect_style_is_refused(line):
    with pytest.raises(ValueError, match="loop_drop, reversal or tone"):
        line.co.disconnect("smoke")


def test_parallel_phone_answering_elsewhere_stops_the_ring(line):
    line.co.ring(callerid=None)
    line.reactor.run_for(1)
    line.co.parallel_phone(True)
    assert line.times("answered_elsewhere") and line.emu.ring_freq == 0
    assert abs(line.emu.line_voltage()) < 24
    line.co.parallel_phone(False)
    assert line.co.state == "idle" and line.emu.line_voltage() == pytest.approx(48)


def test_no_modem_means_ringing_without_caller_id(reactor):
    def missing(cid, std):
        raise ImportError("cext.callerid")

    line = Line(reactor, cid_audio=missing)
    line.co.ring(count=2)
    reactor.run_for(10)
    assert line.times("cid_unavailable") and not line.times("cid_start")
    assert len(line.times("ring_on")) == 2


def test_caller_id_audio_needs_the_on_hook_monitor_path(line):
    line.daa.stop()  # line side powered down: nothing passes to the PCM bus
    line.co.cid_audio = lambda cid, std: np.full(4000, 9000, np.int16)
    line.co.ring(count=2)
    audio = line.received(8)
    assert line.times("cid_start") and np.abs(audio).max() == 0


@pytest.mark.parametrize("country", ["us", "uk", "de"])
def test_real_caller_id_modem_decodes_at_the_gateway(reactor, country):
    """The default caller-ID audio (cext.callerid) survives the line to the gateway's PCM."""
    from cext.callerid import CallerIdDecoder

    line = Line(reactor, country=country, cid_audio=None)
    caller = {"number": "2015550123", "name": "ACME", "datetime": "11221030", "reason": None}
    line.co.ring(callerid=caller, count=2)
    audio = line.received(8)
    decoder = CallerIdDecoder(toneplans.plan(country).callerid)
    messages = decoder.process(audio) + decoder.flush()
    assert [(m["number"], m["name"]) for m in messages] == [("2015550123", "ACME")]
    assert line.times("cid_start")
