"""What the SIP thread's parts build on: thin pjsua2 subclasses, each callback forwarded to
its part; helpers at the pjsua2 edge; the legs; and `Shared`, which the reactor thread
reads too (a status section is replaced whole, never edited in place)."""

from __future__ import annotations

import functools
import itertools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import numpy as np
import pjsua2 as pj

from firmware.sip.api import NO_QUALITY, MediaPipe, SipEventKind

if TYPE_CHECKING:  # the parts, which pjsua2's callbacks reach through the Context
    from firmware.sip.accounts import Accounts
    from firmware.sip.calls import Calls
    from firmware.sip.health import EdgePinger
    from firmware.sip.media import MediaPorts

log = logging.getLogger(__name__)

PjObj = Any  # a pjsua2 (SWIG) object: the module has no stubs
F = TypeVar("F", bound=Callable[..., None])


def forget_exception() -> None:
    """Drop the last uncaught exception's frames: pjsua2 objects alive in them at
    libDestroy abort the process."""
    sys.last_type = sys.last_value = sys.last_traceback = None
    if hasattr(sys, "last_exc"):
        sys.last_exc = None


def pj_reason(exc: BaseException) -> str:
    if isinstance(exc, pj.Error):
        return f"{exc.info(False) if hasattr(exc, 'info') else exc.reason} ({exc.status})"
    return str(exc)


def sip_header(name: str, value: str) -> PjObj:
    hdr = pj.SipHeader()
    hdr.hName = name
    hdr.hValue = value
    return hdr


def destroy_port(port: PjObj | None) -> None:
    """Take an AudioMediaPort out of the conference and free it now, while its Python
    object is whole: left to the collector, pjmedia's clock thread calls into the
    half-cleared object (measured: an AttributeError, then a segfault). The SWIG delete
    disowns the pointer, so nothing is freed twice. Never use the port after."""
    if port is None:
        return
    try:
        type(port).__swig_destroy__(port)
    except Exception:  # noqa: BLE001 - a port that was never created, or gone already
        log.debug("destroying a media port failed", exc_info=True)
        forget_exception()


def guarded(fn: F) -> F:
    """Wrap a pjsua2 callback: log an exception instead of letting it reach SWIG (which
    prints it and keeps it alive through sys.last_traceback, aborting at libDestroy)."""
    @functools.wraps(fn)
    def wrapper(self: object, *args: Any) -> None:
        try:
            fn(self, *args)
        except Exception:
            log.exception("SIP callback %s failed", fn.__name__)
            forget_exception()
    return cast(F, wrapper)


class PipePort(pj.AudioMediaPort):
    """One call's audio between a MediaPipe and the conference bridge, in 20 ms frames.
    Callbacks run on pjsua2's clock thread and touch only the pipe, which they stamp with
    `now`. assign_from_bytes / copy_to_bytearray take under 1 us a frame (loops: 100 us)."""

    def __init__(self, pipe: MediaPipe, now: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.pipe = pipe
        self.now = now
        self.nbytes = pipe.frame * 2
        self.silence = bytes(self.nbytes)
        self.errors = 0  # counted, not logged: these run 50 times a second

    def open(self, name: str) -> None:
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.pipe.rate, 1, 20000, 16)
        self.createPort(name, fmt)

    def onFrameRequested(self, frame: PjObj) -> None:
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

    def onFrameReceived(self, frame: PjObj) -> None:
        try:
            # The type first, touching nothing of self: the conference hands empty frames
            # to a port being torn down too (measured: an AttributeError, then a segfault).
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
    """One SIP call leg, named by the handle call control knows it by. A leg whose handle
    moved to another (REFER, Replaces) is `superseded`: its end is not reported."""

    def __init__(self, account: BAccount, ctx: Context, handle: int,
                 call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.ctx = ctx
        self.handle = handle
        self.account = account
        self.port: PipePort | None = None
        self.superseded = False
        self.previous: BCall | None = None  # the leg a transfer leg replaced
        self.answered = False
        self.remote_held = False
        self.reported: set[SipEventKind] = set()
        self.passthrough = False  # fax/modem: see media.Passthrough
        self.passthrough_sent = False  # the re-INVITE went out

    def audio_stream(self) -> tuple[PjObj, PjObj] | None:
        """StreamInfo and StreamStat of the active audio stream, or None."""
        info = self.getInfo()  # keep it: .media refers into it (SWIG), not a copy
        idx = next((m.index for m in info.media if m.type == pj.PJMEDIA_TYPE_AUDIO
                    and m.status != pj.PJSUA_CALL_MEDIA_NONE), None)
        if idx is None:
            return None
        try:
            return self.getStreamInfo(idx), self.getStreamStat(idx)
        except pj.Error:
            return None

    def rx_packets(self) -> int | None:
        """RTP packets received on the audio stream, or None while the far end is not
        meant to send: a hold either way or an inactive stream (the SDP says so: RFC 3264
        sec. 6.1 and 8.4), so silence then is no sign of a lost network."""
        info = self.getInfo()  # keep it: .media refers into it (SWIG), not a copy
        media = next((m for m in info.media if m.type == pj.PJMEDIA_TYPE_AUDIO
                      and m.status != pj.PJSUA_CALL_MEDIA_NONE), None)
        if (media is None or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE
                or media.dir != pj.PJMEDIA_DIR_ENCODING_DECODING):
            return None
        try:
            return int(self.getStreamStat(media.index).rtcp.rxStat.pkt)
        except pj.Error:
            return None

    def audio(self) -> PjObj | None:
        """The AudioMedia to connect a port to: active or held by the far end."""
        info = self.getInfo()  # keep it: .media refers into it (SWIG), not a copy
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status in (
                    pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                return self.getAudioMedia(media.index)
        return None

    @guarded
    def onCallState(self, prm: PjObj) -> None:
        self.ctx.calls.on_state(self)

    @guarded
    def onCallMediaState(self, prm: PjObj) -> None:
        self.ctx.media.on_media_state(self)

    @guarded
    def onCallSdpCreated(self, prm: PjObj) -> None:
        self.ctx.media.passthrough.sdp_created(self, prm)

    @guarded
    def onStreamPreCreate(self, prm: PjObj) -> None:
        self.ctx.media.passthrough.stream_precreate(self, prm)

    @guarded
    def onDtmfDigit(self, prm: PjObj) -> None:
        self.ctx.calls.on_dtmf(self, prm.digit, prm.method)

    @guarded
    def onCallTransferRequest(self, prm: PjObj) -> None:
        self.ctx.calls.on_transfer_request(self, prm)

    @guarded
    def onCallTransferStatus(self, prm: PjObj) -> None:
        self.ctx.calls.on_transfer_status(self, prm)

    @guarded
    def onCallReplaced(self, prm: PjObj) -> None:
        self.ctx.calls.on_replaced(self, prm)


class BAccount(pj.Account):
    """The trunk, one FXS line, the local account or a ping account."""

    def __init__(self, ctx: Context, aor: str, line: str | None, registers: bool,
                 config: PjObj, proxied: bool) -> None:
        super().__init__()
        self.ctx = ctx
        self.aor = aor
        self.line = line
        self.registers = registers
        self.config = config  # kept for Account.modify (use_edge)
        self.proxied = proxied  # False: a ping account, which keeps its own edge

    @guarded
    def onRegState(self, prm: PjObj) -> None:
        self.ctx.accounts.on_reg_state(self, prm.code, prm.reason, prm.expiration)

    @guarded
    def onIncomingCall(self, prm: PjObj) -> None:
        self.ctx.calls.on_incoming(self, prm.callId, prm.rdata.wholeMsg)

    @guarded
    def onSendRequest(self, prm: PjObj) -> None:
        self.ctx.pinger.on_request_done(self, prm.e)


class PjLogWriter(pj.LogWriter):
    @guarded
    def write(self, entry: PjObj) -> None:
        level = logging.WARNING if entry.level <= 2 else logging.DEBUG
        log.log(level, "pj: %s", entry.msg.rstrip())


class Emit(Protocol):  # a SipEvent to call control, through reactor.call_soon
    def __call__(self, kind: SipEventKind, call: int | None = None, /, **data: Any) -> None: ...


class Shared:
    def __init__(self) -> None:
        self._handles = itertools.count(1)  # next() on a count is atomic: both threads use it
        self.pipes: dict[int, MediaPipe] = {}  # written on the reactor thread (media())
        self.quality: dict[int, dict[str, Any]] = {}
        self.status: dict[str, dict[Any, Any]] = {"accounts": {}, "calls": {}, "edges": {},
                                                  "ports": {}}

    def next_handle(self) -> int:
        return next(self._handles)

    def quality_of(self, handle: int) -> dict[str, Any]:
        return dict(self.quality.get(handle, NO_QUALITY))

    def publish(self, section: str, key: Any, value: Any) -> None:
        entries = dict(self.status[section])
        entries[key] = value
        self.status[section] = entries

    def update_call(self, handle: int, **fields: Any) -> None:
        self.publish("calls", handle, {**self.status["calls"].get(handle, {}), **fields})

    def forget_call(self, handle: int) -> None:
        calls = dict(self.status["calls"])
        calls.pop(handle, None)
        self.status["calls"] = calls
        self.pipes.pop(handle, None)
        self.quality.pop(handle, None)


class Legs:
    """Every call leg, referenced until finished with: an unreferenced pjsua2 Call hangs
    up silently, one collected while pjsua still calls back into it is freed memory, one
    alive at libDestroy aborts."""

    def __init__(self) -> None:
        self.live: dict[int, BCall] = {}  # handle -> the leg it names now
        self.dead: list[BCall] = []  # disconnected: dropped in the loop, not in their callback
        # Legs a transfer or Replaces took the handle from: kept until their own
        # DISCONNECTED is reaped, since pjsua keeps calling back into them (the BYE).
        self.old: list[BCall] = []
        self.retired: list[PipePort] = []  # ports of superseded legs

    def get(self, handle: int, what: str) -> BCall | None:
        call = self.live.get(handle)
        if call is None:
            log.info("SIP %s: no call %s (ended already?)", what, handle)
        return call

    def answered(self) -> list[BCall]:
        return [c for c in self.live.values() if c.answered and c.isActive()]

    def unname(self, call: BCall) -> None:
        if self.live.get(call.handle) is call:
            del self.live[call.handle]

    def any_active(self) -> bool:
        return any(c.isActive() for c in [*self.live.values(), *self.old])

    def reap(self) -> None:
        """Drop what ended, here in the loop: never inside its own callback."""
        while self.retired:
            destroy_port(self.retired.pop())
        while self.dead:
            call = self.dead.pop()
            destroy_port(call.port)
            call.port = None
            call.previous = None
            if call in self.old:
                self.old.remove(call)

    def drop_all(self) -> None:
        """At shutdown: every port destroyed, every leg let go."""
        for call in [*self.live.values(), *self.dead, *self.old]:
            destroy_port(call.port)
            call.port = None
        while self.retired:
            destroy_port(self.retired.pop())
        self.live.clear()
        self.dead.clear()
        self.old.clear()


@dataclass
class Context:
    """What the parts on the SIP thread share, the parts included (set by the SIP thread).
    `sip` is the bridge's own dict: a change there shows at once."""

    sip: dict[str, Any]
    lines: dict[str, Any]
    shared: Shared
    emit: Emit
    now: Callable[[], float]
    legs: Legs = field(default_factory=Legs)
    accounts: Accounts = field(init=False)
    calls: Calls = field(init=False)
    media: MediaPorts = field(init=False)
    pinger: EdgePinger = field(init=False)
