"""Call control: routes calls between the port FSMs, the local switch (negative handles),
the cloud (a Bridge: positive handles) and the PSTN, and is the one owner of the table of
calls (a CallInfo per handle: owner, CDR record, the port carrying it) and of the port
book. Everything else uses the public surface below and the typed events on `events`.
Every call end publishes HUNG_UP, then CALL_QUALITY (network and DSP figures)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple, TypeGuard

from cext import toneplans
from drivers.board import Board
from firmware.callctl import CallControlError
from firmware.callctl.base import Ev, Port, as_ev, safely
from firmware.callctl.dialplan import Dialplan
from firmware.callctl.fxo import FxoPort
from firmware.callctl.fxs import FxsPort
from firmware.callctl.headset import HeadsetPort
from firmware.callctl.local import LocalSwitch
from firmware.callctl.model import Caller, CallInfo, CallOwner, PortBook, PortLease, PortState
from firmware.cdr import CdrStore
from firmware.core.config import Config
from firmware.events import CoreEvent, EventBus, EventKind
from firmware.media import MediaClock, PortMedia
from firmware.quality import CallDsp, rated
from firmware.sip import api
from firmware.survive.continuity import Continuity
from foundation.events import LineEvent
from foundation.reactor import Reactor

log = logging.getLogger(__name__)

TRACE_LEN = 2000  # recent FSM transitions kept for status and tests: (time, port, old, new)
DISPOSITIONS = {486: "busy", 600: "busy", 408: "no_answer", 480: "no_answer", 487: "cancelled"}
RELAYED = ("rfc4733", "info")  # DTMF methods of the cloud (a local call's are "local")


class _Tone(NamedTuple):  # a modem tone handed on to the other port of a local call
    name: str
    kind: str
    disables_echo_canceller: bool


class ParkingLot:
    """Holds parked calls by slot; a parked caller who hangs up frees the slot."""

    def __init__(self, cc: CallControl) -> None:
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

    def __init__(self, cc: CallControl, port: Port, held: int, other: int) -> None:
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
            if self.cc.owner_of(leg) is self:
                self.cc.hangup(leg)

    def _give_back(self) -> None:
        if self.cc.owner_of(self.held) is not self:
            return
        if self.port.kind == "fxs" and self.port.free():
            self.cc.handoff(self.held, self.port)
            self.port.recall(self.held)
        else:
            self.cc.hangup(self.held)


class CallControl:
    def __init__(self, reactor: Reactor, cfg: Config, board: Board,
                 bridge: api.Bridge, cdr: CdrStore | None = None, book: PortBook | None = None,
                 events: EventBus | None = None) -> None:
        self.cfg = cfg
        self.reactor, self.board, self.bridge, self.cdr = reactor, board, bridge, cdr
        self.events = events or EventBus()
        self.book = book or PortBook(self.cfg.lines, board.headset_driver is not None)
        self.book.publish_to(self.events, reactor.clock.wall)
        self.local = LocalSwitch(reactor, self.deliver)
        self.parking = ParkingLot(self)
        self.ports: dict[str, Port] = {}
        self.trace: deque[tuple[float, str, str, str]] = deque(maxlen=TRACE_LEN)
        self.sip_status: dict[str, Any] = {"registrations": {}, "edges": {}}
        self._calls: dict[int, CallInfo] = {}
        self._leases: dict[str, PortLease] = {}
        self._listeners: list[Callable[[str, str, str], None]] = []
        self.media_clock: MediaClock | None = None  # while started (the bench wraps its timer)
        self._build_ports()
        self.survive = Continuity(self, reactor)

    # ---- building ----
    def _plan(self, name: str) -> toneplans.CountryPlan:
        line = self.cfg.lines.get(name)
        return toneplans.plan(line.effective_country if line else self.cfg.country.code)

    def _build_ports(self) -> None:
        for name, line in self.cfg.lines.items():
            pcm, driver = self.board.pcm.get(name), self.board.drivers.get(name)
            if pcm is None or driver is None:
                log.warning("%s: no driver or PCM; the port takes no calls", name)
                continue
            plan = self._plan(name)
            media = PortMedia(name, pcm, plan,  # the line's DTMF twist limits
                              dtmf_row_above_column_max_db=line.dtmf_row_above_column_max_db,
                              dtmf_column_above_row_max_db=line.dtmf_column_above_row_max_db)
            media.on_passthrough = self._passthrough
            cls = FxsPort if line.kind == "fxs" else FxoPort
            self.ports[name] = cls(self, self.reactor, name, media, driver, plan)  # type: ignore[arg-type]  # the line's kind picks its driver
        headset = self.board.headset_driver
        if headset is not None:
            media = PortMedia("headset", headset, self._plan("headset"), echo=False, dtmf=False,
                              modem=False)
            self.ports["headset"] = HeadsetPort(self, self.reactor, "headset", media, headset)
        self.dialplan = Dialplan(self.cfg)

    def reconfigure(self, cfg: Config) -> None:
        """Take the live settings of `cfg`; calls in progress keep what they started with."""
        self.cfg = cfg
        for fsm in self.ports.values():
            fsm.read_settings(cfg)
        self.dialplan = Dialplan(cfg)
        self.survive.read_settings(cfg)

    # ---- life cycle ----
    def start(self) -> None:
        headset = self.board.headset_driver
        if (headset is not None and headset.present
                and self.book.ports["headset"].state is PortState.ABSENT):
            self.book.apply(LineEvent("headset", "headset_plugged", self.reactor.now(),
                                      {"rate": headset.rate}))
        self.board.subscribe(self._on_line)
        self.bridge.start(self._on_sip)
        self.media_clock = MediaClock(
            self.reactor, lambda: [fsm.media for fsm in self.ports.values()],
            lambda media: log.exception("%s: media tick failed", media.name))
        self.media_clock.start()

    def stop(self) -> None:
        for call in [c.handle for c in self.calls() if c.owner is not None]:
            self.hangup(call)
        if self.media_clock is not None:
            self.media_clock.stop()
            self.media_clock = None
        for fsm in self.ports.values():
            fsm.media.stop()
        self.survive.stop()
        self.bridge.stop()

    def subscribe(self, fn: Callable[[str, str, str], None]) -> None:
        self._listeners.append(fn)  # fn(port, old state, new state) on every FSM move

    def record(self, port: str, old: str, new: str) -> None:
        self.trace.append((self.reactor.now(), port, old, new))
        self.book.call_moved(port, old, new, self.reactor.now())
        for fn in list(self._listeners):
            fn(port, old, new)

    def caller_id(self, port: str, message: dict[str, Any]) -> None:
        self.book.caller_id(port, message, self.reactor.now())

    def status(self) -> dict[str, Any]:
        ports = {n: p.status() for n, p in self.ports.items()}
        for reg in self.sip_status["registrations"].values():
            if reg.get("line") in ports:
                ports[reg["line"]]["registered"] = bool(reg.get("ok"))
        return {"ports": ports, "parked": dict(self.parking.slots), "sip": self.sip_status,
                "cloud_up": self.cloud_up(), "survivability": self.survive.status()}

    # ---- the public surface ----
    def calls(self) -> list[CallInfo]:
        return list(self._calls.values())

    def call_info(self, handle: int) -> CallInfo | None:
        return self._calls.get(handle)

    def media_of(self, port: str) -> PortMedia:
        """The port's media (read-only use: a tone over an off-hook phone's dial tone)."""
        return self.ports[port].media

    def ports_of_kind(self, kind: str) -> list[str]:
        return [name for name, fsm in self.ports.items() if fsm.kind == kind]

    def local_pair(self) -> tuple[int, int]:
        """A new local call's two handles (joined audio); nobody holds them yet."""
        return self.local.pair()

    def peer_of(self, call: int) -> int | None:
        return self.local.peer.get(call)

    def splice(self, x: int, y: int) -> None:
        """Local legs x and y talk to each other from now on (their old peers dropped)."""
        self.local.splice(x, y)

    def drop_local(self, call: int) -> None:
        """Drop a local pair silently (its ports moved on)."""
        self.local.forget(call)

    def is_local(self, call: int | None) -> bool:
        return self.local.is_local(call)

    def port_states(self) -> dict[str, PortState]:
        return self.book.states()

    def lease_port(self, name: str, purpose: str) -> PortLease:
        """Take an idle port out of service for calls (a diagnostic, a line test)."""
        fsm = self.ports.get(name)
        if fsm is None:
            raise CallControlError(f"{name}: call control has no such port; ports: "
                                   f"{', '.join(self.ports) or 'none'}")
        if name in self._leases:
            raise CallControlError(f"{name}: busy ({self._leases[name].purpose}); try again "
                                   "when it is done")
        if fsm.state is not next(iter(type(fsm.state))):
            raise CallControlError(f"{name}: busy ({fsm.state.value}); try again when the "
                                   "port is idle")
        lease = PortLease(name, fsm.kind, fsm.media, getattr(fsm, "driver", None), purpose)
        self._leases[name] = lease
        return lease

    def release(self, lease: PortLease) -> None:
        if self._leases.get(lease.name) is lease:
            del self._leases[lease.name]

    def usable(self, fsm: Port) -> bool:  # free for a new call and not leased
        return fsm.name not in self._leases and fsm.free()

    def handoff(self, call: int, to: CallOwner) -> None:
        """`to` holds `call` from now on (pickup, transfer, a fallback)."""
        self._put(call, owner=to)

    def owner_of(self, call: int | None) -> CallOwner | None:
        info = self._calls.get(call) if call is not None else None
        return info.owner if info is not None else None

    def forget(self, call: int | None) -> None:
        if call is not None and call in self._calls:
            self._put(call, owner=None)

    def _put(self, call: int, **changes: Any) -> None:
        info = replace(self._calls.get(call) or CallInfo(call), **changes)
        if info.owner is None and not info.opened:
            self._calls.pop(call, None)
        else:
            self._calls[call] = info

    # ---- the control API ----
    def _headset(self) -> HeadsetPort:
        port = self.ports.get("headset")
        if not isinstance(port, HeadsetPort):
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
    def _on_line(self, event: LineEvent) -> None:
        self.book.apply(event)
        fsm = self.ports.get(event.port)
        if fsm is not None:
            fsm.handle(as_ev(event))

    def _on_sip(self, event: api.SipEvent) -> None:
        self.deliver(as_ev(event))

    def deliver(self, ev: Ev) -> None:
        """A call event to whoever holds the call (INCOMING: routed first)."""
        if self.survive.on_event(ev):  # blips, lost cloud legs, edge health
            return
        if ev.kind == api.INCOMING and self.owner_of(ev.call) is None:
            self._incoming(ev)
            return
        if ev.kind in (api.REGISTRATION, api.EDGE):
            self._sip_health(ev)
            return
        self.track(ev)
        owner = self.owner_of(ev.call)
        if owner is None:
            log.debug("event %s for call %s nobody holds", ev.kind, ev.call)
            return
        if ev.kind == api.ENDED:
            self.forget(ev.call)
        owner.handle(ev)

    def _sip_health(self, ev: Ev) -> None:
        if ev.kind == api.REGISTRATION:
            self.sip_status["registrations"][ev.data.get("account", "")] = dict(ev.data)
            self._publish(EventKind.REGISTRATION, data={
                k: ev.data.get(k) for k in ("account", "ok", "code")})
            if not ev.data.get("ok"):
                log.warning("SIP registration of %s failed: %s %s", ev.data.get("account"),
                            ev.data.get("code"), ev.data.get("reason"))
        else:
            self.sip_status["edges"][ev.data.get("edge", "")] = dict(ev.data)

    def _incoming(self, ev: Ev) -> None:
        if ev.call is None or self.local.is_local(ev.call):  # a local offer: owner set
            return
        target = self._route_incoming(ev.data)
        if target is None:
            log.warning("incoming call to %s: no free FXO line; 503", ev.data.get("to_number"))
            safely(self.bridge.reject, ev.call, 503)
            return
        direction = "outbound" if target.kind == "fxo" else "inbound"
        self.handoff(ev.call, target)
        self._open(ev.call, direction, target.name, ev.data.get("from_number") or "",
                   ev.data.get("to_number") or "", ev.data.get("call_id"), placed_by_box=False)
        target.handle(ev)

    def _route_incoming(self, data: dict[str, Any]) -> Port | None:
        line, to = data.get("line"), data.get("to_number") or ""
        if line in self.ports and self.ports[line].kind != "fxo":
            return self.ports[line]
        port = self.dialplan.extension_port(to)
        if port in self.ports:
            return self.ports[port]
        if line in self.ports and self.usable(self.ports[line]):
            return self.ports[line]
        return self.free_fxo()

    def free_fxo(self) -> Port | None:
        return next((p for p in self.ports.values() if p.kind == "fxo" and self.usable(p)), None)

    # ---- placing calls (called by the FSMs) ----
    def call_out(self, fsm: Caller, number: str, *, from_number: str | None,
                 from_name: str | None, headers: dict[str, str] | None = None,
                 direction: str = "outbound") -> int | None:
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
        self.handoff(call, fsm)
        self._open(call, direction, fsm.name, from_number or "", number, None)
        return call

    def local_call(self, fsm: Caller, port: str, number: str, *, from_number: str = "",
                   from_name: str = "", direction: str = "local") -> int | None:
        """Ring one of our own ports; returns the caller's handle (None: port unusable)."""
        target = self.ports.get(port)
        if target is None or target is fsm:
            return None
        a = self._ring(fsm, target, {"from_number": from_number, "from_name": from_name,
                                     "to_number": number})
        self._open(a, direction, fsm.name, from_number, number, None)
        return a

    def ring_port(self, owner: CallOwner, port: str, caller: dict[str, Any]) -> int | None:
        """Ring an idle `port` for `owner` (no CDR for owner's leg); `caller` has
        from_number, from_name, to_number. Returns owner's handle; None: port unusable."""
        fsm = self.ports.get(port)
        return self._ring(owner, fsm, caller) if fsm and self.usable(fsm) else None

    def _ring(self, owner: CallOwner, target: Port, caller: dict[str, Any]) -> int:
        a, b = self.local.pair()
        self.handoff(a, owner)
        self.handoff(b, target)
        self.local.offer(b, {**caller, "line": target.name, "headers": {}})
        return a

    def cloud_up(self) -> bool:
        return self.survive.state.cloud_up

    def pstn_call(self, fsm: Caller, number: str, from_number: str = "") -> int | None:
        """A local phone's call out through a free FXO line (the cloud is down)."""
        return self._out_of_fxo(fsm, self.survive.outage_number(number), from_number,
                                "outbound")

    def emergency_call(self, fsm: Caller, number: str, from_number: str = "") -> int | None:
        """Out through a free FXO line, whatever the cloud's state; None: no free line."""
        return self._out_of_fxo(fsm, number, from_number, "emergency")

    def _out_of_fxo(self, fsm: Caller, number: str, from_number: str, direction: str
                    ) -> int | None:
        fxo = self.free_fxo()
        if fxo is None:
            if direction == "emergency":
                log.error("%s: emergency call %s: no free FXO line", fsm.name, number)
            return None
        log.warning("%s: %s call %s out of %s", fsm.name, direction, number, fxo.name)
        return self.local_call(fsm, fxo.name, number, from_number=from_number,
                               direction=direction)

    # ---- acting on calls ----
    def is_up(self, call: int) -> bool:
        info = self._calls.get(call)
        return (info is not None and info.answered) or call in self.local.up

    # The commands below take the FSMs' `int | None`: no call is logged and ignored.
    def ringing(self, call: int | None) -> None:
        self._cmd(call, "ringing")

    def answer(self, call: int | None) -> None:
        if self._cmd(call, "answer"):
            self._answered(call)

    def pick_up(self, call: int | None) -> None:
        """Answer a ringing call, or take back an established one (recall, pickup)."""
        if call is not None and self.is_up(call):
            self.unhold(call)
        else:
            self.answer(call)

    def reject(self, call: int | None, code: int = 486) -> None:
        if self._cmd(call, "reject", code):
            self._close(call, "busy" if code in (486, 600) else "rejected", code=code)
            self.forget(call)

    def hangup(self, call: int | None) -> None:
        if self._cmd(call, "hangup"):
            self._close(call, "answered" if self.is_up(call) else "cancelled")
            self.forget(call)

    def hold(self, call: int | None) -> None:
        if self._cmd(call, "hold"):
            self._call_event(EventKind.HELD, call)

    def unhold(self, call: int | None) -> None:
        if self._cmd(call, "unhold"):
            self._call_event(EventKind.RESUMED, call)

    def send_dtmf(self, call: int | None, digits: str) -> None:
        if self._cmd(call, "send_dtmf", digits) and not self.local.is_local(call):
            dsp = self._call_dsp(call)
            if dsp is not None:
                dsp.relayed(self.cfg.sip.dtmf, len(digits))

    def media(self, call: int, rate: int = 8000) -> api.MediaPipe | None:
        if self.local.is_local(call):
            return self.local.media(call)
        try:
            return self.bridge.media(call, rate=rate)
        except Exception as exc:  # noqa: BLE001
            log.warning("call %d: no media: %s", call, exc)
            return None

    def connect(self, media: PortMedia, call: int | None, rate: int = 8000) -> None:
        """Put a call's audio on a port (no echo canceller between two of our ports);
        `rate` 16000 asks the bridge for wideband frames (the headset)."""
        carried = self._carried(media.name)
        if carried is not None and carried != call:
            self._put(carried, carried_by="")
        if call is None:
            media.connect(None)
            return
        if call in self._calls:
            self._put(call, carried_by=media.name)
        media.connect(self.media(call, rate), cancel_echo=not self.local.is_local(call))

    def _carried(self, port: str) -> int | None:
        return next((c.handle for c in self._calls.values() if c.carried_by == port), None)

    # ---- fax / modem passthrough ----
    def _passthrough(self, media: PortMedia, info: dict[str, Any]) -> None:
        """A port's media switched to (or within) the passthrough profile: mark the
        call, move its SIP leg to G.711, and switch the other port of a local call."""
        call = self._carried(media.name)
        if call is None or media.pipe is None:
            return
        self._mark_mode(call, info)
        if self.local.is_local(call):
            self._passthrough_peer(call, info)
            return
        safely(self.bridge.passthrough, call)

    def _passthrough_peer(self, call: int, info: dict[str, Any]) -> None:
        far = self.local.peer.get(call)
        media = getattr(self.owner_of(far), "media", None)
        if far is None or media is None or self._carried(media.name) != far:
            return
        tone = _Tone(info["tone"], info["mode"], bool(info.get("disabling_tone")))
        media.passthrough(tone, "peer")

    def _mark_mode(self, call: int, info: dict[str, Any]) -> None:
        rec = self._calls.get(call)
        if rec is None or not rec.opened or rec.media_mode == info["mode"]:
            return
        self._put(call, media_mode=info["mode"])
        if self.cdr is not None and rec.uuid:
            uuid, cdr = rec.uuid, self.cdr
            extra = {"passthrough": {"tone": info.get("tone"), "side": info.get("side"),
                                     "at": round(self.reactor.clock.wall(), 3),
                                     "echo_canceller": info.get("echo_canceller")}}
            safely(lambda: cdr.update(uuid, media_mode=info["mode"], extra=extra))

    def _cmd(self, call: int | None, name: str, *args: Any) -> TypeGuard[int]:
        if call is None:
            log.error("%s without a call", name)
            return False
        target = self.local if self.local.is_local(call) else self.bridge
        safely(getattr(target, name), call, *args)
        return True

    # ---- park and pickup ----
    def park(self, call: int, slot: str) -> bool:
        if slot in self.parking.slots:
            return False
        self.parking.slots[slot] = call
        self.handoff(call, self.parking)
        log.info("call %d parked in slot %s", call, slot)
        return True

    def pickup(self, fsm: Port, slot: str) -> int | None:
        call = self.parking.slots.pop(slot, None)
        if call is not None:
            self.handoff(call, fsm)
            self.unhold(call)
        return call

    # ---- transfer ----
    def join(self, fsm: Port, held: int, other: int, target: str = "") -> None:
        """Connect the far ends of two of `fsm`'s legs and leave (hook-on transfer)."""
        self._call_event(EventKind.TRANSFERRED, held, {"to": target or str(other)})
        held_local, other_local = self.local.is_local(held), self.local.is_local(other)
        if not held_local and not other_local:
            self._refer(fsm, held, other, target)
            return
        if held_local and other_local:
            self._join_local_pair(held, other)
            return
        local, remote = (held, other) if held_local else (other, held)
        self._hand_over(local, remote)

    def _refer(self, fsm: Port, held: int, other: int, target: str) -> None:
        watch = TransferWatch(self, fsm, held, other)
        self.handoff(held, watch)
        self.handoff(other, watch)
        if self.is_up(other):
            safely(self.bridge.transfer_attended, held, other)
        else:
            safely(self.bridge.transfer, held, target)
            self.hangup(other)

    def port_of(self, call: int | None) -> Port | None:
        """The port FSM holding `call` (None: nobody, or not a port)."""
        owner = self.owner_of(call)
        return next((p for p in self.ports.values() if p is owner), None)

    def _hand_over(self, local: int, remote: int) -> None:
        """The port at the far end of `local` takes `remote` in its place."""
        far = self.local.peer.get(local)
        port = self.port_of(far)
        self.local.forget(local)
        self.forget(local)
        self.forget(far)
        if port is None or far is None:
            self.hangup(remote)
            return
        self.handoff(remote, port)
        if self.is_up(remote):
            self.unhold(remote)
        port.replace_call(far, remote)

    def _join_local_pair(self, x: int, y: int) -> None:
        far_x, far_y = self.local.peer.get(x), self.local.peer.get(y)
        px, py = self.port_of(far_x), self.port_of(far_y)
        up = far_y in self.local.up
        self.local.forget(x)
        self.local.forget(y)
        for leg in (x, y, far_x, far_y):
            self.forget(leg)
        if px is None or py is None or far_x is None or far_y is None:
            for port, h in ((px, far_x), (py, far_y)):
                if port is not None:
                    port.handle(Ev(api.ENDED, h, {"code": 0, "reason": "transfer failed"}))
            return
        a, b = self.local.established_pair() if up else self.local.pair()
        self.handoff(a, px)
        self.handoff(b, py)
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

    def _open(self, call: int, direction: str, port: str, ani: str, dnis: str,
              call_id: str | None, placed_by_box: bool = True) -> None:
        started = self.reactor.clock.wall()
        self._put(call, opened=True, direction=direction, port=port, ani=ani, dnis=dnis,
                  answered=False, uuid=None, media_mode="voice", started=started,
                  placed_by_box=placed_by_box)
        if port in self.ports:  # the DSP figures of the record's port, from now on
            self.ports[port].media.dsp.begin(call)
        if self.cdr is not None:
            try:
                uuid = self.cdr.open_call(direction, port, ani, dnis, sip_call_id=call_id,
                                          started=started)
                self._put(call, uuid=uuid)
            except Exception:  # noqa: BLE001 - a CDR problem must never drop a call
                log.exception("CDR open failed for call %d", call)
        self._call_event(EventKind.RINGING, call)

    def _answered(self, call: int) -> None:
        rec = self._calls.get(call)
        if rec is None or not rec.opened or rec.answered:
            return
        self._put(call, answered=True)
        if self.cdr is not None and rec.uuid:
            safely(self.cdr.answered, rec.uuid, self.reactor.clock.wall())
        self._call_event(EventKind.ANSWERED, call)

    def _note_call_id(self, call: int, call_id: str | None) -> None:
        """The SIP Call-ID of a call the box placed is known once it is answered."""
        rec = self._calls.get(call)
        if call_id and rec is not None and rec.uuid and self.cdr is not None:
            uuid, cdr = rec.uuid, self.cdr
            safely(lambda: cdr.update(uuid, sip_call_id=call_id))

    def _close(self, call: int, disposition: str, quality: dict[str, Any] | None = None,
               code: int = 0) -> None:
        rec = self._calls.get(call)
        if rec is None or not rec.opened:
            return
        self._put(call, opened=False, answered=False, uuid=None, media_mode="voice")
        if rec.answered:
            disposition = "answered"
        wall = self.reactor.clock.wall()
        if quality is None and not self.local.is_local(call):
            quality = self._quality(call)
        dsp = self._end_dsp(rec).to_json()
        if self.cdr is not None and rec.uuid:
            safely(self.cdr.ended, rec.uuid, wall, disposition, quality, {"dsp": dsp})
        self._publish(EventKind.HUNG_UP, rec, {"disposition": disposition, "code": code,
                                               "duration": round(wall - rec.started, 3)})
        self._publish(EventKind.CALL_QUALITY, rec, {"ended": round(wall, 3),
                                                    "network": rated(quality), "dsp": dsp})

    def _call_dsp(self, call: int) -> CallDsp | None:
        """The DSP figures of an open call record (on its record's port)."""
        rec = self._calls.get(call)
        fsm = self.ports.get(rec.port) if rec is not None and rec.opened else None
        return fsm.media.dsp.calls.get(call) if fsm is not None else None

    def _end_dsp(self, rec: CallInfo) -> CallDsp:
        """A closing call's DSP figures: those of the port its record belongs to (for a
        local call, the caller's port), empty when the port has none."""
        fsm = self.ports.get(rec.port)
        dsp = fsm.media.dsp.end(rec.handle) if fsm is not None else None
        return dsp if dsp is not None else CallDsp()

    def _quality(self, call: int) -> dict[str, Any] | None:
        try:
            return self.bridge.quality(call)
        except Exception:  # noqa: BLE001
            return None

    def track(self, ev: Ev) -> None:
        """The call record's bookkeeping of a SIP event: ANSWERED marks it answered,
        ENDED closes it with the disposition its code means."""
        if ev.call is None:
            return
        rec = self._calls.get(ev.call)
        if ev.kind == api.ANSWERED:
            self._answered(ev.call)
            self._note_call_id(ev.call, ev.data.get("call_id"))
        elif ev.kind == api.DTMF and ev.data.get("method") in RELAYED:
            dsp = self._call_dsp(ev.call)
            if dsp is not None:
                dsp.received += 1
        elif ev.kind == api.ENDED and rec is not None and rec.opened:
            code = int(ev.data.get("code") or 0)
            self._close(ev.call, _disposition(rec, code), ev.data.get("quality"), code)

    # ---- events out ----
    def _call_event(self, kind: EventKind, call: int, data: dict[str, Any] | None = None
                    ) -> None:
        rec = self._calls.get(call)
        if rec is not None and rec.opened:
            self._publish(kind, rec, data or {})

    def _publish(self, kind: EventKind, rec: CallInfo | None = None,
                 data: dict[str, Any] | None = None) -> None:
        fields = ({"port": rec.port, "call_id": rec.uuid or "", "ani": rec.ani,
                   "dnis": rec.dnis, "direction": rec.direction} if rec else {})
        self.events.publish(CoreEvent(kind, self.reactor.clock.wall(), data=data or {},
                                      **fields))


def _disposition(rec: CallInfo, code: int) -> str:
    if code in DISPOSITIONS:
        return DISPOSITIONS[code]
    if code == 0 and not rec.placed_by_box:
        return "cancelled"  # the caller gave up before we answered
    return "failed"
