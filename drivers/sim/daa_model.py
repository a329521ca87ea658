"""The Si3050 + Si3018/19 register model the FXO twin runs on, written from the sources, never
from the driver's drivers/chips/si3050_regs.py: registers 1..59 with reset values, writable
bits and fields; SPI framing, PCM formats, DC termination and ring validation arithmetic;
and fxo_modes.h's country table (FXO_MODES). Unconfirmed facts say "(confirm on hardware)".
Sources, as entries cite them: "DS" = the Si3050+Si3018/19 datasheet, "Control Registers"
("Si3056 DS" where only the Si3056 sheet, same layout, was reachable); "24xxp" = DAHDI
wctdm24xxp/base.c; "wctdm" = DAHDI wctdm.c; "fxo_modes" = DAHDI fxo_modes.h; "OAK" =
pitdm.c / pidma.c.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# ---- SPI framing -----------------------------------------------------------------------
# One register access is three frames of one byte each, chip-select raised after every
# byte: control byte, register address, data byte (written, or clocked out for a read).
#   wctdm.c __write_8bits / __read_8bits: CS dropped and raised around each 8 bits;
#     __wctdm_setreg sends 0x20, reg, value as three such bytes, __wctdm_getreg 0x60, reg,
#     then reads one byte.
#   OAK pidma.c __spi_write / __spi_read: clr_codec_cs() .. set_codec_cs() around each
#     byte; pitdm.c __wctdm_setreg / __wctdm_getreg call them once per byte.
#   24xxp _cmd_dequeue: the FPGA sends the FXO control, address and data bytes in three
#     separate command slots (CMD_BYTE(mod, 0..2), 7 bytes apart in the frame).
SPI_SOURCE = "wctdm.c __write_8bits, OAK pidma.c __spi_write, 24xxp _cmd_dequeue"
CTRL_ALWAYS = 0x20  # bit 5 of the control byte is always 1 (wctdm 0x20/0x60; DS)
CTRL_READ = 0x40  # bit 6: 1 = read (wctdm __wctdm_getreg sends 0x60)
CTRL_CHANNEL = 0x0F  # daisy-chain channel, bit-reversed (OAK pitdm.c __wctdm_setreg)

# ---- registers -------------------------------------------------------------------------
CONTROL1, CONTROL2, INT_MASK, INT_SOURCE = 1, 2, 3, 4
DAA_CONTROL1, DAA_CONTROL2, SAMPLE_RATE = 5, 6, 7
DAA_CONTROL3, SYS_LINE_REV, LINE_STATUS, LINE_REV, DAA_CONTROL4, GAIN1 = 10, 11, 12, 13, 14, 15
INTL1, INTL2, INTL3, INTL4 = 16, 17, 18, 19
RING_VALID1, RING_VALID2, RING_VALID3 = 22, 23, 24
DC_TERM, LOOP_CURRENT, LINE_VOLTAGE, AC_TERM, DAA_CONTROL5 = 26, 28, 29, 30, 31
PCM_MODE, TX_START_LO, TX_START_HI, RX_START_LO, RX_START_HI = 33, 34, 35, 36, 37

# bits (DS register descriptions; the same masks in every public Si3050 header)
SR = 0x80  # reg 1 soft reset
INTE, INTP, WDTEN, AL, RDI, HBE, RXE = 0x80, 0x40, 0x10, 0x08, 0x04, 0x02, 0x01  # reg 2
RDTI, ROVI, FDTI, BTDI, DODI, LCSOI, TGDI, POLI = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
RDTN, RDTP, ONHM, RDT, OH = 0x40, 0x20, 0x08, 0x04, 0x01  # reg 5
PDL, PDN = 0x10, 0x08  # reg 6
DDL = 0x01  # reg 10 digital data loopback (24xxp wctdm_init_voicedaa "digitalloopback": 10 = 0x01)
LSID_MASK, REVA_MASK = 0xF0, 0x0F  # reg 11
FDT, LCS_MASK = 0x40, 0x1F  # reg 12
OHS, IIRE, RZ, RT = 0x40, 0x10, 0x02, 0x01  # reg 16
CALD = 0x20  # reg 17 (24xxp: fastpickup sets it)
RFWE = 0x02  # reg 18 (24xxp: "Enable ring detector full-wave rectifier mode": 18 = 2)
OVL, DOD, OPD = 0x04, 0x02, 0x01  # reg 19
RNGV = 0x80  # reg 24
DCV_MASK, MINI_MASK, ILIM, DCR = 0xC0, 0x30, 0x02, 0x01  # reg 26
FULL, FOH_MASK, OHS2, FILT, LVFD = 0x80, 0x60, 0x08, 0x02, 0x01  # reg 31 (Si3056 DS reg 31)
PCML, SPIM, PCME, PCMF_MASK, PHCF, TRI = 0x80, 0x40, 0x20, 0x18, 0x02, 0x01  # reg 33

LSID_SI3018, LSID_SI3019 = 0x1, 0x3  # reg 11 LSID (DS; 24xxp prints "line side" as reg 11 >> 4)
REVA = 0x05  # the system-side revision this twin reports (any non-0, non-F nibble)
LRV = 0x04  # the line-side revision (reg 13 bits 5:2; 24xxp reads (reg 13 >> 2) & 0xf)


@dataclass(frozen=True)
class Reg:
    """One register: reset value, the bits a write changes, its fields, the source."""

    addr: int
    name: str
    reset: int = 0x00
    writable: int = 0xFF
    fields: dict[str, int] = field(default_factory=dict)
    source: str = "DS"
    write0_clears: bool = False  # interrupt source: writing 0 clears, 1 leaves


REGISTERS: dict[int, Reg] = {r.addr: r for r in (
    Reg(1, "Control 1", 0x00, 0xBA, {"SR": 0x80, "PWMM": 0x30, "PWME": 0x08, "IDL": 0x02},
        "DS register 1; SR self-clears (wctdm/24xxp: 1 = 0x80 then wait 100 ms)"),
    Reg(2, "Control 2", 0x03, 0xDF, {"INTE": INTE, "INTP": INTP, "WDTEN": WDTEN, "AL": AL,
                                     "RDI": RDI, "HBE": HBE, "RXE": RXE},
        "DS register 2; reset 0x03 is what 24xxp wctdm_voicedaa_insane requires"),
    Reg(3, "Interrupt Mask", 0x00, 0xFF, {}, "DS register 3: same layout as register 4"),
    Reg(4, "Interrupt Source", 0x00, 0xFF, {"RDTI": RDTI, "ROVI": ROVI, "FDTI": FDTI,
                                            "BTDI": BTDI, "DODI": DODI, "LCSOI": LCSOI,
                                            "TGDI": TGDI, "POLI": POLI},
        "DS register 4: latched, write 0 to clear", write0_clears=True),
    Reg(5, "DAA Control 1", 0x00, ONHM | OH, {"RDTN": RDTN, "RDTP": RDTP, "ONHM": ONHM,
                                              "RDT": RDT, "OH": OH},
        "DS register 5: RDTN/RDTP/RDT are status; wctdm/24xxp write 5 = 0x08 (ONHM)"),
    Reg(6, "DAA Control 2", PDL, PDL | PDN, {"PDL": PDL, "PDN": PDN},
        "DS register 6: line side powered down at reset; wctdm/24xxp 'Enable ISO-Cap': 6 = 0"),
    Reg(7, "Sample Rate Control", 0x00, 0x08, {"HSSM": 0x08}, "DS register 7"),
    Reg(10, "DAA Control 3", 0x00, DDL, {"DDL": DDL},
        "DS register 10; 24xxp wctdm_init_voicedaa digitalloopback: 10 = 0x01"),
    Reg(11, "System and Line-Side Revision", REVA, 0x00, {"LSID": LSID_MASK, "REVA": REVA_MASK},
        "DS register 11: LSID reads 0 until the isolation link is up (24xxp polls reg 11 & 0xf0)"),
    Reg(12, "Line-Side Device Status", 0x00, 0x00, {"FDT": FDT, "LCS": LCS_MASK},
        "DS register 12: FDT = isolation link frame lock; LCS 3.3 mA/bit"),
    Reg(13, "Line-Side Device Revision", 0x00, 0x00, {"LRV": 0x3C},
        "DS register 13; 24xxp reads (reg 13 >> 2) & 0xf"),
    Reg(14, "DAA Control 4", 0x00, 0x02, {"RPOL": 0x02}, "DS register 14"),
    Reg(15, "TX/RX Gain Control 1", 0x00, 0x88, {"TXM": 0x80, "RXM": 0x08}, "DS register 15"),
    Reg(16, "International Control 1", 0x00, 0x53, {"OHS": OHS, "IIRE": IIRE, "RZ": RZ, "RT": RT},
        "DS register 16; wctdm/24xxp write ohs << 6 | rz << 1 | rt from fxo_modes.h"),
    Reg(17, "International Control 2", 0x00, 0xFF, {"CALZ": 0x80, "MCAL": 0x40, "CALD": CALD,
                                                    "OPE": 0x08, "BTE": 0x04, "ROV": 0x02, "BTD": 0x01},
        "DS register 17; 24xxp fastpickup sets CALD"),
    Reg(18, "International Control 3", 0x00, RFWE, {"RFWE": RFWE},
        "DS register 18; 24xxp writes 2 (full-wave ring detector)"),
    Reg(19, "International Control 4", 0x00, 0x00, {"OVL": OVL, "DOD": DOD, "OPD": OPD},
        "DS register 19: status"),
    Reg(20, "Call Progress RX Attenuation", 0x00, 0xFF, {"ARM": 0xFF}, "DS register 20"),
    Reg(21, "Call Progress TX Attenuation", 0x00, 0xFF, {"ATM": 0xFF}, "DS register 21"),
    Reg(22, "Ring Validation Control 1", 0x96, 0xFF, {"RDLY10": 0xC0, "RMX": 0x3F},
        "DS register 22 (reset 0x96)"),
    Reg(23, "Ring Validation Control 2", 0x2D, 0xFF, {"RDLY2": 0x80, "RTO": 0x78, "RCC": 0x07},
        "DS register 23 (reset 0x2D; confirm on hardware)"),
    Reg(24, "Ring Validation Control 3", 0x19, 0xBF, {"RNGV": RNGV, "RAS": 0x3F},
        "DS register 24; wctdm.c 'Set to the device defaults': 24 = 0x19"),
    Reg(25, "Resistor Calibration", 0x00, 0xEF, {"RCALS": 0x80, "RCALM": 0x40, "RCALD": 0x20,
                                                 "RCAL": 0x0F}, "DS register 25"),
    Reg(26, "DC Termination Control", 0x00, 0xF3, {"DCV": DCV_MASK, "MINI": MINI_MASK,
                                                   "ILIM": ILIM, "DCR": DCR},
        "DS register 26; wctdm/24xxp write dcv << 6 | mini << 4 | ilim << 1 from fxo_modes.h"),
    Reg(28, "Loop Current Status", 0x00, 0x00, {"LCS2": 0xFF}, "DS register 28: 1.1 mA/bit"),
    Reg(29, "Line Voltage Status", 0x00, 0x00, {"LVS": 0xFF},
        "DS register 29: signed, 1 V/bit, sign = polarity"),
    Reg(30, "AC Termination Control", 0x00, 0x0F, {"ACIM": 0x0F},
        "DS register 30; wctdm/24xxp write acim from fxo_modes.h"),
    Reg(31, "DAA Control 5", 0x20, 0xEB, {"FULL": FULL, "FOH": FOH_MASK, "OHS2": OHS2,
                                          "FILT": FILT, "LVFD": LVFD},
        "Si3056 DS register 31 (reset 0010_0000); 24xxp writes 0xa3 | ohs2 << 3"),
    Reg(32, "Ground Start Control", 0x00, 0x07, {"TGD": 0x04, "TGDE": 0x02, "RG": 0x01},
        "DS register 32"),
    Reg(33, "PCM/SPI Mode Select", 0x00, 0xFB, {"PCML": PCML, "SPIM": SPIM, "PCME": PCME,
                                                "PCMF": PCMF_MASK, "PHCF": PHCF, "TRI": TRI},
        "DS register 33; wctdm.c writes 0x28 (PCME, mu-law) or 0x20 (A-law); "
        "reset 0x00 (confirm on hardware: 24xxp always writes it)"),
    Reg(34, "PCM Transmit Start Count Low", 0x00, 0xFF, {"TXS": 0xFF},
        "DS register 34; 24xxp wctdm_voicedaa_set_ts: ts * 8"),
    Reg(35, "PCM Transmit Start Count High", 0x00, 0x03, {"TXS98": 0x03}, "DS register 35"),
    Reg(36, "PCM Receive Start Count Low", 0x00, 0xFF, {"RXS": 0xFF},
        "DS register 36; 24xxp wctdm_voicedaa_set_ts: ts * 8"),
    Reg(37, "PCM Receive Start Count High", 0x00, 0x03, {"RXS98": 0x03}, "DS register 37"),
    Reg(38, "TX Gain Control 2", 0x00, 0x1F, {"TGA2": 0x10, "TXG2": 0x0F},
        "DS register 38; wctdm_set_hwgain"),
    Reg(39, "RX Gain Control 2", 0x00, 0x1F, {"RGA2": 0x10, "RXG2": 0x0F},
        "DS register 39; wctdm_set_hwgain"),
    Reg(40, "TX Gain Control 3", 0x00, 0x1F, {"TGA3": 0x10, "TXG3": 0x0F},
        "DS register 40; wctdm_set_hwgain"),
    Reg(41, "RX Gain Control 3", 0x00, 0x1F, {"RGA3": 0x10, "RXG3": 0x0F},
        "DS register 41; wctdm_set_hwgain"),
    Reg(42, "GCI Control", 0x00, 0x0F, {"GCIF": 0x0C, "B2D": 0x02, "B1D": 0x01}, "DS register 42"),
    Reg(43, "Line Current/Voltage Threshold", 0x00, 0xFF, {"CVT": 0xFF}, "DS register 43"),
    Reg(44, "Line Current/Voltage Threshold Control", 0x00, 0x0F,
        {"CVI": 0x08, "CVS": 0x04, "CVM": 0x02, "CVP": 0x01}, "DS register 44"),
    *(Reg(n, f"Programmable Hybrid {n - 44}", 0x00, 0xFF, {}, "DS registers 45-52")
      for n in range(45, 53)),
    Reg(59, "Spark Quenching Control", 0x00, 0x50, {"SQ1": 0x40, "SQ0": 0x10}, "DS register 59"),
)}
READ_ONLY = {r.addr for r in REGISTERS.values() if not r.writable}

# ---- PCM (register 33, DS) --------------------------------------------------------------
# PCMF[1:0]: 00 A-law, 01 mu-law (wctdm.c: 0x20 A-law, 0x28 mu-law), 11 16-bit linear
# (two's complement, MSB first; 0x38 in public Si3050 headers). 10 is not modelled.
PCMF_ALAW, PCMF_ULAW, PCMF_LINEAR = 0, 1, 3
PCMF_NAMES = {PCMF_ALAW: "alaw", PCMF_ULAW: "ulaw", PCMF_LINEAR: "linear16"}
START_COUNT_MAX = 0x3FF  # TXS/RXS are 10 bits (registers 34/35, 36/37)
# PCLK rates the Si3050 locks to (DS "PCM Highway": 256 kHz .. 8.192 MHz in these steps;
# confirm on hardware). The plan's 256 kHz (drivers/bus/tdm.py) is the lowest.
PCLK_HZ = (256_000, 512_000, 768_000, 1_024_000, 1_536_000, 2_048_000, 4_096_000, 8_192_000)
LINE_SIDE_POWER_UP_S = 0.12  # link up after PDL clears; 24xxp waits up to 2 s for it

# ---- line-side measurements (DS registers 12, 28, 29) ---------------------------------
LCS_MA_PER_BIT = 3.3
LCS_OVERLOAD = 0x1F
LCS2_MA_PER_BIT = 1.1
LVS_V_PER_BIT = 1.0
LVS_FORCED_ZERO_V = 3.0  # Si3056 DS reg 31 LVFD: LVS forced to 0 at 3 V or less unless LVFD

# ---- DC termination (register 26, DS "DC Termination"; volts confirm on hardware) -----
DCV_VOLTS = (3.1, 3.2, 3.35, 3.5)  # DCV[1:0]: TIP/RING voltage adjust
MINI_MA = (10.0, 12.0, 14.0, 16.0)  # MINI[1:0]: minimum operational loop current
ILIM_MA = 60.0  # ILIM = 1: loop current limited to 60 mA (TBR21)
DCR_OHM = (50.0, 800.0)  # DCR: 0 = normal DC impedance, 1 = 800 ohm
BRIDGE_V = 2.6  # diode bridge and hook-switch drop added to DCV at TIP/RING (twin's figure)
FULL_SCALE_DB = 3.2  # FULL: ADC/DAC full scale 0 dBm -> +3.2 dBm into 600 ohm (Si3056 DS reg 31)
FOH_MS = (512, 128, 64, 8)  # reg 31 FOH[1:0] off-hook counter (Si3056 DS reg 31)
# register 30 ACIM[3:0]: the AC termination presented off hook (DS register 30; the
# complex networks as the datasheet lists them; confirm on hardware). fxo_modes.h uses
# 0 (FCC), 2 (TBR21), 3 (DE, AU...), 4 (IN, NZ), 5 (UK), 15 (CN).
ACIM_OHMS = {
    0x0: "600 ohm", 0x1: "900 ohm", 0x2: "270 ohm + (750 ohm || 150 nF)",
    0x3: "220 ohm + (820 ohm || 120 nF)", 0x4: "370 ohm + (620 ohm || 310 nF)",
    0x5: "320 ohm + (1050 ohm || 230 nF)", 0x6: "370 ohm + (820 ohm || 110 nF)",
    0x7: "275 ohm + (780 ohm || 115 nF)", 0x8: "120 ohm + (820 ohm || 110 nF)",
    0x9: "350 ohm + (1000 ohm || 210 nF)", 0xA: "200 ohm + (680 ohm || 100 nF)",
    0xB: "600 ohm + 2.16 uF", 0xC: "900 ohm + 1 uF", 0xD: "900 ohm + 2.16 uF",
    0xE: "600 ohm + 1 uF", 0xF: "global complex impedance",
}
# registers 38-41: digital gain, whole dB in TX/RXG2 and tenths in TX/RXG3, bit 4 = attenuate
# (DS registers 38-41; DAHDI wctdm_set_hwgain writes 38/40 for tx, 39/41 for rx: gain >= 0
# as (dB, tenths), gain < 0 as (16 + dB, 16 + tenths)). "TX" is toward the line (DRX ->
# line), "RX" from the line (line -> DTX), as the datasheet names its paths.
TX_GAIN_REGS, RX_GAIN_REGS = (38, 40), (39, 41)
GAIN_ATTENUATE = 0x10
TXM, RXM = 0x80, 0x08  # register 15: mute toward the line / from the line
ON_HOOK_SPEED_MS = {(0, 0): 0.5, (0, 1): 3.0, (1, 0): 26.0, (1, 1): 26.0}  # (OHS, OHS2): Si3056 DS reg 31

# ---- ring validation (registers 22-24, DS "Ring Validation") --------------------------
RCC_MS = (100, 150, 200, 256, 384, 512, 640, 1024)  # ring confirmation count
RTO_MS = (80,) + tuple(128 * n for n in range(1, 16))  # ring timeout
RDLY_MS = tuple(256 * n for n in range(8))  # delay from validation to RDT
RING_TICK_MS = 2.0  # RAS/RMX count in 2 ms ticks


def gain_db(whole: int, tenths: int) -> float:
    """The gain of a register pair 38/40 or 39/41 in dB."""
    def signed(reg: int, scale: float) -> float:
        return (-1 if reg & GAIN_ATTENUATE else 1) * (reg & 0x0F) * scale
    return signed(whole, 1.0) + signed(tenths, 0.1)


def start_count(lo: int, hi: int) -> int:
    """A 10-bit PCM start count from its low and high registers (34/35 or 36/37)."""
    return ((hi & 0x03) << 8) | lo


# ---- the country table (DAHDI fxo_modes.h, every entry, in its order) -------------------


class FxoMode(NamedTuple):
    """One fxo_modes.h entry: the fields wctdm/24xxp program into registers 16, 26, 30, 31."""

    ohs: int
    ohs2: int
    rz: int
    rt: int
    ilim: int
    dcv: int
    mini: int
    acim: int


# fxo_modes.h "NAME": FxoMode(ohs, ohs2, rz, rt, ilim, dcv, mini, acim); absent fields are 0
FXO_MODES: dict[str, FxoMode] = {
    "FCC": FxoMode(0, 0, 0, 1, 0, 3, 0, 0),
    "TBR21": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "ARGENTINA": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "AUSTRALIA": FxoMode(1, 0, 0, 0, 0, 0, 3, 3),
    "AUSTRIA": FxoMode(0, 1, 0, 0, 1, 3, 0, 3),
    "BAHRAIN": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "BELGIUM": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "BRAZIL": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "BULGARIA": FxoMode(0, 0, 0, 0, 1, 3, 0, 3),
    "CANADA": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "CHILE": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "CHINA": FxoMode(0, 0, 0, 0, 0, 0, 3, 15),
    "COLOMBIA": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "CROATIA": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "CYPRUS": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "CZECH": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "DENMARK": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "ECUADOR": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "EGYPT": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "ELSALVADOR": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "FINLAND": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "FRANCE": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "GERMANY": FxoMode(0, 1, 0, 0, 1, 3, 0, 3),
    "GREECE": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "GUAM": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "HONGKONG": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "HUNGARY": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "ICELAND": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "INDIA": FxoMode(0, 0, 0, 0, 0, 3, 0, 4),
    "INDONESIA": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "IRELAND": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "ISRAEL": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "ITALY": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "JAPAN": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "JORDAN": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "KAZAKHSTAN": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "KUWAIT": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "LATVIA": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "LEBANON": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "LUXEMBOURG": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "MACAO": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "MALAYSIA": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "MALTA": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "MEXICO": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "MOROCCO": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "NETHERLANDS": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "NEWZEALAND": FxoMode(0, 0, 0, 0, 0, 3, 0, 4),
    "NIGERIA": FxoMode(0, 0, 0, 0, 1, 3, 0, 2),
    "NORWAY": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "OMAN": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "PAKISTAN": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "PERU": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "PHILIPPINES": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "POLAND": FxoMode(0, 0, 1, 1, 0, 3, 0, 0),
    "PORTUGAL": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "ROMANIA": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "RUSSIA": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "SAUDIARABIA": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "SINGAPORE": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "SLOVAKIA": FxoMode(0, 0, 0, 0, 0, 3, 0, 3),
    "SLOVENIA": FxoMode(0, 0, 0, 0, 0, 3, 0, 2),
    "SOUTHAFRICA": FxoMode(1, 0, 1, 0, 0, 3, 0, 3),
    "SOUTHKOREA": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "SPAIN": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "SWEDEN": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "SWITZERLAND": FxoMode(0, 1, 0, 0, 1, 3, 0, 2),
    "SYRIA": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "TAIWAN": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "THAILAND": FxoMode(0, 0, 0, 0, 0, 0, 3, 0),
    "UAE": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "UK": FxoMode(0, 1, 0, 0, 1, 3, 0, 5),
    "USA": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
    "YEMEN": FxoMode(0, 0, 0, 0, 0, 3, 0, 0),
}
REG31_REFERENCE = 0xA3  # 24xxp wctdm_init_voicedaa: FULL | FOH 128 ms | FILT | LVFD (0xe3: fastpickup)
REG31_FASTPICKUP = 0xE3


def reference_registers(mode: FxoMode, fastpickup: bool = False) -> dict[int, int]:
    """Registers 16, 26, 30, 31 as wctdm_init_voicedaa (wctdm.c and 24xxp) computes them."""
    reg31 = (REG31_FASTPICKUP if fastpickup else REG31_REFERENCE) | (mode.ohs2 << 3)
    return {
        INTL1: (mode.ohs << 6) | (mode.rz << 1) | mode.rt,
        DC_TERM: (mode.dcv << 6) | (mode.mini << 4) | (mode.ilim << 1),
        AC_TERM: mode.acim,
        DAA_CONTROL5: reg31,
    }
