"""FXS port driver for the Si3215/Si3210 ProSLIC: one analog phone line.

The driver sees only an SpiDevice, a Gpio and the Reactor, so the same code runs on the
box and against `drivers.sim.si3215_sim`. `start()` pulses reset, checks the chip's
identity, programs the ring oscillator, DC-DC converter and loop feed, waits for the
battery and the chip's self-calibration (timeouts read the reactor clock), enables
interrupts and sets the line to forward active. A chip that fails is marked failed and
`ChipFailed` is raised; the caller decides what to do with the rest of the box.

Hook handling: the chip interrupts (INT, active low) on every debounced loop-closure
change; the driver timestamps each change with the reactor clock and classifies it:
  * on hook -> loop closed for `debounce_ms`                         -> OFF_HOOK
  * off hook, loop open, then closed again after a break of
      < break debounce (min(debounce_ms, 25) ms)                     -> contact bounce, ignored
      < flash_min_ms                                                 -> one dial pulse
      flash_min_ms .. flash_max_ms                                   -> FLASH
  * loop still open at flash_max_ms after it opened                  -> ON_HOOK (then)
A make (loop closed) shorter than the make debounce (min(debounce_ms, 10) ms) inside a
break is bounce and the break goes on. The two debounces are deliberately shorter than
the full hook debounce: at 20 pps 66/33 a break lasts 33 ms and a make only 17 ms, so
a 20 ms debounce applied to makes would swallow every pulse. Pulses are counted into a
digit (10 pulses = "0") that ends when the loop stays closed for `interdigit_ms`
(default 300 ms) -> DIGIT {"digit", "method": "pulse"}.

Ringing: a two-step cadence (on, off) that fits the chip's 16-bit timers runs on the
chip's ring oscillator timers; longer cadences (UK 0.4/0.2/0.4/2.0) switch the linefeed
between ringing and on-hook transmission on reactor timers, so caller ID can pass in
the gaps. Ring trip (the phone answers while ringing) stops ringing and raises
OFF_HOOK at once (the chip has debounced it). Power alarms raise POWER_ALARM and open
the line.

Assumes: settings is the line's config table (debounce_ms, flash_min_ms, flash_max_ms,
optional interdigit_ms, ring_cadence, country, ring_hz, ring_vpk); events go to
`on_event` on the reactor thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from drivers.bus.gpio import FALLING
from drivers.chips import si3215_regs as R
from drivers.errors import ChipFailed
from drivers.events import DIGIT, FLASH, OFF_HOOK, ON_HOOK, POWER_ALARM, LineEvent
from drivers.reactor import NEVER

log = logging.getLogger(__name__)

LINEFEEDS = {
    "open": R.LF_OPEN,
    "forward_active": R.LF_FORWARD_ACTIVE,
    "on_hook_transmission": R.LF_FORWARD_OHT,
    "tip_open": R.LF_TIP_OPEN,
    "ringing": R.LF_RINGING,
    "reverse_active": R.LF_REVERSE_ACTIVE,
    "reverse_on_hook_transmission": R.LF_REVERSE_OHT,
    "ring_open": R.LF_RING_OPEN,
}
LINEFEED_NAMES = {v: k for k, v in LINEFEEDS.items()}
REVERSED = {R.LF_FORWARD_ACTIVE: R.LF_REVERSE_ACTIVE, R.LF_FORWARD_OHT: R.LF_REVERSE_OHT}
FORWARD = {v: k for k, v in REVERSED.items()}

# Init values (datasheet units): 5 ms chip-side loop-closure debounce keeps pulse makes
# (>= 17 ms at 20 pps) intact; the driver does the real debouncing in software.
INIT_LCR_DEBOUNCE = 4  # x 1.25 ms
INIT_RTP_DEBOUNCE = 8  # x 1.25 ms
INIT_LOOP_I_LIMIT = 2  # 20 + 3*2 = 26 mA
INIT_ON_HOOK_V = 0x20  # 48 V
INIT_COMMON_V = 0x02  # 3 V
INIT_VBATH = 0x32  # 75 V for ringing
INIT_VBATL = 0x10  # 24 V off hook
INIT_ENHANCE = 0xEB  # revision E enhancements, as the datasheet recommends
INIT_AUTO = R.AUTO_RTRIP | R.AUTO_LOOP | R.AUTO_BAT | R.AUTO_OPEN
INIT_INDIRECT = {  # thresholds: loop closure, ring trip, power alarms (datasheet defaults)
    R.IR_LCR_THRESH: 0x1000,
    R.IR_RTP_THRESH: 0x3600,
    R.IR_PQ12_THRESH: 0x07C0,
    R.IR_PQ34_THRESH: 0x376F,
    R.IR_PQ56_THRESH: 0x1B80,
}

RESET_LOW_S = 0.010
RESET_READY_S = 0.020
POWERUP_TIMEOUT_S = 0.5
CALIBRATION_TIMEOUT_S = 2.0
POLL_S = 0.010
INDIRECT_POLLS = 100
INTERRUPT_ROUNDS = 8  # a stuck INT line must not hold the reactor forever
MAX_CHIP_TIMER_S = 0xFFFF * R.TIMER_TICK_S


def ring_coefficients(hz: float, vpk: float) -> tuple[int, int]:
    """(RNGY, RNGX) for the ring oscillator: a 1 kHz digital resonator (datasheet formula)."""
    c = math.cos(2 * math.pi * hz / R.RING_OSC_RATE)
    rngy = round(c * 32768) & 0xFFFF
    rngx = round(0.25 * math.sqrt((1 - c) / (1 + c)) * (vpk / R.RING_AMP_FULL_V) * 32768)
    return rngy, rngx


class Si3215:
    """One FXS line on a ProSLIC; see the module docstring for the hook rules."""

    def __init__(self, name: str, spi, gpio, reset_pin: int, int_pin: int, reactor,
                 settings: dict, on_event: Callable[[LineEvent], None]) -> None:
        self.name, self.spi, self.gpio, self.reactor = name, spi, gpio, reactor
        self.reset_pin, self.int_pin = reset_pin, int_pin
        self.settings, self.on_event = settings, on_event
        self.chip = "si3215"
        self.failed, self.error, self.running = False, "", False
        self._read_timing(settings)
        self._hook = "on"
        self._loop = False
        self._open_at: float | None = None
        self._close_at: float | None = None
        self._pulses = 0
        self._ringing = False
        self._cadence: tuple[float, ...] = ()
        self._cad_idx = 0
        self._reversed = False
        self._lf = R.LF_OPEN
        self._alarm = ""
        self._edge_hooked = False
        self._t_offhook = reactor.register_timer(self._offhook_confirmed, NEVER)
        self._t_hangup = reactor.register_timer(self._hung_up, NEVER)
        self._t_make = reactor.register_timer(self._make_confirmed, NEVER)
        self._t_digit = reactor.register_timer(self._digit_done, NEVER)
        self._t_cadence = reactor.register_timer(self._cadence_step, NEVER)

    def retune(self, settings: dict) -> None:
        """New hook, flash and pulse timing while running; a hook transition already
        being timed finishes with the old values."""
        self.settings = settings
        self._read_timing(settings)

    def _read_timing(self, s: dict) -> None:
        debounce_ms = float(s.get("debounce_ms", 20))
        self.debounce = debounce_ms / 1000
        self.break_debounce = min(debounce_ms, 25.0) / 1000
        self.make_debounce = min(debounce_ms, 10.0) / 1000
        self.flash_min = float(s.get("flash_min_ms", 100)) / 1000
        self.flash_max = float(s.get("flash_max_ms", 800)) / 1000
        self.interdigit = float(s.get("interdigit_ms", 300)) / 1000

    # ------------------------------------------------------------------ bring-up
    def start(self) -> None:
        """Reset, identify, program, power up, calibrate; raise ChipFailed on failure."""
        self.failed, self.error = False, ""
        try:
            self._bring_up()
        except ChipFailed as exc:
            self.failed, self.error, self.running = True, str(exc), False
            raise
        self.running = True

    def _bring_up(self) -> None:
        self.gpio.setup_output(self.reset_pin, True)
        self.gpio.setup_input(self.int_pin, pull_up=True)
        if not self._edge_hooked:
            self.gpio.on_edge(self.int_pin, FALLING, self._on_int_edge)
            self._edge_hooked = True
        self._reset()
        self._identify()
        self._program()
        self._power_up()
        self._calibrate()
        self._enable_interrupts()
        self._hook, self._loop, self._alarm = "on", False, ""
        self._set_lf(self._idle_lf())
        self._loop_changed(bool(self._read(R.DR_HOOK_STATUS) & R.HOOK_LCR), self.reactor.now())

    def _pause(self, seconds: float) -> None:
        """Let time pass (and other timers run): the chip needs real milliseconds."""
        self.reactor.run_until(self.reactor.now() + seconds)

    def _reset(self) -> None:
        self.gpio.write(self.reset_pin, False)
        self._pause(RESET_LOW_S)
        self.gpio.write(self.reset_pin, True)
        self._pause(RESET_READY_S)

    def _identify(self) -> None:
        ident = self._read(R.DR_SPI_MODE)
        if ident in (0x00, 0xFF) or (ident & R.REV_MASK) in (0x0, 0xF):
            raise ChipFailed(f"SLIC on {self.spi.name} answered 0x{ident:02X} to its ID register: "
                             "card not seated?")
        loopback, hybrid = self._read(R.DR_LOOPBACK), self._read(R.DR_HYBRID)
        if (loopback, hybrid) != (R.RESET_LOOPBACK, R.RESET_HYBRID):
            raise ChipFailed(
                f"SLIC on {self.spi.name} read DR8=0x{loopback:02X} DR11=0x{hybrid:02X} after "
                f"reset (a ProSLIC reads 0x02/0x33): another chip on this chip-select? "
                "check spi_bus/spi_cs in board.chips")
        self.chip = "si3215" if self._read(R.DR_PCM_MODE) & R.PCM_MODE_SI3215 else "si3210"
        self.revision = ident & R.REV_MASK

    def _program(self) -> None:
        for reg, value in (
            (R.DR_LOOPBACK, 0x00), (R.DR_AUTO, INIT_AUTO),
            (R.DR_LCR_DEBOUNCE, INIT_LCR_DEBOUNCE), (R.DR_RTP_DEBOUNCE, INIT_RTP_DEBOUNCE),
            (R.DR_LOOP_I_LIMIT, INIT_LOOP_I_LIMIT), (R.DR_ON_HOOK_V, INIT_ON_HOOK_V),
            (R.DR_COMMON_V, INIT_COMMON_V), (R.DR_VBATH, INIT_VBATH), (R.DR_VBATL, INIT_VBATL),
            (R.DR_RING_OSC_CTL, 0x00),
        ):
            self._write(reg, value)
        if self.revision >= 5:
            self._write(R.DR_ENHANCE, INIT_ENHANCE)
        for reg, value in INIT_INDIRECT.items():
            self._write_indirect(reg, value)
        self._program_ring_oscillator()

    def _program_ring_oscillator(self) -> None:
        hz = float(self.settings.get("ring_hz", 20.0))
        vpk = float(self.settings.get("ring_vpk", 65.0))
        rngy, rngx = ring_coefficients(hz, vpk)
        self._write_indirect(R.IR_RING_FREQ, rngy)
        self._write_indirect(R.IR_RING_AMP, rngx)
        self._write_indirect(R.IR_RING_OFFSET, 0)
        self._write_indirect(R.IR_RING_INIT, 0)

    def _power_up(self) -> None:
        """Start the DC-DC converter and wait for the battery to reach ~90% of VBATH."""
        self._write(R.DR_POWERDOWN1, 0x00)
        want = 0.9 * INIT_VBATH * R.VOC_STEP_V
        deadline = self.reactor.now() + POWERUP_TIMEOUT_S
        while (vbat := self._read(R.DR_VBATS1) * R.VSENSE_STEP_V) < want:
            if self.reactor.now() >= deadline:
                raise ChipFailed(
                    f"SLIC on {self.spi.name}: battery only {vbat:.0f} V after "
                    f"{POWERUP_TIMEOUT_S:.1f} s (want {want:.0f} V): check the FXS card's power")
            self._pause(POLL_S)

    def _calibrate(self) -> None:
        """Run every self-calibration with interrupts off; the chip clears DR96 when done."""
        for reg in (R.DR_INT_ENABLE1, R.DR_INT_ENABLE2, R.DR_INT_ENABLE3, R.DR_LINEFEED):
            self._write(reg, 0x00)
        self._write(R.DR_CAL2, R.CAL_ALL)
        self._write(R.DR_CAL1, R.CAL_RUN | R.CAL_ALL)
        deadline = self.reactor.now() + CALIBRATION_TIMEOUT_S
        while (cal := self._read(R.DR_CAL1)) != 0:
            if self.reactor.now() >= deadline:
                raise ChipFailed(
                    f"SLIC on {self.spi.name} did not finish calibration in "
                    f"{CALIBRATION_TIMEOUT_S:.0f} s (DR96=0x{cal:02X}): check the FXS card's "
                    "power and that nothing is connected across tip/ring during start-up")
            self._pause(POLL_S)

    def _enable_interrupts(self) -> None:
        for reg in (R.DR_INT_STATUS1, R.DR_INT_STATUS2, R.DR_INT_STATUS3):
            self._write(reg, 0xFF)  # write-1-to-clear anything latched during bring-up
        self._write(R.DR_INT_ENABLE1, 0x00)
        self._write(R.DR_INT_ENABLE2, R.IRQ2_RTRIP | R.IRQ2_LOOP | R.IRQ2_PQ_MASK)
        self._write(R.DR_INT_ENABLE3, 0x00)

    def stop(self) -> None:
        """Open the line and stop reacting to the chip (safe on a failed chip)."""
        for timer in (self._t_offhook, self._t_hangup, self._t_make, self._t_digit,
                      self._t_cadence):
            self.reactor.update_timer(timer, NEVER)
        if self.running:
            self._ringing = False
            self._write(R.DR_INT_ENABLE2, 0x00)
            self._set_lf(R.LF_OPEN)
        self.running = False

    # ------------------------------------------------------------------ register access
    def _read(self, reg: int) -> int:
        self.spi.transfer(bytes([R.SPI_READ | (reg & R.SPI_ADDR_MASK)]))
        return self.spi.transfer(b"\x00")[0]

    def _write(self, reg: int, value: int) -> None:
        self.spi.transfer(bytes([reg & R.SPI_ADDR_MASK]))
        self.spi.transfer(bytes([value & 0xFF]))

    def _wait_indirect(self) -> None:
        for _ in range(INDIRECT_POLLS):
            if not self._read(R.DR_IAS) & R.IAS_PENDING:
                return
        raise ChipFailed(f"SLIC on {self.spi.name}: indirect register access never completed "
                         "(DR31 stuck busy): check the PCLK clock to the FXS card")

    def _write_indirect(self, reg: int, value: int) -> None:
        self._wait_indirect()
        self._write(R.DR_IDA_LO, value & 0xFF)
        self._write(R.DR_IDA_HI, (value >> 8) & 0xFF)
        self._write(R.DR_IAA, reg)

    def _read_indirect(self, reg: int) -> int:
        self._wait_indirect()
        self._write(R.DR_IAA, reg)
        self._wait_indirect()
        return self._read(R.DR_IDA_LO) | (self._read(R.DR_IDA_HI) << 8)

    # ------------------------------------------------------------------ interrupts
    def _on_int_edge(self, _pin: int, _level: bool) -> None:
        # May run on a GPIO thread on the box: hand the work to the reactor thread.
        self.reactor.call_soon(self._service)

    def _service(self) -> None:
        if not self.running:
            return
        for _ in range(INTERRUPT_ROUNDS):
            s2 = self._read(R.DR_INT_STATUS2)
            s1, s3 = self._read(R.DR_INT_STATUS1), self._read(R.DR_INT_STATUS3)
            if not (s1 | s2 | s3):
                return
            for reg, bits in ((R.DR_INT_STATUS1, s1), (R.DR_INT_STATUS2, s2),
                              (R.DR_INT_STATUS3, s3)):
                if bits:
                    self._write(reg, bits)
            self._handle(s2, self.reactor.now())
            if self.gpio.read(self.int_pin):  # INT released: nothing more latched
                return

    def _handle(self, s2: int, now: float) -> None:
        if s2 & R.IRQ2_PQ_MASK:
            self._power_alarm(s2 & R.IRQ2_PQ_MASK, now)
            return
        if s2 & R.IRQ2_RTRIP:
            self._loop_changed(True, now)
        if s2 & R.IRQ2_LOOP:
            self._loop_changed(bool(self._read(R.DR_HOOK_STATUS) & R.HOOK_LCR), now)

    def _power_alarm(self, bits: int, now: float) -> None:
        names = [f"Q{q + 1}" for q in range(6) if bits & (1 << (q + R.IRQ2_PQ_SHIFT))]
        self._alarm = f"power alarm on {', '.join(names)}"
        log.warning("%s: %s: line opened", self.name, self._alarm)
        self._stop_cadence()
        self._set_lf(R.LF_OPEN)
        self._emit(POWER_ALARM, {"alarm": self._alarm, "transistors": names})

    # ------------------------------------------------------------------ hook state machine
    def _loop_changed(self, closed: bool, now: float) -> None:
        if closed == self._loop:
            return
        self._loop = closed
        if self._ringing and closed:
            self._ring_trip()
        elif self._hook == "on":
            self._arm(self._t_offhook, now + self.debounce if closed else NEVER)
        elif closed:
            self._loop_closed(now)
        else:
            self._loop_opened(now)

    def _loop_opened(self, now: float) -> None:
        if self._close_at is not None and self._open_at is not None:
            # the make was shorter than the make debounce: bounce inside the same break
            self._close_at = None
            self._arm(self._t_make, NEVER)
            self._arm(self._t_hangup, max(now, self._open_at + self.flash_max))
            return
        self._open_at = now
        self._arm(self._t_digit, NEVER)
        self._arm(self._t_hangup, now + self.flash_max)

    def _loop_closed(self, now: float) -> None:
        if self._open_at is None:
            return
        self._close_at = now
        self._arm(self._t_hangup, NEVER)
        self._arm(self._t_make, now + self.make_debounce)

    def _offhook_confirmed(self, _eventtime: float) -> float:
        self._hook, self._open_at, self._close_at, self._pulses = "off", None, None, 0
        self._emit(OFF_HOOK)
        return NEVER

    def _make_confirmed(self, _eventtime: float) -> float:
        if self._open_at is None or self._close_at is None:
            return NEVER
        brk, close_at = self._close_at - self._open_at, self._close_at
        self._open_at = self._close_at = None
        if self.break_debounce <= brk < self.flash_min:
            self._pulses += 1
        elif self.flash_min <= brk <= self.flash_max:
            self._digit_done(close_at)
            self._emit(FLASH, {"ms": round(brk * 1000)})
        if self._pulses:
            self._arm(self._t_digit, close_at + self.interdigit)
        return NEVER

    def _digit_done(self, _eventtime: float) -> float:
        pulses, self._pulses = self._pulses, 0
        self._arm(self._t_digit, NEVER)
        if 1 <= pulses <= 10:
            self._emit(DIGIT, {"digit": str(pulses % 10), "method": "pulse"})
        elif pulses:
            log.info("%s: %d pulses is not a digit: ignored", self.name, pulses)
        return NEVER

    def _hung_up(self, _eventtime: float) -> float:
        self._hook, self._open_at, self._close_at, self._pulses = "on", None, None, 0
        self._arm(self._t_digit, NEVER)
        self._arm(self._t_make, NEVER)
        self._emit(ON_HOOK)
        return NEVER

    def _arm(self, timer, waketime: float) -> None:
        self.reactor.update_timer(timer, waketime)

    # ------------------------------------------------------------------ ringing
    def ring(self, cadence: tuple[float, ...] | list[float] | None = None) -> bool:
        """Ring with `cadence` (on, off, ...) seconds; False if the phone is already off hook."""
        if not self.running or self._hook == "off":
            return False
        cadence = self._cadence_for(cadence)
        self._stop_cadence()
        self._ringing, self._cadence = True, cadence
        if len(cadence) == 2 and max(cadence) <= MAX_CHIP_TIMER_S:
            self._ring_on_chip_timers(cadence)
        else:
            self._write(R.DR_RING_OSC_CTL, 0x00)
            self._cad_idx = 0
            self._arm(self._t_cadence, self._cadence_step(self.reactor.now()))
        return True

    def _cadence_for(self, cadence) -> tuple[float, ...]:
        if not cadence:
            cadence = self.settings.get("ring_cadence") or self._country_cadence()
        cadence = tuple(float(x) for x in cadence)
        if len(cadence) % 2 or any(x <= 0 for x in cadence):
            raise ValueError(f"{self.name}: ring cadence {cadence} must be on/off pairs of "
                             "positive seconds")
        return cadence

    def _country_cadence(self) -> tuple[float, ...]:
        from cext import toneplans  # pure data; imported late to keep start-up light

        code = self.settings.get("country") or "us"
        return toneplans.plan(code).ring_cadence if code in toneplans.PLANS else (2.0, 4.0)

    def _ring_on_chip_timers(self, cadence: tuple[float, ...]) -> None:
        on, off = (round(x / R.TIMER_TICK_S) for x in cadence)
        for reg, value in ((R.DR_RING_ACTIVE_LO, on & 0xFF), (R.DR_RING_ACTIVE_HI, on >> 8),
                           (R.DR_RING_INACTIVE_LO, off & 0xFF), (R.DR_RING_INACTIVE_HI, off >> 8),
                           (R.DR_RING_OSC_CTL, R.RING_TA_EN | R.RING_TI_EN)):
            self._write(reg, value)
        self._set_lf(R.LF_RINGING)

    def _cadence_step(self, eventtime: float) -> float:
        if not self._ringing:
            return NEVER
        on = self._cad_idx % 2 == 0
        self._set_lf(R.LF_RINGING if on else self._oht_lf())
        duration = self._cadence[self._cad_idx]
        self._cad_idx = (self._cad_idx + 1) % len(self._cadence)
        return eventtime + duration

    def stop_ring(self) -> None:
        if not self._ringing:
            return
        self._stop_cadence()
        self._set_lf(self._idle_lf())

    def _stop_cadence(self) -> None:
        if self._ringing:
            self._write(R.DR_RING_OSC_CTL, 0x00)
        self._ringing = False
        self._arm(self._t_cadence, NEVER)

    def _ring_trip(self) -> None:
        self._stop_cadence()
        self._set_lf(self._idle_lf())
        if self._hook == "on":
            self._arm(self._t_offhook, NEVER)
            self._hook, self._open_at, self._close_at = "off", None, None
            self._emit(OFF_HOOK, {"ring_trip": True})

    # ------------------------------------------------------------------ linefeed
    def set_linefeed(self, mode: str) -> None:
        if mode not in LINEFEEDS:
            raise ValueError(f"{self.name}: linefeed {mode!r}; known: {', '.join(LINEFEEDS)}")
        if mode != "ringing":
            self._stop_cadence()
        lf = LINEFEEDS[mode]
        if self._reversed:
            lf = REVERSED.get(lf, lf)
        self._alarm = "" if lf != R.LF_OPEN else self._alarm
        self._set_lf(lf)

    def reverse_polarity(self, on: bool) -> None:
        """Swap tip and ring (a signal to the phone, e.g. answer supervision)."""
        self._reversed = bool(on)
        if self._lf in REVERSED or self._lf in FORWARD:
            self._set_lf(self._polarised(FORWARD.get(self._lf, self._lf)))

    def _polarised(self, lf: int) -> int:
        return REVERSED.get(lf, lf) if self._reversed else lf

    def _idle_lf(self) -> int:
        return self._polarised(R.LF_FORWARD_ACTIVE)

    def _oht_lf(self) -> int:
        return self._polarised(R.LF_FORWARD_OHT)

    def _set_lf(self, lf: int) -> None:
        self._lf = lf
        self._write(R.DR_LINEFEED, lf)

    # ------------------------------------------------------------------ readouts
    @property
    def off_hook(self) -> bool:
        return self._hook == "off"

    @property
    def ringing(self) -> bool:
        return self._ringing

    def loop_current_ma(self) -> float:
        return (self._read(R.DR_LCS) & 0x3F) * R.LCS_STEP_MA

    def line_voltage_v(self) -> float:
        """Ring minus tip in volts: positive in forward polarity, negative reversed."""
        tip, ring = self._read(R.DR_VTIP), self._read(R.DR_VRING)
        return (ring - tip) * R.VSENSE_STEP_V

    def battery_v(self) -> float:
        return self._read(R.DR_VBATS1) * R.VSENSE_STEP_V

    def linefeed(self) -> str:
        """The linefeed state the chip reports it applies (LFS), by name."""
        lfs = (self._read(R.DR_LINEFEED) >> R.LFS_SHIFT) & R.LF_MASK
        return LINEFEED_NAMES[lfs]

    # ------------------------------------------------------------------ line-test access
    # The GR-909 procedures (firmware/diag/commission.py) step the linefeed and the feed
    # settings and read the sense registers; these are the only chip accesses they need.
    SENSE_FULL_SCALE_V = 255 * R.VSENSE_STEP_V  # VTIP/VRING saturate here
    SENSE_OHM = 1.0e6  # (twin) each wire's sense network, referenced to -VCM (DR73)

    def sense(self) -> dict:
        """One reading: tip and ring volts to ground (magnitudes), loop volts and mA."""
        return {"tip_v": self._read(R.DR_VTIP) * R.VSENSE_STEP_V,
                "ring_v": self._read(R.DR_VRING) * R.VSENSE_STEP_V,
                "loop_v": (self._read(R.DR_LVS) & 0x3F) * R.LVS_STEP_V,
                "loop_ma": (self._read(R.DR_LCS) & 0x3F) * R.LCS_STEP_MA}

    def feed(self) -> dict:
        """The DC feed settings now: on-hook volts, common-mode volts, loop current limit."""
        return {"on_hook_v": self._read(R.DR_ON_HOOK_V) * R.VOC_STEP_V,
                "common_v": self._read(R.DR_COMMON_V) * R.VOC_STEP_V,
                "loop_limit_ma": R.ILIM_BASE_MA + R.ILIM_STEP_MA * self._read(R.DR_LOOP_I_LIMIT)}

    def set_feed(self, on_hook_v: float | None = None, common_v: float | None = None,
                 loop_limit_ma: float | None = None) -> None:
        """Change the DC feed (for a line test; restore with the values feed() gave)."""
        if on_hook_v is not None:
            self._write(R.DR_ON_HOOK_V, max(0, min(0x3F, round(on_hook_v / R.VOC_STEP_V))))
        if common_v is not None:
            self._write(R.DR_COMMON_V, max(0, min(0x3F, round(common_v / R.VOC_STEP_V))))
        if loop_limit_ma is not None:
            steps = round((loop_limit_ma - R.ILIM_BASE_MA) / R.ILIM_STEP_MA)
            self._write(R.DR_LOOP_I_LIMIT, max(0, min(7, steps)))

    def ring_test(self, on: bool) -> None:
        """Ring voltage on the line without a cadence (REN test), or back to idle."""
        self._stop_cadence()
        if on:
            self._write(R.DR_RING_OSC_CTL, 0x00)  # no active/inactive timers: ring on
            self._set_lf(R.LF_RINGING)
        else:
            self._set_lf(self._idle_lf())

    def ring_settings(self) -> tuple[float, float]:
        """(Hz, peak volts) of the ring oscillator as programmed."""
        return float(self.settings.get("ring_hz", 20.0)), float(self.settings.get("ring_vpk", 65.0))

    def restore_idle(self) -> None:
        """After a line test: the idle linefeed of the port's polarity."""
        self._stop_cadence()
        self._set_lf(self._idle_lf())

    def status(self) -> dict:
        """Live state for `hw probe`; readings are None on a chip that is not running."""
        base = {"chip": self.chip, "port": self.name, "device": self.spi.name,
                "hook": self._hook, "ring": self._ringing,
                "polarity": "reverse" if self._reversed else "forward", "alarm": self._alarm}
        if self.running and (ident := self._read(R.DR_SPI_MODE)) in (0x00, 0xFF):
            self.failed, self.running = True, False  # the card went away under us
            self.error = (f"SLIC on {self.spi.name} answered 0x{ident:02X} to its ID register: "
                          "card not seated?")
        if not self.running:
            return {**base, "state": "failed" if self.failed else "stopped",
                    "error": self.error, "reason": self.error, "linefeed": None,
                    "loop_current_ma": None, "line_voltage_v": None, "battery_v": None}
        return {**base, "state": "ok", "error": "", "reason": self._alarm,
                "linefeed": self.linefeed(),
                "loop_current_ma": round(self.loop_current_ma(), 1),
                "line_voltage_v": round(self.line_voltage_v(), 1),
                "battery_v": round(self.battery_v(), 1)}

    def _emit(self, kind: str, data: dict | None = None) -> None:
        event = LineEvent(self.name, kind, self.reactor.now(), data or {})
        log.debug("%s", event)
        self.on_event(event)
