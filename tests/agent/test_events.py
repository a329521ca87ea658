"""CTI events end to end: a real sim core (its control API's event stream), the agent's
EventPump and Link, a real Mosquitto and the platform's client. Local calls on the sim
(fxs1 dials fxs2) reach the platform as ringing, answered, hung_up in order with their
fields, then the call's quality message; the latency from the port to the platform is
printed (p50/p99). The core restarting mid-stream: the pump reconnects (one log line per
outage) and later events still arrive. A listener that raises, the core's `dropped`
notice, a stop within a second, and the backoff's growth and jitter."""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from firmware.agent.events import EventPump, events_payload, quality_payload
from firmware.agent.link import Link
from firmware.agent.protocol import Topic, topic, validate
from firmware.api.client import ApiClient
from foundation.clock import FakeClock, MonotonicClock
from lab.mosquitto import PlatformClient, Received
from lab.ports import free_port
from lab.wait import wait_until

if TYPE_CHECKING:
    from tests.agent.conftest import Core

CALL_KINDS = ("ringing", "answered", "hung_up")
Cti = tuple[EventPump, Link, PlatformClient, str, str, list[dict[str, Any]]]


def _wall(received: Received) -> float:
    """The wall-clock time a message reached the platform (Received.at is monotonic)."""
    return time.time() - (time.monotonic() - received.at)


def _port(api: ApiClient, name: str) -> str:
    return next(p["state"] for p in api.status()["ports"] if p["name"] == name)


def local_call(api: ApiClient, platform: PlatformClient, events: str,
               talk_s: float = 0.3) -> str:
    """fxs1 dials 202, fxs2 answers, both hang up; the call id once the platform saw it
    ring (the core takes the number after its inter-digit time)."""
    api.sim_phone("fxs1", "off_hook")
    wait_until(lambda: _port(api, "fxs1") == "off-hook", 5, "fxs1 off hook")
    api.sim_phone("fxs1", "dial", digits="202")
    ringing = platform.wait_for(lambda m: m.topic == events and m.json()["kind"] == "ringing"
                                and m.json()["call_id"] not in seen_calls, 10, "ringing")
    call_id = ringing.json()["call_id"]
    seen_calls.add(call_id)
    api.sim_phone("fxs2", "off_hook")
    platform.wait_for(lambda m: m.topic == events and m.json()["kind"] == "answered"
                      and m.json().get("call_id") == call_id, 10, "answered")
    time.sleep(talk_s)  # the call lasts a moment (no assertion is timed by it)
    api.sim_phone("fxs1", "on_hook")
    api.sim_phone("fxs2", "on_hook")
    wait_until(lambda: _port(api, "fxs2") == "on-hook", 5, "fxs2 on hook")
    return call_id


seen_calls: set[str] = set()


@pytest.fixture
def cti(core: Core, device_link: Callable[..., Link],
        platform_client: Callable[..., PlatformClient]) -> Iterator[Cti]:
    """(pump, link, platform, events topic, quality topic, listener log)."""
    device = "bl-cti-events"
    link = device_link(device)
    platform = platform_client()
    platform.subscribe(f"branchline/{device}/#")
    got: list[dict[str, Any]] = []
    pump = EventPump(link, core.api, MonotonicClock(), listeners=[got.append],
                     backoff_min_s=0.1, backoff_max_s=1.0)
    pump.start()
    wait_until(lambda: pump.streaming, 10, "the pump reading the stream")
    yield pump, link, platform, topic(device, Topic.EVENTS), topic(device, Topic.QUALITY), got
    pump.stop()


def _call_events(platform: PlatformClient, events: str, call_id: str) -> list[dict[str, Any]]:
    return [m.json() for m in platform.messages(events)
            if m.json().get("call_id") == call_id and m.json()["kind"] in CALL_KINDS]


def test_local_calls_reach_the_platform_in_order_with_quality_and_latency(core: Core,
                                                                         cti: Cti) -> None:
    pump, _link, platform, events, quality, got = cti
    latencies: list[float] = []
    for _ in range(3):
        call_id = local_call(core.api, platform, events)
        def three(c: str = call_id) -> bool:
            return len(_call_events(platform, events, c)) == 3

        def quality_of(m: Received, c: str = call_id) -> bool:
            return m.topic == quality and m.json()["call_id"] == c

        wait_until(three, 10, "ringing, answered, hung_up",
                   detail=lambda: platform.snapshot()[-5:])
        q = platform.wait_for(quality_of, 10, "the call's quality")
        msgs = [m for m in platform.messages(events) if m.json().get("call_id") == call_id
                and m.json()["kind"] in CALL_KINDS]
        evs = [m.json() for m in msgs]
        assert [e["kind"] for e in evs] == list(CALL_KINDS)
        assert [e["id"] for e in evs] == sorted(e["id"] for e in evs)
        for e in evs:
            validate(Topic.EVENTS, e)
            assert (e["port"], e["ani"], e["dnis"], e["direction"]) == \
                ("fxs1", "201", "202", "local")
            assert e["time"] <= e["sent"]  # the core's time kept, the agent's added
        assert evs[0]["time"] <= evs[1]["time"] <= evs[2]["time"]
        assert evs[2]["data"]["disposition"] == "answered"
        latencies += [_wall(m) - m.json()["time"] for m in msgs]
        qual = q.json()
        validate(Topic.QUALITY, qual)
        assert (qual["port"], qual["direction"]) == ("fxs1", "local")
        assert qual["ended"] >= evs[1]["time"] and qual["dsp"]["echo_canceller"] in \
            ("on", "off", "bypassed")
        assert set(qual["network"]) >= {"codec", "jitter_ms", "loss_pct", "rtt_ms", "mos"}
        assert not [m for m in platform.messages(events) if m.json()["kind"] == "call_quality"]
        hung = next(i for i, e in enumerate(got) if e.get("call_id") == call_id
                    and e["kind"] == "hung_up")
        assert got[hung + 1]["kind"] == "call_quality"  # listeners get every event, in order
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(f"\nCTI event latency, port to platform, {len(latencies)} events: "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert 0 <= p50 <= p99 < 2.0  # a sanity bound, not a timing test
    assert pump.published >= 12


def test_the_core_restarting_mid_stream(core: Core, cti: Cti,
                                        caplog: pytest.LogCaptureFixture) -> None:
    pump, _link, platform, events, _quality, _got = cti
    caplog.set_level(logging.INFO, logger="firmware.agent.events")
    first = local_call(core.api, platform, events)
    before = pump.last_id
    core.stop()
    wait_until(lambda: pump.failures >= 3, 15, "a few failed reconnects")
    core.start()
    wait_until(lambda: pump.streaming, 15, "the pump back on the stream")
    later = local_call(core.api, platform, events)
    assert later != first
    wait_until(lambda: len(_call_events(platform, events, later)) == 3, 10, "the later call")
    down = [r for r in caplog.records if r.levelno == logging.WARNING and "retrying" in r.message]
    assert len(down) == 1, [r.message for r in down]  # once per outage, not per attempt
    assert any("back after" in r.message for r in caplog.records)
    assert any("core restarted" in r.message for r in caplog.records)
    assert pump.outages == 1 and pump.last_id < before + 20


def test_a_failing_listener_is_logged_and_the_pump_goes_on(
        core: Core, device_link: Callable[..., Link],
        platform_client: Callable[..., PlatformClient],
        caplog: pytest.LogCaptureFixture) -> None:
    device = "bl-cti-listener"
    link = device_link(device)
    platform = platform_client()
    platform.subscribe(f"branchline/{device}/#")
    calls: list[str] = []

    def broken(ev: dict[str, Any]) -> None:
        calls.append(ev["kind"])
        raise RuntimeError("listener bug")

    pump = EventPump(link, core.api, MonotonicClock(), listeners=[broken])
    pump.start()
    try:
        wait_until(lambda: pump.streaming, 10, "the pump reading the stream")
        events = topic(device, Topic.EVENTS)
        call_id = local_call(core.api, platform, events)
        wait_until(lambda: len(_call_events(platform, events, call_id)) == 3, 10, "the call")
        assert {"ringing", "answered", "hung_up"} <= set(calls)
        assert "listener" in caplog.text and "listener bug" in caplog.text
        assert pump.running
    finally:
        began = time.monotonic()
        pump.stop()
        took = time.monotonic() - began
    assert not pump.running and took < 1.5


def test_a_dropped_notice_is_counted_logged_and_the_next_event_flows(
        core: Core, cti: Cti, caplog: pytest.LogCaptureFixture) -> None:
    pump, _link, platform, events, _quality, got = cti
    pump.handle({"kind": "dropped", "count": 7})
    assert pump.dropped == 7 and "dropped 7 events" in caplog.text
    assert got[-1] == {"kind": "dropped", "count": 7}
    call_id = local_call(core.api, platform, events)
    wait_until(lambda: len(_call_events(platform, events, call_id)) == 3, 10, "the next call")


def test_a_core_that_is_down_is_retried_with_growing_jittered_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    api = ApiClient(tcp=f"127.0.0.1:{free_port('tcp')}")  # nothing listens there
    published: list[tuple[Topic, dict[str, Any]]] = []

    class Sink:
        def publish(self, t: Topic, payload: dict[str, Any]) -> None:
            published.append((t, payload))

    pump = EventPump(Sink(), api, clock, backoff_min_s=0.01, backoff_max_s=0.04,
                     rng=random.Random(3))
    pump.start()
    try:
        wait_until(lambda: pump.failures >= 6, 10, "six failed attempts")
    finally:
        pump.stop()
    assert not pump.running and pump.outages == 1 and not published
    warnings = [r for r in caplog.records if r.name == "firmware.agent.events"
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not answer" in warnings[0].message
    waits = []
    for failures in (1, 2, 3, 4, 5):
        pump.failures = failures
        waits.append(pump.backoff_s())
    assert 0.005 <= waits[0] < 0.01 and 0.01 <= waits[1] < 0.02
    assert all(0.02 <= w < 0.04 for w in waits[3:])  # doubling, capped, times [0.5, 1)


def test_payload_mapping_keeps_the_core_time_and_adds_sent() -> None:
    ev = {"id": 9, "kind": "ringing", "time": 1_795_000_000.5, "port": "fxs1",
          "call_id": "c-1", "ani": "201", "dnis": "202", "direction": "local"}
    out = validate(Topic.EVENTS, events_payload(ev, 1_795_000_000.75))
    assert out == {**ev, "sent": 1_795_000_000.75}
    q = {"id": 10, "kind": "call_quality", "time": 5.0, "port": "fxs1", "call_id": "c-1",
         "direction": "local", "data": {
             "ended": 4.9, "network": {"codec": "PCMU", "jitter_ms": 1.0, "loss_pct": 0.0,
                                       "rtt_ms": None, "mos": 4.3, "r_factor": 92.0},
             "dsp": {"erle_mean_db": 30.0, "erle_worst_db": 12.0, "residual_echo_dbm0": -60.0,
                     "echo_canceller": "on", "dtmf": {"inband": 1, "rfc4733": 2, "info": 0,
                                                      "digits": "12#"},
                     "modem": [], "fax": False}}}
    out = validate(Topic.QUALITY, quality_payload(q))
    assert (out["call_id"], out["port"], out["time"], out["ended"], out["direction"]) == \
        ("c-1", "fxs1", 5.0, 4.9, "local")
    assert out["dsp"]["dtmf"]["digits"] == "12#" and out["network"]["mos"] == 4.3
