"""Register-level twin of an Si3050 DAA with its Si3019 line side: SPI, pins, PCM and line.

It runs on its own table (drivers/sim/daa_model.py), never the driver's register file, and
behaves as the chip does when driven wrong: each broken rule (one byte per chip-select
frame, PCLK from the attached highway, line-side DC termination and ILIM, ring validation,
PCM slots, gains and loopbacks) lands in `violations` with its source. Assumed: the ring is
a sine whose TIP/RING events come twice a cycle; 16-bit PCM travels as its high byte; PHCF
is not modelled; time comes from the reactor.
Sources: Si3050/Si3018/19 datasheet; DAHDI wctdm.c, wctdm24xxp/base.c, fxo_modes.h; OAK pidma.c.
"""

from __future__ import annotations

import enum
import math
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from cext import g711
from drivers.bus import tdm
from drivers.bus.gpio import SimGpio
from drivers.bus.pcm import FRAME, SimPcmLink
from drivers.sim import daa_model as M
from foundation.reactor import NEVER, Reactor

IDLE_BATTERY_V = 48.0
CO_FEED_OHM = 400.0  # the CO's battery feed (two 200 ohm feed coils)
DEFAULT_LOOP_OHM = 1165.0  # cable to the exchange: 26 mA into the DAA on a 48 V battery
PARALLEL_V = 8.5  # a parallel phone off hook loads the line to about this
SHARED_V, SHARED_MA = 6.0, 14.0  # both off hook: the loop current is shared
RING_PEAK_V = 120.0  # ~85 Vrms ring on top of the battery
LINK_RETRY_S = 0.01  # the isolation link waits for PCLK in these steps
LINE_BUFFER_FRAMES = 2  # the chip samples the line live: older CO frames are dropped
DATASHEET = "Si3050 datasheet"


class SpiPhase(enum.Enum):
    """Where the chip is in a register access: which byte the next frame carries."""

    CONTROL = "control"
    ADDRESS = "address"
    DATA = "data"


class Si3050Emulator:
    """An Si3050 + Si3019 as seen on the SPI bus, the INT/RESET pins, PCM and the line.
    `seated=False` answers 0xFF to everything (a card not seated); `line_side=False` never
    brings the isolation link up."""

    def __init__(self, reactor: Reactor, gpio: SimGpio, reset_pin: int, int_pin: int,
                 seated: bool = True, line_side: bool = True) -> None:
        self.reactor, self.gpio = reactor, gpio
        self.reset_pin, self.int_pin = reset_pin, int_pin
        self.seated, self.line_side = seated, line_side
        self.in_reset = False
        self.bad_frames = 0
        self.violations: list[str] = []
        self.cautions: list[str] = []  # "should" rules a field-proven driver breaks on purpose
        self.violation_counts: Counter[str] = Counter()
        self.writes: deque[tuple[float, int, int]] = deque(maxlen=10000)  # (time, reg, value)
        self.highway = None
        self.analog = SimPcmLink("daa-line")
        self._hook_watchers: list[Callable[[bool], None]] = []
        self._spi_phase, self._spi_read, self._spi_reg = SpiPhase.CONTROL, False, 0
        self._spi_other = False  # the access is for another chip of a daisy chain
        self._expected_country = ""
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
        self._line_in: deque[np.ndarray] = deque()
        self._rx_last: np.ndarray | None = None  # last period received on DRX (loopback)
        self._link_timer = reactor.register_timer(self._link_check, NEVER)
        self._ring_timer = reactor.register_timer(self._ring_event, NEVER)
        gpio.watch_output(reset_pin, self._reset_pin_written)
        self._reset_registers()

    # ---- rules broken ----
    def _violate(self, rule: str, source: str) -> None:
        text = f"{rule} ({source})"
        if text not in self.violation_counts:
            self.violations.append(text)
        self.violation_counts[text] += 1

    # ---- SPI: one byte per chip-select frame ----
    def spi_transfer(self, data: bytes) -> bytes:
        if not self.seated:
            return b"\xff" * len(data)
        if self.in_reset:
            self._violate("SPI access while RESET is held low: ignored", DATASHEET + " RESET pin")
            return b"\xff" * len(data)
        if len(data) != 1:
            return self._long_frame(data)
        return bytes([self._spi_byte(data[0])])

    def _long_frame(self, data: bytes) -> bytes:
        self.bad_frames += 1
        self._spi_phase = SpiPhase.CONTROL
        self._violate(f"{len(data)}-byte SPI frame: chip-select must rise after every byte "
                      "(control, address, data each its own frame); nothing written", M.SPI_SOURCE)
        return b"\xff" * len(data)

    def _spi_byte(self, byte: int) -> int:
        phase = self._spi_phase
        if phase is SpiPhase.CONTROL:
            self._control_byte(byte)
            return 0xFF
        if phase is SpiPhase.ADDRESS:
            self._spi_reg, self._spi_phase = byte & 0x7F, SpiPhase.DATA
            return 0xFF
        self._spi_phase = SpiPhase.CONTROL
        if self._spi_other:
            return 0xFF
        if self._spi_read:
            return self.read(self._spi_reg)
        self.write(self._spi_reg, byte)
        return 0xFF

    def _control_byte(self, byte: int) -> None:
        if not byte & M.CTRL_ALWAYS:
            self.bad_frames += 1
            self._violate(f"control byte 0x{byte:02X} without bit 5: not a control byte, ignored",
                          "wctdm.c __wctdm_setreg 0x20 / __wctdm_getreg 0x60")
            return
        self._spi_other = bool(byte & M.CTRL_CHANNEL)
        if self._spi_other:
            self._violate(f"control byte 0x{byte:02X} addresses daisy-chain channel "
                          f"{byte & M.CTRL_CHANNEL}: not this chip, access ignored",
                          "OAK pitdm.c __wctdm_setreg")
        self._spi_read = bool(byte & M.CTRL_READ)
        self._spi_phase = SpiPhase.ADDRESS

    # ---- registers ----
    def read(self, reg: int) -> int:
        if reg == M.LINE_VOLTAGE:
            return self._lvs() if self.link_up else 0
        if reg == M.LOOP_CURRENT:
            return min(255, round(self.loop_current() / M.LCS2_MA_PER_BIT)) if self.link_up else 0
        if reg == M.LINE_STATUS:
            return self._line_status()
        if reg == M.SYS_LINE_REV:
            return self._revision()
        if reg == M.LINE_REV:
            return M.LRV << 2 if self.link_up else 0
        if reg == M.DAA_CONTROL1:
            return (self.regs[reg] & ~(M.RDTN | M.RDTP | M.RDT)) | self._ring_bits()
        return self.regs.get(reg, 0)

    def write(self, reg: int, value: int) -> None:
        self.writes.append((self.reactor.now(), reg, value))
        spec = M.REGISTERS.get(reg)
        if spec is None:
            self._violate(f"write 0x{value:02X} to register {reg}, which the Si3050 does not have",
                          DATASHEET + " register map")
            return
        if reg in M.READ_ONLY:
            return
        if spec.write0_clears:
            self.regs[reg] &= value
            self._update_int()
            return
        old = self.regs[reg]
        self.regs[reg] = (old & ~spec.writable) | (value & spec.writable)
        self._after_write(reg, old)

    def _after_write(self, reg: int, old: int) -> None:
        if reg == M.CONTROL1 and self.regs[reg] & M.SR:
            self._soft_reset()
        elif reg == M.DAA_CONTROL2:
            self._power_line_side()
        elif reg == M.DAA_CONTROL1 and (old ^ self.regs[reg]) & M.OH:
            self._hook_written()
        elif reg in (M.CONTROL2, M.INT_MASK):
            self._update_int()
        elif reg == M.PCM_MODE:
            self._check_pcm_mode()

    def _check_pcm_mode(self) -> None:
        value = self.regs[M.PCM_MODE]
        if value & M.PCME and self._pcmf() not in M.PCMF_NAMES:
            self._violate("PCMF = 10 is not a format this twin models: nothing is sent",
                          DATASHEET + " register 33")
        if value & M.PHCF:
            self._violate("PHCF set: two PCLKs per bit, but the highway clocks one bit per PCLK",
                          "drivers/bus/tdm.py plan; " + DATASHEET + " register 33")

    # ---- reset and power ----
    def _reset_pin_written(self, level: bool) -> None:
        self.in_reset = not level
        if self.in_reset:
            was_offhook = self.offhook
            self._reset_registers()
            if was_offhook:
                self._hook_changed()

    def _soft_reset(self) -> None:
        was_offhook = self.offhook
        self._reset_registers()
        if was_offhook:
            self._hook_changed()

    def _reset_registers(self) -> None:
        self.regs = {reg: spec.reset for reg, spec in M.REGISTERS.items()}
        self._link = False  # the isolation link has framed
        self._rdt = False  # validated ring detect, read back through DAA Control 1
        self._spi_phase = SpiPhase.CONTROL
        self.reactor.update_timer(self._link_timer, NEVER)
        self._update_int()

    def attach_highway(self, highway) -> None:
        """Wire PCLK, FSYNC, DTX and DRX to a SimHighway (drivers/sim/highway.py)."""
        self.highway = highway
        highway.attach(self)

    @property
    def pclk(self) -> bool:
        """A bit clock the chip's PLL locks to is running."""
        hw = self.highway
        return hw is not None and hw.clock_running and hw.bclk_hz in M.PCLK_HZ

    @property
    def link_up(self) -> bool:
        """The isolation link to the line side is framed (LSID and FDT read back)."""
        if self._link and not self.pclk:
            self._link = False
            self._violate("PCLK stopped while the line side was up: isolation link lost",
                          DATASHEET + " PCM highway / isolation interface")
            if self.regs[M.DAA_CONTROL1] & M.OH:  # the line drops with the link
                self.reactor.call_soon(self._hook_changed)
        return self._link

    def _power_line_side(self) -> None:
        powered = not self.regs[M.DAA_CONTROL2] & (M.PDL | M.PDN)
        if not powered:
            self._link = False
            self.reactor.update_timer(self._link_timer, NEVER)
        elif not self._link and self.line_side:
            if not self.pclk:
                self._violate("line side powered up (PDL cleared) without PCLK: the isolation "
                              "link waits for the clock", DATASHEET + " PCM highway")
            when = self.reactor.now() + M.LINE_SIDE_POWER_UP_S
            self.reactor.update_timer(self._link_timer, when)

    def _link_check(self, eventtime: float) -> float:
        """Frame lock after LINE_SIDE_POWER_UP_S of PCLK; without PCLK keep waiting."""
        if not self.pclk:
            return eventtime + LINK_RETRY_S
        self._link = True
        if self.regs[M.DAA_CONTROL1] & M.OH:  # OH was already set: the line is seized now
            self._hook_changed()
        return NEVER

    def _revision(self) -> int:
        lsid = M.LSID_SI3019 if self.link_up else 0
        return (lsid << 4) | M.REVA

    # ---- line-side settings (registers 16, 17, 18, 26, 30, 31) ----
    def line_settings(self) -> dict[str, int]:
        """What was programmed, field by field (fxo_modes.h names where it has them)."""
        r16, r26, r31 = self.regs[M.INTL1], self.regs[M.DC_TERM], self.regs[M.DAA_CONTROL5]
        return {
            "ohs": (r16 & M.OHS) >> 6, "rz": (r16 & M.RZ) >> 1, "rt": r16 & M.RT,
            "dcv": (r26 & M.DCV_MASK) >> 6, "mini": (r26 & M.MINI_MASK) >> 4,
            "ilim": (r26 & M.ILIM) >> 1, "dcr": r26 & M.DCR,
            "acim": self.regs[M.AC_TERM] & 0x0F,
            "full": (r31 & M.FULL) >> 7, "foh": (r31 & M.FOH_MASK) >> 5,
            "ohs2": (r31 & M.OHS2) >> 3, "filt": (r31 & M.FILT) >> 1, "lvfd": r31 & M.LVFD,
            "rfwe": (self.regs[M.INTL3] & M.RFWE) >> 1, "cald": (self.regs[M.INTL2] & M.CALD) >> 5,
        }

    def expect_country(self, name: str) -> None:
        """Going off hook with registers 16/26/30/31 other than fxo_modes.h `name` (as
        wctdm_init_voicedaa programs them) is a violation from now on."""
        if name.upper() not in M.FXO_MODES:
            raise ValueError(f"fxo_modes.h has no country {name!r}")
        self._expected_country = name.upper()

    def country_mismatches(self, name: str) -> list[str]:
        """How registers 16, 26, 30 and 31 differ from what the references program for
        fxo_modes.h `name` (register 31: 0xa3, or 0xe3 with fastpickup, | OHS2)."""
        mode = M.FXO_MODES[name.upper()]
        out = []
        for reg, want in M.reference_registers(mode).items():
            have = self.regs[reg]
            alt = M.reference_registers(mode, fastpickup=True)[reg]
            if have not in (want, alt):
                out.append(f"register {reg} ({M.REGISTERS[reg].name}) is 0x{have:02X}, "
                           f"fxo_modes.h \"{name.upper()}\" via wctdm_init_voicedaa gives 0x{want:02X}")
        return out

    def _check_country_at_seizure(self) -> None:
        if self._expected_country:
            for text in self.country_mismatches(self._expected_country):
                self._violate(f"off hook with {text}", "fxo_modes.h; 24xxp wctdm_init_voicedaa")
        settings = self.line_settings()
        if settings["full"] and settings["dcv"] != 3:
            # The datasheet says DCV "should" be 11 with FULL (distortion at low loop
            # current), but DAHDI's field-proven wctdm_init_voicedaa sets FULL for every
            # fxo_modes.h row, DCV 00 ones included: a caution, not a refusal.
            caution = "FULL set with DCV not 11: possible distortion at low loop current " \
                      "(Si3056 datasheet register 31 FULL)"
            if caution not in self.cautions:
                self.cautions.append(caution)

    @property
    def ac_termination(self) -> str:
        """The AC impedance register 30 presents to the line off hook."""
        return M.ACIM_OHMS[self.regs[M.AC_TERM] & 0x0F]

    @property
    def full_scale_db(self) -> float:
        """ADC/DAC full scale above 0 dBm: +3.2 with FULL, else 0 (Si3056 DS reg 31)."""
        return M.FULL_SCALE_DB if self.regs[M.DAA_CONTROL5] & M.FULL else 0.0

    @property
    def on_hook_speed_ms(self) -> float:
        key = (int(bool(self.regs[M.INTL1] & M.OHS)), int(bool(self.regs[M.DAA_CONTROL5] & M.OHS2)))
        return M.ON_HOOK_SPEED_MS[key]

    # ---- the line side, driven by the central office ----
    @property
    def offhook(self) -> bool:
        """The DAA has seized the line (OH set and the line side up)."""
        return bool(self.regs[M.DAA_CONTROL1] & M.OH) and self.link_up

    @property
    def audio_path(self) -> bool:
        """Line audio reaches the PCM bus: off hook, or on-hook line monitor (ONHM) on."""
        return self.link_up and bool(self.regs[M.DAA_CONTROL1] & (M.OH | M.ONHM))

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
                self._latch(M.POLI)

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
    def ring_since(self) -> float:
        """When the current ring burst began (reactor time)."""
        return self._ring_since

    @property
    def _fed(self) -> bool:
        return self.connected and self.battery_on

    def line_voltage(self) -> float:
        """Tip-ring volts as the line side measures them (signed: polarity)."""
        if not self._fed:
            return 0.0
        if self.offhook:
            volts = SHARED_V if self.parallel_offhook else self._offhook_volts()
        else:
            volts = PARALLEL_V if self.parallel_offhook else self.battery_v
        volts *= self.polarity
        if self.ring_freq and not self.offhook:
            phase = 2 * math.pi * self.ring_freq * (self.reactor.now() - self._ring_since) + 0.7
            volts += RING_PEAK_V * math.sin(phase)
        return volts

    def loop_current(self) -> float:
        """Loop current in mA through the DAA (0 on hook)."""
        if not (self._fed and self.offhook):
            return 0.0
        return SHARED_MA if self.parallel_offhook else 1000 * self._loop_a()

    def _termination(self) -> tuple[float, float]:
        """The DC termination of register 26: (volts at zero current, ohms)."""
        r26 = self.regs[M.DC_TERM]
        return M.DCV_VOLTS[(r26 & M.DCV_MASK) >> 6] + M.BRIDGE_V, M.DCR_OHM[r26 & M.DCR]

    def _loop_a(self) -> float:
        """Loop current (A) of the DAA alone off hook: battery, feed, cable, termination,
        and the 60 mA limit when ILIM is set."""
        drop, ohm = self._termination()
        amps = max(0.0, self.battery_v - drop) / (CO_FEED_OHM + self.loop_ohm + ohm)
        if self.regs[M.DC_TERM] & M.ILIM:
            amps = min(amps, M.ILIM_MA / 1000)
        return amps

    def _offhook_volts(self) -> float:
        amps = self._loop_a()
        return max(0.0, self.battery_v - amps * (CO_FEED_OHM + self.loop_ohm))

    def _lvs(self) -> int:
        volts = self.line_voltage()
        if abs(volts) <= M.LVS_FORCED_ZERO_V and not self.regs[M.DAA_CONTROL5] & M.LVFD:
            return 0
        code = max(-128, min(127, round(volts / M.LVS_V_PER_BIT)))
        return code & 0xFF

    def _line_status(self) -> int:
        if not self.link_up:
            return 0
        lcs = min(M.LCS_OVERLOAD, round(self.loop_current() / M.LCS_MA_PER_BIT))
        return M.FDT | lcs

    def _hook_written(self) -> None:
        if self.regs[M.DAA_CONTROL1] & M.OH:
            if not self.link_up:
                self._violate("OH set with the isolation link down: the line is not seized",
                              DATASHEET + " register 5 / 24xxp waits for reg 11 & 0xf0")
                return
            self._check_country_at_seizure()
        elif not self.link_up:
            return
        self._hook_changed()

    def _hook_changed(self) -> None:
        for fn in list(self._hook_watchers):
            fn(self.offhook)

    def _check_drop_out(self) -> None:
        """Off hook and the feed goes: the line-side supply collapses (DOD)."""
        if self.offhook and not self._fed:
            self.regs[M.INTL4] |= M.DOD
            self._latch(M.DODI)
        else:
            self.regs[M.INTL4] &= ~M.DOD

    # ---- ring detection ----
    def _ring_present(self) -> bool:
        return bool(self.ring_freq) and self.connected and self.link_up and not self.offhook

    def _ring_bits(self) -> int:
        bits = M.RDT if self._rdt else 0
        if self._ring_present():
            phase = math.sin(2 * math.pi * self.ring_freq * (self.reactor.now() - self._ring_since) + 0.7)
            bits |= M.RDTP if phase >= 0 else M.RDTN
        return bits

    def _set_rdt(self, on: bool) -> None:
        if on == self._rdt:
            return
        self._rdt = on
        if on or self.regs[M.CONTROL2] & M.RDI:
            self._latch(M.RDTI)

    def _validating(self) -> bool:
        return bool(self.regs[M.RING_VALID3] & M.RNGV)

    def _ring_began(self) -> None:
        if not self._ring_present():
            return
        if not self._validating():
            self._set_rdt(True)
            return
        if not self._frequency_ok():
            return  # out-of-band "ring": never validated
        rdly = ((self.regs[M.RING_VALID2] >> 7) << 2) | (self.regs[M.RING_VALID1] >> 6)
        confirm = M.RCC_MS[self.regs[M.RING_VALID2] & 0x07] + M.RDLY_MS[rdly]
        self._pending = ("confirm", self._ring_gen)
        self.reactor.update_timer(self._ring_timer, self.reactor.now() + confirm / 1000.0)

    def _ring_ended(self) -> None:
        if not self._rdt:
            self.reactor.update_timer(self._ring_timer, NEVER)
            return
        if not self._validating():
            self._set_rdt(False)
            return
        rto = M.RTO_MS[(self.regs[M.RING_VALID2] >> 3) & 0x0F]
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
        ras = self.regs[M.RING_VALID3] & 0x3F
        rmx = self.regs[M.RING_VALID1] & 0x3F
        half = 1000.0 / (2 * self.ring_freq) / M.RING_TICK_MS
        return half <= ras and ras - half <= rmx

    # ---- interrupts ----
    def _latch(self, bit: int) -> None:
        self.regs[M.INT_SOURCE] |= bit
        self._update_int()

    def _update_int(self) -> None:
        enabled = self.regs[M.CONTROL2] & M.INTE
        pending = self.regs[M.INT_SOURCE] & self.regs[M.INT_MASK]
        self.gpio.drive(self.int_pin, False if (enabled and pending) else None)

    # ---- PCM highway (drivers.bus.tdm.HighwayDevice) ----
    def _pcmf(self) -> int:
        return (self.regs[M.PCM_MODE] & M.PCMF_MASK) >> 3

    @property
    def pcm_law(self) -> str:
        """"ulaw", "alaw", "linear16" or "" (PCM off or a format not modelled)."""
        if not self.regs[M.PCM_MODE] & M.PCME:
            return ""
        return M.PCMF_NAMES.get(self._pcmf(), "")

    @property
    def tx_start(self) -> int:
        return M.start_count(self.regs[M.TX_START_LO], self.regs[M.TX_START_HI])

    @property
    def rx_start(self) -> int:
        return M.start_count(self.regs[M.RX_START_LO], self.regs[M.RX_START_HI])

    @property
    def loopback(self) -> bool:
        """PCML (register 33) or DDL (register 10): DRX comes back on DTX."""
        return bool(self.regs[M.PCM_MODE] & M.PCML or self.regs[M.DAA_CONTROL3] & M.DDL)

    def _pcm_on(self) -> bool:
        return bool(self.pcm_law) and self.pclk and not self.in_reset and self.seated

    def pcm_transmit(self, n: int) -> tuple[int, np.ndarray] | None:
        """DTX for the next n frames: the line (or the loopback) in the programmed law."""
        line = self._take_line(n)
        if not self._pcm_on():
            return None
        if self.loopback:
            samples = self._rx_last if self._rx_last is not None else np.zeros(n, np.int16)
        elif self.audio_path:
            samples = self._to_pcm(line)
        else:
            return None
        return self.tx_start, self._encode(samples[:n])

    def pcm_receive(self, words: np.ndarray) -> None:
        """DRX for the period just clocked: decoded, kept for loopback, sent to the line."""
        if not self._pcm_on():
            self._rx_last = None
            return
        samples = self._decode(words)
        self._rx_last = samples
        if self.audio_path:
            self.analog.gateway.write(self._to_line(samples))

    def _take_line(self, n: int) -> np.ndarray:
        """What the CO put on the line since the last period; the chip samples it live,
        so a backlog (no PCLK, nothing reading) is dropped rather than delayed."""
        while (frame := self.analog.gateway.read()) is not None:
            self._line_in.append(frame)
        while len(self._line_in) > LINE_BUFFER_FRAMES:
            self._line_in.popleft()
        frame = self._line_in.popleft() if self._line_in else np.zeros(n, np.int16)
        return frame if len(frame) == n else np.resize(frame, n)

    def _path_gain_db(self, regs: tuple[int, int], mute: int) -> float | None:
        """The digital gain of one path (registers 38-41), None when muted (register 15)."""
        if self.regs[M.GAIN1] & mute:
            return None
        return M.gain_db(self.regs[regs[0]], self.regs[regs[1]])

    def _to_pcm(self, line: np.ndarray) -> np.ndarray:
        """Line -> ADC -> RX gain: full scale 0 dBm without FULL, so the same line level
        reads 3.2 dB hotter and clips (Si3056 DS reg 31 FULL); level-true with FULL set."""
        gain = self._path_gain_db(M.RX_GAIN_REGS, M.RXM)
        if gain is None:
            return np.zeros(len(line), np.int16)
        scale = 10 ** ((M.FULL_SCALE_DB - self.full_scale_db + gain) / 20)
        return np.clip(np.round(line.astype(float) * scale), -32768, 32767).astype(np.int16)

    def _to_line(self, pcm: np.ndarray) -> np.ndarray:
        """TX gain -> DAC -> line: 3.2 dB quieter without FULL."""
        gain = self._path_gain_db(M.TX_GAIN_REGS, M.TXM)
        if gain is None:
            return np.zeros(FRAME, np.int16)
        scale = 10 ** ((self.full_scale_db - M.FULL_SCALE_DB + gain) / 20)
        out = np.clip(np.round(pcm.astype(float) * scale), -32768, 32767).astype(np.int16)
        return out if len(out) == FRAME else np.resize(out, FRAME)

    def _encode(self, samples: np.ndarray) -> np.ndarray:
        law = self.pcm_law
        if law == "ulaw":
            return g711.ulaw_encode(samples)
        if law == "alaw":
            return g711.alaw_encode(samples)
        return (samples.astype(np.int16).view(np.uint16) >> 8).astype(np.uint8)  # MSB only

    def _decode(self, words: np.ndarray) -> np.ndarray:
        law, start = self.pcm_law, self.rx_start
        codes = tdm.take(words, start)
        if law == "ulaw":
            return g711.ulaw_decode(codes)
        if law == "alaw":
            return g711.alaw_decode(codes)
        low = tdm.take(words, start + tdm.SLOT_BITS)
        return ((codes.astype(np.uint16) << 8) | low).view(np.int16)
