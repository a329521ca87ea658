"""Register-level twin of the Si3215/Si3210 ProSLIC, behind a SimSpiDevice.

It speaks the chip's SPI framing (one byte per chip-select frame: a control byte with
the read bit and a direct-register address, then a data byte), keeps the direct and
indirect register files with their reset values, and models what the driver relies on:
the ID and sanity registers, RESET on a GPIO, the DC-DC battery ramp, a calibration
that finishes after simulated time (never, in "stuck" mode), the linefeed state machine,
loop closure and ring trip with the chip's own debounce (DR69/DR70), the ring oscillator
with its active/inactive timers, sense registers consistent with the line state (about
26 mA off hook, 48 V on hook, ring voltage into the phone's REN load), power alarms,
and interrupt status bits latched (write 1 to clear) with INT held low until cleared.

Line model (for the GR-909 line tests of firmware/diag/commission.py): tip and ring are
two nodes solved by nodal analysis at every sense read. The SLIC drives each fed wire
through half its feed resistance (tip to -VCM, ring to -(VCM + VOC) in forward
polarity; TIP_OPEN drives only ring, RING_OPEN only tip) with the loop current limited
to DR71; each wire also sees its sense network (R_SENSE_OHM, referenced to -VCM, DR73
(twin)), so a floating wire sits at -VCM unless something pulls it away. `set_line()`
adds what a field line can carry: a foreign source (DC + AC at 50/60 Hz, through
R_FOREIGN_OHM on each wire), resistive faults tip-ring / tip-ground / ring-ground, a
receiver off hook (the phone's DC: a PHONE_DROP_V drop plus `loop_ohm`, conducting only
above the drop), and the ringer load (`ren`: 6930 ohm + 8 uF per REN, seen while
ringing). The sense registers are magnitudes and saturate (VTIP/VRING at 95.9 V).

The attached phone calls `set_loop(closed, bounce)`; listeners registered with
`add_ring_listener(fn(on, time))` hear ring voltage start and stop. All time comes from
the reactor. Bit positions marked "(twin)" in si3215_regs are shared assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from drivers.chips import si3215_regs as R
from drivers.reactor import NEVER

CALIBRATION_S = 0.2  # how long the twin's self-calibration takes
POWERUP_S = 0.1  # DC-DC ramp from 0 to VBATH
R_FEED_OHM = 400.0  # the SLIC's feed resistance in series with the loop
OHM_PER_REN = 6930.0  # one ringer equivalent: 6930 ohm in series with 8 uF
FARAD_PER_REN = 8e-6
R_SENSE_OHM = 1.0e6  # (twin) each wire's sense network, referenced to -VCM
R_FOREIGN_OHM = 2000.0  # source impedance of a foreign voltage on the wires
PHONE_DROP_V = 6.5  # an off-hook phone's DC drop (speech network + bridge rectifier)
OPEN_OHM = math.inf

RESET_VALUES = {
    R.DR_SPI_MODE: 0x05,  # part 0, revision E
    R.DR_PCM_MODE: 0x00,
    R.DR_LOOPBACK: R.RESET_LOOPBACK,
    R.DR_HYBRID: R.RESET_HYBRID,
    R.DR_POWERDOWN1: R.PDDCDC,
    R.DR_RING_OSC_CTL: 0x18,
    R.DR_RING_ACTIVE_LO: 0x80, R.DR_RING_ACTIVE_HI: 0x3E,  # 2 s
    R.DR_RING_INACTIVE_LO: 0x00, R.DR_RING_INACTIVE_HI: 0x7D,  # 4 s
    R.DR_RING_LCR_DEBOUNCE: 0x54,
    R.DR_AUTO: 0x1F,
    R.DR_LCR_DEBOUNCE: 0x0A,
    R.DR_RTP_DEBOUNCE: 0x0A,
    R.DR_ON_HOOK_V: 0x20,
    R.DR_COMMON_V: 0x02,
    R.DR_VBATH: 0x32,
    R.DR_VBATL: 0x10,
}
LIVE = {R.DR_LINEFEED, R.DR_HOOK_STATUS, R.DR_LVS, R.DR_LCS, R.DR_VTIP, R.DR_VRING,
        R.DR_VBATS1, R.DR_VBATS2, R.DR_CAL1, R.DR_IAS}
REVERSE_LF = {R.LF_REVERSE_ACTIVE, R.LF_REVERSE_OHT}
FED_LF = {R.LF_FORWARD_ACTIVE, R.LF_FORWARD_OHT, R.LF_REVERSE_ACTIVE, R.LF_REVERSE_OHT}


class Si3215Emulator:
    """An emulated ProSLIC; `spi_transfer` is what the SimSpiDevice calls."""

    def __init__(self, reactor, gpio, reset_pin: int, int_pin: int, part: str = "si3215") -> None:
        self.reactor, self.gpio = reactor, gpio
        self.reset_pin, self.int_pin = reset_pin, int_pin
        self.part = part
        self.not_seated = False  # answer 0xFF to everything (card out of its slot)
        self.stuck_calibration = False  # DR96 never clears
        self.dead_battery = False  # the DC-DC converter never comes up
        self.loop_ohm = 300.0  # phone + line DC resistance when off hook
        self.ren = 1.0  # ringer load of the attached phone(s)
        self.foreign_ac_vrms = self.foreign_dc_v = 0.0
        self.foreign_hz = 60.0
        self.r_tip_ring = self.r_tip_ground = self.r_ring_ground = OPEN_OHM
        self.receiver_off_hook = False  # a phone off hook that nobody hung up (GR-909)
        self.writes: list[tuple[float, int, int]] = []  # (time, reg, value): a trace
        self._ring_listeners: list[Callable[[bool, float], None]] = []
        self._t_lcr = reactor.register_timer(self._lcr_settled, NEVER)
        self._t_rtp = reactor.register_timer(self._rtp_settled, NEVER)
        self._t_ring = reactor.register_timer(self._ring_phase_end, NEVER)
        self._t_bounce = reactor.register_timer(self._bounce_step, NEVER)
        self.loop_closed = False  # the phone's contacts (raw, before any debounce)
        self._bounce: list[tuple[float, bool]] = []
        self._in_reset = False
        self._ring_on = False
        self._reset_chip()
        gpio.watch_output(reset_pin, self._reset_pin_changed)

    # ------------------------------------------------------------------ reset and SPI
    def _reset_chip(self) -> None:
        self.regs = bytearray(128)
        for reg, value in RESET_VALUES.items():
            self.regs[reg] = value
        if self.part == "si3215":
            self.regs[R.DR_PCM_MODE] |= R.PCM_MODE_SI3215
        self.ir = [0] * R.IR_COUNT
        self._ctrl: int | None = None
        self._ida_written = False
        self._cal_done_at = NEVER
        self._powered_at: float | None = None
        self._lf = R.LF_OPEN
        self.lcr = self.rtp = False
        for timer in (self._t_lcr, self._t_rtp, self._t_ring):
            self.reactor.update_timer(timer, NEVER)
        self._ring_active = False
        self._update_ring()
        self._update_int()

    def _reset_pin_changed(self, level: bool) -> None:
        self._in_reset = not level
        if self._in_reset:
            self._reset_chip()

    def spi_transfer(self, data: bytes) -> bytes:
        """One chip-select frame; each byte is a control or a data byte in turn."""
        return bytes(self._spi_byte(b) for b in data)

    def _spi_byte(self, byte: int) -> int:
        if self.not_seated or self._in_reset:
            return 0xFF
        if self._ctrl is None:
            self._ctrl = byte
            return 0x00
        ctrl, self._ctrl = self._ctrl, None
        reg = ctrl & R.SPI_ADDR_MASK
        if ctrl & R.SPI_READ:
            return self.read_reg(reg)
        self.write_reg(reg, byte)
        return 0x00

    # ------------------------------------------------------------------ register file
    def read_reg(self, reg: int) -> int:
        if reg in LIVE:
            return self._live(reg) & 0xFF
        return self.regs[reg]

    def write_reg(self, reg: int, value: int) -> None:
        self.writes.append((self.reactor.now(), reg, value))
        if reg in (R.DR_INT_STATUS1, R.DR_INT_STATUS2, R.DR_INT_STATUS3):
            self.regs[reg] &= ~value & 0xFF  # write 1 to clear
            self._update_int()
        elif reg in (R.DR_SPI_MODE, R.DR_PCM_MODE):  # identity bits are read-only
            keep = R.REV_MASK | R.PART_MASK if reg == R.DR_SPI_MODE else R.PCM_MODE_SI3215
            self.regs[reg] = (self.regs[reg] & keep) | (value & ~keep & 0xFF)
        elif reg == R.DR_LINEFEED:
            self._set_lf(value & R.LF_MASK)
        elif reg == R.DR_CAL1:
            self._start_calibration(value)
        else:
            self._write_plain(reg, value)

    def _write_plain(self, reg: int, value: int) -> None:
        self.regs[reg] = value
        if reg in (R.DR_IDA_LO, R.DR_IDA_HI):
            self._ida_written = True
        elif reg == R.DR_IAA:
            self._indirect(value)
        elif reg == R.DR_POWERDOWN1:
            self._powered_at = None if value & R.PDDCDC else self.reactor.now()
        elif reg in (R.DR_INT_ENABLE1, R.DR_INT_ENABLE2, R.DR_INT_ENABLE3):
            self._update_int()

    def _indirect(self, addr: int) -> None:
        """Writing IAA after IDA is an indirect write; IAA alone is an indirect read."""
        if addr >= R.IR_COUNT:
            return
        if self._ida_written:
            self.ir[addr] = self.regs[R.DR_IDA_LO] | (self.regs[R.DR_IDA_HI] << 8)
        else:
            self.regs[R.DR_IDA_LO], self.regs[R.DR_IDA_HI] = self.ir[addr] & 0xFF, self.ir[addr] >> 8
        self._ida_written = False

    def _start_calibration(self, value: int) -> None:
        self.regs[R.DR_CAL1] = value
        if value & R.CAL_RUN:
            self._cal_done_at = NEVER if self.stuck_calibration else self.reactor.now() + CALIBRATION_S

    def _live(self, reg: int) -> int:
        if reg == R.DR_LINEFEED:
            return (self.regs[R.DR_LINEFEED] & R.LF_MASK) | (self._lf << R.LFS_SHIFT)
        if reg == R.DR_HOOK_STATUS:
            return (R.HOOK_LCR if self.lcr else 0) | (R.HOOK_RTP if self.rtp else 0)
        if reg == R.DR_CAL1:
            if self.reactor.now() >= self._cal_done_at:
                self.regs[R.DR_CAL1], self._cal_done_at = 0, NEVER
            return self.regs[R.DR_CAL1]
        if reg == R.DR_IAS:
            return 0  # indirect accesses complete within one SPI byte time here
        if reg in (R.DR_VBATS1, R.DR_VBATS2):
            return min(255, round(self.battery_v() / R.VSENSE_STEP_V))
        return self._sense(reg)

    def _sense(self, reg: int) -> int:
        if self._lf == R.LF_RINGING:
            return self._ring_sense(reg)
        vt, vr, i_ma = self.solve()
        if reg == R.DR_LCS:
            return min(0x3F, round(i_ma / R.LCS_STEP_MA))
        if reg == R.DR_LVS:
            rev = R.LVS_REVERSE if self._lf in REVERSE_LF else 0
            return min(0x3F, round(abs(vt - vr) / R.LVS_STEP_V)) | rev
        return min(255, round(abs(vt if reg == R.DR_VTIP else vr) / R.VSENSE_STEP_V))

    def _ring_sense(self, reg: int) -> int:
        v_loop, i_ma = self._ring_v_i()
        if reg == R.DR_LCS:
            return min(0x3F, round(i_ma / R.LCS_STEP_MA))
        if reg == R.DR_LVS:
            return min(0x3F, round(v_loop / R.LVS_STEP_V))
        vcm = self.regs[R.DR_COMMON_V] * R.VOC_STEP_V if v_loop else 0.0
        volts = vcm if reg == R.DR_VTIP else vcm + v_loop
        return min(255, round(volts / R.VSENSE_STEP_V))

    # ------------------------------------------------------------------ line physics
    def battery_v(self) -> float:
        if self._powered_at is None or self.dead_battery:
            return 0.0
        ramp = min(1.0, (self.reactor.now() - self._powered_at) / POWERUP_S)
        return ramp * self.regs[R.DR_VBATH] * R.VOC_STEP_V

    def _ring_v_i(self) -> tuple[float, float]:
        """(peak volts, rms loop mA) while ringing: the ring voltage into the REN load,
        a tip-ring fault in parallel."""
        if not self._ring_on:
            return 0.0, 0.0
        vpk = self.ring_vpk()
        w = 2 * math.pi * max(self.ring_hz(), 1.0)
        z_ren = complex(OHM_PER_REN, -1 / (w * FARAD_PER_REN))
        admittance = max(self.ren, 0.0) / z_ren + 1 / self.r_tip_ring
        return vpk, 1000 * vpk / math.sqrt(2) * abs(admittance)

    # ---- the DC line model: two nodes (tip, ring) against ground ----
    def set_line(self, **conditions) -> None:
        """Put a condition on the line: foreign_ac_vrms, foreign_dc_v, foreign_hz,
        r_tip_ring, r_tip_ground, r_ring_ground (ohm; inf = none), ren,
        receiver_off_hook. Unnamed conditions stay as they are."""
        known = {"foreign_ac_vrms", "foreign_dc_v", "foreign_hz", "r_tip_ring",
                 "r_tip_ground", "r_ring_ground", "ren", "receiver_off_hook"}
        for key, value in conditions.items():
            if key not in known:
                raise ValueError(f"set_line: unknown condition {key!r}; known: {', '.join(sorted(known))}")
            setattr(self, key, bool(value) if key == "receiver_off_hook" else float(value))
        self._loop_detect()

    def clear_line(self) -> None:
        """A good line: no foreign voltage, no faults, nobody off hook, 1 REN."""
        self.set_line(foreign_ac_vrms=0, foreign_dc_v=0, r_tip_ring=OPEN_OHM,
                      r_tip_ground=OPEN_OHM, r_ring_ground=OPEN_OHM, ren=1.0,
                      receiver_off_hook=False)

    def _sources(self) -> dict[int, float]:
        """Wire (0 tip, 1 ring) -> the voltage the SLIC drives it to in this linefeed."""
        if not self.battery_v():
            return {}
        vcm = self.regs[R.DR_COMMON_V] * R.VOC_STEP_V
        low, high = -vcm, -(vcm + self.regs[R.DR_ON_HOOK_V] * R.VOC_STEP_V)
        if self._lf in FED_LF:
            return {0: high, 1: low} if self._lf in REVERSE_LF else {0: low, 1: high}
        if self._lf == R.LF_TIP_OPEN:
            return {1: high}
        if self._lf == R.LF_RING_OPEN:
            return {0: low}
        return {}

    def _foreign_v(self) -> float:
        t = self.reactor.now()
        ac = self.foreign_ac_vrms * math.sqrt(2) * math.sin(2 * math.pi * self.foreign_hz * t)
        return self.foreign_dc_v + ac

    def solve(self) -> tuple[float, float, float]:
        """(tip volts, ring volts, loop mA) now, with the loop current limit applied."""
        src = self._sources()
        ilim = R.ILIM_BASE_MA + R.ILIM_STEP_MA * self.regs[R.DR_LOOP_I_LIMIT]
        vt, vr, i_ma = self._solve(src, 1.0)
        if len(src) == 2 and i_ma > ilim:
            lo, hi = 1.0, 1e5  # the SLIC raises its feed impedance to hold the limit
            for _ in range(60):
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if self._solve(src, mid)[2] > ilim else (lo, mid)
            vt, vr, i_ma = self._solve(src, hi)
        return vt, vr, i_ma

    def _solve(self, src: dict[int, float], feed_scale: float) -> tuple[float, float, float]:
        g_feed = 2 / (R_FEED_OHM * feed_scale)
        vt, vr = self._nodes(src, g_feed, None)
        if (self.loop_closed or self.receiver_off_hook) and abs(vt - vr) > PHONE_DROP_V:
            sign = 1.0 if vt > vr else -1.0
            pt, pr = self._nodes(src, g_feed, sign)
            if (pt - pr) * sign > PHONE_DROP_V:
                vt, vr = pt, pr
        cur = [g_feed * (src[w] - v) if w in src else 0.0 for w, v in ((0, vt), (1, vr))]
        i = abs(cur[0] - cur[1]) / 2 if len(src) == 2 else abs(cur[0] + cur[1])
        return vt, vr, 1000 * i

    def _nodes(self, src: dict[int, float], g_feed: float, phone: float | None) -> tuple[float, float]:
        """Nodal analysis of tip and ring; `phone` = the conducting phone's polarity."""
        vcm = -self.regs[R.DR_COMMON_V] * R.VOC_STEP_V if self.battery_v() else 0.0
        g = [[0.0, 0.0], [0.0, 0.0]]
        inj = [0.0, 0.0]
        foreign = self._foreign_v() if (self.foreign_ac_vrms or self.foreign_dc_v) else None
        for w, r_ground in ((0, self.r_tip_ground), (1, self.r_ring_ground)):
            branches = [(1 / R_SENSE_OHM, vcm), (1 / r_ground, 0.0)]
            if w in src:
                branches.append((g_feed, src[w]))
            if foreign is not None:
                branches.append((1 / R_FOREIGN_OHM, foreign))
            for cond, volts in branches:
                g[w][w] += cond
                inj[w] += cond * volts
        g_tr = 1 / self.r_tip_ring
        if phone is not None:
            g_p = 1 / max(self.loop_ohm, 1.0)
            g_tr += g_p
            inj[0] += g_p * phone * PHONE_DROP_V
            inj[1] -= g_p * phone * PHONE_DROP_V
        g[0][0] += g_tr
        g[1][1] += g_tr
        g[0][1] -= g_tr
        g[1][0] -= g_tr
        det = g[0][0] * g[1][1] - g[0][1] * g[1][0]
        vt = (inj[0] * g[1][1] - g[0][1] * inj[1]) / det
        vr = (g[0][0] * inj[1] - g[1][0] * inj[0]) / det
        return vt, vr

    def ring_hz(self) -> float:
        c = self._signed(self.ir[R.IR_RING_FREQ]) / 32768
        return math.acos(max(-1.0, min(1.0, c))) * R.RING_OSC_RATE / (2 * math.pi)

    def ring_vpk(self) -> float:
        c = self._signed(self.ir[R.IR_RING_FREQ]) / 32768
        if not -1 < c < 1:
            return 0.0
        scale = 0.25 * math.sqrt((1 - c) / (1 + c)) * 32768
        return self.ir[R.IR_RING_AMP] / scale * R.RING_AMP_FULL_V

    @staticmethod
    def _signed(v: int) -> int:
        return v - 0x10000 if v & 0x8000 else v

    @property
    def linefeed(self) -> int:
        return self._lf

    @property
    def reversed(self) -> bool:
        return self._lf in REVERSE_LF

    @property
    def ring_voltage(self) -> bool:
        """True while ring voltage is on the line (the phone's bell rings)."""
        return self._ring_on

    def add_ring_listener(self, fn: Callable[[bool, float], None]) -> None:
        self._ring_listeners.append(fn)

    # ------------------------------------------------------------------ linefeed and ring
    def _set_lf(self, lf: int) -> None:
        self.regs[R.DR_LINEFEED] = lf
        old, self._lf = self._lf, lf
        if lf == R.LF_RINGING and old != R.LF_RINGING:
            self._start_ring_timers()
        elif lf != R.LF_RINGING:
            self.reactor.update_timer(self._t_ring, NEVER)
            self._ring_active = False
            self.rtp = False
        self._update_ring()
        self._loop_detect()

    def _timer_s(self, lo: int) -> float:
        return (self.regs[lo] | (self.regs[lo + 1] << 8)) * R.TIMER_TICK_S

    def _start_ring_timers(self) -> None:
        self._ring_active = True
        ctl = self.regs[R.DR_RING_OSC_CTL]
        on_s = self._timer_s(R.DR_RING_ACTIVE_LO)
        timed = ctl & R.RING_TA_EN and on_s > 0
        self.reactor.update_timer(self._t_ring, self.reactor.now() + on_s if timed else NEVER)

    def _ring_phase_end(self, eventtime: float) -> float:
        self._ring_active = not self._ring_active
        ctl = self.regs[R.DR_RING_OSC_CTL]
        if self._ring_active:
            nxt = self._timer_s(R.DR_RING_ACTIVE_LO) if ctl & R.RING_TA_EN else NEVER
        else:
            nxt = self._timer_s(R.DR_RING_INACTIVE_LO) if ctl & R.RING_TI_EN else NEVER
        self._latch(R.DR_INT_STATUS1, R.IRQ1_RINGTA if self._ring_active else R.IRQ1_RINGTI)
        self._update_ring()
        return eventtime + nxt if nxt not in (NEVER, 0) else NEVER

    def _update_ring(self) -> None:
        on = (self._lf == R.LF_RINGING and self._ring_active and self.ring_vpk() > 5.0
              and self.battery_v() > 0)
        if on == self._ring_on:
            return
        self._ring_on = on
        if on:
            self.regs[R.DR_RING_OSC_CTL] |= R.RING_OSC_EN
        else:
            self.regs[R.DR_RING_OSC_CTL] &= ~R.RING_OSC_EN & 0xFF
        for fn in list(self._ring_listeners):
            fn(on, self.reactor.now())

    # ------------------------------------------------------------------ loop and ring trip
    def set_loop(self, closed: bool, bounce: Sequence[float] = ()) -> None:
        """The phone's hook switch. `bounce` = ms the contacts spend alternately in the
        new and old state before they settle in the new one (e.g. (3, 2, 4, 1))."""
        self._bounce = []
        t, state = self.reactor.now(), bool(closed)
        for ms in bounce:
            t += ms / 1000
            state = not state
            self._bounce.append((t, state))
        if self._bounce and self._bounce[-1][1] != bool(closed):
            self._bounce.append((t, bool(closed)))  # always settle in the new state
        self._raw(bool(closed))
        self.reactor.update_timer(self._t_bounce, self._bounce[0][0] if self._bounce else NEVER)

    def _bounce_step(self, eventtime: float) -> float:
        while self._bounce and self._bounce[0][0] <= eventtime:
            self._raw(self._bounce.pop(0)[1])
        return self._bounce[0][0] if self._bounce else NEVER

    def _raw(self, closed: bool) -> None:
        self.loop_closed = closed
        if not closed:
            self.rtp = False
        self._loop_detect()

    def _loop_detect(self) -> None:
        """Start (or cancel) the chip's debounce toward the loop state it now sees."""
        now = self.reactor.now()
        if self._lf == R.LF_RINGING:
            self.reactor.update_timer(self._t_lcr, NEVER)
            wait = self.regs[R.DR_RTP_DEBOUNCE] * R.DEBOUNCE_TICK_MS / 1000
            self.reactor.update_timer(self._t_rtp, now + wait if self._closed else NEVER)
            return
        self.reactor.update_timer(self._t_rtp, NEVER)
        seen = self._loop_seen()
        if seen == self.lcr:
            self.reactor.update_timer(self._t_lcr, NEVER)
            return
        wait = self.regs[R.DR_LCR_DEBOUNCE] * R.DEBOUNCE_TICK_MS / 1000
        self.reactor.update_timer(self._t_lcr, now + wait)

    @property
    def _closed(self) -> bool:
        return self.loop_closed or self.receiver_off_hook

    def _loop_seen(self) -> bool:
        return self._closed and self._lf in FED_LF and self.battery_v() > 0

    def _lcr_settled(self, _eventtime: float) -> float:
        seen = self._loop_seen()
        if seen != self.lcr:
            self.lcr = seen
            self._latch(R.DR_INT_STATUS2, R.IRQ2_LOOP)
        return NEVER

    def _rtp_settled(self, _eventtime: float) -> float:
        if not (self._closed and self._lf == R.LF_RINGING):
            return NEVER
        self.rtp = self.lcr = True
        if self.regs[R.DR_AUTO] & R.AUTO_RTRIP:
            self._set_lf(R.LF_FORWARD_ACTIVE)
            self.rtp = True
        self._latch(R.DR_INT_STATUS2, R.IRQ2_RTRIP)
        return NEVER

    # ------------------------------------------------------------------ alarms and INT
    def inject_power_alarm(self, transistor: int = 1) -> None:
        """A transistor Q1..Q6 overheats (e.g. tip shorted to ground)."""
        self._latch(R.DR_INT_STATUS2, 1 << (transistor - 1 + R.IRQ2_PQ_SHIFT))
        if self.regs[R.DR_AUTO] & R.AUTO_OPEN:
            self._set_lf(R.LF_OPEN)

    def _latch(self, status_reg: int, bits: int) -> None:
        enable = self.regs[status_reg + (R.DR_INT_ENABLE1 - R.DR_INT_STATUS1)]
        if bits & enable:
            self.regs[status_reg] |= bits & enable
            self._update_int()

    def _update_int(self) -> None:
        pending = any(self.regs[r] for r in (R.DR_INT_STATUS1, R.DR_INT_STATUS2, R.DR_INT_STATUS3))
        self.gpio.drive(self.int_pin, False if pending else None)  # open drain, active low
