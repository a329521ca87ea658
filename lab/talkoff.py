"""Talk-off material for the DTMF detector's tests and benchmark: synthetic sustained voiced
vowels whose harmonics fall on a DTMF row and column at once, and espeak-ng speech (cached
in the temp directory). Vowels: a harmonic source shaped by three formants, at fundamentals
that put partials within 2 % of a row and a column, plus 'tuned' worst cases within the
spread of spoken vowels; optional jitter and shimmer. Levels in dBm0; 8 kHz.
Sources: Peterson & Barney 1952 (formant averages and spread).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from lab.linemodel import dbm0_to_rms

RATE = 8000
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = "123A456B789C*0#D"
FORMANTS = {  # Peterson & Barney (1952), adult male averages, Hz
    "a": (730.0, 1090.0, 2440.0),
    "i": (270.0, 2290.0, 3010.0),
    "u": (300.0, 870.0, 2240.0),
    "e": (530.0, 1840.0, 2480.0),
    "o": (570.0, 840.0, 2410.0),
}
BANDWIDTHS = (60.0, 90.0, 150.0)


def pair_fundamentals(lo=100.0, hi=240.0, tol=0.01):
    """f0 values in [lo, hi] with a partial within tol of a row and another within tol of
    a column frequency: {f0: digit}, one f0 per (digit, row harmonic), sorted."""
    out = {}
    for i, key in enumerate(KEYS):
        r, c = ROWS[i // 4], COLS[i % 4]
        for m in range(int(np.ceil(r / hi)), int(r / lo) + 1):
            f0 = r / m
            n = round(c / f0)
            if lo <= f0 <= hi and n > m and abs(n * f0 - c) <= tol * c:
                out[round(f0, 2)] = key
    return dict(sorted(out.items()))


def _envelope(f, formants):
    """Magnitude of a cascade of two-pole resonances (unity at DC) at frequencies f."""
    h = np.ones_like(f)
    for fc, bw in zip(formants, BANDWIDTHS, strict=True):
        h *= (fc**2 + (bw / 2) ** 2) / np.sqrt((fc**2 - f**2 + (bw / 2) ** 2) ** 2 + (bw * f) ** 2)
    return h


def tuned_formants(f0, key):
    """Formants of a vowel 'tuned' to digit `key` at this f0: F1 on the partial nearest the
    row frequency, F2 on the one nearest the column, F3 at 2500 Hz (between /a/-/ae/
    and /er/-/uh/ in Peterson & Barney's table: F1 640-860 Hz, F2 1190-1720 Hz for men
    and women, so such vowels are spoken): the worst case for talk-off."""
    i = KEYS.index(key)
    return (round(ROWS[i // 4] / f0) * f0, round(COLS[i % 4] / f0) * f0, 2500.0)


def column_formants(f0, key, f1):
    """A vowel with F2 on the partial nearest the digit's column and a textbook F1 (490
    Hz: /er/, 640 Hz: /uh/): the column partial louder than the row one, the direction a
    detector with the twist limits swapped accepted up to 8 dB."""
    return (f1, round(COLS[KEYS.index(key) % 4] / f0) * f0, 2500.0)


def vowel(f0, formants, seconds=0.5, dbm0=-18.0, jitter=False, seed=0, tilt=1.0):
    """One sustained vowel (float64, int16 units) at level dbm0: formants a name of
    FORMANTS or three frequencies; partial k at 1/k**tilt (1: glottal -12 dB/oct with lip
    radiation +6; 0.5: a brighter, pressed voice) times the formant envelope."""
    if isinstance(formants, str):
        formants = FORMANTS[formants]
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f = np.full(n, f0)
    amp = np.ones(n)
    if jitter:
        # per-cycle wander, smoothed over ~3 cycles, plus a slow vibrato
        cycles = int(seconds * f0) + 2
        w = np.convolve(rng.normal(0, 0.01, cycles), np.ones(3) / 3, mode="same")
        f = f * (1 + np.interp(t * f0, np.arange(cycles), w) + 0.005 * np.sin(2 * np.pi * 5 * t))
        s = np.convolve(rng.normal(0, 0.5, cycles), np.ones(3) / 3, mode="same")
        amp = 10 ** (np.interp(t * f0, np.arange(cycles), s) / 20)
    phase = 2 * np.pi * np.cumsum(f) / RATE + rng.uniform(0, 2 * np.pi)
    k = np.arange(1, int(3800 / f0) + 1)
    a = _envelope(k * f0, formants) / k**tilt
    x = np.zeros(n)
    for kk, ak in zip(k, a, strict=True):
        x += ak * np.sin(kk * phase + rng.uniform(0, 2 * np.pi))
    ramp = np.minimum(1, np.minimum(t, t[::-1]) / 0.02)  # 20 ms onset and decay
    x *= amp * ramp
    return x * dbm0_to_rms(dbm0) / np.sqrt(np.mean(x**2))


def vowel_list(fundamentals=None, levels=(-30.0, -18.0, -6.0), jitters=(False, True),
               tilts=(1.0, 0.5), seconds=0.5):
    """[(label, vowel)]: every pair fundamental (pair_fundamentals, 2 % tolerance) x the
    five textbook shapes, its tuned shape (tuned_formants) and two column-tuned ones
    (column_formants, F1 490 and 640 Hz), plus a 10 Hz grid of f0 x the textbook shapes;
    x level x jitter x tilt."""
    pairs = pair_fundamentals(tol=0.02) if fundamentals is None else fundamentals
    grid = [] if fundamentals is not None else list(np.arange(100.0, 241.0, 10.0))
    specs = [(f0, name) for f0 in pairs for name in FORMANTS]
    specs += [(f0, ("tuned", key)) for f0, key in pairs.items()]
    specs += [(f0, (f"F2-{f1}", key)) for f0, key in pairs.items() for f1 in (490, 640)]
    specs += [(f0, name) for f0 in grid for name in FORMANTS]
    out, seed = [], 0
    for f0, shape in specs:
        if isinstance(shape, str):
            formants, label = shape, shape
        elif shape[0] == "tuned":
            formants, label = tuned_formants(f0, shape[1]), f"tuned-{shape[1]}"
        else:
            formants = column_formants(f0, shape[1], float(shape[0][3:]))
            label = f"{shape[0]}-{shape[1]}"
        for lev in levels:
            for jit in jitters:
                for tilt in tilts:
                    seed += 1
                    x = vowel(f0, formants, seconds, lev, jit, seed, tilt)
                    out.append((f"/{label}/ f0 {f0:.2f} {lev:+.0f} dBm0"
                                f"{' jitter' if jit else ''} tilt {tilt}", x))
    return out


def vowel_set(gap=0.1, **kw):
    """vowel_list back to back, each followed by gap s of silence: (signal, seconds of
    vowel)."""
    items = vowel_list(**kw)
    silence = np.zeros(int(gap * RATE))
    x = np.concatenate([p for _, v in items for p in (v, silence)])
    return x, sum(v.size for _, v in items) / RATE


# -- espeak-ng speech -------------------------------------------------------------------

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please hold the line, your call is important to us.",
    "Good morning, this is the branch office, how may I help you today?",
    "Would you like to leave a message after the tone? Press one for sales.",
    "Aaah, ooooh, eeeeh, we all sing along in a long, low, slow, droning voice.",
    "One two three four five six seven eight nine zero star pound.",
    "Our new number is four one five, five five five, two nine four seven.",
    "Mmm, hmm, yeah, no, well, I mean, you know, maybe tomorrow then.",
)
# (voice, words per minute, pitch 0-99): low and high, male and female
VOICES = (
    ("en", 150, 50), ("en-us", 180, 20), ("en+f3", 140, 70), ("en+m3", 130, 35),
    ("de", 160, 45), ("fr", 170, 60), ("es", 150, 80), ("en-gb", 120, 10),
    ("it", 175, 90), ("pt", 190, 25), ("en+f2", 110, 99), ("en+m1", 160, 0),
)


def resample_fft(x, rate_in, rate_out=RATE):
    """Band-limited resampling by truncating the spectrum (a short taper below the new
    Nyquist); fine for utterances that begin and end in silence."""
    n_out = int(round(x.size * rate_out / rate_in))
    spec = np.fft.rfft(x)[: n_out // 2 + 1]
    taper = np.clip((rate_out / 2 - np.arange(spec.size) * rate_in / x.size) / 300.0, 0, 1)
    return np.fft.irfft(spec * taper, n_out) * (n_out / x.size)


def speak(voice, wpm, pitch, text, cache=None):
    """espeak-ng's rendering at 8 kHz (float64), cached as .npy under `cache` (default:
    the system temp dir). RuntimeError naming the package if espeak-ng is missing."""
    cache = Path(cache or Path(tempfile.gettempdir()) / "branchline-talkoff")
    key = hashlib.sha1(f"{voice}|{wpm}|{pitch}|{text}".encode()).hexdigest()[:16]
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path)
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found: install the Debian package 'espeak-ng'")
    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "--stdout",
                          text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(out)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(float)
        x = resample_fft(pcm, w.getframerate())
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, x)
    tmp.replace(path)
    return x


def at_level(x, dbm0):
    """Scale to an active-speech level (RMS over the samples above -40 dB of peak)."""
    active = np.abs(x) > np.max(np.abs(x)) * 0.01
    return x * dbm0_to_rms(dbm0) / np.sqrt(np.mean(x[active] ** 2))


def speech_set(levels=(-25.0, -15.0, -5.0), voices=VOICES, sentences=SENTENCES):
    """Every voice x sentence at every level, back to back: (signal, seconds)."""
    utter = [speak(v, s, p, text) for v, s, p in voices for text in sentences]
    x = np.concatenate([at_level(u, lev) for lev in levels for u in utter])
    return x, x.size / RATE
