"""Bytes per device per day, measured on one real device connection (mTLS, MQTT 5) to the
broker: the kernel's TCP counters (tcp_info bytes_sent/bytes_received: every TLS record,
so MQTT headers, TLS handshake, record headers and tags are all in) around each exchange,
replayed in fast-forward with the day's real payloads:

- connect: TCP + TLS handshake, CONNECT/CONNACK, SUBSCRIBE/SUBACK, birth + PUBACK;
- telemetry: every message the real Telemetry part sent in a simulated idle / busy day
  (bench/fleet_day.py) as QoS 0 publishes, `pace` apart (0.05 s: past the delayed-ACK
  timer, so each message has its own segments and ACKs as when they are a minute apart);
- calls: the CTI events, quality and CDR record (with the platform's records/ack and
  the PUBACKs both ways) of `calls` busy-branch calls;
- keepalive: PINGREQ/PINGRESP, timed on a second connection with a 1 s keepalive; a day
  has 86400 / keepalive_s of them (paho pings when nothing came in for keepalive_s, and
  an idle box receives nothing).

IP-level bytes add 52 bytes (IPv4 + TCP + timestamps) per segment counted by the
kernel (an estimate: a WAN's MTU splits a full snapshot into two segments where
loopback does not). TLS-level bytes are measured.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from bench.fleet_agents import Plan, SimAgent
from bench.fleet_day import DAY_S, DayTelemetry
from bench.fleet_net import Identity, Wire, client_socket, wire
from bench.fleet_platform import Platform
from firmware.agent.protocol import QOS, Topic, topic

log = logging.getLogger("bench.fleet")


def _settle(agent: SimAgent, timeout: float = 3.0) -> Wire:
    """The counters once they stopped moving for 150 ms (the exchange is over)."""
    last, still_since = wire(client_socket(agent.client)), time.monotonic()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        time.sleep(0.03)
        now = wire(client_socket(agent.client))
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= 0.15:
            break
    return last


def _above(read: Callable[[], int], floor: int) -> Callable[[], bool]:
    return lambda: read() > floor


def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"meter: no {what} within {timeout:g} s")
        time.sleep(0.01)


class Meter:
    """A metered device and a platform consumer (which acknowledges records)."""

    def __init__(self, plan: Plan, device: Identity, ping_device: Identity,
                 platform: Identity) -> None:
        self.plan, self.device, self.ping_device = plan, device, ping_device
        self.pace = 0.05
        self.platform = Platform(plan, platform, 99, shared=False)

    def _agent(self, ident: Identity, keepalive: int) -> SimAgent:
        agent = SimAgent(ident, self.plan, True, random.Random(5))
        agent.client.connect(self.plan.broker.host, self.plan.broker.port, keepalive,
                             clean_start=True)
        agent.client.loop_start()
        _until(lambda: agent.stats.subscribed_at > 0 and agent.up, 15, "CONNACK and SUBACK")
        return agent

    def measure(self, days: dict[str, DayTelemetry], calls: int, pace: float = 0.05
                ) -> dict[str, Any]:
        self.pace = pace
        self.platform.start()
        _until(self.platform.ready.is_set, 15, "platform SUBACK")
        agent = self._agent(self.device, self.plan.keepalive_s)
        try:
            out: dict[str, Any] = {"connect": _settle(agent).as_dict(), "pace_s": pace,
                                   "tls": _tls(agent)}
            for kind, day in days.items():
                out[f"telemetry_{kind}"] = {**self._telemetry(agent, day).as_dict(),
                                            "messages": len(day.payloads)}
            out["calls"] = {**self._calls(agent, calls).as_dict(), "calls": calls}
            out["command"] = self._commands(agent, 20).as_dict()
        finally:
            agent.stop()
            agent.client.loop_stop()
        out["ping"] = self._ping()
        self.platform.client.disconnect()
        self.platform.client.loop_stop()
        return out

    def _telemetry(self, agent: SimAgent, day: DayTelemetry) -> Wire:
        before = _settle(agent)
        for payload in day.payloads:
            agent.client.publish(topic(agent.device, Topic.TELEMETRY), payload,
                                 qos=QOS[Topic.TELEMETRY])
            time.sleep(self.pace)
        return _settle(agent) - before

    def _calls(self, agent: SimAgent, calls: int) -> Wire:
        before = _settle(agent)
        for _ in range(calls):
            call = agent.msgs.call("fxo1")
            for _, kind, data in call.steps:
                self._publish(agent, Topic.EVENTS, agent.msgs.event(call, kind, data,
                                                                    time.time()))
            self._publish(agent, Topic.QUALITY, agent.msgs.quality(call, time.time()))
            acked = agent.stats.acks
            _, record = agent.msgs.record(call, time.time())
            self._publish(agent, Topic.RECORDS, record)
            _until(_above(lambda: agent.stats.acks, acked), 10, "records/ack")
        return _settle(agent) - before

    def _publish(self, agent: SimAgent, t: Topic, data: bytes) -> None:
        info = agent.client.publish(topic(agent.device, t), data, qos=QOS[t])
        info.wait_for_publish(10)
        time.sleep(self.pace)

    def _commands(self, agent: SimAgent, n: int) -> Wire:
        before = _settle(agent)
        done = agent.stats.commands
        for i in range(n):
            self.platform.command(agent.device, i)
            _until(_above(lambda: agent.stats.commands, done + i), 10, "command answer")
        return _scale(_settle(agent) - before, 1.0 / n)

    def _ping(self) -> dict[str, Any]:
        """PINGREQ + PINGRESP bytes, on a connection with a 1 s keepalive."""
        pings = [0]

        def on_log(client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
            if "PINGRESP" in buf:
                pings[0] += 1

        agent = self._agent(self.ping_device, 1)
        agent.client.on_log = on_log
        try:
            before, n0 = _settle(agent, 0.5), pings[0]
            time.sleep(3.6)
            got = _settle(agent, 0.5) - before
            n = pings[0] - n0
        finally:
            agent.stop()
            agent.client.loop_stop()
        per = _scale(got, 1.0 / n) if n else Wire()
        return {"pings": n, **per.as_dict()}


def _tls(agent: SimAgent) -> str:
    """The negotiated protocol and cipher, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"."""
    sock = client_socket(agent.client)
    if not isinstance(sock, ssl.SSLSocket):
        return "none"
    cipher = sock.cipher()
    return f"{sock.version()} {cipher[0] if cipher else '?'}"


def _scale(w: Wire, k: float) -> Wire:
    return Wire(round(w.tx * k), round(w.rx * k), round(w.segs_out * k), round(w.segs_in * k))


def day_budget(m: dict[str, Any], keepalive_s: int, calls_per_day: int) -> dict[str, Any]:
    """Bytes per device per day (TLS measured, IP estimated) for an idle and a busy box,
    with the parts that make them up."""
    pings = DAY_S / keepalive_s
    call_scale = calls_per_day / max(1, m["calls"]["calls"])
    out: dict[str, Any] = {"keepalive_s": keepalive_s, "pings_per_day": int(pings),
                           "busy_calls_per_day": calls_per_day}
    for kind in ("idle", "busy"):
        parts = {"connect (once a day)": m["connect"],
                 "telemetry": m[f"telemetry_{kind}"],
                 "keepalive": {k: m["ping"][k] * pings for k in ("tls_bytes", "ip_bytes")}}
        if kind == "busy":
            parts["calls (events, quality, record + ack)"] = {
                k: m["calls"][k] * call_scale for k in ("tls_bytes", "ip_bytes")}
        tls = sum(p["tls_bytes"] for p in parts.values())
        ip = sum(p["ip_bytes"] for p in parts.values())
        out[kind] = {"tls_bytes": round(tls), "ip_bytes": round(ip),
                     "parts_tls": {k: round(p["tls_bytes"]) for k, p in parts.items()}}
    return out
