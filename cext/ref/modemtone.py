"""Reference twin of cext.modemtone: fax and modem connect-tone detection in plain
NumPy/Python, written for clarity; the tests require the kernel to report the same events.

All tones at once, one detector per port and direction: CNG (1100 Hz burst), CED (2100 Hz),
CED_PR (with phase reversals), ANSAM and ANSAM_PR (15 Hz AM), V21_PREAMBLE (HDLC flags on
V.21 channel 2, for faxes whose CED was clipped). Integer tables up to the per-block
correlations, so the kernel matches exactly. Event times are seconds since start (or reset).
Assumes 16-bit linear PCM, rate a multiple of 200 Hz from 8000 to 16000.
Sources: ITU-T T.30 5.2.1, V.25, V.8, V.21; spandsp modem_connect_tones.c.
"""

from __future__ import annotations

import enum
import math

import numpy as np

DBM0_RMS = 32767.0 * 10 ** (-3.14 / 20) / math.sqrt(2)  # spandsp's 0 dBm0
COEF = 256  # integer table amplitude (8 bits): products and sums fit int64 exactly
FLOOR_DBM0 = -46.0
SHARE = 0.7
ANS_HZ, ANS_TOL_HZ = 2100.0, 25.0  # V.25 +-15 Hz; G.164/G.165 disabler band 2100 +-21 Hz
CNG_HZ, CNG_TOL_HZ = 1100.0, 42.0  # T.30 1100 +-38 Hz
BLOCK_S = 0.005
PRODUCTS = 7  # rotation estimate over 7 block-to-block products (35 ms)
MAX_GAP = 3  # blocks of non-tone bridged inside a tone
CNG_MIN_S, CNG_MAX_S = 0.425, 0.575
EDGE_S, EDGE_RATIO, EDGE_GUARD = 0.05, 0.25, 2  # guard: blocks next to the run skipped
PR_MIN_S, ANS_MIN_S = 0.5, 1.0
REV_CONFIRM_S, REV_REFRACTORY_S = 0.05, 0.1
REV_COS = -0.5
REV_PERIOD_S, REV_TOL_S, REV_SLACK_S = 0.45, 0.025, 0.02  # V.25: every 450 +-25 ms
AM_HZ, AM_MIN_INDEX, AM_SKIP = 15.0, 0.1, 2
V21_MARK_HZ, V21_SPACE_HZ, V21_BAUD = 1650.0, 1850.0, 300.0
V21_FLAGS, V21_SHARE, V21_REARM_S = 5, 0.6, 0.05
SPACE_BITS, MARK_BITS, RUN_TOL_BITS = 2.0, 6.0, 0.6


class ModemTone(enum.Enum):
    """A connect tone. kind: "fax" or "modem"; disables_echo_canceller: G.165/G.168 rule."""

    CNG = "CNG"
    CED = "CED"
    CED_PR = "CED_PR"
    ANSAM = "ANSAM"
    ANSAM_PR = "ANSAM_PR"
    V21_PREAMBLE = "V21_PREAMBLE"

    @property
    def kind(self) -> str:
        fax = (ModemTone.CNG, ModemTone.CED, ModemTone.V21_PREAMBLE)
        return "fax" if self in fax else "modem"

    @property
    def disables_echo_canceller(self) -> bool:
        return self in (ModemTone.CED_PR, ModemTone.ANSAM_PR)


def _tables(freq: float, rate: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    n = np.arange(length)
    c = np.rint(COEF * np.cos(2 * np.pi * freq * n / rate)).astype(np.int64)
    s = np.rint(-COEF * np.sin(2 * np.pi * freq * n / rate)).astype(np.int64)
    return c, s


class _Track:
    """Runs of one tone frequency, block by block."""

    def __init__(self, det: ModemToneDetector, freq: float, tol: float):
        self.det, self.freq, self.tol = det, freq, tol
        self.cos, self.sin = _tables(freq, det.rate, det.table_len)
        self.reset()

    def reset(self):
        self.zs = [0j, 0j, 0j]  # z of the last three blocks, newest last
        self.prods = [0j] * PRODUCTS
        self.rots = [0j, 0j, 0j]  # rotation sums after the last three blocks
        self.in_run = False
        self.first = self.last_ok = self.bad = 0
        self.n_ok, self.sum_p = 0, 0.0
        self.am_c = self.am_w = 0j
        self.am_s, self.am_n, self.am_last = 0.0, 0, 0.0
        self.rev_pending, self.rev_last, self.reversals = -1, -(10**9), 0
        self.rev_cand = -(10**9)
        self.decided = False
        self.pre_e = 0.0

    def block(self, b: int, z: complex, e: float) -> None:
        """Block b: z its correlation with this tone's table (phase-referenced to the absolute
        sample count: a steady tone gives a steady phasor), e its energy. It is tone when the
        power, corrected for the block's sinc response at the offset, is above the floor
        (-46 dBm0: detection to -43 dBm0, where spandsp's ANS detector cuts off) and SHARE of
        the energy, and the offset (rotation between blocks over 35 ms) within tolerance.
        Up to MAX_GAP blocks are bridged (a phase reversal blanks one)."""
        d = self.det
        self.prods = self.prods[1:] + [z * self.zs[-1].conjugate()]
        self.zs = self.zs[1:] + [z]
        r = sum(self.prods, 0j)
        self.rots = self.rots[1:] + [r]
        df = math.atan2(r.imag, r.real) * d.rate / (2 * math.pi * d.n) if r != 0 else 1e9
        u = df * d.n / d.rate
        g = math.sin(math.pi * u) / (math.pi * u) if u != 0 else 1.0
        p = (z.real * z.real + z.imag * z.imag) * d.p_scale / (g * g) if g > 0.1 else 0.0
        ok = p >= d.floor and p >= SHARE * e / d.n and abs(df) <= self.tol
        if ok:
            if not self.in_run:
                self._start(b)
            self.last_ok, self.bad = b, 0
            self.n_ok += 1
            self.sum_p += p
            self.am_last = math.sqrt(p)
        elif self.in_run:
            self.bad += 1
            if self.bad > MAX_GAP:
                self._end()
                return
        if self.in_run:
            self._am(b)
            self._update(b)

    def _start(self, b: int) -> None:
        self.in_run, self.first = True, b
        self.n_ok, self.sum_p, self.bad = 0, 0.0, 0
        self.am_c = self.am_w = 0j
        self.am_s, self.am_n = 0.0, 0
        self.rev_pending, self.rev_last, self.reversals = -1, -(10**9), 0
        self.rev_cand = -(10**9)
        self.decided = False
        self.pre_e = self.det.mean_e(self.det.edge_blocks, 1 + EDGE_GUARD)

    def _am(self, b: int) -> None:
        if b - self.first < AM_SKIP:
            return
        w = self.det.am_table[b % len(self.det.am_table)]
        self.am_c += self.am_last * w
        self.am_w += w
        self.am_s += self.am_last
        self.am_n += 1

    def am_index(self) -> float:
        """The 15 Hz component of the block amplitudes (DC projected out), x2, over their
        mean (V.8 ANSam: 0.2 +-0.05)."""
        if self.am_n == 0 or self.am_s <= 0:
            return 0.0
        return 2 * abs(self.am_c - (self.am_s / self.am_n) * self.am_w) / self.am_s

    def _update(self, b: int) -> None:
        pass

    def _end(self) -> None:
        self.in_run = False


class _AnsTrack(_Track):
    """2100 Hz: reversals, AM, and the CED/ANS/ANSam decision."""

    def _update(self, b: int) -> None:
        """A reversal: the phasor 2 blocks back, advanced by the measured rotation, points
        the other way (within 60 degrees of 180; V.25 allows 180 +-10), both blocks at full
        amplitude and the rotation window inside the tone; confirmed 50 ms later."""
        d = self.det
        if self.rev_pending >= 0 and b - self.rev_pending >= d.rev_confirm:
            r = self.rev_pending
            since = r - self.rev_cand
            # on time: 450 +-25 ms (+-20 ms of onset slack) after the tone began, or after
            # the previous reversal (or two periods, one missed); a lone phase jump elsewhere
            # (a line hit, packet-loss concealment) is remembered but not believed
            if (d.rev_lo <= r - self.first <= d.rev_hi or d.rev_lo <= since <= d.rev_hi
                    or 2 * d.rev_lo <= since <= 2 * d.rev_hi):
                self.reversals += 1
            self.rev_cand = r
            self.rev_pending = -1
        z, z2, rot = self.zs[-1], self.zs[-3], self.rots[-3]
        if (
            self.rev_pending < 0
            and b - self.rev_last >= d.rev_refractory
            and b - 2 - PRODUCTS >= self.first  # rotation window all inside the tone
            and rot != 0
            and self.n_ok > 0
        ):
            mean_p = self.sum_p / self.n_ok
            p0 = (z.real * z.real + z.imag * z.imag) * d.p_scale
            p2 = (z2.real * z2.real + z2.imag * z2.imag) * d.p_scale
            if p0 >= 0.25 * mean_p and p2 >= 0.25 * mean_p:
                u = rot / abs(rot)
                q = z * z2.conjugate() * (u * u).conjugate()
                if q.real < REV_COS * abs(q):
                    self.rev_pending = self.rev_last = b
        self._decide(b)

    def _decide(self, b: int) -> None:
        """With a reversal that counts: at 0.5 s of tone (spandsp: ANS after 450+100 ms);
        without: at 1.0 s (a reversing tone has shown two by then) with none awaiting its
        partner. AM index >= 0.1 makes it ANSam. Once per tone."""
        if self.decided:
            return
        d = self.det
        age = b - self.first + 1
        am = self.am_index() >= AM_MIN_INDEX
        if self.reversals and age >= d.pr_min:
            tone = ModemTone.ANSAM_PR if am else ModemTone.CED_PR
        elif (not self.reversals and self.rev_pending < 0 and age >= d.ans_min
              and b - self.rev_cand > d.rev_hi):  # no reversal awaiting its partner
            tone = ModemTone.ANSAM if am else ModemTone.CED
        else:
            return
        self.decided = True
        d.emit(tone, (b + 1) * d.n)


class _CngTrack(_Track):
    """1100 Hz: a burst of 0.425-0.575 s whose 50 ms either side (past a 10 ms guard) carry
    at most -6 dB of its power is CNG, reported 60 ms after it ends (T.30: 0.5 s +-15 %)."""

    def reset(self):
        super().reset()
        self.pending_at, self.pending_p, self.pending_pre = -1, 0.0, 0.0

    def _end(self) -> None:
        super()._end()
        d = self.det
        dur = self.last_ok - self.first + 1
        if d.cng_min <= dur <= d.cng_max and self.n_ok:
            self.pending_at = self.last_ok + EDGE_GUARD + d.edge_blocks
            self.pending_p = self.sum_p / self.n_ok
            self.pending_pre = self.pre_e

    def check(self, b: int) -> None:
        if b != self.pending_at:
            return
        self.pending_at = -1
        post = self.det.mean_e(self.det.edge_blocks, 0)
        limit = EDGE_RATIO * self.pending_p
        if self.pending_pre <= limit and post <= limit:
            self.det.emit(ModemTone.CNG, (b + 1) * self.det.n)


class _V21:
    """V.21 channel 2 flag detector, sample by sample: |z|^2 at 1650 and 1850 Hz over a 5 ms
    sliding window, mark/space with 3:5 hysteresis; 0x7E flags are space runs of 2 bits and
    mark runs of 6. Five back-to-back (spandsp's HDLC_FRAMING_OK_THRESHOLD), >= 60 % of the
    energy in band, report V21_PREAMBLE once per preamble."""

    def __init__(self, det: ModemToneDetector):
        self.det = det
        self.w = det.n
        self.mc, self.ms = _tables(V21_MARK_HZ, det.rate, det.table_len)
        self.sc, self.ss = _tables(V21_SPACE_HZ, det.rate, det.table_len)
        self.bit = det.rate / V21_BAUD
        self.reset()

    def reset(self):
        self.hist = np.zeros((5, self.w), dtype=np.int64)  # last W products of each sum
        self.state = 0  # 0 none yet, 1 mark, -1 space
        self.run = 0
        self.run_p = self.run_e = 0.0
        self.flags = 0
        self.prev_space_ok = False
        self.no_carrier, self.announced = 0, False

    def process(self, x: np.ndarray, pos0: int) -> None:
        d = self.det
        idx = (pos0 + np.arange(x.size)) % d.table_len
        xi = x.astype(np.int64)
        prods = np.stack([xi * self.mc[idx], xi * self.ms[idx], xi * self.sc[idx],
                          xi * self.ss[idx], xi * xi])
        full = np.concatenate([self.hist, prods], axis=1)
        cs = np.concatenate([np.zeros((5, 1), dtype=np.int64), np.cumsum(full, axis=1)], axis=1)
        sums = cs[:, self.w:] - cs[:, : -self.w]  # window sums ending at each new sample
        sums = sums[:, 1:]
        self.hist = full[:, -self.w:]
        pm = sums[0] * sums[0] + sums[1] * sums[1]
        ps = sums[2] * sums[2] + sums[3] * sums[3]
        for i in range(x.size):
            self._sample(int(pm[i]), int(ps[i]), int(sums[4][i]), pos0 + i)

    def _sample(self, pm: int, ps: int, e: int, n: int) -> None:
        new = self.state
        if 3 * pm > 5 * ps:
            new = 1
        elif 3 * ps > 5 * pm:
            new = -1
        if new != self.state and self.state != 0:
            self._run_end(n)
        if new != self.state:
            self.state, self.run, self.run_p, self.run_e = new, 0, 0.0, 0.0
        self.run += 1
        self.run_p += float(pm + ps)
        self.run_e += float(e)

    def _run_end(self, n: int) -> None:
        d = self.det
        bits = self.run / self.bit
        p = self.run_p * d.p_scale  # summed tone power (mean square x samples)
        e = self.run_e / self.w
        carrier = p >= V21_SHARE * e and p >= d.floor * self.run
        # one report per preamble: re-armed only by 50 ms without carrier
        self.no_carrier = 0 if carrier else self.no_carrier + self.run
        if self.no_carrier >= d.v21_rearm:
            self.announced = False
        if self.state < 0:
            self.prev_space_ok = carrier and abs(bits - SPACE_BITS) <= RUN_TOL_BITS
            if not self.prev_space_ok:
                self.flags = 0
            return
        if carrier and self.prev_space_ok and abs(bits - MARK_BITS) <= RUN_TOL_BITS:
            self.flags += 1
            if self.flags >= V21_FLAGS and not self.announced:
                self.announced = True
                d.emit(ModemTone.V21_PREAMBLE, n + 1)
        else:
            self.flags = 0
        self.prev_space_ok = False


class ModemToneDetector:
    """ModemToneDetector(rate=8000): .process(int16 frame) -> [(ModemTone, seconds)]."""

    def __init__(self, rate: int = 8000):
        if rate % 200 or not 8000 <= rate <= 16000:
            raise ValueError(f"rate {rate}: must be a multiple of 200 Hz from 8000 to 16000")
        self.rate = rate
        self.n = rate // 200
        self.table_len = rate // math.gcd(rate, 50)
        self.p_scale = 2.0 / (COEF * COEF * self.n * self.n)  # |z|^2 -> tone mean square
        self.floor = (DBM0_RMS * 10 ** (FLOOR_DBM0 / 20)) ** 2
        blocks = lambda s: int(round(s / BLOCK_S))  # noqa: E731
        self.edge_blocks = blocks(EDGE_S)
        self.cng_min, self.cng_max = blocks(CNG_MIN_S), blocks(CNG_MAX_S)
        self.pr_min, self.ans_min = blocks(PR_MIN_S), blocks(ANS_MIN_S)
        self.rev_confirm, self.rev_refractory = blocks(REV_CONFIRM_S), blocks(REV_REFRACTORY_S)
        self.v21_rearm = int(round(V21_REARM_S * rate))
        self.rev_lo = blocks(REV_PERIOD_S - REV_TOL_S - REV_SLACK_S)
        self.rev_hi = blocks(REV_PERIOD_S + REV_TOL_S + REV_SLACK_S)
        # 15 Hz at 200 blocks/s: 3 cycles every 40 blocks
        self.am_table = [complex(math.cos(-2 * math.pi * AM_HZ * k * BLOCK_S),
                                 math.sin(-2 * math.pi * AM_HZ * k * BLOCK_S)) for k in range(40)]
        self.ans = _AnsTrack(self, ANS_HZ, ANS_TOL_HZ)
        self.cng = _CngTrack(self, CNG_HZ, CNG_TOL_HZ)
        self.v21 = _V21(self)
        self.reset()

    def reset(self) -> None:
        """Forget everything heard so far; times restart from 0."""
        self.buf = np.zeros(0, dtype=np.int64)
        self.pos = 0  # samples consumed into whole blocks
        self.blk = 0
        self.e_ring = [0.0] * 16  # mean square of the last 16 blocks
        self.events: list = []
        self.ans.reset()
        self.cng.reset()
        self.v21.reset()

    def mean_e(self, count: int, skip: int) -> float:
        """Mean square over `count` blocks, ending `skip` blocks before the newest."""
        ring = self.e_ring[: len(self.e_ring) - skip] if skip else self.e_ring
        return sum(ring[-count:]) / count

    def emit(self, tone: ModemTone, end_sample: int) -> None:
        """Record a detection completed with sample end_sample - 1."""
        self.events.append((end_sample, tone))

    def process(self, frame) -> list:
        """Feed int16 samples (any length); returns the (ModemTone, seconds) detected."""
        x = np.asarray(frame, dtype=np.int64).ravel()
        self.events = []
        self.v21.process(x, self.pos + self.buf.size)
        self.buf = np.concatenate([self.buf, x])
        while self.buf.size >= self.n:
            blk, self.buf = self.buf[: self.n], self.buf[self.n :]
            idx = (self.pos + np.arange(self.n)) % self.table_len
            e = float(np.sum(blk * blk))
            self.e_ring = self.e_ring[1:] + [e / self.n]
            for tr in (self.ans, self.cng):
                z = complex(float(blk @ tr.cos[idx]), float(blk @ tr.sin[idx]))
                tr.block(self.blk, z, e)
            self.cng.check(self.blk)
            self.pos += self.n
            self.blk += 1
        events = sorted(self.events, key=lambda ev: (ev[0], ev[1].value))
        self.events = []
        return [(tone, end / self.rate) for end, tone in events]


# --- test-signal synthesis (used by the tests, the bench and `branchline dsp`) ---------


def _amp(level_dbm0: float) -> float:
    return DBM0_RMS * math.sqrt(2) * 10 ** (level_dbm0 / 20)


def cng_samples(seconds: float, level_dbm0: float = -11.0, freq: float = CNG_HZ,
                rate: int = 8000, on_s: float = 0.5, off_s: float = 3.0) -> np.ndarray:
    """T.30 CNG: `freq` on for on_s, off for off_s, repeated, starting on (float64)."""
    n = np.arange(int(round(seconds * rate)))
    x = _amp(level_dbm0) * np.sin(2 * np.pi * freq * n / rate)
    period = int(round((on_s + off_s) * rate))
    return x * ((n % period) < int(round(on_s * rate)))


def ans_samples(seconds: float, level_dbm0: float = -12.0, freq: float = ANS_HZ,
                rate: int = 8000, am_index: float = 0.0, reversals: bool = False,
                reversal_s: float = 0.45) -> np.ndarray:
    """V.25 ANS / V.8 ANSam: `freq`, optionally 15 Hz AM of index am_index and 180 degree
    phase reversals every reversal_s (the first after reversal_s, as spandsp sends it)."""
    n = np.arange(int(round(seconds * rate)))
    phase = 2 * np.pi * freq * n / rate
    if reversals:
        phase = phase + np.pi * (n // int(round(reversal_s * rate)))
    env = 1.0 + am_index * np.sin(2 * np.pi * AM_HZ * n / rate)
    return _amp(level_dbm0) * env * np.sin(phase)


def fsk_samples(bits, level_dbm0: float = -12.0, rate: int = 8000,
                mark: float = V21_MARK_HZ, space: float = V21_SPACE_HZ,
                baud: float = V21_BAUD) -> np.ndarray:
    """Phase-continuous FSK of a bit sequence (1 = mark), bit edges on fractional samples."""
    bits = np.asarray(bits, dtype=np.int8)
    n = np.arange(int(round(bits.size * rate / baud)))
    k = np.minimum((n * baud / rate).astype(np.int64), bits.size - 1)
    f = np.where(bits[k] > 0, mark, space)
    phase = 2 * np.pi * np.cumsum(f) / rate
    return _amp(level_dbm0) * np.sin(phase)


def hdlc_flag_bits(n_flags: int) -> np.ndarray:
    """n back-to-back HDLC flags 0x7E, as sent (LSB first: 0 1 1 1 1 1 1 0)."""
    return np.tile(np.array([0, 1, 1, 1, 1, 1, 1, 0], dtype=np.int8), n_flags)
