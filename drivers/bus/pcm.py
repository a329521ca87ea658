"""PCM: a port's audio as whole frames of signed 16-bit samples (8 kHz, 160 per 20 ms).

`PcmPort` is what call control and the media path see: `read()` returns the next
captured frame (or None when none is ready), `write()` queues a frame for playback.
`SimPcmLink` is a pair of ends: the gateway's end is a PcmPort; the other end belongs to
the virtual phone, central office line or headset. `AlsaPcm` is the real stream
(pyalsaaudio, imported by `open()`); `TdmBus` splits a multi-channel TDM device into one
port per timeslot.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np

from drivers.errors import HardwareError

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


# -- the real stream ---------------------------------------------------------------------


class AlsaPcm:
    """An ALSA capture+playback pair through pyalsaaudio, S16_LE, non-blocking.

    `read()` returns whole periods only and keeps any leftover bytes for the next call, so
    callers always see frames of `period` samples. With several channels (a stereo-only
    USB headset, or a TDM bus whose timeslots are channels) `read_all()` gives every
    channel and `read()` their mix; `write()` sends the same frame to every channel.
    """

    def __init__(self, device: str, rate: int, period: int, channels: int = 1,
                 name: str | None = None) -> None:
        self.device, self.rate, self.period, self.channels = device, rate, period, channels
        self.name = name or device
        self._cap = self._play = None
        self._buf = bytearray()
        self.dropped = 0  # playback periods refused because the device was full

    def open(self) -> AlsaPcm:
        alsa = _import_alsaaudio()
        try:
            self._cap = self._pcm(alsa, alsa.PCM_CAPTURE)
            self._play = self._pcm(alsa, alsa.PCM_PLAYBACK)
        except alsa.ALSAAudioError as exc:
            self.close()
            raise HardwareError(
                f"ALSA device {self.device!r} did not open ({exc}): list the cards with "
                "`arecord -l` and fix alsa_device in the config"
            ) from None
        return self

    def _pcm(self, alsa, kind):
        return alsa.PCM(type=kind, mode=alsa.PCM_NONBLOCK, device=self.device,
                        channels=self.channels, rate=self.rate,
                        format=alsa.PCM_FORMAT_S16_LE, periodsize=self.period)

    def read_all(self) -> np.ndarray | None:
        """The next period as (period, channels) samples, or None when none is ready."""
        if self._cap is None:
            raise HardwareError(f"ALSA device {self.device!r} used before open()")
        try:
            length, data = self._cap.read()
        except Exception as exc:  # ALSAAudioError: the device went away
            raise HardwareError(f"ALSA device {self.device!r} stopped: {exc}") from None
        if length > 0:
            self._buf += data
        need = self.period * self.channels * 2
        if len(self._buf) < need:
            return None
        frame = np.frombuffer(bytes(self._buf[:need]), dtype="<i2").reshape(-1, self.channels)
        del self._buf[:need]
        return frame.astype(np.int16)

    def read(self) -> np.ndarray | None:
        frame = self.read_all()
        if frame is None:
            return None
        if self.channels == 1:
            return frame[:, 0].copy()
        return frame.mean(axis=1).round().astype(np.int16)

    def write(self, frame: np.ndarray) -> None:
        if self._play is None:
            raise HardwareError(f"ALSA device {self.device!r} used before open()")
        frame = np.asarray(frame, dtype=np.int16)
        if frame.ndim == 1:
            frame = np.repeat(frame[:, None], self.channels, axis=1)
        try:
            written = self._play.write(frame.astype("<i2").tobytes())
        except Exception as exc:  # ALSAAudioError: the device went away
            raise HardwareError(f"ALSA device {self.device!r} stopped: {exc}") from None
        if written == 0:  # non-blocking and full: drop rather than stall the reactor
            self.dropped += 1

    def close(self) -> None:
        for pcm in (self._cap, self._play):
            if pcm is not None:
                pcm.close()
        self._cap = self._play = None


class TdmSlot:
    """One timeslot of a shared TDM `AlsaPcm` as a mono PcmPort (the FXS/FXO lines)."""

    def __init__(self, tdm: TdmBus, slot: int, name: str) -> None:
        self._tdm, self.slot, self.name = tdm, slot, name
        self.rate, self.period = tdm.pcm.rate, tdm.pcm.period

    def read(self) -> np.ndarray | None:
        return self._tdm.read_slot(self.slot)

    def write(self, frame: np.ndarray) -> None:
        self._tdm.write_slot(self.slot, frame)

    def close(self) -> None:
        pass


class TdmBus:
    """Splits one multi-channel ALSA device into per-timeslot ports.

    A read on any slot pulls whole periods from the device into every slot's queue;
    writes are gathered until every slot has one frame (or one slot has two: idle slots
    then send silence), then sent as one period.
    """

    def __init__(self, pcm: AlsaPcm) -> None:
        self.pcm = pcm
        self._rx: list[deque] = [deque(maxlen=10) for _ in range(pcm.channels)]
        self._tx: list[deque] = [deque(maxlen=10) for _ in range(pcm.channels)]

    def port(self, slot: int, name: str) -> TdmSlot:
        return TdmSlot(self, slot, name)

    def read_slot(self, slot: int) -> np.ndarray | None:
        while (frame := self.pcm.read_all()) is not None:
            for ch, queue in enumerate(self._rx):
                queue.append(frame[:, ch].copy())
        return self._rx[slot].popleft() if self._rx[slot] else None

    def write_slot(self, slot: int, frame: np.ndarray) -> None:
        self._tx[slot].append(np.asarray(frame, dtype=np.int16))
        # A slot with a second frame waiting means a period passed: idle slots get silence.
        if all(self._tx) or len(self._tx[slot]) > 1:
            silence = np.zeros(self.pcm.period, dtype=np.int16)
            self.pcm.write(np.stack([q.popleft() if q else silence for q in self._tx], axis=1))


def _import_alsaaudio():
    try:
        import alsaaudio  # noqa: PLC0415 - only on the box
    except ImportError:
        raise HardwareError(
            "python module alsaaudio is not installed: pip install 'branchline[hw]' on the box"
        ) from None
    return alsaaudio
