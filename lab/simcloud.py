"""An in-process cloud edge in fake time: implements firmware.sip.api.Bridge for long call
scenarios on the simulated board, without SIP on the wire.

Scripted agents stand behind the numbers the box calls (ring, answer, refuse, play, hang
up); `call_in()` calls the box; each SimCall records what the box did and sent. A WAN model
pings edges as PjBridge does, blackholes media of unreachable edges and reports
MEDIA_TIMEOUT, 408 after SIP Timer B, and re-registration. Events arrive on the reactor,
as the real bridge delivers them. 8 kHz 160-sample frames (16 kHz for the headset).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cext.toneplans import Tone
from cext.tones import ToneGenerator
from firmware.sip import api
from foundation.reactor import NEVER

FRAME_S = 0.02
KEEP_FRAMES = 3000  # 60 s of what the box sent per call
EDGE1 = "sip:edge1.sim"
TIMER_B_S = 32.0  # an INVITE nobody answers fails with 408 after this


@dataclass
class Agent:
    """How the far end of a call behaves."""

    answer_after: float = 0.5
    code: int | None = None  # answer with this failure code instead (486, 503, 408 ...)
    ring: bool = True  # send 180 first
    early_media: bool = False  # 183 with audio before answering
    tone_hz: float | None = None  # play this tone once the audio flows
    tone_dbm0: float = -10.0
    hangup_after: float | None = None  # after answering


@dataclass
class SimCall:
    handle: int
    direction: str  # "to_cloud" (the box called) or "from_cloud"
    line: str
    to: str
    from_number: str | None
    from_name: str | None
    headers: dict[str, str]
    agent: Agent
    started: float
    state: str = "offered"  # offered ringing early answered ended
    pipe: api.MediaPipe = field(default_factory=api.MediaPipe)
    box_rang: bool = False  # the box sent 180
    end_code: int | None = None
    ended_by: str = ""  # "box" or "cloud"
    dtmf: str = ""  # digits the box sent
    held_by_box: bool = False
    transferred_to: str | int | None = None
    events: list[tuple[float, str]] = field(default_factory=list)
    edge: str = EDGE1  # the edge the call goes through
    silent: bool = False  # MEDIA_TIMEOUT sent, MEDIA_RESUMED not yet
    last_rx: float = 0.0  # when the box last received media of this call
    reinvites: int = 0
    _received: list[np.ndarray] = field(default_factory=list)
    _tone: ToneGenerator | None = None

    @property
    def received(self) -> np.ndarray:
        """Everything the box sent on this call (int16 at the pipe's rate)."""
        if not self._received:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._received)

    def dominant_hz(self, last_s: float | None = None) -> float:
        """The strongest frequency in what the box sent (the last `last_s` seconds)."""
        return dominant_hz(self.received, last_s, rate=self.pipe.rate)

    @property
    def up(self) -> bool:
        return self.state in ("early", "answered")


def dominant_hz(samples: np.ndarray, last_s: float | None = None, rate: int = 8000) -> float:
    x = np.asarray(samples, dtype=np.float64)
    if last_s is not None:
        x = x[-int(last_s * rate):]
    if len(x) < 64 or not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


class SimCloud:
    """The Bridge protocol, answered by scripted agents in fake time."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.calls: dict[int, SimCall] = {}
        self.agents: dict[str, Agent] = {}
        self.default_agent = Agent()
        self.fail_calls: int | None = None
        self.refer_code = 200  # the final answer to the box's REFERs
        self.passthrough_calls: list[int] = []  # calls the box asked to move to passthrough
        self.started = False
        self._ids = itertools.count(1)
        self._on_event: Callable[[api.SipEvent], None] | None = None
        self._timer = reactor.register_timer(self._media, NEVER)
        # the WAN model
        self.wan_up = True
        self.edges_up: dict[str, bool] = {}
        self.edge_in_use = EDGE1
        self.rtp_timeout_s = 2.0
        self.reinvite_moves = True
        self.registrations: list[tuple[float, str, bool]] = []
        self._ping = {"interval": 1.0, "misses": 2, "count": {}, "told": {}}
        self._ping_timer = reactor.register_timer(self._ping_all, NEVER)

    # ---- what a test sets up and looks at ----
    def agent(self, number: str, **behaviour: Any) -> Agent:
        self.agents[number] = Agent(**behaviour)
        return self.agents[number]

    @property
    def invites(self) -> list[SimCall]:
        """Calls the box placed to the cloud, oldest first."""
        return [c for c in self.calls.values() if c.direction == "to_cloud"]

    def last(self) -> SimCall:
        return list(self.calls.values())[-1]

    def call_in(self, to_number: str, from_number: str = "4155550100", from_name: str = "CLOUD AGENT",
                line: str | None = None, headers: dict[str, str] | None = None,
                agent: Agent | None = None) -> SimCall:
        """The cloud calls the box: INCOMING now."""
        call = self._new("from_cloud", line or "", to_number, from_number, from_name, headers,
                         agent or Agent(answer_after=0.0))
        self._emit(api.INCOMING, call, {"from_number": from_number, "from_name": from_name,
                                        "to_number": to_number, "line": line,
                                        "headers": dict(headers or {}),
                                        "call_id": f"sim-{call.handle}@cloud"})
        return call

    def edge(self, ok: bool, name: str = "sip:edge1.sim") -> None:
        """Report the cloud edge's OPTIONS health (as the real bridge does every ping)."""
        if self._on_event is not None:
            event = api.SipEvent(api.EDGE, None, {"edge": name, "ok": ok,
                                                  "rtt_ms": 12.0 if ok else None})
            self.reactor.call_soon(self._on_event, event)

    # ---- the WAN ----
    def enable_wan(self, edges=(EDGE1, "sip:edge2.sim"), interval_s: float = 1.0,
                   misses: int = 2, rtp_timeout_s: float = 2.0) -> None:
        """Ping `edges` (primary first) every interval_s, as PjBridge does."""
        self.edges_up = {e: True for e in edges}
        self.edge_in_use = edges[0]
        self._ping.update(interval=interval_s, misses=misses, count={}, told={})
        self.rtp_timeout_s = rtp_timeout_s
        self.reactor.update_timer(self._ping_timer, self.reactor.now())

    def wan(self, up: bool) -> None:
        self.wan_up = up

    def power(self, edge: str, up: bool) -> None:
        self.edges_up[edge] = up

    def flap(self, schedule: list[tuple[float, float]]) -> None:
        """Cut the WAN at each `at_s` (from now) for `for_s` seconds."""
        now = self.reactor.now()
        for at, length in schedule:
            self.reactor.register_timer(lambda _t: (self.wan(False), NEVER)[1], now + at)
            self.reactor.register_timer(lambda _t: (self.wan(True), NEVER)[1],
                                        now + at + length)

    def reachable(self, edge: str) -> bool:
        return self.wan_up and self.edges_up.get(edge, True)

    def use_edge(self, uri: str) -> None:
        """Bridge.use_edge: register at `uri`; new calls go through it."""
        self.edge_in_use = uri
        ok = self.reachable(uri)
        self.registrations.append((self.reactor.now(), uri, ok))
        if self._on_event is not None:
            self.reactor.call_soon(self._on_event, api.SipEvent(api.REGISTRATION, None, {
                "account": f"branchline@{uri}", "line": None, "ok": ok,
                "code": 200 if ok else 408, "reason": "registered" if ok else "timeout"}))

    def passthrough(self, call: int) -> None:
        """Bridge.passthrough: the simulated cloud carries fax and modem audio as it is."""
        self.passthrough_calls.append(call)

    def refresh(self, call: int) -> None:
        """Bridge.refresh: a re-INVITE; it moves the call to the edge in use."""
        c = self.calls.get(call)
        if c is None or c.state == "ended":
            return
        c.reinvites += 1
        self._note(c, "reinvite")
        if self.reinvite_moves and self.reachable(self.edge_in_use):
            c.edge = self.edge_in_use

    def _ping_all(self, eventtime: float) -> float:
        for edge in self.edges_up:
            if self.reachable(edge):
                self._ping["count"][edge] = 0
                self._tell(edge, True)
            else:
                self._ping["count"][edge] = self._ping["count"].get(edge, 0) + 1
                if self._ping["count"][edge] >= self._ping["misses"]:
                    self._tell(edge, False)
        return eventtime + self._ping["interval"]

    def _tell(self, edge: str, ok: bool) -> None:
        if self._ping["told"].get(edge) is not ok:
            self._ping["told"][edge] = ok
            self.edge(ok, edge)

    # ---- the agent's side of a call ----
    def send_dtmf(self, call: SimCall | int, digits: str) -> None:
        """The agent types digits (as the box's bridge; SimCall) or the box sends (int)."""
        if isinstance(call, int):  # Bridge.send_dtmf: the box sends to the agent
            self.calls[call].dtmf += digits
            return
        for i, digit in enumerate(digits):
            self._emit(api.DTMF, call, {"digit": digit, "method": "rfc4733"}, delay=0.2 * i)

    def hold(self, call: SimCall | int) -> None:
        if isinstance(call, int):  # Bridge.hold from the box
            self._note(self.calls[call], "held_by_box")
            self.calls[call].held_by_box = True
            return
        self._emit(api.HELD, call, {})

    def refer(self, call: SimCall, target: str) -> None:
        self._emit(api.TRANSFER_REQUESTED, call, {"target": target})

    def play(self, call: SimCall, hz: float | None, dbm0: float = -10.0) -> None:
        call.agent.tone_hz, call.agent.tone_dbm0, call._tone = hz, dbm0, None

    # ---- Bridge ----
    def start(self, on_event: Callable[[api.SipEvent], None]) -> None:
        self._on_event, self.started = on_event, True
        self.reactor.update_timer(self._timer, self.reactor.now() + FRAME_S)

    def stop(self) -> None:
        self.started = False
        self.reactor.update_timer(self._timer, NEVER)

    def make_call(self, line: str, to: str, *, from_number: str | None = None,
                  from_name: str | None = None, headers: dict[str, str] | None = None) -> int:
        agent = self.agents.get(to, self.default_agent)
        call = self._new("to_cloud", line, to, from_number, from_name, headers, agent)
        if not self.reachable(call.edge):
            self._end(call, 408, "timeout", delay=TIMER_B_S)
            return call.handle
        if self.fail_calls:
            self._end(call, self.fail_calls, "cloud", delay=0.05)
            return call.handle
        self._script_answer(call)
        return call.handle

    def ringing(self, call: int) -> None:
        self.calls[call].box_rang = True
        self._note(self.calls[call], "box_ringing")

    def answer(self, call: int) -> None:
        c = self.calls[call]
        if c.state != "ended":
            c.state = "answered"
            self._note(c, "box_answered")
            self._script_hangup(c)

    def reject(self, call: int, code: int = 486) -> None:
        c = self.calls[call]
        c.state, c.end_code, c.ended_by = "ended", code, "box"
        self._note(c, f"box_rejected {code}")
        self._emit(api.ENDED, c, {"code": code, "reason": "local reject"}, force=True)

    def hangup(self, call: int | SimCall, code: int = 0) -> None:
        """Bridge.hangup from the box (int), or the agent hangs up (SimCall)."""
        if isinstance(call, SimCall):
            return self._agent_hangup(call, code)
        c = self.calls.get(call)
        if c is None or c.state == "ended":
            return None
        c.state, c.ended_by = "ended", "box"
        c.end_code = 0
        self._note(c, "box_hangup")
        # pjsua2 reports our own hang-up as DISCONNECTED too: call control must ignore it
        self._emit(api.ENDED, c, {"code": 0, "reason": "local hangup"}, force=True)
        return None

    def unhold(self, call: int) -> None:
        self.calls[call].held_by_box = False
        self._note(self.calls[call], "unheld_by_box")

    def transfer(self, call: int, target: str) -> None:
        self._transfer(self.calls[call], target)

    def transfer_attended(self, call: int, other: int) -> None:
        if self._transfer(self.calls[call], other):
            self._end(self.calls[other], 0, "cloud", delay=0.2)

    def media(self, call: int, rate: int = 8000) -> api.MediaPipe:
        c = self.calls[call]
        if c.pipe.rate != rate:  # the headset asks for 16 kHz: the agent talks wideband
            c.pipe, c._tone = api.MediaPipe(rate=rate), None
        return c.pipe

    def quality(self, call: int) -> dict[str, Any]:
        return {"codec": "PCMU", "jitter_ms": 2.0, "loss_pct": 0.0, "rtt_ms": 30.0}

    def status(self) -> dict[str, Any]:
        live = sum(1 for c in self.calls.values() if c.state != "ended")
        return {"registered": True, "calls": live, "edge": "sim"}

    # ---- inside ----
    def _new(self, direction, line, to, from_number, from_name, headers, agent) -> SimCall:
        handle = next(self._ids)
        call = SimCall(handle, direction, line, to, from_number, from_name, dict(headers or {}),
                       agent, self.reactor.now(), edge=self.edge_in_use,
                       last_rx=self.reactor.now())
        self.calls[handle] = call
        return call

    def _agent_hangup(self, call: SimCall, code: int) -> None:
        if call.state != "ended":
            self._end(call, code or (0 if call.state == "answered" else 487), "cloud")

    def _script_answer(self, call: SimCall) -> None:
        agent = call.agent
        if agent.ring:
            self._emit(api.RINGING, call, {}, delay=0.05, then=lambda: self._set(call, "ringing"))
        if agent.early_media:
            self._emit(api.EARLY_MEDIA, call, {}, delay=0.1, then=lambda: self._set(call, "early"))
        if agent.code:
            self._end(call, agent.code, "cloud", delay=agent.answer_after)
            return
        self._emit(api.ANSWERED, call, {}, delay=agent.answer_after,
                   then=lambda: (self._set(call, "answered"), self._script_hangup(call)))

    def _script_hangup(self, call: SimCall) -> None:
        if call.agent.hangup_after is not None:
            self._end(call, 0, "cloud", delay=call.agent.hangup_after)

    def _transfer(self, call: SimCall, target) -> bool:
        self._note(call, f"refer {target}")
        ok = 200 <= self.refer_code < 300
        self._emit(api.TRANSFER_DONE, call, {"ok": ok, "code": self.refer_code}, delay=0.1)
        if ok:
            call.transferred_to = target
            self._end(call, 0, "cloud", delay=0.2)
        return ok

    def _set(self, call: SimCall, state: str) -> None:
        if call.state != "ended":
            call.state = state

    def _end(self, call: SimCall, code: int, by: str, delay: float = 0.0) -> None:
        def done() -> None:
            call.state, call.end_code, call.ended_by = "ended", code, by

        self._emit(api.ENDED, call, {"code": code, "reason": by}, delay=delay, then=done)

    def _note(self, call: SimCall, what: str) -> None:
        call.events.append((self.reactor.now(), what))

    def _emit(self, kind: str, call: SimCall, data: dict, delay: float = 0.0,
              then: Callable[[], Any] | None = None, force: bool = False) -> None:
        """Deliver an event after `delay`, unless the call ended meanwhile."""
        def fire(_eventtime: float) -> float:
            if call.state == "ended" and not force:
                return NEVER
            if then is not None:
                then()
            self._note(call, kind)
            if self._on_event is not None:
                self._on_event(api.SipEvent(kind, call.handle, data))
            return NEVER

        self.reactor.register_timer(fire, self.reactor.now() + delay)

    def _media(self, eventtime: float) -> float:
        for call in self.calls.values():
            if call.up:
                self._carry(call)
        return eventtime + FRAME_S

    def _carry(self, call: SimCall) -> None:
        if not self.reachable(call.edge):
            call.pipe.to_cloud.clear()  # lost on the way
            self._silence(call)
            return
        if call.silent:
            call.silent = False
            self._emit(api.MEDIA_RESUMED, call,
                       {"silent_s": round(self.reactor.now() - call.last_rx, 2)})
        call.last_rx = self.reactor.now()
        while call.pipe.to_cloud:
            call._received.append(call.pipe.to_cloud.popleft())
        del call._received[:-KEEP_FRAMES]
        agent = call.agent
        if agent.tone_hz and not call.held_by_box:
            if call._tone is None:
                call._tone = ToneGenerator(Tone((agent.tone_hz,), agent.tone_dbm0),
                                           call.pipe.rate)
            call.pipe.from_cloud.append(call._tone.generate(call.pipe.frame))

    def _silence(self, call: SimCall) -> None:
        silent_s = self.reactor.now() - call.last_rx
        if call.state == "answered" and not call.silent and silent_s >= self.rtp_timeout_s:
            call.silent = True
            self._emit(api.MEDIA_TIMEOUT, call, {"silent_s": round(silent_s, 2)})
