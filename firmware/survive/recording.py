"""Recordings of the calls the box handles locally while the cloud is unreachable.

With survive.record_calls on, a PSTN caller taken by the local fallback chain (a cloud
leg lost mid-call, or a new inbound call in SURVIVABLE) is recorded on the FXO port from
the moment the fallback takes the call until the line is released: the announcement, the
queue, the conversation with the local agent and any callback capture. The cloud records
its own calls; these are the ones it never sees.

Format: WAV, G.711 mu-law (format tag 7), 8 kHz, two channels: left the caller (what
the line sends us, after echo cancellation, with DTMF masked as it is for the cloud, so
a keyed card or phone number is not in the file), right what the box sends to the line
(the local agent, prompts, music on hold). 16 kB per second.

Crash safety: the audio goes to data_dir/recordings/<call uuid>.wav.part as it comes, in
small buffered writes; `finish()` completes the header, renames the file to .wav and
indexes it in the outbox (CdrStore.add_recording, kind "recording", with the call's CDR
UUID), which `branchline forward` uploads when the WAN is back. A power cut leaves a
.part file; `recover(store)` (run when the core opens its CDR store) completes its header
from its size and indexes it, so at most the last unflushed buffer is lost. The outbox
cap evicts recordings oldest first, never records.

Assumes the reactor thread (PortMedia calls from_line/to_line every 20 ms).
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from pathlib import Path

import numpy as np

from cext.g711 import ulaw_encode

log = logging.getLogger(__name__)

RATE = 8000
CHANNELS = 2
PART = ".part"
HEADER_BYTES = 58  # RIFF/WAVE + fmt (18) + fact (4) + data headers
MAX_SKEW_FRAMES = 25  # one direction this far ahead: the other is padded with silence
ULAW_SILENCE = 0xFF


def wav_header(frames_per_channel: int) -> bytes:
    """The 58-byte header of a stereo mu-law WAV holding this many sample pairs."""
    data = frames_per_channel * CHANNELS
    fmt = struct.pack("<HHIIHHH", 7, CHANNELS, RATE, RATE * CHANNELS, CHANNELS, 8, 0)
    return (b"RIFF" + struct.pack("<I", 4 + 26 + 12 + 8 + data + (data & 1)) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"fact" + struct.pack("<II", 4, frames_per_channel)
            + b"data" + struct.pack("<I", data))


class Recording:
    """One call's recording in progress; see the module docstring."""

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
        pairs[0::2] = np.frombuffer(ulaw_encode(np.asarray(left[:n], dtype=np.int16)),
                                    dtype=np.uint8)
        pairs[1::2] = np.frombuffer(ulaw_encode(np.asarray(right[:n], dtype=np.int16)),
                                    dtype=np.uint8)
        self._file.write(pairs.tobytes())
        self.samples += n

    # ---- the end ----
    def finish(self, store) -> str | None:
        """Complete the file and index it in the outbox; its index row's UUID."""
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
    """Write the header for the audio the .part file holds, then rename it to .wav."""
    size = part.stat().st_size
    audio = max(0, size - HEADER_BYTES) // CHANNELS * CHANNELS
    with open(part, "r+b") as f:
        f.truncate(HEADER_BYTES + audio)
        f.write(wav_header(audio // CHANNELS))
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, final)


def _index(store, path: Path, call_uuid: str, **extra) -> str | None:
    if store is None:
        return None
    try:
        return store.add_recording(path.name, call_uuid=call_uuid, format="wav/ulaw/8000/2",
                                   **extra)
    except Exception:  # noqa: BLE001 - a recording must never take a call down
        log.exception("recording %s could not be queued for upload", path)
        return None


def recover(store) -> int:
    """Seal and index the .part files a power cut left; how many."""
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
