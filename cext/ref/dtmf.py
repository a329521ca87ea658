"""Slow NumPy reference twin of cext.dtmf (DTMF detector and generator, ITU-T Q.23/Q.24).

Same algorithm and constants as the Cython kernel, written for reading, not speed; the
tests compare the two. See cext/dtmf.pyx for why the detector looks the way it does.
Assumes int16 samples at `rate` Hz; levels follow spandsp (0 dBm0 is a sine of RMS 16112).
"""

from __future__ import annotations

import math

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
FREQS = ROWS + COLS
KEYS = "123A456B789C*0#D"
DBM0_RMS = 32767.0 * 10 ** (-3.14 / 20) / math.sqrt(2)

FREQ_TOL = 0.025  # accept |offset| < 2.5 %: midway between Q.24's 1.5 % and 3.5 %
REL_PEAK_DB = 6.0  # the chosen row (column) beats every other row (column) by this
RATIO_MIN = 0.75  # the two tones carry at least this share of the frame's energy
LEVEL_SLACK_DB = 1.5  # a tone exactly at min_level is accepted despite estimate noise
TWIST_SLACK_DB = 0.25  # a pair exactly at a twist limit is accepted, 0.5 dB past it is not
QUIET = 0.9  # share of the sum(x^2) below which no tone can pass the level check
# 1/g^2 of the window's gain as a polynomial in u = 1 - cos(phase advance per hop) and
# g^2 at the largest accepted advance: see cext/dtmf.pyx (same constants)
GAIN_POLY = (1.00002958, 1.51132849, 1.64700344, 0.59738002, 3.88606203, -4.30553200,
             4.43545504)
GAIN_MIN2 = 0.25
EDGE_FRACTION = 0.75  # on/off times shorter than 0.75*min are rejected (Q.24 grey zone)
# talk-off (cext/dtmf.pyx's docstring): from a digit's 3rd valid frame, on each valid frame
# until one passes, its energy above 500 Hz other than the pair's (each tone's: its bins at
# f - 50, f, f + 50 Hz), over the pair's, must be under PARTIALS_MAX_DB before the digit is
# confirmed or reported
PARTIALS_MAX_DB = -13.6
SIDE_HZ = 50.0
NLOW = 11  # bins 0, 50, ..., 500 Hz of the 20 ms window at 8 kHz
IDLE, ON, OFF_PENDING = 0, 1, 2


def frame_len(rate: int) -> int:
    """20 ms analysis frame."""
    return int(round(rate * 0.02))


def window(n: int) -> np.ndarray:
    """Sine window sin(pi m / N): two complex exponentials, so the kernel needs only two
    sub-block sums per tone."""
    return np.sin(np.pi * np.arange(n) / n)


def tables(rate: int) -> np.ndarray:
    """(16, N) float32: window * cos, then window * -sin, for the 8 DTMF frequencies."""
    n = frame_len(rate)
    w = window(n)
    ph = 2 * np.pi * np.outer(FREQS, np.arange(n)) / rate
    return np.concatenate([w * np.cos(ph), -w * np.sin(ph)]).astype(np.float32)


def window_gain(k: float) -> float:
    """Sine window response k bins off centre, relative to the centre (what GAIN_POLY
    approximates)."""
    if abs(abs(k) - 0.5) < 1e-9:
        return math.pi / 4
    return abs(math.cos(math.pi * k) / (1.0 - 4.0 * k * k))


def inverse_gain2(u: float) -> float:
    """1/g^2 for a tone whose bin advanced by phi per hop, u = 1 - cos(phi)."""
    return sum(c * u**i for i, c in enumerate(GAIN_POLY))


class Classifier:
    """Per-frame decision: which digit (or none) and its envelope amplitude."""

    def __init__(self, rate, row_above_column_max_db, column_above_row_max_db, min_level_dbm0):
        self.rate, self.n = rate, frame_len(rate)
        self.hop = self.n // 4
        # twist (Telcordia LSSGR / Q.24 North America; spandsp dtmf.c dtmf_rx and Asterisk
        # dsp.c dtmf_detect compare the same way): the row (low) tone may be up to
        # row_above_column_max_db above the column (high) tone, the column tone up to
        # column_above_row_max_db above the row tone
        self.row_over_col = 10 ** ((row_above_column_max_db + TWIST_SLACK_DB) / 10)
        self.col_over_row = 10 ** ((column_above_row_max_db + TWIST_SLACK_DB) / 10)
        amp_min = DBM0_RMS * math.sqrt(2) * 10 ** ((min_level_dbm0 - LEVEL_SLACK_DB) / 20)
        win = window(self.n)
        self.e_min = (amp_min * win.sum() / 2) ** 2  # |X|^2 of a tone at that amplitude
        # a lone tone's |X|^2 over the frame's windowed energy, times RATIO_MIN
        self.share = RATIO_MIN * win.sum() ** 2 / (2 * np.sum(win**2))
        # Cauchy-Schwarz: |X|^2 <= sum(x^2) sum(w^2)
        self.quiet = QUIET * GAIN_MIN2 * self.e_min / np.sum(win**2)
        # |offset| < FREQ_TOL * f  <=>  |phase advance per hop| < this angle
        self.t2 = [math.tan(2 * math.pi * FREQ_TOL * f * self.hop / rate) ** 2 for f in FREQS]
        self.rel = 10 ** (REL_PEAK_DB / 10)

    def corrected(self, x, xprev, e, k):
        """e[k] / g^2 (the tone's energy before the window's loss at its frequency), or
        -1 if the bin's phase advance over one hop, less the nominal w_k * hop, puts
        the tone FREQ_TOL or more off nominal."""
        rot = -2 * math.pi * FREQS[k] * self.hop / self.rate
        z = complex(x[k] * np.conj(xprev[k]) * complex(math.cos(rot), math.sin(rot)))
        if z == 0:
            return float(e[k])  # no previous frame to compare with: no offset
        if z.real <= 0 or z.imag**2 >= self.t2[k] * z.real**2:
            return -1.0
        return float(e[k]) * inverse_gain2(1 - z.real / abs(z))

    def peaks_ok(self, e, best, group):
        return all(e[o] * self.rel <= e[best] for o in group if o != best)

    def classify(self, x, xprev, e, etot):
        """Digit index 0..15 or -1."""
        r = int(np.argmax(e[:4]))
        c = 4 + int(np.argmax(e[4:]))
        if not (self.peaks_ok(e, r, range(4)) and self.peaks_ok(e, c, range(4, 8))):
            return -1
        if e[r] < GAIN_MIN2 * self.e_min or e[c] < GAIN_MIN2 * self.e_min:
            return -1
        er, ecol = self.corrected(x, xprev, e, r), self.corrected(x, xprev, e, c)
        if er < self.e_min or ecol < self.e_min:
            return -1
        if er > ecol * self.row_over_col or ecol > er * self.col_over_row:
            return -1
        if er + ecol < self.share * etot:
            return -1
        self.raw, self.etot = (float(e[r]), float(e[c])), etot
        return r * 4 + (c - 4)

    def partials(self, b, d):
        """Talk-off measure of frame b (float64), just classified as digit d: windowed
        energy less the pair's less the 0..500 Hz band's (NLOW bins), over the pair's.
        Parseval on 50 Hz grids: a real signal's bin k != 0 stands for k and n - k, and a
        tone's energy is that of its bins f - 50, f, f + 50 Hz. A vowel's other partials
        raise it; dial tone (under 500 Hz) does not."""
        n = self.n
        bw = b * window(n)
        m = np.arange(n)
        z = np.abs(bw @ np.exp(-2j * np.pi * np.outer(m, np.arange(NLOW)) / n)) ** 2
        low = (2 * np.sum(z) - z[0]) / n
        tones = (ROWS[d // 4], COLS[d % 4])
        sides = np.array([f + s for f in tones for s in (-SIDE_HZ, SIDE_HZ)])
        zs = np.abs(bw @ np.exp(-2j * np.pi * np.outer(m, sides) / self.rate)) ** 2
        pair = 2 * (np.sum(zs) + sum(self.raw)) / n
        return (self.etot - pair - low) / pair


class DtmfDetector:
    """Reference twin of cext.dtmf.DtmfDetector (same API, same results)."""

    def __init__(self, rate=8000, row_above_column_max_db=8.0, column_above_row_max_db=4.0,
                 min_level_dbm0=-36, min_on_ms=40, min_off_ms=40):
        self.cls = Classifier(rate, row_above_column_max_db, column_above_row_max_db,
                              min_level_dbm0)
        self.n, self.hop = self.cls.n, self.cls.hop
        self.tab = tables(rate)
        self.win = window(self.n).astype(np.float32)
        self.on_min = EDGE_FRACTION * min_on_ms * rate / 1000
        self.off_min = EDGE_FRACTION * min_off_ms * rate / 1000
        self.rise_len = self.n // self.hop + 4
        self.reset()

    def reset(self):
        self.tail = np.zeros(self.n, dtype=np.float32)  # samples before the start are zeros
        self.frame = 0
        self.total = 0
        self.xprev = np.zeros(8, dtype=complex)
        self.eprev = [np.zeros(8), np.zeros(8)]  # bin energies one and two frames ago
        self._idle()

    def _idle(self):
        self.state, self.digit, self.current = IDLE, -1, None
        self.tracking = False
        self.peak = self.last_amp = 0.0
        self.start_t: float | None = None
        self.end_t = 0.0  # set before any use, when a digit starts
        self.rise: list[float] = []

    # -- framing -------------------------------------------------------------------------
    def process(self, samples):
        """(digit, start, end) for each digit whose end was confirmed in this buffer."""
        new = np.asarray(samples, dtype=np.int16).astype(np.float32)
        self.tail = np.concatenate([self.tail, new])
        self.total += new.size
        base = self.total - self.tail.size  # absolute index of tail[0]
        out: list[tuple[str, int, int]] = []
        while (self.frame + 1) * self.hop <= self.total:
            self.frame += 1
            end = self.frame * self.hop - base
            self._frame(self.tail[end - self.n:end], out)
        self.tail = self.tail[-self.n:]
        return out

    def _frame(self, buf, out):
        b = buf.astype(np.float64)
        if float(np.sum(b * b)) < self.cls.quiet:
            x, e = np.zeros(8, dtype=complex), np.zeros(8)
            self._step(-1, e, out)
            self.xprev = x
            self.eprev = [e, self.eprev[0]]
            return
        y = self.tab.astype(np.float64) @ b
        x = y[:8] + 1j * y[8:]
        e = np.abs(x) ** 2
        etot = float(np.sum((b * self.win) ** 2))
        d = self.cls.classify(x, self.xprev, e, etot)
        self.b = b
        self._step(d, e, out)
        self.xprev = x
        self.eprev = [e, self.eprev[0]]

    def centre(self, f):
        """Sample time at the centre of frame f (frame f ends at f*hop)."""
        return f * self.hop - self.n / 2

    # -- state machine -------------------------------------------------------------------
    def _amp(self, e, digit):
        return math.sqrt(e[digit // 4]) + math.sqrt(e[4 + digit % 4])

    def _begin(self, d, e):
        self.state, self.digit = ON, d
        self.rise = [self._amp(self.eprev[1], d), self._amp(self.eprev[0], d)]
        self.peak = self.last_amp = self._amp(e, d)
        self.rise.append(self.last_amp)
        self.first = self.frame - 2  # the frame rise[0] came from
        self.valid = 1
        self.clean = False  # passed the talk-off check

    def _start(self):
        """Start time: where the rising envelope crossed half the peak. rise[2] is the
        first valid frame; rise[1], the frame before, is usually the invalid half-covered
        edge frame. If even rise[0] was above half, the tone was there but did not pass
        the checks, so the digit starts at its first valid frame instead."""
        if self.start_t is not None:
            return self.start_t
        r, half = self.rise, 0.5 * self.peak
        i = 2
        while i < len(r) - 1 and r[i] < half:
            i += 1
        if i == 2 and r[1] >= half:
            i = 1
        if r[i - 1] >= half:
            t = self.centre(self.first + i)
        else:
            t = self.centre(self.first + i - 1) + self.hop * (half - r[i - 1]) / (r[i] - r[i - 1])
        if len(r) >= self.rise_len:
            self.start_t = t
        return t

    def _finish(self, out):
        start = self._start()
        if (self.end_t - start >= self.on_min and (self.valid + 1) * self.hop >= self.on_min
                and self.clean):
            out.append((KEYS[self.digit], int(round(start)), int(round(self.end_t))))
        self._idle()

    def _step(self, d, e, out):
        now = self.centre(self.frame)
        if self.state == IDLE:
            if d >= 0:
                self._begin(d, e)
            return
        amp = self._amp(e, self.digit)  # raw: edge frames fail the checks but time the edge
        half = 0.5 * self.peak
        if d == self.digit and amp >= half:
            self.state, self.tracking = ON, False
            self.peak = max(self.peak, amp)
            self.last_amp = amp
            self.valid += 1
            if len(self.rise) < self.rise_len:
                self.rise.append(amp)
            self._check_partials()
            if (self.clean and now - self._start() >= self.on_min
                    and (self.valid + 1) * self.hop >= self.on_min):
                self.current = KEYS[self.digit]
            return
        if self.state == ON or self.tracking:
            self._track_end(now, amp, half)
        if d >= 0 and d != self.digit:
            self._finish(out)
            self._begin(d, e)
        elif not self.tracking and now - self.end_t >= self.off_min:
            self._finish(out)

    def _check_partials(self):
        """From the 3rd valid frame (the first two often cover an edge), on each valid
        frame until one passes the talk-off check: then clean for good."""
        if self.clean or self.valid < 3:
            return
        self.clean = self.cls.partials(self.b, self.digit) <= 10 ** (PARTIALS_MAX_DB / 10)

    def _track_end(self, now, amp, half):
        """The digit stopped passing the checks: its end is where the raw envelope of its
        two bins falls through half the peak. Frames that fail (the half-covered edge
        frame does) but are still loud keep it tracking."""
        self.state = OFF_PENDING
        if amp >= half:
            self.end_t, self.last_amp, self.tracking = now, amp, True
        else:
            a0 = self.last_amp
            self.end_t = now - self.hop + self.hop * (a0 - half) / (a0 - amp)
            self.tracking = False
        self._start()

    def flush(self):
        out: list[tuple[str, int, int]] = []
        if self.state == ON:
            self.end_t = float(self.total)
        if self.state != IDLE:
            self._finish(out)
        return out


def dtmf_samples(digits, on_ms=100, off_ms=100, level_dbm0=-7.0, twist_db=0.0, rate=8000):
    """Reference generator: low tone at level_dbm0, high at level_dbm0 + twist_db, each
    tone a sine starting at phase 0 at the digit's start; rounded and saturated."""
    on, off = int(round(on_ms * rate / 1000)), int(round(off_ms * rate / 1000))
    a_low = DBM0_RMS * math.sqrt(2) * 10 ** (level_dbm0 / 20)
    a_high = a_low * 10 ** (twist_db / 20)
    t = np.arange(on) / rate
    parts = []
    for ch in digits:
        i = KEYS.index(ch.upper())
        tone = a_low * np.sin(2 * np.pi * ROWS[i // 4] * t) + a_high * np.sin(2 * np.pi * COLS[i % 4] * t)
        parts += [tone, np.zeros(off)]
    x = np.concatenate(parts) if parts else np.zeros(0)
    x = np.sign(x) * np.floor(np.abs(x) + 0.5)  # round half away from zero, as the kernel
    return np.clip(x, -32768, 32767).astype(np.int16)
