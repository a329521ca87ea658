# cython: language_level=3, wraparound=True
"""Call-progress tone detector (dial, busy, reorder, ringback, congestion...) driven by
the tone plans, for FXO disconnect supervision and call-progress reporting.

How: every 10 ms hop, over the last 20 ms window, the share of the window's energy that
lies in the span of each tone signature's sinusoids (a least-squares projection onto
cos/sin at the plan's frequencies, plus the sidebands of "400*25" modulated tones) decides
"tone on" for that signature (with a level floor, a twist check on dual tones and a
sideband check on modulated ones). The measurement runs in C without the GIL; per hop,
the on/off runs are debounced (2 hops) into segments whose durations are matched against
each tone's cadence (two cycles for cadences up to 2 s, one for longer ones; tolerance
10 % + 30 ms), the best match wins; a continuous tone is confirmed after 1 s (or longer
than the longest burst of a cadenced tone that sounds the same). Tones that a plan
defines identically (e.g. Germany's reorder and congestion) are reported under the first
name in TONE_NAMES order.

Assumes linear 16-bit PCM (decode G.711 first). process() returns CptEvent(tone, sample)
when a tone is confirmed, and CptEvent(None, sample) when the confirmed tone stops;
`.state` is the current tone, "speech" (energy, no tone) or "silence". The reference
twin is cext.ref.cpt; the tests require identical events.
"""

from typing import NamedTuple

import numpy as np

from cext import toneplans

cimport cython
from libc.stdint cimport uint8_t

DBM0_RMS = 32767.0 * 10 ** (-3.14 / 20) / np.sqrt(2)
MIN_LEVEL_DBM0 = -45.0     # quieter than this is silence
MIN_SHARE = 0.7            # share of energy in the signature's sinusoids to call it tone
MIN_COMPONENT = 0.1        # each component of a dual tone: twist within ~10 dB
MIN_SIDEBANDS = 0.03       # a modulated ("400*25") tone must show its sidebands
CONTINUOUS_S = 1.0         # a continuous tone is confirmed after this long, at least
EDGE_BIAS_S = 0.006        # on-durations read short by this much (window edge), offs long
DEBOUNCE_HOPS = 2
DEF MAX_COLS = 64
# C copies of the thresholds for the nogil loop
cdef double C_MIN_SHARE = MIN_SHARE
cdef double C_MIN_COMPONENT = MIN_COMPONENT
cdef double C_MIN_SIDEBANDS = MIN_SIDEBANDS


class CptEvent(NamedTuple):
    tone: object           # a TONE_NAMES entry, or None when the reported tone stopped
    sample: int            # sample index at which it was decided


def signatures(country):
    """Tones of the plan grouped by what they sound like (frequencies and modulation)."""
    sigs = {}
    for name in toneplans.TONE_NAMES:
        t = toneplans.plan(country).tones.get(name)
        if t is None:
            continue
        key = (tuple(sorted(t.freqs)), t.mod_hz)
        if key not in sigs:
            basis = list(key[0])
            if t.mod_hz:
                basis += [f + s * t.mod_hz for f in key[0] for s in (-1, 1)]
            sigs[key] = {"main": list(key[0]), "basis": basis, "tones": []}
        sigs[key]["tones"].append((name, tuple(t.cadence)))
    for s in sigs.values():
        # longer than any burst of the same sound, so a long ring burst is not dial tone
        ons = [d for _, cad in s["tones"] for d in cad[0::2]]
        s["continuous_s"] = max([CONTINUOUS_S] + [1.2 * d + 0.1 for d in ons])
    return list(sigs.values())


def tolerance(d):
    return 0.1 * d + 0.03


cdef class _Meter:
    """Per-hop 'tone on' flags of every signature: the C part of the detector."""

    cdef int win, hop, n_sigs, n_cols
    cdef double e_min
    cdef double[:, ::1] table      # [col][n]: cos/sin of every basis frequency
    cdef double[:, ::1] gram       # [col][col] Gram matrix (block-diagonal per signature)
    cdef double[:, ::1] ginv       # its per-signature inverse
    cdef int[::1] first, n_basis, n_main

    def __init__(self, sigs, int rate, int hop):
        self.hop, self.win, self.n_sigs = hop, 2 * hop, len(sigs)
        n = np.arange(self.win)
        cols, first, n_basis, n_main = [], [], [], []
        for s in sigs:
            first.append(len(cols))
            n_basis.append(len(s["basis"]))
            n_main.append(len(s["main"]))
            for f in s["basis"]:
                cols += [np.cos(2 * np.pi * f * n / rate), np.sin(2 * np.pi * f * n / rate)]
        if len(cols) > MAX_COLS:
            raise ValueError("tone plan has too many distinct frequencies for the detector")
        table = np.stack(cols)
        gram = np.zeros((len(cols), len(cols)))
        ginv = np.zeros_like(gram)
        for f0, nb in zip(first, n_basis):
            blk = slice(f0, f0 + 2 * nb)
            gram[blk, blk] = table[blk] @ table[blk].T
            ginv[blk, blk] = np.linalg.inv(gram[blk, blk])
        self.n_cols = len(cols)
        self.table, self.gram, self.ginv = table, gram, ginv
        self.first = np.array(first, dtype=np.intc)
        self.n_basis = np.array(n_basis, dtype=np.intc)
        self.n_main = np.array(n_main, dtype=np.intc)
        self.e_min = self.win * (DBM0_RMS * 10 ** (MIN_LEVEL_DBM0 / 20)) ** 2

    @cython.wraparound(False)
    def flags(self, samples):
        """samples: previous hop + n whole hops (float64). -> (flags[n][sig], loud[n])."""
        cdef double[::1] x = np.ascontiguousarray(samples, dtype=np.float64)
        cdef Py_ssize_t n_hops = x.shape[0] // self.hop - 1
        out = np.zeros((max(n_hops, 0), self.n_sigs), dtype=np.uint8)
        loud = np.zeros(max(n_hops, 0), dtype=np.uint8)
        cdef uint8_t[:, ::1] o = out
        cdef uint8_t[::1] ld = loud
        cdef Py_ssize_t h
        with nogil:
            for h in range(n_hops):
                ld[h] = self._hop(&x[h * self.hop], o[h])
        return out, loud

    @cython.wraparound(False)
    cdef uint8_t _hop(self, const double *w, uint8_t[::1] flag) noexcept nogil:
        cdef double c[MAX_COLS]
        cdef double a[MAX_COLS]
        cdef double e = 0.0, acc, proj, side
        cdef Py_ssize_t n, j, k, f0, nc, ns, m
        cdef int s
        for n in range(self.win):
            e += w[n] * w[n]
        for j in range(self.n_cols):
            acc = 0.0
            for n in range(self.win):
                acc = acc + self.table[j, n] * w[n]
            c[j] = acc
        for s in range(self.n_sigs):
            flag[s] = 0
            if e < self.e_min or e <= 0.0:
                continue
            f0, nc, m = self.first[s], 2 * self.n_basis[s], 2 * self.n_main[s]
            proj = 0.0
            for j in range(nc):                   # least-squares coefficients a = G^-1 c
                acc = 0.0
                for k in range(nc):
                    acc = acc + self.ginv[f0 + j, f0 + k] * c[f0 + k]
                a[j] = acc
                proj += acc * c[f0 + j]
            if proj < C_MIN_SHARE * e:
                continue
            if nc > m:                            # sideband columns follow the carriers
                side = 0.0
                for j in range(m, nc):
                    for k in range(m, nc):
                        side += a[j] * self.gram[f0 + j, f0 + k] * a[k]
                if side < C_MIN_SIDEBANDS * e:
                    continue
            if m > 2:
                ns = 0
                for j in range(0, m, 2):
                    if 2.0 * (c[f0 + j] * c[f0 + j] + c[f0 + j + 1] * c[f0 + j + 1]) / self.win < C_MIN_COMPONENT * e:
                        ns += 1
                if ns:
                    continue
            flag[s] = 1
        return e >= self.e_min


class CallProgressDetector:
    """CallProgressDetector(country, rate=8000): .process(int16 frame) -> [CptEvent]."""

    def __init__(self, country, rate=8000):
        self.rate = rate
        self.hop = rate // 100
        self.sigs = signatures(country)
        self._meter = _Meter(self.sigs, rate, self.hop)
        self.reset()

    def reset(self):
        """Forget everything heard so far."""
        self.buf = np.zeros(self.hop)       # previous hop, then samples not yet in a hop
        self.pos = 0
        self.seg = [{"on": False, "count": 0, "pending": 0, "hist": []} for _ in self.sigs]
        self.current = None
        self.current_sig = None
        self.last_good = 0
        self.loud = False

    @property
    def state(self):
        """The confirmed tone, or "speech" (energy but no tone) or "silence"."""
        if self.current:
            return self.current
        return "speech" if self.loud else "silence"

    def process(self, pcm):
        """Feed int16 samples (any length); returns the events they caused."""
        self.buf = np.concatenate([self.buf, np.asarray(pcm, dtype=np.float64)])
        n_hops = self.buf.size // self.hop - 1
        events = []
        if n_hops <= 0:
            return events
        flags, loud = self._meter.flags(self.buf[: (n_hops + 1) * self.hop])
        self.buf = self.buf[n_hops * self.hop :]
        for h in range(n_hops):
            self.pos += self.hop
            self.loud = bool(loud[h])
            for i in range(len(self.sigs)):
                self._segment(i, bool(flags[h, i]), events)
            self._timeout(events)
        return events

    def _segment(self, i, flag, events):
        sg = self.seg[i]
        if flag == sg["on"]:
            sg["count"] += 1 + sg["pending"]
            sg["pending"] = 0
        else:
            sg["pending"] += 1
            if sg["pending"] >= DEBOUNCE_HOPS:
                if sg["on"] or sg["hist"]:          # leading silence is not a segment
                    dur = sg["count"] * self.hop / self.rate
                    dur += EDGE_BIAS_S if sg["on"] else -EDGE_BIAS_S
                    sg["hist"] = (sg["hist"] + [(sg["on"], dur)])[-32:]
                    self._completed(i, events)
                sg["on"], sg["count"], sg["pending"] = flag, sg["pending"], 0
        if sg["on"] and (sg["count"] + sg["pending"]) * self.hop >= self.sigs[i]["continuous_s"] * self.rate:
            for name, cadence in self.sigs[i]["tones"]:
                if not cadence:
                    self._report(name, i, events)
                    break

    def _completed(self, i, events):
        hist = self.seg[i]["hist"]
        if self.current_sig == i and self._consistent(hist[-1]):
            self.last_good = self.pos
        best = None
        for name, cad in self.sigs[i]["tones"]:
            if cad:
                score = _best_rotation(hist, cad)
                if score is not None and (best is None or score < best[0]):
                    best = (score, name)
        if best is not None:
            self._report(best[1], i, events)
        elif self.current_sig == i and self._cadence(self.current) == ():
            self._end(events)                      # a continuous tone was interrupted

    def _cadence(self, name):
        for s in self.sigs:
            for n, c in s["tones"]:
                if n == name:
                    return c
        return ()

    def _consistent(self, seg):
        on, dur = seg
        cad = self._cadence(self.current)
        return any(abs(dur - d) <= tolerance(d) for d in cad[(0 if on else 1) :: 2])

    def _report(self, name, i, events):
        self.last_good = self.pos
        if name != self.current:
            self.current, self.current_sig = name, i
            events.append(CptEvent(name, self.pos))

    def _timeout(self, events):
        if self.current is None:
            return
        cad = self._cadence(self.current)
        if cad and self.pos - self.last_good > (1.5 * max(cad) + 0.2) * self.rate:
            self._end(events)

    def _end(self, events):
        self.current, self.current_sig = None, None
        events.append(CptEvent(None, self.pos))


def _best_rotation(hist, cad):
    """Relative error of the best alignment of the latest segments with a cadence, or None."""
    need = 2 * len(cad) if sum(cad) <= 2.0 else len(cad)
    if len(hist) < need:
        return None
    best = None
    for r in range(len(cad)):
        score = 0.0
        for k, (on, dur) in enumerate(hist[-need:]):
            want = cad[(r + k) % len(cad)]
            if on != ((r + k) % len(cad) % 2 == 0) or abs(dur - want) > tolerance(want):
                break
            score += abs(dur - want) / want
        else:
            if best is None or score < best:
                best = score
    return best
