"""PjBridge: the SIP bridge of the gateway, on pjsua2 (see firmware.sip.api.Bridge).

Threads. pjsua2 aborts the process when called from a thread it does not know, so
everything pjsua2 lives on ONE thread of its own (the "SIP thread", class `_Core`):
the endpoint is created with threadCnt=0 and mainThreadOnly=True and polled with
libHandleEvents(10 ms). Call control calls PjBridge on the reactor thread; those calls
hand out handles at once and queue commands for the SIP thread. Events go back through
reactor.call_soon. The only data both threads touch are dicts written by the SIP
thread (pipes, quality figures, status) and the MediaPipe deques.

Lifetimes. Every Call, port and Account stays referenced in `_Core` containers until it
is finished with; disconnected calls are dropped from the loop, never inside their own
callback; a leg a transfer superseded stays referenced until its own DISCONNECTED (its
BYE still calls back into it); stop() hangs up, pumps events, clears every reference, collects, and only then
calls libDestroy (an object alive at libDestroy aborts the process).

Identity. The ANI goes into From through CallOpParam.txOption.localUri (pjsua2 uses the
account's idUri only when it is empty) and into P-Asserted-Identity as an extra header,
so one account serves every caller; the account still authenticates the INVITE.

Transfers received. On an incoming REFER pjsua2 asks us for the Call object of the new
leg (onCallTransferRequest's `newCall`): we create a BCall with the SAME handle, point
the handle at it and mark the old leg superseded (its end is not reported). The
MediaPipe is re-attached when the new leg's media comes up, so call control keeps one
handle and one pipe. If the new leg fails while the old one is still up, the handle
returns to the old leg.

Edge health. pjsip reports an unanswered OPTIONS only after 32 s, so the bridge pings
each edge itself and declares a miss at its own deadline (sip.options_timeout_s).
Responses are matched to their edge by account: each edge has its own non-registering
ping account (onSendRequest's userData cannot carry a Python value, and pjsip drops the
port from the To URI, so neither identifies the edge).

Fax and modem passthrough (issue 10). `passthrough(call)` (call control, when a port's
media heard a fax or modem tone) marks the leg and re-INVITEs it once it is answered:
  - codec: the leg's SDP (offer or answer, now and for the rest of the call) keeps only
    PCMU/PCMA, drops telephone-event (DTMF is not detected in passthrough), and says
    `a=silenceSupp:off - - - -` (RFC 3108: no VAD at the far end either; ours is off
    for every call, medConfig.noVad) and `a=gpmd:<pt> vbd=yes` (V.152 voiceband data).
    pjsua2 has no per-call codec list; Call.onCallSdpCreated is its documented hook for
    per-call codecs (pjsua2 endpoint.cpp on_call_sdp_created re-parses the edited SDP);
  - jitter buffer: fixed at FIXED_JB_MS (prefetch init = min = max, no discard: an
    adaptive buffer that grows or drops frames slips the modem's clock).
    Call.onStreamPreCreate may set jbInit/jbMinPre/jbMaxPre/jbDiscardAlgo per stream
    (pjsua_aud.c pjsua_aud_channel_update copies them back), but only when pjsua creates
    the stream: it keeps a stream whose codec, payload types and direction did not
    change (pjsua_media.c is_media_changed). So the re-INVITE goes out also on a call
    already on G.711: dropping telephone-event changes the event payload type, the
    stream is re-created and takes the fixed buffer. (A G.711 leg that never had
    telephone-event keeps its adaptive buffer; status says so.)
The bridge's call status shows `passthrough`: "reinvite" when sent, then the codec and
jitter buffer the new stream runs with; a refused re-INVITE leaves the old media (pjsip
keeps the session), with the status still "reinvite".

Survivability. Every RTP_POLL_S the SIP thread reads each answered call's received
packet count (getStreamStat: rtcp.rxStat.pkt); unchanged for survive.rtp_timeout_s:
MEDIA_TIMEOUT {silent_s}; growing again: MEDIA_RESUMED. `use_edge(uri)` re-points
every account's registrar and outbound proxy to that edge (Account.modify, which
re-registers) so new calls go there; `refresh(call)` re-INVITEs a call (with a new
Contact, so a call can follow the box to the other edge where the platform allows).
"""

from __future__ import annotations

import gc
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

from firmware.sip import api, sipmsg
from firmware.sip.api import MediaPipe, SipEvent
from firmware.sip.pjobjects import (
    BAccount,
    BCall,
    PipePort,
    PjLogWriter,
    destroy_port,
    forget_exception,
)
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

CODEC_IDS = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/16000"}
QUALITY_EVERY_S = 1.0
JB_INIT_MS, JB_MAX_PRE_MS = 20, 80  # jitter buffer prefetch: start, ceiling
RTP_POLL_S = 0.25
FIXED_JB_MS = 60  # passthrough jitter buffer: fixed prefetch (3 frames), never adapted
G711 = ("PCMU", "PCMA")
STATIC_PT = {"0": "PCMU", "8": "PCMA", "9": "G722"}  # RFC 3551 payload types
START_TIMEOUT_S = 15.0
_NO_QUALITY = {"codec": None, "jitter_ms": None, "loss_pct": None, "rtt_ms": None}


def conference_rate(doc: dict) -> int:
    """pjsua2's conference bridge clock: 16 kHz only for a wideband headset.

    Measured (bench/bench_calls.py, pjproject 2.17): an 8 kHz port in a 16 kHz bridge
    costs ~32 ms each way (the resampler's look-ahead: 12 ms of shift plus a whole
    frame), an all-8 kHz bridge adds nothing. The rate is fixed at libInit, so a box
    pays it only when its headset may take a G.722 call."""
    headset = doc.get("board", {}).get("headset", {}).get("enabled", False)
    return 16000 if headset and "G722" in doc["sip"]["codecs"] else 8000


class SipError(BranchlineError):
    """The SIP stack could not start (port in use, bad TLS setup...)."""


class PjBridge:
    """The pjsua2 bridge; every public method runs on the reactor thread."""

    def __init__(self, reactor, doc: dict, *, lines: dict | None = None) -> None:
        self.reactor = reactor
        self.sip = doc["sip"]
        self.lines = lines if lines is not None else doc.get("lines", {})
        self.clock_rate = conference_rate(doc)
        self.rtp_timeout_s = float(doc.get("survive", {}).get("rtp_timeout_s", 2.0))
        self._ids = itertools.count(1)  # next() on a count is atomic: both threads use it
        self._pipes: dict[int, MediaPipe] = {}
        self._quality: dict[int, dict] = {}
        self._status: dict[str, Any] = {"accounts": {}, "calls": {}, "edges": {}, "ports": {}}
        self._core: _Core | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ---------------------------------------------------------------
    def start(self, on_event: Callable[[SipEvent], None]) -> None:
        """Start the SIP thread; raise SipError if the stack cannot start."""
        emit = self._emitter(on_event)
        self._core = _Core(self, emit)
        self._thread = threading.Thread(target=self._core.run, name="sip", daemon=True)
        self._thread.start()
        if not self._core.ready.wait(START_TIMEOUT_S):
            raise SipError("SIP stack did not start within 15 s: check the log for pjsua2 errors")
        if self._core.failure is not None:
            self._thread.join(5)
            raise self._core.failure

    def _emitter(self, on_event: Callable[[SipEvent], None]):
        def emit(kind: str, call: int | None = None, **data: Any) -> None:
            self.reactor.call_soon(on_event, SipEvent(kind, call, data))
        return emit

    def stop(self) -> None:
        """Hang everything up and shut pjsua2 down; returns when the SIP thread ended."""
        if self._core is None or self._thread is None:
            return
        self._core.stopping = True
        self._thread.join(20)
        if self._thread.is_alive():
            log.error("SIP thread did not stop within 20 s")
        self._core = None

    # --- commands (queued for the SIP thread) ------------------------------------
    def _cmd(self, name: str, *args: Any) -> None:
        if self._core is None:
            log.warning("SIP bridge not running: %s ignored", name)
            return
        self._core.commands.put((name, args))

    def make_call(self, line: str, to: str, *, from_number: str | None = None,
                  from_name: str | None = None, headers: dict[str, str] | None = None) -> int:
        handle = next(self._ids)
        self._cmd("make_call", handle, line, to, from_number, from_name, dict(headers or {}))
        return handle

    def ringing(self, call: int) -> None:
        self._cmd("respond", call, 180)

    def answer(self, call: int) -> None:
        self._cmd("respond", call, 200)

    def reject(self, call: int, code: int = 486) -> None:
        self._cmd("hangup", call, code)

    def hangup(self, call: int) -> None:
        self._cmd("hangup", call, 0)

    def send_dtmf(self, call: int, digits: str) -> None:
        self._cmd("send_dtmf", call, digits)

    def hold(self, call: int) -> None:
        self._cmd("hold", call, True)

    def unhold(self, call: int) -> None:
        self._cmd("hold", call, False)

    def transfer(self, call: int, target: str) -> None:
        self._cmd("transfer", call, target)

    def transfer_attended(self, call: int, other: int) -> None:
        self._cmd("transfer_attended", call, other)

    def use_edge(self, uri: str) -> None:
        self._cmd("use_edge", uri)

    def refresh(self, call: int) -> None:
        self._cmd("refresh", call)

    def passthrough(self, call: int) -> None:
        """A fax or modem on this call: G.711 only, fixed jitter buffer (module doc)."""
        self._cmd("passthrough", call)

    def media(self, call: int, rate: int = 8000) -> MediaPipe:
        pipe = self._pipes.get(call)
        if pipe is None or pipe.rate != rate:
            pipe = self._pipes[call] = MediaPipe(rate=rate)
            self._cmd("attach", call)
        return pipe

    # --- figures ------------------------------------------------------------------
    def quality(self, call: int) -> dict[str, Any]:
        return dict(self._quality.get(call, _NO_QUALITY))

    def status(self) -> dict[str, Any]:
        return {key: dict(value) for key, value in self._status.items()}


class _Edge:
    """OPTIONS health of one edge, read and written on the SIP thread only."""

    def __init__(self, uri: str, now: float) -> None:
        self.uri = uri
        self.key = sipmsg.uri_hostport(uri)
        self.up: bool | None = None  # None until the first answer or the first outage
        self.misses = 0
        self.sent_at = 0.0
        self.outstanding = False
        self.next_ping = now
        self.account: BAccount | None = None  # sends this edge's pings


class _Core:
    """Everything on the SIP thread: the pjsua2 endpoint, accounts, calls and pings."""

    def __init__(self, bridge: PjBridge, emit) -> None:
        self.bridge = bridge
        self.sip = bridge.sip
        self.lines = bridge.lines
        self.emit = emit
        self.clock = bridge.reactor
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.stopping = False
        self.ep: pj.Endpoint | None = None
        self.writer: PjLogWriter | None = None
        self.transports: dict[str, int] = {}
        self.accounts: list[BAccount] = []
        self.line_accounts: dict[str, BAccount] = {}
        self.main_account: BAccount | None = None
        self.calls: dict[int, BCall] = {}
        self.dead: list[BCall] = []
        # Legs a transfer or Replaces took the handle from: referenced until their own
        # DISCONNECTED is reaped, since pjsua keeps calling back into them (the BYE's
        # transaction states) and a collected Call is freed memory to it.
        self.old_legs: list[BCall] = []
        self.retired: list[PipePort] = []  # ports of superseded legs, dropped in the loop
        self.edges = [_Edge(uri, self.clock.now()) for uri in self.sip["edges"]]
        self.next_quality = 0.0
        self.next_rtp = 0.0
        self.rtp: dict[int, list] = {}  # handle -> [rx packets, when they last grew, silent]

    # --- thread body ----------------------------------------------------------------
    def run(self) -> None:
        message = None
        try:
            self._init()
        except BranchlineError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"SIP stack failed to start: {_pj_reason(exc)}"
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

    def _loop(self) -> None:
        while not self.stopping:
            self.ep.libHandleEvents(10)
            self._drain()
            self._reap()
            now = self.clock.now()
            self._ping(now)
            if now >= self.next_quality:
                self.next_quality = now + QUALITY_EVERY_S
                self._refresh_quality()
            if now >= self.next_rtp:
                self.next_rtp = now + RTP_POLL_S
                self._watch_rtp(now)

    def _drain(self) -> None:
        while True:
            try:
                name, args = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                getattr(self, "cmd_" + name)(*args)
            except pj.Error as exc:
                log.warning("SIP %s%r failed: %s", name, args[:2], _pj_reason(exc))
            except Exception:
                log.exception("SIP command %s failed", name)
            forget_exception()

    def _reap(self) -> None:
        """Drop disconnected calls and retired ports here, outside their callbacks."""
        while self.retired:
            destroy_port(self.retired.pop())
        while self.dead:
            call = self.dead.pop()
            if call.port is not None:
                destroy_port(call.port)
                call.port = None
            call.previous = None
            if call in self.old_legs:
                self.old_legs.remove(call)

    # --- start-up -----------------------------------------------------------------
    def _init(self) -> None:
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        self.ep.libInit(self._ep_config())
        self._create_transports()
        self.ep.libStart()
        adm = self.ep.audDevManager()
        adm.setNullDev()
        # Without this the null device's clock stops and conference slots leak (notes).
        adm.getCaptureDevMedia().startTransmit(adm.getPlaybackDevMedia())
        self._set_codecs()
        self._create_accounts()
        self._publish_ports()

    def _ep_config(self) -> pj.EpConfig:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 64
        cfg.uaConfig.userAgent = "branchline"
        cfg.medConfig.noVad = True  # VAD mutes steady tones (DTMF, test tones, dial tone)
        cfg.medConfig.ecTailLen = 0  # our own G.168 canceller runs on the analog side
        cfg.medConfig.clockRate = self.bridge.clock_rate
        cfg.medConfig.sndClockRate = self.bridge.clock_rate
        # A small adaptive jitter buffer: starts at one frame, may grow to JB_MAX_PRE_MS
        # (pjmedia's own ceiling is 240 ms, which a burst after one stall of the box
        # reached in bench/bench_calls.py and then kept as delay).
        cfg.medConfig.jbInit = JB_INIT_MS
        cfg.medConfig.jbMinPre = JB_INIT_MS
        cfg.medConfig.jbMaxPre = JB_MAX_PRE_MS
        self.writer = PjLogWriter()
        cfg.logConfig.writer = self.writer
        cfg.logConfig.level = 3
        cfg.logConfig.consoleLevel = 3
        cfg.logConfig.decor = 0
        return cfg

    def _create_transports(self) -> None:
        host = self.sip["bind_address"]
        port = self.sip["local_port"]
        if port:
            self._transport(pj.PJSIP_TRANSPORT_UDP, "udp", host, port)
            self._transport(pj.PJSIP_TRANSPORT_TCP, "tcp", host, port)
        else:
            port = self._ephemeral_pair(host)
        if self.sip["transport"] == "tls":
            tls_port = int(port) + 1 if self.sip["local_port"] else 0
            self._transport(pj.PJSIP_TRANSPORT_TLS, "tls", host, tls_port)

    def _ephemeral_pair(self, host: str, tries: int = 20) -> int:
        """UDP and TCP on one free port number (sip.local_port 0): the OS picks the UDP
        port, and another process may already hold that number for TCP; then try again."""
        for _ in range(tries):
            udp = self._transport(pj.PJSIP_TRANSPORT_UDP, "udp", host, 0)
            port = int(self.ep.transportGetInfo(udp).localName.rsplit(":", 1)[1])
            try:
                self._transport(pj.PJSIP_TRANSPORT_TCP, "tcp", host, port)
                return port
            except SipError:
                self.ep.transportClose(udp)
                self.transports.pop("udp", None)
        raise SipError(f"no port number on {host} was free for both SIP UDP and TCP "
                       f"after {tries} tries: set sip.local_port")

    def _transport(self, kind: int, name: str, host: str, port: int) -> int:
        cfg = pj.TransportConfig()
        cfg.boundAddress = host
        cfg.port = port
        if self.sip["public_address"]:
            cfg.publicAddress = self.sip["public_address"]
        if name == "tls":
            cfg.tlsConfig.verifyServer = bool(self.sip["tls_verify"])
        try:
            tid = self.ep.transportCreate(kind, cfg)
        except pj.Error as exc:
            raise _bind_error(name, host, port, exc) from None
        self.transports[name] = tid
        return tid

    def _set_codecs(self) -> None:
        wanted = [CODEC_IDS[c] for c in self.sip["codecs"]]
        for info in self.ep.codecEnum2():
            if info.codecId.split("/")[:2] not in [w.split("/") for w in wanted]:
                self.ep.codecSetPriority(info.codecId, 0)  # 0 disables (speex, gsm, L16...)
        for rank, codec in enumerate(wanted):
            self._codec_priority(codec, 255 - rank)

    def _codec_priority(self, prefix: str, prio: int) -> None:
        for info in self.ep.codecEnum2():
            if info.codecId.startswith(prefix):
                self.ep.codecSetPriority(info.codecId, prio)

    def _publish_ports(self) -> None:
        ports = {}
        for name, tid in self.transports.items():
            ports[name] = int(self.ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
        self.bridge._status["ports"] = ports

    # --- accounts -----------------------------------------------------------------
    def _domain(self) -> str:
        if self.sip["domain"]:
            return self.sip["domain"]
        if self.edges:
            return self.edges[0].key.split(":")[0]
        return self.sip["bind_address"]

    def _create_accounts(self) -> None:
        mode = self.sip["registration"]
        if mode == "trunk":
            self.main_account = self._account(self.sip["username"], self.sip["password"],
                                               None, register=True)
        elif mode == "per_line":
            for name, line in self.lines.items():
                if line.get("kind") == "fxs" and (line.get("sip_user") or line.get("extension")):
                    user = line.get("sip_user") or line["extension"]
                    self.line_accounts[name] = self._account(
                        user, line.get("sip_password", ""), name, register=True)
        if self.main_account is None:
            self.main_account = self._account("branchline", "", None, register=False)
        for edge in self.edges:  # one per edge: onSendRequest names only the account
            edge.account = self._account("branchline-ping", "", None, register=False,
                                         proxy=False)

    def _account(self, user: str, password: str, line: str | None, *, register: bool,
                 proxy: bool = True) -> BAccount:
        domain = self._domain()
        aor = f"{user}@{domain}"
        cfg = pj.AccountConfig()
        cfg.idUri = f"sip:{aor}"
        cfg.sipConfig.transportId = self.transports[self.sip["transport"]]
        if register and self.edges:
            cfg.regConfig.registrarUri = self._edge_uri(self.edges[0].uri, lr=False)
            cfg.regConfig.timeoutSec = self.sip["register_expires_s"]
            cfg.regConfig.retryIntervalSec = 30
            cfg.regConfig.firstRetryIntervalSec = 5
        cfg.regConfig.registerOnAdd = register and bool(self.edges)
        if proxy and self.edges:
            cfg.sipConfig.proxies.append(self._edge_uri(self.edges[0].uri, lr=True))
        if password or register:
            cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
        cfg.natConfig.udpKaIntervalSec = self.sip["nat_keepalive_s"]
        acc = BAccount(self, aor, line, register and bool(self.edges))
        acc.config = cfg  # kept for use_edge (Account.modify)
        acc.proxied = proxy
        acc.create(cfg, not self.accounts)  # the first account is pjsua's default
        self.accounts.append(acc)
        if acc.registers:
            self._set_account_status(acc, False, 0, "registering")
        return acc

    def _edge_uri(self, uri: str, *, lr: bool) -> str:
        transport = self.sip["transport"]
        if transport != "udp" and "transport=" not in uri:
            uri += f";transport={transport}"
        return uri + (";lr" if lr and ";lr" not in uri else "")

    def on_reg_state(self, acc: BAccount, code: int, reason: str, expiration: int) -> None:
        if self.stopping or not acc.registers:
            return
        ok = 200 <= code < 300 and expiration > 0
        if ok:
            text = f"{acc.aor} registered"
        elif code in (401, 403, 407):
            text = (f"registration of {acc.aor} refused ({code} {reason}): check "
                    f"{'lines.' + acc.line + '.sip_password' if acc.line else 'sip.password'}")
        else:
            text = (f"registration of {acc.aor} failed ({code} {reason}): check sip.edges "
                    "and the network")
        self._set_account_status(acc, ok, code, text)
        self.emit(api.REGISTRATION, account=acc.aor, line=acc.line, ok=ok, code=code,
                  reason=text)

    def _set_account_status(self, acc: BAccount, ok: bool, code: int, reason: str) -> None:
        accounts = dict(self.bridge._status["accounts"])
        accounts[acc.aor] = {"line": acc.line, "registered": ok, "code": code, "reason": reason}
        self.bridge._status["accounts"] = accounts

    def _account_for_line(self, line: str | None) -> BAccount:
        return self.line_accounts.get(line or "", self.main_account)

    # --- outgoing calls -----------------------------------------------------------
    def cmd_make_call(self, handle: int, line: str, to: str, from_number: str | None,
                      from_name: str | None, headers: dict[str, str]) -> None:
        acc = self._account_for_line(line)
        call = BCall(acc, self, handle)
        self.calls[handle] = call
        self._publish_call(handle, "calling", line)
        prm = pj.CallOpParam(True)
        if from_number:
            ident = sipmsg.identity(from_number, from_name, self._domain())
            prm.txOption.localUri = ident
            headers = {"P-Asserted-Identity": ident, **headers}
        for name, value in headers.items():
            prm.txOption.headers.append(_header(name, value))
        try:
            call.makeCall(sipmsg.target(to, self._domain()), prm)
        except pj.Error as exc:
            self._fail(call, f"call to {to} not placed: {_pj_reason(exc)}")

    def _fail(self, call: BCall, reason: str) -> None:
        """A call pjsua2 refused outright (PJ_ETOOMANY...): ENDED, not an exception."""
        log.warning("%s", reason)
        if self.calls.get(call.handle) is call:
            del self.calls[call.handle]
        self._unpublish(call.handle)
        self.dead.append(call)
        self.emit(api.ENDED, call.handle, code=0, reason=reason,
                  quality=dict(_NO_QUALITY))

    # --- incoming calls -----------------------------------------------------------
    def on_incoming(self, acc: BAccount, call_id: int, msg: str) -> None:
        handle = next(self.bridge._ids)
        call = BCall(acc, self, handle, call_id)
        self.calls[handle] = call
        who = sipmsg.caller(msg)
        who["call_id"] = sipmsg.header(msg, "call-id")
        if who["to_number"] == acc.aor.split("@")[0]:
            # The edge routed by our registration (R-URI = our contact): DNIS is in To.
            who["to_number"] = sipmsg.uri_user(sipmsg.name_addr(sipmsg.header(msg, "to"))[1])
        line = acc.line or self._line_for_number(who["to_number"])
        self._publish_call(handle, "incoming", line)
        self.emit(api.INCOMING, handle, line=line, **who)

    def _line_for_number(self, number: str) -> str | None:
        for name, line in self.lines.items():
            if number and number in (line.get("sip_user"), line.get("extension")):
                return name
        return None

    def cmd_respond(self, handle: int, code: int) -> None:
        call = self._call(handle, "answer")
        if call is not None:
            prm = pj.CallOpParam()
            prm.statusCode = code
            call.answer(prm)

    def cmd_hangup(self, handle: int, code: int) -> None:
        call = self._call(handle, "hangup")
        if call is not None:
            prm = pj.CallOpParam()
            prm.statusCode = code
            call.hangup(prm)

    def _call(self, handle: int, what: str) -> BCall | None:
        call = self.calls.get(handle)
        if call is None:
            log.info("SIP %s: no call %s (ended already?)", what, handle)
        return call

    # --- call progress ------------------------------------------------------------
    def on_call_state(self, call: BCall) -> None:
        info = call.getInfo()
        state = info.state
        if state == pj.PJSIP_INV_STATE_EARLY and info.role != pj.PJSIP_ROLE_UAS:
            kind = api.EARLY_MEDIA if info.lastStatusCode == 183 else api.RINGING
            self._once(call, kind)
        elif state == pj.PJSIP_INV_STATE_CONFIRMED:
            call.answered = True
            self._finish_transfer(call)
            self._publish_call(call.handle, "answered")
            self._once(call, api.ANSWERED, call_id=info.callIdString)
            if call.passthrough and not call.passthrough_sent:
                self._reinvite_g711(call)
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._ended(call, info.lastStatusCode, info.lastReason)

    def _once(self, call: BCall, kind: str, **data: Any) -> None:
        if kind not in call.reported and not call.superseded:
            call.reported.add(kind)
            self.emit(kind, call.handle, **data)

    def _ended(self, call: BCall, code: int, reason: str) -> None:
        self.dead.append(call)
        if call.superseded:
            return
        if call.previous is not None and not call.answered and self._revert(call):
            return
        if self.calls.get(call.handle) is call:
            del self.calls[call.handle]
        quality = dict(self.bridge._quality.get(call.handle, _NO_QUALITY))
        self._unpublish(call.handle)
        self.emit(api.ENDED, call.handle, code=code, reason=reason, quality=quality)

    def _finish_transfer(self, leg: BCall) -> None:
        """The transfer leg is up: end the old leg if the transferor has not yet."""
        old, leg.previous = leg.previous, None
        if old is not None and old.isActive():
            old.hangup(pj.CallOpParam(True))

    def _revert(self, leg: BCall) -> bool:
        """A transfer leg failed: give the handle back to the old leg if it is still up."""
        old = leg.previous
        leg.previous = None
        if old is None or not old.isActive():
            return False
        old.superseded = False
        self.calls[leg.handle] = old
        self._attach(old)
        return True

    def _publish_call(self, handle: int, state: str, line: str | None = None) -> None:
        calls = dict(self.bridge._status["calls"])
        entry = dict(calls.get(handle, {}))
        entry["state"] = state
        if line is not None:
            entry["line"] = line
        calls[handle] = entry
        self.bridge._status["calls"] = calls

    def _unpublish(self, handle: int) -> None:
        calls = dict(self.bridge._status["calls"])
        calls.pop(handle, None)
        self.bridge._status["calls"] = calls
        self.bridge._pipes.pop(handle, None)
        self.bridge._quality.pop(handle, None)

    # --- media --------------------------------------------------------------------
    def on_media_state(self, call: BCall) -> None:
        info = call.getInfo()
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if media.status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD and not call.remote_held:
                call.remote_held = True
                self.emit(api.HELD, call.handle)
            elif media.status == pj.PJSUA_CALL_MEDIA_ACTIVE and call.remote_held:
                call.remote_held = False
                self.emit(api.RESUMED, call.handle)
        self._attach(call)
        self._read_quality(call)
        if call.passthrough_sent:
            self._publish_passthrough(call)

    def cmd_attach(self, handle: int) -> None:
        call = self.calls.get(handle)
        if call is not None:
            self._attach(call)

    def _attach(self, call: BCall) -> None:
        """Connect the handle's MediaPipe both ways to the call's audio, if both exist."""
        pipe = self.bridge._pipes.get(call.handle)
        if pipe is None or call.superseded or not call.hasMedia():
            return
        audio = self._audio(call)
        if audio is None:
            return
        if call.port is None or call.port.pipe is not pipe:
            if call.port is not None:  # a new pipe for the handle: retire the old port
                self._detach(call)
            call.port = PipePort(pipe, self.clock.now)
            call.port.open(f"line{call.handle}")
        call.port.startTransmit(audio)
        audio.startTransmit(call.port)

    def _detach(self, call: BCall) -> None:
        """Take a superseded leg off the pipe; its port is dropped later, in the loop."""
        port, call.port = call.port, None
        if port is None:
            return
        audio = self._audio(call)
        if audio is not None:
            port.stopTransmit(audio)
            audio.stopTransmit(port)
        self.retired.append(port)

    def _audio(self, call: BCall) -> pj.AudioMedia | None:
        info = call.getInfo()  # keep it: .media refers into it (SWIG), not a copy
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status in (
                    pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                return call.getAudioMedia(media.index)
        return None

    def _refresh_quality(self) -> None:
        for call in list(self.calls.values()):
            if call.answered and call.isActive():
                self._read_quality(call)

    def _read_quality(self, call: BCall) -> None:
        idx = _audio_index(call)
        if idx is None:
            return
        try:
            stat = call.getStreamStat(idx)
            info = call.getStreamInfo(idx)
        except pj.Error:
            return
        self.bridge._quality[call.handle] = _quality(info, stat)

    # --- survivability: RTP inactivity, edges, re-INVITE -------------------------
    def _watch_rtp(self, now: float) -> None:
        for handle, call in list(self.calls.items()):
            if not call.answered or call.superseded or not call.isActive():
                self.rtp.pop(handle, None)
                continue
            pkts = self._rx_packets(call)
            if pkts is not None:
                self._rtp_seen(handle, pkts, now)
        for handle in [h for h in self.rtp if h not in self.calls]:
            del self.rtp[handle]

    def _rx_packets(self, call: BCall) -> int | None:
        idx = _audio_index(call)
        if idx is None:
            return None
        try:
            return int(call.getStreamStat(idx).rtcp.rxStat.pkt)
        except pj.Error:
            return None

    def _rtp_seen(self, handle: int, pkts: int, now: float) -> None:
        entry = self.rtp.setdefault(handle, [pkts, now, False])
        if pkts != entry[0]:
            if entry[2]:
                self.emit(api.MEDIA_RESUMED, handle, silent_s=round(now - entry[1], 2))
            self.rtp[handle] = [pkts, now, False]
        elif not entry[2] and now - entry[1] >= self.bridge.rtp_timeout_s:
            entry[2] = True
            self.emit(api.MEDIA_TIMEOUT, handle, silent_s=round(now - entry[1], 2))

    def cmd_use_edge(self, uri: str) -> None:
        for acc in self.accounts:
            cfg = getattr(acc, "config", None)
            if cfg is None or not getattr(acc, "proxied", True):
                continue  # the ping accounts keep their own edge
            if acc.registers:
                cfg.regConfig.registrarUri = self._edge_uri(uri, lr=False)
            cfg.sipConfig.proxies.clear()
            cfg.sipConfig.proxies.append(self._edge_uri(uri, lr=True))
            acc.modify(cfg)
        log.warning("SIP: accounts moved to %s", uri)

    def cmd_refresh(self, handle: int) -> None:
        call = self._call(handle, "re-INVITE")
        if call is not None and call.answered:
            prm = pj.CallOpParam(True)
            prm.opt.flag = pj.PJSUA_CALL_UPDATE_CONTACT
            call.reinvite(prm)

    # --- fax / modem passthrough (module docstring) -------------------------------
    def cmd_passthrough(self, handle: int) -> None:
        call = self._call(handle, "passthrough")
        if call is None or call.passthrough:
            return
        call.passthrough = True
        log.info("SIP call %d: fax/modem passthrough: G.711, fixed jitter buffer", handle)
        if call.answered:
            self._reinvite_g711(call)
        # else: sent once the call is confirmed (on_call_state)

    def _reinvite_g711(self, call: BCall) -> None:
        call.passthrough_sent = True
        self._publish_call(call.handle, "answered")
        calls = dict(self.bridge._status["calls"])
        calls[call.handle] = {**calls.get(call.handle, {}), "passthrough": "reinvite"}
        self.bridge._status["calls"] = calls
        call.reinvite(pj.CallOpParam(True))

    def sdp_created(self, call: BCall, prm) -> None:
        """Our SDP (offer, or answer to `prm.remSdp`): G.711 only once in passthrough."""
        if not call.passthrough:
            return
        sdp = g711_only(prm.sdp.wholeSdp)
        if sdp is None:
            log.warning("SIP call %d: passthrough: no G.711 in our SDP; left as it is",
                        call.handle)
            return
        remote = prm.remSdp.wholeSdp
        if remote and not _offers_g711(remote):
            log.warning("SIP call %d: passthrough: the far end offers no G.711; the codec "
                        "stays", call.handle)
            return
        prm.sdp.wholeSdp = sdp

    def stream_precreate(self, call: BCall, prm) -> None:
        """The fixed jitter buffer for a passthrough leg's new audio stream."""
        if not call.passthrough:
            return
        info = prm.streamInfo
        if info.type != pj.PJMEDIA_TYPE_AUDIO:
            return
        info.jbInit = info.jbMinPre = info.jbMaxPre = FIXED_JB_MS
        info.jbDiscardAlgo = pj.PJMEDIA_JB_DISCARD_NONE

    def _publish_passthrough(self, call: BCall) -> None:
        """What the leg runs with since the re-INVITE: codec and jitter buffer."""
        idx = _audio_index(call)
        if idx is None:
            return
        try:
            si = call.getStreamInfo(idx)
        except pj.Error:
            return
        jb = {"init_ms": si.jbInit, "min_ms": si.jbMinPre, "max_ms": si.jbMaxPre,
              "fixed": si.jbMinPre == si.jbMaxPre}
        calls = dict(self.bridge._status["calls"])
        calls[call.handle] = {**calls.get(call.handle, {}),
                              "passthrough": f"{si.codecName}/{si.codecClockRate}",
                              "jitter_buffer": jb}
        self.bridge._status["calls"] = calls

    # --- DTMF, hold, transfer ---------------------------------------------------
    def cmd_send_dtmf(self, handle: int, digits: str) -> None:
        call = self._call(handle, "DTMF")
        if call is None:
            return
        if self.sip["dtmf"] == "rfc4733":
            call.dialDtmf(digits)
            return
        prm = pj.CallSendDtmfParam()
        prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
        prm.digits = digits
        prm.duration = 100
        call.sendDtmf(prm)

    def on_dtmf(self, call: BCall, digit: str, method: int) -> None:
        kind = "info" if method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        self.emit(api.DTMF, call.handle, digit=digit, method=kind)

    def cmd_hold(self, handle: int, hold: bool) -> None:
        call = self._call(handle, "hold")
        if call is None:
            return
        prm = pj.CallOpParam(True)
        if hold:
            call.setHold(prm)
        else:
            prm.opt.flag = pj.PJSUA_CALL_UNHOLD
            call.reinvite(prm)

    def cmd_transfer(self, handle: int, target: str) -> None:
        call = self._call(handle, "transfer")
        if call is not None:
            call.xfer(sipmsg.target(target, self._domain()), pj.CallOpParam(True))

    def cmd_transfer_attended(self, handle: int, other: int) -> None:
        call, dest = self._call(handle, "transfer"), self._call(other, "transfer")
        if call is not None and dest is not None:
            call.xferReplaces(dest, pj.CallOpParam(True))

    def on_transfer_status(self, call: BCall, prm) -> None:
        if prm.finalNotify or prm.statusCode >= 200:
            prm.cont = False
            self._once(call, api.TRANSFER_DONE, ok=200 <= prm.statusCode < 300,
                       code=prm.statusCode)

    def on_transfer_request(self, call: BCall, prm) -> None:
        """The far end REFERs us elsewhere: accept, and let the handle follow the new leg."""
        leg = BCall(call.account, self, call.handle)
        leg.previous = call
        call.superseded = True
        self.old_legs.append(call)
        self._detach(call)
        self.calls[call.handle] = leg
        prm.newCall = leg
        prm.statusCode = 202
        self.emit(api.TRANSFER_REQUESTED, call.handle, target=prm.dstUri)

    def on_replaced(self, call: BCall, prm) -> None:
        """An INVITE with Replaces took this call over: the handle follows the new call."""
        leg = BCall(call.account, self, call.handle, prm.newCallId)
        leg.answered = True
        call.superseded = True
        self.old_legs.append(call)
        self._detach(call)
        self.calls[call.handle] = leg
        prm.newCall = leg

    # --- OPTIONS pings ------------------------------------------------------------
    def _ping(self, now: float) -> None:
        for edge in self.edges:
            if edge.outstanding and now - edge.sent_at >= self.sip["options_timeout_s"]:
                self._missed(edge)
            if now >= edge.next_ping:
                edge.next_ping = now + self.sip["options_interval_s"]
                self._send_ping(edge, now)

    def _send_ping(self, edge: _Edge, now: float) -> None:
        if edge.outstanding:
            self._missed(edge)
        prm = pj.SendRequestParam()
        prm.method = "OPTIONS"
        prm.txOption.targetUri = edge.uri
        try:
            edge.account.sendRequest(prm)
        except pj.Error as exc:
            log.debug("OPTIONS to %s not sent: %s", edge.uri, _pj_reason(exc))
            self._missed(edge)
            return
        edge.sent_at = now
        edge.outstanding = True

    def _missed(self, edge: _Edge) -> None:
        edge.outstanding = False
        edge.misses += 1
        if edge.misses >= self.sip["options_misses"] and edge.up is not False:
            edge.up = False
            self._publish_edge(edge, None)
            self.emit(api.EDGE, edge=edge.uri, ok=False, rtt_ms=None)

    def on_request_done(self, acc: BAccount, event) -> None:
        tsx = event.body.tsxState
        if tsx.type != pj.PJSIP_EVENT_RX_MSG:
            return  # a local timeout or transport error: the deadline already counted it
        edge = next((e for e in self.edges if e.account is acc), None)
        if edge is not None:
            self._answered(edge)

    def _answered(self, edge: _Edge) -> None:
        rtt_ms = round((self.clock.now() - edge.sent_at) * 1000.0, 1)
        edge.outstanding = False
        edge.misses = 0
        self._publish_edge(edge, rtt_ms)
        if edge.up is not True:
            edge.up = True
            self.emit(api.EDGE, edge=edge.uri, ok=True, rtt_ms=rtt_ms)

    def _publish_edge(self, edge: _Edge, rtt_ms: float | None) -> None:
        edges = dict(self.bridge._status["edges"])
        edges[edge.uri] = {"ok": edge.up, "rtt_ms": rtt_ms, "misses": edge.misses}
        self.bridge._status["edges"] = edges

    # --- shutdown -----------------------------------------------------------------
    def _shutdown(self) -> None:
        """The order that never aborts: hang up, pump, drop every reference, destroy."""
        if self.ep is None:
            return
        self.stopping = True
        try:
            self.ep.hangupAllCalls()
            for _ in range(50):
                self.ep.libHandleEvents(10)
                if not any(c.isActive() for c in [*self.calls.values(), *self.old_legs]):
                    break
        except pj.Error as exc:
            log.warning("SIP shutdown: %s", _pj_reason(exc))
        self._drop_references()
        self.ep.libDestroy()
        self.ep = None
        self.writer = None

    def _drop_references(self) -> None:
        for call in [*self.calls.values(), *self.dead, *self.old_legs]:
            destroy_port(call.port)
            call.port = None
        while self.retired:
            destroy_port(self.retired.pop())
        self.calls.clear()
        self.dead.clear()
        self.old_legs.clear()
        for acc in self.accounts:
            acc.shutdown()
        self.accounts.clear()
        self.line_accounts.clear()
        self.main_account = None
        for edge in self.edges:
            edge.account = None
        forget_exception()
        gc.collect()


def _quality(info, stat) -> dict[str, Any]:
    rx = stat.rtcp.rxStat
    received = rx.pkt + rx.loss
    rtt = stat.rtcp.rttUsec
    return {
        "codec": f"{info.codecName}/{info.codecClockRate}",
        "jitter_ms": round(rx.jitterUsec.mean / 1000.0, 2) if rx.jitterUsec.n else 0.0,
        "loss_pct": round(100.0 * rx.loss / received, 2) if received else 0.0,
        "rtt_ms": round(rtt.mean / 1000.0, 2) if rtt.n else None,
    }


def _rtpmaps(lines: list[str]) -> dict[str, str]:
    """Payload type -> encoding name (upper case) from a=rtpmap lines."""
    out = {}
    for line in lines:
        if line.startswith("a=rtpmap:"):
            pt, _, enc = line[len("a=rtpmap:"):].partition(" ")
            out[pt] = enc.split("/")[0].upper()
    return out


def _audio_sections(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line ranges of the m=audio sections."""
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    bounds = [*starts, len(lines)]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False)
            if lines[a].startswith("m=audio ")]


def _offers_g711(sdp: str) -> bool:
    lines = sdp.replace("\r\n", "\n").split("\n")
    for a, b in _audio_sections(lines):
        maps = _rtpmaps(lines[a:b])
        if any(maps.get(pt, STATIC_PT.get(pt)) in G711 for pt in lines[a].split()[3:]):
            return True
    return False


def _audio_index(call) -> int | None:
    """The media index of the call's active audio stream, or None when it has none."""
    info = call.getInfo()  # keep it: .media refers into it (SWIG), not a copy
    return next((m.index for m in info.media if m.type == pj.PJMEDIA_TYPE_AUDIO
                 and m.status != pj.PJSUA_CALL_MEDIA_NONE), None)


def g711_only(sdp: str) -> str | None:
    """The SDP with its audio sections cut to PCMU/PCMA (order kept), every other
    payload type's rtpmap/fmtp/rtcp-fb dropped (telephone-event, G.722...), and
    silenceSupp off (RFC 3108) plus gpmd vbd=yes (V.152) per G.711 payload type added.
    None when an audio section has no G.711 at all (nothing to offer)."""
    crlf = "\r\n" in sdp
    lines = sdp.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    done = 0
    for a, b in _audio_sections(lines):
        out += lines[done:a]
        section = lines[a:b]
        trailing = []
        while section and not section[-1]:
            trailing.append(section.pop())
        maps = _rtpmaps(section)
        head = section[0].split()
        keep = [pt for pt in head[3:] if maps.get(pt, STATIC_PT.get(pt)) in G711]
        if not keep:
            return None
        out.append(" ".join(head[:3] + keep))
        for line in section[1:]:
            pt = _attr_pt(line)
            if pt is not None and pt not in keep:
                continue
            if line.startswith(("a=silenceSupp:", "a=gpmd:")):
                continue
            out.append(line)
        out.append("a=silenceSupp:off - - - -")
        out += [f"a=gpmd:{pt} vbd=yes" for pt in keep]
        out += trailing
        done = b
    out += lines[done:]
    text = "\n".join(out)
    return text.replace("\n", "\r\n") if crlf else text


def _attr_pt(line: str) -> str | None:
    """The payload type an a=rtpmap / a=fmtp / a=rtcp-fb line is about (else None)."""
    for prefix in ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"):
        if line.startswith(prefix):
            return line[len(prefix):].split(" ", 1)[0]
    return None


def _header(name: str, value: str) -> pj.SipHeader:
    hdr = pj.SipHeader()
    hdr.hName = name
    hdr.hValue = value
    return hdr


def _pj_reason(exc: BaseException) -> str:
    if isinstance(exc, pj.Error):
        return f"{exc.info(False) if hasattr(exc, 'info') else exc.reason} ({exc.status})"
    return str(exc)


def _bind_error(name: str, host: str, port: int, exc: pj.Error) -> SipError:
    if port and exc.status in (120098, 120013):  # EADDRINUSE, EACCES as pj_status_t
        return SipError(f"SIP port {port} on {host} is in use: another SIP service is running, "
                        "or set sip.local_port")
    return SipError(f"SIP {name.upper()} transport on {host}:{port} failed: "
                    f"{exc.reason} (check sip.bind_address and sip.local_port)")

