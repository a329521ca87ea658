"""Call detail records: opened when a call starts, stamped at the answer and at the end
(rated from the RTCP figures by firmware.quality, the DSP's figures in extra["dsp"]),
queued in the outbox with the end.
Times are epoch seconds from the caller's clock, so fake-clock scenarios keep fake times."""

import csv
import json
import logging
import sqlite3
import uuid as uuidlib
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, Any

from firmware import quality as quality_model
from firmware.cdr.db import MAX_PAGE, Database, page
from firmware.cdr.outbox import Kind, Outbox

log = logging.getLogger(__name__)


class Direction(StrEnum):
    INBOUND, OUTBOUND, LOCAL, EMERGENCY = "inbound", "outbound", "local", "emergency"


class Disposition(StrEnum):
    ANSWERED, BUSY, FAILED, NO_ANSWER = "answered", "busy", "failed", "no_answer"
    CANCELLED, REJECTED = "cancelled", "rejected"
    CONGESTION, UNREACHABLE = "congestion", "unreachable"


class MediaMode(StrEnum):  # fax and modem: G.711 passthrough on a detected tone
    VOICE, FAX, MODEM = "voice", "fax", "modem"


COLUMNS = ("uuid", "direction", "port", "ani", "dnis", "sip_call_id", "started",
           "answered", "ended", "disposition", "duration_s", "codec", "jitter_ms",
           "loss_pct", "rtt_ms", "mos", "r_factor", "media_mode", "extra")
QUALITY_FIELDS = quality_model.NETWORK_FIELDS
UPDATABLE = ("port", "ani", "dnis", "sip_call_id", "disposition", *QUALITY_FIELDS,
             "mos", "r_factor", "media_mode", "extra")


def _check(field: str, value: Any, allowed: type[StrEnum]) -> None:
    if value not in tuple(allowed):
        raise ValueError(f"{field} {value!r} is not one of {', '.join(allowed)}")


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


def _record(row: sqlite3.Row) -> dict[str, Any]:
    return {**dict(row), "extra": json.loads(row["extra"] or "{}")}


def _csv_value(column: str, value: Any) -> Any:
    """ISO 8601 UTC times, extra as JSON, and text a spreadsheet would run as a formula
    (names come from SIP peers) neutralised, phone numbers like +15551234567 kept."""
    if column in ("started", "answered", "ended"):
        return "" if value is None else \
            datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds")
    if column == "extra":
        return json.dumps(value, sort_keys=True) if value else ""
    if isinstance(value, str) and value and (
            value[0] in "=@\t\r" or (value[0] in "+-" and not value[1:].isdigit())):
        return "'" + value
    return value


class Calls:
    """The cdr table: one row per call, written by the core alone."""

    def __init__(self, db: Database, outbox: Outbox, wall: Callable[[], float]) -> None:
        self.db, self.outbox, self.wall = db, outbox, wall

    def open_call(self, direction: str, port: str, ani: str | None, dnis: str | None,
                  sip_call_id: str | None = None, started: float | None = None) -> str:
        """A new record for a call that starts now (or at `started`); returns its UUID."""
        _check("direction", direction, Direction)
        uuid = str(uuidlib.uuid4())
        t = self.wall() if started is None else float(started)
        self.db.write(lambda db: db.execute(
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
        self.db.write(tx)

    def ended(self, uuid: str, t: float, disposition: str,
              quality: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None) -> None:
        """Close the record, rate its quality, merge `extra` into its extra (the call's
        DSP figures) and queue it in the outbox, in one commit. A second end of the
        same call is ignored (and logged): the first one stands."""
        _check("disposition", disposition, Disposition)

        def tx(db: sqlite3.Connection) -> None:
            rec = self._existing(db, uuid)
            if rec["ended"] is not None:
                log.warning("CDR %s ended twice (%s, then %s); keeping the first",
                            uuid, rec["disposition"], disposition)
                return
            answered = rec["answered"]
            duration = 0.0 if answered is None else max(0.0, float(t) - answered)
            fields = {"ended": float(t), "disposition": disposition, "duration_s": duration,
                      **quality_model.rated(quality)}
            if extra:
                fields["extra"] = {**json.loads(rec["extra"] or "{}"), **extra}
            self._set(db, uuid, fields)
            self.outbox.add(db, Kind.CDR, _record(self._existing(db, uuid)), uuid)
        self.db.write(tx)

    def update(self, uuid: str, /, **fields: Any) -> None:
        """Change allow-listed fields. `extra` is merged into the stored dict; changed
        RTCP figures re-rate the call unless mos/r_factor are given too."""
        wrong = sorted(set(fields) - set(UPDATABLE))
        if wrong:
            raise ValueError(f"CDR fields {', '.join(wrong)} cannot be updated; "
                             f"allowed: {', '.join(UPDATABLE)}")
        for name, allowed in (("disposition", Disposition), ("media_mode", MediaMode)):
            if name in fields:
                _check(name, fields[name], allowed)

        def tx(db: sqlite3.Connection) -> None:
            rec = self._existing(db, uuid)
            changes = dict(fields)
            if "extra" in changes:
                changes["extra"] = {**json.loads(rec["extra"] or "{}"), **changes["extra"]}
            if set(changes) & set(QUALITY_FIELDS) and not {"mos", "r_factor"} & set(changes):
                merged = {k: changes.get(k, rec[k]) for k in QUALITY_FIELDS}
                changes.update(quality_model.estimate(merged))
            self._set(db, uuid, changes)
        self.db.write(tx)

    def get(self, uuid: str) -> dict[str, Any] | None:
        rows = self.db.read("SELECT * FROM cdr WHERE uuid = ?", (uuid,))
        return _record(rows[0]) if rows else None

    def count(self, since: float | None = None, until: float | None = None,
              port: str | None = None, direction: str | None = None,
              text: str | None = None) -> int:
        where, args = _where(since, until, port, direction, text)
        return int(self.db.read(f"SELECT COUNT(*) FROM cdr{where}", args)[0][0])

    def export_csv(self, fileobj: IO[str], **filters: Any) -> int:
        """Write the matching records as CSV (header row, ISO 8601 UTC times, extra as
        JSON), newest first, page by page; returns the number of records written."""
        out = csv.writer(fileobj)
        out.writerow(COLUMNS)
        written = 0
        while True:
            records = self.list(offset=written, limit=MAX_PAGE, **filters)
            out.writerows([_csv_value(k, rec[k]) for k in COLUMNS] for rec in records)
            written += len(records)
            if len(records) < MAX_PAGE:
                return written

    @staticmethod
    def _existing(db: sqlite3.Connection, uuid: str) -> sqlite3.Row:
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

    # Last in the class: below it, `list` would name this method in annotations.
    def list(self, offset: int = 0, limit: int = 50, since: float | None = None,
             until: float | None = None, port: str | None = None,
             direction: str | None = None, text: str | None = None) -> list[dict[str, Any]]:
        """One page of records, newest first (`limit` at most MAX_PAGE)."""
        where, args = _where(since, until, port, direction, text)
        rows = self.db.read(f"SELECT * FROM cdr{where} ORDER BY started DESC, rowid DESC"
                            f" LIMIT ? OFFSET ?", [*args, page(limit), max(0, int(offset))])
        return [_record(r) for r in rows]
