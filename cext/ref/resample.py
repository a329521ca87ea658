"""Reference twin of cext.resample: rational-ratio resampling the textbook way.

Zero-stuff the input by L, convolve with the windowed-sinc low-pass, keep every M-th
sample. Slow (a full-length dot product over mostly zeros per output) and whole-buffer only; the
kernel's polyphase streaming form must give the same samples to within one LSB.
"""

from math import ceil, gcd

import numpy as np

STOPBAND_DB = 70.0  # designed for 70 dB so that 60 dB holds with float32 coefficients


def ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    g = gcd(rate_in, rate_out)
    return rate_out // g, rate_in // g


def design(rate_in: int, rate_out: int) -> tuple[np.ndarray, int, int]:
    """(h, L, M): Kaiser-windowed sinc at the upsampled rate, DC gain L, len(h) % L == 0."""
    up, down = ratio(rate_in, rate_out)
    fu = rate_in * up
    low = min(rate_in, rate_out)
    f_pass, f_stop = 0.425 * low, 0.5 * low  # 3.4 kHz and 4 kHz when one side is 8 kHz
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    n = int(ceil((STOPBAND_DB - 7.95) / (14.36 * (f_stop - f_pass) / fu))) + 1
    n = ceil(n / up) * up
    t = np.arange(n) - (n - 1) / 2
    fc = (f_pass + f_stop) / 2 / fu
    h = 2 * fc * np.sinc(2 * fc * t) * np.kaiser(n, beta)
    return h * (up / h.sum()), up, down


def resample(x, rate_in: int, rate_out: int) -> np.ndarray:
    h, up, down = design(rate_in, rate_out)
    x = np.asarray(x, dtype=np.float64)
    stuffed = np.zeros(x.size * up)
    stuffed[::up] = x
    padded = np.concatenate([np.zeros(h.size - 1), stuffed])
    # output m is the convolution at upsampled index m*down (only those are computed)
    windows = np.lib.stride_tricks.sliding_window_view(padded, h.size)[::down]
    y = windows[: -(-stuffed.size // down)] @ h[::-1]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)
