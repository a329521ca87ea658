"""GPIO: output lines (resets, LEDs) and input lines with edge callbacks (chip interrupts).

Pins are BCM numbers. `SimGpio` is a set of virtual pins: emulators drive inputs with
`drive()` and read outputs with `level()`; edge callbacks run synchronously, on the
reactor thread, like everything in simulation. The real implementation uses the RPi.GPIO
API (rpi-lgpio provides it on the Pi 5) and posts edges to the reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

RISING = "rising"
FALLING = "falling"
BOTH = "both"

EdgeCallback = Callable[[int, bool], None]  # (pin, new level)


class Gpio(Protocol):
    name: str

    def setup_output(self, pin: int, level: bool) -> None: ...

    def write(self, pin: int, level: bool) -> None: ...

    def setup_input(self, pin: int, pull_up: bool = True) -> None: ...

    def read(self, pin: int) -> bool: ...

    def on_edge(self, pin: int, edge: str, callback: EdgeCallback) -> None: ...

    def close(self) -> None: ...


class SimGpio:
    """Virtual GPIO pins shared by the drivers and the emulators."""

    name = "sim-gpio"

    def __init__(self) -> None:
        self._levels: dict[int, bool] = {}
        self._outputs: set[int] = set()
        self._pullups: dict[int, bool] = {}
        self._driven: dict[int, bool] = {}
        self._callbacks: dict[int, list[tuple[str, EdgeCallback]]] = {}
        self._watchers: dict[int, list[Callable[[bool], None]]] = {}

    # -- the driver side --
    def setup_output(self, pin: int, level: bool) -> None:
        self._outputs.add(pin)
        self.write(pin, level)

    def write(self, pin: int, level: bool) -> None:
        if pin not in self._outputs:
            raise ValueError(f"GPIO{pin} is not set up as an output")
        self._set(pin, bool(level))
        for watch in self._watchers.get(pin, []):
            watch(bool(level))

    def setup_input(self, pin: int, pull_up: bool = True) -> None:
        self._pullups[pin] = pull_up
        self._set(pin, self._driven.get(pin, pull_up))

    def read(self, pin: int) -> bool:
        return self._levels.get(pin, self._pullups.get(pin, True))

    def on_edge(self, pin: int, edge: str, callback: EdgeCallback) -> None:
        self._callbacks.setdefault(pin, []).append((edge, callback))

    def close(self) -> None:
        self._callbacks.clear()

    # -- the emulator side --
    def drive(self, pin: int, level: bool | None) -> None:
        """Drive an input pin (None releases it to its pull)."""
        if level is None:
            self._driven.pop(pin, None)
            level = self._pullups.get(pin, True)
        else:
            self._driven[pin] = bool(level)
        self._set(pin, bool(level))

    def level(self, pin: int) -> bool:
        return self._levels.get(pin, False)

    def watch_output(self, pin: int, fn: Callable[[bool], None]) -> None:
        """Call fn(level) whenever the driver writes this output (e.g. a chip's RESET)."""
        self._watchers.setdefault(pin, []).append(fn)

    def _set(self, pin: int, level: bool) -> None:
        old = self._levels.get(pin)
        self._levels[pin] = level
        if old is None or old == level:
            return
        for edge, cb in list(self._callbacks.get(pin, [])):
            if edge == BOTH or (edge == RISING) == level:
                cb(pin, level)
