"""What every port state machine shares: the event shape, one timer, the state setter, the
dispatch through the FSM's table State -> handler, and the guard that puts a port in a
safe state when a handler raises. Also what call control needs of an FSM (`Port`)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from foundation.reactor import NEVER, Reactor

if TYPE_CHECKING:
    from firmware.callctl.controller import CallControl
    from firmware.callctl.dialplan import Decision
    from firmware.core.config import Config
    from firmware.media import PortMedia
    from firmware.sip.api import SipEvent
    from foundation.events import LineEvent

log = logging.getLogger(__name__)


class PortEvent(enum.StrEnum):  # what a port FSM tells itself (besides line and SIP events)
    TIMEOUT = "timeout"  # data: {"what": name}
    RECALL = "recall"  # FXS: ring to hand back a call (data: call)
    CPT = "cpt"  # FXO: the call-progress detector confirmed a tone; data: tone
    CALLER_ID = "caller_id"  # FXO: a caller-ID message was decoded
    ANSWER = "answer"  # headset: control-API requests
    HANGUP = "hangup"
    DIAL = "dial"


TIMEOUT = PortEvent.TIMEOUT


@dataclass(frozen=True)
class Ev:
    kind: str  # a LineKind, SipEventKind or PortEvent
    call: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def as_ev(event: LineEvent | SipEvent) -> Ev:
    return Ev(event.kind, getattr(event, "call", None), dict(event.data))


def safely(fn: Callable[..., Any], *args: Any) -> None:
    """fn(*args); an exception is logged (a SIP or CDR error must not stop call control)."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        log.exception("%s%s failed", getattr(fn, "__name__", fn), args)


class Port(Protocol):  # what call control needs of a port FSM
    name: str
    kind: str
    media: PortMedia
    state: enum.Enum

    def handle(self, ev: Ev) -> None: ...
    def free(self) -> bool: ...
    def calls(self) -> list[int]: ...
    def active_call(self) -> int | None: ...  # the call it is talking on
    def replace_call(self, old: int, new: int) -> None: ...  # a transfer joined it to `new`
    def recall(self, call: int) -> bool: ...
    def read_settings(self, cfg: Config) -> None: ...
    def status(self) -> dict[str, Any]: ...


class PortFsm:
    """Base of the FXS, FXO and headset state machines: `handlers` maps every State to
    its method; `_any(ev)` sees each event first (True: consumed)."""

    kind = "port"

    def __init__(self, cc: CallControl, reactor: Reactor, name: str, media: PortMedia,
                 initial: enum.Enum) -> None:
        self.cc, self.reactor, self.name, self.media = cc, reactor, name, media
        self.state = initial
        self.handlers: dict[Any, Callable[[Ev], None]] = {}
        self._timer = reactor.register_timer(self._expired, NEVER)
        self._timer_what = ""

    def read_settings(self, cfg: Config) -> None:
        """(Re-)read this port's live settings from the running config."""

    def handle(self, ev: Ev) -> None:
        try:
            if not self._any(ev):
                self.handlers[self.state](ev)
        except Exception:  # noqa: BLE001 - one bad event must not take the box down
            log.exception("%s: %s in %s failed; port reset to a safe state",
                          self.name, ev.kind, self.state.name)
            try:
                self._safe()
            except Exception:  # noqa: BLE001
                log.exception("%s: could not reach a safe state", self.name)

    def _any(self, ev: Ev) -> bool:
        return False  # events handled the same in every state: True when consumed

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
        self.reactor.update_timer(self._timer, self.reactor.now() + seconds)

    def _disarm(self) -> None:
        self._timer_what = ""
        self.reactor.update_timer(self._timer, NEVER)

    def _expired(self, _eventtime: float) -> float:
        what, self._timer_what = self._timer_what, ""
        self.handle(Ev(TIMEOUT, None, {"what": what}))
        return NEVER

    def _invite(self, d: Decision, number: str, name: str) -> int | None:
        """Place a dial-plan decision's call from `number`, `name` (None: not placed)."""
        if d.kind == "emergency":
            return self.cc.emergency_call(self, d.number, number)
        if d.kind == "extension":
            return self.cc.local_call(self, d.target, d.number, from_number=number, from_name=name)
        if d.kind == "external":
            return self.cc.call_out(self, d.number, from_number=number, from_name=name)
        return None

    def calls(self) -> list[int]:
        return []

    def recall(self, call: int) -> bool:
        """Ring again to hand back `call` (a failed transfer); False: this port cannot."""
        return False

    def status(self) -> dict[str, Any]:
        return {"port": self.name, "kind": self.kind, "state": self.state.name.lower(),
                "calls": self.calls(), "erle_db": self.media.erle_db,
                "echo_runaways": self.media.runaways,
                "media_mode": getattr(self.media, "media_mode", "voice"),
                "passthrough": dict(getattr(self.media, "passthrough_info", {}))}
