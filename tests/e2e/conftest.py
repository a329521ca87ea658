"""End-to-end fixtures: the whole core (firmware.core.runtime.Core: the real drivers on the
register-level twins, the real DSP, call control, the pjsua2 bridge, CDRs in SQLite) on a
real-clock reactor, against a real Kamailio and real agent processes on loopback.

The cloud's numbering (Kamailio aliases):
  8005550100  the FXO line's number (its DNIS) -> agent1, the contact center (440 Hz)
  5551234     -> agent2 (660 Hz)            5552000 -> agent3 (880 Hz), transfer target
  5553486 / 5553503 / 5553408 -> agents answering 486 / 503 / never (408)
  5556722     -> `wide`, a G.722-only agent playing 5 kHz (the headset's wideband test)
  201, 202, 200 (extensions) and 5557777 (a PSTN number) -> the box's trunk registration
The box registers as `branch` (trunk). One Kamailio and the agents serve the session; a
Box (one pjsua2 endpoint per process: one Box at a time) serves a module. Tests must
not block the reactor: wait on agents with `box.until(...)`, never `agent.wait_*`.
"""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest

from drivers.bus.pcm import LINE_RATE
from drivers.sim.board import SimBoard
from firmware.core.config import default_document, validate
from firmware.core.runtime import Core
from foundation.reactor import MonotonicClock, Reactor
from lab.agent import dominant_tone
from lab.agentctl import Agent
from lab.kamailio import Kamailio

FXO_NUMBER = "8005550100"
AGENT_NUMBERS = {"agent1": FXO_NUMBER, "agent2": "5551234", "agent3": "5552000",
                 "busy": "5553486", "down": "5553503", "slow": "5553408", "wide": "5556722"}
AGENT_TONES = {"agent1": 440.0, "agent2": 660.0, "agent3": 880.0, "wide": 5000.0}
# "wide" speaks only G.722 and hears at 16 kHz: a 5 kHz tone only a wideband path carries
WIDEBAND = {"wide": {"codecs": "G722", "port_rate": 16000}}
AGENT_CODES = {"busy": 486, "down": 503, "slow": 408}
PSTN_NUMBER = "5557777"
# Kamailio ends an unanswered INVITE with 408 after this: longer than a phone's first
# ring cycle (6 s in the US) so inbound calls can be answered on the second ring.
INVITE_TIMEOUT_MS = 9000
USERS = {"branch": "secret", **{name: "secret" for name in AGENT_NUMBERS}}
ALIASES = {**{num: name for name, num in AGENT_NUMBERS.items()},
           "201": "branch", "202": "branch", "200": "branch", PSTN_NUMBER: "branch"}


def e2e_doc(kam: Kamailio, **sip) -> dict:
    """The default document with the cloud at `kam` (trunk registration as `branch`)."""
    doc = default_document()
    doc["sip"].update(edges=[kam.uri], domain=kam.domain, bind_address="127.0.0.1",
                      local_port=0, registration="trunk", username="branch",
                      password="secret", options_interval_s=0.5, options_timeout_s=0.5,
                      options_misses=2)
    doc["sip"]["codecs"] = ["PCMU", "PCMA", "G722"]  # the headset test needs wideband
    doc["sip"].update(sip)
    doc["lines"]["fxo1"]["number"] = FXO_NUMBER
    doc["board"]["headset"]["enabled"] = True
    doc["board"]["headset"]["rate"] = 16000
    return validate(doc)


class Box:
    """A started Core on simulated hardware, driven from the test thread."""

    def __init__(self, doc: dict, data_dir) -> None:
        self.doc = copy.deepcopy(doc)
        self.reactor = Reactor(MonotonicClock())
        self.board = SimBoard(self.reactor, self.doc)
        self.core = Core(self.doc, self.board, self.reactor, data_dir=data_dir)
        self.sip_events: list = []
        self.core.subscribe_sip(self.sip_events.append)

    def start(self) -> Box:
        self.core.start()
        return self

    def stop(self) -> None:
        self.core.stop()

    def run(self, seconds: float) -> None:
        self.reactor.run_for(seconds)

    def until(self, predicate, timeout: float = 5.0, what: str = "a condition",
              step: float = 0.05):
        """Run the reactor until predicate() gives something truthy; return it."""
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; core: "
                                     f"{self.brief()}")
            self.run(step)

    def brief(self) -> dict:
        st = self.core.status()
        return {"ports": {n: (p["state"], p["call"]) for n, p in st["ports"].items()},
                "calls": st["calls"], "registrations": st["registrations"]}

    def state(self, port: str) -> str:
        return self.core.cc.ports[port].state.name

    def wait_state(self, port: str, state: str, timeout: float = 5.0) -> None:
        self.until(lambda: self.state(port) == state, timeout, f"{port} in {state}")

    def phone(self, name: str = "fxs1"):
        return self.board.phones[name]

    def co(self, name: str = "fxo1"):
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
        end = p.dial_pulse(digits) if pulse else p.dial_dtmf(digits)
        self.run(max(0.0, end - self.reactor.now()) + (1.0 if pulse else 0.2))

    def hang_up(self, phone: str = "fxs1") -> None:
        self.phone(phone).on_hook()
        self.wait_state(phone, "IDLE")

    def cdrs(self) -> list[dict]:
        return self.core.cdr.list(limit=100) if self.core.cdr is not None else []

    def idle(self, timeout: float = 8.0) -> None:
        """Every port idle and no SIP call left in the bridge."""
        def quiet() -> bool:
            st = self.core.status()
            return not st["calls"] and all(
                p["call"] in ("idle", "") for n, p in st["ports"].items() if n != "headset")
        self.until(quiet, timeout, "an idle box")


def agent_call(box: Box, agent: Agent, direction: str, after: int = 0,
               state: str | None = None, timeout: float = 6.0) -> dict:
    """The agent's newest call in `direction` with an id above `after` (in `state`)."""
    def find():
        calls = [c for c in agent.calls() if c["direction"] == direction and c["id"] > after]
        call = calls[-1] if calls else None
        return call if call and (state is None or call["state"] == state) else None
    return box.until(find, timeout, f"{agent.user}: a {direction} call"
                     + (f" in {state}" if state else ""), step=0.1)


def last_id(agent: Agent) -> int:
    calls = agent.calls()
    return calls[-1]["id"] if calls else 0


def agent_hears(box: Box, agent: Agent, call_id: int, hz: float, timeout: float = 5.0,
                tolerance: float = 25.0) -> dict:
    def heard():
        c = agent.call(call_id)
        rx = c["rx"] if c else None
        return rx if rx and abs(rx["hz"] - hz) <= tolerance and rx["dbm0"] > -40 else None
    return box.until(heard, timeout, f"{agent.user} hearing {hz:.0f} Hz", step=0.1)


def tone_of(samples: np.ndarray, seconds: float = 0.5, rate: int = LINE_RATE) -> dict:
    """Dominant frequency and level of the last `seconds` of samples."""
    tail = np.asarray(samples)[-int(seconds * rate):]
    return dominant_tone(tail, rate) if len(tail) else {"hz": 0.0, "dbm0": -99.0}


def sine(hz: float, seconds: float, amp: float = 6000.0, rate: int = LINE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _start_all(agents: list[Agent]) -> None:
    """Start the agent processes side by side (each takes about a second)."""
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


@pytest.fixture(scope="session")
def kamailio(tmp_path_factory):
    kam = Kamailio(tmp_path_factory.mktemp("kamailio-e2e"), users=USERS, aliases=ALIASES,
                   invite_timeout_ms=INVITE_TIMEOUT_MS)
    kam.start()
    yield kam
    kam.stop()


@pytest.fixture(scope="session")
def agents(kamailio, tmp_path_factory):
    started: dict[str, Agent] = {}
    try:
        for user in AGENT_NUMBERS:
            started[user] = Agent(user, registrar=kamailio, tone_hz=AGENT_TONES.get(user, 0.0),
                                  answer_code=AGENT_CODES.get(user, 200),
                                  workdir=tmp_path_factory.mktemp(user),
                                  **WIDEBAND.get(user, {}))
        _start_all(list(started.values()))
        yield started
    finally:
        for agent in started.values():
            agent.stop()


@pytest.fixture(scope="module")
def box(kamailio, agents, tmp_path_factory):
    b = Box(e2e_doc(kamailio), tmp_path_factory.mktemp("data")).start()
    try:
        b.until(b.registered, 10, "trunk registration")
        yield b
    finally:
        b.stop()


@pytest.fixture
def clean(box, agents):
    """Leave no call behind: agents hang up, phones go on hook, the box goes idle."""
    yield box
    for agent in agents.values():
        try:
            agent.hangup()
        except Exception:  # noqa: BLE001 - its calls ended already
            pass
    for phone in box.board.phones.values():
        if phone.is_off_hook:
            phone.on_hook()
    box.idle()
