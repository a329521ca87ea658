"""Reference twin of cext.tones: call-progress tones computed from absolute sample time.

Each sample n of a tone is sum_k A_k sin(2 pi f_k n / rate) * (1 + m cos(2 pi f_m n /
rate)), gated by the cadence (on/off durations rounded to whole samples, repeated).
0 dBm0 is a sine of peak 32767 * 10**(-3.14/20) (spandsp's convention).
"""

import numpy as np

DBM0_PEAK = 32767.0 * 10 ** (-3.14 / 20)


def cadence_gate(cadence, n: int, rate: int) -> np.ndarray:
    """Boolean on/off of each of the first n samples for a cadence in seconds."""
    if not cadence:
        return np.ones(n, dtype=bool)
    lengths = [int(round(d * rate)) for d in cadence]
    cycle = np.concatenate([np.full(k, i % 2 == 0) for i, k in enumerate(lengths)])
    return np.resize(cycle, n)


def tone(t, n: int, rate: int = 8000) -> np.ndarray:
    """First n samples of toneplans.Tone t, as int16."""
    idx = np.arange(n, dtype=np.float64)
    amp = DBM0_PEAK * 10 ** (t.level_dbm0 / 20)
    x = np.zeros(n)
    for f in t.freqs:
        x += amp * np.sin(2 * np.pi * f * idx / rate)
    if t.mod_hz:
        x *= 1 + t.mod_depth * np.cos(2 * np.pi * t.mod_hz * idx / rate)
    x *= cadence_gate(t.cadence, n, rate)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)
