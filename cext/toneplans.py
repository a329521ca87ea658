"""Per-country tone plans: call-progress tones, ring cadences, caller-ID standard.

Pure data, read by the tone generators and detector (cext), the SLIC driver (ring
cadence), the virtual central office and the config schema (the list of countries).
Frequencies in Hz, levels in dBm0 per component, cadences as (on, off, on, off, ...)
seconds repeated; an empty cadence is a continuous tone. `mod_hz` is the modulating
frequency of tones written "400*25" in national specifications (400 Hz amplitude-
modulated by 25 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tone:
    freqs: tuple[float, ...]
    level_dbm0: float
    cadence: tuple[float, ...] = ()
    mod_hz: float = 0.0


@dataclass(frozen=True)
class CountryPlan:
    code: str
    name: str
    tones: dict[str, Tone]
    ring_cadence: tuple[float, ...]
    callerid: str  # "bell202", "v23" or "dtmf"
    callerid_when: str  # "after_first_ring" or "before_ring"
    emergency: tuple[str, ...] = field(default_factory=tuple)


TONE_NAMES = ("dial", "ringback", "busy", "reorder", "call_waiting", "congestion")

PLANS: dict[str, CountryPlan] = {
    "us": CountryPlan(
        code="us",
        name="United States (ANSI T1.401 / GR-506)",
        tones={
            "dial": Tone((350, 440), -13),
            "ringback": Tone((440, 480), -19, (2.0, 4.0)),
            "busy": Tone((480, 620), -24, (0.5, 0.5)),
            "reorder": Tone((480, 620), -24, (0.25, 0.25)),
            "call_waiting": Tone((440,), -13, (0.3, 9.7)),
            "congestion": Tone((480, 620), -24, (0.2, 0.3)),
        },
        ring_cadence=(2.0, 4.0),
        callerid="bell202",
        callerid_when="after_first_ring",
        emergency=("911",),
    ),
}

COUNTRIES: tuple[str, ...] = tuple(PLANS)


def plan(code: str) -> CountryPlan:
    """The plan for a country code; KeyError names the known codes."""
    try:
        return PLANS[code]
    except KeyError:
        raise KeyError(f"{code!r} is not a known country; known: {', '.join(COUNTRIES)}") from None
