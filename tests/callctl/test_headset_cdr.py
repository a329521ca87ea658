"""Headset position, CDRs, and call control surviving a failing handler."""

import logging

import numpy as np
import pytest

from cext.callerid import CallerIdDecoder
from firmware.callctl import CallControlError
from firmware.cdr import CdrStore
from lab.simcloud import dominant_hz
from tests.callctl.rig import Rig, connect, dial, tail


def native_sine(hz: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(6000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_headset_rings_answers_carries_audio_and_hangs_up(rig):
    r = rig()
    call = r.cloud.call_in("200", from_number="4155550100", agent=None)
    r.cloud.play(call, 750.0)
    r.run(1.0)
    assert r.state("headset") == "RINGING" and call.box_rang
    r.cc.headset_answer()
    r.run(1.0)
    assert r.state("headset") == "CONNECTED" and call.state == "answered"
    hs = r.board.headset
    r.cc.headset_mute(False)
    hs.speak(native_sine(1000.0, 1.0, hs.rate))
    r.run(1.0)
    assert abs(dominant_hz(hs.heard[-hs.rate // 2:], rate=hs.rate) - 750.0) < 15
    assert abs(call.dominant_hz(last_s=0.5) - 1000.0) < 15
    r.cc.headset_mute(True)
    hs.speak(native_sine(1000.0, 0.5, hs.rate))
    sent = len(call.received)
    r.run(0.6)
    muted = call.received[sent:]
    assert len(muted) >= 3200 and np.max(np.abs(muted[-3200:])) == 0  # frames in flight aside
    r.cc.headset_hangup()
    r.run(0.5)
    assert r.state("headset") == "IDLE" and call.state == "ended" and call.ended_by == "box"


def test_headset_auto_answer(rig):
    r = rig(calls__headset_auto_answer=True)
    call = r.cloud.call_in("200")
    r.run(1.0)
    assert r.state("headset") == "CONNECTED" and call.state == "answered"
    r.cloud.hangup(call)
    r.run(0.5)
    assert r.state("headset") == "IDLE"


def test_headset_dials_the_cloud_and_sends_dtmf(rig):
    r = rig()
    r.cc.dial("headset", "5551234")
    r.run(1.0)
    call = r.cloud.invites[-1]
    assert call.to == "5551234" and call.from_number == "200" and r.state("headset") == "CONNECTED"
    r.cc.dial("headset", "12")
    assert call.dtmf == "12"
    with pytest.raises(CallControlError, match="fxs1"):
        r.cc.dial("fxs1", "1")


def test_phone_calls_the_headset_extension(rig):
    r = rig()
    dial(r, "200")
    r.run(0.5)
    assert r.state("headset") == "RINGING"
    r.cc.headset_answer()
    r.run(0.5)
    assert r.state("fxs1") == "CONNECTED" and r.state("headset") == "CONNECTED"
    assert r.cloud.invites == []


def test_cdrs_for_every_kind_of_call(tmp_path):
    store = CdrStore(tmp_path / "cdr.sqlite")
    r = Rig(cdr=store)
    try:
        r.cloud.agent("5550486", code=486, answer_after=0.2)
        call = connect(r)  # outbound, answered
        r.run(2.0)
        r.phone().on_hook()
        r.run(1.5)
        dial(r, "5550486")  # outbound, busy
        r.run(0.5)
        r.phone().on_hook()
        r.run(1.5)
        r.co().ring()  # inbound PSTN, answered by the cloud agent
        r.run(9.0)
        r.cloud.hangup(r.cloud.invites[-1])
        r.run(1.0)
        dial(r, "911")  # emergency out of the FXO line
        r.run(3.0)
        r.phone().on_hook()
        r.run(1.5)
        rows = sorted(store.list(), key=lambda row: row["started"])
    finally:
        r.close()
        store.close()
    got = [(x["direction"], x["port"], x["ani"], x["dnis"], x["disposition"]) for x in rows]
    assert got == [
        ("outbound", "fxs1", "201", "5551234", "answered"),
        ("outbound", "fxs1", "201", "5550486", "busy"),
        ("inbound", "fxo1", "2015550123", "PSTN 1", "answered"),
        ("emergency", "fxs1", "201", "911", "answered"),
    ]
    first = rows[0]
    assert first["answered"] > first["started"] and first["ended"] - first["answered"] >= 2.0
    assert first["started"] > 1_795_000_000  # the reactor clock's wall time
    assert first["jitter_ms"] == 2.0 and first["mos"] is not None
    assert call.handle


def test_a_failing_handler_leaves_the_port_safe(rig, caplog):
    r = rig()
    call = connect(r)
    fsm = r.cc.ports["fxs1"]

    def broken(ev):
        raise RuntimeError("bug")

    fsm.handlers[fsm.state] = broken  # the CONNECTED handler
    with caplog.at_level(logging.ERROR):
        r.phone().flash()
        r.run(1.0)
    assert "port reset to a safe state" in caplog.text
    assert call.state == "ended" and call.ended_by == "box"
    assert fsm.state.name == "REORDER"  # still off hook: reorder, then on hook is idle
    r.phone().on_hook()
    r.run(1.5)
    assert fsm.state.name == "IDLE"


def test_uk_caller_id_comes_before_the_first_ring(rig):
    r = rig(country__code="uk", calls__dialplan="0xxxxxxxxxx|999|112|*xx")
    r.cloud.call_in("201", from_number="02079460000", from_name="LONDON DESK")
    r.run(0.5)
    phone = r.phone()
    assert phone.ring_bursts == [] and not phone.is_ringing  # caller ID first
    r.run(1.0)
    r.run(2.0)
    assert phone.is_ringing or phone.ring_bursts
    dec = CallerIdDecoder("v23")
    messages = dec.process(phone.heard) + dec.flush()
    assert messages and messages[0]["number"] == "02079460000"
    assert messages[0]["name"] == "LONDON DESK"


def test_stop_hangs_up_every_call(rig):
    r = rig()
    call = connect(r)
    r.cc.stop()
    r.run(0.5)
    assert call.state == "ended" and not any(c.owner for c in r.cc.calls())
    assert tail(r.phone().heard, 0.2).size


def test_cdrs_of_calls_that_never_connect(tmp_path):
    store = CdrStore(tmp_path / "cdr.sqlite")
    r = Rig(cdr=store)
    try:
        r.cloud.agent("PSTN 1", answer_after=60.0)
        r.co().ring(count=2)  # the PSTN caller gives up while the cloud rings
        r.run(16.0)
        call = r.cloud.call_in("202", from_number="4155550111")  # the cloud caller gives up
        r.run(3.0)
        r.cloud.hangup(call)
        r.run(0.5)
        r.cloud.agent("5550503", code=503, answer_after=0.1)
        dial(r, "5550503")  # the cloud fails the call
        r.run(0.5)
        rows = sorted(store.list(), key=lambda row: row["started"])
    finally:
        r.close()
        store.close()
    got = [(x["direction"], x["port"], x["ani"], x["dnis"], x["disposition"]) for x in rows]
    assert got == [
        ("inbound", "fxo1", "2015550123", "PSTN 1", "cancelled"),
        ("inbound", "fxs2", "4155550111", "202", "cancelled"),
        ("outbound", "fxs1", "201", "5550503", "failed"),
    ]
    assert all(x["answered"] is None and x["ended"] is not None for x in rows)


def test_registration_and_edge_health_show_in_the_status(rig):
    from firmware.sip import api

    r = rig()
    r.cc._on_sip(api.SipEvent(api.REGISTRATION, None, {
        "account": "sip:201@edge", "line": "fxs1", "ok": False, "code": 403,
        "reason": "Forbidden"}))
    r.cloud.edge(False)
    r.run(0.1)
    status = r.cc.status()
    assert status["ports"]["fxs1"]["registered"] is False
    assert "registered" not in status["ports"]["fxs2"]
    assert status["cloud_up"] is False
