"""A fax machine on fxs1 calls out through the whole box to a cloud agent (Kamailio, a
real pjsua2 agent process), end to end: the call starts on G.722, the fax's CNG is
heard on the line side of fxs1's media, the call switches to the passthrough profile,
and the SIP side is re-INVITEd to G.711 with a fixed jitter buffer; status and the CDR
say "fax"; the voice profile is back after the call.

The box of this module prefers G.722 (sip.codecs G722, PCMU, PCMA) so the call starts
wideband with an agent that takes all three (agent2: it answers in our order). The fax
is synthesised here: a T.30 CNG burst (1100 Hz, 0.5 s, -11 dBm0) then silence, then
the V.21 channel 2 preamble (HDLC flags 0x7E, 300 bit/s FSK 1650/1850 Hz).
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.bus.pcm import LINE_RATE
from drivers.sim.phone import dbm0_amplitude
from tests.e2e.conftest import AGENT_NUMBERS, Box, agent_call, agent_hears, e2e_doc, last_id, sine

V21_MARK_HZ, V21_SPACE_HZ, V21_BAUD = 1650.0, 1850.0, 300.0


def cng(seconds_on: float = 0.5, seconds_off: float = 1.0, dbm0: float = -11.0) -> np.ndarray:
    t = np.arange(int(seconds_on * LINE_RATE)) / LINE_RATE
    burst = dbm0_amplitude(dbm0) * np.sin(2 * np.pi * 1100.0 * t)
    return np.concatenate([burst, np.zeros(int(seconds_off * LINE_RATE))])


def v21_flags(n_flags: int = 40, dbm0: float = -12.0) -> np.ndarray:
    """Continuous-phase FSK of back-to-back HDLC flags (01111110, sent LSB first)."""
    bits = np.tile([0, 1, 1, 1, 1, 1, 1, 0], n_flags)
    n = int(len(bits) * LINE_RATE / V21_BAUD)
    which = bits[np.minimum((np.arange(n) * V21_BAUD / LINE_RATE).astype(int), len(bits) - 1)]
    freq = np.where(which == 1, V21_MARK_HZ, V21_SPACE_HZ)
    phase = np.cumsum(2 * np.pi * freq / LINE_RATE)
    return dbm0_amplitude(dbm0) * np.sin(phase)


def fax_machine() -> np.ndarray:
    return np.round(np.concatenate([cng(), v21_flags(), np.zeros(LINE_RATE // 4)])
                    ).astype(np.int16)


@pytest.fixture(scope="module")
def box(kamailio, agents, tmp_path_factory):
    """This module's box: G.722 first, so calls start wideband."""
    b = Box(e2e_doc(kamailio, codecs=["G722", "PCMU", "PCMA"]),
            tmp_path_factory.mktemp("data-fax")).start()
    try:
        b.until(b.registered, 10, "trunk registration")
        yield b
    finally:
        b.stop()


def test_fax_on_fxs1_calls_out_and_the_call_goes_to_g711_passthrough(clean, agents):
    box, a2 = clean, agents["agent2"]
    number = AGENT_NUMBERS["agent2"]
    before = last_id(a2)
    box.dial(number)
    call = agent_call(box, a2, "in", before, state="CONFIRMED")
    box.wait_state("fxs1", "CONNECTED")
    assert call["codec"] == "G722/16000"  # the call starts on G.722
    fsm = box.core.cc.ports["fxs1"]
    handle = fsm.active
    assert box.core.status()["ports"]["fxs1"]["media_mode"] == "voice"

    box.phone().speak(fax_machine())
    box.until(lambda: box.core.status()["ports"]["fxs1"]["media_mode"] == "fax", 4,
              "fxs1 in fax passthrough")
    profile = fsm.media.profile()
    assert profile == {"mode": "fax", "echo_canceller": True, "nlp": False,
                       "comfort_noise": False, "dtmf": False}
    assert fsm.media.passthrough_info["tone"] == "CNG"
    assert fsm.media.passthrough_info["side"] == "line"

    # the SIP side: re-INVITEd to G.711, seen by the agent and in the bridge's call state
    box.until(lambda: a2.call(call["id"])["codec"] in ("PCMU/8000", "PCMA/8000"), 5,
              "the agent's call on G.711")
    sip = box.until(lambda: (box.core.status()["calls"].get(handle) or {})
                    .get("jitter_buffer"), 5, "the passthrough stream's jitter buffer")
    assert sip == {"init_ms": 60, "min_ms": 60, "max_ms": 60, "fixed": True}
    assert box.core.status()["calls"][handle]["passthrough"] in ("PCMU/8000", "PCMA/8000")
    assert a2.call(call["id"])["state"] == "CONFIRMED"

    # audio still flows both ways over the new stream
    box.run(2.0)  # the flags are over
    box.phone().speak(sine(1000.0, 2.0))
    agent_hears(box, a2, call["id"], 1000.0)

    box.hang_up()
    box.until(lambda: a2.call(call["id"])["state"] == "DISCONNECTED", 5, "BYE at the agent")
    cdr = box.until(lambda: next((c for c in box.cdrs() if c["port"] == "fxs1"
                                  and c["dnis"] == number and c["ended"]), None),
                    5, "the call's CDR")
    assert cdr["media_mode"] == "fax" and cdr["disposition"] == "answered"
    assert cdr["codec"] in ("PCMU/8000", "PCMA/8000")
    assert cdr["extra"]["passthrough"]["tone"] == "CNG"
    assert fsm.media.profile()["mode"] == "voice" and fsm.media.profile()["nlp"]
