"""The real-time box: the whole core (firmware.core.runtime.Core: the real drivers on the
SimBoard twins, the DSP, call control, the pjsua2 bridge, CDRs) on a MonotonicClock
reactor, driven from the caller's thread against a real Kamailio and agent processes on
loopback. The e2e tests, the chaos tests and the cloud demo run it.

One pjsua2 endpoint per process: one started Box at a time. Callers must not block the
reactor: wait on agents with `box.until(...)`, never `agent.wait_*`.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from drivers.bus.pcm import LINE_RATE
from drivers.sim.board import SimBoard
from drivers.sim.central_office import VirtualCO
from drivers.sim.phone import VirtualPhone
from firmware.core.config import default_document
from firmware.core.runtime import Core
from firmware.sip.api import SipEvent
from foundation.reactor import MonotonicClock, Reactor
from lab.agent import dominant_tone
from lab.agentctl import Agent
from lab.kamailio import Kamailio
from lab.wait import wait_until

T = TypeVar("T")


def trunk_doc(kam: Kamailio, fxo_number: str, **sip: Any) -> dict[str, Any]:
    """The default document (not yet validated) registering as trunk `branch` at `kam`,
    with `fxo_number` as the FXO line's number (its DNIS)."""
    doc = default_document()
    doc["sip"].update(edges=[kam.uri], domain=kam.domain, bind_address="127.0.0.1",
                      local_port=0, registration="trunk", username="branch",
                      password="secret", **sip)
    doc["lines"]["fxo1"]["number"] = fxo_number
    return doc


class Box:
    """A Core on simulated hardware; `reactor` defaults to a new real-clock one."""

    def __init__(self, doc: dict[str, Any], data_dir: Path,
                 reactor: Reactor | None = None) -> None:
        self.doc = copy.deepcopy(doc)
        self.reactor = reactor or Reactor(MonotonicClock())
        self.board = SimBoard(self.reactor, self.doc)
        self.core = Core(self.doc, self.board, self.reactor, data_dir=data_dir)
        self.sip_events: list[SipEvent] = []
        self.core.subscribe_sip(self.sip_events.append)

    def start(self) -> Box:
        self.core.start()
        return self

    def stop(self) -> None:
        self.core.stop()

    def run(self, seconds: float) -> None:
        self.reactor.run_for(seconds)

    def until(self, predicate: Callable[[], T | None], timeout: float = 5.0,
              what: str = "a condition", step: float = 0.05) -> T:
        """Run the reactor until predicate() gives something truthy; return it."""
        return wait_until(predicate, timeout, what, step=step, tick=self.run,
                          detail=lambda: f"core: {self.brief()}")

    def brief(self) -> dict[str, Any]:
        st = self.core.status()
        return {"ports": {n: (p["state"], p["call"]) for n, p in st["ports"].items()},
                "calls": st["calls"], "registrations": st["registrations"]}

    def state(self, port: str) -> str:
        """The state of call control's machine on `port` ("IDLE", "DIALTONE"...)."""
        assert self.core.cc is not None, "the box is not started"
        return str(self.core.cc.status()["ports"][port]["state"]).upper()

    def wait_state(self, port: str, state: str, timeout: float = 5.0) -> None:
        self.until(lambda: self.state(port) == state, timeout, f"{port} in {state}")

    def phone(self, name: str = "fxs1") -> VirtualPhone:
        return self.board.phones[name]

    def co(self, name: str = "fxo1") -> VirtualCO:
        return self.board.cos[name]

    def registered(self) -> bool:
        regs = self.core.status()["registrations"]
        return bool(regs) and all(r["registered"] for r in regs.values())

    def dial(self, digits: str, phone: str = "fxs1", pulse: bool = False) -> None:
        """Off hook (dial tone first), then the digits, and the time they take."""
        p = self.phone(phone)
        if not p.is_off_hook:
            p.off_hook()
            self.wait_state(phone, "DIALTONE")
        # The reactor stood still while the caller waited on an agent process (an RPC):
        # let the PCM highway catch up first, or the first digit falls into the catch-up.
        self.run(0.1)
        end = p.dial_pulse(digits) if pulse else p.dial_dtmf(digits)
        self.run(max(0.0, end - self.reactor.now()) + (1.0 if pulse else 0.2))

    def hang_up(self, phone: str = "fxs1") -> None:
        self.phone(phone).on_hook()
        self.wait_state(phone, "IDLE")

    def cdrs(self) -> list[dict[str, Any]]:
        return self.core.cdr.list(limit=100) if self.core.cdr is not None else []

    def idle(self, timeout: float = 8.0) -> None:
        """Every port idle and no SIP call left in the bridge."""
        def quiet() -> bool:
            st = self.core.status()
            return not st["calls"] and all(
                p["call"] in ("idle", "") for n, p in st["ports"].items() if n != "headset")
        self.until(quiet, timeout, "an idle box")


def agent_call(box: Box, agent: Agent, direction: str | None = None, after: int = 0,
               state: str | None = None, timeout: float = 6.0) -> dict[str, Any]:
    """The agent's newest call (in `direction`) with an id above `after` (in `state`)."""
    def find() -> dict[str, Any] | None:
        calls = [c for c in agent.calls() if c["id"] > after
                 and (direction is None or c["direction"] == direction)]
        call = calls[-1] if calls else None
        return call if call and (state is None or call["state"] == state) else None
    what = f"{agent.user}: a {direction + ' ' if direction else ''}call"
    return box.until(find, timeout, what + (f" in {state}" if state else ""), step=0.1)


def last_id(agent: Agent) -> int:
    calls = agent.calls()
    return calls[-1]["id"] if calls else 0


def agent_rx(agent: Agent, call_id: int, hz: float,
             tolerance: float = 25.0) -> dict[str, Any] | None:
    """What the agent hears on the call when it is `hz` (within tolerance) above -40 dBm0."""
    c = agent.call(call_id)
    rx = c["rx"] if c else None
    return rx if rx and abs(rx["hz"] - hz) <= tolerance and rx["dbm0"] > -40 else None


def agent_hears(box: Box, agent: Agent, call_id: int, hz: float, timeout: float = 5.0,
                tolerance: float = 25.0) -> dict[str, Any]:
    return box.until(lambda: agent_rx(agent, call_id, hz, tolerance), timeout,
                     f"{agent.user} hearing {hz:.0f} Hz", step=0.1)


def tone_of(samples: np.ndarray, seconds: float = 0.5, rate: int = LINE_RATE) -> dict[str, float]:
    """Dominant frequency and level of the last `seconds` of samples."""
    tail = np.asarray(samples)[-int(seconds * rate):]
    return dominant_tone(tail, rate) if len(tail) else {"hz": 0.0, "dbm0": -99.0}


def start_all(agents: Iterable[Agent]) -> None:
    """Start agent processes side by side (each takes about a second to register)."""
    errors: list[BaseException] = []

    def start(agent: Agent) -> None:
        try:
            agent.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
    threads = [threading.Thread(target=start, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
