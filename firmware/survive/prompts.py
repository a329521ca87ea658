"""The audio of survivable mode, generated from tones (no prompt files on the box): each
prompt is a pattern a caller learns at once, apart from the plans' call-progress tones
and from DTMF, so callers and tests can tell them apart. 8 kHz int16."""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from cext import toneplans
from cext.dtmf import dtmf_samples
from cext.toneplans import Tone
from cext.tones import ToneGenerator
from firmware.media import confirmation_tone

RATE = 8000
LEVEL_DBM0 = -13.0
MOH_LEVEL_DBM0 = -18.0
HOLD = Tone((1400.0,), -20.0, (0.15, 1.85))  # "still connected", on a blip
HOLD_HZ = 1400.0
ANNOUNCE_HZ = {"tones": (1000.0,), "chime": (523.0, 659.0, 784.0)}
ENTER_HZ = (600.0, 900.0)
CONFIRM_HZ = 1200.0
MOH_NOTES = (440.0, 523.0, 659.0, 523.0, 440.0, 523.0, 659.0, 880.0,
             392.0, 494.0, 587.0, 494.0, 392.0, 494.0, 587.0, 784.0)
NOTE_S = 0.25


class Announcement(StrEnum):  # survive.announcement
    TONES = "tones"  # three 1000 Hz beeps, 0.2 s on, 0.1 s off
    CHIME = "chime"  # a rising C-E-G chime, 0.25 s a note


def _burst(hz: float, seconds: float, level: float = LEVEL_DBM0) -> np.ndarray:
    return ToneGenerator(Tone((hz,), level), RATE).generate(int(seconds * RATE))


def _gap(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def announce(kind: str = Announcement.TONES) -> np.ndarray:
    """The short 'please hold, the call continues here' announcement (~1 s)."""
    parts: list[np.ndarray] = []
    if kind == Announcement.CHIME:
        for hz in ANNOUNCE_HZ[Announcement.CHIME]:
            parts += [_burst(hz, 0.25), _gap(0.05)]
    else:
        for _ in range(3):
            parts += [_burst(ANNOUNCE_HZ[Announcement.TONES][0], 0.2), _gap(0.1)]
    return np.concatenate(parts + [_gap(0.1)])


def moh() -> np.ndarray:
    """One loop of the music on hold (4 s: A minor arpeggios, 0.25 s notes)."""
    notes = [_burst(hz, NOTE_S - 0.02, MOH_LEVEL_DBM0) for hz in MOH_NOTES]
    return np.concatenate([np.concatenate([n, _gap(0.02)]) for n in notes])


def enter_number() -> np.ndarray:
    """Two rising beeps, then silence: 'key your number, then #'."""
    return np.concatenate([_burst(ENTER_HZ[0], 0.2), _gap(0.05), _burst(ENTER_HZ[1], 0.2),
                           _gap(0.3)])


def confirm_prompt() -> np.ndarray:
    """One 1200 Hz beep: 'press 1 to confirm, any other key to re-enter'."""
    return np.concatenate([_burst(CONFIRM_HZ, 0.4), _gap(0.3)])


def digits(number: str) -> np.ndarray:
    """The number read back: DTMF of each digit, 120 ms on, 120 ms off."""
    keys = "".join(ch for ch in number if ch in "0123456789*#")
    return np.concatenate([dtmf_samples(keys, 120, 120, level_dbm0=-10.0), _gap(0.3)])


def done(plan: toneplans.CountryPlan) -> np.ndarray:
    """The country's confirmation tone (three short dial-tone bursts)."""
    tone = ToneGenerator(confirmation_tone(plan), RATE).generate(int(0.6 * RATE))
    return np.concatenate([tone, _gap(0.2)])


def ringback(plan: toneplans.CountryPlan) -> ToneGenerator:
    return ToneGenerator(plan.tones["ringback"], RATE)
