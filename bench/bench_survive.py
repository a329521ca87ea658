"""Survivability benchmarks (issue 5): the table the closing note quotes.

Rows, and where each runs:
  1. WAN loss -> edge declared down (real network, netns + veth): the OPTIONS
     detection that triggers SURVIVABLE, with the lab settings (0.5 s interval, 0.5 s
     deadline, 2 misses) and with the shipped defaults (sip.options_*).
  2. WAN loss -> SURVIVABLE state (real network): firmware.survive.state's
     Survivability fed the real bridge's EDGE/REGISTRATION events (a fresh machine per
     cut); reported "pending" while that module is missing.
  3. blips of 2, 5, 9 s (real network, netns + veth, `ip link set down`): share of
     calls in progress whose SIP dialog survives AND whose audio resumes both ways with
     the same agent; time from link back to audio back. Bridge level (PjBridge +
     Kamailio + lab agents) until the Core with survive's blip handling is there.
  4. WAN loss -> the PSTN caller hears the local fallback (fake time, SimBoard +
     SimCloud + survive): pending until firmware/survive exists.
  5. calls lost per 100 random outages (real network, netns flapping 0.1-1.0 s cuts
     while two calls are up; bridge level) - the fake-time full-stack version is
     survive's and pending.
  6. records lost or duplicated after recovery (real loopback: firmware.forward's
     Forwarder -> lab.chaos proxy (TCP, random flaps and connection resets) ->
     lab.records receiver): records enqueued while the cloud was unreachable, counted
     at the receiver; "stored twice" must be 0, "redelivered" is harmless (UUID dedup).
  7. failback time: WAN back -> edge answering again, and -> CLOUD_PRIMARY with
     survive.failback_stable_s = 5 s (real network, the same state machine).
The fake-time rows come from a hook the survive engineer owns: firmware/survive/bench.py
with `run() -> dict`, whose keys HOOK_ROWS names (loss_to_fallback_s,
calls_lost_per_100, blip_same_agent_pct, failback_s; any other key is printed too).
Usage: python -m bench.bench_survive [--quick] [--out bench/results/survive.json].
Needs root for the netns rows (they are reported "skipped: <reason>" otherwise),
kamailio and pjsua2. Prints a markdown table and writes the JSON. The machine is
shared: read the figures as orders of magnitude, not digits.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from drivers.reactor import MonotonicClock, Reactor
from firmware.core.config.schema import default_document
from firmware.sip import api
from firmware.sip.pjbridge import PjBridge
from lab.agent import dominant_tone
from lab.agentctl import Agent
from lab.chaos import ChaosProxy, random_schedule
from lab.kamailio import Kamailio
from lab.netns import NetnsLink, unavailable

log = logging.getLogger("bench.survive")
OUT = Path(__file__).with_name("results") / "survive.json"
USERS = {"branch": "secret", "agent1": "secret", "agent2": "secret"}
ALIASES = {"2001": "branch", "2002": "branch"}
LAB_OPTIONS = {"options_interval_s": 0.5, "options_timeout_s": 0.5, "options_misses": 2}
HOOK_ROWS = {  # what firmware/survive/bench.py's run() reports, by key
    "loss_to_fallback_s": ("WAN loss -> PSTN caller hears local fallback", "<= 3 s"),
    "calls_lost_per_100": ("calls lost per 100 outages (full stack)", "0"),
    "blip_same_agent_pct": ("same agent after 2/5/9 s blips (full stack)", "100 %"),
    "failback_s": ("failback with callers handed back (full stack)", ""),
}
FAILBACK_STABLE_S = 5.0  # survive.failback_stable_s for the failback row (default 30 s)


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


# --- rows 1 and 7: detection and return of the edge --------------------------------------
def _state_machine():
    """firmware.survive.state.Survivability, if survive has written it."""
    if importlib.util.find_spec("firmware.survive") is None or \
            importlib.util.find_spec("firmware.survive.state") is None:
        return None
    from firmware.survive import state
    return state


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
    surv = sm.Survivability(box.reactor, box.doc)
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
    if importlib.util.find_spec("firmware.forward") is None:
        return {"status": "pending", "why": "firmware/forward.py is not there yet"}
    from firmware.cdr import CdrStore
    from firmware.forward import Forwarder, HttpTransport
    from lab.records import RecordsReceiver

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


# --- the fake-time rows (survive) ------------------------------------------------------
def survive_rows() -> dict[str, Any]:
    """Rows 2, 4 and the full-stack part of 5 and 7 need firmware/survive."""
    if importlib.util.find_spec("firmware.survive") is None:
        return {"status": "pending", "why": "firmware/survive is not there yet "
                                            "(state machine, fallback chain, handback)"}
    hook = importlib.util.find_spec("firmware.survive.bench")
    if hook is None:
        return {"status": "pending", "why": "firmware/survive exists but has no bench "
                                            "hook yet (firmware/survive/bench.py: run() -> "
                                            "dict of the fake-time figures)"}
    from firmware.survive import bench as survive_bench  # type: ignore[attr-defined]
    return {"status": "measured", **survive_bench.run()}


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


def table(res: dict[str, Any]) -> str:
    rows = [("figure", "value", "target", "how")]
    net = res.get("net", {})
    if "skipped" in net:
        rows.append(("real-network rows", f"skipped: {net['skipped']}", "", "netns"))
    else:
        for name, key in (("lab options 0.5/0.5/2", "detect_lab"),
                          ("default options", "detect_default")):
            d = net.get(key, {})
            rows.append((f"WAN loss -> edge down ({name})", _fmt(d.get("down_s", {})),
                         "<= 2 s", "real, netns link down"))
        surv = res["survive"]
        for name, key in (("lab options", "detect_lab"), ("default options", "detect_default")):
            d = net.get(key, {})
            rows.append((f"WAN loss -> SURVIVABLE ({name})",
                         _fmt(d["survivable_s"]) if "survivable_s" in d else d.get("survive"),
                         "~2 s", "real, netns + survive state machine"))
        for dur, b in net.get("blips", {}).items():
            rows.append((f"same agent after a {dur} blip",
                         f"{b['share_pct']} % ({b['resumed']}/{b['calls']}); audio back "
                         f"{_fmt(b['audio_back_s'])}", "100 %", "real, netns (bridge level)"))
        o = net.get("outages", {})
        if o:
            rows.append(("calls lost per 100 random outages",
                         f"{o['per_100_outages']} ({o['calls_lost']} of {o['calls_up']} calls, "
                         f"{o['outages']} outages)", "0", "real, netns flaps (bridge level)"))
        d = net.get("detect_lab", {})
        rows.append(("WAN back -> edge answering", _fmt(d.get("back_s", {})), "",
                     "real, netns"))
        rows.append((f"failback (WAN back -> CLOUD_PRIMARY, failback_stable_s "
                     f"{FAILBACK_STABLE_S:g})",
                     _fmt(d["failback_s"]) if "failback_s" in d else d.get("survive"),
                     "stable_s + ~1 s", "real, netns + survive state machine"))
        for key, (name, target) in HOOK_ROWS.items():
            rows.append((name, surv.get(key, surv.get("why", "not reported by the hook")),
                         target, "fake time (firmware/survive/bench.py)"))
        for key, value in surv.items():
            if key not in ("status", "why", *HOOK_ROWS):
                rows.append((key, value, "", "fake time (firmware/survive/bench.py)"))
    r = res["records"]
    if r.get("status") == "measured":
        rows.append(("records lost / stored twice after recovery",
                     f"{r['lost']} / {r['stored_twice']} of {r['records']} (redelivered "
                     f"{r['redelivered']}, in order: {r['in_order']}, drained in "
                     f"{r['wan_back_to_drained_s']} s)", "0 / 0",
                     "real loopback, chaos proxy TCP flaps"))
    else:
        rows.append(("records lost / duplicated", r.get("why", "-"), "0 / 0", "forward"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def run_net(args: argparse.Namespace) -> dict[str, Any]:
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    repeats = 2 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="bench-survive-net-") as tmp:
        lab = NetLab(Path(tmp))
        try:
            defaults = {k: default_document()["sip"][k] for k in LAB_OPTIONS}
            return {
                "detect_lab": detection(lab, LAB_OPTIONS, repeats, FAILBACK_STABLE_S),
                "detect_default": {"options": defaults,
                                   **detection(lab, defaults, repeats)},
                "blips": blips(lab, [2.0, 5.0, 9.0], 1 if args.quick else 2),
                "outages": outages(lab, 20 if args.quick else args.outages, args.seed),
            }
        finally:
            lab.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="survivability benchmarks (issue 5)")
    p.add_argument("--quick", action="store_true", help="fewer repeats (about 1.5 min)")
    p.add_argument("--outages", type=int, default=100)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    t0 = time.monotonic()
    res: dict[str, Any] = {
        "meta": {"machine": platform.machine(), "python": platform.python_version(),
                 "quick": args.quick, "when": time.strftime("%Y-%m-%d %H:%M:%S")},
        "net": run_net(args),
        "records": records(200 if args.quick else 1000, 8 if args.quick else 20, args.seed),
        "survive": survive_rows(),
    }
    res["meta"]["runtime_s"] = round(time.monotonic() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    sys.stdout.write(table(res) + f"\n\nJSON: {args.out} ({res['meta']['runtime_s']} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
