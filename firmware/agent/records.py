"""The outbox's small records (CDRs, callbacks, state changes, evictions) to the cloud
over MQTT: one batch in flight at a time, in `seq` order, on `records`; a row is marked
delivered only when the cloud's `records/ack` names its UUID. No ack within the timeout,
or a reconnect, sends the batch again (the cloud dedups by UUID): delivered once in
effect, and nothing leaves the outbox unacknowledged. Files go over HTTPS instead
(`branchline forward`, see firmware.forward). Runs on the agent's main thread.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from firmware.agent.protocol import MAX_PAYLOAD, ProtocolError, Topic, encode, validate
from firmware.cdr import CdrStore

log = logging.getLogger(__name__)

BATCH = 50             # records per message (the schema's maxItems)
ACK_TIMEOUT_S = 30.0   # no records/ack within this: the batch goes again
KEEP_DAYS = 30.0       # delivered rows are pruned after this (survive.outbox_keep_days)
PRUNE_EVERY_S = 3600.0
Row = dict[str, Any]   # an outbox row as CdrStore.pending() gives it
RECORD_FIELDS = ("uuid", "seq", "kind", "created", "body")


class Clock(Protocol):
    def now(self) -> float: ...
    def wall(self) -> float: ...


class Delivery(Protocol):  # firmware.agent.link.Delivery
    @property
    def done(self) -> bool: ...
    @property
    def failed(self) -> bool: ...


class Inbound(Protocol):  # firmware.agent.link.Message
    @property
    def payload(self) -> dict[str, Any]: ...


class RecordsLink(Protocol):  # what Records needs of firmware.agent.link.Link
    @property
    def connected(self) -> bool: ...
    def publish(self, t: Topic, payload: dict[str, Any]) -> Delivery: ...
    def on(self, t: Topic, handler: Callable[[Inbound], None]) -> None: ...


@dataclass
class Batch:
    """The batch in flight: its id, the rows not acknowledged yet, when it went out."""

    id: str
    rows: list[Row]
    sent: float
    delivery: Delivery | None = None
    sends: int = 0
    uuids: set[str] = field(default_factory=set)

    def payload(self) -> dict[str, Any]:
        return {"batch": self.id, "records": [record(r) for r in self.rows]}


def record(row: Row) -> dict[str, Any]:
    return {k: row[k] for k in RECORD_FIELDS}


def fits(rows: list[Row]) -> bool:
    """True when these rows make one valid `records` message under MAX_PAYLOAD."""
    try:
        encode(Topic.RECORDS, {"batch": str(uuidlib.uuid4()), "records": [record(r) for r in rows]})
    except ProtocolError:
        return False
    return True


class Records:
    """See the module docstring."""

    def __init__(self, link: RecordsLink, store: CdrStore, clock: Clock, *,
                 ack_timeout_s: float = ACK_TIMEOUT_S, batch: int = BATCH,
                 keep_days: float | None = KEEP_DAYS) -> None:
        self.link, self.store, self.clock = link, store, clock
        self.ack_timeout_s, self.batch = ack_timeout_s, max(1, min(BATCH, batch))
        self.keep_days = keep_days
        self._next_prune = clock.now() + 60.0  # not in the busy first minute
        self.inflight: Batch | None = None
        self.delivered = 0                 # rows marked delivered by this agent run
        self.resends = 0                   # batches sent again (timeout or reconnect)
        self.unsendable: dict[str, str] = {}  # uuid -> why it cannot go over MQTT
        link.on(Topic.RECORDS_ACK, self.on_ack)

    # ---- the Part surface (main thread) ----
    def tick(self, now: float) -> None:
        self._housekeeping(now)
        if not self.link.connected:
            return
        b = self.inflight
        if b is None:
            self.send_next(now)
        elif now - b.sent >= self.ack_timeout_s:
            self._resend(b, now, f"no records/ack within {self.ack_timeout_s:g} s")

    def connected(self, up: bool) -> None:
        if not up:
            return
        b, now = self.inflight, self.clock.now()
        if b is None:
            self.send_next(now)
        elif not _queued(b):  # the link did not keep it for us: send it again
            self._resend(b, now, "reconnected before its records/ack")

    def stop(self) -> None:
        """Nothing to flush: unacknowledged rows stay in the outbox for the next run."""

    def _housekeeping(self, now: float) -> None:
        """Prune delivered rows now and then (`branchline forward` may not run at all)."""
        if self.keep_days is None or now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        if n := self.store.prune(self.keep_days):
            log.info("records: pruned %d delivered rows older than %g days", n, self.keep_days)

    # ---- sending ----
    def send_next(self, now: float) -> Batch | None:
        """Publish the next batch of pending non-file rows, if any."""
        rows = self._next_rows()
        if not rows:
            return None
        b = Batch(str(uuidlib.uuid4()), rows, now, uuids={r["uuid"] for r in rows})
        self.inflight = b
        self._send(b)
        return b

    def _next_rows(self) -> list[Row]:
        limit = self.batch + len(self.unsendable)
        rows = [r for r in self.store.pending(limit, files=False)
                if r["uuid"] not in self.unsendable][:self.batch]
        while rows and not fits(rows):
            if len(rows) == 1:
                self._refuse(rows[0])
                return self._next_rows()
            rows = rows[:len(rows) // 2]
        return rows

    def _refuse(self, row: Row) -> None:
        """A row no MQTT message can carry (too big, or not valid): it stays pending."""
        try:
            validate(Topic.RECORDS, {"batch": "b", "records": [record(row)]})
            why = f"over the {MAX_PAYLOAD} byte limit of one message"
        except ProtocolError as exc:
            why = str(exc)
        self.unsendable[row["uuid"]] = why
        self.store.note_failure(row["uuid"], f"cannot go over MQTT: {why}")
        log.error("records: %s %s (seq %d) cannot go over MQTT (%s); it stays in the outbox "
                  "(deliver it with `branchline forward --url ...`)", row["kind"], row["uuid"],
                  row["seq"], why)

    def _send(self, b: Batch) -> None:
        b.sends += 1
        try:
            b.delivery = self.link.publish(Topic.RECORDS, b.payload())
        except ProtocolError as exc:  # fits() checked it: a bug, said once per batch
            log.error("records: batch %s refused by the protocol (%s)", b.id, exc)
            b.delivery = None

    def _resend(self, b: Batch, now: float, why: str) -> None:
        self.resends += 1
        b.sent = now
        log.info("records: batch %s (%d records from seq %d) sent again: %s", b.id,
                 len(b.rows), b.rows[0]["seq"], why)
        self.store.note_failure(b.rows[0]["uuid"], why)
        self._send(b)

    # ---- acks (main thread) ----
    def on_ack(self, msg: Inbound) -> None:
        uuids = [str(u) for u in msg.payload.get("uuids", [])]
        self.acknowledge(uuids, msg.payload.get("batch"))

    def acknowledge(self, uuids: Iterable[str], batch: str | None = None) -> int:
        """Mark the acknowledged rows of the batch in flight delivered; others are
        ignored with a log line. Returns how many rows were newly marked."""
        b = self.inflight
        named = list(dict.fromkeys(uuids))
        ours = [u for u in named if b is not None and u in b.uuids]
        if strangers := [u for u in named if u not in ours]:
            log.info("records: ack%s names %d uuids not in flight (never sent, or delivered "
                     "already), ignored: %s", f" of batch {batch}" if batch else "",
                     len(strangers), ", ".join(strangers[:5]))
        if b is None or not ours:
            return 0
        marked = self.store.mark_delivered(ours)
        self.delivered += marked
        b.uuids -= set(ours)
        b.rows = [r for r in b.rows if r["uuid"] in b.uuids]
        if not b.rows:
            self.inflight = None
            if self.link.connected:
                self.send_next(self.clock.now())
        return marked


def _queued(b: Batch) -> bool:
    """True while the link still holds the batch to send (offline queue, no PUBACK yet)."""
    d = b.delivery
    return d is not None and not d.done and not d.failed
