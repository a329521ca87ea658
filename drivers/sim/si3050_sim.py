"""Register-level emulator of an Si3050 DAA with its Si3019 line side, behind a SimSpiDevice.

What it models: the 3-byte SPI frame (control, address, data), the register file with
reset values, hardware reset on the RESET GPIO and soft reset (SR), the line side
powering up some simulated time after PDL is cleared (then LSID and FDT read non-zero),
the OH bit, ring detection (RDTP/RDTN follow the ring voltage; RDT follows them, or
with RNGV set the ring validation of RAS/RMX/RCC/RDLY/RTO), interrupt source bits
latched with INT driven low until the driver writes them to 0, and the line voltage
(LVS, signed, 1 V/bit) and loop current (LCS 3.3 mA/bit, LCS2 1.1 mA/bit) computed from
the line state the central office sets through the `line_*` methods.

What it assumes: the ring is a sine of `ring_freq` Hz whose TIP/RING events come twice
a cycle; the 20 Hz waveform is not stepped sample by sample (RDTP is read as "ring
voltage present now"). All time comes from the reactor. `seated=False` answers 0xFF
to everything (a card that is not seated); `line_side=False` never brings the
isolation link up (no or dead Si3019).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from drivers.bus.gpio import SimGpio
from drivers.chips import si3050_regs as R
from drivers.reactor import NEVER, Reactor

REVA = 0x05  # system-side revision the emulator reports
LRV = 0x04  # line-side revision
LINE_SIDE_POWER_UP_S = 0.12  # isolation link needs tens of ms; DAHDI allows up to 2 s
IDLE_BATTERY_V = 48.0
CO_FEED_OHM = 400.0  # the CO's battery feed (two 200 ohm feed coils)
DEFAULT_LOOP_OHM = 1165.0  # cable to the exchange: 26 mA into the DAA on a 48 V battery
DAA_DROP_V, DAA_OHM = 6.0, 50.0  # the DAA's DC termination: a drop plus a resistance
PARALLEL_V = 8.5  # a parallel phone off hook loads the line to about this
SHARED_V, SHARED_MA = 6.0, 14.0  # both off hook: the loop current is shared
RING_PEAK_V = 120.0  # ~85 Vrms ring on top of the battery
READ_ONLY = {R.SYS_LINE_REV, R.LINE_STATUS, R.LINE_REV, R.INTL_CONTROL4,
             R.LOOP_CURRENT, R.LINE_VOLTAGE}
WRITE_MASK = {R.DAA_CONTROL1: R.OH | R.ONHM | 0x10}  # RDTN/RDTP/RDT are status bits


class Si3050Emulator:
    """An Si3050 + Si3019 as seen on the SPI bus, the INT/RESET pins and the phone line."""

    def __init__(self, reactor: Reactor, gpio: SimGpio, reset_pin: int, int_pin: int,
                 seated: bool = True, line_side: bool = True) -> None:
        self.reactor, self.gpio = reactor, gpio
        self.reset_pin, self.int_pin = reset_pin, int_pin
        self.seated, self.line_side = seated, line_side
        self.in_reset = False
        self.bad_frames = 0
        self.writes: deque[tuple[float, int, int]] = deque(maxlen=10000)  # (time, reg, value)
        self._hook_watchers: list[Callable[[bool], None]] = []
        # the line, as the central office leaves it
        self.connected = True
        self.battery_v = IDLE_BATTERY_V
        self.loop_ohm = DEFAULT_LOOP_OHM
        self.polarity = 1
        self.battery_on = True  # False during a CO open-loop interval (loop drop)
        self.parallel_offhook = False
        self.ring_freq = 0.0  # Hz; 0 = not ringing
        self._ring_since = 0.0
        self._ring_gen = 0
        self._pending: tuple[str, int] = ("", -1)
        self._powerup_timer = None
        self._ring_timer = reactor.register_timer(self._ring_event, NEVER)
        gpio.watch_output(reset_pin, self._reset_pin_written)
        self._reset_registers()

    # ---- SPI ----
    def spi_transfer(self, data: bytes) -> bytes:
        if not self.seated or self.in_reset:
            return b"\xff" * len(data)
        if len(data) != R.SPI_FRAME or not data[0] & R.SPI_CTRL_WRITE:
            self.bad_frames += 1
            return b"\xff" * len(data)
        reg = data[1] & 0x7F
        if data[0] & 0x40:
            return b"\xff\xff" + bytes([self.read(reg)])
        self.write(reg, data[2])
        return b"\xff\xff\xff"

    def read(self, reg: int) -> int:
        if reg == R.LINE_VOLTAGE:
            return R.to_byte(round(self.line_voltage() / R.LVS_V_PER_BIT)) if self.link_up else 0
        if reg == R.LOOP_CURRENT:
            return min(255, round(self.loop_current() / R.LCS2_MA_PER_BIT)) if self.link_up else 0
        if reg == R.LINE_STATUS:
            return self._line_status()
        if reg == R.DAA_CONTROL1:
            return (self.regs[reg] & ~(R.RDTN | R.RDTP | R.RDT)) | self._ring_bits()
        return self.regs.get(reg, 0)

    def write(self, reg: int, value: int) -> None:
        self.writes.append((self.reactor.now(), reg, value))
        if reg in READ_ONLY:
            return
        if reg == R.INT_SOURCE:  # write 0 to clear; a 1 leaves the bit as it is
            self.regs[reg] &= value
            self._update_int()
            return
        old = self.regs.get(reg, 0)
        mask = WRITE_MASK.get(reg, 0xFF)
        self.regs[reg] = (old & ~mask) | (value & mask)
        self._after_write(reg, old)

    def _after_write(self, reg: int, old: int) -> None:
        if reg == R.CONTROL1 and self.regs[reg] & R.SR:
            self._reset_registers()
        elif reg == R.DAA_CONTROL2:
            self._power_line_side(not self.regs[reg] & R.PDL)
        elif reg == R.DAA_CONTROL1 and (old ^ self.regs[reg]) & R.OH:
            self._hook_changed()
        elif reg in (R.CONTROL2, R.INT_MASK):
            self._update_int()

    # ---- reset and power ----
    def _reset_pin_written(self, level: bool) -> None:
        self.in_reset = not level
        if self.in_reset:
            was_offhook = self.offhook
            self._reset_registers()
            if was_offhook:
                self._hook_changed()

    def _reset_registers(self) -> None:
        self.regs = {reg: 0 for reg in range(1, 60)}
        self.regs.update(R.RESET_VALUES)
        self.regs[R.SYS_LINE_REV] = REVA  # LSID reads 0 until the link is up
        self.link_up = False
        self._rdt = False  # validated ring detect, read back through DAA Control 1
        self._cancel_powerup()
        self._update_int()

    def _power_line_side(self, on: bool) -> None:
        self._cancel_powerup()
        if not on:
            self.link_up = False
            self.regs[R.SYS_LINE_REV] = REVA
        elif not self.link_up and self.line_side:
            when = self.reactor.now() + LINE_SIDE_POWER_UP_S
            self._powerup_timer = self.reactor.register_timer(self._link_established, when)

    def _cancel_powerup(self) -> None:
        if self._powerup_timer is not None:
            self.reactor.unregister_timer(self._powerup_timer)
            self._powerup_timer = None

    def _link_established(self, eventtime: float) -> float:
        self._powerup_timer = None
        self.link_up = True
        self.regs[R.SYS_LINE_REV] = (R.LSID_SI3019 << 4) | REVA
        self.regs[R.LINE_REV] = LRV << 2
        return NEVER

    # ---- the line side, driven by the central office ----
    @property
    def offhook(self) -> bool:
        """The DAA has seized the line (OH set and the line side up)."""
        return bool(self.regs[R.DAA_CONTROL1] & R.OH) and self.link_up

    @property
    def audio_path(self) -> bool:
        """Line audio reaches the PCM bus: off hook, or on-hook line monitor (ONHM) on."""
        return self.link_up and bool(self.regs[R.DAA_CONTROL1] & (R.OH | R.ONHM))

    def watch_hook(self, fn: Callable[[bool], None]) -> None:
        """Call fn(offhook) when the driver seizes or releases the line."""
        self._hook_watchers.append(fn)

    def line_connect(self, connected: bool) -> None:
        self.connected = connected
        self._check_drop_out()

    def line_battery(self, on: bool) -> None:
        """The CO removes (loop drop) or restores its battery feed."""
        self.battery_on = on
        self._check_drop_out()

    def line_polarity(self, polarity: int) -> None:
        polarity = 1 if polarity >= 0 else -1
        if polarity != self.polarity:
            self.polarity = polarity
            if self.link_up and self._fed:
                self._latch(R.POLI)

    def line_feed(self, battery_v: float | None = None, loop_ohm: float | None = None) -> None:
        """The CO's battery and the cable's resistance (what idle volts and loop current show)."""
        if battery_v is not None:
            self.battery_v = float(battery_v)
        if loop_ohm is not None:
            self.loop_ohm = float(loop_ohm)

    def line_parallel_phone(self, offhook: bool) -> None:
        self.parallel_offhook = offhook

    def line_ring(self, freq: float) -> None:
        """Apply ring voltage at `freq` Hz (0 stops it)."""
        if freq and not self.ring_freq:
            self.ring_freq, self._ring_since = freq, self.reactor.now()
            self._ring_gen += 1
            self._ring_began()
        elif not freq and self.ring_freq:
            self.ring_freq = 0.0
            self._ring_gen += 1
            self._ring_ended()

    @property
    def _fed(self) -> bool:
        return self.connected and self.battery_on

    def line_voltage(self) -> float:
        """Tip-ring volts as the line side measures them (signed: polarity)."""
        if not self._fed:
            return 0.0
        if self.offhook:
            volts = SHARED_V if self.parallel_offhook else DAA_DROP_V + DAA_OHM * self._loop_a()
        else:
            volts = PARALLEL_V if self.parallel_offhook else self.battery_v
        volts *= self.polarity
        if self.ring_freq and not self.offhook:
            phase = 2 * math.pi * self.ring_freq * (self.reactor.now() - self._ring_since) + 0.7
            volts += RING_PEAK_V * math.sin(phase)
        return volts

    def loop_current(self) -> float:
        if not (self._fed and self.offhook):
            return 0.0
        return SHARED_MA if self.parallel_offhook else 1000 * self._loop_a()

    def _loop_a(self) -> float:
        """Loop current (A) of the DAA alone off hook: battery, feed, cable, termination."""
        return max(0.0, self.battery_v - DAA_DROP_V) / (CO_FEED_OHM + self.loop_ohm + DAA_OHM)

    def _line_status(self) -> int:
        if not self.link_up:
            return 0
        lcs = min(R.LCS_OVERLOAD, round(self.loop_current() / R.LCS_MA_PER_BIT))
        return R.FDT | lcs

    def _hook_changed(self) -> None:
        for fn in list(self._hook_watchers):
            fn(self.offhook)

    def _check_drop_out(self) -> None:
        """Off hook and the feed goes: the line-side supply collapses (DOD)."""
        if self.offhook and not self._fed:
            self.regs[R.INTL_CONTROL4] |= R.DOD
            self._latch(R.DODI)
        else:
            self.regs[R.INTL_CONTROL4] &= ~R.DOD

    # ---- ring detection ----
    def _ring_present(self) -> bool:
        return bool(self.ring_freq) and self.connected and self.link_up and not self.offhook

    def _ring_bits(self) -> int:
        bits = R.RDT if self._rdt else 0
        if self._ring_present():
            phase = math.sin(2 * math.pi * self.ring_freq * (self.reactor.now() - self._ring_since) + 0.7)
            bits |= R.RDTP if phase >= 0 else R.RDTN
        return bits

    def _set_rdt(self, on: bool) -> None:
        if on == self._rdt:
            return
        self._rdt = on
        if on or self.regs[R.CONTROL2] & R.RDI:
            self._latch(R.RDTI)

    def _validating(self) -> bool:
        return bool(self.regs[R.RING_VALID3] & R.RNGV)

    def _ring_began(self) -> None:
        if not self._ring_present():
            return
        if not self._validating():
            self._set_rdt(True)
            return
        if not self._frequency_ok():
            return  # out-of-band "ring": never validated
        rdly = ((self.regs[R.RING_VALID2] >> 7) << 2) | (self.regs[R.RING_VALID1] >> 6)
        confirm = R.RCC_MS[self.regs[R.RING_VALID2] & 0x07] + R.RDLY_MS[rdly]
        self._pending = ("confirm", self._ring_gen)
        self.reactor.update_timer(self._ring_timer, self.reactor.now() + confirm / 1000.0)

    def _ring_ended(self) -> None:
        if not self._rdt:
            self.reactor.update_timer(self._ring_timer, NEVER)
            return
        if not self._validating():
            self._set_rdt(False)
            return
        rto = R.RTO_MS[(self.regs[R.RING_VALID2] >> 3) & 0x0F]
        self._pending = ("timeout", self._ring_gen)
        self.reactor.update_timer(self._ring_timer, self.reactor.now() + rto / 1000.0)

    def _ring_event(self, eventtime: float) -> float:
        what, gen = self._pending
        if gen != self._ring_gen:
            return NEVER  # the ring started or stopped again since
        if what == "confirm" and self._ring_present():
            self._set_rdt(True)
        elif what == "timeout":
            self._set_rdt(False)
        return NEVER

    def _frequency_ok(self) -> bool:
        """RAS/RMX window: TIP/RING events every half cycle, counted in 2 ms ticks."""
        ras = self.regs[R.RING_VALID3] & 0x3F
        rmx = self.regs[R.RING_VALID1] & 0x3F
        half = 1000.0 / (2 * self.ring_freq) / R.RING_TICK_MS
        return half <= ras and ras - half <= rmx

    # ---- interrupts ----
    def _latch(self, bit: int) -> None:
        self.regs[R.INT_SOURCE] |= bit
        self._update_int()

    def _update_int(self) -> None:
        enabled = self.regs.get(R.CONTROL2, 0) & R.INTE
        pending = self.regs.get(R.INT_SOURCE, 0) & self.regs.get(R.INT_MASK, 0)
        self.gpio.drive(self.int_pin, False if (enabled and pending) else None)
