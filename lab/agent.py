"""A cloud contact-center agent as its own process: a pjsua2 user agent for the lab.

Run: python -m lab.agent --user agent1 --password secret --registrar 127.0.0.1:PORT
     --domain cloud.test --sip-port P --control-port C [--answer-after-ms 200]
     [--tone-hz 1000] [--answer-code 200|486|503|408]
Prints READY once registered (REGFAIL <code> <reason>, exit 3, when refused); answers,
plays a tone, measures what it hears, records DTMF and INVITE headers; driven by JSON lines
on 127.0.0.1:C (lab/agentctl.py). pjsua2 is used as shared/notes/pjsua2-and-sip-peers.md
found safe: everything on the main thread, objects kept until after hang-up, null sound.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import logging
import queue
import re
import signal
import socketserver
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pjsua2 as pj

from firmware.sip.pjobjects import destroy_port
from lab.linemodel import dbm0_to_rms, rms_to_dbm0
from lab.ports import free_port

log = logging.getLogger("lab.agent")

RATE = 8000
EXIT_REGFAIL = 3
NEVER_ANSWER = 408


def dominant_tone(samples: np.ndarray, rate: int = RATE) -> dict[str, float]:
    """Dominant frequency (Hz, to ~0.1 Hz by parabolic interpolation of a Hann-windowed
    FFT) and level (dBm0, whole signal) of int16-unit samples."""
    x = samples.astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    if rms < 1.0:
        return {"hz": 0.0, "dbm0": round(rms_to_dbm0(rms), 1) if rms > 0 else -99.0}
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return {"hz": round((k + shift) * rate / len(x), 1), "dbm0": round(rms_to_dbm0(rms), 1)}


def parse_headers(msg: str) -> dict[str, str]:
    """The header fields of a SIP message (first value of each, names as sent)."""
    head = msg.split("\r\n\r\n", 1)[0].split("\r\n")
    out: dict[str, str] = {"Request-Line": head[0]} if head else {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip() not in out:
            out[name.strip()] = value.strip()
    return out


def uri_parts(value: str) -> dict[str, str]:
    """Display name and user of a From/To/PAI/Request-URI value."""
    m = re.match(r'\s*(?:"([^"]*)"|([^<"]*?))\s*<?(?:sips?|tel):([^@;>]*)', value)
    if not m:
        return {"display": "", "user": ""}
    display = (m.group(1) if m.group(1) is not None else m.group(2) or "").strip()
    return {"display": display, "user": m.group(3)}


def invite_summary(msg: str) -> dict[str, Any]:
    """What the tests check on an incoming INVITE: From, PAI, To, R-URI and X- headers."""
    h = parse_headers(msg)
    req = h.get("Request-Line", "").split()
    frm = uri_parts(h.get("From", ""))
    return {
        "from_user": frm["user"], "from_display": frm["display"],
        "pai": h.get("P-Asserted-Identity", ""),
        "pai_user": uri_parts(h.get("P-Asserted-Identity", ""))["user"],
        "to_user": uri_parts(h.get("To", ""))["user"],
        "ruri_user": uri_parts(req[1])["user"] if len(req) > 1 else "",
        "x": {k: v for k, v in h.items() if k.lower().startswith("x-")},
    }


class TonePort(pj.AudioMediaPort):
    """Plays a sine to the call and keeps the last second of what the call sends us, at
    `rate` (8000, or 16000 to hear wideband calls). Its callbacks run on pjmedia's clock
    thread: keep them short and never raise."""

    def __init__(self, agent: Agent, rate: int = RATE) -> None:
        super().__init__()
        self.agent = agent
        self.rate = rate
        self.frame = rate // 50
        self.phase = 0.0
        self.rx: deque[np.ndarray] = deque(maxlen=50)
        self.rx_lock = threading.Lock()  # copying a deque while it grows raises
        self.frames_rx = 0

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        try:
            hz, amp, n = self.agent.tone_hz, self.agent.tone_amp, self.frame
            step = 2 * np.pi * hz / self.rate
            pcm = (amp * np.sin(self.phase + step * np.arange(n))).astype("<i2") if hz else \
                np.zeros(n, "<i2")
            self.phase = (self.phase + step * n) % (2 * np.pi)
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
            frame.buf = pj.ByteVector(pcm.tobytes())
            frame.size = n * 2
        except Exception:  # an escaping exception would pin objects (see notes)
            log.exception("tone frame")

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        try:
            n = self.frame
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size >= n * 2:
                data = np.frombuffer(bytes(frame.buf), dtype="<i2")[:n].copy()
            else:
                data = np.zeros(n, np.int16)
            with self.rx_lock:
                self.rx.append(data)
            self.frames_rx += 1
        except Exception:
            log.exception("rx frame")

    def measure(self) -> dict[str, float]:
        with self.rx_lock:
            frames = list(self.rx)
        if not frames:
            return {"hz": 0.0, "dbm0": -99.0}
        return dominant_tone(np.concatenate(frames), self.rate)


@dataclass
class CallRecord:
    """What the control API reports about one call (kept after the call ends)."""
    id: int
    direction: str
    remote_uri: str = ""
    state: str = "NULL"
    code: int = 0
    reason: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    dtmf: str = ""
    dtmf_events: list[dict[str, Any]] = field(default_factory=list)
    rx: dict[str, float] = field(default_factory=lambda: {"hz": 0.0, "dbm0": -99.0})
    media: bool = False
    codec: str = ""
    held: bool = False
    transfer: dict[str, Any] = field(default_factory=dict)
    answer_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("answer_at")
        return d


class AgentCall(pj.Call):
    """A pjsua2 call that reports to its CallRecord; its port lives as long as it does."""

    def __init__(self, agent: Agent, acc: pj.Account, record: CallRecord,
                 call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.agent = agent
        self.acc = acc
        self.rec = record
        self.port: TonePort | None = None

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            ci = self.getInfo()
            self.rec.state = ci.stateText
            self.rec.code = ci.lastStatusCode
            self.rec.reason = ci.lastReason
            self.rec.remote_uri = ci.remoteUri
            log.info("call %d: %s (%d %s)", self.rec.id, ci.stateText, ci.lastStatusCode,
                     ci.lastReason)
            if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.agent.ended.append(self.rec.id)  # dropped by the main loop, not here
        except Exception:
            log.exception("call state")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        try:
            ci = self.getInfo()
            for mi in ci.media:
                if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                    continue
                self.rec.held = mi.status in (pj.PJSUA_CALL_MEDIA_LOCAL_HOLD,
                                              pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)
                if mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    si = self.getStreamInfo(mi.index)
                    self.rec.codec = f"{si.codecName}/{si.codecClockRate}"
                    self._connect(self.getAudioMedia(mi.index))
        except Exception:
            log.exception("media state")

    def _connect(self, am: pj.AudioMedia) -> None:
        if self.port is None:
            rate = self.agent.args.port_rate
            self.port = TonePort(self.agent, rate)
            fmt = pj.MediaFormatAudio()
            fmt.init(pj.PJMEDIA_FORMAT_PCM, rate, 1, 20000, 16)
            self.port.createPort(f"agent-{self.rec.id}", fmt)
        self.port.startTransmit(am)
        am.startTransmit(self.port)
        self.rec.media = True

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        try:
            method = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
            self.rec.dtmf += prm.digit
            ms = prm.duration if prm.duration < 0xFFFF else None  # unknown at the start
            self.rec.dtmf_events.append({"digit": prm.digit, "method": method, "ms": ms})
            log.info("call %d: DTMF %s (%s)", self.rec.id, prm.digit, method)
        except Exception:
            log.exception("dtmf")

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        try:
            new = self.agent.new_call("out", prm.dstUri, pj.PJSUA_INVALID_ID)
            prm.newCall = new
            log.info("call %d: REFER to %s accepted as call %d", self.rec.id, prm.dstUri,
                     new.rec.id)
        except Exception:
            log.exception("transfer request")


    def onCallReplaced(self, prm: pj.OnCallReplacedParam) -> None:
        # An INVITE with Replaces (the far end of an attended transfer) takes this call
        # over. Without a Call of ours for it, pjsua2 made a bare C++ Call whose end
        # crashed the process (segfault in libHandleEvents): give it a recorded one.
        try:
            new = self.agent.new_call("in", self.rec.remote_uri, prm.newCallId, self.acc)
            new.rec.headers = {**self.rec.headers, "replaces": self.rec.id}
            prm.newCall = new
            log.info("call %d replaced by call %d", self.rec.id, new.rec.id)
        except Exception:
            log.exception("call replaced")

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        try:
            self.rec.transfer = {"code": prm.statusCode, "final": bool(prm.finalNotify)}
            if prm.finalNotify and prm.statusCode // 100 == 2:
                # The transferee reached the target: our part is done (as phones do).
                self.agent.to_hang_up.append(self.rec.id)
        except Exception:
            log.exception("transfer status")


class AgentAccount(pj.Account):
    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        try:
            self.agent.on_reg_state(prm.code, prm.reason, prm.expiration)
        except Exception:
            log.exception("reg state")

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        try:
            self.agent.on_incoming(prm.callId, prm.rdata.wholeMsg, self)
        except Exception:
            log.exception("incoming call")


class ControlHandler(socketserver.StreamRequestHandler):
    """One JSON object per line in, one per line out; the main thread does the work."""

    def handle(self) -> None:
        agent: Agent = self.server.agent  # type: ignore[attr-defined]
        for line in self.rfile:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                reply = agent.submit(req)
            except json.JSONDecodeError as e:
                reply = {"ok": False, "error": f"bad JSON: {e}"}
            self.wfile.write((json.dumps(reply) + "\n").encode())
            self.wfile.flush()


class ControlServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Agent:
    """The agent: pjsua2 endpoint, account, calls, and the command loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tone_hz = float(args.tone_hz)
        self.tone_amp = dbm0_to_rms(args.tone_dbm0) * np.sqrt(2)
        self.commands: queue.Queue = queue.Queue()
        self.running = True
        self.exit_code = 0
        self.registered = False
        self.reg = {"code": 0, "reason": ""}
        self.live: dict[int, AgentCall] = {}
        self.records: dict[int, CallRecord] = {}
        self.ended: list[int] = []
        self.to_hang_up: list[int] = []
        self.next_id = 1
        self.ep: pj.Endpoint | None = None
        self.acc: AgentAccount | None = None
        self.direct_acc: AgentAccount | None = None
        self.ready_said = False

    # ---- lifetime -----------------------------------------------------------------

    def run(self) -> int:
        server = ControlServer(("127.0.0.1", self.args.control_port), ControlHandler)
        server.agent = self  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
        try:
            self._start_pj()
            self._loop()
        finally:
            server.shutdown()
            server.server_close()
            self._stop_pj()
        return self.exit_code

    def _start_pj(self) -> None:
        ep = self.ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 32
        cfg.uaConfig.userAgent = f"branchline-lab-agent/{self.args.user}"
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        cfg.logConfig.consoleLevel = 0
        cfg.logConfig.level = 4 if self.args.pj_log else 0
        if self.args.pj_log:
            cfg.logConfig.filename = self.args.pj_log
        ep.libInit(cfg)
        for kind in (pj.PJSIP_TRANSPORT_UDP, pj.PJSIP_TRANSPORT_TCP):
            tcfg = pj.TransportConfig()
            tcfg.port = self.args.sip_port
            tcfg.boundAddress = self.args.host
            ep.transportCreate(kind, tcfg)
        ep.libStart()
        adm = ep.audDevManager()
        adm.setNullDev()
        # Keeps the null device's clock running so conference slots are freed (notes).
        adm.getCaptureDevMedia().startTransmit(adm.getPlaybackDevMedia())
        self._set_codecs()
        self._make_account()

    def _set_codecs(self) -> None:
        wanted = [c.strip().upper() for c in self.args.codecs.split(",") if c.strip()]
        for ci in self.ep.codecEnum2():
            name = ci.codecId.split("/")[0].upper()
            if name == "TELEPHONE-EVENT":
                continue
            prio = 255 - wanted.index(name) if name in wanted else 0
            self.ep.codecSetPriority(ci.codecId, prio)

    def _make_account(self) -> None:
        a = self.args
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{a.user}@{a.domain}"
        acfg.mediaConfig.transportConfig.port = a.rtp_port or free_port("udp")
        acfg.mediaConfig.transportConfig.portRange = 200
        acfg.mediaConfig.transportConfig.boundAddress = a.host
        if a.registrar:
            acfg.regConfig.registrarUri = f"sip:{a.registrar}"
            acfg.regConfig.timeoutSec = 300
            acfg.regConfig.retryIntervalSec = 0  # a refusal is final here: report it
            acfg.sipConfig.proxies.append(f"sip:{a.registrar};lr")
            acfg.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", "*", a.user, 0, a.password))
        self.acc = AgentAccount(self)
        self.acc.create(acfg)
        if a.registrar:
            self._make_direct_account()
        else:
            self._say_ready()

    def _make_direct_account(self) -> None:
        # Dialling a peer's own address (sip:user@127.0.0.1:port) must bypass the
        # registrar's outbound proxy: a second account without proxy or registration.
        dcfg = pj.AccountConfig()
        dcfg.idUri = f"sip:{self.args.user}@{self.args.host}:{self.args.sip_port}"
        dcfg.mediaConfig.transportConfig.port = free_port("udp")
        dcfg.mediaConfig.transportConfig.portRange = 200
        dcfg.mediaConfig.transportConfig.boundAddress = self.args.host
        self.direct_acc = AgentAccount(self)
        self.direct_acc.create(dcfg)

    def _loop(self) -> None:
        while self.running:
            self.ep.libHandleEvents(10)
            self._drain_commands()
            self._due_answers()
            self._due_hangups()
            self._drop_ended()

    def _stop_pj(self) -> None:
        ep = self.ep
        if ep is None:
            return
        try:
            ep.hangupAllCalls()
            for _ in range(30):
                ep.libHandleEvents(10)
            self.ended.extend(self.live)
            self._drop_ended()
            for acc in (self.acc, self.direct_acc):
                if acc is not None:
                    acc.shutdown()
            self.acc = self.direct_acc = None
        finally:
            sys.last_type = sys.last_value = sys.last_traceback = None
            gc.collect()
            ep.libDestroy()
            self.ep = None

    def _say_ready(self) -> None:
        if not self.ready_said:
            self.ready_said = True
            print("READY", flush=True)

    # ---- pjsua2 events (main thread) ---------------------------------------------------

    def on_reg_state(self, code: int, reason: str, expiration: int) -> None:
        self.reg = {"code": code, "reason": reason}
        self.registered = code // 100 == 2 and expiration > 0
        log.info("registration: %d %s (expires %d)", code, reason, expiration)
        if self.registered:
            self._say_ready()
        elif code >= 300 and not self.ready_said:
            print(f"REGFAIL {code} {reason}", flush=True)
            self.exit_code = EXIT_REGFAIL
            self.running = False

    def new_call(self, direction: str, uri: str, call_id: int,
                 acc: pj.Account | None = None) -> AgentCall:
        rec = CallRecord(id=self.next_id, direction=direction, remote_uri=uri)
        self.next_id += 1
        call = AgentCall(self, acc or self.acc, rec, call_id)
        self.records[rec.id] = rec
        self.live[rec.id] = call
        return call

    def on_incoming(self, call_id: int, msg: str, acc: pj.Account) -> None:
        call = self.new_call("in", "", call_id, acc)
        call.rec.headers = invite_summary(msg)
        log.info("incoming call %d: %s", call.rec.id, call.rec.headers)
        code = self.args.answer_code
        if code in (200, NEVER_ANSWER):
            self._answer(call, 183 if self.args.early_media else 180)
            if code == 200:
                call.rec.answer_at = time.monotonic() + self.args.answer_after_ms / 1000
        else:
            self._answer(call, code)

    def _answer(self, call: AgentCall, code: int) -> None:
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        call.answer(prm)

    def _due_answers(self) -> None:
        now = time.monotonic()
        for call in list(self.live.values()):
            at = call.rec.answer_at
            if at is not None and now >= at:
                call.rec.answer_at = None
                self._answer(call, 200)

    def _due_hangups(self) -> None:
        while self.to_hang_up:
            call = self.live.get(self.to_hang_up.pop())
            if call is not None:
                call.hangup(pj.CallOpParam(True))

    def _drop_ended(self) -> None:
        # Outside callbacks: deleting a Call inside its own callback is unsafe.
        while self.ended:
            call = self.live.pop(self.ended.pop(), None)
            if call is not None:
                if call.port is not None:
                    call.rec.rx = call.port.measure()
                    destroy_port(call.port)  # out of the conference before it is freed
                call.port = None

    # ---- commands -----------------------------------------------------------------

    def submit(self, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Called on a control thread: queue the command, wait for the main thread."""
        box: queue.Queue = queue.Queue(maxsize=1)
        self.commands.put((req, box))
        try:
            return box.get(timeout=timeout)
        except queue.Empty:
            return {"ok": False, "error": f"agent busy: no reply within {timeout:.0f} s"}

    def _drain_commands(self) -> None:
        while True:
            try:
                req, box = self.commands.get_nowait()
            except queue.Empty:
                return
            box.put(self._execute(req))

    def _execute(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = str(req.get("cmd", ""))
        handler = getattr(self, f"_cmd_{cmd}", None)
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        try:
            return {"ok": True, **(handler(req) or {})}
        except pj.Error as e:
            return {"ok": False, "error": f"{cmd}: {e.info()}"}
        except (KeyError, ValueError, TypeError) as e:
            return {"ok": False, "error": f"{cmd}: {e!r}"}
        except Exception as e:  # a failed command must not end the agent
            log.exception("command %s", cmd)
            return {"ok": False, "error": f"{cmd}: {e!r}"}

    def _call(self, req: dict[str, Any]) -> AgentCall:
        if "call" in req and req["call"] is not None:
            call = self.live.get(int(req["call"]))
        else:
            call = next(reversed(self.live.values()), None) if self.live else None
        if call is None:
            raise ValueError(f"no live call {req.get('call', '')}".strip())
        return call

    def _cmd_status(self, req: dict[str, Any]) -> dict[str, Any]:
        self._update_rx_all()
        return {"user": self.args.user, "registered": self.registered, "reg": self.reg,
                "tone_hz": self.tone_hz,
                "calls": [r.as_dict() for r in self.records.values()]}

    def _update_rx_all(self) -> None:
        for call in self.live.values():
            if call.port is not None:
                call.rec.rx = call.port.measure()

    def _cmd_dial(self, req: dict[str, Any]) -> dict[str, Any]:
        to = str(req["to"])
        uri = to if to.startswith("sip") else f"sip:{to}@{self.args.domain}"
        direct = self.direct_acc is not None and ("@127.0.0.1:" in uri or req.get("direct"))
        call = self.new_call("out", uri, pj.PJSUA_INVALID_ID,
                             self.direct_acc if direct else self.acc)
        prm = pj.CallOpParam(True)
        for name, value in (req.get("headers") or {}).items():
            h = pj.SipHeader()
            h.hName, h.hValue = str(name), str(value)
            prm.txOption.headers.append(h)
        try:
            call.makeCall(uri, prm)
        except pj.Error:
            self.live.pop(call.rec.id, None)
            call.rec.state = "DISCONNECTED"
            raise
        return {"call": call.rec.id}

    def _cmd_answer(self, req: dict[str, Any]) -> None:
        call = self._call(req)
        call.rec.answer_at = None
        self._answer(call, int(req.get("code", 200)))

    def _cmd_hangup(self, req: dict[str, Any]) -> None:
        calls = [self._call(req)] if req.get("call") is not None else list(self.live.values())
        for call in calls:
            prm = pj.CallOpParam(True)
            # Ringing incoming calls are declined (603); early outgoing ones are
            # CANCELled, and pjsua must not be given a code for that.
            ringing_in = call.rec.direction == "in" and call.rec.state != "CONFIRMED"
            prm.statusCode = int(req.get("code", 603 if ringing_in else 0))
            call.hangup(prm)

    def _cmd_dtmf(self, req: dict[str, Any]) -> None:
        call = self._call(req)
        digits = str(req["digits"])
        if req.get("method", "rfc4733") == "info":
            prm = pj.CallSendDtmfParam()
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
            prm.digits = digits
            prm.duration = int(req.get("ms", 100))
            call.sendDtmf(prm)
        else:
            call.dialDtmf(digits)

    def _cmd_hold(self, req: dict[str, Any]) -> None:
        self._call(req).setHold(pj.CallOpParam(True))

    def _cmd_unhold(self, req: dict[str, Any]) -> None:
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        self._call(req).reinvite(prm)

    def _cmd_transfer(self, req: dict[str, Any]) -> None:
        target = str(req["target"])
        uri = target if target.startswith("sip") else f"sip:{target}@{self.args.domain}"
        self._call(req).xfer(uri, pj.CallOpParam(True))

    def _cmd_set_tone(self, req: dict[str, Any]) -> None:
        self.tone_hz = float(req.get("hz") or 0)
        if "dbm0" in req:
            self.tone_amp = dbm0_to_rms(float(req["dbm0"])) * np.sqrt(2)

    def _cmd_quit(self, req: dict[str, Any]) -> None:
        self.running = False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lab.agent", description=__doc__.split("\n")[0])
    p.add_argument("--user", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--registrar", default="", help="HOST:PORT of the edge; none: unregistered")
    p.add_argument("--domain", default="cloud.test")
    p.add_argument("--host", default="127.0.0.1",
                   help="address for SIP and RTP (a test namespace's own 10.x address)")
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, default=0, help="first RTP port (0: any)")
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--answer-after-ms", type=int, default=200)
    p.add_argument("--answer-code", type=int, default=200, choices=[200, 486, 503, 603, 408],
                   help="200 answers; 486/503/603 reject; 408 never answers")
    p.add_argument("--early-media", action="store_true", help="183 with audio before 200")
    p.add_argument("--tone-hz", type=float, default=0.0, help="tone to play; 0 is silence")
    p.add_argument("--tone-dbm0", type=float, default=-10.0)
    p.add_argument("--codecs", default="PCMU,PCMA,G722", help="in order of preference")
    p.add_argument("--port-rate", type=int, default=RATE, choices=[8000, 16000],
                   help="rate of the tone/measure port (16000 to hear G.722 calls)")
    p.add_argument("--pj-log", default="", help="file for pjsua's own log (level 4)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.user} %(levelname)s %(message)s")
    faulthandler.enable()  # a pjsua2 abort leaves a Python traceback in the log
    agent = Agent(args)

    def _stop(signum: int, _frame: object) -> None:
        agent.running = False

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
