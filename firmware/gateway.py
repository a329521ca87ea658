"""The gateway core at its first stage: start every chip, keep each port's live state.

`Gateway(doc, board, reactor)` takes a built board (real or simulated), starts each
line's chip driver and the headset, and listens to their line events. A chip that fails
to start (or whose bus never opened) is marked failed with its one-line reason; the other
ports keep running. Each event updates the port's state (on-hook/off-hook, idle/ringing/
seized/in-use, present/absent, failed), is appended to `log`, and is passed to listeners
with the old and new state. A 20 ms media tick drains every port's PCM and feeds the FXO
caller-ID decoder (cext.callerid, the line's standard from the config) so callers'
numbers reach the log; a burst with a bad checksum is dropped.

With call control running (firmware.core.runtime.Core) the gateway is built with
`media=False`: call control owns every port's PCM and its own caller-ID decoder, and
the gateway keeps only the port states. Call control's transitions come back through
`call_state(port, old, new)`: an FXO line is `seized` while its FSM holds the line
(seizing, dialling, connected) and `idle` after; a phone or the headset is `in-call`
while connected. They are logged as CALL events like line events, so `run` prints them
and `status()` shows them.

The power-fail lifeline (board.lifeline, drivers/lifeline.py): once both of its ports
are up (`start()`), the relay is energised and the lifeline's phone moves from the PSTN
to its SLIC; while the FXO line is in use (someone is on a PSTN call through the relay)
that waits for the line to be free. It is released (the phone back on the PSTN) by
`stop()` and as soon as either port fails. `lifeline=False` (hw probe, hw selftest)
leaves it released: a diagnostic must not cut a call that the lifeline carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.bus.pcm import FRAME, LINE_RATE
from firmware.core.config import effective_callerid
from foundation import events as ev
from foundation.errors import BranchlineError
from foundation.events import LineEvent

SEIZED = "seized"  # gateway actions, logged like line events
RELEASED = "released"
CALLER_ID = "caller_id"  # data: {"number": ..., "name": ...}
CALL = "call"  # call control's FSM moved; data: {"state": new FSM state, "was": old}
IN_CALL = "in-call"
SEIZED_FSM = ("seizing", "dialing", "connected")  # FXO FSM states that hold the line
MEDIA_TICK_S = FRAME / LINE_RATE

FAILED = "failed"
CID_STATES = ("idle", "ringing")  # caller ID comes before answer: between rings or before
# event kind -> the port state it leads to (None: the state does not change)
NEXT_STATE = {
    ev.OFF_HOOK: "off-hook", ev.ON_HOOK: "on-hook", ev.FLASH: None, ev.DIGIT: None,
    ev.POWER_ALARM: "alarm",
    ev.RING_START: "ringing", ev.RING_STOP: "idle", ev.POLARITY_REVERSAL: None,
    ev.DISCONNECT: "disconnected", ev.LINE_IN_USE: "in-use", ev.LINE_FREE: "idle",
    ev.HEADSET_PLUGGED: "present", ev.HEADSET_UNPLUGGED: "absent",
    ev.CHIP_FAILED: FAILED, SEIZED: "seized", RELEASED: "idle", CALLER_ID: None, CALL: None,
}
# While the line is seized, the ringing and line-sense events that follow are expected:
# the port stays seized until call control lets go (or the CO disconnects).
KEEP_SEIZED = (ev.RING_START, ev.RING_STOP, ev.LINE_FREE, ev.LINE_IN_USE,
               ev.POLARITY_REVERSAL)
INITIAL = {"fxs": "on-hook", "fxo": "idle", "headset": "absent"}


@dataclass
class Port:
    name: str
    kind: str
    state: str
    reason: str = ""  # why it failed
    digits: str = ""  # dialled since the last off-hook
    caller: dict = field(default_factory=dict)  # last caller ID on an FXO line
    call: str = ""  # call control's FSM state ("" without call control)


Listener = Callable[[LineEvent, str, str], None]  # (event, old state, new state)


class Gateway:
    def __init__(self, doc: dict, board, reactor, *, media: bool = True,
                 lifeline: bool = True) -> None:
        self.doc, self.board, self.reactor = doc, board, reactor
        self.media = media  # False: call control reads the PCM (and decodes caller ID)
        self.lifeline = getattr(board, "lifeline", None) if lifeline else None
        self._lifeline_waits = False  # energise once the FXO line is free
        self.ports = {name: Port(name, line["kind"], INITIAL[line["kind"]])
                      for name, line in doc["lines"].items()}
        if board.headset_driver is not None:
            self.ports["headset"] = Port("headset", "headset", INITIAL["headset"])
        self.log: list[LineEvent] = []
        self._listeners: list[Listener] = []
        self._cid: dict[str, object] = {}
        self._media_timer = None
        board.subscribe(self._on_event)

    def subscribe(self, fn: Listener) -> None:
        self._listeners.append(fn)

    # -- life cycle --
    def start(self) -> None:
        for name, port in self.ports.items():
            if port.kind != "headset":
                self._start_line(name)
        if self.board.headset_driver is not None:
            self._start_headset()
        if self.media:
            self._media_timer = self.reactor.register_timer(self._media, self.reactor.now())
        self._energise_lifeline()

    def _start_line(self, name: str) -> None:
        driver = self.board.drivers.get(name)
        if driver is None:
            self._fail(name, self.board.errors.get(name, "no driver was built for this line"))
            return
        try:
            driver.start()
        except BranchlineError as exc:
            self._fail(name, str(exc))
            return
        if self.ports[name].kind == "fxo" and self.media:
            self._cid[name] = _callerid_receiver(effective_callerid(self.doc, name))

    def _start_headset(self) -> None:
        headset = self.board.headset_driver
        try:
            headset.start()
        except BranchlineError as exc:
            self._fail("headset", str(exc))
            return
        if headset.present:
            self._set("headset", LineEvent("headset", ev.HEADSET_PLUGGED, self.reactor.now(),
                                           {"rate": headset.rate}))

    def stop(self) -> None:
        self._release_lifeline("the core stopped")
        if self._media_timer is not None:
            self.reactor.unregister_timer(self._media_timer)
            self._media_timer = None
        self.board.close()

    # -- the power-fail lifeline --
    def _energise_lifeline(self) -> None:
        """The phone goes to its SLIC only when both lifeline ports are up, and not in the
        middle of a PSTN call it is making through the relay."""
        relay = self.lifeline
        if relay is None:
            return
        down = [p for p in relay.ports if p not in self.ports or self.ports[p].state == FAILED]
        if down:
            self._release_lifeline("; ".join(
                f"{p} is not up: {self.ports[p].reason if p in self.ports else 'no such line'}"
                for p in down))
        elif self.ports[relay.fxo].state == "in-use":
            self._lifeline_waits = True
        else:
            self._lifeline_waits = False
            relay.energise()

    def _release_lifeline(self, reason: str) -> None:
        self._lifeline_waits = False
        if self.lifeline is not None:
            self.lifeline.release(reason)

    def _lifeline_event(self, name: str, event: LineEvent, new: str) -> None:
        relay = self.lifeline
        if relay is None or name not in relay.ports:
            return
        if new == FAILED:
            why = event.data.get("error") or self.ports[name].reason
            self._release_lifeline(f"{name} failed: {why}")
        elif self._lifeline_waits and event.kind == ev.LINE_FREE:
            self._energise_lifeline()

    # -- what call control will call --
    def seize(self, name: str) -> None:
        self.board.drivers[name].seize()
        self._set(name, LineEvent(name, SEIZED, self.reactor.now()))

    def release(self, name: str) -> None:
        self.board.drivers[name].release()
        self._set(name, LineEvent(name, RELEASED, self.reactor.now()))

    def call_state(self, name: str, old: str, new: str) -> None:
        """Call control's FSM on `name` went old -> new (names as its State enum)."""
        if name not in self.ports:
            return
        self._set(name, LineEvent(name, CALL, self.reactor.now(),
                                  {"state": new.lower(), "was": old.lower()}))

    def caller_id(self, name: str, message: dict) -> None:
        """Call control decoded a caller ID on `name`: logged as a CALLER_ID event."""
        if name in self.ports:
            self._set(name, LineEvent(name, CALLER_ID, self.reactor.now(), dict(message)))

    def status(self) -> dict[str, dict]:
        """Per port: the gateway's view merged over the driver's live readout."""
        out = {}
        for name, port in self.ports.items():
            live = self._live(name) if port.state != FAILED else {}
            out[name] = {**live, "port": name, "kind": port.kind, "state": port.state,
                         "reason": port.reason or live.get("reason", "")}
            if port.call:
                out[name]["call"] = port.call
        return out

    def _live(self, name: str) -> dict:
        driver = self.board.headset_driver if name == "headset" else self.board.drivers.get(name)
        if driver is None:
            return {}
        try:
            return dict(driver.status())
        except BranchlineError as exc:
            return {"reason": str(exc)}

    # -- events --
    def _fail(self, name: str, reason: str) -> None:
        self.ports[name].reason = reason
        self._set(name, LineEvent(name, ev.CHIP_FAILED, self.reactor.now(), {"error": reason}))

    def _on_event(self, event: LineEvent) -> None:
        if event.port in self.ports:
            self._set(event.port, event)

    def _set(self, name: str, event: LineEvent) -> None:
        port = self.ports[name]
        old = port.state
        new = NEXT_STATE.get(event.kind) or old
        if event.kind == CALL:
            new = _state_for_call(port, event.data["state"])
        elif old == "seized" and event.kind in KEEP_SEIZED:
            new = old
        if old == FAILED and event.kind != ev.CHIP_FAILED:
            new = FAILED  # a failed chip stays failed until restarted
        port.state = new
        self._track(port, event)
        self._lifeline_event(name, event, new)
        self.log.append(event)
        for fn in list(self._listeners):
            fn(event, old, new)

    @staticmethod
    def _track(port: Port, event: LineEvent) -> None:
        if event.kind == ev.OFF_HOOK:
            port.digits = ""
        elif event.kind == ev.DIGIT:
            port.digits += str(event.data.get("digit", ""))
        elif event.kind == CALLER_ID:
            port.caller = dict(event.data)
        elif event.kind == CALL:
            port.call = event.data["state"]

    # -- media --
    def _media(self, eventtime: float) -> float:
        """Drain each port's audio; FXO audio goes through the caller-ID receiver."""
        for name, pcm in self.board.pcm.items():
            while (frame := pcm.read()) is not None:
                self._hear(name, frame, eventtime)
        return eventtime + MEDIA_TICK_S

    def _hear(self, name: str, frame, eventtime: float) -> None:
        receiver = self._cid.get(name)
        if receiver is None or self.ports[name].state not in CID_STATES:
            return
        for message in receiver.process(frame):
            if message.get("checksum_ok", True):
                self._set(name, LineEvent(name, CALLER_ID, eventtime, message))


def _state_for_call(port: Port, fsm_state: str) -> str:
    """The port state a call-control FSM state means (the hook state stays otherwise)."""
    if port.kind == "fxo":
        if fsm_state in SEIZED_FSM:
            return "seized"
        return "idle" if port.state in ("seized", "disconnected") else port.state
    if fsm_state == "connected":
        return IN_CALL
    if port.state == IN_CALL:
        return "present" if port.kind == "headset" else "off-hook"
    return port.state


def _callerid_receiver(standard: str):
    """cext.callerid's streaming decoder for the line's standard, or None when the
    kernels it needs are not built (the line still works, without caller ID)."""
    try:
        from cext.callerid import CallerIdDecoder
        return CallerIdDecoder(standard, LINE_RATE)
    except ImportError:
        return None
