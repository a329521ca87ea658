"""Call detail records and the event outbox, in one SQLite database in WAL mode.

The core is the only writer: call control opens a record when a call starts, stamps
the answer and the end (with the RTCP figures, from which firmware.quality derives the
E-model R and MOS), and in the same transaction as the end queues the finished record
in the outbox, the store-and-forward queue that the cloud agent drains (issue 5).
Readers in other processes (web page, console, agent) open the same file: WAL lets
them read while the core writes, without blocking it.

Durability: `synchronous=FULL`. In WAL mode NORMAL skips the fsync at each commit, so
a power cut (a branch box is unplugged, not shut down) can roll back the last
commits; they are CDRs, the basis of billing and of the cloud's call logs, and a call
costs three commits, so the fsync is cheap where it is spent. A killed process loses
nothing committed in either mode; FULL extends that to the power cord.

Assumptions:
  - One writer process. Inside it, one connection serves every thread under a lock.
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

from drivers.errors import BranchlineError
from firmware import quality as quality_model

log = logging.getLogger(__name__)

DIRECTIONS = ("inbound", "outbound", "local", "emergency")
DISPOSITIONS = ("answered", "busy", "failed", "no_answer", "cancelled", "rejected",
                "congestion", "unreachable")
COLUMNS = ("uuid", "direction", "port", "ani", "dnis", "sip_call_id", "started",
           "answered", "ended", "disposition", "duration_s", "codec", "jitter_ms",
           "loss_pct", "rtt_ms", "mos", "r_factor", "extra")
QUALITY_FIELDS = ("codec", "jitter_ms", "loss_pct", "rtt_ms")
UPDATABLE = ("port", "ani", "dnis", "sip_call_id", "disposition", *QUALITY_FIELDS,
             "mos", "r_factor", "extra")
TIME_COLUMNS = ("started", "answered", "ended")
MAX_PAGE = 1000
BUSY_TIMEOUT_MS = 5000

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
]
SCHEMA_VERSION = len(MIGRATIONS)


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
                 wall: Callable[[], float] = time.time, check: bool = True) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._wall = wall
        self._lock = threading.RLock()
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
        db.execute("PRAGMA synchronous = FULL")
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
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
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

    def enqueue(self, kind: str, body: dict[str, Any], uuid: str | None = None) -> str:
        """Queue an event for the cloud; returns its UUID. Queuing a UUID again is a
        no-op, so a producer that retries cannot send an event twice."""
        uuid = uuid or str(uuidlib.uuid4())
        self._write(lambda db: self._enqueue(db, kind, body, uuid))
        return uuid

    def _enqueue(self, db: sqlite3.Connection, kind: str, body: dict[str, Any],
                 uuid: str) -> None:
        db.execute("INSERT OR IGNORE INTO outbox (uuid, kind, body, created) VALUES (?, ?, ?, ?)",
                   (uuid, kind, json.dumps(body, sort_keys=True), self._wall()))

    def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest undelivered events, in the order they were queued."""
        rows = self._read("SELECT seq, uuid, kind, body, created FROM outbox"
                          " WHERE delivered IS NULL ORDER BY seq LIMIT ?",
                          (max(0, min(int(limit), MAX_PAGE)),))
        return [{**dict(r), "body": json.loads(r["body"])} for r in rows]

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

    def depth(self) -> int:
        """How many events wait for delivery."""
        return self._read("SELECT COUNT(*) FROM outbox WHERE delivered IS NULL")[0][0]
