"""Per-call quality at every call end: the DSP's figures (ERLE per second, residual echo,
the canceller's state, DTMF heard and relayed, fax/modem tones) and the rated network
figures, on the CALL_QUALITY event right after HUNG_UP and in the CDR's extra["dsp"].
Calls run on the fake-time rig; the echo is the virtual CO's hybrid (a G.168 path)."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from drivers.sim.echo_paths import impulse_response
from firmware.cdr import MIGRATIONS, CdrStore, statements
from firmware.events import EventKind as K
from firmware.quality import FRAMES_PER_S, DspMeter, dbm0_power, power_dbm0
from lab.linemodel import to_int16, white_noise
from tests.callctl.rig import connect, dial

FAR_DBM0 = -20.0  # the cloud talker (white noise, G.168's test signal family)


def recorder(r):
    seen = []
    r.cc.events.subscribe(seen.append)
    return seen


def quality_of(seen, kind=K.CALL_QUALITY):
    found = [e for e in seen if e.kind is kind]
    assert found, f"no {kind} event"
    return found[-1]


def pstn_call_with_echo(r, erl_db: float, model: str = "m1"):
    """A PSTN caller rings fxo1, the cloud answers; the line's hybrid echoes what the
    box sends with `erl_db` of loss."""
    r.co().set_echo(impulse_response(model, erl=erl_db))
    r.cloud.agent("PSTN 1", answer_after=0.5)
    r.co().ring(callerid=None)
    r.run(9.0)
    call = r.cloud.invites[0]
    assert call.state == "answered" and r.state("fxo1") == "CONNECTED"
    return call


def cloud_talks(r, call, seconds: float, seed: int = 1) -> None:
    """The cloud sends white noise at FAR_DBM0 for `seconds`, frame by frame."""
    x = to_int16(white_noise(int(8000 * seconds), FAR_DBM0, np.random.default_rng(seed)))
    frames = iter(np.split(x, len(x) // 160))

    def feed(eventtime: float) -> float:
        frame = next(frames, None)
        if frame is None:
            return math.inf
        call.pipe.from_cloud.append(frame)
        return eventtime + 0.02

    r.reactor.register_timer(feed, r.now() + 0.02)
    r.run(seconds + 0.2)


@pytest.mark.parametrize("erl_db", [6.0, 9.0, 12.0])
def test_erle_of_a_pstn_call_over_a_known_hybrid(rig, erl_db):
    r = rig()
    seen = recorder(r)
    call = pstn_call_with_echo(r, erl_db)
    cloud_talks(r, call, 8.0)
    r.cloud.hangup(call)
    r.run(0.5)
    dsp = quality_of(seen).data["dsp"]
    assert dsp["echo_canceller"] == "on"
    assert dsp["erle_mean_db"] > 20.0, dsp
    assert dsp["erle_worst_db"] <= dsp["erle_mean_db"]
    echo_dbm0 = FAR_DBM0 - erl_db
    assert math.isfinite(dsp["residual_echo_dbm0"])
    assert dsp["residual_echo_dbm0"] < echo_dbm0 - 15.0, dsp


def test_erle_is_zero_with_the_canceller_off(rig):
    r = rig()
    seen = recorder(r)
    call = pstn_call_with_echo(r, 9.0)
    r.cc.ports["fxo1"].media.cancel_echo = False
    cloud_talks(r, call, 5.0)
    r.cloud.hangup(call)
    r.run(0.5)
    dsp = quality_of(seen).data["dsp"]
    assert abs(dsp["erle_mean_db"]) < 0.5 and dsp["erle_worst_db"] <= dsp["erle_mean_db"]
    assert abs(dsp["residual_echo_dbm0"] - (FAR_DBM0 - 9.0)) < 2.0, dsp  # all the echo


def test_a_line_without_echo_reports_no_erle(rig):
    r = rig()  # the sim's phones have no hybrid: nothing comes back to measure
    r.cloud.agent("5551234", answer_after=0.3, tone_hz=440.0, tone_dbm0=-10.0)
    seen = recorder(r)
    connect(r)
    r.run(3.0)
    r.phone().on_hook()
    r.run(1.5)
    dsp = quality_of(seen).data["dsp"]
    assert dsp["erle_mean_db"] is None and dsp["residual_echo_dbm0"] is None
    assert dsp["echo_canceller"] == "on"


def test_the_quality_event_follows_hung_up_with_the_same_call(rig):
    r = rig()
    r.cloud.agent("5551234", answer_after=0.3, tone_hz=440.0)
    seen = recorder(r)
    connect(r)
    r.run(2.0)
    r.phone().on_hook()
    r.run(1.5)
    calls = [e for e in seen if e.kind in (K.HUNG_UP, K.CALL_QUALITY)]
    assert [e.kind for e in calls] == [K.HUNG_UP, K.CALL_QUALITY]
    hung_up, quality = calls
    assert seen.index(quality) == seen.index(hung_up) + 1
    for name in ("port", "call_id", "ani", "dnis", "direction"):
        assert getattr(quality, name) == getattr(hung_up, name)
    assert (quality.port, quality.dnis, quality.direction) == ("fxs1", "5551234", "outbound")
    data = quality.data
    assert data["ended"] == pytest.approx(hung_up.time, abs=0.01)
    assert data["network"] == {"codec": "PCMU", "jitter_ms": 2.0, "loss_pct": 0.0,
                               "rtt_ms": 30.0, "r_factor": pytest.approx(91.64, abs=0.5),
                               "mos": pytest.approx(4.38, abs=0.05)}
    assert set(data["dsp"]) == {"erle_mean_db", "erle_worst_db", "residual_echo_dbm0",
                                "echo_canceller", "dtmf", "modem", "fax"}
    json.dumps(quality.to_json())  # the event stream sends it as it is


def test_a_local_call_reports_the_callers_port_without_network_figures(rig):
    r = rig()
    seen = recorder(r)
    dial(r, "202")
    r.board.phones["fxs2"].off_hook()
    r.run(2.0)
    r.phone().on_hook()
    r.board.phones["fxs2"].on_hook()
    r.run(1.5)
    quality = quality_of(seen)
    assert quality.port == "fxs1" and quality.direction == "local"
    assert set(quality.data["network"].values()) == {None}
    assert quality.data["dsp"]["echo_canceller"] == "off"  # two of our ports: no canceller


def test_inband_dtmf_is_counted_and_relayed_by_rfc4733(rig):
    r = rig()
    seen = recorder(r)
    call = connect(r)  # the number dialled before the call is not the call's
    r.phone().dial_dtmf("12#")
    r.run(1.5)
    r.cloud.send_dtmf(call, "9")
    r.run(1.0)
    r.phone().on_hook()
    r.run(1.5)
    assert call.dtmf == "12#"
    dtmf = quality_of(seen).data["dsp"]["dtmf"]
    assert dtmf == {"inband": 3, "rfc4733": 3, "info": 0, "received": 1, "digits": "12#"}


def test_dtmf_relayed_by_sip_info(rig):
    r = rig(sip__dtmf="info")
    seen = recorder(r)
    connect(r)
    r.phone().dial_dtmf("*0")
    r.run(1.5)
    r.phone().on_hook()
    r.run(1.5)
    dtmf = quality_of(seen).data["dsp"]["dtmf"]
    assert dtmf == {"inband": 2, "rfc4733": 0, "info": 2, "received": 0, "digits": "*0"}


def cng(seconds_on: float = 0.5, seconds_off: float = 1.0, dbm0: float = -11.0) -> np.ndarray:
    """T.30 CNG: 1100 Hz bursts, here after 0.3 s of silence."""
    t = np.arange(int(8000 * seconds_on)) / 8000
    burst = np.sqrt(2 * dbm0_power(dbm0)) * np.sin(2 * np.pi * 1100.0 * t)
    quiet = np.zeros(int(8000 * seconds_off))
    return to_int16(np.concatenate([np.zeros(2400), burst, quiet, burst, quiet]))


def test_a_fax_calling_tone_marks_the_call_as_fax(rig):
    r = rig()
    r.cloud.passthrough = lambda call: None  # SimCloud has no G.711 switch of its own
    seen = recorder(r)
    connect(r)
    r.run(1.0)
    r.phone().speak(cng())
    r.run(3.5)
    r.phone().on_hook()
    r.run(1.5)
    dsp = quality_of(seen).data["dsp"]
    assert dsp["fax"] is True
    heard = [m for m in dsp["modem"] if m["tone"] == "CNG"]
    assert heard and heard[0]["side"] == "line" and 1.0 < heard[0]["at_s"] < 10.0, dsp


def test_a_voice_call_is_not_fax(rig):
    r = rig()
    r.cloud.agent("5551234", answer_after=0.3, tone_hz=440.0)
    seen = recorder(r)
    connect(r)
    r.run(2.0)
    r.phone().on_hook()
    r.run(1.5)
    dsp = quality_of(seen).data["dsp"]
    assert dsp["fax"] is False and dsp["modem"] == []


@pytest.fixture
def store(tmp_path):
    s = CdrStore(tmp_path / "cdr.sqlite")
    yield s
    s.close()


def test_the_cdr_and_its_outbox_record_carry_the_dsp_block(store):
    from lab.rig import Rig

    r = Rig(cdr=store)
    try:
        seen = recorder(r)
        call = pstn_call_with_echo(r, 9.0)
        cloud_talks(r, call, 3.0)
        r.cloud.hangup(call)
        r.run(0.5)
    finally:
        r.close()
    quality = quality_of(seen)
    cdr = store.get(quality.call_id)
    assert cdr is not None and cdr["extra"]["dsp"] == quality.data["dsp"]
    assert cdr["mos"] == quality.data["network"]["mos"]
    queued = next(p["body"] for p in store.pending(10) if p["body"].get("uuid") == cdr["uuid"])
    assert queued["extra"]["dsp"] == quality.data["dsp"]
    assert store.list()[0]["extra"]["dsp"]["echo_canceller"] == "on"


def test_an_old_cdr_database_without_the_dsp_block_still_opens(tmp_path):
    path = tmp_path / "cdr.sqlite"
    db = sqlite3.connect(path)
    for sql in statements(MIGRATIONS[0]):  # a database of the first release
        db.execute(sql)
    db.execute("INSERT INTO cdr (uuid, direction, port, started, ended, disposition, extra)"
               " VALUES ('old-1', 'inbound', 'fxo1', 1000.0, 1010.0, 'answered', '{}')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = CdrStore(path)
    try:
        assert store.get("old-1")["extra"] == {}
        from lab.rig import Rig

        r = Rig(cdr=store)
        try:
            connect(r)
            r.phone().on_hook()
            r.run(1.5)
        finally:
            r.close()
        records = {rec["uuid"]: rec for rec in store.list()}
        assert records["old-1"]["extra"] == {}
        new = next(rec for uuid, rec in records.items() if uuid != "old-1")
        assert new["extra"]["dsp"]["dtmf"]["inband"] == 0
    finally:
        store.close()


# ---- the meter's arithmetic, frame by frame ----
def feed(meter: DspMeter, seconds: int, near_dbm0: float, out_dbm0: float,
         far_dbm0: float = -20.0) -> None:
    for _ in range(seconds * FRAMES_PER_S):
        meter.frame(dbm0_power(near_dbm0), dbm0_power(out_dbm0), dbm0_power(far_dbm0), True)


def test_meter_counts_only_single_talk_seconds_with_measurable_echo():
    meter = DspMeter()
    rec = meter.begin(7)
    feed(meter, 2, near_dbm0=-30.0, out_dbm0=-55.0)  # 25 dB
    feed(meter, 1, near_dbm0=-30.0, out_dbm0=-40.0)  # 10 dB: the worst second
    feed(meter, 1, near_dbm0=-15.0, out_dbm0=-16.0)  # near end talks: double talk
    feed(meter, 1, near_dbm0=-60.0, out_dbm0=-60.0, far_dbm0=-50.0)  # far end silent
    feed(meter, 1, near_dbm0=-70.0, out_dbm0=-90.0)  # echo under the floor
    assert meter.end(7) is rec
    out = rec.to_json()
    assert rec.erle_seconds == 3
    assert out["erle_mean_db"] == pytest.approx(20.0, abs=0.05)
    assert out["erle_worst_db"] == pytest.approx(10.0, abs=0.05)
    residual = 10 * math.log10((2 * dbm0_power(-55.0) + dbm0_power(-40.0)) / 3)
    assert out["residual_echo_dbm0"] == pytest.approx(power_dbm0(10 ** (residual / 10)), abs=0.05)
    assert out["echo_canceller"] == "on"


def test_meter_gives_each_second_to_every_open_call_and_bypass_wins():
    meter = DspMeter()
    held = meter.begin(1)
    feed(meter, 1, near_dbm0=-30.0, out_dbm0=-50.0)
    consult = meter.begin(2)
    feed(meter, 1, near_dbm0=-30.0, out_dbm0=-50.0)
    meter.bypassed()
    meter.digit("5")
    meter.modem("CED", "fax", "sip")
    meter.modem("CED", "fax", "sip")  # once per call and side
    assert (held.erle_seconds, consult.erle_seconds) == (2, 1)
    assert consult.to_json()["echo_canceller"] == "bypassed"
    assert consult.to_json()["modem"] == [{"tone": "CED", "side": "sip", "at_s": 0.0}]
    assert held.digits == consult.digits == "5" and held.fax
    assert meter.end(3) is None
