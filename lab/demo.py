"""The cloud demo (`branchline demo`, run as `python -m lab.demo`): the whole gateway core
on simulated hardware (lab.box) calling a simulated cloud on loopback (Kamailio, two
pjsua2 agents), told as a timeline in real time, about 45 s:
  1. a PSTN caller rings fxo1 with caller ID; agent1 answers; the caller's DTMF 1234#
     reaches agent1 as RFC 4733 events;
  2. the WAN is cut mid-call (Kamailio and agent1 frozen with SIGSTOP): SURVIVABLE, the
     hold beep, and after the demo's short blip window the announcement and the headset
     ringing with the caller's ID; audio both ways; `branchline status` shows it;
  3. the WAN returns (SIGCONT): failback to CLOUD_PRIMARY without dropping the local call;
  4. the phone on fxs1 calls agent2 through the cloud, audio both ways;
  5. `branchline forward --once` delivers the outbox to lab.records;
  6. fleet management over MQTT 5 (Mosquitto with a lab CA, the fleet tool lab.fleet as
     the platform): the box is enrolled (`branchline agent identity` / `install-cert`),
     `branchline agent run` connects, the platform changes a setting on the running box
     (commit-confirmed), sees the CTI events and the per-call quality of a call as they
     happen and its CDR over MQTT, runs a line-test job, and sees the agent stop.
Every process is stopped at the end; exit code 0 when every step happened. Lives in lab/
because it drives lab peers; firmware/cli/demo.py runs it as a child.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from cext.dtmf import dtmf_samples
from firmware.api.client import ApiClient
from firmware.cli.hw import format_rows, port_row
from firmware.cli.run import describe_event, describe_sip
from firmware.core.config import ConfigStore, validate
from firmware.events import CoreEvent, EventKind
from firmware.sip import api
from firmware.survive.prompts import HOLD_HZ
from foundation.errors import BranchlineError
from foundation.reactor import MonotonicClock, Reactor
from lab.agent import dominant_tone
from lab.agentctl import Agent
from lab.box import Box, agent_rx, start_all, trunk_doc
from lab.fleet import TERMINAL_JOB, Fleet, Seen
from lab.kamailio import Kamailio
from lab.mosquitto import Mosquitto, PlatformClient
from lab.pki import Pki
from lab.procs import stop_process
from lab.records import RecordsReceiver
from lab.rig import sine
from lab.wait import TimedOut

ROOT = Path(__file__).resolve().parents[1]
CALLER = {"number": "5551230100", "name": "ACME LTD", "datetime": "11221030", "reason": None}
DNIS = "8005550100"  # fxo1's number: the cloud routes it to agent1
AGENT2_NUMBER = "5551234"
CALLER_DIGITS = "1234#"
PHONE_TONE_HZ = 1000.0
CALLER_VOICE_HZ = 800.0  # what the PSTN caller "says" to the headset agent
HEADSET_VOICE_HZ = 500.0  # what the headset agent says back
AGENT_TONES = {"agent1": 440.0, "agent2": 660.0}
ANNOUNCE_HZ = 1000.0  # firmware/survive/prompts.py: the "tones" announcement's beeps
SURVIVE = {"rtp_timeout_s": 1.0, "blip_window_s": 3.0, "failback_stable_s": 3.0,
           "record_calls": True}
STEP_S = 0.05
PROC_LIMIT_S = 20.0  # `branchline status` / `forward` children
ANNOUNCE_EVERY_S = 8  # the setting the platform changes on the running box
CALL_EVENTS = {"ringing", "answered", "held", "resumed", "transferred", "hung_up"}


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
        self.box: Box | None = None
        self.api = None
        self.records: RecordsReceiver | None = None
        self.frozen: list = []  # what the WAN cut froze, thawed by restore_wan / stop
        self.reactor = Reactor(MonotonicClock())
        self.tl = Timeline(self.reactor)
        self._held: list[str] | None = None
        self.cut_at: float | None = None
        self.cloud_call: dict = {}
        self.announced: dict | None = None
        self.mqtt: Mosquitto | None = None
        self.platform: PlatformClient | None = None
        self.fleet: Fleet | None = None
        self.agent_proc: subprocess.Popen | None = None

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
        start_all(self.agents.values())
        self.tl.say("cloud", f"agent1 registered (answers {DNIS}, plays 440 Hz); "
                             f"agent2 registered (answers {AGENT2_NUMBER}, plays 660 Hz)")

    # ---- the box ----
    def box_document(self) -> dict:
        doc = trunk_doc(self.kam, DNIS)
        doc["survive"].update(SURVIVE)
        return validate(doc)

    def start_box(self) -> None:
        self.box = Box(self.box_document(), self.workdir / "data", reactor=self.reactor)
        self.board, self.core = self.box.board, self.box.core
        self.core.events.subscribe(self._on_event)
        self.core.subscribe_sip(self._on_sip)
        self._held = []
        with _quiet_stdout():  # pjlib prints its banner before its log goes to logging
            self.core.start()
        held, self._held = self._held, None
        for line in held:
            self._print(line)
        self.core.cc.subscribe(self._on_fsm)
        self.tl.say("box", "survivability: OPTIONS every 0.5 s, 2 misses = edge down; demo "
                           f"settings: no RTP {SURVIVE['rtp_timeout_s']:.0f} s = blip, blip "
                           f"window {SURVIVE['blip_window_s']:.0f} s (default 10), failback "
                           f"after {SURVIVE['failback_stable_s']:.0f} s steady (default 30)")
        self.start_api()
        self.wait(lambda: self.core.status()["registrations"].get("branch@cloud.test",
                                                                  {}).get("registered"),
                  10, "the box's registration")

    def start_api(self) -> None:
        from firmware.api.server import ApiServer

        store = ConfigStore(self.workdir / "etc")
        store.save(self.box_document(), "the demo's box")  # what GET /config and the agent see
        self.api = ApiServer(self.core, store, tcp="127.0.0.1:0")
        self.api.start()
        self.api_address = f"127.0.0.1:{self.api.tcp_address[1]}"
        self.tl.say("box", f"control API on {self.api_address} (for `branchline status`)")

    def _on_sip(self, event) -> None:
        line = describe_sip(event, self.reactor.now(), self.tl.t0)
        if event.kind == api.MEDIA_TIMEOUT:
            line = self._stamp("sip", f"call {event.call} NO RTP for "
                                      f"{event.data.get('silent_s', 0):.1f} s")
        elif event.kind == api.MEDIA_RESUMED:
            line = self._stamp("sip", f"call {event.call} RTP back")
        if line:
            self._print(line)

    def _on_fsm(self, port: str, old: str, new: str) -> None:
        if not port.startswith("fallback:"):
            return
        after = f" [{self.reactor.now() - self.cut_at:.2f} s after the cut]" \
            if new == "ANNOUNCE" and self.cut_at is not None else ""
        if old == "ANNOUNCE":  # what the caller heard during the announcement, just now
            self.announced = dominant_tone(_window(self.board.cos["fxo1"].heard, 0.9, 0.05))
        self._print(self._stamp("fallback", f"{port[9:]} {old} -> {new}{after}"))

    def _on_event(self, event: CoreEvent) -> None:
        line = describe_event(event, self.reactor.now(), self.tl.t0)
        if line and event.kind is EventKind.SURVIVABILITY and self.cut_at is not None:
            line += f" [{self.reactor.now() - self.cut_at:.2f} s after the cut]"
        if line:
            self._print(line)

    def _stamp(self, who: str, what: str) -> str:
        return f"{self.reactor.now() - self.tl.t0:7.2f}s  {who:<8} {what}"

    def _print(self, line: str) -> None:
        if self._held is not None:
            self._held.append(line)  # stdout is silenced while the SIP stack starts
        else:
            print(line, flush=True)

    def wait(self, predicate, timeout: float, what: str):
        return self.box.until(predicate, timeout, what, step=STEP_S)

    def agent_call(self, user: str, state: str, after: int = 0) -> dict:
        agent = self.agents[user]

        def found():
            calls = [c for c in agent.calls() if c["id"] > after and c["state"] == state]
            return calls[-1] if calls else None
        return self.wait(found, 15, f"{state.lower()} call at {user}")

    def port_state(self, port: str) -> str:
        return self.box.state(port)

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
        heard = dominant_tone(co.heard[-4000:])
        self.tl.say("fxo1", f"the caller hears {heard['hz']:.0f} Hz (agent1's tone)")
        self.cloud_call = call
        self.reactor.run_for(0.5)

    # ---- scene 2: the WAN dies in the middle of that call ----
    def cut_wan(self) -> None:
        self.tl.scene("THE WAN IS CUT in the middle of the call: Kamailio (SIP) and agent1 "
                      "(RTP) frozen with SIGSTOP: nothing from the cloud reaches the box")
        self._freeze()
        self.cut_at = self.reactor.now()
        self.wait(lambda: self.core.cc.survive.state.state.name == "SURVIVABLE", 5,
                  "SURVIVABLE state")
        self.wait(lambda: self.core.cc.survive.blips or self.core.cc.survive.fallbacks, 5,
                  "the RTP timeout of the call")
        hold = self.wait(lambda: self._heard_since_cut(HOLD_HZ), 3, "the hold beep on fxo1")
        self.tl.say("fxo1", f"the caller hears the hold beep ({hold['hz']:.0f} Hz): the "
                            "cloud leg is kept for the blip window")
        self.wait(lambda: self.port_state("headset") == "RINGING", 10,
                  "the headset ringing")
        self.show_announcement()

    def _heard_since_cut(self, hz: float) -> dict | None:
        """`hz` anywhere in what the caller heard since the cut: the hold pattern is a
        0.15 s beep every 2 s, which comes and goes between two looks at the last moment
        (the demo's blip window is only 3 s)."""
        heard = self.board.cos["fxo1"].heard
        n = min(len(heard), int((self.reactor.now() - self.cut_at) * 8000))
        samples = heard[len(heard) - n:]
        for start in range(0, max(0, len(samples) - 1200) + 1, 400):
            got = _near(dominant_tone(samples[start:start + 1200]), hz)
            if got:
                return got
        return None

    def _freeze(self) -> None:
        self.kam.pause()
        self.frozen.append(self.kam)
        os.killpg(self.agents["agent1"].proc.pid, signal.SIGSTOP)
        self.frozen.append(self.agents["agent1"])

    def show_announcement(self) -> None:
        caller = self.core.cc.ports["headset"].caller or {}
        self.tl.say("headset", f"RINGING: caller {caller.get('from_number', '?')} "
                               f"\"{caller.get('from_name', '')}\" "
                               f"[{self.reactor.now() - self.cut_at:.2f} s after the cut]")
        said = self.announced or {"hz": 0.0, "dbm0": -99.0}
        if not _near(said, ANNOUNCE_HZ):
            raise DemoFailed(f"the caller heard {said['hz']:.0f} Hz, not the announcement")
        self.tl.say("fxo1", f"the caller heard the announcement ({said['hz']:.0f} Hz "
                            "beeps), now hears ringback")

    def local_agent_answers(self) -> None:
        self.reactor.run_for(0.7)
        self.tl.scene("the local agent answers at the headset")
        self.core.cc.headset_answer()
        self.wait(lambda: self.port_state("headset") == "CONNECTED", 3, "headset connected")
        self.tl.say("fxo1", f"the call continues locally [{self.reactor.now() - self.cut_at:.2f}"
                            " s after the cut]; the PSTN line was never released "
                            f"(fxo1 {self.port_state('fxo1')})")
        self.tl.scene(f"the caller speaks ({CALLER_VOICE_HZ:.0f} Hz from the CO); the agent "
                      f"answers ({HEADSET_VOICE_HZ:.0f} Hz into the headset microphone)")
        self.check_two_way("the local call")

    def check_two_way(self, what: str) -> None:
        """Both talk for 1.5 s; each must hear the other."""
        co, hs = self.board.cos["fxo1"], self.board.headset
        co.play(sine(CALLER_VOICE_HZ, 1.6))
        hs.speak(sine(HEADSET_VOICE_HZ, 1.6, rate=hs.rate))
        self.reactor.run_for(1.5)
        ear = dominant_tone(hs.heard[-hs.rate:], hs.rate)
        line = dominant_tone(co.heard[-8000:])
        self.tl.say("headset", f"hears {ear['hz']:.0f} Hz at {ear['dbm0']:.1f} dBm0 (the caller)")
        self.tl.say("fxo1", f"the caller hears {line['hz']:.0f} Hz at {line['dbm0']:.1f} dBm0 "
                            "(the headset agent)")
        if not (_near(ear, CALLER_VOICE_HZ) and _near(line, HEADSET_VOICE_HZ)):
            raise DemoFailed(f"{what}: the audio did not go both ways")

    def status_command(self) -> None:
        self.tl.scene(f"a technician runs `branchline status --api {self.api_address}`")
        out = self.child([sys.executable, "-m", "firmware", "status", "--api",
                          self.api_address], "branchline status")
        for line in out.stdout.splitlines():
            if line.strip():
                print(f"            | {line}", flush=True)

    def child(self, cmd: list[str], what: str) -> subprocess.CompletedProcess:
        """Run a branchline command as its own process while the reactor keeps going."""
        env = {k: v for k, v in os.environ.items() if k != "BRANCHLINE_DEBUG"}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        result: dict = {}
        reader = threading.Thread(target=lambda: result.update(
            zip(("stdout", "stderr"), proc.communicate(), strict=True)), daemon=True)
        reader.start()
        try:
            self.wait(lambda: not reader.is_alive(), PROC_LIMIT_S, f"end of `{what}`")
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(5)
        return subprocess.CompletedProcess(cmd, proc.returncode, result.get("stdout", ""),
                                           result.get("stderr", ""))

    # ---- scene 3: the WAN returns; failback waits and drops nothing ----
    def restore_wan(self) -> None:
        self.tl.scene("THE WAN IS BACK: Kamailio and agent1 resumed (SIGCONT)")
        self._thaw()
        back = self.reactor.now()
        a1, call = self.agents["agent1"], self.cloud_call
        ended = self.wait(lambda: self.agent_ended(a1, call["id"]), 10,
                          "the end of the dead cloud leg at agent1")
        self.tl.say("agent1", f"the old cloud leg ended ({ended['reason'] or ended['code']}: "
                              "the box's BYE got through once the WAN was back)")
        self.wait(lambda: self.core.cc.survive.state.state.name == "CLOUD_PRIMARY", 15,
                  "failback to CLOUD_PRIMARY")
        self.tl.say("box", f"back on the cloud {self.reactor.now() - back:.1f} s after the "
                           f"WAN returned; fxo1 {self.port_state('fxo1')}, headset "
                           f"{self.port_state('headset')}: the local call was not dropped")
        self.tl.scene("caller and headset agent go on talking")
        self.check_two_way("the local call after failback")

    def _thaw(self) -> None:
        for peer in self.frozen:
            if isinstance(peer, Kamailio):
                peer.resume()
            elif peer.proc is not None:
                os.killpg(peer.proc.pid, signal.SIGCONT)
        self.frozen.clear()

    def local_call_ends(self) -> None:
        self.tl.scene("the headset agent hangs up")
        self.core.cc.headset_hangup()
        self.wait(lambda: self.port_state("fxo1") == "IDLE", 5, "fxo1 released")
        self.print_cdrs("fxo1", 2)

    # ---- scene 4: a branch phone calls the cloud ----
    def phone_call(self) -> None:
        phone, a2 = self.board.phones["fxs1"], self.agents["agent2"]
        self.reactor.run_for(0.5)
        self.tl.scene("the phone on fxs1 lifts the handset")
        phone.off_hook()
        self.wait(lambda: self.port_state("fxs1") == "DIALTONE", 3, "dial tone")
        self.tl.scene(f"the phone dials {AGENT2_NUMBER} (DTMF)")
        phone.dial_dtmf(AGENT2_NUMBER)
        call = self.agent_call("agent2", "CONFIRMED")
        self.tl.say("agent2", f"ANSWERED: From {call['headers']['from_user']} "
                              f"\"{call['headers']['from_display']}\"")
        self.tl.scene(f"the caller speaks: a {PHONE_TONE_HZ:.0f} Hz tone into the mouthpiece")
        phone.speak(sine(PHONE_TONE_HZ, 3.0))
        self.wait(lambda: agent_rx(a2, call["id"], PHONE_TONE_HZ, 20), 6,
                  f"{PHONE_TONE_HZ:.0f} Hz at agent2")
        self.reactor.run_for(1.0)  # a whole second of tone in the agent's window
        heard = agent_rx(a2, call["id"], PHONE_TONE_HZ, 20) or {"hz": 0.0, "dbm0": -99.0}
        self.tl.say("agent2", f"hears {heard['hz']:.0f} Hz at {heard['dbm0']:.1f} dBm0")
        earpiece = dominant_tone(phone.heard[-4000:])
        self.tl.say("fxs1", f"earpiece hears {earpiece['hz']:.0f} Hz at "
                            f"{earpiece['dbm0']:.1f} dBm0 (agent2's tone)")
        if abs(earpiece["hz"] - AGENT_TONES["agent2"]) > 20:
            raise DemoFailed(f"the phone heard {earpiece['hz']:.0f} Hz, not agent2's 660 Hz")
        self.tl.scene("the phone hangs up")
        phone.on_hook()
        self.wait(lambda: self.port_state("fxs1") == "IDLE", 3, "fxs1 idle")
        self.wait(lambda: self.agent_ended(a2, call["id"]), 5, "the BYE at agent2")
        self.tl.say("agent2", "call ended (BYE received)")
        self.print_cdrs("fxs1", 1)

    def agent_ended(self, agent: Agent, call_id: int) -> dict | None:
        c = agent.call(call_id)
        return c if c and c["state"] == "DISCONNECTED" else None

    def print_cdrs(self, port: str, count: int) -> None:
        """The newest `count` finished CDRs of `port`, oldest first."""
        def ended():
            recs = [r for r in self.core.cdr.list(limit=20, port=port) if r["ended"]]
            return recs[:count] if len(recs) >= count else None
        for rec in reversed(self.wait(ended, 5, f"the CDR of {port}")):
            media = (f"codec {rec['codec']} jitter {_num(rec['jitter_ms'])} ms loss "
                     f"{_num(rec['loss_pct'])} % MOS {_num(rec['mos'])}" if rec["codec"]
                     else "local leg, no RTP")
            self.tl.say("cdr", f"{rec['direction']} {rec['port']} ANI {rec['ani']} DNIS "
                               f"{rec['dnis']} {rec['disposition']} {rec['duration_s']:.1f} s "
                               f"{media} (uuid {rec['uuid'][:8]})")

    # ---- scene 5: store and forward ----
    def forward(self) -> None:
        depth = self.core.cdr.depth(detail=True)
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(depth["by_kind"].items()))
        self.tl.say("outbox", f"{depth['pending']} records wait on the box ({kinds}), "
                              f"SQLite {self.core.cdr.path.name}")
        self.records = RecordsReceiver().start()
        self.tl.scene(f"store and forward: the cloud's records receiver on {self.records.url};"
                      " `branchline forward --once` delivers the outbox")
        out = self.child([sys.executable, "-m", "firmware", "forward", "--once",
                          "--data-dir", str(self.workdir / "data"), "--config-dir",
                          str(self.workdir / "etc"), "--url", self.records.url],
                         "branchline forward")
        summary = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
        self.tl.say("forward", f"{summary} (exit code {out.returncode})")
        if out.returncode != 0:
            raise DemoFailed(f"branchline forward failed: {out.stderr.strip()[-300:]}")
        self.show_received(depth["pending"])

    def show_received(self, expected: int) -> None:
        rx = self.records
        with rx.lock:
            got = [rx.records[u] for u in rx.order]
        for rec in got:
            self.tl.say("cloud", f"received {rec['seq']:>3} {rec['kind']:<12} "
                                 f"{_record_text(rec, rx.files.get(rec['uuid']))}")
        stats = rx.stats()
        kinds = Counter(r["kind"] for r in got)
        self.tl.say("cloud", f"{stats['distinct']} records ("
                             + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
                             + f"), {stats['duplicates']} duplicates; outbox on the box: "
                               f"{self.core.cdr.depth()} pending")
        seqs = [r["seq"] for r in got]
        if stats["distinct"] != expected or stats["duplicates"] or seqs != sorted(seqs):
            raise DemoFailed(f"the cloud got {stats['distinct']} of {expected} records, "
                             f"{stats['duplicates']} duplicates, in order: {seqs == sorted(seqs)}")

    # ---- scene 6: the cloud platform manages the box over MQTT 5 ----
    def fleet_management(self) -> None:
        self.start_broker()
        device = self.enrol()
        self.start_agent(device)
        self.push_setting()
        self.watched_call()
        self.line_test_job()
        self.stop_agent()

    def background(self, fn, what: str, timeout: float = PROC_LIMIT_S):
        """fn() on a thread while the reactor keeps going (it may call the box's API)."""
        result: dict = {}

        def run() -> None:
            try:
                result["value"] = fn()
            except Exception as exc:  # noqa: BLE001 - raised again on the main thread
                result["error"] = exc
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        self.wait(lambda: not worker.is_alive(), timeout, what)
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def start_broker(self) -> None:
        self.tl.scene("FLEET MANAGEMENT: the cloud platform manages the box over MQTT 5")
        pki = Pki(self.workdir / "pki")
        self.mqtt = Mosquitto(self.workdir / "mosquitto", pki)
        self.background(self.mqtt.start, "Mosquitto")
        self.tl.say("cloud", f"Mosquitto (MQTT 5 broker) on {self.mqtt.url}: TLS with a lab CA, "
                             "client certificates, ACLs (a box reaches only its own topics)")

    def enrol(self) -> str:
        self.tl.scene("enrolment: `branchline agent identity` makes the box's key and CSR, the "
                      "platform's CA signs it, `branchline agent install-cert` installs it")
        data, csr, cert = self.workdir / "data", self.workdir / "box.csr", self.workdir / "box.pem"
        agent = [sys.executable, "-m", "firmware", "agent"]
        out = self.child([*agent, "identity", "--data-dir", str(data), "--csr", str(csr)],
                         "branchline agent identity")
        if out.returncode != 0:
            raise DemoFailed(f"branchline agent identity failed: {out.stderr.strip()[-300:]}")
        device = out.stdout.split("device id: ", 1)[-1].split()[0]
        cert.write_bytes(self.mqtt.pki.sign_csr(csr.read_bytes()))
        out = self.child([*agent, "install-cert", str(cert), "--ca", str(self.mqtt.pki.ca_file),
                          "--data-dir", str(data)], "branchline agent install-cert")
        if out.returncode != 0:
            raise DemoFailed(f"branchline agent install-cert failed: {out.stderr.strip()[-300:]}")
        self.tl.say("box", f"device id {device}: EC key made on the box (it never leaves it), "
                           "certificate signed by the lab CA and installed, broker CA pinned")
        return device

    def start_agent(self, device: str) -> None:
        self.tl.scene("the technician sets cloud.broker; `branchline agent run` starts (supervisord runs it on the box)")
        self.background(lambda: ApiClient(tcp=self.api_address).patch_config(
            {"cloud.broker": self.mqtt.url}, "the demo's fleet broker"), "cloud.broker set")
        self.platform = self.background(lambda: PlatformClient(self.mqtt), "the platform's client")
        self.fleet = Fleet(self.platform, device)
        self.background(self.fleet.start, "the platform's subscriptions")
        self.reactor.register_periodic(self._fleet_lines, 0.05)
        env = {k: v for k, v in os.environ.items() if k != "BRANCHLINE_DEBUG"}
        with open(self.workdir / "agent.log", "wb") as log:
            self.agent_proc = subprocess.Popen(
                [sys.executable, "-m", "firmware", "agent", "run", "--api", self.api_address,
                 "--data-dir", str(self.workdir / "data")], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait(lambda: (self.fleet.state.status or {}).get("state") == "online", 15,
                  "the box online at the broker")
        self.wait(lambda: self.fleet.state.telemetry_count, 10, "the box's first telemetry")

    def _fleet_lines(self, _eventtime: float) -> None:
        for seen in self.fleet.drain() if self.fleet else []:
            if _worth_a_line(seen):
                self._print(self._stamp("fleet", seen.text))

    def push_setting(self) -> None:
        before = self.core.cfg.survive.announce_every_s
        self.tl.scene(f"the platform changes a setting on the running box: "
                      f"survive.announce_every_s = {ANNOUNCE_EVERY_S} (desired config, "
                      "commit-confirmed)")
        version = self.background(lambda: self.fleet.set(
            {"survive.announce_every_s": ANNOUNCE_EVERY_S}, reason="the demo"),
            "the desired config published")
        self.wait(lambda: self.fleet.report_for(version, ("confirming", "applied", "rejected")),
                  10, f"the box's report of desired config v{version}")
        self.wait(lambda: self.core.cfg.survive.announce_every_s == ANNOUNCE_EVERY_S, 5,
                  "the new setting in the running core")
        self.tl.say("box", f"survive.announce_every_s is now "
                           f"{self.core.cfg.survive.announce_every_s:g} s (was {before:g} s): "
                           "taken live, no restart, no call touched")
        self.desired_version = version

    def watched_call(self) -> None:
        co, a1 = self.board.cos["fxo1"], self.agents["agent1"]
        last = max((c["id"] for c in a1.calls()), default=0)
        quality = len(self.fleet.state.quality)
        self.tl.scene("the PSTN caller rings fxo1 again: the platform sees the call as it "
                      "happens")
        co.ring(callerid=CALLER)
        call = self.agent_call("agent1", "CONFIRMED", after=last)
        self.tl.say("agent1", "ANSWERED")
        self.reactor.run_for(0.3)
        self.tl.scene(f"the caller types {CALLER_DIGITS}")
        co.play(dtmf_samples(CALLER_DIGITS, level_dbm0=-10.0))
        got = self.wait(lambda: _dtmf_at(a1, call["id"], CALLER_DIGITS), 8,
                        f"DTMF {CALLER_DIGITS} at agent1")
        self.tl.say("agent1", f"DTMF received: {got['dtmf']}")
        self.tl.scene("agent1 hangs up")
        a1.hangup(call["id"])
        self.wait(lambda: len(self.fleet.state.quality) > quality, 10,
                  "the call's quality at the platform")
        report = self.wait(lambda: self.fleet.report_for(self.desired_version), 15,
                           "the confirmation of the desired config")
        if report["state"] not in ("confirmed", "applied"):
            raise DemoFailed(f"desired config v{self.desired_version} {report['state']}: "
                             f"{report.get('error')}")
        self.wait(lambda: any(r["kind"] == "cdr" and (r["body"] or {}).get("port") == "fxo1"
                              and (r["body"] or {}).get("ended")
                              for r in self.fleet.state.records.values()), 10,
                  "the call's CDR over MQTT")

    def line_test_job(self) -> None:
        self.tl.scene("the platform runs a line-test job on every port")
        job = self.background(lambda: self.fleet.job("line_test"), "the job sent")
        done = self.wait(lambda: _finished(self.fleet, job), 40, "the end of the line-test job")
        if done["state"] != "SUCCEEDED":
            raise DemoFailed(f"the line-test job ended {done['state']}: {done.get('error')}")

    def stop_agent(self) -> None:
        self.tl.scene("the agent is stopped with SIGTERM, as supervisord stops it")
        self.agent_proc.terminate()
        self.wait(lambda: self.agent_proc.poll() is not None, 10, "the agent's exit")
        self.wait(lambda: (self.fleet.state.status or {}).get("state") == "offline", 5,
                  "the box offline at the broker")
        st = self.fleet.state
        self.tl.say("cloud", f"the platform saw {len(st.events)} CTI events, "
                             f"{len(st.quality)} call quality report(s), {len(st.records)} "
                             f"record(s) ({st.duplicates} duplicates), {st.telemetry_count} "
                             f"telemetry message(s); {len(st.invalid)} invalid payloads; "
                             f"the agent exited {self.agent_proc.returncode}")
        if st.invalid or self.agent_proc.returncode != 0:
            raise DemoFailed(f"fleet: invalid payloads {st.invalid[:3]}, agent exit "
                             f"{self.agent_proc.returncode} (see {self.workdir}/agent.log)")

    def ports_table(self) -> None:
        print("\nports at the end:")
        rows = [port_row(self.core.cfg, n, st) for n, st in self.core.gateway.status().items()]
        print(format_rows(rows), flush=True)

    # ---- the end ----
    def stop(self) -> None:
        self._thaw()  # a frozen peer cannot quit
        steps = (("cloud agent", self.agent_proc and (lambda: stop_process(self.agent_proc, 5))),
                 ("platform client", self.platform and self.platform.close),
                 ("mosquitto", self.mqtt and self.mqtt.stop),
                 ("control API", self.api and self.api.stop),
                 ("core", self.box and self.box.stop),
                 *((f"agent {u}", a.stop) for u, a in self.agents.items()),
                 ("kamailio", self.kam and self.kam.stop),
                 ("records receiver", self.records and self.records.close))
        for what, fn in steps:
            if fn:
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - stop the rest regardless
                    print(f"branchline demo: stopping the {what}: {exc}", file=sys.stderr)


def _record_text(rec: dict, file: tuple[int, str] | None = None) -> str:
    b = rec.get("body") or {}
    if rec["kind"] == "recording":
        got = f"file received, {file[0]} bytes" if file else "FILE MISSING"
        return (f"{b.get('port')} call {str(b.get('call_uuid'))[:8]} {_num(b.get('seconds'))} s "
                f"stereo mu-law WAV ({got})")
    if rec["kind"] == "cdr":
        return (f"{b.get('direction')} {b.get('port')} ANI {b.get('ani')} DNIS {b.get('dnis')} "
                f"{b.get('disposition')} {_num(b.get('duration_s'))} s (uuid {rec['uuid'][:8]})")
    if rec["kind"] == "state_change":
        return (f"{str(b.get('old')).upper()} -> {str(b.get('new')).upper()} "
                f"({b.get('reason')})")
    return " ".join(f"{k}={v}" for k, v in b.items())[:100]


def _worth_a_line(seen: Seen) -> bool:
    """The fleet tool's lines the demo shows: the box's own lines already say the rest."""
    if seen.text is None:
        return False
    if seen.topic == "events":
        return seen.payload.get("kind") in CALL_EVENTS
    return True


def _finished(fleet: Fleet, job_id: str) -> dict | None:
    status = fleet.state.jobs.get(job_id)
    return status if status and status["state"] in TERMINAL_JOB else None


def _dtmf_at(agent: Agent, call_id: int, digits: str) -> dict | None:
    c = agent.call(call_id)
    return c if c and c["dtmf"] == digits else None


def _near(tone: dict, hz: float, tolerance: float = 20.0) -> dict | None:
    return tone if abs(tone["hz"] - hz) <= tolerance and tone["dbm0"] > -45 else None


def _window(samples: np.ndarray, ago_s: float, until_s: float, rate: int = 8000) -> np.ndarray:
    """The samples from ago_s to until_s seconds before the end."""
    return samples[len(samples) - int(ago_s * rate):len(samples) - int(until_s * rate)]


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


def run(demo: Demo) -> None:
    demo.start_cloud()
    demo.start_box()
    demo.pstn_call()
    demo.cut_wan()
    demo.local_agent_answers()
    demo.status_command()
    demo.restore_wan()
    demo.local_call_ends()
    demo.phone_call()
    demo.forward()
    demo.fleet_management()
    demo.ports_table()


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="branchline demo", description=__doc__.split("\n")[0]).parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the API's log buffer lowers the root
        handler.setLevel(logging.ERROR)            # level: stderr still shows errors only
    print("branchline demo: the gateway on simulated hardware, the cloud on loopback "
          "(real time)", flush=True)
    with tempfile.TemporaryDirectory(prefix="branchline-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            run(demo)
        except (DemoFailed, TimedOut, BranchlineError) as exc:
            print(f"branchline demo: {exc}", file=sys.stderr)
            return 1
        finally:
            demo.stop()
    print("demo done: every process stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
