"""FSK modem for caller ID: Bell 202 (1200 mark / 2200 space) and ITU-T V.23 / ETSI
(1300 mark / 2100 space), 1200 baud, asynchronous 1 start / 8 data / 1 stop characters.

Receiver (`FskRx`), in the manner of spandsp's fsk_rx, one state object per channel:
  1. first difference x[n]-x[n-1]: kills DC and the 16-50 Hz ring signal leaking through
     a DAA; the tilt it adds is undone by scaling each tone's coefficients;
  2. four non-coherent correlators (cos/sin at mark and space) over 1.35 (Bell 202) or
     1.5 (V.23: mark and space orthogonal) bit times. Oscillators are exact integer
     tables (the tones are rational multiples of the sample rate) with 11-bit
     coefficients, so products fit int32; each box sum is the difference of two wrapping
     uint32 running sums n apart (one add per sample, exact because the true sum fits
     int32). The four components are interleaved [sample][4]: the mixing and squaring
     loops are contiguous 32-bit loops gcc vectorises (8 lanes with AVX2/AVX-512, 4 on
     NEON) and the running sums are one 4-lane vector add per sample (GCC vector
     extension). Everything is integer, so results never depend on how the input was cut
     into frames;
  3. discriminator d = |mark|^2 - |space|^2 (mark when >= 0) and in-band energy
     e = |mark|^2 + |space|^2 (uint32), which gates a carrier detect with hysteresis;
  4. a UART on a history ring of d: a mark->space crossing (interpolated to a fraction
     of a sample) proposes a start edge; once the whole character is in the ring its bit
     clock is refined by searching +-0.45 bit around that edge for the phase that opens
     the eye widest (largest sum of |bit statistic| over the 10 bits, so every
     transition inside the character pulls the timing, not just the noisy start edge);
     each bit's statistic is d summed at the centre and 1/7 bit either side (a soft
     majority). A start bit that comes out mark was a noise dip: the hunt resumes just
     after it. After a good character the clock carries over: a start edge within half a
     bit of where a back-to-back character would begin is taken to be exactly there (the
     search then starts from that low-noise estimate), also when the line is already
     space as the hunt opens. Characters are reported with the idle time (in bits) since
     the previous character or the carrier onset, which is what lets the message layer
     (cext/callerid.py) skip the 0x55 channel seizure.
Steps 1-3 run over whole chunks in typed, nogil loops the compiler vectorises; step 4 is
a scalar pass costing a few compares per sample plus 30-60 interpolations per character.
Measured (bench/bench_fsk.py): about twice as fast as spandsp's adsi_rx, and every
message decodes down to 10 dB S/N (Bell 202) and 13 dB (V.23) where adsi_rx needs 12/15.

Transmitter (`fsk_modulate`): phase-continuous FSK of a bit array at any rate.
Assumes 16-bit linear PCM at 8 kHz (other rates up to ~25 kHz work, e.g. 16 kHz
wideband; the tables grow to rate/gcd). The plain NumPy twin of both is cext/ref/fsk.py.
"""

cimport cython
from libc.math cimport M_PI, ceil, fabs, floor, lrint, sin
from libc.string cimport memcpy, memmove
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t

import math

import numpy as np

STANDARDS = {"bell202": (1200.0, 2200.0), "v23": (1300.0, 2100.0)}
BAUD = 1200
# correlator length in seconds: V.23's 1300/2100 Hz are orthogonal over 1/800 s (10 samples
# at 8 kHz); for Bell 202, 9 samples beat the orthogonal 8 (fewer errors at 7-8 dB S/N)
WINDOW_S = {"bell202": 9.0 / 8000.0, "v23": 10.0 / 8000.0}  # (floats: cdivision is on)
HALF_WIDTH_BITS = 0.15  # a bit's statistic: d at its centre and this far either side
TAU_STEP_BITS = 0.075  # timing search step (half a sample at 8 kHz), TAU_STEPS either side
COEF_BITS = 10  # largest coefficient 2**10: |dx * coef| < 2**26, NMAX of them < 2**31

cdef enum:
    CHUNK = 256  # samples per inner pass (scratch arrays live in the state)
    NMAX = 32  # longest correlator: 32 products of 17 x 11 bits still fit int32 (~25 kHz)
    LMAX = 960  # longest oscillator table
    RING = 1024  # discriminator history (a character at 25 kHz is ~220 samples)
    RMASK = RING - 1
    MAXEV = 2 * CHUNK  # events one chunk can produce, with a wide margin
    DHIST = 16  # d kept from the previous chunk: >= 2 half widths (3 samples at 25 kHz)
    FRAC = 64  # bit statistics interpolate d in steps of 1/FRAC sample
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


def window_samples(standard, int rate):
    """Correlator length in samples for a standard at a sample rate."""
    return int(round(WINDOW_S[standard] * rate))


def box_shift(int n):
    """Right shift of the n-term box sums before squaring, so |mark|^2 + |space|^2 fits
    uint32 even for a full-scale input (|sum| <= n * 65535 * 1024.5)."""
    return max(14, int(math.ceil(math.log2(n * 65535 * 1024.5 / 46340.0))))


def design(double mark_hz, double space_hz, int rate, int n):
    """Table length L and the four int32 coefficient tables for an n-sample correlator.

    Each tone's table is scaled by 1/(2 sin(pi f/rate)) to undo the difference filter's
    tilt, and the common scale is chosen so the largest coefficient is 2**COEF_BITS."""
    if n > NMAX or n < 2:
        raise ValueError(f"FSK correlator of {n} samples at {rate} Hz: 2-{NMAX} possible, use a lower rate")
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
    return length, tables


def energy_threshold(double dbm0, int n, double mark_hz, double space_hz, int rate):
    """In-band energy e of a steady tone at `dbm0` (sine, spandsp level convention)."""
    amp = 32767.0 * 10 ** ((dbm0 - 3.14) / 20.0)
    g = min(2.0 * math.sin(math.pi * f / rate) for f in (mark_hz, space_hz))
    corr = amp * 2 ** COEF_BITS * g * n / 2.0 / 2 ** box_shift(n)  # |sum| of one correlator pair
    return int(corr * corr)


cdef extern from *:
    """
    /* GCC vector extension (SSE/NEON): one 4-lane add per sample for the running sums;
       the autovectoriser leaves such a recurrence as four scalar chains. */
    typedef unsigned int fsk_v4u __attribute__((vector_size(16)));
    static inline void fsk_running_sum4(unsigned int *run, int m) {
        fsk_v4u acc, v;
        __builtin_memcpy(&acc, run - 4, sizeof acc);
        for (int i = 0; i < m; i++) {
            __builtin_memcpy(&v, run + 4 * i, sizeof v);
            acc += v;
            __builtin_memcpy(run + 4 * i, &acc, sizeof acc);
        }
    }
    """
    void fsk_running_sum4(uint32_t *run, int m) noexcept nogil


cdef inline void _mix_sum(uint32_t *run, const int32_t *dx, const int32_t *coef, int m) noexcept nogil:
    """Interleaved [sample][4] layout: run[4i+k] = run[4(i-1)+k] + dx[i] * coef[4i+k],
    k = mark cos/sin, space cos/sin. The mixing is a contiguous loop gcc vectorises; the
    running sum is one 4-lane vector add per sample (wrapping uint32)."""
    cdef int i, k
    for i in range(m):
        for k in range(4):
            run[4 * i + k] = <uint32_t>(dx[i] * coef[4 * i + k])
    fsk_running_sum4(run, m)


cdef inline void _squares(const uint32_t *run, int n, int shift, int m, int32_t *dis,
                          uint32_t *ene) noexcept nogil:
    """d = |mark|^2 - |space|^2 and e = |mark|^2 + |space|^2 from running sums n apart
    (run points at the chunk's first sample; n samples of history precede it)."""
    cdef int i
    cdef int32_t a, b, c, s, mk, sp
    cdef int32_t ld[CHUNK]
    cdef uint32_t le[CHUNK]
    for i in range(m):
        a = <int32_t>(run[4 * i] - run[4 * (i - n)]) >> shift
        b = <int32_t>(run[4 * i + 1] - run[4 * (i - n) + 1]) >> shift
        c = <int32_t>(run[4 * i + 2] - run[4 * (i - n) + 2]) >> shift
        s = <int32_t>(run[4 * i + 3] - run[4 * (i - n) + 3]) >> shift
        mk = a * a + b * b
        sp = c * c + s * s
        ld[i] = mk - sp
        le[i] = <uint32_t>mk + <uint32_t>sp
    memcpy(dis, ld, m * sizeof(int32_t))
    memcpy(ene, le, m * sizeof(uint32_t))


@cython.final  # direct (inlinable) calls to the cdef methods, no vtable
@cython.auto_pickle(False)
cdef class FskRx:
    """One channel's FSK receiver; process() takes int16 buffers of any length."""

    cdef public str standard
    cdef public int rate
    cdef int n, length, shift
    cdef double spb, tau_step
    cdef int half_width  # samples
    cdef int32_t coef[4 * (LMAX + CHUNK)]  # [sample][4]: one period, repeated for a chunk
    cdef uint32_t e_on, e_off
    # front-end state and scratch
    cdef int phase
    cdef int32_t last_x
    cdef uint32_t run[4 * (CHUNK + NMAX)]  # running sums of the mixed products, [sample][4]
    cdef uint32_t hist[4 * NMAX]  # the last n running sums of the previous chunk
    cdef int32_t dis[DHIST + CHUNK]  # d of the chunk after the previous chunk's last DHIST
    cdef int64_t tlin[CHUNK]
    cdef uint32_t ene[CHUNK]
    cdef int32_t dx[CHUNK]
    # detector / UART state
    cdef int32_t ring[RING]  # d by absolute sample index & RMASK
    cdef int64_t trip[RING]  # d[j - half_width] + d[j] + d[j + half_width], same indexing
    cdef int64_t count  # absolute index of the next input sample
    cdef bint cd
    cdef int below  # consecutive samples under the off threshold
    cdef int64_t onset  # sample where the carrier came on: no start edge before it
    cdef bint in_char
    cdef int64_t start_j  # sample just after the proposed start edge
    cdef int64_t due  # the character is decided once this sample is in the ring
    cdef int64_t wake  # next sample with UART work: the start-bit check, then due
    cdef bint checked  # the start bit passed its early check
    cdef double edge, idle_since
    cdef double predict  # start edge of a back-to-back next character ...
    cdef bint has_pred  # ... valid after a good character
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
        self.n = int(window) if window else window_samples(standard, rate)
        self.shift = box_shift(self.n)
        self.length, tables = design(fm, fs, rate, self.n)
        self.spb = rate / float(baud)
        self.half_width = max(1, <int>lrint(HALF_WIDTH_BITS * self.spb))
        self.tau_step = TAU_STEP_BITS * self.spb
        cdef int k, i
        cdef int32_t[::1] t
        for k in range(4):
            t = tables[k]
            for i in range(self.length + CHUNK):
                self.coef[4 * i + k] = t[i % self.length]
        self.e_on = energy_threshold(cd_on_dbm0, self.n, fm, fs, rate)
        self.e_off = energy_threshold(cd_off_dbm0, self.n, fm, fs, rate)
        self.reset()

    def reset(self):
        """Forget all history: as if freshly created."""
        cdef int i
        for i in range(4 * NMAX):
            self.hist[i] = 0
        for i in range(RING):
            self.ring[i] = 0
            self.trip[i] = 0
        for i in range(DHIST):
            self.dis[i] = 0
        self.phase = 0
        self.last_x = 0
        self.count = 0
        self.cd = False
        self.below = 0
        self.onset = 0
        self.in_char = False
        self.has_pred = False
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
        cdef int i, p = self.phase
        # the previous chunk's last n running sums go in front
        memcpy(self.run, self.hist, 4 * n * sizeof(uint32_t))
        self.dx[0] = <int32_t>x[0] - self.last_x
        for i in range(1, m):
            self.dx[i] = <int32_t>x[i] - <int32_t>x[i - 1]
        self.last_x = x[m - 1]
        _mix_sum(&self.run[4 * n], self.dx, &self.coef[4 * p], m)
        self.phase = (p + m) % self.length
        # box sum of the last n products = difference of running sums n apart (exact:
        # the true sum fits int32, so the wrap-around cancels)
        _squares(&self.run[4 * n], n, self.shift, m, &self.dis[DHIST], self.ene)
        memcpy(self.hist, &self.run[4 * m], 4 * n * sizeof(uint32_t))

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
                dv[off + i] = self.dis[DHIST + i]
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

    cdef void _triples(self, int m) noexcept nogil:
        """The chunk's d into the ring, and trip[j] = d[j-h] + d[j] + d[j+h] for the
        centres j = count-h ... (vectorised on the linear dis buffer, then copied into
        the rings in at most two pieces each)."""
        cdef int i, h = self.half_width
        cdef int32_t *d = &self.dis[DHIST - 2 * h]
        for i in range(m):
            self.tlin[i] = <int64_t>d[i] + d[i + h] + d[i + 2 * h]
        cdef int64_t j0 = (self.count - h) & RMASK
        cdef int first = <int>min(<int64_t>m, RING - j0)
        memcpy(&self.trip[j0], self.tlin, first * sizeof(int64_t))
        memcpy(&self.trip[0], &self.tlin[first], (m - first) * sizeof(int64_t))
        j0 = self.count & RMASK
        first = <int>min(<int64_t>m, RING - j0)
        memcpy(&self.ring[j0], &self.dis[DHIST], first * sizeof(int32_t))
        memcpy(&self.ring[0], &self.dis[DHIST + first], (m - first) * sizeof(int32_t))

    cdef void _uart(self, int m) noexcept nogil:
        """Carrier detect and start-edge hunt per sample; characters are decided when
        their last sample arrives."""
        cdef int i
        cdef int32_t d
        cdef int64_t now
        self._triples(m)
        for i in range(m):
            now = self.count + i
            d = self.dis[DHIST + i]
            if not self._carrier_step(self.ene[i], now):
                continue
            if self.in_char:
                if now >= self.wake:
                    self._advance(now)
            elif d < 0 and now > self.onset and self.ring[(now - 1) & RMASK] >= 0:
                self._begin(now)
        self.count += m
        memmove(&self.dis[0], &self.dis[m], DHIST * sizeof(int32_t))  # history for the next chunk

    cdef bint _carrier_step(self, uint32_t e, int64_t now) noexcept nogil:
        """Update the carrier flag; returns it. Drops a half-received character."""
        if not self.cd:
            if e >= self.e_on:
                self.cd = True
                self.below = 0
                self.onset = now
                self.idle_since = <double>now
                self.has_pred = False
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
        """Propose a start edge at the mark->space crossing between samples j-1 and j;
        within half a bit of where a back-to-back character would start, the clock
        carried over from the previous character is the better estimate."""
        cdef double d0 = <double>self.ring[(j - 1) & RMASK]
        cdef double d1 = <double>self.ring[j & RMASK]
        cdef double edge = (j - 1) + d0 / (d0 - d1)
        if self.has_pred and fabs(edge - self.predict) <= 0.5 * self.spb:
            edge = self.predict
        self._begin_at(edge, j)

    cdef void _begin_at(self, double edge, int64_t j) noexcept nogil:
        self.edge = edge
        self.start_j = j
        self.in_char = True
        # the latest instant the decision reads, the sample after it (interpolation)
        # and the half width beyond that (its three-point sum)
        self.due = <int64_t>floor(self.edge + TAU_STEPS * self.tau_step + 9.5 * self.spb) + 1 + self.half_width
        # first, as soon as it can be read, a quick look at the start bit's centre
        self.checked = False
        self.wake = <int64_t>floor(self.edge + 0.5 * self.spb) + 1 + self.half_width

    cdef void _advance(self, int64_t now) noexcept nogil:
        """Everything the ring now allows: the early start-bit check (a start bit that
        is mark at its nominal centre was a noise dip; dropping it there saves the
        whole-character search on a noisy idle line) and the decision of a complete
        character, then the hunt for the next start edge, possibly more than once."""
        cdef int64_t j
        while self.in_char and now >= self.wake:
            if not self.checked:
                self.checked = True
                self.wake = self.due
                if self._bit_stat(self.edge + 0.5 * self.spb) >= 0:
                    self.in_char = False
                    self.has_pred = False
                    self._hunt(self.start_j + 1, now)
                continue
            j = max(self._decide(), self.onset + 1)
            self.in_char = False
            if self.has_pred and self.ring[(j - 1) & RMASK] < 0 and self.ring[j & RMASK] < 0:
                # already space as the hunt opens: a back-to-back start bit whose
                # mark->space crossing noise pulled before the stop bit's centre
                self._begin_at(self.predict, j)
            else:
                self._hunt(j, now)

    cdef void _hunt(self, int64_t j, int64_t now) noexcept nogil:
        """Look for a mark->space crossing from sample j to now."""
        for j in range(j, now + 1):
            if self.ring[(j - 1) & RMASK] >= 0 and self.ring[j & RMASK] < 0:
                self._begin(j)
                return

    cdef inline int64_t _bit_stat(self, double centre) noexcept nogil:
        """d summed at centre and half_width samples either side, linearly interpolated
        (= interpolating the three-point sums in trip), in units of 1/FRAC: integer, so
        every comparison made on it is exact and the NumPy twin reproduces it."""
        cdef int64_t i = <int64_t>floor(centre)
        cdef int64_t t0 = self.trip[i & RMASK]
        cdef int64_t f = <int64_t>((centre - i) * FRAC)
        return t0 * FRAC + f * (self.trip[(i + 1) & RMASK] - t0)

    cdef int64_t _metric(self, double t0, int64_t *stat) noexcept nogil:
        """Eye opening of the character with its start edge at t0: sum of |statistic|."""
        cdef int64_t total = 0
        cdef int k
        for k in range(10):
            stat[k] = self._bit_stat(t0 + (k + 0.5) * self.spb)
            total += stat[k] if stat[k] >= 0 else -stat[k]
        return total

    cdef double _best_timing(self, int64_t *stat) noexcept nogil:
        """Hill-climb the eye opening over start-edge shifts of tau_step, at most
        TAU_STEPS either way; returns the edge, leaves its statistics in stat."""
        cdef int64_t trial[10]
        cdef int64_t best = self._metric(self.edge, stat)
        cdef int64_t m
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
        cdef int64_t stat[10]
        cdef double t0 = self._best_timing(stat)
        cdef int k, value = 0
        if stat[0] >= 0:  # start bit is mark: the edge was a noise dip
            self.has_pred = False
            return self.start_j + 1
        for k in range(8):
            if stat[k + 1] >= 0:
                value |= 1 << k
        self._emit(EV_CHAR if stat[9] >= 0 else EV_FRAMING_ERROR, value, t0,
                   (t0 - self.idle_since) / self.spb)
        self.idle_since = t0 + 10.0 * self.spb
        self.predict = self.idle_since
        self.has_pred = stat[9] >= 0
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
