"""FXO port end to end on the twins: the virtual central office, the real DAA driver and
DSP, call control, and SimCloud as the cloud (fake time)."""

import pytest

from cext.dtmf import DtmfDetector
from lab.simcloud import dominant_hz
from tests.callctl.rig import sine, tail, tone_level

CALLER = {"number": "2015550123", "name": "JANE CALLER", "datetime": "11221030", "reason": None}


def ring_in(r, callerid=CALLER, count=None, until=8.0):
    """The CO rings fxo1 with caller ID; run until the INVITE (ring 2) is out."""
    r.co().ring(callerid=callerid, count=count)
    r.run(until)


def test_inbound_pstn_call_reaches_the_cloud_with_ani_cnam_and_dnis(rig):
    r = rig(lines__fxo1__number="5551230100")
    r.cloud.agent("5551230100", answer_after=1.0, tone_hz=650.0)
    ring_in(r)
    assert len(r.cloud.invites) == 1
    call = r.cloud.invites[0]
    assert (call.to, call.from_number, call.from_name) == ("5551230100", "2015550123", "JANE CALLER")
    assert call.headers == {"X-Branchline-Line": "fxo1", "X-Branchline-DNIS": "5551230100"}
    assert call.started > 1000.0 + 6.0  # offered at the second ring, not the first
    r.run(1.5)
    co = r.co()
    assert co.answered and r.state("fxo1") == "CONNECTED"
    status = r.cc.status()["ports"]
    assert status["fxo1"]["caller"]["number"] == "2015550123"
    assert status["fxo1"]["state"] == "connected" and status["fxo1"]["calls"] == [call.handle]
    assert isinstance(status["fxo1"]["erle_db"], float)
    co.play(sine(1100.0, 1.5))
    r.run(1.5)
    assert abs(call.dominant_hz(last_s=0.8) - 1100.0) < 10
    assert abs(dominant_hz(tail(co.heard, 0.8)) - 650.0) < 10
    r.cloud.hangup(call)
    r.run(0.5)
    assert not co.answered and r.state("fxo1") == "IDLE"


def test_trunk_name_is_the_dnis_when_the_line_has_no_number(rig):
    r = rig()
    ring_in(r)
    call = r.cloud.invites[0]
    assert call.to == "PSTN 1" and call.headers["X-Branchline-DNIS"] == "PSTN 1"


def test_withheld_caller_is_anonymous(rig):
    r = rig()
    ring_in(r, callerid={"number": None, "name": None, "datetime": "11221030",
                         "reason": "private"})
    assert r.cloud.invites[0].from_number == "anonymous"


@pytest.mark.parametrize("signal", ["loop_drop", "reversal", "tone"])
def test_pstn_caller_hangs_up_first(rig, signal):
    r = rig()
    ring_in(r)
    r.run(1.0)
    call = r.cloud.invites[0]
    assert call.state == "answered" and r.co().answered
    r.co().disconnect(signal)
    r.run(3.5)  # the tone detector needs two busy cycles
    assert call.state == "ended" and call.ended_by == "box"
    assert not r.co().answered and r.state("fxo1") == "IDLE"


def test_caller_gives_up_while_ringing_cancels_the_invite(rig):
    r = rig()
    r.cloud.agent("PSTN 1", answer_after=60.0)
    ring_in(r, count=2)
    call = r.cloud.invites[0]
    assert call.state == "ringing"
    r.run(8.0)  # RING_STOP comes ring_timeout_ms after the last ring
    assert call.state == "ended" and call.ended_by == "box"
    assert r.state("fxo1") == "IDLE" and not r.co().answered


def test_cloud_declines_and_the_line_is_not_seized(rig):
    r = rig()
    r.cloud.agent("PSTN 1", code=503, answer_after=0.2)
    ring_in(r)
    r.run(7.0)
    assert len(r.cloud.invites) == 1 and not r.co().answered
    assert r.state("fxo1") == "RINGING"


def test_dtmf_both_ways_on_a_pstn_call(rig):
    r = rig()
    ring_in(r)
    r.run(1.0)
    call = r.cloud.invites[0]
    from drivers.sim.phone import dtmf_audio

    r.co().play(dtmf_audio("47*"))
    r.run(1.5)
    assert call.dtmf == "47*"
    r.cloud.send_dtmf(call, "9#")
    r.run(1.0)
    det = DtmfDetector()
    heard = r.co().heard
    assert "".join(d for d, _s, _e in det.process(heard) + det.flush()) == "9#"


def test_cloud_dials_out_through_a_free_fxo_line(rig):
    r = rig()
    call = r.cloud.call_in("5559876", from_number="100", from_name="AGENT")
    r.run(4.0)
    co = r.co()
    assert co.answered
    det = DtmfDetector()
    assert "".join(d for d, _s, _e in det.process(co.heard) + det.flush()) == "5559876"
    assert call.box_rang and call.state == "answered" and r.state("fxo1") == "CONNECTED"
    r.cloud.hangup(call)
    r.run(0.5)
    assert not co.answered and r.state("fxo1") == "IDLE"


def test_no_free_line_rejects_with_503(rig):
    r = rig()
    first = r.cloud.call_in("5559876")
    r.run(0.5)
    second = r.cloud.call_in("5559877")
    r.run(0.5)
    assert first.state != "ended"
    assert second.state == "ended" and second.end_code == 503


def test_the_line_waits_for_dial_tone_before_dialling(rig):
    r = rig()
    r.cloud.call_in("5559876")
    r.run(0.9)
    assert r.state("fxo1") == "SEIZING"
    assert tone_level(tail(r.co().heard, 0.5), 697) < 10  # no digits yet
    r.run(2.5)
    assert r.state("fxo1") == "CONNECTED"
