"""The lab's real SIP peers: Kamailio as the cloud edge, pjsua2 agent processes, sipp.

One Kamailio and three agents serve the whole module (starting peers is the slow
part); each test makes its own calls and names them by id. Everything runs on
127.0.0.1 on ports chosen at run time and is stopped by the fixtures.
"""

from __future__ import annotations

import pytest

from lab.agentctl import Agent
from lab.kamailio import Kamailio, LabError, options_ping
from lab.ports import free_port, free_ports
from lab.sipp import run_sipp, start_sipp

USERS = {f"agent{i}": "secret" for i in range(1, 7)} | {"branch": "secret"}


@pytest.fixture(scope="module")
def sipp_ports():
    """Ports for sipp far ends that Kamailio routes to by name (they cannot register)."""
    return dict(zip(("busy486", "busy503", "never", "spare"), free_ports(4), strict=True))


@pytest.fixture(scope="module")
def kam(tmp_path_factory, sipp_ports):
    aliases = {name: f"sip:{name}@127.0.0.1:{port}" for name, port in sipp_ports.items()}
    aliases["18005550100"] = "agent2"
    with Kamailio(tmp_path_factory.mktemp("kamailio"), users=USERS, aliases=aliases,
                  invite_timeout_ms=2000) as k:
        yield k


@pytest.fixture(scope="module")
def a(kam, tmp_path_factory):
    with Agent("agent1", registrar=kam, tone_hz=1000,
               workdir=tmp_path_factory.mktemp("agent1")) as agent:
        yield agent


@pytest.fixture(scope="module")
def b(kam, tmp_path_factory):
    with Agent("agent2", registrar=kam, tone_hz=440,
               workdir=tmp_path_factory.mktemp("agent2")) as agent:
        yield agent


@pytest.fixture(scope="module")
def c(kam, tmp_path_factory):
    with Agent("agent3", registrar=kam, tone_hz=2000,
               workdir=tmp_path_factory.mktemp("agent3")) as agent:
        yield agent


def last_id(agent: Agent) -> int:
    calls = agent.calls()
    return calls[-1]["id"] if calls else 0


def call_b(a: Agent, b: Agent, to: str = "agent2", headers=None) -> tuple[int, int]:
    """A dials `to` (reaching B); both sides' call ids once the call is confirmed."""
    before = last_id(b)
    ca = a.dial(to, headers=headers)
    a.wait_call_state("CONFIRMED", ca)
    cb = b.wait_for(lambda st: next((x["id"] for x in st["calls"] if x["id"] > before), None),
                    what="the incoming call")
    b.wait_call_state("CONFIRMED", cb)
    return ca, cb


def hang_up(a: Agent, ca: int, b: Agent, cb: int) -> None:
    a.hangup(ca)
    a.wait_call_state("DISCONNECTED", ca)
    b.wait_call_state("DISCONNECTED", cb)


# ---- Kamailio --------------------------------------------------------------------------


def test_kamailio_starts_answers_options_and_stops(tmp_path):
    k = Kamailio(tmp_path, users={"x": "y"})
    with k:
        assert k.ping() == 200
        assert "listen=udp:127.0.0.1:" in k.cfg.read_text()
        proc = k.proc
    assert proc.poll() is not None
    assert options_ping(k.port, timeout=0.2) is None


def test_kamailio_refuse_and_pause(kam):
    kam.refuse(503)
    try:
        assert kam.ping() == 503
    finally:
        kam.refuse(None)
    assert kam.ping() == 200
    kam.pause()
    try:
        assert kam.ping(timeout=0.3) is None
    finally:
        kam.resume()
    assert kam.ping() == 200


# ---- registration ----------------------------------------------------------------------


def test_right_password_registers(a, b):
    assert a.status()["registered"] and a.status()["reg"]["code"] == 200
    assert b.status()["registered"]


def test_wrong_password_is_refused_with_a_clear_error(kam, tmp_path):
    with pytest.raises(LabError, match=r"agent agent3: registration at .* refused with 403 "
                                       r".*check the password"):
        Agent("agent3", password="wrong", registrar=kam, workdir=tmp_path).start()


# ---- calls through Kamailio ------------------------------------------------------------


def test_audio_crosses_both_ways(a, b):
    ca, cb = call_b(a, b)
    try:
        # Sent at -10 dBm0; G.711 and the bridge keep it within a few dB once the
        # one-second window is full of tone.
        heard_by_a = a.wait_tone(440, tolerance=20, call=ca, min_dbm0=-13)
        heard_by_b = b.wait_tone(1000, tolerance=20, call=cb, min_dbm0=-13)
        assert heard_by_a["dbm0"] <= -7 and heard_by_b["dbm0"] <= -7
    finally:
        hang_up(a, ca, b, cb)


@pytest.mark.parametrize("method", ["rfc4733", "info"])
def test_dtmf_arrives(a, b, method):
    ca, cb = call_b(a, b)
    try:
        a.dtmf("123#", method=method, call=ca)
        got = b.wait_dtmf("123#", call=cb)
        assert [e["method"] for e in got["dtmf_events"]] == [method] * 4
    finally:
        hang_up(a, ca, b, cb)


def test_invite_headers_arrive(a, b):
    headers = {"P-Asserted-Identity": '"Jane Caller" <sip:5551234@cloud.test>',
               "X-Branch-Line": "fxo1"}
    ca, cb = call_b(a, b, to="18005550100", headers=headers)
    try:
        h = b.call(cb)["headers"]
        assert h["from_user"] == "agent1"
        assert h["pai_user"] == "5551234" and "Jane Caller" in h["pai"]
        assert h["to_user"] == "18005550100"  # the dialled cloud number (DNIS)
        assert h["x"] == {"X-Branch-Line": "fxo1"}
    finally:
        hang_up(a, ca, b, cb)


def test_hold_and_unhold(a, b):
    ca, cb = call_b(a, b)
    try:
        a.hold(ca)
        b.wait_for(lambda st: b.call(cb, st)["held"], what="remote hold")
        a.unhold(ca)
        b.wait_for(lambda st: not b.call(cb, st)["held"], what="resume")
        b.wait_tone(1000, call=cb)
    finally:
        hang_up(a, ca, b, cb)


def test_unregistered_user_gets_404(a):
    ca = a.dial("nobody")
    assert a.wait_call_state("DISCONNECTED", ca)["code"] == 404


def test_agent_answer_code_503_direct_and_through_kamailio(a, kam, tmp_path):
    with Agent("agent4", registrar=kam, answer_code=503, workdir=tmp_path) as refuser:
        direct = a.dial(refuser.direct_uri)
        assert a.wait_call_state("DISCONNECTED", direct)["code"] == 503
        # A proxy must not pass a 503 on (RFC 3261 16.7): through Kamailio it is a 500.
        proxied = a.dial("agent4")
        assert a.wait_call_state("DISCONNECTED", proxied)["code"] == 500


def test_transfer_by_refer(a, b, c):
    """B transfers A to agent3 (REFER): A calls agent3, B drops out, A hears agent3."""
    ca, cb = call_b(a, b)
    before_a, before_c = last_id(a), last_id(c)
    b.transfer("agent3", call=cb)
    new = a.wait_for(lambda st: next((x["id"] for x in st["calls"] if x["id"] > before_a
                                      and x["state"] == "CONFIRMED"), None),
                     what="the transferred call")
    assert "agent3" in a.call(new)["remote_uri"]
    a.wait_call_state("DISCONNECTED", ca)
    b.wait_call_state("DISCONNECTED", cb)
    a.wait_tone(2000, call=new)
    cc = c.wait_for(lambda st: next((x["id"] for x in st["calls"] if x["id"] > before_c),
                                    None), what="the transferred call")
    hang_up(a, new, c, cc)


def test_early_media_and_never_answering_agent(a, kam, tmp_path):
    """--answer-code 408 --early-media: 183 with audio, no answer; the caller hears the
    far end before answer, then gives up (CANCEL -> 487)."""
    with Agent("agent5", registrar=kam, answer_code=408, early_media=True, tone_hz=700,
               workdir=tmp_path) as ringer:
        ca = a.dial("agent5")
        a.wait_call_state("EARLY", ca)
        a.wait_tone(700, call=ca)
        a.hangup(ca)
        assert a.wait_call_state("DISCONNECTED", ca)["code"] == 487
        ringer.wait_call_state("DISCONNECTED")


def test_wideband_g722_carries_tones_above_4khz(kam, tmp_path):
    wide = {"registrar": kam, "codecs": "G722", "port_rate": 16000}
    with Agent("agent5", tone_hz=5000, workdir=tmp_path, **wide) as w1, \
            Agent("agent6", tone_hz=6000, workdir=tmp_path, **wide) as w2:
        c1, c2 = call_b(w1, w2, to="agent6")
        assert w1.call(c1)["codec"].startswith("G722")
        w2.wait_tone(5000, call=c2, min_dbm0=-16)
        w1.wait_tone(6000, call=c1, min_dbm0=-16)


# ---- sipp far ends ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [486, 503])
def test_sipp_uas_rejects(a, kam, sipp_ports, tmp_path, code):
    with start_sipp("uas_reject", code=code, port=sipp_ports[f"busy{code}"], timeout=15,
                    workdir=tmp_path) as uas:
        ca = a.dial(f"busy{code}")
        # Kamailio turns a 503 from downstream into 500 (RFC 3261 16.7).
        assert a.wait_call_state("DISCONNECTED", ca)["code"] == {503: 500}.get(code, code)
        assert uas.wait().ok


def test_sipp_uas_never_answers_408(a, kam, sipp_ports, tmp_path):
    with start_sipp("uas_noanswer", port=sipp_ports["never"], timeout=15,
                    workdir=tmp_path) as uas:
        ca = a.dial("never")
        assert a.wait_call_state("DISCONNECTED", ca, timeout=6)["code"] == 408
        assert uas.wait().ok


def test_garbage_from_a_peer_does_not_crash_the_agent(a, b, tmp_path):
    before = last_id(b)
    res = run_sipp("garbage_uac", b.address, service="agent2", timeout=20, workdir=tmp_path)
    assert res.ok, res.log("errors")
    assert b.alive()
    calls = [x for x in b.calls() if x["id"] > before]
    assert calls and all(x["state"] == "DISCONNECTED" for x in calls)
    ca, cb = call_b(a, b)  # still takes calls
    hang_up(a, ca, b, cb)


def test_sipp_load_through_kamailio(kam, b, tmp_path):
    res = run_sipp("uac_load", kam.address, service="agent2", calls=20, rate=10,
                   hold_ms=100, timeout=20, workdir=tmp_path)
    assert res.ok and res.successful == 20, res.log("errors")


def test_sipp_refuses_rates_above_40(kam):
    with pytest.raises(LabError, match="40"):
        run_sipp("uac_load", kam.address, rate=100)


def test_free_ports_are_distinct_and_bindable():
    import socket
    ports = free_ports(5) + [free_port("tcp")]
    assert len(set(ports)) == 6
    for p in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", p))


def test_agent_shuts_down_cleanly_with_a_call_up(a, kam, tmp_path):
    """SIGTERM-free quit with a live call: exit code 0 (no pjsua2 abort), far end told."""
    peer = Agent("agent4", registrar=kam, workdir=tmp_path).__enter__()
    try:
        ca = a.dial("agent4")
        a.wait_call_state("CONFIRMED", ca)
    finally:
        code = peer.stop()
    assert code == 0, (tmp_path / "agent-agent4.log").read_text()[-2000:]
    assert a.wait_call_state("DISCONNECTED", ca)["code"] in (200, 503)
