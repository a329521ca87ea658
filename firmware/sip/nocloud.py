"""NoCloud: the Bridge of a box with no cloud configured (or whose SIP stack would not
start), so call control runs the same code with or without SIP.

What call control does with it (local-only mode):
  - at start it reports its single, absent edge down (an EDGE event, ok=False), so call
    control treats the cloud as down: numbers dialled on a phone that are not local
    extensions go out through a free FXO line, as in survivable mode;
  - phone-to-phone (extension) calls, park and pickup run on the local switch as always;
  - emergency numbers go out through FXO, as always;
  - anything that still asks it for a call (an inbound PSTN call offered to the cloud,
    the headset dialling out) gets 503 at once, as a refusing edge would answer: the PSTN
    caller keeps ringing unanswered, the phone hears reorder.
`reason` says why there is no cloud (status and the log show it).

Assumes events may be delivered through reactor.call_soon only (the Bridge contract).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from firmware.sip import api
from firmware.sip.api import MediaPipe, SipEvent

log = logging.getLogger(__name__)

EDGE_NAME = "none"
NO_CLOUD = 503
_NO_QUALITY = {"codec": None, "jitter_ms": None, "loss_pct": None, "rtt_ms": None}


class NoCloudBridge:
    """Every call refused with 503; the one edge reported down. See the module docstring."""

    def __init__(self, reactor, reason: str = "no cloud edge configured (sip.edges)") -> None:
        self.reactor = reactor
        self.reason = reason
        self._ids = itertools.count(1)
        self._emit: Callable[[SipEvent], None] | None = None

    def start(self, on_event: Callable[[SipEvent], None]) -> None:
        self._emit = on_event
        log.info("no cloud: %s; local calls, PSTN and emergency only", self.reason)
        self._send(SipEvent(api.EDGE, None, {"edge": EDGE_NAME, "ok": False, "rtt_ms": None}))

    def stop(self) -> None:
        self._emit = None

    def _send(self, event: SipEvent) -> None:
        if self._emit is not None:
            self.reactor.call_soon(self._emit, event)

    def make_call(self, line: str, to: str, *, from_number: str | None = None,
                  from_name: str | None = None, headers: dict[str, str] | None = None) -> int:
        call = next(self._ids)
        log.warning("%s: call to %s refused: %s", line, to, self.reason)
        self._send(SipEvent(api.ENDED, call, {"code": NO_CLOUD, "reason": self.reason,
                                               "quality": dict(_NO_QUALITY)}))
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

    def media(self, call: int, rate: int = 8000) -> MediaPipe:
        return MediaPipe(rate=rate)

    def quality(self, call: int) -> dict[str, Any]:
        return dict(_NO_QUALITY)

    def status(self) -> dict[str, Any]:
        return {"accounts": {}, "calls": {}, "ports": {},
                "edges": {EDGE_NAME: {"ok": False, "rtt_ms": None, "misses": 0}},
                "no_cloud": self.reason}
