"""Recordings of the calls the box handles locally while the cloud is unreachable
(survive.record_calls): the cloud records its own calls, these are the ones it never
sees. Stereo G.711 mu-law WAV, 8 kHz: left the caller (DTMF masked), right the box.
Written as <call uuid>.wav.part, sealed and indexed in the outbox at the call's end."""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cext.g711 import ulaw_encode

log = logging.getLogger(__name__)

RATE = 8000
CHANNELS = 2
PART = ".part"
HEADER_BYTES = 58  # RIFF/WAVE + fmt (18) + fact (4) + data headers
MAX_SKEW_FRAMES = 25  # one direction this far ahead: the other is padded with silence


class RecordingStore(Protocol):
    """Where finished recordings are indexed for upload (firmware.cdr.CdrStore)."""

    @property
    def recordings_dir(self) -> str | os.PathLike[str]: ...

    def add_recording(self, path: str, call_uuid: str | None = None, **extra: Any) -> str: ...


def wav_header(frames_per_channel: int) -> bytes:
    """The 58-byte header of a stereo mu-law WAV holding this many sample pairs."""
    data = frames_per_channel * CHANNELS
    fmt = struct.pack("<HHIIHHH", 7, CHANNELS, RATE, RATE * CHANNELS, CHANNELS, 8, 0)
    return (b"RIFF" + struct.pack("<I", 4 + 26 + 12 + 8 + data + (data & 1)) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"fact" + struct.pack("<II", 4, frames_per_channel)
            + b"data" + struct.pack("<I", data))


class Recording:
    """One call's recording in progress, fed every 20 ms by the port's PortMedia (the
    reactor thread). Audio goes to the .part file as it comes, in small buffered writes,
    so a power cut loses at most the last buffer (`recover`)."""

    def __init__(self, directory: Path, call_uuid: str, port: str, ani: str,
                 started: float) -> None:
        self.directory, self.call_uuid, self.port, self.ani = directory, call_uuid, port, ani
        self.started = started
        directory.mkdir(parents=True, exist_ok=True)
        self.final = directory / f"{call_uuid}.wav"
        self.part = directory / f"{call_uuid}.wav{PART}"
        self._file = open(self.part, "wb")  # noqa: SIM115 - open for the call's life
        self._file.write(wav_header(0))
        self._in: deque[np.ndarray] = deque()
        self._out: deque[np.ndarray] = deque()
        self.samples = 0

    # ---- every 20 ms (PortMedia) ----
    def from_line(self, frame: np.ndarray) -> None:
        self._in.append(frame)
        self._write_pairs()

    def to_line(self, frame: np.ndarray) -> None:
        self._out.append(frame)
        self._write_pairs()

    def _write_pairs(self) -> None:
        while self._in and self._out:
            self._write(self._in.popleft(), self._out.popleft())
        for ahead in (self._in, self._out):
            while len(ahead) > MAX_SKEW_FRAMES:  # the other side stalled: silence there
                frame = ahead.popleft()
                silence = np.zeros_like(frame)
                self._write(*((frame, silence) if ahead is self._in else (silence, frame)))

    def _write(self, left: np.ndarray, right: np.ndarray) -> None:
        n = min(len(left), len(right))
        pairs = np.empty(2 * n, dtype=np.uint8)
        for channel, frame in enumerate((left, right)):
            encoded = ulaw_encode(np.asarray(frame[:n], dtype=np.int16))
            pairs[channel::2] = np.frombuffer(encoded, dtype=np.uint8)
        self._file.write(pairs.tobytes())
        self.samples += n

    # ---- the end ----
    def finish(self, store: RecordingStore | None) -> str | None:
        """Complete the file, rename it to .wav and index it in the outbox (kind
        "recording", with the call's CDR UUID); the index row's UUID."""
        while self._in or self._out:
            left = self._in.popleft() if self._in else None
            right = self._out.popleft() if self._out else None
            ref = left if left is not None else right
            self._write(left if left is not None else np.zeros_like(ref),
                        right if right is not None else np.zeros_like(ref))
        self._file.close()
        _seal(self.part, self.final)
        seconds = round(self.samples / RATE, 2)
        log.info("%s: recording of call %s done (%.1f s, %d bytes)", self.port,
                 self.call_uuid, seconds, self.final.stat().st_size)
        return _index(store, self.final, self.call_uuid, port=self.port, ani=self.ani,
                      started=self.started, seconds=seconds)


def _seal(part: Path, final: Path) -> None:
    size = part.stat().st_size
    audio = max(0, size - HEADER_BYTES) // CHANNELS * CHANNELS
    with open(part, "r+b") as f:
        f.truncate(HEADER_BYTES + audio)
        f.write(wav_header(audio // CHANNELS))
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, final)


def _index(store: RecordingStore | None, path: Path, call_uuid: str,
           **extra: object) -> str | None:
    if store is None:
        return None
    try:
        return store.add_recording(path.name, call_uuid=call_uuid, format="wav/ulaw/8000/2",
                                   **extra)
    except Exception:  # noqa: BLE001 - a recording must never take a call down
        log.exception("recording %s could not be queued for upload", path)
        return None


def recover(store: RecordingStore) -> int:
    """Seal and index the .part files a power cut left (when the core opens its CDR
    store); how many."""
    directory = Path(store.recordings_dir)
    count = 0
    for part in sorted(directory.glob(f"*.wav{PART}")):
        final = part.with_suffix("")  # x.wav.part -> x.wav
        try:
            _seal(part, final)
        except OSError as exc:
            log.error("recording %s left by a power cut could not be completed: %s", part, exc)
            continue
        call_uuid = final.stem
        if _index(store, final, call_uuid, recovered=True) is not None:
            log.warning("recording of call %s completed after a restart (%d bytes)",
                        call_uuid, final.stat().st_size)
            count += 1
    return count
