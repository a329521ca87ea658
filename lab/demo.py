"""The cloud demo (`branchline demo`, run as `python -m lab.demo`): the whole gateway core on
simulated hardware, calling a simulated cloud on loopback, told as a timeline.

It starts Debian's Kamailio (lab.kamailio) as the cloud edge and two cloud agents as
their own pjsua2 processes (lab.agentctl): agent1 is the contact center the FXO line's
calls go to (Kamailio maps the line's number, its DNIS, to agent1), agent2 answers
5551234. Then it builds the Core (firmware.core.runtime) on the SimBoard with a sip
config pointing at that Kamailio, and plays two calls in real time:
  1. a PSTN caller rings fxo1 with caller ID; the box reads it, calls the cloud on the
     second ring; agent1 answers (the ANI, name and DNIS it received are shown); the
     caller types 1234# (DTMF audio from the virtual CO) and the digits reach agent1 as
     RFC 4733 events; agent1 hangs up; the line is released; the CDR is printed;
  2. the phone on fxs1 dials 5551234; agent2 answers; a 1 kHz tone from the phone is
     measured at agent2 and agent2's 660 Hz in the phone's earpiece; the phone hangs
     up; the CDR is printed.
Every process is stopped at the end, whatever happened. Exit code 0 when both calls
went through every step, 1 otherwise. About 30 s. Lives in lab/ because it drives lab
peers (nothing in firmware imports lab); firmware/cli/demo.py runs it as a child.
Assumes kamailio and pjsua2 are installed (scripts/demo installs both).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cext.dtmf import dtmf_samples
from drivers.errors import BranchlineError
from drivers.reactor import MonotonicClock, Reactor
from drivers.sim.board import SimBoard
from firmware.cli.hw import format_rows, port_row
from firmware.cli.run import describe, describe_sip
from firmware.core.config import default_document, validate
from firmware.core.runtime import Core
from lab.agent import dominant_tone
from lab.agentctl import Agent
from lab.kamailio import Kamailio

CALLER = {"number": "5551230100", "name": "ACME LTD", "datetime": "11221030", "reason": None}
DNIS = "8005550100"  # fxo1's number: the cloud routes it to agent1
AGENT2_NUMBER = "5551234"
CALLER_DIGITS = "1234#"
PHONE_TONE_HZ = 1000.0
AGENT_TONES = {"agent1": 440.0, "agent2": 660.0}
STEP_S = 0.05


class DemoFailed(Exception):
    """A step of the scene did not happen in time."""


class Timeline:
    """Prints `  12.34s  who      what` lines, from the gateway, SIP and the scene."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.t0 = reactor.now()

    def say(self, who: str, what: str) -> None:
        print(f"{self.reactor.now() - self.t0:7.2f}s  {who:<8} {what}", flush=True)

    def scene(self, what: str) -> None:
        print(f"{self.reactor.now() - self.t0:7.2f}s  -- {what}", flush=True)


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kam: Kamailio | None = None
        self.agents: dict[str, Agent] = {}
        self.core: Core | None = None
        self.reactor = Reactor(MonotonicClock())
        self.tl = Timeline(self.reactor)
        self._held: list[str] | None = None

    # ---- the cloud ----
    def start_cloud(self) -> None:
        users = {"branch": "secret", "agent1": "secret", "agent2": "secret"}
        aliases = {DNIS: "agent1", AGENT2_NUMBER: "agent2"}
        self.kam = Kamailio(self.workdir / "kamailio", users=users, aliases=aliases)
        self.kam.start()
        self.tl.say("cloud", f"Kamailio (registrar and proxy) on {self.kam.address}")
        for user, hz in AGENT_TONES.items():
            self.agents[user] = Agent(user, registrar=self.kam, tone_hz=hz,
                                      workdir=self.workdir / user)
        _start_all(self.agents.values())
        self.tl.say("cloud", f"agent1 registered (answers {DNIS}, plays 440 Hz); "
                             f"agent2 registered (answers {AGENT2_NUMBER}, plays 660 Hz)")

    # ---- the box ----
    def start_box(self) -> None:
        doc = default_document()
        doc["sip"].update(edges=[self.kam.uri], domain=self.kam.domain, local_port=0,
                          bind_address="127.0.0.1", registration="trunk",
                          username="branch", password="secret")
        doc["lines"]["fxo1"]["number"] = DNIS
        doc = validate(doc)
        self.board = SimBoard(self.reactor, doc)
        self.core = Core(doc, self.board, self.reactor, data_dir=self.workdir / "data")
        ports = self.core.gateway.ports
        self.core.gateway.subscribe(
            lambda e, o, n: self._print(describe(e, o, n, self.tl.t0, ports.get(e.port))))
        self.core.subscribe_sip(self._on_sip)
        self._held: list[str] | None = []
        with _quiet_stdout():  # pjlib prints its banner before its log goes to logging
            self.core.start()
        held, self._held = self._held, None
        for line in held:
            self._print(line)
        self.wait(lambda: self.core.status()["registrations"].get("branch@cloud.test",
                                                                  {}).get("registered"),
                  10, "the box's registration")

    def _on_sip(self, event) -> None:
        line = describe_sip(event, self.reactor.now(), self.tl.t0)
        if line:
            self._print(line)

    def _print(self, line: str) -> None:
        if self._held is not None:
            self._held.append(line)  # stdout is silenced while the SIP stack starts
        else:
            print(line, flush=True)

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            if time.monotonic() > deadline:
                raise DemoFailed(f"no {what} within {timeout:.0f} s")
            self.reactor.run_for(STEP_S)

    def agent_call(self, user: str, state: str, after: int = 0) -> dict:
        agent = self.agents[user]

        def found():
            calls = [c for c in agent.calls() if c["id"] > after and c["state"] == state]
            return calls[-1] if calls else None
        return self.wait(found, 15, f"{state.lower()} call at {user}")

    # ---- scene 1: a PSTN caller reaches the contact center ----
    def pstn_call(self) -> None:
        co, a1 = self.board.cos["fxo1"], self.agents["agent1"]
        self.tl.scene(f"a PSTN caller {CALLER['number']} \"{CALLER['name']}\" rings fxo1 "
                      f"(the line's number {DNIS})")
        co.ring(callerid=CALLER)
        call = self.agent_call("agent1", "CONFIRMED")
        h = call["headers"]
        self.tl.say("agent1", f"ANSWERED: From {h['from_user']} \"{h['from_display']}\", "
                              f"P-Asserted-Identity {h['pai_user']}, To (DNIS) {h['to_user']}, "
                              f"X-Branchline-Line {h['x'].get('X-Branchline-Line', '?')}")
        self.reactor.run_for(0.5)
        self.tl.scene(f"the caller types {CALLER_DIGITS} on the phone keypad (DTMF audio "
                      "on the line)")
        co.play(dtmf_samples(CALLER_DIGITS, level_dbm0=-10.0))
        got = self.wait(lambda: _dtmf_at(a1, call["id"], CALLER_DIGITS), 8,
                        f"DTMF {CALLER_DIGITS} at agent1")
        methods = sorted({e["method"] for e in got["dtmf_events"]})
        self.tl.say("agent1", f"DTMF received: {got['dtmf']} ({', '.join(methods)} events)")
        self.reactor.run_for(0.5)
        self.tl.scene("agent1 hangs up")
        a1.hangup(call["id"])
        self.wait(lambda: self.core.cc.ports["fxo1"].state.name == "IDLE", 5,
                  "fxo1 released")
        self.print_cdr("fxo1")

    # ---- scene 2: a branch phone calls the cloud ----
    def phone_call(self) -> None:
        phone, a2 = self.board.phones["fxs1"], self.agents["agent2"]
        self.reactor.run_for(0.5)
        self.tl.scene("the phone on fxs1 lifts the handset")
        phone.off_hook()
        self.wait(lambda: self.core.cc.ports["fxs1"].state.name == "DIALTONE", 3, "dial tone")
        self.tl.scene(f"the phone dials {AGENT2_NUMBER} (DTMF)")
        phone.dial_dtmf(AGENT2_NUMBER)
        call = self.agent_call("agent2", "CONFIRMED")
        self.tl.say("agent2", f"ANSWERED: From {call['headers']['from_user']} "
                              f"\"{call['headers']['from_display']}\"")
        self.tl.scene(f"the caller speaks: a {PHONE_TONE_HZ:.0f} Hz tone into the mouthpiece")
        phone.speak(_sine(PHONE_TONE_HZ, 3.0))
        self.wait(lambda: _hears(a2, call["id"], PHONE_TONE_HZ), 6,
                  f"{PHONE_TONE_HZ:.0f} Hz at agent2")
        self.reactor.run_for(1.0)  # a whole second of tone in the agent's window
        heard = _hears(a2, call["id"], PHONE_TONE_HZ) or {"hz": 0.0, "dbm0": -99.0}
        self.tl.say("agent2", f"hears {heard['hz']:.0f} Hz at {heard['dbm0']:.1f} dBm0")
        earpiece = dominant_tone(phone.heard[-4000:])
        self.tl.say("fxs1", f"earpiece hears {earpiece['hz']:.0f} Hz at "
                            f"{earpiece['dbm0']:.1f} dBm0 (agent2's tone)")
        if abs(earpiece["hz"] - AGENT_TONES["agent2"]) > 20:
            raise DemoFailed(f"the phone heard {earpiece['hz']:.0f} Hz, not agent2's 660 Hz")
        self.tl.scene("the phone hangs up")
        phone.on_hook()
        self.wait(lambda: self.core.cc.ports["fxs1"].state.name == "IDLE", 3, "fxs1 idle")
        self.wait(lambda: self.agent_ended(a2, call["id"]), 5, "the BYE at agent2")
        self.tl.say("agent2", "call ended (BYE received)")
        self.print_cdr("fxs1")

    def agent_ended(self, agent: Agent, call_id: int) -> bool:
        c = agent.call(call_id)
        return bool(c) and c["state"] == "DISCONNECTED"

    def print_cdr(self, port: str) -> None:
        rec = self.wait(lambda: next((r for r in self.core.cdr.list(limit=20, port=port)
                                      if r["ended"]), None), 5, f"the CDR of {port}")
        self.tl.say("cdr", f"{rec['direction']} {rec['port']} ANI {rec['ani']} DNIS "
                           f"{rec['dnis']} {rec['disposition']} {rec['duration_s']:.1f} s "
                           f"codec {rec['codec']} jitter {_num(rec['jitter_ms'])} ms loss "
                           f"{_num(rec['loss_pct'])} % MOS {_num(rec['mos'])} "
                           f"(SQLite {self.core.cdr.path.name}, uuid {rec['uuid'][:8]})")

    def ports_table(self) -> None:
        print("\nports at the end:")
        rows = [port_row(self.core.doc, n, st) for n, st in self.core.gateway.status().items()]
        print(format_rows(rows), flush=True)

    # ---- the end ----
    def stop(self) -> None:
        for what, fn in (("core", self.core and self.core.stop),
                         *((f"agent {u}", a.stop) for u, a in self.agents.items()),
                         ("kamailio", self.kam and self.kam.stop)):
            if fn:
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - stop the rest regardless
                    print(f"branchline demo: stopping the {what}: {exc}", file=sys.stderr)


def _start_all(agents) -> None:
    """Start agent processes side by side (each takes about a second to register)."""
    errors: list[BaseException] = []

    def start(agent: Agent) -> None:
        try:
            agent.start()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=start, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _dtmf_at(agent: Agent, call_id: int, digits: str) -> dict | None:
    c = agent.call(call_id)
    return c if c and c["dtmf"] == digits else None


def _hears(agent: Agent, call_id: int, hz: float) -> dict | None:
    c = agent.call(call_id)
    rx = c["rx"] if c else None
    return rx if rx and abs(rx["hz"] - hz) <= 20 and rx["dbm0"] > -40 else None


def _sine(hz: float, seconds: float, amp: float = 6000.0) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _num(value) -> str:
    return "-" if value is None else f"{float(value):.2f}"


@contextlib.contextmanager
def _quiet_stdout():
    """Silence file descriptor 1 (C code writing to it) for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="branchline demo", description=__doc__.split("\n")[0]).parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print("branchline demo: the gateway on simulated hardware, the cloud on loopback "
          "(real time)", flush=True)
    with tempfile.TemporaryDirectory(prefix="branchline-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            demo.start_cloud()
            demo.start_box()
            demo.pstn_call()
            demo.phone_call()
            demo.ports_table()
        except (DemoFailed, BranchlineError) as exc:
            print(f"branchline demo: {exc}", file=sys.stderr)
            return 1
        finally:
            demo.stop()
    print("demo done: every process stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
