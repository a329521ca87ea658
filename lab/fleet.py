"""The cloud side of fleet management for the demo and the tests: one box seen from the
platform over MQTT 5, every payload checked against the agent's own schemas both ways.

    python -m lab.fleet --broker mqtts://127.0.0.1:PORT --ca CA --cert CERT --key KEY \\
        DEVICE watch | set PATH=VALUE... | cmd NAME [k=v...] | job KIND [k=v...] | enrol CSR

`watch` prints the box's status, telemetry, CTI events with their latency (port to agent,
port to here), per-call quality, config reports, command answers and job progress as
readable one-liners, and acknowledges records (records/ack) so the box's outbox drains.
`set` pushes a desired config and waits for the report, `cmd` sends a command and waits for
its answer (MQTT 5 Response Topic and Correlation Data), `job` starts a job and follows it
to its end, `enrol --pki DIR` signs a device's CSR with the lab CA (lab/pki.py).

As a library: `Fleet(client, device).start()`, then drain() (or until()) on the caller's
thread, set()/command()/job() to drive the box. The client is any lab.mosquitto.MqttClient
(a PlatformClient in the tests and the demo).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from firmware.agent.protocol import ProtocolError, Topic, decode, encode, parse_topic, topic
from lab.kamailio import LabError
from lab.mosquitto import MqttClient
from lab.pki import Pki
from lab.wait import wait_until

T = TypeVar("T")
WATCHED = (Topic.STATUS, Topic.DESIRED, Topic.REPORTED, Topic.TELEMETRY, Topic.EVENTS,
           Topic.QUALITY, Topic.RECORDS, Topic.CMD_RESULT, Topic.JOB_STATUS)
TERMINAL_JOB = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED")
TERMINAL_REPORT = ("applied", "rejected", "confirmed", "rolled_back")
RETAINED_WAIT_S = 1.0  # the CLI waits this long for the retained status and config
TELEMETRY_SHOWN = (  # (parameter, label) in a telemetry line, when present
    ("Device.X_BRANCHLINE_WAN.Status", "WAN"),
    ("Device.Services.VoiceService.1.X_BRANCHLINE_Survivability.State", "survive"),
    ("Device.DeviceInfo.ProcessStatus.CPUUsage", "CPU %"),
    ("Device.DeviceInfo.MemoryStatus.Free", "mem free"),
    ("Device.DeviceInfo.TemperatureStatus.TemperatureSensor.1.Value", "temp"),
    ("Device.X_BRANCHLINE_Outbox.Pending", "outbox"),
)


@dataclass(frozen=True)
class Seen:
    """One message from the box: when it arrived (wall clock), its topic and payload, and
    the line the tool prints for it (None: nothing worth a line)."""

    at: float
    topic: Topic
    payload: dict[str, Any]
    text: str | None
    name: str = ""  # the full topic name


@dataclass
class State:
    """What the platform knows of the box, from what it has seen."""

    status: dict[str, Any] | None = None
    desired_version: int = 0
    reported: dict[str, Any] | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    telemetry: dict[str, Any] = field(default_factory=dict)  # merged params
    telemetry_count: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    quality: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # command id -> answer
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> latest status
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # uuid -> record
    duplicates: int = 0
    invalid: list[str] = field(default_factory=list)  # "<topic>: <field>: <rule>"


class Fleet:
    """See the module docstring. Messages queue on paho's thread; drain() handles them on
    the caller's, so a demo or test prints and decides from one thread."""

    def __init__(self, client: MqttClient, device: str, *, ack_records: bool = True,
                 out: Callable[[str], None] | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.client, self.device, self.ack_records = client, device, ack_records
        self.out, self.wall = out, wall
        self.state = State()
        self.reply_to = topic(device, Topic.CMD_RESULT) + f"/{uuid.uuid4().hex[:12]}"
        self._inbox: queue.Queue[tuple[float, mqtt.MQTTMessage]] = queue.Queue()
        self._started = False

    # ---- receiving ----
    def start(self) -> Fleet:
        """Subscribe to everything the box sends (and its retained desired config)."""
        if self._started:
            return self
        original = self.client.client.on_message

        def hook(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            if original is not None:
                original(client, userdata, msg)
            self._inbox.put((self.wall(), msg))

        self.client.client.on_message = hook
        for t in WATCHED:
            self._subscribe(topic(self.device, t))
        self._subscribe(topic(self.device, Topic.CMD_RESULT) + "/#")
        self._started = True
        return self

    def _subscribe(self, name: str) -> None:
        codes = self.client.subscribe(name, qos=1)
        if any(c.is_failure for c in codes):
            raise LabError(f"the broker refused the subscription to {name}: {codes}")

    def drain(self) -> list[Seen]:
        """Handle what arrived since the last call: check, remember, ack, describe."""
        seen: list[Seen] = []
        while True:
            try:
                at, msg = self._inbox.get_nowait()
            except queue.Empty:
                return seen
            got = self._handle(at, msg)
            if got is not None:
                seen.append(got)
                if got.text and self.out is not None:
                    self.out(got.text)

    def _handle(self, at: float, msg: mqtt.MQTTMessage) -> Seen | None:
        t = _topic_of(self.device, msg.topic)
        if t is None:
            return None
        try:
            payload = decode(t, bytes(msg.payload))
        except ProtocolError as exc:
            self.state.invalid.append(f"{msg.topic}: {exc}")
            return Seen(at, t, {}, f"INVALID on {t}: {exc}", msg.topic)
        text = HANDLERS[t](self, payload, at, bool(msg.retain))
        return Seen(at, t, payload, text, msg.topic)

    def until(self, predicate: Callable[[], T | None], timeout: float, what: str, *,
              tick: Callable[[float], object] = time.sleep, step: float = 0.05) -> T:
        """predicate()'s first truthy value, draining between tries (bounded)."""
        def check() -> T | None:
            self.drain()
            return predicate()
        return wait_until(check, timeout, what, step=step, tick=tick,
                          detail=lambda: self.state.invalid[-3:] or "nothing invalid seen")

    # ---- one handler per topic: remember, and the line to print ----
    def on_status(self, p: dict[str, Any], at: float, retained: bool) -> str:
        self.state.status = p
        why = f" ({p['reason']})" if p.get("reason") else ""
        old = " [retained]" if retained else ""
        return f"status {p['state'].upper()}{why}, firmware {p['version'] or '?'}{old}"

    def on_desired(self, p: dict[str, Any], at: float, retained: bool) -> str | None:
        self.state.desired_version = max(self.state.desired_version, int(p["version"]))
        return None

    def on_reported(self, p: dict[str, Any], at: float, retained: bool) -> str:
        self.state.reported = p
        self.state.reports.append(p)
        if p.get("version") is not None:
            self.state.desired_version = max(self.state.desired_version, int(p["version"]))
        return describe_report(p) + (" [retained]" if retained else "")

    def on_telemetry(self, p: dict[str, Any], at: float, retained: bool) -> str:
        self.state.telemetry.update(p["params"])
        self.state.telemetry_count += 1
        return describe_telemetry(p)

    def on_event(self, p: dict[str, Any], at: float, retained: bool) -> str:
        self.state.events.append({**p, "received": at})
        return describe_event(p, at)

    def on_quality(self, p: dict[str, Any], at: float, retained: bool) -> str:
        self.state.quality.append(p)
        return describe_quality(p)

    def on_records(self, p: dict[str, Any], at: float, retained: bool) -> str:
        uuids = [r["uuid"] for r in p["records"]]
        for rec in p["records"]:
            if rec["uuid"] in self.state.records:
                self.state.duplicates += 1
            self.state.records[rec["uuid"]] = rec
        kinds = Counter(r["kind"] for r in p["records"])
        what = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        acked = ""
        if self.ack_records:
            self.publish(Topic.RECORDS_ACK, {"batch": p["batch"], "uuids": uuids}, wait=False)
            acked = ": acknowledged"
        return f"records batch {p['batch'][:8]}: {len(uuids)} ({what}){acked}"

    def on_result(self, p: dict[str, Any], at: float, retained: bool) -> str:
        self.state.results[p["id"]] = p
        return describe_result(p)

    def on_job(self, p: dict[str, Any], at: float, retained: bool) -> str:
        self.state.jobs[p["id"]] = p
        return describe_job(p)

    # ---- sending ----
    def publish(self, t: Topic, payload: Mapping[str, Any], *, retain: bool = False,
                response_topic: str | None = None, correlation: bytes | None = None,
                wait: bool = True) -> None:
        """Check against the schema, publish QoS 1, and (wait) insist on the broker's PUBACK."""
        data = encode(t, payload)
        code = self.client.publish(topic(self.device, t), data, qos=1, retain=retain,
                                   response_topic=response_topic, correlation=correlation,
                                   wait=wait)
        if code is not None and code.is_failure:
            raise LabError(f"the broker refused {t} for {self.device}: {code}")

    def next_version(self) -> int:
        """One above every desired or reported version seen (drain() first to see them)."""
        return self.state.desired_version + 1

    def set(self, settings: Mapping[str, Any], *, confirm_s: int | None = None,
            reason: str = "") -> int:
        """Publish a desired config changing dotted settings; its version."""
        return self._desire({"set": dict(settings)}, confirm_s, reason)

    def put(self, document: Mapping[str, Any], *, confirm_s: int | None = None,
            reason: str = "") -> int:
        """Publish a whole desired config document; its version."""
        return self._desire({"document": dict(document)}, confirm_s, reason)

    def _desire(self, body: dict[str, Any], confirm_s: int | None, reason: str) -> int:
        version = self.next_version()
        payload: dict[str, Any] = {"version": version, "issued": round(self.wall(), 3), **body}
        if confirm_s is not None:
            payload["confirm_s"] = confirm_s
        if reason:
            payload["reason"] = reason
        self.publish(Topic.DESIRED, payload, retain=True)
        self.state.desired_version = version
        return version

    def report_for(self, version: int, states: tuple[str, ...] = TERMINAL_REPORT
                   ) -> dict[str, Any] | None:
        return next((r for r in reversed(self.state.reports)
                     if r.get("version") == version and r["state"] in states), None)

    def command(self, name: str, args: Mapping[str, Any] | None = None, *,
                expires_s: float | None = None, issued: float | None = None,
                command_id: str | None = None) -> str:
        """Send a command (answer to our response topic, correlated by its id); its id."""
        cid = command_id or str(uuid.uuid4())
        now = self.wall()
        payload: dict[str, Any] = {"id": cid, "name": name,
                                   "issued": round(now if issued is None else issued, 3)}
        if expires_s is not None:
            payload["expires"] = round(now + expires_s, 3)
        if args:
            payload["args"] = dict(args)
        self.publish(Topic.CMD, payload, response_topic=self.reply_to, correlation=cid.encode())
        return cid

    def job(self, kind: str, args: Mapping[str, Any] | None = None, *,
            timeout_s: int | None = None, step_timeout_s: int | None = None) -> str:
        """Start a job; its id."""
        jid = str(uuid.uuid4())
        payload: dict[str, Any] = {"id": jid, "kind": kind, "issued": round(self.wall(), 3)}
        if args:
            payload["args"] = dict(args)
        if timeout_s is not None:
            payload["timeout_s"] = timeout_s
        if step_timeout_s is not None:
            payload["step_timeout_s"] = step_timeout_s
        self.publish(Topic.JOBS, payload)
        return jid

    def cancel(self, job_id: str) -> None:
        self.publish(Topic.JOB_CANCEL, {"id": job_id, "issued": round(self.wall(), 3)})

    def clear_retained(self) -> None:
        """Remove the retained desired config (an empty retained message)."""
        self.client.publish(topic(self.device, Topic.DESIRED), b"", qos=1, retain=True)


HANDLERS: dict[Topic, Callable[[Fleet, dict[str, Any], float, bool], str | None]] = {
    Topic.STATUS: Fleet.on_status, Topic.DESIRED: Fleet.on_desired,
    Topic.REPORTED: Fleet.on_reported, Topic.TELEMETRY: Fleet.on_telemetry,
    Topic.EVENTS: Fleet.on_event, Topic.QUALITY: Fleet.on_quality,
    Topic.RECORDS: Fleet.on_records, Topic.CMD_RESULT: Fleet.on_result,
    Topic.JOB_STATUS: Fleet.on_job,
}


def _topic_of(device: str, name: str) -> Topic | None:
    """The topic of a message for `device`, response topics under cmd/result included."""
    parsed = parse_topic(name)
    if parsed is not None:
        return parsed[1] if parsed[0] == device else None
    base = topic(device, Topic.CMD_RESULT) + "/"
    return Topic.CMD_RESULT if name.startswith(base) else None


# ---- readable one-liners ----

def _num(value: Any, fmt: str = ".1f", unit: str = "") -> str:
    return "-" if value is None else f"{float(value):{fmt}}{unit}"


def describe_report(p: Mapping[str, Any]) -> str:
    head = f"config v{p['version']} {p['state'].upper()}"
    if p.get("error"):
        e = p["error"]
        return f"{head}: {e.get('field') or 'document'}: {e['rule']}"
    tail = f" (store version {p['store_version']})" if p.get("store_version") is not None else ""
    if p["state"] == "confirming" and p.get("deadline") is not None:
        tail += f", confirm within {max(0.0, p['deadline'] - p['time']):.0f} s"
    if p.get("restart"):
        tail += f", waits for a restart: {', '.join(p['restart'])}"
    return head + tail


def describe_telemetry(p: Mapping[str, Any]) -> str:
    params = p["params"]
    shown = [f"{label} {params[name]}" for name, label in TELEMETRY_SHOWN if name in params]
    kind = "full" if p["full"] else "changed"
    return (f"telemetry #{p['seq']} {kind}: {len(params)} parameters"
            + (f" ({', '.join(shown)})" if shown else ""))


def describe_event(p: Mapping[str, Any], received: float) -> str:
    """`event ANSWERED fxo1 inbound 555 -> 800 call 1a2b3c4d (port->agent 3 ms, port->cloud
    5 ms)`."""
    who = f" {p['port']}" if p.get("port") else ""
    call = ""
    if p.get("ani") or p.get("dnis"):
        call = f" {p.get('direction') or ''} {p.get('ani') or '?'} -> {p.get('dnis') or '?'}"
    cid = f" call {p['call_id'][:8]}" if p.get("call_id") else ""
    data = p.get("data") or {}
    extra = ""
    if p["kind"] == "port_state":
        extra = f" {data.get('was')} -> {str(data.get('state')).upper()}"
    elif p["kind"] == "survivability":
        extra = f" {data.get('was')} -> {str(data.get('state')).upper()}"
    elif p["kind"] == "config_applied":
        extra = f" version {data.get('version')}"
    agent_ms = (p["sent"] - p["time"]) * 1000.0
    cloud_ms = (received - p["time"]) * 1000.0
    return (f"event {p['kind'].upper()}{who}{call.rstrip()}{cid}{extra} "
            f"(port->agent {agent_ms:.0f} ms, port->cloud {cloud_ms:.0f} ms)")


def describe_quality(p: Mapping[str, Any]) -> str:
    n, d = p["network"], p["dsp"]
    dtmf = d["dtmf"]
    modem = ", ".join(f"{m['tone']} ({m['side']}) at {m['at_s']:.1f} s" for m in d["modem"])
    network = (f"{n['codec']} MOS {_num(n['mos'], '.2f')} jitter {_num(n['jitter_ms'])} ms "
               f"loss {_num(n['loss_pct'])} % RTT {_num(n['rtt_ms'], '.0f')} ms"
               if n.get("codec") else "no RTP (local call)")
    return (f"quality {p['port']} call {p['call_id'][:8]}: {network}; echo canceller "
            f"{d['echo_canceller']}, ERLE mean {_num(d['erle_mean_db'])} dB worst "
            f"{_num(d['erle_worst_db'])} dB, residual echo {_num(d['residual_echo_dbm0'])} dBm0"
            f"; DTMF {dtmf['digits'] or 'none'} (in-band {dtmf['inband']}, RFC 4733 "
            f"{dtmf['rfc4733']}, INFO {dtmf['info']}); fax {'yes' if d['fax'] else 'no'}, "
            f"modem tones {modem or 'none'}")


def describe_result(p: Mapping[str, Any]) -> str:
    head = f"cmd {p['name']} {p['status'].upper()}"
    if p.get("error"):
        return f"{head}: {p['error']}"
    result = json.dumps(p.get("result") or {}, separators=(",", ":"))
    return f"{head}: {result[:160]}{'...' if len(result) > 160 else ''}"


def describe_job(p: Mapping[str, Any]) -> str:
    head = f"job {p['kind']} {p['id'][:8]} {p['state']} {float(p['progress']):3.0f}%"
    step = f" {p['step']}" if p.get("step") else ""
    if p.get("error"):
        return f"{head}{step}: {p['error']}"
    if p["state"] == "SUCCEEDED" and p.get("result"):
        return f"{head}{step}: {summary(p['result'])}"
    return head + step


def summary(result: Mapping[str, Any]) -> str:
    """A job's result in one short line: per port pass/FAIL for a line test."""
    ports = result.get("ports")
    if isinstance(ports, Mapping) and ports:
        words = [f"{name} {_verdict(r)}" for name, r in ports.items()]
        overall = "all pass" if result.get("pass") else "NOT all pass"
        return f"{overall}: {', '.join(words)}"
    text = json.dumps(result, separators=(",", ":"))
    return text[:160] + ("..." if len(text) > 160 else "")


def _verdict(r: Any) -> str:
    if not isinstance(r, Mapping):
        return "?"
    if "error" in r:
        return f"ERROR ({r['error']})"
    items = r.get("items") or []
    bad = [i.get("name", "?") for i in items if isinstance(i, Mapping) and i.get("pass") is False]
    if bad or r.get("pass") is False:
        return f"FAIL ({', '.join(bad) or 'see result'})"
    what = f"{r.get('test')} " if r.get("test") else ""
    return f"{what}pass" + (f" ({len(items)} checks)" if items else "")


# ---- the command line ----

def parse_pairs(items: list[str], what: str) -> dict[str, Any]:
    """k=v words; a value that reads as JSON (numbers, true, [..]) is taken as JSON."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise LabError(f"{what} {item!r}: write NAME=VALUE, e.g. survive.announce_every_s=8")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def connect(args: argparse.Namespace) -> MqttClient:
    url = urlsplit(args.broker)
    if url.scheme != "mqtts" or not url.hostname or not url.port:
        raise LabError(f"--broker {args.broker!r}: give mqtts://HOST:PORT")
    for name in ("ca", "cert", "key"):
        if not getattr(args, name) or not Path(getattr(args, name)).is_file():
            raise LabError(f"--{name}: give the platform's PEM file (lab/pki.py makes them)")
    return MqttClient(url.hostname, url.port, Path(args.ca), cert=Path(args.cert),
                      key=Path(args.key), client_id=f"fleet-{uuid.uuid4().hex[:8]}")


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


def cmd_watch(fleet: Fleet, args: argparse.Namespace) -> int:
    end = time.monotonic() + args.seconds if args.seconds else float("inf")
    try:
        while time.monotonic() < end:
            fleet.drain()
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    return 1 if fleet.state.invalid else 0


def cmd_set(fleet: Fleet, args: argparse.Namespace) -> int:
    time.sleep(RETAINED_WAIT_S)  # the retained desired/reported give the next version
    fleet.drain()
    version = fleet.set(parse_pairs(args.pairs, "set"), confirm_s=args.confirm_s)
    _say(f"desired config v{version} published")
    report = fleet.until(lambda: fleet.report_for(version), args.timeout,
                         f"the report of desired config v{version}")
    return 0 if report["state"] in ("applied", "confirmed") else 1


def cmd_cmd(fleet: Fleet, args: argparse.Namespace) -> int:
    cid = fleet.command(args.name, parse_pairs(args.pairs, "argument"))
    answer = fleet.until(lambda: fleet.state.results.get(cid), args.timeout,
                         f"the answer to {args.name}")
    return 0 if answer["status"] == "ok" else 1


def cmd_job(fleet: Fleet, args: argparse.Namespace) -> int:
    jid = fleet.job(args.kind, parse_pairs(args.pairs, "argument"))
    done = fleet.until(lambda: _finished(fleet, jid), args.timeout, f"the end of job {args.kind}")
    return 0 if done["state"] == "SUCCEEDED" else 1


def _finished(fleet: Fleet, job_id: str) -> dict[str, Any] | None:
    status = fleet.state.jobs.get(job_id)
    return status if status and status["state"] in TERMINAL_JOB else None


def cmd_enrol(args: argparse.Namespace) -> int:
    if not args.pki:
        raise LabError("enrol: give --pki DIR, the lab CA's directory (lab/pki.py)")
    try:
        csr = Path(args.csr).read_bytes()
    except OSError as exc:
        raise LabError(f"enrol: cannot read the CSR {args.csr}: {exc.strerror}") from None
    if not (Path(args.pki) / "ca.pem").is_file():
        raise LabError(f"enrol: no lab CA in {args.pki} (ca.pem and ca.key, made by lab/pki.py)")
    try:
        pem = Pki(Path(args.pki)).sign_csr(csr)
    except ValueError as exc:
        raise LabError(f"enrol: {args.csr} is not a PEM certificate request ({exc})") from None
    if args.out:
        Path(args.out).write_bytes(pem)
        print(f"certificate written to {args.out}")
    else:
        sys.stdout.write(pem.decode())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--broker", default="", help="mqtts://HOST:PORT")
    p.add_argument("--ca", help="the broker's CA (PEM)")
    p.add_argument("--cert", help="the platform's certificate (PEM)")
    p.add_argument("--key", help="the platform's key (PEM)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer")
    p.add_argument("device", metavar="DEVICE")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    watch = verbs.add_parser("watch", help="print what the box sends; ack its records")
    watch.add_argument("--seconds", type=float, default=0.0, help="stop after S seconds")
    put = verbs.add_parser("set", help="push desired settings PATH=VALUE...")
    put.add_argument("pairs", nargs="+", metavar="PATH=VALUE")
    put.add_argument("--confirm-s", type=int, help="commit-confirmed time (0: none)")
    cmd = verbs.add_parser("cmd", help="send a command NAME [k=v...]")
    cmd.add_argument("name", metavar="NAME")
    cmd.add_argument("pairs", nargs="*", metavar="k=v")
    job = verbs.add_parser("job", help="run a job KIND [k=v...] to its end")
    job.add_argument("kind", metavar="KIND")
    job.add_argument("pairs", nargs="*", metavar="k=v")
    enrol = verbs.add_parser("enrol", help="sign a device's CSR with the lab CA")
    enrol.add_argument("csr", metavar="CSR")
    enrol.add_argument("--pki", metavar="DIR", help="the lab CA's directory")
    enrol.add_argument("--out", metavar="FILE", help="write the certificate here (default stdout)")
    return p


VERBS: dict[str, Callable[[Fleet, argparse.Namespace], int]] = {
    "watch": cmd_watch, "set": cmd_set, "cmd": cmd_cmd, "job": cmd_job}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "enrol":
            return cmd_enrol(args)
        client = connect(args)
        try:
            fleet = Fleet(client, args.device, out=_say, ack_records=args.verb == "watch")
            fleet.start()
            return VERBS[args.verb](fleet, args)
        finally:
            client.close()
    except (LabError, ProtocolError, AssertionError) as exc:
        print(f"lab.fleet: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
