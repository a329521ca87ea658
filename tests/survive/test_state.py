"""The survivability state machine alone, driven by EDGE / REGISTRATION events and RTP
verdicts in fake time: immediate failover, failback after steady answers, flap damping,
the secondary edge, and every transition counted and queued to the outbox."""

from firmware.callctl.base import Ev
from firmware.cdr import CdrStore
from firmware.core.config import Config, default_document
from firmware.sip import api
from firmware.survive.state import State, Survivability
from foundation.reactor import FakeClock, Reactor

P, S = "sip:p.example", "sip:s.example"


def machine(tmp_path=None, **survive):
    doc = default_document()
    doc["sip"]["edges"] = [P, S]
    doc["survive"].update(survive)
    reactor = Reactor(FakeClock())
    cdr = CdrStore(tmp_path / "cdr.db") if tmp_path else None
    return reactor, Survivability(reactor, Config.from_doc(doc), cdr), cdr


def edge(reactor, sm, uri, ok, then=0.0):
    sm.on_sip(Ev(api.EDGE, None, {"edge": uri, "ok": ok}))
    reactor.run_for(then or 0.001)


def test_primary_loss_moves_to_the_secondary_and_back_after_steady_answers(tmp_path):
    reactor, sm, cdr = machine(tmp_path, failback_stable_s=30.0)
    edge(reactor, sm, P, False)
    assert sm.state is State.CLOUD_SECONDARY and sm.edge_in_use == S
    edge(reactor, sm, P, True, then=29.0)
    assert sm.state is State.CLOUD_SECONDARY
    reactor.run_for(1.5)
    assert sm.state is State.CLOUD_PRIMARY and sm.transitions == 2
    assert "answered steadily" in sm.last_reason
    rows = [r["body"] for r in cdr.pending() if r["kind"] == "state_change"]
    assert [(r["old"], r["new"]) for r in rows] == [("cloud_primary", "cloud_secondary"),
                                                   ("cloud_secondary", "cloud_primary")]
    cdr.close()


def test_both_edges_lost_in_one_round_go_straight_to_survivable():
    reactor, sm, _ = machine()
    sm.on_sip(Ev(api.EDGE, None, {"edge": P, "ok": False}))
    sm.on_sip(Ev(api.EDGE, None, {"edge": S, "ok": False}))
    reactor.run_for(0.01)
    assert sm.state is State.SURVIVABLE and sm.transitions == 1
    assert sm.status()["state"] == "survivable" and P in sm.last_reason


def test_fifty_flaps_make_one_transition_and_a_flapping_wan_waits_flap_hold():
    reactor, sm, _ = machine(failback_stable_s=30.0, flap_count=3, flap_hold_s=120.0)
    for _ in range(50):
        for uri in (P, S):
            sm.on_sip(Ev(api.EDGE, None, {"edge": uri, "ok": False}))
        reactor.run_for(2.0)
        for uri in (P, S):
            sm.on_sip(Ev(api.EDGE, None, {"edge": uri, "ok": True}))
        reactor.run_for(3.0)
    assert sm.state is State.SURVIVABLE and sm.transitions == 1
    reactor.run_for(60.0)
    assert sm.state is State.SURVIVABLE  # flapping: 120 s, not 30 s
    reactor.run_for(60.0)
    assert sm.state is State.CLOUD_PRIMARY and sm.transitions == 2


def test_registration_loss_counts_but_a_refused_password_does_not():
    reactor, sm, _ = machine()
    sm.on_sip(Ev(api.REGISTRATION, None, {"ok": False, "code": 403}))
    reactor.run_for(0.01)
    assert sm.state is State.CLOUD_PRIMARY
    sm.on_sip(Ev(api.REGISTRATION, None, {"ok": False, "code": 408}))
    reactor.run_for(0.01)
    assert sm.state is State.CLOUD_SECONDARY


def test_silent_calls_mark_the_edge_in_use_bad_until_audio_returns():
    reactor, sm, _ = machine(failback_stable_s=5.0)
    edge(reactor, sm, S, False)
    sm.media(False, "no RTP on the cloud calls for 10 s")
    reactor.run_for(0.01)
    assert sm.state is State.SURVIVABLE and "no RTP" in sm.last_reason
    sm.media(True, "RTP back")
    reactor.run_for(5.1)
    assert sm.state is State.CLOUD_PRIMARY
