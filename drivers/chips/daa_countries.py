"""The DAA's per-country line settings: every row of DAHDI's fxo_modes.h, every field in the
struct's order, each citing its source line; the register values a row gives, computed as
wctdm_init_voicedaa computes them, so the driver, its selftest and the tests share one
reading. COUNTRY_MODES maps our country codes (cext.toneplans) to rows; a line may name a
row directly (lines.<fxo>.fxo_mode). Pure data.
Sources: DAHDI fxo_modes.h, wctdm.c (wctdm_init_voicedaa, wctdm_voicedaa_check_hook),
wctdm24xxp/base.c; OAK pitdm.c.
"""

from __future__ import annotations

from dataclasses import dataclass

# wctdm_init_voicedaa: reg31 = 0xa3 (0xe3 with fastpickup) | ohs2 << 3, i.e.
# FULL (bit 7) | FOH = 01, 128 ms (bits 6:5) | FILT (bit 1) | LVFD (bit 0)
# (Si3050 datasheet, register 31: FULL full-scale mode, FOH fast off-hook counter).
# Known disagreement, kept as DAHDI has it: the datasheet says "When this bit is set, the
# DCV[1:0] bits (Register 26) should be set to all 1s to avoid distortion at low loop
# currents", yet DAHDI sets FULL for every row, also the 14 rows with DCV 0 (AUSTRALIA,
# BRAZIL, CHINA, EGYPT, JAPAN, ...), and FULL is for the Si3019 line side only (an
# Si3018 ignores it). (confirm on hardware: distortion at low loop current on such lines)
REG31_BASE = 0xA3


@dataclass(frozen=True)
class FxoMode:
    """One row of fxo_modes.h (struct fxo_mode), field for field."""

    name: str
    ohs: int  # on-hook speed, register 16 bit 6
    ohs2: int  # on-hook speed 2, register 31 bit 3
    rz: int  # ringer impedance, register 16 bit 1
    rt: int  # ring threshold, register 16 bit 0
    ilim: int  # current limit (TBR21 60 mA), register 26 bit 1
    dcv: int  # tip/ring voltage adjust, register 26 bits 7:6
    mini: int  # minimum operating loop current, register 26 bits 5:4
    acim: int  # AC termination, register 30 bits 3:0
    ring_osc: int  # ProSLIC ring oscillator (FXS, unused by the DAA)
    ring_x: int  # ProSLIC ring amplitude (FXS, unused by the DAA)
    battdebounce: int  # ms
    battalarm: int  # ms
    battthresh: int  # volts of |LVS| (register 29)

    @property
    def reg16(self) -> int:
        """International Control 1 (wctdm_init_voicedaa: ohs << 6 | rz << 1 | rt)."""
        return (self.ohs << 6) | (self.rz << 1) | self.rt

    @property
    def reg26(self) -> int:
        """DC Termination Control (wctdm_init_voicedaa: dcv << 6 | mini << 4 | ilim << 1)."""
        return (self.dcv << 6) | (self.mini << 4) | (self.ilim << 1)

    @property
    def reg30(self) -> int:
        """AC Termination Control (wctdm_init_voicedaa: acim)."""
        return self.acim

    @property
    def reg31(self) -> int:
        """DAA Control 5 (wctdm_init_voicedaa: 0xa3 | ohs2 << 3; FULL is bit 7 of 0xa3)."""
        return REG31_BASE | (self.ohs2 << 3)

    @property
    def tx_gain_tenth_db(self) -> int:
        """wctdm_init_voicedaa (wctdm.c, pitdm.c): "NZ -- crank the tx gain up",
        wctdm_set_hwgain(wc, card, 7, 1): +0.7 dB (the gain is in tenths of a dB)."""
        return 7 if self.name == "NEWZEALAND" else 0


def _row(name: str, *fields: int) -> FxoMode:
    return FxoMode(name, *fields)


# columns: name, ohs, ohs2, rz, rt, ilim, dcv, mini, acim, ring_osc, ring_x,
#          battdebounce, battalarm, battthresh (fields the row leaves out are 0)
FXO_MODES: dict[str, FxoMode] = {m.name: m for m in (
    _row("FCC",          0, 0, 0, 1, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "FCC"
    _row("TBR21",        0, 0, 0, 0, 1, 3, 0, 0x2, 0x7E6C, 0x023A, 64, 1000, 3),  # fxo_modes.h "TBR21"
    _row("ARGENTINA",    0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "ARGENTINA"
    _row("AUSTRALIA",    1, 0, 0, 0, 0, 0, 3, 0x3, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "AUSTRALIA"
    _row("AUSTRIA",      0, 1, 0, 0, 1, 3, 0, 0x3, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "AUSTRIA"
    _row("BAHRAIN",      0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "BAHRAIN"
    _row("BELGIUM",      0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "BELGIUM"
    _row("BRAZIL",       0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "BRAZIL"
    _row("BULGARIA",     0, 0, 0, 0, 1, 3, 0, 0x3, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "BULGARIA"
    _row("CANADA",       0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "CANADA"
    _row("CHILE",        0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "CHILE"
    _row("CHINA",        0, 0, 0, 0, 0, 0, 3, 0xF, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "CHINA"
    _row("COLOMBIA",     0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "COLOMBIA"
    _row("CROATIA",      0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "CROATIA"
    _row("CYPRUS",       0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "CYPRUS"
    _row("CZECH",        0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "CZECH"
    _row("DENMARK",      0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "DENMARK"
    _row("ECUADOR",      0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "ECUADOR"
    _row("EGYPT",        0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "EGYPT"
    _row("ELSALVADOR",   0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "ELSALVADOR"
    _row("FINLAND",      0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "FINLAND"
    _row("FRANCE",       0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "FRANCE"
    _row("GERMANY",      0, 1, 0, 0, 1, 3, 0, 0x3, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "GERMANY"
    _row("GREECE",       0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "GREECE"
    _row("GUAM",         0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "GUAM"
    _row("HONGKONG",     0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "HONGKONG"
    _row("HUNGARY",      0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "HUNGARY"
    _row("ICELAND",      0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "ICELAND"
    _row("INDIA",        0, 0, 0, 0, 0, 3, 0, 0x4, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "INDIA"
    _row("INDONESIA",    0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "INDONESIA"
    _row("IRELAND",      0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "IRELAND"
    _row("ISRAEL",       0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "ISRAEL"
    _row("ITALY",        0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "ITALY"
    _row("JAPAN",        0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "JAPAN"
    _row("JORDAN",       0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "JORDAN"
    _row("KAZAKHSTAN",   0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "KAZAKHSTAN"
    _row("KUWAIT",       0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "KUWAIT"
    _row("LATVIA",       0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "LATVIA"
    _row("LEBANON",      0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "LEBANON"
    _row("LUXEMBOURG",   0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "LUXEMBOURG"
    _row("MACAO",        0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "MACAO"
    _row("MALAYSIA",     0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "MALAYSIA"
    _row("MALTA",        0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "MALTA"
    _row("MEXICO",       0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "MEXICO"
    _row("MOROCCO",      0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "MOROCCO"
    _row("NETHERLANDS",  0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "NETHERLANDS"
    _row("NEWZEALAND",   0, 0, 0, 0, 0, 3, 0, 0x4, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "NEWZEALAND"
    _row("NIGERIA",      0, 0, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "NIGERIA"
    _row("NORWAY",       0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "NORWAY"
    _row("OMAN",         0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "OMAN"
    _row("PAKISTAN",     0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "PAKISTAN"
    _row("PERU",         0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "PERU"
    _row("PHILIPPINES",  0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "PHILIPPINES"
    _row("POLAND",       0, 0, 1, 1, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "POLAND"
    _row("PORTUGAL",     0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "PORTUGAL"
    _row("ROMANIA",      0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "ROMANIA"
    _row("RUSSIA",       0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "RUSSIA"
    _row("SAUDIARABIA",  0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SAUDIARABIA"
    _row("SINGAPORE",    0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SINGAPORE"
    _row("SLOVAKIA",     0, 0, 0, 0, 0, 3, 0, 0x3, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SLOVAKIA"
    _row("SLOVENIA",     0, 0, 0, 0, 0, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SLOVENIA"
    _row("SOUTHAFRICA",  1, 0, 1, 0, 0, 3, 0, 0x3, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SOUTHAFRICA"
    _row("SOUTHKOREA",   0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SOUTHKOREA"
    _row("SPAIN",        0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SPAIN"
    _row("SWEDEN",       0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SWEDEN"
    _row("SWITZERLAND",  0, 1, 0, 0, 1, 3, 0, 0x2, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SWITZERLAND"
    _row("SYRIA",        0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "SYRIA"
    _row("TAIWAN",       0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "TAIWAN"
    _row("THAILAND",     0, 0, 0, 0, 0, 0, 3, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "THAILAND"
    _row("UAE",          0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "UAE"
    _row("UK",           0, 1, 0, 0, 1, 3, 0, 0x5, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "UK"
    _row("USA",          0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "USA"
    _row("YEMEN",        0, 0, 0, 0, 0, 3, 0, 0x0, 0x0000, 0x0000, 64, 1000, 3),  # fxo_modes.h "YEMEN"
)}

# Our country codes (cext.toneplans) -> the fxo_modes.h row a DAHDI installer would pick.
# "us" takes "FCC", DAHDI's default opermode (wctdm.c: static char *opermode = "FCC";
# the row's comment: "US, Canada"), not the "USA" row (the same but RT = 0).
COUNTRY_MODES: dict[str, str] = {
    "us": "FCC",
    "uk": "UK",  # fxo_modes.h "UK": ACIM 0x5, OHS2 (not generic TBR21's ACIM 0x2)
    "de": "GERMANY",  # ACIM 0x3, OHS2
    "fr": "FRANCE",  # ACIM 0x2, OHS2
    "in": "INDIA",
    "au": "AUSTRALIA",
}

# Ring frequency window for the chip's ring validation (registers 22-24), per country
# code. fxo_modes.h carries none (DAHDI validates rings in software); FCC part 68 allows
# 15.3-68 Hz, the European and Commonwealth networks ring at 16-50 Hz (ETSI ES 203 021
# / the former TBR21 countries), so 15-55 Hz with margin there.
RING_HZ: dict[str, tuple[float, float]] = {
    "us": (15.0, 68.0),
    "uk": (15.0, 55.0),
    "de": (15.0, 55.0),
    "fr": (15.0, 55.0),
    "in": (15.0, 55.0),
    "au": (15.0, 55.0),
}
WIDEST_RING_HZ = (15.0, 68.0)


def mode_names() -> tuple[str, ...]:
    return tuple(FXO_MODES)


def mode_for(country: str, fxo_mode: str = "") -> FxoMode:
    """The fxo_modes.h row of a line: its own `fxo_mode` if set, else its country's.
    KeyError (naming the choices) for a name or code with no row."""
    name = fxo_mode.upper() if fxo_mode else COUNTRY_MODES.get(country, "")
    if name not in FXO_MODES:
        what = f"fxo_mode {fxo_mode!r}" if fxo_mode else f"country {country!r}"
        raise KeyError(f"{what} has no row in fxo_modes.h; known: {', '.join(FXO_MODES)}")
    return FXO_MODES[name]


def ring_hz(country: str) -> tuple[float, float]:
    return RING_HZ.get(country, WIDEST_RING_HZ)
