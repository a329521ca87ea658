"""Survivability benchmarks: the table the closing note quotes.

Rows: WAN loss -> edge down; -> SURVIVABLE; blips of 2, 5, 9 s survived; -> local fallback
heard; calls lost per 100 outages; records lost or duplicated after recovery; failback
time. Each on the real network (netns + veth, Kamailio, lab agents; needs root, else
"skipped: <reason>") and/or in fake time on the twins (bench/survive_sim.py), over --seeds.
Usage: python -m bench.bench_survive [--quick] [--part all|net|sim] [--seeds 1,2,3]
[--out bench/results/survive.json]. The machine is shared: real-network figures are orders
of magnitude.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import survive_sim
from firmware.cdr import CdrStore
from firmware.core.config import Config, validate
from firmware.core.config.schema import default_document
from firmware.forward import Forwarder, HttpTransport
from firmware.sip import api
from firmware.sip.pjbridge import PjBridge
from firmware.survive import state as survive_state
from foundation.reactor import MonotonicClock, Reactor
from lab.agent import dominant_tone
from lab.agentctl import Agent
from lab.box import Box as CoreBox
from lab.box import trunk_doc
from lab.chaos import ChaosProxy, random_schedule
from lab.kamailio import Kamailio
from lab.netns import NetnsLink, unavailable
from lab.records import RecordsReceiver

log = logging.getLogger("bench.survive")
OUT = Path(__file__).with_name("results") / "survive.json"
USERS = {"branch": "secret", "agent1": "secret", "agent2": "secret"}
FAILBACK_STABLE_S = 5.0  # survive.failback_stable_s for the failback rows (default 30 s)
FXO_NUMBER = "8005550100"  # the FXO line's number (DNIS): Kamailio routes it to agent1
ALIASES = {"2001": "branch", "2002": "branch", FXO_NUMBER: "agent1"}
CORE_SURVIVE = {"rtp_timeout_s": 1.0, "failback_stable_s": FAILBACK_STABLE_S}
CALLER = {"number": "5551230100", "name": "ACME LTD", "datetime": "11221030", "reason": None}
LAB_OPTIONS = {"options_interval_s": 0.5, "options_timeout_s": 0.5, "options_misses": 2}


# --- a box (PjBridge) in the box namespace ---------------------------------------------
class Box:
    """A PjBridge on a real-time reactor; its SIP thread lives in the box namespace."""

    def __init__(self, link: NetnsLink, kam: Kamailio, options: dict[str, Any]) -> None:
        doc = default_document()
        doc["sip"].update(edges=[kam.uri], domain=kam.domain, bind_address=link.box.addr,
                          local_port=0, registration="trunk", username="branch",
                          password="secret", **options)
        self.doc = copy.deepcopy(doc)
        self.reactor = Reactor(MonotonicClock())
        self.bridge = PjBridge(self.reactor, self.doc)
        self.events: list[api.SipEvent] = []
        self.seen = 0
        self.listeners: list = []  # e.g. a Survivability's on_sip
        with link.box.entered():
            self.bridge.start(self._on_event)

    def _on_event(self, ev: api.SipEvent) -> None:
        self.events.append(ev)
        for listener in self.listeners:
            listener(ev)

    def stop(self) -> None:
        self.bridge.stop()

    def wait(self, kind: str, timeout: float, **match: Any) -> api.SipEvent:
        """The next event of `kind` (after those already taken), matching `match`."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self.seen, len(self.events)):
                ev = self.events[i]
                if ev.kind == kind and all(ev.data.get(k) == v for k, v in match.items()):
                    self.seen = i + 1
                    return ev
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind} {match} within {timeout} s")
            self.reactor.run_for(0.01)

    def ended(self, call: int) -> bool:
        return any(ev.kind == api.ENDED and ev.call == call for ev in self.events)


class Feeder:
    """Feeds a call's pipe with a tone and keeps what comes back (a reactor timer)."""

    def __init__(self, box: Box, call: int, hz: float) -> None:
        self.pipe = box.bridge.media(call)
        self.hz, self.n, self.heard = hz, 0, []
        box.reactor.register_timer(self._tick)

    def _tick(self, now: float) -> float:
        while len(self.pipe.to_cloud) < 4:
            t = (np.arange(160) + self.n) / 8000.0
            self.n += 160
            self.pipe.put_to_cloud((8000 * np.sin(2 * np.pi * self.hz * t)).astype(np.int16))
        while (frame := self.pipe.take_from_cloud()) is not None:
            self.heard.append(frame)
        del self.heard[:-100]
        return now + 0.02

    def hears(self, hz: float, seconds: float = 0.4) -> bool:
        n = int(seconds * 50)
        if len(self.heard) < n:
            return False
        got = dominant_tone(np.concatenate(self.heard[-n:]), 8000)
        return abs(got["hz"] - hz) <= 20 and got["dbm0"] > -40


class NetLab:
    """The real-network lab: netns link, Kamailio + agents in the cloud namespace."""

    def __init__(self, workdir: Path) -> None:
        self.link = NetnsLink(prefix="blb").open()
        self.agents: dict[str, Agent] = {}
        with self.link.cloud.entered():
            self.kam = Kamailio(workdir / "kam", users=USERS, aliases=ALIASES,
                                invite_timeout_ms=2000, host=self.link.cloud.addr)
            self.kam.start()
            for user, hz in (("agent1", 440.0), ("agent2", 660.0)):
                self.agents[user] = Agent(user, registrar=self.kam, tone_hz=hz,
                                          host=self.link.cloud.addr, workdir=workdir / user)
                self.agents[user].start()

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.kam.stop()
        self.link.close()


# --- row 4 on the real network: the whole Core ------------------------------------------
def core_box(link: NetnsLink, kam: Kamailio, data_dir: Path, blip_window_s: float) -> CoreBox:
    """lab.box's Core on the twins, its SIP stack started in the box namespace."""
    doc = trunk_doc(kam, FXO_NUMBER, **LAB_OPTIONS)
    doc["sip"]["bind_address"] = link.box.addr
    doc["board"]["headset"].update(enabled=True, rate=16000)
    doc["calls"]["headset_auto_answer"] = True
    doc["survive"].update(CORE_SURVIVE, blip_window_s=blip_window_s)
    box = CoreBox(validate(doc), data_dir)
    with link.box.entered():
        box.start()
    return box


def _held(box: CoreBox, predicate: Callable[[], object], timeout: float, what: str,
          step: float = 0.02) -> float:
    """Run the box until predicate(); the monotonic time it held."""
    box.until(predicate, timeout, what, step=step)
    return time.monotonic()


def _sine(hz: float, seconds: float, amp: float = 5000.0, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _tone(samples: np.ndarray, hz: float, seconds: float, rate: int = 8000) -> bool:
    tail = np.asarray(samples)[-int(seconds * rate):]
    if not len(tail):
        return False
    got = dominant_tone(tail, rate)
    return abs(got["hz"] - hz) < 20 and got["dbm0"] > -45


def core_outage(lab: NetLab, workdir: Path, repeats: int, blip_window_s: float) -> dict:
    """A PSTN caller talking to agent1 through the whole Core; the link cut for longer
    than the blip window: loss -> announcement on the line, -> headset answered (auto);
    link back -> CLOUD_PRIMARY after failback_stable_s, the local call kept."""
    got: dict[str, list[float]] = {"announcement_s": [], "headset_answered_s": [],
                                   "failback_s": []}
    kept = 0
    for i in range(repeats):
        box = core_box(lab.link, lab.kam, workdir / f"core{blip_window_s:g}-{i}", blip_window_s)
        try:
            one = _core_outage_once(lab, box)
        finally:
            lab.link.restore()
            box.stop()
        for key in got:
            got[key].append(one[key])
        kept += one["kept"]
    return {"blip_window_s": blip_window_s, "rtp_timeout_s": CORE_SURVIVE["rtp_timeout_s"],
            "failback_stable_s": FAILBACK_STABLE_S, "runs": repeats, "local_calls_kept": kept,
            **{k: _stats(v) for k, v in got.items()}}


def _core_outage_once(lab: NetLab, box: CoreBox) -> dict:
    _held(box, box.registered, 10, "trunk registration")
    co = box.co()
    co.ring(callerid=CALLER)
    _held(box, lambda: box.state("fxo1") == "CONNECTED", 15, "agent1 answering the caller")
    co.play(_sine(1100.0, 60.0))
    _held(box, lambda: _tone(co.heard, 440.0, 0.3), 5, "the caller hearing agent1")
    box.run(random.uniform(0.0, 0.5))  # the cut's phase against the pings
    cut = lab.link.cut()
    announced = _held(box, lambda: _tone(co.heard, 1000.0, 0.1), 30, "the announcement")
    answered = _held(box, lambda: box.state("headset") == "CONNECTED", 10, "the headset")
    back = lab.link.restore()
    primary = _held(box, lambda: box.core.status()["survivability"]["state"]
                    == "cloud_primary", FAILBACK_STABLE_S + 10, "CLOUD_PRIMARY", step=0.05)
    box.run(1.0)
    hs = box.board.headset
    kept = (box.state("headset") == "CONNECTED" and box.state("fxo1") == "CONNECTED"
            and _tone(hs.heard, 1100.0, 0.3, hs.rate))
    co.disconnect()
    _held(box, lambda: box.state("fxo1") == "IDLE", 5, "the line released")
    return {"announcement_s": announced - cut, "headset_answered_s": answered - cut,
            "failback_s": primary - back, "kept": kept}


# --- rows 1 and 7: detection and return of the edge --------------------------------------
def _state_machine():
    """firmware.survive.state (Survivability), fed the real bridge's events here."""
    return survive_state


def detection(lab: NetLab, options: dict[str, Any], repeats: int,
              failback_stable_s: float | None = None) -> dict[str, Any]:
    """Cut/restore `repeats` times: edge down/up times and, with firmware.survive's
    state machine fed the bridge's events, loss -> SURVIVABLE and WAN back ->
    CLOUD_PRIMARY (failback after failback_stable_s; a fresh machine per repeat, so
    the flap hold of earlier repeats does not count)."""
    box = Box(lab.link, lab.kam, options)
    sm = _state_machine()
    if failback_stable_s is not None:
        box.doc.setdefault("survive", {})["failback_stable_s"] = failback_stable_s
    down, back, survivable, failback = [], [], [], []
    try:
        box.wait(api.EDGE, 5, ok=True)
        for _ in range(repeats):
            surv, changes = _attach(box, sm)
            box.reactor.run_for(random.uniform(0.5, 0.5 + options["options_interval_s"]))
            t0 = lab.link.cut()
            box.wait(api.EDGE, 10, ok=False)
            down.append(time.monotonic() - t0)
            if surv is not None:
                survivable.append(_until_state(box, changes, "survivable", 10, t0))
            t1 = lab.link.restore()
            box.wait(api.EDGE, 10, ok=True)
            back.append(time.monotonic() - t1)
            if surv is not None and failback_stable_s is not None:
                failback.append(_until_state(box, changes, "cloud_primary",
                                             failback_stable_s + 10, t1))
            _detach(box, surv)
    finally:
        lab.link.restore()
        box.stop()
    out = {"down_s": _stats(down), "back_s": _stats(back)}
    if sm is None:
        out["survive"] = "firmware/survive/state.py not there yet"
    else:
        out["survivable_s"] = _stats([t for t in survivable if t is not None])
        out["survivable_not_reached"] = survivable.count(None)
        if failback_stable_s is not None:
            out["failback_s"] = _stats([t for t in failback if t is not None])
            out["failback_not_reached"] = failback.count(None)
            out["failback_stable_s"] = failback_stable_s
    return out


def _attach(box: Box, sm) -> tuple[Any, list[tuple[float, str]]]:
    changes: list[tuple[float, str]] = []
    if sm is None:
        return None, changes
    surv = sm.Survivability(box.reactor, Config.from_doc(box.doc))
    surv.listeners.append(lambda old, new, why: changes.append((time.monotonic(), new.value)))
    box.listeners.append(surv.on_sip)
    return surv, changes


def _detach(box: Box, surv) -> None:
    if surv is not None:
        box.listeners.remove(surv.on_sip)
        surv.stop()


def _until_state(box: Box, changes: list[tuple[float, str]], state: str,
                 timeout: float, since: float) -> float | None:
    """Seconds from `since` to the first change into `state`; None if not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = next((t for t, s in changes if s == state and t >= since), None)
        if hit is not None:
            return hit - since
        box.reactor.run_for(0.02)
    return None


# --- row 3: blips ---------------------------------------------------------------------
def _connect(lab: NetLab, box: Box) -> list[dict[str, Any]]:
    """Two calls in progress, agent1 and agent2 -> the box, tones both ways."""
    calls = []
    for user, number, tone in (("agent1", "2001", 1000.0), ("agent2", "2002", 1300.0)):
        agent = lab.agents[user]
        agent_call = agent.dial(number)
        inc = box.wait(api.INCOMING, 5)
        feeder = Feeder(box, inc.call, tone)
        box.bridge.answer(inc.call)
        box.wait(api.ANSWERED, 5)
        calls.append({"agent": agent, "agent_call": agent_call, "call": inc.call,
                      "feeder": feeder, "tone": tone, "agent_hz": agent.opts["tone_hz"]})
    for c in calls:
        c["agent"].wait_tone(c["tone"], call=c["agent_call"], timeout=5)
    return calls


def _resumed(box: Box, c: dict[str, Any], timeout: float) -> float | None:
    """Seconds until both directions carry the same call's tones again; None if not."""
    t0 = time.monotonic()
    agent = c["agent"]
    while time.monotonic() - t0 < timeout:
        box.reactor.run_for(0.05)
        if box.ended(c["call"]):
            return None
        st = agent.call(c["agent_call"])
        if st is None or st["state"] != "CONFIRMED":
            return None
        rx = st["rx"]
        if abs(rx["hz"] - c["tone"]) <= 20 and rx["dbm0"] > -40 and \
                c["feeder"].hears(c["agent_hz"]):
            return time.monotonic() - t0
    return None


def _hang_up(box: Box, calls: list[dict[str, Any]]) -> None:
    for c in calls:
        if not box.ended(c["call"]):
            box.bridge.hangup(c["call"])
    box.reactor.run_for(1.0)


def blips(lab: NetLab, durations: list[float], repeats: int) -> dict[str, Any]:
    box = Box(lab.link, lab.kam, LAB_OPTIONS)
    out: dict[str, Any] = {}
    try:
        box.wait(api.REGISTRATION, 5, ok=True)
        calls = _connect(lab, box)
        for d in durations:
            ok, times, total = 0, [], 0
            for _ in range(repeats):
                lab.link.cut()
                box.reactor.run_for(d)
                lab.link.restore()
                for c in calls:
                    total += 1
                    took = _resumed(box, c, 5.0)
                    if took is not None:
                        ok += 1
                        times.append(took)
                if any(box.ended(c["call"]) for c in calls):
                    _hang_up(box, calls)
                    calls = _connect(lab, box)
            out[f"{d:g}s"] = {"calls": total, "resumed": ok,
                              "share_pct": round(100.0 * ok / total, 1),
                              "audio_back_s": _stats(times)}
        _hang_up(box, calls)
    finally:
        lab.link.restore()
        box.stop()
    return out


# --- row 5: many random outages while calls are up ---------------------------------------
def outages(lab: NetLab, count: int, seed: int) -> dict[str, Any]:
    box = Box(lab.link, lab.kam, LAB_OPTIONS)
    try:
        box.wait(api.REGISTRATION, 5, ok=True)
        calls = _connect(lab, box)
        schedule = random_schedule(count, seed, down=(0.1, 1.0), up=(0.2, 0.6))
        lab.link.flap(schedule)
        deadline = time.monotonic() + sum(d + u for d, u in schedule) + 10
        while not lab.link.wait_flap(0) and time.monotonic() < deadline:
            box.reactor.run_for(0.1)
        lost = 0
        for c in calls:
            if _resumed(box, c, 5.0) is None:
                lost += 1
        _hang_up(box, calls)
    finally:
        lab.link.stop_flap()
        lab.link.restore()
        box.stop()
    return {"outages": count, "calls_up": len(calls), "calls_lost": lost,
            "per_100_outages": round(100.0 * lost / count, 2), "seed": seed,
            "outage_s": _stats([d for d, _ in schedule])}


# --- row 6: records through a flapping WAN -----------------------------------------------
def records(count: int, flaps: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-survive-") as tmp, \
            RecordsReceiver() as rx, ChaosProxy(0, ("127.0.0.1", rx.port), seed=seed) as wan:
        store = CdrStore(Path(tmp) / "cdr.db")
        wan.blackhole()  # offline: everything below is made during the outage
        uuids = [store.enqueue("cdr", {"n": i, "ani": f"41555501{i % 100:02d}"})
                 for i in range(count)]
        url = rx.url.replace(f":{rx.port}", f":{wan.port}")
        fwd = Forwarder(store, HttpTransport(url, timeout=1.0, box="bench"),
                        backoff_min_s=0.05, backoff_max_s=0.5, batch=20)
        stop = threading.Event()
        worker = threading.Thread(target=fwd.run, kwargs={"interval_s": 0.1,
                                                          "should_stop": stop.is_set})
        worker.start()
        time.sleep(1.0)
        wan.heal()
        t_back = time.monotonic()
        wan.flap_random(flaps, seed, down=(0.1, 1.0), up=(0.1, 0.8))
        resets = 0
        while wan.flapping():
            time.sleep(0.5)
            wan.reset_tcp()
            resets += 1
        done = rx.wait_for(count, timeout=60)
        drained_s = time.monotonic() - t_back
        stop.set()
        worker.join(10)
        st = rx.stats()
        with rx.lock:
            got = set(rx.records)
            order_ok = [u for u in rx.order if u in set(uuids)] == uuids
        store.close()
    return {"status": "measured", "records": count, "flaps": flaps, "tcp_resets": resets,
            "delivered_distinct": st["distinct"], "lost": len(set(uuids) - got),
            "stored_twice": 0 if len(got) == st["distinct"] else st["distinct"] - len(got),
            "redelivered": st["duplicates"], "in_order": order_ok, "all_done": done,
            "wan_back_to_drained_s": round(drained_s, 2)}


# --- the fake-time rows (full stack on the twins) ----------------------------------------
def sim_rows(args: argparse.Namespace) -> dict[str, Any]:
    """bench/survive_sim.py: SimBoard + CallControl + survive + SimCloud, fake time."""
    seeds = [1] if args.quick else args.seeds
    count = 30 if args.quick else args.sim_outages
    t0 = time.monotonic()
    res = survive_sim.run(seeds, count, progress=lambda msg: log.warning("%s", msg))
    return {"status": "measured", "runtime_s": round(time.monotonic() - t0, 1), **res}


# --- table -----------------------------------------------------------------------------
def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": round(min(values), 3),
            "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _fmt(stat: dict[str, Any]) -> str:
    if not stat.get("n"):
        return "-"
    return f"{stat['median']:.2f} s (min {stat['min']:.2f}, max {stat['max']:.2f}, n={stat['n']})"


REAL = "real network, netns + veth"
SIM = "fake time, full stack (SimBoard + survive + SimCloud)"


def table(res: dict[str, Any]) -> str:
    rows = [("figure", "value", "target", "how")]
    rows += _net_rows(res.get("net", {}))
    rows += _sim_rows(res.get("sim", {}))
    rows += _records_rows(res.get("records", {}), res.get("sim", {}))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _net_rows(net: dict[str, Any]) -> list[tuple]:
    if not net:
        return []
    if "skipped" in net:
        return [("real-network rows", f"skipped: {net['skipped']}", "", "netns")]
    rows = []
    for name, key in (("OPTIONS 0.5 s/0.5 s/2 misses = shipped defaults", "detect_lab"),
                      ("shipped default options", "detect_default")):
        if key not in net:
            continue
        d = net[key]
        rows.append((f"WAN loss -> edge down ({name})", _fmt(d.get("down_s", {})),
                     "<= 2 s", REAL))
        rows.append((f"WAN loss -> SURVIVABLE ({name})", _fmt(d.get("survivable_s", {})),
                     "~2 s", REAL + " + survive state machine"))
    for c in net.get("core_outage", []):
        w = f"Core, blip_window_s {c['blip_window_s']:g}, rtp_timeout_s {c['rtp_timeout_s']:g}"
        rows.append((f"WAN loss -> caller hears the announcement ({w})",
                     _fmt(c["announcement_s"]), "window + <= 3 s", REAL + " (whole Core)"))
        rows.append((f"WAN loss -> headset answered the caller ({w})",
                     _fmt(c["headset_answered_s"]), "window + <= 3 s", REAL + " (whole Core)"))
        rows.append((f"failback with the local call up (Core, stable_s "
                     f"{c['failback_stable_s']:g}); kept {c['local_calls_kept']}/{c['runs']}",
                     _fmt(c["failback_s"]), "stable_s + ~1 s", REAL + " (whole Core)"))
    for dur, b in net.get("blips", {}).items():
        rows.append((f"same agent after a {dur} blip (bridge level)",
                     f"{b['share_pct']} % ({b['resumed']}/{b['calls']}); audio back "
                     f"{_fmt(b['audio_back_s'])}", "100 %", REAL + " (PjBridge)"))
    o = net.get("outages", {})
    if o:
        rows.append(("calls lost per 100 random outages (bridge level, 0.1-1 s cuts)",
                     f"{o['per_100_outages']} ({o['calls_lost']} of {o['calls_up']} calls, "
                     f"{o['outages']} outages)", "0", REAL + " flaps (PjBridge)"))
    d = net.get("detect_lab", {})
    rows.append(("WAN back -> edge answering", _fmt(d.get("back_s", {})), "", REAL))
    rows.append((f"failback: WAN back -> CLOUD_PRIMARY (failback_stable_s "
                 f"{FAILBACK_STABLE_S:g})", _fmt(d.get("failback_s", {})),
                 "stable_s + ~1 s", REAL + " + survive state machine"))
    return rows


def _sim_rows(sim: dict[str, Any]) -> list[tuple]:
    if sim.get("status") != "measured":
        return [("fake-time rows", sim.get("why", "not run (--part net)"), "", SIM)] \
            if sim else []
    n = len(sim["seeds"])
    rows = []
    for key in ("fallback_default_window", "fallback_window_0"):
        f = sim[key]
        w = f"blip_window_s {f['blip_window_s']:g}"
        rows.append((f"WAN loss -> SURVIVABLE ({w})", _fmt(f["survivable"]), "~2 s", SIM))
        if f["hold_tone"].get("n"):
            rows.append((f"WAN loss -> caller hears the hold tone ({w})", _fmt(f["hold_tone"]),
                         "", SIM))
        rows.append((f"WAN loss -> caller hears the announcement ({w})",
                     _fmt(f["announcement"]), "window + <= 3 s", SIM))
        rows.append((f"WAN loss -> headset rings ({w}); caller kept {f['caller_kept']}/"
                     f"{f['runs']}", _fmt(f["headset_ringing"]), "window + <= 3 s", SIM))
    for dur, b in sim["blips"].items():
        rows.append((f"same agent after a {dur} blip (full stack, PSTN caller + phone)",
                     f"{b['share_pct']} % ({b['same_agent']}/{b['calls']}); audio back "
                     f"{_fmt(b['audio_back_s'])}", "100 %", SIM))
    o = sim["outages"]
    rows.append(("calls lost per 100 random outages (full stack, continuous traffic)",
                 f"{o['per_100_outages']} ({o['pstn_lost']} of {o['pstn_calls']} PSTN calls, "
                 f"{o['outages']} outages over {len(o['per_seed'])} seeds); phones dropped "
                 f"in blips {o['phone_lost_in_blips']} of {o['phone_calls']} (reordered "
                 f"after long losses: {o['phone_reordered_after_long_loss']})", "0", SIM))
    fb, hb = sim["failback"], sim["handback"]
    rows.append((f"failback: WAN back -> CLOUD_PRIMARY (shipped failback_stable_s "
                 f"{fb['stable_s']:g}); local calls kept {fb['local_calls_kept']}/{fb['runs']}",
                 _fmt(fb["failback_s"]), "stable_s + <= 1 s", SIM))
    rows.append((f"handback: WAN back -> queued caller at the cloud agent; handed back "
                 f"{hb['handed_back']}/{hb['runs']}", _fmt(hb["handback_s"]),
                 "stable_s + ~1 s", SIM))
    rows.append(("fake-time runs", f"seeds {sim['seeds']} ({n}); {sim['runtime_s']} s", "",
                 SIM))
    return rows


def _records_rows(r: dict[str, Any], sim: dict[str, Any]) -> list[tuple]:
    rows = []
    if r.get("status") == "measured":
        rows.append(("records lost / stored twice after recovery (forwarder alone)",
                     f"{r['lost']} / {r['stored_twice']} of {r['records']} (redelivered "
                     f"{r['redelivered']}, in order: {r['in_order']}, drained in "
                     f"{r['wan_back_to_drained_s']} s)", "0 / 0",
                     "real loopback, chaos proxy TCP flaps"))
    if sim.get("status") == "measured":
        rec = sim["outages"]["records"]
        rows.append(("records lost / duplicated after recovery (full stack)",
                     f"{rec['lost']} / {rec['stored_twice']} of {rec['outbox_rows']} outbox rows "
                     f"({rec['cdrs']} CDRs: not queued {rec['cdrs_not_queued']}, queued twice "
                     f"{rec['cdrs_queued_twice']}, wrong count per call "
                     f"{rec['pstn_calls_with_wrong_cdr_count']}, left open {rec['cdrs_open']}; "
                     f"redelivered {rec['redelivered']}, in order "
                     f"{sim['outages']['records_in_order']})", "0 / 0",
                     SIM + " -> firmware.forward -> lab.records (loopback)"))
    return rows


def run_net(args: argparse.Namespace) -> dict[str, Any]:
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    repeats = 2 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="bench-survive-net-") as tmp:
        lab = NetLab(Path(tmp))
        try:
            defaults = {k: default_document()["sip"][k] for k in LAB_OPTIONS}
            out = {"detect_lab": detection(lab, LAB_OPTIONS, repeats, FAILBACK_STABLE_S)}
            if defaults != LAB_OPTIONS:
                out["detect_default"] = {"options": defaults,
                                         **detection(lab, defaults, repeats)}
            core_repeats = 1 if args.quick else 3
            out["core_outage"] = [core_outage(lab, Path(tmp), core_repeats, w)
                                  for w in (3.0, 0.0)]
            out["blips"] = blips(lab, [2.0, 5.0, 9.0], 1 if args.quick else 2)
            out["outages"] = outages(lab, 20 if args.quick else args.outages, args.seed)
            return out
        finally:
            lab.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="survivability benchmarks: the closing-note table")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a few minutes)")
    p.add_argument("--part", choices=("all", "net", "sim"), default="all",
                   help="net: the real-network and forwarder rows; sim: the fake-time rows")
    p.add_argument("--outages", type=int, default=100, help="real-network flaps")
    p.add_argument("--sim-outages", type=int, default=100, help="fake-time outages per seed")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 3],
                   help="fake-time seeds, comma separated")
    p.add_argument("--seed", type=int, default=5, help="real-network flap schedule seed")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    t0 = time.monotonic()
    res: dict[str, Any] = {
        "meta": {"machine": platform.machine(), "python": platform.python_version(),
                 "quick": args.quick, "part": args.part,
                 "when": time.strftime("%Y-%m-%d %H:%M:%S")}}
    if args.part in ("all", "net"):
        res["net"] = run_net(args)
        res["records"] = records(200 if args.quick else 1000, 8 if args.quick else 20,
                                 args.seed)
    if args.part in ("all", "sim"):
        res["sim"] = _quiet(sim_rows, args)
    res["meta"]["runtime_s"] = round(time.monotonic() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    sys.stdout.write(table(res) + f"\n\nJSON: {args.out} ({res['meta']['runtime_s']} s)\n")
    return 0


def _quiet(fn, *args: Any) -> Any:
    """Run fn with the firmware's per-call warnings silenced (thousands in fake time)."""
    quiet = ("firmware", "drivers")
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return fn(*args)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
