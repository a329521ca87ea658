"""GPIO: output lines (resets, LEDs) and input lines with edge callbacks (chip interrupts).

Pins are BCM numbers. `SimGpio` is a set of virtual pins: emulators drive inputs with
`drive()` and read outputs with `level()`; edge callbacks run synchronously, on the
reactor thread, like everything in simulation. The real implementation uses the RPi.GPIO
API (rpi-lgpio provides it on the Pi 5) and posts edges to the reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Protocol

from foundation.errors import HardwareError
from foundation.reactor import Reactor

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


# -- the real lines ----------------------------------------------------------------------

GPIO_HINT = (
    "/dev/gpiomem is not accessible: run on a Raspberry Pi with the service user in the "
    "'gpio' group (on a Pi 5 install rpi-lgpio instead of RPi.GPIO)"
)


class RpiGpio:
    """BCM-numbered pins through the RPi.GPIO API; the module is imported by `open()`.

    RPi.GPIO calls edge callbacks on its own thread, so they are posted to the reactor
    with `call_soon()`: drivers only ever run on the reactor thread.
    """

    name = "rpi-gpio"

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self._gpio: ModuleType | None = None
        self._pins: set[int] = set()

    def open(self) -> RpiGpio:
        gpio = _import_rpi_gpio()
        gpio.setwarnings(False)
        try:
            gpio.setmode(gpio.BCM)
        except RuntimeError:  # "No access to /dev/mem. Try running as root!"
            raise HardwareError(GPIO_HINT) from None
        self._gpio = gpio
        return self

    def _lib(self) -> ModuleType:
        if self._gpio is None:
            raise HardwareError("GPIO used before open(): a driver bug, please report it")
        return self._gpio

    def setup_output(self, pin: int, level: bool) -> None:
        gpio = self._lib()
        gpio.setup(pin, gpio.OUT, initial=gpio.HIGH if level else gpio.LOW)
        self._pins.add(pin)

    def write(self, pin: int, level: bool) -> None:
        gpio = self._lib()
        gpio.output(pin, gpio.HIGH if level else gpio.LOW)

    def setup_input(self, pin: int, pull_up: bool = True) -> None:
        gpio = self._lib()
        gpio.setup(pin, gpio.IN, pull_up_down=gpio.PUD_UP if pull_up else gpio.PUD_OFF)
        self._pins.add(pin)

    def read(self, pin: int) -> bool:
        return bool(self._lib().input(pin))

    def on_edge(self, pin: int, edge: str, callback: EdgeCallback) -> None:
        gpio = self._lib()
        kind = {RISING: gpio.RISING, FALLING: gpio.FALLING, BOTH: gpio.BOTH}[edge]

        def from_gpio_thread(channel: int) -> None:
            # The level is read here, close to the edge, not later on the reactor.
            level = edge == RISING if edge != BOTH else bool(gpio.input(channel))
            self.reactor.call_soon(callback, pin, level)

        try:
            gpio.add_event_detect(pin, kind, callback=from_gpio_thread)
        except RuntimeError as exc:
            raise HardwareError(f"GPIO{pin}: edge detection failed ({exc}): pin in use?") from None

    def close(self) -> None:
        if self._gpio is not None and self._pins:
            self._gpio.cleanup(sorted(self._pins))
        self._pins.clear()


def _import_rpi_gpio() -> ModuleType:
    try:
        import RPi.GPIO as gpio  # noqa: N813 - only on the box
    except ImportError:
        raise HardwareError(
            "python module RPi.GPIO is not installed: pip install 'branchline[hw]' on the box "
            "(rpi-lgpio provides it on a Pi 5)"
        ) from None
    except RuntimeError:  # "This module can only be run on a Raspberry Pi!"
        raise HardwareError(GPIO_HINT) from None
    return gpio
