# cython: language_level=3
"""Line echo canceller (ITU-T G.168) for the FXO/FXS capture path, one object per channel.

How: a proportionate partitioned-block frequency-domain adaptive filter (PMDF):
- The tail (16..128 ms) is cut into P partitions of B = 64 samples; each partition is a
  frequency-domain filter on a 128-point overlap-save FFT (own radix-2 real FFT below).
  Per 64-sample block the cost is ~6 small FFTs plus 2*P*65 complex MACs, i.e. a few
  hundred flops per sample for a 1024-tap tail, against ~2*1024 MACs/sample for
  time-domain NLMS (measured: see bench/bench_echo.py).
- Zero added latency: partition 0 (the first 64 taps, where the current block's far
  samples act) is convolved in the time domain sample by sample; partitions 1..P-1 only
  need past blocks and are computed once per block in the frequency domain.
- Per-bin power normalisation (fast on coloured far ends such as speech) and an
  IPNLMS-style share of the step per partition (Benesty & Gay 2002, "An improved PNLMS
  algorithm", applied per partition as in PMDF): the G.168 hybrid paths are sparse
  (<= 16 ms of a 128 ms tail), so the partitions holding the path get most of the step.
  The proportionate part follows each partition's energy to the power 1/4 (not its L2
  norm: m4 keeps 9 % of its energy in partition 1, which then converged last), and
  IPNLMS's uniform part is an exponentially decaying prior ES_R**p (Makino's ES-NLMS):
  hybrid echo sits at the start of the tail, so while the norms are still noise the
  early partitions get the step. Speech via G.711 at 6 dB ERL (issue 10): steady ERLE
  worst path 21.3 -> 26.8 dB, 1 s 13.2 -> 14.7 dB; white noise 0.5 s 26 -> 35 dB.
- Gradient constraint every block on partition 0 and on the TOP_C partitions with the
  largest step share (unconstrained, the path's partitions converged slowly on speech),
  and on one other partition in turn (cost: ~1.2x the kernel before issue 10 per sample,
  bench/bench_echo.py; the issue allows 1.3x). Turning only every second block failed
  G.168 test 6 (m5, 1633 Hz): unconstrained partitions drift under a tone.
- Fast start on the head of the tail (issue 10 part 3): beside the block filters, a
  128-tap time-domain IPNLMS (Benesty & Gay 2002: tap gains (1-a)/2L + (1+a)|h_l|/2|h|_1,
  a = ALPHA_T, step MU_T over x'Kx + DELTA_T) runs sample by sample over lags 0..127 on
  the same error, so its taps add to the block filter's (background and foreground each
  hold a copy; the two-filter copy/restart moves them with the rest). Sample-by-sample
  proportionate adaptation is what converges fast on speech; the head is where hybrid
  echo sits on an analog port (all G.168 Annex D paths lie within 16 ms, 91..100 % of
  their energy in the first 64 taps). After T_FAST adapting blocks without double talk
  (0.8 s), or once the ERLE reaches FOLD_DB, its taps are added into partitions 0 and 1
  of both block filters (outputs unchanged) and it stops, so the steady state costs
  nothing extra; an echo-path change (the power detector's long jump) restarts it. If
  the block filter holds 3 dB more energy in another 128-tap window than in the head
  (a bulk-delayed echo), it is retired and its taps dropped: on speech a fast filter
  where there is no echo learns the far end's correlation (measured on m3/m6 delayed
  300..800 samples: moving it to the block filter's window, or keeping it at the head,
  went to -2..-6 dB at 1 s on the female voice). Bulk-delayed echo (300..800
  samples) was weak before this filter too (5..9 dB at 1 s, 12..22 dB steady, some
  100 ms windows louder than the input on the female voice) and stays so, within
  ~1.5 dB either way: left for later. Speech via G.711 at 6 dB ERL, four
  voices: 1 s worst path 15.2 -> 19.0 dB, steady worst 26.5 -> 27.5 dB; white noise at
  0.5 s 30.8 -> 33.5 dB worst; cost per sample over the bench's 5 s unchanged (1.22x the
  kernel before issue 10, bench/bench_echo.py), ~1.37x during the ~0.8 s it runs.
- Measured and dropped (issue 10): per-tap IPNLMS gains applied to the time-domain
  gradient of every partition, and a sample-by-sample time-domain IPNLMS for partition 0
  that replaced the block update there; both were slower on speech than the per-partition
  scheme. A full 1024-tap time-domain IPNLMS is better on speech (~20 dB at 1 s, 29
  steady on the same material) but cost ~2x this whole kernel per sample in a first build.
  For the head filter: 192/256 taps (15.8/18.5 dB at 1 s), steps 0.12..0.2 and
  a = -0.7..0 (18.3..19.1 dB), keeping it running after 0.8 s (steady 25.0 dB at step
  0.15: its misadjustment) or at a smaller step after (25..27 dB).
- Double talk: a Geigel detector (30 ms hangover, threshold 6 dB over the echo/far RMS
  ratio the filter has learned, at most 1.0 and 1.0 before convergence; with 3 dB, speech
  peaks at 6 dB ERL froze adaptation in ~10 % of blocks) plus, once converged, a block detector on error power
  jumping 3 dB over its recent level; adaptation and statistics freeze for such blocks.
  A jump lasting over 0.5 s is taken as an echo-path change and adaptation resumes.
- Per-bin normaliser floored at BIN_FLOOR x the mean bin power: with a tonal far end most
  bins hold only leakage, and 1/power there made the constrained update's effective step
  exceed 2 (a 440 Hz far end against a 1000 Hz near talker ran to clipping, ERLE -133 dB).
- Two filters (tests/dsp/test_g168.py, tones in double talk): the background adapts, the
  foreground makes the output and takes the background's taps only when they cancel 1 dB
  better (3 dB while the power detector suspects double talk, never in Geigel double
  talk); a background 6 dB worse than the foreground restarts from it. An unrealisable
  near end (a tone the far end cannot explain) so leaves the output equal to the input
  instead of NLMS misadjustment (+3 dB). Costs one more 64-tap dot product per sample
  and one more frequency-domain filter per block.
- Only the Geigel detector stops adaptation of the background; the power detector stops
  the statistics, the NLP and (mostly) the copy, so an echo-path change re-adapts at once.
- Once locked on, a narrow-band far end (Pk spread over < NARROW_BINS effective bins:
  tones, DTMF) does not adapt: it shows the path at a few frequencies only (G.168 test 6).
- DC blockers (one-pole high-pass at ~5 Hz) on the near input and, identically, on the
  far reference so the filter models the same path. Their outputs are flushed to 0 below
  1e-6: on a silent line they decayed into denormals, which spread through the FFTs and
  cost ~10x per sample (measured: 1.8 us against 0.14 us/sample).
- NLP: once converged, while the far end is active and there is no double talk, the
  residual is replaced by comfort noise at the level of a minimum-tracking estimate of
  the near-end noise (or by silence when comfort_noise is False). The estimate rises from
  at least 1 LSB^2: after digital silence it used to stay at 0 for good.
- erle_db: smoothed near-input power over linear-canceller error power (far end active).
Assumes 8 kHz int16 audio; `near` is the capture including the echo, `far` what we sent
to the line, sample-aligned. Float32 internally; inner loops are contiguous for SIMD.
The NumPy twin is cext/ref/echo.py (same algorithm and constants).
"""

import numpy as np

cimport cython
from libc.math cimport cos, fabsf, log10, sin, sqrt, M_PI

DEF B = 64
DEF N = 128
DEF M = 64          # complex FFT size used for the 128-point real FFT
DEF K = 65          # real-FFT bins
DEF KP = 72         # bins padded to a multiple of 8 floats
DEF HANG = 240
DEF LT = 128        # time-domain IPNLMS taps over the head of the tail (lags 0..LT-1)
DEF HX = 1024       # far history for it (linear, shifted down when full)

cdef float HP_A = 0.996
cdef float TINY = 1e-6      # DC-blocker outputs below this (int16 units) are flushed to 0
cdef float MU = 0.5
cdef double GEIGEL_MARGIN = 2.0  # over the learned echo/far RMS ratio (speech peaks: 6 dB)
cdef float LAMBDA = 0.9
cdef float ALPHA_IP = -0.3      # IPNLMS proportionality (-1: prior only .. 1: proportionate only)
cdef double ES_R = 0.5           # prior step profile: partition p gets ES_R**p (normalised)
DEF TOP_C = 2                   # constrain the TOP_C highest-gain partitions every block
cdef float DELTA = N * 30.0 * 30.0
cdef float BIN_FLOOR = 0.1      # per-bin step normaliser >= this share of the mean bin power
cdef double FB_SMOOTH = 0.6     # block smoothing of the two filters' error powers
cdef double COPY_RATIO = 0.8    # background error 1 dB under the foreground's: copy it over
cdef double COPY_RATIO_DT = 0.5  # ...3 dB under while the power detector suspects double talk
cdef double NARROW_BINS = 8.0   # far end in fewer effective bins than this: narrow-band
cdef double RESET_RATIO = 4.0   # background error 6 dB over the foreground's: restart from it
cdef double FAR_MIN = 50.0 * 50.0
cdef double SMOOTH = 0.9
cdef double CONVERGED_DB = 12.0
cdef float MU_T = 0.15          # time-domain IPNLMS (head of the tail): step
cdef float ALPHA_T = -0.5       # ...its proportionality (Benesty & Gay 2002, (1-a)/2L + (1+a)|h|/2|h|1)
cdef float DELTA_T = 30.0 * 30.0  # ...its regularisation (~ -55 dBm0 far end)
DEF T_FAST = 100                # ...adapting blocks (0.8 s of far speech) before it is folded in
cdef double FOLD_DB = 30.0      # ...or once the ERLE reaches this (white noise: its misadjustment)
DEF HEAD_MIN = 16               # from this many adapting blocks, every HEAD_EVERY blocks, check
DEF HEAD_EVERY = 4              # ...that the block filter's energy sits under the head window,
cdef double HEAD_RATIO = 2.0    # ...retiring the time-domain filter if 3 dB more is elsewhere
cdef double PDT_RATIO = 2.0     # power double-talk detector: error 3 dB over its recent level
DEF PDT_MAX_BLOCKS = 62         # ...for at most 0.5 s in a row (longer: echo-path change)


def _check_tail(tail_ms, rate):
    if rate != 8000:
        raise ValueError(f"echo canceller rate {rate} Hz unsupported: use 8000")
    if not 16 <= int(tail_ms) <= 128:
        raise ValueError(f"echo canceller tail_ms={tail_ms} out of range: use 16..128 ms")
    return -(-int(tail_ms) * 8 // B)


cdef class _FFT:
    """Tables for the 64-point complex FFT behind the 128-point real FFT."""
    cdef int br[M]
    cdef float twr[M]                # e^{-j 2 pi k / M}
    cdef float twi[M]
    cdef float rtr[K]                # e^{-j 2 pi k / N}, real-FFT split
    cdef float rti[K]

    def __cinit__(self):
        cdef int i, j, b, bits = 6
        for i in range(M):
            j = 0
            for b in range(bits):
                if i & (1 << b):
                    j |= 1 << (bits - 1 - b)
            self.br[i] = j
            self.twr[i] = cos(2 * M_PI * i / M)
            self.twi[i] = -sin(2 * M_PI * i / M)
        for i in range(K):
            self.rtr[i] = cos(2 * M_PI * i / N)
            self.rti[i] = -sin(2 * M_PI * i / N)


cdef void _cfft(_FFT t, float* re, float* im, bint inverse) noexcept nogil:
    """In-place radix-2 complex FFT of size M (unscaled; inverse uses conjugate twiddles)."""
    cdef int i, j, size, half, step, s, k
    cdef float tr, ti, wr, wi, sg = -1.0 if inverse else 1.0
    for i in range(M):
        j = t.br[i]
        if j > i:
            tr = re[i]; re[i] = re[j]; re[j] = tr
            ti = im[i]; im[i] = im[j]; im[j] = ti
    size = 2
    while size <= M:
        half = size >> 1
        step = M // size
        s = 0
        while s < M:
            for k in range(half):
                wr = t.twr[k * step]
                wi = sg * t.twi[k * step]
                i = s + k
                j = i + half
                tr = re[j] * wr - im[j] * wi
                ti = re[j] * wi + im[j] * wr
                re[j] = re[i] - tr
                im[j] = im[i] - ti
                re[i] = re[i] + tr
                im[i] = im[i] + ti
            s += size
        size <<= 1


cdef void _rfft(_FFT t, const float* x, float* Xr, float* Xi) noexcept nogil:
    """128 real samples -> 65 bins (numpy.fft.rfft convention)."""
    cdef float zr[M]
    cdef float zi[M]
    cdef int n, k, m
    cdef float ar, ai, br_, bi, er, ei, orr, oi
    for n in range(M):
        zr[n] = x[2 * n]
        zi[n] = x[2 * n + 1]
    _cfft(t, zr, zi, False)
    for k in range(K):
        m = k & (M - 1)
        n = (M - k) & (M - 1)
        ar = zr[m]; ai = zi[m]
        br_ = zr[n]; bi = -zi[n]                      # conj(Z[M-k])
        er = 0.5 * (ar + br_); ei = 0.5 * (ai + bi)   # DFT of even samples
        orr = 0.5 * (ai - bi); oi = -0.5 * (ar - br_) # DFT of odd samples: (Zk - Zc) / 2j
        Xr[k] = er + t.rtr[k] * orr - t.rti[k] * oi
        Xi[k] = ei + t.rtr[k] * oi + t.rti[k] * orr


cdef void _irfft(_FFT t, const float* Xr, const float* Xi, float* x) noexcept nogil:
    """65 bins -> 128 real samples (numpy.fft.irfft convention, 1/N scaling)."""
    cdef float zr[M]
    cdef float zi[M]
    cdef int k, n
    cdef float er, ei, dr, di, orr, oi, c, s
    for k in range(M):
        n = M - k
        er = 0.5 * (Xr[k] + Xr[n]); ei = 0.5 * (Xi[k] - Xi[n])
        dr = 0.5 * (Xr[k] - Xr[n]); di = 0.5 * (Xi[k] + Xi[n])
        c = t.rtr[k]; s = -t.rti[k]                   # e^{+j 2 pi k / N}
        orr = dr * c - di * s; oi = dr * s + di * c
        zr[k] = er - oi                                # Fe + j Fo
        zi[k] = ei + orr
    _cfft(t, zr, zi, True)
    for n in range(M):
        x[2 * n] = zr[n] * (1.0 / M)
        x[2 * n + 1] = zi[n] * (1.0 / M)


cdef inline bint _in(const int* a, int n, int v) noexcept nogil:
    cdef int i
    for i in range(n):
        if a[i] == v:
            return True
    return False


cdef class EchoCanceller:
    """G.168 line echo canceller for one channel (see the module docstring)."""
    cdef readonly int P
    cdef public bint nlp, comfort_noise, adapt
    cdef _FFT fft
    cdef object _keep
    cdef object _prior
    cdef float* Wr
    cdef float* Wi
    cdef float* Xr
    cdef float* Xi
    cdef float* Pk
    cdef float* g
    cdef float* prior          # exponentially decaying step profile over partitions
    cdef float* fmax
    cdef float* Fr             # foreground (output) filter, partitions like Wr/Wi
    cdef float* Fi
    cdef float w0t[B]          # partition 0 taps in time order, from its last constraint
    cdef float w0r[B]          # partition 0 taps, reversed for a forward dot product
    cdef float yt[B]
    cdef float f0r[B]          # foreground partition 0, reversed like w0r
    cdef float ytf[B]
    cdef float fblk[B]         # foreground error (the output before the NLP)
    cdef float xb[N]
    cdef float ht[LT]          # time-domain IPNLMS taps (background), reversed: ht[LT-1] is lag 0
    cdef float hf[LT]          # ...the foreground's copy
    cdef float xh[HX]          # far history for it
    cdef int wp
    cdef readonly int td_blocks
    cdef float mu_t
    cdef float hnorm
    cdef bint td_on
    cdef readonly bint td_live, td_retired
    cdef float dblk[B]
    cdef float eblk[B]
    cdef int pos, head, rr, dt_hang, g_hang, far_hang, nblocks, pdt_run
    cdef bint block_dt, block_g, locked
    cdef float hp[4]
    cdef float geigel, fmax_prev
    cdef double pd, pe, py, pf, noise, sb, sf
    cdef readonly int fg_copies, bg_resets
    cdef readonly double erle_db
    cdef readonly bint converged, doubletalk
    cdef unsigned int seed

    def __init__(self, int tail_ms=128, int rate=8000, bint nlp=True, bint comfort_noise=True,
                 bint adapt=True):
        self.P = _check_tail(tail_ms, rate)
        self.nlp, self.comfort_noise, self.adapt = nlp, comfort_noise, adapt
        self.fft = _FFT()
        arrays = [np.zeros(self.P * KP, np.float32) for _ in range(4)]
        arrays += [np.zeros(KP, np.float32), np.zeros(self.P, np.float32),
                   np.zeros(self.P + 1, np.float32)]
        arrays += [np.zeros(self.P * KP, np.float32) for _ in range(2)]
        prior = ES_R ** np.arange(self.P, dtype=np.float64)
        self._prior = (prior / prior.sum()).astype(np.float32)
        self._keep = arrays
        self.Wr = self._ptr(arrays[0])
        self.Wi = self._ptr(arrays[1])
        self.Xr = self._ptr(arrays[2])
        self.Xi = self._ptr(arrays[3])
        self.Pk = self._ptr(arrays[4])
        self.g = self._ptr(arrays[5])
        self.fmax = self._ptr(arrays[6])
        self.Fr = self._ptr(arrays[7])
        self.Fi = self._ptr(arrays[8])
        self.prior = self._ptr(self._prior)
        self.reset()

    cdef float* _ptr(self, arr):
        cdef float[::1] view = arr
        return &view[0]

    def reset(self):
        """Forget the echo path and all statistics (new call)."""
        for a in self._keep:
            a[:] = 0
        for i in range(B):
            self.w0r[i] = 0; self.w0t[i] = 0; self.yt[i] = 0; self.dblk[i] = 0; self.eblk[i] = 0
            self.f0r[i] = 0; self.ytf[i] = 0; self.fblk[i] = 0
        for i in range(N):
            self.xb[i] = 0
        for i in range(LT):
            self.ht[i] = 0; self.hf[i] = 0
        for i in range(HX):
            self.xh[i] = 0
        self.wp = HX - 1
        self.hnorm = 0
        self.td_on = False
        self.td_live = True
        self.td_retired = False
        self.td_blocks = 0
        self.mu_t = MU_T
        for i in range(4):
            self.hp[i] = 0
        self.pos = self.head = self.dt_hang = self.g_hang = self.far_hang = self.nblocks = self.pdt_run = 0
        self.rr = 1
        self.block_dt = self.block_g = self.locked = False
        self.geigel = 1.0
        self.fmax_prev = 0
        self.pd = self.pe = self.py = self.pf = 1e-3
        self.noise = -1.0
        self.sb = self.sf = 0.0
        self.fg_copies = self.bg_resets = 0
        self.erle_db = 0.0
        self.converged = self.doubletalk = False
        self.seed = 12345

    def process(self, near, far):
        """Cancel the echo of `far` in `near` (int16 arrays of equal length); int16 out."""
        cdef const short[::1] nv = np.ascontiguousarray(near, dtype=np.int16)
        cdef const short[::1] fv = np.ascontiguousarray(far, dtype=np.int16)
        if nv.shape[0] != fv.shape[0] or np.ndim(near) != 1:
            raise ValueError("near and far must be 1-D and of equal length")
        out = np.empty(nv.shape[0], dtype=np.int16)
        cdef short[::1] ov = out
        cdef Py_ssize_t i, n = nv.shape[0]
        with nogil:
            for i in range(n):
                ov[i] = self._sample(nv[i], fv[i])
        return out

    cdef inline short _sample(self, float nr, float fr) noexcept nogil:
        cdef float f = HP_A * (self.hp[1] + fr - self.hp[0])
        cdef float d = HP_A * (self.hp[3] + nr - self.hp[2])
        cdef int pos = self.pos, j
        cdef float y = 0, yf = 0, o, thr, yt = 0, ytf = 0, xkx = 0, ka, kb, c, hn = 0, hv
        cdef float* xp
        cdef float* xq
        # the DC blockers decay into denormals on a silent line, which then spread through
        # the FFTs and cost ~10x per sample (measured): flush far-below-1-LSB values to 0
        if -TINY < f < TINY:
            f = 0
        if -TINY < d < TINY:
            d = 0
        self.hp[0] = fr; self.hp[1] = f; self.hp[2] = nr; self.hp[3] = d
        self.xb[B + pos] = f
        xp = &self.xb[pos + 1]
        for j in range(B):
            y += self.w0r[j] * xp[j]
            yf += self.f0r[j] * xp[j]
        y += self.yt[pos]
        yf += self.ytf[pos]
        # time-domain IPNLMS over the head of the tail, beside the block filters (its taps
        # add to theirs: background and foreground each have a copy)
        self.wp += 1
        if self.wp == HX:
            for j in range(LT - 1):
                self.xh[j] = self.xh[HX - LT + 1 + j]
            self.wp = LT - 1
        self.xh[self.wp] = f
        xq = &self.xh[self.wp - LT + 1]
        ka = (1 - ALPHA_T) / (2.0 * LT)
        kb = (1 + ALPHA_T) / (2 * self.hnorm + 1e-3)
        # adapting this sample (the Geigel state is the previous sample's, as for the output)
        cdef bint upd = self.td_live and self.td_on and self.mu_t > 0 and self.g_hang == 0 and self.dt_hang == 0
        cdef float* ht = &self.ht[0]
        cdef float* hf = &self.hf[0]
        if not self.td_live:
            pass
        elif upd:
            for j in range(LT):
                yt += ht[j] * xq[j]
                ytf += hf[j] * xq[j]
                xkx += (ka + kb * fabsf(ht[j])) * (xq[j] * xq[j])
        else:
            for j in range(LT):
                yt += ht[j] * xq[j]
                ytf += hf[j] * xq[j]
        y += yt
        yf += ytf
        cdef float e = d - y
        cdef float ef = d - yf
        if upd:
            c = self.mu_t * e / (xkx + DELTA_T)
            for j in range(LT):
                hv = ht[j] + c * (ka + kb * fabsf(ht[j])) * xq[j]
                ht[j] = hv
                hn += fabsf(hv)
            self.hnorm = hn
        if f > self.fmax[0] or -f > self.fmax[0]:
            self.fmax[0] = f if f > 0 else -f
        thr = self.fmax[0] if self.fmax[0] > self.fmax_prev else self.fmax_prev
        if d > self.geigel * thr or -d > self.geigel * thr:
            self.g_hang = HANG
        if self.g_hang > 0:
            self.g_hang -= 1
            self.block_g = True
        if self.dt_hang > 0:
            self.dt_hang -= 1
            self.block_dt = True
        self.doubletalk = self.dt_hang > 0 or self.g_hang > 0
        self.dblk[pos] = d
        self.eblk[pos] = e
        self.fblk[pos] = ef
        o = ef
        if self.nlp and self.converged and self.far_hang > 0 and not self.doubletalk:
            o = self._cn() if self.comfort_noise else 0.0
        self.pos += 1
        if self.pos == B:
            self._end_block()
        o = o + 0.5 if o >= 0 else o - 0.5
        if o > 32767:
            return 32767
        if o < -32768:
            return -32768
        return <short>o

    cdef inline float _cn(self) noexcept nogil:
        self.seed = 1664525u * self.seed + 1013904223u
        cdef double u = self.seed / 4294967296.0 - 0.5
        return <float>(u * sqrt(12.0 * (self.noise if self.noise > 0 else 0.0)))

    cdef void _end_block(self) noexcept nogil:
        cdef int P = self.P, k, p
        cdef double pf = 0, pd = 0, pe = 0, pef = 0, py = 0, v, s1 = 0, s2 = 0
        cdef float* xr
        cdef float* xi
        self.head = (self.head + P - 1) % P
        xr = self.Xr + self.head * KP
        xi = self.Xi + self.head * KP
        _rfft(self.fft, self.xb, xr, xi)
        for k in range(K):
            v = xr[k] * xr[k] + xi[k] * xi[k]
            self.Pk[k] = v if self.nblocks == 0 else LAMBDA * self.Pk[k] + (1 - LAMBDA) * v
            s1 += self.Pk[k]
            s2 += self.Pk[k] * self.Pk[k]
        # a tone or DTMF only shows the path at a few frequencies: once the filter is
        # locked on, adapting there would drag the rest of its response off (G.168 test 6)
        cdef bint narrow = self.locked and s1 * s1 < NARROW_BINS * s2
        self.nblocks += 1
        for k in range(B):
            pf += self.xb[B + k] * self.xb[B + k]
            pd += self.dblk[k] * self.dblk[k]
            pe += self.eblk[k] * self.eblk[k]
            pef += self.fblk[k] * self.fblk[k]
            py += (self.dblk[k] - self.fblk[k]) * (self.dblk[k] - self.fblk[k])
        pf /= B; pd /= B; pe /= B; pef /= B; py /= B
        cdef bint far_active = pf > FAR_MIN
        if far_active:
            self.far_hang = P + 1
        elif self.far_hang > 0:
            self.far_hang -= 1
        self._power_dtd(pf, pef)
        self._track_noise(pef)
        if far_active and not self.block_dt and not self.block_g:  # near speech fakes an ERLE loss
            self._stats(pf, pd, pef, py)
        if self.adapt and far_active and not self.block_g and not narrow:
            self._update(pe)
        self._td_phase(far_active, narrow)
        if far_active:
            self._compare(pe, pef, 0.0 if self.block_g else (COPY_RATIO_DT if self.block_dt else COPY_RATIO))
        for p in range(P, 0, -1):
            self.fmax[p] = self.fmax[p - 1]
        self.fmax[0] = 0
        self.fmax_prev = 0
        for p in range(1, P + 1):
            if self.fmax[p] > self.fmax_prev:
                self.fmax_prev = self.fmax[p]
        for k in range(B):
            self.xb[k] = self.xb[B + k]
        self._filter_tail()
        self.block_dt = self.block_g = False
        self.pos = 0

    cdef void _td_phase(self, bint far_active, bint narrow) noexcept nogil:
        """The time-domain filter adapts (when the block filters may) for T_FAST blocks
        free of double talk, or until the ERLE reaches FOLD_DB; then its taps are added into
        the block filters and it stops. An echo-path change (the power detector's long
        jump) starts it again."""
        self.td_on = self.adapt and far_active and not narrow
        if self.td_on and not self.block_g and not self.block_dt:
            self.td_blocks += 1
        self.mu_t = MU_T if self.adapt and self.td_blocks < T_FAST and self.erle_db < FOLD_DB else 0
        if self.td_blocks == 0 and self.mu_t > 0:
            self.td_live = True
            self.td_retired = False
        elif self.td_live and self.mu_t == 0:
            self._fold()
        elif self.td_live and self.td_on and self.td_blocks >= HEAD_MIN and self.td_blocks % HEAD_EVERY == 0:
            self._check_head()

    cdef void _check_head(self) noexcept nogil:
        """Retire the time-domain filter, dropping its taps, when the background block
        filter holds HEAD_RATIO more energy in another LT-tap window than in the head: the
        echo has a bulk delay, and on speech a fast filter over a region without echo
        learns the far end's correlation instead (measured: divergence when it was moved
        there or kept, see the module docstring)."""
        cdef int p, k, q, nw = LT // B, P = self.P
        cdef double e, eb = 0, eh = 0
        cdef double en[16]
        cdef float* wr
        cdef float* wi
        for p in range(P):
            wr = self.Wr + p * KP; wi = self.Wi + p * KP
            e = 0
            for k in range(K):
                e += wr[k] * wr[k] + wi[k] * wi[k]
            en[p] = e
        for q in range(P - nw + 1):
            e = 0
            for p in range(q, q + nw):
                e += en[p]
            if q == 0:
                eh = e
            elif e > eb:
                eb = e
        if eb > HEAD_RATIO * eh:
            for k in range(LT):
                self.ht[k] = 0; self.hf[k] = 0
            self.hnorm = 0
            self.td_live = False
            self.td_retired = True

    cdef void _fold(self) noexcept nogil:
        """Add the time-domain taps into the block filters' partitions 0..LT/B-1 (background
        and foreground) and stop running them: the outputs do not change, and the steady
        state costs the block filters alone."""
        cdef float tmp[N]
        cdef float Tr[KP]
        cdef float Ti[KP]
        cdef int p, k, q
        cdef float* src
        cdef float* wr
        cdef float* wi
        for q in range(2):
            src = &self.ht[0] if q == 0 else &self.hf[0]
            for p in range(LT // B):
                for k in range(B):
                    tmp[k] = src[LT - 1 - (p * B + k)]     # lag p*B + k
                    tmp[B + k] = 0
                _rfft(self.fft, tmp, Tr, Ti)
                wr = (self.Wr if q == 0 else self.Fr) + p * KP
                wi = (self.Wi if q == 0 else self.Fi) + p * KP
                for k in range(K):
                    wr[k] += Tr[k]; wi[k] += Ti[k]
                if p == 0:
                    for k in range(B):
                        if q == 0:
                            self.w0t[k] += tmp[k]
                            self.w0r[B - 1 - k] += tmp[k]
                        else:
                            self.f0r[B - 1 - k] += tmp[k]
        for k in range(LT):
            self.ht[k] = 0; self.hf[k] = 0
        self.hnorm = 0
        self.td_live = False

    cdef void _filter_tail(self) noexcept nogil:
        """Echo estimate of partitions 1..P-1 for the next block (past far blocks only)."""
        cdef float Yr[KP]
        cdef float Yi[KP]
        cdef float Gr[KP]
        cdef float Gi[KP]
        cdef float tmp[N]
        cdef int p, k, P = self.P, slot
        cdef float* wr
        cdef float* wi
        cdef float* fr
        cdef float* fi
        cdef float* xr
        cdef float* xi
        for k in range(KP):
            Yr[k] = 0; Yi[k] = 0; Gr[k] = 0; Gi[k] = 0
        for p in range(1, P):
            slot = (self.head + p - 1) % P
            wr = self.Wr + p * KP; wi = self.Wi + p * KP
            fr = self.Fr + p * KP; fi = self.Fi + p * KP
            xr = self.Xr + slot * KP; xi = self.Xi + slot * KP
            for k in range(KP):
                Yr[k] += wr[k] * xr[k] - wi[k] * xi[k]
                Yi[k] += wr[k] * xi[k] + wi[k] * xr[k]
                Gr[k] += fr[k] * xr[k] - fi[k] * xi[k]
                Gi[k] += fr[k] * xi[k] + fi[k] * xr[k]
        _irfft(self.fft, Yr, Yi, tmp)
        for k in range(B):
            self.yt[k] = tmp[B + k]
        _irfft(self.fft, Gr, Gi, tmp)
        for k in range(B):
            self.ytf[k] = tmp[B + k]

    cdef void _compare(self, double pe, double pef, double ratio) noexcept nogil:
        """Two-filter safeguard: the background filter adapts, the foreground makes the
        output and only takes the background's taps once they cancel clearly better; a
        background that has run off (undetected double talk, narrow-band far end) restarts
        from the foreground. So the output never carries an adaptation's mistakes."""
        cdef int n = self.P * KP, k
        self.sb = FB_SMOOTH * self.sb + (1 - FB_SMOOTH) * pe
        self.sf = FB_SMOOTH * self.sf + (1 - FB_SMOOTH) * pef
        if self.sb + 1.0 < ratio * (self.sf + 1.0):
            for k in range(n):
                self.Fr[k] = self.Wr[k]; self.Fi[k] = self.Wi[k]
            for k in range(B):
                self.f0r[k] = self.w0r[k]
            for k in range(LT):
                self.hf[k] = self.ht[k]
            self.sf = self.sb
            self.fg_copies += 1
        elif self.sb > RESET_RATIO * (self.sf + 1.0):
            for k in range(n):
                self.Wr[k] = self.Fr[k]; self.Wi[k] = self.Fi[k]
            for k in range(B):
                self.w0r[k] = self.f0r[k]
            for k in range(LT):
                self.ht[k] = self.hf[k]
            self.sb = self.sf
            self.bg_resets += 1

    cdef void _stats(self, double pf, double pd, double pe, double py) noexcept nogil:
        cdef double s = SMOOTH, gg
        self.pf = s * self.pf + (1 - s) * pf
        self.pd = s * self.pd + (1 - s) * pd
        self.pe = s * self.pe + (1 - s) * pe
        self.py = s * self.py + (1 - s) * py
        self.erle_db = 10 * log10((self.pd + 1e-3) / (self.pe + 1e-3))
        self.converged = self.erle_db > CONVERGED_DB
        self.locked = self.locked or self.converged
        if self.converged:
            gg = GEIGEL_MARGIN * sqrt(self.py / self.pf)
            self.geigel = <float>(0.25 if gg < 0.25 else (1.0 if gg > 1.0 else gg))

    cdef void _power_dtd(self, double pf, double pe) noexcept nogil:
        """Once locked on, a block whose error jumps over the recent error level (scaled by
        the far power) is double talk; if that lasts past PDT_MAX_BLOCKS it is an echo-path
        change instead: unlock and let the filter re-adapt."""
        if not self.locked:
            return
        if pe > PDT_RATIO * (self.pe * pf / (self.pf + 1e-3) + self.noise + 1.0):
            self.pdt_run += 1
            if self.pdt_run <= PDT_MAX_BLOCKS:
                self.block_dt = True
                self.dt_hang = HANG
            else:
                self.locked = False
                self.td_blocks = 0
        else:
            self.pdt_run = 0

    cdef void _track_noise(self, double pe) noexcept nogil:
        if self.noise < 0:
            self.noise = pe
        elif pe < self.noise:
            self.noise = 0.7 * self.noise + 0.3 * pe
        else:
            # from at least one LSB^2: after digital silence (0) it must be able to rise again
            self.noise = self.noise * 1.005 if self.noise > 1.0 else 1.0

    cdef void _gains(self) noexcept nogil:
        """IPNLMS-style share of the step for each partition (sums to 1): a proportionate
        part on the partition's energy to the power 1/4 (a partition holding 10 % of the
        path still gets a fair share, see the module docstring), and in place of IPNLMS's
        uniform part an exponentially decaying prior (Makino's ES-NLMS): hybrid echo sits
        near the start of the tail, so the early partitions converge first on speech."""
        cdef int p, k, P = self.P
        cdef double total = 0, s
        cdef float* wr
        cdef float* wi
        for p in range(P):
            wr = self.Wr + p * KP; wi = self.Wi + p * KP
            s = 0
            for k in range(KP):
                s += wr[k] * wr[k] + wi[k] * wi[k]
            self.g[p] = <float>sqrt(sqrt(s))
            total += self.g[p]
        for p in range(P):
            self.g[p] = <float>((1 - ALPHA_IP) / 2.0 * self.prior[p] + (1 + ALPHA_IP) * self.g[p] / (2 * total + 1e-6))

    cdef void _update(self, double pe) noexcept nogil:
        cdef float tmp[N]
        cdef float Er[KP]
        cdef float Ei[KP]
        cdef float reg[KP]
        cdef double scale = 1.0, pmean = 0
        cdef float floor_
        cdef int p, k, P = self.P, slot
        cdef float gp, a, b
        cdef float* wr
        cdef float* wi
        cdef float* xr
        cdef float* xi
        for k in range(B):
            tmp[k] = 0
            tmp[B + k] = self.eblk[k]
        _rfft(self.fft, tmp, Er, Ei)
        self._gains()
        # normalise by the proportionate regressor power, or the smoothed power if larger:
        # the smoothed power alone lags speech onsets and the step would blow up there
        for k in range(KP):
            reg[k] = 0
        for p in range(P):
            slot = (self.head + p) % P
            gp = self.g[p]
            xr = self.Xr + slot * KP; xi = self.Xi + slot * KP
            for k in range(KP):
                reg[k] += gp * (xr[k] * xr[k] + xi[k] * xi[k])
        for k in range(K):
            pmean += self.Pk[k]
        floor_ = <float>(BIN_FLOOR * pmean / K)
        for k in range(K):
            b = self.Pk[k] if self.Pk[k] > reg[k] else reg[k]
            b = b if b > floor_ else floor_
            a = <float>(2 * MU * scale) / (b + DELTA)
            Er[k] *= a; Ei[k] *= a
        for k in range(K, KP):
            Er[k] = 0; Ei[k] = 0
        for p in range(P):
            slot = (self.head + p) % P
            gp = self.g[p]
            wr = self.Wr + p * KP; wi = self.Wi + p * KP
            xr = self.Xr + slot * KP; xi = self.Xi + slot * KP
            for k in range(KP):
                wr[k] += gp * (xr[k] * Er[k] + xi[k] * Ei[k])
                wi[k] += gp * (xr[k] * Ei[k] - xi[k] * Er[k])
        self._constrain_some()
        for k in range(B):  # partition 0's taps, as its constraint left them (no third FFT)
            self.w0r[k] = self.w0t[B - 1 - k]

    cdef void _constrain_some(self) noexcept nogil:
        """Gradient constraint on partition 0, on the TOP_C partitions with the largest
        step share (where the path is: unconstrained, they converge slowly on speech) and
        on one more in turn, so every partition is constrained at least every P blocks."""
        cdef int P = self.P, t, p, best, n
        cdef int done[TOP_C + 1]
        self._constrain(0)
        n = 0
        for t in range(TOP_C):
            best = 0
            for p in range(1, P):
                if (best == 0 or self.g[p] > self.g[best]) and not _in(done, n, p):
                    best = p
            if best == 0:
                break
            done[n] = best
            n += 1
            self._constrain(best)
        for t in range(P):
            if not _in(done, n, self.rr):
                break
            self.rr = self.rr + 1 if self.rr + 1 < P else 1
        if P > 1 and not _in(done, n, self.rr):
            self._constrain(self.rr)
            self.rr = self.rr + 1 if self.rr + 1 < P else 1

    cdef void _constrain(self, int p) noexcept nogil:
        """Zero the wrap-around half of partition p's impulse response."""
        cdef float tmp[N]
        cdef int k
        _irfft(self.fft, self.Wr + p * KP, self.Wi + p * KP, tmp)
        for k in range(B, N):
            tmp[k] = 0
        if p == 0:
            for k in range(B):
                self.w0t[k] = tmp[k]
        _rfft(self.fft, tmp, self.Wr + p * KP, self.Wi + p * KP)
