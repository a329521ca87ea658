"""The store-and-forward outbox: what the cloud must learn, queued in the core's
transactions and delivered in `seq` order, with the files to upload (call recordings,
and log bundles or captures queued by the agent). Small records travel over the agent's
MQTT session or `branchline forward`'s HTTPS, files over HTTPS (`pending(files=...)`
splits them). A size cap drops files, never records; delivered rows are pruned after
some days."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import uuid as uuidlib
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

from firmware.cdr.db import Database, page

log = logging.getLogger(__name__)

PRUNE_BATCH = 500  # rows per pruning transaction: the core never waits long for the lock
# A fixed namespace so the "evicted" row of a recording always has the same UUID.
EVICTED_NS = uuidlib.UUID("5b0c1c1e-7d1f-4b4e-9a56-0f0ba1d0e5e7")
PENDING = "delivered IS NULL AND evicted IS NULL"
RECORDINGS_DIR = "recordings"
FILES_DIR = "files"  # queued files (log bundles, captures), beside recordings/
PART = ".part"


class Kind(StrEnum):  # what the firmware queues; producers may queue other kinds
    CDR = "cdr"                 # a finished call
    STATE = "state_change"      # a survivability transition
    CALLBACK = "callback"       # a callback a caller asked for while offline
    RECORDING = "recording"     # the index row of a file in data_dir/recordings/
    FILE = "file"               # the index row of a queued file in data_dir/files/
    EVICTED = "evicted"         # a file dropped to stay under the cap


FILE_KINDS = (Kind.RECORDING, Kind.FILE)  # rows that carry a file: uploaded over HTTPS
IS_FILE = f"kind IN ('{Kind.RECORDING}', '{Kind.FILE}')"
WHERE_FILES = {None: "", True: f" AND {IS_FILE}", False: f" AND NOT {IS_FILE}"}


class Recordings:
    """The files of data_dir/recordings/ (and data_dir/files/) and their index rows. A file
    is written complete before it is indexed and deleted in the transaction that drops its
    row, so a crash leaves no orphan file (at worst a row whose file is gone: evicted at
    upload)."""

    def __init__(self, db: Database, directory: Path, queued: Path | None = None) -> None:
        self.db, self.dir = db, directory
        self.queued = queued if queued is not None else directory.parent / FILES_DIR

    def where(self, kind: str, name: str) -> Path:
        """The full path of a row's file: queued files live apart from recordings."""
        return (self.queued if kind == Kind.FILE else self.dir) / name

    def checked(self, path: str | os.PathLike[str]) -> Path:
        """A complete recording file of the directory, or an error saying why not."""
        full = (self.dir / path).resolve()
        if full.parent != self.dir.resolve():
            raise ValueError(f"recording {path} is not a file of {self.dir}; "
                             f"write recordings there before indexing them")
        if not full.is_file():
            raise FileNotFoundError(f"recording {full} does not exist; write the file "
                                    f"completely before indexing it")
        return full

    def drop(self, db: sqlite3.Connection, row: sqlite3.Row) -> None:
        """Delete a row's file (the row has uuid, kind, path), inside the transaction
        that zeroes its size."""
        if row["path"]:
            with contextlib.suppress(FileNotFoundError):
                self.where(row["kind"], row["path"]).unlink()
        db.execute("UPDATE outbox SET file_bytes = 0 WHERE uuid = ?", (row["uuid"],))

    def take(self, src: Path, name: str) -> Path:
        """Move a finished file into data_dir/files/ under `name`: a rename on the same
        file system, else a copy written in full (fsync) before it gets its name."""
        self.queued.mkdir(mode=0o770, exist_ok=True)  # the agent and the core both write here
        dest = self.queued / name
        try:
            os.replace(src, dest)
        except OSError as exc:  # another file system: copy, seal, then remove the original
            if exc.errno != errno.EXDEV:
                raise
            part = dest.with_name(dest.name + PART)
            with open(src, "rb") as fin, open(part, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(part, dest)
            src.unlink()
        return dest

    def index(self, limit: int = 100) -> list[dict[str, Any]]:
        """The recordings index, oldest first: uuid, file, bytes (0 once the file is
        gone), created, delivered, evicted."""
        rows = self.db.read("SELECT uuid, path AS file, file_bytes AS bytes, created, delivered,"
                            " evicted FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?",
                            (Kind.RECORDING, page(limit)))
        return [dict(r) for r in rows]


class Outbox:
    """The outbox table and its cap (max_bytes), counted over pending rows plus the
    recording files still on disk, from totals that triggers keep in outbox_total in the
    same transaction as every change, so a check costs O(1)."""

    def __init__(self, db: Database, files: Recordings, wall: Callable[[], float],
                 max_bytes: int | None = None, max_rows: int | None = None) -> None:
        self.db, self.files, self.wall = db, files, wall
        self.max_bytes, self.max_rows, self.over_cap = max_bytes, max_rows, False

    def set_cap(self, max_bytes: int | None, max_rows: int | None = None) -> None:
        """Change the cap (None = none) and apply it at once. max_bytes evicts recording
        files; max_rows is a soft limit that only depth() reports, because records are
        never dropped and evicting a recording queues a row of its own."""
        self.max_bytes, self.max_rows = max_bytes, max_rows
        if not self.db.readonly:
            self.enforce_cap()

    def enqueue(self, kind: str, body: dict[str, Any], uuid: str | None = None) -> str:
        """Queue an event for the cloud; returns its UUID. Queuing a UUID again is a
        no-op, so a producer that retries cannot send an event twice."""
        uuid = uuid or str(uuidlib.uuid4())
        self.db.write(lambda db: self.add(db, kind, body, uuid))
        return uuid

    def add(self, db: sqlite3.Connection, kind: str, body: dict[str, Any], uuid: str,
            path: str | None = None, file_bytes: int = 0) -> None:
        """enqueue() inside the caller's transaction (a CDR is queued as it ends)."""
        text = json.dumps(body, sort_keys=True)
        db.execute("INSERT OR IGNORE INTO outbox (uuid, kind, body, created, body_bytes,"
                   " path, file_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (uuid, kind, text, self.wall(), len(text.encode()), path, file_bytes))
        self._enforce_cap(db)

    def state_change(self, old: str, new: str, reason: str, t: float | None = None,
                     **extra: Any) -> str:
        """Queue a survivability transition (old -> new, why) for the cloud."""
        t = self.wall() if t is None else float(t)
        return self.enqueue(Kind.STATE, {"old": old, "new": new, "reason": reason, "t": t, **extra})

    def callback_request(self, ani: str, number: str, port: str,
                         call_uuid: str | None = None, t: float | None = None,
                         **extra: Any) -> str:
        """Queue a callback a caller asked for (the number they keyed and confirmed)."""
        t = self.wall() if t is None else float(t)
        return self.enqueue(Kind.CALLBACK, {"ani": ani, "number": number, "port": port,
                                            "call_uuid": call_uuid, "t": t, **extra})

    def add_recording(self, path: str | os.PathLike[str], call_uuid: str | None = None,
                      uuid: str | None = None, **extra: Any) -> str:
        """Index a finished audio file of data_dir/recordings/ for upload; returns the
        index row's UUID. The file must be complete: its size is taken now."""
        full = self.files.checked(path)
        name, size = full.name, full.stat().st_size
        uuid = uuid or str(uuidlib.uuid4())
        body = {"file": name, "bytes": size, "call_uuid": call_uuid, **extra}
        self.db.write(lambda db: self.add(db, Kind.RECORDING, body, uuid,
                                          path=name, file_bytes=size))
        return uuid

    def queue_file(self, src: str | os.PathLike[str], label: str,
                   meta: dict[str, Any] | None = None) -> str:
        """Move a finished file (a log bundle, a capture) into the outbox for upload and
        index it; returns the row's UUID. Like a recording, the file may be dropped under
        the size cap (an "evicted" row says so), its index row never."""
        src = Path(src)
        if not label or not isinstance(label, str):
            raise ValueError(f"queue_file label {label!r}: give a short name, e.g. 'logs'")
        meta = dict(meta or {})
        json.dumps(meta)  # TypeError now, before the file moves
        if not src.is_file():
            raise FileNotFoundError(f"file {src} does not exist; write it completely "
                                    f"before queuing it for upload")
        uuid = str(uuidlib.uuid4())
        dest = self.files.take(src, f"{uuid}-{src.name}")
        size, digest = dest.stat().st_size, _sha256(dest)
        body = {"label": label, "name": src.name, "size": size, "sha256": digest, "meta": meta}
        try:
            self.db.write(lambda db: self.add(db, Kind.FILE, body, uuid,
                                              path=dest.name, file_bytes=size))
        except BaseException:
            with contextlib.suppress(OSError):  # not queued: the caller keeps its file
                shutil.move(dest, src)
            raise
        return uuid

    def pending(self, limit: int = 100, files: bool | None = None) -> list[dict[str, Any]]:
        """The oldest undelivered events, in the order they were queued; files=True only
        the rows with a file (recordings, queued files), False only the others. A file
        row also carries `path` (the absolute file name) and `file_bytes`."""
        rows = self.db.read("SELECT seq, uuid, kind, body, created, path, file_bytes, attempts"
                            f" FROM outbox WHERE {PENDING}{WHERE_FILES[files]}"
                            " ORDER BY seq LIMIT ?", (page(limit),))
        return [{**dict(r), "body": json.loads(r["body"]),
                 "path": r["path"] and str(self.files.where(r["kind"], r["path"]))}
                for r in rows]

    def mark_delivered(self, uuids: Iterable[str]) -> int:
        """Mark events delivered; already delivered or unknown UUIDs are ignored.
        Returns how many were newly marked."""
        now = self.wall()
        marks = [(now, u) for u in uuids]
        return self.db.write(lambda db: db.executemany(
            "UPDATE outbox SET delivered = ? WHERE uuid = ? AND delivered IS NULL",
            marks).rowcount) if marks else 0

    def note_failure(self, uuid: str, error: str) -> None:
        """Count a failed delivery of a pending row and keep why, for depth()."""
        self.db.write(lambda db: db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?"
            " WHERE uuid = ? AND delivered IS NULL", (error[:500], uuid)))

    def depth(self, detail: bool = False) -> Any:
        """How many events wait for delivery; with detail=True a report:
        {pending, bytes, oldest_age_s, by_kind, over_cap, max_bytes, max_rows, head},
        where bytes is what the outbox holds on the box (pending rows plus recording
        files still on disk) and head the next row to deliver with its failures."""
        if not detail:
            return self.db.read("SELECT rows FROM outbox_total")[0][0]
        with self.db.snapshot():
            rows, held = self.db.read("SELECT rows, bytes FROM outbox_total")[0]
            by_kind = {r[0]: r[1] for r in self.db.read(
                f"SELECT kind, COUNT(*) FROM outbox WHERE {PENDING} GROUP BY kind ORDER BY kind")}
            head = self.db.read("SELECT uuid, kind, created, attempts, last_error FROM outbox"
                                f" WHERE {PENDING} ORDER BY seq LIMIT 1")
        return {"pending": rows, "bytes": held, "by_kind": by_kind,
                "oldest_age_s": max(0.0, self.wall() - head[0]["created"]) if head else None,
                "over_cap": self.is_over(rows, held), "max_bytes": self.max_bytes,
                "max_rows": self.max_rows, "head": dict(head[0]) if head else None}

    def is_over(self, rows: int, held: int) -> bool:
        return bool((self.max_bytes is not None and held > self.max_bytes)
                    or (self.max_rows is not None and rows > self.max_rows))

    def enforce_cap(self) -> int:
        """Apply the cap now (after it shrank); returns how many files were dropped."""
        return self.db.write(self._enforce_cap)

    def _enforce_cap(self, db: sqlite3.Connection) -> int:
        if self.max_bytes is None and self.max_rows is None:
            return 0
        dropped = 0
        while True:
            rows, held = db.execute("SELECT rows, bytes FROM outbox_total").fetchone()
            if self.max_bytes is None or held <= self.max_bytes or not self._evict_one(db):
                break
            dropped += 1
        self._report_cap(rows, held)
        return dropped

    def _evict_one(self, db: sqlite3.Connection) -> bool:
        """Drop the oldest file, delivered ones first (the cloud has them). Records are
        never dropped: if they alone are over the cap, depth() says "over_cap"."""
        row = db.execute("SELECT seq, uuid, kind, path, delivered, evicted FROM outbox"
                         f" WHERE {IS_FILE} AND file_bytes > 0"
                         " ORDER BY delivered IS NULL, seq LIMIT 1").fetchone()
        if row is None:
            return False
        if row["delivered"] is not None or row["evicted"] is not None:
            self.files.drop(db, row)
        else:
            self._evict(db, row["uuid"], f"outbox over its cap of {self.max_bytes} bytes")
        return True

    def evict_recording(self, uuid: str, reason: str) -> bool:
        """Give up a pending recording or queued file (its file is deleted, an "evicted"
        row queued); False when it is no pending file row (delivered or evicted already)."""
        return self.db.write(lambda db: self._evict(db, uuid, reason))

    def _evict(self, db: sqlite3.Connection, uuid: str, reason: str) -> bool:
        """Delete a pending file, mark its row evicted and queue an "evicted" row, so the
        cloud learns what it will never get ("recording" or "file": the row's UUID)."""
        row = db.execute(f"SELECT * FROM outbox WHERE uuid = ? AND {IS_FILE} AND {PENDING}",
                         (uuid,)).fetchone()
        if row is None:
            return False
        self.files.drop(db, row)
        now = self.wall()
        db.execute("UPDATE outbox SET evicted = ?, last_error = ? WHERE uuid = ?",
                   (now, reason[:500], uuid))
        body = {**json.loads(row["body"]), row["kind"]: uuid, "created": row["created"],
                "evicted": now, "reason": reason}
        text = json.dumps(body, sort_keys=True)
        db.execute("INSERT OR IGNORE INTO outbox (uuid, kind, body, created, body_bytes)"
                   " VALUES (?, ?, ?, ?, ?)", (str(uuidlib.uuid5(EVICTED_NS, uuid)),
                                               Kind.EVICTED, text, now, len(text.encode())))
        log.warning("outbox: %s %s (%s) evicted: %s", row["kind"], uuid, row["path"], reason)
        return True

    def _report_cap(self, rows: int, held: int) -> None:
        over = self.is_over(rows, held)
        if over and not self.over_cap:
            log.warning("outbox over cap: %d rows, %d bytes (max %s rows, %s bytes) and no "
                        "recording left to drop; records are kept: restore the WAN or raise "
                        "survive.outbox_max_mb", rows, held, self.max_rows, self.max_bytes)
        elif self.over_cap and not over:
            log.info("outbox back under its cap: %d rows, %d bytes", rows, held)
        self.over_cap = over

    def prune(self, keep_days: float, now: float | None = None) -> int:
        """Delete delivered rows (and evicted index rows) older than keep_days, with
        their recording files; pending rows are never touched. Returns rows deleted."""
        cutoff = (self.wall() if now is None else now) - keep_days * 86400.0
        total = 0
        while True:
            n = self.db.write(lambda db: self._prune_batch(db, cutoff))
            total += n
            if n < PRUNE_BATCH:
                return total

    def _prune_batch(self, db: sqlite3.Connection, cutoff: float) -> int:
        rows = db.execute("SELECT seq, uuid, kind, path, file_bytes FROM outbox"
                          " WHERE delivered < ? OR evicted < ? ORDER BY seq LIMIT ?",
                          (cutoff, cutoff, PRUNE_BATCH)).fetchall()
        for r in rows:
            if r["file_bytes"]:
                self.files.drop(db, r)
        db.executemany("DELETE FROM outbox WHERE seq = ?", [(r["seq"],) for r in rows])
        return len(rows)

    def check_totals(self) -> bool:
        """True when the running totals agree with a full count (a test and repair aid)."""
        with self.db.snapshot():
            kept = tuple(self.db.read("SELECT rows, bytes FROM outbox_total")[0])
            counted = tuple(self.db.read(
                f"SELECT COALESCE(SUM({PENDING}), 0), COALESCE(SUM(CASE WHEN {PENDING}"
                " THEN body_bytes ELSE 0 END + file_bytes), 0) FROM outbox")[0])
        return kept == counted


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
