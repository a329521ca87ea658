"""PjBridge calls end to end through a real Kamailio to real agent processes.

One bridge (trunk registration as `branch`) serves the whole module; each test places
or takes its own calls and leaves none behind. Audio is checked by frequency (±20 Hz)
and level at both ends; DTMF, hold and transfer by what the other side observes.
"""

from __future__ import annotations

import pytest

from firmware.sip import api
from lab.agentctl import Agent
from lab.kamailio import LabError
from tests.sip.conftest import Harness, ToneFeeder, sip_doc


@pytest.fixture(scope="module")
def box(kamailio, agents):
    doc = sip_doc(kamailio)
    doc["lines"]["fxs1"]["extension"] = "2001"  # the cloud's alias for this phone
    harness = Harness(doc).start()
    harness.wait(api.REGISTRATION, ok=True)
    yield harness
    harness.stop()


@pytest.fixture(autouse=True)
def no_calls_left(box, agents):
    yield
    for agent in agents.values():
        try:
            agent.hangup()  # every live call of the agent
        except LabError:
            pass  # its calls ended already
    box.run(0.3)
    for call in list(box.bridge.status()["calls"]):
        box.bridge.hangup(call)
    deadline_events = 0
    while box.bridge.status()["calls"] and deadline_events < 100:
        box.run(0.05)
        deadline_events += 1
    assert box.bridge.status()["calls"] == {}


def _call_agent(box: Harness, agent: Agent, **kw) -> int:
    call = box.bridge.make_call("fxs1", agent.user, **kw)
    box.wait(api.ANSWERED, call)
    return call


def test_outbound_call_carries_ani_name_and_headers(box, agents):
    a1 = agents["agent1"]
    call = _call_agent(box, a1, from_number="5551234", from_name="Ada Lovelace",
                       headers={"X-Branchline-Line": "fxo1", "X-Branchline-DNIS": "8005550100"})
    got = a1.wait_incoming()["headers"]
    assert got["from_user"] == "5551234"
    assert got["from_display"] == "Ada Lovelace"
    assert got["pai_user"] == "5551234" and "Ada Lovelace" in got["pai"]
    assert got["x"]["X-Branchline-Line"] == "fxo1"
    assert got["x"]["X-Branchline-DNIS"] == "8005550100"
    assert box.bridge.status()["calls"][call]["state"] == "answered"
    box.bridge.hangup(call)
    ended = box.wait(api.ENDED, call)
    assert ended.data["code"] == 200


def test_audio_crosses_both_ways(box, agents):
    a1 = agents["agent1"]
    call = _call_agent(box, a1)
    feeder = ToneFeeder(box, call, 1000.0)
    box.run(1.5)
    heard_by_agent = box.wait_agent_tone(a1, 1000.0, timeout=3)
    assert -30 < heard_by_agent["dbm0"] < 3
    box.run(0.2)
    heard = feeder.measure()
    assert abs(heard["hz"] - 440.0) <= 20, heard
    assert -30 < heard["dbm0"] < 3
    q = box.bridge.quality(call)
    assert q["codec"].startswith("PCMU")
    assert q["loss_pct"] == 0.0
    box.bridge.hangup(call)
    ended = box.wait(api.ENDED, call)
    assert ended.data["quality"]["codec"].startswith("PCMU")


def test_inbound_call_answered_audio_far_hangup(box, agents):
    a2 = agents["agent2"]
    agent_call = a2.dial("2001", headers={"X-Branchline-Queue": "sales"})
    inc = box.wait(api.INCOMING)
    assert inc.data["to_number"] == "2001"
    assert inc.data["line"] == "fxs1"
    assert inc.data["from_number"] == "agent2"
    assert inc.data["headers"]["X-Branchline-Queue"] == "sales"
    call = inc.call
    box.bridge.ringing(call)
    a2.wait_call_state("EARLY", agent_call)
    feeder = ToneFeeder(box, call, 1200.0)
    box.bridge.answer(call)
    box.wait(api.ANSWERED, call)
    box.run(1.5)
    assert abs(feeder.measure()["hz"] - 660.0) <= 20
    box.wait_agent_tone(a2, 1200.0, call=agent_call, timeout=3)
    a2.hangup(agent_call)
    assert box.wait(api.ENDED, call).data["code"] == 200


@pytest.mark.parametrize("method", ["rfc4733", "info"])
def test_dtmf_both_ways(box, agents, method):
    a1 = agents["agent1"]
    box.bridge.sip["dtmf"] = method
    try:
        call = _call_agent(box, a1)
        box.run(0.3)
        box.bridge.send_dtmf(call, "12#")
        got = a1.wait_dtmf("12#", timeout=5)
        assert {ev["method"] for ev in got["dtmf_events"]} == {method}
        a1.dtmf("9*", method=method)
        first = box.wait(api.DTMF, call)
        second = box.wait(api.DTMF, call)
        assert (first.data["digit"], second.data["digit"]) == ("9", "*")
        assert first.data["method"] == method
    finally:
        box.bridge.sip["dtmf"] = "rfc4733"


def test_hold_and_unhold_both_ways(box, agents):
    a1 = agents["agent1"]
    call = _call_agent(box, a1)
    box.run(0.3)
    box.bridge.hold(call)
    a1.wait_for(lambda st: a1.call(None, st)["held"], what="held by us")
    box.bridge.unhold(call)
    a1.wait_for(lambda st: not a1.call(None, st)["held"], what="resumed by us")
    box.run(0.5)  # let our re-INVITE transaction finish before the agent starts its own
    a1.hold()
    box.wait(api.HELD, call)
    a1.unhold()
    box.wait(api.RESUMED, call)


def test_blind_transfer_we_refer_the_agent(box, agents):
    a1, a2 = agents["agent1"], agents["agent2"]
    call = _call_agent(box, a1)
    calls_before = len(a2.calls())
    box.bridge.transfer(call, "agent2")
    done = box.wait(api.TRANSFER_DONE, call, timeout=8)
    assert done.data["ok"] and done.data["code"] == 200
    a2.wait_for(lambda st: len(st["calls"]) > calls_before
                and st["calls"][-1]["state"] == "CONFIRMED", what="transferred call")
    box.bridge.hangup(call)
    box.wait(api.ENDED, call)


def test_blind_transfer_agent_refers_us_same_handle(box, agents):
    a1, a2 = agents["agent1"], agents["agent2"]
    call = _call_agent(box, a1)
    feeder = ToneFeeder(box, call, 1000.0)
    box.run(1.2)
    assert abs(feeder.measure()["hz"] - 440.0) <= 20
    a1.transfer("agent2")
    req = box.wait(api.TRANSFER_REQUESTED, call)
    assert "agent2" in req.data["target"]
    box.wait(api.ANSWERED, call, timeout=8)  # the new leg, same handle
    box.run(1.5)
    assert abs(feeder.measure()["hz"] - 660.0) <= 20  # agent2's audio on the same pipe
    box.wait_agent_tone(a2, 1000.0, timeout=3)
    assert api.ENDED not in box.kinds(call)
    box.bridge.hangup(call)
    assert box.wait(api.ENDED, call).data["code"] == 200


@pytest.fixture(scope="module")
def refusers(kamailio, tmp_path_factory):
    """agent3 answers 486, agent4 503, agent5 never (the edge times the INVITE out)."""
    started = []
    try:
        for user, code in (("agent3", 486), ("agent4", 503), ("agent5", 408)):
            started.append(Agent(user, registrar=kamailio, answer_code=code,
                                 workdir=tmp_path_factory.mktemp(user)))
            started[-1].start()
        yield started
    finally:
        for agent in started:
            agent.stop()


# A proxy must not relay a 503 (RFC 3261 16.7): Kamailio turns the agent's into 500.
@pytest.mark.parametrize("user,code", [("agent3", 486), ("agent4", 500), ("agent5", 408)])
def test_refused_calls_end_with_the_code(box, refusers, user, code):
    call = box.bridge.make_call("fxs1", user)
    ended = box.wait(api.ENDED, call, timeout=8)
    assert ended.data["code"] == code, ended
    assert api.ANSWERED not in box.kinds(call)
    if code == 408:
        assert api.RINGING in box.kinds(call)  # it rang, nobody answered


def test_unknown_handles_are_ignored(box):
    box.bridge.hangup(999)
    box.bridge.send_dtmf(999, "1")
    box.bridge.answer(999)
    box.run(0.2)
    assert box.bridge.status()["calls"] == {}
    assert box.bridge.quality(999)["codec"] is None


def test_cancel_before_answer_is_487(box, refusers):
    call = box.bridge.make_call("fxs1", "agent5")
    box.wait(api.RINGING, call)
    box.bridge.hangup(call)
    assert box.wait(api.ENDED, call).data["code"] == 487


def test_edge_refusing_gives_503(box, kamailio):
    kamailio.refuse(503)
    try:
        call = box.bridge.make_call("fxs1", "agent1")
        ended = box.wait(api.ENDED, call)
    finally:
        kamailio.refuse(None)
    assert ended.data["code"] == 503
