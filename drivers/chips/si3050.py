"""FXO port driver: an Si3050 DAA with its Si3018/Si3019 line side, on SPI + two GPIOs.

It sees only an SpiDevice, a Gpio and the Reactor, so it runs unchanged on the box and on
drivers.sim.si3050_sim. Rings, polarity, disconnects and a parallel phone become
LineEvents. `settings`: drivers.board.line_settings; `fxo_mode` (an fxo_modes.h name)
overrides the country's row.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

from drivers.bus import tdm
from drivers.bus.gpio import FALLING, Gpio
from drivers.bus.spi import SpiDevice
from drivers.chips import daa_countries as D
from drivers.chips import si3050_regs as R
from foundation import events as ev
from foundation.errors import ChipFailed, HardwareError
from foundation.events import LineEvent
from foundation.reactor import NEVER, Reactor

log = logging.getLogger(__name__)

POLL_S = 0.05
RESET_LOW_S = 0.001
RESET_SETTLE_S = 0.005
SOFT_RESET_S = 0.1  # wctdm.c wait_just_a_bit(HZ/10); wctdm24xxp base.c msleep(100)
LINK_TIMEOUT_S = 2.0  # wctdm_init_voicedaa: "newjiffies += 2 * HZ"
LINK_POLL_S = 0.1  # wctdm.c wait_just_a_bit(HZ/10); base.c msleep(100)
POLARITY_MIN_V = 3.0  # below this the sign of the line voltage means nothing
POLARITY_DEBOUNCE_S = 0.04
IN_USE_FRACTION = 0.5  # of the idle on-hook voltage
IN_USE_DEBOUNCE_S = 0.1
DEFAULT_IDLE_V = 48.0
RING_GUARD_S = 0.3  # ring voltage rides on the battery: ignore the sign meanwhile
HOOK_SETTLE_S = 0.1  # loop current and voltage settle after OH changes
LOOP_DROP_MA = 5.0
RTO_CODE = 1  # 128 ms: longer than a half cycle of the slowest ring (15 Hz)
IRQ_ROUNDS = 4
ON_HOOK_MONITOR = R.ONHM  # wctdm_init_voicedaa: "Enable on-hook line monitor", 5 = 0x08


def country_registers(mode: D.FxoMode) -> dict[int, int]:
    """What wctdm_init_voicedaa writes for an fxo_modes.h row (registers 16, 26, 30, 31)."""
    return {R.INTL_CONTROL1: mode.reg16, R.DC_TERM: mode.reg26,
            R.AC_TERM: mode.reg30, R.DAA_CONTROL5: mode.reg31}


class DaaState(enum.Enum):
    STOPPED = "stopped"
    IDLE = "idle"
    RINGING = "ringing"
    SEIZED = "seized"
    FAILED = "failed"


class Si3050:
    """One FXO port: an Si3050 DAA and its line side."""

    chip = "si3050"

    def __init__(self, name: str, spi: SpiDevice, gpio: Gpio, reset_pin: int, int_pin: int,
                 reactor: Reactor, settings: dict, on_event: Callable[[LineEvent], None]) -> None:
        self.name, self.spi, self.gpio = name, spi, gpio
        self.reset_pin, self.int_pin = reset_pin, int_pin
        self.reactor, self.settings, self.on_event = reactor, settings, on_event
        self.country = settings["country"]
        self.mode = self._fxo_mode(settings)
        self._read_timing(settings)
        self.failed, self.error = False, ""
        self.state = DaaState.STOPPED
        self.revision = 0
        self.line_side = ""
        self.line_voltage_v = 0.0
        self.loop_current_ma = 0.0
        self.line_in_use = False
        self.ring_bursts: list[tuple[float, float | None]] = []
        self._reg33 = 0  # shadow of PCM/SPI Mode Select (law, PCME, PCML)
        self._reset_line_state()
        self._rto_s = R.RTO_MS[RTO_CODE] / 1000.0
        self._poll_timer = reactor.register_timer(self._poll, NEVER)
        self._ring_check_timer = reactor.register_timer(self._ring_check, NEVER)
        self._ring_stop_timer = reactor.register_timer(self._ring_stop, NEVER)

    def _fxo_mode(self, settings: dict) -> D.FxoMode:
        try:
            return D.mode_for(self.country, settings["fxo_mode"])
        except KeyError as exc:  # the schema prevents it; a hand-built settings dict may not
            log.warning("%s: %s; using fxo_modes.h \"FCC\"", self.name, exc.args[0])
            return D.FXO_MODES["FCC"]

    def _read_timing(self, settings: dict) -> None:
        self.disconnect_signals = set(settings["disconnect"])
        self.ring_min_s = settings["ring_min_ms"] / 1000.0
        self.ring_timeout_s = settings["ring_timeout_ms"] / 1000.0
        self.loop_drop_s = settings["loop_drop_ms"] / 1000.0
        self._rcc = R.rcc_code(settings["ring_min_ms"])
        self._confirm_s = R.RCC_MS[self._rcc] / 1000.0

    def retune(self, settings: dict) -> None:
        """New ring validation, disconnect signals and timing while running: the ring
        confirmation time (RCC) is rewritten to the chip at once; a ring burst or loop
        drop already being timed finishes with the old values."""
        self.settings = settings
        self._read_timing(settings)
        if self.state not in (DaaState.STOPPED, DaaState.FAILED):
            self._program_ring_validation()

    def _reset_line_state(self) -> None:
        self._ctl1 = ON_HOOK_MONITOR  # shadow of DAA Control 1's writable bits
        self._seized = self._in_call = False
        self._rdt = self._burst_open = False
        self._burst_start = 0.0
        self._last_ring = -NEVER
        self._hook_at = -NEVER
        self._polarity = 1
        self._pol_pending: float | None = None
        self._use_pending: float | None = None
        self._loop_low_since: float | None = None
        self._idle_v = DEFAULT_IDLE_V
        self._ringing = False

    # ---- SPI access: one transfer (one chip-select frame) per byte, finding 7 ----
    def _read(self, reg: int) -> int:
        """wctdm.c __wctdm_getreg / pitdm.c __wctdm_getreg: 0x60, reg & 0x7f, then the
        data byte comes back in the third frame (pidma.c __spi_read clocks out 0xff)."""
        self.spi.transfer(bytes((R.SPI_CTRL_READ,)))
        self.spi.transfer(bytes((reg & R.REG_MASK,)))
        return self.spi.transfer(bytes((R.SPI_READ_FILL,)))[0]

    def _write(self, reg: int, value: int) -> None:
        """wctdm.c __wctdm_setreg / pitdm.c __wctdm_setreg: 0x20, reg & 0x7f, value."""
        self.spi.transfer(bytes((R.SPI_CTRL_WRITE,)))
        self.spi.transfer(bytes((reg & R.REG_MASK,)))
        self.spi.transfer(bytes((value & 0xFF,)))

    def _wait(self, seconds: float) -> None:
        """Let time pass (fake or real) with the reactor's other timers still running."""
        self.reactor.run_for(seconds)

    def _where(self) -> str:
        return f"DAA on {self.spi.name}"

    # ---- start / stop ----
    def start(self) -> None:
        """Reset, identify, configure and power up; ChipFailed (one line) on failure.

        As DAHDI's wctdm_init_voicedaa, each step cited where it is done; where we differ
        it is said beside the step (ring validation and interrupts on the chip). Needs
        PCLK (the line side is clocked across the barrier from it) and runs the reactor
        for up to 2 s while the line side comes up: call it before the main loop."""
        try:
            self._reset()
            self._check_identity()
            self._soft_reset()
            self._configure()
            self._power_up_line_side()
            self._after_link()
            self._enable_interrupts()
        except ChipFailed as exc:
            self._fail(str(exc), announce=False)
            raise
        self._reset_line_state()
        self._measure()
        self._learn_initial_line()
        self._set_state(DaaState.IDLE)
        self.reactor.update_timer(self._poll_timer, self.reactor.now() + POLL_S)
        if self.line_in_use:
            self._emit(ev.LINE_IN_USE, line_voltage_v=self.line_voltage_v)

    def _reset(self) -> None:
        """Pulse RESET low (Si3050 datasheet, RESET pin: registers to their reset values)."""
        self.gpio.setup_output(self.reset_pin, True)
        self.gpio.write(self.reset_pin, False)
        self._wait(RESET_LOW_S)
        self.gpio.write(self.reset_pin, True)
        self._wait(RESET_SETTLE_S)

    def _check_identity(self) -> None:
        """wctdm_voicedaa_insane: register 2 must read 0x3, then register 11 (REVA)."""
        ctl2 = self._read(R.CONTROL2)
        if ctl2 in (0x00, 0xFF):
            raise ChipFailed(
                f"{self._where()} answered 0x{ctl2:02X} to Control 2 (an Si3050 reads "
                f"0x{R.CONTROL2_RESET:02X}): card not seated?")
        if ctl2 != R.CONTROL2_RESET:
            raise ChipFailed(
                f"{self._where()} reads 0x{ctl2:02X} from Control 2 after reset (an Si3050 reads "
                f"0x{R.CONTROL2_RESET:02X}): another chip on this chip-select? check spi_bus/spi_cs")
        self.revision = self._read(R.SYS_LINE_REV) & R.REVA_MASK  # "VoiceDAA System: %02x"

    def _soft_reset(self) -> None:
        self._write(R.CONTROL1, R.SOFT_RESET)  # wctdm_init_voicedaa: "Software reset", 1 = 0x80
        self._wait(SOFT_RESET_S)  # "Wait just a bit" (HZ/10); base.c msleep(100)

    def _pcm_mode(self) -> int:
        law = self.settings["pcm_law"]
        if law not in R.PCM_LAW_BITS:
            raise ChipFailed(f"{self.name}: board.pcm.law = {law!r}: use \"ulaw\" or \"alaw\"")
        return R.PCM_LAW_BITS[law]  # wctdm.c: 33 = 0x28 (ulaw), 0x20 with alawoverride

    def _slot_start(self) -> int:
        slot = int(self.settings["timeslot"])
        try:
            return tdm.slot_start(slot)  # 8 bit clocks a slot (drivers/bus/tdm.py)
        except ValueError as exc:
            raise ChipFailed(f"{self.name}: lines.{self.name}.timeslot = {slot}: {exc}") from None

    def _configure(self) -> None:
        """wctdm_init_voicedaa (wctdm.c), register by register, in its order."""
        start = self._slot_start()
        self._reg33 = self._pcm_mode()
        self._write(R.PCM_SPI_MODE, self._reg33)  # "Enable PCM, ulaw"
        regs = country_registers(self.mode)  # fxo_modes[_opermode]
        self._write(R.INTL_CONTROL1, regs[R.INTL_CONTROL1])  # ohs << 6 | rz << 1 | rt
        self._write(R.INTL_CONTROL3, R.RING_DETECT_HALF_WAVE)  # !fwringdetect: 18 = 0
        self._program_ring_validation()  # ours: wctdm writes 24 = 0x19 (RNGV off) here
        self._write(R.DC_TERM, regs[R.DC_TERM])  # dcv << 6 | mini << 4 | ilim << 1
        self._write(R.AC_TERM, regs[R.AC_TERM])  # acim
        self._write(R.DAA_CONTROL5, regs[R.DAA_CONTROL5])  # 0xa3 | ohs2 << 3: FULL set
        for reg in (R.PCM_TX_START_LO, R.PCM_RX_START_LO):  # wctdm24xxp wctdm_voicedaa_set_ts
            self._write(reg, start & 0xFF)  # 34 / 36: (ts * 8) & 0xff
            self._write(reg + 1, start >> 8)  # 35 / 37: (ts * 8) >> 8

    def _program_ring_validation(self) -> None:
        """The chip validates ring frequency and duration (Si3050 datasheet, "Ring
        Validation", registers 22-24); DAHDI does it in software instead."""
        ras, rmx = R.ring_window(*D.ring_hz(self.country))
        self._write(R.RING_VALID1, rmx)  # RDLY = 0: report the ring as soon as confirmed
        self._write(R.RING_VALID2, (RTO_CODE << 3) | self._rcc)
        self._write(R.RING_VALID3, R.RNGV | ras)

    def _power_up_line_side(self) -> None:
        """wctdm_init_voicedaa: "Enable ISO-Cap" (6 = 0x00), then "Wait 1000ms for ISO-cap
        to come up": up to 2 s, every 100 ms, for a line-side id in register 11."""
        self._write(R.DAA_CONTROL2, 0)  # PDL = 0, PDN = 0
        waited = 0.0
        while not self._read(R.SYS_LINE_REV) & R.LSID_MASK:
            if waited >= LINK_TIMEOUT_S - 1e-9:
                raise ChipFailed(
                    f"no PCLK or line-side device: {self._where()}: the isolation link did not "
                    f"come up within {LINK_TIMEOUT_S:.0f} s (register 11 LSID stays 0): check "
                    "that the PCM stream is running (PCLK/FSYNC reach the card), then the "
                    "line-side chip (Si3019) and its isolation capacitors")
            self._wait(LINK_POLL_S)
            waited += LINK_POLL_S
        lsid = self._read(R.SYS_LINE_REV) >> 4  # "ISO-Cap is now up, line side: %02x rev %02x"
        lrv = (self._read(R.LINE_REV) >> 2) & 0x0F
        self.line_side = f"{R.LINE_SIDE_NAMES.get(lsid, f'LSID {lsid}')} rev {lrv}"

    def _after_link(self) -> None:
        self._write(R.DAA_CONTROL1, ON_HOOK_MONITOR)  # "Enable on-hook line monitor", 5 = 0x08
        self._set_hwgain(self.mode.tx_gain_tenth_db, R.TX_GAIN2, R.TX_GAIN3)  # fxotxgain
        self._set_hwgain(0, R.RX_GAIN2, R.RX_GAIN3)  # fxorxgain

    def _set_hwgain(self, tenth_db: int, whole_reg: int, tenth_reg: int) -> None:
        """wctdm_set_hwgain: whole dB into 38/39, tenths into 40/41 (NEWZEALAND: tx +0.7 dB,
        which wctdm.c applies as a second call after the 0 dB one; one call here)."""
        whole, tenths = R.hwgain(tenth_db)
        self._write(whole_reg, whole)
        self._write(tenth_reg, tenths)

    def _enable_interrupts(self) -> None:
        """Ours (DAHDI polls): Si3050 datasheet, registers 2-4 (INTE, interrupt mask/source)."""
        self.gpio.setup_input(self.int_pin, pull_up=True)
        self.gpio.on_edge(self.int_pin, FALLING, self._edge)
        self._write(R.INT_SOURCE, 0)  # powering up the line side may have latched RDTI
        self._write(R.INT_MASK, R.RDTI | R.DODI | R.POLI)
        self._write(R.CONTROL2, R.INTE | R.RDI | R.HBE | R.RXE)  # INTP = 0: active low

    def stop(self) -> None:
        self.reactor.unregister_timer(self._poll_timer)
        self.reactor.unregister_timer(self._ring_check_timer)
        self.reactor.unregister_timer(self._ring_stop_timer)
        if self.state in (DaaState.STOPPED, DaaState.FAILED):
            return
        self._write(R.DAA_CONTROL1, 0)  # on hook, monitor off
        self._write(R.INT_MASK, 0)
        self._write(R.DAA_CONTROL2, R.PDL)
        self._seized = False
        self._set_state(DaaState.STOPPED)

    def _fail(self, message: str, announce: bool = True) -> None:
        self.failed, self.error = True, message
        self._set_state(DaaState.FAILED)
        self.reactor.unregister_timer(self._poll_timer)
        if announce:
            self._emit(ev.CHIP_FAILED, error=message)

    def _set_state(self, state: DaaState) -> None:
        if state != self.state:
            log.info("%s: %s -> %s", self.name, self.state.value, state.value)
            self.state = state

    def _emit(self, kind: str, **data: Any) -> None:
        self.on_event(LineEvent(port=self.name, kind=kind, time=self.reactor.now(), data=data))

    # ---- hook ----
    @property
    def offhook(self) -> bool:
        return self._seized

    @property
    def ringing(self) -> bool:
        """An incoming call is ringing: from its first RING_START until RING_STOP or seize."""
        return self._ringing

    def _require_running(self) -> None:
        if self.failed:
            raise HardwareError(f"{self.name}: {self.error}")
        if self.state == DaaState.STOPPED:
            raise HardwareError(f"{self.name}: the FXO port is not started")

    def seize(self, in_call: bool = True) -> None:
        """Go off hook. in_call=False for a seizure where a reversal means answer, not hang-up.

        Refused (HardwareError naming the port) when the line shows no battery, as DAHDI's
        wctdm_voicedaa_check_hook judges it. While seized for a call, a loop-current drop
        longer than loop_drop_ms or a reversal raises one DISCONNECT, when enabled in
        settings["disconnect"]."""
        self._require_running()
        if self._seized:
            return
        volts = R.to_signed(self._read(R.LINE_VOLTAGE)) * R.LVS_V_PER_BIT
        # While a ring is on, LVS samples battery plus the ring's sine and reads near 0 V
        # twice a cycle: the ring itself proves the line is there (answering a ringing
        # line mid-burst is the ordinary case).
        if abs(volts) < self.mode.battthresh and not self._ringing:
            raise HardwareError(
                f"{self.name}: no line voltage on the FXO port ({self._where()}): "
                "is the PSTN line plugged in?")
        self._set_hook(True)
        self._in_call = in_call
        self._loop_low_since = None
        self._end_ringing(announce=False)
        self._set_state(DaaState.SEIZED)

    def release(self) -> None:
        self._require_running()
        if not self._seized:
            return
        self._set_hook(False)
        self._in_call = False
        self._set_state(DaaState.IDLE)

    def set_in_call(self, in_call: bool) -> None:
        """Call control says the seizure now carries a call (e.g. after answer supervision)."""
        self._in_call = in_call and self._seized

    def _set_hook(self, offhook: bool) -> None:
        self._ctl1 = (self._ctl1 | R.OH) if offhook else (self._ctl1 & ~R.OH)
        self._write(R.DAA_CONTROL1, self._ctl1)
        self._seized = offhook
        self._hook_at = self.reactor.now()

    def tone_disconnect(self) -> bool:
        """The DSP heard a disconnect tone (busy/reorder) while seized; True if honoured."""
        if self._seized and self._in_call and "tone" in self.disconnect_signals:
            self._disconnect("tone")
            return True
        return False

    def _disconnect(self, signal: str) -> None:
        self._in_call = False  # one DISCONNECT per seizure
        self._emit(ev.DISCONNECT, signal=signal)

    # ---- interrupts and sampling ----
    def _edge(self, pin: int, level: bool) -> None:
        self.reactor.call_soon(self._service_irq)  # never talk SPI from an edge callback

    def _service_irq(self) -> None:
        for _ in range(IRQ_ROUNDS):
            if self.state in (DaaState.STOPPED, DaaState.FAILED):
                return
            source = self._read(R.INT_SOURCE)
            if source:
                self._write(R.INT_SOURCE, ~source)  # 0 clears the bits we saw
            self._sample(self.reactor.now())
            if self.gpio.read(self.int_pin):
                return

    def _poll(self, eventtime: float) -> float:
        """Every 50 ms, and at once on an interrupt (ring detect, polarity, drop-out): sample
        line voltage and loop current, since drop-out, line-in-use and polarity are
        debounced levels and a missed edge must not lose a ring. The chip validates
        rings: RING_START per burst, RING_STOP after ring_timeout_ms without one. On hook,
        the voltage below half the idle voltage is a parallel phone: LINE_IN_USE/FREE."""
        if self.state in (DaaState.STOPPED, DaaState.FAILED):
            return NEVER
        if not self.gpio.read(self.int_pin):
            self._service_irq()  # an edge got lost: INT is still low
        else:
            self._sample(eventtime)
        return NEVER if self.failed else eventtime + POLL_S

    def _measure(self) -> int:
        ctl1 = self._read(R.DAA_CONTROL1)
        self.line_voltage_v = R.to_signed(self._read(R.LINE_VOLTAGE)) * R.LVS_V_PER_BIT
        self.loop_current_ma = round(self._read(R.LOOP_CURRENT) * R.LCS2_MA_PER_BIT, 1)
        return ctl1

    def _sample(self, now: float) -> None:
        ctl1 = self._measure()
        if ctl1 == 0xFF and self._read(R.SYS_LINE_REV) == 0xFF:
            self._fail(f"{self._where()} stopped answering (reads 0xFF): card pulled or bus fault?")
            return
        self._track_ring(bool(ctl1 & R.RDT), now)
        if ctl1 & (R.RDT | R.RDTP | R.RDTN):
            self._last_ring = now
            return
        if now - self._last_ring < RING_GUARD_S or now - self._hook_at < HOOK_SETTLE_S:
            return
        self._track_polarity(now)
        if self._seized:
            self._track_loop(now)
        else:
            self._track_line_use(now)

    def _learn_initial_line(self) -> None:
        """Polarity and idle voltage from the first reading. A line that already carries
        battery but sits below half a normal idle voltage is in use right now (someone on
        a PSTN call, e.g. through the power-fail lifeline while the box booted): say so at
        once instead of learning the off-hook voltage as idle."""
        volts = self.line_voltage_v
        self.line_in_use = False
        if abs(volts) >= POLARITY_MIN_V:
            self._polarity = 1 if volts > 0 else -1
        if abs(volts) >= 20.0:
            self._idle_v = abs(volts)
        elif self.mode.battthresh <= abs(volts) < IN_USE_FRACTION * DEFAULT_IDLE_V:
            self.line_in_use = True

    # ---- ring ----
    def _track_ring(self, rdt: bool, now: float) -> None:
        if rdt and not self._rdt:
            self._rdt = True
            self._burst_start = now - self._confirm_s
            due = self._burst_start + self.ring_min_s
            if due > now + 1e-6:
                self.reactor.update_timer(self._ring_check_timer, due)
            else:
                self._accept_burst()
        elif not rdt and self._rdt:
            self._rdt = False
            self.reactor.update_timer(self._ring_check_timer, NEVER)
            self._close_burst(now - self._rto_s)

    def _ring_check(self, eventtime: float) -> float:
        """ring_min_ms after the burst began: accept it only if the ring is still on."""
        ctl1 = self._read(R.DAA_CONTROL1)
        if ctl1 & R.RDT and ctl1 & (R.RDTP | R.RDTN):
            self._accept_burst()
        return NEVER

    def _accept_burst(self) -> None:
        if self._seized:
            return
        if not self._ringing:
            self.ring_bursts = []
            self._ringing = True
            self._set_state(DaaState.RINGING)
        self.reactor.update_timer(self._ring_stop_timer, NEVER)
        self.ring_bursts.append((self._burst_start, None))
        self._burst_open = True
        self._emit(ev.RING_START, count=len(self.ring_bursts))

    def _close_burst(self, end: float) -> None:
        if self._burst_open:
            self.ring_bursts[-1] = (self.ring_bursts[-1][0], end)
            self._burst_open = False
        if self._ringing:
            self.reactor.update_timer(self._ring_stop_timer, end + self.ring_timeout_s)

    def _ring_stop(self, eventtime: float) -> float:
        if self._ringing and not self._rdt:
            self._end_ringing(announce=True)
        return NEVER

    def _end_ringing(self, announce: bool) -> None:
        self.reactor.update_timer(self._ring_stop_timer, NEVER)
        if not self._ringing:
            return
        self._ringing = False
        if self.state == DaaState.RINGING:
            self._set_state(DaaState.IDLE)
        if announce:
            self._emit(ev.RING_STOP, rings=len(self.ring_bursts))

    # ---- polarity, loop current, line in use ----
    def _track_polarity(self, now: float) -> None:
        volts = self.line_voltage_v
        sign = 1 if volts > 0 else -1
        if abs(volts) < POLARITY_MIN_V or sign == self._polarity:
            self._pol_pending = None
            return
        if self._pol_pending is None:
            self._pol_pending = now
        if now - self._pol_pending >= POLARITY_DEBOUNCE_S:
            self._pol_pending = None
            self._polarity = sign
            self._emit(ev.POLARITY_REVERSAL, polarity=self.polarity,
                       hook="off" if self._seized else "on")
            if self._seized and self._in_call and "reversal" in self.disconnect_signals:
                self._disconnect("reversal")

    @property
    def polarity(self) -> str:
        return "forward" if self._polarity > 0 else "reverse"

    def _track_loop(self, now: float) -> None:
        if self.loop_current_ma >= LOOP_DROP_MA:
            self._loop_low_since = None
            return
        if self._loop_low_since is None:
            self._loop_low_since = now
        dropped = now - self._loop_low_since >= self.loop_drop_s - 1e-9
        if dropped and self._in_call and "loop_drop" in self.disconnect_signals:
            self._disconnect("loop_drop")

    def _track_line_use(self, now: float) -> None:
        volts = abs(self.line_voltage_v)
        if volts < self.mode.battthresh:
            self._use_pending = None  # no battery at all: that is not a parallel phone
            return
        in_use = volts < IN_USE_FRACTION * self._idle_v
        if not in_use and not self.line_in_use:
            self._idle_v += 0.1 * (volts - self._idle_v)  # follow the CO's battery slowly
        if in_use == self.line_in_use:
            self._use_pending = None
            return
        if self._use_pending is None:
            self._use_pending = now
        if now - self._use_pending >= IN_USE_DEBOUNCE_S:
            self._use_pending = None
            self.line_in_use = in_use
            self._emit(ev.LINE_IN_USE if in_use else ev.LINE_FREE, line_voltage_v=self.line_voltage_v)

    # ---- line tests (firmware/diag/commission.py) ----
    def measure(self) -> dict:
        """Line volts (signed: polarity) and loop mA read from the chip now."""
        self._require_running()
        self._measure()
        return {"line_voltage_v": self.line_voltage_v, "loop_current_ma": self.loop_current_ma,
                "seized": self._seized}

    # ---- status for hw probe ----
    def status(self) -> dict:
        state = "failed" if self.failed else "stopped" if self.state == DaaState.STOPPED else "ok"
        out = {"chip": self.chip, "port": self.name, "spi": self.spi.name, "state": state}
        if self.failed:
            return {**out, "error": self.error}
        if state == "ok":
            self._measure()
        return {**out, "line_side": self.line_side, "country": self.country,
                "fxo_mode": self.mode.name,
                "hook": "off" if self._seized else "on", "ringing": self._ringing,
                "rings": len(self.ring_bursts) if self._ringing else 0,
                "line_voltage_v": self.line_voltage_v, "loop_current_ma": self.loop_current_ma,
                "polarity": self.polarity, "line_in_use": self.line_in_use}

    # ---- digital loopback and selftest (branchline hw selftest) ----
    def pcm_loopback(self, on: bool) -> None:
        """PCML, register 33 bit 7 (Si3050 datasheet, PCM/SPI Mode Select: PCM loopback):
        what the DAA receives in its timeslot comes back in its transmit slot. DAHDI's
        wctdm24xxp base.c has a debug equivalent (digitalloopback: DDL, register 10 =
        0x01, with 33 = 0x30). Which of the two loops bit for bit: (confirm on hardware)."""
        self._require_running()
        self._reg33 = (self._reg33 | R.PCML) if on else (self._reg33 & ~R.PCML)
        self._write(R.PCM_SPI_MODE, self._reg33)

    def selftest(self) -> list[dict]:
        """One dict per check: {"check", "ok", "detail", "fix"} (fix empty when ok)."""
        if self.failed or self.state == DaaState.STOPPED:
            return [_check("daa", False, self.error or "the FXO port is not started",
                           "see the detail; reseat the FXO card and restart the core")]
        return [self._check_system_side(), self._check_link(), self._check_line_voltage(),
                self._check_country(), self._check_pcm()]

    def _check_system_side(self) -> dict:
        ctl2, rev = self._read(R.CONTROL2), self._read(R.SYS_LINE_REV) & R.REVA_MASK
        ok = ctl2 != 0xFF and rev not in (0x0, 0xF)
        return _check("daa id", ok, f"Si3050 on {self.spi.name}: revision {rev} (register 11), "
                      f"Control 2 0x{ctl2:02X}",
                      "" if ok else "the DAA does not answer: reseat the FXO card, check SPI")

    def _check_link(self) -> dict:
        lsid = self._read(R.SYS_LINE_REV) >> 4
        fdt = bool(self._read(R.LINE_STATUS) & R.FDT)
        lrv = (self._read(R.LINE_REV) >> 2) & 0x0F
        ok = bool(lsid) and fdt
        name = R.LINE_SIDE_NAMES.get(lsid, f"LSID {lsid}")
        return _check("daa line-side link", ok,
                      f"{name} rev {lrv}, frame detect (FDT) {'on' if fdt else 'off'}",
                      "" if ok else "no PCLK or line-side device: check that the PCM stream "
                      "runs, then the Si3019 and its isolation capacitors")

    def _check_line_voltage(self) -> dict:
        volts = R.to_signed(self._read(R.LINE_VOLTAGE)) * R.LVS_V_PER_BIT
        ok = abs(volts) >= self.mode.battthresh  # wctdm_voicedaa_check_hook: battthresh
        return _check("line voltage", ok, f"{volts:+.0f} V tip-ring (register 29)",
                      "" if ok else "no battery from the exchange: plug the PSTN line into "
                      f"the FXO port of {self.name}, or test the line with a phone")

    def _check_country(self) -> dict:
        want = country_registers(self.mode)
        got = {reg: self._read(reg) for reg in want}
        ok = got == want
        detail = " ".join(f"{reg}=0x{got[reg]:02X}" + ("" if got[reg] == want[reg] else
                          f"(want 0x{want[reg]:02X})") for reg in want)
        return _check("country settings", ok, f'fxo_modes.h "{self.mode.name}": {detail}',
                      "" if ok else "the DAA did not keep its line settings: check the SPI "
                      "wiring and the card's supply, then restart the core")

    def _check_pcm(self) -> dict:
        start = self._slot_start()
        want = {R.PCM_SPI_MODE: self._reg33, R.PCM_TX_START_LO: start & 0xFF,
                R.PCM_TX_START_HI: start >> 8, R.PCM_RX_START_LO: start & 0xFF,
                R.PCM_RX_START_HI: start >> 8}
        got = {reg: self._read(reg) for reg in want}
        ok = got == want
        law = self.settings["pcm_law"]
        return _check("pcm settings", ok, f"{law}, timeslot {self.settings['timeslot']} "
                      f"(start bit {start}); read back " + " ".join(
                          f"{reg}=0x{got[reg]:02X}" for reg in got),
                      "" if ok else "the DAA did not keep its PCM settings: check the SPI wiring")


def _check(name: str, ok: bool, detail: str, fix: str) -> dict:
    return {"check": name, "ok": ok, "detail": detail, "fix": "" if ok else fix}
