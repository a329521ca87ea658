"""The delivery worker (firmware.forward) against the lab records receiver on
127.0.0.1, in process: order, batching around recordings, idempotent redelivery, a
cloud that is down, failing, hanging or losing its answers, TLS verification, a
recording whose file vanished, and an hour's outage in fake time."""

import hashlib
import random

import pytest

from firmware.cdr import MAX_PAGE, CdrStore
from firmware.forward import (
    ForwardConfigError,
    Forwarder,
    HttpTransport,
    State,
    ssl_context,
)
from foundation.reactor import FakeClock
from lab.records import RecordsReceiver
from tests.forward.helpers import call, recording


def _forwarder(store, rx_or_url, *, batch=20, timeout=2.0, context=None, **kw):
    url = rx_or_url if isinstance(rx_or_url, str) else rx_or_url.url
    transport = HttpTransport(url, timeout=timeout, box="branch-07", context=context)
    return Forwarder(store, transport, batch=batch, rng=random.Random(5), **kw)


def _seq_order(store):
    return [r[0] for r in store.read("SELECT uuid FROM outbox ORDER BY seq")]


def test_delivers_everything_in_order_in_batches_with_recordings_alone(store, receiver):
    uuids = [call(store, i) for i in range(45)]
    rec = recording(store, "call-3.wav", 30_000, call_uuid=uuids[3])
    uuids += [rec] + [store.state_change("CLOUD_PRIMARY", "SURVIVABLE", f"r{i}")
                      for i in range(5)]
    fwd = _forwarder(store, receiver)
    assert fwd.deliver_pending() == 51 and fwd.state is State.IDLE
    assert receiver.order == uuids == _seq_order(store)
    st = receiver.stats()
    assert st["duplicates"] == 0 and st["files"] == 1
    assert st["requests"] == 3 + 1 + 1 + 1  # 20+20+5 records, the file, its row, 5 events
    size, digest = receiver.files[rec]
    data = (store.recordings_dir / "call-3.wav").read_bytes()
    assert size == 30_000 and digest == hashlib.sha256(data).hexdigest()
    assert receiver.records[rec]["body"]["file"] == "call-3.wav"
    assert receiver.records[uuids[0]]["body"]["ani"] == "+15550000000"
    assert store.depth() == 0 and fwd.deliver_pending() == 0


def test_redelivery_after_a_lost_answer_is_stored_once(store, receiver):
    uuids = [call(store, i) for i in range(5)]
    receiver.set_mode("lose_ack")  # stored, but the 200 never comes back
    fwd = _forwarder(store, receiver)
    assert fwd.deliver_pending() == 0 and fwd.state is State.BACKOFF
    assert store.depth() == 5 and receiver.order == uuids
    receiver.set_mode("ok")
    assert fwd.deliver_pending() == 5 and store.depth() == 0
    st = receiver.stats()
    assert st["distinct"] == 5 and st["received"] == 10 and st["duplicates"] == 5
    assert receiver.order == uuids


def test_cloud_down_then_up_loses_nothing_and_keeps_order(store, receiver, clock):
    receiver.down()
    fwd = _forwarder(store, receiver, batch=7, clock=clock.now,
                     backoff_min_s=1.0, backoff_max_s=60.0)
    uuids, waits = [], []
    for attempt in range(10):
        uuids += [call(store, attempt * 10 + i) for i in range(10)]
        waits.append(fwd.step(2.0))
        assert fwd.state is State.BACKOFF and fwd.failures == attempt + 1
    assert "ConnectionRefusedError" in fwd.last_error
    assert 0.5 <= waits[0] < 1.0 and 1.0 <= waits[1] < 2.0 and 2.0 <= waits[2] < 4.0
    assert 30.0 <= waits[-1] < 60.0  # doubling, capped at 60 s, times a jitter in [0.5, 1)
    head = store.depth(detail=True)["head"]
    assert head["uuid"] == uuids[0] and head["attempts"] == 10
    assert "ConnectionRefused" in head["last_error"]
    receiver.up()
    assert fwd.step(2.0) == 2.0 and fwd.state is State.IDLE and fwd.failures == 0
    assert receiver.order == uuids and receiver.stats()["duplicates"] == 0


def test_a_failing_cloud_stops_the_pass_at_the_failed_row(store, receiver):
    first = [call(store, i) for i in range(3)]
    fwd = _forwarder(store, receiver, batch=3)
    assert fwd.deliver_pending() == 3
    later = [call(store, 10 + i) for i in range(6)]
    receiver.set_mode("fail")
    assert fwd.deliver_pending() == 0 and "HTTP 503" in fwd.last_error
    assert [p["uuid"] for p in store.pending(10)] == later  # nothing skipped ahead
    receiver.set_mode("ok")
    assert fwd.deliver_pending() == 6 and receiver.order == first + later


def test_a_hanging_cloud_times_out_and_nothing_is_marked(store):
    with RecordsReceiver(mode="hang", hang_s=5.0) as rx:
        uuids = [call(store, i) for i in range(4)]
        fwd = _forwarder(store, rx, timeout=0.3)
        assert fwd.deliver_pending() == 0 and "timed out" in fwd.last_error
        assert store.depth() == 4
        rx.set_mode("ok")
        assert fwd.deliver_pending() == 4 and rx.order == uuids


def test_https_verifies_the_server_unless_given_its_certificate(store):
    with RecordsReceiver(tls=True) as rx:
        u = call(store, 1)
        fwd = _forwarder(store, rx, context=ssl_context())
        assert fwd.deliver_pending() == 0
        assert "certificate is not trusted" in fwd.last_error
        assert "records_ca_file" in fwd.last_error and store.depth() == 1
        fwd = _forwarder(store, rx, context=ssl_context(ca_file=str(rx.cert_path)))
        assert fwd.deliver_pending() == 1 and rx.order == [u]
        call(store, 2)
        fwd = _forwarder(store, rx, context=ssl_context(verify=False))
        assert fwd.deliver_pending() == 1
    with pytest.raises(ForwardConfigError, match="does not exist"):
        ssl_context(ca_file="/nonexistent/ca.pem")
    with pytest.raises(ForwardConfigError, match="http:// or https://"):
        HttpTransport("ftp://example.com/records")


def test_a_recording_whose_file_vanished_is_reported_not_blocking(store, receiver):
    a = call(store, 1)
    rec = recording(store, "gone.wav", 1000)
    b = call(store, 2)
    (store.recordings_dir / "gone.wav").unlink()
    fwd = _forwarder(store, receiver)
    assert fwd.deliver_pending() == 3
    kinds = [receiver.records[u]["kind"] for u in receiver.order]
    assert kinds == ["cdr", "cdr", "evicted"] and receiver.order[:2] == [a, b]
    evicted = receiver.records[receiver.order[2]]["body"]
    assert evicted["recording"] == rec and "missing" in evicted["reason"]
    assert rec not in receiver.records and not receiver.files


def test_housekeeping_prunes_delivered_rows_after_keep_days(store, receiver, clock):
    [call(store, i) for i in range(5)]
    fwd = _forwarder(store, receiver, clock=clock.now, keep_days=7, prune_every_s=3600)
    fwd.step(2.0)
    assert store.read("SELECT COUNT(*) FROM outbox")[0][0] == 5
    clock.set(clock.now() + 8 * 86400)
    fwd.step(2.0)
    assert store.read("SELECT COUNT(*) FROM outbox")[0][0] == 0


def test_an_hour_offline_in_fake_time_then_everything_exactly_once_in_order(tmp_path):
    """A call every 10 s, state flaps, callbacks and recordings for an hour while the
    records URL refuses connections; the worker retries with backoff in fake time; when
    the WAN returns everything arrives once, in the order it happened."""
    clock = FakeClock()
    store = CdrStore(tmp_path / "cdr.db", wall=clock.wall, max_bytes=2_000_000)
    store.recordings_dir.mkdir()
    rx = RecordsReceiver().start()
    rx.down()
    t_end = clock.now() + 3600.0
    produced, next_event = [], [clock.now()]

    def produce_until(t):
        while next_event[0] <= t and next_event[0] < t_end:
            clock.set(next_event[0])
            i = len(produced)
            u = call(store, i, t=clock.wall())
            produced.append(u)
            if i % 6 == 0:
                produced.append(store.state_change("SURVIVABLE", "SURVIVABLE", f"probe {i}"))
            if i % 10 == 0:
                produced.append(store.callback_request(f"+1555{i:07d}", "5550199", "fxo1",
                                                       call_uuid=u))
            if i % 30 == 0:
                produced.append(recording(store, f"rec-{i}.wav", 20_000, call_uuid=u))
            next_event[0] += 10.0

    def sleep(s):
        target = clock.now() + s
        produce_until(target)
        if target >= t_end and rx.mode == "down":
            rx.up()  # the WAN is back
        clock.set(max(clock.now(), target))

    tries = []
    fwd = Forwarder(store, HttpTransport(rx.url, timeout=2.0), batch=50, clock=clock.now,
                    sleep=sleep, backoff_max_s=120.0, rng=random.Random(1),
                    on_event=lambda e: tries.append(e))
    try:
        fwd.run(interval_s=5.0, should_stop=lambda: clock.now() > t_end + 600)
        assert len(produced) > 500
        assert rx.order == produced == _seq_order(store)  # once each, in order
        st = rx.stats()
        assert st["duplicates"] == 0 and st["distinct"] == len(produced)
        assert st["files"] == len([u for u in produced if u in rx.files]) > 0
        assert store.depth() == 0 and fwd.state is State.IDLE
        assert fwd.delivered == len(produced)
        failed = [e for e in tries if e["new"] == "backoff"]
        assert 25 <= len(failed) <= 60  # retried all hour, about every 2 min, not hammering
        assert all("Connection refused" in e["reason"] for e in failed)
        assert store.pending(MAX_PAGE) == [] and store.check_totals()
    finally:
        rx.close()
        store.close()
