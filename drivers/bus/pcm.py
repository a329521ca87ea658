"""PCM: a port's audio as whole frames of signed 16-bit samples (8 kHz, 160 per 20 ms).

`PcmPort` is what call control and the media path see: `read()` returns the next
captured frame (or None when none is ready), `write()` queues a frame for playback.
`SimPcmLink` is a pair of ends: the gateway's end is a PcmPort; the other end belongs to
the virtual phone, central office line or headset.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np

LINE_RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


class PcmPort(Protocol):
    name: str
    rate: int
    period: int

    def read(self) -> np.ndarray | None: ...

    def write(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


class _SimEnd:
    def __init__(self, name: str, rate: int, period: int, rx: deque, tx: deque) -> None:
        self.name, self.rate, self.period = name, rate, period
        self._rx, self._tx = rx, tx

    def read(self) -> np.ndarray | None:
        return self._rx.popleft() if self._rx else None

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, dtype=np.int16)
        if frame.shape != (self.period,):
            raise ValueError(f"{self.name}: frame of {frame.shape} samples, expected {self.period}")
        self._tx.append(frame.copy())

    def pending(self) -> int:
        return len(self._rx)

    def close(self) -> None:
        self._rx.clear()


class SimPcmLink:
    """A full-duplex virtual PCM wire: `gateway` end and `device` end (bounded queues)."""

    def __init__(self, name: str, rate: int = LINE_RATE, period: int = FRAME, depth: int = 50):
        a_to_b: deque = deque(maxlen=depth)
        b_to_a: deque = deque(maxlen=depth)
        self.gateway = _SimEnd(name, rate, period, rx=b_to_a, tx=a_to_b)
        self.device = _SimEnd(name + ":device", rate, period, rx=a_to_b, tx=b_to_a)
