"""The power-fail lifeline: a relay that gives FXS port 1 the PSTN line when the box is down.

Released, the relay's normally-closed contacts put the phone on the FXO line's pair;
energised, on its SLIC. A dead, hung or rebooting box so leaves the branch one working
phone. This driver only drives the coil's GPIO (copper: `drivers.sim.lifeline_sim`).
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from drivers.bus.gpio import Gpio
from foundation.reactor import NEVER, Reactor

log = logging.getLogger(__name__)

TOGGLE_S = 0.1  # pulse mode: one edge every 100 ms, a rising edge every 200 ms


class Drive(enum.Enum):
    """How the coil is driven (board.lifeline.drive).

    LEVEL: the pin drives the coil; high = energised. Safe across power loss, reboot and
    a clean stop (the pin powers up as a pulled-down input), blind to a hung core.
    PULSE (the default): a retriggerable monostable on the card drives the coil; the
    core toggles the pin every TOGGLE_S from a reactor timer, so a stalled reactor stops
    the edges and the relay drops within pulse_hold_ms (which must exceed the reactor's
    worst normal stall plus a toggle). A release takes effect only when it runs out.
    """

    LEVEL = "level"
    PULSE = "pulse"


class Relay(enum.Enum):
    RELEASED = "released"  # phone on the PSTN line (normally-closed contacts)
    ENERGISED = "energised"  # phone on its SLIC


class Lifeline:
    """The relay's GPIO, from the board.lifeline table; claimed low at construction.

    `energise()` once the lifeline ports are up, `release(reason)` on shutdown or when
    either port fails. `toggle_timer` feeds the card's monostable (a test unregisters it
    to play a hung reactor).
    """

    def __init__(self, gpio: Gpio, reactor: Reactor, settings: dict[str, Any]) -> None:
        self.gpio, self.reactor = gpio, reactor
        self.pin = int(settings["gpio"])
        self.drive = Drive(settings["drive"])
        self.fxs, self.fxo = settings["fxs"], settings["fxo"]
        self.hold_s = float(settings["pulse_hold_ms"]) / 1000
        self.state = Relay.RELEASED
        self.reason = "not energised yet"
        self._level = False
        self._closed = False
        self.toggle_timer = reactor.register_timer(self._toggle, NEVER)
        gpio.setup_output(self.pin, False)

    @property
    def ports(self) -> tuple[str, str]:
        return self.fxs, self.fxo

    @property
    def energised(self) -> bool:
        return self.state is Relay.ENERGISED

    def energise(self) -> None:
        """Put the phone of `fxs` on its SLIC (and keep it there while the reactor runs)."""
        if self.energised or self._closed:
            return
        self._set_state(Relay.ENERGISED, "")
        self._write(True)
        if self.drive is Drive.PULSE:
            self.reactor.update_timer(self.toggle_timer, self.reactor.now() + TOGGLE_S)

    def release(self, reason: str = "released") -> None:
        """Give the phone of `fxs` the PSTN line of `fxo` (idempotent)."""
        self.reactor.update_timer(self.toggle_timer, NEVER)
        self._write(False)
        if self.energised:
            self._set_state(Relay.RELEASED, reason)
        else:
            self.reason = reason

    def _toggle(self, eventtime: float) -> float:
        if not self.energised:
            return NEVER
        self._write(not self._level)
        return eventtime + TOGGLE_S

    def _write(self, level: bool) -> None:
        if self._closed:
            return  # the GPIO may be cleaned up already: the pin is an input, pulled low
        self._level = level
        self.gpio.write(self.pin, level)

    def _set_state(self, state: Relay, reason: str) -> None:
        log.info("lifeline relay (GPIO %d, %s): %s -> %s%s", self.pin, self.drive.value,
                 self.state.value, state.value, f" ({reason})" if reason else "")
        self.state, self.reason = state, reason

    def status(self) -> dict[str, Any]:
        return {"relay": self.state.value, "reason": self.reason, "gpio": self.pin,
                "drive": self.drive.value, "fxs": self.fxs, "fxo": self.fxo,
                "phone_on": "slic" if self.energised else "pstn",
                "hold_ms": round(self.hold_s * 1000) if self.drive is Drive.PULSE else None}

    def close(self) -> None:
        self.release("shutdown" if self.energised else self.reason)
        self.reactor.unregister_timer(self.toggle_timer)
        self._closed = True


def build(gpio: Gpio, reactor: Reactor, settings: dict[str, Any]) -> Lifeline | None:
    """The lifeline of a board.lifeline table, or None when it is disabled."""
    if not settings["enabled"]:
        return None
    return Lifeline(gpio, reactor, settings)
