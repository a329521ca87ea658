"""Call control's typed data: a snapshot per call, the one port-state model (PortState and
the PortBook that keeps it), and the lease a diagnostic takes on a port."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from firmware.events import CoreEvent, EventBus, EventKind
from foundation import events as lev
from foundation.events import LineEvent

if TYPE_CHECKING:
    from firmware.callctl.base import Ev
    from firmware.core.config.schema import Line
    from firmware.media import PortMedia

SEIZED = "seized"  # port-book actions, logged like line events
RELEASED = "released"
CALLER_ID = "caller_id"  # data: {"number": ..., "name": ...}
CALL = "call"  # call control's FSM moved; data: {"state": new FSM state, "was": old}


class CallOwner(Protocol):  # who holds a call: a port FSM, the parking lot, a transfer...
    def handle(self, ev: Ev) -> None: ...


class Caller(CallOwner, Protocol):  # who places a call: a port FSM, a survivable fallback
    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class CallInfo:  # a live call handle; `opened`: its record (CDR) is open
    handle: int
    owner: CallOwner | None = field(default=None, compare=False, repr=False)
    port: str = ""
    direction: str = ""
    ani: str = ""
    dnis: str = ""
    answered: bool = False
    uuid: str | None = None
    media_mode: str = "voice"
    started: float = 0.0
    placed_by_box: bool = True
    opened: bool = False
    carried_by: str = ""  # the port whose media carries it now


class PortState(enum.StrEnum):
    ON_HOOK = "on-hook"  # FXS
    OFF_HOOK = "off-hook"
    ALARM = "alarm"
    IDLE = "idle"  # FXO
    RINGING = "ringing"
    SEIZED = "seized"
    IN_USE = "in-use"
    DISCONNECTED = "disconnected"
    ABSENT = "absent"  # headset
    PRESENT = "present"
    IN_CALL = "in-call"  # FXS and headset
    FAILED = "failed"  # any


INITIAL = {"fxs": PortState.ON_HOOK, "fxo": PortState.IDLE, "headset": PortState.ABSENT}
P = PortState
NEXT = {  # line event kind -> the state it leads to (absent: no change)
    lev.OFF_HOOK: P.OFF_HOOK, lev.ON_HOOK: P.ON_HOOK, lev.POWER_ALARM: P.ALARM,
    lev.RING_START: P.RINGING, lev.RING_STOP: P.IDLE, lev.DISCONNECT: P.DISCONNECTED,
    lev.LINE_IN_USE: P.IN_USE, lev.LINE_FREE: P.IDLE, lev.HEADSET_PLUGGED: P.PRESENT,
    lev.HEADSET_UNPLUGGED: P.ABSENT, lev.CHIP_FAILED: P.FAILED, SEIZED: P.SEIZED,
    RELEASED: P.IDLE,
}
# While the line is seized the ringing and line-sense events that follow are expected.
KEEP_SEIZED = (lev.RING_START, lev.RING_STOP, lev.LINE_FREE, lev.LINE_IN_USE,
               lev.POLARITY_REVERSAL)
HOLDS_LINE = ("seizing", "dialing", "connected")  # FXO FSM states that hold the line


@dataclass
class PortLine:  # a port in the book: its state, why it failed, last caller ID, FSM state
    name: str
    kind: str
    state: PortState
    reason: str = ""
    caller: dict[str, Any] = field(default_factory=dict)
    call: str = ""


Listener = Callable[[LineEvent, str, str], None]  # (event, old state, new state)


class PortBook:
    """Every port's state from its line events and its FSM's moves; each change is told
    to the listeners with the old and new state."""

    def __init__(self, lines: Mapping[str, Line], headset: bool) -> None:
        self.ports = {name: PortLine(name, str(line.kind), INITIAL[line.kind])
                      for name, line in lines.items()}
        if headset:
            self.ports["headset"] = PortLine("headset", "headset", PortState.ABSENT)
        self.listeners: list[Listener] = []
        self.bus: EventBus | None = None

    def publish_to(self, bus: EventBus, wall: Callable[[], float]) -> None:
        """Port-state changes and caller IDs as CoreEvents on `bus` (once: the core's
        bus from boot, before call control takes the book over)."""
        def publish(event: LineEvent, old: str, new: str) -> None:
            if new != old:
                bus.publish(CoreEvent(EventKind.PORT_STATE, wall(), port=event.port,
                                      data={"state": str(new), "was": str(old)}))
            if event.kind == CALLER_ID:
                bus.publish(CoreEvent(EventKind.CALLER_ID, wall(), port=event.port, data={
                    "number": event.data.get("number"), "name": event.data.get("name")}))

        if self.bus is None:
            self.bus = bus
            self.listeners.append(publish)

    def states(self) -> dict[str, PortState]:
        return {name: port.state for name, port in self.ports.items()}

    def failed(self, name: str, reason: str, t: float) -> None:
        self.ports[name].reason = reason
        self.apply(LineEvent(name, lev.CHIP_FAILED, t, {"error": reason}))

    def call_moved(self, name: str, old: str, new: str, t: float) -> None:
        """Call control's FSM on `name` went old -> new (its State names)."""
        if name in self.ports:
            self.apply(LineEvent(name, CALL, t, {"state": new.lower(), "was": old.lower()}))

    def caller_id(self, name: str, message: dict[str, Any], t: float) -> None:
        if name in self.ports:
            self.apply(LineEvent(name, CALLER_ID, t, dict(message)))

    def apply(self, event: LineEvent) -> tuple[PortState, PortState] | None:
        port = self.ports.get(event.port)
        if port is None:
            return None
        old = port.state
        new = _next(port, event)
        port.state = new
        if event.kind == CALLER_ID:
            port.caller = dict(event.data)
        elif event.kind == CALL:
            port.call = event.data["state"]
        for fn in list(self.listeners):
            fn(event, old, new)
        return old, new


def _next(port: PortLine, event: LineEvent) -> PortState:
    old = port.state
    if old is P.FAILED and event.kind != lev.CHIP_FAILED:
        return old  # a failed chip stays failed until restarted
    if event.kind == CALL:
        return _for_call(port, event.data["state"])
    if old is P.SEIZED and event.kind in KEEP_SEIZED:
        return old
    return NEXT.get(event.kind, old)


def _for_call(port: PortLine, fsm_state: str) -> PortState:
    """The port state a call-control FSM state means (the hook state stays otherwise)."""
    if port.kind == "fxo":
        if fsm_state in HOLDS_LINE:
            return P.SEIZED
        return P.IDLE if port.state in (P.SEIZED, P.DISCONNECTED) else port.state
    if fsm_state == "connected":
        return P.IN_CALL
    if port.state is P.IN_CALL:
        return P.PRESENT if port.kind == "headset" else P.OFF_HOOK
    return port.state


@dataclass(frozen=True, slots=True)
class PortLease:  # a port taken out of service for calls (a diagnostic, a line test)
    name: str
    kind: str
    media: PortMedia
    driver: Any
    purpose: str
