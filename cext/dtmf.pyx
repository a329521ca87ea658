# cython: language_level=3
"""DTMF detector (ITU-T Q.24) and generator (Q.23), one state object per channel.

Detector. Every 5 ms (hop H = N/4) a 20 ms Hann-windowed frame (N = 160 at 8 kHz) is
correlated with the 8 DTMF frequencies (one complex DFT bin each, precomputed
window*cos/sin tables: 64 multiply-adds per sample, vectorised by the compiler over the
frame). Why not spandsp's 102-sample Goertzel blocks: a bin 78 Hz wide cannot tell a
tone 1.5 % off nominal (accept) from one 3.5 % off (reject), and its -13 dB sidelobes
let dial tone leak into the row bins. Here each tone's frequency is measured from the
bin's phase advance between frames H apart, which is unambiguous over +-fs/(2H) =
+-100 Hz, exactly the Hann main lobe, so anything outside the main lobe is >= 31 dB down
and anything inside it is measured. A frame is a digit when: the best row and column beat
the other rows/columns by 6 dB, both offsets are within 2.5 % (midway between Q.24's 1.5 %
accept and 3.5 % reject), both levels reach min_level, the twist is within limits and the
two tones carry >= 75 % of the frame's energy (speech and music do not).
A frame-level state machine then times each digit where its envelope crosses half the
peak amplitude (for a Hann frame that is the frame whose centre is on the edge), merges
interruptions shorter than 0.75*min_off, and reports digits lasting 0.75*min_on or more
(40 ms min => 30 ms threshold, between Q.24's 40 ms must-accept and 20 ms must-reject).

Assumes int16 samples; levels follow spandsp (0 dBm0 = sine of RMS 16112). Sample
indexes count from construction or reset(). The plain NumPy twin is cext/ref/dtmf.py.
"""

from libc.math cimport M_PI, atan2, cos, fabs, sin, sqrt

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = "123A456B789C*0#D"
DBM0_RMS = 32767.0 * 10 ** (-3.14 / 20) / 2 ** 0.5

DEF NBINS = 8
DEF MAXEV = 64          # digits per chunk; a chunk is short enough never to fill it
DEF CHUNK = 16000       # samples converted per nogil pass
DEF RISE_MAX = 16
DEF NCOL = 64           # sub-block table columns: 48 for x, 5 (padded to 16) for x^2

cdef double ROW_F[4]
cdef double COL_F[4]
ROW_F[:] = [697.0, 770.0, 852.0, 941.0]
COL_F[:] = [1209.0, 1336.0, 1477.0, 1633.0]
cdef double FREQ_TOL = 0.025
cdef double REL_PEAK = 10 ** (6.0 / 10)
cdef double RATIO_MIN = 0.75
cdef double LEVEL_SLACK_DB = 1.5
cdef double TWIST_SLACK_DB = 0.5
cdef double EDGE_FRACTION = 0.75
cdef double QUIET = 0.05
cdef enum:
    IDLE = 0
    ON = 1
    OFF_PENDING = 2


cdef double hann_gain(double k) noexcept nogil:
    """Hann window response k bins off centre, relative to the centre."""
    if fabs(k) < 1e-6:
        return 1.0
    if fabs(fabs(k) - 1.0) < 1e-6:
        return 0.5
    return fabs(sin(M_PI * k) / (M_PI * k) / (1.0 - k * k))


def _tables(int rate, int n, int hop):
    """Sub-block tables, (hop, NCOL) float32, sample-major. Columns 0..23: cos(nu*m) and
    24..47: -sin(nu*m) for nu = w_k - W, w_k, w_k + W per DTMF frequency w_k (W = 2pi/N,
    the Hann window's own frequency); then 1, cos(W m), -sin(W m), cos(2W m), -sin(2W m)
    for the x^2 sums that give the windowed frame energy. Also the (4, 29) complex
    phase steps exp(-j nu q hop) that put sub-block q of a frame in the frame's phase."""
    freqs = np.array(ROWS + COLS)
    big_w = 2 * np.pi / n
    nus = (2 * np.pi * freqs[:, None] / rate + np.array([-big_w, 0.0, big_w])[None, :]).ravel()
    m = np.arange(hop)
    ph = np.outer(m, nus)
    tab = np.zeros((hop, NCOL), dtype=np.float32)
    tab[:, 0:24] = np.cos(ph)
    tab[:, 24:48] = -np.sin(ph)
    tab[:, 48] = 1.0
    tab[:, 49], tab[:, 50] = np.cos(big_w * m), -np.sin(big_w * m)
    tab[:, 51], tab[:, 52] = np.cos(2 * big_w * m), -np.sin(2 * big_w * m)
    allnu = np.concatenate([nus, [big_w, 2 * big_w]])
    step = np.exp(-1j * np.outer(np.arange(4) * hop, allnu))
    return (tab, np.ascontiguousarray(step.real, dtype=np.float32),
            np.ascontiguousarray(step.imag, dtype=np.float32))


cdef class DtmfDetector:
    """Q.24 DTMF receiver for one channel: process() int16 buffers of any length."""

    cdef int rate, n, hop, rise_len
    cdef double normal, reverse, e_min, on_min, off_min, quiet
    cdef double freqs[NBINS]
    cdef double rot_re[NBINS]
    cdef double rot_im[NBINS]
    cdef float[:, ::1] tab
    cdef float[:, ::1] step_re
    cdef float[:, ::1] step_im
    cdef float sub[4][NCOL]      # the last four sub-block sums (ring, by frame number)
    cdef float[::1] buf          # last N samples, then the chunk being processed
    cdef long long total, frame
    cdef int fill                # samples in buf (tail included)
    cdef double xre[NBINS]
    cdef double xim[NBINS]
    cdef double pre[NBINS]       # previous frame's bin energies
    cdef double pre2[NBINS]      # and the one before
    cdef double eng[NBINS]
    # state machine
    cdef int state, digit, cur, valid, first, nrise
    cdef double peak, last_amp, start_t, end_t
    cdef bint start_fixed, tracking
    cdef double rise[RISE_MAX]
    cdef int nev
    cdef int ev_digit[MAXEV]
    cdef long long ev_start[MAXEV]
    cdef long long ev_end[MAXEV]

    def __init__(self, int rate=8000, double twist_normal_db=8.0, double twist_reverse_db=4.0,
                 double min_level_dbm0=-36, int min_on_ms=40, int min_off_ms=40):
        cdef int k
        self.rate = rate
        self.n = int(round(rate * 0.02))
        self.hop = self.n // 4
        self.rise_len = self.n // self.hop + 4
        self.normal = 10 ** ((twist_normal_db + TWIST_SLACK_DB) / 10)
        self.reverse = 10 ** ((twist_reverse_db + TWIST_SLACK_DB) / 10)
        amp_min = DBM0_RMS * 2 ** 0.5 * 10 ** ((min_level_dbm0 - LEVEL_SLACK_DB) / 20)
        self.e_min = (amp_min * self.n / 4) ** 2
        # sum(x^2) of a frame below which no tone can reach 0.36*e_min (Cauchy-Schwarz
        # with sum(w^2) = 3N/8 gives 0.06*amp_min^2*N): skipping such frames never
        # changes a decision, it only zeroes sub-threshold amplitudes
        self.quiet = QUIET * amp_min ** 2 * self.n
        self.on_min = EDGE_FRACTION * min_on_ms * rate / 1000.0
        self.off_min = EDGE_FRACTION * min_off_ms * rate / 1000.0
        for k, f in enumerate(ROWS + COLS):
            self.freqs[k] = f
            self.rot_re[k] = cos(-2 * M_PI * f * self.hop / rate)
            self.rot_im[k] = sin(-2 * M_PI * f * self.hop / rate)
        if rate % 200:
            raise ValueError(f"DTMF detector rate {rate} Hz unsupported: use a multiple of 200 Hz (8000)")
        self.tab, self.step_re, self.step_im = _tables(rate, self.n, self.hop)
        self.buf = np.zeros(self.n + CHUNK, dtype=np.float32)
        self.reset()

    def reset(self):
        """Forget everything: samples count from 0 again."""
        self.buf[:] = 0
        self.fill = self.n
        self.total = 0
        self.frame = 0
        for k in range(NBINS):
            self.xre[k] = self.xim[k] = self.pre[k] = self.pre2[k] = 0.0
        for k in range(4):
            for j in range(NCOL):
                self.sub[k][j] = 0.0
        self._idle()

    @property
    def current(self):
        """The digit present right now (once it has lasted long enough), else None."""
        return KEYS[self.cur] if self.cur >= 0 else None

    def process(self, samples):
        """(digit, start_sample, end_sample) for each digit whose end was confirmed in
        this buffer (the end itself may lie up to min_off earlier)."""
        cdef const short[::1] x = np.ascontiguousarray(samples, dtype=np.int16)
        cdef Py_ssize_t pos = 0, m
        out = []
        while pos < x.shape[0]:
            m = min(CHUNK, x.shape[0] - pos)
            self.nev = 0
            with nogil:
                self._run(x[pos:pos + m])
            out.extend(self._events())
            pos += m
        return out

    def flush(self):
        """Report a digit still on (or not yet confirmed ended) at the end of the input,
        then start over in the idle state (sample indexes keep counting)."""
        self.nev = 0
        if self.state == ON:
            self.end_t = <double>self.total
        if self.state != IDLE:
            self._finish()
        return self._events()

    cdef list _events(self):
        return [(KEYS[self.ev_digit[i]], self.ev_start[i], self.ev_end[i])
                for i in range(self.nev)]

    # -- framing ---------------------------------------------------------------------
    cdef void _run(self, const short[::1] x) noexcept nogil:
        cdef Py_ssize_t i, m = x.shape[0], next_end
        cdef int n = self.n
        cdef float *dst = &self.buf[self.fill]
        cdef const short *src = &x[0]
        for i in range(m):
            dst[i] = src[i]
        self.fill += <int>m
        self.total += m
        # frame f covers absolute samples [f*hop - n, f*hop); buf[fill-1] is total-1
        next_end = (self.frame + 1) * self.hop
        while next_end <= self.total:
            self.frame += 1
            self._frame(self.fill - <int>(self.total - next_end) - n)
            next_end += self.hop
        for i in range(n):
            self.buf[i] = self.buf[self.fill - n + i]
        self.fill = n

    cdef void _frame(self, int off) noexcept nogil:
        cdef double e[NBINS]
        cdef double pr[NBINS]
        cdef double pi[NBINS]
        cdef double etot
        cdef int k, d
        for k in range(NBINS):
            pr[k] = self.xre[k]
            pi[k] = self.xim[k]
        etot = self._correlate(off)
        for k in range(NBINS):
            e[k] = self.xre[k] * self.xre[k] + self.xim[k] * self.xim[k]
        d = self._classify(e, pr, pi, etot)
        self._step(d, e)
        for k in range(NBINS):
            self.pre2[k] = self.pre[k]
            self.pre[k] = e[k]

    cdef double _correlate(self, int off) noexcept nogil:
        """Bins and windowed energy of the frame ending at buf[off + n]. Only the newest
        sub-block (the last hop samples) is correlated here: the Hann window is three
        complex exponentials, so each bin is 0.5 P(w) - 0.25 P(w-W) - 0.25 P(w+W) with
        P a plain DFT over the frame, i.e. the sum of the four sub-blocks' DFTs rotated
        into the frame's phase. Each sample is touched once (64 lanes)."""
        cdef int q = <int>(self.frame % 4), k
        self._subblock(&self.buf[off + self.n - self.hop], self.sub[q])
        if (self.sub[0][48] + self.sub[1][48]) + (self.sub[2][48] + self.sub[3][48]) < self.quiet:
            for k in range(NBINS):   # too quiet for any digit: skip the rest of the frame
                self.xre[k] = self.xim[k] = 0.0
            return 0.0
        return self._combine(q)

    cdef void _subblock(self, float *xp, float *out) noexcept nogil:
        # the hot loop: four samples feed four accumulator sets so FMA latencies overlap
        cdef int k, i, h = self.hop
        cdef float a0[NCOL]
        cdef float a1[NCOL]
        cdef float a2[NCOL]
        cdef float a3[NCOL]
        cdef float x0, x1, x2, x3, y0, y1, y2, y3
        cdef float *t0
        for k in range(NCOL):
            a0[k] = a1[k] = a2[k] = a3[k] = 0
        for i in range(0, h - 3, 4):
            x0 = xp[i]
            x1 = xp[i + 1]
            x2 = xp[i + 2]
            x3 = xp[i + 3]
            y0 = x0 * x0
            y1 = x1 * x1
            y2 = x2 * x2
            y3 = x3 * x3
            t0 = &self.tab[i, 0]
            for k in range(48):
                a0[k] += x0 * t0[k]
                a1[k] += x1 * t0[k + NCOL]
                a2[k] += x2 * t0[k + 2 * NCOL]
                a3[k] += x3 * t0[k + 3 * NCOL]
            for k in range(48, NCOL):
                a0[k] += y0 * t0[k]
                a1[k] += y1 * t0[k + NCOL]
                a2[k] += y2 * t0[k + 2 * NCOL]
                a3[k] += y3 * t0[k + 3 * NCOL]
        for k in range(NCOL):
            out[k] = (a0[k] + a1[k]) + (a2[k] + a3[k])

    cdef double _combine(self, int newest) noexcept nogil:
        """Frame bins (into xre/xim) and windowed energy from the four sub-blocks."""
        cdef float pr[32]
        cdef float pi[32]
        cdef int j, q, b
        cdef float *t
        cdef float *sr
        cdef float *si
        for j in range(32):
            pr[j] = pi[j] = 0.0
        for q in range(4):
            b = (newest + 1 + q) % 4       # oldest sub-block is position 0 in the frame
            t = self.sub[b]
            sr = &self.step_re[q, 0]
            si = &self.step_im[q, 0]
            for j in range(24):            # contiguous: vectorised
                pr[j] += t[j] * sr[j] - t[j + 24] * si[j]
                pi[j] += t[j] * si[j] + t[j + 24] * sr[j]
            for j in range(2):
                pr[24 + j] += t[49 + 2 * j] * sr[24 + j] - t[50 + 2 * j] * si[24 + j]
            pr[28] += t[48]
        for j in range(NBINS):
            self.xre[j] = 0.5 * pr[3 * j + 1] - 0.25 * (pr[3 * j] + pr[3 * j + 2])
            self.xim[j] = 0.5 * pi[3 * j + 1] - 0.25 * (pi[3 * j] + pi[3 * j + 2])
        # sum x^2 w^2 with w^2 = 3/8 - cos(W n)/2 + cos(2W n)/8
        return 0.375 * pr[28] - 0.5 * pr[24] + 0.125 * pr[25]

    # -- per-frame decision ----------------------------------------------------------
    cdef double _offset_hz(self, int k, double *pr, double *pi) noexcept nogil:
        """Tone frequency minus nominal, from the bin's phase advance over one hop."""
        cdef double re = self.xre[k] * pr[k] + self.xim[k] * pi[k]
        cdef double im = self.xim[k] * pr[k] - self.xre[k] * pi[k]
        cdef double rr = re * self.rot_re[k] - im * self.rot_im[k]
        cdef double ri = re * self.rot_im[k] + im * self.rot_re[k]
        return atan2(ri, rr) * self.rate / (2 * M_PI * self.hop)

    cdef int _best(self, double *e, int lo) noexcept nogil:
        """Index of the strongest of e[lo..lo+3], or -1 if another is within 6 dB."""
        cdef int k, b = lo
        for k in range(lo + 1, lo + 4):
            if e[k] > e[b]:
                b = k
        for k in range(lo, lo + 4):
            if k != b and e[k] * REL_PEAK > e[b]:
                return -1
        return b

    cdef int _classify(self, double *e, double *pr, double *pi, double etot) noexcept nogil:
        cdef int r = self._best(e, 0), c = self._best(e, 4), k, j
        cdef double ec[2]
        cdef double d, g
        if r < 0 or c < 0:
            return -1
        # cheap early exit for quiet frames (gain >= 0.6 within the frequency tolerance)
        if e[r] < 0.36 * self.e_min or e[c] < 0.36 * self.e_min:
            return -1
        for j in range(2):
            k = r if j == 0 else c
            d = self._offset_hz(k, pr, pi)
            if fabs(d) >= FREQ_TOL * self.freqs[k]:
                return -1
            g = hann_gain(d * self.n / self.rate)
            ec[j] = e[k] / (g * g)
        if ec[0] < self.e_min or ec[1] < self.e_min:
            return -1
        if ec[1] > ec[0] * self.normal or ec[0] > ec[1] * self.reverse:
            return -1
        if (ec[0] + ec[1]) * 3.0 < RATIO_MIN * self.n * etot:
            return -1
        return r * 4 + (c - 4)

    # -- state machine ---------------------------------------------------------------
    cdef void _idle(self) noexcept nogil:
        self.state = IDLE
        self.digit = self.cur = -1
        self.peak = self.last_amp = 0.0
        self.start_fixed = False
        self.tracking = False
        self.nrise = 0

    cdef inline double _centre(self, long long f) noexcept nogil:
        return <double>(f * self.hop) - self.n / 2.0

    cdef inline double _amp(self, double *e, int d) noexcept nogil:
        return sqrt(e[d // 4]) + sqrt(e[4 + d % 4])

    cdef void _begin(self, int d, double *e) noexcept nogil:
        self.state = ON
        self.digit = d
        self.rise[0] = self._amp(self.pre2, d)
        self.rise[1] = self._amp(self.pre, d)
        self.peak = self.last_amp = self._amp(e, d)
        self.rise[2] = self.last_amp
        self.nrise = 3
        self.first = <int>(self.frame - 2)
        self.valid = 1

    cdef double _start(self) noexcept nogil:
        """Where the rising envelope crossed half the peak (see the twin for the cases)."""
        cdef double half = 0.5 * self.peak, t
        cdef int i = 2
        if self.start_fixed:
            return self.start_t
        while i < self.nrise - 1 and self.rise[i] < half:
            i += 1
        if i == 2 and self.rise[1] >= half:
            i = 1
        if self.rise[i - 1] >= half:
            t = self._centre(self.first + i)
        else:
            t = self._centre(self.first + i - 1) + self.hop * (half - self.rise[i - 1]) / (
                self.rise[i] - self.rise[i - 1])
        if self.nrise >= self.rise_len:
            self.start_fixed = True
            self.start_t = t
        return t

    cdef bint _long_enough(self, double now) noexcept nogil:
        return now - self._start() >= self.on_min and (self.valid + 1) * self.hop >= self.on_min

    cdef void _finish(self) noexcept nogil:
        cdef double start = self._start()
        if self._long_enough(self.end_t) and self.nev < MAXEV:
            self.ev_digit[self.nev] = self.digit
            self.ev_start[self.nev] = <long long>(start + 0.5 if start >= 0 else start - 0.5)
            self.ev_end[self.nev] = <long long>(self.end_t + 0.5)
            self.nev += 1
        self._idle()

    cdef void _track_end(self, double now, double amp, double half) noexcept nogil:
        """The digit stopped passing the checks: its end is where the raw envelope of its
        two bins falls through half the peak (see the twin)."""
        cdef double a0 = self.last_amp
        self.state = OFF_PENDING
        if amp >= half:
            self.end_t = now
            self.last_amp = amp
            self.tracking = True
        else:
            self.end_t = now - self.hop + self.hop * (a0 - half) / (a0 - amp)
            self.tracking = False
        self._start()

    cdef void _step(self, int d, double *e) noexcept nogil:
        cdef double now = self._centre(self.frame), amp, half
        if self.state == IDLE:
            if d >= 0:
                self._begin(d, e)
            return
        amp = self._amp(e, self.digit)   # raw: edge frames fail the checks but time the edge
        half = 0.5 * self.peak
        if d == self.digit and amp >= half:
            self.state = ON
            self.tracking = False
            if amp > self.peak:
                self.peak = amp
            self.last_amp = amp
            self.valid += 1
            if self.nrise < self.rise_len:
                self.rise[self.nrise] = amp
                self.nrise += 1
            if self._long_enough(now):
                self.cur = self.digit
            return
        if self.state == ON or self.tracking:
            self._track_end(now, amp, half)
        if d >= 0 and d != self.digit:
            self._finish()
            self._begin(d, e)
        elif not self.tracking and now - self.end_t >= self.off_min:
            self._finish()


cdef class DtmfGenerator:
    """Plays queued digits as DTMF, frame by frame: queue("123"), then generate(160)
    as often as needed (silence once the queue is empty). Each tone is a sine starting
    at phase 0 at its digit's start; low tone at level_dbm0, high at level_dbm0+twist_db."""

    cdef double rate, a_low, a_high
    cdef long long on, off, pos          # pos: sample within the current digit's on+off
    cdef int digit                       # -1: idle
    cdef object pending

    def __init__(self, on_ms=100, off_ms=100, level_dbm0=-7.0, twist_db=0.0, int rate=8000):
        self.rate = rate
        self.on = int(round(on_ms * rate / 1000))
        self.off = int(round(off_ms * rate / 1000))
        self.a_low = DBM0_RMS * 2 ** 0.5 * 10 ** (level_dbm0 / 20)
        self.a_high = self.a_low * 10 ** (twist_db / 20)
        self.pending = []
        self.digit = -1
        self.pos = 0

    def queue(self, digits):
        """Append digits ("0123456789*#ABCD"; a-d accepted) to play after those queued."""
        for ch in digits:
            if ch.upper() not in KEYS:
                raise ValueError(f"DTMF digit {ch!r} unknown: use 0-9, *, #, A-D")
            self.pending.append(KEYS.index(ch.upper()))

    @property
    def busy(self):
        """True while a digit or its pause is still being played."""
        return self.digit >= 0 or bool(self.pending)

    def generate(self, Py_ssize_t n):
        """The next n samples (int16)."""
        out = np.zeros(n, dtype=np.int16)
        cdef short[::1] o = out
        cdef Py_ssize_t done = 0, m
        while done < n:
            if self.digit < 0:
                if not self.pending:
                    break
                self.digit = self.pending.pop(0)
                self.pos = 0
            m = min(n - done, self.on + self.off - self.pos)
            with nogil:
                self._fill(o[done:done + m])
            done += m
            self.pos += m
            if self.pos >= self.on + self.off:
                self.digit = -1
        return out

    cdef void _fill(self, short[::1] o) noexcept nogil:
        cdef Py_ssize_t i
        cdef long long t
        cdef double wr = 2 * M_PI * ROW_F[self.digit // 4] / self.rate
        cdef double wc = 2 * M_PI * COL_F[self.digit % 4] / self.rate
        cdef double v
        for i in range(o.shape[0]):
            t = self.pos + i
            if t >= self.on:
                o[i] = 0
                continue
            v = self.a_low * sin(wr * t) + self.a_high * sin(wc * t)
            v = v + 0.5 if v >= 0 else v - 0.5   # round half away from zero
            o[i] = <short>(32767 if v > 32767 else (-32768 if v < -32768 else v))


def dtmf_samples(digits, on_ms=100, off_ms=100, level_dbm0=-7.0, twist_db=0.0, rate=8000):
    """int16 DTMF for `digits` ("0123456789*#ABCD"): each digit on_ms of tone then
    off_ms of silence; low tone at level_dbm0 (dBm0 per tone), high at +twist_db."""
    gen = DtmfGenerator(on_ms, off_ms, level_dbm0, twist_db, rate)
    gen.queue(digits)
    per = int(round(on_ms * rate / 1000)) + int(round(off_ms * rate / 1000))
    return gen.generate(per * len(digits))
