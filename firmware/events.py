"""Typed events of the core for everyone outside call control: call and port events (the
CTI stream) and state changes. Call control and the core publish them on an EventBus; the
control API streams them (GET /events) to the console, the web page and the cloud agent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    # calls (ANI/DNIS, port, call id, times)
    RINGING = "ringing"
    ANSWERED = "answered"
    HELD = "held"
    RESUMED = "resumed"
    TRANSFERRED = "transferred"
    HUNG_UP = "hung_up"
    # right after HUNG_UP: data {"ended", "network": {codec, jitter_ms, loss_pct, rtt_ms,
    # mos, r_factor}, "dsp": firmware.quality.CallDsp.to_json()}
    CALL_QUALITY = "call_quality"
    # ports and caller ID
    PORT_STATE = "port_state"  # data: {"state": new, "was": old}
    CALLER_ID = "caller_id"  # data: {"number": ..., "name": ...}
    # the box
    WAN = "wan"  # data: {"up": bool}
    SURVIVABILITY = "survivability"  # data: {"state": new, "was": old, "reason": ...}
    REGISTRATION = "registration"  # data: {"account": ..., "ok": bool, "code": int}
    CONFIG_APPLIED = "config_applied"  # data: {"version": int|None, "live": [...], "restart": [...]}


@dataclass(frozen=True)
class CoreEvent:
    kind: EventKind
    time: float  # wall clock, seconds since the epoch
    port: str = ""
    call_id: str = ""  # the call's record id (CDR uuid) when it has one
    ani: str = ""
    dnis: str = ""
    direction: str = ""  # inbound / outbound / local / emergency
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": str(self.kind), "time": round(self.time, 3)}
        for name in ("port", "call_id", "ani", "dnis", "direction"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.data:
            out["data"] = dict(self.data)
        return out


Listener = Callable[[CoreEvent], None]


class EventBus:
    """Fan-out on the reactor thread. A listener that raises is logged, never the
    publisher's problem; listeners must be quick (the API queues, it does not send)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, fn: Listener) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def publish(self, event: CoreEvent) -> None:
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - a listener must not stop a call
                log.exception("event listener failed on %s", event.kind)
