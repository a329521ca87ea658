"""What a simulated agent sends, at the real sizes: telemetry snapshots and deltas (the
real Telemetry part's, from bench/fleet_day.py), the CTI events of a call (the core's
CoreEvent JSON), its per-call quality (the quality schema's fields, representative
values) and its CDR record (made by the real CdrStore). Every payload goes through
firmware.agent.protocol's encode, so the schemas are checked on the way out as the agent
does.
"""

from __future__ import annotations

import json
import random
import tempfile
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet_day import DayTelemetry
from firmware.agent.protocol import Topic, encode
from firmware.agent.telemetry import CPU, UPTIME
from firmware.cdr import CdrStore
from firmware.events import CoreEvent, EventKind

# the events the core emits for one call (callctl.model + controller), in order
CALL_EVENTS = (EventKind.PORT_STATE, EventKind.RINGING, EventKind.CALLER_ID,
               EventKind.PORT_STATE, EventKind.ANSWERED, EventKind.PORT_STATE,
               EventKind.HUNG_UP)
IDLE_DELTA = {CPU: 4, UPTIME: 874_920}  # what the idle day's deadband lets through


def quality(call_id: str, port: str, start: float, end: float, rng: random.Random
            ) -> dict[str, Any]:
    """The quality message of one call (firmware.quality's fields, the DSP's extras)."""
    return {"call_id": call_id, "port": port, "time": round(start, 3), "ended": round(end, 3),
            "direction": "inbound",
            "network": {"codec": "PCMA", "jitter_ms": round(rng.uniform(1, 12), 1),
                        "loss_pct": round(rng.uniform(0, 0.5), 2),
                        "rtt_ms": round(rng.uniform(18, 60), 1),
                        "mos": round(rng.uniform(4.0, 4.4), 2),
                        "r_factor": round(rng.uniform(85, 93), 1)},
            "dsp": {"erle_mean_db": round(rng.uniform(28, 38), 1),
                    "erle_worst_db": round(rng.uniform(14, 24), 1),
                    "residual_echo_dbm0": round(rng.uniform(-62, -50), 1),
                    "echo_canceller": "on",
                    "dtmf": {"inband": 0, "rfc4733": 4, "info": 0, "digits": "1204"},
                    "modem": [], "fax": False}}


def real_cdr_body() -> dict[str, Any]:
    """The body the outbox holds for one finished call, made by the real CdrStore."""
    with tempfile.TemporaryDirectory(prefix="bench-fleet-cdr-") as tmp:
        store = CdrStore(Path(tmp) / "cdr.db")
        try:
            t0 = 1_765_000_000.0
            uid = store.open_call("inbound", "fxo1", "4155550123", "8005550100",
                                  sip_call_id="a84b4c76e66710@10.0.0.23", started=t0)
            store.answered(uid, t0 + 6.2)
            store.ended(uid, t0 + 187.9, "answered",
                        {"codec": "PCMA", "jitter_ms": 4.1, "loss_pct": 0.1, "rtt_ms": 31.0})
            rows = store.pending(10)
        finally:
            store.close()
    body: dict[str, Any] = rows[0]["body"]
    return body


@dataclass
class Templates:
    """What every simulated agent's payloads are made from (picklable, built once):
    the real Telemetry's full snapshot and busy-day deltas (bench/fleet_day.py), the
    real CdrStore's CDR body."""

    full: dict[str, Any]
    idle_deltas: list[dict[str, Any]]
    busy_deltas: list[dict[str, Any]]
    cdr: dict[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)


def _params(payloads: list[bytes], full: bool) -> list[dict[str, Any]]:
    docs = [json.loads(p) for p in payloads]
    return [d["params"] for d in docs if d["full"] is full]


def templates(days: dict[str, DayTelemetry]) -> Templates:
    idle, busy = days["idle"].payloads, days["busy"].payloads
    tpl = Templates(_params(idle, True)[0], _params(idle, False) or [IDLE_DELTA],
                    _params(busy, False) or [IDLE_DELTA], real_cdr_body())
    msgs = Messages(tpl, "bl-size", random.Random(1))
    t = 1_765_000_000.0
    call = msgs.call("fxo1")
    events = [msgs.event(call, kind, data, t) for _, kind, data in call.steps]
    tpl.sizes = {"telemetry_full": len(msgs.telemetry(t, full=True)),
                 "telemetry_idle_delta": len(msgs.telemetry(t, full=False)),
                 "telemetry_busy_delta": len(msgs.telemetry(t, full=False, busy=True)),
                 "events_per_call": len(events),
                 "event_mean": sum(map(len, events)) // len(events),
                 "quality": len(msgs.quality(call, t)), "record": len(msgs.record(call, t)[1])}
    return tpl


@dataclass
class Call:
    """One call: its events with their offsets from the first ring (seconds of real
    time; the bench compresses them), then its quality and CDR record at the end."""

    call_id: str
    port: str
    steps: list[tuple[float, EventKind, dict[str, Any] | None]]


def _call_steps() -> list[tuple[float, EventKind, dict[str, Any] | None]]:
    ring, talk = 6.0, 180.0
    data: list[dict[str, Any] | None] = [
        {"state": "RINGING", "was": "IDLE"}, None, {"number": "4155550123", "name": "ACME LTD"},
        {"state": "CONNECTED", "was": "RINGING"}, None, {"state": "IDLE", "was": "CONNECTED"},
        {"disposition": "answered", "code": 200, "duration": talk}]
    offsets = [0.0, 0.0, 0.5, ring, ring, ring + talk, ring + talk]
    return list(zip(offsets, CALL_EVENTS, data, strict=True))


CALL_STEPS = _call_steps()
CALL_SECONDS = CALL_STEPS[-1][0]


class Messages:
    """Encoded payloads of one device (its own sequence numbers and event ids), encoded
    when they are sent so their times are the sending times."""

    def __init__(self, tpl: Templates, device: str, rng: random.Random) -> None:
        self.tpl, self.device, self.rng = tpl, device, rng
        self.seq = 0
        self.event_id = 0
        self.record_seq = 0

    def telemetry(self, now: float, *, full: bool, busy: bool = False) -> bytes:
        """A full snapshot, or the next delta of an idle or busy box's day."""
        pool = self.tpl.busy_deltas if busy else self.tpl.idle_deltas
        params = self.tpl.full if full else pool[self.seq % len(pool)]
        self.seq += 1
        return encode(Topic.TELEMETRY, {"time": round(now, 3), "seq": self.seq, "full": full,
                                        "params": params})

    def call(self, port: str) -> Call:
        return Call(str(uuidlib.UUID(int=self.rng.getrandbits(128))), port, CALL_STEPS)

    def event(self, call: Call, kind: EventKind, data: dict[str, Any] | None,
              now: float) -> bytes:
        """A CTI event as the agent publishes it: the core's CoreEvent JSON with the
        stream id and the sending time; port and caller-ID events carry no call fields."""
        call_fields = kind not in (EventKind.PORT_STATE, EventKind.CALLER_ID)
        ev = CoreEvent(kind, now, port=call.port, call_id=call.call_id if call_fields else "",
                       ani="4155550123" if call_fields else "",
                       dnis="8005550100" if call_fields else "",
                       direction="inbound" if call_fields else "", data=data or {})
        self.event_id += 1
        return encode(Topic.EVENTS, {"id": self.event_id, **ev.to_json(),
                                     "sent": round(now, 6)})

    def quality(self, call: Call, now: float) -> bytes:
        return encode(Topic.QUALITY, quality(call.call_id, call.port, now - CALL_SECONDS,
                                             now, self.rng))

    def record(self, call: Call, now: float) -> tuple[str, bytes]:
        """(batch id, the records message carrying this call's CDR)."""
        self.record_seq += 1
        body = {**self.tpl.cdr, "uuid": call.call_id, "port": call.port,
                "started": round(now - CALL_SECONDS, 3), "ended": round(now, 3)}
        batch = f"{self.device}-{self.record_seq}"
        return batch, encode(Topic.RECORDS, {
            "batch": batch, "records": [{"uuid": call.call_id, "seq": self.record_seq,
                                         "kind": "cdr", "created": round(now, 3),
                                         "body": body}]})
