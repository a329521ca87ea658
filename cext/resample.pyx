# cython: language_level=3
"""Polyphase FIR resampler between the line's 8 kHz and the headset's 16/32/44.1/48 kHz.

A rational L/M resampler: one Kaiser-windowed-sinc low-pass (70 dB stop band, pass band
flat to 0.425 of the lower rate, i.e. 3.4 kHz at 8 kHz, stop band from half the lower
rate) split into L phases of K taps; each output sample is one K-tap dot product over
contiguous float32 input history (vectorised by the compiler). Input history and the
output phase are kept between calls, so 20 ms frames give exactly the same samples as one
whole buffer. The filter design is the same as cext.ref.resample's (numpy, at init).
"""

from math import ceil, gcd

import numpy as np

from libc.math cimport lrintf
from libc.stdint cimport int16_t, int64_t

STOPBAND_DB = 70.0


def design(int rate_in, int rate_out):
    """(h, L, M): the prototype low-pass at L*rate_in, DC gain L, len(h) a multiple of L."""
    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    fu = rate_in * up
    low = min(rate_in, rate_out)
    f_pass, f_stop = 0.425 * low, 0.5 * low
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    n = int(ceil((STOPBAND_DB - 7.95) / (14.36 * (f_stop - f_pass) / fu))) + 1
    n = ceil(n / up) * up
    t = np.arange(n) - (n - 1) / 2
    fc = (f_pass + f_stop) / 2 / fu
    h = 2 * fc * np.sinc(2 * fc * t) * np.kaiser(n, beta)
    return h * (up / h.sum()), up, down


cdef inline int16_t _sat(float v) noexcept nogil:
    if v >= 32767.0:
        return 32767
    if v <= -32768.0:
        return -32768
    return <int16_t>lrintf(v)


cdef class Resampler:
    """Resampler(rate_in, rate_out): .process(int16 array) -> int16 array, state kept."""

    cdef readonly int rate_in, rate_out, up, down, taps
    cdef readonly double delay_samples
    cdef float[:, ::1] _phases     # [L][K], each phase reversed so the dot runs forward
    cdef float[::1] _hist          # last K-1 input samples
    cdef int64_t _u                # next output position, upsampled units, from chunk start

    def __init__(self, int rate_in, int rate_out):
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
        h, up, down = design(rate_in, rate_out)
        self.rate_in, self.rate_out, self.up, self.down = rate_in, rate_out, up, down
        self.taps = len(h) // up
        # phase p holds h[p], h[p+L], ... ; reversed to pair with x[n-K+1 .. n]
        self._phases = np.ascontiguousarray(h.reshape(self.taps, up).T[:, ::-1], dtype=np.float32)
        # group delay of the linear-phase prototype, in output samples
        self.delay_samples = (len(h) - 1) / 2.0 / down
        self.reset()

    def reset(self):
        """Forget the input history (as at start)."""
        self._hist = np.zeros(self.taps - 1, dtype=np.float32)
        self._u = 0

    def process(self, pcm):
        """Resample a buffer of int16 samples; returns the output samples now available."""
        x = np.asarray(pcm, dtype=np.int16)
        cdef Py_ssize_t n_in = x.shape[0], k1 = self.taps - 1
        buf_arr = np.empty(k1 + n_in, dtype=np.float32)
        buf_arr[:k1] = self._hist
        buf_arr[k1:] = x
        cdef int64_t span = n_in * <int64_t>self.up
        cdef Py_ssize_t n_out = 0
        if span > self._u:
            n_out = <Py_ssize_t>((span - self._u + self.down - 1) // self.down)
        out = np.empty(n_out, dtype=np.int16)
        cdef int16_t[::1] o = out
        cdef float[::1] buf = buf_arr
        with nogil:
            self._run(buf, o, n_out)
        self._u += n_out * <int64_t>self.down - span
        self._hist = buf_arr[buf_arr.shape[0] - k1:].copy()
        return out

    cdef void _run(self, const float[::1] buf, int16_t[::1] out, Py_ssize_t n_out) noexcept nogil:
        cdef Py_ssize_t m, k, start
        cdef int64_t u
        cdef int p, K = self.taps
        cdef float acc
        cdef const float *h
        cdef const float *xp
        for m in range(n_out):
            u = self._u + m * <int64_t>self.down
            start = <Py_ssize_t>(u // self.up)      # buf[start] is x[n-K+1]
            p = <int>(u % self.up)
            h = &self._phases[p, 0]
            xp = &buf[start]
            acc = 0.0
            for k in range(K):
                acc = acc + h[k] * xp[k]
            out[m] = _sat(acc)
