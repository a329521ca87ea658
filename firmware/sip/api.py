"""The interface between call control and SIP: call control drives a `Bridge` on the
reactor thread and gets `SipEvent`s back there through the callback it gave; calls are
named by integer handles the bridge hands out; audio crosses in `MediaPipe`s."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

MAX_QUEUED = 3  # frames allowed to wait (60 ms) before old ones are dropped
BACKLOG_TAKES = 10  # takes in a row finding more than one frame: a standing queue (200 ms)
NO_QUALITY: dict[str, Any] = {"codec": None, "jitter_ms": None, "loss_pct": None,
                              "rtt_ms": None}


class SipEventKind(StrEnum):
    INCOMING = "incoming"  # data: from_number, from_name, to_number (DNIS), line, headers, call_id
    RINGING = "ringing"  # 180 from the far end
    EARLY_MEDIA = "early_media"  # 183 with SDP: play the far end's audio before answer
    ANSWERED = "answered"  # data: call_id (the SIP Call-ID, when the bridge knows it)
    ENDED = "ended"  # data: code (SIP status or 0), reason, quality
    DTMF = "dtmf"  # data: digit, method ("rfc4733" | "info")
    HELD = "held"  # the far end put us on hold
    RESUMED = "resumed"
    TRANSFER_REQUESTED = "transfer_requested"  # REFER from the far end; data: target
    TRANSFER_DONE = "transfer_done"  # our REFER finished; data: ok, code
    REGISTRATION = "registration"  # data: account, line, ok, code, reason
    EDGE = "edge"  # OPTIONS health of a cloud edge; data: edge, ok, rtt_ms
    MEDIA_TIMEOUT = "media_timeout"  # no RTP received on an answered call; data: silent_s
    MEDIA_RESUMED = "media_resumed"  # RTP arrives again after a MEDIA_TIMEOUT; data: silent_s


# The kinds under their old module-level names (api.ENDED), in the order defined above.
(INCOMING, RINGING, EARLY_MEDIA, ANSWERED, ENDED, DTMF, HELD, RESUMED, TRANSFER_REQUESTED,
 TRANSFER_DONE, REGISTRATION, EDGE, MEDIA_TIMEOUT, MEDIA_RESUMED) = SipEventKind


class SipCallState(StrEnum):
    """A call's state in a bridge's status()["calls"]."""

    CALLING = "calling"
    INCOMING = "incoming"
    ANSWERED = "answered"


@dataclass(frozen=True)
class SipEvent:
    kind: SipEventKind
    call: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


class MediaPipe:
    """Audio of one call, both ways, in 20 ms frames at `rate` (8000, or 16000 for a
    wideband headset). The line side puts frames for the cloud and takes frames from it;
    the SIP side does the reverse. Bounded: old frames are dropped."""

    def __init__(self, depth: int = 10, rate: int = 8000) -> None:
        self.rate = rate
        self.frame = rate // 50
        self.to_cloud: deque[np.ndarray] = deque(maxlen=depth)
        self.from_cloud: deque[np.ndarray] = deque(maxlen=depth)
        # The SIP side's frame clock (reactor-clock seconds, None until seen), which
        # call control's media clock phase-locks to (firmware.media.MediaClock).
        self.asked_at: float | None = None
        self.given_at: float | None = None
        self.starved = 0  # times the SIP side asked and no frame was waiting
        self._backlog = {"to": 0, "from": 0}
        self._missed = {"to": False, "from": False}  # the last take found nothing

    def put_to_cloud(self, frame: np.ndarray) -> None:
        self.to_cloud.append(frame)

    def take_from_cloud(self) -> np.ndarray | None:
        return self._take(self.from_cloud, "from")

    def take_to_cloud(self) -> np.ndarray | None:
        """The SIP side's take, on its clock thread."""
        frame = self._take(self.to_cloud, "to")
        if frame is None:
            self.starved += 1
        return frame

    def _take(self, queue: deque[np.ndarray], side: str) -> np.ndarray | None:
        # Two clocks (pjsua2's, the line's): a frame late once would leave one standing
        # in the queue, 20 ms more delay for the rest of the call. So the queue is cut to
        # the newest after a missed take, when takes keep finding more than one frame,
        # or when it is long; a one-off burst is kept.
        self._backlog[side] = self._backlog[side] + 1 if len(queue) > 1 else 0
        if ((self._missed[side] and len(queue) > 1) or self._backlog[side] >= BACKLOG_TAKES
                or len(queue) > MAX_QUEUED):
            self._backlog[side] = 0
            while len(queue) > 1:
                queue.popleft()
        frame = queue.popleft() if queue else None
        self._missed[side] = frame is None
        return frame


class Bridge(Protocol):
    """What call control needs from SIP. Every method is called on the reactor thread
    and returns at once; outcomes arrive later as SipEvents."""

    def start(self, on_event: Callable[[SipEvent], None]) -> None: ...
    def stop(self) -> None: ...
    def make_call(self, line: str, to: str, *, from_number: str | None = None,
                  from_name: str | None = None, headers: dict[str, str] | None = None) -> int: ...
    def ringing(self, call: int) -> None: ...
    def answer(self, call: int) -> None: ...
    def reject(self, call: int, code: int = 486) -> None: ...
    def hangup(self, call: int) -> None: ...
    def send_dtmf(self, call: int, digits: str) -> None: ...
    def hold(self, call: int) -> None: ...
    def unhold(self, call: int) -> None: ...
    def transfer(self, call: int, target: str) -> None: ...
    def transfer_attended(self, call: int, other: int) -> None: ...
    def media(self, call: int, rate: int = 8000) -> MediaPipe: ...
    # RTCP figures of a call: codec, jitter_ms, loss_pct, rtt_ms (None if unknown).
    def quality(self, call: int) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    # A fax or modem on this call: G.711 only, fixed jitter buffer.
    def passthrough(self, call: int) -> None: ...
    # Survivability: register at this edge (one of sip.edges), new calls go through it;
    # re-INVITE an answered call (after a blip, or to move it to the edge in use).
    def use_edge(self, uri: str) -> None: ...
    def refresh(self, call: int) -> None: ...
