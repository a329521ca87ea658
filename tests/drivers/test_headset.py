"""The headset driver on the virtual headset: 8 kHz frames both ways, mute, volume, plug.

Audio goes through the real resampler (cext.resample) between the headset's native rate
and the line's 8 kHz; the tests check tone frequency and level survive the trip, and
that a headset pulled out mid-call is noticed both by the poll and by the PCM failing.
"""

import numpy as np
import pytest

from drivers.bus.pcm import FRAME
from drivers.chips.headset import POLL_S, VOLUME_MAX_DB, Headset, alsa_card_present
from drivers.sim.headset_sim import SimHeadset
from foundation.errors import HardwareError
from foundation.events import HEADSET_PLUGGED, HEADSET_UNPLUGGED


def _tone(freq, rate, seconds, amp=8000.0):
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _peak_hz(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


def _rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(np.asarray(x, dtype=float) ** 2)))


def _rig(reactor, rate=48000):
    sim = SimHeadset(reactor, rate=rate)
    events = []
    hs = Headset("headset", reactor, {"rate": rate}, sim.open_pcm, sim.present, events.append)
    hs.start()
    return sim, hs, events


def _capture(reactor, hs, seconds):
    """Read the headset every 20 ms like the media path will, for `seconds`."""
    got, end = [], reactor.now() + seconds

    def tick(t):
        while (frame := hs.read()) is not None:
            got.append(frame)
        return t + FRAME / 8000 if t < end else float("inf")

    reactor.register_timer(tick, reactor.now())
    reactor.run_for(seconds)
    return np.concatenate(got) if got else np.zeros(0, np.int16)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_microphone_reaches_the_line_at_8k_with_tone_and_level(reactor, rate):
    sim, hs, _ = _rig(reactor, rate)
    tone = _tone(1000, rate, 0.6)
    sim.speak(tone)
    line = _capture(reactor, hs, 0.7)
    assert 0.55 * 8000 <= len(line) <= 0.62 * 8000  # every 20 ms frame arrived as 160 samples
    steady = line[400:4000]  # past the filter's delay, before the tone ends
    assert abs(_peak_hz(steady, 8000) - 1000) < 10
    assert abs(_rms_db(steady) - _rms_db(tone)) < 0.5


def test_line_audio_is_played_at_the_native_rate(reactor):
    sim, hs, _ = _rig(reactor, 48000)
    tone = _tone(700, 8000, 0.5)
    frames = iter(tone.reshape(-1, FRAME))

    def play(t):
        frame = next(frames, None)
        if frame is None:
            return float("inf")
        hs.write(frame)
        return t + 0.02

    reactor.register_timer(play, reactor.now())
    reactor.run_for(0.6)
    heard = sim.heard
    assert abs(len(heard) - 6 * len(tone)) <= 2 * hs.period  # whole periods, 6x the samples
    steady = heard[4800:21600]
    assert abs(_peak_hz(steady, 48000) - 700) < 10
    assert abs(_rms_db(steady) - _rms_db(tone)) < 0.5


def test_volume_scales_playback_and_is_clamped(reactor):
    sim, hs, _ = _rig(reactor, 16000)
    hs.volume_db = 100
    assert hs.volume_db == VOLUME_MAX_DB
    hs.volume_db = -6.0
    for frame in _tone(500, 8000, 0.4).reshape(-1, FRAME):
        hs.write(frame)
        reactor.run_for(0.02)
    reactor.run_for(0.1)
    steady = sim.heard[1600:5600]
    assert abs(_rms_db(steady) - (_rms_db(_tone(500, 8000, 0.4)) - 6.0)) < 0.5


def test_mute_sends_silence_but_keeps_the_stream_flowing(reactor):
    sim, hs, _ = _rig(reactor)
    hs.mute(True)
    sim.speak(_tone(1000, 48000, 0.3))
    line = _capture(reactor, hs, 0.3)
    assert len(line) >= 0.25 * 8000 and not line.any()
    hs.mute(False)
    sim.speak(_tone(1000, 48000, 0.3))
    assert _capture(reactor, hs, 0.3).any()


def test_unplug_and_replug_while_running_raise_events(reactor):
    sim, hs, events = _rig(reactor)
    assert hs.present and hs.status()["state"] == "ok"
    sim.unplug()
    reactor.run_for(POLL_S + 0.01)
    assert [e.kind for e in events] == [HEADSET_UNPLUGGED]
    assert not hs.present and hs.status()["state"] == "absent" and hs.read() is None
    hs.write(np.zeros(FRAME, np.int16))  # dropped, not an error
    sim.plug()
    reactor.run_for(POLL_S)
    assert [e.kind for e in events] == [HEADSET_UNPLUGGED, HEADSET_PLUGGED]
    assert hs.present and events[1].port == "headset"


def test_a_pcm_error_mid_stream_counts_as_unplugged_before_the_poll(reactor):
    sim, hs, events = _rig(reactor)
    sim.unplug()
    assert hs.read() is None  # the PCM fails, as ALSA does when a USB card vanishes
    assert [e.kind for e in events] == [HEADSET_UNPLUGGED]
    assert "No such device" in events[0].data["reason"]
    reactor.run_for(POLL_S + 0.01)
    assert len(events) == 1  # the poll does not announce it twice


def test_headset_absent_at_start_is_a_state_not_a_failure(reactor):
    sim = SimHeadset(reactor)
    sim.unplug()
    events = []
    hs = Headset("headset", reactor, {"rate": 48000}, sim.open_pcm, sim.present, events.append)
    hs.start()
    assert not hs.present and not hs.failed and events == []
    sim.plug()
    reactor.run_for(POLL_S)
    assert [e.kind for e in events] == [HEADSET_PLUGGED]


CARDS = """\
 0 [PCH            ]: HDA-Intel - HDA Intel PCH
                      HDA Intel PCH at 0xf7f10000 irq 33
 1 [Headset        ]: USB-Audio - Jabra EVOLVE 20
                      GN Netcom A/S Jabra EVOLVE 20 at usb-0000:00:14.0-2, full speed
"""


def test_alsa_card_presence_from_proc_asound_cards(tmp_path):
    cards = tmp_path / "cards"
    cards.write_text(CARDS)
    assert alsa_card_present("default", str(cards))
    assert alsa_card_present("plughw:CARD=Headset,DEV=0", str(cards))
    assert alsa_card_present("hw:1,0", str(cards))
    assert not alsa_card_present("hw:2,0", str(cards))
    assert not alsa_card_present("hw:Jabra", str(cards))
    cards.write_text("--- no soundcards ---\n")
    assert not alsa_card_present("default", str(cards))
    assert not alsa_card_present("default", str(tmp_path / "missing"))


@pytest.mark.parametrize("rate", [16000, 48000])
def test_wideband_line_rate_carries_5khz_both_ways(reactor, rate):
    """At a 16 kHz line rate (wideband calls) frames are 320 samples and a 5 kHz tone,
    beyond any 8 kHz path, crosses in both directions."""
    sim, hs, _ = _rig(reactor, rate)
    hs.set_line_rate(16000)
    assert (hs.line_rate, hs.frame) == (16000, 320)
    sim.speak(_tone(5000, rate, 0.6))
    got, sent = [], iter(_tone(5000, 16000, 0.6).reshape(-1, 320))

    def tick(t):
        while (frame := hs.read()) is not None:
            got.append(frame)
        frame = next(sent, None)
        if frame is not None:
            hs.write(frame)
        return t + 0.02

    reactor.register_timer(tick, reactor.now())
    reactor.run_for(0.7)
    mic = np.concatenate(got)
    assert {len(f) for f in got} == {320}
    assert abs(_peak_hz(mic[1600:8000], 16000) - 5000) < 20
    assert abs(_peak_hz(sim.heard[rate // 10:rate // 2], rate) - 5000) < 20
    hs.set_line_rate(8000)
    assert hs.frame == FRAME
    with pytest.raises(HardwareError, match="line rate 12000 Hz"):
        hs.set_line_rate(12000)
