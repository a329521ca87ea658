"""The power-fail lifeline: a relay that gives FXS port 1 the PSTN line when the box is down.

The card has a two-pole changeover relay on the phone side of FXS port 1 (tip and ring).
De-energised, its normally-closed contacts connect the phone straight to the FXO line's
pair; energised, the normally-open contacts connect the phone to its SLIC. The DAA stays
across the line pair in both positions (on hook it is a high-impedance load, like a
parallel extension), so while the lifeline carries a call the FXO port sees a phone off
hook on its line. A dead, unpowered or rebooting box therefore leaves the branch one
working phone on the PSTN. This driver only drives the GPIO: what the relay does is
copper (and `drivers.sim.lifeline_sim` in simulation).

Two ways to drive the coil (board.lifeline.drive):

- "level": the GPIO drives the coil's transistor directly: high = energised. Safe across
  power loss, reboot and a clean stop (the BCM2835's power-on state makes the pin an
  input, and GPIO 9-27 have a pull-down at power-on, BCM2835 ARM Peripherals p.102, so
  the default pin 26 reads low and the relay drops; a clean stop writes it low). It
  cannot see a core that is alive but hung, nor one that died without running its
  cleanup: a GPIO output keeps its level after the process is gone, so the phone stays
  on a SLIC nobody serves until something else pulls the pin low.
- "pulse" (the default): the coil is driven by a retriggerable monostable on the card
  (e.g. a 74HC123 / SN74AHCT123A, output width ~ K x Rext x Cext, set by the card's RC to
  board.lifeline.pulse_hold_ms; confirm on hardware). The core toggles the GPIO from a
  reactor timer every TOGGLE_S; each rising edge restarts the monostable. A GPIO that
  stays high or low makes no edge, so when the reactor stops running (a hung core, a
  blocked main loop, a crash, a kernel panic) the monostable times out and the relay drops
  within pulse_hold_ms, even though the pin may stay high. That is how "release when the
  watchdog stops being fed" is kept in hardware: the toggle is the watchdog feed, and the
  monostable is the watchdog. The default is "pulse" because a hung or crashed core is
  the failure a branch would otherwise not survive (power loss is safe in both modes).
  The price: a release (stop, a failed port) takes effect only when the monostable runs
  out, up to pulse_hold_ms after the pin stops toggling.
  The hold time must exceed the reactor's worst normal stall (DESIGN.md measured frame
  callbacks delayed by up to 260 ms by a busy thread) plus one toggle period: the default
  1000 ms keeps calls up through such a stall and still gives the PSTN back within a
  second of a real hang.

`Lifeline(gpio, reactor, settings)`: settings is the board.lifeline table. `energise()`
once the lifeline ports are up, `release(reason)` on shutdown or when either port fails;
`status()` for the status page; `toggle_timer` is the reactor timer that feeds the card's
monostable (a test unregisters it to play a hung reactor). The pin is claimed low at
construction, so building the driver never switches the relay.
"""

from __future__ import annotations

import enum
import logging

from foundation.reactor import NEVER

log = logging.getLogger(__name__)

TOGGLE_S = 0.1  # pulse mode: one edge every 100 ms, a rising edge every 200 ms
DEFAULT_HOLD_MS = 1000


class Drive(enum.Enum):
    LEVEL = "level"
    PULSE = "pulse"


class Relay(enum.Enum):
    RELEASED = "released"  # phone on the PSTN line (normally-closed contacts)
    ENERGISED = "energised"  # phone on its SLIC


class Lifeline:
    """The relay's GPIO; see the module docstring."""

    def __init__(self, gpio, reactor, settings: dict) -> None:
        self.gpio, self.reactor = gpio, reactor
        self.pin = int(settings["gpio"])
        self.drive = Drive(settings.get("drive", Drive.PULSE.value))
        self.fxs = settings.get("fxs", "fxs1")
        self.fxo = settings.get("fxo", "fxo1")
        self.hold_s = float(settings.get("pulse_hold_ms", DEFAULT_HOLD_MS)) / 1000
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

    def status(self) -> dict:
        return {"relay": self.state.value, "reason": self.reason, "gpio": self.pin,
                "drive": self.drive.value, "fxs": self.fxs, "fxo": self.fxo,
                "phone_on": "slic" if self.energised else "pstn",
                "hold_ms": round(self.hold_s * 1000) if self.drive is Drive.PULSE else None}

    def close(self) -> None:
        self.release("shutdown" if self.energised else self.reason)
        self.reactor.unregister_timer(self.toggle_timer)
        self._closed = True


def build(gpio, reactor, settings: dict | None) -> Lifeline | None:
    """The lifeline of a board.lifeline table, or None when it is absent or disabled."""
    if not settings or not settings.get("enabled", False):
        return None
    return Lifeline(gpio, reactor, settings)
