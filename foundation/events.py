"""Line events the drivers raise to call control (and show in `hw probe` and the demo).

A driver calls its `on_event(LineEvent)` callback on the reactor thread. `kind` is one
of the names below; `data` carries what the kind needs (a digit, a disconnect signal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class LineEvent:
    port: str  # the line's name in the config, e.g. "fxs1"
    kind: str
    time: float  # reactor clock seconds
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.data.items())
        return f"{self.time:10.3f} {self.port:6} {self.kind} {extra}".rstrip()
