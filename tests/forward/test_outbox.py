"""The outbox of firmware.cdr as store and forward needs it: the kinds, the recordings
index, the size cap (oldest recordings go first, records never), depth reporting,
pruning of delivered rows, the migration of a version-1 database, and a writer killed
with SIGKILL while offline (the outbox survives the "power cut")."""

import signal
import sqlite3

import pytest

from firmware.cdr import MAX_PAGE, SCHEMA_VERSION, CdrStore
from tests.forward.helpers import call, child, recording


def test_kinds_and_the_recordings_index(store, clock):
    c = call(store, 1)
    s = store.state_change("CLOUD_PRIMARY", "SURVIVABLE", "edge1 missed 2 OPTIONS")
    cb = store.callback_request("+15551234567", "5551234567", "fxo1", call_uuid=c)
    r = recording(store, "call-1.wav", 4000, call_uuid=c)
    rows = store.pending(10)
    assert [(p["uuid"], p["kind"]) for p in rows] == \
        [(c, "cdr"), (s, "state_change"), (cb, "callback"), (r, "recording")]
    assert rows[1]["body"]["reason"] == "edge1 missed 2 OPTIONS"
    assert rows[1]["body"]["t"] == clock.wall()
    assert rows[2]["body"]["number"] == "5551234567"
    assert rows[3]["path"] == str(store.recordings_dir / "call-1.wav")
    assert rows[3]["file_bytes"] == 4000 and rows[3]["body"]["bytes"] == 4000
    [index] = store.recordings()
    assert (index["uuid"], index["file"], index["bytes"]) == (r, "call-1.wav", 4000)
    assert index["delivered"] is None and index["evicted"] is None


def test_a_recording_must_be_a_finished_file_of_the_recordings_dir(store, tmp_path):
    (tmp_path / "elsewhere.wav").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a file of .*recordings"):
        store.add_recording(tmp_path / "elsewhere.wav")
    with pytest.raises(FileNotFoundError, match="write the file completely"):
        store.add_recording("never-written.wav")
    assert store.depth() == 0


def test_depth_reports_pending_bytes_age_kinds_and_head(store, clock):
    assert store.depth(detail=True)["pending"] == 0
    assert store.depth(detail=True)["oldest_age_s"] is None
    first = call(store, 1)
    clock.set(clock.now() + 90)
    store.state_change("CLOUD_PRIMARY", "SURVIVABLE", "wan down")
    recording(store, "a.wav", 10_000)
    d = store.depth(detail=True)
    assert d["pending"] == 3 == store.depth()
    assert d["by_kind"] == {"cdr": 1, "recording": 1, "state_change": 1}
    assert d["oldest_age_s"] == pytest.approx(90.0)
    assert 10_000 < d["bytes"] < 12_000 and d["over_cap"] is False
    assert d["head"]["uuid"] == first and d["head"]["attempts"] == 0
    store.note_failure(first, "HTTP 503")
    assert store.depth(detail=True)["head"]["last_error"] == "HTTP 503"
    store.mark_delivered([first])
    d = store.depth(detail=True)
    assert d["pending"] == 2 and d["by_kind"] == {"recording": 1, "state_change": 1}
    assert store.check_totals()


def test_cap_evicts_the_oldest_recordings_first_with_their_files(store):
    store.set_cap(max_bytes=50_000)
    recs = [recording(store, f"r{i}.wav", 15_000) for i in range(3)]  # 45 kB: fits
    cdrs = [call(store, i) for i in range(3)]
    assert store.depth(detail=True)["over_cap"] is False
    newest = recording(store, "r3.wav", 15_000)  # 60 kB: the oldest recording goes
    files = sorted(p.name for p in store.recordings_dir.iterdir())
    assert files == ["r1.wav", "r2.wav", "r3.wav"]
    pending = store.pending(MAX_PAGE)
    kinds = [(p["kind"], p["uuid"]) for p in pending]
    assert ("recording", recs[0]) not in kinds and ("recording", newest) in kinds
    assert all(("cdr", u) in kinds for u in cdrs)  # records never go
    [evicted] = [p for p in pending if p["kind"] == "evicted"]
    assert evicted["body"]["recording"] == recs[0] and evicted["body"]["file"] == "r0.wav"
    assert "cap" in evicted["body"]["reason"] and kinds[-1] == ("evicted", evicted["uuid"])
    index = {r["uuid"]: r for r in store.recordings()}
    assert index[recs[0]]["evicted"] is not None and index[recs[0]]["bytes"] == 0
    d = store.depth(detail=True)
    assert d["bytes"] <= 50_000 and d["over_cap"] is False and store.check_totals()


def test_delivered_recordings_go_before_undelivered_ones(store):
    old = recording(store, "old.wav", 20_000)
    new = recording(store, "new.wav", 20_000)
    store.mark_delivered([new])  # the cloud has the newer one already
    store.set_cap(max_bytes=30_000)
    assert sorted(p.name for p in store.recordings_dir.iterdir()) == ["old.wav"]
    assert [p["uuid"] for p in store.pending(10)] == [old]  # nothing lost, no event
    assert store.depth(detail=True)["bytes"] <= 30_000


def test_records_alone_over_the_cap_are_kept_and_reported(store, caplog):
    store.set_cap(max_bytes=3_000)
    recording(store, "r.wav", 2_000)
    uuids = [call(store, i) for i in range(10)]  # ~10 kB of CDRs
    pending = store.pending(MAX_PAGE)
    assert {u for u in uuids} <= {p["uuid"] for p in pending}
    assert not list(store.recordings_dir.iterdir())
    d = store.depth(detail=True)
    assert d["over_cap"] is True and d["bytes"] > 3_000
    assert d["by_kind"]["cdr"] == 10 and d["by_kind"]["evicted"] == 1
    assert "outbox over cap" in caplog.text and "records are kept" in caplog.text
    store.mark_delivered(p["uuid"] for p in pending)
    assert store.depth(detail=True)["over_cap"] is False


def test_row_cap_is_reported_only(store):
    store.set_cap(max_bytes=None, max_rows=5)
    for i in range(7):
        store.state_change("A", "B", f"flap {i}")
    d = store.depth(detail=True)
    assert d["pending"] == 7 and d["over_cap"] is True


def test_prune_drops_old_delivered_rows_and_files_never_pending_ones(store, clock):
    delivered = [call(store, i) for i in range(3)]
    rec = recording(store, "done.wav", 1000)
    store.mark_delivered([*delivered, rec])
    keep = call(store, 99)  # pending: never pruned, however old
    clock.set(clock.now() + 10 * 86400)
    fresh = call(store, 100)
    store.mark_delivered([fresh])
    assert store.prune(keep_days=7) == 4
    assert not (store.recordings_dir / "done.wav").exists()
    left = store.read("SELECT uuid FROM outbox ORDER BY seq")
    assert [r[0] for r in left] == [keep, fresh]
    assert store.get(delivered[0]) is not None  # the CDR table itself is not pruned
    assert store.prune(keep_days=7) == 0 and store.check_totals()


def test_a_version_1_database_is_migrated_with_its_pending_rows(tmp_path):
    db = tmp_path / "cdr.db"
    con = sqlite3.connect(db)
    from firmware.cdr import MIGRATIONS, statements
    for stmt in statements(MIGRATIONS[0]):
        con.execute(stmt)
    con.execute("INSERT INTO outbox (uuid, kind, body, created) VALUES"
                " ('u1', 'cdr', '{\"a\": 1}', 1.0), ('u2', 'ring', '{}', 2.0)")
    con.execute("INSERT INTO outbox (uuid, kind, body, created, delivered) VALUES"
                " ('u3', 'cdr', '{}', 3.0, 4.0)")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    with CdrStore(db) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert [p["uuid"] for p in s.pending(10)] == ["u1", "u2"]
        d = s.depth(detail=True)
        assert d["pending"] == 2 and d["bytes"] == len('{"a": 1}') + 2
        assert s.check_totals()


WRITER = """
    import os, sys
    from firmware.cdr import CdrStore
    s = CdrStore(sys.argv[1], max_bytes=int(sys.argv[2]))
    s.recordings_dir.mkdir(exist_ok=True)
    for i in range(100000):
        u = s.open_call("inbound", "fxo1", f"+1555{i:07d}", "5550100", started=1.0e9 + i)
        s.answered(u, 1.0e9 + i + 1)
        s.ended(u, 1.0e9 + i + 2, "answered")
        print(u, flush=True)
        print(s.state_change("SURVIVABLE", "SURVIVABLE", f"still offline {i}"), flush=True)
        if i % 5 == 0:
            print(s.callback_request(f"+1555{i:07d}", "5551234", "fxo1", call_uuid=u), flush=True)
        if i % 3 == 0:
            tmp = s.recordings_dir / f".rec-{i}.tmp"
            tmp.write_bytes(os.urandom(5000))
            os.replace(tmp, s.recordings_dir / f"rec-{i}.wav")
            print("R" + s.add_recording(f"rec-{i}.wav", call_uuid=u), flush=True)
"""


def test_kill_9_of_a_writer_while_offline_keeps_every_committed_record(tmp_path):
    db = tmp_path / "cdr.db"
    writer = child(WRITER, db, 200_000)
    try:
        lines = [writer.stdout.readline().strip() for _ in range(400)]
    finally:
        writer.kill()
        writer.wait(10)
    assert writer.returncode == -signal.SIGKILL and all(lines)
    records = [ln for ln in lines if not ln.startswith("R")]
    recordings = [ln[1:] for ln in lines if ln.startswith("R")]
    with CdrStore(db, max_bytes=200_000) as s:
        assert s.read("PRAGMA integrity_check")[0][0] == "ok" and s.check_totals()
        pending = {p["uuid"]: p for p in s.pending(MAX_PAGE)}
        assert set(records) <= set(pending)  # no committed record lost
        index = {r["uuid"]: r for r in s.recordings(MAX_PAGE)}
        assert set(recordings) <= set(index)
        kept = [u for u in recordings if index[u]["evicted"] is None]
        evicted = [u for u in recordings if index[u]["evicted"] is not None]
        assert kept and evicted and kept == recordings[-len(kept):]  # oldest went first
        for u in kept:
            assert (s.recordings_dir / index[u]["file"]).stat().st_size == 5000
        on_disk = {p.name for p in s.recordings_dir.glob("*.wav")}
        assert on_disk <= {r["file"] for r in index.values() if r["evicted"] is None}
        assert s.depth(detail=True)["bytes"] <= 200_000
