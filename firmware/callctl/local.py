"""The local switch: calls between the box's own ports (FXS to FXS, to the headset, to an
FXO line for emergency numbers), shaped like SIP calls so the port FSMs need one model.

A local call is a pair of handles (negative integers, so they never meet the bridge's):
the caller's and the callee's. Whatever one side does arrives at the other as the SIP
event it would be (ringing -> RINGING, answer -> ANSWERED, hangup -> ENDED ...), through
`reactor.call_soon` so a handler never runs inside another. Audio crosses in two
back-to-back MediaPipes (firmware.media.local_pipes). Transfers of local legs are done by
the controller re-pairing ports (`CallControl.join`), never here; `splice` joins two
handles of different pairs in place (the survivable fallback chain).

Assumes the controller's `deliver(Ev)` routes an event to the owner of its handle.
"""

from __future__ import annotations

import logging
from typing import Any

from firmware.callctl.base import Ev
from firmware.media import local_pipes
from firmware.sip.api import (
    ANSWERED,
    DTMF,
    ENDED,
    HELD,
    INCOMING,
    RESUMED,
    RINGING,
    TRANSFER_DONE,
    MediaPipe,
)

log = logging.getLogger(__name__)


class LocalSwitch:
    def __init__(self, cc) -> None:
        self.cc = cc
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
        self._send(Ev(INCOMING, callee, dict(data)))

    # ---- the Bridge commands, for local handles ----
    def ringing(self, call: int) -> None:
        self._send(Ev(RINGING, self.peer.get(call)))

    def answer(self, call: int) -> None:
        if call in self.peer:
            self.up.update((call, self.peer[call]))
            self._send(Ev(ANSWERED, self.peer[call]))

    def reject(self, call: int, code: int = 486) -> None:
        self._end(call, code, "rejected")

    def hangup(self, call: int) -> None:
        self._end(call, 0 if call in self.up else 487, "hangup")

    def send_dtmf(self, call: int, digits: str) -> None:
        for digit in digits:
            self._send(Ev(DTMF, self.peer.get(call), {"digit": digit, "method": "local"}))

    def hold(self, call: int) -> None:
        self._send(Ev(HELD, self.peer.get(call)))

    def unhold(self, call: int) -> None:
        self._send(Ev(RESUMED, self.peer.get(call)))

    def transfer(self, call: int, _target: str) -> None:
        log.warning("local call %d: transfer is done by re-pairing, not by REFER", call)
        self.cc.reactor.call_soon(self.cc.deliver, Ev(TRANSFER_DONE, call, {"ok": False,
                                                                            "code": 501}))

    def media(self, call: int) -> MediaPipe | None:
        return self.pipes.get(call)

    def forget(self, call: int) -> None:
        """Drop a pair silently (its ports were re-paired elsewhere)."""
        other = self.peer.pop(call, None)
        for h in (call, other):
            if h is not None:
                self.peer.pop(h, None)
                self.pipes.pop(h, None)
                self.up.discard(h)

    def splice(self, x: int, y: int) -> None:
        """x and y talk to each other from now on (both answered); their old peers are
        dropped silently. The pipes are re-joined in place, so the ports at x and y keep
        their handles, pipes and CDRs (the survivable fallback hands a PSTN caller to the
        agent who answered this way)."""
        for h in (x, y):
            old = self.peer.pop(h, None)
            if old is not None and old not in (x, y):
                self.peer.pop(old, None)
                self.pipes.pop(old, None)
                self.up.discard(old)
        self.peer[x], self.peer[y] = y, x
        px, py = self.pipes[x], self.pipes[y]
        px.from_cloud, py.from_cloud = py.to_cloud, px.to_cloud
        self.up.update((x, y))

    def _end(self, call: int, code: int, reason: str) -> None:
        other = self.peer.get(call)
        self.forget(call)
        if other is not None:
            self._send(Ev(ENDED, other, {"code": code, "reason": reason}))

    def _send(self, ev: Ev) -> None:
        if ev.call is None:
            return
        self.cc.reactor.call_soon(self.cc.deliver, ev)
