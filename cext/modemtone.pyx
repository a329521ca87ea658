# cython: language_level=3
"""Fax and modem connect-tone detector for the media path of every port, both ways: CNG,
CED/ANS (2100 Hz), ANS/ (with phase reversals), ANSam, ANSam/ (V.8, 15 Hz AM) and the
V.21 channel-2 HDLC flag preamble; what tells the firmware to switch a call to the
fax/modem passthrough profile (issue 10, part 5).

    det = ModemToneDetector(rate=8000)        # one per port and direction
    for tone, t in det.process(int16_frame):  # any length; 160 samples usual
        tone.kind                             # "fax" or "modem"
        tone.disables_echo_canceller          # True for the phase-reversing tones
    det.reset()

The algorithm, its thresholds and where each comes from (T.30, V.25, V.8, V.21, G.164/
G.165/G.168 and spandsp's modem_connect_tones.c) are described in the reference twin,
cext/ref/modemtone.py, which this kernel follows step for step (same integer tables, same
decisions; the tests require identical events). In short: 5 ms blocks correlated with
1100 and 2100 Hz (integer tables, exact int64 sums), block-to-block rotation for the
frequency offset and the phase reversals, the 15 Hz component of the block amplitudes for
the AM; per sample, a 5 ms sliding 1650/1850 Hz discriminator whose mark/space run
lengths reveal back-to-back 0x7E flags. Everything runs in C without the GIL, a few
multiply-adds per sample; state carries across calls, so any framing gives the same events.

Classification (reported once per tone, at the end of the deciding block):
  2100 Hz with a reversal on the V.25 450 ms grid -> CED_PR / ANSAM_PR after 0.5 s;
  2100 Hz without -> CED / ANSAM after 1.0 s; AM index >= 0.1 -> the ANSAM variants;
  1100 Hz burst of 0.425-0.575 s, the 50 ms either side >= 6 dB quieter -> CNG, 60 ms after it;
  5 back-to-back V.21 flags -> V21_PREAMBLE.
`kind` ("fax"/"modem") follows T.30 and V.8: CNG, CED (T.30's 2100 Hz without reversals;
spandsp's MODEM_CONNECT_TONES_FAX_CED is its ANS) and the V.21 preamble are fax; ANS/,
ANSam and ANSam/ are data-modem answer tones (V.25, V.8). A V.34 fax (T.30 Annex F) answers
with ANSam/ and is reported "modem": the passthrough profile is the same either way.
`disables_echo_canceller` is the G.165/G.168 tone-disabler rule: only 2100 Hz WITH phase
reversals disables an echo canceller (plain 2100 Hz disables echo suppressors only, G.164).

Assumes linear 16-bit PCM (decode G.711 first) at a rate that is a multiple of 200 Hz from
8000 to 16000 Hz.
"""

import enum
import math

import numpy as np

cimport cython
from libc.math cimport M_PI, atan2, fabs, hypot, sin, sqrt
from libc.stdint cimport int16_t, int64_t
from libc.string cimport memset

DBM0_RMS = 32767.0 * 10 ** (-3.14 / 20) / math.sqrt(2)  # spandsp's 0 dBm0
COEF = 256                    # integer table amplitude: products and sums fit int64 exactly
FLOOR_DBM0 = -46.0            # tone power floor: detection down to -43 dBm0
SHARE = 0.7                   # tone share of the block energy
ANS_HZ, ANS_TOL_HZ = 2100.0, 25.0   # V.25 2100 +-15 Hz; G.164/G.165 disabler 2100 +-21 Hz
CNG_HZ, CNG_TOL_HZ = 1100.0, 42.0   # T.30 1100 +-38 Hz
BLOCK_S = 0.005
CNG_MIN_S, CNG_MAX_S = 0.425, 0.575  # T.30 0.5 s +-15 %
EDGE_S, EDGE_RATIO, EDGE_GUARD = 0.05, 0.25, 2
PR_MIN_S, ANS_MIN_S = 0.5, 1.0
REV_CONFIRM_S, REV_REFRACTORY_S = 0.05, 0.1
REV_PERIOD_S, REV_TOL_S, REV_SLACK_S = 0.45, 0.025, 0.02  # V.25: every 450 +-25 ms
AM_HZ, AM_MIN_INDEX = 15.0, 0.1      # V.8: 15 Hz, index 0.2 +-0.05
V21_MARK_HZ, V21_SPACE_HZ, V21_BAUD = 1650.0, 1850.0, 300.0
V21_FLAGS, V21_SHARE, V21_REARM_S = 5, 0.6, 0.05  # spandsp HDLC_FRAMING_OK_THRESHOLD
SPACE_BITS, MARK_BITS, RUN_TOL_BITS = 2.0, 6.0, 0.6

# C copies of the thresholds for the nogil code
cdef int C_EDGE_GUARD = EDGE_GUARD
cdef double C_SHARE = SHARE
cdef double C_AM_MIN_INDEX = AM_MIN_INDEX
cdef double C_EDGE_RATIO = EDGE_RATIO
cdef double C_V21_SHARE = V21_SHARE
cdef double C_SPACE_BITS = SPACE_BITS
cdef double C_MARK_BITS = MARK_BITS
cdef double C_RUN_TOL_BITS = RUN_TOL_BITS
cdef int C_V21_FLAGS = V21_FLAGS

cdef enum:
    PRODUCTS = 7      # rotation estimate over 7 block-to-block products (35 ms)
    MAX_GAP = 3       # non-tone blocks bridged inside a tone (a reversal blanks one)
    AM_SKIP = 2       # first blocks of a run left out of the AM estimate (onset)
    AM_TAB = 40       # 15 Hz at 200 blocks/s: 3 cycles every 40 blocks
    E_RING = 16       # block energies kept for the silence edges
    MAX_W = 80        # samples per block at 16 kHz
    MAX_TAB = 320     # table length at 16 kHz (rate / gcd(rate, 50))
    CHUNK = 4096      # samples per nogil pass
    MAX_EV = 64       # events one chunk can produce, with a wide margin

cdef enum:            # tone codes inside the kernel
    T_CNG = 0
    T_CED = 1
    T_CED_PR = 2
    T_ANSAM = 3
    T_ANSAM_PR = 4
    T_V21 = 5


class ModemTone(enum.Enum):
    """A connect tone. kind: "fax" or "modem"; disables_echo_canceller: G.165/G.168 rule."""

    CNG = "CNG"
    CED = "CED"
    CED_PR = "CED_PR"
    ANSAM = "ANSAM"
    ANSAM_PR = "ANSAM_PR"
    V21_PREAMBLE = "V21_PREAMBLE"

    @property
    def kind(self):
        """"fax" for CNG, CED and the V.21 preamble; "modem" for ANS/, ANSam, ANSam/."""
        fax = (ModemTone.CNG, ModemTone.CED, ModemTone.V21_PREAMBLE)
        return "fax" if self in fax else "modem"

    @property
    def disables_echo_canceller(self):
        """True for 2100 Hz with phase reversals (G.165 / G.168 tone disabler)."""
        return self in (ModemTone.CED_PR, ModemTone.ANSAM_PR)


_CODES = [ModemTone.CNG, ModemTone.CED, ModemTone.CED_PR, ModemTone.ANSAM,
          ModemTone.ANSAM_PR, ModemTone.V21_PREAMBLE]


cdef struct Track:
    double tol
    int is_ans
    int cos_t[MAX_TAB]
    int sin_t[MAX_TAB]
    double zr[3]
    double zi[3]
    double pr[PRODUCTS]
    double pi[PRODUCTS]
    double rr[3]
    double ri[3]
    int in_run, bad, n_ok, am_n, reversals, decided
    int64_t first, last_ok, rev_pending, rev_last, rev_cand, pending_at
    double sum_p, am_cr, am_ci, am_wr, am_wi, am_s, am_last, pre_e, pending_p, pending_pre


cdef struct Params:
    int rate, n, table_len, edge_blocks, cng_min, cng_max, pr_min, ans_min
    int rev_confirm, rev_refractory, rev_lo, rev_hi, v21_rearm
    double p_scale, floor, bit
    double am_r[AM_TAB]
    double am_i[AM_TAB]


cdef struct V21:
    int mc[MAX_TAB]
    int ms[MAX_TAB]
    int sc[MAX_TAB]
    int ss[MAX_TAB]
    int64_t hist[MAX_W][5]
    int64_t sums[5]
    int hpos, state, run, flags, prev_space_ok, announced
    int64_t no_carrier
    double run_p, run_e


cdef struct Events:
    int n
    int64_t end[MAX_EV]
    int tone[MAX_EV]


cdef inline void emit(Events *ev, int tone, int64_t end) noexcept nogil:
    if ev.n < MAX_EV:
        ev.end[ev.n] = end
        ev.tone[ev.n] = tone
        ev.n += 1


cdef inline double mean_e(double *ring, int count, int skip) noexcept nogil:
    """Mean square over `count` blocks ending `skip` blocks before the newest (ring is
    kept oldest first, newest at E_RING - 1; summed oldest first like the twin)."""
    cdef double s = 0.0
    cdef int k
    for k in range(E_RING - skip - count, E_RING - skip):
        s += ring[k]
    return s / count


cdef void track_reset(Track *t) noexcept nogil:
    cdef int k
    for k in range(3):
        t.zr[k] = 0.0
        t.zi[k] = 0.0
        t.rr[k] = 0.0
        t.ri[k] = 0.0
    for k in range(PRODUCTS):
        t.pr[k] = 0.0
        t.pi[k] = 0.0
    t.in_run = 0
    t.first = t.last_ok = 0
    t.bad = t.n_ok = 0
    t.sum_p = 0.0
    t.am_cr = t.am_ci = t.am_wr = t.am_wi = 0.0
    t.am_s = t.am_last = 0.0
    t.am_n = 0
    t.rev_pending = -1
    t.rev_last = -1000000000
    t.reversals = 0
    t.rev_cand = -1000000000
    t.decided = 0
    t.pre_e = 0.0
    t.pending_at = -1
    t.pending_p = t.pending_pre = 0.0


cdef void track_start(Track *t, Params *p, double *ring, int64_t b) noexcept nogil:
    t.in_run = 1
    t.first = b
    t.n_ok = 0
    t.sum_p = 0.0
    t.bad = 0
    t.am_cr = t.am_ci = t.am_wr = t.am_wi = 0.0
    t.am_s = 0.0
    t.am_n = 0
    t.rev_pending = -1
    t.rev_last = -1000000000
    t.reversals = 0
    t.rev_cand = -1000000000
    t.decided = 0
    t.pre_e = mean_e(ring, p.edge_blocks, 1 + C_EDGE_GUARD)


cdef void track_end(Track *t, Params *p) noexcept nogil:
    cdef int64_t dur
    t.in_run = 0
    if t.is_ans:
        return
    dur = t.last_ok - t.first + 1
    if p.cng_min <= dur <= p.cng_max and t.n_ok:
        t.pending_at = t.last_ok + C_EDGE_GUARD + p.edge_blocks
        t.pending_p = t.sum_p / t.n_ok
        t.pending_pre = t.pre_e


cdef double am_index(Track *t) noexcept nogil:
    cdef double m, cr, ci
    if t.am_n == 0 or t.am_s <= 0:
        return 0.0
    m = t.am_s / t.am_n
    cr = t.am_cr - (m * t.am_wr - 0.0 * t.am_wi)
    ci = t.am_ci - (m * t.am_wi + 0.0 * t.am_wr)
    return 2 * hypot(cr, ci) / t.am_s


cdef void ans_update(Track *t, Params *p, Events *ev, int64_t b) noexcept nogil:
    cdef double mean_p, p0, p2, ur, ui, a, u2r, u2i, qr, qi, wr, wi
    cdef int am, tone
    cdef int64_t age, r, since
    if t.rev_pending >= 0 and b - t.rev_pending >= p.rev_confirm:
        r = t.rev_pending
        since = r - t.rev_cand
        # on time after the onset or the previous reversal (or two periods): see the twin
        if (p.rev_lo <= r - t.first <= p.rev_hi or p.rev_lo <= since <= p.rev_hi
                or 2 * p.rev_lo <= since <= 2 * p.rev_hi):
            t.reversals += 1
        t.rev_cand = r
        t.rev_pending = -1
    if (t.rev_pending < 0 and b - t.rev_last >= p.rev_refractory and b - 2 - PRODUCTS >= t.first
            and (t.rr[0] != 0 or t.ri[0] != 0) and t.n_ok > 0):
        mean_p = t.sum_p / t.n_ok
        p0 = (t.zr[2] * t.zr[2] + t.zi[2] * t.zi[2]) * p.p_scale
        p2 = (t.zr[0] * t.zr[0] + t.zi[0] * t.zi[0]) * p.p_scale
        if p0 >= 0.25 * mean_p and p2 >= 0.25 * mean_p:
            a = hypot(t.rr[0], t.ri[0])
            ur = t.rr[0] / a
            ui = t.ri[0] / a
            u2r = ur * ur - ui * ui
            u2i = ur * ui + ui * ur
            # q = z * conj(z2) * conj(u^2), evaluated left to right as in the twin
            wr = t.zr[2] * t.zr[0] - t.zi[2] * (-t.zi[0])
            wi = t.zr[2] * (-t.zi[0]) + t.zi[2] * t.zr[0]
            qr = wr * u2r - wi * (-u2i)
            qi = wr * (-u2i) + wi * u2r
            if qr < -0.5 * hypot(qr, qi):
                t.rev_pending = b
                t.rev_last = b
    if t.decided:
        return
    age = b - t.first + 1
    am = am_index(t) >= C_AM_MIN_INDEX
    if t.reversals and age >= p.pr_min:
        tone = T_ANSAM_PR if am else T_CED_PR
    elif (not t.reversals and t.rev_pending < 0 and age >= p.ans_min
          and b - t.rev_cand > p.rev_hi):
        tone = T_ANSAM if am else T_CED
    else:
        return
    t.decided = 1
    emit(ev, tone, (b + 1) * p.n)


cdef void track_block(Track *t, Params *p, double *ring, Events *ev, int64_t b,
                      double zr, double zi, double e) noexcept nogil:
    cdef double rr = 0.0, ri = 0.0, df, u, g, pw, wr, wi
    cdef int k, ok
    for k in range(PRODUCTS - 1):
        t.pr[k] = t.pr[k + 1]
        t.pi[k] = t.pi[k + 1]
    # z * conj(z_prev)
    t.pr[PRODUCTS - 1] = zr * t.zr[2] - zi * (-t.zi[2])
    t.pi[PRODUCTS - 1] = zr * (-t.zi[2]) + zi * t.zr[2]
    for k in range(2):
        t.zr[k] = t.zr[k + 1]
        t.zi[k] = t.zi[k + 1]
        t.rr[k] = t.rr[k + 1]
        t.ri[k] = t.ri[k + 1]
    t.zr[2] = zr
    t.zi[2] = zi
    for k in range(PRODUCTS):
        rr += t.pr[k]
        ri += t.pi[k]
    t.rr[2] = rr
    t.ri[2] = ri
    if rr != 0 or ri != 0:
        df = atan2(ri, rr) * p.rate / (2 * M_PI * p.n)
    else:
        df = 1e9
    u = df * p.n / p.rate
    g = sin(M_PI * u) / (M_PI * u) if u != 0 else 1.0
    pw = (zr * zr + zi * zi) * p.p_scale / (g * g) if g > 0.1 else 0.0
    ok = pw >= p.floor and pw >= C_SHARE * e / p.n and fabs(df) <= t.tol
    if ok:
        if not t.in_run:
            track_start(t, p, ring, b)
        t.last_ok = b
        t.bad = 0
        t.n_ok += 1
        t.sum_p += pw
        t.am_last = sqrt(pw)
    elif t.in_run:
        t.bad += 1
        if t.bad > MAX_GAP:
            track_end(t, p)
            return
    if t.in_run:
        if b - t.first >= AM_SKIP:
            wr = p.am_r[b % AM_TAB]
            wi = p.am_i[b % AM_TAB]
            t.am_cr += t.am_last * wr
            t.am_ci += t.am_last * wi
            t.am_wr += wr
            t.am_wi += wi
            t.am_s += t.am_last
            t.am_n += 1
        if t.is_ans:
            ans_update(t, p, ev, b)


cdef void cng_check(Track *t, Params *p, double *ring, Events *ev, int64_t b) noexcept nogil:
    cdef double post, limit
    if b != t.pending_at:
        return
    t.pending_at = -1
    post = mean_e(ring, p.edge_blocks, 0)
    limit = C_EDGE_RATIO * t.pending_p
    if t.pending_pre <= limit and post <= limit:
        emit(ev, T_CNG, (b + 1) * p.n)


cdef void v21_run_end(V21 *v, Params *p, Events *ev, int64_t n) noexcept nogil:
    cdef double bits = v.run / p.bit
    cdef double pw = v.run_p * p.p_scale
    cdef double e = v.run_e / p.n
    cdef int carrier = pw >= C_V21_SHARE * e and pw >= p.floor * v.run
    # one report per preamble: re-armed only by 50 ms without carrier
    v.no_carrier = 0 if carrier else v.no_carrier + v.run
    if v.no_carrier >= p.v21_rearm:
        v.announced = 0
    if v.state < 0:
        v.prev_space_ok = carrier and fabs(bits - C_SPACE_BITS) <= C_RUN_TOL_BITS
        if not v.prev_space_ok:
            v.flags = 0
        return
    if carrier and v.prev_space_ok and fabs(bits - C_MARK_BITS) <= C_RUN_TOL_BITS:
        v.flags += 1
        if v.flags >= C_V21_FLAGS and not v.announced:
            v.announced = 1
            emit(ev, T_V21, n + 1)
    else:
        v.flags = 0
    v.prev_space_ok = 0


cdef inline void v21_sample(V21 *v, Params *p, Events *ev, int64_t x, int ti,
                            int64_t n) noexcept nogil:
    cdef int64_t prod[5]
    cdef int64_t pm, ps
    cdef int k, new
    prod[0] = x * v.mc[ti]
    prod[1] = x * v.ms[ti]
    prod[2] = x * v.sc[ti]
    prod[3] = x * v.ss[ti]
    prod[4] = x * x
    for k in range(5):
        v.sums[k] += prod[k] - v.hist[v.hpos][k]
        v.hist[v.hpos][k] = prod[k]
    v.hpos += 1
    if v.hpos == p.n:
        v.hpos = 0
    pm = v.sums[0] * v.sums[0] + v.sums[1] * v.sums[1]
    ps = v.sums[2] * v.sums[2] + v.sums[3] * v.sums[3]
    new = v.state
    if 3 * pm > 5 * ps:
        new = 1
    elif 3 * ps > 5 * pm:
        new = -1
    if new != v.state and v.state != 0:
        v21_run_end(v, p, ev, n)
    if new != v.state:
        v.state = new
        v.run = 0
        v.run_p = 0.0
        v.run_e = 0.0
    v.run += 1
    v.run_p += <double>(pm + ps)
    v.run_e += <double>v.sums[4]


def _blocks(seconds):
    return int(round(seconds / BLOCK_S))


cdef void _fill(int *cos_t, int *sin_t, double freq, int rate, int length):
    """8-bit integer cos / -sin tables over `length` samples (whole periods)."""
    n = np.arange(length)
    c = np.rint(COEF * np.cos(2 * np.pi * freq * n / rate)).astype(np.int64)
    s = np.rint(-COEF * np.sin(2 * np.pi * freq * n / rate)).astype(np.int64)
    for k in range(length):
        cos_t[k] = c[k]
        sin_t[k] = s[k]


cdef class ModemToneDetector:
    """ModemToneDetector(rate=8000): .process(int16 frame) -> [(ModemTone, seconds)]."""

    cdef Params p
    cdef Track ans, cng
    cdef V21 v21
    cdef Events ev
    cdef double e_ring[E_RING]
    cdef int16_t pend[MAX_W]        # samples not yet in a whole block
    cdef int n_pend
    cdef int64_t pos, blk           # samples consumed; blocks completed
    cdef int64_t za[4]              # running block sums: ans cos/sin, cng cos/sin
    cdef int64_t ze
    cdef readonly int rate

    def __init__(self, int rate=8000):
        if rate % 200 or not 8000 <= rate <= 16000:
            raise ValueError(f"rate {rate}: must be a multiple of 200 Hz from 8000 to 16000")
        self.rate = rate
        cdef Params *p = &self.p
        p.rate = rate
        p.n = rate // 200
        p.table_len = rate // math.gcd(rate, 50)
        p.p_scale = 2.0 / (COEF * COEF * p.n * p.n)
        p.floor = (DBM0_RMS * 10 ** (FLOOR_DBM0 / 20)) ** 2
        p.bit = rate / V21_BAUD
        p.edge_blocks = _blocks(EDGE_S)
        p.cng_min, p.cng_max = _blocks(CNG_MIN_S), _blocks(CNG_MAX_S)
        p.pr_min, p.ans_min = _blocks(PR_MIN_S), _blocks(ANS_MIN_S)
        p.rev_confirm, p.rev_refractory = _blocks(REV_CONFIRM_S), _blocks(REV_REFRACTORY_S)
        p.v21_rearm = int(round(V21_REARM_S * rate))
        p.rev_lo = _blocks(REV_PERIOD_S - REV_TOL_S - REV_SLACK_S)
        p.rev_hi = _blocks(REV_PERIOD_S + REV_TOL_S + REV_SLACK_S)
        for k in range(AM_TAB):
            p.am_r[k] = math.cos(-2 * math.pi * AM_HZ * k * BLOCK_S)
            p.am_i[k] = math.sin(-2 * math.pi * AM_HZ * k * BLOCK_S)
        _fill(self.ans.cos_t, self.ans.sin_t, ANS_HZ, rate, p.table_len)
        _fill(self.cng.cos_t, self.cng.sin_t, CNG_HZ, rate, p.table_len)
        _fill(self.v21.mc, self.v21.ms, V21_MARK_HZ, rate, p.table_len)
        _fill(self.v21.sc, self.v21.ss, V21_SPACE_HZ, rate, p.table_len)
        self.ans.tol, self.ans.is_ans = ANS_TOL_HZ, 1
        self.cng.tol, self.cng.is_ans = CNG_TOL_HZ, 0
        self.reset()

    def reset(self):
        """Forget everything heard so far; times restart from 0."""
        track_reset(&self.ans)
        track_reset(&self.cng)
        memset(self.v21.hist, 0, sizeof(self.v21.hist))
        memset(self.v21.sums, 0, sizeof(self.v21.sums))
        self.v21.hpos = self.v21.state = self.v21.run = self.v21.flags = 0
        self.v21.prev_space_ok = self.v21.announced = 0
        self.v21.no_carrier = 0
        self.v21.run_p = self.v21.run_e = 0.0
        memset(self.e_ring, 0, sizeof(self.e_ring))
        memset(self.za, 0, sizeof(self.za))
        self.ze = 0
        self.n_pend = 0
        self.pos = 0
        self.blk = 0

    def process(self, frame):
        """Feed int16 samples (any length); returns the (ModemTone, seconds) detected,
        in time order."""
        cdef const int16_t[::1] x = np.ascontiguousarray(frame, dtype=np.int16).ravel()
        cdef Py_ssize_t i, m, total = x.shape[0]
        out = []
        for i in range(0, total, CHUNK):
            m = min(CHUNK, total - i)
            self.ev.n = 0
            with nogil:
                self._run(&x[i], m)
            for k in range(self.ev.n):
                out.append((self.ev.end[k], _CODES[self.ev.tone[k]]))
        out.sort(key=lambda e: (e[0], e[1].value))
        return [(tone, end / self.rate) for end, tone in out]

    @cython.cdivision(True)
    cdef void _run(self, const int16_t *x, Py_ssize_t m) noexcept nogil:
        cdef Params *p = &self.p
        cdef Py_ssize_t i
        cdef int k, ti
        cdef int64_t s, n
        for i in range(m):
            s = x[i]
            n = self.pos + self.n_pend        # absolute index of this sample
            ti = n % p.table_len
            v21_sample(&self.v21, p, &self.ev, s, ti, n)
            self.za[0] += s * self.ans.cos_t[ti]
            self.za[1] += s * self.ans.sin_t[ti]
            self.za[2] += s * self.cng.cos_t[ti]
            self.za[3] += s * self.cng.sin_t[ti]
            self.ze += s * s
            self.n_pend += 1
            if self.n_pend == p.n:
                self._block()

    cdef void _block(self) noexcept nogil:
        cdef Params *p = &self.p
        cdef double e = <double>self.ze
        cdef int k
        for k in range(E_RING - 1):
            self.e_ring[k] = self.e_ring[k + 1]
        self.e_ring[E_RING - 1] = e / p.n
        track_block(&self.ans, p, self.e_ring, &self.ev, self.blk,
                    <double>self.za[0], <double>self.za[1], e)
        track_block(&self.cng, p, self.e_ring, &self.ev, self.blk,
                    <double>self.za[2], <double>self.za[3], e)
        cng_check(&self.cng, p, self.e_ring, &self.ev, self.blk)
        for k in range(4):
            self.za[k] = 0
        self.ze = 0
        self.n_pend = 0
        self.pos += p.n
        self.blk += 1
