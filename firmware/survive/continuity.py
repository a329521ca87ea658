"""Call continuity: what call control does when the cloud fails under its calls.

`Continuity(cc)` is built by CallControl, which shows it every SipEvent first
(`on_event`: True when consumed). It owns the state machine (state.Survivability) and:

Blips. MEDIA_TIMEOUT on an answered cloud call: the port hears prompts.HOLD instead of
the silent cloud, the SIP dialog is kept, and a deadline is set blip_window_s after the
last packet (MEDIA_TIMEOUT's silent_s tells when that was). MEDIA_RESUMED before it: the
hold tone stops, the same agent is heard again, and the bridge re-INVITEs the call
(`refresh`, when it has one) to renew the dialog. At the deadline the cloud leg is lost.

Lost cloud legs (the deadline passed; or ENDED of an answered call with a network code
408/5xx or in a blip; or ENDED 408 / any failure in SURVIVABLE of
a PSTN caller's INVITE still pending):
  - a PSTN caller (FXO port): the line is kept; the port takes handle `a` of a local
    pair and a fallback.Fallback on the other end re-routes the caller locally
    (announcement at once, then headset, hunt group, queue, callback capture);
  - a branch phone or the headset: the cloud leg is hung up and the port gets ENDED,
    so a phone hears reorder and can dial again at once (local calls work in SURVIVABLE).
Entering SURVIVABLE also settles calls still being set up: a PSTN caller whose INVITE to
the cloud is pending goes to the local fallback at once (and is answered there); a phone
or the headset still calling the cloud gets the failure now, not after SIP's 32 s.

New calls in SURVIVABLE: `cloud_up` is False, so CallControl sends a phone's external
numbers out of a free FXO line (with the outage dial rules: survive.outage_strip_prefix
then outage_add_prefix; emergency numbers are never rewritten) and an inbound PSTN
call straight to the local fallback (`local_inbound`).

Edges. Each move to CLOUD_PRIMARY / CLOUD_SECONDARY re-points the bridge
(`use_edge(uri)`: re-register there; new calls follow) and re-INVITEs the calls that are
in a blip so they can move with it. Back from SURVIVABLE, callers waiting in a local
queue are handed back to the cloud (Fallback.hand_back). Calls talking to a local agent
are local calls: no failback touches them.

Assumes the reactor thread; it acts on calls only through call control's methods.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from firmware.callctl.base import Ev
from firmware.sip import api
from firmware.survive import prompts
from firmware.survive.fallback import Fallback
from firmware.survive.recording import Recording
from firmware.survive.state import State, Survivability

log = logging.getLogger(__name__)

NETWORK_CODES = (408, 500, 502, 503, 504)


@dataclass
class Blip:
    call: int
    port: object
    lost_at: float
    timer: object


class Continuity:
    def __init__(self, cc) -> None:
        self.cc = cc
        self.cfg = dict(cc.doc.get("survive", {}))
        self.state = Survivability(cc.reactor, cc.doc, cc.cdr)
        self.state.listeners.append(self._on_state)
        self.blips: dict[int, Blip] = {}
        self.fallbacks: list[Fallback] = []
        self.callbacks: list[dict] = []
        self.counters: Counter = Counter()
        self.edge_used: str | None = None
        # A box without any cloud edge configured is not in an outage: its PSTN callers
        # are not taken by the local fallback (they ring on, as before issue 5).
        self.has_cloud = bool(cc.doc.get("sip", {}).get("edges"))
        self.recordings: dict[str, Recording] = {}  # FXO port -> its call's recording
        cc.subscribe(self._port_state)

    def read_settings(self, doc: dict) -> None:
        """New survive.* values: the next blip or fallback uses them (Fallback shares
        self.cfg; a fallback already running keeps its chain of stages)."""
        self.cfg.clear()
        self.cfg.update(doc.get("survive", {}))
        self.state.read_settings(doc)

    @property
    def cloud_up(self) -> bool:
        return self.state.cloud_up

    def stop(self) -> None:
        self.state.stop()
        for blip in list(self.blips.values()):
            self.cc.reactor.unregister_timer(blip.timer)
        self.blips.clear()

    def status(self) -> dict:
        return {**self.state.status(), "blips": sorted(self.blips),
                "fallbacks": [f.status() for f in self.fallbacks],
                "callbacks": len(self.callbacks), "counters": dict(self.counters)}

    # ---- events in ----
    def on_event(self, ev: Ev) -> bool:
        if ev.kind in (api.EDGE, api.REGISTRATION):
            self.state.on_sip(ev)
            return False
        if ev.kind == api.MEDIA_TIMEOUT:
            self._silent(ev)
            return True
        if ev.kind == api.MEDIA_RESUMED:
            self._resumed(ev)
            return True
        if ev.kind == api.ENDED and ev.call is not None and not self.cc.local.is_local(ev.call):
            return self._ended(ev)
        return False

    # ---- blips ----
    def _silent(self, ev: Ev) -> None:
        port = self.cc.owner.get(ev.call)
        if port is None or ev.call in self.blips or not self.cc.is_up(ev.call):
            return
        now = self.cc.reactor.now()
        lost_at = now - float(ev.data.get("silent_s") or 0.0)
        deadline = max(now, lost_at + float(self.cfg.get("blip_window_s", 10.0)))
        timer = self.cc.reactor.register_timer(lambda _t, c=ev.call: self._blip_over(c),
                                               deadline)
        self.blips[ev.call] = Blip(ev.call, port, lost_at, timer)
        self.counters["blips"] += 1
        log.warning("call %s: no RTP for %.1f s: holding the line up to %.0f s", ev.call,
                    now - lost_at, deadline - now)
        if _active(port) == ev.call:
            port.media.tone(prompts.HOLD)
        if self.state.state is State.CLOUD_SECONDARY:
            self._refresh(ev.call)  # a call of the dead primary: move it with a re-INVITE

    def _resumed(self, ev: Ev) -> None:
        blip = self.blips.pop(ev.call, None)
        if blip is None:
            return
        self.cc.reactor.unregister_timer(blip.timer)
        self.counters["resumed"] += 1
        log.warning("call %s: RTP back after %.1f s: the conversation resumes", ev.call,
                    self.cc.reactor.now() - blip.lost_at)
        if _active(blip.port) == ev.call and blip.port.media.pipe is not None:
            blip.port.media.tone(None)
        self._refresh(ev.call)
        self.state.media(True, f"RTP back on call {ev.call}")

    def _blip_over(self, call: int) -> float:
        blip = self.blips.pop(call, None)
        if blip is not None:
            silent = self.cc.reactor.now() - blip.lost_at
            if not self._any_audio():
                self.state.media(False, f"no RTP on the cloud calls for {silent:.0f} s")
            self._lost(blip.port, call, f"no RTP for {silent:.0f} s")
        return float("inf")

    def _any_audio(self) -> bool:
        """Is some other answered cloud call still carrying audio?"""
        return any(c not in self.blips and c > 0 and self.cc.is_up(c) for c in self.cc.owner)

    # ---- lost cloud legs ----
    def _ended(self, ev: Ev) -> bool:
        blip = self.blips.pop(ev.call, None)
        if blip is not None:
            self.cc.reactor.unregister_timer(blip.timer)
        port = self.cc.owner.get(ev.call)
        if getattr(port, "kind", "") != "fxo" or port.call != ev.call:
            return False
        code = int(ev.data.get("code") or 0)
        if port.state.name == "CONNECTED":
            # An ENDED that arrived was signalled: the agent's own hang-up is not a loss,
            # even in SURVIVABLE (the WAN may be back, failback still waiting).
            lost = code in NETWORK_CODES or blip is not None
        else:  # OFFERED: a reachable cloud that declines (503 busy here) keeps its say
            lost = (port.state.name == "OFFERED" and self.has_cloud
                    and (code == 408 or not self.cloud_up))
        if not lost:
            return False
        self.cc._bookkeep(ev)  # the cloud leg's CDR closes as the bridge reported it
        self.cc.forget(ev.call)
        self._rescue(port, ev.call, f"cloud leg ended ({code} {ev.data.get('reason', '')})")
        return True

    def _lost(self, port, call: int, why: str) -> None:
        if call not in self.cc.owner:
            return
        kind = getattr(port, "kind", "")
        self.cc.hangup(call)
        if kind == "fxo" and port.call == call and port.state.name in ("CONNECTED", "OFFERED"):
            self._rescue(port, call, why)
        elif kind in ("fxs", "headset") and call in port.calls():
            self.counters["phones_reordered"] += 1
            port.handle(Ev(api.ENDED, call, {"code": 408, "reason": why}))

    def _rescue(self, fxo, old: int, why: str) -> None:
        """Keep the PSTN caller: the FXO port swaps `old` for a local leg to a Fallback."""
        a, b = self.cc.local.pair()
        fb = Fallback(self, fxo, a, b, why)
        self.cc.owner[a], self.cc.owner[b] = fxo, fb
        self.cc.open_leg(a, "inbound", fxo.name, fb.ani, fb.dnis)
        self.fallbacks.append(fb)
        self.counters["rescued"] += 1
        fxo.replace_call(old, a)
        self.cc.answer(b)  # OFFERED: the port seizes the line on ANSWERED
        fb.start()

    def local_inbound(self, fxo) -> int:
        """A PSTN call in SURVIVABLE: straight to the local fallback; returns `a`."""
        a, b = self.cc.local.pair()
        fb = Fallback(self, fxo, a, b, "the cloud is unreachable (SURVIVABLE)")
        self.cc.owner[a], self.cc.owner[b] = fxo, fb
        self.fallbacks.append(fb)
        self.counters["local_inbound"] += 1
        self.cc.reactor.call_soon(self._answer_local, fb)
        return a

    def _answer_local(self, fb: Fallback) -> None:
        if fb.b in self.cc.owner:
            self.cc.answer(fb.b)
            fb.start()

    # ---- recordings (survive.record_calls; firmware/survive/recording.py) ----
    def start_recording(self, fb: Fallback) -> None:
        """Record the PSTN caller's call from now until the line is released."""
        store = self.cc.cdr
        if not self.cfg.get("record_calls") or store is None or fb.name in self.recordings:
            return
        call_uuid = self.cc.record_uuid(fb.a)
        if call_uuid is None:
            return
        try:
            rec = Recording(Path(store.recordings_dir), call_uuid, fb.name, fb.ani,
                            self.cc.reactor.clock.wall())
        except OSError as exc:
            log.error("%s: cannot record the call: %s", fb.name, exc)
            return
        self.recordings[fb.name] = rec
        fb.fxo.media.recorder = rec
        self.counters["recordings"] += 1

    def _port_state(self, port: str, _old: str, new: str) -> None:
        if new != "IDLE" or port not in self.recordings:
            return
        rec = self.recordings.pop(port)
        fsm = self.cc.ports.get(port)
        if fsm is not None and fsm.media.recorder is rec:
            fsm.media.recorder = None
        try:
            rec.finish(self.cc.cdr)
        except OSError as exc:
            log.error("%s: the recording of call %s is lost: %s", port, rec.call_uuid, exc)

    def finished(self, fb: Fallback) -> None:
        if fb in self.fallbacks:
            self.fallbacks.remove(fb)

    def store_callback(self, fb: Fallback, number: str) -> str | None:
        rec = {"ani": fb.ani, "number": number, "port": fb.name, "dnis": fb.dnis,
               "waited_s": round(fb.waited(), 1), "t": self.cc.reactor.clock.wall()}
        self.callbacks.append(rec)
        self.counters["callbacks"] += 1
        cdr = self.cc.cdr
        if cdr is None:
            return None
        try:
            return cdr.callback_request(fb.ani, number, fb.name,
                                        call_uuid=self.cc.record_uuid(fb.a), t=rec["t"],
                                        dnis=fb.dnis, waited_s=rec["waited_s"])
        except Exception:  # noqa: BLE001 - never lose the caller over the outbox
            log.exception("callback request of %s not queued", fb.ani)
            return None

    # ---- outage dial rules ----
    def outage_number(self, number: str) -> str:
        strip = self.cfg.get("outage_strip_prefix", "")
        if strip and number.startswith(strip):
            number = number[len(strip):]
        return self.cfg.get("outage_add_prefix", "") + number

    # ---- state changes ----
    def _on_state(self, old: State, new: State, reason: str) -> None:
        if new is State.SURVIVABLE:
            self._settle_pending(reason)
            return
        self._use_edge(self.state.edge_in_use)
        if old is State.SURVIVABLE:
            for fb in list(self.fallbacks):
                fb.hand_back()

    def _settle_pending(self, reason: str) -> None:
        for port in list(self.cc.ports.values()):
            for call in [c for c in port.calls() if c > 0 and not self.cc.is_up(c)]:
                if self.cc.owner.get(call) is not port:
                    continue
                if port.kind == "fxo" and port.state.name == "OFFERED" and self.has_cloud:
                    self.cc.hangup(call)
                    self._rescue(port, call, reason)
                elif port.kind in ("fxs", "headset") and _active(port) == call:
                    self.cc.hangup(call)
                    port.handle(Ev(api.ENDED, call, {"code": 503, "reason": reason}))

    def _use_edge(self, uri: str | None) -> None:
        if uri is None or uri == self.edge_used:
            return
        first = self.edge_used is None
        self.edge_used = uri
        use = getattr(self.cc.bridge, "use_edge", None)
        if use is None or (first and uri == (self.state.edges[0].uri if self.state.edges
                                             else None)):
            return  # the bridge starts on the primary by itself
        log.warning("survivability: calls go through %s now", uri)
        self.cc._safely(use, uri)
        for call in list(self.blips):
            self._refresh(call)

    def _refresh(self, call: int) -> None:
        refresh = getattr(self.cc.bridge, "refresh", None)
        if refresh is not None:
            self.cc._safely(refresh, call)


def _active(port) -> int | None:
    """The call a port is talking on (FXS: active; FXO and headset: call)."""
    return getattr(port, "active", getattr(port, "call", None))
