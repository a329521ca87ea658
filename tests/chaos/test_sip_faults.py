"""Signalling-level WAN faults through the chaos proxy, with real peers on 127.0.0.1: a
real PjBridge whose only cloud edge is the proxy in front of the session's Kamailio.

  - blackhole: the edge is declared down by OPTIONS within 2 s (0.5 s interval,
    0.5 s deadline, 2 misses) and up again once the proxy heals;
  - one-way loss (cloud->box only) is detected the same way;
  - SIP over TCP crosses the proxy: registration, OPTIONS, a stalled stream;
  - a call from a cloud agent keeps its SIP dialog through a 3 s signalling blackhole
    (RTP does not cross the proxy, see lab/chaos.py, so audio is untouched here; the
    media cut is in test_link_cut.py).
"""

from __future__ import annotations

import time

import pytest

from firmware.sip import api
from lab.chaos import ChaosProxy
from tests.sip.conftest import Harness, ToneFeeder, sip_doc


@pytest.fixture
def proxied(kamailio):
    """(proxy, box): the box registered through the proxy; both stopped afterwards."""
    with ChaosProxy(0, kamailio.address, seed=1) as proxy:
        box = Harness(sip_doc(kamailio, edges=[proxy.uri])).start()
        try:
            box.wait(api.REGISTRATION, ok=True, timeout=5)
            box.wait(api.EDGE, ok=True, timeout=3)
            yield proxy, box
        finally:
            box.stop()


def _time_to_edge(box: Harness, ok: bool, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    box.wait(api.EDGE, ok=ok, timeout=timeout)
    return time.monotonic() - t0


def test_blackhole_edge_down_within_2s_and_back(proxied):
    proxy, box = proxied
    proxy.blackhole()
    down_s = _time_to_edge(box, ok=False)
    assert down_s < 2.0, f"edge down after {down_s:.2f} s"
    assert box.bridge.status()["edges"][proxy.uri]["ok"] is False
    proxy.heal()
    up_s = _time_to_edge(box, ok=True)
    assert up_s < 1.5, f"edge back after {up_s:.2f} s"
    assert proxy.counters()["up"]["dropped"] >= 2


def test_one_way_loss_cloud_to_box_is_an_outage(proxied):
    proxy, box = proxied
    proxy.one_way("down")
    assert _time_to_edge(box, ok=False) < 2.0
    assert proxy.counters()["up"]["forwarded"] > 0  # the box still reached the cloud
    proxy.heal()
    assert _time_to_edge(box, ok=True) < 1.5


def test_call_dialog_survives_a_3s_signalling_blackhole(proxied, agents):
    proxy, box = proxied
    agent = agents["agent2"]
    agent_call = agent.dial("2001")
    inc = box.wait(api.INCOMING, timeout=5)
    feeder = ToneFeeder(box, inc.call, 1000.0)
    box.bridge.answer(inc.call)
    box.wait(api.ANSWERED, inc.call)
    box.wait_agent_tone(agent, 1000.0, call=agent_call, timeout=5)
    proxy.blackhole()
    box.run(3.0)
    proxy.heal()
    box.run(1.5)
    assert api.ENDED not in box.kinds(inc.call)
    assert agent.call(agent_call)["state"] == "CONFIRMED"
    assert abs(feeder.measure()["hz"] - 660.0) <= 20
    box.bridge.hangup(inc.call)
    box.wait(api.ENDED, inc.call, timeout=5)


def test_sip_over_tcp_through_the_proxy(kamailio):
    """Registration and OPTIONS over TCP cross the proxy; a blackhole stalls the stream
    and the edge is declared down; after heal the same connection carries on."""
    with ChaosProxy(0, kamailio.address, udp=False) as proxy:
        box = Harness(sip_doc(kamailio, edges=[proxy.uri], transport="tcp")).start()
        try:
            box.wait(api.REGISTRATION, ok=True, timeout=5)
            box.wait(api.EDGE, ok=True, timeout=3)
            assert proxy.status()["tcp_connections"] >= 1
            proxy.blackhole()
            assert _time_to_edge(box, ok=False) < 2.0
            proxy.heal()
            assert _time_to_edge(box, ok=True) < 2.0
            assert proxy.counters()["up"]["forwarded"] > 2
        finally:
            box.stop()
