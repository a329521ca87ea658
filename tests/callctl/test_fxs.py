"""FXS port end to end on the twins: the virtual phone, the real SLIC driver and DSP,
call control, and SimCloud as the cloud (fake time)."""

import numpy as np
import pytest

from cext.callerid import CallerIdDecoder
from cext.dtmf import DtmfDetector
from lab.simcloud import dominant_hz
from tests.callctl.rig import connect, dial, rms, sine, tail, tone_level


def test_off_hook_gives_the_country_dial_tone(rig):
    r = rig()
    r.phone().off_hook()
    r.run(1.0)
    heard = tail(r.phone().heard, 0.6)
    assert r.state("fxs1") == "DIALTONE"
    assert tone_level(heard, 350) > 500 and tone_level(heard, 440) > 500
    assert tone_level(heard, 480) < 50


def test_dtmf_dialling_reaches_the_cloud_with_the_extension_as_from(rig):
    r = rig()
    r.cloud.agent("5551234", answer_after=2.0)
    dial(r, "5551234")
    assert [c.to for c in r.cloud.invites] == ["5551234"]
    call = r.cloud.invites[0]
    assert (call.from_number, call.from_name, call.line) == ("201", "Front desk", "fxs1")
    assert r.state("fxs1") == "CALLING"
    r.run(1.0)  # ringing: the local ringback tone of the country (440+480)
    heard = tail(r.phone().heard, 0.8)
    assert tone_level(heard, 440) > 100 and tone_level(heard, 480) > 100
    r.run(1.0)
    assert r.state("fxs1") == "CONNECTED" and call.state == "answered"


def test_pulse_dialling_reaches_the_cloud(rig):
    r = rig()
    dial(r, "5550199", pulse=True)
    assert [c.to for c in r.cloud.invites] == ["5550199"]
    assert r.cloud.invites[0].from_number == "201"


def test_interdigit_timeout_and_hash(rig):
    r = rig(calls__dialplan="011x.|[2-9]xxxxxx")
    dial(r, "0114420")
    assert r.cloud.invites == [] and r.state("fxs1") == "DIALING"
    r.run(4.5)  # calls.interdigit_s
    assert [c.to for c in r.cloud.invites] == ["0114420"]
    r.phone().on_hook()
    r.run(1.5)
    dial(r, "01133#")
    assert [c.to for c in r.cloud.invites][-1] == "01133"


def test_audio_crosses_both_ways(rig):
    r = rig()
    r.cloud.agent("5551234", answer_after=0.3, tone_hz=600.0)
    call = connect(r)
    r.phone().speak(sine(1000.0, 2.0))
    r.run(2.0)
    assert abs(call.dominant_hz(last_s=1.0) - 1000.0) < 10
    assert abs(dominant_hz(tail(r.phone().heard, 1.0)) - 600.0) < 10
    assert rms(tail(r.phone().heard, 1.0)) > 1000
    assert r.cc.ports["fxs1"].media.erle_db is not None


def test_dtmf_in_a_call_goes_as_events_and_not_as_audio(rig):
    r = rig()
    call = connect(r)
    r.phone().dial_dtmf("19#")
    r.run(1.5)
    assert call.dtmf == "19#"
    sent = call.received
    det = DtmfDetector()
    assert det.process(sent) + det.flush() == []
    assert tone_level(sent[-12000:], 697) < 100 and tone_level(sent[-12000:], 1477) < 100


@pytest.mark.parametrize("code,state,tone", [(486, "BUSY", (480, 620)), (503, "REORDER", (480, 620)),
                                             (408, "REORDER", (480, 620))])
def test_failed_calls_give_busy_or_reorder(rig, code, state, tone):
    r = rig()
    r.cloud.agent("5551234", code=code, answer_after=0.2)
    dial(r, "5551234")
    r.run(1.0)
    assert r.state("fxs1") == state
    heard = tail(r.phone().heard, 1.0)
    assert all(tone_level(heard, f) > 50 for f in tone)
    r.phone().on_hook()
    r.run(1.2)
    assert r.state("fxs1") == "IDLE"


def test_no_match_and_first_digit_timeout_give_reorder(rig):
    r = rig()
    dial(r, "0")
    assert r.state("fxs1") == "REORDER"
    r.phone().on_hook()
    r.run(1.2)
    r.phone().off_hook()
    r.run(10.5)  # calls.first_digit_s
    assert r.state("fxs1") == "REORDER" and r.cloud.invites == []


def test_hang_up_both_ways(rig):
    r = rig()
    call = connect(r)
    r.cloud.hangup(call)
    r.run(0.5)
    assert r.state("fxs1") == "REORDER"
    r.phone().on_hook()
    r.run(1.2)
    assert r.state("fxs1") == "IDLE"
    call = connect(r, "5552222")
    r.phone().on_hook()
    r.run(1.2)
    assert call.state == "ended" and call.ended_by == "box"
    assert r.state("fxs1") == "IDLE" and not any(c.owner for c in r.cc.calls())


def decode_cid(samples):
    dec = CallerIdDecoder("bell202")
    return dec.process(samples) + dec.flush()


def test_inbound_call_rings_with_cadence_and_caller_id(rig):
    r = rig()
    call = r.cloud.call_in("201", from_number="4155550123", from_name="ACME SUPPORT")
    r.run(9.0)
    phone = r.phone()
    assert r.state("fxs1") == "RINGING" and call.box_rang
    bursts = phone.ring_bursts  # US cadence: 2 s on, 4 s off, the FSK in the first gap
    assert len(bursts) == 2
    assert all(abs((end - start) - 2.0) < 0.1 for start, end in bursts)
    assert abs((bursts[1][0] - bursts[0][0]) - 6.0) < 0.1
    messages = decode_cid(phone.heard)
    assert len(messages) == 1
    assert messages[0]["number"] == "4155550123" and messages[0]["name"] == "ACME SUPPORT"
    assert messages[0]["datetime"] and len(messages[0]["datetime"]) == 8
    phone.off_hook()
    r.run(0.5)
    assert r.state("fxs1") == "CONNECTED" and call.state == "answered"
    assert not phone.is_ringing


def test_caller_gives_up_while_ringing(rig):
    r = rig()
    call = r.cloud.call_in("202")
    r.run(1.0)
    assert r.board.phones["fxs2"].is_ringing
    r.cloud.hangup(call)
    r.run(0.5)
    assert r.state("fxs2") == "IDLE" and not r.board.phones["fxs2"].is_ringing


def test_withheld_caller_id_is_sent_as_private(rig):
    r = rig()
    r.cloud.call_in("201", from_number="anonymous", from_name="")
    r.run(5.0)
    messages = decode_cid(r.phone().heard)
    assert messages and messages[0]["number"] is None and messages[0]["reason"] == "private"


def test_flash_hold_consult_and_attended_transfer(rig):
    r = rig()
    first = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    assert first.held_by_box and r.state("fxs1") == "DIALTONE"
    consult = connect(r, "5552222")
    r.phone().on_hook()
    r.run(1.5)
    assert first.transferred_to == consult.handle
    assert r.state("fxs1") == "IDLE"
    assert first.state == "ended" and consult.state == "ended"


def test_blind_transfer_while_the_consult_rings(rig):
    r = rig()
    r.cloud.agent("5552222", answer_after=30.0)
    first = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    dial(r, "5552222")
    consult = r.cloud.invites[-1]
    assert r.state("fxs1") == "CALLING"
    r.phone().on_hook()
    r.run(1.5)
    assert first.transferred_to == "5552222"
    assert consult.state == "ended" and consult.ended_by == "box"
    assert r.state("fxs1") == "IDLE"


def test_flash_toggles_back_and_swaps(rig):
    r = rig()
    first = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    r.phone().flash()  # back to the held call
    r.run(1.0)
    assert r.state("fxs1") == "CONNECTED" and not first.held_by_box
    r.phone().flash()
    r.run(1.0)
    second = connect(r, "5552222")
    assert first.held_by_box and not second.held_by_box
    r.phone().flash()  # swap
    r.run(1.0)
    assert second.held_by_box and not first.held_by_box
    assert r.cc.ports["fxs1"].active == first.handle


def test_hang_up_with_a_held_call_rings_back(rig):
    r = rig()
    first = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    r.phone().on_hook()  # no consult dialled: the held call comes back as a ring
    r.run(2.0)
    assert r.state("fxs1") == "RINGING" and r.phone().is_ringing
    r.phone().off_hook()
    r.run(0.5)
    assert r.state("fxs1") == "CONNECTED" and not first.held_by_box and first.state == "answered"


def test_call_waiting_tone_then_flash_answers_and_swaps(rig):
    r = rig()
    first = connect(r, "5551111")
    waiting = r.cloud.call_in("201", from_number="4155550999")
    r.run(1.0)
    assert waiting.box_rang and waiting.state == "offered"
    assert tone_level(tail(r.phone().heard, 0.9)[:2400], 440) > 100  # the 0.3 s beep
    r.phone().flash()
    r.run(1.0)
    assert waiting.state == "answered" and first.held_by_box
    r.phone().flash()
    r.run(1.0)
    assert waiting.held_by_box and not first.held_by_box


def test_third_call_gets_busy(rig):
    r = rig(calls__call_waiting=False)
    connect(r, "5551111")
    other = r.cloud.call_in("201")
    r.run(0.5)
    assert other.state == "ended" and other.end_code == 486


def test_park_and_pickup_from_another_phone(rig):
    r = rig()
    r.cloud.agent("5551111", answer_after=0.3, tone_hz=700.0)
    call = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    dial(r, "*71")
    assert r.state("fxs1") == "CONFIRM" and r.cc.parking.slots == {"1": call.handle}
    heard = tail(r.phone().heard, 0.5)
    assert tone_level(heard, 350) > 100  # confirmation bursts
    r.phone().on_hook()
    r.run(1.5)
    assert r.state("fxs1") == "IDLE" and call.state == "answered" and call.held_by_box
    dial(r, "*81", phone="fxs2")
    r.run(1.0)
    assert r.state("fxs2") == "CONNECTED" and not call.held_by_box
    assert r.cc.parking.slots == {}
    assert abs(dominant_hz(tail(r.board.phones["fxs2"].heard, 0.5)) - 700.0) < 15


def test_pickup_of_an_empty_slot_is_reorder(rig):
    r = rig()
    dial(r, "*85")
    assert r.state("fxs1") == "REORDER"


def test_extension_call_between_two_phones(rig):
    r = rig()
    dial(r, "202")
    phone2 = r.board.phones["fxs2"]
    r.run(5.0)
    assert r.state("fxs2") == "RINGING" and r.state("fxs1") == "CALLING"
    messages = decode_cid(phone2.heard)
    assert messages and messages[0]["number"] == "201" and messages[0]["name"] == "Front desk"
    assert tone_level(tail(r.phone().heard, 6.0), 440) > 50  # ringback (2 s on, 4 s off)
    phone2.off_hook()
    r.run(0.5)
    assert r.state("fxs1") == "CONNECTED" and r.state("fxs2") == "CONNECTED"
    r.phone().speak(sine(900.0, 1.0))
    phone2.speak(sine(500.0, 1.0))
    r.run(1.0)
    assert abs(dominant_hz(tail(phone2.heard, 0.6)) - 900.0) < 15
    assert abs(dominant_hz(tail(r.phone().heard, 0.6)) - 500.0) < 15
    phone2.on_hook()
    r.run(1.5)
    assert r.state("fxs2") == "IDLE" and r.state("fxs1") == "REORDER"
    assert r.cloud.invites == []


def digits_heard(samples) -> str:
    det = DtmfDetector()
    return "".join(d for d, _s, _e in det.process(samples) + det.flush())


@pytest.mark.parametrize("cloud_down", [False, True])
def test_emergency_goes_out_of_the_fxo_line(rig, cloud_down):
    r = rig()
    if cloud_down:
        r.cloud.fail_calls = 503
    dial(r, "911")
    r.run(3.0)
    co = r.co()
    assert co.answered and ("seized", pytest.approx(co.events[0][1], abs=100)) in co.events
    assert digits_heard(co.heard) == "911"
    assert r.cloud.invites == []
    assert r.state("fxs1") == "CONNECTED" and r.state("fxo1") == "CONNECTED"
    assert co.dialed == "911"  # the exchange collected the digits and dropped dial tone
    r.phone().speak(sine(1200.0, 1.0))
    co.play(sine(700.0, 1.0))  # the emergency operator speaks
    r.run(1.0)
    assert abs(dominant_hz(tail(r.phone().heard, 0.6)) - 700.0) < 15
    assert abs(dominant_hz(tail(co.heard, 0.6)) - 1200.0) < 15
    r.phone().on_hook()
    r.run(1.5)
    assert not co.answered and r.state("fxo1") == "IDLE"


def test_with_the_cloud_down_numbers_go_out_of_the_fxo_line(rig):
    r = rig(survive__failback_stable_s=0.0)  # no failback hysteresis (tests/survive has it)
    r.cloud.edge(False)
    r.run(0.1)
    dial(r, "5557777")
    r.run(3.0)
    assert r.cloud.invites == [] and r.co().answered
    assert digits_heard(r.co().heard) == "5557777"
    r.phone().on_hook()
    r.run(1.5)
    r.cloud.edge(True)
    r.run(0.1)
    dial(r, "5557777")
    assert [c.to for c in r.cloud.invites] == ["5557777"]


def test_a_failed_transfer_rings_the_phone_back_with_the_caller(rig):
    r = rig()
    r.cloud.refer_code = 403
    first = connect(r, "5551111")
    r.phone().flash()
    r.run(1.0)
    consult = connect(r, "5552222")
    r.phone().on_hook()
    r.run(2.0)
    assert consult.state == "ended" and first.state == "answered"
    assert r.state("fxs1") == "RINGING" and r.phone().is_ringing
    r.phone().off_hook()
    r.run(0.5)
    assert r.state("fxs1") == "CONNECTED" and not first.held_by_box


def test_a_failed_slic_refuses_calls_and_the_other_ports_work():
    from tests.callctl.rig import Rig

    r = Rig(unseated={"slic1"})
    try:
        call = r.cloud.call_in("202")
        r.run(0.5)
        assert call.state == "ended" and call.end_code == 480
        connect(r, "5551234")  # fxs1 still works
    finally:
        r.close()


def test_tones_both_ways_do_not_make_the_echo_canceller_diverge(rig):
    # Found in integration: a -10 dBm0 440 Hz far end against a 1000 Hz near end once
    # drove cext.echo to clipping. The talker's tone must reach the cloud clean.
    r = rig()
    r.cloud.agent("5551234", answer_after=0.3, tone_hz=440.0, tone_dbm0=-10.0)
    call = connect(r)
    r.phone().speak(sine(1000.0, 3.0))
    r.run(3.0)
    sent = call.received[-8000:]
    assert abs(dominant_hz(sent) - 1000.0) < 10
    assert tone_level(sent, 440) < 300 and max(abs(int(sent.max())), abs(int(sent.min()))) < 9000
    assert r.cc.status()["ports"]["fxs1"]["echo_runaways"] == 0


class _DivergingCanceller:
    """Fault injection: a canceller whose output grows without bound, as a diverged
    adaptive filter's does. The media path must catch it, not the kernel's own care."""

    erle_db = 0.0

    def __init__(self):
        self.gain = 1.0

    def process(self, near, far):
        self.gain *= 1.5
        return np.clip(near.astype(np.float64) * self.gain + 3000, -32768, 32767).astype(np.int16)

    def reset(self):
        self.gain = 1.0


def test_a_diverging_echo_canceller_is_bypassed_and_never_reaches_the_cloud(rig):
    r = rig()
    r.cloud.agent("5551234", answer_after=0.3, tone_hz=440.0, tone_dbm0=-10.0)
    call = connect(r)
    r.cc.ports["fxs1"].media._ec = _DivergingCanceller()
    r.phone().speak(sine(1000.0, 3.0))
    r.run(3.0)
    sent = call.received[-8000:]
    assert abs(dominant_hz(sent) - 1000.0) < 10
    assert max(abs(int(sent.max())), abs(int(sent.min()))) < 9000
    assert r.cc.status()["ports"]["fxs1"]["echo_runaways"] == 1
