"""Call continuity: what call control does when the cloud fails under its calls. A blip
(no RTP on an answered cloud call) holds the line with a hold tone for blip_window_s; a
lost cloud leg keeps a PSTN caller on a local fallback (fallback.py) and gives a phone
reorder at once; edge changes re-point the bridge. It owns the survivability state
machine (state.py) and sees every SipEvent first (`on_event`: True when consumed)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.callctl.base import Ev, safely
from firmware.sip import api
from firmware.survive import prompts
from firmware.survive.fallback import Fallback
from firmware.survive.recording import Recording
from firmware.survive.state import State, Survivability
from foundation.reactor import Reactor, Timer

if TYPE_CHECKING:
    from firmware.callctl.base import Port
    from firmware.callctl.controller import CallControl
    from firmware.callctl.model import Caller
    from firmware.core.config import Config
    from firmware.media import PortMedia
log = logging.getLogger(__name__)

NETWORK_CODES = (408, 500, 502, 503, 504)


@dataclass
class Blip:
    call: int
    port: Any  # whoever held the call: a port FSM, or the parking lot
    lost_at: float
    timer: Timer


class Continuity:
    def __init__(self, cc: CallControl, reactor: Reactor) -> None:
        self.cc, self.reactor = cc, reactor
        self.cfg = cc.cfg.survive
        self.state = Survivability(reactor, cc.cfg, cc.cdr, cc.events)
        self.state.listeners.append(self._on_state)
        self.blips: dict[int, Blip] = {}
        self.fallbacks: list[Fallback] = []
        self.callbacks: list[dict[str, Any]] = []
        self.counters: Counter[str] = Counter()
        self.edge_used: str | None = None
        # A box without any cloud edge is not in an outage: its PSTN callers ring on.
        self.has_cloud = bool(cc.cfg.sip.edges)
        self.recordings: dict[str, tuple[Recording, PortMedia]] = {}  # by FXO port
        cc.subscribe(self._port_state)

    def read_settings(self, cfg: Config) -> None:
        """New survive.* values: the next blip or fallback uses them (a fallback reads
        self.cfg; one already running keeps its chain of stages)."""
        self.cfg = cfg.survive
        self.state.read_settings(cfg)

    def stop(self) -> None:
        self.state.stop()
        for blip in list(self.blips.values()):
            self.reactor.unregister_timer(blip.timer)
        self.blips.clear()

    def status(self) -> dict[str, Any]:
        return {**self.state.status(), "blips": sorted(self.blips),
                "fallbacks": [f.status() for f in self.fallbacks],
                "callbacks": len(self.callbacks), "counters": dict(self.counters)}

    # ---- events in ----
    def on_event(self, ev: Ev) -> bool:
        if ev.kind in (api.EDGE, api.REGISTRATION):
            self.state.on_sip(ev)
            return False
        if ev.kind in (api.MEDIA_TIMEOUT, api.MEDIA_RESUMED):
            (self._silent if ev.kind == api.MEDIA_TIMEOUT else self._resumed)(ev)
            return True
        if ev.kind == api.ENDED and ev.call is not None and not self.cc.is_local(ev.call):
            return self._ended(ev)
        return False

    # ---- blips ----
    def _silent(self, ev: Ev) -> None:
        call, port = ev.call, self.cc.owner_of(ev.call)
        if call is None or port is None or call in self.blips or not self.cc.is_up(call):
            return
        now = self.reactor.now()
        lost_at = now - float(ev.data.get("silent_s") or 0.0)
        deadline = max(now, lost_at + self.cfg.blip_window_s)
        timer = self.reactor.register_timer(lambda _t: self._blip_over(call), deadline)
        self.blips[call] = Blip(call, port, lost_at, timer)
        self.counters["blips"] += 1
        log.warning("call %s: no RTP for %.1f s: holding the line up to %.0f s", ev.call,
                    now - lost_at, deadline - now)
        if _active(port) == call:
            port.media.tone(prompts.HOLD)  # type: ignore[attr-defined]  # a port: it has a call
        if self.state.state is State.CLOUD_SECONDARY:
            self._refresh(call)  # a call of the dead primary: move it with a re-INVITE

    def _resumed(self, ev: Ev) -> None:
        blip = self.blips.pop(ev.call, None) if ev.call is not None else None
        if blip is None:
            return
        self.reactor.unregister_timer(blip.timer)
        self.counters["resumed"] += 1
        log.warning("call %s: RTP back after %.1f s: the conversation resumes", ev.call,
                    self.reactor.now() - blip.lost_at)
        if _active(blip.port) == ev.call and blip.port.media.pipe is not None:
            blip.port.media.tone(None)
        self._refresh(blip.call)
        self.state.media(True, f"RTP back on call {ev.call}")

    def _blip_over(self, call: int) -> float:
        blip = self.blips.pop(call, None)
        if blip is not None:
            silent = self.reactor.now() - blip.lost_at
            if not self._any_audio():
                self.state.media(False, f"no RTP on the cloud calls for {silent:.0f} s")
            self._lost(blip.port, call, f"no RTP for {silent:.0f} s")
        return float("inf")

    def _any_audio(self) -> bool:
        """Is some other answered cloud call still carrying audio?"""
        return any(c.handle not in self.blips and c.handle > 0 and self.cc.is_up(c.handle)
                   for c in self.cc.calls() if c.owner is not None)

    # ---- lost cloud legs ----
    def _ended(self, ev: Ev) -> bool:
        if ev.call is None:
            return False
        blip = self.blips.pop(ev.call, None)
        if blip is not None:
            self.reactor.unregister_timer(blip.timer)
        port = self.cc.port_of(ev.call)
        if port is None or port.kind != "fxo" or port.active_call() != ev.call:
            return False
        code = int(ev.data.get("code") or 0)
        if port.state.name == "CONNECTED":
            # An ENDED that arrived was signalled: the agent's own hang-up is not a loss,
            # even in SURVIVABLE (the WAN may be back, failback still waiting).
            lost = code in NETWORK_CODES or blip is not None
        else:  # OFFERED: a reachable cloud that declines (503 busy here) keeps its say
            lost = (port.state.name == "OFFERED" and self.has_cloud
                    and (code == 408 or not self.state.cloud_up))
        if not lost:
            return False
        self.cc.track(ev)  # the cloud leg's CDR closes as the bridge reported it
        self.cc.forget(ev.call)
        self._rescue(port, ev.call, f"cloud leg ended ({code} {ev.data.get('reason', '')})")
        return True

    def _lost(self, port: Any, call: int, why: str) -> None:
        if self.cc.owner_of(call) is None:
            return
        kind = getattr(port, "kind", "")
        self.cc.hangup(call)
        if kind == "fxo" and _active(port) == call and port.state.name in ("CONNECTED", "OFFERED"):
            self._rescue(port, call, why)
        elif kind in ("fxs", "headset") and call in port.calls():
            self.counters["phones_reordered"] += 1
            port.handle(Ev(api.ENDED, call, {"code": 408, "reason": why}))

    def _rescue(self, fxo: Port, old: int, why: str) -> None:
        """Keep the PSTN caller: the FXO port swaps `old` for a local leg to a Fallback."""
        fb = self._fallback(fxo, why, "rescued")
        self.cc.open_leg(fb.a, "inbound", fxo.name, fb.ani, fb.dnis)
        fxo.replace_call(old, fb.a)
        self.cc.answer(fb.b)  # OFFERED: the port seizes the line on ANSWERED
        fb.start()

    def local_inbound(self, fxo: Caller) -> int:
        """A PSTN call in SURVIVABLE: straight to the local fallback; returns `a`."""
        fb = self._fallback(fxo, "the cloud is unreachable (SURVIVABLE)", "local_inbound")
        self.reactor.call_soon(self._answer_local, fb)
        return fb.a

    def _fallback(self, fxo: Caller, why: str, counter: str) -> Fallback:
        """A local pair: `a` held by the FXO port, `b` by a new Fallback."""
        a, b = self.cc.local_pair()
        fb = Fallback(self, fxo, a, b, why)
        self.cc.handoff(a, fxo)
        self.cc.handoff(b, fb)
        self.fallbacks.append(fb)
        self.counters[counter] += 1
        return fb

    def _answer_local(self, fb: Fallback) -> None:
        if self.cc.owner_of(fb.b) is not None:
            self.cc.answer(fb.b)
            fb.start()

    # ---- recordings (survive.record_calls; firmware/survive/recording.py) ----
    def start_recording(self, fb: Fallback) -> None:
        """Record the PSTN caller's call from now until the line is released."""
        store = self.cc.cdr
        if not self.cfg.record_calls or store is None or fb.name in self.recordings:
            return
        info = self.cc.call_info(fb.a)
        if info is None or info.uuid is None:
            return
        try:
            rec = Recording(Path(store.recordings_dir), info.uuid, fb.name, fb.ani,
                            self.reactor.clock.wall())
        except OSError as exc:
            log.error("%s: cannot record the call: %s", fb.name, exc)
            return
        self.recordings[fb.name] = rec, fb.fxo.media
        fb.fxo.media.record_to(rec)
        self.counters["recordings"] += 1

    def _port_state(self, port: str, _old: str, new: str) -> None:
        if new != "IDLE" or port not in self.recordings:
            return
        rec, media = self.recordings.pop(port)
        media.stop_recording(rec)
        try:
            rec.finish(self.cc.cdr)
        except OSError as exc:
            log.error("%s: the recording of call %s is lost: %s", port, rec.call_uuid, exc)

    def finished(self, fb: Fallback) -> None:
        if fb in self.fallbacks:
            self.fallbacks.remove(fb)

    def store_callback(self, fb: Fallback, number: str) -> str | None:
        t, waited = self.reactor.clock.wall(), round(fb.waited(), 1)
        self.callbacks.append({"ani": fb.ani, "number": number, "port": fb.name,
                               "dnis": fb.dnis, "waited_s": waited, "t": t})
        self.counters["callbacks"] += 1
        cdr, info = self.cc.cdr, self.cc.call_info(fb.a)
        if cdr is None:
            return None
        try:
            return cdr.callback_request(fb.ani, number, fb.name,
                                        call_uuid=info.uuid if info else None, t=t,
                                        dnis=fb.dnis, waited_s=waited)
        except Exception:  # noqa: BLE001 - never lose the caller over the outbox
            log.exception("callback request of %s not queued", fb.ani)
            return None

    def outage_number(self, number: str) -> str:
        strip = self.cfg.outage_strip_prefix
        if strip and number.startswith(strip):
            number = number[len(strip):]
        return self.cfg.outage_add_prefix + number

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
        for call in [c.handle for c in self.cc.calls() if c.handle > 0]:
            port = self.cc.port_of(call)
            if port is None or self.cc.is_up(call) or call not in port.calls():
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
        if first and self.state.edges and uri == self.state.edges[0].uri:
            return  # the bridge starts on the primary by itself
        log.warning("survivability: calls go through %s now", uri)
        safely(self.cc.bridge.use_edge, uri)
        for call in list(self.blips):
            self._refresh(call)

    def _refresh(self, call: int) -> None:
        safely(self.cc.bridge.refresh, call)


def _active(port: Any) -> int | None:
    """The call a port is talking on (None: not a port)."""
    active = getattr(port, "active_call", None)
    return active() if active is not None else None
