"""Registration modes, wrong passwords, edge health by OPTIONS, and start-up errors.

Each test starts its own bridge (one pjsua2 endpoint per process, so one at a time)
against the session's Kamailio; the edge-health test pauses that Kamailio with SIGSTOP
and resumes it before it returns.
"""

from __future__ import annotations

import socket
import time

import pytest

from firmware.sip import api
from firmware.sip.pjbridge import SipError
from tests.sip.conftest import Harness, ToneFeeder, sip_doc


@pytest.fixture
def harness():
    made: list[Harness] = []

    def make(doc, lines=None) -> Harness:
        made.append(Harness(doc, lines).start())
        return made[-1]
    yield make
    for h in made:
        h.stop()


def test_trunk_registration(kamailio, harness):
    box = harness(sip_doc(kamailio))
    ev = box.wait(api.REGISTRATION)
    assert ev.data["ok"] and ev.data["code"] == 200
    assert ev.data["account"] == "branch@cloud.test"
    assert box.bridge.status()["accounts"]["branch@cloud.test"]["registered"] is True


def test_wrong_password_is_refused_with_a_clear_reason(kamailio, harness):
    box = harness(sip_doc(kamailio, password="wrong"))
    ev = box.wait(api.REGISTRATION)
    assert ev.data["ok"] is False
    assert ev.data["code"] in (401, 403)
    assert "branch@cloud.test" in ev.data["reason"]
    assert "check sip.password" in ev.data["reason"]
    acc = box.bridge.status()["accounts"]["branch@cloud.test"]
    assert acc["registered"] is False and acc["code"] in (401, 403)


def test_per_line_registration(kamailio, harness):
    doc = sip_doc(kamailio, registration="per_line")
    doc["lines"]["fxs1"].update(extension="201", sip_password="pw201")
    doc["lines"]["fxs2"].update(extension="2", sip_user="202", sip_password="pw202")
    box = harness(doc)
    got = {box.wait(api.REGISTRATION).data["line"] for _ in range(2)}
    assert got == {"fxs1", "fxs2"}
    accounts = box.bridge.status()["accounts"]
    assert accounts["201@cloud.test"]["registered"] and accounts["202@cloud.test"]["registered"]
    assert not any(ev.data["ok"] is False for ev in box.events if ev.kind == api.REGISTRATION)


def test_per_line_wrong_password_names_the_line(kamailio, harness):
    doc = sip_doc(kamailio, registration="per_line")
    doc["lines"]["fxs1"].update(extension="201", sip_password="nope")
    doc["lines"]["fxs2"].update(extension="")
    box = harness(doc)
    ev = box.wait(api.REGISTRATION)
    assert not ev.data["ok"] and "lines.fxs1.sip_password" in ev.data["reason"]


def test_edge_health_by_options(kamailio, harness):
    box = harness(sip_doc(kamailio, registration="none"))
    up = box.wait(api.EDGE, ok=True, timeout=3)
    assert up.data["edge"] == kamailio.uri and up.data["rtt_ms"] < 200
    kamailio.pause()
    try:
        t0 = time.monotonic()
        box.wait(api.EDGE, ok=False, timeout=4)
        assert time.monotonic() - t0 < 2.5  # 2 misses at 0.5 s interval, 0.5 s deadline
        assert box.bridge.status()["edges"][kamailio.uri]["ok"] is False
    finally:
        kamailio.resume()
    back = box.wait(api.EDGE, ok=True, timeout=4)
    assert back.data["rtt_ms"] is not None


def test_port_in_use_is_a_clear_error(kamailio):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        box = Harness(sip_doc(kamailio, local_port=port))
        with pytest.raises(SipError, match=f"SIP port {port} on 127.0.0.1 is in use"):
            box.start()
        box.stop()


def test_wideband_headset_call_with_g722(kamailio, agents, harness):
    box = harness(sip_doc(kamailio, codecs=["G722", "PCMU", "PCMA"]))
    box.wait(api.REGISTRATION, ok=True)
    call = box.bridge.make_call("headset", "agent1")
    box.wait(api.ANSWERED, call)
    feeder = ToneFeeder(box, call, 3000.0, rate=16000)
    assert feeder.pipe.frame == 320
    box.run(1.5)
    assert box.bridge.quality(call)["codec"] == "G722/16000"
    heard = feeder.measure()
    assert abs(heard["hz"] - 440.0) <= 20, heard
    box.wait_agent_tone(agents["agent1"], 3000.0, timeout=3)
    box.bridge.hangup(call)
    box.wait(api.ENDED, call)
