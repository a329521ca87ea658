"""The CDR store on real SQLite files: WAL and FULL sync, a call's whole record, paging
and filters for the web page, CSV export, the outbox, a writer process killed with
SIGKILL mid-burst, a reader process beside a writer, and the errors a technician
sees for a bad path or a damaged file."""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid as uuidlib
from pathlib import Path

import pytest

from firmware.cdr import MAX_PAGE, SCHEMA_VERSION, CdrError, CdrStore

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_795_000_000.0
GOOD = {"codec": "PCMU/8000/1", "jitter_ms": 2.5, "loss_pct": 0.2, "rtt_ms": 30.0}


@pytest.fixture
def store(tmp_path):
    s = CdrStore(tmp_path / "cdr.db", wall=lambda: T0)
    yield s
    s.close()


def _child(code, *args):
    """A real Python process running `code` with the repo importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _call(store, i, port="fxo1", direction="inbound", ani=None, dnis="5550100"):
    u = store.open_call(direction, port, ani or f"+1555000{i:04d}", dnis,
                        sip_call_id=f"call-{i}@box", started=T0 + i)
    store.answered(u, T0 + i + 2)
    store.ended(u, T0 + i + 62, "answered", GOOD)
    return u


# --- the database file ---------------------------------------------------------------

def test_wal_mode_full_sync_and_schema_version(store):
    assert store.journal_mode() == "wal"
    assert store.schema_version() == SCHEMA_VERSION
    assert store.read("PRAGMA synchronous")[0][0] == 2  # FULL: power cuts keep commits
    store.open_call("inbound", "fxo1", "1", "2")
    assert (store.path.parent / "cdr.db-wal").exists()


def test_reopen_keeps_records_and_does_not_migrate_again(tmp_path):
    with CdrStore(tmp_path / "cdr.db") as s:
        u = s.open_call("local", "fxs1", "201", "202", started=T0)
    with CdrStore(tmp_path / "cdr.db") as s:
        assert s.get(u)["dnis"] == "202"
        assert s.schema_version() == SCHEMA_VERSION


def test_an_empty_sqlite_file_is_migrated_from_version_0(tmp_path):
    sqlite3.connect(tmp_path / "cdr.db").close()
    with CdrStore(tmp_path / "cdr.db") as s:
        assert s.schema_version() == SCHEMA_VERSION and s.count() == 0


# --- one call's record ---------------------------------------------------------------

def test_full_lifecycle_of_an_answered_call(store):
    u = store.open_call("inbound", "fxo1", "+15551234567", "5550100",
                        sip_call_id="a84b4c76e66710@box", started=T0)
    rec = store.get(u)
    assert rec["started"] == T0 and rec["answered"] is None and rec["ended"] is None
    assert str(uuidlib.UUID(u, version=4)) == u
    store.answered(u, T0 + 4.5)
    store.answered(u, T0 + 30)  # a re-INVITE later is not a second answer
    store.ended(u, T0 + 64.5, "answered", GOOD)
    rec = store.get(u)
    assert rec["answered"] == T0 + 4.5 and rec["ended"] == T0 + 64.5
    assert rec["duration_s"] == pytest.approx(60.0)
    assert rec["disposition"] == "answered" and rec["direction"] == "inbound"
    assert rec["ani"] == "+15551234567" and rec["sip_call_id"] == "a84b4c76e66710@box"
    assert (rec["codec"], rec["jitter_ms"], rec["loss_pct"], rec["rtt_ms"]) == \
        ("PCMU/8000/1", 2.5, 0.2, 30.0)
    assert 90 < rec["r_factor"] < 93.2 and 4.3 < rec["mos"] <= 4.41


def test_unanswered_call_has_zero_duration_and_no_quality(store):
    u = store.open_call("outbound", "fxs1", "201", "5551212", started=T0)
    store.ended(u, T0 + 20, "no_answer")
    rec = store.get(u)
    assert rec["duration_s"] == 0.0 and rec["disposition"] == "no_answer"
    assert rec["mos"] is None and rec["r_factor"] is None and rec["codec"] is None


def test_started_defaults_to_the_injected_wall_clock(store):
    u = store.open_call("emergency", "fxo1", "201", "911")
    assert store.get(u)["started"] == T0


def test_second_end_is_ignored(store):
    u = store.open_call("inbound", "fxo1", "1", "2", started=T0)
    store.ended(u, T0 + 5, "cancelled")
    store.ended(u, T0 + 9, "failed")
    assert store.get(u)["disposition"] == "cancelled" and store.get(u)["ended"] == T0 + 5
    assert store.depth() == 1


def test_update_allow_list_extra_merge_and_rerating(store):
    u = _call(store, 1)
    store.update(u, extra={"transfer": "sip:300@cloud"}, dnis="5550199")
    store.update(u, extra={"fxo_disconnect": "loop_drop"})
    rec = store.get(u)
    assert rec["extra"] == {"transfer": "sip:300@cloud", "fxo_disconnect": "loop_drop"}
    assert rec["dnis"] == "5550199"
    before = rec["mos"]
    store.update(u, loss_pct=8.0, rtt_ms=300.0)  # late RTCP: the call is rated again
    assert store.get(u)["mos"] < before - 1
    with pytest.raises(ValueError, match="started"):
        store.update(u, started=0.0)
    with pytest.raises(ValueError, match="direction, uuid"):
        store.update(u, uuid="x", direction="local")


def test_bad_arguments_and_unknown_uuid(store):
    with pytest.raises(ValueError, match="direction"):
        store.open_call("sideways", "fxo1", "1", "2")
    u = store.open_call("inbound", "fxo1", "1", "2")
    with pytest.raises(ValueError, match="disposition"):
        store.ended(u, T0, "exploded")
    with pytest.raises(KeyError):
        store.answered("no-such-uuid", T0)
    with pytest.raises(KeyError):
        store.ended("no-such-uuid", T0, "failed")
    assert store.get("no-such-uuid") is None


def test_uuids_are_unique_uuid4(store):
    uuids = [store.open_call("local", "fxs1", "201", "202", started=T0 + i) for i in range(500)]
    assert len(set(uuids)) == 500
    assert all(uuidlib.UUID(u).version == 4 for u in uuids)
    with pytest.raises(sqlite3.IntegrityError):  # the primary key holds it too
        store.write(lambda db: db.execute(
            "INSERT INTO cdr (uuid, direction, port, started) VALUES (?, 'local', 'x', 0)",
            (uuids[0],)))


def test_threads_of_one_writer_share_the_store(store):
    errors = []

    def work(n):
        try:
            for i in range(40):
                _call(store, n * 100 + i, port=f"fxs{n}")
        except Exception as exc:  # noqa: BLE001 - collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and store.count() == 160 and store.depth() == 160


# --- paging, filters, CSV ------------------------------------------------------------

@pytest.fixture
def filled(store):
    for i in range(120):
        _call(store, i, port=("fxo1", "fxs1", "fxs2")[i % 3],
              direction=("inbound", "outbound")[i % 2])
    return store


def test_list_pages_newest_first_without_gaps_or_overlap(filled):
    pages = [filled.list(offset=o, limit=50) for o in (0, 50, 100)]
    assert [len(p) for p in pages] == [50, 50, 20]
    started = [r["started"] for p in pages for r in p]
    assert started == sorted(started, reverse=True) and len(set(started)) == 120
    assert filled.list(offset=120) == []
    assert len(filled.list(limit=10 ** 6)) == 120  # capped at MAX_PAGE, which is more
    assert filled.count() == 120


def test_filters_by_time_port_direction_and_text(filled):
    assert filled.count(since=T0 + 100) == 20
    assert filled.count(since=T0 + 10, until=T0 + 20) == 10
    fxs2 = filled.list(port="fxs2", limit=MAX_PAGE)
    assert len(fxs2) == 40 and {r["port"] for r in fxs2} == {"fxs2"}
    assert filled.count(direction="outbound") == 60
    assert filled.count(port="fxo1", direction="inbound") == 20  # i % 6 == 0
    # Text also matches inside UUIDs (hex): a 4-digit needle is in a random one of 120
    # about 5 % of the time, so search a longer part of the number.
    assert [r["ani"] for r in filled.list(text="50000042")] == ["+15550000042"]
    assert filled.count(text="call-11") == 11  # call-11, call-110 .. call-119
    assert filled.count(text="%") == 0 and filled.count(text="_") == 0  # literal, not LIKE
    page = filled.list(offset=5, limit=5, direction="inbound", since=T0 + 50)
    assert [r["started"] for r in page] == [T0 + 108, T0 + 106, T0 + 104, T0 + 102, T0 + 100]


def test_csv_export_round_trips_and_defuses_formulas(filled):
    filled.open_call("inbound", "fxo1", "=HYPERLINK(\"http://x\")", "-1+2", started=T0 + 500)
    out = io.StringIO()
    assert filled.export_csv(out, port="fxo1") == 41
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 41
    evil = rows[0]
    assert evil["ani"].startswith("'=") and evil["dnis"] == "'-1+2" and evil["ended"] == ""
    normal = rows[1]
    assert normal["ani"].startswith("+1555")  # phone numbers are not mangled
    assert normal["started"].endswith("+00:00") and normal["disposition"] == "answered"
    assert float(normal["mos"]) > 4


def test_csv_export_of_more_than_one_page(store):
    store.write(lambda db: db.executemany(  # a quick bulk load; the API path is covered above
        "INSERT INTO cdr (uuid, direction, port, started) VALUES (?, 'local', 'fxs1', ?)",
        [(str(uuidlib.uuid4()), T0 + i) for i in range(MAX_PAGE + 7)]))
    out = io.StringIO()
    assert store.export_csv(out) == MAX_PAGE + 7
    assert len(out.getvalue().splitlines()) == MAX_PAGE + 8


# --- outbox --------------------------------------------------------------------------

def test_each_finished_call_is_queued_once_as_cdr(store):
    u = _call(store, 7)
    [event] = store.pending(10)
    assert event["kind"] == "cdr" and event["uuid"] == u
    assert event["body"] == store.get(u) and event["created"] == T0


def test_outbox_enqueue_pending_mark_delivered_are_idempotent(store):
    a = store.enqueue("ring", {"port": "fxo1", "ani": "+15551234567"})
    b = store.enqueue("answer", {"port": "fxo1"}, uuid="fixed-uuid-1")
    assert store.enqueue("answer", {"port": "changed"}, uuid="fixed-uuid-1") == b
    assert store.depth() == 2
    pending = store.pending(10)
    assert [p["uuid"] for p in pending] == [a, b]
    assert pending[1]["body"] == {"port": "fxo1"}  # the first queuing stands
    assert [p["uuid"] for p in store.pending(1)] == [a]
    assert store.mark_delivered([a]) == 1
    assert store.mark_delivered([a, "never-queued"]) == 0
    assert store.depth() == 1 and [p["uuid"] for p in store.pending(10)] == [b]
    assert store.mark_delivered([b, b]) == 1 and store.depth() == 0
    assert store.mark_delivered([]) == 0
    assert store.enqueue("answer", {}, uuid=b) == b and store.depth() == 0  # delivered stays


# --- processes -----------------------------------------------------------------------

WRITER = """
    import sys
    from firmware.cdr import CdrStore
    s = CdrStore(sys.argv[1])
    for i in range(100000):
        u = s.open_call("inbound", "fxo1", f"+1555{i:07d}", "5550100", started=1.0e9 + i)
        s.answered(u, 1.0e9 + i + 1)
        s.ended(u, 1.0e9 + i + 2, "answered",
                {"codec": "PCMU", "jitter_ms": 1.0, "loss_pct": 0.0, "rtt_ms": 20.0})
        print(u, flush=True)  # after the commit returned: this record is durable
"""


def test_kill_9_of_a_writer_mid_burst_loses_no_committed_record(tmp_path):
    db = tmp_path / "cdr.db"
    writer = _child(WRITER, db)
    try:
        committed = [writer.stdout.readline().strip() for _ in range(150)]
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    assert writer.returncode == -signal.SIGKILL and all(committed)
    with CdrStore(db) as s:  # opens with quick_check: the file is sound
        assert s.read("PRAGMA integrity_check")[0][0] == "ok"
        for u in committed:
            rec = s.get(u)
            assert rec is not None and rec["disposition"] == "answered" and rec["mos"]
        queued = {e["uuid"] for e in s.pending(MAX_PAGE)}
        assert set(committed) <= queued
        assert s.count() >= len(committed)  # plus perhaps the one open at the kill
        _call(s, 1)  # and the store writes on


READER = """
    import sys, time
    from firmware.cdr import CdrStore
    s = CdrStore(sys.argv[1], readonly=True)
    want, seen, deadline = int(sys.argv[2]), -1, time.monotonic() + 60
    print("ready", flush=True)
    while seen < want and time.monotonic() < deadline:
        with s.snapshot():
            n = s.count()
            page = s.list(limit=5)
        assert len(page) == min(n, 5), (n, page)
        assert all(r["ended"] is None or r["disposition"] for r in page)
        if n != seen:
            print(n, flush=True)
            seen = n
"""


def test_a_reader_process_reads_while_the_core_writes(store):
    n = 150
    reader = _child(READER, store.path, n)
    try:
        assert reader.stdout.readline().strip() == "ready"
        assert reader.stdout.readline().strip() == "0"  # it reads before the first write
        for i in range(n):
            _call(store, i)
        out, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    counts = [int(x) for x in out.split()]
    assert counts == sorted(counts) and counts[-1] == n
    assert len(counts) >= 2  # it saw the table grow, not just the end


def test_a_readonly_store_reads_and_refuses_writes(store):
    u = _call(store, 1)
    with CdrStore(store.path, readonly=True) as ro:
        assert ro.get(u)["ani"] == store.get(u)["ani"]
        with pytest.raises(CdrError, match="cannot be written"):
            ro.open_call("local", "fxs1", "201", "202")


# --- errors a technician sees -------------------------------------------------------

def test_missing_directory_is_named_with_the_fix(tmp_path):
    with pytest.raises(CdrError, match=r"directory .*/nowhere does not exist; create it"):
        CdrStore(tmp_path / "nowhere" / "cdr.db")


def test_path_that_is_a_directory_or_under_a_file(tmp_path):
    with pytest.raises(CdrError, match="is a directory"):
        CdrStore(tmp_path)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(CdrError, match="is not a directory"):
        CdrStore(tmp_path / "plain" / "cdr.db")


def test_readonly_store_needs_an_existing_file(tmp_path):
    with pytest.raises(CdrError, match="does not exist yet"):
        CdrStore(tmp_path / "cdr.db", readonly=True)


READONLY_OPEN = """
    import os, sys
    from firmware.cdr import CdrError, CdrStore
    if sys.argv[2] != "-":  # drop root after the imports: nobody cannot read the venv
        os.setgroups([])
        os.setgid(int(sys.argv[2]))
        os.setuid(int(sys.argv[2]))
    try:
        CdrStore(sys.argv[1]).open_call("local", "fxs1", "201", "202")
    except CdrError as exc:
        print(exc)
    else:
        print("opened")
"""


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "existing-file"])
def test_a_directory_the_core_cannot_write_is_a_clear_error(existing):
    # Root writes anywhere, so under root (as in CI) the child runs as nobody.
    as_root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="cdr-ro-") as d:
        db = Path(d) / "cdr.db"
        if existing:
            CdrStore(db).close()
        os.chmod(d, 0o755 if as_root else 0o555)
        try:
            child = _child(READONLY_OPEN, db, 65534 if as_root else "-")
            out, err = child.communicate(timeout=30)
        finally:
            os.chmod(d, 0o755)
    assert child.returncode == 0, err
    assert out.startswith(f"CDR database {db} cannot be written"), out
    assert "writable" in out and "\n" not in out.strip()


def test_a_file_that_is_not_a_database_is_kept(tmp_path):
    db = tmp_path / "cdr.db"
    junk = b"this is the technician's shopping list, not SQLite\n" * 200
    db.write_bytes(junk)
    with pytest.raises(CdrError, match="not a readable SQLite database.*was kept.*mv ") as err:
        CdrStore(db)
    assert str(db) in str(err.value)
    assert db.read_bytes() == junk


def test_a_damaged_database_is_reported_and_kept(tmp_path):
    db = tmp_path / "cdr.db"
    with CdrStore(db) as s:
        for i in range(300):
            _call(s, i)
    assert not (tmp_path / "cdr.db-wal").exists()  # the last close checkpointed it
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[3 * page:5 * page] = os.urandom(2 * page)  # two pages of the table are noise
    db.write_bytes(bytes(data))
    with pytest.raises(CdrError, match=r"(damaged|not a readable).*was kept") as err:
        CdrStore(db)
    assert str(db) in str(err.value)
    assert db.read_bytes() == bytes(data)


def test_a_database_from_newer_firmware_is_refused(tmp_path):
    db = tmp_path / "cdr.db"
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(CdrError, match="newer than this firmware"):
        CdrStore(db)


def test_outbox_bodies_are_json(store):
    u = _call(store, 3)
    raw = store.read("SELECT body FROM outbox WHERE uuid = ?", (u,))[0][0]
    assert json.loads(raw)["uuid"] == u
