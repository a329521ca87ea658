# cython: language_level=3
"""Call-progress tone generator driven by the tone plans (cext.toneplans).

ToneGenerator(tone, rate) makes one Tone: up to 4 frequency components at the tone's
level in dBm0 each (0 dBm0 is a sine of peak 32767*10**(-3.14/20), spandsp's
convention), optionally amplitude-modulated ("400*25": mod_hz, mod_depth), gated by a
cadence of any length (on/off seconds rounded to whole samples, repeated). Oscillators
are rotating phasors (no libm call per sample); their phases and the cadence position
carry across generate() calls, so 20 ms frames join
without clicks and equal one long call. The per-sample loop runs without the GIL.
"""

import numpy as np

from cext import toneplans

from libc.math cimport M_PI, cos, lrint, sin, sqrt
from libc.stdint cimport int16_t, int64_t

DBM0_PEAK = 32767.0 * 10 ** (-3.14 / 20)
DEF MAX_FREQS = 4
DEF MAX_SEGS = 16


cdef class ToneGenerator:
    """One tone of a plan: .generate(n) -> int16 array, continuing; .reset()."""

    cdef readonly object tone
    cdef readonly int rate
    cdef int n_freqs, n_segs
    cdef double amp, depth
    cdef double rot_c[MAX_FREQS]     # per-sample rotation of each oscillator
    cdef double rot_s[MAX_FREQS]
    cdef double osc_c[MAX_FREQS]     # oscillator phasor: sin(phase) is osc_s
    cdef double osc_s[MAX_FREQS]
    cdef double mod_rc, mod_rs, mod_c, mod_s
    cdef int64_t seg_len[MAX_SEGS]
    cdef int seg
    cdef int64_t seg_pos

    def __init__(self, tone, int rate=8000):
        if not 1 <= len(tone.freqs) <= MAX_FREQS:
            raise ValueError(f"a tone has 1 to {MAX_FREQS} frequencies, got {tone.freqs}")
        if len(tone.cadence) > MAX_SEGS or len(tone.cadence) % 2:
            raise ValueError(f"cadence must be on/off pairs, at most {MAX_SEGS} entries: {tone.cadence}")
        self.tone, self.rate = tone, rate
        self.n_freqs = len(tone.freqs)
        for i, f in enumerate(tone.freqs):
            self.rot_c[i] = cos(2 * M_PI * f / rate)
            self.rot_s[i] = sin(2 * M_PI * f / rate)
        self.amp = DBM0_PEAK * 10 ** (tone.level_dbm0 / 20)
        self.mod_rc = cos(2 * M_PI * tone.mod_hz / rate)
        self.mod_rs = sin(2 * M_PI * tone.mod_hz / rate)
        self.depth = tone.mod_depth if tone.mod_hz else 0.0
        self.n_segs = len(tone.cadence)
        for i, d in enumerate(tone.cadence):
            self.seg_len[i] = int(round(d * rate))
        self.reset()

    def reset(self):
        """Back to phase 0 at the start of the first 'on' of the cadence."""
        for i in range(MAX_FREQS):
            self.osc_c[i], self.osc_s[i] = 1.0, 0.0
        self.mod_c, self.mod_s = 1.0, 0.0
        self.seg = 0
        self.seg_pos = 0

    def generate(self, Py_ssize_t n):
        """The next n samples (int16)."""
        out = np.empty(n, dtype=np.int16)
        cdef int16_t[::1] o = out
        with nogil:
            self._run(o)
        return out

    cdef inline bint _gate(self) noexcept nogil:
        # advance the cadence by one sample; True while in an 'on' segment
        cdef bint on
        if self.n_segs == 0:
            return True
        while self.seg_pos >= self.seg_len[self.seg]:   # skips zero-length segments
            self.seg_pos = 0
            self.seg = (self.seg + 1) % self.n_segs
        on = (self.seg % 2) == 0
        self.seg_pos += 1
        return on

    cdef void _renormalise(self) noexcept nogil:
        # phasor recursion drifts in amplitude by ~1e-16 per sample; pull it back per call
        cdef int k
        cdef double r
        for k in range(self.n_freqs):
            r = sqrt(self.osc_c[k] * self.osc_c[k] + self.osc_s[k] * self.osc_s[k])
            self.osc_c[k] /= r
            self.osc_s[k] /= r
        r = sqrt(self.mod_c * self.mod_c + self.mod_s * self.mod_s)
        self.mod_c /= r
        self.mod_s /= r

    cdef void _run(self, int16_t[::1] out) noexcept nogil:
        cdef Py_ssize_t i
        cdef int k
        cdef double v, c
        self._renormalise()
        for i in range(out.shape[0]):
            v = 0.0
            for k in range(self.n_freqs):
                v += self.osc_s[k]
                c = self.osc_c[k]
                self.osc_c[k] = c * self.rot_c[k] - self.osc_s[k] * self.rot_s[k]
                self.osc_s[k] = self.osc_s[k] * self.rot_c[k] + c * self.rot_s[k]
            v *= self.amp * (1.0 + self.depth * self.mod_c)
            c = self.mod_c
            self.mod_c = c * self.mod_rc - self.mod_s * self.mod_rs
            self.mod_s = self.mod_s * self.mod_rc + c * self.mod_rs
            if not self._gate():
                v = 0.0
            if v > 32767.0:
                v = 32767.0
            elif v < -32768.0:
                v = -32768.0
            out[i] = <int16_t>lrint(v)


def tone_samples(country, name, double seconds, int rate=8000):
    """`seconds` of tone `name` (one of toneplans.TONE_NAMES) of `country`, int16."""
    plan = toneplans.plan(country)
    if name not in plan.tones:
        raise KeyError(f"{name!r} is not a tone of {country}; known: {', '.join(plan.tones)}")
    return ToneGenerator(plan.tones[name], rate).generate(int(round(seconds * rate)))
