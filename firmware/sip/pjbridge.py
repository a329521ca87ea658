"""PjBridge, the SIP bridge on pjsua2, runs on the reactor thread: it hands out call handles
at once and queues commands for the SIP thread, where all of pjsua2 lives (it aborts when
called from another thread); events come back via reactor.call_soon."""

from __future__ import annotations

import gc
import logging
import queue
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any

import pjsua2 as pj

from firmware.sip.accounts import Accounts, SipError, Transports, set_codecs
from firmware.sip.api import MediaPipe, SipEvent, SipEventKind
from firmware.sip.calls import Calls
from firmware.sip.health import EdgePinger, RtpWatch
from firmware.sip.media import MediaPorts
from firmware.sip.pjobjects import Context, PjLogWriter, PjObj, Shared, forget_exception, pj_reason
from foundation.errors import BranchlineError
from foundation.reactor import Reactor

__all__ = ["PjBridge", "SipError", "conference_rate"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
QUALITY_EVERY_S = 1.0
RTP_POLL_S = 0.25
JB_INIT_MS, JB_MAX_PRE_MS = 20, 80  # jitter buffer prefetch: start, ceiling


class Cmd(Enum):
    MAKE_CALL = "make_call"
    RESPOND = "respond"
    HANGUP = "hangup"
    SEND_DTMF = "send_dtmf"
    HOLD = "hold"
    TRANSFER = "transfer"
    TRANSFER_ATTENDED = "transfer_attended"
    USE_EDGE = "use_edge"
    REFRESH = "refresh"
    PASSTHROUGH = "passthrough"
    ATTACH = "attach"


def ep_config(clock_rate: int, writer: PjLogWriter) -> PjObj:
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = 64
    cfg.uaConfig.userAgent = "branchline"
    cfg.medConfig.noVad = True  # VAD mutes steady tones (DTMF, test tones, dial tone)
    cfg.medConfig.ecTailLen = 0  # our own G.168 canceller runs on the analog side
    cfg.medConfig.clockRate = clock_rate
    cfg.medConfig.sndClockRate = clock_rate
    # Adaptive, one frame up to JB_MAX_PRE_MS: with pjmedia's own 240 ms ceiling, a burst
    # after one stall of the box grew it there and kept it as delay (bench_calls.py).
    cfg.medConfig.jbInit = JB_INIT_MS
    cfg.medConfig.jbMinPre = JB_INIT_MS
    cfg.medConfig.jbMaxPre = JB_MAX_PRE_MS
    cfg.logConfig.writer = writer
    cfg.logConfig.level = 3
    cfg.logConfig.consoleLevel = 3
    cfg.logConfig.decor = 0
    return cfg


class SipThread:
    """The pjsua2 endpoint and its parts; `run` is the thread's body."""

    def __init__(self, ctx: Context, clock_rate: int, rtp_timeout: Callable[[], float]) -> None:
        self.ctx = ctx
        self.clock_rate = clock_rate
        self.commands: queue.SimpleQueue[tuple[Cmd, tuple[Any, ...]]] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.stopping = False
        self.ep: PjObj = None
        self.writer: PjLogWriter | None = None
        self.legs = ctx.legs
        self.accounts = ctx.accounts = Accounts(ctx)
        self.media = ctx.media = MediaPorts(ctx)
        self.calls = ctx.calls = Calls(ctx)
        self.pinger = ctx.pinger = EdgePinger(ctx)
        self.rtp = RtpWatch(ctx, rtp_timeout)
        calls = self.calls
        self.handlers: dict[Cmd, Callable[..., None]] = {
            Cmd.MAKE_CALL: calls.make_call, Cmd.RESPOND: calls.respond, Cmd.HANGUP: calls.hangup,
            Cmd.SEND_DTMF: calls.send_dtmf, Cmd.HOLD: calls.hold, Cmd.TRANSFER: calls.transfer,
            Cmd.TRANSFER_ATTENDED: calls.transfer_attended, Cmd.REFRESH: calls.refresh,
            Cmd.USE_EDGE: self.accounts.use_edge, Cmd.PASSTHROUGH: self.media.passthrough.start,
            Cmd.ATTACH: self.media.attach_handle,
        }
        self.next_quality = 0.0
        self.next_rtp = 0.0

    def stop(self) -> None:
        """Ask the thread to end (from any thread)."""
        self.stopping = self.accounts.stopping = True

    def run(self) -> None:
        message = None
        try:
            self._init()
        except BranchlineError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"SIP stack failed to start: {pj_reason(exc)}"
        if message is not None:
            # A fresh error without traceback or context: the pj.Error's frames hold the
            # Endpoint, which would then outlive libDestroy and abort the next start.
            forget_exception()
            self._shutdown()
            self.failure = SipError(message)
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop()
        finally:
            self._shutdown()

    def _init(self) -> None:
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        self.writer = PjLogWriter()
        self.ep.libInit(ep_config(self.clock_rate, self.writer))
        transports = Transports(self.ep, self.ctx.sip)
        transports.create()
        self.ep.libStart()
        adm = self.ep.audDevManager()
        adm.setNullDev()
        # Without this the null device's clock stops and conference slots leak (notes).
        adm.getCaptureDevMedia().startTransmit(adm.getPlaybackDevMedia())
        set_codecs(self.ep, self.ctx.sip["codecs"])
        self.accounts.create(transports.ids[self.ctx.sip["transport"]])
        self.pinger.create_accounts()  # one per edge: see EdgePinger
        for name, port in transports.ports().items():
            self.ctx.shared.publish("ports", name, port)

    def _loop(self) -> None:
        while not self.stopping:
            self.ep.libHandleEvents(10)
            self._drain()
            self.legs.reap()
            now = self.ctx.now()
            self.pinger.tick(now)
            if now >= self.next_quality:
                self.next_quality = now + QUALITY_EVERY_S
                self.media.refresh_quality()
            if now >= self.next_rtp:
                self.next_rtp = now + RTP_POLL_S
                self.rtp.tick(now)

    def _drain(self) -> None:
        while True:
            try:
                cmd, args = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                self.handlers[cmd](*args)
            except pj.Error as exc:
                log.warning("SIP %s%r failed: %s", cmd.value, args[:2], pj_reason(exc))
            except Exception:
                log.exception("SIP command %s failed", cmd.value)
            forget_exception()

    def _shutdown(self) -> None:
        """The order that never aborts: hang up, pump events, drop every reference to a
        Call, port or Account, collect, and only then libDestroy."""
        if self.ep is None:
            return
        self.stop()
        try:
            self.ep.hangupAllCalls()
            for _ in range(50):
                self.ep.libHandleEvents(10)
                if not self.legs.any_active():
                    break
        except pj.Error as exc:
            log.warning("SIP shutdown: %s", pj_reason(exc))
        self.legs.drop_all()
        self.accounts.shutdown()
        self.pinger.forget_accounts()
        forget_exception()
        gc.collect()
        self.ep.libDestroy()
        self.ep = None
        self.writer = None




def conference_rate(doc: dict[str, Any]) -> int:
    """pjsua2's conference bridge clock, fixed at libInit: 16 kHz only for a wideband
    headset. An 8 kHz port in a 16 kHz bridge costs ~32 ms each way (the resampler's
    look-ahead, measured in bench/bench_calls.py); an all-8 kHz bridge adds nothing."""
    headset = doc.get("board", {}).get("headset", {}).get("enabled", False)
    return 16000 if headset and "G722" in doc["sip"]["codecs"] else 8000


class PjBridge:
    def __init__(self, reactor: Reactor, doc: dict[str, Any], *,
                 lines: dict[str, Any] | None = None) -> None:
        self.reactor = reactor
        self.sip = doc["sip"]
        self.lines = lines if lines is not None else doc.get("lines", {})
        self.clock_rate = conference_rate(doc)
        # survive.rtp_timeout_s: silence before MEDIA_TIMEOUT (the core updates it live)
        self.rtp_timeout_s = float(doc.get("survive", {}).get("rtp_timeout_s", 2.0))
        self.shared = Shared()
        self._sip_thread: SipThread | None = None
        self._thread: threading.Thread | None = None

    def start(self, on_event: Callable[[SipEvent], None]) -> None:
        """Start the SIP thread; raise SipError if the stack cannot start."""
        def emit(kind: SipEventKind, call: int | None = None, /, **data: Any) -> None:
            self.reactor.call_soon(on_event, SipEvent(kind, call, data))

        ctx = Context(self.sip, self.lines, self.shared, emit, self.reactor.now)
        core = self._sip_thread = SipThread(ctx, self.clock_rate, lambda: self.rtp_timeout_s)
        self._thread = threading.Thread(target=core.run, name="sip", daemon=True)
        self._thread.start()
        if not core.ready.wait(START_TIMEOUT_S):
            raise SipError("SIP stack did not start within 15 s: check the log for pjsua2 errors")
        if core.failure is not None:
            self._thread.join(5)
            raise core.failure

    def stop(self) -> None:
        """Hang everything up and shut pjsua2 down; returns when the SIP thread ended."""
        if self._sip_thread is None or self._thread is None:
            return
        self._sip_thread.stop()
        self._thread.join(20)
        if self._thread.is_alive():
            log.error("SIP thread did not stop within 20 s")
        self._sip_thread = None

    def _cmd(self, cmd: Cmd, *args: Any) -> None:
        if self._sip_thread is None:
            log.warning("SIP bridge not running: %s ignored", cmd.value)
            return
        self._sip_thread.commands.put((cmd, args))

    def make_call(self, line: str, to: str, *, from_number: str | None = None,
                  from_name: str | None = None, headers: dict[str, str] | None = None) -> int:
        handle = self.shared.next_handle()
        self._cmd(Cmd.MAKE_CALL, handle, line, to, from_number, from_name, dict(headers or {}))
        return handle

    def ringing(self, call: int) -> None:
        self._cmd(Cmd.RESPOND, call, 180)

    def answer(self, call: int) -> None:
        self._cmd(Cmd.RESPOND, call, 200)

    def reject(self, call: int, code: int = 486) -> None:
        self._cmd(Cmd.HANGUP, call, code)

    def hangup(self, call: int) -> None:
        self._cmd(Cmd.HANGUP, call, 0)

    def send_dtmf(self, call: int, digits: str) -> None:
        self._cmd(Cmd.SEND_DTMF, call, digits)

    def hold(self, call: int) -> None:
        self._cmd(Cmd.HOLD, call, True)

    def unhold(self, call: int) -> None:
        self._cmd(Cmd.HOLD, call, False)

    def transfer(self, call: int, target: str) -> None:
        self._cmd(Cmd.TRANSFER, call, target)

    def transfer_attended(self, call: int, other: int) -> None:
        self._cmd(Cmd.TRANSFER_ATTENDED, call, other)

    def use_edge(self, uri: str) -> None:
        self._cmd(Cmd.USE_EDGE, uri)

    def refresh(self, call: int) -> None:
        self._cmd(Cmd.REFRESH, call)

    def passthrough(self, call: int) -> None:
        self._cmd(Cmd.PASSTHROUGH, call)

    def media(self, call: int, rate: int = 8000) -> MediaPipe:
        pipe = self.shared.pipes.get(call)
        if pipe is None or pipe.rate != rate:
            pipe = self.shared.pipes[call] = MediaPipe(rate=rate)
            self._cmd(Cmd.ATTACH, call)
        return pipe

    def quality(self, call: int) -> dict[str, Any]:
        return self.shared.quality_of(call)

    def status(self) -> dict[str, Any]:
        return {key: dict(value) for key, value in self.shared.status.items()}
