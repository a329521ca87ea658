"""Queued files in the outbox (log bundles, captures): queue_file moves a finished file
into data_dir/files/ and indexes it; pending(files=...) splits the rows the agent carries
over MQTT from the files `branchline forward` uploads; the size cap drops files (an
"evicted" row says so), never their index rows; bad input moves nothing."""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from firmware.cdr import MAX_PAGE, CdrStore
from foundation.clock import FakeClock
from tests.forward.helpers import call, recording


def _bundle(directory: Path, name: str, size: int) -> tuple[Path, str]:
    path = directory / name
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_queue_file_moves_and_indexes_a_finished_file(store: CdrStore, tmp_path: Path) -> None:
    src, digest = _bundle(tmp_path, "logs-1.tar.gz", 12_345)
    u = store.queue_file(src, "logs", {"job": "j-1", "lines": 300})
    assert not src.exists()
    [row] = store.pending(10)
    assert (row["uuid"], row["kind"], row["file_bytes"]) == (u, "file", 12_345)
    assert row["body"] == {"label": "logs", "name": "logs-1.tar.gz", "size": 12_345,
                           "sha256": digest, "meta": {"job": "j-1", "lines": 300}}
    held = Path(row["path"])
    assert held.parent == store.files_dir and held.name.endswith("logs-1.tar.gz")
    assert hashlib.sha256(held.read_bytes()).hexdigest() == digest
    assert store.files_dir.stat().st_mode & 0o007 == 0  # the gateway's group, nobody else
    assert store.recordings() == [] and store.check_totals()
    assert store.depth(detail=True)["by_kind"] == {"file": 1}


def test_pending_splits_file_rows_from_the_others_in_seq_order(store: CdrStore, tmp_path: Path) -> None:
    c1 = call(store, 1)
    rec = recording(store, "r.wav", 1000)
    s1 = store.state_change("CLOUD_PRIMARY", "SURVIVABLE", "wan down")
    f1 = store.queue_file(_bundle(tmp_path, "cap.pcap", 500)[0], "capture", {})
    c2 = call(store, 2)
    assert [r["uuid"] for r in store.pending(10)] == [c1, rec, s1, f1, c2]
    assert [r["uuid"] for r in store.pending(10, files=None)] == [c1, rec, s1, f1, c2]
    assert [r["uuid"] for r in store.pending(10, files=True)] == [rec, f1]
    assert [r["uuid"] for r in store.pending(10, files=False)] == [c1, s1, c2]
    assert [r["uuid"] for r in store.pending(2, files=False)] == [c1, s1]
    store.mark_delivered([c1, rec])
    assert [r["uuid"] for r in store.pending(10, files=True)] == [f1]


def test_a_file_from_another_file_system_is_copied_whole(store: CdrStore, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    other = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() else tmp_path))
    try:
        src, digest = _bundle(other, "bundle.tgz", 70_000)
        u = store.queue_file(src, "logs", {"from": "tmpfs"})
        assert not src.exists()
        [row] = store.pending(10, files=True)
        assert row["uuid"] == u and row["body"]["sha256"] == digest
        assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == digest
        assert not list(store.files_dir.glob("*.part"))
    finally:
        shutil.rmtree(other)


def test_bad_input_moves_nothing_and_queues_nothing(store: CdrStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="write it completely"):
        store.queue_file(tmp_path / "never-written.tgz", "logs", {})
    src, _ = _bundle(tmp_path, "logs.tgz", 100)
    with pytest.raises(TypeError):
        store.queue_file(src, "logs", {"when": object()})
    with pytest.raises(ValueError, match="label"):
        store.queue_file(src, "", {})
    assert src.exists() and store.depth() == 0


def test_the_cap_drops_queued_files_oldest_first_never_their_rows(store: CdrStore, tmp_path: Path) -> None:
    store.set_cap(max_bytes=50_000)
    first = store.queue_file(_bundle(tmp_path, "a.pcap", 20_000)[0], "capture", {"n": 1})
    cdr = call(store, 1)
    second = store.queue_file(_bundle(tmp_path, "b.pcap", 20_000)[0], "capture", {"n": 2})
    third = store.queue_file(_bundle(tmp_path, "c.pcap", 20_000)[0], "capture", {"n": 3})
    on_disk = sorted(p.name.split("-", 5)[-1] for p in store.files_dir.iterdir())
    assert on_disk == ["b.pcap", "c.pcap"]
    pending = store.pending(MAX_PAGE)
    kinds = [(p["kind"], p["uuid"]) for p in pending]
    assert ("file", first) not in kinds and ("cdr", cdr) in kinds
    assert ("file", second) in kinds and ("file", third) in kinds
    [evicted] = [p for p in pending if p["kind"] == "evicted"]
    assert evicted["body"]["file"] == first and evicted["body"]["name"] == "a.pcap"
    assert "cap" in evicted["body"]["reason"]
    assert evicted["uuid"] in [r["uuid"] for r in store.pending(10, files=False)]
    d = store.depth(detail=True)
    assert d["bytes"] <= 50_000 and store.check_totals()


def test_evict_and_prune_delete_queued_files(store: CdrStore, tmp_path: Path,
                                             clock: FakeClock) -> None:
    gone = store.queue_file(_bundle(tmp_path, "x.tgz", 1000)[0], "logs", {})
    done = store.queue_file(_bundle(tmp_path, "y.tgz", 1000)[0], "logs", {})
    assert store.evict_recording(gone, "file missing at upload") is True
    assert store.evict_recording(gone, "again") is False
    store.mark_delivered([done])
    assert len(list(store.files_dir.iterdir())) == 1
    clock.set(clock.now() + 10 * 86400)
    assert store.prune(keep_days=7) == 2
    assert not list(store.files_dir.iterdir()) and store.check_totals()
