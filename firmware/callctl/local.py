"""The local switch: calls between the box's own ports, shaped like SIP calls so the port
FSMs need one model. A call is a pair of negative handles (never the bridge's); what one
side does reaches the other as the SIP event it would be, through `call_soon` so a handler
never runs inside another; audio crosses in two back-to-back MediaPipes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from firmware.callctl.base import Ev
from firmware.media import local_pipes
from firmware.sip import api
from firmware.sip.api import MediaPipe
from foundation.reactor import Reactor

log = logging.getLogger(__name__)


class LocalSwitch:
    def __init__(self, reactor: Reactor, deliver: Callable[[Ev], None]) -> None:
        self.reactor, self.deliver = reactor, deliver
        self._next = -1
        self.peer: dict[int, int] = {}
        self.pipes: dict[int, MediaPipe] = {}
        self.up: set[int] = set()

    def is_local(self, call: int | None) -> bool:
        return call is not None and call < 0

    def pair(self) -> tuple[int, int]:
        """A new call: (caller handle, callee handle), joined audio."""
        a, b = self._next, self._next - 1
        self._next -= 2
        self.peer[a], self.peer[b] = b, a
        self.pipes[a], self.pipes[b] = local_pipes()
        return a, b

    def established_pair(self) -> tuple[int, int]:
        """A pair that is already answered (re-pairing ports after a transfer)."""
        a, b = self.pair()
        self.up.update((a, b))
        return a, b

    def offer(self, callee: int, data: dict[str, Any]) -> None:
        self._send(Ev(api.INCOMING, callee, dict(data)))

    # ---- the Bridge commands, for local handles ----
    def ringing(self, call: int) -> None:
        self._send(Ev(api.RINGING, self.peer.get(call)))

    def answer(self, call: int) -> None:
        if call in self.peer:
            self.up.update((call, self.peer[call]))
            self._send(Ev(api.ANSWERED, self.peer[call]))

    def reject(self, call: int, code: int = 486) -> None:
        self._end(call, code, "rejected")

    def hangup(self, call: int) -> None:
        self._end(call, 0 if call in self.up else 487, "hangup")

    def send_dtmf(self, call: int, digits: str) -> None:
        for digit in digits:
            self._send(Ev(api.DTMF, self.peer.get(call), {"digit": digit, "method": "local"}))

    def hold(self, call: int) -> None:
        self._send(Ev(api.HELD, self.peer.get(call)))

    def unhold(self, call: int) -> None:
        self._send(Ev(api.RESUMED, self.peer.get(call)))

    def transfer(self, call: int, _target: str) -> None:
        log.warning("local call %d: transfer is done by re-pairing, not by REFER", call)
        self.reactor.call_soon(self.deliver, Ev(api.TRANSFER_DONE, call, {"ok": False, "code": 501}))

    def media(self, call: int) -> MediaPipe | None:
        return self.pipes.get(call)

    def forget(self, call: int) -> None:
        """Drop a pair silently (its ports were re-paired elsewhere)."""
        other = self.peer.pop(call, None)
        for h in (call, other):
            if h is not None:
                self._drop(h)

    def _drop(self, h: int) -> None:
        self.peer.pop(h, None)
        self.pipes.pop(h, None)
        self.up.discard(h)

    def splice(self, x: int, y: int) -> None:
        """x and y talk to each other from now on (both answered), keeping their handles,
        pipes and CDRs; their old peers are dropped silently (the survivable fallback)."""
        for old in (self.peer.pop(x, None), self.peer.pop(y, None)):
            if old is not None and old not in (x, y):
                self._drop(old)
        self.peer[x], self.peer[y] = y, x
        px, py = self.pipes[x], self.pipes[y]
        px.from_cloud, py.from_cloud = py.to_cloud, px.to_cloud
        self.up.update((x, y))

    def _end(self, call: int, code: int, reason: str) -> None:
        other = self.peer.get(call)
        self.forget(call)
        if other is not None:
            self._send(Ev(api.ENDED, other, {"code": code, "reason": reason}))

    def _send(self, ev: Ev) -> None:
        if ev.call is None:
            return
        self.reactor.call_soon(self.deliver, ev)
