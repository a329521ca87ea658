"""Transfers that involve the box's own ports (no REFER leaves the box), early media,
and the cloud's own REFER."""

from lab.simcloud import dominant_hz
from tests.callctl.rig import connect, dial, sine, tail


def test_attended_transfer_of_a_cloud_call_to_another_phone(rig):
    r = rig()
    r.cloud.agent("5551111", answer_after=0.3, tone_hz=650.0)
    call = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    dial(r, "202")
    phone2 = r.board.phones["fxs2"]
    phone2.off_hook()
    r.run(0.5)
    assert r.state("fxs2") == "CONNECTED" and call.held_by_box
    r.phone().on_hook()
    r.run(1.5)
    assert r.state("fxs1") == "IDLE" and r.state("fxs2") == "CONNECTED"
    assert not call.held_by_box and call.state == "answered"
    assert r.cc.ports["fxs2"].active == call.handle
    phone2.speak(sine(1300.0, 1.0))
    r.run(1.0)
    assert abs(dominant_hz(tail(phone2.heard, 0.5)) - 650.0) < 15
    assert abs(call.dominant_hz(last_s=0.5) - 1300.0) < 15
    phone2.on_hook()
    r.run(1.5)
    assert call.state == "ended" and not any(c.owner for c in r.cc.calls())


def test_blind_transfer_to_a_ringing_phone(rig):
    r = rig()
    call = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    dial(r, "202")
    assert r.state("fxs2") == "RINGING"
    r.phone().on_hook()
    r.run(1.5)
    assert r.state("fxs1") == "IDLE" and r.state("fxs2") == "RINGING"
    r.board.phones["fxs2"].off_hook()
    r.run(0.5)
    assert r.state("fxs2") == "CONNECTED" and r.cc.ports["fxs2"].active == call.handle
    assert not call.held_by_box


def test_transfer_of_a_local_call_to_the_headset(rig):
    r = rig()
    phone2 = r.board.phones["fxs2"]
    dial(r, "202")
    phone2.off_hook()
    r.run(0.5)
    r.phone().flash()
    r.run(1.0)
    dial(r, "200")
    r.cc.headset_answer()
    r.run(0.5)
    r.phone().on_hook()
    r.run(1.5)
    assert r.state("fxs1") == "IDLE"
    assert r.state("fxs2") == "CONNECTED" and r.state("headset") == "CONNECTED"
    phone2.speak(sine(900.0, 1.0))
    r.run(1.0)
    hs = r.board.headset
    assert abs(dominant_hz(hs.heard[-hs.rate // 2:], rate=hs.rate) - 900.0) < 15
    assert r.cloud.invites == []


def test_early_media_is_heard_before_answer(rig):
    r = rig()
    r.cloud.agent("5553333", early_media=True, answer_after=5.0, tone_hz=425.0)
    dial(r, "5553333")
    r.run(1.0)
    assert r.state("fxs1") == "CALLING"
    assert abs(dominant_hz(tail(r.phone().heard, 0.5)) - 425.0) < 15


def test_a_refer_from_the_cloud_does_not_disturb_the_call(rig):
    r = rig()
    call = connect(r, "5551111")
    r.cloud.refer(call, "sip:queue@cloud")
    r.cloud.send_dtmf(call, "5")
    r.run(1.0)
    assert r.state("fxs1") == "CONNECTED" and call.state == "answered"


def test_parked_caller_hanging_up_frees_the_slot(rig):
    r = rig()
    call = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    dial(r, "*72")
    r.phone().on_hook()
    r.run(1.5)
    assert r.cc.parking.slots == {"2": call.handle}
    r.cloud.hangup(call)
    r.run(0.5)
    assert r.cc.parking.slots == {} and not any(c.owner for c in r.cc.calls())
    dial(r, "*82", phone="fxs2")
    assert r.state("fxs2") == "REORDER"
