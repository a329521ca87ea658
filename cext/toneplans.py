"""Per-country tone plans: call-progress tones, ring cadences, caller-ID standard. Pure data.

Hz; dBm0 per component; cadences (on, off, ...) seconds repeated, empty = continuous.
`mod_hz`/`mod_depth`: tones written "400*25" (400 Hz AM by 25 Hz; depth 0.5 where the
specification gives none). Levels marked "level: typical" are the network's usual ones.
Sources: ITU-T E.180 Supplement 2; ETSI TR 101 041-2; cited per plan below.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tone:
    freqs: tuple[float, ...]
    level_dbm0: float
    cadence: tuple[float, ...] = ()
    mod_hz: float = 0.0
    mod_depth: float = 0.5


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
    # ANSI T1.401 / Telcordia GR-506 "Precise Tone Plan" (also ITU-T E.300 Suppl. 3,
    # "North American precise audible tone plan"): levels per frequency. Reorder is the
    # local 120 IPM fast busy; congestion is the toll "no circuit" variant (0.2/0.3 s).
    # Caller ID: Telcordia GR-30-CORE, Bell 202 FSK between the first and second ring.
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
    # BT SIN 350 (tones) as listed in E.180 Suppl. 2 and R.S. Brown, POEEJ 71(2) 1978:
    # dial 350+450 continuous; ringing 400+450 0.4/0.2/0.4/2.0; busy 400 0.375/0.375;
    # number unobtainable 400 continuous (our "reorder"); equipment engaged (congestion)
    # 400 0.4/0.35/0.225/0.525 (BS 6305 puts the 0.225 s burst 6 dB higher; one level
    # here). Call waiting per BT: 400 Hz 0.1 s every 4 s (level: typical).
    # Caller ID: BT SIN 227, V.23 FSK before the first ring (after a line reversal and
    # a dual-tone alert signal); ring cadence 0.4/0.2/0.4/2.0.
    "uk": CountryPlan(
        code="uk",
        name="United Kingdom (BT SIN 350 / SIN 227)",
        tones={
            "dial": Tone((350, 450), -22),
            "ringback": Tone((400, 450), -22, (0.4, 0.2, 0.4, 2.0)),
            "busy": Tone((400,), -22, (0.375, 0.375)),
            "reorder": Tone((400,), -22),
            "call_waiting": Tone((400,), -22, (0.1, 4.0)),
            "congestion": Tone((400,), -22, (0.4, 0.35, 0.225, 0.525)),
        },
        ring_cadence=(0.4, 0.2, 0.4, 2.0),
        callerid="v23",
        callerid_when="before_ring",
        emergency=("999", "112"),
    ),
    # Deutsche Telekom 1 TR 110 as listed in E.180 Suppl. 2 (Germany, tones "I"):
    # 425 Hz throughout; dial continuous; ringing 1.0/4.0; busy 0.48/0.48; congestion
    # 0.24/0.24; call waiting 0.2/0.2/0.2/5.0. Germany announces an unobtainable number
    # with the 900/1400/1800 Hz special information tone (sequential, not expressible
    # here) or the congestion tone, so "reorder" is the congestion cadence.
    # Levels: ETSI ES 201 970 recommends -10 dBm0 (level: typical).
    # Caller ID: ETSI EN 300 659-1, V.23 FSK after the first ring (1 TR 110 / 1 TR 114).
    "de": CountryPlan(
        code="de",
        name="Germany (1 TR 110 / ETSI EN 300 659)",
        tones={
            "dial": Tone((425,), -10),
            "ringback": Tone((425,), -10, (1.0, 4.0)),
            "busy": Tone((425,), -10, (0.48, 0.48)),
            "reorder": Tone((425,), -10, (0.24, 0.24)),
            "call_waiting": Tone((425,), -10, (0.2, 0.2, 0.2, 5.0)),
            "congestion": Tone((425,), -10, (0.24, 0.24)),
        },
        ring_cadence=(1.0, 4.0),
        callerid="v23",
        callerid_when="after_first_ring",
        emergency=("112", "110"),
    ),
    # France Telecom (STI 1, as listed in E.180 Suppl. 2): 440 Hz; dial continuous;
    # ringing ("retour d'appel") 1.5/3.5; busy ("occupation") 0.5/0.5; congestion
    # ("encombrement") and number unobtainable 0.25/0.25; call waiting 0.3 s then 10 s.
    # Caller ID: ETSI EN 300 659-1 as used by France Telecom, V.23 before the first ring.
    "fr": CountryPlan(
        code="fr",
        name="France (France Telecom STI 1 / ETSI EN 300 659)",
        tones={
            "dial": Tone((440,), -10),
            "ringback": Tone((440,), -10, (1.5, 3.5)),
            "busy": Tone((440,), -10, (0.5, 0.5)),
            "reorder": Tone((440,), -10, (0.25, 0.25)),
            "call_waiting": Tone((440,), -10, (0.3, 10.0)),
            "congestion": Tone((440,), -10, (0.25, 0.25)),
        },
        ring_cadence=(1.5, 3.5),
        callerid="v23",
        callerid_when="before_ring",
        emergency=("112", "15", "17", "18"),
    ),
    # India (TEC / DoT, as listed in E.180 Suppl. 2): dial 400*25 continuous; ringing
    # 400*25 0.4/0.2/0.4/2.0; busy 400 0.75/0.75; number unobtainable 400 2.5/0.5;
    # congestion 400 0.25/0.25 (level: typical); call waiting 400 0.2/0.1/0.2/7.5.
    # Caller ID: DTMF-CLIP (ETSI ES 200 778-1 annex B style) before the first ring.
    "in": CountryPlan(
        code="in",
        name="India (TEC / DoT)",
        tones={
            "dial": Tone((400,), -15, (), 25.0),
            "ringback": Tone((400,), -15, (0.4, 0.2, 0.4, 2.0), 25.0),
            "busy": Tone((400,), -15, (0.75, 0.75)),
            "reorder": Tone((400,), -15, (2.5, 0.5)),
            "call_waiting": Tone((400,), -15, (0.2, 0.1, 0.2, 7.5)),
            "congestion": Tone((400,), -15, (0.25, 0.25)),
        },
        ring_cadence=(0.4, 0.2, 0.4, 2.0),
        callerid="dtmf",
        callerid_when="before_ring",
        emergency=("112", "100"),
    ),
    # Australia, ACIF (now Communications Alliance) S002 / Telstra: dial 425*25
    # continuous; ringing 425*25 0.4/0.2/0.4/2.0; busy 425 0.375/0.375; number
    # unobtainable 425 2.5/0.5 (our "reorder"); congestion 425 0.375/0.375 with every
    # other burst 10 dB lower (one level here); call waiting 425 0.2/0.2/0.2/4.4.
    # Caller ID: ACIF S030 / Telstra, V.23 FSK before the first ring.
    "au": CountryPlan(
        code="au",
        name="Australia (ACIF S002 / S030)",
        tones={
            "dial": Tone((425,), -13, (), 25.0),
            "ringback": Tone((425,), -13, (0.4, 0.2, 0.4, 2.0), 25.0),
            "busy": Tone((425,), -13, (0.375, 0.375)),
            "reorder": Tone((425,), -13, (2.5, 0.5)),
            "call_waiting": Tone((425,), -13, (0.2, 0.2, 0.2, 4.4)),
            "congestion": Tone((425,), -13, (0.375, 0.375)),
        },
        ring_cadence=(0.4, 0.2, 0.4, 2.0),
        callerid="v23",
        callerid_when="before_ring",
        emergency=("000", "112"),
    ),
}

COUNTRIES: tuple[str, ...] = tuple(PLANS)


def plan(code: str) -> CountryPlan:
    """The plan for a country code; KeyError names the known codes."""
    try:
        return PLANS[code]
    except KeyError:
        raise KeyError(f"{code!r} is not a known country; known: {', '.join(COUNTRIES)}") from None
