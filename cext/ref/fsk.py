"""Plain NumPy/Python twin of cext/fsk.pyx: the same FSK receiver (difference filter,
integer correlators over one bit, discriminator, carrier detect, UART) and the same
phase-continuous modulator, written for clarity and nothing else. The tests check that
the kernel's discriminator output is identical and its bit decisions (characters with
their start-edge times) agree. Slow: a Python loop per sample.
"""

import math

import numpy as np

STANDARDS = {"bell202": (1200.0, 2200.0), "v23": (1300.0, 2100.0)}
BAUD = 1200
SHIFT = 6
WINDOW_BITS = 9 / 6.6667
RING = 8  # recent discriminator values kept for the look-back after a character
HALF_WIDTH_BITS = 1.0 / 6.6667  # bits are decided on the sum of d this near the centre
CHAR, FRAMING_ERROR, CARRIER_ON, CARRIER_OFF = 0, 1, 2, 3


def tables(mark_hz, space_hz, rate, baud=BAUD):
    """Correlator length and the four coefficient tables (mark cos/sin, space cos/sin)."""
    n = int(round(WINDOW_BITS * rate / baud))
    length = rate // math.gcd(math.gcd(int(rate), int(mark_hz)), int(space_hz))
    gains = [2.0 * math.sin(math.pi * f / rate) for f in (mark_hz, space_hz)]
    scale = 2**14 * min(gains)
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
    corr = amp * 2**14 * g * n / 2.0 / 2**SHIFT
    return int(corr * corr)


def discriminator(samples, standard="bell202", rate=8000):
    """(d, e): |mark|^2 - |space|^2 and |mark|^2 + |space|^2 per sample, from silence."""
    mark_hz, space_hz = STANDARDS[standard]
    n, coefs = tables(mark_hz, space_hz, rate)
    x = np.asarray(samples, dtype=np.int64)
    dx = np.diff(x, prepend=0)
    phase = np.arange(len(x)) % len(coefs[0])
    sums = []
    for c in coefs:
        prod = dx * c[phase]
        sums.append(np.convolve(prod, np.ones(n, dtype=np.int64))[: len(x)] >> SHIFT)
    a, b, c, d = sums
    return a * a + b * b - c * c - d * d, a * a + b * b + c * c + d * d


def demodulate(samples, standard="bell202", rate=8000, cd_on_dbm0=-48.0, cd_off_dbm0=-53.0):
    """Events [(kind, value, time, idle_bits)] as FskRx.process gives them."""
    mark_hz, space_hz = STANDARDS[standard]
    n = int(round(WINDOW_BITS * rate / BAUD))
    d, e = discriminator(samples, standard, rate)
    uart = _Uart(n, rate / BAUD, threshold(cd_on_dbm0, n, mark_hz, space_hz, rate),
                 threshold(cd_off_dbm0, n, mark_hz, space_hz, rate))
    for i in range(len(d)):
        uart.step(i, int(d[i]), int(e[i]))
    return uart.events


class _Uart:
    """Carrier detect with hysteresis, start-edge search, bit decisions on the sum of d
    within self.hw samples of each bit's centre."""

    def __init__(self, n, spb, e_on, e_off):
        self.n, self.spb, self.e_on, self.e_off = n, spb, e_on, e_off
        self.events = []
        self.carrier = False
        self.below = 0
        self.in_char = False
        self.mark_run = 0
        self.prev_d = 0
        self.ring = [0] * RING
        self.hw = HALF_WIDTH_BITS * spb

    def step(self, now, d, e):
        self.ring[now % RING] = d
        if self._carrier(now, e):
            if self.in_char:
                if now >= self.next_t - self.hw:
                    self.acc += d
                if now + 1 > self.next_t + self.hw and self._bit(self.acc >= 0):
                    self._lookback(now)
            elif d >= 0:
                self.mark_run += 1
            elif self.prev_d >= 0:
                self._start(now)
            else:
                self.mark_run = 0
        self.prev_d = d

    def _start(self, j):
        """Start a character at the crossing between samples j-1 and j."""
        d0, d1 = self.ring[(j - 1) % RING], self.ring[j % RING]
        self.edge = (j - 1) + float(d0) / (float(d0) - float(d1))
        self.idle = self.mark_run / self.spb
        self.in_char, self.bit_index, self.shreg, self.acc = True, 0, 0, 0
        self.next_t = self.edge + 0.5 * self.spb

    def _lookback(self, now):
        """A character just ended: the next start edge may already be behind us."""
        first = max(int(math.floor(self.last_t)) + 1, now - RING + 2)
        for j in range(first, now + 1):
            if self.ring[(j - 1) % RING] >= 0 and self.ring[j % RING] < 0:
                self.mark_run = 0
                self._start(j)
                for k in range(j, now + 1):
                    if k >= self.next_t - self.hw:
                        self.acc += self.ring[k % RING]
                return

    def _carrier(self, now, e):
        if not self.carrier:
            if e >= self.e_on:
                self.carrier, self.below, self.mark_run = True, 0, 0
                self.events.append((CARRIER_ON, 0, float(now), 0.0))
            return self.carrier
        if e >= self.e_off:
            self.below = 0
            return True
        self.below += 1
        if self.below >= 2 * self.n:
            self.carrier, self.in_char, self.mark_run = False, False, 0
            self.events.append((CARRIER_OFF, 0, float(now), 0.0))
        return self.carrier

    def _bit(self, bit):
        """Take one bit; True when the character is over (false start or stop bit)."""
        self.last_t = self.next_t
        if self.bit_index == 0 and bit:
            self.in_char, self.mark_run = False, 0
            return True
        if 1 <= self.bit_index <= 8:
            self.shreg |= int(bit) << (self.bit_index - 1)
        if self.bit_index == 9:
            self.events.append((CHAR if bit else FRAMING_ERROR, self.shreg, self.edge, self.idle))
            self.in_char, self.mark_run = False, 0
            return True
        self.bit_index += 1
        self.acc = 0
        self.next_t = self.edge + (self.bit_index + 0.5) * self.spb
        return False


def modulate(bits, mark_hz, space_hz, rate=8000, amplitude=8000.0, baud=BAUD):
    """Phase-continuous FSK of `bits` (1 = mark) as int16, bit k over [k/baud, (k+1)/baud)."""
    bits = np.asarray(bits, dtype=np.uint8)
    total = math.ceil(len(bits) * rate / baud)
    k = np.minimum(np.floor(np.arange(total) * baud / rate).astype(np.int64), len(bits) - 1)
    freq = np.where(bits[k] == 1, mark_hz, space_hz)
    phase = np.concatenate(([0.0], np.cumsum(2.0 * np.pi * freq / rate)[:-1]))
    return np.rint(amplitude * np.sin(phase)).astype(np.int16)
