"""Store and forward: deliver the outbox (firmware.cdr) to the cloud's records URL in
order, in a process of its own (`branchline forward`): uploads and TLS stay out of the
core. Time is injected (`clock`, `sleep`): a test runs an hour's outage in fake time.

Two carriers share the outbox. With `cloud.broker` set, the cloud agent carries the
small records (CDRs, callbacks, state changes, evictions) over its MQTT session and this
process uploads only the file rows (recordings, log bundles, captures: PUT
<records_url>/files/<uuid>, then the row itself). Small records need per-record acks and
ordering, which the session the box keeps anyway gives cheaply; files are big and
are better on a plain HTTPS upload that a flaky link can simply retry. Both use one
credential: the device certificate (mutual TLS here, the MQTT client certificate there).
Without a broker, everything goes this way, as before."""

import hashlib
import http.client
import json
import logging
import mimetypes
import random
import socket
import ssl
import time
from collections.abc import Callable
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol, cast
from urllib.parse import urlsplit

from firmware.cdr import FILE_KINDS, MAX_PAGE, CdrStore
from foundation.backoff import backoff_s
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

DEFAULT_BATCH = 50
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 300.0
TIMEOUT_S, PRUNE_EVERY_S = 10.0, 3600.0
MAX_PASS_ROWS = 10_000  # one pass delivers at most this many, then prunes and reports
Row = dict[str, Any]  # an outbox row as CdrStore.pending() gives it


class State(StrEnum):
    IDLE = "idle"              # nothing pending
    DELIVERING = "delivering"  # rows are going out
    BACKOFF = "backoff"        # the last attempt failed; waiting before the retry


class DeliveryError(Exception):
    """One delivery attempt failed; the message says what the cloud (or network) did."""


class ForwardConfigError(BranchlineError):
    """The records URL or TLS settings cannot work; the message names the fix."""


class Transport(Protocol):
    def post_records(self, rows: list[Row]) -> None: ...
    def put_file(self, uuid: str, path: str) -> None: ...


def ssl_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """Verify the server by default; ca_file trusts one more CA or a self-signed cert."""
    if ca_file and not Path(ca_file).is_file():
        raise ForwardConfigError(f"records CA file {ca_file} does not exist; give the PEM "
                                 f"certificate of the records server or its CA")
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def load_client(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """Present this certificate (the device's) to the server: mutual TLS."""
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise ForwardConfigError(f"client {what} {path} does not exist; enrol the box "
                                     f"(the device certificate) or give --cert/--key")
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ForwardConfigError(f"client certificate {cert} / key {key} cannot be used "
                                 f"({exc}); give a PEM certificate and its matching key") \
            from None


NO_CLIENT_CERT = ("requires a client certificate (mutual TLS) and this box gave none; enrol "
                  "the box (device certificate) or give --cert/--key")
BAD_CLIENT_CERT = ("refused this box's client certificate; it must be signed by a CA the "
                   "server trusts")
REFUSED_ALERTS = ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN", "DECRYPT_ERROR",
                  "ACCESS_DENIED", "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED")
ABRUPT = (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)


def _tls_refusal(exc: Exception, client: bool, fresh: bool) -> str | None:
    """A clear line when the server refused our side of mutual TLS; None otherwise. A
    server may only close the connection (its alert lost to the reset): on a fresh
    connection that is the likely cause, said as such."""
    reason = str(getattr(exc, "reason", "") or "").upper()
    if not client and ("CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason):
        return f"the records server {NO_CLIENT_CERT}"
    if client and any(alert in reason for alert in REFUSED_ALERTS):
        return f"the records server {BAD_CLIENT_CERT} ({reason.lower()})"
    if fresh and isinstance(exc, ABRUPT):
        return (f"the records server closed the TLS connection at once "
                f"({type(exc).__name__}); likely it {BAD_CLIENT_CERT if client else NO_CLIENT_CERT}")
    return None


class HttpTransport:
    """POST records and PUT files to one records URL over a kept-alive connection. A 2xx
    or 409 (the cloud has it) is success; any other answer or no answer: DeliveryError."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT_S, box: str = "",
                 context: ssl.SSLContext | None = None,
                 client: tuple[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ForwardConfigError(f"records URL {url!r} must be http:// or https:// "
                                     f"with a host, e.g. https://records.example.com/v1/records")
        self.url, self.box, self.timeout = url, box, timeout
        self._path = (parts.path or "/").rstrip("/") or "/"
        self._new_connection = partial(http.client.HTTPConnection, parts.hostname, parts.port,
                                       timeout=timeout)
        self.tls = parts.scheme == "https"
        self.client = client is not None and self.tls
        if parts.scheme == "https":
            context = context or ssl_context()
            if client is not None:
                load_client(context, *client)
            self._new_connection = partial(http.client.HTTPSConnection, parts.hostname,
                                           parts.port, timeout=timeout, context=context)
        self._conn: http.client.HTTPConnection | None = None

    def post_records(self, rows: list[Row]) -> None:
        """POST <url> {"box", "records": [{uuid, seq, kind, created, body}]}; each
        record's UUID is its idempotency key, the header's a hash of the batch's."""
        records = [{k: r[k] for k in ("uuid", "seq", "kind", "created", "body")} for r in rows]
        data = json.dumps({"box": self.box, "records": records}, sort_keys=True).encode()
        key = hashlib.sha256("\n".join(r["uuid"] for r in rows).encode()).hexdigest()
        self._request("POST", self._path, data, {"Content-Type": "application/json",
                                                  "Idempotency-Key": key})

    def put_file(self, uuid: str, path: str) -> None:
        """PUT <url>/files/<uuid> with the file; FileNotFoundError when it is gone."""
        with open(path, "rb") as f:
            size = Path(path).stat().st_size
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            self._request("PUT", f"{self._path}/files/{uuid}", f,
                          {"Content-Type": kind, "Content-Length": str(size),
                           "Idempotency-Key": uuid})

    def _request(self, method: str, path: str, body: bytes | IO[bytes],
                 headers: dict[str, str]) -> None:
        headers = {**headers, "User-Agent": "branchline-forward"}
        if self.box:
            headers["X-Branchline-Box"] = self.box
        fresh = self._conn is None or self._conn.sock is None
        try:
            conn = self._connection()
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read(2000)
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise DeliveryError(f"{self.url}: the server's certificate is not trusted "
                                f"({exc.verify_message}); set survive.records_ca_file to its "
                                f"CA or certificate") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            why = _tls_refusal(exc, self.client, fresh) if self.tls else None
            raise DeliveryError(f"{self.url}: " + (why or f"{type(exc).__name__}: "
                                                          f"{exc or 'no answer'}")) from None
        if resp.will_close:
            self.close()
        if not (200 <= resp.status < 300 or resp.status == 409):
            raise DeliveryError(f"{self.url} answered HTTP {resp.status} {resp.reason}: "
                                f"{text[:200].decode(errors='replace')}")

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn = self._conn or self._new_connection()
        if conn.sock is None:  # a file body goes after the headers: no Nagle stall
            conn.connect()
            cast(socket.socket, conn.sock).setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Forwarder:
    """Delivers one store's outbox through one transport, in `seq` order (files_only:
    only the file rows; the agent carries the rest). Rows are marked delivered only
    after the cloud took them; a failure (a 4xx too: a wrong URL must not discard
    records) stops the pass at that row, so nothing overtakes it. A crash between the
    answer and the mark redelivers the same UUIDs; the cloud dedups."""

    def __init__(self, store: CdrStore, transport: Transport, *, batch: int = DEFAULT_BATCH,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep,
                 backoff_min_s: float = BACKOFF_MIN_S, backoff_max_s: float = BACKOFF_MAX_S,
                 keep_days: float | None = None, prune_every_s: float = PRUNE_EVERY_S,
                 rng: random.Random | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 files_only: bool = False) -> None:
        self.store, self.transport = store, transport
        self.files: bool | None = True if files_only else None
        self.batch = max(1, int(batch))
        self._clock, self._sleep = clock, sleep
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.keep_days, self.prune_every_s = keep_days, prune_every_s
        self._rng, self._on_event = rng or random.Random(), on_event
        self.state, self.last_error = State.IDLE, ""
        self.failures = self.delivered = 0  # consecutive failed attempts; rows sent here
        self._next_prune = clock()

    def left(self) -> int:
        """How many rows this forwarder still has to deliver (files only: up to a page)."""
        if self.files is None:
            return int(self.store.depth())
        return len(self.store.pending(MAX_PAGE, files=self.files))

    def _set_state(self, new: State, reason: str) -> None:
        """The one setter of `state`: logs old -> new with the reason, calls on_event."""
        old = self.state
        if new is old:
            return
        self.state = new
        log.info("forward: %s -> %s (%s)", old.value, new.value, reason)
        if self._on_event:
            self._on_event({"type": "forward_state", "old": old.value, "new": new.value,
                            "reason": reason, "t": self._clock()})

    def deliver_pending(self) -> int:
        """Deliver in order until the outbox is empty or an attempt fails; returns how
        many rows were delivered. After a failure `state` is BACKOFF."""
        done = 0
        while done < MAX_PASS_ROWS:
            rows = self.store.pending(self.batch, files=self.files)
            if not rows:
                self._set_state(State.IDLE, f"outbox empty after {done} delivered")
                return done
            self._set_state(State.DELIVERING, f"{len(rows)}+ rows pending")
            chunk = self._chunk(rows)
            try:
                done += self._send(chunk)
            except DeliveryError as exc:
                self._failed(chunk[0], str(exc))
                return done
            self.failures, self.last_error = 0, ""
        return done

    @staticmethod
    def _chunk(rows: list[Row]) -> list[Row]:
        """The rows of one request: consecutive records up to the first file row, or
        the file row alone (its file goes first, then its index row)."""
        first = next((i for i, r in enumerate(rows) if r["kind"] in FILE_KINDS), len(rows))
        return rows[:max(first, 1)]

    def _send(self, chunk: list[Row]) -> int:
        """Send one chunk; a file row whose file vanished is evicted, not retried."""
        head = chunk[0]
        if head["kind"] in FILE_KINDS:
            try:
                self.transport.put_file(head["uuid"], head["path"])
            except FileNotFoundError:
                self.store.evict_recording(head["uuid"], f"file {head['path']} missing "
                                                         f"at upload")
                return 0
        self.transport.post_records(chunk)
        self.store.mark_delivered(r["uuid"] for r in chunk)
        self.delivered += len(chunk)
        return len(chunk)

    def _failed(self, row: Row, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self.store.note_failure(row["uuid"], error)
        self._set_state(State.BACKOFF, f"attempt {self.failures} at seq {row['seq']} "
                                       f"failed: {error}")

    def backoff_s(self) -> float:
        """The wait before the next retry: doubling from backoff_min_s up to
        backoff_max_s, times a random factor in [0.5, 1) so a fleet coming back from
        the same outage does not retry in step."""
        return backoff_s(self.failures, self.backoff_min_s, self.backoff_max_s, self._rng)

    def step(self, interval_s: float) -> float:
        """One pass plus housekeeping; returns how long to wait before the next."""
        self.deliver_pending()
        self._housekeeping()
        return self.backoff_s() if self.state is State.BACKOFF else interval_s

    def _housekeeping(self) -> None:
        if self._clock() < self._next_prune:
            return
        self._next_prune = self._clock() + self.prune_every_s
        self.store.enforce_cap()
        if self.keep_days is not None and (n := self.store.prune(self.keep_days)):
            log.info("forward: pruned %d delivered rows older than %g days", n, self.keep_days)

    def run(self, interval_s: float = 2.0,
            should_stop: Callable[[], bool] = lambda: False) -> None:
        """Deliver until should_stop(): at once when rows are pending, then every
        interval_s, or after the backoff while the cloud fails."""
        while not should_stop():
            wait = self.step(interval_s)
            if should_stop():
                break
            self._sleep(wait)
