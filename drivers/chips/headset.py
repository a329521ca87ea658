"""The local agent's headset: ALSA audio at its native rate (16-48 kHz), seen by the
gateway in 20 ms frames at 8 kHz (like the lines) or 16 kHz (wideband G.722 calls).

Capture and playback go through stateful resamplers; a poll of `present()` and PCM errors
raise HEADSET_UNPLUGGED / HEADSET_PLUGGED. The PCM comes from `open_pcm()` (AlsaPcm on
the box, the virtual headset in simulation).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import numpy as np

from drivers.bus.pcm import FRAME, LINE_RATE, PcmPort
from foundation.errors import BranchlineError, HardwareError
from foundation.events import HEADSET_PLUGGED, HEADSET_UNPLUGGED, LineEvent
from foundation.reactor import Reactor, Timer

T = TypeVar("T")

RATES = (16000, 32000, 44100, 48000)
LINE_RATES = (8000, 16000)  # narrowband (lines, G.711) and wideband (G.722)
VOLUME_MIN_DB = -40.0
VOLUME_MAX_DB = 12.0
POLL_S = 1.0  # presence poll: a human unplugging a headset does not need faster


def native_period(rate: int) -> int:
    """Samples in 20 ms at the headset's rate (the same frame time as the lines)."""
    return rate * FRAME // LINE_RATE


class _Resampler(Protocol):
    def process(self, samples: np.ndarray) -> np.ndarray: ...


class _Same:
    """No resampling: the headset runs at the line rate already."""

    @staticmethod
    def process(samples: np.ndarray) -> np.ndarray:
        return np.asarray(samples, dtype=np.int16)


def _resampler(rate_in: int, rate_out: int) -> _Resampler:
    if rate_in == rate_out:
        return _Same()
    from cext.resample import Resampler  # the tones engineer's kernel

    return Resampler(rate_in, rate_out)


class _Fifo:
    """int16 samples in, whole frames out (resamplers return uneven counts)."""

    def __init__(self) -> None:
        self._buf = np.zeros(0, dtype=np.int16)

    def push(self, samples: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, np.asarray(samples, dtype=np.int16)])

    def pop(self, n: int) -> np.ndarray | None:
        if len(self._buf) < n:
            return None
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def clear(self) -> None:
        self._buf = self._buf[:0]


class Headset:
    """Capture/playback in 20 ms frames at the line rate, mute, volume, presence events."""

    def __init__(self, name: str, reactor: Reactor, settings: dict[str, Any],
                 open_pcm: Callable[[int, int], PcmPort], present: Callable[[], bool],
                 on_event: Callable[[LineEvent], None]) -> None:
        self.name, self.reactor, self.on_event = name, reactor, on_event
        self.rate = int(settings["rate"])
        if self.rate not in RATES:
            raise HardwareError(f"board.headset.rate: {self.rate} Hz is not supported; use one of {RATES}")
        self.period = native_period(self.rate)
        self._open_pcm, self._present = open_pcm, present
        self._pcm: PcmPort | None = None
        self._timer: Timer | None = None
        self.muted = False
        self._volume_db = 0.0
        self.error = ""
        self._cap_fifo, self._play_fifo = _Fifo(), _Fifo()
        self.line_rate = LINE_RATE
        self._down = _resampler(self.rate, self.line_rate)
        self._up = _resampler(self.line_rate, self.rate)
        self.frame = FRAME  # samples per 20 ms at the line rate

    # -- life cycle --
    def start(self) -> None:
        """Open the headset if it is there; an absent headset is a state, not a failure."""
        self._down = _resampler(self.rate, self.line_rate)
        self._up = _resampler(self.line_rate, self.rate)
        if self._present():
            self._plug(announce=False)
        self._timer = self.reactor.register_timer(self._poll, self.reactor.now() + POLL_S)

    def stop(self) -> None:
        if self._timer is not None:
            self.reactor.unregister_timer(self._timer)
            self._timer = None
        self._close()

    @property
    def present(self) -> bool:
        return self._pcm is not None

    @property
    def failed(self) -> bool:
        return False  # a missing headset is "absent", never a failed chip

    def status(self) -> dict[str, Any]:
        return {"chip": "headset", "state": "ok" if self.present else "absent",
                "present": self.present, "rate": self.rate, "line_rate": self.line_rate,
                "muted": self.muted,
                "volume_db": self._volume_db, "error": self.error}

    # -- controls --
    @property
    def volume_db(self) -> float:
        return self._volume_db

    @volume_db.setter
    def volume_db(self, db: float) -> None:
        self._volume_db = float(min(VOLUME_MAX_DB, max(VOLUME_MIN_DB, db)))

    def mute(self, on: bool = True) -> None:
        self.muted = bool(on)

    # -- audio at the line rate --
    def set_line_rate(self, rate: int) -> None:
        """Carry audio at `rate` (8000 or 16000) from now on; queued audio is dropped."""
        if rate not in LINE_RATES:
            raise HardwareError(f"headset: line rate {rate} Hz is not supported; use one of "
                                f"{LINE_RATES}")
        if rate == self.line_rate:
            return
        self.line_rate, self.frame = rate, rate // 50
        self._down = _resampler(self.rate, rate)
        self._up = _resampler(rate, self.rate)
        self._cap_fifo.clear()
        self._play_fifo.clear()

    def read(self) -> np.ndarray | None:
        """The next 20 ms of microphone audio at the line rate, or None (absent, or not
        ready)."""
        while self._pcm is not None and (frame := self._guard(self._pcm.read)) is not None:
            self._cap_fifo.push(self._down.process(frame))
        out = self._cap_fifo.pop(self.frame)
        if out is not None and self.muted:
            return np.zeros(self.frame, dtype=np.int16)
        return out

    def write(self, frame: np.ndarray) -> None:
        """Play 20 ms of audio at the line rate (dropped while the headset is absent)."""
        if self._pcm is None:
            return
        gain = 10.0 ** (self._volume_db / 20.0)
        scaled = np.clip(np.round(np.asarray(frame, dtype=np.float64) * gain), -32768, 32767)
        self._play_fifo.push(self._up.process(scaled.astype(np.int16)))
        while self._pcm is not None and (out := self._play_fifo.pop(self.period)) is not None:
            self._guard(self._pcm.write, out)

    # -- presence --
    def _poll(self, eventtime: float) -> float:
        there = self._present()
        if there and self._pcm is None:
            self._plug(announce=True)
        elif not there and self._pcm is not None:
            self._unplug("card gone")
        return eventtime + POLL_S

    def _plug(self, announce: bool) -> None:
        try:
            self._pcm = self._open_pcm(self.rate, self.period)
        except BranchlineError as exc:  # listed but not openable yet: try at the next poll
            self.error = str(exc)
            return
        self.error = ""
        if announce:
            self._emit(HEADSET_PLUGGED, {"rate": self.rate})

    def _unplug(self, reason: str) -> None:
        self._close()
        self.error = reason
        self._emit(HEADSET_UNPLUGGED, {"reason": reason})

    def _guard(self, fn: Callable[..., T], *args: Any) -> T | None:
        """Call the PCM; an error from it means the headset went away mid-stream."""
        try:
            return fn(*args)
        except HardwareError as exc:
            self._unplug(str(exc))
            return None

    def _close(self) -> None:
        if self._pcm is not None:
            self._pcm.close()
        self._pcm = None
        self._cap_fifo.clear()
        self._play_fifo.clear()

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self.on_event(LineEvent(self.name, kind, self.reactor.now(), data))


def alsa_card_present(device: str, cards_path: str = "/proc/asound/cards") -> bool:
    """Is the ALSA card behind `device` listed now? ("default": is any card listed.)"""
    try:
        with open(cards_path) as fh:
            text = fh.read()
    except OSError:
        return False
    cards = re.findall(r"^\s*(\d+)\s+\[(\S+)\s*\]", text, flags=re.M)
    if not cards:
        return False
    wanted = _card_of(device)
    return wanted is None or any(wanted in (index, ident) for index, ident in cards)


def _card_of(device: str) -> str | None:
    """'hw:1,0' -> '1'; 'plughw:CARD=Headset,DEV=0' -> 'Headset'; 'default' -> None."""
    match = re.match(r"^\w+:(?:CARD=)?([^,]+)", device)
    return match.group(1) if match else None
