"""The cloud side of the fleet bench: a process with one paho MQTT 5 client holding the
"platform" certificate, in the shared subscription group $share/platform/ (how a
platform's consumers split the fleet's messages on any MQTT 5 broker), checking every
message with protocol.decode like the agent does.

It measures what the platform sees: births (the connect storm), telemetry delivered per
second and lost (gaps in each device's seq), CTI event latency (the payload's `sent`
against receipt), records (acknowledged on records/ack), and command round trips: it
sends `commands` commands spread over the steady window, each with a Response Topic and
Correlation Data that carries its sending time, so any consumer of the group can time
the result.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.fleet_agents import Plan, Signals
from bench.fleet_net import Identity, new_client
from firmware.agent.protocol import (
    OUTBOUND,
    PREFIX,
    ProtocolError,
    Topic,
    decode,
    encode,
    parse_topic,
    topic,
)

GROUP = "platform"


def subscriptions(shared: bool) -> list[str]:
    """The platform's topic filters: every outbound topic of every device."""
    base = [f"{PREFIX}/+/{t}" for t in sorted(OUTBOUND)]
    return [f"$share/{GROUP}/{f}" for f in base] if shared else base


@dataclass
class PlatformStats:
    births: dict[str, float] = field(default_factory=dict)  # device -> monotonic
    offline: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    telemetry_at: list[float] = field(default_factory=list)
    telemetry_latency: list[float] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)
    telemetry_lost: int = 0
    event_latency: list[float] = field(default_factory=list)
    event_at: list[float] = field(default_factory=list)
    quality_latency: list[float] = field(default_factory=list)
    cmd_rtt: list[float] = field(default_factory=list)
    cmd_status: dict[str, int] = field(default_factory=dict)
    bad: int = 0
    commands_sent: int = 0
    acks_sent: int = 0


class Platform:
    """One consumer of the group (see the module docstring)."""

    def __init__(self, plan: Plan, ident: Identity, index: int, shared: bool) -> None:
        self.index, self.shared = index, shared
        self.client = new_client(plan.broker, ident, device=False, now_wall=time.time(),
                                 client_id=f"{ident.cn}-{index}-{os.getpid()}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.stats = PlatformStats()
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.handlers = {Topic.STATUS: self._status, Topic.TELEMETRY: self._telemetry,
                         Topic.EVENTS: self._event, Topic.QUALITY: self._quality,
                         Topic.RECORDS: self._records, Topic.CMD_RESULT: self._result}
        self.plan = plan

    def start(self) -> None:
        self.client.connect(self.plan.broker.host, self.plan.broker.port, 60, clean_start=True)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(f, SubscribeOptions(qos=1)) for f in subscriptions(self.shared)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reasons: list[ReasonCode], properties: Any) -> None:
        if not any(r.is_failure for r in reasons):
            self.ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now, wall = time.monotonic(), time.time()
        parsed = parse_topic(msg.topic)
        if parsed is None:
            self.stats.bad += 1
            return
        device, t = parsed
        try:
            doc = decode(t, bytes(msg.payload))
        except ProtocolError:
            self.stats.bad += 1
            return
        self.stats.counts[t] = self.stats.counts.get(t, 0) + 1
        handler = self.handlers.get(t)
        if handler is not None:
            handler(device, doc, msg, now, wall)

    def _status(self, device: str, doc: dict[str, Any], msg: mqtt.MQTTMessage, now: float,
                wall: float) -> None:
        if doc["state"] == "online":
            self.stats.births.setdefault(device, now)
        else:
            self.stats.offline += 1

    def _telemetry(self, device: str, doc: dict[str, Any], msg: mqtt.MQTTMessage, now: float,
                   wall: float) -> None:
        s = self.stats
        s.telemetry_at.append(now)
        s.telemetry_latency.append(wall - doc["time"])
        last = s.last_seq.get(device)
        if last is not None and doc["seq"] > last + 1:
            s.telemetry_lost += doc["seq"] - last - 1
        s.last_seq[device] = doc["seq"]

    def _event(self, device: str, doc: dict[str, Any], msg: mqtt.MQTTMessage, now: float,
               wall: float) -> None:
        self.stats.event_latency.append(wall - doc["sent"])
        self.stats.event_at.append(now)

    def _quality(self, device: str, doc: dict[str, Any], msg: mqtt.MQTTMessage, now: float,
                 wall: float) -> None:
        self.stats.quality_latency.append(wall - doc["ended"])

    def _records(self, device: str, doc: dict[str, Any], msg: mqtt.MQTTMessage, now: float,
                 wall: float) -> None:
        ack = encode(Topic.RECORDS_ACK, {"batch": doc["batch"],
                                         "uuids": [r["uuid"] for r in doc["records"]]})
        self.client.publish(topic(device, Topic.RECORDS_ACK), ack, qos=1)
        self.stats.acks_sent += 1

    def _result(self, device: str, doc: dict[str, Any], msg: mqtt.MQTTMessage, now: float,
                wall: float) -> None:
        corr = getattr(getattr(msg, "properties", None), "CorrelationData", None)
        try:
            sent = float(bytes(corr or b"").decode().rsplit(":", 1)[1])
        except (IndexError, ValueError, UnicodeDecodeError):
            self.stats.bad += 1
            return
        self.stats.cmd_rtt.append(now - sent)
        self.stats.cmd_status[doc["status"]] = self.stats.cmd_status.get(doc["status"], 0) + 1

    # ---- commands (this process's main thread) ----
    def command(self, device: str, n: int) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topic(device, Topic.CMD_RESULT)
        props.CorrelationData = f"{self.index}:{n}:{time.monotonic():.6f}".encode()
        wall = time.time()
        cmd = encode(Topic.CMD, {"id": uuidlib.uuid4().hex, "name": "selftest",
                                 "issued": round(wall, 3), "expires": round(wall + 30, 3)})
        self.client.publish(topic(device, Topic.CMD), cmd, qos=1, properties=props)
        self.stats.commands_sent += 1

    def report(self) -> dict[str, Any]:
        s = self.stats
        return {"births": s.births, "offline": s.offline, "counts": s.counts,
                "telemetry_at": s.telemetry_at, "telemetry_latency": s.telemetry_latency,
                "telemetry_lost": s.telemetry_lost, "event_latency": s.event_latency, "event_at": s.event_at,
                "quality_latency": s.quality_latency, "cmd_rtt": s.cmd_rtt,
                "cmd_status": s.cmd_status, "bad": s.bad, "commands_sent": s.commands_sent,
                "acks_sent": s.acks_sent}


@dataclass(frozen=True)
class Orders:
    """What a platform process is asked to do."""

    index: int
    shared: bool
    devices: tuple[str, ...]  # who to send commands to
    commands: int  # this consumer's share
    window_s: float  # spread over this many seconds from the steady signal
    drain_s: float = 5.0


def run(plan: Plan, ident: Identity, orders: Orders, signals: Signals, steady: Any,
        results: Any) -> None:
    """A platform process: connect and subscribe, report ready, send the commands once
    the fleet is up, report its figures at finish."""
    parent = os.getppid()
    p = Platform(plan, ident, orders.index, orders.shared)
    try:
        p.start()
        if not p.ready.wait(30):
            results.put(("platform", orders.index, {"error": "no SUBACK within 30 s"}))
            return
        results.put(("ready", -1 - orders.index, None))
        while not steady.wait(0.2):
            if os.getppid() != parent or time.monotonic() > plan.deadline or \
                    signals.finish.is_set():
                break
        else:
            _send(p, orders, signals)
        while not signals.finish.wait(0.2):
            if os.getppid() != parent or time.monotonic() > plan.deadline:
                break
        results.put(("platform", orders.index, p.report()))
    except KeyboardInterrupt:
        pass
    finally:
        p.client.disconnect()
        p.client.loop_stop()


def _send(p: Platform, orders: Orders, signals: Signals) -> None:
    """Commands at an even pace over the window, round robin over shuffled devices."""
    devices = list(orders.devices)
    random.Random(orders.index).shuffle(devices)
    if not devices or orders.commands <= 0:
        return
    gap = orders.window_s / orders.commands
    t0 = time.monotonic()
    for n in range(orders.commands):
        wait = t0 + n * gap - time.monotonic()
        if wait > 0 and signals.stop_traffic.wait(wait):
            return
        if signals.stop_traffic.is_set():
            return
        p.command(devices[n % len(devices)], n)
