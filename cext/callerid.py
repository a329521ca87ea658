"""Caller ID: message framing (GR-30 SDMF and MDMF, ETSI EN 300 659-3 MDMF), FSK burst
generation for FXS ports, a streaming decoder for FXO ports, and DTMF-CLIP (EN 300 659-1
Annex B, plus the variants spandsp documents for Denmark, Taiwan and others).

16-bit linear PCM, 8 kHz by default; levels in dBm0 as spandsp (full-scale sine +3.14).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import fsk

SDMF, MDMF = 0x04, 0x80
P_DATETIME, P_NUMBER, P_NUMBER_ABSENT, P_NAME, P_NAME_ABSENT = 0x01, 0x02, 0x04, 0x07, 0x08
REASON_CODES = {"private": "P", "unavailable": "O"}
CODE_REASONS = {v: k for k, v in REASON_CODES.items()}
NUMBER_CHARS = set("0123456789+*#")
MAX_NUMBER = {"sdmf": 10, "mdmf": 20}
MAX_NAME = 50  # ETSI; GR-30 CPE shows 15
MIN_IDLE_BITS = 10  # marks before a type byte: every standard sends at least 55
POSTAMBLE_BITS = 5
DTMF_CLIP_REASONS = {"unavailable": "B00C", "private": "B10C"}
DTMF_GAP_S = 0.5  # longest pause inside a DTMF-CLIP string

Fields = dict[str, Any]  # a caller-ID message: number, name, datetime, reason, ...
Pending = tuple[Fields, float, float, float]  # (message, start, end, preference)


def _amplitude(level_dbm0: float) -> float:
    """Peak of a sine at `level_dbm0` (0 dBm0 = 32767 * 10**(-3.14/20))."""
    return 32767.0 * 10 ** ((level_dbm0 - 3.14) / 20.0)


# ---------------------------------------------------------------- framing


def _check_datetime(dt: str | None) -> None:
    if dt is not None and (len(dt) != 8 or not dt.isdigit()):
        raise ValueError(f"caller ID datetime {dt!r} must be 8 digits MMDDHHMM")


def _check_fields(message: Fields, fmt: str) -> None:
    if fmt not in MAX_NUMBER:
        raise ValueError(f"caller ID format {fmt!r} unknown: use 'sdmf' or 'mdmf'")
    number, reason = message.get("number"), message.get("reason")
    if reason is not None and reason not in REASON_CODES:
        raise ValueError(f"caller ID reason {reason!r} unknown: use None, 'private' or 'unavailable'")
    if number is not None and (not number or not set(number) <= NUMBER_CHARS or len(number) > MAX_NUMBER[fmt]):
        raise ValueError(f"caller ID number {number!r}: 1-{MAX_NUMBER[fmt]} characters of 0-9 + * #")
    _check_datetime(message.get("datetime"))


def _with_checksum(body: bytes) -> bytes:
    return body + bytes([(-sum(body)) & 0xFF])


def _sdmf_body(message: Fields) -> bytes:
    if message.get("datetime") is None:
        raise ValueError("SDMF caller ID needs a datetime (MMDDHHMM); use fmt='mdmf' without one")
    number, reason = message.get("number"), message.get("reason")
    if number is None and reason is None:
        raise ValueError("SDMF caller ID needs a number or a reason ('private'/'unavailable')")
    tail = REASON_CODES[str(reason)] if number is None else number
    return (message["datetime"] + tail).encode("ascii")


def _param(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def _name_bytes(name: str) -> bytes:
    try:
        raw = name.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"caller ID name {name!r} has characters outside Latin-1") from None
    if not raw or len(raw) > MAX_NAME:
        raise ValueError(f"caller ID name {name!r}: 1-{MAX_NAME} characters")
    return raw


def _mdmf_body(message: Fields) -> bytes:
    number, name, reason = message.get("number"), message.get("name"), message.get("reason")
    out = b""
    if message.get("datetime") is not None:
        out += _param(P_DATETIME, message["datetime"].encode("ascii"))
    if number is not None:
        out += _param(P_NUMBER, number.encode("ascii"))
    elif reason is not None:
        out += _param(P_NUMBER_ABSENT, REASON_CODES[reason].encode("ascii"))
    if name is not None:
        out += _param(P_NAME, _name_bytes(name))
    elif reason is not None and number is None:
        out += _param(P_NAME_ABSENT, REASON_CODES[reason].encode("ascii"))
    return out


def encode(message: Fields, fmt: str = "mdmf") -> bytes:
    """Message bytes (type 0x04 SDMF / 0x80 MDMF, length, data, two's-complement checksum)
    of a caller-ID message dict. Absence codes: 'P' private, 'O' unavailable.

    Keys: number, name, datetime ("MMDDHHMM"), reason (None/"private"/"unavailable",
    used when number is None). SDMF carries no name: a name is left out."""
    _check_fields(message, fmt)
    body = _sdmf_body(message) if fmt == "sdmf" else _mdmf_body(message)
    if len(body) > 255:
        raise ValueError(f"caller ID message too long ({len(body)} bytes, max 255)")
    return _with_checksum(bytes([SDMF if fmt == "sdmf" else MDMF, len(body)]) + body)


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


def _decode_sdmf(body: bytes, out: Fields) -> None:
    out["datetime"] = _text(body[:8]) if len(body) >= 8 else None
    tail = _text(body[8:])
    if tail in CODE_REASONS:
        out["reason"] = CODE_REASONS[tail]
    elif tail:
        out["number"] = tail


def _decode_mdmf(body: bytes, out: Fields) -> None:
    """Walk the parameters; unknown ones are skipped, a truncated one ends the walk."""
    pos = 0
    name_reason = None
    while pos + 2 <= len(body):
        code, size = body[pos], body[pos + 1]
        value = _text(body[pos + 2 : pos + 2 + size])
        pos += 2 + size
        if pos > len(body):
            break
        if code == P_DATETIME:
            out["datetime"] = value
        elif code == P_NUMBER:
            out["number"] = value
        elif code == P_NAME:
            out["name"] = value
        elif code == P_NUMBER_ABSENT:
            out["reason"] = CODE_REASONS.get(value, "unavailable")
        elif code == P_NAME_ABSENT:
            name_reason = CODE_REASONS.get(value, "unavailable")
    if out["number"] is None and out["reason"] is None:
        out["reason"] = name_reason


def decode(data: bytes) -> Fields:
    """Fields of message bytes: format, number, name, datetime, reason, checksum_ok.

    Raises ValueError when the bytes are not one complete message (too short, length
    byte disagreeing with the size, or an unknown message type)."""
    data = bytes(data)
    if len(data) < 3 or data[1] + 3 != len(data):
        raise ValueError(f"caller ID message of {len(data)} bytes is not type+length+data+checksum")
    if data[0] not in (SDMF, MDMF):
        raise ValueError(f"caller ID message type 0x{data[0]:02x} unknown: expected 0x04 (SDMF) or 0x80 (MDMF)")
    out: Fields = {"format": "sdmf" if data[0] == SDMF else "mdmf", "number": None, "name": None,
           "datetime": None, "reason": None, "checksum_ok": sum(data) & 0xFF == 0}
    body = data[2:-1]
    (_decode_sdmf if data[0] == SDMF else _decode_mdmf)(body, out)
    return out


# ---------------------------------------------------------------- FSK burst


def frame_bits(data: bytes, seizure_bits: int = 300, mark_bits: int = 180) -> np.ndarray:
    """The bit stream of a burst: 0101... seizure, marks, 1 start/8 data/1 stop per byte
    (LSB first), then a few marks so the last stop bit is heard whole."""
    seizure = np.arange(seizure_bits, dtype=np.uint8) % 2
    chars = [np.concatenate(([0], [(b >> i) & 1 for i in range(8)], [1])) for b in bytes(data)]
    parts = [seizure, np.ones(mark_bits, np.uint8), *chars, np.ones(POSTAMBLE_BITS, np.uint8)]
    return np.concatenate(parts).astype(np.uint8)


def modulate(data: bytes, standard: str = "bell202", rate: int = 8000, level_dbm0: float = -13.5,
             seizure_bits: int = 300, mark_bits: int = 180) -> np.ndarray:
    """int16 FSK burst of message bytes: Bell 202 (1200/2200 Hz) or V.23 (1300/2100 Hz)."""
    mark_hz, space_hz = fsk.tone_freqs(standard)
    bits = frame_bits(data, seizure_bits, mark_bits)
    return fsk.fsk_modulate(bits, mark_hz, space_hz, rate, _amplitude(level_dbm0))


# ---------------------------------------------------------------- DTMF-CLIP


def dtmf_clip_string(number: str | None, reason: str | None = None) -> str:
    """The digit string EN 300 659-1 Annex B sends: A<number>C, B00C or B10C."""
    if number is not None:
        if not number or not number.isdigit():
            raise ValueError(f"DTMF-CLIP number {number!r} must be digits 0-9")
        return "A" + number + "C"
    if reason not in DTMF_CLIP_REASONS:
        raise ValueError("DTMF-CLIP needs a number or a reason ('private'/'unavailable')")
    return DTMF_CLIP_REASONS[reason]


def dtmf_clip_samples(number: str | None, reason: str | None = None, rate: int = 8000) -> np.ndarray:
    """int16 DTMF-CLIP burst (70 ms tones, 70 ms pauses, -10 dBm0 per digit)."""
    from .dtmf import dtmf_samples  # only DTMF-CLIP needs the DTMF kernel

    return dtmf_samples(dtmf_clip_string(number, reason), on_ms=70, off_ms=70, level_dbm0=-10.0, rate=rate)


def parse_dtmf_clip(digits: str) -> Fields | None:
    """Fields of a complete DTMF-CLIP string (start marker ... 'C' or '#'), else None."""
    if len(digits) < 2 or digits[-1] not in "C#":
        return None
    head, body = digits[0], digits[1:-1]
    if head == "B" and body in ("00", "10"):
        return _clip_fields(None, "unavailable" if body == "00" else "private")
    if head == "D" and digits[-1] == "#" and body in ("1", "2", "3"):
        return _clip_fields(None, "private" if body == "1" else "unavailable")
    if head in "AD":
        number = body.split("D")[0].split("B")[0]  # drop redirect / info fields
        return _clip_fields(number, None) if number.isdigit() else None
    return None


def _clip_fields(number: str | None, reason: str | None) -> Fields:
    return {"standard": "dtmf", "number": number, "name": None, "datetime": None,
            "reason": reason, "checksum_ok": True}


# ---------------------------------------------------------------- decoder


class _FskChannel:
    """One standard's FSK receiver and message assembler (bytes -> messages)."""

    def __init__(self, standard: str, rate: int) -> None:
        self.standard = standard
        self.rx = fsk.FskRx(standard, rate)
        self.mark_hz = fsk.tone_freqs(standard)[0]
        self.spb = rate / fsk.BAUD
        self.reset()

    def reset(self) -> None:
        self.rx.reset()
        self.buf: bytearray | None = None
        self.start, self.pref = 0.0, 0.0

    def feed(self, samples: np.ndarray,
             probe: Callable[[_FskChannel, float], float] | None = None) -> list[Pending]:
        """Demodulate; returns [(message dict, start, end, pref)] completed. `probe(ch,
        start)` scores the mark section when a message starts (auto mode)."""
        done: list[Pending] = []
        for kind, value, t, idle in self.rx.process(samples):
            if kind != fsk.CHAR:
                self.buf = None  # carrier lost or framing error: the message is gone
                continue
            if idle >= MIN_IDLE_BITS and value in (SDMF, MDMF):
                self.buf, self.start = bytearray([value]), t
                self.pref = probe(self, t) if probe else 0.0
                continue
            msg = self._char(value, t)
            if msg is not None:
                done.append(msg)
        return done

    def _char(self, value: int, t: float) -> Pending | None:
        if self.buf is None:
            return None
        self.buf.append(value)
        if len(self.buf) < 2 or len(self.buf) < self.buf[1] + 3:
            return None
        data, self.buf = bytes(self.buf), None
        fields = decode(data)
        fields.pop("format")
        msg = {"standard": self.standard, **fields}
        return msg, self.start, t + 10 * self.spb, self.pref


class _DtmfChannel:
    """DTMF-CLIP: digits from cext.dtmf, assembled into strings between the markers."""

    def __init__(self, rate: int) -> None:
        from .dtmf import DtmfDetector

        self.det = DtmfDetector(rate=rate)
        self.gap = int(DTMF_GAP_S * rate)
        self.reset()

    def reset(self) -> None:
        self.det.reset()
        self.digits, self.start, self.last_end = "", 0, 0

    def feed(self, samples: np.ndarray) -> list[Pending]:
        done: list[Pending] = []
        for digit, start, end in self.det.process(samples):
            if self.digits and start - self.last_end > self.gap:
                self.digits = ""
            if not self.digits and digit not in "ABD":
                continue
            if not self.digits:
                self.start = start
            self.digits += digit
            self.last_end = end
            msg = parse_dtmf_clip(self.digits) if digit in "C#" else None
            if digit in "C#":
                self.digits = ""
            if msg is not None:
                done.append((msg, self.start, end, 0.0))
        return done


class CallerIdDecoder:
    """Streaming caller-ID decoder for an FXO port.

    standard: "bell202", "v23", "dtmf" or "auto" (both FSK receivers in parallel, plus
    DTMF-CLIP when cext.dtmf is built). In auto mode a burst decoded by both FSK
    receivers (their tones are only 100 Hz apart) is reported once: a good checksum
    first, then the standard whose mark tone the burst's mark section matches."""

    HISTORY = 8192  # samples of input kept to measure the mark tone (auto mode)
    BLOCK = 2048

    def __init__(self, standard: str = "auto", rate: int = 8000) -> None:
        if standard not in ("auto", "bell202", "v23", "dtmf"):
            raise ValueError(f"caller ID standard {standard!r} unknown: use auto, bell202, v23 or dtmf")
        self.standard, self.rate = standard, rate
        self.channels = self._channels(standard, rate)
        self.reset()

    @staticmethod
    def _channels(standard: str, rate: int) -> list[_FskChannel | _DtmfChannel]:
        if standard == "dtmf":
            return [_DtmfChannel(rate)]
        if standard != "auto":
            return [_FskChannel(standard, rate)]
        chans: list[_FskChannel | _DtmfChannel] = [_FskChannel("bell202", rate),
                                                   _FskChannel("v23", rate)]
        try:
            chans.append(_DtmfChannel(rate))
        except ImportError:  # DTMF kernel not built: FSK caller ID still works
            pass
        return chans

    def reset(self) -> None:
        for ch in self.channels:
            ch.reset()
        self.history = np.zeros(self.HISTORY, np.int16)
        self.count = 0
        self.pending: list[Pending] = []

    def process(self, samples: np.ndarray) -> list[Fields]:
        """Feed int16 samples; returns the messages completed so far."""
        x = np.ascontiguousarray(samples, dtype=np.int16)
        for off in range(0, len(x), self.BLOCK):
            self._block(x[off : off + self.BLOCK])
        return self._resolve(final=False)

    def flush(self) -> list[Fields]:
        """Messages still held back for the auto-mode choice; call at end of input."""
        return self._resolve(final=True)

    def _block(self, x: np.ndarray) -> None:
        self.history = np.concatenate((self.history[len(x):], x))
        self.count += len(x)
        probe = self._mark_match if self.standard == "auto" else None
        for ch in self.channels:
            self.pending.extend(ch.feed(x, probe) if isinstance(ch, _FskChannel) else ch.feed(x))

    def _mark_match(self, ch: _FskChannel, start: float) -> float:
        """dB by which the mark section before `start` is nearer this standard's mark
        tone than the other standard's (0 when too little of it is still in history)."""
        other = 1300.0 if ch.mark_hz == 1200.0 else 1200.0
        end = int(start) - 2 * int(ch.spb) - (self.count - self.HISTORY)
        seg = self.history[max(0, end - 320) : max(0, end)].astype(np.float64)
        if len(seg) < 80:
            return 0.0
        seg = seg * np.hanning(len(seg))
        return 10 * math.log10((_tone_power(seg, ch.mark_hz, self.rate) + 1e-9)
                               / (_tone_power(seg, other, self.rate) + 1e-9))

    def _resolve(self, final: bool) -> list[Fields]:
        """Report pending messages once no other receiver can still offer the same burst."""
        hold = 0 if final else int(0.05 * self.rate)
        out: list[Fields] = []
        keep: list[Pending] = []
        groups = _overlapping(sorted(self.pending, key=lambda p: p[1]))
        for group in groups:
            if final or max(p[2] for p in group) + hold < self.count:
                best = max(group, key=lambda p: (p[0]["checksum_ok"], p[3]))
                out.append(best[0])
            else:
                keep.extend(group)
        self.pending = keep
        return out


def _tone_power(seg: np.ndarray, f: float, rate: int) -> float:
    w = np.exp(-2j * np.pi * f * np.arange(len(seg)) / rate)
    return float(abs(np.dot(seg, w)) ** 2)


def _overlapping(items: list[Pending]) -> list[list[Pending]]:
    """Group (msg, start, end, pref) items whose [start, end] spans overlap."""
    groups: list[list[Pending]] = []
    for item in items:
        if groups and item[1] <= max(p[2] for p in groups[-1]):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
