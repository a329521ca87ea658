"""The lifeline relay's twin: its coil drive and the copper it switches between the
virtual phone on FXS port 1 and the virtual CO of the FXO line.

`SimRelay` is the coil as the GPIO drives it (level, or a retriggerable monostable).
`LifelineBypass` is the changeover contact, standing in for the SLIC before the phone and
for the DAA before the CO (see `wire`). Contact bounce and travel are not modelled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from foundation.reactor import NEVER

QUEUE_FRAMES = 50  # 1 s of 20 ms frames on each direct path


class SimRelay:
    """The coil, seen from the GPIO pin; `on_change(energised)` on every contact move."""

    def __init__(self, reactor, gpio, pin: int, drive: str = "pulse", hold_s: float = 1.0,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.reactor, self.pin, self.drive, self.hold_s = reactor, pin, drive, hold_s
        self.on_change = on_change
        self.energised = False
        self.changes: list[tuple[bool, float]] = []  # (energised, time) of every move
        self._pin = False
        self._timer = reactor.register_timer(self._monostable_out, NEVER)
        gpio.watch_output(pin, self._pin_written)

    def _pin_written(self, level: bool) -> None:
        rising = level and not self._pin
        self._pin = level
        if self.drive == "level":
            self._coil(level)
        elif rising:
            self.reactor.update_timer(self._timer, self.reactor.now() + self.hold_s)
            self._coil(True)

    def _monostable_out(self, _eventtime: float) -> float:
        self._coil(False)
        return NEVER

    def _coil(self, on: bool) -> None:
        if on == self.energised:
            return
        self.energised = on
        self.changes.append((on, self.reactor.now()))
        if self.on_change is not None:
            self.on_change(on)


class LifelineBypass:
    """The changeover contacts between the fxs phone/SLIC and the fxo CO/DAA.

    Energised: the phone is on its SLIC and the CO sees only the DAA. Released: the SLIC
    sees an open loop; the phone is a loop on the CO's line (hook, dial tone, ringing, ring
    trip), the DAA sees it as a parallel phone, and audio flows between CO and phone."""

    def __init__(self, reactor, fxs: str = "fxs1", fxo: str = "fxo1") -> None:
        self.reactor, self.fxs, self.fxo = reactor, fxs, fxo
        self.energised = False
        self.slic: Any = None
        self.daa: Any = None
        self.slic_pcm: Any = None
        self.daa_pcm: Any = None
        self.phone_closed = False
        self.co_parallel = False  # the CO's own scripted parallel phone
        self.line_ring_hz = 0.0
        self._phone_rings: list[Callable[[bool, float], None]] = []
        self._phone_ringing = False
        self._co_hooks: list[Callable[[bool], None]] = []
        self._co_offhook = False
        self.to_phone: deque[np.ndarray] = deque(maxlen=QUEUE_FRAMES)
        self.to_co: deque[np.ndarray] = deque(maxlen=QUEUE_FRAMES)

    # ---- the coil ----
    def set_energised(self, on: bool) -> None:
        if on == self.energised:
            return
        self.energised = on
        self.to_phone.clear()
        self.to_co.clear()
        if self.slic is not None:
            self.slic.set_loop(self.phone_closed if on else False)
        self._line_changed()
        self._update_phone_ring()

    @property
    def bypassed(self) -> bool:
        return not self.energised

    @property
    def phone_on_line(self) -> bool:
        """The phone closes the CO's loop (relay released, handset off)."""
        return self.bypassed and self.phone_closed

    # ---- the phone's side ----
    def attach_phone_side(self, slic, pcm):
        self.slic, self.slic_pcm = slic, pcm
        slic.add_ring_listener(self._slic_ring)
        return _SlicSide(self, slic), _PhonePcm(self, pcm)

    def phone_loop(self, closed: bool, bounce=()) -> None:
        self.phone_closed = bool(closed)
        if self.energised:
            self.slic.set_loop(closed, bounce)
        else:
            self._line_changed()

    def phone_ring_voltage(self) -> bool:
        if self.energised:
            return bool(self.slic.ring_voltage)
        return self.line_ring_hz > 0

    def add_phone_ring_listener(self, fn: Callable[[bool, float], None]) -> None:
        """`fn(on, time)` when the phone's ring voltage comes or goes (SLIC or line)."""
        self._phone_rings.append(fn)

    def _slic_ring(self, _on: bool, _t: float) -> None:
        self._update_phone_ring()

    def _update_phone_ring(self) -> None:
        if self.slic is None:
            return
        on = self.phone_ring_voltage()
        if on == self._phone_ringing:
            return
        self._phone_ringing = on
        for fn in list(self._phone_rings):
            fn(on, self.reactor.now())

    # ---- the CO's side ----
    def attach_co_side(self, daa, pcm):
        self.daa, self.daa_pcm = daa, pcm
        daa.watch_hook(self._daa_hook)
        return _DaaSide(self, daa), _CoPcm(self, pcm)

    def co_offhook(self) -> bool:
        return bool(self.daa is not None and self.daa.offhook) or self.phone_on_line

    def co_audio_path(self) -> bool:
        return bool(self.daa is not None and self.daa.audio_path) or self.phone_on_line

    def line_ring(self, freq: float) -> None:
        self.line_ring_hz = float(freq)
        self.daa.line_ring(freq)
        self._update_phone_ring()

    def parallel_phone(self, offhook: bool) -> None:
        self.co_parallel = bool(offhook)
        self._line_changed()

    def add_co_hook_watcher(self, fn: Callable[[bool], None]) -> None:
        """`fn(offhook)` when the CO's loop changes (the DAA or the phone on the line)."""
        self._co_hooks.append(fn)

    def _daa_hook(self, _offhook: bool) -> None:
        self._update_co_hook()

    def _line_changed(self) -> None:
        """The phone joined or left the line: the DAA's parallel-phone view and the CO's
        loop follow."""
        if self.daa is None:
            return
        self.daa.line_parallel_phone(self.co_parallel or self.phone_on_line)
        self._update_co_hook()

    def _update_co_hook(self) -> None:
        offhook = self.co_offhook()
        if offhook == self._co_offhook:
            return
        self._co_offhook = offhook
        for fn in list(self._co_hooks):
            fn(offhook)


class _Proxy:
    """Forwards every attribute it does not define to the real twin."""

    def __init__(self, bypass: LifelineBypass, real) -> None:
        object.__setattr__(self, "_bypass", bypass)
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._real, name, value)


class _SlicSide(_Proxy):
    """The SLIC as the phone sees it through the relay."""

    def set_loop(self, closed: bool, bounce=()) -> None:
        self._bypass.phone_loop(closed, bounce)

    def add_ring_listener(self, fn: Callable[[bool, float], None]) -> None:
        self._bypass.add_phone_ring_listener(fn)

    @property
    def ring_voltage(self) -> bool:
        return self._bypass.phone_ring_voltage()


class _DaaSide(_Proxy):
    """The DAA as the CO sees it: its line now also carries the phone when released."""

    def watch_hook(self, fn: Callable[[bool], None]) -> None:
        self._bypass.add_co_hook_watcher(fn)

    @property
    def offhook(self) -> bool:
        return self._bypass.co_offhook()

    @property
    def audio_path(self) -> bool:
        return self._bypass.co_audio_path()

    def line_ring(self, freq: float) -> None:
        self._bypass.line_ring(freq)

    def line_parallel_phone(self, offhook: bool) -> None:
        self._bypass.parallel_phone(offhook)


class _PhonePcm(_Proxy):
    """The phone's audio: to its SLIC when energised, to the CO's line when released."""

    def read(self):
        bypass = self._bypass
        if bypass.energised:
            return self._real.read()
        while self._real.read() is not None:
            pass  # what the SLIC sends has no phone to reach
        return bypass.to_phone.popleft() if bypass.to_phone else None

    def write(self, frame) -> None:
        bypass = self._bypass
        if bypass.energised:
            self._real.write(frame)
        elif bypass.phone_closed:
            bypass.to_co.append(np.asarray(frame, dtype=np.int16).copy())


class _CoPcm(_Proxy):
    """The line's audio at the CO: the DAA's, plus the phone's when it is on the line."""

    def write(self, frame) -> None:
        self._real.write(frame)
        if self._bypass.phone_on_line:
            self._bypass.to_phone.append(np.asarray(frame, dtype=np.int16).copy())

    def read(self):
        daa = self._real.read()
        phone = self._bypass.to_co.popleft() if self._bypass.to_co else None
        if phone is None:
            return daa
        if daa is None:
            return phone
        mixed = daa.astype(np.int32) + phone.astype(np.int32)
        return np.clip(mixed, -32768, 32767).astype(np.int16)


def build(reactor, gpio, settings: dict) -> tuple[SimRelay, LifelineBypass] | None:
    """The relay and its contacts for a board.lifeline table (None when disabled)."""
    if not settings["enabled"]:
        return None
    bypass = LifelineBypass(reactor, settings["fxs"], settings["fxo"])
    relay = SimRelay(reactor, gpio, settings["gpio"], settings["drive"],
                     settings["pulse_hold_ms"] / 1000, bypass.set_energised)
    return relay, bypass


def wire(bypass: LifelineBypass | None, line: str, chip, pcm):
    """What the phone (fxs line) or the CO (fxo line) of `line` should be built with:
    (chip, pcm) or stand-ins for them; the stand-ins forward all they do not intercept."""
    if bypass is None:
        return chip, pcm
    if line == bypass.fxs:
        return bypass.attach_phone_side(chip, pcm)
    if line == bypass.fxo:
        return bypass.attach_co_side(chip, pcm)
    return chip, pcm
