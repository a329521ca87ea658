"""The interface between call control and SIP.

Call control (on the reactor thread) drives a `Bridge` with commands and receives
`SipEvent`s through the `on_event` callback it gives the bridge; the bridge delivers
them on the reactor thread (via `reactor.call_soon`). Calls are named by integer
handles the bridge hands out. Audio crosses in `MediaPipe`s: 20 ms frames of 160
int16 samples at 8 kHz, lock-free deques on both sides.

Two implementations: `firmware.sip.pjbridge.PjBridge` (pjsua2, the product) and
`lab.simcloud.SimCloud` (an in-process cloud in fake time, for long scenarios).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

FRAME = 160
MAX_QUEUED = 3  # frames allowed to wait (60 ms) before old ones are dropped
BACKLOG_TAKES = 10  # takes in a row finding more than one frame: a standing queue (200 ms)

# Event kinds
INCOMING = "incoming"  # data: from_number, from_name, to_number (DNIS), line, headers, call_id
RINGING = "ringing"  # 180 from the far end
EARLY_MEDIA = "early_media"  # 183 with SDP: play the far end's audio before answer
ANSWERED = "answered"  # data: call_id (the SIP Call-ID, when the bridge knows it)
ENDED = "ended"  # data: code (SIP status or 0), reason
DTMF = "dtmf"  # data: digit, method ("rfc4733" | "info")
HELD = "held"  # the far end put us on hold
RESUMED = "resumed"
TRANSFER_REQUESTED = "transfer_requested"  # REFER from the far end; data: target
TRANSFER_DONE = "transfer_done"  # our REFER finished; data: ok, code
REGISTRATION = "registration"  # data: account, ok, code, reason
EDGE = "edge"  # OPTIONS health of a cloud edge; data: edge, ok, rtt_ms
MEDIA_TIMEOUT = "media_timeout"  # no RTP received on an answered call; data: silent_s
MEDIA_RESUMED = "media_resumed"  # RTP arrives again after a MEDIA_TIMEOUT; data: silent_s


@dataclass(frozen=True)
class SipEvent:
    kind: str
    call: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


class MediaPipe:
    """Audio of one call, both ways. The line side puts frames for the cloud and takes
    frames from it; the SIP side does the reverse. Bounded: old frames are dropped.
    `rate` is 8000 (lines: 160-sample frames) or 16000 (the headset, wideband when the
    cloud offers G.722: 320-sample frames)."""

    def __init__(self, depth: int = 10, rate: int = 8000) -> None:
        self.rate = rate
        self.frame = rate // 50
        self.to_cloud: deque[np.ndarray] = deque(maxlen=depth)
        self.from_cloud: deque[np.ndarray] = deque(maxlen=depth)
        # The SIP side's frame clock, in reactor-clock seconds (None: not seen yet): when
        # it last asked for a frame for the cloud and last gave one from it. Call
        # control's media clock phase-locks to them (firmware.media.MediaClock).
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
        """The SIP side's take (its clock thread): the next frame for the cloud."""
        frame = self._take(self.to_cloud, "to")
        if frame is None:
            self.starved += 1
        return frame

    def _take(self, queue: deque, side: str) -> np.ndarray | None:
        # The two ends run on different clocks (pjsua2's and the line's PCM). A frame
        # that came late once leaves one frame standing in the queue from then on (both
        # ends then run in step): 20 ms more delay for the rest of the call. So a frame
        # that missed its take (silence went in its place) is dropped when the next one
        # is there too, and when every take for a while finds more than one frame, or
        # the queue is long, it is cut to the newest; a one-off burst is kept.
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

    def quality(self, call: int) -> dict[str, Any]:
        """RTCP figures of a call: codec, jitter_ms, loss_pct, rtt_ms (None if unknown)."""
        ...

    def status(self) -> dict[str, Any]: ...

    # Survivability (optional: call control checks with getattr; NoCloudBridge has none).
    # A bridge that reports MEDIA_TIMEOUT / MEDIA_RESUMED sets `rtp_timeout_s` from
    # survive.rtp_timeout_s.
    def use_edge(self, uri: str) -> None:
        """Register at this edge (one of sip.edges) and send new calls through it."""
        ...

    def refresh(self, call: int) -> None:
        """Re-INVITE an answered call (after a blip, or to move it to the edge in use)."""
        ...
