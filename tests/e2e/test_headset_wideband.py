"""The headset position end to end: a call from the headset to a cloud agent that speaks
only G.722 carries a 5 kHz tone both ways, which no 8 kHz path can (its band ends at
4 kHz); answer, mute and hang-up go through the control API (CallControl).
"""

from __future__ import annotations

import numpy as np

from lab.agent import dominant_tone
from tests.e2e.conftest import AGENT_NUMBERS, agent_call, agent_hears, last_id, sine

WIDE_HZ = 5000.0


def test_headset_call_to_g722_agent_carries_5khz_both_ways(clean, agents):
    box, wide = clean, agents["wide"]
    hs = box.board.headset
    assert hs.rate == 16000
    before = last_id(wide)
    box.core.cc.dial("headset", AGENT_NUMBERS["wide"])
    call = agent_call(box, wide, "in", before, state="CONFIRMED")
    box.wait_state("headset", "CONNECTED")
    assert call["codec"].startswith("G722") or wide.call(call["id"])["codec"].startswith("G722")
    hs.speak(sine(WIDE_HZ, 3.0, rate=hs.rate))
    heard = agent_hears(box, wide, call["id"], WIDE_HZ, tolerance=30)
    assert heard["dbm0"] > -30
    box.run(0.5)
    tail = hs.heard[-hs.rate // 2:]
    ear = dominant_tone(np.asarray(tail), hs.rate)
    assert abs(ear["hz"] - WIDE_HZ) < 30 and ear["dbm0"] > -30, ear
    quality = box.core.bridge.quality(box.core.cc.ports["headset"].call)
    assert quality["codec"].startswith("G722")
    box.core.cc.headset_mute(True)
    box.run(1.5)
    assert wide.call(call["id"])["rx"]["dbm0"] < -50  # muted: silence at the agent
    box.core.cc.headset_hangup()
    box.core.cc.headset_mute(False)
    box.wait_state("headset", "IDLE")
    assert box.core.cc.ports["headset"].media.rate == 8000  # narrowband again when idle
    box.until(lambda: wide.call(call["id"])["state"] == "DISCONNECTED", 5, "BYE at the agent")
