"""FXS port driver for the Si3215/Si3210 ProSLIC: one analog phone line.

It sees only an SpiDevice, a Gpio and the Reactor, so the same code runs on the box and
against `drivers.sim.si3215_sim`. The bring-up follows DAHDI's wctdm.c step by step;
hook, pulse dialling, flash, ringing and power alarms become LineEvents on the reactor.
`settings`: drivers.board.line_settings (validated line, country, pcm_law, chip as board).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from drivers.bus import tdm
from drivers.bus.gpio import FALLING, Gpio
from drivers.bus.spi import SpiDevice
from drivers.chips import si3215_regs as R
from foundation.errors import ChipFailed
from foundation.events import CHIP_FAILED, DIGIT, FLASH, OFF_HOOK, ON_HOOK, LineEvent
from foundation.reactor import NEVER, Reactor, Timer

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

# This product's line settings, written after DAHDI's sequence (datasheet units).
# 5 ms chip-side loop-closure debounce keeps pulse makes (>= 17 ms at 20 pps) intact;
# the driver does the real debouncing in software (wctdm24xxp base.c also writes DR69=4).
INIT_LCR_DEBOUNCE = 4  # x 1.25 ms
INIT_RTP_DEBOUNCE = 8  # x 1.25 ms
INIT_LOOP_I_LIMIT = 2  # 20 + 3*2 = 26 mA (wctdm.c loopcurrent parameter, 20..41 mA)
INIT_ON_HOOK_V = 0x20  # 48 V: the chip's reset value (xpp init_card_1_30 "WD 48 20")
INIT_COMMON_V = 0x04  # wctdm.c init_proslic: DR73 = 0x04
INIT_VBATL = 0x10  # 24 V off hook: the chip's reset value
INIT_ENHANCE = 0xEB  # wctdm.c init_proslic "Revision C optimization": DR108 = 0xeb
IRQ2_ENABLE = R.IRQ2_RTRIP | R.IRQ2_LOOP | R.IRQ2_PQ_MASK  # 0xFF, as wctdm24xxp's DR22

# Receive (PCM -> phone) digital gain IR26 (Si3215 IR13): 0 dB, not DAHDI's 0x2000.
# 0x4000 is the chip's 0 dB: Silicon Labs' ProSLIC API loads it (si321x_intf.c INIT_IR26
# 0x4000; si321x_constants.c preset {AUDIOGAIN_0DB, 0x4000}, written by
# Si321x_RXAudioGainSetup), and so does the "daytona" Si3215 FXS driver ("unity digital
# gain = 0x4000"); DAHDI's own table keeps that line, commented out, beside its 0x2000 "playback
# volume set lower" (-6 dB, a listening preference for Asterisk's playback). This
# product generates its tones and caller ID at the tone plans' dBm0 levels and the
# technician measures them at the phone: any loss toward the phone belongs in the line's
# settings, not hidden in the chip. Transmit (IR27, Si3215 IR14) stays at DAHDI's 0x4000.
RECV_DIGITAL_GAIN_0DB = 0x4000
IR_TABLE = tuple((addr, alt, name, RECV_DIGITAL_GAIN_0DB if name == "RECV_DIGITAL_GAIN" else value)
                 for addr, alt, name, value in R.IR_TABLE)

RESET_LOW_S = 0.010
RESET_READY_S = 0.020
POWERUP_TIMEOUT_S = 0.5  # wctdm.c powerup_proslic "Wait no more than 500ms"
LEAK_SETTLE_S = 0.020  # wctdm24xxp base.c powerleak_test: msleep(20) before the first read
LEAK_WINDOW_S = 0.5  # wctdm.c powerleak_test: HZ/2
CALIBRATION_TIMEOUT_S = 2.0  # wctdm.c proslic_calibrate: 2*HZ
CALIBRATION_TRIES = 2  # wctdm.c init_proslic: "Second Attempt" then give up
MANUAL_CAL_TIMEOUT_S = 0.8  # wctdm.c manual_calibrate: 80 jiffies (HZ=100)
MANUAL_SETTLE_S = 0.010  # wctdm24xxp manual_calibrate: msleep(10)
MANUAL_STEP_S = 0.040  # wctdm24xxp manual_calibrate: msleep(40) per gain step
BALANCE_FEED_S = 0.100  # wctdm24xxp manual_calibrate: msleep(100) with the line active
INDIRECT_TIMEOUT_S = 0.1  # wctdm.c __wait_access: 6000 reads of DR31, ~0.1 s of SPI at 2 MHz
INDIRECT_FAST_POLLS = 3  # reads before the wait starts letting reactor time pass
INDIRECT_POLL_S = 0.001
POLL_S = 0.010
INTERRUPT_ROUNDS = 8  # a stuck INT line must not hold the reactor forever
MAX_CHIP_TIMER_S = 0xFFFF * R.TIMER_TICK_S
SANITY_S = 0.256  # wctdm.c: recheck_sanity once every 256 of its 1 ms interrupts
MAX_ALARMS = 10  # wctdm.c MAX_ALARMS: "Too many power alarms ..., NOT resetting!"
ALARM_FORGIVE_S = 10.0  # wctdm.c "Accept an alarm once per 10 seconds"
ALARM_BREAK_S = 0.1  # a loop opening this soon after a power alarm is the alarm's doing

NO_PCLK = "no PCLK: the PCM stream is not running (check the card's PCM link / overlay)"


class CalibrationFailed(ChipFailed):
    """Auto calibration did not finish twice: the bring-up is redone with manual calibration."""


def ring_coefficients(hz: float, vpk: float) -> tuple[int, int]:
    """(RCO, RNGX) for the ring oscillator: a 1 kHz digital resonator (datasheet
    formula; it gives DAHDI's 25 Hz fastringer RCO 0x7e6d exactly)."""
    c = math.cos(2 * math.pi * hz / R.RING_OSC_RATE)
    rco = round(c * 32768) & 0xFFFF
    rngx = round(0.25 * math.sqrt((1 - c) / (1 + c)) * (vpk / R.RING_AMP_FULL_V) * 32768)
    return rco, rngx


def ring_from_coefficients(rco: int, rngx: int) -> tuple[float, float]:
    """(Hz, peak volts) a programmed (RCO, RNGX) pair rings at."""
    c = (rco - 0x10000 if rco & 0x8000 else rco) / 32768
    hz = math.acos(max(-1.0, min(1.0, c))) * R.RING_OSC_RATE / (2 * math.pi)
    scale = 0.25 * math.sqrt((1 - c) / (1 + c)) * 32768 if -1 < c < 1 else 0.0
    return hz, (rngx / scale * R.RING_AMP_FULL_V if scale else 0.0)


def _check(name: str, ok: bool, detail: str, fix: str = "") -> dict:
    return {"check": name, "ok": bool(ok), "detail": detail, "fix": "" if ok else fix}


class Si3215:
    """One FXS line on a ProSLIC; see the module docstring for the sequence and the rules."""

    def __init__(self, name: str, spi: SpiDevice, gpio: Gpio, reset_pin: int, int_pin: int,
                 reactor: Reactor, settings: dict[str, Any],
                 on_event: Callable[[LineEvent], None]) -> None:
        self.name, self.spi, self.gpio, self.reactor = name, spi, gpio, reactor
        self.reset_pin, self.int_pin = reset_pin, int_pin
        self.settings, self.on_event = settings, on_event
        self.chip, self.revision, self.ident = "si3215", 0, (0, 0)
        self.failed, self.error, self.running = False, "", False
        self.calibration: dict = {}
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
        self._alarm_q: list[str] = []
        self._alarm_at = -math.inf
        self._break_by_alarm = False
        self._palarms = 0
        self._forgive_at = NEVER
        self._loopback = False
        self._edge_hooked = False
        self._t_offhook = reactor.register_timer(self._offhook_confirmed, NEVER)
        self._t_hangup = reactor.register_timer(self._hung_up, NEVER)
        self._t_make = reactor.register_timer(self._make_confirmed, NEVER)
        self._t_digit = reactor.register_timer(self._digit_done, NEVER)
        self._t_cadence = reactor.register_timer(self._cadence_step, NEVER)
        self._t_sanity = reactor.register_timer(self._recheck_sanity, NEVER)

    def retune(self, settings: dict) -> None:
        """New hook, flash and pulse timing while running; a hook transition already
        being timed finishes with the old values."""
        self.settings = settings
        self._read_timing(settings)

    def _read_timing(self, s: dict) -> None:
        debounce_ms = float(s["debounce_ms"])
        self.debounce = debounce_ms / 1000
        self.break_debounce = min(debounce_ms, 25.0) / 1000
        self.make_debounce = min(debounce_ms, 10.0) / 1000
        self.flash_min = float(s["flash_min_ms"]) / 1000
        self.flash_max = float(s["flash_max_ms"]) / 1000
        self.interdigit = float(s["interdigit_ms"]) / 1000

    # ------------------------------------------------------------------ board settings
    @property
    def board(self) -> dict:
        return dict(self.settings["board"])

    def _board_where(self, key: str) -> str:
        return f"board.chips.{self.settings['chip']}.{key}"

    @property
    def dcdc_period(self) -> int:
        return int(self.board["slic_dcdc_period"]) & 0xFF

    @property
    def dcdc_engage(self) -> int:
        return int(self.board["slic_dcdc_engage"]) & 0x7F

    @property
    def auto_battery(self) -> bool:
        return bool(self.board["slic_auto_battery"])

    @property
    def cal_mode(self) -> str:
        return str(self.board["slic_calibration"])

    # ------------------------------------------------------------------ bring-up
    def start(self) -> None:
        """Reset, identify, program, power up, calibrate; raise ChipFailed on failure.

        As wctdm.c wctdm_init_proslic: sanity and part detection, the indirect table
        (through translate_3215 on an Si3215), battery switching per the board, DC-DC
        power-up (DR92/DR93), the power-leak test, calibration (auto twice, then manual, as
        wctdm_hardware_init falls back), the table read back (a mismatch is ChipFailed),
        PCM, the ring generator, then this product's feed, debounce and interrupts.
        Indirect access needs PCLK: without it the error says "no PCLK"."""
        self.failed, self.error, self.running = False, "", False
        self._palarms, self._forgive_at, self._alarm, self._loopback = 0, NEVER, "", False
        try:
            self._bring_up()
        except ChipFailed as exc:
            self.failed, self.error, self.running = True, str(exc), False
            raise
        self.running = True
        self._arm(self._t_sanity, self.reactor.now() + SANITY_S)

    def _bring_up(self) -> None:
        self.gpio.setup_output(self.reset_pin, True)
        self.gpio.setup_input(self.int_pin, pull_up=True)
        if not self._edge_hooked:
            self.gpio.on_edge(self.int_pin, FALLING, self._on_int_edge)
            self._edge_hooked = True
        self._reset()
        self._insane()
        self.calibration = {}
        manual = self.cal_mode == "manual"  # OAK pitdm.c init_proslic forces manual = 1
        try:
            self._init_proslic(manual=manual, sane=False)
        except CalibrationFailed as exc:
            if manual:
                raise
            # wctdm.c wctdm_hardware_init: "Init with Manual Calibration", sane = 1
            log.warning("%s: %s; again with manual calibration", self.name, exc)
            self._init_proslic(manual=True, sane=True)
        self._program_line()
        self._enable_interrupts()
        self._hook, self._loop, self._alarm = "on", False, ""
        self._set_lf(self._idle_lf())  # wctdm.c init_proslic: LINE_STATE = idletxhookstate
        self._loop_changed(bool(self._read(R.DR_HOOK_STATUS) & R.HOOK_LCR), self.reactor.now())

    def _pause(self, seconds: float) -> None:
        """Let time pass (and other timers run): the chip needs real milliseconds."""
        self.reactor.run_until(self.reactor.now() + seconds)

    def _reset(self) -> None:
        self.gpio.write(self.reset_pin, False)
        self._pause(RESET_LOW_S)
        self.gpio.write(self.reset_pin, True)
        self._pause(RESET_READY_S)

    def _insane(self) -> None:
        """wctdm.c wctdm_proslic_insane: ID, revision, part, reset values; then IAA = 0."""
        ident = self._read(R.DR_SPI_MODE)
        if ident in (0x00, 0xFF) or (ident & R.REV_MASK) in (0x0, 0xF):
            raise ChipFailed(f"SLIC on {self.spi.name} answered 0x{ident:02X} to its ID register: "
                             "card not seated?")
        if ident & R.REV_MASK < R.REV_MIN:
            raise ChipFailed(f"SLIC on {self.spi.name}: ProSLIC revision {ident & R.REV_MASK} is "
                             "too old (wctdm.c needs 2 or later): replace the FXS card")
        pcm_mode = self._read(R.DR_PCM_MODE)
        self.chip = "si3215" if pcm_mode & R.PCM_MODE_SI3215 else "si3210"  # FLAG_3215
        self.revision, self.ident = ident & R.REV_MASK, (ident, pcm_mode)
        loopback, lf, hybrid = (self._read(r) for r in (R.DR_LOOPBACK, R.DR_LINEFEED, R.DR_HYBRID))
        if (loopback, lf, hybrid) != (R.RESET_LOOPBACK, R.RESET_LINEFEED, R.RESET_HYBRID):
            raise ChipFailed(
                f"SLIC on {self.spi.name} read DR8=0x{loopback:02X} DR64=0x{lf:02X} "
                f"DR11=0x{hybrid:02X} after reset (a ProSLIC reads 0x02/0x00/0x33): another "
                "chip on this chip-select? check spi_bus/spi_cs in board.chips")
        self._write(R.DR_IAA, 0)  # wctdm.c proslic_insane: "Just be sure it's setup right."
        if self.board["type"] != self.chip:
            log.warning("%s: board.chips says %s but the chip reads as %s (DR1=0x%02X): "
                        "using %s", self.name, self.board["type"], self.chip, pcm_mode, self.chip)

    def _init_proslic(self, manual: bool, sane: bool) -> None:
        """wctdm.c wctdm_init_proslic (fast = 0), step by step."""
        if sane:
            self._write(R.DR_POWERDOWN1, R.PDDCDC)  # "turn off the DC->DC converter"
        self._write_table()  # wctdm_proslic_init_indirect_regs
        self._write_indirect(R.IR_SCRATCH, 0)  # "Clear scratch pad area"
        self._write(R.DR_LOOPBACK, R.LOOPBACK_OFF)  # "Clear digital loopback"
        self._write(R.DR_ENHANCE, INIT_ENHANCE)  # "Revision C optimization"
        self._battery_switching()
        saved = self._flush_filters()
        self._power_up("initial")
        self._leak_test()
        self._power_up("final")
        self._calibrate(manual)
        self._dcdc_calibrate()
        self.calibration["vector"] = [self._read(R.DR_CAL1 + i) for i in range(R.CAL_REGS)]
        for addr, value in saved.items():  # "Calibration complete, restore original values"
            self._write_indirect(addr, value)
        self._verify_table()  # wctdm_proslic_verify_indirect_regs
        self._setup_pcm()
        for reg in (R.DR_INT_STATUS1, R.DR_INT_STATUS2, R.DR_INT_STATUS3):
            self._write(reg, R.IRQ_CLEAR_ALL)  # "clear all interrupt"
        self._write(R.DR_COMMON_V, INIT_COMMON_V)  # wctdm.c init_proslic: DR73 = 0x04
        self._init_ring_generator()

    def _battery_switching(self) -> None:
        """wctdm.c init_proslic: "Disable automatic VBat switching for safety to prevent Q7
        from accidently turning on and burning out" (DR67 = 0x07), "Turn off Q7" (DR66 =
        1). A board built for automatic switching (slic_auto_battery) keeps ABAT on."""
        if self.auto_battery:
            self._write(R.DR_AUTO, R.AUTO_SAFE | R.AUTO_ABAT)
            return
        self._write(R.DR_AUTO, R.AUTO_SAFE)
        self._write(R.DR_BAT_FEED, R.BAT_FEED_Q7_OFF)

    def _flush_filters(self) -> dict[int, int]:
        """wctdm.c init_proslic: "Flush ProSLIC digital filters by setting to clear, while
        saving old values" (IR35..39 = 0x8000 around calibration)."""
        saved = {}
        for addr in R.IR_FILTERS:
            saved[addr] = self._read_indirect(addr)
            self._write_indirect(addr, R.IR_FILTER_FLUSH)
        return saved

    def _power_up(self, which: str) -> None:
        """wctdm.c wctdm_powerup_proslic: PWM period, power-down off, wait for VBAT >= 0xc0
        (500 ms), loop current limit, engage the DC-DC converter."""
        self._write(R.DR_DCDC_PERIOD, self.dcdc_period)  # "Set period of DC-DC converter"
        self._write(R.DR_POWERDOWN1, R.POWER_UP)  # "Disable powerdown"
        deadline = self.reactor.now() + POWERUP_TIMEOUT_S
        while (vbat := self._read(R.DR_VBATS1)) < R.VBAT_POWERED:
            if self.reactor.now() >= deadline:
                self._check_pclk(f"battery only {vbat * R.VSENSE_STEP_V:.0f} V at the {which} "
                                 "power-up")
                raise ChipFailed(
                    f"SLIC on {self.spi.name}: battery only {vbat * R.VSENSE_STEP_V:.0f} V after "
                    f"{POWERUP_TIMEOUT_S:.1f} s at the {which} power-up (want "
                    f"{R.VBAT_POWERED * R.VSENSE_STEP_V:.0f} V): check the FXS card's power and "
                    f"{self._board_where('slic_dcdc_period')}/slic_dcdc_engage against the "
                    "card's inductor (the DC-DC converter needs its PWM period and PCLK)")
            self._pause(POLL_S)
        self.calibration[f"vbat_{which}_v"] = round(vbat * R.VSENSE_STEP_V, 1)
        self._write(R.DR_LOOP_I_LIMIT, INIT_LOOP_I_LIMIT)  # "max allowed loop current"
        self._write(R.DR_DCDC, self.dcdc_engage)  # "Engage DC-DC converter"

    def _leak_test(self) -> None:
        """wctdm.c wctdm_proslic_powerleak_test: linefeed open, converter off; the battery
        must not fall below 0x06 within HZ/2. DAHDI only warns ("Check for short
        circuit") and goes on; the result is kept for selftest()."""
        self._write(R.DR_LINEFEED, R.LF_OPEN)  # "Turn off linefeed"
        self._write(R.DR_POWERDOWN1, R.PDDCDC)  # "Power down"
        start = self.reactor.now()
        self._pause(LEAK_SETTLE_S)
        while (vbat := self._read(R.DR_VBATS1)) > R.VBAT_LEAK_MIN:
            if self.reactor.now() - start >= LEAK_WINDOW_S:
                break
            self._pause(POLL_S)
        ok = vbat >= R.VBAT_LEAK_MIN
        ms = round((self.reactor.now() - start) * 1000)
        self.calibration["leak"] = {"ok": ok, "vbat_v": round(vbat * R.VSENSE_STEP_V, 1), "ms": ms}
        if not ok:
            log.warning("%s: excessive leakage: battery %.1f V after %d ms: check tip/ring for a "
                        "short circuit", self.name, vbat * R.VSENSE_STEP_V, ms)

    def _calibrate(self, manual: bool) -> None:
        """wctdm.c init_proslic: auto (or manual) calibration, a second attempt, then fail."""
        run = self._manual_calibration if manual else self._auto_calibration
        for attempt in range(1, CALIBRATION_TRIES + 1):
            detail = run()
            if not detail:
                self.calibration.update(mode="manual" if manual else "auto", attempts=attempt)
                return
            log.warning("%s: calibration attempt %d: %s", self.name, attempt, detail)
        self._check_pclk(f"calibration did not finish ({detail})")
        raise CalibrationFailed(
            f"SLIC on {self.spi.name} did not finish {'manual' if manual else 'auto'} "
            f"calibration ({detail}): check the FXS card's power and that nothing is "
            "connected across tip/ring during start-up")

    def _auto_calibration(self) -> str:
        """wctdm.c wctdm_proslic_calibrate: DR97 = 0x1f, DR96 = 0x5f, DR96 clears in 2 s."""
        self._write(R.DR_CAL2, R.CAL_ALL)  # "Perform all calibrations"
        self._write(R.DR_CAL1, R.CAL_AUTO_START)  # "Begin, no speedup"
        return self._wait_cal_done(CALIBRATION_TIMEOUT_S)

    def _wait_cal_done(self, timeout: float) -> str:
        deadline = self.reactor.now() + timeout
        while (cal := self._read(R.DR_CAL1)) != 0:
            if self.reactor.now() >= deadline:
                return f"DR96 still 0x{cal:02X} after {timeout:.1f} s"
            self._pause(POLL_S)
        return ""

    def _manual_calibration(self) -> str:
        """wctdm.c / wctdm24xxp wctdm_proslic_manual_calibrate (Silicon Labs' manual
        sequence): DAC/ILIM calibration, gain mismatch search on DR98/99, longitudinal
        balance calibration."""
        for reg in (R.DR_INT_ENABLE1, R.DR_INT_ENABLE2, R.DR_INT_ENABLE3, R.DR_LINEFEED):
            self._write(reg, 0x00)
        self._write(R.DR_CAL2, R.CAL_MANUAL_DR97)
        self._write(R.DR_CAL1, R.CAL_MANUAL_DR96)
        if detail := self._wait_cal_done(MANUAL_CAL_TIMEOUT_S):
            return detail
        self._pause(MANUAL_SETTLE_S)
        for addr in R.IR_MANUAL_CAL:
            self._write_indirect(addr, 0)
        self._write(R.DR_CAL_RING_GAIN, R.CAL_GAIN_RESET)
        self._write(R.DR_CAL_TIP_GAIN, R.CAL_GAIN_RESET)
        self._gain_search(R.DR_CAL_RING_GAIN, R.DR_IQ5)
        self._gain_search(R.DR_CAL_TIP_GAIN, R.DR_IQ6)
        self._write(R.DR_LINEFEED, R.LF_FORWARD_ACTIVE)  # longitudinal balance calibration
        self._pause(BALANCE_FEED_S)
        self._write(R.DR_LINEFEED, R.LF_OPEN)
        self._write(R.DR_INT_ENABLE3, R.CAL_LONG_IRQ3)
        self._write(R.DR_CAL2, R.CAL_LONG_DR97)
        self._write(R.DR_CAL1, R.CAL_RUN)
        self._read(R.DR_CAL1)  # "Read Reg 96 just cause"
        for reg in (R.DR_INT_ENABLE1, R.DR_INT_ENABLE2, R.DR_INT_ENABLE3):
            self._write(reg, 0xFF)
        return ""

    def _gain_search(self, cal_reg: int, result_reg: int) -> None:
        for step in range(R.CAL_GAIN_TOP, 0, -1):
            self._write(cal_reg, step)
            self._pause(MANUAL_STEP_S)
            if self._read(result_reg) == 0:
                return

    def _dcdc_calibrate(self) -> None:
        """wctdm.c init_proslic "Perform DC-DC calibration": DR93 | 0x80, then DR107 must
        read 0x2..0xd, else it is set to 0x8."""
        self._write(R.DR_DCDC, self.dcdc_engage | R.DCDC_CAL)
        done = self._wait_dcdc_cal()
        peak = self._read(R.DR_DCDC_PEAK_CAL)
        fixed = not R.DCDC_PEAK_MIN <= peak <= R.DCDC_PEAK_MAX
        if fixed:
            log.warning("%s: DC-DC calibration gave a surprising DR107 of 0x%02X: using 0x%02X",
                        self.name, peak, R.DCDC_PEAK_FALLBACK)
            self._write(R.DR_DCDC_PEAK_CAL, R.DCDC_PEAK_FALLBACK)
        self.calibration["dr107"] = {"read": peak, "fixed": fixed, "done": done}

    def _wait_dcdc_cal(self) -> bool:
        """DR93 bit 7 reads 1 while the DC-DC calibration runs (wctdm.c powerup_proslic's
        disabled "#if 0" wait, 2 s; Silicon Labs' ProSLIC API powerUp waits on it too).
        wctdm.c reads DR107 at once; waiting first reads the finished result."""
        deadline = self.reactor.now() + CALIBRATION_TIMEOUT_S
        while self._read(R.DR_DCDC) & R.DCDC_CAL:
            if self.reactor.now() >= deadline:
                log.warning("%s: DC-DC calibration did not finish in %.0f s (DR93 bit 7 still "
                            "set)", self.name, CALIBRATION_TIMEOUT_S)
                return False
            self._pause(POLL_S)
        return True

    def _setup_pcm(self) -> None:
        """wctdm.c init_proslic DR1 (0x28 mu-law, 0x20 A-law: PCM on, 8-bit companded) and
        wctdm24xxp wctdm_proslic_set_ts: DR2-5 = start count of the line's timeslot."""
        law = R.PCM_ALAW if self.settings["pcm_law"] == "alaw" else R.PCM_ULAW
        start = tdm.slot_start(int(self.settings["timeslot"]))
        for reg, value in ((R.DR_PCM_MODE, R.PCM_ENABLE | law),
                           (R.DR_PCM_TX_LO, start & 0xFF), (R.DR_PCM_TX_HI, start >> 8),
                           (R.DR_PCM_RX_LO, start & 0xFF), (R.DR_PCM_RX_HI, start >> 8)):
            self._write(reg, value)

    def _init_ring_generator(self) -> None:
        """wctdm.c wctdm_init_ring_generator_mode and set_ring_generator_mode(mode 0)."""
        self._write(R.DR_RING_OSC_CTL, 0x00)  # "Ringing Osc. Control"
        for reg, value in R.NEON_TIMERS:  # "neon trapezoid timers"
            self._write(reg, value)
        self._write(R.DR_RING_OSC_CTL, 0x00)
        self._write_indirect(R.IR_RING_INIT, 0x0000)  # "RNGY Initial Phase"
        self._write_indirect(R.IR_RTP_THRESH, R.RING_TRIP_THRESH)  # "RPTP"
        self._write(R.DR_VBATH, R.RING_VBATH)  # "VBATH"
        rco, rngx = self._ring_coefficients()
        self._write_indirect(R.IR_RING_FREQ, rco)  # "RCO"
        self._write_indirect(R.IR_RING_AMP, rngx)  # "RNGX"

    def _ring_coefficients(self) -> tuple[int, int]:
        """The line's ring_hz/ring_vpk when set, else DAHDI's default 0x7ef0/0x160."""
        if "ring_hz" in self.settings or "ring_vpk" in self.settings:
            default_hz, default_vpk = ring_from_coefficients(R.RING_RCO_DEFAULT, R.RING_RNGX_DEFAULT)
            return ring_coefficients(float(self.settings.get("ring_hz", default_hz)),
                                     float(self.settings.get("ring_vpk", default_vpk)))
        return R.RING_RCO_DEFAULT, R.RING_RNGX_DEFAULT

    def _program_line(self) -> None:
        """This product's feed and debounce (after DAHDI's sequence, as its module options
        come after it): see INIT_* for each value's reason."""
        for reg, value in ((R.DR_LCR_DEBOUNCE, INIT_LCR_DEBOUNCE),
                           (R.DR_RTP_DEBOUNCE, INIT_RTP_DEBOUNCE),
                           (R.DR_LOOP_I_LIMIT, INIT_LOOP_I_LIMIT),
                           (R.DR_ON_HOOK_V, INIT_ON_HOOK_V), (R.DR_VBATL, INIT_VBATL)):
            self._write(reg, value)

    def _enable_interrupts(self) -> None:
        for reg in (R.DR_INT_STATUS1, R.DR_INT_STATUS2, R.DR_INT_STATUS3):
            self._write(reg, R.IRQ_CLEAR_ALL)  # write-1-to-clear what bring-up latched
        self._write(R.DR_INT_ENABLE1, 0x00)
        self._write(R.DR_INT_ENABLE2, IRQ2_ENABLE)
        self._write(R.DR_INT_ENABLE3, 0x00)

    def stop(self) -> None:
        """Open the line and stop reacting to the chip (safe on a failed chip)."""
        for timer in (self._t_offhook, self._t_hangup, self._t_make, self._t_digit,
                      self._t_cadence, self._t_sanity):
            self.reactor.update_timer(timer, NEVER)
        if self.running:
            self._ringing = False
            self._write(R.DR_INT_ENABLE2, 0x00)
            self._set_lf(R.LF_OPEN)
        self.running = False

    # ------------------------------------------------------------------ indirect table
    def ir_address(self, addr: int) -> int | None:
        """The address on the wire for Si3210 indirect register `addr`: on an Si3215 its
        own map (wctdm.c translate_3215), None where the Si3215 has no such register."""
        if self.chip != "si3215":
            return addr
        alt = R.SI3215_ADDRESS.get(addr, addr)
        return None if alt == R.SI3215_NONE else alt

    def _write_table(self) -> None:
        for addr, _alt, _name, value in IR_TABLE:
            self._write_indirect(addr, value)

    def table_mismatches(self) -> list[str]:
        """wctdm.c wctdm_proslic_verify_indirect_regs: every register this part has, read
        back against the table written (IR_TABLE); one line per mismatch."""
        out = []
        for addr, _alt, name, value in IR_TABLE:
            wire = self.ir_address(addr)
            if wire is None:
                continue
            got = self._read_indirect(addr)
            if got != value:
                where = f"IR{addr}" + (f" (Si3215 IR{wire})" if wire != addr else "")
                out.append(f"{where} {name} reads 0x{got:04X}, should be 0x{value:04X}")
        return out

    def _verify_table(self) -> None:
        bad = self.table_mismatches()
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ChipFailed(
                f"SLIC on {self.spi.name}: indirect register table did not verify: {bad[0]}"
                f"{more}: the {self.chip}'s indirect access is unreliable: check PCLK and the "
                "SPI wiring, then restart")

    # ------------------------------------------------------------------ register access
    def _read(self, reg: int) -> int:
        self.spi.transfer(bytes([R.SPI_READ | (reg & R.SPI_ADDR_MASK)]))
        return self.spi.transfer(b"\x00")[0]

    def _write(self, reg: int, value: int) -> None:
        self.spi.transfer(bytes([reg & R.SPI_ADDR_MASK]))
        self.spi.transfer(bytes([value & 0xFF]))

    def _check_pclk(self, what: str) -> None:
        """After a wait that never ended: if an indirect access does not complete either,
        the cause is PCLK (the chip's DSP runs on it), not the card; say so."""
        try:
            self._read_indirect(R.IR_SCRATCH)
        except ChipFailed:
            raise ChipFailed(f"SLIC on {self.spi.name}: {what}: {NO_PCLK}") from None

    def _wait_indirect(self) -> None:
        """wctdm.c __wait_access: DR31 reads 0 once the last indirect access is done; the
        chip's DSP does it on PCLK, so a DR31 that never clears means no PCLK."""
        deadline = self.reactor.now() + INDIRECT_TIMEOUT_S
        polls = 0
        while (status := self._read(R.DR_IAS)) != 0:
            polls += 1
            if self.reactor.now() >= deadline:
                raise ChipFailed(f"SLIC on {self.spi.name}: indirect access never completed "
                                 f"(DR31 stuck at 0x{status:02X}): {NO_PCLK}")
            if polls >= INDIRECT_FAST_POLLS:
                self._pause(INDIRECT_POLL_S)

    def _write_indirect(self, addr: int, value: int) -> None:
        """wctdm.c wctdm_proslic_setreg_indirect: IDA_LO, IDA_HI, then IAA starts it."""
        wire = self.ir_address(addr)
        if wire is None:
            return
        self._wait_indirect()
        self._write(R.DR_IDA_LO, value & 0xFF)
        self._write(R.DR_IDA_HI, (value >> 8) & 0xFF)
        self._write(R.DR_IAA, wire)

    def _read_indirect(self, addr: int) -> int:
        """wctdm.c wctdm_proslic_getreg_indirect: IAA, wait, IDA_LO, IDA_HI (0 where the
        part has no such register, as translate_3215's callers return)."""
        wire = self.ir_address(addr)
        if wire is None:
            return 0
        self._wait_indirect()
        self._write(R.DR_IAA, wire)
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
            if not self.running or self.gpio.read(self.int_pin):  # INT released
                return

    def _handle(self, s2: int, now: float) -> None:
        if s2 & R.IRQ2_PQ_MASK:
            self._power_alarm(s2 & R.IRQ2_PQ_MASK)
            return
        if s2 & R.IRQ2_RTRIP:
            self._loop_changed(True, now)
        if s2 & R.IRQ2_LOOP:
            self._loop_changed(bool(self._read(R.DR_HOOK_STATUS) & R.HOOK_LCR), now)

    # ------------------------------------------------------------------ power alarms
    def _power_alarm(self, bits: int) -> None:
        """A feed transistor overheats: the line is opened now (the chip's AOPN does the
        same) and the next sanity check re-applies the linefeed, as DAHDI does. No event
        yet: call control takes a port out of service on POWER_ALARM/CHIP_FAILED, and a
        recovered alarm must not drop the call; only giving up is reported: after
        MAX_ALARMS re-applications (one forgiven every 10 s) the port is failed with
        CHIP_FAILED."""
        names = [f"Q{q + 1}" for q in range(6) if bits & (1 << (q + R.IRQ2_PQ_SHIFT))]
        self._alarm, self._alarm_q = f"power alarm on {', '.join(names)}", names
        self._alarm_at = self.reactor.now()
        log.warning("%s: %s: line opened", self.name, self._alarm)
        if self._ringing:
            self._stop_cadence()
            self._lf = self._idle_lf()  # wctdm.c: a ringing line comes back active
        self._write(R.DR_LINEFEED, R.LF_OPEN)
        self._arm(self._t_sanity, self.reactor.now() + SANITY_S)

    def _recheck_sanity(self, eventtime: float) -> float:
        """wctdm.c wctdm_proslic_recheck_sanity, every 256 ms: a linefeed that reads open
        while we want it fed is a power alarm (or a chip that reset itself)."""
        if not self.running:
            return NEVER
        self._forgive(eventtime)
        if self._lf == R.LF_OPEN:
            return eventtime + SANITY_S
        if self._read(R.DR_LINEFEED) & R.LF_MASK:
            if self._alarm:
                log.info("%s: %s: line fed again", self.name, self._alarm)
                self._alarm = ""
            return eventtime + SANITY_S
        if self._read(R.DR_LOOPBACK) and not self._loopback:  # back at its reset value
            self._give_up(f"SLIC on {self.spi.name} reset itself while running (DR8 reads its "
                          "reset value): check the FXS card's power supply, then restart")
            return NEVER
        self._palarms += 1
        if self._palarms >= MAX_ALARMS:
            self._give_up(
                f"SLIC on {self.spi.name}: {MAX_ALARMS} power alarms "
                f"({self._alarm or 'linefeed found open'}): line left open: check tip/ring for a "
                "short or a foreign voltage and the FXS card's power, then restart the port")
            return NEVER
        log.warning("%s: %s: re-applying %s (%d of %d)", self.name, self._alarm or "power alarm",
                    LINEFEED_NAMES[self._lf], self._palarms, MAX_ALARMS)
        self._write(R.DR_LINEFEED, self._lf)
        if self._forgive_at == NEVER:
            self._forgive_at = eventtime + ALARM_FORGIVE_S
        return eventtime + SANITY_S

    def _forgive(self, now: float) -> None:
        """wctdm.c: "Accept an alarm once per 10 seconds" (palarms--)."""
        while self._palarms and now >= self._forgive_at:
            self._palarms -= 1
            self._forgive_at += ALARM_FORGIVE_S
        if not self._palarms:
            self._forgive_at = NEVER

    def _give_up(self, reason: str) -> None:
        log.error("%s: %s", self.name, reason)
        self._stop_cadence()
        self._write(R.DR_INT_ENABLE2, 0x00)
        self._write(R.DR_LINEFEED, R.LF_OPEN)
        self._lf = R.LF_OPEN
        self.failed, self.error, self.running = True, reason, False
        self._emit(CHIP_FAILED, {"error": reason, "alarm": self._alarm,
                                 "transistors": list(self._alarm_q), "power_alarms": self._palarms})

    # ------------------------------------------------------------------ hook state machine
    def _loop_changed(self, closed: bool, now: float) -> None:
        """A debounced loop change, stamped with the reactor clock. On hook, a closure for
        debounce_ms is OFF_HOOK. Off hook, a break shorter than min(debounce_ms, 25) ms is
        bounce, shorter than flash_min_ms a dial pulse, up to flash_max_ms a FLASH, longer
        ON_HOOK. A make shorter than min(debounce_ms, 10) ms inside a break is bounce (at
        20 pps a make lasts 17 ms). Pulses end as a DIGIT after interdigit_ms closed."""
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
        # a break the power-alarm recovery made (line opened, then fed again) is no flash
        self._break_by_alarm = now - self._alarm_at <= ALARM_BREAK_S
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
        if self._break_by_alarm:
            self._break_by_alarm = False
            log.info("%s: %.0f ms loop break during a power alarm: not a flash", self.name, brk * 1000)
        elif self.break_debounce <= brk < self.flash_min:
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

    def _arm(self, timer: Timer, waketime: float) -> None:
        self.reactor.update_timer(timer, waketime)

    # ------------------------------------------------------------------ ringing
    def ring(self, cadence: tuple[float, ...] | list[float] | None = None) -> bool:
        """Ring with `cadence` (on, off, ...) seconds; False if the phone is already off hook.

        One on/off pair runs on the chip's ring timers; longer cadences switch the linefeed
        on reactor timers, so caller ID passes in the gaps. Ring trip raises OFF_HOOK."""
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

    def _cadence_for(self, cadence: Sequence[float] | None) -> tuple[float, ...]:
        if not cadence:
            cadence = self.settings.get("ring_cadence") or self._country_cadence()
        cadence = tuple(float(x) for x in cadence)
        if len(cadence) % 2 or any(x <= 0 for x in cadence):
            raise ValueError(f"{self.name}: ring cadence {cadence} must be on/off pairs of "
                             "positive seconds")
        return cadence

    def _country_cadence(self) -> tuple[float, ...]:
        from cext import toneplans  # pure data; imported late to keep start-up light

        code = self.settings["country"]
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
        """(Hz, peak volts) of the ring oscillator as programmed (DAHDI's default
        0x7ef0/0x160 rings at 20.5 Hz, 64 V peak)."""
        return ring_from_coefficients(*self._ring_coefficients())

    def restore_idle(self) -> None:
        """After a line test: the idle linefeed of the port's polarity."""
        self._stop_cadence()
        self._set_lf(self._idle_lf())

    def status(self) -> dict:
        """Live state for `hw probe`; readings are None on a chip that is not running."""
        base = {"chip": self.chip, "port": self.name, "device": self.spi.name,
                "hook": self._hook, "ring": self._ringing,
                "polarity": "reverse" if self._reversed else "forward", "alarm": self._alarm,
                "power_alarms": self._palarms}
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

    # ------------------------------------------------------------------ selftest
    def pcm_loopback(self, on: bool) -> None:
        """Digital loopback: what the chip receives on its PCM timeslot it sends back on
        its transmit timeslot. DR8 = 0x02 (wctdm.c init_proslic's "#if 0 Enable loopback"
        block; the same value is DR8's reset state, which init_proslic clears as "Clear
        digital loopback"); DR8 = 0 ends it. (confirm on hardware)"""
        if not self.running:
            raise ChipFailed(f"SLIC on {self.spi.name} is not running ({self.error or 'stopped'}): "
                             "start the port before a loopback test")
        self._loopback = bool(on)
        self._write(R.DR_LOOPBACK, R.LOOPBACK_DIGITAL if on else R.LOOPBACK_OFF)

    def selftest(self) -> list[dict]:
        """The first-power-up checks (`branchline hw selftest`): identity, battery and
        DC-DC now, the calibration results of bring-up, the indirect table read back now."""
        if not self.running:
            return [_check("chip id", False, self.error or "the port is stopped",
                           "start the port; " + ("see the error" if self.error else "it was stopped"))]
        return [self._check_identity(), self._check_battery(), self._check_dcdc(),
                self._check_calibration(), self._check_leak(), self._check_table(),
                self._check_pcm()]

    def _check_identity(self) -> dict:
        ident, pcm_mode = self.ident
        now = self._read(R.DR_SPI_MODE)
        detail = (f"{self.chip.capitalize()} revision {self.revision} (DR0=0x{ident:02X}, "
                  f"DR1=0x{pcm_mode:02X} at reset; DR0 now 0x{now:02X})")
        return _check("chip id", now == ident, detail,
                      "the chip no longer answers as at bring-up: reseat the FXS card, restart")

    def _check_battery(self) -> dict:
        vbat = self.battery_v()
        feed = (self._read(R.DR_ON_HOOK_V) + self._read(R.DR_COMMON_V)) * R.VOC_STEP_V
        target = R.VBAT_POWERED * R.VSENSE_STEP_V
        detail = (f"VBAT {vbat:.1f} V now (power-up reached {self.calibration.get('vbat_final_v')} V, "
                  f"target {target:.0f} V; the idle feed needs {feed:.0f} V)")
        return _check("battery", vbat >= feed, detail,
                      "check the FXS card's power input and the DC-DC settings "
                      f"{self._board_where('slic_dcdc_period')}")

    def _check_dcdc(self) -> dict:
        period, dcdc, peak = (self._read(r) for r in (R.DR_DCDC_PERIOD, R.DR_DCDC,
                                                      R.DR_DCDC_PEAK_CAL))
        ok = (period == self.dcdc_period and dcdc & 0x7F == self.dcdc_engage
              and R.DCDC_PEAK_MIN <= peak <= R.DCDC_PEAK_MAX)
        detail = (f"DR92=0x{period:02X} (want 0x{self.dcdc_period:02X}), DR93=0x{dcdc:02X} "
                  f"(want 0x{self.dcdc_engage:02X}), DR107=0x{peak:02X} (0x02..0x0D)")
        return _check("dc-dc", ok, detail,
                      "the DC-DC converter lost its settings: restart the port; if it repeats, "
                      f"check {self._board_where('slic_dcdc_period')} against the card's inductor")

    def _check_calibration(self) -> dict:
        cal = self.calibration
        peak = cal.get("dr107", {})
        fixed = peak.get("fixed", False)
        detail = (f"{cal.get('mode', '?')} calibration, attempt {cal.get('attempts', '?')}; "
                  f"DC-DC calibration DR107=0x{peak.get('read', 0):02X}"
                  + (" (out of range, set to 0x08)" if fixed else "")
                  + "; DR96..107 " + " ".join(f"{v:02X}" for v in cal.get("vector", [])))
        done = peak.get("done", False)
        detail += "" if done else "; the DC-DC calibration never finished (DR93 bit 7 stayed set)"
        return _check("calibration", done and not fixed, detail,
                      "the DC-DC calibration gave an unusual result: check the card's inductor "
                      f"and transistor against {self._board_where('slic_dcdc_engage')}")

    def _check_leak(self) -> dict:
        leak = self.calibration.get("leak", {})
        detail = (f"battery {leak.get('vbat_v', '?')} V {leak.get('ms', '?')} ms after the "
                  "converter was switched off (must stay above 2.3 V)")
        return _check("power leak", leak.get("ok", False), detail,
                      "excessive leakage: check tip/ring for a short circuit and the card's "
                      "battery capacitor")

    def _check_table(self) -> dict:
        bad = self.table_mismatches()
        n = sum(1 for addr, *_ in IR_TABLE if self.ir_address(addr) is not None)
        detail = f"{n - len(bad)} of {n} indirect registers read back as written" + (
            f"; {bad[0]}" if bad else "")
        return _check("indirect table", not bad, detail,
                      "indirect access is unreliable: check PCLK (the PCM stream) and the SPI "
                      "wiring, then restart the port")

    def _check_pcm(self) -> dict:
        law = R.PCM_ALAW if self.settings["pcm_law"] == "alaw" else R.PCM_ULAW
        start = tdm.slot_start(int(self.settings["timeslot"]))
        want = [R.PCM_ENABLE | law, start & 0xFF, start >> 8, start & 0xFF, start >> 8]
        got = [self._read(r) for r in (R.DR_PCM_MODE, R.DR_PCM_TX_LO, R.DR_PCM_TX_HI,
                                       R.DR_PCM_RX_LO, R.DR_PCM_RX_HI)]
        got[0] &= ~R.PCM_MODE_SI3215 & 0xFF
        detail = ("DR1..5 " + " ".join(f"{v:02X}" for v in got)
                  + f" (timeslot {self.settings['timeslot']}, {self.settings['pcm_law']})")
        return _check("pcm", got == want, detail,
                      "the PCM settings were lost: restart the port")

    def _emit(self, kind: str, data: dict | None = None) -> None:
        event = LineEvent(self.name, kind, self.reactor.now(), data or {})
        log.debug("%s", event)
        self.on_event(event)
