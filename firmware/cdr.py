"""Call detail records and the event outbox, in one SQLite database in WAL mode.

The core is the only writer: call control opens a record when a call starts, stamps
the answer and the end (with the RTCP figures, from which firmware.quality derives the
E-model R and MOS), and in the same transaction as the end queues the finished record
in the outbox, the store-and-forward queue that the cloud agent drains (issue 5).
Readers in other processes (web page, console, agent) open the same file: WAL lets
them read while the core writes, without blocking it.

The outbox (issue 5, store and forward) holds four kinds of rows besides any event a
producer queues: "cdr" (a finished call), "state_change" (a survivability transition),
"callback" (a caller's callback request taken while offline), "recording" (the index
row of an audio file in data_dir/recordings/: its name and size) and "evicted" (a
recording dropped to stay under the cap). `branchline forward` (firmware.forward), a
process of its own, delivers them in `seq` order and marks them delivered.

Cap policy (max_bytes, counted over pending rows plus the recording files still on
disk): when over, recording files go first, oldest first - already delivered ones (the
cloud has them), then undelivered ones (file deleted, row marked evicted, an
"evicted" row queued so the cloud learns what it will never get). Records (everything
that is not a recording file) are never dropped: if they alone are over the cap they
stay, and depth() says "over_cap". The totals live in outbox_total, kept by triggers
in the same transaction as every change, so checking the cap costs O(1).
Delivered rows (and evicted index rows) older than keep_days are pruned with their files.

Durability: `synchronous=FULL`. In WAL mode NORMAL skips the fsync at each commit, so
a power cut (a branch box is unplugged, not shut down) can roll back the last
commits; they are CDRs, the basis of billing and of the cloud's call logs, and a call
costs three commits, so the fsync is cheap where it is spent. A killed process loses
nothing committed in either mode; FULL extends that to the power cord. The forward
process opens its connection with synchronous=NORMAL: all it writes is "delivered"
marks and failure counts, and a mark a power cut rolls back only means a redelivery
the cloud dedups by UUID, while an fsync per mark (milliseconds on an SD card)
would slow the catch-up after an outage for nothing.

Assumptions:
  - One writer process for CDRs (the core). Inside it, one connection serves every
    thread under a lock. The forward process is a second, small writer of the outbox
    (marks delivered, notes failures, prunes, evicts); BEGIN IMMEDIATE and the busy
    timeout serialise the two, and its transactions are short.
  - Recording files are written complete (e.g. temp name + rename) into
    data_dir/recordings/ before add_recording() indexes them; files are deleted
    inside the transaction that drops their row, so a crash leaves no orphan file
    (at worst a row whose file is gone, which the forwarder reports as evicted).
  - Times are epoch seconds given by the caller (the reactor clock's wall()), so
    records of a fake-clock scenario carry fake times; `wall` is only the default.
  - The schema version lives in PRAGMA user_version; MIGRATIONS[i] takes a database
    from version i to i + 1, each in one transaction.
  - A damaged file is never deleted or rewritten: the error says so and how to
    move it aside; the core then starts with a fresh database.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import sqlite3
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from firmware import quality as quality_model
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

DIRECTIONS = ("inbound", "outbound", "local", "emergency")
DISPOSITIONS = ("answered", "busy", "failed", "no_answer", "cancelled", "rejected",
                "congestion", "unreachable")
# What the call carried: speech, or (issue 10) a fax or a modem switched to G.711
# passthrough on a detected tone (firmware/media.py).
MEDIA_MODES = ("voice", "fax", "modem")
COLUMNS = ("uuid", "direction", "port", "ani", "dnis", "sip_call_id", "started",
           "answered", "ended", "disposition", "duration_s", "codec", "jitter_ms",
           "loss_pct", "rtt_ms", "mos", "r_factor", "media_mode", "extra")
QUALITY_FIELDS = ("codec", "jitter_ms", "loss_pct", "rtt_ms")
UPDATABLE = ("port", "ani", "dnis", "sip_call_id", "disposition", *QUALITY_FIELDS,
             "mos", "r_factor", "media_mode", "extra")
TIME_COLUMNS = ("started", "answered", "ended")
MAX_PAGE = 1000
BUSY_TIMEOUT_MS = 5000

# Outbox kinds the firmware queues (producers may queue others; they are records too).
KIND_CDR, KIND_STATE, KIND_CALLBACK = "cdr", "state_change", "callback"
KIND_RECORDING, KIND_EVICTED = "recording", "evicted"
RECORDINGS_DIR = "recordings"
PRUNE_BATCH = 500  # rows per pruning transaction: the core never waits long for the lock
# A fixed namespace so the "evicted" row of a recording always has the same UUID.
EVICTED_NS = uuidlib.UUID("5b0c1c1e-7d1f-4b4e-9a56-0f0ba1d0e5e7")

MIGRATIONS: list[str] = [
    # 0 -> 1: the CDR table and the outbox
    """
    CREATE TABLE cdr (
        uuid TEXT PRIMARY KEY,
        direction TEXT NOT NULL,
        port TEXT NOT NULL,
        ani TEXT NOT NULL DEFAULT '',
        dnis TEXT NOT NULL DEFAULT '',
        sip_call_id TEXT,
        started REAL NOT NULL,
        answered REAL,
        ended REAL,
        disposition TEXT,
        duration_s REAL,
        codec TEXT,
        jitter_ms REAL,
        loss_pct REAL,
        rtt_ms REAL,
        mos REAL,
        r_factor REAL,
        extra TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX cdr_started ON cdr (started);
    CREATE INDEX cdr_port_started ON cdr (port, started);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT UNIQUE NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        created REAL NOT NULL,
        delivered REAL
    );
    CREATE INDEX outbox_pending ON outbox (delivered, seq);
    """,
    # 1 -> 2: store and forward: sizes, recording files, eviction, delivery attempts,
    # and the running totals the cap is checked against
    """
    ALTER TABLE outbox ADD COLUMN body_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN file_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN path TEXT;
    ALTER TABLE outbox ADD COLUMN evicted REAL;
    ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN last_error TEXT;
    UPDATE outbox SET body_bytes = length(CAST(body AS BLOB));
    CREATE INDEX outbox_kind_seq ON outbox (kind, seq);
    CREATE TABLE outbox_total (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    INSERT INTO outbox_total (id, rows, bytes)
        SELECT 0, COALESCE(SUM(delivered IS NULL AND evicted IS NULL), 0),
               COALESCE(SUM(CASE WHEN delivered IS NULL AND evicted IS NULL
                            THEN body_bytes ELSE 0 END + file_bytes), 0) FROM outbox;
    CREATE TRIGGER outbox_total_insert AFTER INSERT ON outbox BEGIN
        UPDATE outbox_total SET
            rows = rows + (NEW.delivered IS NULL AND NEW.evicted IS NULL),
            bytes = bytes + CASE WHEN NEW.delivered IS NULL AND NEW.evicted IS NULL
                                 THEN NEW.body_bytes ELSE 0 END + NEW.file_bytes;
    END;
    CREATE TRIGGER outbox_total_delete AFTER DELETE ON outbox BEGIN
        UPDATE outbox_total SET
            rows = rows - (OLD.delivered IS NULL AND OLD.evicted IS NULL),
            bytes = bytes - CASE WHEN OLD.delivered IS NULL AND OLD.evicted IS NULL
                                 THEN OLD.body_bytes ELSE 0 END - OLD.file_bytes;
    END;
    CREATE TRIGGER outbox_total_update AFTER UPDATE ON outbox BEGIN
        UPDATE outbox_total SET
            rows = rows - (OLD.delivered IS NULL AND OLD.evicted IS NULL)
                        + (NEW.delivered IS NULL AND NEW.evicted IS NULL),
            bytes = bytes - CASE WHEN OLD.delivered IS NULL AND OLD.evicted IS NULL
                                 THEN OLD.body_bytes ELSE 0 END - OLD.file_bytes
                          + CASE WHEN NEW.delivered IS NULL AND NEW.evicted IS NULL
                                 THEN NEW.body_bytes ELSE 0 END + NEW.file_bytes;
    END;
    """,
    # 2 -> 3: fax and modem passthrough (issue 10): what the call carried; older
    # records were all speech
    """
    ALTER TABLE cdr ADD COLUMN media_mode TEXT NOT NULL DEFAULT 'voice';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """The SQL statements of a script, split at the ';' that end them (a trigger's
    body holds ';' of its own, so a piece is only a statement once SQLite says so)."""
    out, buf = [], ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf.strip())
            buf = ""
    return out


class CdrError(BranchlineError):
    """The CDR database cannot be opened or used; the message names the file and the fix."""


def _where(since: float | None = None, until: float | None = None, port: str | None = None,
           direction: str | None = None, text: str | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause of the list filters: since <= started < until, exact port and
    direction, and `text` as a substring of ANI, DNIS, SIP call-id or UUID."""
    terms, args = [], []
    for sql, value in (("started >= ?", since), ("started < ?", until),
                       ("port = ?", port), ("direction = ?", direction)):
        if value is not None:
            terms.append(sql)
            args.append(value)
    if text:
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        terms.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in
                                       ("ani", "dnis", "sip_call_id", "uuid")) + ")")
        args += [like] * 4
    return (" WHERE " + " AND ".join(terms)) if terms else "", args


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    rec = dict(row)
    rec["extra"] = json.loads(rec["extra"] or "{}")
    return rec


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _csv_cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula (names come from SIP peers),
    but keep phone numbers like +15551234567 as they are."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] in "=@\t\r" or (value[0] in "+-" and not value[1:].isdigit()):
        return "'" + value
    return value


class CdrStore:
    """The CDR table and the outbox of one database file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False,
                 wall: Callable[[], float] = time.time, check: bool = True,
                 max_bytes: int | None = None, max_rows: int | None = None,
                 recordings_dir: str | os.PathLike[str] | None = None,
                 synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous {synchronous!r}: choose FULL or NORMAL")
        self.path = Path(path)
        self._synchronous = synchronous
        self.readonly = readonly
        self._wall = wall
        self._lock = threading.RLock()
        self.recordings_dir = Path(recordings_dir) if recordings_dir is not None \
            else self.path.parent / RECORDINGS_DIR
        self.max_bytes, self.max_rows = max_bytes, max_rows
        self._over_cap = False
        self._db = self._open(check)

    # --- opening ----------------------------------------------------------------

    def _open(self, check: bool) -> sqlite3.Connection:
        self._precheck()
        try:
            db = self._connect()
        except sqlite3.Error as exc:
            raise self._explain(exc) from None
        try:
            self._prepare(db, check)
        except sqlite3.Error as exc:
            db.close()
            raise self._explain(exc) from None
        except CdrError:
            db.close()
            raise
        return db

    def _precheck(self) -> None:
        """Diagnose the paths SQLite would only call 'unable to open database file'."""
        parent = self.path.parent
        if not parent.exists():
            raise CdrError(f"CDR database {self.path}: directory {parent} does not exist; "
                           f"create it (mkdir -p {parent}) or choose another data directory")
        if not parent.is_dir():
            raise CdrError(f"CDR database {self.path}: {parent} is not a directory; "
                           f"choose a path inside a directory")
        if self.path.is_dir():
            raise CdrError(f"CDR database {self.path} is a directory; "
                           f"give the path of a file, e.g. {self.path / 'cdr.db'}")
        if self.readonly and not self.path.exists():
            raise CdrError(f"CDR database {self.path} does not exist yet; "
                           f"start the core once so it creates it")

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                 check_same_thread=False, isolation_level=None)
        else:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return db

    def _prepare(self, db: sqlite3.Connection, check: bool) -> None:
        # The first read of the header is where "file is not a database" shows up.
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if check:
            self._quick_check(db)
        if version > SCHEMA_VERSION:
            raise CdrError(f"CDR database {self.path} has schema version {version}, newer "
                           f"than this firmware's {SCHEMA_VERSION}; update the firmware or "
                           f"move the file aside")
        if self.readonly:
            if version < SCHEMA_VERSION:
                raise CdrError(f"CDR database {self.path} has schema version {version}; "
                               f"start the core once so it migrates it")
            return
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise CdrError(f"CDR database {self.path}: the file system refused WAL mode; "
                           f"put the data directory on a local file system (ext4)")
        db.execute(f"PRAGMA synchronous = {self._synchronous}")
        self._migrate(db, version)

    def _quick_check(self, db: sqlite3.Connection) -> None:
        rows = [r[0] for r in db.execute("PRAGMA quick_check(3)").fetchall()]
        if rows != ["ok"]:
            lines = [ln for r in rows for ln in r.splitlines() if not ln.startswith("***")]
            raise CdrError(f"CDR database {self.path} is damaged ({'; '.join(lines[:2])}); the file "
                           f"was kept: move it aside (mv {self.path} {self.path}.bad) and "
                           f"restart to begin a new one")

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                # executescript() would commit on its own; run the statements one by one.
                for statement in _statements(MIGRATIONS[target - 1]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            log.info("CDR database %s: schema %d -> %d", self.path, target - 1, target)

    def _explain(self, exc: sqlite3.Error) -> CdrError:
        """A one-line error for what SQLite reported while opening the file."""
        msg = str(exc)
        where = f"CDR database {self.path}"
        if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
            return CdrError(f"{where} is not a readable SQLite database ({msg}); the file "
                            f"was kept: move it aside (mv {self.path} {self.path}.bad) and "
                            f"restart to begin a new one")
        if "readonly" in msg or "read-only" in msg or "unable to open" in msg:
            return CdrError(f"{where} cannot be written ({msg}); make the file and its "
                            f"directory {self.path.parent} writable by the core, or mount "
                            f"the data partition read-write")
        return CdrError(f"{where}: {msg}; check the file and the free space of "
                        f"{self.path.parent}")

    # --- plumbing ----------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CdrStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run fn inside one IMMEDIATE transaction (all or nothing)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._explain(exc) from None
            try:
                result = fn(self._db)
                self._db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:  # read-only, disk full, I/O error
                self._rollback()
                raise self._explain(exc) from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[CdrStore]:
        """Reads inside see one state of the database (a page and its count agree),
        however the writer moves on meanwhile. Keep it short: it holds back checkpoints."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self
            finally:
                self._rollback()

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def journal_mode(self) -> str:
        return self._read("PRAGMA journal_mode")[0][0]

    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]

    # --- CDRs -------------------------------------------------------------------

    def open_call(self, direction: str, port: str, ani: str | None, dnis: str | None,
                  sip_call_id: str | None = None, started: float | None = None) -> str:
        """A new record for a call that starts now (or at `started`); returns its UUID."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        uuid = str(uuidlib.uuid4())
        t = self._wall() if started is None else float(started)
        self._write(lambda db: db.execute(
            "INSERT INTO cdr (uuid, direction, port, ani, dnis, sip_call_id, started)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (uuid, direction, port, ani or "", dnis or "", sip_call_id, t)))
        return uuid

    def answered(self, uuid: str, t: float) -> None:
        """Stamp the answer time (the first answer wins: a re-INVITE is not an answer)."""
        def tx(db: sqlite3.Connection) -> None:
            self._existing(db, uuid)
            db.execute("UPDATE cdr SET answered = ? WHERE uuid = ? AND answered IS NULL",
                       (float(t), uuid))
        self._write(tx)

    def ended(self, uuid: str, t: float, disposition: str,
              quality: dict[str, Any] | None = None) -> None:
        """Close the record, rate its quality and queue it in the outbox, in one commit.
        A second end of the same call is ignored (and logged): the first one stands."""
        if disposition not in DISPOSITIONS:
            raise ValueError(f"disposition {disposition!r} is not one of "
                             f"{', '.join(DISPOSITIONS)}")

        def tx(db: sqlite3.Connection) -> None:
            rec = self._existing(db, uuid)
            if rec["ended"] is not None:
                log.warning("CDR %s ended twice (%s, then %s); keeping the first",
                            uuid, rec["disposition"], disposition)
                return
            answered = rec["answered"]
            duration = max(0.0, float(t) - answered) if answered is not None else 0.0
            fields = {"ended": float(t), "disposition": disposition, "duration_s": duration,
                      **self._quality_fields(quality or {})}
            self._set(db, uuid, fields)
            self._enqueue(db, "cdr", self._cdr_body(db, uuid), uuid)
        self._write(tx)

    def update(self, uuid: str, /, **fields: Any) -> None:
        """Change allow-listed fields. `extra` is merged into the stored dict; changed
        RTCP figures re-rate the call unless mos/r_factor are given too."""
        wrong = sorted(set(fields) - set(UPDATABLE))
        if wrong:
            raise ValueError(f"CDR fields {', '.join(wrong)} cannot be updated; "
                             f"allowed: {', '.join(UPDATABLE)}")
        if "disposition" in fields and fields["disposition"] not in DISPOSITIONS:
            raise ValueError(f"disposition {fields['disposition']!r} is not one of "
                             f"{', '.join(DISPOSITIONS)}")
        if "media_mode" in fields and fields["media_mode"] not in MEDIA_MODES:
            raise ValueError(f"media_mode {fields['media_mode']!r} is not one of "
                             f"{', '.join(MEDIA_MODES)}")

        def tx(db: sqlite3.Connection) -> None:
            rec = self._existing(db, uuid)
            changes = dict(fields)
            if "extra" in changes:
                changes["extra"] = {**json.loads(rec["extra"] or "{}"), **changes["extra"]}
            rerate = set(changes) & set(QUALITY_FIELDS) and not {"mos", "r_factor"} & set(changes)
            if rerate:
                merged = {k: changes.get(k, rec[k]) for k in QUALITY_FIELDS}
                changes.update(quality_model.estimate(merged))
            self._set(db, uuid, changes)
        self._write(tx)

    def get(self, uuid: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM cdr WHERE uuid = ?", (uuid,))
        return _row(rows[0]) if rows else None

    def list(self, offset: int = 0, limit: int = 50, since: float | None = None,
             until: float | None = None, port: str | None = None,
             direction: str | None = None, text: str | None = None) -> list[dict[str, Any]]:
        """One page of records, newest first (`limit` at most MAX_PAGE)."""
        where, args = _where(since, until, port, direction, text)
        limit = max(0, min(int(limit), MAX_PAGE))
        rows = self._read(f"SELECT * FROM cdr{where} ORDER BY started DESC, rowid DESC"
                          f" LIMIT ? OFFSET ?", [*args, limit, max(0, int(offset))])
        return [_row(r) for r in rows]  # type: ignore[misc]

    def count(self, since: float | None = None, until: float | None = None,
              port: str | None = None, direction: str | None = None,
              text: str | None = None) -> int:
        where, args = _where(since, until, port, direction, text)
        return self._read(f"SELECT COUNT(*) FROM cdr{where}", args)[0][0]

    def export_csv(self, fileobj: IO[str], **filters: Any) -> int:
        """Write the matching records as CSV (header row, ISO 8601 UTC times, extra as
        JSON), newest first, page by page; returns the number of records written."""
        out = csv.writer(fileobj)
        out.writerow(COLUMNS)
        written = 0
        while True:
            page = self.list(offset=written, limit=MAX_PAGE, **filters)
            for rec in page:
                out.writerow([self._csv_value(k, rec[k]) for k in COLUMNS])
            written += len(page)
            if len(page) < MAX_PAGE:
                return written

    @staticmethod
    def _csv_value(column: str, value: Any) -> Any:
        if column in TIME_COLUMNS:
            return _iso(value)
        if column == "extra":
            return json.dumps(value, sort_keys=True) if value else ""
        return _csv_cell(value)

    def _existing(self, db: sqlite3.Connection, uuid: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM cdr WHERE uuid = ?", (uuid,)).fetchone()
        if row is None:
            raise KeyError(f"no CDR with uuid {uuid}")
        return row

    @staticmethod
    def _set(db: sqlite3.Connection, uuid: str, fields: dict[str, Any]) -> None:
        if "extra" in fields:
            fields = {**fields, "extra": json.dumps(fields["extra"], sort_keys=True)}
        cols = ", ".join(f"{k} = ?" for k in fields)  # keys come from the allow-lists
        db.execute(f"UPDATE cdr SET {cols} WHERE uuid = ?", (*fields.values(), uuid))

    @staticmethod
    def _quality_fields(quality: dict[str, Any]) -> dict[str, Any]:
        fields = {k: quality.get(k) for k in QUALITY_FIELDS}
        return {**fields, **quality_model.estimate(fields)}

    @staticmethod
    def _cdr_body(db: sqlite3.Connection, uuid: str) -> dict[str, Any]:
        return _row(db.execute("SELECT * FROM cdr WHERE uuid = ?", (uuid,)).fetchone())  # type: ignore[return-value]

    # --- outbox -----------------------------------------------------------------

    def set_cap(self, max_bytes: int | None, max_rows: int | None = None) -> None:
        """Change the cap (None = none) and apply it at once. max_bytes evicts recording
        files; max_rows is a soft limit that only depth() reports, because records are
        never dropped and evicting a recording queues a row of its own."""
        self.max_bytes, self.max_rows = max_bytes, max_rows
        if not self.readonly:
            self.enforce_cap()

    def enqueue(self, kind: str, body: dict[str, Any], uuid: str | None = None) -> str:
        """Queue an event for the cloud; returns its UUID. Queuing a UUID again is a
        no-op, so a producer that retries cannot send an event twice."""
        uuid = uuid or str(uuidlib.uuid4())
        self._write(lambda db: self._enqueue(db, kind, body, uuid))
        return uuid

    def state_change(self, old: str, new: str, reason: str, t: float | None = None,
                     **extra: Any) -> str:
        """Queue a survivability transition (old -> new, why) for the cloud."""
        t = self._wall() if t is None else float(t)
        return self.enqueue(KIND_STATE, {"old": old, "new": new, "reason": reason,
                                         "t": t, **extra})

    def callback_request(self, ani: str, number: str, port: str,
                         call_uuid: str | None = None, t: float | None = None,
                         **extra: Any) -> str:
        """Queue a callback a caller asked for (the number they keyed and confirmed)."""
        t = self._wall() if t is None else float(t)
        return self.enqueue(KIND_CALLBACK, {"ani": ani, "number": number, "port": port,
                                            "call_uuid": call_uuid, "t": t, **extra})

    def add_recording(self, path: str | os.PathLike[str], call_uuid: str | None = None,
                      uuid: str | None = None, **extra: Any) -> str:
        """Index a finished audio file of data_dir/recordings/ for upload; returns the
        index row's UUID. The file must be complete: its size is taken now."""
        name = self._recording_name(path)
        size = (self.recordings_dir / name).stat().st_size
        uuid = uuid or str(uuidlib.uuid4())
        body = {"file": name, "bytes": size, "call_uuid": call_uuid, **extra}
        self._write(lambda db: self._enqueue(db, KIND_RECORDING, body, uuid,
                                             path=name, file_bytes=size))
        return uuid

    def _recording_name(self, path: str | os.PathLike[str]) -> str:
        full = (self.recordings_dir / path).resolve()
        if full.parent != self.recordings_dir.resolve():
            raise ValueError(f"recording {path} is not a file of {self.recordings_dir}; "
                             f"write recordings there before indexing them")
        if not full.is_file():
            raise FileNotFoundError(f"recording {full} does not exist; write the file "
                                    f"completely before indexing it")
        return full.name

    def _enqueue(self, db: sqlite3.Connection, kind: str, body: dict[str, Any],
                 uuid: str, path: str | None = None, file_bytes: int = 0) -> None:
        text = json.dumps(body, sort_keys=True)
        db.execute("INSERT OR IGNORE INTO outbox (uuid, kind, body, created, body_bytes,"
                   " path, file_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (uuid, kind, text, self._wall(), len(text.encode()), path, file_bytes))
        self._enforce_cap(db)

    def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest undelivered events, in the order they were queued. A recording
        also carries `path` (the absolute file name) and `file_bytes`."""
        rows = self._read("SELECT seq, uuid, kind, body, created, path, file_bytes, attempts"
                          " FROM outbox WHERE delivered IS NULL AND evicted IS NULL"
                          " ORDER BY seq LIMIT ?", (max(0, min(int(limit), MAX_PAGE)),))
        return [self._pending_row(r) for r in rows]

    def _pending_row(self, r: sqlite3.Row) -> dict[str, Any]:
        row = {**dict(r), "body": json.loads(r["body"])}
        if row["path"] is not None:
            row["path"] = str(self.recordings_dir / row["path"])
        return row

    def mark_delivered(self, uuids: Iterable[str]) -> int:
        """Mark events delivered; already delivered or unknown UUIDs are ignored.
        Returns how many were newly marked."""
        uuids = list(uuids)
        now = self._wall()

        def tx(db: sqlite3.Connection) -> int:
            cur = db.executemany("UPDATE outbox SET delivered = ?"
                                 " WHERE uuid = ? AND delivered IS NULL",
                                 [(now, u) for u in uuids])
            return cur.rowcount
        return self._write(tx) if uuids else 0

    def note_failure(self, uuid: str, error: str) -> None:
        """Count a failed delivery of a pending row and keep why, for depth()."""
        self._write(lambda db: db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?"
            " WHERE uuid = ? AND delivered IS NULL", (error[:500], uuid)))

    def depth(self, detail: bool = False) -> Any:
        """How many events wait for delivery; with detail=True a report:
        {pending, bytes, oldest_age_s, by_kind, over_cap, max_bytes, max_rows, head},
        where bytes is what the outbox holds on the box (pending rows plus recording
        files still on disk) and head the next row to deliver with its failures."""
        if not detail:
            return self._read("SELECT rows FROM outbox_total")[0][0]
        with self.snapshot():
            rows, held = self._read("SELECT rows, bytes FROM outbox_total")[0]
            by_kind = dict(self._read(
                "SELECT kind, COUNT(*) FROM outbox WHERE delivered IS NULL"
                " AND evicted IS NULL GROUP BY kind ORDER BY kind"))
            head = self._read("SELECT uuid, kind, created, attempts, last_error FROM outbox"
                              " WHERE delivered IS NULL AND evicted IS NULL"
                              " ORDER BY seq LIMIT 1")
        return {"pending": rows, "bytes": held, "by_kind": by_kind,
                "oldest_age_s": max(0.0, self._wall() - head[0]["created"]) if head else None,
                "over_cap": self._is_over(rows, held), "max_bytes": self.max_bytes,
                "max_rows": self.max_rows, "head": dict(head[0]) if head else None}

    def _is_over(self, rows: int, held: int) -> bool:
        return bool((self.max_bytes is not None and held > self.max_bytes)
                    or (self.max_rows is not None and rows > self.max_rows))

    def recordings(self, limit: int = 100) -> list[dict[str, Any]]:
        """The recordings index, oldest first: uuid, file, bytes (0 once the file is
        gone), created, delivered, evicted."""
        rows = self._read("SELECT uuid, path AS file, file_bytes AS bytes, created, delivered,"
                          " evicted FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?",
                          (KIND_RECORDING, max(0, min(int(limit), MAX_PAGE))))
        return [dict(r) for r in rows]

    # --- cap and pruning -----------------------------------------------------------

    def enforce_cap(self) -> int:
        """Apply the cap now (after it shrank); returns how many files were dropped."""
        return self._write(self._enforce_cap)

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
        """Drop the oldest recording file: delivered ones before undelivered ones."""
        row = db.execute("SELECT seq, uuid, path, delivered, evicted FROM outbox"
                         " WHERE kind = ? AND file_bytes > 0"
                         " ORDER BY delivered IS NULL, seq LIMIT 1",
                         (KIND_RECORDING,)).fetchone()
        if row is None:
            return False
        if row["delivered"] is not None or row["evicted"] is not None:
            self._drop_file(db, row["uuid"], row["path"])
        else:
            self._evict(db, row["uuid"], f"outbox over its cap of {self.max_bytes} bytes")
        return True

    def _drop_file(self, db: sqlite3.Connection, uuid: str, name: str | None) -> None:
        if name:
            with contextlib.suppress(FileNotFoundError):
                (self.recordings_dir / name).unlink()
        db.execute("UPDATE outbox SET file_bytes = 0 WHERE uuid = ?", (uuid,))

    def evict_recording(self, uuid: str, reason: str) -> bool:
        """Give up a pending recording (its file is deleted, an "evicted" row queued);
        False when it is not a pending recording (delivered or evicted already)."""
        return self._write(lambda db: self._evict(db, uuid, reason))

    def _evict(self, db: sqlite3.Connection, uuid: str, reason: str) -> bool:
        row = db.execute("SELECT * FROM outbox WHERE uuid = ? AND kind = ? AND delivered"
                         " IS NULL AND evicted IS NULL", (uuid, KIND_RECORDING)).fetchone()
        if row is None:
            return False
        self._drop_file(db, uuid, row["path"])
        now = self._wall()
        db.execute("UPDATE outbox SET evicted = ?, last_error = ? WHERE uuid = ?",
                   (now, reason[:500], uuid))
        body = {**json.loads(row["body"]), "recording": uuid, "created": row["created"],
                "evicted": now, "reason": reason}
        text = json.dumps(body, sort_keys=True)
        db.execute("INSERT OR IGNORE INTO outbox (uuid, kind, body, created, body_bytes)"
                   " VALUES (?, ?, ?, ?, ?)", (str(uuidlib.uuid5(EVICTED_NS, uuid)),
                                               KIND_EVICTED, text, now, len(text.encode())))
        log.warning("outbox: recording %s (%s) evicted: %s", uuid, row["path"], reason)
        return True

    def _report_cap(self, rows: int, held: int) -> None:
        over = self._is_over(rows, held)
        if over and not self._over_cap:
            log.warning("outbox over cap: %d rows, %d bytes (max %s rows, %s bytes) and no "
                        "recording left to drop; records are kept: restore the WAN or raise "
                        "survive.outbox_max_mb", rows, held, self.max_rows, self.max_bytes)
        elif self._over_cap and not over:
            log.info("outbox back under its cap: %d rows, %d bytes", rows, held)
        self._over_cap = over

    def prune(self, keep_days: float, now: float | None = None) -> int:
        """Delete delivered rows (and evicted index rows) older than keep_days, with
        their recording files; pending rows are never touched. Returns rows deleted."""
        cutoff = (self._wall() if now is None else now) - keep_days * 86400.0
        total = 0
        while True:
            n = self._write(lambda db: self._prune_batch(db, cutoff))
            total += n
            if n < PRUNE_BATCH:
                return total

    def _prune_batch(self, db: sqlite3.Connection, cutoff: float) -> int:
        rows = db.execute("SELECT seq, uuid, path, file_bytes FROM outbox"
                          " WHERE delivered < ? OR evicted < ? ORDER BY seq LIMIT ?",
                          (cutoff, cutoff, PRUNE_BATCH)).fetchall()
        for r in rows:
            if r["file_bytes"]:
                self._drop_file(db, r["uuid"], r["path"])
        db.executemany("DELETE FROM outbox WHERE seq = ?", [(r["seq"],) for r in rows])
        return len(rows)

    def check_totals(self) -> bool:
        """True when the running totals agree with a full count (a test and repair aid)."""
        with self.snapshot():
            kept = tuple(self._read("SELECT rows, bytes FROM outbox_total")[0])
            counted = tuple(self._read(
                "SELECT COALESCE(SUM(delivered IS NULL AND evicted IS NULL), 0),"
                " COALESCE(SUM(CASE WHEN delivered IS NULL AND evicted IS NULL"
                " THEN body_bytes ELSE 0 END + file_bytes), 0) FROM outbox")[0])
        return kept == counted
