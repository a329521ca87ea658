"""Line events the drivers raise to call control (and show in `hw probe` and the demo): a
driver calls its `on_event(LineEvent)` callback on the reactor thread; `data` carries what
the kind needs (a digit, a disconnect signal)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class LineKind(StrEnum):
    # FXS (a phone on our SLIC)
    OFF_HOOK = "off_hook"  # debounced loop closure
    ON_HOOK = "on_hook"  # loop open longer than the flash window: hang-up
    FLASH = "flash"  # loop open within the flash window
    DIGIT = "digit"  # data: {"digit": "5", "method": "pulse"}
    POWER_ALARM = "power_alarm"  # data: {"alarm": "..."}
    # FXO (a PSTN line on our DAA)
    RING_START = "ring_start"  # a validated ring burst began (after cadence validation)
    RING_STOP = "ring_stop"  # no ring for longer than the cadence's off time: caller gave up
    POLARITY_REVERSAL = "polarity_reversal"
    DISCONNECT = "disconnect"  # data: {"signal": "loop_drop" | "reversal" | "tone"}
    LINE_IN_USE = "line_in_use"  # a parallel phone is off hook on the line
    LINE_FREE = "line_free"
    # Headset
    HEADSET_PLUGGED = "headset_plugged"
    HEADSET_UNPLUGGED = "headset_unplugged"
    # Any chip
    CHIP_FAILED = "chip_failed"  # data: {"error": "..."}


OFF_HOOK, ON_HOOK, FLASH, DIGIT = LineKind.OFF_HOOK, LineKind.ON_HOOK, LineKind.FLASH, LineKind.DIGIT
POWER_ALARM, RING_START, RING_STOP = LineKind.POWER_ALARM, LineKind.RING_START, LineKind.RING_STOP
POLARITY_REVERSAL, DISCONNECT = LineKind.POLARITY_REVERSAL, LineKind.DISCONNECT
LINE_IN_USE, LINE_FREE = LineKind.LINE_IN_USE, LineKind.LINE_FREE
HEADSET_PLUGGED, HEADSET_UNPLUGGED = LineKind.HEADSET_PLUGGED, LineKind.HEADSET_UNPLUGGED
CHIP_FAILED = LineKind.CHIP_FAILED


@dataclass(frozen=True)
class LineEvent:
    port: str  # the line's name in the config, e.g. "fxs1"
    kind: str  # a LineKind (call control's port book also logs its own kinds)
    time: float  # reactor clock seconds
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.data.items())
        return f"{self.time:10.3f} {self.port:6} {self.kind} {extra}".rstrip()
