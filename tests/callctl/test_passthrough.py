"""Fax and modem passthrough in the media path and call control (issue 10, part 5): the
profile a detected tone switches a call to, both directions, local calls, the restore
at call end, the CDR mark and its migration, and the SIP side's G.711-only SDP.

The detectors here are stand-ins with cext.modemtone's interface (`process(frame) ->
[(tone, t_s)]`, tones with .name / .kind / .disables_echo_canceller) keyed on a plain
frequency, so these tests check the switch and not the detectors (tests/dsp does).
Everything runs on the callctl rig (SimBoard, SimCloud, fake clock).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np
import pytest

from drivers.sim.phone import dbm0_amplitude
from firmware.cdr import MIGRATIONS, SCHEMA_VERSION, CdrStore, statements
from firmware.sip.sipmsg import g711_only, offers_g711
from tests.callctl.rig import Rig, connect, rms, sine, tone_level

VOICE = {"mode": "voice", "echo_canceller": True, "nlp": True, "comfort_noise": True,
         "dtmf": True}


@dataclass(frozen=True)
class Tone:
    """cext.modemtone.ModemTone's shape."""
    name: str
    kind: str
    disables_echo_canceller: bool


CNG = Tone("CNG", "fax", False)
ANSAM_PR = Tone("ANSAM_PR", "modem", True)
PLAN = {1100.0: CNG, 2100.0: ANSAM_PR}


class KeyedDetector:
    """Reports PLAN[hz] once per burst: after FRAMES frames in a row holding most of
    their energy at hz (the real detectors' timing is theirs, not ours)."""

    FRAMES = 5

    def __init__(self) -> None:
        self.run: dict[float, int] = dict.fromkeys(PLAN, 0)
        self.frames = 0

    def process(self, frame: np.ndarray) -> list:
        self.frames += 1
        power = rms(frame)
        events = []
        for hz, tone in PLAN.items():
            on = power > 100 and tone_level(frame, hz) > 0.8 * power
            self.run[hz] = self.run[hz] + 1 if on else 0
            if self.run[hz] == self.FRAMES:
                events.append((tone, self.frames * 0.02))
        return events


def keyed(r: Rig) -> list[int]:
    """Stand-in detectors on every port; returns the calls the bridge was asked to
    switch to passthrough (SimCloud has no passthrough of its own)."""
    for fsm in r.cc.ports.values():
        if fsm.media.modem_detector is not None:
            fsm.media.modem_detector = KeyedDetector
    asked: list[int] = []
    r.cloud.passthrough = asked.append
    return asked


@pytest.fixture
def store(tmp_path):
    s = CdrStore(tmp_path / "cdr.sqlite")
    yield s
    s.close()


@pytest.fixture
def rig_cdr(store):
    r = Rig(cdr=store)
    yield r
    r.close()


def test_cng_from_the_phone_switches_the_call_to_fax_passthrough(rig_cdr, store):
    r = rig_cdr
    asked = keyed(r)
    call = connect(r)
    media = r.cc.ports["fxs1"].media
    assert media.profile() == VOICE
    r.phone().speak(sine(1100.0, 0.5, amp=4000))  # one CNG burst
    r.run(1.0)
    # CNG has no phase reversals: the canceller stays in, its NLP and comfort noise go
    assert media.profile() == {"mode": "fax", "echo_canceller": True, "nlp": False,
                               "comfort_noise": False, "dtmf": False}
    assert media._ec.nlp is False and media._ec.comfort_noise is False
    assert asked == [call.handle]  # the SIP leg goes to G.711
    port = r.cc.status()["ports"]["fxs1"]
    assert port["media_mode"] == "fax"
    assert port["passthrough"]["tone"] == "CNG" and port["passthrough"]["side"] == "line"
    assert r.cc.call_info(call.handle).media_mode == "fax"
    assert store.list()[0]["media_mode"] == "fax"  # marked while the call runs
    r.phone().on_hook()
    r.run(1.5)
    assert media.profile() == VOICE  # the normal profile at call end
    rec = store.list()[0]
    assert rec["media_mode"] == "fax" and rec["disposition"] == "answered"
    assert rec["extra"]["passthrough"]["tone"] == "CNG"
    assert rec["extra"]["passthrough"]["echo_canceller"] is True


def test_ansam_with_phase_reversals_from_the_cloud_disables_the_canceller(rig_cdr, store):
    r = rig_cdr
    asked = keyed(r)
    r.cloud.agent("5551234", tone_hz=2100.0, tone_dbm0=-12.0)
    call = connect(r)
    r.run(1.0)
    media = r.cc.ports["fxs1"].media
    # G.168 clause 7: 2100 Hz with phase reversals disables the canceller
    assert media.profile() == {"mode": "modem", "echo_canceller": False, "nlp": False,
                               "comfort_noise": False, "dtmf": False}
    assert media.passthrough_info["side"] == "sip"
    assert asked == [call.handle]
    r.cloud.hangup(call)
    r.run(0.5)
    assert media.profile() == VOICE and media.cancel_echo
    assert store.list()[0]["media_mode"] == "modem"


def test_a_fax_calling_in_on_the_pstn_line_switches_the_fxo_port(rig_cdr, store):
    r = rig_cdr
    asked = keyed(r)
    r.co().ring()
    r.run(8.0)  # answered on the second ring, the cloud leg up
    call = r.cloud.invites[0]
    r.run(1.0)
    assert r.state("fxo1") == "CONNECTED" and call.state == "answered"
    r.co().play(sine(1100.0, 0.5, amp=4000))
    r.run(1.0)
    media = r.cc.ports["fxo1"].media
    assert media.media_mode == "fax" and media.passthrough_info["side"] == "line"
    assert asked == [call.handle]
    assert r.cc.status()["ports"]["fxo1"]["media_mode"] == "fax"
    r.cloud.hangup(call)
    r.run(1.0)
    assert media.profile()["mode"] == "voice"
    assert store.list()[0]["media_mode"] == "fax"


def test_a_fax_tone_after_a_modem_one_makes_it_a_fax_and_the_canceller_stays_off(rig):
    r = rig()
    asked = keyed(r)
    r.cloud.agent("5551234", tone_hz=2100.0)
    call = connect(r)
    r.run(1.0)
    r.cloud.play(call, None)
    r.phone().speak(sine(1100.0, 0.5, amp=4000))
    r.run(1.0)
    media = r.cc.ports["fxs1"].media
    assert media.media_mode == "fax" and not media.cancel_echo
    assert set(asked) == {call.handle}


def test_dtmf_is_neither_detected_nor_masked_in_passthrough(rig):
    r = rig()
    keyed(r)
    call = connect(r)
    r.run(0.5)
    end = r.phone().dial_dtmf("1")
    r.run(end - r.reactor.now() + 0.5)
    assert call.dtmf == "1"  # voice: the digit goes as RFC 4733
    r.phone().speak(sine(1100.0, 0.5, amp=4000))
    r.run(1.0)
    assert r.cc.ports["fxs1"].media.media_mode == "fax"
    sent = len(call.received)
    end = r.phone().dial_dtmf("5", on_ms=200)
    r.run(end - r.reactor.now() + 0.5)
    assert call.dtmf == "1"  # no digit detected
    audio = call.received[sent:]
    # the tone pair reaches the cloud as audio (770 + 1336 Hz), not muted
    loudest = max(tone_level(audio[i:i + 800], 1336.0) for i in range(0, len(audio) - 800, 400))
    assert loudest > 1000.0


def test_a_local_call_switches_both_ports(rig):
    r = rig()
    asked = keyed(r)
    r.phone("fxs1").off_hook()
    r.run(0.5)
    end = r.phone("fxs1").dial_dtmf("202")
    r.run(end - r.reactor.now() + 1.0)
    assert r.state("fxs2") == "RINGING"
    r.phone("fxs2").off_hook()
    r.run(0.5)
    assert r.state("fxs1") == r.state("fxs2") == "CONNECTED"
    r.phone("fxs1").speak(sine(1100.0, 0.5, amp=4000))
    r.run(1.0)
    one, two = r.cc.ports["fxs1"].media, r.cc.ports["fxs2"].media
    assert one.media_mode == two.media_mode == "fax"
    assert two.passthrough_info["side"] == "peer"
    assert not two.profile()["dtmf"] and not two.profile()["nlp"]
    assert asked == []  # no SIP leg
    r.phone("fxs2").on_hook()
    r.run(1.5)
    # (a local call runs without canceller, connect(cancel_echo=False): that flag is
    # the next connect's business; the rest of the voice profile is back)
    ec = "echo_canceller"
    assert {**two.profile(), ec: True} == {**one.profile(), ec: True} == VOICE


def test_a_second_call_starts_in_the_voice_profile(rig):
    r = rig()
    keyed(r)
    connect(r)
    r.phone().speak(sine(1100.0, 0.5, amp=4000))
    r.run(1.0)
    assert r.cc.ports["fxs1"].media.media_mode == "fax"
    r.phone().on_hook()
    r.run(1.5)
    connect(r)
    r.run(1.0)
    assert r.cc.ports["fxs1"].media.profile() == VOICE
    assert r.cc.status()["ports"]["fxs1"]["media_mode"] == "voice"


def test_the_real_detectors_switch_on_a_cng_burst(rig):
    r = rig()  # the default detectors: cext.modemtone
    asked: list[int] = []
    r.cloud.passthrough = asked.append
    call = connect(r)
    r.run(1.0)
    media = r.cc.ports["fxs1"].media
    assert media.media_mode == "voice"  # the agent's audio and silence trigger nothing
    burst = sine(1100.0, 0.5, amp=dbm0_amplitude(-20.0))
    r.phone().speak(np.concatenate([burst, np.zeros(8000, np.int16)]))
    r.run(1.5)
    assert media.media_mode == "fax" and media.passthrough_info["tone"] == "CNG"
    assert media.profile()["echo_canceller"] and not media.profile()["nlp"]
    assert asked == [call.handle]


def test_the_headset_has_no_modem_detectors(rig):
    r = rig()
    assert r.cc.ports["headset"].media.modem_detector is None


# ---- the CDR column and its migration ----
def test_cdr_schema_2_migrates_to_media_mode_voice(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        for stmt in statements(script):
            con.execute(stmt)
    con.execute("INSERT INTO cdr (uuid, direction, port, started) "
                "VALUES ('u1', 'outbound', 'fxs1', 1.0)")
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    with CdrStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION == 3
        assert s.get("u1")["media_mode"] == "voice"
        s.update("u1", media_mode="modem")
        assert s.get("u1")["media_mode"] == "modem"
        with pytest.raises(ValueError, match="media_mode 'data'"):
            s.update("u1", media_mode="data")


# ---- the SIP side's SDP (firmware/sip/sipmsg.py) ----
OFFER = ("v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=pjmedia\r\nt=0 0\r\n"
         "m=audio 4000 RTP/AVP 9 0 8 101\r\nc=IN IP4 127.0.0.1\r\n"
         "a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
         "a=sendrecv\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n")


def test_passthrough_sdp_keeps_g711_only_with_vad_off():
    sdp = g711_only(OFFER)
    assert "m=audio 4000 RTP/AVP 0 8\r\n" in sdp
    assert "G722" not in sdp and "telephone-event" not in sdp and "fmtp:101" not in sdp
    assert "a=silenceSupp:off - - - -\r\n" in sdp and "a=gpmd:0 vbd=yes" in sdp
    assert sdp.startswith("v=0\r\no=- 3 4 ") and "a=sendrecv" in sdp
    assert g711_only(sdp) == sdp  # applying it twice changes nothing


def test_passthrough_sdp_without_g711_is_left_alone():
    g722 = OFFER.replace("RTP/AVP 9 0 8 101", "RTP/AVP 9 101")
    assert g711_only(g722) is None
    assert not offers_g711(g722) and offers_g711(OFFER)
    # static payload types without rtpmap lines count as what RFC 3551 says they are
    bare = "v=0\nm=audio 5 RTP/AVP 18 0\na=rtpmap:18 G729/8000\n"
    assert g711_only(bare).splitlines()[1] == "m=audio 5 RTP/AVP 0"
