"""Line model for the DSP tests and benchmarks, in the manner of spandsp's line_model.c:
levels in dBm0, white noise, the ITU-T G.168 Annex D hybrid echo paths m1..m8, echo
convolution with bulk delay, G.711 munging, a speech-like test signal, and espeak-ng
speech (the echo tests' and benchmark's far end).

Levels follow spandsp: a full-scale sine (peak 32767) is +3.14 dBm0, so 0 dBm0 is a signal
of RMS 32767*10**(-3.14/20)/sqrt(2) ~ 16112. Signals are float64 NumPy arrays in int16
units unless a function says otherwise; `to_int16` rounds and saturates. The echo-path
data is a copy of the shared G.168 file in lab/data/ (read here, never from /work/shared).
"""

import functools
import io
import json
import subprocess
import wave
from pathlib import Path

import numpy as np

from cext.resample import Resampler

RATE = 8000
DBM0_RMS = 32767.0 * 10 ** (-3.14 / 20) / np.sqrt(2)  # ~16112
_PATHS_FILE = Path(__file__).with_name("data") / "g168_echo_paths.json"
MODELS = tuple(f"m{i}" for i in range(1, 9))


def dbm0_to_rms(dbm0: float) -> float:
    """RMS in int16 units of a signal at `dbm0` (0 dBm0 -> ~16112)."""
    return float(DBM0_RMS * 10 ** (dbm0 / 20))


def rms_to_dbm0(rms: float) -> float:
    """Level in dBm0 of a signal of this RMS (int16 units); -inf for silence."""
    if rms <= 0:
        return float("-inf")
    return float(20 * np.log10(rms / DBM0_RMS))


def level_dbm0(x) -> float:
    """Level in dBm0 of a whole signal."""
    x = np.asarray(x, dtype=np.float64)
    return rms_to_dbm0(float(np.sqrt(np.mean(x * x)))) if x.size else float("-inf")


def to_int16(x) -> np.ndarray:
    """Round and saturate to int16, as a codec or DAC would."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64)), -32768, 32767).astype(np.int16)


def white_noise(n: int, dbm0: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise of `n` samples at `dbm0` (float64, int16 units)."""
    return rng.standard_normal(n) * dbm0_to_rms(dbm0)


def add_noise(x, dbm0: float, rng: np.random.Generator) -> np.ndarray:
    """x plus white noise at `dbm0`."""
    x = np.asarray(x, dtype=np.float64)
    return x + white_noise(x.size, dbm0, rng)


@functools.cache
def _paths() -> dict:
    return json.loads(_PATHS_FILE.read_text())


def echo_path(model: str, erl_db: float = 0.0) -> np.ndarray:
    """Impulse response of G.168 Annex D model `model` ("m1".."m8") with `erl_db` dB of
    extra echo return loss: h = m * Ki * 10**(-erl_db/20), so erl_db=12 attenuates by 12 dB
    (the JSON's scaling note writes the same with a negative erl_dB)."""
    if model not in MODELS:
        raise ValueError(f"echo path {model!r} unknown: use one of m1..m8")
    entry = _paths()[model]
    m = np.asarray(entry["coeffs"], dtype=np.float64)
    return m * float(entry["Ki"]) * 10 ** (-erl_db / 20)


def apply_echo(far, h, delay_samples: int = 0) -> np.ndarray:
    """Echo of `far` through impulse response `h` after a bulk delay, same length as far."""
    far = np.asarray(far, dtype=np.float64)
    h = np.concatenate([np.zeros(int(delay_samples)), np.asarray(h, dtype=np.float64)])
    return np.convolve(far, h)[: far.size]


# --- G.711 (ITU-T G.711 segment coding, vectorised; slow is fine here) -------------------

_SEG_END = np.array([0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF])


def _ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32) >> 2  # G.711 mu-law works on 14-bit samples
    mask = np.where(x < 0, 0x7F, 0xFF)
    x = np.minimum(np.abs(x), 8159) + 33
    seg = np.searchsorted(_SEG_END >> 2, x, side="left")  # segment ends 0x3F..0x1FFF
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((x >> (np.minimum(seg, 7) + 1)) & 0xF))
    return (code ^ mask).astype(np.uint8)


def _ulaw_decode(code: np.ndarray) -> np.ndarray:
    u = (~code.astype(np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32) >> 3  # A-law works on 13-bit samples
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_SEG_END >> 3, x, side="left")
    aval = np.where(seg < 2, x >> 1, x >> np.maximum(seg, 1))
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | (aval & 0xF))
    return (code ^ mask).astype(np.uint8)


def _alaw_decode(code: np.ndarray) -> np.ndarray:
    a = code.astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def g711_munge(x, law: str = "ulaw") -> np.ndarray:
    """Round trip through a G.711 encoder and decoder ("ulaw" or "alaw"); returns int16."""
    pcm = to_int16(x)
    if law == "ulaw":
        return _ulaw_decode(_ulaw_encode(pcm))
    if law == "alaw":
        return _alaw_decode(_alaw_encode(pcm))
    raise ValueError(f"G.711 law {law!r} unknown: use 'ulaw' or 'alaw'")


# --- speech-like signal ------------------------------------------------------------------

def _formant_filter(x: np.ndarray, f_hz: float, bw_hz: float) -> np.ndarray:
    """Two-pole resonator (one formant); a direct-form loop is fine at test lengths."""
    r = np.exp(-np.pi * bw_hz / RATE)
    a1, a2 = -2 * r * np.cos(2 * np.pi * f_hz / RATE), r * r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for i, v in enumerate(x):
        y0 = v - a1 * y1 - a2 * y2
        y[i] = y0
        y2, y1 = y1, y0
    return y


def speech_like(n: int, dbm0: float, rng: np.random.Generator, pitch_hz: float = 120.0) -> np.ndarray:
    """A speech-like signal in the spirit of ITU-T P.501's composite source signal:
    voiced stretches (a glottal pulse train with jittered pitch through three formants)
    and unvoiced stretches (noise), with a syllabic on/off envelope (150-400 ms talk
    bursts, 50-300 ms pauses). The active parts are scaled to `dbm0`."""
    excitation = np.zeros(n)
    env = np.zeros(n)
    i = 0
    while i < n:
        talk = int(rng.uniform(0.15, 0.4) * RATE)
        voiced = rng.random() < 0.75
        seg = slice(i, min(n, i + talk))
        if voiced:
            period = RATE / (pitch_hz * rng.uniform(0.8, 1.25))
            pulses = np.arange(seg.start, seg.stop, period).astype(int)
            excitation[pulses] = 1.0
        else:
            excitation[seg] = rng.standard_normal(seg.stop - seg.start) * 0.1
        ramp = np.sin(np.linspace(0, np.pi, seg.stop - seg.start)) ** 0.5
        env[seg] = ramp
        i = seg.stop + int(rng.uniform(0.05, 0.3) * RATE)
    f1, f2, f3 = rng.uniform(300, 800), rng.uniform(900, 2200), rng.uniform(2300, 3200)
    y = sum(_formant_filter(excitation, f, bw) * g for f, bw, g in ((f1, 80, 1.0), (f2, 120, 0.5), (f3, 200, 0.25)))
    y = y * env
    active = env > 0.1
    rms = np.sqrt(np.mean(y[active] ** 2)) if active.any() else 1.0
    return y * (dbm0_to_rms(dbm0) / rms)


SPEECH_TEXT = ("Hello, thank you for calling the branch office. Your call is important to us. "
               "Please hold the line, an agent will be with you shortly.")


def espeak_speech(voice: str, wpm: int, pitch: int, text: str = SPEECH_TEXT,
                  seconds: float | None = None, dbm0: float = -16.0) -> np.ndarray:
    """espeak-ng speech at 8 kHz (cext.resample), leading/trailing silence cut, at most
    `seconds` long, scaled to `dbm0` active level (RMS over samples above -40 dB of peak).
    Needs the espeak-ng program (Debian package espeak-ng)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "--stdout", text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = Resampler(rate, RATE).process(pcm).astype(np.float64)
    on = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())
    x = x[on[0]:on[-1] + 1]
    if seconds is not None:
        x = x[: int(seconds * RATE)]
    active = np.abs(x) > 0.01 * np.abs(x).max()
    return x * dbm0_to_rms(dbm0) / np.sqrt(np.mean(x[active] ** 2))
