"""The virtual analog phone: DTMF as real audio on the PCM link, pulse timing, bell, earpiece.

The phone sits on a SLIC twin (started by the real Si3215 driver where hook state
matters); the DTMF checks look at the audio with an FFT, not at what the phone meant.
"""

import numpy as np
import pytest
from driver_settings import driver_settings

from drivers.bus.gpio import SimGpio
from drivers.bus.pcm import FRAME, LINE_RATE, SimPcmLink
from drivers.bus.spi import SimSpiDevice
from drivers.chips.si3215 import Si3215
from drivers.sim.highway import SimHighway
from drivers.sim.phone import VirtualPhone, dbm0_amplitude, dtmf_freqs
from drivers.sim.si3215_sim import Si3215Emulator

KEYS = {"1": (697, 1209), "5": (770, 1336), "9": (852, 1477), "#": (941, 1477),
        "0": (941, 1336), "D": (941, 1633)}


def clocked(emu, reactor):
    """The emulator on a running PCM highway: the chip needs PCLK to come up."""
    highway = SimHighway(reactor)
    emu.attach_highway(highway)
    highway.start()
    return emu


@pytest.fixture
def rig(reactor):
    gpio = SimGpio()
    emu = clocked(Si3215Emulator(reactor, gpio, 17, 27), reactor)
    events = []
    drv = Si3215("fxs1", SimSpiDevice(0, 0, emu), gpio, 17, 27, reactor, driver_settings("fxs"),
                 events.append)
    drv.start()
    link = SimPcmLink("fxs1")
    phone = VirtualPhone(reactor, emu, link.device)
    return reactor, emu, drv, link, phone, events


def capture(reactor, port, seconds):
    """Read the gateway end every 20 ms for `seconds` (as the media loop would)."""
    frames = []

    def tick(t):
        while (f := port.read()) is not None:
            frames.append(f)
        return t + FRAME / LINE_RATE

    timer = reactor.register_timer(tick, reactor.now())
    reactor.run_for(seconds)
    reactor.unregister_timer(timer)
    return frames


def two_peaks(samples):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / LINE_RATE)
    top = []
    for i in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[i] - f) > 40 for f in top):
            top.append(freqs[i])
        if len(top) == 2:
            return sorted(top)
    return top


def test_dtmf_digits_are_tone_pairs_on_the_pcm_link(rig):
    reactor, _emu, _drv, link, phone, _events = rig
    phone.off_hook()
    reactor.run_for(0.3)
    capture(reactor, link.gateway, 0.1)  # drop the silence before dialling
    keys = "159#0D"
    phone.dial_dtmf(keys)
    frames = capture(reactor, link.gateway, 0.2 * len(keys) + 0.2)
    assert all(f.dtype == np.int16 and f.shape == (FRAME,) for f in frames)
    audio = np.concatenate(frames).astype(float)
    loud = [np.max(np.abs(f)) > 1000 for f in frames]
    start = loud.index(True) * FRAME  # tones start on a frame boundary
    for n, key in enumerate(keys):
        seg = audio[start + n * 1600: start + n * 1600 + 800]  # 100 ms on
        gap = audio[start + n * 1600 + 800: start + (n + 1) * 1600]  # 100 ms off
        low, high = two_peaks(seg)
        assert low == pytest.approx(KEYS[key][0], abs=10), key
        assert high == pytest.approx(KEYS[key][1], abs=10), key
        assert np.max(np.abs(gap)) == 0
        rms = np.sqrt(np.mean(seg ** 2))
        expect = np.sqrt((dbm0_amplitude(-9) ** 2 + dbm0_amplitude(-7) ** 2) / 2)
        assert rms == pytest.approx(expect, rel=0.05)


def test_on_hook_phone_sends_nothing(rig):
    reactor, _emu, _drv, link, phone, _events = rig
    phone.dial_dtmf("1")
    assert capture(reactor, link.gateway, 0.5) == []
    phone.off_hook()
    frames = capture(reactor, link.gateway, 0.3)
    assert frames and np.max(np.abs(np.concatenate(frames))) > 1000  # the queued digit


def test_heard_collects_what_the_line_sends(rig):
    reactor, _emu, _drv, link, phone, _events = rig
    tone = (1000 * np.sin(2 * np.pi * 400 * np.arange(FRAME * 5) / LINE_RATE)).astype(np.int16)
    for i in range(5):
        link.gateway.write(tone[i * FRAME:(i + 1) * FRAME])
    reactor.run_for(0.1)
    assert np.array_equal(phone.heard, tone)


def test_pulse_dial_timing_at_the_hook_switch(reactor):
    gpio = SimGpio()
    emu = clocked(Si3215Emulator(reactor, gpio, 17, 27), reactor)
    phone = VirtualPhone(reactor, emu, SimPcmLink("x").device)
    seen = []
    real = emu.set_loop
    emu.set_loop = lambda closed, bounce=(): (seen.append((reactor.now(), closed)), real(closed))
    phone.dial_pulse("3", pps=20, break_pct=66)
    reactor.run_for(1)
    opens = [t for t, c in seen if not c]
    closes = [t for t, c in seen if c]
    assert len(opens) == len(closes) == 3
    assert [round(c - o, 4) for o, c in zip(opens, closes, strict=True)] == [0.033] * 3
    assert [round(opens[i + 1] - closes[i], 4) for i in range(2)] == [0.017] * 2


def test_hanging_up_cancels_scheduled_dialling(reactor):
    gpio = SimGpio()
    emu = clocked(Si3215Emulator(reactor, gpio, 17, 27), reactor)
    phone = VirtualPhone(reactor, emu, SimPcmLink("x").device)
    phone.off_hook()
    phone.dial_pulse("9")
    reactor.run_for(0.2)
    phone.on_hook()
    reactor.run_for(2)
    assert emu.loop_closed is False


def test_bell_follows_ring_voltage(rig):
    reactor, _emu, drv, _link, phone, _events = rig
    assert not phone.is_ringing
    drv.ring((1.0, 1.0))
    reactor.run_for(0.5)
    assert phone.is_ringing
    reactor.run_for(1.0)
    assert not phone.is_ringing
    reactor.run_for(2.0)
    drv.stop_ring()
    assert [round(b - a, 3) for a, b in phone.ring_bursts] == [1.0, 1.0]


def test_no_ring_without_ring_amplitude(reactor):
    gpio = SimGpio()
    emu = clocked(Si3215Emulator(reactor, gpio, 17, 27), reactor)
    drv = Si3215("fxs1", SimSpiDevice(0, 0, emu), gpio, 17, 27, reactor,
                 driver_settings("fxs", ring_vpk=0), print)
    phone = VirtualPhone(reactor, emu, SimPcmLink("x").device)
    drv.start()
    drv.ring((1.0, 1.0))
    reactor.run_for(3)
    assert phone.ring_bursts == [] and not phone.is_ringing


def test_unknown_dtmf_key_is_refused():
    assert dtmf_freqs("*") == (941.0, 1209.0)
    with pytest.raises(ValueError, match="not a DTMF key"):
        dtmf_freqs("x")
