"""PCM: a port's audio as whole frames of signed 16-bit samples (8 kHz, 160 per 20 ms).

`PcmPort` is what call control and the media path see; `SimPcmLink` pairs a gateway end
with a virtual device's end; `AlsaPcm` is the real stream; `TdmBus` splits the Pi's
two-channel stream into one port per G.711 timeslot (plan in `drivers.bus.tdm`).
"""

from __future__ import annotations

import logging
from collections import deque
from errno import EAGAIN
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from cext import g711
from drivers.bus import tdm
from foundation.errors import HardwareError
from foundation.reactor import Reactor, Timer

log = logging.getLogger(__name__)

LINE_RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


class _Pcm(Protocol):
    name: str
    rate: int
    period: int  # samples per frame

    def write(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


class PcmPort(_Pcm, Protocol):
    """One port's mono audio: `read()` the next frame (None: none ready yet)."""

    def read(self) -> np.ndarray | None: ...


class PcmStream(_Pcm, Protocol):
    """A stream of whole (period, channels) periods: `AlsaPcm` or a simulated highway's."""

    channels: int

    def read_all(self) -> np.ndarray | None: ...


Frames = deque[np.ndarray]


class _SimEnd:
    def __init__(self, name: str, rate: int, period: int, rx: Frames, tx: Frames) -> None:
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

    def __init__(self, name: str, rate: int = LINE_RATE, period: int = FRAME,
                 depth: int = 50) -> None:
        a_to_b: Frames = deque(maxlen=depth)
        b_to_a: Frames = deque(maxlen=depth)
        self.gateway = _SimEnd(name, rate, period, rx=b_to_a, tx=a_to_b)
        self.device = _SimEnd(name + ":device", rate, period, rx=a_to_b, tx=b_to_a)


# -- the real stream ---------------------------------------------------------------------


class AlsaPcm:
    """An ALSA capture+playback pair through pyalsaaudio, S16_LE, non-blocking.

    `read()` returns whole periods only and keeps any leftover bytes for the next call, so
    callers always see frames of `period` samples. With several channels (a stereo-only
    USB headset, or the lines' PCM link: always two S16 channels, see TdmBus)
    `read_all()` gives every channel and `read()` their mix; `write()` of a mono frame
    sends it to every channel, a (period, channels) frame goes out as it is.
    """

    def __init__(self, device: str, rate: int, period: int, channels: int = 1,
                 name: str | None = None) -> None:
        self.device, self.rate, self.period, self.channels = device, rate, period, channels
        self.name = name or device
        self._cap = self._play = None
        self._buf = bytearray()
        self.dropped = 0  # playback periods refused because the device was full
        self.xruns = 0  # capture reads that reported an overrun (the stream restarted)
        self.frames = 0  # frames captured since open(): it counts only while PCLK runs

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

    def start(self) -> AlsaPcm:
        """Start the capture now (a read of a prepared stream starts it in alsa-lib with
        its default start threshold of one frame); playback starts with the first
        period written. On the lines' card that starts the Pi's bit clock (bcm2835-i2s.c
        bcm2835_i2s_trigger) and, with the overlay's continuous clock, keeps it running.
        (confirm on hardware: the start thresholds pyalsaaudio leaves at alsa-lib's
        defaults.)"""
        self._read_into_buffer()
        return self

    def _pcm(self, alsa: Any, kind: int) -> Any:
        return alsa.PCM(type=kind, mode=alsa.PCM_NONBLOCK, device=self.device,
                        channels=self.channels, rate=self.rate,
                        format=alsa.PCM_FORMAT_S16_LE, periodsize=self.period)

    def read_all(self) -> np.ndarray | None:
        """The next period as (period, channels) samples, or None when none is ready."""
        self._read_into_buffer()
        need = self.period * self.channels * 2
        if len(self._buf) < need:
            return None
        frame = np.frombuffer(bytes(self._buf[:need]), dtype="<i2").reshape(-1, self.channels)
        del self._buf[:need]
        return frame.astype(np.int16)

    def _read_into_buffer(self) -> None:
        if self._cap is None:
            raise HardwareError(f"ALSA device {self.device!r} used before open()")
        try:
            length, data = self._cap.read()
        except Exception as exc:  # ALSAAudioError: the device went away
            raise HardwareError(f"ALSA device {self.device!r} stopped: {exc}") from None
        if length > 0:
            self._buf += data
            self.frames += length
        elif length < 0 and length != -EAGAIN:
            self.xruns += 1

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
    """One port's G.711 timeslot of a `TdmBus` as a mono PcmPort of 160 linear samples."""

    def __init__(self, bus: TdmBus, slot: int, name: str) -> None:
        tdm.slot_start(slot)  # a slot outside the 32-bit frame is refused here, by name
        self._bus, self.slot, self.name = bus, slot, name
        self.rate, self.period = bus.stream.rate, bus.stream.period

    def read(self) -> np.ndarray | None:
        return self._bus.read_slot(self.slot)

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, dtype=np.int16)
        if frame.shape != (self.period,):
            raise ValueError(f"{self.name}: frame of {frame.shape} samples, expected {self.period}")
        self._bus.write_slot(self.slot, frame)

    def close(self) -> None:
        pass


class TdmBus:
    """The lines' PCM highway as one port per timeslot (drivers/bus/tdm.py has the plan).

    `stream` is the Pi's two-channel S16 stream (`AlsaPcm` opened with channels=2 on the
    box, `drivers.sim.highway.SimPcmStream` in the simulation): every captured period is
    split into the four 8-bit slots and each port's bytes decoded with `cext.g711` in the
    bus's law; written frames are encoded and gathered per slot into one packed period
    (idle slots send the law's silence byte).

    The stream must flow for the core's whole life even when no call reads or writes it
    (the chips take their PCLK from it): `start()` starts it, sends `prefill` periods of
    silence and registers a reactor timer that every period drains the capture and tops
    the playback up so that it never runs dry. Playback is paced by the capture (both run
    on the same bit clock): at most `prefill` + 1 periods are ever queued ahead of what was
    captured, so a late writer cannot stretch the delay; frames beyond that wait in their
    slot's queue (the oldest is dropped past TX_DEPTH). Captured frames nobody reads are
    kept for RX_DEPTH periods, then the oldest go.
    """

    RX_DEPTH = 10  # captured frames a slot keeps for a late reader (200 ms)
    TX_DEPTH = 4  # frames a slot holds for playback beyond the window (80 ms)
    ACTIVE_PERIODS = 2  # a slot written this recently is waited for before a period is sent

    def __init__(self, stream: PcmStream, law: str = "ulaw", reactor: Reactor | None = None,
                 prefill: int = 2) -> None:
        if law not in tdm.LAWS:
            raise ValueError(f"PCM law {law!r}: use one of {', '.join(tdm.LAWS)}")
        if getattr(stream, "channels", tdm.ALSA_CHANNELS) != tdm.ALSA_CHANNELS:
            raise ValueError(f"{stream.name}: the TDM bus needs a {tdm.ALSA_CHANNELS}-channel "
                             f"stream, not {stream.channels}")
        self.stream, self.law, self.reactor, self.prefill = stream, law, reactor, prefill
        self._encode, self._decode = _CODECS[law]
        self.silence = tdm.SILENCE[law]
        self._rx: dict[int, Frames] = {}
        self._tx: dict[int, Frames] = {}
        self._written: dict[int, int] = {}  # slot -> `captured` at its last write
        self.captured = self.sent = 0  # periods
        self._timer: Timer | None = None
        self._due = 0.0
        self.error = ""  # why the last pump failed ("" while the stream flows)

    @property
    def pcm(self) -> PcmStream:
        """The stream (the name older callers use)."""
        return self.stream

    def port(self, slot: int, name: str) -> TdmSlot:
        port = TdmSlot(self, slot, name)
        self._rx.setdefault(slot, deque(maxlen=self.RX_DEPTH))
        self._tx.setdefault(slot, deque(maxlen=self.TX_DEPTH))
        return port

    # -- life cycle --
    def start(self) -> TdmBus:
        """Start the stream (the bit clock), prime the playback and keep both flowing."""
        if hasattr(self.stream, "start"):
            self.stream.start()
        while self.sent < self.prefill:
            self._send()
        if self.reactor is not None and self._timer is None:
            # Half a period after the start, so the pump never shares an instant with
            # the period boundary of a simulated highway started at the same time.
            self._due = self.reactor.now() + PERIOD_S / 2
            self._timer = self.reactor.register_timer(self._tick, self._due)
        return self

    def close(self) -> None:
        if self._timer is not None and self.reactor is not None:
            self.reactor.unregister_timer(self._timer)
            self._timer = None
        self.stream.close()

    def _tick(self, eventtime: float) -> float:
        try:
            self.pump()
        except HardwareError as exc:  # the device went away: report once, keep trying
            if str(exc) != self.error:
                log.error("%s", exc)
            self.error = str(exc)
        else:
            self.error = ""
        self._due += PERIOD_S  # a fixed grid: late wake-ups do not add up
        if eventtime - self._due > PERIOD_S:
            self._due = eventtime + PERIOD_S / 2
        return self._due

    def pump(self) -> None:
        """Drain the capture into the slots, then keep `prefill` periods queued."""
        self._drain()
        while self.sent < self.captured + self.prefill:
            self._send()

    # -- audio --
    def read_slot(self, slot: int) -> np.ndarray | None:
        self._drain()
        queue = self._rx.get(slot)
        return queue.popleft() if queue else None

    def write_slot(self, slot: int, frame: np.ndarray) -> None:
        self._tx[slot].append(self._encode(frame))
        self._written[slot] = self.captured
        if self._ready() and self.sent <= self.captured + self.prefill:
            self._send()

    def _ready(self) -> bool:
        """Every slot written lately has a frame waiting: the period can go out."""
        active = [s for s, at in self._written.items()
                  if self.captured - at <= self.ACTIVE_PERIODS]
        return bool(active) and all(self._tx[s] for s in active)

    def _drain(self) -> None:
        while (frames := self.stream.read_all()) is not None:
            self.captured += 1
            for slot, queue in self._rx.items():
                queue.append(self._decode(tdm.slot_bytes(frames, slot)))

    def _send(self) -> None:
        slots = {s: q.popleft() for s, q in self._tx.items() if q}
        self.stream.write(tdm.pack_slots(slots, self.stream.period, self.silence))
        self.sent += 1


PERIOD_S = FRAME / LINE_RATE
_CODECS = {"ulaw": (g711.ulaw_encode, g711.ulaw_decode),
           "alaw": (g711.alaw_encode, g711.alaw_decode)}


def _import_alsaaudio() -> ModuleType:
    try:
        import alsaaudio  # noqa: PLC0415 - only on the box
    except ImportError:
        raise HardwareError(
            "python module alsaaudio is not installed: pip install 'branchline[hw]' on the box"
        ) from None
    return alsaaudio
