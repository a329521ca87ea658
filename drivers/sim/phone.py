"""A virtual analog phone on an FXS port: hook switch, dials, bell, earpiece, mouthpiece.

It drives the SLIC twin's loop (`Si3215Emulator.set_loop`) and its end of the line's
SimPcmLink, on the reactor: dial, flash and DTMF steps run one after another, hook changes
act at once (hanging up cancels what is scheduled), and a 20 ms timer sends one 160-sample
frame of 16-bit linear audio while off hook and keeps what the line sent (`heard`, the last
minute). DTMF is real audio: about -9/-7 dBm0 (low/high group), 100 ms on, 100 ms off.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from drivers.bus.pcm import FRAME, LINE_RATE
from foundation.reactor import NEVER

FRAME_S = FRAME / LINE_RATE
HEARD_FRAMES = 3000  # 60 s of line audio
DBM0_FULL_SCALE = 3.14  # a full-scale 16-bit sine is +3.14 dBm0 (G.711 mu-law)
DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")


def dtmf_freqs(key: str) -> tuple[float, float]:
    """(low, high) frequencies of a DTMF key."""
    for row, keys in enumerate(DTMF_KEYS):
        if key.upper() in keys:
            return DTMF_ROWS[row], DTMF_COLS[keys.index(key.upper())]
    raise ValueError(f"{key!r} is not a DTMF key (0-9, *, #, A-D)")


def dbm0_amplitude(dbm0: float) -> float:
    """Peak amplitude (16-bit linear) of a sine at `dbm0`."""
    return 32767 * 10 ** ((dbm0 - DBM0_FULL_SCALE) / 20)


def dtmf_audio(digits: str, on_ms: float = 100, off_ms: float = 100,
               low_dbm0: float = -9.0, high_dbm0: float = -7.0) -> np.ndarray:
    """int16 samples at 8 kHz: each digit's tone pair for on_ms, then off_ms of silence."""
    on_n, off_n = round(on_ms * LINE_RATE / 1000), round(off_ms * LINE_RATE / 1000)
    t = np.arange(on_n) / LINE_RATE
    parts = []
    for key in digits:
        low, high = dtmf_freqs(key)
        tone = (dbm0_amplitude(low_dbm0) * np.sin(2 * math.pi * low * t)
                + dbm0_amplitude(high_dbm0) * np.sin(2 * math.pi * high * t))
        parts += [tone, np.zeros(off_n)]
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return np.round(np.concatenate(parts)).astype(np.int16)


class VirtualPhone:
    """One analog phone wired to a SLIC twin and to the device end of a PCM link."""

    def __init__(self, reactor, slic, pcm, name: str = "phone1", ren: float = 1.0,
                 loop_ohm: float = 300.0) -> None:
        self.reactor, self.slic, self.pcm, self.name = reactor, slic, pcm, name
        slic.ren, slic.loop_ohm = ren, loop_ohm
        slic.add_ring_listener(self._on_ring)
        self.ring_bursts: list[tuple[float, float]] = []
        self._ring_started: float | None = None
        self._hook_closed = False
        self._busy_until = reactor.now()
        self._pending: list = []
        self._tx = np.zeros(0, dtype=np.int16)
        self._heard: deque[np.ndarray] = deque(maxlen=HEARD_FRAMES)
        self._audio_timer = reactor.register_periodic(self._tick, FRAME_S, start=reactor.now() + FRAME_S)

    # ------------------------------------------------------------------ hook switch
    def off_hook(self, bounce: Sequence[float] = ()) -> None:
        """Lift the handset now; `bounce` = contact chatter in ms (see set_loop)."""
        self._hook_closed = True
        self.slic.set_loop(True, bounce)

    def on_hook(self, bounce: Sequence[float] = ()) -> None:
        self._hook_closed = False
        self._cancel_pending()
        self.slic.set_loop(False, bounce)

    @property
    def is_off_hook(self) -> bool:
        return self._hook_closed

    def flash(self, ms: float = 300) -> float:
        """Press the hook switch for `ms`; returns when (reactor time) the flash is over."""
        t0 = self._next_slot()
        self._at(t0, lambda: self.slic.set_loop(False))
        self._at(t0 + ms / 1000, lambda: self.slic.set_loop(True))
        self._busy_until = t0 + ms / 1000
        return self._busy_until

    def dial_pulse(self, digits: str, pps: float = 10, break_pct: float = 60,
                   interdigit_ms: float = 700) -> float:
        """Rotary dial: per pulse the loop breaks for break_pct of 1/pps, then makes.
        Returns the reactor time the last pulse's make begins (the digit follows later)."""
        period = 1.0 / pps
        brk = period * break_pct / 100
        t = self._next_slot()
        last = t
        for digit in digits:
            if not digit.isdigit():
                raise ValueError(f"{self.name}: a rotary dial has no {digit!r}")
            for _ in range(int(digit) or 10):
                self._at(t, lambda: self.slic.set_loop(False))
                self._at(t + brk, lambda: self.slic.set_loop(True))
                last = t + brk
                t += period
            t += interdigit_ms / 1000 - (period - brk)
        self._busy_until = t
        return last

    def dial_dtmf(self, digits: str, on_ms: float = 100, off_ms: float = 100) -> float:
        """Queue DTMF audio; it goes out frame by frame while off hook. Returns its end time."""
        audio = dtmf_audio(digits, on_ms, off_ms)
        self.speak(audio)
        start = max(self.reactor.now(), self._busy_until)
        self._busy_until = start + len(audio) / LINE_RATE
        return self._busy_until

    def speak(self, samples: np.ndarray) -> None:
        """Queue audio (int16, 8 kHz) for the mouthpiece."""
        self._tx = np.concatenate([self._tx, np.asarray(samples, dtype=np.int16)])

    # ------------------------------------------------------------------ bell and earpiece
    @property
    def is_ringing(self) -> bool:
        return self.slic.ring_voltage

    @property
    def heard(self) -> np.ndarray:
        """Everything the line sent to this phone (the last minute)."""
        if not self._heard:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(self._heard))

    def _on_ring(self, on: bool, t: float) -> None:
        if on:
            self._ring_started = t
        elif self._ring_started is not None:
            self.ring_bursts.append((self._ring_started, t))
            self._ring_started = None

    def _tick(self, eventtime: float) -> float:
        while (frame := self.pcm.read()) is not None:
            self._heard.append(frame)
        if self._hook_closed:
            frame, self._tx = self._tx[:FRAME], self._tx[FRAME:]
            if len(frame) < FRAME:
                frame = np.concatenate([frame, np.zeros(FRAME - len(frame), dtype=np.int16)])
            self.pcm.write(frame)
        return eventtime + FRAME_S

    # ------------------------------------------------------------------ scheduling
    def _next_slot(self) -> float:
        return max(self.reactor.now(), self._busy_until)

    def _at(self, when: float, fn: Callable[[], None]) -> None:
        timer = None

        def fire(_eventtime: float) -> float:
            if timer in self._pending:
                self._pending.remove(timer)
            fn()
            return NEVER

        timer = self.reactor.register_timer(fire, when)
        self._pending.append(timer)

    def _cancel_pending(self) -> None:
        """Hanging up ends any dialling or flash still scheduled (and queued speech)."""
        for timer in self._pending:
            self.reactor.unregister_timer(timer)
        self._pending.clear()
        self._busy_until = self.reactor.now()
        self._tx = self._tx[:0]

    def close(self) -> None:
        self.reactor.update_timer(self._audio_timer, NEVER)
