"""The survivability state machine: which cloud edge the box uses (CLOUD_PRIMARY,
CLOUD_SECONDARY), or none (SURVIVABLE: a small PBX for its branch). An edge is healthy
while it answers OPTIONS, keeps its registration (401/403/407 are config problems, not
outages) and its calls carry RTP. Going worse is immediate; going better waits until the
edge was healthy for failback_stable_s (flap_hold_s when it is flapping)."""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.callctl.base import Ev
from firmware.cdr import CdrStore
from firmware.core.config import Config
from firmware.events import CoreEvent, EventBus, EventKind
from firmware.sip import api
from foundation.reactor import NEVER, Reactor

log = logging.getLogger(__name__)

CONFIG_CODES = (401, 403, 407)  # a refused registration is a config problem, not an outage


class State(enum.Enum):
    CLOUD_PRIMARY = "cloud_primary"
    CLOUD_SECONDARY = "cloud_secondary"
    SURVIVABLE = "survivable"


RANK = {State.CLOUD_PRIMARY: 0, State.CLOUD_SECONDARY: 1, State.SURVIVABLE: 2}
EDGE_STATES = (State.CLOUD_PRIMARY, State.CLOUD_SECONDARY)  # by edge index


@dataclass
class Edge:
    uri: str
    options_ok: bool | None = None  # None: not heard yet (assumed up)
    registration_ok: bool = True
    media_ok: bool = True
    up_since: float = 0.0
    losses: deque[float] = field(default_factory=lambda: deque(maxlen=100))

    @property
    def healthy(self) -> bool:
        return self.options_ok is not False and self.registration_ok and self.media_ok


class Survivability:
    """`listeners` fn(old, new, reason) and `events` hear of every transition;
    `edge_in_use` is the URI calls go through (None in SURVIVABLE). Edges not named in
    sip.edges are ranked in the order they are first reported."""

    def __init__(self, reactor: Reactor, cfg: Config,
                 cdr: CdrStore | None = None, events: EventBus | None = None) -> None:
        self.reactor, self.cdr, self.events = reactor, cdr, events
        self.read_settings(cfg)
        now = reactor.now()
        self.edges = [Edge(uri, up_since=now) for uri in cfg.sip.edges]
        self.state = State.CLOUD_PRIMARY
        self.since = now
        self.since_wall = reactor.clock.wall()
        self.transitions = 0
        self.last_reason = "started"
        self.history: deque[tuple[float, str, str, str]] = deque(maxlen=200)
        self.listeners: list[Callable[[State, State, str], None]] = []
        self._timer = reactor.register_timer(self._recheck, NEVER)
        self._reasons: list[str] = []

    def read_settings(self, cfg: Config) -> None:
        s = cfg.survive
        self.stable_s, self.flap_count, self.flap_hold_s = (
            s.failback_stable_s, s.flap_count, s.flap_hold_s)

    # ---- what the box asks ----
    @property
    def cloud_up(self) -> bool:
        return self.state is not State.SURVIVABLE

    @property
    def edge_in_use(self) -> str | None:
        if self.state is State.SURVIVABLE or not self.edges:
            return None
        return self.edges[min(RANK[self.state], len(self.edges) - 1)].uri

    def status(self) -> dict[str, Any]:
        return {"state": self.state.value, "since": self.since_wall,
                "transitions": self.transitions, "last_reason": self.last_reason,
                "edge": self.edge_in_use,
                "edges": {e.uri: {"healthy": e.healthy, "options_ok": e.options_ok,
                                  "registered": e.registration_ok, "media_ok": e.media_ok}
                          for e in self.edges}}

    def stop(self) -> None:
        self.reactor.unregister_timer(self._timer)

    # ---- signals in ----
    def on_sip(self, ev: Ev) -> None:
        if ev.kind == api.EDGE:
            self._options(ev.data.get("edge", ""), bool(ev.data.get("ok")))
        elif ev.kind == api.REGISTRATION:
            self._registration(ev.data)

    def media(self, ok: bool, reason: str) -> None:
        """Continuity's verdict on RTP of the edge in use: every answered cloud call silent
        for the blip window (False), or audio back / those calls gone (True)."""
        if ok:
            for edge in self.edges:
                if not edge.media_ok:
                    edge.media_ok = True
                    self._changed(edge, reason)
            return
        lost = self._edge(self.edge_in_use) if self.edge_in_use else None
        if lost is not None and lost.media_ok:
            lost.media_ok = False
            self._changed(lost, reason)

    # ---- inside ----
    def _edge(self, uri: str) -> Edge:
        for edge in self.edges:
            if edge.uri == uri:
                return edge
        edge = Edge(uri, up_since=self.reactor.now())
        self.edges.append(edge)
        return edge

    def _options(self, uri: str, ok: bool) -> None:
        edge = self._edge(uri)
        if edge.options_ok is ok:
            return
        edge.options_ok = ok
        if ok:
            edge.media_ok = True  # the WAN is back: calls through it are worth trying again
        self._changed(edge, f"{uri} {'answers' if ok else 'stopped answering'} OPTIONS")

    def _registration(self, data: dict[str, Any]) -> None:
        uri = self.edge_in_use
        if uri is None or int(data.get("code") or 0) in CONFIG_CODES:
            return
        edge, ok = self._edge(uri), bool(data.get("ok"))
        if edge.registration_ok is ok:
            return
        edge.registration_ok = ok
        self._changed(edge, f"registration at {uri} {'ok' if ok else 'lost'} "
                            f"({data.get('code')})")

    def _changed(self, edge: Edge, reason: str) -> None:
        now = self.reactor.now()
        if edge.healthy:
            edge.up_since = now
        else:
            edge.losses.append(now)
        # Decide once the events of this pass are in: a dead WAN takes both edges in the
        # same ping round, and the box should not hop to the secondary on the way down.
        if not self._reasons:
            self.reactor.call_soon(self._decide)
        self._reasons.append(reason)

    def _decide(self) -> None:
        reasons, self._reasons = self._reasons, []
        self._evaluate("; ".join(reasons))

    def _recheck(self, _eventtime: float) -> float:
        self._evaluate("")
        return NEVER

    def _needed(self, edge: Edge, now: float) -> float:
        """How long `edge` must have been healthy before the box moves up to it."""
        recent = sum(1 for t in edge.losses if now - t <= self.flap_hold_s)
        return max(self.stable_s, self.flap_hold_s) if recent >= self.flap_count else self.stable_s

    def _evaluate(self, reason: str) -> None:
        now = self.reactor.now()
        healthy = [i for i, e in enumerate(self.edges[:2]) if e.healthy]
        current = RANK[self.state]
        if current < 2 and current not in healthy:
            # The edge in use is gone: the best answering edge at once, else SURVIVABLE.
            self._set_state(EDGE_STATES[healthy[0]] if healthy else State.SURVIVABLE, reason)
            return
        self._maybe_failback(healthy, now, reason)

    def _maybe_failback(self, healthy: list[int], now: float, reason: str) -> None:
        better = [i for i in healthy if i < RANK[self.state]]
        wake = NEVER
        for i in better:
            edge = self.edges[i]
            ready = edge.up_since + self._needed(edge, now)
            if ready <= now:
                why = reason or f"{edge.uri} answered steadily for {now - edge.up_since:.0f} s"
                self._set_state(EDGE_STATES[i], why)
                return
            wake = min(wake, ready)
        self.reactor.update_timer(self._timer, wake)

    def _set_state(self, new: State, reason: str) -> None:
        old = self.state
        if new is old:
            return
        reason = reason or "health changed"
        log.warning("survivability: %s -> %s (%s)", old.name, new.name, reason)
        self.state, self.last_reason = new, reason
        self.since, self.since_wall = self.reactor.now(), self.reactor.clock.wall()
        self.transitions += 1
        self.history.append((self.since, old.name, new.name, reason))
        self._queue(old, new, reason)
        if self.events is not None:
            self.events.publish(CoreEvent(EventKind.SURVIVABILITY, self.since_wall, data={
                "state": new.value, "was": old.value, "reason": reason}))
        for fn in list(self.listeners):
            try:
                fn(old, new, reason)
            except Exception:  # noqa: BLE001 - a listener must not stop the state machine
                log.exception("survivability listener failed")
        if new is not State.CLOUD_PRIMARY:
            self._evaluate("")  # arm the failback timer for the edges now up

    def _queue(self, old: State, new: State, reason: str) -> None:
        if self.cdr is None:
            return
        try:
            self.cdr.state_change(old.value, new.value, reason, t=self.since_wall,
                                  edge=self.edge_in_use, transitions=self.transitions)
        except Exception:  # noqa: BLE001 - the outbox failing must not stop failover
            log.exception("state change not queued to the outbox")
