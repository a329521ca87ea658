"""Fleet scale: N simulated agents against the lab's Mosquitto (mTLS, ACLs), the figures
the closing note quotes against the goal (1,000 agents on one broker, command round
trip p99 < 1 s, an idle box < 1 MB a day).

Agents run in --procs processes (bench/fleet_agents.py), the platform in its own
(bench/fleet_platform.py); one run is: connect storm (all at once), --seconds of steady
traffic in compressed time (--compress 60: the box's minute is a second), commands
spread over the steady window, drain, clean stop. Then one metered connection replays a
simulated day of the real payloads (bench/fleet_meter.py, bench/fleet_day.py) for the
bytes per device per day. Broker CPU from /proc/<pid>/stat, memory VmRSS/VmHWM.
Usage: python -m bench.bench_fleet [--agents 1000] [--procs 4] [--seconds 60] [--quick]
[--repeats 1] [--loop select|thread] [--out bench/results/fleet.json]. Every process
and the broker are stopped on exit, Ctrl-C or failure; each phase has a time limit.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import fleet_agents, fleet_platform
from bench.fleet_agents import Plan, Signals
from bench.fleet_day import days as make_days
from bench.fleet_meter import Meter, day_budget
from bench.fleet_net import BrokerAddr, Identity, issue, proc_cpu_s, proc_mem_kb
from bench.fleet_payloads import Templates, templates
from lab.mosquitto import PLATFORM, Mosquitto
from lab.pki import Pki

log = logging.getLogger("bench.fleet")
OUT = Path(__file__).with_name("results") / "fleet.json"
GOAL_RTT_P99_S = 1.0
GOAL_IDLE_BYTES = 1_000_000
BUSY_CALLS_PER_DAY = 200


# --- one run -----------------------------------------------------------------------------
class Run:
    """The processes of one run and their phases (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, plan: Plan, idents: list[Identity],
                 platform_ident: Identity, broker_pid: int) -> None:
        self.args, self.plan, self.idents = args, plan, idents
        self.platform_ident, self.broker_pid = platform_ident, broker_pid
        self.ctx = mp.get_context("spawn")
        self.results = self.ctx.Queue()
        self.signals = Signals(self.ctx.Event(), self.ctx.Event(), self.ctx.Event(),
                               self.ctx.Array("i", args.procs), self.ctx.Value("d", 0.0))
        self.steady = self.ctx.Event()
        self.procs: list[Any] = []
        self.got: dict[tuple[str, int], Any] = {}
        self.marks: dict[str, float] = {}
        self.broker: dict[str, Any] = {}

    def _spawn(self, target: Any, args: tuple[Any, ...], name: str) -> None:
        p = self.ctx.Process(target=target, args=args, name=name, daemon=True)
        p.start()
        self.procs.append(p)

    def _collect(self, kinds: set[tuple[str, int]], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not kinds <= set(self.got):
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} within {timeout:g} s "
                                   f"(missing {sorted(kinds - set(self.got))[:5]})")
            if any(p.exitcode not in (None, 0) for p in self.procs):
                raise RuntimeError(f"a bench process died while waiting for {what}: "
                                   + ", ".join(f"{p.name} exit {p.exitcode}"
                                               for p in self.procs if p.exitcode))
            try:
                kind, index, body = self.results.get(timeout=min(left, 0.5))
            except Exception:  # noqa: BLE001 - queue.Empty from another module
                continue
            self.got[(kind, index)] = body

    def execute(self) -> dict[str, Any]:
        try:
            return self._phases()
        finally:
            self.stop()

    def _phases(self) -> dict[str, Any]:
        a = self.args
        devices = tuple(i.cn for i in self.idents)
        rng = random.Random(a.seed)
        busy = [rng.random() < a.busy_share for _ in self.idents]
        for c in range(a.consumers):
            share = a.commands // a.consumers + (1 if c < a.commands % a.consumers else 0)
            orders = fleet_platform.Orders(c, a.consumers > 1 or not a.no_share, devices,
                                           share, a.seconds * 0.8)
            self._spawn(fleet_platform.run, (self.plan, self.platform_ident, orders,
                                             self.signals, self.steady, self.results),
                        f"fleet-platform-{c}")
        self._collect({("ready", -1 - c) for c in range(a.consumers)}, 60, "platform SUBACK")
        chunks = [list(range(i, len(self.idents), a.procs)) for i in range(a.procs)]
        for k, chunk in enumerate(chunks):
            self._spawn(fleet_agents.run, (self.plan, [self.idents[i] for i in chunk],
                                           [busy[i] for i in chunk], k, self.signals,
                                           self.results), f"fleet-agents-{k}")
        self._collect({("ready", k) for k in range(a.procs)}, 120, "agent processes ready")
        mem0 = proc_mem_kb(self.broker_pid)
        cpu0 = proc_cpu_s(self.broker_pid)
        self.marks["go"] = time.monotonic()
        self.signals.go.set()
        self._wait_storm(len(self.idents), a.storm_timeout)
        self.marks["storm_done"] = time.monotonic()
        cpu1 = proc_cpu_s(self.broker_pid)
        mem1 = proc_mem_kb(self.broker_pid)
        self.marks["steady"] = time.monotonic()
        self.signals.steady_at.value = self.marks["steady"]
        self.steady.set()
        rss_max = self._steady(a.seconds)
        self.marks["stop"] = time.monotonic()
        cpu2 = proc_cpu_s(self.broker_pid)
        mem2 = proc_mem_kb(self.broker_pid)
        self.signals.stop_traffic.set()
        time.sleep(a.drain)
        self.signals.finish.set()
        self._collect({("agents", k) for k in range(a.procs)}
                      | {("platform", c) for c in range(a.consumers)}, 90, "final reports")
        self.broker = {"cpu_storm_s": cpu1 - cpu0, "cpu_steady_s": cpu2 - cpu1,
                       "rss_idle_kb": mem0.get("VmRSS", 0),
                       "rss_connected_kb": mem1.get("VmRSS", 0),
                       "rss_steady_max_kb": max(rss_max, mem2.get("VmRSS", 0)),
                       "hwm_kb": mem2.get("VmHWM", 0)}
        return self.figures(busy)

    def _wait_storm(self, n: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while sum(self.signals.subscribed[:]) < n:
            if time.monotonic() > end:
                log.warning("connect storm: only %d of %d subscribed within %g s",
                            sum(self.signals.subscribed[:]), n, timeout)
                return
            if any(p.exitcode not in (None, 0) for p in self.procs):
                raise RuntimeError("a bench process died during the connect storm")
            time.sleep(0.05)

    def _steady(self, seconds: float) -> int:
        end, rss = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            rss = max(rss, proc_mem_kb(self.broker_pid).get("VmRSS", 0))
            if any(p.exitcode not in (None, 0) for p in self.procs):
                raise RuntimeError("a bench process died during the steady phase")
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        return rss

    def stop(self) -> None:
        """Every process of the run ends: asked, then terminated, then killed."""
        for ev in (self.signals.go, self.signals.stop_traffic, self.signals.finish, self.steady):
            ev.set()
        end = time.monotonic() + 15
        for p in self.procs:
            while p.is_alive() and time.monotonic() < end:
                self._drain_queue()
                p.join(0.2)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        self._drain_queue()
        self.results.close()
        self.results.join_thread()

    def _drain_queue(self) -> None:
        try:
            while True:
                kind, index, body = self.results.get_nowait()
                self.got[(kind, index)] = body
        except Exception:  # noqa: BLE001 - queue.Empty
            return

    # ---- figures ----
    def figures(self, busy: list[bool]) -> dict[str, Any]:
        a, n = self.args, len(self.idents)
        agents = [self.got[("agents", k)] for k in range(a.procs)]
        plats = [self.got[("platform", c)] for c in range(a.consumers)]
        starts = [t for r in agents for t in r["connect_start"]]
        subs = [t for r in agents for t in r["subscribed"]]
        births: dict[str, float] = {}
        for p in plats:
            for dev, t in p.get("births", {}).items():
                births[dev] = min(t, births.get(dev, t))
        t0 = min(starts) if starts else self.marks["go"]
        steady_s = self.marks["stop"] - self.marks["steady"]
        tel = [t for p in plats for t in p.get("telemetry_at", [])
               if self.marks["steady"] <= t < self.marks["stop"]]
        published: dict[str, int] = {}
        for r in agents:
            for k, v in r["published"].items():
                published[k] = published.get(k, 0) + v
        sent = sum(p.get("commands_sent", 0) for p in plats)
        rtt = [x for p in plats for x in p.get("cmd_rtt", [])]
        return {
            "agents": n, "busy_agents": sum(busy), "procs": a.procs, "loop": a.loop,
            "storm": {"all_subscribed_s": _r(max(subs) - t0) if len(subs) == n else None,
                      "subscribed": len(subs),
                      "births_seen_s": _r(max(births.values()) - t0)
                      if len(births) == n else None, "births_seen": len(births),
                      "per_client_s": _pct([x for r in agents for x in r["connect_s"]]),
                      "refused": sum(r["refused"] for r in agents),
                      "connect_errors": sum(r["connect_errors"] for r in agents)},
            "telemetry": {"delivered_per_s": _r(len(tel) / steady_s, 1),
                          "offered_per_s": _r(n * a.compress / 60.0, 1),
                          "lost": sum(p.get("telemetry_lost", 0) for p in plats),
                          "latency_s": _pct(self._steady_only(plats, "telemetry_at",
                                                              "telemetry_latency"))},
            "events": {"latency_s": _pct(self._steady_only(plats, "event_at", "event_latency")),
                       "latency_whole_run_s": _pct([x for p in plats
                                                    for x in p.get("event_latency", [])]),
                       "published": published.get("events", 0)},
            "quality_latency_s": _pct([x for p in plats for x in p.get("quality_latency", [])]),
            "records": {"published": published.get("records", 0),
                        "acked": sum(r["records_acked"] for r in agents),
                        "ack_rtt_s": _pct([x for r in agents for x in r["record_rtt"]])},
            "commands": {"sent": sent, "answered": sum(r["commands_answered"] for r in agents),
                         "results": len(rtt), "rtt_s": _pct(rtt),
                         "status": _merge([p.get("cmd_status", {}) for p in plats])},
            "broker": {**self.broker,
                       "cpu_steady_pct": _r(100 * self.broker["cpu_steady_s"] / steady_s, 1),
                       "kb_per_connection": _r((self.broker["rss_connected_kb"]
                                                - self.broker["rss_idle_kb"]) / max(1, n), 1)},
            "simulator": {"cpu_s": [r["cpu_s"] for r in agents],
                          "tick_lag_p99_s": max((r["lag_p99"] or 0) for r in agents),
                          "disconnects": sum(r["disconnects"] for r in agents),
                          "bad_inbound": sum(r["bad_inbound"] for r in agents),
                          "platform_bad": sum(p.get("bad", 0) for p in plats)},
            "wire_in_run": _wire(agents),
            "steady_s": _r(steady_s), "published": published,
        }


    def _steady_only(self, plats: list[dict[str, Any]], at: str, values: str) -> list[float]:
        """The values received in the steady window (not the storm's aftermath)."""
        lo, hi = self.marks["steady"], self.marks["stop"]
        return [v for p in plats for t, v in zip(p.get(at, []), p.get(values, []), strict=True)
                if lo <= t < hi]


def _r(x: float, nd: int = 3) -> float:
    return round(x, nd)


def _pct(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    xs = sorted(xs)
    return {"n": len(xs), "p50": _r(xs[len(xs) // 2], 4), "p99": _r(xs[int(len(xs) * 0.99)], 4),
            "max": _r(xs[-1], 4)}


def _merge(ds: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _wire(agents: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for kind in ("idle", "busy"):
        rows = [r["wire"][kind] for r in agents]
        count = sum(w["agents"] for w in rows)
        up = sum(w["up_s"] for w in rows)
        tls = sum(w["tls_bytes"] for w in rows)
        out[kind] = {"agents": count, "tls_bytes_per_agent": round(tls / count) if count else 0,
                     "up_s_per_agent": _r(up / count, 1) if count else 0}
    return out


# --- the whole bench -----------------------------------------------------------------------
def run_all(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"meta": _meta(args)}
    t0 = time.monotonic()
    for name in ("firmware", "drivers", "lab"):  # the sim core's start and stop lines
        logging.getLogger(name).setLevel(logging.WARNING)
    day = make_days(args.seed)
    tpl = templates(day)
    res["payloads"] = {"sizes": tpl.sizes, "day": {k: d.summary() for k, d in day.items()}}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        pki = Pki(Path(tmp) / "pki")
        names = [f"bl-fleet-{i:04d}" for i in range(args.agents)]
        idents = issue(pki.directory, names)
        meter_ids = issue(pki.directory, ["bl-meter", "bl-meter-ping"])
        res["runs"] = []
        for r in range(args.repeats):
            with Mosquitto(Path(tmp) / f"broker{r}", pki, log_types="error warning") as broker:
                plan = _plan(args, broker, tpl)
                plat = Identity(PLATFORM, str(broker.platform_cert), str(broker.platform_key))
                pid = broker.proc.pid if broker.proc is not None else 0
                log.warning("run %d/%d: %d agents in %d processes, %g s", r + 1, args.repeats,
                            args.agents, args.procs, args.seconds)
                res["runs"].append(Run(args, plan, idents, plat, pid).execute())
                if r == args.repeats - 1:
                    meter = Meter(plan, meter_ids[0], meter_ids[1], plat)
                    m = meter.measure(day, args.meter_calls, args.meter_pace)
                    res["meter"] = m
                    res["bytes_per_day"] = day_budget(m, plan.keepalive_s, BUSY_CALLS_PER_DAY)
    res["meta"]["runtime_s"] = _r(time.monotonic() - t0, 1)
    return res


def _plan(args: argparse.Namespace, broker: Mosquitto, tpl: Templates) -> Plan:
    budget = 240 + args.storm_timeout + args.seconds + args.drain
    return Plan(broker=BrokerAddr(broker.host, broker.tls_port, str(broker.pki.ca_file)),
                templates=tpl, compress=args.compress, loop=args.loop,
                connectors=args.connectors, seed=args.seed,
                deadline=time.monotonic() + budget)


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "kernel": platform.release(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "compression": f"{args.compress:g}x: telemetry every {60 / args.compress:g} s, "
                           f"full snapshot every {3600 / args.compress:g} s, a busy agent's "
                           f"calls {BUSY_CALLS_PER_DAY / 10:g}/h of box time; keepalive "
                           "60 s not compressed",
            "wire": "TLS bytes measured from the kernel's tcp_info per socket (every TLS "
                    "record: handshake, MQTT headers, record overhead); IP bytes add 52 B "
                    "per counted segment (estimate)"}


# --- table -------------------------------------------------------------------------------
def summary(res: dict[str, Any]) -> dict[str, Any]:
    """Each scalar figure over the runs: median (min, max)."""
    def over(path: str) -> dict[str, Any]:
        vals = []
        for run in res["runs"]:
            v: Any = run
            for key in path.split("."):
                v = v.get(key) if isinstance(v, dict) else None
            if isinstance(v, int | float):
                vals.append(float(v))
        if not vals:
            return {"n": 0}
        return {"n": len(vals), "median": _r(statistics.median(vals), 4),
                "min": _r(min(vals), 4), "max": _r(max(vals), 4)}
    keys = ["storm.all_subscribed_s", "storm.births_seen_s", "storm.per_client_s.p99",
            "telemetry.delivered_per_s", "telemetry.lost", "events.latency_s.p50",
            "events.latency_s.p99", "commands.rtt_s.p50", "commands.rtt_s.p99",
            "records.ack_rtt_s.p99", "broker.cpu_storm_s", "broker.cpu_steady_pct",
            "broker.hwm_kb", "broker.kb_per_connection", "simulator.tick_lag_p99_s"]
    return {k: over(k) for k in keys}


def _fmt(stat: dict[str, Any], unit: str = "", scale: float = 1.0, nd: int = 2) -> str:
    if not stat.get("n"):
        return "-"
    med = stat["median"] * scale
    text = f"{med:.{nd}f}{unit}"
    if stat["n"] > 1:
        text += f" ({stat['min'] * scale:.{nd}f}-{stat['max'] * scale:.{nd}f}, n={stat['n']})"
    return text


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(res: dict[str, Any]) -> str:
    s = summary(res)
    run = res["runs"][-1]
    n = run["agents"]
    rows = [("figure", "value", "goal", "how")]
    how = f"{n} agents ({run['busy_agents']} busy) in {run['procs']} processes, {run['loop']} loop"
    rows.append(("connect storm: all connected + subscribed", _fmt(s["storm.all_subscribed_s"],
                 " s"), f"{n} agents", how + f"; {run['storm']['subscribed']}/{n} made it"))
    rows.append(("connect storm: births seen by the platform", _fmt(s["storm.births_seen_s"],
                 " s"), "", "$share consumer, from the first CONNECT"))
    rows.append(("one client's connect (TLS + CONNECT + SUBSCRIBE) p99",
                 _fmt(s["storm.per_client_s.p99"], " s"), "", "during the storm"))
    rows.append(("telemetry delivered to the platform", _fmt(s["telemetry.delivered_per_s"],
                 " msg/s", nd=0), f"offered {run['telemetry']['offered_per_s']:g}/s",
                 f"lost (seq gaps): {_fmt(s['telemetry.lost'], nd=0)}"))
    rows.append(("CTI event latency p50 / p99", _fmt(s["events.latency_s.p50"], " ms", 1000, 1)
                 + " / " + _fmt(s["events.latency_s.p99"], " ms", 1000, 1), "",
                 f"payload 'sent' -> platform; {run['events']['latency_s'].get('n', 0)} events"))
    p99 = s["commands.rtt_s.p99"]
    ok = bool(p99.get("n")) and p99["median"] < GOAL_RTT_P99_S and \
        run["commands"]["results"] == run["commands"]["sent"]
    rows.append(("command round trip p50 / p99", _fmt(s["commands.rtt_s.p50"], " ms", 1000, 1)
                 + " / " + _fmt(p99, " ms", 1000, 1), f"p99 < 1 s: {_verdict(ok)}",
                 f"{run['commands']['results']}/{run['commands']['sent']} answered "
                 "(Response Topic + Correlation Data)"))
    rows.append(("records acked round trip p99", _fmt(s["records.ack_rtt_s.p99"], " ms", 1000, 1),
                 "", f"{run['records']['acked']}/{run['records']['published']} CDRs acked"))
    rows.append(("broker CPU: storm / steady", _fmt(s["broker.cpu_storm_s"], " s") + " / "
                 + _fmt(s["broker.cpu_steady_pct"], " %", nd=1), "",
                 "/proc/<pid>/stat utime+stime (100 % = one core)"))
    rows.append(("broker memory: peak RSS / per connection",
                 _fmt(s["broker.hwm_kb"], " MB", 1 / 1024, 1) + " / "
                 + _fmt(s["broker.kb_per_connection"], " kB", nd=1), "", "VmHWM; VmRSS delta"))
    b = res.get("bytes_per_day")
    if b:
        idle, busy = b["idle"], b["busy"]
        rows.append(("bytes per device per day, idle box",
                     f"{idle['tls_bytes'] / 1e6:.3f} MB TLS ({idle['ip_bytes'] / 1e6:.3f} MB IP)",
                     f"< 1 MB: {_verdict(idle['ip_bytes'] < GOAL_IDLE_BYTES)}",
                     "meter: a day of the real Telemetry's messages + keepalive on the wire"))
        rows.append((f"bytes per device per day, busy box ({b['busy_calls_per_day']} calls)",
                     f"{busy['tls_bytes'] / 1e6:.3f} MB TLS ({busy['ip_bytes'] / 1e6:.3f} MB IP)",
                     "", "+ events, quality, CDR record + ack per call"))
    rows.append(("simulator tick lag p99", _fmt(s["simulator.tick_lag_p99_s"], " ms", 1000, 1),
                 "", "how late the agents' timers ran (CPU of the bench itself)"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="fleet scale: N simulated agents on one broker")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--procs", type=int, default=4, help="agent processes")
    p.add_argument("--seconds", type=float, default=60.0, help="steady phase, real seconds")
    p.add_argument("--quick", action="store_true",
                   help="100 agents, 2 processes, 15 s, 200 commands (the code path, not figures)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--compress", type=float, default=60.0, help="box seconds per real second")
    p.add_argument("--commands", type=int, default=2000)
    p.add_argument("--busy-share", type=float, default=0.2, help="share of busy agents")
    p.add_argument("--loop", choices=("select", "thread"), default="select")
    p.add_argument("--connectors", type=int, default=8,
                   help="select loop: connecting threads per process")
    p.add_argument("--consumers", type=int, default=1, help="platform consumers ($share)")
    p.add_argument("--no-share", action="store_true", help="plain subscription (1 consumer)")
    p.add_argument("--storm-timeout", type=float, default=120.0)
    p.add_argument("--drain", type=float, default=10.0)
    p.add_argument("--meter-calls", type=int, default=50,
                   help="calls replayed on the meter (scaled to 200 a day)")
    p.add_argument("--meter-pace", type=float, default=0.05,
                   help="seconds between the meter's messages (past the delayed-ACK timer)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.agents = min(args.agents, 100)
        args.procs = min(args.procs, 2)
        args.seconds = min(args.seconds, 15.0)
        args.commands = min(args.commands, 200)
        args.meter_calls = min(args.meter_calls, 10)
        args.meter_pace = min(args.meter_pace, 0.01)
        args.storm_timeout = min(args.storm_timeout, 60.0)
    args.procs = max(1, min(args.procs, args.agents))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    res = run_all(args)
    res["summary"] = summary(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    sys.stdout.write(table(res) + f"\n\nJSON: {args.out} ({res['meta']['runtime_s']} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
