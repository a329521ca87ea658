"""PSTN lines (FXO) to and from the cloud, end to end: the virtual CO on the DAA twin,
call control, pjsua2, Kamailio, real agent processes.

Inbound: the CO rings with caller ID; the box offers the call to the cloud on the second
ring, To = the line's number (agent1 answers it). Outbound: the cloud dials a PSTN
number; the box seizes the free line and dials it as DTMF, decoded here from what the
CO heard.
"""

from __future__ import annotations

import numpy as np

from cext.dtmf import DtmfDetector, dtmf_samples
from tests.e2e.conftest import (
    AGENT_NUMBERS,
    FXO_NUMBER,
    PSTN_NUMBER,
    agent_call,
    agent_hears,
    last_id,
    sine,
    tone_of,
)

CALLER = {"number": "5551230100", "name": "ACME LTD", "datetime": "11221030", "reason": None}


def _ring_in(box, agent, before: int) -> dict:
    box.co().ring(callerid=CALLER)
    return agent_call(box, agent, "in", before, state="CONFIRMED", timeout=12)


def test_pstn_caller_reaches_agent_with_ani_dnis_audio_and_dtmf(clean, agents):
    box, a1 = clean, agents["agent1"]
    call = _ring_in(box, a1, last_id(a1))
    h = call["headers"]
    assert (h["from_user"], h["from_display"]) == (CALLER["number"], CALLER["name"])
    assert h["pai_user"] == CALLER["number"] and CALLER["name"] in h["pai"]
    assert h["to_user"] == FXO_NUMBER
    assert h["x"]["X-Branchline-Line"] == "fxo1"
    assert h["x"]["X-Branchline-DNIS"] == FXO_NUMBER
    box.wait_state("fxo1", "CONNECTED")
    assert box.co().answered
    assert box.core.status()["ports"]["fxo1"]["state"] == "seized"
    box.co().play(sine(1000.0, 2.5, amp=5000))
    agent_hears(box, a1, call["id"], 1000.0)
    box.run(0.8)
    assert abs(tone_of(box.co().heard)["hz"] - 440.0) < 15
    box.run(1.0)
    box.co().play(dtmf_samples("907*", level_dbm0=-10.0))
    box.until(lambda: a1.call(call["id"])["dtmf"] == "907*", 6, "caller DTMF at agent1")
    a1.hangup(call["id"])
    box.wait_state("fxo1", "IDLE")
    assert not box.co().answered
    cdr = box.until(lambda: next((c for c in box.cdrs() if c["port"] == "fxo1"
                                  and c["ended"]), None), 5, "the CDR")
    assert (cdr["direction"], cdr["ani"], cdr["dnis"], cdr["disposition"]) == \
        ("inbound", CALLER["number"], FXO_NUMBER, "answered")
    assert cdr["sip_call_id"]  # the INVITE's Call-ID
    assert 1.0 <= cdr["mos"] <= 4.5


def test_pstn_caller_hangs_up_first_bye_reaches_agent(clean, agents):
    box, a1 = clean, agents["agent1"]
    call = _ring_in(box, a1, last_id(a1))
    box.wait_state("fxo1", "CONNECTED")
    box.run(0.5)
    box.co().disconnect("loop_drop")
    box.until(lambda: a1.call(call["id"])["state"] == "DISCONNECTED", 5, "BYE at agent1")
    box.wait_state("fxo1", "IDLE")


def test_agent_transfers_pstn_caller_to_another_agent(clean, agents):
    box, a1, a2 = clean, agents["agent1"], agents["agent2"]
    before2 = last_id(a2)
    call = _ring_in(box, a1, last_id(a1))
    box.wait_state("fxo1", "CONNECTED")
    a1.transfer(AGENT_NUMBERS["agent2"], call=call["id"])
    leg = agent_call(box, a2, "in", before2, state="CONFIRMED", timeout=8)
    assert leg["headers"]["from_user"] in ("branch", CALLER["number"])
    box.until(lambda: a1.call(call["id"])["state"] == "DISCONNECTED", 6, "agent1 out")
    box.co().play(sine(1000.0, 2.5, amp=5000))
    agent_hears(box, a2, leg["id"], 1000.0)
    box.run(0.8)
    assert abs(tone_of(box.co().heard)["hz"] - 660.0) < 15  # the caller hears agent2
    assert box.state("fxo1") == "CONNECTED"
    a2.hangup(leg["id"])
    box.wait_state("fxo1", "IDLE")


def test_cloud_dials_out_through_the_pstn_line(clean, agents):
    box, a1 = clean, agents["agent1"]
    heard_before = len(box.co().heard)
    call_id = a1.dial(PSTN_NUMBER)
    box.until(lambda: box.co().answered, 6, "the CO seeing the line seized")
    box.wait_state("fxo1", "CONNECTED", timeout=8)
    box.run(0.5)
    digits = "".join(d for d, _s, _e in DtmfDetector().process(
        np.asarray(box.co().heard[max(0, heard_before - 1):])))
    assert digits == PSTN_NUMBER
    box.until(lambda: a1.call(call_id)["state"] == "CONFIRMED", 5, "agent1's call up")
    a1.hangup(call_id)
    box.wait_state("fxo1", "IDLE")
    assert not box.co().answered
    cdr = box.until(lambda: next((c for c in box.cdrs() if c["port"] == "fxo1"
                                  and c["dnis"] == PSTN_NUMBER and c["ended"]), None),
                    5, "the outbound CDR")
    assert cdr["direction"] == "outbound"
