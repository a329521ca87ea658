"""A box's day of telemetry in fake time, from the agent's real Telemetry part
(firmware.agent.telemetry: its parameter names, deadband and full-snapshot timer) at the
default settings (telemetry_s 60, telemetry_full_s 3600).

Its inputs: GET /status of a real sim core (SimBoard + SimCloud + the API server, once),
with one SIP registration and two edges filled in (a sim core has none), and a probe
whose CPU, memory and temperature wander as an idle box's do. A busy day adds 200 calls
between 08:00 and 18:00 (6 s ringing, 3 min talking, on a random port): the port and
call states GET /status shows, and CPU up while a call runs.
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.agent.protocol import Topic, encode
from firmware.agent.telemetry import (
    CAPACITY,
    CPU,
    MEM_FREE,
    MEM_TOTAL,
    TEMPERATURE,
    USED,
    SystemProbe,
    Telemetry,
    Value,
)
from foundation.reactor import FakeClock

DAY_S = 86400
TELEMETRY_S, FULL_S = 60.0, 3600.0  # the agent's defaults (cloud.telemetry_s, _full_s)
RING_S, TALK_S = 6.0, 180.0
BUSY_CALLS = 200


def core_status() -> dict[str, Any]:
    """GET /status of a real sim core on loopback, plus a registration and two edges."""
    from drivers.sim.board import SimBoard
    from firmware.api.client import ApiClient
    from firmware.api.server import ApiServer
    from firmware.core.config import ConfigStore
    from firmware.core.runtime import Core
    from foundation.reactor import MonotonicClock, Reactor
    from lab.simcloud import SimCloud

    with tempfile.TemporaryDirectory(prefix="bench-fleet-core-") as tmp:
        store = ConfigStore(Path(tmp) / "etc")
        doc = store.load()
        reactor = Reactor(MonotonicClock())
        core = Core(doc, SimBoard(reactor, doc), reactor, bridge=SimCloud(reactor),
                    data_dir=Path(tmp) / "data")
        ready = threading.Event()

        def run() -> None:
            try:
                core.start()
            finally:
                ready.set()
            reactor.run_forever()
            core.stop()

        thread = threading.Thread(target=run, name="bench-fleet-core", daemon=True)
        thread.start()
        server = None
        try:
            if not ready.wait(30):
                raise RuntimeError("the sim core did not start within 30 s")
            server = ApiServer(core, store, tcp="127.0.0.1:0")
            server.start()
            address = server.tcp_address
            if address is None:
                raise RuntimeError("the sim core's API server has no TCP address")
            status: dict[str, Any] = ApiClient(tcp=f"127.0.0.1:{address[1]}").status()
        finally:
            if server is not None:
                server.stop()
            reactor.call_soon(reactor.stop)
            thread.join(15)
    status["registrations"] = [{"account": "branch-01@edge.example.net", "ok": True,
                                "code": 200}]
    status["wan"] = {"state": "up", "edges": [{"ok": True}, {"ok": True}]}
    return status


class DayProbe(SystemProbe):
    """An idle box's own figures over a day: CPU 1-8 % (a 30 % job at 03:00), memory
    free within 1 %, temperature 44-50 degC following the room; busy adds CPU per call."""

    def __init__(self, clock: FakeClock, rng: random.Random, day: Day) -> None:
        super().__init__(Path("/"))
        self.clock, self.rng, self.day = clock, rng, day

    def sample(self) -> dict[str, Value]:
        t = self.clock.now() % DAY_S
        cpu = self.rng.randint(1, 8) + (30 if 3 * 3600 <= t < 3 * 3600 + 120 else 0)
        cpu += 12 * len(self.day.active(t))
        total = 3_884_000
        free = int(total * (0.70 + 0.01 * self.rng.random()))
        temp = round(47 + 3 * math.sin(2 * math.pi * (t - 9 * 3600) / DAY_S)
                     + self.rng.uniform(-0.5, 0.5))
        return {CPU: cpu, MEM_TOTAL: total, MEM_FREE: free, TEMPERATURE: temp,
                CAPACITY: 29_000, USED: 6_100 + int(t / DAY_S * 5)}


@dataclass
class Day:
    """Calls of a day: (start second, port)."""

    calls: list[tuple[float, str]]

    def active(self, t: float) -> list[tuple[float, str]]:
        return [(s, p) for s, p in self.calls if s <= t < s + RING_S + TALK_S]


class DayStatus:
    """GET /status at the fake time: the idle document with the ports of calls in
    progress set ringing or talking, and uptime counting."""

    def __init__(self, base: Mapping[str, Any], clock: FakeClock, day: Day) -> None:
        self.base, self.clock, self.day = base, clock, day

    def status(self) -> dict:
        t = self.clock.now()
        doc = copy.deepcopy(dict(self.base))
        doc["box"]["uptime_s"] = 864_000 + t
        for start, port in self.day.active(t % DAY_S):
            ringing = t % DAY_S < start + RING_S
            for p in doc["ports"]:
                if p["name"] == port:
                    p["state"] = "ringing" if ringing else "off-hook"
                    p["call"] = {"state": "ringing" if ringing else "connected"}
        return doc


class Capture:
    """The Telemetry's link: keeps each payload as the agent would encode it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def publish(self, t: Topic, payload: Mapping[str, Any]) -> object:
        self.sent.append(encode(t, payload))
        return None


@dataclass
class DayTelemetry:
    kind: str  # idle | busy
    payloads: list[bytes]  # in order, as published
    full: int
    deltas: int

    @property
    def bytes(self) -> int:
        return sum(map(len, self.payloads))

    def summary(self) -> dict[str, Any]:
        fulls = [len(p) for p in self.payloads if b'"full":true' in p]
        deltas = [len(p) for p in self.payloads if b'"full":false' in p]
        return {"messages": len(self.payloads), "full": self.full, "deltas": self.deltas,
                "payload_bytes": self.bytes,
                "full_bytes_mean": round(sum(fulls) / len(fulls)) if fulls else 0,
                "delta_bytes_mean": round(sum(deltas) / len(deltas)) if deltas else 0}


def simulate(status: Mapping[str, Any], kind: str, seed: int = 7) -> DayTelemetry:
    """A day of the real Telemetry at its defaults, one tick a minute in fake time."""
    rng = random.Random(seed)
    calls: list[tuple[float, str]] = []
    if kind == "busy":
        calls = sorted((rng.uniform(8 * 3600, 18 * 3600), rng.choice(("fxs1", "fxs2", "fxo1")))
                       for _ in range(BUSY_CALLS))
    day = Day(calls)
    clock = FakeClock(start=0.0)
    cap = Capture()
    tel = Telemetry(cap, DayStatus(status, clock, day), clock, telemetry_s=TELEMETRY_S,
                    full_s=FULL_S, probe=DayProbe(clock, rng, day), background=False)
    tel.connected(True)
    t = 0.0
    while t < DAY_S:
        tel.tick(t)
        t += TELEMETRY_S
        clock.set(t)
    full = sum(1 for p in cap.sent if b'"full":true' in p)
    return DayTelemetry(kind, cap.sent, full, len(cap.sent) - full)


def days(seed: int = 7) -> dict[str, DayTelemetry]:
    """The idle and busy days, from one sim core's status."""
    status = core_status()
    return {kind: simulate(status, kind, seed) for kind in ("idle", "busy")}


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-fleet-"))
