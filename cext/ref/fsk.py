"""Plain NumPy/Python twin of cext/fsk.pyx: the same FSK receiver (difference filter,
integer correlators, discriminator, carrier detect, UART with a per-character timing
search) and the same phase-continuous modulator, written for clarity and nothing else.
The kernel's running sums, 32-bit lanes and history rings are implementation detail:
here the correlators are plain convolutions and the UART indexes whole arrays. The
tests check that the kernel's discriminator output is identical and its characters
(values, refined start-edge times, idle times) agree. Slow: a Python loop per sample.
"""

import math

import numpy as np

STANDARDS = {"bell202": (1200.0, 2200.0), "v23": (1300.0, 2100.0)}
BAUD = 1200
COEF_BITS = 10
WINDOW_S = {"bell202": 9 / 8000, "v23": 10 / 8000}  # correlator length in seconds
HALF_WIDTH_BITS = 0.15  # a bit's statistic: d at its centre and this far either side
TAU_STEP_BITS = 0.075  # timing search step ...
TAU_STEPS = 6  # ... and the most steps either way
FRAC = 64  # statistics interpolate d in steps of 1/FRAC sample
CHAR, FRAMING_ERROR, CARRIER_ON, CARRIER_OFF = 0, 1, 2, 3


def box_shift(n):
    """Right shift of the box sums before squaring (keeps the kernel's squares in 32 bits)."""
    return max(14, math.ceil(math.log2(n * 65535 * 1024.5 / 46340.0)))


def tables(standard, rate):
    """Correlator length and the four coefficient tables (mark cos/sin, space cos/sin)."""
    mark_hz, space_hz = STANDARDS[standard]
    n = round(WINDOW_S[standard] * rate)
    length = rate // math.gcd(math.gcd(int(rate), int(mark_hz)), int(space_hz))
    gains = [2.0 * math.sin(math.pi * f / rate) for f in (mark_hz, space_hz)]
    scale = 2**COEF_BITS * min(gains)
    idx = np.arange(length)
    out = []
    for f, g in zip((mark_hz, space_hz), gains, strict=True):
        w = 2.0 * np.pi * f * idx / rate
        out += [np.rint(scale / g * np.cos(w)).astype(np.int64), np.rint(scale / g * np.sin(w)).astype(np.int64)]
    return n, out


def threshold(dbm0, n, mark_hz, space_hz, rate):
    """Energy of a steady tone at `dbm0`, as the kernel computes it."""
    amp = 32767.0 * 10 ** ((dbm0 - 3.14) / 20.0)
    g = min(2.0 * math.sin(math.pi * f / rate) for f in (mark_hz, space_hz))
    corr = amp * 2**COEF_BITS * g * n / 2.0 / 2 ** box_shift(n)
    return int(corr * corr)


def discriminator(samples, standard="bell202", rate=8000):
    """(d, e): |mark|^2 - |space|^2 and |mark|^2 + |space|^2 per sample, from silence."""
    n, coefs = tables(standard, rate)
    x = np.asarray(samples, dtype=np.int64)
    dx = np.diff(x, prepend=0)
    phase = np.arange(len(x)) % len(coefs[0])
    sums = []
    for c in coefs:
        prod = dx * c[phase]
        sums.append(np.convolve(prod, np.ones(n, dtype=np.int64))[: len(x)] >> box_shift(n))
    a, b, c, d = sums
    mark, space = a * a + b * b, c * c + d * d
    return mark - space, mark + space


def demodulate(samples, standard="bell202", rate=8000, cd_on_dbm0=-48.0, cd_off_dbm0=-53.0):
    """Events [(kind, value, time, idle_bits)] as FskRx.process gives them."""
    mark_hz, space_hz = STANDARDS[standard]
    n = round(WINDOW_S[standard] * rate)
    d, e = discriminator(samples, standard, rate)
    uart = _Uart([int(v) for v in d], n, rate / BAUD, threshold(cd_on_dbm0, n, mark_hz, space_hz, rate),
                 threshold(cd_off_dbm0, n, mark_hz, space_hz, rate))
    for i in range(len(d)):
        uart.step(i, int(e[i]))
    return uart.events


class _Uart:
    """Carrier detect with hysteresis, start-edge hunt (snapped to the clock of the
    previous character when back to back), and per character a hill-climb of the eye
    opening over start-edge shifts before the bits are decided."""

    def __init__(self, d, n, spb, e_on, e_off):
        self.d, self.n, self.spb, self.e_on, self.e_off = d, n, spb, e_on, e_off
        self.h = max(1, round(HALF_WIDTH_BITS * spb))
        self.tau_step = TAU_STEP_BITS * spb
        h = self.h
        pad = [0] * (2 * h)
        dd = pad + d + pad  # d[j] is dd[j + 2h]; zeros before the start, as in the kernel
        self.trip = [dd[j + h] + dd[j + 2 * h] + dd[j + 3 * h] for j in range(len(d))]
        self.events = []
        self.carrier, self.below, self.onset, self.in_char, self.has_pred = False, 0, 0, False, False

    def step(self, now, e):
        if not self._carrier(now, e):
            return
        if self.in_char:
            if now >= self.wake:
                self._advance(now)
        elif self.d[now] < 0 and now > self.onset and self.d[now - 1] >= 0:
            self._begin(now)

    def _carrier(self, now, e):
        if not self.carrier:
            if e >= self.e_on:
                self.carrier, self.below, self.onset, self.idle_since = True, 0, now, float(now)
                self.has_pred = False
                self.events.append((CARRIER_ON, 0, float(now), 0.0))
            return self.carrier
        if e >= self.e_off:
            self.below = 0
            return True
        self.below += 1
        if self.below >= 2 * self.n:
            self.carrier, self.in_char = False, False
            self.events.append((CARRIER_OFF, 0, float(now), 0.0))
        return self.carrier

    def _begin(self, j):
        """Propose a start edge at the crossing between samples j-1 and j, or at the
        back-to-back position the previous character predicts when within half a bit."""
        d0, d1 = float(self.d[j - 1]), float(self.d[j])
        edge = (j - 1) + d0 / (d0 - d1)
        if self.has_pred and abs(edge - self.predict) <= 0.5 * self.spb:
            edge = self.predict
        self._begin_at(edge, j)

    def _begin_at(self, edge, j):
        self.edge, self.start_j, self.in_char = edge, j, True
        self.due = math.floor(self.edge + TAU_STEPS * self.tau_step + 9.5 * self.spb) + 1 + self.h
        self.checked = False
        self.wake = math.floor(self.edge + 0.5 * self.spb) + 1 + self.h

    def _advance(self, now):
        """Early start-bit check, then the whole character, then the next hunt."""
        while self.in_char and now >= self.wake:
            if not self.checked:
                self.checked, self.wake = True, self.due
                if self._stat(self.edge + 0.5 * self.spb) >= 0:  # a noise dip
                    self.in_char = self.has_pred = False
                    self._hunt(self.start_j + 1, now)
                continue
            j = max(self._decide(), self.onset + 1)
            self.in_char = False
            if self.has_pred and self.d[j - 1] < 0 and self.d[j] < 0:
                self._begin_at(self.predict, j)  # space already: back-to-back start bit
            else:
                self._hunt(j, now)

    def _hunt(self, j, now):
        for jj in range(j, now + 1):
            if self.d[jj - 1] >= 0 and self.d[jj] < 0:
                self._begin(jj)
                return

    def _stat(self, centre):
        i = math.floor(centre)
        t0 = self.trip[i]
        return t0 * FRAC + int((centre - i) * FRAC) * (self.trip[i + 1] - t0)

    def _metric(self, t0):
        stat = [self._stat(t0 + (k + 0.5) * self.spb) for k in range(10)]
        return sum(abs(s) for s in stat), stat

    def _best_timing(self):
        best, stat = self._metric(self.edge)
        steps = 0
        for way in (1, -1):
            while steps * way < TAU_STEPS:
                m, trial = self._metric(self.edge + (steps + way) * self.tau_step)
                if m <= best:
                    break
                best, stat, steps = m, trial, steps + way
            if steps:
                break
        return self.edge + steps * self.tau_step, stat

    def _decide(self):
        """Emit the character at self.edge; returns where the start-edge hunt resumes."""
        t0, stat = self._best_timing()
        if stat[0] >= 0:  # a noise dip, not a start bit
            self.has_pred = False
            return self.start_j + 1
        value = sum(1 << k for k in range(8) if stat[k + 1] >= 0)
        kind = CHAR if stat[9] >= 0 else FRAMING_ERROR
        self.events.append((kind, value, t0, (t0 - self.idle_since) / self.spb))
        self.idle_since = self.predict = t0 + 10.0 * self.spb
        self.has_pred = stat[9] >= 0
        return math.floor(t0 + 9.5 * self.spb) + 1


def modulate(bits, mark_hz, space_hz, rate=8000, amplitude=8000.0, baud=BAUD):
    """Phase-continuous FSK of `bits` (1 = mark) as int16, bit k over [k/baud, (k+1)/baud)."""
    bits = np.asarray(bits, dtype=np.uint8)
    total = math.ceil(len(bits) * rate / baud)
    k = np.minimum(np.floor(np.arange(total) * baud / rate).astype(np.int64), len(bits) - 1)
    freq = np.where(bits[k] == 1, mark_hz, space_hz)
    phase = np.concatenate(([0.0], np.cumsum(2.0 * np.pi * freq / rate)[:-1]))
    return np.rint(amplitude * np.sin(phase)).astype(np.int16)
