"""Fixtures for the SIP bridge tests: one real Kamailio for the session, real lab agent
processes, and `Harness`, a PjBridge on a MonotonicClock reactor that collects events.

pjsua2 allows one Endpoint per process, so at most one Harness runs at a time; tests
that need their own bridge (other registration modes) stop the module's first. Every
peer is on 127.0.0.1 at ports chosen at run time and is stopped by its fixture.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest

from firmware.core.config.schema import default_document
from firmware.sip.api import SipEvent
from firmware.sip.pjbridge import PjBridge
from foundation.reactor import MonotonicClock, Reactor
from lab.agent import dominant_tone
from lab.agentctl import Agent
from lab.kamailio import Kamailio, LabError
from lab.wait import wait_until

USERS = {"branch": "secret", "201": "pw201", "202": "pw202",
         **{f"agent{i}": "secret" for i in range(1, 7)}}
# The cloud dials branch extensions by number; they land on the trunk registration.
ALIASES = {"2001": "branch", "2002": "branch"}


@pytest.fixture(scope="session")
def kamailio(tmp_path_factory):
    kam = Kamailio(tmp_path_factory.mktemp("kamailio"), users=USERS, aliases=ALIASES,
                   invite_timeout_ms=2000)
    kam.start()
    yield kam
    kam.stop()


def sip_doc(kam: Kamailio, **sip) -> dict:
    """A config document for a bridge on loopback talking to `kam`."""
    doc = default_document()
    doc["sip"].update(edges=[kam.uri], domain=kam.domain, bind_address="127.0.0.1",
                      local_port=0, registration="trunk", username="branch",
                      password="secret", options_interval_s=0.5, options_timeout_s=0.5,
                      options_misses=2)
    doc["sip"].update(sip)
    return doc


class Harness:
    """A started PjBridge plus the events it delivered on the reactor thread."""

    def __init__(self, doc: dict, lines: dict | None = None) -> None:
        self.doc = copy.deepcopy(doc)
        self.reactor = Reactor(MonotonicClock())
        self.bridge = PjBridge(self.reactor, self.doc, lines=lines)
        self.events: list[SipEvent] = []
        self.on_event: Callable[[SipEvent], None] = self.events.append  # may be swapped
        self._taken: set[int] = set()

    def start(self) -> Harness:
        self.bridge.start(lambda ev: self.on_event(ev))
        return self

    def stop(self) -> None:
        self.bridge.stop()

    def run(self, seconds: float) -> None:
        self.reactor.run_for(seconds)

    def wait(self, kind: str, call: int | None = None, timeout: float = 5.0,
             **match) -> SipEvent:
        """The first not yet taken event of `kind` (for `call`, with data matching)."""
        def take() -> SipEvent | None:
            for i, ev in enumerate(self.events):
                if i in self._taken or ev.kind != kind:
                    continue
                if call is not None and ev.call != call:
                    continue
                if all(ev.data.get(k) == v for k, v in match.items()):
                    self._taken.add(i)
                    return ev
            return None
        return wait_until(take, timeout, f"{kind} event for call {call} {match or ''}",
                          step=0.02, tick=self.run, detail=lambda: f"events: {self.events}")

    def kinds(self, call: int) -> list[str]:
        return [ev.kind for ev in self.events if ev.call == call]

    def wait_agent_tone(self, agent: Agent, hz: float, call: int | None = None,
                        timeout: float = 5.0, **kw) -> dict[str, float]:
        """Wait until `agent` hears `hz` on its call, running this box's reactor
        meanwhile: a ToneFeeder lives on that reactor, so a plain agent.wait_tone would
        starve the pipe and the agent would hear silence."""
        return wait_until(lambda: agent.wait_tone(hz, call=call, timeout=0.0, **kw), timeout,
                          f"{hz:.0f} Hz at {agent.user}", step=0.1, tick=self.run,
                          retry=(LabError,))


class ToneFeeder:
    """Keeps a call's pipe fed with a tone and collects what comes back (reactor timer)."""

    def __init__(self, harness: Harness, call: int, hz: float, amp: float = 8000.0,
                 rate: int = 8000) -> None:
        self.pipe = harness.bridge.media(call, rate)
        self.hz = hz
        self.amp = amp
        self.n = 0
        self.heard: list[np.ndarray] = []
        harness.reactor.register_timer(self._tick)

    def _tick(self, now: float) -> float:
        while len(self.pipe.to_cloud) < 4:
            t = (np.arange(self.pipe.frame) + self.n) / self.pipe.rate
            self.n += self.pipe.frame
            self.pipe.put_to_cloud((self.amp * np.sin(2 * np.pi * self.hz * t)).astype(np.int16))
        while (frame := self.pipe.take_from_cloud()) is not None:
            self.heard.append(frame)
        return now + 0.02

    def measure(self, seconds: float = 1.0) -> dict[str, float]:
        n = int(seconds * 50)
        if len(self.heard) < n:
            return {"hz": 0.0, "dbm0": -99.0}
        return dominant_tone(np.concatenate(self.heard[-n:]), self.pipe.rate)


@pytest.fixture(scope="session")
def agents(kamailio, tmp_path_factory):
    """agent1 plays 440 Hz, agent2 660 Hz; both answer after 200 ms."""
    started = {}
    try:
        for user, hz in (("agent1", 440.0), ("agent2", 660.0)):
            started[user] = Agent(user, registrar=kamailio, tone_hz=hz,
                                  workdir=tmp_path_factory.mktemp(user))
            started[user].start()
        yield started
    finally:
        for agent in started.values():
            agent.stop()
