"""The ProSLIC twin's own register tables (Si3210 and Si3215), written from the references
and kept apart from the driver's drivers/chips/si3215_regs.py on purpose: a register the
driver misreads must not be misread the same way here. Every entry names its source;
"(twin)" marks the twin's own assumption, to confirm with a logic analyser on a real card.
One ProSLIC per chip-select; PCLK from the highway of drivers/bus/tdm.py.
Sources, as entries cite them: proslic.h, wctdm.c (indirect_regs[] and the Si3215 altaddr
column, translate_3215, proslic_insane, init_proslic) and base.c (wctdm24xxp) from DAHDI;
"SiLabs API" = Si321x_Registers.h, Si321x_Intf.c, si321x_constants.c (AC495L vendor tree;
hanwckf/rt-n56u drivers/char/pcm/si321x for the gain presets); "daytona" = a vendor Si3215
driver (PKH_* names): unity digital gain 0x4000, the table loaded first after reset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

# -- SPI control byte (wctdm.c __wctdm_getreg: `reg | 0x80` for a read, `reg & 0x7f` to write)
SPI_READ = 0x80
SPI_ADDR_MASK = 0x7F


class Access(Enum):
    RW = "rw"  # read/write
    RO = "ro"  # read only: writes are ignored
    W1C = "w1c"  # interrupt status: write 1 to clear (Si321x_Intf.c GetInterrupts)
    LIVE = "live"  # the chip computes it at every read (sense, status)


@dataclass(frozen=True)
class DirectReg:
    name: str
    reset: int
    access: Access
    source: str


class Dr(IntEnum):
    """Direct register numbers (proslic.h)."""

    SPI_MODE = 0
    PCM_MODE = 1
    PCM_TX_LO = 2
    PCM_TX_HI = 3
    PCM_RX_LO = 4
    PCM_RX_HI = 5
    DIO = 6
    LOOPBACK = 8
    AUDIO_GAIN = 9
    LINE_IMPEDANCE = 10
    HYBRID = 11
    PWR_DOWN1 = 14
    PWR_DOWN2 = 15
    INT_STATUS1 = 18
    INT_STATUS2 = 19
    INT_STATUS3 = 20
    INT_MASK1 = 21
    INT_MASK2 = 22
    INT_MASK3 = 23
    DTMF_DIGIT = 24
    IDA_LO = 28
    IDA_HI = 29
    IAA = 30
    IAS = 31
    OSC1 = 32
    OSC2 = 33
    RING_OSC_CTL = 34
    RING_ON_LO = 48
    RING_ON_HI = 49
    RING_OFF_LO = 50
    RING_OFF_HI = 51
    RING_LCR_DEBOUNCE = 63
    LINEFEED = 64
    BIAS_SQUELCH = 65
    BAT_FEED = 66
    AUTO = 67
    LOOP_STAT = 68
    LCR_DEBOUNCE = 69
    RTP_DEBOUNCE = 70
    LOOP_I_LIMIT = 71
    ON_HOOK_V = 72
    COMMON_V = 73
    VBATH = 74
    VBATL = 75
    PWR_STAT_DEV = 76
    PWR_STAT = 77
    LOOP_V_SENSE = 78
    LOOP_I_SENSE = 79
    TIP_V_SENSE = 80
    RING_V_SENSE = 81
    VBATH_SENSE = 82
    VBATL_SENSE = 83
    IQ1 = 84
    IQ6 = 89
    DCDC_PWM = 92
    DCDC = 93
    CAL1 = 96
    CAL2 = 97
    RING_GAIN_CAL = 98
    TIP_GAIN_CAL = 99
    DC_PEAK_CAL = 107
    ENHANCE = 108


_API = "SiLabs API Si321x_Registers.h"
_LIVE = Access.LIVE


def _reg(name: str, reset: int, access: Access, source: str) -> DirectReg:
    return DirectReg(name, reset, access, source)


DIRECT: dict[int, DirectReg] = {
    Dr.SPI_MODE: _reg("SPI_MODE", 0x05, Access.RW,
                      "wctdm.c proslic_insane: bits 5..4 product, 3..0 version (0 or 0xF: no chip,"
                      " < 2 too old); revision 5 = 'E' (SiLabs API chipRev) (twin's revision)"),
    Dr.PCM_MODE: _reg("PCM_MODE", 0x08, Access.RW,
                      "base.c proslic_insane: an Si3215 reads 0x88; bit 7 marks the Si3215"
                      " (wctdm.c proslic_insane); bit 5 PCM enable (SiLabs API PCMStart |= 0x20);"
                      " bits 4..3 PCMF (SiLabs si321x_constants.c: 0 A-law, 1 mu-law,"
                      " 3 16-bit linear); wctdm.c writes 0x28 mu-law / 0x20 A-law"),
    Dr.PCM_TX_LO: _reg("PCM_XMIT_START_COUNT_LSB", 0x00, Access.RW,
                       "proslic.h; wctdm.c init_proslic writes 8 x slot; 1 PCLK per LSB (" + _API + ")"),
    Dr.PCM_TX_HI: _reg("PCM_XMIT_START_COUNT_MSB", 0x00, Access.RW, "proslic.h; bits 1..0 (twin)"),
    Dr.PCM_RX_LO: _reg("PCM_RCV_START_COUNT_LSB", 0x00, Access.RW, "proslic.h; wctdm.c init_proslic"),
    Dr.PCM_RX_HI: _reg("PCM_RCV_START_COUNT_MSB", 0x00, Access.RW, "proslic.h; bits 1..0 (twin)"),
    Dr.DIO: _reg("DIO", 0x00, Access.RW, "proslic.h; bits 7..5 Si3215 variant, 0 = Si3215 (SiLabs API chipType)"),
    Dr.LOOPBACK: _reg("AUDIO_LOOPBACK", 0x02, Access.RW,
                      "wctdm.c proslic_insane expects 0x02 after reset; bit 1 = digital loopback"
                      " (" + _API + " INIT_DR8 'digital loopback default'; wctdm.c init_proslic"
                      " 'Clear digital loopback' writes 0)"),
    Dr.AUDIO_GAIN: _reg("AUDIO_GAIN", 0x00, Access.RW, "proslic.h; " + _API + " INIT_DR9"),
    Dr.LINE_IMPEDANCE: _reg("LINE_IMPEDANCE", 0x00, Access.RW, "proslic.h (reset value: twin)"),
    Dr.HYBRID: _reg("HYBRID", 0x33, Access.RW, "wctdm.c proslic_insane expects 0x33"),
    Dr.PWR_DOWN1: _reg("PWR_DOWN1", 0x10, Access.RW,
                       "bit 4 powers the DC-DC converter down: wctdm.c init_proslic writes 0x10 to"
                       " 'turn off the DC->DC converter', powerup_proslic writes 0; " + _API + " INIT_DR14"),
    Dr.PWR_DOWN2: _reg("PWR_DOWN2", 0x00, Access.RW, "proslic.h; " + _API + " INIT_DR15"),
    Dr.INT_STATUS1: _reg("INTRPT_STATUS1", 0x00, Access.W1C,
                         "bits 0..7 OSC1 T1/T2, OSC2 T1/T2, RING T1/T2, PM T1/T2 (SiLabs API GetInterrupts)"),
    Dr.INT_STATUS2: _reg("INTRPT_STATUS2", 0x00, Access.W1C,
                         "bit 0 ring trip, bit 1 loop status, bits 2..7 power alarm Q1..Q6 (SiLabs API)"),
    Dr.INT_STATUS3: _reg("INTRPT_STATUS3", 0x00, Access.W1C,
                         "bit 0 DTMF, bit 1 indirect, bit 2 common-mode balance cal error (SiLabs API)"),
    Dr.INT_MASK1: _reg("INTRPT_MASK1", 0x00, Access.RW, "proslic.h (reset value: twin)"),
    Dr.INT_MASK2: _reg("INTRPT_MASK2", 0x00, Access.RW, "proslic.h (reset value: twin)"),
    Dr.INT_MASK3: _reg("INTRPT_MASK3", 0x00, Access.RW, "proslic.h (reset value: twin)"),
    Dr.DTMF_DIGIT: _reg("DTMF_DIGIT", 0x00, Access.RO, "proslic.h"),
    Dr.IDA_LO: _reg("I_DATA_LOW", 0x00, Access.RW, "proslic.h IDA_LO"),
    Dr.IDA_HI: _reg("I_DATA_HIGH", 0x00, Access.RW, "proslic.h IDA_HI"),
    Dr.IAA: _reg("I_ADDRESS", 0x00, Access.RW,
                 "writing it starts the access: wctdm.c setreg_indirect (IDA then IAA = write),"
                 " getreg_indirect (IAA then read IDA = read)"),
    Dr.IAS: _reg("I_STATUS", 0x00, _LIVE,
                 "non-zero while an indirect access is pending: wctdm.c __wait_access polls it"),
    Dr.OSC1: _reg("OSC1", 0x00, Access.RW, _API + " INIT_DR32"),
    Dr.OSC2: _reg("OSC2", 0x00, Access.RW, _API + " INIT_DR33"),
    Dr.RING_OSC_CTL: _reg("RING_OSC_CTL", 0x00, Access.RW,
                          _API + " INIT_DR34 (reset 0x00); 0x18 enables the ring timers (SiLabs"
                          " SLIC.c 'Enable timers for ringing oscillator'); bit 2 oscillator on"
                          " (SiLabs API ToneGenStart 0x4); 0x10 active / 0x08 inactive timer (twin)"),
    Dr.RING_ON_LO: _reg("RING_ON_LO", 0x00, Access.RW, _API + " INIT_DR48: 125 us/LSB"),
    Dr.RING_ON_HI: _reg("RING_ON_HI", 0x00, Access.RW, _API + " INIT_DR49"),
    Dr.RING_OFF_LO: _reg("RING_OFF_LO", 0x00, Access.RW, _API + " INIT_DR50: 125 us/LSB"),
    Dr.RING_OFF_HI: _reg("RING_OFF_HI", 0x00, Access.RW, _API + " INIT_DR51"),
    Dr.RING_LCR_DEBOUNCE: _reg("RING_LCR_DEBOUNCE", 0x54, Access.RW, _API + " INIT_DR63 (reset 0x54)"),
    Dr.LINEFEED: _reg("LINE_STATE", 0x00, Access.RW,
                      "wctdm.c proslic_insane expects 0; proslic.h SLIC_LF_* in bits 2..0;"
                      " the state applied reads back in bits 6..4 (twin)"),
    Dr.BIAS_SQUELCH: _reg("BIAS_SQUELCH", 0x61, Access.RW, _API + " INIT_DR65 (reset 0x61)"),
    Dr.BAT_FEED: _reg("BAT_FEED", 0x03, Access.RW,
                      _API + " INIT_DR66 (reset 0x03); wctdm.c init_proslic writes 1 to 'Turn off"
                      " Q7': bit 1 switches Q7 (twin's reading of that comment)"),
    Dr.AUTO: _reg("AUTO_STATE", 0x1F, Access.RW,
                  _API + " INIT_DR67 (reset 0x1F); wctdm.c writes 0x07 to disable automatic"
                  " battery switching (bit 3) and notes 0x0e disables the automatic power-alarm"
                  " open (bit 0); bit 2 ring trip, bit 1 loop closure (twin)"),
    Dr.LOOP_STAT: _reg("LOOP_STAT", 0x00, _LIVE, "bit 0 loop closure (SiLabs API ReadHookStatus), bit 1 ring trip"),
    Dr.LCR_DEBOUNCE: _reg("LOOP_DEBOUNCE", 0x0A, Access.RW, _API + " INIT_DR69: 1.25 ms/LSB, reset 0x0A"),
    Dr.RTP_DEBOUNCE: _reg("RT_DEBOUNCE", 0x0A, Access.RW, _API + " INIT_DR70: 1.25 ms/LSB, reset 0x0A"),
    Dr.LOOP_I_LIMIT: _reg("LOOP_I_LIMIT", 0x00, Access.RW, "wctdm.c: 20 mA + 3 mA/LSB; " + _API + " INIT_DR71"),
    Dr.ON_HOOK_V: _reg("OFF_HOOK_V", 0x20, Access.RW, _API + " INIT_DR72: 1.5 V/LSB, 0x20 = 48 V"),
    Dr.COMMON_V: _reg("COMMON_V", 0x02, Access.RW, _API + " INIT_DR73: 1.5 V/LSB, reset 0x02"),
    Dr.VBATH: _reg("BAT_V_HI", 0x32, Access.RW, _API + " INIT_DR74: 1.5 V/LSB, reset 0x32 = 75 V"),
    Dr.VBATL: _reg("BAT_V_LO", 0x10, Access.RW, _API + " INIT_DR75: 1.5 V/LSB, reset 0x10"),
    Dr.PWR_STAT_DEV: _reg("PWR_STAT_DEV", 0x00, Access.RO, "proslic.h"),
    Dr.PWR_STAT: _reg("PWR_STAT", 0x00, Access.RO, "proslic.h"),
    Dr.LOOP_V_SENSE: _reg("LOOP_V_SENSE", 0x00, _LIVE, "proslic.h; 1.5 V/LSB, bit 6 reverse (twin)"),
    Dr.LOOP_I_SENSE: _reg("LOOP_I_SENSE", 0x00, _LIVE, "proslic.h; 1.1 mA/LSB (twin)"),
    Dr.TIP_V_SENSE: _reg("TIP_V_SENSE", 0x00, _LIVE, "proslic.h; 0.376 V/LSB (wctdm.c 376 * vbat / 1000)"),
    Dr.RING_V_SENSE: _reg("RING_V_SENSE", 0x00, _LIVE, "proslic.h; 0.376 V/LSB"),
    Dr.VBATH_SENSE: _reg("BAT_V_HI_SENSE", 0x00, _LIVE,
                         "wctdm.c powerup_proslic waits for >= 0xc0, 0.376 V/LSB"),
    Dr.VBATL_SENSE: _reg("BAT_V_LO_SENSE", 0x00, _LIVE, "proslic.h"),
    Dr.DCDC_PWM: _reg("DCDC_PWM_OFF", 0x00, Access.RW,
                      "PWM period, 61.035 ns/LSB (" + _API + " INIT_DR92); written before DR14 by"
                      " wctdm.c (0xff), base.c (0xc0), SiLabs API powerUp (0xff, then 0x7f);"
                      " reset value (twin)"),
    Dr.DCDC: _reg("DCDC", 0x00, Access.RW,
                  "min off time in bits 5..0, 61.035 ns/LSB (" + _API + " INIT_DR93 0x14, M parts"
                  " 0x38); bit 7 starts the DC-DC calibration and reads 1 until done (SiLabs API"
                  " powerUp waits on it; wctdm.c writes 0x19, then 0x99 and reads DR107);"
                  " reset value (twin)"),
    Dr.CAL1: _reg("CALIBR1", 0x1F, Access.RW,
                  _API + ": bit 6 CAL runs and reads 1 until done, bits 4..0 CALR CALT CALD CALC"
                  " CALIL; wctdm.c writes 0x5f (auto) or 0x47 (manual), waits for 0"),
    Dr.CAL2: _reg("CALIBR2", 0x1F, Access.RW,
                  _API + ": bits 4..0 CALM1 CALM2 CALDAC CALADC CALCM; wctdm.c 0x1f / 0x18 / 0x01"),
    Dr.ENHANCE: _reg("REVC", 0x00, Access.RW, "wctdm.c 'Revision C optimization' writes 0xeb; reset (twin)"),
}
# the calibration result registers (proslic.h RING_GAIN_CAL .. DC_PEAK_CAL), reset values
# from Si321x_Registers.h INIT_DR98..INIT_DR107 ("Informative Calibration result")
CAL_RESULT_RESET = {98: 0x10, 99: 0x10, 100: 0x11, 101: 0x11, 102: 0x08, 103: 0x88,
                    104: 0x00, 105: 0x00, 106: 0x20, 107: 0x08}
for _addr, _value in CAL_RESULT_RESET.items():
    DIRECT[_addr] = _reg(f"CAL_RESULT_{_addr}", _value, Access.RW, _API + f" INIT_DR{_addr}")
for _addr in range(84, 90):
    DIRECT[_addr] = _reg(f"IQ{_addr - 83}", 0x00, _LIVE,
                         "proslic.h IQ1..IQ6; DR88/89 are the comparators of wctdm.c manual_calibrate")

# -- bit fields ------------------------------------------------------------------------
PART_SI3215 = 0x80  # DR1 bit 7 (wctdm.c proslic_insane: "ProSLIC 3215, not a 3210")
REV_MASK = 0x0F  # DR0 (wctdm.c proslic_insane)
PART_MASK = 0x30  # DR0 bits 5..4 product (wctdm.c proslic_insane)
PCM_ENABLE = 0x20  # DR1 (SiLabs API PCMStart)
PCMF_SHIFT, PCMF_MASK = 3, 0x18  # DR1 (SiLabs API PCMSetup)


class PcmFormat(IntEnum):
    """DR1 PCMF (SiLabs si321x_constants.c ALAW 0, ULAW 1, LINEAR_8BIT 2, LINEAR_16BIT 3)."""

    ALAW = 0
    ULAW = 1
    LINEAR8 = 2
    LINEAR16 = 3


LOOPBACK_DIGITAL = 0x02  # DR8 (see DIRECT[Dr.LOOPBACK])
PDDCDC = 0x10  # DR14 bit 4
IAS_BUSY = 0x01  # DR31 (proslic.h IAS_BIT; any non-zero value means busy to wctdm.c)
RING_OSC_ON = 0x04  # DR34
RING_TA_EN, RING_TI_EN = 0x10, 0x08  # DR34 (twin)
LF_MASK, LFS_SHIFT = 0x07, 4  # DR64 (proslic.h SLIC_LF_SETMASK)
Q7_ON = 0x02  # DR66 (twin, from wctdm.c "Turn off Q7" writing 0x01 over reset 0x03)
AUTO_OPEN = 0x01  # DR67 AOPN: a power alarm opens the linefeed (wctdm.c #if 0 block, 0x0e)
AUTO_LOOP = 0x02  # DR67 (twin)
AUTO_RTRIP = 0x04  # DR67 ring trip switches to active by itself (twin)
AUTO_BATTERY = 0x08  # DR67 ABAT (wctdm.c: 0x07 disables automatic VBat switching)
HOOK_LCR, HOOK_RTP = 0x01, 0x02  # DR68
DCDC_CAL = 0x80  # DR93 bit 7
DCDC_OFF_MASK = 0x3F  # DR93 (twin)
CAL_RUN = 0x40  # DR96 CAL
CAL_GAIN_MISMATCH = 0x18  # DR96 CALR | CALT: the automatic gain-mismatch steps
CAL_CM_BALANCE = 0x01  # DR97 CALCM
IRQ1_RING_TA, IRQ1_RING_TI = 0x10, 0x20  # DR18 RING T1 / T2 (SiLabs API)
IRQ2_RTRIP, IRQ2_LOOP, IRQ2_PQ_SHIFT = 0x01, 0x02, 2  # DR19
IRQ3_CM_BAL = 0x04  # DR20


class Linefeed(IntEnum):
    """DR64 LF values (proslic.h SLIC_LF_*)."""

    OPEN = 0
    FORWARD_ACTIVE = 1
    FORWARD_OHT = 2
    TIP_OPEN = 3
    RINGING = 4
    REVERSE_ACTIVE = 5
    REVERSE_OHT = 6
    RING_OPEN = 7


REVERSE_LF = {Linefeed.REVERSE_ACTIVE, Linefeed.REVERSE_OHT}
FED_LF = {Linefeed.FORWARD_ACTIVE, Linefeed.FORWARD_OHT, Linefeed.REVERSE_ACTIVE, Linefeed.REVERSE_OHT}
AUDIO_LF = FED_LF  # active and on-hook transmission carry audio, either polarity

# -- scalings (sources above, per register) ---------------------------------------------
TIMER_TICK_S = 125e-6  # DR48..51
DEBOUNCE_TICK_MS = 1.25  # DR63/69/70
ILIM_BASE_MA, ILIM_STEP_MA = 20.0, 3.0  # DR71
VOC_STEP_V = 1.5  # DR72..75
LVS_STEP_V = 1.5  # DR78
LVS_REVERSE = 0x40  # DR78 (twin)
LCS_STEP_MA = 1.1  # DR79 (twin)
VSENSE_STEP_V = 0.376  # DR80..83
PWM_LSB_NS = 61.035  # DR92/93
RING_OSC_RATE = 1000.0  # ring oscillator coefficients (wctdm.c 0x7EF0 is about 20 Hz) (twin)
RING_AMP_FULL_V = 96.0  # RNGX full scale, peak volts (twin)
DC_PEAK_CAL_OK = range(0x02, 0x0E)  # DR107 after the DC-DC calibration (wctdm.c init_proslic)

# -- indirect registers -------------------------------------------------------------------
# name -> Si3210 address (proslic.h; 43 from wctdm.c indirect_regs; 88..93 the manual
# calibration accumulators of wctdm.c manual_calibrate; 97 the scratch pad of init_proslic;
# 99..104 FSK from Si321x_Registers.h)
SI3210_IR: dict[str, int] = {
    "DTMF_ROW_0_PEAK": 0, "DTMF_ROW_1_PEAK": 1, "DTMF_ROW2_PEAK": 2, "DTMF_ROW3_PEAK": 3,
    "DTMF_COL1_PEAK": 4, "DTMF_FWD_TWIST": 5, "DTMF_RVS_TWIST": 6, "DTMF_ROW_RATIO_TRES": 7,
    "DTMF_COL_RATIO_TRES": 8, "DTMF_ROW_2ND_ARM": 9, "DTMF_COL_2ND_ARM": 10,
    "DTMF_PWR_MIN_TRES": 11, "DTMF_OT_LIM_TRES": 12, "OSC1_COEF": 13, "OSC1X": 14, "OSC1Y": 15,
    "OSC2_COEF": 16, "OSC2X": 17, "OSC2Y": 18, "RING_V_OFF": 19, "RING_OSC": 20, "RING_X": 21,
    "RING_Y": 22, "PULSE_ENVEL": 23, "PULSE_X": 24, "PULSE_Y": 25, "RECV_DIGITAL_GAIN": 26,
    "XMIT_DIGITAL_GAIN": 27, "LOOP_CLOSE_TRES": 28, "RING_TRIP_TRES": 29, "COMMON_MIN_TRES": 30,
    "COMMON_MAX_TRES": 31, "PWR_ALARM_Q1Q2": 32, "PWR_ALARM_Q3Q4": 33, "PWR_ALARM_Q5Q6": 34,
    "LOOP_CLOSURE_FILTER": 35, "RING_TRIP_FILTER": 36, "TERM_LP_POLE_Q1Q2": 37,
    "TERM_LP_POLE_Q3Q4": 38, "TERM_LP_POLE_Q5Q6": 39, "CM_BIAS_RINGING": 40, "DCDC_MIN_V": 41,
    "DCDC_XTRA": 42, "LOOP_CLOSE_TRES_LOW": 43,
}
# name -> Si3215 address: the altaddr column of wctdm.c indirect_regs[] (255 there = the
# Si3215 has no such register, left out here); translate_3215 maps one to the other.
SI3215_IR: dict[str, int] = {
    "OSC1_COEF": 0, "OSC1X": 1, "OSC1Y": 2, "OSC2_COEF": 3, "OSC2X": 4, "OSC2Y": 5,
    "RING_V_OFF": 6, "RING_OSC": 7, "RING_X": 8, "RING_Y": 9, "RECV_DIGITAL_GAIN": 13,
    "XMIT_DIGITAL_GAIN": 14, "LOOP_CLOSE_TRES": 15, "RING_TRIP_TRES": 16, "COMMON_MIN_TRES": 17,
    "COMMON_MAX_TRES": 18, "PWR_ALARM_Q1Q2": 19, "PWR_ALARM_Q3Q4": 20, "PWR_ALARM_Q5Q6": 21,
    "LOOP_CLOSURE_FILTER": 22, "RING_TRIP_FILTER": 23, "TERM_LP_POLE_Q1Q2": 24,
    "TERM_LP_POLE_Q3Q4": 25, "TERM_LP_POLE_Q5Q6": 26, "CM_BIAS_RINGING": 27, "DCDC_MIN_V": 64,
    "LOOP_CLOSE_TRES_LOW": 66,
}
IR_MAPS = {"si3210": SI3210_IR, "si3215": SI3215_IR}
IR_SPACE = 256  # IAA is 8 bits wide
FILTER_NAMES = ("LOOP_CLOSURE_FILTER", "RING_TRIP_FILTER", "TERM_LP_POLE_Q1Q2",
                "TERM_LP_POLE_Q3Q4", "TERM_LP_POLE_Q5Q6")
FILTER_FLUSHED = 0x8000  # wctdm.c init_proslic: "Flush ProSLIC digital filters by setting to clear"
POWER_PAIRS = (("PWR_ALARM_Q1Q2", (1, 2)), ("PWR_ALARM_Q3Q4", (3, 4)), ("PWR_ALARM_Q5Q6", (5, 6)))

# The whole table the references load and verify (wctdm.c indirect_regs[], initial value):
# name -> value. The twin uses it as the reference sequence in its tests and to size the
# power each transistor pair dissipates in normal service (half its reference threshold).
# RECV_DIGITAL_GAIN is DAHDI's 0x2000 (-6 dB toward the phone, see GAIN_UNITY); the twin
# accepts any gain a driver loads and plays it.
WCTDM_INDIRECT: dict[str, int] = {
    "DTMF_ROW_0_PEAK": 0x55C2, "DTMF_ROW_1_PEAK": 0x51E6, "DTMF_ROW2_PEAK": 0x4B85,
    "DTMF_ROW3_PEAK": 0x4937, "DTMF_COL1_PEAK": 0x3333, "DTMF_FWD_TWIST": 0x0202,
    "DTMF_RVS_TWIST": 0x0202, "DTMF_ROW_RATIO_TRES": 0x0198, "DTMF_COL_RATIO_TRES": 0x0198,
    "DTMF_ROW_2ND_ARM": 0x0611, "DTMF_COL_2ND_ARM": 0x0202, "DTMF_PWR_MIN_TRES": 0x00E5,
    "DTMF_OT_LIM_TRES": 0x0A1C, "OSC1_COEF": 0x7B30, "OSC1X": 0x0063, "OSC1Y": 0x0000,
    "OSC2_COEF": 0x7870, "OSC2X": 0x007D, "OSC2Y": 0x0000, "RING_V_OFF": 0x0000,
    "RING_OSC": 0x7EF0, "RING_X": 0x0160, "RING_Y": 0x0000, "PULSE_ENVEL": 0x2000,
    "PULSE_X": 0x2000, "PULSE_Y": 0x0000, "RECV_DIGITAL_GAIN": 0x2000,
    "XMIT_DIGITAL_GAIN": 0x4000, "LOOP_CLOSE_TRES": 0x1000, "RING_TRIP_TRES": 0x3600,
    "COMMON_MIN_TRES": 0x1000, "COMMON_MAX_TRES": 0x0200, "PWR_ALARM_Q1Q2": 0x07C0,
    "PWR_ALARM_Q3Q4": 0x2600, "PWR_ALARM_Q5Q6": 0x1B80, "LOOP_CLOSURE_FILTER": 0x8000,
    "RING_TRIP_FILTER": 0x0320, "TERM_LP_POLE_Q1Q2": 0x008C, "TERM_LP_POLE_Q3Q4": 0x0100,
    "TERM_LP_POLE_Q5Q6": 0x0010, "CM_BIAS_RINGING": 0x0C00, "DCDC_MIN_V": 0x0C00,
    "DCDC_XTRA": 0x1000, "LOOP_CLOSE_TRES_LOW": 0x1000,
}


# What the indirect registers hold after RESET. No reference gives a power-on value for
# them: every one loads the whole table right after reset, before anything else (wctdm.c
# wctdm_init_proslic, first step after the sanity check; Silicon Labs si321x_intf.c
# Si321x_Init "STEP 9 AN35", before the DC-DC power-up of STEP 12; the daytona FXS
# driver "Put initial values into indirect registers"). The twin takes 0 for all of them:
# thresholds, ring coefficients and the audio gains alike. (twin; confirm on hardware: read
# IR26/IR27, Si3215 IR13/IR14, right after RESET)
IR_RESET = 0x0000

# -- digital audio gains --------------------------------------------------------------------
# RECV_DIGITAL_GAIN (PCM -> phone) and XMIT_DIGITAL_GAIN (phone -> PCM), at the part's own
# address (Si3210 IR26/IR27, Si3215 IR13/IR14: wctdm.c indirect_regs altaddr). 0x4000 is
# 0 dB: Silicon Labs si321x_constants.c (ProSLIC API Tool) preset {AUDIOGAIN_0DB, 0x4000},
# which Si321x_RXAudioGainSetup / Si321x_TXAudioGainSetup (si321x_intf.c) write to
# RECV_DIGITAL_GAIN / XMIT_DIGITAL_GAIN; si321x_intf.c INIT_IR26 = INIT_IR27 = 0x4000;
# the daytona FXS driver "unity digital gain = 0x4000". DAHDI's 0x2000 ("playback volume
# set lower", wctdm.c indirect_regs, the 0x4000 line commented out beside it) is half of
# that: -6 dB toward the phone. The twin reads the register as a linear multiplier,
# value / 0x4000, the output saturating at 16 bits. (twin's reading of the scale; confirm
# on hardware with a -10 dBm0 tone on DRX and a level meter on tip/ring)
GAIN_UNITY = 0x4000
RX_GAIN, TX_GAIN = "RECV_DIGITAL_GAIN", "XMIT_DIGITAL_GAIN"

# The thresholds and gains that must be loaded before the line is fed (a fed or ringing
# linefeed): the loop-closure, ring-trip and common-mode thresholds the chip detects with,
# the power-alarm thresholds that protect the feed transistors, and the audio gains
# (wctdm.c indirect_regs; the references load them before the first linefeed, see IR_RESET).
LOADED_BEFORE_FEED = ("LOOP_CLOSE_TRES", "RING_TRIP_TRES", "COMMON_MIN_TRES", "COMMON_MAX_TRES",
                      "PWR_ALARM_Q1Q2", "PWR_ALARM_Q3Q4", "PWR_ALARM_Q5Q6", RX_GAIN, TX_GAIN)


def gain_db(value: int) -> float:
    """A digital gain register's value in dB (see GAIN_UNITY); -inf for 0."""
    return 20 * math.log10(value / GAIN_UNITY) if value else -math.inf


def translate_3215(si3210_address: int) -> int | None:
    """The Si3215 address of an Si3210 indirect address, as wctdm.c translate_3215 does
    (None where the Si3215 has no such register: DAHDI then skips the access; an address
    outside the table is passed through unchanged, as in DAHDI)."""
    for name, addr in SI3210_IR.items():
        if addr == si3210_address:
            return SI3215_IR.get(name)
    return si3210_address


# -- the board around the chip ------------------------------------------------------------
@dataclass(frozen=True)
class BoardParts:
    """What the card around the ProSLIC is built with, as far as the chip can be hurt by it.

    dcdc_period: DR92 values the board's DC-DC inductor and switching transistor run with;
        the references write 0xff (wctdm.c), 0xc0 (base.c), 0xff then 0x7f (SiLabs API,
        inductor version) and 0x60 (SiLabs API, M parts): the default board takes
        0x60..0xff. (twin's window; confirm on hardware with the board's BOM.)
    dcdc_min_off: DR93 bits 5..0: the references write 0x19 (wctdm.c), 0x12/0x14 (SiLabs
        API); 0x38 is for the M parts' transformer (twin's window 0x10..0x1f).
    battery_switching: the board has a Q7 rated for automatic battery switching. DAHDI's
        boards do not (wctdm.c disables it "to prevent Q7 from accidently turning on and
        burning out"); the default board is built the same way.
    """

    dcdc_period: tuple[int, int] = (0x60, 0xFF)
    dcdc_min_off: tuple[int, int] = (0x10, 0x1F)
    battery_switching: bool = False

    @classmethod
    def from_dict(cls, parts: dict) -> BoardParts:
        """From a table such as {"dcdc_period": [0x60, 0xff], "battery_switching": false}."""
        known = {"dcdc_period", "dcdc_min_off", "battery_switching"}
        unknown = set(parts) - known
        if unknown:
            raise ValueError(f"ProSLIC board parts: unknown {sorted(unknown)}; known: {sorted(known)}")
        kw: dict[str, Any] = {k: tuple(v) if k != "battery_switching" else bool(v) for k, v in parts.items()}
        return cls(**kw)

    def period_ok(self, value: int) -> bool:
        return self.dcdc_period[0] <= value <= self.dcdc_period[1]

    def min_off_ok(self, value: int) -> bool:
        return self.dcdc_min_off[0] <= (value & DCDC_OFF_MASK) <= self.dcdc_min_off[1]


DEFAULT_BOARD = BoardParts()
