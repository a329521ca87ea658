"""Phone features and failure paths end to end: transfer by hook flash (REFER at the
agents), park and pickup of a cloud call, far ends answering 486 / 503 / never, and an
odd peer (sipp) sending malformed and truncated SIP to the box.
"""

from __future__ import annotations

from lab.sipp import start_sipp
from tests.e2e.conftest import (
    AGENT_NUMBERS,
    AGENT_TONES,
    agent_call,
    agent_hears,
    last_id,
    sine,
    tone_of,
)


def _talk_to(box, agent, number: str, phone: str = "fxs1") -> dict:
    before = last_id(agent)
    box.dial(number, phone=phone)
    call = agent_call(box, agent, "in", before, state="CONFIRMED")
    box.wait_state(phone, "CONNECTED")
    return call


def test_flash_consult_and_hang_up_transfers_by_refer(clean, agents):
    box, a2, a3 = clean, agents["agent2"], agents["agent3"]
    first = _talk_to(box, a2, AGENT_NUMBERS["agent2"])
    phone = box.phone()
    phone.flash(ms=300)
    box.wait_state("fxs1", "DIALTONE")
    box.until(lambda: a2.call(first["id"])["held"], 5, "agent2 put on hold")
    before3 = last_id(a3)
    box.dial(AGENT_NUMBERS["agent3"])
    consult = agent_call(box, a3, "in", before3, state="CONFIRMED")
    box.wait_state("fxs1", "CONNECTED")
    before2 = last_id(a2)
    phone.on_hook()  # hook-on with a held call and an answered consult: attended transfer
    box.wait_state("fxs1", "IDLE")
    # agent2 is REFERred to agent3 with Replaces: agent2 calls agent3, that call replaces
    # the consult leg, and both legs to the box end.
    joined = agent_call(box, a2, "out", before2, state="CONFIRMED", timeout=8)
    assert AGENT_NUMBERS["agent3"] in joined["remote_uri"]  # Refer-To: the consult leg
    box.until(lambda: any(e.kind == "transfer_done" and e.data.get("ok")
                          for e in box.sip_events), 6, "the REFER's final NOTIFY (2xx)")
    box.until(lambda: a2.call(first["id"])["state"] == "DISCONNECTED", 6,
              "agent2's old leg to the box ended")
    box.idle()  # the box is out of it; agent2 and agent3 talk to each other
    agent_hears(box, a2, joined["id"], AGENT_TONES["agent3"])  # agent2 now hears agent3
    replacing = agent_call(box, a3, "in", consult["id"], state="CONFIRMED")
    assert replacing["headers"]["replaces"] == consult["id"]
    agent_hears(box, a3, replacing["id"], AGENT_TONES["agent2"])  # and agent3 agent2
    a2.hangup(joined["id"])
    box.until(lambda: a3.call(replacing["id"])["state"] == "DISCONNECTED", 5,
              "agent3's replacing call ended")
    assert a3.alive()


def test_park_a_cloud_call_and_pick_it_up_on_another_phone(clean, agents):
    box, a2 = clean, agents["agent2"]
    call = _talk_to(box, a2, AGENT_NUMBERS["agent2"])
    box.phone("fxs1").flash(ms=300)
    box.wait_state("fxs1", "DIALTONE")
    box.dial("*71")  # park in slot 1
    box.until(lambda: box.core.status()["parked"].get("1") is not None, 5, "slot 1 taken")
    box.hang_up("fxs1")
    box.dial("*81", phone="fxs2")  # pick up slot 1
    box.wait_state("fxs2", "CONNECTED")
    box.until(lambda: not a2.call(call["id"])["held"], 5, "agent2 taken off hold")
    box.run(0.8)
    assert abs(tone_of(box.phone("fxs2").heard)["hz"] - 660.0) < 15
    box.phone("fxs2").speak(sine(1000.0, 2.5))
    agent_hears(box, a2, call["id"], 1000.0)
    assert box.core.status()["parked"] == {}
    box.hang_up("fxs2")
    box.until(lambda: a2.call(call["id"])["state"] == "DISCONNECTED", 5, "BYE at agent2")


def _failed_call(box, number: str, expect_state: str, timeout: float) -> dict:
    box.dial(number)
    box.wait_state("fxs1", expect_state, timeout=timeout)
    box.run(1.2)
    heard = box.phone().heard[-8000:]
    box.hang_up()
    return {"heard": heard}


def test_busy_agent_gives_busy_tone(clean, agents):
    got = _failed_call(clean, AGENT_NUMBERS["busy"], "BUSY", 6)
    tone = tone_of(got["heard"], 1.0)
    assert tone["dbm0"] > -40 and min(abs(tone["hz"] - 480), abs(tone["hz"] - 620)) < 15
    cdr = clean.until(lambda: next((c for c in clean.cdrs()
                                    if c["dnis"] == AGENT_NUMBERS["busy"]), None), 5, "CDR")
    assert cdr["disposition"] == "busy"


def test_refusing_edge_503_gives_reorder(clean, agents):
    _failed_call(clean, AGENT_NUMBERS["down"], "REORDER", 6)  # 500 via the proxy
    cdr = clean.until(lambda: next((c for c in clean.cdrs()
                                    if c["dnis"] == AGENT_NUMBERS["down"]), None), 5, "CDR")
    assert cdr["disposition"] == "failed"


def test_unanswered_call_times_out_408_to_reorder(clean, agents):
    _failed_call(clean, AGENT_NUMBERS["slow"], "REORDER", 14)
    cdr = clean.until(lambda: next((c for c in clean.cdrs()
                                    if c["dnis"] == AGENT_NUMBERS["slow"]), None), 5, "CDR")
    assert cdr["disposition"] == "no_answer"


def test_malformed_sip_from_an_odd_peer_no_crash_call_cleaned_up(clean, agents, tmp_path):
    box = clean
    port = box.core.bridge.status()["ports"]["udp"]
    with start_sipp("garbage_uac", f"127.0.0.1:{port}", service="201", timeout=30,
                    workdir=tmp_path) as sipp:
        box.wait_state("fxs1", "RINGING", timeout=8)
        box.phone().off_hook()
        box.until(lambda: sipp.proc.poll() is not None, 20, "sipp's scenario to end")
        result = sipp.wait()
    assert result.ok, result.log()
    box.until(lambda: box.state("fxs1") in ("REORDER", "IDLE"), 5, "the call cleaned up")
    box.hang_up()
    box.idle()
    assert box.registered()
    _talk_to(box, agents["agent2"], AGENT_NUMBERS["agent2"])  # the box still places calls
    box.hang_up()
