"""Survivable call continuity on the twins in fake time (SimBoard + SimCloud's WAN
model): blips keep the agent, longer losses re-route the PSTN caller through the local
fallback chain, phones get reorder, new calls work in SURVIVABLE, queued callers are
handed back, and an hour's outage writes every CDR exactly once."""

import random

import numpy as np
import pytest

from cext.dtmf import DtmfDetector, dtmf_samples
from firmware.survive import prompts
from lab.simcloud import dominant_hz
from tests.callctl.rig import dial, tail, tone_level

CALLER = {"number": "2015550123", "name": "JANE CALLER", "datetime": "11221030", "reason": None}
AGENT_HZ = 650.0


def pstn_call(r, agent_hz=AGENT_HZ, answer_after=1.0):
    """A PSTN caller on fxo1 talking to a cloud agent; returns the SimCall."""
    r.cloud.agent("PSTN 1", answer_after=answer_after, tone_hz=agent_hz)
    r.co().ring(callerid=CALLER)
    r.run(8.0 + answer_after + 0.5)
    call = r.cloud.invites[-1]
    assert call.state == "answered" and r.state("fxo1") == "CONNECTED"
    return call


def heard(r, seconds):
    return tail(r.co().heard, seconds)


def survive(r):
    return r.cc.status()["survivability"]


def test_wan_loss_longer_than_the_window_reroutes_the_caller_to_the_headset(srig):
    r = srig()
    call = pstn_call(r)
    lost = r.reactor.now()
    r.cloud.wan(False)
    r.run(2.6)  # OPTIONS: 2 misses; RTP: 2 s
    assert survive(r)["state"] == "survivable"
    r.run(2.0)
    assert tone_level(heard(r, 2.0), prompts.HOLD_HZ) > 10 * tone_level(heard(r, 2.0), AGENT_HZ)
    r.run(lost + 10.2 - r.reactor.now())  # the blip window (10 s from the loss) is over
    assert r.state("fxo1") == "CONNECTED" and r.co().answered  # the line is kept
    assert call.state == "ended" and call.ended_by == "box"
    r.run(0.5)
    assert abs(dominant_hz(heard(r, 0.4)) - 1000.0) < 20  # the announcement
    r.run(1.0)
    assert r.state("headset") == "RINGING"
    rang_at = next(t for t, port, _o, new in r.cc.trace if port == "headset" and new == "RINGING")
    assert rang_at - lost < 10.0 + 3.0
    r.cc.headset_answer()
    r.run(0.5)
    hs = r.board.headset
    r.co().play(np.round(6000 * np.sin(2 * np.pi * 900 * np.arange(8000) / 8000)).astype(np.int16))
    r.run(1.0)
    assert abs(dominant_hz(hs.heard[-hs.rate // 2:], rate=hs.rate) - 900.0) < 20
    assert r.state("fxo1") == "CONNECTED" and r.state("headset") == "CONNECTED"
    assert survive(r)["counters"]["rescued"] == 1 and survive(r)["fallbacks"] == []


@pytest.mark.parametrize("blip_s", [2.0, 5.0, 9.0])
def test_a_blip_shorter_than_the_window_keeps_the_same_agent(srig, blip_s):
    r = srig()
    call = pstn_call(r)
    r.cloud.wan(False)
    r.run(blip_s)
    r.cloud.wan(True)
    r.run(1.5)
    assert call.state == "answered" and r.cc.ports["fxo1"].call == call.handle
    assert abs(dominant_hz(heard(r, 0.5)) - AGENT_HZ) < 15  # the same agent, heard again
    r.co().play(np.round(6000 * np.sin(2 * np.pi * 1100 * np.arange(8000) / 8000)).astype(np.int16))
    r.run(1.0)
    assert abs(call.dominant_hz(last_s=0.5) - 1100.0) < 15
    counters = survive(r)["counters"]
    assert counters.get("rescued", 0) == 0
    assert counters.get("resumed", 0) == (1 if blip_s > 2.0 else counters.get("blips", 0))
    assert call.reinvites == counters.get("resumed", 0)


def test_wan_dies_while_ringing_the_caller_is_answered_locally(srig):
    r = srig()
    r.cloud.agent("PSTN 1", answer_after=60.0)
    r.co().ring(callerid=CALLER)
    r.run(8.0)
    call = r.cloud.invites[-1]
    assert r.state("fxo1") == "OFFERED"
    r.cloud.wan(False)
    r.run(3.5)
    assert survive(r)["state"] == "survivable"
    assert call.state == "ended" and r.co().answered and r.state("fxo1") == "CONNECTED"
    assert r.state("headset") == "RINGING"


def _rescued_to(r, fallback, **changes):
    pstn_call(r)
    r.cloud.wan(False)
    r.run(11.5)


def test_hunt_group_rings_phones_in_cascade_then_one_answers(srig):
    r = srig(survive__fallback=["hunt", "queue"], survive__hunt_step_s=4.0)
    pstn_call(r)
    r.cloud.wan(False)
    r.run(11.2)
    assert r.phone("fxs1").is_ringing and not r.phone("fxs2").is_ringing
    t1 = next(t for t, p, _o, n in r.cc.trace if p == "fxs1" and n == "RINGING")
    r.run(4.5)
    assert r.phone("fxs1").is_ringing or r.state("fxs1") == "RINGING"
    t2 = next(t for t, p, _o, n in r.cc.trace if p == "fxs2" and n == "RINGING")
    assert t2 - t1 == pytest.approx(4.0, abs=0.1)
    r.phone("fxs2").off_hook()
    r.run(1.0)
    assert r.state("fxs2") == "CONNECTED" and r.state("fxs1") == "IDLE"
    r.co().play(np.round(6000 * np.sin(2 * np.pi * 900 * np.arange(8000) / 8000)).astype(np.int16))
    r.run(1.0)
    assert abs(dominant_hz(tail(r.phone("fxs2").heard, 0.5)) - 900.0) < 20


def test_queue_plays_music_then_callback_capture_confirms_and_stores(srig):
    r = srig(survive__fallback=["queue", "callback"], survive__queue_timeout_s=8.0)
    pstn_call(r)
    r.cloud.wan(False)
    r.run(13.0)
    assert dominant_hz(heard(r, 0.2)) == pytest.approx(
        min(prompts.MOH_NOTES, key=lambda f: abs(f - dominant_hz(heard(r, 0.2)))), abs=15)
    r.run(8.0)  # the queue timed out: the number prompt
    assert r.cc.status()["survivability"]["fallbacks"][0]["stage"] == "callback"
    r.co().play(dtmf_samples("5551234#", 100, 100, level_dbm0=-10.0))
    r.run(2.0)
    r.run(3.0)  # the number read back as DTMF, then the confirm beep
    det = DtmfDetector()
    found = "".join(d for d, _s, _e in det.process(heard(r, 5.0)))
    assert "5551234" in found
    r.co().play(dtmf_samples("1", 100, 100, level_dbm0=-10.0))
    r.run(3.0)
    assert r.state("fxo1") == "IDLE" and not r.co().answered
    stored = [row["body"] for row in r.store.pending(1000) if row["kind"] == "callback"]
    assert len(stored) == 1 and stored[0]["number"] == "5551234"
    assert stored[0]["ani"] == "2015550123"


def test_primary_edge_dies_secondary_takes_new_calls_and_moves_the_call(srig):
    r = srig()
    call = pstn_call(r)
    r.cloud.power("sip:edge1.sim", False)
    r.run(3.0)
    assert survive(r)["state"] == "cloud_secondary"
    assert r.cloud.registrations[-1][1:] == ("sip:edge2.sim", True)
    r.run(1.0)
    assert call.edge == "sip:edge2.sim" and call.state == "answered"
    assert r.cc.ports["fxo1"].call == call.handle
    dial(r, "5551234", phone="fxs1")
    r.run(1.0)
    assert r.cloud.invites[-1].to == "5551234" and r.cloud.invites[-1].edge == "sip:edge2.sim"


def test_wan_returns_during_a_survivable_call_failback_waits_and_keeps_it(srig):
    r = srig(calls__headset_auto_answer=True)
    pstn_call(r)
    r.cloud.wan(False)
    r.run(14.0)
    assert r.state("headset") == "CONNECTED" and r.state("fxo1") == "CONNECTED"
    r.cloud.wan(True)
    r.run(20.0)
    assert survive(r)["state"] == "survivable"  # not steady for 30 s yet
    r.run(12.0)
    assert survive(r)["state"] == "cloud_primary" and survive(r)["transitions"] == 2
    assert r.state("headset") == "CONNECTED" and r.state("fxo1") == "CONNECTED"


def test_queued_callers_are_handed_back_with_the_time_they_waited(srig):
    r = srig(survive__fallback=["queue", "callback"], survive__queue_timeout_s=600.0,
             survive__failback_stable_s=5.0)
    r.cloud.wan(False)
    r.run(3.0)
    r.cloud.agent("PSTN 1", answer_after=1.0, tone_hz=AGENT_HZ)
    r.co().ring(callerid=CALLER)
    r.run(10.0)
    assert r.co().answered and r.cc.status()["survivability"]["fallbacks"][0]["stage"] == "queue"
    assert r.cloud.invites == []
    r.cloud.wan(True)
    r.run(8.0)
    back = r.cloud.invites[-1]
    assert (back.to, back.from_number) == ("PSTN 1", "2015550123")
    assert int(back.headers["X-Branchline-Waited"]) >= 8
    r.run(2.0)
    assert back.state == "answered" and r.cc.ports["fxo1"].call == back.handle
    assert abs(dominant_hz(heard(r, 0.5)) - AGENT_HZ) < 15
    assert survive(r)["counters"]["handed_back"] == 1


def test_branch_phone_gets_reorder_on_loss_and_dials_a_local_extension(srig):
    r = srig()
    dial(r, "5551234")
    r.run(1.0)
    assert r.state("fxs1") == "CONNECTED"
    r.cloud.wan(False)
    r.run(11.0)
    assert r.state("fxs1") == "REORDER"
    r.phone().on_hook()
    r.run(1.5)  # longer than a flash
    dial(r, "202")
    r.run(0.5)
    assert r.state("fxs2") == "RINGING"


def test_outage_dial_rules_and_emergency(srig):
    r = srig(calls__dialplan="9[2-9]xxxxxx|911", survive__outage_strip_prefix="9",
             survive__outage_add_prefix="1")
    r.cloud.wan(False)
    r.run(3.0)
    dial(r, "95557777")
    r.run(3.0)
    assert r.cloud.invites == [] and r.co().answered
    assert _digits(r.co().heard) == "15557777"
    r.phone().on_hook()
    r.run(1.5)
    dial(r, "911")
    r.run(3.0)
    assert _digits(tail(r.co().heard, 3.0)) == "911"


def _digits(samples):
    return "".join(d for d, _s, _e in DtmfDetector().process(np.asarray(samples)))


def test_fifty_random_flaps_during_calls_lose_nothing_and_do_not_flap_the_state(srig):
    r = srig(calls__headset_auto_answer=True)
    rnd = random.Random(5)
    call = pstn_call(r)
    at, schedule = 1.0, []
    for _ in range(50):
        length = rnd.uniform(0.5, 6.0)
        schedule.append((at, length))
        at += length + rnd.uniform(1.0, 5.0)
    r.cloud.flap(schedule)
    r.run(at + 1.0)
    assert r.state("fxo1") == "CONNECTED" and r.co().answered  # the caller is still there
    assert call.state == "answered" and r.cc.ports["fxo1"].call == call.handle
    assert survive(r)["transitions"] == 1  # down once; never steady for 30 s meanwhile
    r.run(35.0)  # a flapping WAN must answer for flap_hold_s (120 s), not 30 s
    assert survive(r)["state"] == "survivable"
    r.run(90.0)
    assert survive(r)["state"] == "cloud_primary" and survive(r)["transitions"] == 2


def test_an_hour_offline_with_many_calls_writes_every_cdr_exactly_once(srig):
    r = srig(calls__headset_auto_answer=True)
    r.cloud.wan(False)
    r.run(3.0)
    calls = 0
    for i in range(31):  # a PSTN caller every 2 minutes, a local call in between
        r.co().ring(callerid={**CALLER, "number": f"20155501{i:02d}"})
        r.run(12.0)
        assert r.state("headset") == "CONNECTED", i
        r.run(20.0)
        r.co().disconnect()
        r.run(2.0)
        assert r.state("fxo1") == "IDLE" and r.state("headset") == "IDLE", i
        dial(r, "202")
        r.phone("fxs2").off_hook()
        r.run(10.0)
        r.phone().on_hook()
        r.phone("fxs2").on_hook()
        r.run(120.0 - 48.0 - (r.reactor.now() % 1))
        calls += 2
    assert r.reactor.now() - 1000.0 > 3600.0
    assert survive(r)["state"] == "survivable"
    rows = r.store.list(limit=1000)
    assert len(rows) == calls and all(row["ended"] is not None for row in rows)
    queued = [row for row in r.store.pending(1000) if row["kind"] == "cdr"]
    assert sorted(q["uuid"] for q in queued) == sorted(row["uuid"] for row in rows)
    states = [row["body"] for row in r.store.pending(1000) if row["kind"] == "state_change"]
    assert [(s["old"], s["new"]) for s in states] == [("cloud_primary", "survivable")]
