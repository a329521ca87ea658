"""The typed events call control publishes on `cc.events` (the control API's stream)."""

from firmware.cdr import CdrStore
from firmware.events import EventKind as K
from lab.rig import Rig
from tests.callctl.rig import connect, dial

CALL_KINDS = (K.RINGING, K.ANSWERED, K.HELD, K.RESUMED, K.TRANSFERRED, K.HUNG_UP)


def recorder(r):
    seen = []
    r.cc.events.subscribe(seen.append)
    return seen


def test_inbound_pstn_call_answered_and_hung_up(tmp_path):
    store = CdrStore(tmp_path / "cdr.sqlite")
    r = Rig({"lines.fxo1.number": "5551230100"}, cdr=store)
    try:
        r.cloud.agent("5551230100", answer_after=1.0)
        seen = recorder(r)
        r.co().ring(callerid={"number": "2015550123", "name": "JANE CALLER",
                              "datetime": "11221030", "reason": None})
        r.run(10.0)
        r.cloud.hangup(r.cloud.invites[0])
        r.run(1.0)
        fxo = [e for e in seen if e.port == "fxo1"]
        states = [e.data["state"] for e in fxo if e.kind is K.PORT_STATE]
        assert states == ["ringing", "seized", "idle"]
        kinds = [e.kind for e in fxo if e.kind in (K.CALLER_ID, *CALL_KINDS)]
        assert kinds == [K.CALLER_ID, K.RINGING, K.ANSWERED, K.HUNG_UP]
        cid = next(e for e in fxo if e.kind is K.CALLER_ID)
        assert cid.data == {"number": "2015550123", "name": "JANE CALLER"}
        calls = [e for e in fxo if e.kind in CALL_KINDS]
        uuid = store.list()[0]["uuid"]
        for e in calls:
            assert (e.call_id, e.ani, e.dnis, e.direction) == (
                uuid, "2015550123", "5551230100", "inbound")
        assert [e.time for e in calls] == sorted(e.time for e in calls)
        hung_up = calls[-1]
        assert hung_up.data["disposition"] == "answered" and hung_up.data["duration"] > 1.0
    finally:
        r.close()


def test_fxs_call_held_and_transferred(rig):
    r = rig()
    r.cloud.agent("5552222", answer_after=0.3)
    seen = recorder(r)
    first = connect(r, "5551111")
    r.phone().flash()  # hold, dial tone
    r.run(1.0)
    dial(r, "5552222")
    r.run(1.0)
    r.phone().on_hook()  # attended transfer
    r.run(1.5)
    calls = [(e.kind, e.dnis) for e in seen if e.kind in CALL_KINDS and e.port == "fxs1"]
    assert calls == [(K.RINGING, "5551111"), (K.ANSWERED, "5551111"), (K.HELD, "5551111"),
                     (K.RINGING, "5552222"), (K.ANSWERED, "5552222"),
                     (K.TRANSFERRED, "5551111"), (K.HUNG_UP, "5551111"), (K.HUNG_UP, "5552222")]
    transferred = next(e for e in seen if e.kind is K.TRANSFERRED)
    assert transferred.direction == "outbound" and transferred.data["to"] == "5552222"
    assert first.transferred_to or first.state == "ended"
    states = [e.data["state"] for e in seen if e.kind is K.PORT_STATE and e.port == "fxs1"]
    assert states[:2] == ["off-hook", "in-call"] and states[-1] == "on-hook"
