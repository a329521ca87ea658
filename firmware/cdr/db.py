"""The CDR database file: a SQLite connection in WAL mode (others read while the core
writes), its migrations and the transactions the parts of the store run. Errors name
the file and the fix; a damaged file is never deleted or rewritten."""

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PAGE = 1000
BUSY_TIMEOUT_MS = 5000

# MIGRATIONS[i] takes a database from PRAGMA user_version i to i + 1, in one transaction.
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
    # 2 -> 3: fax and modem passthrough: what the call carried; older records were speech
    """
    ALTER TABLE cdr ADD COLUMN media_mode TEXT NOT NULL DEFAULT 'voice';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class CdrError(BranchlineError):
    """The CDR database cannot be opened or used; the message names the file and the fix."""


def statements(script: str) -> list[str]:
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


def page(limit: int) -> int:
    return max(0, min(int(limit), MAX_PAGE))


class Database:
    """One connection shared by the threads of a process under a lock. The core writes
    CDRs; the forward process writes delivery marks, serialised by BEGIN IMMEDIATE and the
    busy timeout. `synchronous` is FULL for the core (NORMAL would let a power cut roll
    back the last CDRs) and NORMAL for the forwarder (a lost mark is only a redelivery)."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False,
                 check: bool = True, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous {synchronous!r}: choose FULL or NORMAL")
        self.path, self.readonly, self.synchronous = Path(path), readonly, synchronous
        self.lock = threading.RLock()
        self.connection = self._open(check)

    def _open(self, check: bool) -> sqlite3.Connection:
        self._precheck()
        try:
            db = self._connect()
        except sqlite3.Error as exc:
            raise self.explain(exc) from None
        try:
            self._prepare(db, check)
        except sqlite3.Error as exc:
            db.close()
            raise self.explain(exc) from None
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
            self._create_shared()
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return db

    def _create_shared(self) -> None:
        """A new database file 0660 less the umask (SQLite would make it 0644 less it): the
        core writes records, the forwarder and the agent (another user of the gateway's
        group) mark them delivered; SQLite gives its -wal and -shm files the same mode."""
        with contextlib.suppress(OSError):  # exists already; or SQLite says what is wrong
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o660))

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
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._migrate(db, version)

    def _quick_check(self, db: sqlite3.Connection) -> None:
        """Refuse a damaged file, and keep it: the core then starts with a fresh one."""
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
                for statement in statements(MIGRATIONS[target - 1]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            log.info("CDR database %s: schema %d -> %d", self.path, target - 1, target)

    def explain(self, exc: sqlite3.Error) -> CdrError:
        """A one-line error for what SQLite reported about the file."""
        msg, where = str(exc), f"CDR database {self.path}"
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

    def close(self) -> None:
        with self.lock:
            self.connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn inside one IMMEDIATE transaction (all or nothing)."""
        with self.lock:
            try:
                self.connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.explain(exc) from None
            try:
                result = fn(self.connection)
                self.connection.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:  # read-only, disk full, I/O error
                self._rollback()
                raise self.explain(exc) from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Self]:
        """Reads inside see one state of the database (a page and its count agree),
        however the writer moves on meanwhile. Keep it short: it holds back checkpoints."""
        with self.lock:
            self.connection.execute("BEGIN")
            try:
                yield self
            finally:
                self._rollback()

    def read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.connection.execute(sql, tuple(args)).fetchall()

    def journal_mode(self) -> str:
        return str(self.read("PRAGMA journal_mode")[0][0])

    def schema_version(self) -> int:
        return int(self.read("PRAGMA user_version")[0][0])
