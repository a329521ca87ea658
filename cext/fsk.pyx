"""FSK modem for caller ID: Bell 202 (1200 mark / 2200 space) and ITU-T V.23 / ETSI
(1300 mark / 2100 space), 1200 baud, asynchronous 1 start / 8 data / 1 stop characters.

Receiver (`FskRx`), in the manner of spandsp's fsk_rx, one state object per channel:
  1. first difference x[n]-x[n-1]: kills DC and the 16-50 Hz ring signal leaking through
     a DAA; the tilt it adds is undone by scaling each tone's coefficients;
  2. four non-coherent correlators (cos/sin at mark and space) over 1.35 bit times
     (9 samples at 8 kHz: the 1300/2100 Hz pair is then nearly orthogonal). Oscillators
     are exact integer tables (the tones are rational multiples of the sample rate),
     coefficients are 11-bit so products and 9-term box sums stay in int32 and the loops
     vectorise 16 lanes wide on AVX-512 (8 on AVX2, 4 on NEON). Everything is integer, so
     results never depend on how the input was cut into frames;
  3. discriminator d = |mark|^2 - |space|^2 (mark when >= 0) and in-band energy
     e = |mark|^2 + |space|^2 (uint32), which gates a carrier detect with hysteresis;
  4. a UART on a history ring of d: a mark->space crossing (interpolated to a fraction
     of a sample) proposes a start edge; once the whole character is in the ring its bit
     clock is refined by searching +-0.45 bit around that edge for the phase that opens
     the eye widest (largest sum of |bit statistic| over the 10 bits, so every
     transition inside the character pulls the timing, not just the noisy start edge);
     each bit's statistic is d summed at the centre and 1/7 bit either side (a soft
     majority). A start bit that comes out mark was a noise dip: the hunt resumes just
     after it. Characters are reported with the idle time (in bits) since the previous
     character or the carrier onset, which is what lets the message layer
     (cext/callerid.py) skip the 0x55 channel seizure.
Steps 1-3 run over whole chunks in typed, nogil loops the compiler vectorises; step 4 is
a scalar pass costing a few compares per sample plus ~300 multiply-adds per character.

Transmitter (`fsk_modulate`): phase-continuous FSK of a bit array at any rate.
Assumes 16-bit linear PCM at 8 kHz (other rates up to 48 kHz work; the tables grow to
rate/gcd). The plain NumPy twin of both is cext/ref/fsk.py.
"""

cimport cython
from libc.math cimport M_PI, ceil, fabs, floor, lrint, sin
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t

import math

import numpy as np

STANDARDS = {"bell202": (1200.0, 2200.0), "v23": (1300.0, 2100.0)}
BAUD = 1200
WINDOW_BITS = 9 / 6.6667  # correlator length in bit times (9 samples at 8 kHz: measured best)
HALF_WIDTH_BITS = 0.15  # a bit's statistic: d at its centre and this far either side
TAU_STEP_BITS = 0.075  # timing search step (half a sample at 8 kHz), TAU_STEPS either side
COEF_BITS = 10  # largest coefficient 2**10: |dx * coef| < 2**27, 9 of them < 2**31

cdef enum:
    CHUNK = 256  # samples per inner pass (scratch arrays live in the state)
    NMAX = 48  # longest correlator (48 kHz)
    LMAX = 960  # longest oscillator table
    SHIFT = 14  # right shift of the box sums before squaring: |mark|^2 < 2**31
    RING = 1024  # discriminator history (a character at 48 kHz is ~420 samples)
    RMASK = RING - 1
    MAXEV = 2 * CHUNK  # events one chunk can produce, with a wide margin
    TAU_STEPS = 6  # timing search: steps either side of the start edge (+-0.45 bit)

# events returned by FskRx.process: (kind, value, time, idle_bits)
cdef enum:
    EV_CHAR = 0  # value = byte, time = start-bit edge (sample index, fractional)
    EV_FRAMING_ERROR = 1  # stop bit was a space
    EV_CARRIER_ON = 2
    EV_CARRIER_OFF = 3

CHAR, FRAMING_ERROR, CARRIER_ON, CARRIER_OFF = EV_CHAR, EV_FRAMING_ERROR, EV_CARRIER_ON, EV_CARRIER_OFF

cdef struct Event:
    int kind
    int value
    double time
    double idle


def tone_freqs(standard):
    """(mark_hz, space_hz) of a standard name, or ValueError naming the choices."""
    try:
        return STANDARDS[standard]
    except KeyError:
        raise ValueError(f"FSK standard {standard!r} unknown: use one of {sorted(STANDARDS)}") from None


def design(double mark_hz, double space_hz, int rate, int baud=BAUD, window=None):
    """Correlator length N, table length L and the four int32 coefficient tables.

    Each tone's table is scaled by 1/(2 sin(pi f/rate)) to undo the difference filter's
    tilt, and the common scale is chosen so the largest coefficient is 2**COEF_BITS."""
    n = int(window) if window else int(round(WINDOW_BITS * rate / <double>baud))
    if n > NMAX:
        raise ValueError(f"sample rate {rate} too high for the FSK receiver (max {NMAX * baud} Hz)")
    step = math.gcd(math.gcd(int(rate), int(mark_hz)), int(space_hz))
    if mark_hz != int(mark_hz) or space_hz != int(space_hz) or rate // step > LMAX:
        raise ValueError(f"tones {mark_hz}/{space_hz} Hz need integer Hz with a short period at {rate} Hz")
    length = rate // step
    gains = [2.0 * math.sin(math.pi * f / rate) for f in (mark_hz, space_hz)]
    scale = 2 ** COEF_BITS * min(gains)
    idx = np.arange(length)
    tables = []
    for f, g in zip((mark_hz, space_hz), gains, strict=True):
        w = 2.0 * np.pi * f * idx / rate
        tables.append(np.rint(scale / g * np.cos(w)).astype(np.int32))
        tables.append(np.rint(scale / g * np.sin(w)).astype(np.int32))
    return n, length, tables


def energy_threshold(double dbm0, int n, double mark_hz, double space_hz, int rate):
    """In-band energy e of a steady tone at `dbm0` (sine, spandsp level convention)."""
    amp = 32767.0 * 10 ** ((dbm0 - 3.14) / 20.0)
    g = min(2.0 * math.sin(math.pi * f / rate) for f in (mark_hz, space_hz))
    corr = amp * 2 ** COEF_BITS * g * n / 2.0 / 2 ** SHIFT  # |sum| of one correlator pair
    return int(corr * corr)


cdef inline void _mix(uint32_t *out, const int32_t *dx, const int32_t *coef, int m) noexcept nogil:
    """out = dx * coef over m samples (own function: one plain contiguous loop, which
    gcc vectorises, instead of a loop nest it would turn into gathers)."""
    cdef int i
    for i in range(m):
        out[i] = <uint32_t>(dx[i] * coef[i])


@cython.final  # direct (inlinable) calls to the cdef methods, no vtable
@cython.auto_pickle(False)
cdef class FskRx:
    """One channel's FSK receiver; process() takes int16 buffers of any length."""

    cdef public str standard
    cdef public int rate
    cdef int n, length
    cdef double spb, tau_step
    cdef int half_width  # samples
    cdef int32_t coef[4][LMAX + CHUNK]  # one period, then repeated for a whole chunk
    cdef uint32_t e_on, e_off
    # front-end state and scratch
    cdef int phase
    cdef int32_t last_x
    cdef uint32_t run[4][CHUNK + NMAX]  # running sums of the mixed products (wrapping)
    cdef uint32_t hist[4][NMAX]  # the last n running sums of the previous chunk
    cdef int32_t dis[CHUNK]
    cdef uint32_t ene[CHUNK]
    cdef int32_t dx[CHUNK]
    # detector / UART state
    cdef int32_t ring[RING]  # d by absolute sample index & RMASK
    cdef double trip[RING]  # d[j - half_width] + d[j] + d[j + half_width], same indexing
    cdef int64_t count  # absolute index of the next input sample
    cdef bint cd
    cdef int below  # consecutive samples under the off threshold
    cdef int64_t floor  # sample where the carrier came on: no start edge before it
    cdef bint in_char
    cdef int64_t start_j  # sample just after the proposed start edge
    cdef int64_t due  # the character is decided once this sample is in the ring
    cdef double edge, idle_since
    cdef Event events[MAXEV]
    cdef int nev

    def __init__(self, standard="bell202", int rate=8000, double cd_on_dbm0=-48.0,
                 double cd_off_dbm0=-53.0, mark_hz=None, space_hz=None, int baud=BAUD,
                 window=None):
        fm, fs = tone_freqs(standard)
        fm = fm if mark_hz is None else mark_hz
        fs = fs if space_hz is None else space_hz
        self.standard = standard
        self.rate = rate
        self.n, self.length, tables = design(fm, fs, rate, baud, window)
        self.spb = rate / float(baud)
        self.half_width = max(1, <int>lrint(HALF_WIDTH_BITS * self.spb))
        self.tau_step = TAU_STEP_BITS * self.spb
        cdef int k, i
        cdef int32_t[::1] t
        for k in range(4):
            t = tables[k]
            for i in range(self.length + CHUNK):
                self.coef[k][i] = t[i % self.length]
        self.e_on = energy_threshold(cd_on_dbm0, self.n, fm, fs, rate)
        self.e_off = energy_threshold(cd_off_dbm0, self.n, fm, fs, rate)
        self.reset()

    def reset(self):
        """Forget all history: as if freshly created."""
        cdef int k, i
        for k in range(4):
            for i in range(NMAX):
                self.hist[k][i] = 0
        for i in range(RING):
            self.ring[i] = 0
            self.trip[i] = 0.0
        self.phase = 0
        self.last_x = 0
        self.count = 0
        self.cd = False
        self.below = 0
        self.floor = 0
        self.in_char = False
        self.nev = 0

    @property
    def carrier(self):
        """True while an FSK carrier is present (energy-based, with hysteresis)."""
        return bool(self.cd)

    @property
    def window(self):
        """Correlator length in samples."""
        return self.n

    # ------------------------------------------------------------ front end

    cdef void _front(self, const int16_t *x, int m) noexcept nogil:
        """Difference, mix, correlate and discriminate m <= CHUNK samples into dis/ene."""
        cdef int n = self.n
        cdef int i, k, p = self.phase
        cdef uint32_t s0, s1, s2, s3
        for k in range(4):  # the previous chunk's last n running sums go in front
            for i in range(n):
                self.run[k][i] = self.hist[k][i]
        self.dx[0] = <int32_t>x[0] - self.last_x
        for i in range(1, m):
            self.dx[i] = <int32_t>x[i] - <int32_t>x[i - 1]
        self.last_x = x[m - 1]
        for k in range(4):  # mixing: contiguous table slices, vectorised
            _mix(&self.run[k][n], self.dx, &self.coef[k][p], m)
        self.phase = (p + m) % self.length
        s0, s1, s2, s3 = self.run[0][n - 1], self.run[1][n - 1], self.run[2][n - 1], self.run[3][n - 1]
        for i in range(n, n + m):  # running sums: 4 independent scalar chains, wrapping
            s0 += self.run[0][i]
            s1 += self.run[1][i]
            s2 += self.run[2][i]
            s3 += self.run[3][i]
            self.run[0][i] = s0
            self.run[1][i] = s1
            self.run[2][i] = s2
            self.run[3][i] = s3
        self._discriminate(m)
        for k in range(4):  # keep the newest n running sums for the next chunk
            for i in range(n):
                self.hist[k][i] = self.run[k][m + i]

    cdef void _discriminate(self, int m) noexcept nogil:
        """Box sum of the last n products = difference of running sums n apart (exact:
        the true sum fits int32, so the wrap-around cancels); then d and e per sample.
        One contiguous 32-bit loop: vectorised."""
        cdef int i, n = self.n
        cdef int32_t a, b, c, s, mk, sp
        for i in range(m):
            a = <int32_t>(self.run[0][n + i] - self.run[0][i]) >> SHIFT
            b = <int32_t>(self.run[1][n + i] - self.run[1][i]) >> SHIFT
            c = <int32_t>(self.run[2][n + i] - self.run[2][i]) >> SHIFT
            s = <int32_t>(self.run[3][n + i] - self.run[3][i]) >> SHIFT
            mk = a * a + b * b
            sp = c * c + s * s
            self.dis[i] = mk - sp
            self.ene[i] = <uint32_t>mk + <uint32_t>sp

    # ------------------------------------------------------------ public

    def process(self, const int16_t[::1] samples):
        """Demodulate a buffer; returns [(kind, value, time, idle_bits), ...] events."""
        events = []
        cdef Py_ssize_t total = samples.shape[0]
        cdef Py_ssize_t off = 0
        cdef int m, i
        while off < total:
            m = <int>min(CHUNK, total - off)
            with nogil:
                self._front(&samples[off], m)
                self._uart(m)
            for i in range(self.nev):
                ev = self.events[i]
                events.append((ev.kind, ev.value, ev.time, ev.idle))
            self.nev = 0
            off += m
        return events

    def discriminator(self, const int16_t[::1] samples):
        """(d, e) int64 arrays for a buffer: the front end alone (advances the state)."""
        cdef Py_ssize_t total = samples.shape[0]
        d_out = np.zeros(total, np.int64)
        e_out = np.zeros(total, np.int64)
        cdef int64_t[::1] dv = d_out
        cdef int64_t[::1] ev = e_out
        cdef Py_ssize_t off = 0, i
        cdef int m
        while off < total:
            m = <int>min(CHUNK, total - off)
            self._front(&samples[off], m)
            for i in range(m):
                dv[off + i] = self.dis[i]
                ev[off + i] = self.ene[i]
            off += m
        return d_out, e_out

    # ------------------------------------------------------------ UART

    cdef void _emit(self, int kind, int value, double t, double idle) noexcept nogil:
        if self.nev < MAXEV:
            self.events[self.nev].kind = kind
            self.events[self.nev].value = value
            self.events[self.nev].time = t
            self.events[self.nev].idle = idle
            self.nev += 1

    cdef void _uart(self, int m) noexcept nogil:
        """Carrier detect and start-edge hunt per sample; characters are decided when
        their last sample arrives."""
        cdef int i, h = self.half_width
        cdef int32_t d
        cdef int64_t now
        for i in range(m):
            now = self.count + i
            d = self.dis[i]
            self.ring[now & RMASK] = d
            self.trip[(now - h) & RMASK] = (<double>self.ring[(now - 2 * h) & RMASK]
                                            + self.ring[(now - h) & RMASK] + d)
            if not self._carrier_step(self.ene[i], now):
                continue
            if self.in_char:
                if now >= self.due:
                    self._finish(now)
            elif d < 0 and now > self.floor and self.ring[(now - 1) & RMASK] >= 0:
                self._begin(now)
        self.count += m

    cdef bint _carrier_step(self, uint32_t e, int64_t now) noexcept nogil:
        """Update the carrier flag; returns it. Drops a half-received character."""
        if not self.cd:
            if e >= self.e_on:
                self.cd = True
                self.below = 0
                self.floor = now
                self.idle_since = <double>now
                self._emit(EV_CARRIER_ON, 0, <double>now, 0.0)
            return self.cd
        if e >= self.e_off:
            self.below = 0
            return True
        self.below += 1
        if self.below >= 2 * self.n:  # a bit's worth of low energy, not a transition dip
            self.cd = False
            self.in_char = False
            self._emit(EV_CARRIER_OFF, 0, <double>now, 0.0)
        return self.cd

    cdef void _begin(self, int64_t j) noexcept nogil:
        """Propose a start edge at the mark->space crossing between samples j-1 and j."""
        cdef double d0 = <double>self.ring[(j - 1) & RMASK]
        cdef double d1 = <double>self.ring[j & RMASK]
        self.edge = (j - 1) + d0 / (d0 - d1)
        self.start_j = j
        self.in_char = True
        # the latest instant the decision reads, the sample after it (interpolation)
        # and the half width beyond that (its three-point sum)
        self.due = <int64_t>floor(self.edge + TAU_STEPS * self.tau_step + 9.5 * self.spb) + 1 + self.half_width

    cdef void _finish(self, int64_t now) noexcept nogil:
        """Decide every character that is complete by `now`, hunting for the next."""
        cdef int64_t j
        while self.in_char and now >= self.due:
            j = self._decide()
            self.in_char = False
            for j in range(max(j, self.floor + 1), now + 1):
                if self.ring[(j - 1) & RMASK] >= 0 and self.ring[j & RMASK] < 0:
                    self._begin(j)
                    break

    cdef inline double _bit_stat(self, double centre) noexcept nogil:
        """d summed at centre and half_width samples either side, linearly interpolated:
        the same as interpolating the three-point sums kept in trip."""
        cdef int64_t i = <int64_t>floor(centre)
        cdef double t0 = self.trip[i & RMASK]
        return t0 + (centre - i) * (self.trip[(i + 1) & RMASK] - t0)

    cdef double _metric(self, double t0, double *stat) noexcept nogil:
        """Eye opening of the character with its start edge at t0: sum of |statistic|."""
        cdef double total = 0.0
        cdef int k
        for k in range(10):
            stat[k] = self._bit_stat(t0 + (k + 0.5) * self.spb)
            total += fabs(stat[k])
        return total

    cdef double _best_timing(self, double *stat) noexcept nogil:
        """Hill-climb the eye opening over start-edge shifts of tau_step, at most
        TAU_STEPS either way; returns the edge, leaves its statistics in stat."""
        cdef double trial[10]
        cdef double best = self._metric(self.edge, stat)
        cdef double m
        cdef int k, w, way, steps = 0
        for w in range(2):  # up first, then down if up did not help
            way = 1 - 2 * w
            while steps * way < TAU_STEPS:
                m = self._metric(self.edge + (steps + way) * self.tau_step, trial)
                if m <= best:
                    break
                best = m
                steps += way
                for k in range(10):
                    stat[k] = trial[k]
            if steps != 0:
                break
        return self.edge + steps * self.tau_step

    cdef int64_t _decide(self) noexcept nogil:
        """Time and bits of the character at self.edge; emits it. Returns the sample
        to resume the start-edge hunt from."""
        cdef double stat[10]
        cdef double t0 = self._best_timing(stat)
        cdef int k, value = 0
        if stat[0] >= 0.0:  # start bit is mark: the edge was a noise dip
            return self.start_j + 1
        for k in range(8):
            if stat[k + 1] >= 0.0:
                value |= 1 << k
        self._emit(EV_CHAR if stat[9] >= 0.0 else EV_FRAMING_ERROR, value, t0,
                   (t0 - self.idle_since) / self.spb)
        self.idle_since = t0 + 10.0 * self.spb
        return <int64_t>floor(t0 + 9.5 * self.spb) + 1


def fsk_modulate(const uint8_t[::1] bits, double mark_hz, double space_hz, int rate=8000,
                 double amplitude=8000.0, double baud=BAUD):
    """Phase-continuous FSK of `bits` (1 = mark) as int16; bit k covers the samples whose
    time falls in [k/baud, (k+1)/baud)."""
    cdef Py_ssize_t nbits = bits.shape[0]
    cdef Py_ssize_t total = <Py_ssize_t>ceil(nbits * rate / baud)
    out = np.zeros(total, np.int16)
    cdef int16_t[::1] o = out
    cdef double phase = 0.0, f, two_pi = 2.0 * M_PI
    cdef Py_ssize_t i, k
    with nogil:
        for i in range(total):
            k = <Py_ssize_t>floor(i * baud / rate)
            if k >= nbits:
                k = nbits - 1
            o[i] = <int16_t>lrint(amplitude * sin(phase))
            f = mark_hz if bits[k] else space_hz
            phase += two_pi * f / rate
            if phase >= two_pi:
                phase -= two_pi
    return out
