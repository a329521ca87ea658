"""NoCloudBridge: the Bridge of a box with no cloud configured (or whose SIP stack would
not start), so call control runs the same code with or without SIP. Its one, absent edge
is down, so calls go out through FXO as in survivable mode; any call asked of it ends
at once with 503. `reason` says why."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from firmware.sip.api import NO_QUALITY, MediaPipe, SipEvent, SipEventKind
from foundation.reactor import Reactor

log = logging.getLogger(__name__)

EDGE_NAME = "none"
NO_CLOUD = 503


class NoCloudBridge:
    def __init__(self, reactor: Reactor,
                 reason: str = "no cloud edge configured (sip.edges)") -> None:
        self.reactor = reactor
        self.reason = reason
        self._ids = itertools.count(1)
        self._emit: Callable[[SipEvent], None] | None = None

    def start(self, on_event: Callable[[SipEvent], None]) -> None:
        self._emit = on_event
        log.info("no cloud: %s; local calls, PSTN and emergency only", self.reason)
        self._send(SipEvent(SipEventKind.EDGE, None,
                            {"edge": EDGE_NAME, "ok": False, "rtt_ms": None}))

    def stop(self) -> None:
        self._emit = None

    def _send(self, event: SipEvent) -> None:
        if self._emit is not None:
            self.reactor.call_soon(self._emit, event)

    def make_call(self, line: str, to: str, *, from_number: str | None = None,
                  from_name: str | None = None, headers: dict[str, str] | None = None) -> int:
        call = next(self._ids)
        log.warning("%s: call to %s refused: %s", line, to, self.reason)
        self._send(SipEvent(SipEventKind.ENDED, call, {"code": NO_CLOUD, "reason": self.reason,
                                                        "quality": dict(NO_QUALITY)}))
        return call

    # Nothing is ever up, so every command on a call has nothing to act on.
    def ringing(self, call: int) -> None: ...
    def answer(self, call: int) -> None: ...
    def reject(self, call: int, code: int = 486) -> None: ...
    def hangup(self, call: int) -> None: ...
    def send_dtmf(self, call: int, digits: str) -> None: ...
    def hold(self, call: int) -> None: ...
    def unhold(self, call: int) -> None: ...
    def transfer(self, call: int, target: str) -> None: ...
    def transfer_attended(self, call: int, other: int) -> None: ...
    def passthrough(self, call: int) -> None: ...
    def use_edge(self, uri: str) -> None: ...
    def refresh(self, call: int) -> None: ...

    def media(self, call: int, rate: int = 8000) -> MediaPipe:
        return MediaPipe(rate=rate)

    def quality(self, call: int) -> dict[str, Any]:
        return dict(NO_QUALITY)

    def status(self) -> dict[str, Any]:
        return {"accounts": {}, "calls": {}, "ports": {},
                "edges": {EDGE_NAME: {"ok": False, "rtt_ms": None, "misses": 0}},
                "no_cloud": self.reason}
