"""The pjsua2 subclasses the bridge needs: calls, accounts, media ports, a log writer.

They are thin: every callback forwards to the bridge's SIP-thread core (`sink`), which
owns the logic. What they assume (measured, see shared/notes/pjsua2-and-sip-peers.md):
- Callbacks run on the SIP thread (threadCnt=0, mainThreadOnly=True), except the frame
  callbacks of `PipePort`, which run on pjsua2's clock thread and so touch nothing but
  the MediaPipe deques (appends and pops are atomic under the GIL).
- An exception escaping a callback is printed by SWIG and kept alive through
  sys.last_traceback, which then aborts the process at libDestroy: `guarded` logs it
  and clears those references instead.
- The owner keeps every object referenced until it is done with it (an unreferenced
  Call hangs up silently; one alive at libDestroy aborts).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pjsua2 as pj

from firmware.sip.api import MediaPipe

log = logging.getLogger(__name__)


def forget_exception() -> None:
    """Drop the references Python keeps to the last uncaught exception's frames."""
    sys.last_type = sys.last_value = sys.last_traceback = None
    if hasattr(sys, "last_exc"):
        sys.last_exc = None


def destroy_port(port) -> None:
    """Take an AudioMediaPort out of the conference and free it now, while its Python
    object is whole. Left to the garbage collector, Python clears the object's
    attributes before the C++ destructor unregisters the port, and pjmedia's clock
    thread calls into the half-freed object in between (measured in a test peer: an
    AttributeError in onFrameReceived, then a segfault). The SWIG delete disowns the
    pointer, so the later collection frees nothing twice. Never use the port after."""
    if port is None:
        return
    try:
        type(port).__swig_destroy__(port)
    except Exception:  # noqa: BLE001 - a port that was never created, or gone already
        log.debug("destroying a media port failed", exc_info=True)
        forget_exception()


def guarded(fn):
    """Wrap a pjsua2 callback: log an exception instead of letting it reach SWIG."""
    @functools.wraps(fn)
    def wrapper(self, *args):
        try:
            return fn(self, *args)
        except Exception:
            log.exception("SIP callback %s failed", fn.__name__)
            forget_exception()
            return None
    return wrapper


class PipePort(pj.AudioMediaPort):
    """Carries one call's audio between a MediaPipe and pjsua2's conference bridge.

    Frames are PCM16 mono at pipe.rate, 20 ms. With `now` (the reactor's clock) every
    request and delivery stamps the pipe (asked_at, given_at): call control's media clock
    phase-locks to them. ByteVector.assign_from_bytes and
    copy_to_bytearray move a frame in under 1 us; reading the vector element by element
    (bytes(list(buf))) costs 100-300 us, too much at 50 frames/s per call.
    """

    def __init__(self, pipe: MediaPipe, now: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.pipe = pipe
        self.now = now  # the reactor's clock: stamps the pipe (call control phase-locks)
        self.nbytes = pipe.frame * 2
        self.silence = bytes(self.nbytes)
        self.errors = 0  # counted, not logged: these run 50 times a second

    def open(self, name: str) -> None:
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.pipe.rate, 1, 20000, 16)
        self.createPort(name, fmt)

    def onFrameRequested(self, frame) -> None:
        try:
            data = self._next_frame()
            frame.buf.assign_from_bytes(data)
            frame.size = len(data)
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        except Exception:
            self.errors += 1
            forget_exception()

    def _next_frame(self) -> bytes:
        if self.now is not None:
            self.pipe.asked_at = self.now()
        frame = self.pipe.take_to_cloud()
        if frame is None:
            return self.silence
        data = np.asarray(frame, dtype=np.int16).tobytes()
        return data if len(data) == self.nbytes else self.silence

    def onFrameReceived(self, frame) -> None:
        try:
            # The type first, touching nothing of self: the conference keeps handing
            # empty frames to a port whose call has ended, also while Python is
            # tearing the port down (its attributes already gone; measured: an
            # AttributeError there, then a segfault).
            if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO:
                return
            buf = bytearray(frame.buf.size())
            if len(buf) != self.nbytes:
                return
            frame.buf.copy_to_bytearray(buf)
            self.pipe.from_cloud.append(np.frombuffer(buf, dtype=np.int16))
            if self.now is not None:
                self.pipe.given_at = self.now()
        except Exception:
            self.errors += 1
            forget_exception()


class BCall(pj.Call):
    """One SIP call leg, named by the bridge handle call control knows it by.

    After an incoming REFER the handle moves to a new BCall (the transfer leg) and the
    old one is marked `superseded`, so its end is not reported as the handle's end.
    """

    def __init__(self, account: pj.Account, sink: Any, handle: int,
                 call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.sink = sink
        self.handle = handle
        self.account = account
        self.port: PipePort | None = None
        self.superseded = False
        self.previous: BCall | None = None  # the leg a transfer leg replaced
        self.answered = False
        self.remote_held = False
        self.reported: set[str] = set()
        # Fax/modem passthrough (issue 10): once set, every SDP this leg makes offers or
        # answers G.711 only, and every audio stream it creates gets the fixed jitter
        # buffer (the bridge core's sdp_created / stream_precreate).
        self.passthrough = False
        self.passthrough_sent = False  # the re-INVITE went out

    @guarded
    def onCallState(self, prm) -> None:
        self.sink.on_call_state(self)

    @guarded
    def onCallMediaState(self, prm) -> None:
        self.sink.on_media_state(self)

    @guarded
    def onCallSdpCreated(self, prm) -> None:
        self.sink.sdp_created(self, prm)

    @guarded
    def onStreamPreCreate(self, prm) -> None:
        self.sink.stream_precreate(self, prm)

    @guarded
    def onDtmfDigit(self, prm) -> None:
        self.sink.on_dtmf(self, prm.digit, prm.method)

    @guarded
    def onCallTransferRequest(self, prm) -> None:
        self.sink.on_transfer_request(self, prm)

    @guarded
    def onCallTransferStatus(self, prm) -> None:
        self.sink.on_transfer_status(self, prm)

    @guarded
    def onCallReplaced(self, prm) -> None:
        self.sink.on_replaced(self, prm)


class BAccount(pj.Account):
    """A SIP identity: the trunk, one FXS line, the local account or the ping account."""

    def __init__(self, sink: Any, aor: str, line: str | None, registers: bool) -> None:
        super().__init__()
        self.sink = sink
        self.aor = aor
        self.line = line
        self.registers = registers

    @guarded
    def onRegState(self, prm) -> None:
        self.sink.on_reg_state(self, prm.code, prm.reason, prm.expiration)

    @guarded
    def onIncomingCall(self, prm) -> None:
        self.sink.on_incoming(self, prm.callId, prm.rdata.wholeMsg)

    @guarded
    def onSendRequest(self, prm) -> None:
        self.sink.on_request_done(self, prm.e)


class PjLogWriter(pj.LogWriter):
    """pjsua2's own log lines into Python logging (level 1-2 warnings, the rest debug)."""

    @guarded
    def write(self, entry) -> None:
        level = logging.WARNING if entry.level <= 2 else logging.DEBUG
        log.log(level, "pj: %s", entry.msg.rstrip())
