"""Call-progress tone detector (cext.cpt): every country's tones found from the
generator's output through noise and G.711, the right name and timing; nothing from speech
(espeak-ng, made at test time), music-like or white noise; another country's cadence not
taken for busy; the kernel reports exactly what its reference twin does."""

import subprocess
import wave

import numpy as np
import pytest

from cext import g711, toneplans
from cext.cpt import CallProgressDetector
from cext.ref import cpt as ref
from cext.resample import Resampler
from cext.tones import tone_samples
from firmware import wavio
from lab.linemodel import add_noise, speech_like, to_int16, white_noise

SUPERVISION = ["dial", "busy", "reorder", "congestion"]


def _expected_name(country, name):
    """Tones a plan defines identically are reported under the first name."""
    tones = toneplans.plan(country).tones
    return next(n for n in toneplans.TONE_NAMES if tones[n] == tones[name])


def _run(det, x, frame=160):
    events = []
    for i in range(0, x.size, frame):
        events += det.process(x[i : i + frame])
    return [tuple(e) for e in events]


def _tone_with_noise(country, name, seconds, snr_db, seed=0):
    t = toneplans.plan(country).tones[name]
    x = np.concatenate([np.zeros(400), tone_samples(country, name, seconds), np.zeros(16000)])
    total_dbm0 = t.level_dbm0 + 10 * np.log10(len(t.freqs))
    return to_int16(add_noise(x, total_dbm0 - snr_db, np.random.default_rng(seed)))


def _seconds(t):
    return 8.0 if sum(t.cadence) <= 4 else 2.2 * sum(t.cadence)


@pytest.mark.parametrize("law", ["linear", "ulaw", "alaw"])
@pytest.mark.parametrize("country", toneplans.COUNTRIES)
@pytest.mark.parametrize("name", SUPERVISION)
def test_cpt_detects_each_countrys_tone_through_noise_and_g711(country, name, law):
    t = toneplans.plan(country).tones[name]
    secs = _seconds(t)
    x = _tone_with_noise(country, name, secs, snr_db=20)
    if law != "linear":
        x = getattr(g711, f"{law}_decode")(getattr(g711, f"{law}_encode")(x))
    events = _run(CallProgressDetector(country), x)
    assert events[0][0] == _expected_name(country, name), events
    # confirmed within two cadence cycles (or the continuous-tone time) plus slack
    limit = 2 * sum(t.cadence) if t.cadence and sum(t.cadence) <= 2 else max(t.cadence or (0,)) * 1.2 + 2
    assert events[0][1] <= 400 + (limit + 0.3) * 8000
    # and released once the tone stops, with no other tone in between
    assert [e[0] for e in events] == [events[0][0], None], events
    assert events[1][1] >= 400 + secs * 8000


@pytest.mark.parametrize("country", toneplans.COUNTRIES)
def test_cpt_ringback(country):
    t = toneplans.plan(country).tones["ringback"]
    x = _tone_with_noise(country, "ringback", 2.2 * sum(t.cadence), snr_db=20, seed=3)
    events = _run(CallProgressDetector(country), x)
    assert events and events[0][0] == "ringback", events


@pytest.mark.parametrize("country", toneplans.COUNTRIES)
def test_cpt_kernel_reports_what_the_reference_twin_does(country):
    rng = np.random.default_rng(7)
    x = np.concatenate([
        to_int16(speech_like(8000 * 2, -20, rng)),
        _tone_with_noise(country, "busy", 5, 15),
        _tone_with_noise(country, "dial", 3, 25),
    ])
    got = _run(CallProgressDetector(country), x, frame=123)
    assert got == _run(ref.CallProgressDetector(country), x, frame=160)
    assert "busy" in [e[0] for e in got]


@pytest.mark.parametrize(
    "heard,plan", [("de", "au"), ("au", "de"), ("uk", "in"), ("in", "uk"), ("us", "fr"), ("us", "uk")]
)
def test_cpt_another_countrys_busy_is_not_busy(heard, plan):
    # (France's 440 Hz 0.5/0.5 and Germany's 425 Hz 0.48/0.48 are the same busy tone to
    # any practical detector, and both countries also use ETSI's 425 Hz 0.5/0.5.)
    x = _tone_with_noise(heard, "busy", 8, 30)
    names = [e[0] for e in _run(CallProgressDetector(plan), x)]
    assert "busy" not in names, names


@pytest.fixture(scope="module")
def espeak_speech(tmp_path_factory):
    """~20 s of espeak-ng speech in several voices and speeds, resampled to 8 kHz."""
    text = (
        "Hello, thank you for calling the branch office. Your call is important to us. "
        "Please hold the line, an agent will be with you shortly. Four, five, six, nine."
    )
    parts = []
    for voice, speed in [("en-us", 140), ("en", 180), ("de", 160), ("fr", 150), ("en+f3", 170)]:
        wav = tmp_path_factory.mktemp("speech") / f"{voice}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
        with wave.open(str(wav)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        parts.append(Resampler(rate, wavio.RATE).process(pcm))
    return np.concatenate(parts)


@pytest.mark.parametrize("country", toneplans.COUNTRIES)
def test_cpt_no_tone_from_speech(country, espeak_speech):
    det = CallProgressDetector(country)
    assert _run(det, espeak_speech) == []
    assert det.state in ("speech", "silence")


def _music_like(seconds, rng):
    """Notes of a melody with harmonics, including notes near 400-480 Hz, ~0.25-0.5 s each."""
    out = []
    for _ in range(int(seconds * 3)):
        f0 = 220 * 2 ** (rng.integers(0, 24) / 12)
        n = int(8000 * rng.choice([0.25, 0.375, 0.5]))
        t = np.arange(n)
        note = sum(np.sin(2 * np.pi * k * f0 * t / 8000) / k for k in (1, 2, 3))
        out.append(3000 * note * np.hanning(n) ** 0.3)
    return to_int16(np.concatenate(out))


@pytest.mark.parametrize("country", toneplans.COUNTRIES)
def test_cpt_no_tone_from_noise_music_or_synthetic_speech(country):
    rng = np.random.default_rng(11)
    for x in (
        to_int16(white_noise(8000 * 10, -20, rng)),
        to_int16(speech_like(8000 * 10, -15, rng, pitch_hz=100)),
        _music_like(10, rng),
    ):
        assert _run(CallProgressDetector(country), x) == []


def test_cpt_busy_after_the_far_end_hangs_up_and_state():
    # FXO disconnect supervision: conversation, then the CO's busy tone
    rng = np.random.default_rng(5)
    det = CallProgressDetector("us")
    assert det.state == "silence"
    talk = to_int16(speech_like(8000 * 3, -18, rng))
    states = []
    for i in range(0, talk.size, 160):
        assert det.process(talk[i : i + 160]) == []
        states.append(det.state)
    assert states.count("speech") > len(states) // 2
    busy = _tone_with_noise("us", "busy", 4, 20)
    events = _run(det, busy)
    assert events[0][0] == "busy" and events[0][1] < talk.size + 400 + 2.5 * 8000
    det.reset()
    assert det.state == "silence" and _run(det, np.zeros(800, dtype=np.int16)) == []
