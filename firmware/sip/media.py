"""Media, on the SIP thread: each call's MediaPipe connected both ways to its audio in
pjsua2's conference bridge, the far end's hold, RTCP quality, and fax/modem passthrough."""

from __future__ import annotations

import logging
from typing import Any

import pjsua2 as pj

from firmware.sip import sipmsg
from firmware.sip.api import SipCallState, SipEventKind
from firmware.sip.pjobjects import BCall, Context, PipePort, PjObj

log = logging.getLogger(__name__)

FIXED_JB_MS = 60  # passthrough jitter buffer: fixed prefetch (3 frames), never adapted


class Passthrough:
    """Marks the leg and re-INVITEs it once answered. From then on its SDP is G.711 only
    (sipmsg.g711_only) and each new audio stream gets a fixed jitter buffer: an adaptive
    one slips the modem's clock. pjsua re-creates a stream only when its codec, payload
    types or direction change, so the re-INVITE goes out on a G.711 call too: dropping
    telephone-event re-creates it (a leg that never had it keeps its adaptive buffer).
    status()["calls"] shows `passthrough`: "reinvite" when sent (and after a refused
    one), then the new stream's codec and jitter buffer."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def start(self, handle: int) -> None:
        call = self.ctx.legs.get(handle, "passthrough")
        if call is None or call.passthrough:
            return
        call.passthrough = True
        log.info("SIP call %d: fax/modem passthrough: G.711, fixed jitter buffer", handle)
        if call.answered:
            self.reinvite(call)

    def reinvite(self, call: BCall) -> None:
        call.passthrough_sent = True
        self.ctx.shared.update_call(call.handle, state=SipCallState.ANSWERED,
                                    passthrough="reinvite")
        call.reinvite(pj.CallOpParam(True))

    def sdp_created(self, call: BCall, prm: PjObj) -> None:
        """Our SDP (offer, or answer to `prm.remSdp`; pjsua2's per-call codec hook)."""
        if not call.passthrough:
            return
        sdp = sipmsg.g711_only(prm.sdp.wholeSdp)
        if sdp is None:
            log.warning("SIP call %d: passthrough: no G.711 in our SDP; left as it is",
                        call.handle)
            return
        remote = prm.remSdp.wholeSdp
        if remote and not sipmsg.offers_g711(remote):
            log.warning("SIP call %d: passthrough: the far end offers no G.711; the codec "
                        "stays", call.handle)
            return
        prm.sdp.wholeSdp = sdp

    def stream_precreate(self, call: BCall, prm: PjObj) -> None:
        if not call.passthrough:
            return
        info = prm.streamInfo
        if info.type != pj.PJMEDIA_TYPE_AUDIO:
            return
        info.jbInit = info.jbMinPre = info.jbMaxPre = FIXED_JB_MS
        info.jbDiscardAlgo = pj.PJMEDIA_JB_DISCARD_NONE

    def publish(self, call: BCall) -> None:
        stream = call.audio_stream()
        if stream is None:
            return
        si = stream[0]
        jb = {"init_ms": si.jbInit, "min_ms": si.jbMinPre, "max_ms": si.jbMaxPre,
              "fixed": si.jbMinPre == si.jbMaxPre}
        self.ctx.shared.update_call(call.handle, jitter_buffer=jb,
                                    passthrough=f"{si.codecName}/{si.codecClockRate}")


class MediaPorts:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.passthrough = Passthrough(ctx)

    def on_media_state(self, call: BCall) -> None:
        info = call.getInfo()
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if media.status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD and not call.remote_held:
                call.remote_held = True
                self.ctx.emit(SipEventKind.HELD, call.handle)
            elif media.status == pj.PJSUA_CALL_MEDIA_ACTIVE and call.remote_held:
                call.remote_held = False
                self.ctx.emit(SipEventKind.RESUMED, call.handle)
        self.attach(call)
        self.read_quality(call)
        if call.passthrough_sent:
            self.passthrough.publish(call)

    def attach_handle(self, handle: int) -> None:
        call = self.ctx.legs.live.get(handle)
        if call is not None:
            self.attach(call)

    def attach(self, call: BCall) -> None:
        """Connect the handle's MediaPipe both ways to the call's audio, if both exist."""
        pipe = self.ctx.shared.pipes.get(call.handle)
        if pipe is None or call.superseded or not call.hasMedia():
            return
        audio = call.audio()
        if audio is None:
            return
        if call.port is None or call.port.pipe is not pipe:
            if call.port is not None:  # a new pipe for the handle: retire the old port
                self.detach(call)
            call.port = PipePort(pipe, self.ctx.now)
            call.port.open(f"line{call.handle}")
        call.port.startTransmit(audio)
        audio.startTransmit(call.port)

    def detach(self, call: BCall) -> None:
        """Take a leg off its pipe; its port is dropped later, in the loop."""
        port, call.port = call.port, None
        if port is None:
            return
        audio = call.audio()
        if audio is not None:
            port.stopTransmit(audio)
            audio.stopTransmit(port)
        self.ctx.legs.retired.append(port)

    def refresh_quality(self) -> None:
        for call in self.ctx.legs.answered():
            self.read_quality(call)

    def read_quality(self, call: BCall) -> None:
        stream = call.audio_stream()
        if stream is not None:
            self.ctx.shared.quality[call.handle] = _quality(*stream)


def _quality(info: PjObj, stat: PjObj) -> dict[str, Any]:
    rx = stat.rtcp.rxStat
    received = rx.pkt + rx.loss
    rtt = stat.rtcp.rttUsec
    return {
        "codec": f"{info.codecName}/{info.codecClockRate}",
        "jitter_ms": round(rx.jitterUsec.mean / 1000.0, 2) if rx.jitterUsec.n else 0.0,
        "loss_pct": round(100.0 * rx.loss / received, 2) if received else 0.0,
        "rtt_ms": round(rtt.mean / 1000.0, 2) if rtt.n else None,
    }
