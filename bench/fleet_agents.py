"""The device side of the fleet bench: one process drives many simulated agents, each
a paho MQTT 5 client over mutual TLS with its own certificate, speaking the real
protocol: last will and birth, its inbound subscriptions, telemetry, the CTI events,
quality and CDR record of each call, and answers to commands (cmd -> cmd/result on the
Response Topic with the Correlation Data), every payload through protocol.encode/decode.

Time is compressed by `Plan.compress` (60: a minute of the box is a second here).

Two loop styles (Plan.loop): "select" runs every client of the process on one selector
(paho's external-loop API: loop_read/loop_write/loop_misc and the socket callbacks),
connecting through a small thread pool since paho's connect blocks on the TLS handshake;
"thread" gives each client paho's own loop_start thread.
"""

from __future__ import annotations

import heapq
import os
import queue
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.fleet_net import BrokerAddr, Identity, Wire, client_socket, new_client, status, wire
from bench.fleet_payloads import Call, Messages, Templates
from firmware.agent.protocol import (
    INBOUND,
    QOS,
    RETAIN,
    ProtocolError,
    Topic,
    decode,
    encode,
    parse_topic,
    prefix,
    topic,
)

DAY_S = 86400.0


@dataclass(frozen=True)
class Plan:
    """What every agent process is told (picklable)."""

    broker: BrokerAddr
    templates: Templates
    compress: float = 60.0  # box seconds per real second
    telemetry_s: float = 60.0  # cloud.telemetry_s (default)
    full_s: float = 3600.0  # cloud.telemetry_full_s (default)
    keepalive_s: int = 60  # cloud.keepalive_s (default; not compressed)
    busy_calls_per_hour: float = 20.0  # a busy branch at its peak (200 calls in 10 h)
    loop: str = "select"
    connectors: int = 8
    seed: int = 1
    deadline: float = 0.0  # time.monotonic() by which every process has exited


@dataclass
class Signals:
    """Phase flags set by the orchestrator (multiprocessing Events)."""

    go: Any
    stop_traffic: Any
    finish: Any
    subscribed: Any  # multiprocessing Array: per agent process, its agents subscribed
    steady_at: Any  # multiprocessing Value: time.monotonic() of the steady phase's start


@dataclass
class AgentStats:
    connect_start: float = 0.0
    connected_at: float = 0.0
    subscribed_at: float = 0.0
    stopped_at: float = 0.0
    refused: int = 0
    connect_errors: int = 0
    disconnects: int = 0
    published: dict[str, int] = field(default_factory=dict)
    commands: int = 0
    acks: int = 0
    bad_inbound: int = 0
    record_rtt: list[float] = field(default_factory=list)
    wire: Wire = field(default_factory=Wire)


class SimAgent:
    """One simulated box: its client, its day and its calls."""

    def __init__(self, ident: Identity, plan: Plan, busy: bool, rng: random.Random) -> None:
        self.device, self.plan, self.busy, self.rng = ident.cn, plan, busy, rng
        self.client = new_client(plan.broker, ident, device=True, now_wall=time.time())
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.msgs = Messages(plan.templates, self.device, rng)
        self.stats = AgentStats()
        self.up = False
        c = plan.compress
        self.tel_dt, self.full_dt = plan.telemetry_s / c, plan.full_s / c
        self.next_tel = self.next_full = 0.0
        self.call: Call | None = None
        self.call_t0 = 0.0
        self.step = 0
        self.next_call = 0.0
        self.batches: dict[str, float] = {}
        self.handlers: dict[Topic, Callable[[mqtt.MQTTMessage, dict[str, Any]], None]] = {
            Topic.CMD: self._command, Topic.RECORDS_ACK: self._records_ack,
            Topic.DESIRED: self._ignore, Topic.JOBS: self._ignore, Topic.JOB_CANCEL: self._ignore}

    # ---- paho callbacks (the loop's thread) ----
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            self.stats.refused += 1
            return
        now = time.monotonic()
        self.stats.connected_at = self.stats.connected_at or now
        client.subscribe([(topic(self.device, t), SubscribeOptions(qos=1))
                          for t in sorted(INBOUND)])
        self.publish(Topic.STATUS, status("online", time.time()))
        self.next_tel = self.next_full = now  # a full snapshot after every (re)connect
        self.next_call = now + self._call_gap()
        self.up = True

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reasons: list[ReasonCode], properties: Any) -> None:
        if not self.stats.subscribed_at:
            self.stats.subscribed_at = time.monotonic()
        if any(r.is_failure for r in reasons):
            self.stats.refused += 1

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        if self.up:  # not the clean stop
            self.stats.disconnects += 1
        self.up = False

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(msg.topic)
        if parsed is None or parsed[0] != self.device:
            self.stats.bad_inbound += 1
            return
        try:
            doc = decode(parsed[1], bytes(msg.payload))
        except ProtocolError:
            self.stats.bad_inbound += 1
            return
        self.handlers.get(parsed[1], self._ignore)(msg, doc)

    def _command(self, msg: mqtt.MQTTMessage, cmd: dict[str, Any]) -> None:
        props = getattr(msg, "properties", None)
        to = getattr(props, "ResponseTopic", None)
        if not (isinstance(to, str) and to.startswith(prefix(self.device))):
            to = topic(self.device, Topic.CMD_RESULT)
        out = Properties(PacketTypes.PUBLISH)
        corr = getattr(props, "CorrelationData", None)
        if corr is not None:
            out.CorrelationData = corr
        result = encode(Topic.CMD_RESULT, {"id": cmd["id"], "name": cmd["name"], "status": "ok",
                                           "time": round(time.time(), 6),
                                           "result": {"checks": 12, "failed": 0}})
        self.client.publish(to, result, qos=1, properties=out)
        self.stats.commands += 1

    def _records_ack(self, msg: mqtt.MQTTMessage, ack: dict[str, Any]) -> None:
        self.stats.acks += len(ack["uuids"])
        sent = self.batches.pop(str(ack.get("batch", "")), None)
        if sent is not None:
            self.stats.record_rtt.append(time.monotonic() - sent)

    def _ignore(self, msg: mqtt.MQTTMessage, doc: dict[str, Any]) -> None:
        return None

    # ---- the driver's thread ----
    def publish(self, t: Topic, data: bytes) -> None:
        self.client.publish(topic(self.device, t), data, qos=QOS[t], retain=RETAIN[t])
        self.stats.published[t] = self.stats.published.get(t, 0) + 1

    def _call_gap(self) -> float:
        if not self.busy:
            return float("inf")
        mean = 3600.0 / self.plan.busy_calls_per_hour / self.plan.compress
        return self.rng.expovariate(1.0 / mean)

    def tick(self, now: float, traffic: bool) -> float:
        """Send what is due; the next time something is."""
        if not self.up or not traffic:
            return now + 0.25
        if now >= self.next_full:
            self.publish(Topic.TELEMETRY, self.msgs.telemetry(time.time(), full=True))
            self.next_full, self.next_tel = now + self.full_dt, now + self.tel_dt
        elif now >= self.next_tel:
            self.publish(Topic.TELEMETRY, self.msgs.telemetry(
                time.time(), full=False, busy=self.call is not None))
            self.next_tel += self.tel_dt
        self._calls(now)
        due = min(self.next_tel, self.next_full)
        if self.call is None:
            return min(due, self.next_call)
        return min(due, self.call_t0 + self.call.steps[self.step][0] / self.plan.compress)

    def _calls(self, now: float) -> None:
        if self.call is None and now >= self.next_call:
            self.call = self.msgs.call(self.rng.choice(("fxs1", "fxs2", "fxo1")))
            self.call_t0, self.step = now, 0
        call = self.call
        if call is None:
            return
        while self.step < len(call.steps) and \
                now >= self.call_t0 + call.steps[self.step][0] / self.plan.compress:
            _, kind, data = call.steps[self.step]
            self.publish(Topic.EVENTS, self.msgs.event(call, kind, data, time.time()))
            self.step += 1
        if self.step >= len(call.steps):
            wall = time.time()
            self.publish(Topic.QUALITY, self.msgs.quality(call, wall))
            batch, record = self.msgs.record(call, wall)
            self.batches[batch] = now
            self.publish(Topic.RECORDS, record)
            self.call = None
            self.next_call = now + self._call_gap()

    def stop(self) -> None:
        """Clean stop: offline status (reason stopped), then DISCONNECT."""
        self.stats.wire = wire(client_socket(self.client))
        self.stats.stopped_at = time.monotonic()
        if self.up:
            self.publish(Topic.STATUS, status("offline", time.time(), "stopped"))
        self.up = False
        self.client.disconnect()


# --- loop styles ---------------------------------------------------------------------------
class SelectLoop:
    """Every client of the process on one selector (see the module docstring)."""

    def __init__(self, agents: list[SimAgent], connectors: int, broker: BrokerAddr,
                 keepalive: int) -> None:
        self.agents, self.broker, self.keepalive = agents, broker, keepalive
        self.sel = selectors.DefaultSelector()
        self.posts: queue.SimpleQueue[tuple[str, mqtt.Client, Any]] = queue.SimpleQueue()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.thread = threading.get_ident()
        self.pool = ThreadPoolExecutor(max_workers=max(1, connectors),
                                       thread_name_prefix="fleet-connect")
        self.next_misc = 0.0
        for a in agents:
            c = a.client
            c.on_socket_open = lambda cl, ud, s: self._post("open", cl, s)
            c.on_socket_close = lambda cl, ud, s: self._post("close", cl, s)
            c.on_socket_register_write = lambda cl, ud, s: self._post("write", cl, s)
            c.on_socket_unregister_write = lambda cl, ud, s: self._post("nowrite", cl, s)

    def _post(self, what: str, client: mqtt.Client, sock: Any) -> None:
        if threading.get_ident() == self.thread:
            self._apply(what, client, sock)
            return
        self.posts.put((what, client, sock))
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def _apply(self, what: str, client: mqtt.Client, sock: Any) -> None:
        try:
            if what == "open":
                self._forget(sock)
                self.sel.register(sock, selectors.EVENT_READ, client)
            elif what == "close":
                self._forget(sock)
            elif self._known(sock):
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if what == "write" else 0)
                self.sel.modify(sock, events, client)
        except (KeyError, ValueError, OSError):
            pass

    def _known(self, sock: Any) -> bool:
        try:
            self.sel.get_key(sock)
        except (KeyError, ValueError):
            return False
        return True

    def _forget(self, sock: Any) -> None:
        if self._known(sock):
            self.sel.unregister(sock)

    def connect_all(self) -> None:
        for a in self.agents:
            self.pool.submit(self._connect, a)

    def _connect(self, agent: SimAgent) -> None:
        agent.stats.connect_start = time.monotonic()
        for attempt in range(3):
            try:
                agent.client.connect(self.broker.host, self.broker.port, self.keepalive,
                                     clean_start=True)
                return
            except (OSError, ValueError):
                agent.stats.connect_errors += 1
                time.sleep(0.5 * (attempt + 1))

    def step(self, timeout: float) -> None:
        while True:
            try:
                self._apply(*self.posts.get_nowait())
            except queue.Empty:
                break
        for key, mask in self.sel.select(timeout):
            client = key.data
            if client is None:
                try:
                    self.wake_r.recv(4096)
                except OSError:
                    pass
                continue
            if mask & selectors.EVENT_READ:
                self._read(client)
            if mask & selectors.EVENT_WRITE:
                client.loop_write()
        now = time.monotonic()
        if now >= self.next_misc:
            self.next_misc = now + 1.0
            for a in self.agents:
                if a.client.socket() is not None:
                    a.client.loop_misc()

    @staticmethod
    def _read(client: mqtt.Client) -> None:
        client.loop_read()
        sock = client.socket()
        # TLS may hold decrypted records the selector cannot see
        while sock is not None and hasattr(sock, "pending") and sock.pending() > 0:
            client.loop_read()
            sock = client.socket()

    def open_sockets(self) -> int:
        return sum(1 for a in self.agents if a.client.socket() is not None)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.sel.close()
        self.wake_r.close()
        self.wake_w.close()


class ThreadLoop:
    """paho's loop_start: a network thread per client."""

    def __init__(self, agents: list[SimAgent], broker: BrokerAddr, keepalive: int) -> None:
        self.agents, self.broker, self.keepalive = agents, broker, keepalive

    def connect_all(self) -> None:
        for a in self.agents:
            a.stats.connect_start = time.monotonic()
            a.client.connect_async(self.broker.host, self.broker.port, self.keepalive,
                                   clean_start=True)
            a.client.loop_start()

    def step(self, timeout: float) -> None:
        time.sleep(timeout)

    def open_sockets(self) -> int:
        return sum(1 for a in self.agents if a.client.socket() is not None)

    def close(self) -> None:
        for a in self.agents:
            a.client.loop_stop()


# --- the process ---------------------------------------------------------------------------
def _alive(parent: int, deadline: float) -> bool:
    return os.getppid() == parent and time.monotonic() < deadline


def run(plan: Plan, idents: list[Identity], busy: list[bool], index: int, signals: Signals,
        results: Any) -> None:
    """An agent process: build, wait for go, connect, drive, stop; put its figures."""
    parent = os.getppid()
    rng = random.Random(plan.seed * 1000 + index)
    agents = [SimAgent(i, plan, b, random.Random(rng.getrandbits(32)))
              for i, b in zip(idents, busy, strict=True)]
    loop: SelectLoop | ThreadLoop = (
        SelectLoop(agents, plan.connectors, plan.broker, plan.keepalive_s)
        if plan.loop == "select" else ThreadLoop(agents, plan.broker, plan.keepalive_s))
    results.put(("ready", index, None))
    lags: list[float] = []
    try:
        while not signals.go.wait(0.2):
            if not _alive(parent, plan.deadline):
                return
        cpu0 = os.times()
        loop.connect_all()
        _drive(agents, loop, signals, lags, parent, plan.deadline, index)
        for a in agents:
            a.stop()
        end = time.monotonic() + 5.0
        while loop.open_sockets() and time.monotonic() < end:
            loop.step(0.05)
        cpu1 = os.times()
        results.put(("agents", index, _report(agents, lags, cpu1.user + cpu1.system
                                              - cpu0.user - cpu0.system)))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


def _drive(agents: list[SimAgent], loop: SelectLoop | ThreadLoop, signals: Signals,
           lags: list[float], parent: int, deadline: float, index: int) -> None:
    now = time.monotonic()
    heap = [(now, i) for i in range(len(agents))]
    next_check, traffic = 0.0, True
    while True:
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.1
            signals.subscribed[index] = sum(1 for a in agents if a.stats.subscribed_at)
            if signals.finish.is_set() or not _alive(parent, deadline):
                return
            traffic = not signals.stop_traffic.is_set()
        budget = now + 0.005  # then flush the sockets: a burst must not delay the rest
        while heap and heap[0][0] <= now and time.monotonic() < budget:
            due, i = heapq.heappop(heap)
            if traffic and agents[i].up and now >= signals.steady_at.value > 0:
                lags.append(now - due)
            heapq.heappush(heap, (max(agents[i].tick(now, traffic), now + 1e-3), i))
        loop.step(max(0.0, min(heap[0][0] - time.monotonic(), 0.05)))


def _report(agents: list[SimAgent], lags: list[float], cpu_s: float) -> dict[str, Any]:
    published: dict[str, int] = {}
    for a in agents:
        for t, n in a.stats.published.items():
            published[t] = published.get(t, 0) + n
    lags.sort()
    return {
        "agents": len(agents), "cpu_s": round(cpu_s, 2), "published": published,
        "connect_start": [a.stats.connect_start for a in agents if a.stats.connect_start],
        "connected": [a.stats.connected_at for a in agents if a.stats.connected_at],
        "subscribed": [a.stats.subscribed_at for a in agents if a.stats.subscribed_at],
        "connect_s": [a.stats.subscribed_at - a.stats.connect_start for a in agents
                      if a.stats.subscribed_at],
        "refused": sum(a.stats.refused for a in agents),
        "connect_errors": sum(a.stats.connect_errors for a in agents),
        "disconnects": sum(a.stats.disconnects for a in agents),
        "commands_answered": sum(a.stats.commands for a in agents),
        "records_acked": sum(a.stats.acks for a in agents),
        "bad_inbound": sum(a.stats.bad_inbound for a in agents),
        "record_rtt": [x for a in agents for x in a.stats.record_rtt],
        "wire": {"idle": _wire_sum([a for a in agents if not a.busy]),
                 "busy": _wire_sum([a for a in agents if a.busy])},
        "lag_p50": lags[len(lags) // 2] if lags else None,
        "lag_p99": lags[int(len(lags) * 0.99)] if lags else None,
    }


def _wire_sum(agents: list[SimAgent]) -> dict[str, float]:
    """Bytes of these agents' connections and how long they were up (device-seconds)."""
    total = Wire()
    for a in agents:
        total = total + a.stats.wire
    up = sum(a.stats.stopped_at - a.stats.connected_at for a in agents
             if a.stats.connected_at and a.stats.stopped_at)
    return {"agents": len(agents), "up_s": round(up, 2), **total.as_dict()}
