"""What every port state machine shares: the event shape, one timer, the state setter,
and the guard that keeps a failing handler from taking the process down.

A port FSM subclass declares `State` (an enum.Enum) and one method per state, named
after it in lower case with a leading underscore (`State.DIALING` -> `_dialing(ev)`);
`handle(ev)` sends every event to the current state's method. Events are `Ev`s: line
events from the drivers (kind off_hook, flash, ring_start ...), SIP events from the
bridge or the local switch (incoming, answered, ended ... with `call` = the handle) and
the FSM's own timer (`timeout`, data {"what": name}). `_any(ev)` sees every event first
for what is the same in all states (a chip failing, a held call hanging up). A handler that raises is logged
and the port is put in a safe state (`_safe()`: calls hung up, tones off).

Assumes it runs on the reactor thread; the controller (`cc`) owns the handles.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

from foundation.reactor import NEVER

log = logging.getLogger(__name__)

TIMEOUT = "timeout"


@dataclass(frozen=True)
class Ev:
    kind: str
    call: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def as_ev(event) -> Ev:
    """A LineEvent or SipEvent as an Ev (both carry kind and data; SIP ones a call)."""
    return Ev(event.kind, getattr(event, "call", None), dict(event.data))


class PortFsm:
    """Base of the FXS, FXO and headset state machines."""

    State: type[enum.Enum]
    kind = "port"

    def __init__(self, cc, name: str, media) -> None:
        self.cc, self.name, self.media = cc, name, media
        self.state = next(iter(self.State))
        self._timer = cc.reactor.register_timer(self._expired, NEVER)
        self._timer_what = ""

    def read_settings(self, doc: dict) -> None:
        """(Re-)read this port's live settings from the running document."""

    # ---- dispatch ----
    def handle(self, ev: Ev) -> None:
        handler = getattr(self, "_" + self.state.name.lower())
        try:
            if not self._any(ev):
                handler(ev)
        except Exception:  # noqa: BLE001 - one bad event must not take the box down
            log.exception("%s: %s in %s failed; port reset to a safe state",
                          self.name, ev.kind, self.state.name)
            self._guarded_safe()

    def _guarded_safe(self) -> None:
        try:
            self._safe()
        except Exception:  # noqa: BLE001
            log.exception("%s: could not reach a safe state", self.name)

    def _any(self, ev: Ev) -> bool:
        """Events handled the same in every state; True when consumed."""
        return False

    def _safe(self) -> None:
        raise NotImplementedError

    def _set_state(self, new: enum.Enum) -> None:
        old = self.state
        if new is old:
            return
        log.info("%s: %s -> %s", self.name, old.name, new.name)
        self.state = new
        self.cc.record(self.name, old.name, new.name)

    # ---- the one timer ----
    def _arm(self, seconds: float, what: str) -> None:
        self._timer_what = what
        self.cc.reactor.update_timer(self._timer, self.cc.reactor.now() + seconds)

    def _disarm(self) -> None:
        self._timer_what = ""
        self.cc.reactor.update_timer(self._timer, NEVER)

    def _expired(self, _eventtime: float) -> float:
        what, self._timer_what = self._timer_what, ""
        self.handle(Ev(TIMEOUT, None, {"what": what}))
        return NEVER

    def owns(self, call: int | None) -> bool:
        return call is not None and call in self.calls()

    def calls(self) -> list[int]:
        """Handles this port holds now."""
        return []

    def status(self) -> dict:
        return {"port": self.name, "kind": self.kind, "state": self.state.name.lower(),
                "calls": self.calls(), "erle_db": self.media.erle_db,
                "echo_runaways": self.media.runaways,
                "media_mode": getattr(self.media, "media_mode", "voice"),
                "passthrough": dict(getattr(self.media, "passthrough_info", {}))}
