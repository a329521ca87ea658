"""Register-level twin of the Si3215/Si3210 ProSLIC that can tell when it is driven wrong.

It runs on its own tables (drivers/sim/proslic_model.py), never the driver's register file,
so a driver that misreads the chip is refused instead of agreed with: each broken rule (SPI
framing, PCLK, DC-DC, the part's indirect map, calibration, power alarms, feeding the line
before the table is loaded, PCM) lands in `violations` with its source, beside its physical
consequence. The line model (tip and ring solved by nodal analysis at every sense read,
faults and ringer load from `set_line()`) serves the GR-909 line tests of
firmware/diag/commission.py. Time comes from the reactor.
Sources: DAHDI proslic.h, wctdm.c, wctdm24xxp/base.c; the Silicon Labs Si321x API.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import Enum

import numpy as np

from cext import g711
from drivers.bus import tdm
from drivers.bus.pcm import FRAME, LINE_RATE, SimPcmLink
from drivers.sim import proslic_model as M
from drivers.sim.proslic_model import Dr, Linefeed
from foundation.reactor import NEVER

CALIBRATION_S = 0.2  # how long the twin's self-calibration takes
RAMP_V_PER_S = 750.0  # DC-DC ramp: 0 to 75 V in 100 ms
LEAK_TAU_S = 2.0  # battery decay with the converter off (wctdm.c leakage test: > 2.3 V after 0.5 s)
MISPROGRAMMED_SAG = 0.5  # share of VBATH a misprogrammed converter reaches (twin)
ALARM_DELAY_S = 0.3  # heating time before a power alarm (twin)
ALARM_REPEAT_S = 1.0  # an alarm repeats while its cause stays (twin)
THERMAL_S = 0.05  # the chip's thermal filter before an alarm on its thresholds (twin)
NOMINAL_MA = 25.0  # loop current at which a pair dissipates half its reference threshold (twin)
RING_GAIN_TRUE, TIP_GAIN_TRUE = 0x11, 0x10  # this chip's gain-mismatch trims (twin)
R_FEED_OHM = 400.0  # the SLIC's feed resistance in series with the loop
OHM_PER_REN = 6930.0  # one ringer equivalent: 6930 ohm in series with 8 uF
FARAD_PER_REN = 8e-6
R_SENSE_OHM = 1.0e6  # (twin) each wire's sense network, referenced to -VCM
R_FOREIGN_OHM = 2000.0  # source impedance of a foreign voltage on the wires
PHONE_DROP_V = 6.5  # an off-hook phone's DC drop (speech network + bridge rectifier)
OPEN_OHM = math.inf
PERIOD_S = FRAME / LINE_RATE  # the highway exchanges one period at a time
W1C = {Dr.INT_STATUS1, Dr.INT_STATUS2, Dr.INT_STATUS3}
FEEDING_LF = M.FED_LF | {Linefeed.RINGING}  # the linefeeds that put the line to work


class Converter(Enum):
    OFF = "off"  # DR14 bit 4 set
    UNPROGRAMMED = "unprogrammed"  # powered up before DR92: does not switch
    RUNNING = "running"
    MISPROGRAMMED = "misprogrammed"  # DR92/DR93 outside the board's window


RULES = {
    "spi_frame": ("a ProSLIC SPI frame carries one byte: chip-select must rise between the"
                  " control byte and the data byte; the frame was discarded",
                  "wctdm.c __write_8bits/__read_8bits frame every byte"),
    "dcdc_unprogrammed": ("DR14 powered the DC-DC converter up before its PWM period DR92"
                          " was programmed: the converter does not start, no battery",
                          "wctdm.c wctdm_powerup_proslic writes DR92 before DR14;"
                          " SiLabs API Si321x_Intf.c powerUp"),
    "dcdc_no_pclk": ("DR14 powered the DC-DC converter up without PCLK: it switches only"
                     " while PCLK runs", "drivers/bus/tdm.py: the chips need PCLK before bring-up"),
    "dcdc_window": ("DC-DC converter programmed outside this board's inductor/transistor window"
                    " (DR92 {period:#04x}, DR93 {off:#04x}; board DR92 {plo:#04x}..{phi:#04x},"
                    " DR93 {olo:#04x}..{ohi:#04x}): the battery sags and the transistors overheat",
                    "wctdm.c powerup_proslic 0xff/0x19, base.c 0xc0, SiLabs API INIT_DR92/93"),
    "dcdc_cal": ("DC-DC calibration (DR93 bit 7) started without PCLK or with the converter"
                 " off: it never finishes", "SiLabs API powerUp waits for DR93 bit 7 to clear"),
    "indirect_busy": ("indirect access started while the previous one was pending (DR31 busy):"
                      " it was lost", "wctdm.c __wait_access before every indirect access"),
    "indirect_no_pclk": ("indirect access without PCLK: DR31 stays busy and the access never"
                         " completes", "the indirect registers are clocked from PCLK"),
    "indirect_address": ("indirect register {addr} does not exist on the {part}: that is an"
                         " address of the other part's map",
                         "wctdm.c indirect_regs[] altaddr and translate_3215"),
    "cal_no_pclk": ("calibration (DR96) started without PCLK: it never finishes",
                    "wctdm.c wctdm_proslic_calibrate waits for DR96 to clear"),
    "cal_no_battery": ("calibration (DR96) started without battery: it never finishes",
                       "wctdm.c init_proslic powers the converter up before calibrating"),
    "cal_filters": ("calibration started with the loop-closure, ring-trip and thermal filters"
                    " (IR35-39 on an Si3210, IR22-26 on an Si3215) not flushed to 0x8000:"
                    " the gain trims are off",
                    "wctdm.c init_proslic 'Flush ProSLIC digital filters'"),
    "cal_linefeed": ("calibration started with the linefeed not open",
                     "wctdm.c manual_calibrate and SiLabs API Si321x_Cal write DR64 = 0 first"),
    "threshold_unset": ("power-alarm threshold {name} (IR{addr}) reads 0 (never programmed,"
                        " or another register's value landed there): every off-hook trips it",
                        "wctdm.c indirect_regs[] PWR_ALARM_Q1Q2..Q5Q6, written by"
                        " init_indirect_regs and verified"),
    "table_unloaded": ("linefeed set to {lf} before the indirect table's thresholds and gains"
                       " were loaded ({names} never written since reset): the line is fed with"
                       " those at their power-on value 0 (a zero audio gain mutes the path)",
                       "wctdm.c wctdm_init_proslic loads the whole table"
                       " (wctdm_proslic_init_indirect_regs) before anything else; SiLabs"
                       " si321x_intf.c Si321x_Init loads it at STEP 9 (AN35), before STEP 12"),
    "dcdc_peak_early": ("DR107 read before any DC-DC calibration (DR93 bit 7) finished since"
                        " reset: it holds its reset value 0x08, which passes the 0x02..0x0d"
                        " check without a calibration behind it",
                        "wctdm.c init_proslic reads DR107 as the result of DR93 = 0x99; SiLabs"
                        " si321x_intf.c powerUp waits for DR93 bit 7 to clear; SiLabs"
                        " Si321x_Registers.h INIT_DR107 0x08"),
    "q7": ("automatic battery switching (DR67 bit 3) or Q7 (DR66 bit 1) left on with the"
           " converter running, on a board without battery switching: Q7 overheats",
           "wctdm.c init_proslic writes DR67 = 0x07 and DR66 = 1 'to prevent Q7 from"
           " accidently turning on and burning out'"),
}


class Si3215Emulator:
    """An emulated ProSLIC; `spi_transfer` is what the SimSpiDevice calls."""

    def __init__(self, reactor, gpio, reset_pin: int, int_pin: int, part: str = "si3215",
                 board: M.BoardParts | None = None) -> None:
        if part not in M.IR_MAPS:
            raise ValueError(f"ProSLIC twin: part {part!r}; known: {', '.join(M.IR_MAPS)}")
        self.reactor, self.gpio = reactor, gpio
        self.reset_pin, self.int_pin = reset_pin, int_pin
        self.part = part
        self.board = board or M.DEFAULT_BOARD
        self.irmap = M.IR_MAPS[part]
        self.highway = None
        self.analog = SimPcmLink(f"{part}-analog")
        self.violations: list[str] = []
        self.alarm_log: list[tuple[float, tuple[int, ...], str]] = []
        self.not_seated = False  # answer 0xFF to everything (card out of its slot)
        self.stuck_calibration = False  # DR96 never clears
        self.auto_calibration_stuck = False  # only the automatic (0x5f) calibration hangs
        self.dead_battery = False  # the DC-DC converter never comes up
        self.loop_ohm = 300.0  # phone + line DC resistance when off hook
        self.ren = 1.0  # ringer load of the attached phone(s)
        self.foreign_ac_vrms = self.foreign_dc_v = 0.0
        self.foreign_hz = 60.0
        self.r_tip_ring = self.r_tip_ground = self.r_ring_ground = OPEN_OHM
        self.receiver_off_hook = False  # a phone off hook that nobody hung up (GR-909)
        self.writes: list[tuple[float, int, int]] = []  # (time, reg, value): a trace
        self._ring_listeners: list[Callable[[bool, float], None]] = []
        timer = reactor.register_timer
        self._t_lcr = timer(self._lcr_settled, NEVER)
        self._t_rtp = timer(self._rtp_settled, NEVER)
        self._t_ring = timer(self._ring_phase_end, NEVER)
        self._t_bounce = timer(self._bounce_step, NEVER)
        self._t_cal = timer(self._calibration_done, NEVER)
        self._t_q7 = timer(self._q7_hot, NEVER)
        self._t_dcdc = timer(self._dcdc_hot, NEVER)
        self._t_thermal = timer(self._thermal_alarm, NEVER)
        self.loop_closed = False  # the phone's contacts (raw, before any debounce)
        self._bounce: list[tuple[float, bool]] = []
        self._in_reset = False
        self._ring_on = False
        self._reset_chip()
        gpio.watch_output(reset_pin, self._reset_pin_changed)

    # ------------------------------------------------------------------ wiring
    def attach_highway(self, highway) -> None:
        """Put the chip on a PCM highway: PCLK and frame sync come from it."""
        self.highway = highway
        highway.attach(self)

    @property
    def pclk(self) -> bool:
        return bool(self.highway is not None and self.highway.clock_running)

    def _violate(self, key: str, **fmt) -> None:
        rule, source = RULES[key]
        text = f"{self.part}: {rule.format(**fmt)} [{source}]"
        if text not in self.violations:
            self.violations.append(text)

    # ------------------------------------------------------------------ reset and SPI
    def _reset_chip(self) -> None:
        self.regs = bytearray(128)
        for reg, entry in M.DIRECT.items():
            self.regs[reg] = entry.reset
        if self.part == "si3215":
            self.regs[Dr.PCM_MODE] |= M.PART_SI3215
        self.ir = [M.IR_RESET] * M.IR_SPACE
        self._ir_loaded: set[int] = set()  # addresses written since reset
        self._dcdc_cal_done = False  # a DC-DC calibration finished since reset
        self._ctrl: int | None = None
        self._ida_written = False
        self._ia_pending: tuple[int, bool] | None = None
        self._dr92_set = self._dr93_set = False
        self._converter = Converter.OFF
        self._vb0, self._tb0, self._vb_target = 0.0, self.reactor.now(), 0.0
        self._manual_gain = False
        self._cal_cmd: tuple[int, int, bool] = (0, 0, True)
        self._lf = Linefeed.OPEN
        self.lcr = self.rtp = False
        self._last_rx: np.ndarray | None = None
        self._clock_seen: float | None = None  # the last period the highway clocked
        for timer in (self._t_lcr, self._t_rtp, self._t_ring, self._t_cal, self._t_q7,
                      self._t_dcdc, self._t_thermal):
            self.reactor.update_timer(timer, NEVER)
        self._ring_active = False
        self._update_ring()
        self._update_int()

    def _reset_pin_changed(self, level: bool) -> None:
        self._in_reset = not level
        if self._in_reset:
            self._reset_chip()

    def spi_transfer(self, data: bytes) -> bytes:
        """One chip-select frame: the ProSLIC takes one byte per frame."""
        if self.not_seated or self._in_reset:
            return b"\xff" * len(data)
        if len(data) != 1:
            self._violate("spi_frame")
            self._ctrl = None  # the chip discards a frame that is not 8 clocks long (twin)
            return b"\xff" * len(data)
        return bytes([self._spi_byte(data[0])])

    def _spi_byte(self, byte: int) -> int:
        if self._ctrl is None:
            self._ctrl = byte
            return 0x00
        ctrl, self._ctrl = self._ctrl, None
        reg = ctrl & M.SPI_ADDR_MASK
        if ctrl & M.SPI_READ:
            return self.read_reg(reg)
        self.write_reg(reg, byte)
        return 0x00

    # ------------------------------------------------------------------ register file
    def read_reg(self, reg: int) -> int:
        entry = M.DIRECT.get(reg)
        if entry is not None and entry.access is M.Access.LIVE:
            return self._live(reg) & 0xFF
        if reg == Dr.LINEFEED:  # LF as written, LFS (bits 6..4) the state applied (twin)
            return (self.regs[reg] & M.LF_MASK) | (int(self._lf) << M.LFS_SHIFT)
        if reg in (Dr.IDA_LO, Dr.IDA_HI):
            self._service_indirect()
        if reg == Dr.DC_PEAK_CAL and not self._dcdc_cal_done:
            self._violate("dcdc_peak_early")
        return self.regs[reg]

    def write_reg(self, reg: int, value: int) -> None:
        self.writes.append((self.reactor.now(), reg, value))
        entry = M.DIRECT.get(reg)
        access = entry.access if entry else M.Access.RW
        if access is M.Access.W1C:
            self.regs[reg] &= ~value & 0xFF
            self._update_int()
        elif access in (M.Access.RO, M.Access.LIVE):
            return
        else:
            handler = self._WRITE_HANDLERS.get(reg)
            if handler is None:
                self.regs[reg] = value
            else:
                handler(self, value)

    def _write_spi_mode(self, value: int) -> None:
        keep = M.REV_MASK | M.PART_MASK  # identity bits are read-only
        self.regs[Dr.SPI_MODE] = (self.regs[Dr.SPI_MODE] & keep) | (value & ~keep & 0xFF)

    def _write_pcm_mode(self, value: int) -> None:
        keep = M.PART_SI3215
        self.regs[Dr.PCM_MODE] = (self.regs[Dr.PCM_MODE] & keep) | (value & ~keep & 0xFF)

    def _write_ida(self, reg: int, value: int) -> None:
        self.regs[reg] = value
        self._ida_written = True

    def _write_iaa(self, value: int) -> None:
        self._service_indirect()
        if self._ia_pending is not None:
            self._violate("indirect_busy")
            return
        self.regs[Dr.IAA] = value
        self._ia_pending = (value, self._ida_written)
        self._ida_written = False
        if not self._known_ir(value):
            self._violate("indirect_address", addr=value, part=self.part)
        self._service_indirect()
        if self._ia_pending is not None:
            self._violate("indirect_no_pclk")

    def _known_ir(self, addr: int) -> bool:
        extra = set(range(88, 94)) | {97} | set(range(99, 105))  # wctdm.c manual cal, scratch; FSK
        return addr in set(self.irmap.values()) | extra or (self.part == "si3210" and addr < 44)

    def _service_indirect(self) -> None:
        """Complete a pending indirect access: it needs PCLK."""
        if self._ia_pending is None or not self.pclk:
            return
        addr, is_write = self._ia_pending
        self._ia_pending = None
        if is_write:
            self.ir[addr] = self.regs[Dr.IDA_LO] | (self.regs[Dr.IDA_HI] << 8)
            self._ir_loaded.add(addr)
            self._thermal_check()
        else:
            self.regs[Dr.IDA_LO], self.regs[Dr.IDA_HI] = self.ir[addr] & 0xFF, self.ir[addr] >> 8

    def _write_linefeed(self, value: int) -> None:
        self._set_lf(Linefeed(value & M.LF_MASK))

    def _write_pwr_down1(self, value: int) -> None:
        was_on = not self.regs[Dr.PWR_DOWN1] & M.PDDCDC
        self.regs[Dr.PWR_DOWN1] = value
        if value & M.PDDCDC:
            self._set_converter(Converter.OFF)
        elif not was_on:
            self._power_up_converter()

    def _write_dcdc_pwm(self, value: int) -> None:
        self.regs[Dr.DCDC_PWM] = value
        self._dr92_set = True
        self._recheck_converter()

    def _write_dcdc(self, value: int) -> None:
        self.regs[Dr.DCDC] = value
        self._dr93_set = True
        self._recheck_converter()
        if value & M.DCDC_CAL:
            self._dcdc_calibrate()

    def _write_battery_control(self, reg: int, value: int) -> None:
        self.regs[reg] = value
        self._check_q7()

    def _write_cal1(self, value: int) -> None:
        self.regs[Dr.CAL1] = value
        self._manual_gain = False
        if value & M.CAL_RUN:
            self._start_calibration(value)

    def _write_vbath(self, value: int) -> None:
        self.regs[Dr.VBATH] = value
        self._retarget()

    def _write_int_mask(self, reg: int, value: int) -> None:
        self.regs[reg] = value
        self._update_int()

    _WRITE_HANDLERS: dict[int, Callable] = {
        Dr.SPI_MODE: _write_spi_mode,
        Dr.PCM_MODE: _write_pcm_mode,
        Dr.IDA_LO: lambda self, v: self._write_ida(Dr.IDA_LO, v),
        Dr.IDA_HI: lambda self, v: self._write_ida(Dr.IDA_HI, v),
        Dr.IAA: _write_iaa,
        Dr.LINEFEED: _write_linefeed,
        Dr.PWR_DOWN1: _write_pwr_down1,
        Dr.DCDC_PWM: _write_dcdc_pwm,
        Dr.DCDC: _write_dcdc,
        Dr.BAT_FEED: lambda self, v: self._write_battery_control(Dr.BAT_FEED, v),
        Dr.AUTO: lambda self, v: self._write_battery_control(Dr.AUTO, v),
        Dr.CAL1: _write_cal1,
        Dr.VBATH: _write_vbath,
        Dr.INT_MASK1: lambda self, v: self._write_int_mask(Dr.INT_MASK1, v),
        Dr.INT_MASK2: lambda self, v: self._write_int_mask(Dr.INT_MASK2, v),
        Dr.INT_MASK3: lambda self, v: self._write_int_mask(Dr.INT_MASK3, v),
    }

    def _live(self, reg: int) -> int:
        if reg == Dr.IAS:
            self._service_indirect()
            return M.IAS_BUSY if self._ia_pending is not None else 0
        if reg == Dr.LOOP_STAT:
            return (M.HOOK_LCR if self.lcr else 0) | (M.HOOK_RTP if self.rtp else 0)
        if reg in (Dr.VBATH_SENSE, Dr.VBATL_SENSE):
            return min(255, round(self.battery_v() / M.VSENSE_STEP_V))
        if Dr.IQ1 <= reg <= Dr.IQ6:
            return self._iq(reg)
        return self._sense(reg)

    def _iq(self, reg: int) -> int:
        """DR84-89; DR88/89 are the gain-mismatch comparators during manual calibration
        (wctdm.c manual_calibrate searches DR98/DR99 down until they read 0)."""
        if self._manual_gain and reg in (88, 89):
            trim, true = (self.regs[98], RING_GAIN_TRUE) if reg == 88 else (self.regs[99], TIP_GAIN_TRUE)
            return 0 if trim <= true else 1
        return min(255, round(self._loop_ma()))

    def _sense(self, reg: int) -> int:
        if self._lf == Linefeed.RINGING:
            return self._ring_sense(reg)
        vt, vr, i_ma = self.solve()
        if reg == Dr.LOOP_I_SENSE:
            return min(0x3F, round(i_ma / M.LCS_STEP_MA))
        if reg == Dr.LOOP_V_SENSE:
            rev = M.LVS_REVERSE if self._lf in M.REVERSE_LF else 0
            return min(0x3F, round(abs(vt - vr) / M.LVS_STEP_V)) | rev
        return min(255, round(abs(vt if reg == Dr.TIP_V_SENSE else vr) / M.VSENSE_STEP_V))

    def _ring_sense(self, reg: int) -> int:
        v_loop, i_ma = self._ring_v_i()
        if reg == Dr.LOOP_I_SENSE:
            return min(0x3F, round(i_ma / M.LCS_STEP_MA))
        if reg == Dr.LOOP_V_SENSE:
            return min(0x3F, round(v_loop / M.LVS_STEP_V))
        vcm = self.regs[Dr.COMMON_V] * M.VOC_STEP_V if v_loop else 0.0
        volts = vcm if reg == Dr.TIP_V_SENSE else vcm + v_loop
        return min(255, round(volts / M.VSENSE_STEP_V))

    def ir_named(self, name: str) -> int:
        """An indirect register by name, at this part's own address."""
        return self.ir[self.irmap[name]]

    # ------------------------------------------------------------------ DC-DC and battery
    def _dcdc_values_ok(self) -> bool:
        period_ok = self.board.period_ok(self.regs[Dr.DCDC_PWM])
        return period_ok and (not self._dr93_set or self.board.min_off_ok(self.regs[Dr.DCDC]))

    def _power_up_converter(self) -> None:
        if not self._dr92_set:
            self._violate("dcdc_unprogrammed")
            self._set_converter(Converter.UNPROGRAMMED)
            return
        if not self.pclk:
            self._violate("dcdc_no_pclk")
        self._set_converter(Converter.RUNNING)
        self._recheck_converter()

    def _recheck_converter(self) -> None:
        """DR92/DR93 written while the converter runs: it follows the new values."""
        if self._converter not in (Converter.RUNNING, Converter.MISPROGRAMMED):
            return
        if self._dcdc_values_ok():
            self._set_converter(Converter.RUNNING)
            return
        lo, hi = self.board.dcdc_period
        olo, ohi = self.board.dcdc_min_off
        self._violate("dcdc_window", period=self.regs[Dr.DCDC_PWM], off=self.regs[Dr.DCDC],
                      plo=lo, phi=hi, olo=olo, ohi=ohi)
        self._set_converter(Converter.MISPROGRAMMED)

    def _set_converter(self, state: Converter) -> None:
        if state == self._converter:
            return
        self._converter = state
        hot = state is Converter.MISPROGRAMMED
        self.reactor.update_timer(self._t_dcdc, self.reactor.now() + ALARM_DELAY_S if hot else NEVER)
        self._retarget()
        self._check_q7()

    def _dcdc_calibrate(self) -> None:
        """DR93 bit 7: done at once while the converter switches; DR107 takes the result."""
        switching = self._converter in (Converter.RUNNING, Converter.MISPROGRAMMED) and self.pclk
        if not switching:
            self._violate("dcdc_cal")
            return
        self.regs[Dr.DCDC] &= ~M.DCDC_CAL & 0xFF
        self.regs[Dr.DC_PEAK_CAL] = 0x08 if self._converter is Converter.RUNNING else 0x0F
        self._dcdc_cal_done = True

    def _battery_target(self) -> float:
        if self.dead_battery or not self.pclk:
            return 0.0
        if self._converter not in (Converter.RUNNING, Converter.MISPROGRAMMED):
            return 0.0
        volts = self.regs[Dr.VBATH] * M.VOC_STEP_V
        return volts * MISPROGRAMMED_SAG if self._converter is Converter.MISPROGRAMMED else volts

    def _battery_at(self, now: float) -> float:
        dt = max(0.0, now - self._tb0)
        if self._vb_target >= self._vb0:
            return min(self._vb_target, self._vb0 + RAMP_V_PER_S * dt)
        if self._vb_target > 0:  # a running converter pulls it down to its (lower) level
            return max(self._vb_target, self._vb0 - RAMP_V_PER_S * dt)
        return self._vb_target + (self._vb0 - self._vb_target) * math.exp(-dt / LEAK_TAU_S)

    def _retarget(self) -> None:
        now = self.reactor.now()
        target = self._battery_target()
        if target == self._vb_target:
            return
        if not self.pclk and self._clock_seen is not None:
            now = min(now, max(self._tb0, self._clock_seen + PERIOD_S))  # when PCLK went away
        self._vb0, self._tb0, self._vb_target = self._battery_at(now), now, target

    def battery_v(self) -> float:
        """The battery (VBATH) now: it ramps while the converter switches, leaks away after."""
        self._retarget()  # PCLK may have started or stopped since the last look
        volts = self._battery_at(self.reactor.now())
        return volts if volts > 0.05 else 0.0

    # ------------------------------------------------------------------ calibration
    def _start_calibration(self, value: int) -> None:
        ok = True
        if not self.pclk:
            self._violate("cal_no_pclk")
            ok = False
        if self.battery_v() < 0.5 * self.regs[Dr.VBATH] * M.VOC_STEP_V:
            self._violate("cal_no_battery")
            ok = False
        if self._lf != Linefeed.OPEN:
            self._violate("cal_linefeed")
        flushed = all(self.ir_named(n) == M.FILTER_FLUSHED for n in M.FILTER_NAMES)
        if not flushed:
            self._violate("cal_filters")
        self._cal_cmd = (value, self.regs[Dr.CAL2], flushed)
        hangs = self.stuck_calibration or (self.auto_calibration_stuck and value & M.CAL_GAIN_MISMATCH)
        done = self.reactor.now() + CALIBRATION_S if ok and not hangs else NEVER
        self.reactor.update_timer(self._t_cal, done)

    def _calibration_done(self, _eventtime: float) -> float:
        value, cal2, flushed = self._cal_cmd
        self.regs[Dr.CAL1] = 0
        if value & M.CAL_GAIN_MISMATCH:
            self.regs[98], self.regs[99] = (RING_GAIN_TRUE, TIP_GAIN_TRUE) if flushed else (0x1F, 0x1F)
        elif value & 0x07:
            self._manual_gain = True  # wctdm.c manual_calibrate: DR96 0x47, then the searches
        for reg in range(100, 107):
            self.regs[reg] = M.CAL_RESULT_RESET[reg]
        if cal2 & M.CAL_CM_BALANCE and self._closed:
            self._latch(Dr.INT_STATUS3, M.IRQ3_CM_BAL)  # SiLabs API Si321x_Cal: off-hook phone
        return NEVER

    # ------------------------------------------------------------------ power alarms
    def inject_power_alarm(self, transistor: int = 1) -> None:
        """A transistor Q1..Q6 overheats (e.g. tip shorted to ground)."""
        self._power_alarm((transistor,), "injected")

    def _power_alarm(self, transistors: tuple[int, ...], why: str) -> None:
        self.alarm_log.append((self.reactor.now(), transistors, why))
        bits = sum(1 << (q - 1 + M.IRQ2_PQ_SHIFT) for q in transistors)
        self._latch(Dr.INT_STATUS2, bits)
        if self.regs[Dr.AUTO] & M.AUTO_OPEN:
            self._set_lf(Linefeed.OPEN)

    def _q7_conditions(self) -> bool:
        on = self.regs[Dr.AUTO] & M.AUTO_BATTERY or self.regs[Dr.BAT_FEED] & M.Q7_ON
        running = self._converter in (Converter.RUNNING, Converter.MISPROGRAMMED)
        return bool(on and running and not self.board.battery_switching)

    def _check_q7(self) -> None:
        if not self._q7_conditions():
            self.reactor.update_timer(self._t_q7, NEVER)
            return
        self._violate("q7")
        if not self._armed(self._t_q7):
            self.reactor.update_timer(self._t_q7, self.reactor.now() + ALARM_DELAY_S)

    def _q7_hot(self, eventtime: float) -> float:
        if not (self._q7_conditions() and self.battery_v() > 0):
            return eventtime + ALARM_REPEAT_S if self._q7_conditions() else NEVER
        self._power_alarm((5, 6), "Q7 overheating: battery switching on a board without it")
        return eventtime + ALARM_REPEAT_S

    def _dcdc_hot(self, eventtime: float) -> float:
        if self._converter is not Converter.MISPROGRAMMED:
            return NEVER
        if self.battery_v() > 0:
            self._power_alarm((1, 2, 3, 4, 5, 6), "DC-DC converter outside the board's window")
        return eventtime + ALARM_REPEAT_S

    def _loop_ma(self) -> float:
        if self._lf == Linefeed.RINGING:
            return self._ring_v_i()[1]
        if self._lf not in M.FED_LF or not self.battery_v():
            return 0.0
        return self.solve()[2]

    def _pairs_over(self) -> tuple[int, ...]:
        """Transistors whose dissipation exceeds their power-alarm threshold (IRs at the
        part's own addresses); a pair dissipates half the wctdm.c threshold at 25 mA."""
        i_ma = self._loop_ma()
        if i_ma <= 0.5:
            return ()
        over: list[int] = []
        for name, pair in M.POWER_PAIRS:
            load = M.WCTDM_INDIRECT[name] / 2 * i_ma / NOMINAL_MA
            if load > self.ir_named(name):
                over += pair
        return tuple(over)

    def _thermal_check(self) -> None:
        if not self._pairs_over():
            self.reactor.update_timer(self._t_thermal, NEVER)
        elif not self._armed(self._t_thermal):
            self.reactor.update_timer(self._t_thermal, self.reactor.now() + THERMAL_S)

    def _armed(self, timer) -> bool:
        """A timer due later (one that fired and returned NEVER keeps its old wake time)."""
        return self.reactor.now() < timer.waketime < NEVER

    def _thermal_alarm(self, eventtime: float) -> float:
        over = self._pairs_over()
        if not over:
            return NEVER
        for name, pair in M.POWER_PAIRS:
            if pair[0] in over and self.ir_named(name) == 0:
                self._violate("threshold_unset", name=name, addr=self.irmap[name])
        self._power_alarm(over, "power above the alarm thresholds in the indirect registers")
        return eventtime + ALARM_REPEAT_S if self._pairs_over() else NEVER

    # ------------------------------------------------------------------ PCM highway
    @property
    def pcm_enabled(self) -> bool:
        return bool(self.regs[Dr.PCM_MODE] & M.PCM_ENABLE)

    @property
    def pcm_format(self) -> M.PcmFormat:
        return M.PcmFormat((self.regs[Dr.PCM_MODE] & M.PCMF_MASK) >> M.PCMF_SHIFT)

    @property
    def tx_start(self) -> int:
        return self.regs[Dr.PCM_TX_LO] | (self.regs[Dr.PCM_TX_HI] & 0x03) << 8

    @property
    def rx_start(self) -> int:
        return self.regs[Dr.PCM_RX_LO] | (self.regs[Dr.PCM_RX_HI] & 0x03) << 8

    @property
    def digital_loopback(self) -> bool:
        return bool(self.regs[Dr.LOOPBACK] & M.LOOPBACK_DIGITAL)

    def _audio_path(self) -> bool:
        return self._lf in M.AUDIO_LF and self.battery_v() > 0

    def pcm_transmit(self, n: int) -> tuple[int, np.ndarray] | None:
        """What the chip drives on DTX this period (HighwayDevice)."""
        self._service_indirect()
        self._retarget()
        self._clock_seen = self.reactor.now()
        if not (self.pcm_enabled and self.pclk):
            return None
        if self.digital_loopback:
            rx = self._last_rx
            data = rx if rx is not None and len(rx) == n else self._encode(np.zeros(n, np.int16))
            return self.tx_start, data
        speech = self._take_speech() if self._audio_path() else None
        self._drop_speech(keep=0 if speech is None else None)
        if speech is None or len(speech) != n:
            speech = np.zeros(n, dtype=np.int16)
        return self.tx_start, self._encode(self._gain(speech, M.TX_GAIN))

    def _take_speech(self) -> np.ndarray | None:
        """The phone's newest frame: the mouthpiece is one period late at most."""
        self._drop_speech(keep=1)
        return self.analog.gateway.read()

    def _drop_speech(self, keep: int | None) -> None:
        if keep is None:
            return
        while self.analog.gateway.pending() > keep:
            self.analog.gateway.read()

    def pcm_receive(self, words: np.ndarray) -> None:
        """The frames on DRX this period: the chip takes its own slot (HighwayDevice)."""
        if not (self.pcm_enabled and self.pclk):
            return
        codes = self._take(words)
        self._last_rx = codes
        if self.digital_loopback or not self._audio_path():
            return
        pcm = self._gain(self._decode(codes), M.RX_GAIN)
        if len(pcm) == self.analog.gateway.period:
            self.analog.gateway.write(pcm)

    def gain_db(self, name: str) -> float:
        """A digital audio gain (M.RX_GAIN or M.TX_GAIN) as programmed, in dB."""
        return M.gain_db(self.ir_named(name))

    def _gain(self, pcm: np.ndarray, name: str) -> np.ndarray:
        """The codec's digital gain on the way to the DAC (receive) or from the ADC
        (transmit): a linear multiplier, value / 0x4000, saturating (M.GAIN_UNITY). An
        unloaded table (M.IR_RESET) mutes the path: the phone hears nothing, DTX idles."""
        value = self.ir_named(name)
        if value == M.GAIN_UNITY:
            return pcm
        scaled = np.round(pcm.astype(np.float64) * (value / M.GAIN_UNITY))
        return np.clip(scaled, -32768, 32767).astype(np.int16)

    def _take(self, words: np.ndarray) -> np.ndarray:
        if self.pcm_format is not M.PcmFormat.LINEAR16:
            return tdm.take(words, self.rx_start)
        start = self.rx_start
        if not 0 <= start <= tdm.FRAME_BITS - 16:
            return np.full(len(words), 0xFFFF, dtype=np.uint16)
        shift = np.uint32(tdm.FRAME_BITS - 16 - start)
        return ((words >> shift) & np.uint32(0xFFFF)).astype(np.uint16)

    def _encode(self, pcm: np.ndarray) -> np.ndarray:
        fmt = self.pcm_format
        if fmt is M.PcmFormat.ULAW:
            return g711.ulaw_encode(pcm)
        if fmt is M.PcmFormat.ALAW:
            return g711.alaw_encode(pcm)
        if fmt is M.PcmFormat.LINEAR16:  # two slots wide: the highway must take uint16
            return pcm.astype(np.int16).view(np.uint16)
        return (pcm.astype(np.int16) >> 8).astype(np.uint8)  # 8-bit linear (twin)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        fmt = self.pcm_format
        if fmt is M.PcmFormat.ULAW:
            return g711.ulaw_decode(codes)
        if fmt is M.PcmFormat.ALAW:
            return g711.alaw_decode(codes)
        if fmt is M.PcmFormat.LINEAR16:
            return codes.astype(np.uint16).view(np.int16)
        return (codes.astype(np.uint8).view(np.int8).astype(np.int16) << 8).astype(np.int16)

    # ------------------------------------------------------------------ line physics
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
        vcm = self.regs[Dr.COMMON_V] * M.VOC_STEP_V
        low, high = -vcm, -(vcm + self.regs[Dr.ON_HOOK_V] * M.VOC_STEP_V)
        if self._lf in M.FED_LF:
            return {0: high, 1: low} if self._lf in M.REVERSE_LF else {0: low, 1: high}
        if self._lf == Linefeed.TIP_OPEN:
            return {1: high}
        if self._lf == Linefeed.RING_OPEN:
            return {0: low}
        return {}

    def _foreign_v(self) -> float:
        t = self.reactor.now()
        ac = self.foreign_ac_vrms * math.sqrt(2) * math.sin(2 * math.pi * self.foreign_hz * t)
        return self.foreign_dc_v + ac

    def solve(self) -> tuple[float, float, float]:
        """(tip volts, ring volts, loop mA) now, with the loop current limit applied."""
        src = self._sources()
        ilim = M.ILIM_BASE_MA + M.ILIM_STEP_MA * self.regs[Dr.LOOP_I_LIMIT]
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
        vcm = -self.regs[Dr.COMMON_V] * M.VOC_STEP_V if self.battery_v() else 0.0
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
        """The ring oscillator's frequency, from RING_OSC at this part's own address."""
        c = self._signed(self.ir_named("RING_OSC")) / 32768
        return math.acos(max(-1.0, min(1.0, c))) * M.RING_OSC_RATE / (2 * math.pi)

    def ring_vpk(self) -> float:
        """The ring amplitude, from RING_X and RING_OSC at this part's own addresses."""
        c = self._signed(self.ir_named("RING_OSC")) / 32768
        if not -1 < c < 1:
            return 0.0
        scale = 0.25 * math.sqrt((1 - c) / (1 + c)) * 32768
        return self.ir_named("RING_X") / scale * M.RING_AMP_FULL_V

    @staticmethod
    def _signed(v: int) -> int:
        return v - 0x10000 if v & 0x8000 else v

    @property
    def linefeed(self) -> int:
        return int(self._lf)

    @property
    def reversed(self) -> bool:
        return self._lf in M.REVERSE_LF

    @property
    def ring_voltage(self) -> bool:
        """True while ring voltage is on the line (the phone's bell rings)."""
        return self._ring_on

    def add_ring_listener(self, fn: Callable[[bool, float], None]) -> None:
        self._ring_listeners.append(fn)

    # ------------------------------------------------------------------ linefeed and ring
    def _set_lf(self, lf: Linefeed) -> None:
        if lf in FEEDING_LF:
            self._check_table_loaded(lf)
        self.regs[Dr.LINEFEED] = int(lf)
        old, self._lf = self._lf, lf
        if lf == Linefeed.RINGING and old != Linefeed.RINGING:
            self._start_ring_timers()
        elif lf != Linefeed.RINGING:
            self.reactor.update_timer(self._t_ring, NEVER)
            self._ring_active = False
            self.rtp = False
        self._update_ring()
        self._loop_detect()
        self._thermal_check()

    def _check_table_loaded(self, lf: Linefeed) -> None:
        """The references load the table before the line is ever fed (M.LOADED_BEFORE_FEED)."""
        missing = [n for n in M.LOADED_BEFORE_FEED if self.irmap[n] not in self._ir_loaded]
        if missing:
            names = ", ".join(f"{n} (IR{self.irmap[n]})" for n in missing)
            self._violate("table_unloaded", lf=lf.name, names=names)

    def _timer_s(self, lo: int) -> float:
        return (self.regs[lo] | (self.regs[lo + 1] << 8)) * M.TIMER_TICK_S

    def _start_ring_timers(self) -> None:
        self._ring_active = True
        ctl = self.regs[Dr.RING_OSC_CTL]
        on_s = self._timer_s(Dr.RING_ON_LO)
        timed = ctl & M.RING_TA_EN and on_s > 0
        self.reactor.update_timer(self._t_ring, self.reactor.now() + on_s if timed else NEVER)

    def _ring_phase_end(self, eventtime: float) -> float:
        self._ring_active = not self._ring_active
        ctl = self.regs[Dr.RING_OSC_CTL]
        if self._ring_active:
            nxt = self._timer_s(Dr.RING_ON_LO) if ctl & M.RING_TA_EN else NEVER
        else:
            nxt = self._timer_s(Dr.RING_OFF_LO) if ctl & M.RING_TI_EN else NEVER
        self._latch(Dr.INT_STATUS1, M.IRQ1_RING_TA if self._ring_active else M.IRQ1_RING_TI)
        self._update_ring()
        return eventtime + nxt if nxt not in (NEVER, 0) else NEVER

    def _update_ring(self) -> None:
        on = (self._lf == Linefeed.RINGING and self._ring_active and self.ring_vpk() > 5.0
              and self.battery_v() > 0)
        if on == self._ring_on:
            return
        self._ring_on = on
        if on:
            self.regs[Dr.RING_OSC_CTL] |= M.RING_OSC_ON
        else:
            self.regs[Dr.RING_OSC_CTL] &= ~M.RING_OSC_ON & 0xFF
        for fn in list(self._ring_listeners):
            fn(on, self.reactor.now())
        self._thermal_check()

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
        self._thermal_check()

    def _loop_detect(self) -> None:
        """Start (or cancel) the chip's debounce toward the loop state it now sees."""
        now = self.reactor.now()
        if self._lf == Linefeed.RINGING:
            self.reactor.update_timer(self._t_lcr, NEVER)
            wait = self.regs[Dr.RTP_DEBOUNCE] * M.DEBOUNCE_TICK_MS / 1000
            self.reactor.update_timer(self._t_rtp, now + wait if self._closed else NEVER)
            return
        self.reactor.update_timer(self._t_rtp, NEVER)
        seen = self._loop_seen()
        if seen == self.lcr:
            self.reactor.update_timer(self._t_lcr, NEVER)
            return
        wait = self.regs[Dr.LCR_DEBOUNCE] * M.DEBOUNCE_TICK_MS / 1000
        self.reactor.update_timer(self._t_lcr, now + wait)

    @property
    def _closed(self) -> bool:
        return self.loop_closed or self.receiver_off_hook

    def _loop_seen(self) -> bool:
        return self._closed and self._lf in M.FED_LF and self.battery_v() > 0

    def _lcr_settled(self, _eventtime: float) -> float:
        seen = self._loop_seen()
        if seen != self.lcr:
            self.lcr = seen
            self._latch(Dr.INT_STATUS2, M.IRQ2_LOOP)
        return NEVER

    def _rtp_settled(self, _eventtime: float) -> float:
        if not (self._closed and self._lf == Linefeed.RINGING):
            return NEVER
        self.rtp = self.lcr = True
        if self.regs[Dr.AUTO] & M.AUTO_RTRIP:
            self._set_lf(Linefeed.FORWARD_ACTIVE)
            self.rtp = True
        self._latch(Dr.INT_STATUS2, M.IRQ2_RTRIP)
        return NEVER

    # ------------------------------------------------------------------ interrupts
    def _latch(self, status_reg: int, bits: int) -> None:
        enable = self.regs[status_reg + (Dr.INT_MASK1 - Dr.INT_STATUS1)]
        if bits & enable:
            self.regs[status_reg] |= bits & enable
            self._update_int()

    def _update_int(self) -> None:
        pending = any(self.regs[r] for r in W1C)
        self.gpio.drive(self.int_pin, False if pending else None)  # open drain, active low
