"""Reference twin of cext.cpt: the call-progress tone detector in plain NumPy/Python.

Same algorithm as the kernel, written for clarity: every 10 ms hop, over the last 20 ms,
the share of the signal's energy that lies in the span of each tone signature's
sinusoids (least-squares projection, numpy.linalg.lstsq), a per-hop on/off flag, on/off
segments debounced by 2 hops, and cadence matching against the plan. The tests require
the kernel to report the same events.
"""

from typing import Any, NamedTuple

import numpy as np

from cext import toneplans

DBM0_RMS = 32767.0 * 10 ** (-3.14 / 20) / np.sqrt(2)
MIN_LEVEL_DBM0 = -45.0     # quieter than this is silence
MIN_SHARE = 0.7            # share of energy in the signature's sinusoids to call it tone
MIN_COMPONENT = 0.1        # each component of a dual tone: twist within ~10 dB
MIN_SIDEBANDS = 0.03       # a modulated ("400*25") tone must show its sidebands
CONTINUOUS_S = 1.0         # a continuous tone is confirmed after this long, at least
EDGE_BIAS_S = 0.006        # on-durations read short by this much (window edge), offs long
DEBOUNCE_HOPS = 2


class CptEvent(NamedTuple):
    tone: str | None       # a TONE_NAMES entry, or None when the reported tone stopped
    sample: int            # sample index at which it was decided


def signatures(country: str) -> list[dict]:
    """Tones of the plan grouped by what they sound like (frequencies and modulation)."""
    sigs: dict = {}
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


def tolerance(d: float) -> float:
    return 0.1 * d + 0.03


class CallProgressDetector:
    def __init__(self, country: str, rate: int = 8000):
        self.rate = rate
        self.hop = rate // 100
        self.win = 2 * self.hop
        self.sigs = signatures(country)
        n = np.arange(self.win)
        self.basis = []
        for s in self.sigs:
            cols = [fn(2 * np.pi * f * n / rate) for f in s["basis"] for fn in (np.cos, np.sin)]
            self.basis.append(np.stack(cols, axis=1))
        self.e_min = self.win * (DBM0_RMS * 10 ** (MIN_LEVEL_DBM0 / 20)) ** 2
        self.reset()

    def reset(self):
        self.buf = np.zeros(0)
        self.prev = np.zeros(self.hop)
        self.pos = 0
        self.seg: list[dict[str, Any]] = [{"on": False, "count": 0, "pending": 0, "hist": []} for _ in self.sigs]
        self.current = None
        self.current_sig = None
        self.last_good = 0
        self.loud = False

    @property
    def state(self) -> str:
        if self.current:
            return self.current
        return "speech" if self.loud else "silence"

    def flags(self, window: np.ndarray) -> list[bool]:
        e = float(window @ window)
        out = []
        for s, b in zip(self.sigs, self.basis, strict=True):
            coef = np.linalg.lstsq(b, window, rcond=None)[0]
            share = float(np.sum((b @ coef) ** 2)) / e if e > 0 else 0.0
            ok = e >= self.e_min and share >= MIN_SHARE
            side = 2 * len(s["main"])             # columns after the carriers are sidebands
            if ok and len(s["basis"]) > len(s["main"]):
                ok = float(np.sum((b[:, side:] @ coef[side:]) ** 2)) >= MIN_SIDEBANDS * e
            if ok and len(s["main"]) > 1:
                for f in s["main"]:
                    n = np.arange(self.win)
                    z = window @ np.exp(-2j * np.pi * f * n / self.rate)
                    ok = ok and 2 * abs(z) ** 2 / self.win >= MIN_COMPONENT * e
            out.append(ok)
        self.loud = e >= self.e_min
        return out

    def process(self, pcm) -> list[CptEvent]:
        self.buf = np.concatenate([self.buf, np.asarray(pcm, dtype=np.float64)])
        events: list[CptEvent] = []
        while self.buf.size >= self.hop:
            cur, self.buf = self.buf[: self.hop], self.buf[self.hop :]
            window = np.concatenate([self.prev, cur])
            self.prev = cur
            self.pos += self.hop
            for i, flag in enumerate(self.flags(window)):
                self._segment(i, flag, events)
            self._timeout(events)
        return events

    def _segment(self, i: int, flag: bool, events: list) -> None:
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

    def _completed(self, i: int, events: list) -> None:
        hist = self.seg[i]["hist"]
        if self.current_sig == i and self._consistent(hist[-1]):
            self.last_good = self.pos
        best = None
        for name, cad in self.sigs[i]["tones"]:
            if not cad:
                continue
            need = 2 * len(cad) if sum(cad) <= 2.0 else len(cad)
            if len(hist) < need:
                continue
            for r in range(len(cad)):
                score = 0.0
                for k, (on, dur) in enumerate(hist[-need:]):
                    want = cad[(r + k) % len(cad)]
                    if on != ((r + k) % len(cad) % 2 == 0) or abs(dur - want) > tolerance(want):
                        break
                    score += abs(dur - want) / want
                else:
                    if best is None or score < best[0]:
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

    def _consistent(self, seg) -> bool:
        on, dur = seg
        cad = self._cadence(self.current)
        return any(abs(dur - d) <= tolerance(d) for d in cad[(0 if on else 1) :: 2])

    def _report(self, name: str, i: int, events: list) -> None:
        self.last_good = self.pos
        if name != self.current:
            self.current, self.current_sig = name, i
            events.append(CptEvent(name, self.pos))

    def _timeout(self, events: list) -> None:
        if self.current is None:
            return
        cad = self._cadence(self.current)
        if cad and self.pos - self.last_good > (1.5 * max(cad) + 0.2) * self.rate:
            self._end(events)

    def _end(self, events: list) -> None:
        self.current, self.current_sig = None, None
        events.append(CptEvent(None, self.pos))
