"""Si3050 system-side DAA (with Si3018/Si3019 line side): register numbers, bits, scaling.

The driver's register file (drivers/chips/si3050.py); the twin keeps its own table so that
it can disagree. Names follow the Si3050 datasheet register map; reset values are the
datasheet's where confirmed (Control 2 = 0x03, DAA Control 2 = 0x10, ring validation
0x96 / 0x19, register 31 = 0x20), plausible otherwise.
"""

from __future__ import annotations

# -- SPI framing: control byte, register, data; chip-select rises after EACH byte (one
# SpiDevice.transfer() per byte): wctdm.c __write_8bits/__read_8bits, OAK pidma.c
# __spi_write/__spi_read, wctdm24xxp/base.c _cmd_dequeue (three command byte slots).
# Control byte: bit 5 always 1, bit 6 read, low bits the daisy-chain channel (0 here). --
SPI_CTRL_WRITE = 0x20  # wctdm.c __wctdm_setreg, pitdm.c __wctdm_setreg (0x20 | cs)
SPI_CTRL_READ = 0x60  # wctdm.c __wctdm_getreg, pitdm.c __wctdm_getreg (0x60 | cs)
SPI_READ_FILL = 0xFF  # pidma.c __spi_read clocks 0xff out while it reads
SPI_FRAME = 3  # bytes per access, each in its own chip-select frame
REG_MASK = 0x7F  # "reg & 0x7f" in every reference

# -- registers --
CONTROL1 = 1  # SR (soft reset)
CONTROL2 = 2  # INTE, INTP, WDTEN, AL, RDI, HBE, RXE
INT_MASK = 3  # same bit layout as INT_SOURCE
INT_SOURCE = 4  # RDTI ROVI FDTI BTDI DODI LCSOI TGDI POLI; write 0 to clear a bit
DAA_CONTROL1 = 5  # RDTN RDTP ONHM RDT OH
DAA_CONTROL2 = 6  # PDL PDN
DAA_CONTROL3 = 10  # DDL (digital data loopback; wctdm24xxp base.c digitalloopback: 0x01)
SYS_LINE_REV = 11  # LSID[3:0] (line-side device id) | REVA[3:0] (system-side revision)
LINE_STATUS = 12  # FDT (frame detect: isolation link up), LCS[4:0] (coarse loop current)
LINE_REV = 13  # LRV[3:0] in bits 5:2
INTL_CONTROL1 = 16  # OHS, IIRE, RZ, RT
INTL_CONTROL2 = 17  # CALZ, MCAL, CALD, OPE, BTE, ROV, BTD
INTL_CONTROL3 = 18  # RFWE (full-wave ring detector)
INTL_CONTROL4 = 19  # OVL, DOD, OPD (status)
RING_VALID1 = 22  # RDLY[1:0] | RMX[5:0]
RING_VALID2 = 23  # RDLY[2] | RTO[3:0] | RCC[2:0]
RING_VALID3 = 24  # RNGV | RAS[5:0]
DC_TERM = 26  # DCV[1:0] MINI[1:0] ILIM DCR
LOOP_CURRENT = 28  # LCS2[7:0], 1.1 mA per bit
LINE_VOLTAGE = 29  # LVS[7:0], signed (two's complement), 1 V per bit; sign = polarity
AC_TERM = 30  # ACIM[3:0]
DAA_CONTROL5 = 31  # FULL FOH[1:0] OHS2 FILT LVFD
PCM_SPI_MODE = 33  # PCML PCME PCMF[1:0]
PCM_TX_START_LO, PCM_TX_START_HI = 34, 35
PCM_RX_START_LO, PCM_RX_START_HI = 36, 37
TX_GAIN2, RX_GAIN2 = 38, 39  # whole dB (wctdm_set_hwgain)
TX_GAIN3, RX_GAIN3 = 40, 41  # tenths of a dB (wctdm_set_hwgain)

# -- bits --
SR = 0x80
INTE, INTP, WDTEN, AL, RDI, HBE, RXE = 0x80, 0x40, 0x20, 0x08, 0x04, 0x02, 0x01
RDTI, ROVI, FDTI, BTDI, DODI, LCSOI, TGDI, POLI = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
RDTN, RDTP, ONHM, RDT, OH = 0x40, 0x20, 0x08, 0x04, 0x01
PDL, PDN = 0x10, 0x08
FDT = 0x40
LCS_MASK = 0x1F
LCS_OVERLOAD = 0x1F
OHS, RZ, RT = 0x40, 0x02, 0x01
RFWE = 0x02
DOD = 0x02
RNGV = 0x80
OHS2 = 0x08
PCML = 0x80  # Si3050 datasheet, register 33 bit 7: PCM loopback (confirm on hardware)
PCME = 0x20  # PCM enable
PCMF_ALAW = 0x00  # PCMF = 00: A-law (wctdm.c: alawoverride writes 33 = 0x20)
PCMF_ULAW = 0x08  # PCMF = 01: mu-law (wctdm.c: "Enable PCM, ulaw", 33 = 0x28)
PCMF_LINEAR16 = 0x18  # PCMF = 11: 16-bit linear
PCM_LAW_BITS = {"alaw": PCME | PCMF_ALAW, "ulaw": PCME | PCMF_ULAW}
DDL = 0x01  # register 10
FULL = 0x80  # register 31: full-scale transmit/receive (Si3019 only; wants DCV = 11)
FOH_128MS = 0x20  # register 31 FOH = 01
FILT, LVFD = 0x02, 0x01  # register 31
SOFT_RESET = SR  # wctdm_init_voicedaa: wctdm_setreg(wc, card, 1, 0x80)
LSID_MASK = 0xF0  # register 11: wctdm_init_voicedaa waits for (reg 11 & 0xf0) != 0
REVA_MASK = 0x0F

# -- scaling (datasheet) --
LCS_MA_PER_BIT = 3.3  # LCS[4:0] in register 12
LCS2_MA_PER_BIT = 1.1  # LCS2 in register 28
LVS_V_PER_BIT = 1.0

# -- identities --
LSID_NONE = 0x0  # line-side id reads 0 until the isolation link is up
LSID_SI3018 = 0x1
LSID_SI3019 = 0x3
LINE_SIDE_NAMES = {LSID_SI3018: "Si3018", LSID_SI3019: "Si3019"}
CONTROL2_RESET = HBE | RXE  # 0x03: what a freshly reset Si3050 reads

# -- ring validation timing codes --
RCC_MS = (100, 150, 200, 256, 384, 512, 640, 1024)  # ring confirmation count
RTO_MS = (80,) + tuple(128 * n for n in range(1, 16))  # ring timeout: 80 ms, then 128 ms steps
RDLY_MS = tuple(256 * n for n in range(8))  # delay from validation to RDT
RING_TICK_MS = 2.0  # RAS/RMX count in 2 ms ticks

# Ring detector: wctdm_init_voicedaa without fwringdetect writes 18 = 0 ("Set to the
# device defaults", half-wave) and 24 = 0x19 (RNGV off); we keep 18 = 0 but turn on
# the chip's own ring validation in 22-24 (Si3050 datasheet, "Ring Validation").
RING_DETECT_HALF_WAVE = 0x00


def hwgain(tenth_db: int) -> tuple[int, int]:
    """(whole-dB register, tenths register) for a gain in tenths of a dB, exactly as
    wctdm_set_hwgain: -15.0..0 dB -> 16 + dB, 16 + tenths (bit 4 = attenuate);
    0.1..12.0 dB -> dB, tenths. 0 dB is (0x10, 0x10), as DAHDI writes it."""
    if -150 <= tenth_db <= 0:
        return 16 + (-tenth_db) // 10, 16 + (-tenth_db) % 10
    if 0 < tenth_db <= 120:
        return tenth_db // 10, tenth_db % 10
    raise ValueError(f"DAA gain {tenth_db / 10:+.1f} dB: the Si3050 takes -15.0 to +12.0 dB")


RESET_VALUES = {
    CONTROL2: CONTROL2_RESET,
    DAA_CONTROL2: PDL,
    RING_VALID1: 0x96,
    RING_VALID2: 0x2D,
    RING_VALID3: 0x19,
    DAA_CONTROL5: 0x20,
}


def rcc_code(ms: float) -> int:
    """The largest ring confirmation time not above `ms` (the chip rejects shorter bursts)."""
    fits = [i for i, t in enumerate(RCC_MS) if t <= ms]
    return fits[-1] if fits else 0


def ring_window(f_min: float, f_max: float) -> tuple[int, int]:
    """RAS and RMX (2 ms ticks) accepting ring frequencies f_min..f_max (two events a cycle).

    A new TIP/RING event must come before RAS ticks run out (so not slower than f_min)
    and not while more than RMX ticks remain (so not faster than f_max); one tick of
    margin each side, as the datasheet advises.
    """
    ras = int(1000.0 / (2 * f_min) / RING_TICK_MS) + 2
    fastest = 1000.0 / (2 * f_max) / RING_TICK_MS
    rmx = max(0, int(ras - fastest) + 1)
    return min(ras, 0x3F), min(rmx, 0x3F)


def to_signed(byte: int) -> int:
    return byte - 256 if byte & 0x80 else byte


def to_byte(value: int) -> int:
    return max(-128, min(127, int(value))) & 0xFF
