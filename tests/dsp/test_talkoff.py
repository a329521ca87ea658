"""DTMF talk-off: no digit from speech or music. The speech corpus is made at test time
with Debian's espeak-ng (several languages, voices, speeds and pitches; about 4 minutes),
resampled to 8 kHz by band-limited FFT resampling, played at three levels, clean and
through mu-law/A-law. Music-like signals (harmonic chords, melodies, sweeps) are
synthesised here. No audio files are committed. Without espeak-ng the test FAILS and
names the package: CI installs it (scripts/debian-test-packages.txt).
"""

import functools
import shutil

import numpy as np
import pytest

from cext.dtmf import DtmfDetector
from lab.linemodel import dbm0_to_rms, g711_munge, to_int16
from lab.talkoff import speak

RATE = 8000
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please hold the line, your call is important to us.",
    "One two three four five six seven eight nine zero star pound.",
    "She sells sea shells by the sea shore, eleven twelve thirteen.",
    "Good morning, this is the branch office, how may I help you today?",
    "Would you like to leave a message after the tone? Press one for sales.",
)
# (voice, words per minute, pitch 0-99)
VOICES = (
    ("en", 160, 50), ("en-us", 200, 70), ("en+f3", 140, 60), ("de", 170, 40),
    ("fr", 180, 55), ("es", 150, 65), ("en+m3", 220, 30), ("it", 175, 80),
    ("en-gb", 120, 45), ("pt", 190, 35),
)


@functools.cache
def corpus():
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng not found: install the Debian package 'espeak-ng' "
                    "(scripts/debian-test-packages.txt) to make the talk-off corpus")
    return tuple(speak(v, s, p, text) for v, s, p in VOICES for text in SENTENCES)


def at_level(x, dbm0):
    """Scale to an active-speech level (RMS over the samples above -40 dB of peak)."""
    active = np.abs(x) > np.max(np.abs(x)) * 0.01
    rms = np.sqrt(np.mean(x[active] ** 2))
    return x * dbm0_to_rms(dbm0) / rms


def hits(x):
    det = DtmfDetector()
    return det.process(to_int16(x)) + det.flush()


def test_talkoff_corpus_is_long_enough():
    assert sum(x.size for x in corpus()) / RATE >= 150


@pytest.mark.parametrize("dbm0", [-5, -15, -25])
@pytest.mark.parametrize("law", [None, "ulaw", "alaw"])
def test_talkoff_speech(dbm0, law):
    found = []
    for x in corpus():
        y = to_int16(at_level(x, dbm0))
        if law:
            y = g711_munge(y, law)
        found += hits(y)
    assert found == []


def note(freq, seconds, harmonics=(1.0, 0.5, 0.33, 0.25), vibrato=0.0):
    t = np.arange(int(seconds * RATE)) / RATE
    ph = 2 * np.pi * freq * t + vibrato * np.sin(2 * np.pi * 5.5 * t)
    env = np.minimum(1, t / 0.02) * np.exp(-t * 1.5)
    return env * sum(a * np.sin((k + 1) * ph) for k, a in enumerate(harmonics))


def music(rng):
    """Chords and melodies of harmonic-rich notes on the equal-tempered scale from
    220 to 1760 Hz, with and without vibrato; about 40 s."""
    scale = 220.0 * 2 ** (np.arange(37) / 12)
    parts = []
    for _ in range(40):
        chord = rng.choice(scale, size=int(rng.integers(2, 5)), replace=False)
        parts.append(sum(note(f, 0.5, vibrato=rng.uniform(0, 0.3)) for f in chord))
        melody = [note(f, 0.125, vibrato=rng.uniform(0, 0.3)) for f in rng.choice(scale, 4)]
        parts.append(np.concatenate(melody))
    return np.concatenate(parts)


def sweeps():
    """Single-tone and harmonic log sweeps across the DTMF band, slow and fast."""
    out = []
    for seconds in (0.5, 2.0, 8.0):
        t = np.arange(int(seconds * RATE)) / RATE
        f0, f1 = 300.0, 3000.0
        ph = 2 * np.pi * f0 * seconds / np.log(f1 / f0) * ((f1 / f0) ** (t / seconds) - 1)
        out += [np.sin(ph), np.sin(ph) + 0.5 * np.sin(2 * ph) + 0.3 * np.sin(3 * ph)]
    return np.concatenate(out)


@pytest.mark.parametrize("dbm0", [-6, -20])
def test_talkoff_music_and_sweeps(dbm0):
    rng = np.random.default_rng(2024)
    for sig in (music(rng), sweeps()):
        assert hits(at_level(sig, dbm0)) == []


def test_talkoff_control_digits_inside_speech_are_found():
    """Control: the same corpus with real digits dropped into pauses is not silent, so
    the zero counts above are not a deaf detector."""
    from cext.dtmf import dtmf_samples

    x = np.concatenate([at_level(s, -15) for s in corpus()[:4]])
    x = np.concatenate([x, dtmf_samples("4", 60, 60, -12), x, dtmf_samples("#", 60, 60, -12)])
    assert [d for d, _, _ in hits(x)] == ["4", "#"]
