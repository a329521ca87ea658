"""Slow NumPy reference twin of cext.echo.EchoCanceller (same algorithm, float64, numpy.fft).

The tests run both on a short signal and compare outputs; see cext/echo.pyx for why the
algorithm is a proportionate partitioned-block frequency-domain filter. The step shares
(`_gains`) and the constrained partitions (`_constrain_some`) follow the kernel exactly,
and so does the time-domain IPNLMS over the head of the tail (`_sample`, `_td_phase`).
Per-sample Python loop: use it only on short signals. Assumes 8 kHz int16 input.
"""

import numpy as np

B = 64            # block (partition) length in samples
N = 2 * B         # FFT size (overlap-save)
K = B + 1         # rfft bins
HP_A = 0.996      # DC blocker pole (~5 Hz)
TINY = 1e-6       # DC-blocker outputs below this (int16 units) are flushed to 0
MU = 0.5          # step size (NLMS-equivalent ~ MU)
GEIGEL_MARGIN = 2.0  # Geigel threshold over the learned echo/far RMS ratio (speech peaks: 6 dB)
LAMBDA = 0.9      # per-bin far power smoothing per block
ALPHA_IP = -0.3   # IPNLMS proportionality (-1: prior only .. 1: proportionate only)
ES_R = 0.5        # prior step profile: partition p gets ES_R**p (normalised)
TOP_C = 2         # constrain the TOP_C highest-gain partitions every block
DELTA = N * 30.0 ** 2          # per-bin regularisation (~ -55 dBm0 far end)
BIN_FLOOR = 0.1                # per-bin step normaliser >= this share of the mean bin power
FB_SMOOTH = 0.6                # block smoothing of the two filters' error powers
COPY_RATIO = 0.8               # background error 1 dB under the foreground's: copy it over
COPY_RATIO_DT = 0.5            # ...3 dB under while the power detector suspects double talk
NARROW_BINS = 8.0              # far end in fewer effective bins than this: narrow-band
RESET_RATIO = 4.0              # background error 6 dB over the foreground's: restart from it
FAR_MIN = 50.0 ** 2            # block power under which the far end counts as silent (~ -50 dBm0)
PDT_RATIO = 2.0                # power double-talk detector: error 3 dB over its recent level
PDT_MAX_BLOCKS = 62            # ...for at most 0.5 s in a row (longer: echo-path change)
HANG = 240                     # double-talk hangover, samples (30 ms)
SMOOTH = 0.9                   # block smoothing of the ERLE powers
CONVERGED_DB = 12.0
LT = 128                       # time-domain IPNLMS over the head of the tail: taps
MU_T = 0.15                    # ...its step
ALPHA_T = -0.5                 # ...its proportionality (Benesty & Gay 2002)
DELTA_T = 30.0 ** 2            # ...its regularisation
T_FAST = 100                   # ...adapting blocks before it is folded into the block filters
FOLD_DB = 30.0                 # ...or once the ERLE reaches this
HEAD_MIN, HEAD_EVERY = 16, 4   # ...from this many adapting blocks, every so many, check that
HEAD_RATIO = 2.0               # ...no other window holds 3 dB more energy (else retire it)
LCG_A, LCG_C = 1664525, 1013904223


def check_tail(tail_ms: int, rate: int) -> int:
    """Number of partitions for a tail, or ValueError naming the allowed range."""
    if rate != 8000:
        raise ValueError(f"echo canceller rate {rate} Hz unsupported: use 8000")
    if not 16 <= int(tail_ms) <= 128:
        raise ValueError(f"echo canceller tail_ms={tail_ms} out of range: use 16..128 ms")
    return -(-int(tail_ms) * 8 // B)


class EchoCanceller:
    """See cext.echo.EchoCanceller; identical API and algorithm."""

    def __init__(self, tail_ms: int = 128, rate: int = 8000, nlp: bool = True,
                 comfort_noise: bool = True, adapt: bool = True):
        self.P = check_tail(tail_ms, rate)
        self.nlp, self.comfort_noise, self.adapt = bool(nlp), bool(comfort_noise), bool(adapt)
        self.reset()

    def reset(self):
        P = self.P
        self.W = np.zeros((P, K), complex)   # background (adapting) filter
        self.F = np.zeros((P, K), complex)   # foreground (output) filter
        self.f0 = np.zeros(B)
        self.ytf = np.zeros(B)
        self.fblk = np.zeros(B)
        self.sb = self.sf = 0.0
        self.fg_copies = self.bg_resets = 0
        self.X = np.zeros((P, K), complex)   # X[0] newest block spectrum
        self.w0 = np.zeros(B)
        self.yt = np.zeros(B)
        self.xb = np.zeros(N)
        self.dblk, self.eblk = np.zeros(B), np.zeros(B)
        self.Pk = np.zeros(K)
        self.nblocks = 0
        self.pos = 0
        self.hp = [0.0, 0.0, 0.0, 0.0]       # far x1, y1, near x1, y1
        self.fmax = np.zeros(P + 1)           # |far| peak of recent blocks, [0] current
        self.dt_hang = 0                      # power detector hangover (stats, NLP)
        self.g_hang = 0                       # Geigel hangover (also stops adaptation)
        self.block_g = False
        self.pdt_run = 0
        self.locked = False
        self.block_dt = False
        self.far_hang = 0
        self.pd = self.pe = self.py = self.pf = 1e-3
        self.erle_db = 0.0
        self.converged = False
        self.doubletalk = False
        self.geigel = 1.0
        self.noise = -1.0
        self.rr = 1
        self.seed = 12345
        self.xt = np.zeros(LT)                # far history for the time-domain filter, newest first
        self.ht = np.zeros(LT)                # its taps (background), lag order
        self.hf = np.zeros(LT)                # foreground copy
        self.hnorm = 0.0
        self.td_on = False
        self.td_live = True
        self.td_retired = False
        self.td_blocks = 0
        self.mu_t = MU_T

    def _hpf(self, x, i):
        y = HP_A * (self.hp[i + 1] + x - self.hp[i])
        y = 0.0 if abs(y) < TINY else y  # no denormals on a silent line (see the kernel)
        self.hp[i], self.hp[i + 1] = x, y
        return y

    def _cn(self):
        self.seed = (LCG_A * self.seed + LCG_C) & 0xFFFFFFFF
        u = self.seed / 4294967296.0 - 0.5
        return u * np.sqrt(12.0 * max(self.noise, 0.0))

    def process(self, near, far):
        near = np.asarray(near, dtype=np.int16)
        far = np.asarray(far, dtype=np.int16)
        if near.shape != far.shape or near.ndim != 1:
            raise ValueError("near and far must be 1-D and of equal length")
        out = np.empty(near.size, dtype=np.int16)
        for i in range(near.size):
            out[i] = self._sample(float(near[i]), float(far[i]))
        return out

    def _sample(self, nr, fr):
        f = self._hpf(fr, 0)
        d = self._hpf(nr, 2)
        pos = self.pos
        self.xb[B + pos] = f
        xr = self.xb[B + pos - np.arange(B)]
        self.xt[1:] = self.xt[:-1]
        self.xt[0] = f
        ka = (1 - ALPHA_T) / (2.0 * LT)
        kb = (1 + ALPHA_T) / (2 * self.hnorm + 1e-3)
        yt = float(np.dot(self.ht, self.xt)) if self.td_live else 0.0
        ytf = float(np.dot(self.hf, self.xt)) if self.td_live else 0.0
        e = d - (self.yt[pos] + float(np.dot(self.w0, xr)) + yt)
        ef = d - (self.ytf[pos] + float(np.dot(self.f0, xr)) + ytf)
        if self.td_live and self.td_on and self.mu_t > 0 and self.g_hang == 0 and self.dt_hang == 0:
            kl = ka + kb * np.abs(self.ht)
            self.ht = self.ht + self.mu_t * e / (float(np.sum(kl * self.xt ** 2)) + DELTA_T) * kl * self.xt
            self.hnorm = float(np.sum(np.abs(self.ht)))
        self.fmax[0] = max(self.fmax[0], abs(f))
        if abs(d) > self.geigel * self.fmax.max():
            self.g_hang = HANG
        if self.g_hang > 0:
            self.g_hang -= 1
            self.block_g = True
        if self.dt_hang > 0:
            self.dt_hang -= 1
            self.block_dt = True
        self.doubletalk = self.dt_hang > 0 or self.g_hang > 0
        self.dblk[pos], self.eblk[pos], self.fblk[pos] = d, e, ef
        o = ef
        if self.nlp and self.converged and self.far_hang > 0 and not self.doubletalk:
            o = self._cn() if self.comfort_noise else 0.0
        self.pos += 1
        if self.pos == B:
            self._end_block()
        return min(max(round(o), -32768), 32767)

    def _end_block(self):
        P = self.P
        self.X = np.roll(self.X, 1, axis=0)
        self.X[0] = np.fft.rfft(self.xb)
        mag = np.abs(self.X[0]) ** 2
        self.Pk = mag if self.nblocks == 0 else LAMBDA * self.Pk + (1 - LAMBDA) * mag
        self.nblocks += 1
        # a tone or DTMF only shows the path at a few frequencies: once the filter is
        # locked on, adapting there would drag the rest of its response off (G.168 test 6)
        narrow = self.locked and np.sum(self.Pk) ** 2 < NARROW_BINS * np.sum(self.Pk ** 2)
        x = self.xb[B:]
        pf = float(np.mean(x * x))
        pd, pe = float(np.mean(self.dblk ** 2)), float(np.mean(self.eblk ** 2))
        pef = float(np.mean(self.fblk ** 2))
        py = float(np.mean((self.dblk - self.fblk) ** 2))
        far_active = pf > FAR_MIN
        self.far_hang = P + 1 if far_active else max(self.far_hang - 1, 0)
        self._power_dtd(pf, pef)
        self._track_noise(pef)
        if far_active and not self.block_dt and not self.block_g:  # near speech fakes an ERLE loss
            self._stats(pf, pd, pef, py)
        if self.adapt and far_active and not self.block_g and not narrow:
            self._update(pe)
        self._td_phase(far_active, narrow)
        if far_active:
            self._compare(pe, pef, 0.0 if self.block_g else (COPY_RATIO_DT if self.block_dt else COPY_RATIO))
        self.fmax = np.roll(self.fmax, 1)
        self.fmax[0] = 0.0
        self.xb[:B] = self.xb[B:]
        self.yt = np.fft.irfft(np.sum(self.W[1:] * self.X[: P - 1], axis=0), N)[B:]
        self.ytf = np.fft.irfft(np.sum(self.F[1:] * self.X[: P - 1], axis=0), N)[B:]
        self.block_dt = self.block_g = False
        self.pos = 0

    def _td_phase(self, far_active, narrow):
        """The time-domain filter adapts for T_FAST blocks or until the ERLE reaches
        FOLD_DB, then its taps are added into the block filters and it stops; it is
        retired (taps dropped) if the block filter finds the echo elsewhere (see the kernel)."""
        self.td_on = self.adapt and far_active and not narrow
        if self.td_on and not self.block_g and not self.block_dt:
            self.td_blocks += 1
        self.mu_t = MU_T if self.adapt and self.td_blocks < T_FAST and self.erle_db < FOLD_DB else 0.0
        if self.td_blocks == 0 and self.mu_t > 0:
            self.td_live = True
            self.td_retired = False
        elif self.td_live and self.mu_t == 0:
            for W, h, w0 in ((self.W, self.ht, self.w0), (self.F, self.hf, self.f0)):
                for p in range(LT // B):
                    W[p] += np.fft.rfft(np.concatenate([h[p * B:(p + 1) * B], np.zeros(B)]))
                    if p == 0:
                        w0 += h[:B]
            self._td_stop()
        elif self.td_live and self.td_on and self.td_blocks >= HEAD_MIN and self.td_blocks % HEAD_EVERY == 0:
            en = np.sum(np.abs(self.W) ** 2, axis=1)
            win = np.convolve(en, np.ones(LT // B), "valid")
            if win.size > 1 and win[1:].max() > HEAD_RATIO * win[0]:
                self._td_stop()
                self.td_retired = True

    def _td_stop(self):
        self.ht, self.hf, self.hnorm = np.zeros(LT), np.zeros(LT), 0.0
        self.td_live = False

    def _compare(self, pe, pef, ratio):
        """Two-filter safeguard: the background adapts, the foreground makes the output and
        takes the background's taps only once they cancel clearly better; a background that
        has run off restarts from the foreground."""
        self.sb = FB_SMOOTH * self.sb + (1 - FB_SMOOTH) * pe
        self.sf = FB_SMOOTH * self.sf + (1 - FB_SMOOTH) * pef
        if self.sb + 1.0 < ratio * (self.sf + 1.0):
            self.F, self.f0, self.hf = self.W.copy(), self.w0.copy(), self.ht.copy()
            self.sf = self.sb
            self.fg_copies += 1
        elif self.sb > RESET_RATIO * (self.sf + 1.0):
            self.W, self.w0, self.ht = self.F.copy(), self.f0.copy(), self.hf.copy()
            self.sb = self.sf
            self.bg_resets += 1

    def _stats(self, pf, pd, pe, py):
        s = SMOOTH
        self.pf = s * self.pf + (1 - s) * pf
        self.pd = s * self.pd + (1 - s) * pd
        self.pe = s * self.pe + (1 - s) * pe
        self.py = s * self.py + (1 - s) * py
        self.erle_db = 10 * np.log10((self.pd + 1e-3) / (self.pe + 1e-3))
        self.converged = self.erle_db > CONVERGED_DB
        self.locked = self.locked or self.converged
        if self.converged:
            self.geigel = min(max(GEIGEL_MARGIN * np.sqrt(self.py / self.pf), 0.25), 1.0)

    def _power_dtd(self, pf, pe):
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

    def _track_noise(self, pe):
        if self.noise < 0 or pe < self.noise:
            self.noise = pe if self.noise < 0 else 0.7 * self.noise + 0.3 * pe
        else:
            # from at least one LSB^2: after digital silence (0) it must be able to rise again
            self.noise = self.noise * 1.005 if self.noise > 1.0 else 1.0

    def _gains(self):
        """Share of the step per partition (sums to 1): proportionate on the partition's
        energy to the power 1/4, plus an exponentially decaying prior (ES-NLMS)."""
        norms = np.sqrt(np.sqrt(np.sum(np.abs(self.W) ** 2, axis=1)))
        prior = ES_R ** np.arange(self.P)
        prior /= prior.sum()
        return (1 - ALPHA_IP) / 2 * prior + (1 + ALPHA_IP) * norms / (2 * norms.sum() + 1e-6)

    def _update(self, pe):
        E = np.fft.rfft(np.concatenate([np.zeros(B), self.eblk]))
        g = self._gains()
        # normalise by the proportionate regressor power, or the smoothed power if larger
        reg = np.sum(g[:, None] * np.abs(self.X) ** 2, axis=0)
        G = (2 * MU) * E / (np.maximum(np.maximum(self.Pk, reg), BIN_FLOOR * np.mean(self.Pk)) + DELTA)
        self.W += g[:, None] * np.conj(self.X) * G[None, :]
        self._constrain_some(g)
        self.w0 = np.fft.irfft(self.W[0], N)[:B]

    def _constrain_some(self, g):
        """Constrain partition 0, the TOP_C partitions with the largest share and one more
        in turn (see cext/echo.pyx)."""
        P = self.P
        self._constrain(0)
        done = []
        for _ in range(TOP_C):
            rest = [p for p in range(1, P) if p not in done]
            if not rest:
                break
            best = rest[int(np.argmax(g[rest]))]  # first of equals, as the kernel's strict >
            done.append(best)
            self._constrain(best)
        for _ in range(P):
            if self.rr not in done:
                break
            self.rr = self.rr + 1 if self.rr + 1 < P else 1
        if P > 1 and self.rr not in done:
            self._constrain(self.rr)
            self.rr = self.rr + 1 if self.rr + 1 < P else 1

    def _constrain(self, p):
        w = np.fft.irfft(self.W[p], N)
        w[B:] = 0.0
        self.W[p] = np.fft.rfft(w)
