"""Branch phones (FXS) to and from the cloud, end to end: the phone on the SLIC twin,
call control, pjsua2, Kamailio, a real agent process. Audio is checked by frequency at
both ends, DTMF by what the other side decodes, caller ID by demodulating what the
phone's line carried between rings.
"""

from __future__ import annotations

import numpy as np

from cext.callerid import CallerIdDecoder
from cext.dtmf import DtmfDetector
from drivers.bus.pcm import LINE_RATE
from tests.e2e.conftest import AGENT_NUMBERS, agent_call, agent_hears, last_id, sine, tone_of


def _cdr_for(box, port: str, dnis: str) -> dict:
    return box.until(lambda: next((c for c in box.cdrs() if c["port"] == port
                                   and c["dnis"] == dnis and c["ended"]), None),
                     5, f"a CDR for {port} -> {dnis}")


def test_phone_dials_cloud_by_dtmf_audio_and_dtmf_cross(clean, agents):
    box, a2 = clean, agents["agent2"]
    before = last_id(a2)
    box.dial(AGENT_NUMBERS["agent2"])
    call = agent_call(box, a2, "in", before, state="CONFIRMED")
    assert call["headers"]["from_user"] == "201"  # the extension
    box.wait_state("fxs1", "CONNECTED")
    box.phone().speak(sine(1000.0, 3.0))
    agent_hears(box, a2, call["id"], 1000.0)
    box.run(0.6)
    assert abs(tone_of(box.phone().heard)["hz"] - 660.0) < 15  # the agent's tone
    box.run(0.8)  # the spoken tone is over: keypresses are clean
    end = box.phone().dial_dtmf("159#")
    box.until(lambda: a2.call(call["id"])["dtmf"] == "159#", 5, "DTMF 159# at the agent")
    assert box.reactor.now() >= end - 1.0
    assert {e["method"] for e in a2.call(call["id"])["dtmf_events"]} == {"rfc4733"}
    box.hang_up()
    box.until(lambda: a2.call(call["id"])["state"] == "DISCONNECTED", 5, "BYE at the agent")
    cdr = _cdr_for(box, "fxs1", AGENT_NUMBERS["agent2"])
    assert cdr["direction"] == "outbound" and cdr["disposition"] == "answered"
    assert cdr["ani"] == "201" and cdr["codec"] and cdr["mos"] is not None
    assert cdr["sip_call_id"]


def test_phone_dials_cloud_by_pulse(clean, agents):
    box, a2 = clean, agents["agent2"]
    before = last_id(a2)
    box.dial(AGENT_NUMBERS["agent2"], pulse=True)
    call = agent_call(box, a2, "in", before, state="CONFIRMED", timeout=8)
    assert call["headers"]["to_user"] == AGENT_NUMBERS["agent2"]
    box.wait_state("fxs1", "CONNECTED")
    box.hang_up()


def test_cloud_rings_phone_with_caller_id_then_dtmf_reaches_phone(clean, agents):
    box, a3 = clean, agents["agent3"]
    phone = box.phone("fxs1")
    bursts_before = len(phone.ring_bursts)
    pai = f'"Cloud Agent" <sip:{AGENT_NUMBERS["agent3"]}@cloud.test>'
    call_id = a3.dial("201", headers={"P-Asserted-Identity": pai})
    box.wait_state("fxs1", "RINGING")
    box.until(lambda: len(phone.ring_bursts) > bursts_before, 4, "the first ring burst")
    first_end = phone.ring_bursts[bursts_before][1]
    box.until(lambda: phone.is_ringing, 6, "the second ring")
    on = phone.ring_bursts[bursts_before][1] - phone.ring_bursts[bursts_before][0]
    gap = box.reactor.now() - first_end
    assert abs(on - 2.0) < 0.25 and abs(gap - 4.0) < 0.35, (on, gap)  # US: 2 s on, 4 s off
    decoder = CallerIdDecoder("bell202", LINE_RATE)
    messages = decoder.process(phone.heard)
    assert messages, "no caller ID burst decoded from the phone's line"
    assert messages[-1]["number"] == AGENT_NUMBERS["agent3"]
    assert messages[-1]["name"] == "Cloud Agent"
    phone.off_hook()
    box.wait_state("fxs1", "CONNECTED")
    box.until(lambda: a3.call(call_id)["state"] == "CONFIRMED", 5, "the agent's call up")
    box.run(0.5)
    a3.set_tone(0)  # the agent's 880 Hz would sit on the 852 Hz DTMF row
    box.run(0.3)
    heard_from = len(phone.heard)
    a3.dtmf("47*", call=call_id)
    box.run(2.0)
    a3.set_tone(880.0)
    det = DtmfDetector()
    got = "".join(d for d, _s, _e in det.process(np.asarray(phone.heard[max(0, heard_from - 800):])))
    assert got == "47*"
    box.hang_up()
