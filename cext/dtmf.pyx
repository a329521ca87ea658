# cython: language_level=3
"""DTMF detector (ITU-T Q.24) and generator (Q.23), one state object per channel.

Detector. Every 5 ms (hop H = N/4) a 20 ms sine-windowed frame (N = 160 at 8 kHz) is
correlated with the 8 DTMF frequencies (one complex DFT bin each). Why not spandsp's
102-sample Goertzel blocks: a bin 78 Hz wide cannot tell a tone 1.5 % off nominal
(accept) from one 3.5 % off (reject), and its -13 dB sidelobes let dial tone leak into
the row bins. Here each tone's frequency is measured from the bin's phase advance
between frames H apart, unambiguous over +-fs/(2H) = +-100 Hz, wider than the sine
window's +-75 Hz main lobe (outside it everything is >= 23 dB down, the neighbouring
DTMF tones >= 35 dB and dial tone >= 41 dB).
Cost, per sample: the window sin(pi m/N) is two complex exponentials, so a frame's bin
is half the difference of two plain DFT sums at w -+ V (V = pi/N), and a plain sum over
the frame is the sum of its four sub-blocks' sums. Each sample is therefore touched once,
by 32 multiply-adds (16 frequencies, re and im; _subblock, vectorised as 4 ymm FMAs per
sample). Each sub-block sum is turned into absolute phase once (a table row: the phase
repeats after 200 hops), so a frame is a plain sum of four, the window's own phase is an
eighth turn per frame, and the phase advance of a bin needs no correction.
Per frame (200 a second), cheapest checks first, so silence, noise and speech leave
early: sum(x^2) too small for any digit; the best row and column beat the other
rows/columns by 6 dB; both levels could reach min_level; both phase advances below the
angle that means 2.5 % off (midway between Q.24's 1.5 % accept and 3.5 % reject: a
cross-product test, no atan2); both levels, corrected for the window's loss at the
measured offset (a polynomial in the advance's cosine, no sin), reach min_level; twist
within limits (the row tone at most row_above_column_max_db = 8 dB above the column tone,
the column tone at most column_above_row_max_db = 4 dB above the row tone: the North
American limits of Telcordia LSSGR / ITU-T Q.24, as spandsp dtmf.c dtmf_rx compares
col < row*reverse_twist (4 dB) and col*normal_twist > row (8 dB) and Asterisk dsp.c
dtmf_detect the same; loop loss grows with frequency, so on a long loop the row tone
arrives louder; each limit has TWIST_SLACK_DB of slack so a pair exactly at it passes);
and the two tones carry >= 75 % of the frame's windowed energy (from
per-sub-block moments of x^2, speech and music do not).
Talk-off on voiced vowels (issue 10): a sustained vowel whose partials sit on a row and a
column (f0 100-240 Hz, F1 and F2 on or near them) passes every check above, its other
partials holding only 5-25 % of the energy; dial tone under a digit holds as much (20 %
at the Q.24 test's 6 dB below), so the energy share alone cannot tell them apart. Where
the rest lies can: dial tones are under 500 Hz (350-450 Hz in cext.toneplans), a
vowel's other partials are spread above (those next to each tone, F3). So spandsp dtmf.c dtmf_rx's and Asterisk dsp.c
dtmf_detect's total-energy test (dtmf_to_total_energy, DTMF_TO_TOTAL_ENERGY), on the band
above 500 Hz and by Parseval instead of a window model: the frame's windowed energy, less
its 0-500 Hz band (11 bins of the same window, 50 Hz apart), less each tone's energy as
that of its three bins at f - 50, f, f + 50 Hz (>= 97 % of a tone up to 2.5 % off, and
no gain correction that a wobbling partial could fool), must be under PARTIALS_MAX_DB
(-13.6 dB) of the pair's. A steady pair leaves <= -14.7 dB there at 15 dB S/N (white
noise), -18.8 dB or less with dial tone or offsets; the vowels of lab/talkoff.py leave
>= -12.4 dB. Edge frames fail it (the onset splatters), so it gates the digit, not
the frame: from its 3rd valid frame on, each valid frame is checked until one passes, and
only then is the digit confirmed (`current`) or reported. One 160 x 15 complex
correlation (folded about the frame's centre) per digit, with per-digit tables shared by
all detectors.
A frame-level state machine then times each digit where its envelope crosses half the
peak amplitude (for a symmetric window, the frame whose centre is on the edge), merges
interruptions shorter than 0.75*min_off, and reports digits lasting 0.75*min_on or more
(40 ms min => 30 ms threshold, between Q.24's 40 ms must-accept and 20 ms must-reject).

Assumes int16 samples; levels follow spandsp (0 dBm0 = sine of RMS 16112). Sample
indexes count from construction or reset(). The plain NumPy twin is cext/ref/dtmf.py.
"""

from libc.math cimport M_PI, sin, sqrt, sqrtf

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = "123A456B789C*0#D"
DBM0_RMS = 32767.0 * 10 ** (-3.14 / 20) / 2 ** 0.5
# 1/g^2 for the sine window's gain g(k) = cos(pi k) / (1 - 4 k^2) at a tone whose phase
# advance over one hop is phi (k = 2 phi / pi bins off centre), as a polynomial in
# u = 1 - cos(phi); least squares over the accepted |phi| < 2 pi * 2.5 % * 1633 / 200
# (the worst case, k = 0.82), max error 5e-5
GAIN_POLY = (1.00002958, 1.51132849, 1.64700344, 0.59738002, 3.88606203, -4.30553200,
             4.43545504)
cdef double GAIN_MIN2 = 0.25   # g^2 at that worst case is 0.2531

DEF NBINS = 8
DEF NLANE = 32          # 2 frequencies per tone (w - V, w + V) x 8 tones, re then im
DEF MAXEV = 64          # digits per chunk; a chunk is short enough never to fill it
DEF CHUNK = 16000       # samples per nogil pass (events are collected per pass)
DEF PIECE = 1024        # samples converted to float at a time
DEF RISE_MAX = 16
DEF PERIOD = 200        # sub-block phases repeat every 200 hops (1 s): see _tables

cdef double ROW_F[4]
cdef double COL_F[4]
ROW_F[:] = [697.0, 770.0, 852.0, 941.0]
COL_F[:] = [1209.0, 1336.0, 1477.0, 1633.0]
cdef double GP[7]
GP[:] = list(GAIN_POLY)
cdef double FREQ_TOL = 0.025
cdef double REL_PEAK = 10 ** (6.0 / 10)
cdef double RATIO_MIN = 0.75
cdef double LEVEL_SLACK_DB = 1.5
# a pair exactly at a twist limit is accepted despite estimate noise, one 0.5 dB past it is
# refused: the limit is tested against limit + TWIST_SLACK_DB
cdef double TWIST_SLACK_DB = 0.25
cdef double EDGE_FRACTION = 0.75
cdef double PARTIALS_MAX_DB = -13.6   # energy above 500 Hz beside the pair's, relative to it
DEF NLOW = 11                          # bins 0, 50, ..., 500 Hz (at 8 kHz): the low band
DEF NSIDE = 4                          # then row - 50, row + 50, column - 50, column + 50 Hz
DEF LOWHALF = 16                       # NLOW + NSIDE re (or im) lanes, padded to 2 vectors
DEF LOWLANE = 32                       # re lanes, then im lanes
DEF SIDE_HZ = 50.0                     # the side bins' distance from the tone (one bin)
cdef double QUIET = 0.9
cdef enum:
    IDLE = 0
    ON = 1
    OFF_PENDING = 2


def _tables(int rate, int n, int hop):
    """Column j = 8 g + k (g = 0, 1 for nu = w_k - V, w_k + V; V = pi / N, the sine
    window's own frequency), real parts in 0..15 and imaginary in 16..31.
    tab (hop, 32): exp(-j nu m) over one sub-block. ph (PERIOD, 32): exp(-j nu s hop),
    the absolute phase of sub-block s; nu * hop = 2 pi (f_k +- 25 Hz) / 200 for every
    rate, a whole number of turns after 200 sub-blocks. sq (2, hop): cos and sin of
    2 V m, for the frame's windowed energy (w^2 = (1 - cos 2Vm) / 2)."""
    freqs = np.array(ROWS + COLS)
    v = np.pi / n
    nus = (2 * np.pi * freqs[None, :] / rate + np.array([-v, v])[:, None]).ravel()
    tab = np.exp(-1j * np.outer(np.arange(hop), nus))
    ph = np.exp(-1j * np.outer(np.arange(PERIOD) * hop, nus))
    m = np.arange(hop)
    sq = np.array([np.cos(2 * v * m), np.sin(2 * v * m)], dtype=np.float32)

    def split(z):
        return np.ascontiguousarray(np.concatenate([z.real, z.imag], axis=1), dtype=np.float32)

    return split(tab), split(ph), sq


def _folded(freqs, int rate, int n):
    """(n/2, 2 len(freqs)): for m = 1..n/2, the sine window times cos (first half) and
    -sin (second half) of 2 pi f (m - n/2) / rate. Phase measured from the frame's centre
    (magnitudes are all we need), so the window is symmetric and cos even, sin odd about
    it: samples m and n - m share a row, their sum feeding the cos lanes and their
    difference the sin lanes; w(0) = 0 and row n/2 (m = n - m) is halved."""
    m = np.arange(1, n // 2 + 1)
    w = np.sin(np.pi * m / n)
    w[n // 2 - 1] *= 0.5
    ph = 2 * np.pi * np.outer(m - n / 2, np.asarray(freqs, dtype=float)) / rate
    return np.concatenate([w[:, None] * np.cos(ph), -w[:, None] * np.sin(ph)], axis=1)


_TALKOFF_TABLES = {}


def _talkoff_tables(int rate, int n):
    """(16, n/2, LOWLANE) float32, one table per digit: _folded for the low bins k rate/n,
    k = 0..NLOW-1 (0..500 Hz at 8 kHz) then the digit's side bins (row -+ SIDE_HZ, column
    -+ SIDE_HZ) in lanes 0..NLOW+NSIDE-1 (cos) and LOWHALF.. (sin), the rest zero. Made
    once per rate and shared by every detector (160 kB at 8 kHz)."""
    if (rate, n) not in _TALKOFF_TABLES:
        out = np.zeros((16, n // 2, LOWLANE), dtype=np.float32)
        for d in range(16):
            r, c = ROWS[d // 4], COLS[d % 4]
            f = np.concatenate([np.arange(NLOW) * rate / n,
                                [r - SIDE_HZ, r + SIDE_HZ, c - SIDE_HZ, c + SIDE_HZ]])
            z = _folded(f, rate, n)
            out[d, :, :f.size] = z[:, :f.size]
            out[d, :, LOWHALF:LOWHALF + f.size] = z[:, f.size:]
        _TALKOFF_TABLES[rate, n] = out
    return _TALKOFF_TABLES[rate, n]


cdef inline float _inverse_gain2(float u) noexcept nogil:
    """1/g^2 for a tone whose bin advances by phi per hop, u = 1 - cos(phi) (Estrin's
    scheme: a short dependency chain)."""
    cdef float u2 = u * u
    return (((<float>GP[0] + <float>GP[1] * u) + u2 * (<float>GP[2] + <float>GP[3] * u))
            + (u2 * u2) * ((<float>GP[4] + <float>GP[5] * u) + u2 * <float>GP[6]))


cdef class DtmfDetector:
    """Q.24 DTMF receiver for one channel: process() int16 buffers of any length."""

    cdef int rate, n, hop, rise_len
    cdef double on_min, off_min
    cdef float row_over_col, col_over_row, e_min, quiet, share, rel_peak
    cdef float cre[8]            # exp(-j V n0) of a frame starting at n0, by frame % 8
    cdef float cim[8]
    cdef float t2[NBINS]        # tan^2 of the largest accepted phase advance per tone
    cdef float[:, ::1] tab
    cdef float[:, ::1] ph
    cdef float[:, ::1] sq
    cdef float sub[4][NLANE]     # last four sub-block sums in absolute phase (ring: s % 4)
    cdef float pw[4]             # and their sum(x^2)
    cdef float mre[4]            # and j^s sum(x^2 exp(j 2 V m)) (see _windowed_energy)
    cdef float mim[4]
    cdef float[::1] buf          # last N samples, then the chunk being processed
    cdef long long total, frame
    cdef int fill                # samples in buf (tail included)
    cdef float xre[NBINS]        # frame bins in absolute phase: exp(-j w_k n0) X_k
    cdef float xim[NBINS]
    cdef float amps[3][NBINS]    # bin amplitudes |X| of the last three frames (frame % 3)
    # state machine
    cdef int state, digit, cur, valid, first, nrise
    cdef bint clean              # the digit passed the talk-off check
    cdef double peak, last_amp, start_t, end_t
    cdef bint start_fixed, tracking
    cdef double rise[RISE_MAX]
    cdef int nev
    cdef int ev_digit[MAXEV]
    cdef long long ev_start[MAXEV]
    cdef long long ev_end[MAXEV]
    # talk-off check (last, so that the hot fields above keep their alignment)
    cdef float[:, :, ::1] tt     # (16, n/2, LOWLANE): talk-off bins (_talkoff_tables)
    cdef float partials          # 10^(PARTIALS_MAX_DB/10)
    cdef float er_raw, ec_raw    # the frame's pair: |X|^2 at the nominal frequencies

    def __init__(self, int rate=8000, double row_above_column_max_db=8.0,
                 double column_above_row_max_db=4.0, double min_level_dbm0=-36,
                 int min_on_ms=40, int min_off_ms=40):
        cdef int k
        if rate <= 0 or rate % 200:
            raise ValueError(f"DTMF detector rate {rate} Hz unsupported: use a multiple of 200 Hz (8000)")
        self.rate = rate
        self.rel_peak = REL_PEAK
        self.n = int(round(rate * 0.02))
        self.hop = self.n // 4
        self.rise_len = self.n // self.hop + 4
        # twist limits as power ratios (see the module docstring for the direction)
        self.row_over_col = 10 ** ((row_above_column_max_db + TWIST_SLACK_DB) / 10)
        self.col_over_row = 10 ** ((column_above_row_max_db + TWIST_SLACK_DB) / 10)
        amp_min = DBM0_RMS * 2 ** 0.5 * 10 ** ((min_level_dbm0 - LEVEL_SLACK_DB) / 20)
        win = np.sin(np.pi * np.arange(self.n) / self.n)
        # |X|^2 of a tone at amp_min; the frame energy share of a lone tone's |X|^2
        self.e_min = (amp_min * win.sum() / 2) ** 2
        self.share = RATIO_MIN * win.sum() ** 2 / (2 * np.sum(win ** 2))
        # sum(x^2) of a frame below which no tone can reach GAIN_MIN2*e_min (Cauchy-
        # Schwarz: |X|^2 <= sum(x^2) sum(w^2)): skipping such frames never changes a
        # decision, it only zeroes sub-threshold amplitudes
        self.quiet = QUIET * GAIN_MIN2 * self.e_min / np.sum(win ** 2)
        for k in range(8):   # frame f starts at (f - 4) hop and V hop = pi / 4
            c = np.exp(-1j * np.pi * (k - 4) / 4)
            self.cre[k] = c.real
            self.cim[k] = c.imag
        self.on_min = EDGE_FRACTION * min_on_ms * rate / 1000.0
        self.off_min = EDGE_FRACTION * min_off_ms * rate / 1000.0
        for k, f in enumerate(ROWS + COLS):
            # |offset| < FREQ_TOL * f  <=>  |phase advance over a hop| < this angle
            self.t2[k] = np.tan(2 * M_PI * FREQ_TOL * f * self.hop / rate) ** 2
        self.tab, self.ph, self.sq = _tables(rate, self.n, self.hop)
        self.tt = _talkoff_tables(rate, self.n)
        self.partials = 10 ** (PARTIALS_MAX_DB / 10)
        self.buf = np.zeros(self.n + PIECE, dtype=np.float32)
        self.reset()

    def reset(self):
        """Forget everything: samples count from 0 again."""
        self.buf[:] = 0
        self.fill = self.n
        self.total = 0
        self.frame = 0
        for k in range(NBINS):
            self.xre[k] = self.xim[k] = 0.0
            self.amps[0][k] = self.amps[1][k] = self.amps[2][k] = 0.0
        for k in range(4):
            self.pw[k] = self.mre[k] = self.mim[k] = 0.0
            for j in range(NLANE):
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
        cdef Py_ssize_t pos = 0, m = x.shape[0], k
        while pos < m:   # pieces small enough that the converted samples stay in L1
            k = min(PIECE, m - pos)
            self._piece(&x[pos], k)
            pos += k

    cdef void _piece(self, const short *src, Py_ssize_t m) noexcept nogil:
        cdef Py_ssize_t i, next_end
        cdef int n = self.n
        cdef float *dst = &self.buf[self.fill]
        for i in range(m):
            dst[i] = src[i]
        self.fill += <int>m
        self.total += m
        # frame f covers absolute samples [f*hop - n, f*hop); buf[fill-1] is total-1
        next_end = (self.frame + 1) * self.hop
        while next_end <= self.total:
            self.frame += 1
            self._frame(&self.buf[self.fill - <int>(self.total - next_end) - n])
            next_end += self.hop
        for i in range(n):
            self.buf[i] = self.buf[self.fill - n + i]
        self.fill = n

    cdef void _frame(self, float *xp) noexcept nogil:
        """Frame self.frame, whose n samples start at xp: its newest sub-block (the last
        hop samples, absolute sub-block s = frame - 1) joins the ring, then the frame's
        bins are the ring's sum (see _bins), classified and fed to the state machine."""
        cdef float e[NBINS]
        cdef float pr[NBINS]
        cdef float pi[NBINS]
        cdef int k, d = -1
        cdef long long s = self.frame - 1
        cdef int q = <int>(s % 4)
        cdef float en
        cdef float *amp = self.amps[self.frame % 3]
        for k in range(NBINS):
            pr[k] = self.xre[k]
            pi[k] = self.xim[k]
        en = self._subblock(xp + self.n - self.hop, q, <int>(s % PERIOD))
        # the new sub-block's sum(x^2) from the register, the others from the ring (a
        # vector load of the ring right after the store would stall store forwarding)
        if (en + self.pw[q ^ 1]) + (self.pw[q ^ 2] + self.pw[q ^ 3]) < self.quiet:
            for k in range(NBINS):   # too quiet for any digit: skip the rest of the frame
                self.xre[k] = self.xim[k] = amp[k] = 0.0
        else:
            self._bins(e, amp)
            d = self._classify(e, pr, pi, xp)
        self._step(d, xp)

    cdef float _subblock(self, float *xp, int q, int p) noexcept nogil:
        """The hot loop: correlate hop samples with the 16 frequencies (32 lanes, held in
        registers; even and odd samples feed separate sums so FMA latencies overlap),
        then turn the sums into absolute phase (row p of ph) into ring slot q. Returns
        the sub-block's sum(x^2), also kept in the ring."""
        cdef int k, i, h = self.hop
        cdef float a0[NLANE]
        cdef float a1[NLANE]
        cdef float x0, x1, y, en = 0, mc = 0, ms = 0
        cdef const float *t0 = &self.tab[0, 0]
        cdef const float *rot = &self.ph[p, 0]
        cdef float *out = self.sub[q]
        for k in range(NLANE):
            a0[k] = a1[k] = 0
        for i in range(0, h - 1, 2):
            x0 = xp[i]
            x1 = xp[i + 1]
            for k in range(NLANE):
                a0[k] += x0 * t0[k]
                a1[k] += x1 * t0[k + NLANE]
            t0 += 2 * NLANE
        if h % 2:
            x0 = xp[h - 1]
            for k in range(NLANE):
                a0[k] += x0 * t0[k]
        for k in range(NLANE):
            a0[k] += a1[k]
        for k in range(NLANE // 2):
            out[k] = a0[k] * rot[k] - a0[k + 16] * rot[k + 16]
            out[k + 16] = a0[k] * rot[k + 16] + a0[k + 16] * rot[k]
        for i in range(h):
            y = xp[i] * xp[i]
            en += y
            mc += y * self.sq[0, i]
            ms += y * self.sq[1, i]
        self.pw[q] = en
        # times j^s, s = q mod 4: absolute phase, as for the bins
        self.mre[q] = mc if q == 0 else (-ms if q == 1 else (-mc if q == 2 else ms))
        self.mim[q] = ms if q == 0 else (mc if q == 1 else (-ms if q == 2 else -mc))
        return en

    cdef inline void _bins(self, float *e, float *amp) noexcept nogil:
        """Sine-windowed bins of the frame (n0 = its first sample), up to a constant
        phase, in absolute phase: with w(m) = sin(V m) = (exp(jVm) - exp(-jVm)) / 2j,
        X = 0.5 (c P(w - V) - conj(c) P(w + V)), P(nu) the ring's sum and
        c = exp(-j V n0), an eighth of a turn per frame."""
        cdef float sr[NLANE]
        cdef float cr, ci, br, bi, gr, gi
        cdef int j, k, f8 = <int>(self.frame % 8)
        for j in range(NLANE):
            sr[j] = (self.sub[0][j] + self.sub[1][j]) + (self.sub[2][j] + self.sub[3][j])
        cr = self.cre[f8]
        ci = self.cim[f8]
        for k in range(NBINS):
            br = sr[k]
            gr = sr[8 + k]
            bi = sr[16 + k]
            gi = sr[24 + k]
            self.xre[k] = 0.5 * ((cr * br - ci * bi) - (cr * gr + ci * gi))
            self.xim[k] = 0.5 * ((cr * bi + ci * br) - (cr * gi - ci * gr))
        for k in range(NBINS):
            e[k] = self.xre[k] * self.xre[k] + self.xim[k] * self.xim[k]
        for k in range(NBINS):       # for the state machine's envelope (one vector sqrt)
            amp[k] = sqrtf(e[k])

    cdef inline double _windowed_energy(self) noexcept nogil:
        """sum (x w)^2 over the frame, from the ring: with t = p hop + m in the frame,
        w^2 = (1 - Re exp(j 2 V t)) / 2 and exp(j 2 V p hop) = j^p, so it is half the
        frame's sum(x^2) less half of Re(j^p M_p) summed, M_p = sum(x^2 exp(j 2 V m)) of
        sub-block p; with the ring's j^s M_s that is Re(j^-frame sum)."""
        cdef float zr = (self.mre[0] + self.mre[1]) + (self.mre[2] + self.mre[3])
        cdef float zi = (self.mim[0] + self.mim[1]) + (self.mim[2] + self.mim[3])
        cdef int f4 = <int>(self.frame % 4)
        cdef float re = zr if f4 == 0 else (zi if f4 == 1 else (-zr if f4 == 2 else -zi))
        return 0.5 * (((self.pw[0] + self.pw[1]) + (self.pw[2] + self.pw[3])) - re)

    # -- per-frame decision ----------------------------------------------------------
    cdef inline int _best(self, float *e, int lo) noexcept nogil:
        """Index of the strongest of e[lo..lo+3], or -1 if another is within 6 dB
        (few branches: on noise and speech the winner is random)."""
        cdef float m = max(max(e[lo], e[lo + 1]), max(e[lo + 2], e[lo + 3])), rel = self.rel_peak
        if ((e[lo] * rel > m) + (e[lo + 1] * rel > m) + (e[lo + 2] * rel > m)
                + (e[lo + 3] * rel > m)) != 1:
            return -1   # none (silence) or more than one within 6 dB of the strongest
        return lo + (e[lo + 1] == m) + 2 * (e[lo + 2] == m) + 3 * (e[lo + 3] == m)

    cdef int _classify(self, float *e, float *pr, float *pi, float *xp) noexcept nogil:
        """Cheapest checks first: peaks, level, frequency, twist, then the energy share."""
        cdef int r = self._best(e, 0), c
        cdef float er, ec
        cdef float zr, zi, dr, zc, zj, dc, ur = 0.0, uc = 0.0
        if r < 0:
            return -1
        c = self._best(e, 4)
        if c < 0:
            return -1
        # the window keeps at least GAIN_MIN2 of the energy within the tolerance
        if e[r] < GAIN_MIN2 * self.e_min or e[c] < GAIN_MIN2 * self.e_min:
            return -1
        # frequency: the bins' phase advance since the previous frame, z = X conj(Xprev)
        # (absolute phase: zero advance at the nominal frequency), must be under
        # atan(sqrt(t2)), i.e. the tone within FREQ_TOL of nominal; z = 0 (no previous
        # frame to compare with) means no offset
        zr = self.xre[r] * pr[r] + self.xim[r] * pi[r]
        zi = self.xim[r] * pr[r] - self.xre[r] * pi[r]
        zc = self.xre[c] * pr[c] + self.xim[c] * pi[c]
        zj = self.xim[c] * pr[c] - self.xre[c] * pi[c]
        dr = zr * zr + zi * zi
        dc = zc * zc + zj * zj
        if dr != 0 and (zr <= 0 or zi * zi >= self.t2[r] * zr * zr):
            return -1
        if dc != 0 and (zc <= 0 or zj * zj >= self.t2[c] * zc * zc):
            return -1
        # energies before the window's loss at the measured offsets (both chains at once)
        if dr != 0:
            ur = 1 - zr / sqrtf(dr)
        if dc != 0:
            uc = 1 - zc / sqrtf(dc)
        er = e[r] * _inverse_gain2(ur)
        ec = e[c] * _inverse_gain2(uc)
        if er < self.e_min or ec < self.e_min:
            return -1
        if er > ec * self.row_over_col or ec > er * self.col_over_row:
            return -1   # twist: row too far above the column, or column above the row
        if er + ec < self.share * self._windowed_energy():
            return -1
        self.er_raw = e[r]
        self.ec_raw = e[c]
        return r * 4 + (c - 4)

    cdef float _partials(self, int d, float *xp) noexcept nogil:
        """The talk-off measure of the frame just classified as digit d (see the module
        docstring): its energy above 500 Hz other than the pair's, over the pair's. Each
        tone's energy is that of its three bins f - 50, f, f + 50 Hz (Parseval on a grid
        through f: the sine window puts >= 97 % of a tone up to 2.5 % off there), no
        model of the window, so a wobbling partial cannot be over-corrected."""
        cdef float acc[LOWLANE]
        cdef float acc1[LOWLANE]
        cdef float u0, v0, u1, v1, low_e, pair, side_e
        cdef const float *t
        cdef const float *x = xp
        cdef int m, j, n = self.n, h = n // 2
        t = &self.tt[d, 0, 0]
        for j in range(LOWLANE):
            acc[j] = acc1[j] = 0
        # samples m and n - m together (see _folded), m = 1..n/2 (n/2 is even), two at a
        # time in two chains so that FMA latencies overlap
        for m in range(1, h + 1, 2):
            u0 = x[m] + x[n - m]
            v0 = x[m] - x[n - m]
            u1 = x[m + 1] + x[n - m - 1]
            v1 = x[m + 1] - x[n - m - 1]
            for j in range(LOWHALF):
                acc[j] += u0 * t[j]
                acc[LOWHALF + j] += v0 * t[LOWHALF + j]
                acc1[j] += u1 * t[LOWLANE + j]
                acc1[LOWHALF + j] += v1 * t[LOWLANE + LOWHALF + j]
            t += 2 * LOWLANE
        for j in range(LOWLANE):
            acc[j] += acc1[j]
        low_e = 0
        for j in range(NLOW):
            low_e += acc[j] * acc[j] + acc[LOWHALF + j] * acc[LOWHALF + j]
        side_e = 0
        for j in range(NLOW, NLOW + NSIDE):
            side_e += acc[j] * acc[j] + acc[LOWHALF + j] * acc[LOWHALF + j]
        # Parseval over n bins: a real signal's bin k != 0 stands for k and n - k
        low_e = (2 * low_e - acc[0] * acc[0]) / n
        pair = 2 * (side_e + self.er_raw + self.ec_raw) / n
        return (<float>self._windowed_energy() - pair - low_e) / pair

    cdef void _check_partials(self, float *xp) noexcept nogil:
        """From the digit's 3rd valid frame (the first two often cover its edge), on each
        valid frame until one passes the talk-off check (then it is clean for good)."""
        self.clean = self._partials(self.digit, xp) <= self.partials

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

    cdef inline double _amp(self, long long f, int d) noexcept nogil:
        """Envelope of digit d in frame f (one of the last three): |X_row| + |X_col|."""
        cdef float *a = self.amps[(f + 3) % 3]   # f >= -1
        return <double>a[d // 4] + a[4 + d % 4]

    cdef void _begin(self, int d) noexcept nogil:
        self.state = ON
        self.digit = d
        self.rise[0] = self._amp(self.frame - 2, d)
        self.rise[1] = self._amp(self.frame - 1, d)
        self.peak = self.last_amp = self._amp(self.frame, d)
        self.rise[2] = self.last_amp
        self.nrise = 3
        self.first = <int>(self.frame - 2)
        self.valid = 1
        self.clean = False

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
        if self._long_enough(self.end_t) and self.clean and self.nev < MAXEV:
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

    cdef inline void _step(self, int d, float *xp) noexcept nogil:
        cdef double now, amp, half
        if self.state == IDLE:
            if d >= 0:
                self._begin(d)
            return
        now = self._centre(self.frame)
        amp = self._amp(self.frame, self.digit)   # raw: edge frames fail the checks but time the edge
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
            if not self.clean and self.valid >= 3:
                self._check_partials(xp)
            if self.clean and self._long_enough(now):
                self.cur = self.digit
            return
        if self.state == ON or self.tracking:
            self._track_end(now, amp, half)
        if d >= 0 and d != self.digit:
            self._finish()
            self._begin(d)
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
