"""WAV files for the `branchline dsp` tools: 8 kHz mono 16-bit PCM in and out (stdlib
`wave`). Anything else is a `WavError` naming the file, what was found, what was
expected and the sox command that fixes it: the technician never sees a traceback."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from foundation.errors import BranchlineError

RATE = 8000
EXPECTED = "8000 Hz mono 16-bit"


class WavError(BranchlineError):
    """A WAV file that cannot be read or is not 8 kHz mono 16-bit PCM."""


def _describe(w: wave.Wave_read) -> str:
    channels = {1: "mono", 2: "stereo"}.get(w.getnchannels(), f"{w.getnchannels()}-channel")
    return f"{w.getframerate()} Hz {channels} {8 * w.getsampwidth()}-bit"


def _sniff(path: Path) -> str | None:
    """What a RIFF/WAVE file's fmt chunk says, for files `wave` refuses (float, extensible)."""
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if cid == b"fmt " and size >= 16 and pos + 24 <= len(head):
            fmt, ch, rate = struct.unpack("<HHI", head[pos + 8 : pos + 16])
            bits = struct.unpack("<H", head[pos + 22 : pos + 24])[0]
            kind = {1: "PCM", 3: "float", 6: "A-law", 7: "mu-law", 0xFFFE: "extensible"}
            chans = {1: "mono", 2: "stereo"}.get(ch, f"{ch}-channel")
            return f"{rate} Hz {chans} {bits}-bit {kind.get(fmt, f'format {fmt}')}"
        pos += 8 + size + (size & 1)
    return None


def read(path: str | Path) -> np.ndarray:
    """Samples (int16) of an 8 kHz mono 16-bit WAV file; WavError otherwise."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            found = _describe(w)
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
                raise WavError(f"{path}: {found}; expected {EXPECTED} "
                               f"(sox {path} -r 8000 -c 1 -b 16 OUT.wav)")
            n = w.getnframes()
            data = w.readframes(n)
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WavError(f"{path}: is a directory, expected a WAV file") from None
    except PermissionError:
        raise WavError(f"{path}: permission denied") from None
    except (wave.Error, EOFError) as exc:
        sniffed = _sniff(path)
        if sniffed:
            raise WavError(f"{path}: {sniffed}; expected {EXPECTED} PCM "
                           f"(sox {path} -e signed -r 8000 -c 1 -b 16 OUT.wav)") from None
        raise WavError(f"{path}: not a PCM WAV file ({exc}); expected {EXPECTED}") from None
    if len(data) != 2 * n:
        raise WavError(f"{path}: truncated: header says {n} samples, file holds "
                       f"{len(data) // 2}; re-record or re-export it")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def write(path: str | Path, samples: npt.ArrayLike) -> None:
    """Write int16 samples as an 8 kHz mono 16-bit WAV file."""
    pcm = np.asarray(samples)
    if pcm.dtype != np.int16:
        pcm = np.clip(np.rint(pcm), -32768, 32767).astype(np.int16)
    try:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.astype("<i2").tobytes())
    except OSError as exc:
        raise WavError(f"{path}: cannot write ({exc.strerror or exc})") from None
