"""Call control: the port state machines, the routing between them, the cloud and the
PSTN, parked calls, transfers and CDRs.

`CallControl(reactor, doc, board, bridge, cdr=None)` builds one FSM and one PortMedia per
port (FXS lines, FXO lines, the headset), subscribes to the board's line events and to
the bridge's SipEvents, and ticks every port's media every 20 ms (firmware.media.MediaClock:
phase-locked to pjsua2's frame clock while a SIP call is up). Calls are handles:
the bridge's (positive) or the local switch's (negative, see local.py); `owner` maps
each live handle to whoever holds it (a port FSM, the parking lot, a transfer in
flight), and every SIP event is delivered to its handle's owner. FSMs act on calls only
through the methods here (`answer`, `hangup`, `hold` ...), which pick the bridge or the
local switch and keep the CDR: open on INVITE or INCOMING, answered on answer, ended with
a disposition (answered, busy, failed, no_answer, cancelled) from the SIP code.

Routing of an INCOMING from the cloud: its `line` when that is one of our ports, else
`to_number` when it is an FXS extension or the headset's, else out through a free FXO
line (the cloud dialling a PSTN number); no free line: 503. Emergency numbers dialled on
a phone always go out through a free FXO line, never to the cloud; other numbers go out
through an FXO line too while every cloud edge fails its OPTIONS pings (EDGE events).

Transfers (`join(x, y)`): two SIP legs are joined by REFER (attended when the second leg
is up, blind to its number when it is still ringing); a local leg is joined by handing
the other leg to the port at its far end (no SIGNALLING leaves the box).

Fax and modem calls: every port's media listens for modem tones both ways
(firmware/media.py); on a detection it switches itself to the passthrough profile and
tells `_passthrough`, which marks the call's record and CDR (media_mode "fax" or
"modem", with the tone in extra.passthrough), asks the bridge to move the SIP leg to
G.711 (`bridge.passthrough(call)`, where the bridge has it: PjBridge re-INVITEs) and,
for a call between two of our ports, switches the other port's media too.

Assumes the drivers are started by the caller (the gateway) and that nothing else reads
the ports' PCM: call control owns the audio now (the FXO caller-ID decoder moved here).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from cext import toneplans
from drivers.bus.pcm import FRAME, LINE_RATE
from firmware.callctl import CallControlError
from firmware.callctl.base import Ev, as_ev
from firmware.callctl.dialplan import Dialplan
from firmware.callctl.fxo import FxoPort
from firmware.callctl.fxs import FxsPort
from firmware.callctl.headset import HeadsetPort
from firmware.callctl.local import LocalSwitch
from firmware.core.config import line_country
from firmware.media import MediaClock, PortMedia
from firmware.sip import api
from firmware.survive.continuity import Continuity

log = logging.getLogger(__name__)

MEDIA_TICK_S = FRAME / LINE_RATE
TRACE_LEN = 2000  # recent FSM transitions kept for status and tests: (time, port, old, new)
DISPOSITIONS = {486: "busy", 600: "busy", 408: "no_answer", 480: "no_answer", 487: "cancelled"}


class _Tone:
    """A modem tone handed on to the other port of a local call (ModemTone's shape)."""

    def __init__(self, name: str, kind: str, disables_echo_canceller: bool) -> None:
        self.name, self.kind = name, kind
        self.disables_echo_canceller = disables_echo_canceller


class ParkingLot:
    """Holds parked calls by slot; a parked caller who hangs up frees the slot."""

    def __init__(self, cc) -> None:
        self.cc = cc
        self.slots: dict[str, int] = {}

    def handle(self, ev: Ev) -> None:
        if ev.kind == api.ENDED:
            for slot, call in list(self.slots.items()):
                if call == ev.call:
                    log.info("parked call in slot %s hung up", slot)
                    del self.slots[slot]
                    self.cc.forget(call)


class TransferWatch:
    """Legs handed to the cloud by REFER: hung up once the transfer is done. If the
    REFER fails, the consult leg is hung up and the held caller rings the transferring
    phone again (a customer call is never dropped for a failed transfer)."""

    def __init__(self, cc, port, held: int, other: int) -> None:
        self.cc, self.port, self.held, self.other = cc, port, held, other

    def handle(self, ev: Ev) -> None:
        if ev.kind == api.TRANSFER_DONE and ev.data.get("ok"):
            log.info("transfer of %s done", self.held)
            self._hang_up(self.held, self.other)
        elif ev.kind == api.TRANSFER_DONE:
            log.warning("transfer of %s failed (%s): ringing %s back", self.held,
                        ev.data.get("code"), self.port.name)
            self._hang_up(self.other)
            self._give_back()
        elif ev.kind == api.ENDED:
            self.cc.forget(ev.call)

    def _hang_up(self, *legs: int) -> None:
        for leg in legs:
            if self.cc.owner.get(leg) is self:
                self.cc.hangup(leg)

    def _give_back(self) -> None:
        if self.cc.owner.get(self.held) is not self:
            return
        if hasattr(self.port, "recall") and self.port.free():
            self.cc.take(self.port, self.held)
            self.port.recall(self.held)
        else:
            self.cc.hangup(self.held)


class CallControl:
    def __init__(self, reactor, doc: dict, board, bridge, cdr=None) -> None:
        self.reactor, self.doc, self.board, self.bridge, self.cdr = reactor, doc, board, bridge, cdr
        self.local = LocalSwitch(self)
        self.parking = ParkingLot(self)
        self.owner: dict[int, Any] = {}
        self.ports: dict[str, Any] = {}
        self.trace: deque[tuple[float, str, str, str]] = deque(maxlen=TRACE_LEN)
        self.sip_status: dict[str, Any] = {"registrations": {}, "edges": {}}
        self._records: dict[int, dict] = {}
        self._listeners: list[Callable[[str, str, str], None]] = []
        self._cid_listeners: list[Callable[[str, dict], None]] = []
        self._clock: MediaClock | None = None
        self._timer = None
        self._carrying: dict[str, int] = {}  # port -> the call its media carries now
        self._build_ports()
        self.survive = Continuity(self)  # survivability: firmware/survive/continuity.py

    # ---- building ----
    def _plan(self, name: str) -> toneplans.CountryPlan:
        return toneplans.plan(line_country(self.doc, name) if name in self.doc["lines"]
                              else self.doc.get("country", {}).get("code", "us"))

    def _build_ports(self) -> None:
        for name, line in self.doc["lines"].items():
            pcm, driver = self.board.pcm.get(name), self.board.drivers.get(name)
            if pcm is None or driver is None:
                log.warning("%s: no driver or PCM; the port takes no calls", name)
                continue
            plan = self._plan(name)
            media = PortMedia(name, pcm, plan, **{  # the line's DTMF twist limits
                k: line[k] for k in ("dtmf_row_above_column_max_db",
                                     "dtmf_column_above_row_max_db") if k in line})
            media.on_passthrough = self._passthrough
            cls = FxsPort if line["kind"] == "fxs" else FxoPort
            fsm = cls(self, name, media, driver, line, plan)
            if line["kind"] == "fxs":
                fsm.dialplan = Dialplan(self.doc, plan.code)
            self.ports[name] = fsm
        headset = getattr(self.board, "headset_driver", None)
        if headset is not None:
            media = PortMedia("headset", headset, self._plan("headset"), echo=False, dtmf=False,
                              modem=False)
            self.ports["headset"] = HeadsetPort(self, "headset", media, headset)
        self.dialplan = Dialplan(self.doc, self.doc.get("country", {}).get("code", "us"))

    def reconfigure(self) -> None:
        """Re-read the live settings (firmware/core/liveconfig.py) from the document the
        core has just updated in place. Calls in progress keep what they started with."""
        for fsm in self.ports.values():
            fsm.read_settings(self.doc)
            if fsm.kind == "fxs":
                fsm.dialplan = Dialplan(self.doc, fsm.plan.code)
        self.dialplan = Dialplan(self.doc, self.doc.get("country", {}).get("code", "us"))
        self.survive.read_settings(self.doc)

    # ---- life cycle ----
    def start(self) -> None:
        self.board.subscribe(self._on_line)
        self.bridge.start(self._on_sip)
        self._clock = MediaClock(self.reactor, self._medias, self._media_failed)
        self._clock.start()
        self._timer = self._clock.timer  # the reactor timer (bench/bench_calls.py wraps it)

    def stop(self) -> None:
        for call in list(self.owner):
            self.hangup(call)
        if self._clock is not None:
            self._clock.stop()
            self._clock = self._timer = None
        for fsm in self.ports.values():
            fsm.media.stop()
        self.survive.stop()
        self.bridge.stop()

    def subscribe(self, fn: Callable[[str, str, str], None]) -> None:
        """fn(port, old state, new state) on every FSM transition (CTI events later)."""
        self._listeners.append(fn)

    def subscribe_caller_id(self, fn: Callable[[str, dict], None]) -> None:
        """fn(port, message) for every caller ID decoded on a PSTN line."""
        self._cid_listeners.append(fn)

    def caller_id(self, port: str, message: dict) -> None:
        for fn in list(self._cid_listeners):
            fn(port, dict(message))

    def record(self, port: str, old: str, new: str) -> None:
        self.trace.append((self.reactor.now(), port, old, new))
        for fn in list(self._listeners):
            fn(port, old, new)

    def status(self) -> dict:
        """Per port: state, calls, live ERLE, registration (per-line accounts); parked
        calls; the SIP health the bridge reported."""
        ports = {n: p.status() for n, p in self.ports.items()}
        for reg in self.sip_status["registrations"].values():
            if reg.get("line") in ports:
                ports[reg["line"]]["registered"] = bool(reg.get("ok"))
        return {"ports": ports, "parked": dict(self.parking.slots), "sip": self.sip_status,
                "cloud_up": self.cloud_up(), "survivability": self.survive.status()}

    # ---- the control API ----
    def _headset(self):
        port = self.ports.get("headset")
        if port is None:
            raise CallControlError("headset: not configured; set board.headset.enabled = true")
        return port

    def headset_answer(self) -> None:
        self._headset().answer()

    def headset_hangup(self) -> None:
        self._headset().hangup()

    def headset_mute(self, on: bool) -> None:
        self._headset().mute(on)

    def dial(self, port: str, digits: str) -> None:
        """Dial from the headset (a call when idle, DTMF in a call)."""
        if port != "headset":
            raise CallControlError(f"{port}: only the headset dials from the control API; "
                                   "phones dial themselves")
        self._headset().dial(digits)

    # ---- events in ----
    def _medias(self) -> list[PortMedia]:
        return [fsm.media for fsm in self.ports.values()]

    def _media_failed(self, media: PortMedia) -> None:
        log.exception("%s: media tick failed", media.name)

    def _on_line(self, event) -> None:
        fsm = self.ports.get(event.port)
        if fsm is not None:
            fsm.handle(as_ev(event))

    def _on_sip(self, event: api.SipEvent) -> None:
        self.deliver(as_ev(event))

    def deliver(self, ev: Ev) -> None:
        """A call event to whoever holds the call (INCOMING: routed first)."""
        if self.survive.on_event(ev):  # blips, lost cloud legs, edge health
            return
        if ev.kind == api.INCOMING and ev.call not in self.owner:
            self._incoming(ev)
            return
        if ev.kind in (api.REGISTRATION, api.EDGE):
            self._sip_health(ev)
            return
        self._bookkeep(ev)
        owner = self.owner.get(ev.call)
        if owner is None:
            log.debug("event %s for call %s nobody holds", ev.kind, ev.call)
            return
        if ev.kind == api.ENDED:
            self.owner.pop(ev.call, None)
        owner.handle(ev)

    def _sip_health(self, ev: Ev) -> None:
        if ev.kind == api.REGISTRATION:
            self.sip_status["registrations"][ev.data.get("account", "")] = dict(ev.data)
            if not ev.data.get("ok"):
                log.warning("SIP registration of %s failed: %s %s", ev.data.get("account"),
                            ev.data.get("code"), ev.data.get("reason"))
        else:
            self.sip_status["edges"][ev.data.get("edge", "")] = dict(ev.data)

    def _incoming(self, ev: Ev) -> None:
        if self.local.is_local(ev.call):  # a local offer: its owner was set by the caller
            return
        target = self._route_incoming(ev.data)
        if target is None:
            log.warning("incoming call to %s: no free FXO line; 503", ev.data.get("to_number"))
            self._safely(self.bridge.reject, ev.call, 503)
            return
        direction = "outbound" if target.kind == "fxo" else "inbound"
        self._open(ev.call, direction, target.name, ev.data.get("from_number") or "",
                   ev.data.get("to_number") or "", ev.data.get("call_id"), placed_by_box=False)
        self.owner[ev.call] = target
        target.handle(ev)

    def _route_incoming(self, data: dict):
        line, to = data.get("line"), data.get("to_number") or ""
        if line in self.ports and self.ports[line].kind != "fxo":
            return self.ports[line]
        port = self.dialplan.extension_port(to)
        if port in self.ports:
            return self.ports[port]
        if line in self.ports and self.ports[line].free():
            return self.ports[line]
        return self.free_fxo()

    def free_fxo(self):
        for fsm in self.ports.values():
            if fsm.kind == "fxo" and fsm.free():
                return fsm
        return None

    # ---- placing calls (called by the FSMs) ----
    def call_out(self, fsm, number: str, *, from_number: str | None, from_name: str | None,
                 headers: dict[str, str] | None = None, direction: str = "outbound") -> int | None:
        """An INVITE to the cloud for `fsm`; None when the bridge refused at once.
        In SURVIVABLE a PSTN caller goes to the local fallback instead, and an external
        call (the headset's) out through a free FXO line."""
        if (not self.cloud_up() and fsm.kind == "fxo" and direction == "inbound"
                and self.survive.has_cloud):
            call = self.survive.local_inbound(fsm)
            self._open(call, direction, fsm.name, from_number or "", number, None)
            return call
        if not self.cloud_up() and direction == "outbound" and fsm.kind != "fallback":
            return self.pstn_call(fsm, number, from_number or "")
        try:
            call = self.bridge.make_call(fsm.name, number, from_number=from_number,
                                         from_name=from_name, headers=headers)
        except Exception as exc:  # noqa: BLE001 - the bridge down is a failed call, not a crash
            log.warning("%s: call to %s not placed: %s", fsm.name, number, exc)
            return None
        self.owner[call] = fsm
        self._open(call, direction, fsm.name, from_number or "", number, None)
        return call

    def local_call(self, fsm, port: str, number: str, *, from_number: str = "",
                   from_name: str = "", direction: str = "local") -> int | None:
        """Ring one of our own ports; returns the caller's handle (None: port unusable)."""
        target = self.ports.get(port)
        if target is None or target is fsm:
            return None
        a, b = self.local.pair()
        self.owner[a], self.owner[b] = fsm, target
        self._open(a, direction, fsm.name, from_number, number, None)
        self.local.offer(b, {"from_number": from_number, "from_name": from_name,
                             "to_number": number, "line": port, "headers": {}})
        return a

    def cloud_up(self) -> bool:
        """False in SURVIVABLE: every cloud edge fails its OPTIONS pings (or lost its
        registration, or its calls their RTP), and stays False until one answered
        steadily for survive.failback_stable_s (firmware/survive/state.py)."""
        return self.survive.cloud_up

    def pstn_call(self, fsm, number: str, from_number: str = "") -> int | None:
        """A local phone's call out through a free FXO line (the cloud is down)."""
        fxo = self.free_fxo()
        if fxo is None:
            return None
        number = self.survive.outage_number(number)
        log.warning("%s: cloud down: %s goes out of %s", fsm.name, number, fxo.name)
        return self.local_call(fsm, fxo.name, number, from_number=from_number,
                               direction="outbound")

    def emergency_call(self, fsm, number: str, from_number: str = "") -> int | None:
        """Out through a free FXO line, whatever the cloud's state; None: no free line."""
        fxo = self.free_fxo()
        if fxo is None:
            log.error("%s: emergency call %s: no free FXO line", fsm.name, number)
            return None
        log.warning("%s: emergency call %s out of %s", fsm.name, number, fxo.name)
        return self.local_call(fsm, fxo.name, number, from_number=from_number,
                               direction="emergency")

    # ---- acting on calls ----
    def is_up(self, call: int) -> bool:
        return bool(self._records.get(call, {}).get("answered")) or call in self.local.up

    def ringing(self, call: int) -> None:
        self._cmd("ringing", call)

    def answer(self, call: int) -> None:
        self._cmd("answer", call)
        self._answered(call)

    def pick_up(self, call: int) -> None:
        """Answer a ringing call, or take back an established one (recall, pickup)."""
        if self.is_up(call):
            self.unhold(call)
        else:
            self.answer(call)

    def reject(self, call: int, code: int = 486) -> None:
        self._cmd("reject", call, code)
        self._close(call, "busy" if code in (486, 600) else "rejected")
        self.forget(call)

    def hangup(self, call: int) -> None:
        self._cmd("hangup", call)
        self._close(call, "answered" if self.is_up(call) else "cancelled")
        self.forget(call)

    def hold(self, call: int) -> None:
        self._cmd("hold", call)

    def unhold(self, call: int) -> None:
        self._cmd("unhold", call)

    def send_dtmf(self, call: int, digits: str) -> None:
        self._cmd("send_dtmf", call, digits)

    def media(self, call: int, rate: int = 8000) -> api.MediaPipe | None:
        if self.local.is_local(call):
            return self.local.media(call)
        try:
            return self.bridge.media(call, rate=rate)
        except Exception as exc:  # noqa: BLE001
            log.warning("call %d: no media: %s", call, exc)
            return None

    def connect(self, media, call: int | None, rate: int = 8000) -> None:
        """Put a call's audio on a port (no echo canceller between two of our ports);
        `rate` 16000 asks the bridge for wideband frames (the headset)."""
        if call is None:
            self._carrying.pop(media.name, None)
            media.connect(None)
            return
        self._carrying[media.name] = call
        media.connect(self.media(call, rate), cancel_echo=not self.local.is_local(call))

    # ---- fax / modem passthrough ----
    def _passthrough(self, media, info: dict) -> None:
        """A port's media switched to (or within) the passthrough profile: mark the
        call, move its SIP leg to G.711, and switch the other port of a local call."""
        call = self._carrying.get(media.name)
        if call is None or media.pipe is None:
            return
        self._mark_mode(call, info)
        if self.local.is_local(call):
            self._passthrough_peer(call, info)
            return
        switch = getattr(self.bridge, "passthrough", None)
        if switch is not None:
            self._safely(switch, call)

    def _passthrough_peer(self, call: int, info: dict) -> None:
        far = self.local.peer.get(call)
        port = self.owner.get(far)
        media = getattr(port, "media", None)
        if media is None or self._carrying.get(media.name) != far:
            return
        tone = _Tone(info["tone"], info["mode"], bool(info.get("disabling_tone")))
        media.passthrough(tone, "peer")

    def _mark_mode(self, call: int, info: dict) -> None:
        rec = self._records.get(call)
        if rec is None or rec.get("media_mode") == info["mode"]:
            return
        rec["media_mode"] = info["mode"]
        if self.cdr is not None and rec["uuid"]:
            uuid, cdr = rec["uuid"], self.cdr
            extra = {"passthrough": {"tone": info.get("tone"), "side": info.get("side"),
                                     "at": round(self.reactor.clock.wall(), 3),
                                     "echo_canceller": info.get("echo_canceller")}}
            self._cdr_safely(lambda: cdr.update(uuid, media_mode=info["mode"], extra=extra))

    def media_mode(self, call: int) -> str:
        """"voice", or "fax" / "modem" once the call went to passthrough."""
        return self._records.get(call, {}).get("media_mode", "voice")

    def forget(self, call: int | None) -> None:
        if call is not None:
            self.owner.pop(call, None)

    def take(self, fsm, call: int) -> None:
        """`fsm` holds `call` from now on (pickup, transfer to a port)."""
        self.owner[call] = fsm

    def _cmd(self, name: str, call: int, *args) -> None:
        target = self.local if self.local.is_local(call) else self.bridge
        self._safely(getattr(target, name), call, *args)

    @staticmethod
    def _safely(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a SIP error must not take call control down
            log.exception("%s%s failed", getattr(fn, "__name__", fn), args)

    # ---- park and pickup ----
    def park(self, call: int, slot: str) -> bool:
        if slot in self.parking.slots:
            return False
        self.parking.slots[slot] = call
        self.owner[call] = self.parking
        log.info("call %d parked in slot %s", call, slot)
        return True

    def pickup(self, fsm, slot: str) -> int | None:
        call = self.parking.slots.pop(slot, None)
        if call is not None:
            self.owner[call] = fsm
            self.unhold(call)
        return call

    # ---- transfer ----
    def join(self, fsm, held: int, other: int, target: str = "") -> None:
        """Connect the far ends of two of `fsm`'s legs and leave (hook-on transfer)."""
        held_local, other_local = self.local.is_local(held), self.local.is_local(other)
        if not held_local and not other_local:
            self._refer(fsm, held, other, target)
            return
        if held_local and other_local:
            self._join_local_pair(held, other)
            return
        local, remote = (held, other) if held_local else (other, held)
        self._hand_over(local, remote)

    def _refer(self, fsm, held: int, other: int, target: str) -> None:
        watch = TransferWatch(self, fsm, held, other)
        self.owner[held] = self.owner[other] = watch
        if self.is_up(other):
            self._safely(self.bridge.transfer_attended, held, other)
        else:
            self._safely(self.bridge.transfer, held, target)
            self.hangup(other)

    def _hand_over(self, local: int, remote: int) -> None:
        """The port at the far end of `local` takes `remote` in its place."""
        far = self.local.peer.get(local)
        port = self.owner.get(far)
        self.local.forget(local)
        self.forget(local)
        self.forget(far)
        if port is None:
            self.hangup(remote)
            return
        self.owner[remote] = port
        if self.is_up(remote):
            self.unhold(remote)
        port.replace_call(far, remote)

    def _join_local_pair(self, x: int, y: int) -> None:
        far_x, far_y = self.local.peer.get(x), self.local.peer.get(y)
        px, py = self.owner.get(far_x), self.owner.get(far_y)
        up = far_y in self.local.up
        for h in (x, y):
            self.local.forget(h)
        for h in (x, y, far_x, far_y):
            self.forget(h)
        if px is None or py is None:
            for port, h in ((px, far_x), (py, far_y)):
                if port is not None:
                    port.handle(Ev(api.ENDED, h, {"code": 0, "reason": "transfer failed"}))
            return
        a, b = self.local.established_pair() if up else self.local.pair()
        self.owner[a], self.owner[b] = px, py
        px.replace_call(far_x, a)
        py.replace_call(far_y, b)

    # ---- CDRs ----
    def open_leg(self, call: int, direction: str, port: str, ani: str, dnis: str) -> None:
        """A CDR for a leg the box made up (a PSTN caller kept locally): answered now."""
        self._open(call, direction, port, ani, dnis, None)
        self._answered(call)

    def retire(self, call: int) -> None:
        """Close a leg's CDR and forget it without signalling (its port moved on)."""
        self._close(call, "answered")
        self.forget(call)

    def record_uuid(self, call: int) -> str | None:
        return self._records.get(call, {}).get("uuid")

    def _open(self, call: int, direction: str, port: str, ani: str, dnis: str,
              call_id: str | None, placed_by_box: bool = True) -> None:
        rec = {"direction": direction, "answered": False, "uuid": None,
               "placed_by_box": placed_by_box, "media_mode": "voice"}
        self._records[call] = rec
        if self.cdr is None:
            return
        try:
            rec["uuid"] = self.cdr.open_call(direction, port, ani, dnis, sip_call_id=call_id,
                                             started=self.reactor.clock.wall())
        except Exception:  # noqa: BLE001 - a CDR problem must never drop a call
            log.exception("CDR open failed for call %d", call)

    def _answered(self, call: int) -> None:
        rec = self._records.get(call)
        if rec is None or rec["answered"]:
            return
        rec["answered"] = True
        if self.cdr is not None and rec["uuid"]:
            self._cdr_safely(self.cdr.answered, rec["uuid"], self.reactor.clock.wall())

    def _note_call_id(self, call: int, call_id: str | None) -> None:
        """The SIP Call-ID of a call the box placed is known once it is answered."""
        rec = self._records.get(call)
        if call_id and rec is not None and rec["uuid"] and self.cdr is not None:
            uuid, cdr = rec["uuid"], self.cdr
            self._cdr_safely(lambda: cdr.update(uuid, sip_call_id=call_id))

    def _close(self, call: int, disposition: str, quality: dict | None = None) -> None:
        rec = self._records.pop(call, None)
        if rec is None:
            return
        if rec["answered"]:
            disposition = "answered"
        if self.cdr is not None and rec["uuid"]:
            if quality is None and not self.local.is_local(call):
                quality = self._quality(call)
            self._cdr_safely(self.cdr.ended, rec["uuid"], self.reactor.clock.wall(),
                             disposition, quality)

    def _quality(self, call: int) -> dict | None:
        try:
            return self.bridge.quality(call)
        except Exception:  # noqa: BLE001
            return None

    def _cdr_safely(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            log.exception("CDR update failed")

    def _bookkeep(self, ev: Ev) -> None:
        if ev.kind == api.ANSWERED:
            self._answered(ev.call)
            self._note_call_id(ev.call, ev.data.get("call_id"))
        elif ev.kind == api.ENDED and ev.call in self._records:
            code = int(ev.data.get("code") or 0)
            self._close(ev.call, self._disposition(self._records[ev.call], code),
                        ev.data.get("quality"))

    @staticmethod
    def _disposition(rec: dict, code: int) -> str:
        """How a call the far end (or the network) ended went, from the SIP code."""
        if code in DISPOSITIONS:
            return DISPOSITIONS[code]
        if code == 0 and not rec["placed_by_box"]:
            return "cancelled"  # the caller gave up before we answered
        return "failed"
