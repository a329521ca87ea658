"""Commands: the cloud's short requests (reboot, ring and line tests, selftest, SIP ping,
logs, a diagnostic capture), answered on the message's MQTT 5 response topic with its
correlation data. A command carries an issue time and a nonce id: stale, future-dated
(clock skew), replayed, expired, unknown or badly argued commands are refused with the
reason in the answer and one log line. Accepted ones run on a small worker pool (never
on the main loop), each within its deadline ("expires" or the command's default); the
API call of a command over its deadline cannot be interrupted, its late result is
dropped. Seen ids are kept in agent.db for the command age window, so a replay is caught
across an agent restart."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from firmware.agent.capture import Capture, CaptureRefused
from firmware.agent.jobs import (
    LEVEL,
    PORT,
    UPDATE_IS_A_JOB,
    ArgsError,
    Clock,
    Ending,
    check_args,
    fit,
    run_bounded,
)
from firmware.agent.link import Link, Message
from firmware.agent.protocol import Topic
from firmware.api.client import ApiClient, ApiError
from firmware.api.selftest import selftest

log = logging.getLogger(__name__)

FUTURE_S = 60.0  # an issue time further ahead than this is clock skew
WORKERS = 2
PRUNE_EVERY_S = 60.0

class Name(StrEnum):
    REBOOT = "reboot"
    RING_TEST = "ring_test"
    LINE_TEST = "line_test"
    SELFTEST = "selftest"
    SIP_PING = "sip_ping"
    FETCH_LOGS = "fetch_logs"
    CAPTURE_START = "capture_start"
    CAPTURE_STOP = "capture_stop"
    UPDATE_FIRMWARE = "update_firmware"


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    REFUSED = "refused"
    EXPIRED = "expired"


class Refused(Exception):
    """A command this box will not run; str() is the reason sent back."""

    def __init__(self, reason: str, status: Status = Status.REFUSED) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Spec:
    handler: Callable[[Commands, dict[str, Any]], dict[str, Any]]
    args: dict[str, Any]  # JSON Schema "properties" (+ "required") of args
    deadline_s: float  # when the command has no "expires"


# ---- the handlers: each the API's answer, trimmed --------------------------------------------

def _reboot(c: Commands, _a: dict[str, Any]) -> dict[str, Any]:
    return c.api.reboot()


def _ring(c: Commands, a: dict[str, Any]) -> dict[str, Any]:
    return c.api.ring(a["port"], float(a.get("seconds", 5)))


def _line_test(c: Commands, a: dict[str, Any]) -> dict[str, Any]:
    return c.api.line_test(a["port"])


def _ping(c: Commands, _a: dict[str, Any]) -> dict[str, Any]:
    return c.api.ping()


def _logs(c: Commands, a: dict[str, Any]) -> dict[str, Any]:
    page = c.api.logs(0, int(a.get("limit", 100)), a.get("level"))
    return {"total": page["total"], "items": page["items"]}


def _capture_start(c: Commands, a: dict[str, Any]) -> dict[str, Any]:
    return c.need_capture().begin(int(a.get("calls", 1)), float(a.get("max_s", 600)))


def _capture_stop(c: Commands, _a: dict[str, Any]) -> dict[str, Any]:
    return c.need_capture().end("stopped by command")


def _update(_c: Commands, _a: dict[str, Any]) -> dict[str, Any]:
    raise Refused(UPDATE_IS_A_JOB)


def _selftest(c: Commands, _a: dict[str, Any]) -> dict[str, Any]:
    checks = selftest(c.api)
    failed = [f"{k.get('port') or ''} {k['check']}".strip() for k in checks if not k["pass"]]
    return {"pass": not failed, "failed": failed, "checks": checks}


SPECS: dict[Name, Spec] = {
    Name.REBOOT: Spec(_reboot, {"properties": {}}, 10),
    Name.RING_TEST: Spec(_ring, {"properties": {
        "port": PORT, "seconds": {"type": "number", "minimum": 1, "maximum": 60}},
        "required": ["port"]}, 15),
    Name.LINE_TEST: Spec(_line_test, {"properties": {"port": PORT}, "required": ["port"]}, 150),
    Name.SELFTEST: Spec(_selftest, {"properties": {}}, 60),
    Name.SIP_PING: Spec(_ping, {"properties": {}}, 15),
    Name.FETCH_LOGS: Spec(_logs, {"properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000}, "level": LEVEL}}, 15),
    Name.CAPTURE_START: Spec(_capture_start, {"properties": {
        "calls": {"type": "integer", "minimum": 1, "maximum": 20},
        "max_s": {"type": "number", "minimum": 1, "maximum": 3600}}}, 15),
    Name.CAPTURE_STOP: Spec(_capture_stop, {"properties": {}}, 20),
    Name.UPDATE_FIRMWARE: Spec(_update, {"properties": {}, "additionalProperties": True}, 10),
}


# ---- the part -----------------------------------------------------------------------------

SEEN = """CREATE TABLE IF NOT EXISTS command_ids (
    id TEXT PRIMARY KEY, issued REAL NOT NULL, received REAL NOT NULL)"""


class Commands:
    """See the module docstring; `max_age_s` (cloud.command_max_age_s) may be set live."""

    def __init__(self, link: Link, api: ApiClient, clock: Clock, db_path: Path, *,
                 max_age_s: float = 300.0, capture: Capture | None = None,
                 workers: int = WORKERS) -> None:
        self.link, self.api, self.clock, self.capture = link, api, clock, capture
        self.max_age_s = max_age_s
        self.lock = threading.Lock()
        self.db = sqlite3.connect(str(db_path), timeout=10.0, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SEEN)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="agent-cmd")
        self.abandon = threading.Event()
        self._next_prune = 0.0
        link.on(Topic.CMD, self.on_command)

    # ---- Part ----
    def tick(self, now: float) -> None:
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            self.prune()

    def connected(self, up: bool) -> None:
        """Nothing to republish: a command answered while offline waits in the link's queue."""

    def stop(self) -> None:
        self.abandon.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            self.db.close()

    def need_capture(self) -> Capture:
        if self.capture is None:
            raise Refused("diagnostic capture is not available in this agent")
        return self.capture

    # ---- inbound (main thread) ----
    def on_command(self, msg: Message) -> None:
        cmd = msg.payload
        try:
            name, args, deadline = self.admit(cmd)
        except Refused as exc:
            self.refuse(msg, str(exc), exc.status)
            return
        log.info("command %s (%s) accepted", cmd["id"], name)
        self.pool.submit(self.execute, msg, name, args, deadline)

    def admit(self, cmd: dict[str, Any]) -> tuple[Name, dict[str, Any], float]:
        """The command's name, checked args and wall-clock deadline; Refused says why not."""
        now, issued = self.clock.wall(), float(cmd["issued"])
        if issued < now - self.max_age_s:
            raise Refused(f"stale: issued {now - issued:.0f} s ago, over the "
                          f"{self.max_age_s:g} s of cloud.command_max_age_s; send it again")
        if issued > now + FUTURE_S:
            raise Refused(f"issued {issued - now:.0f} s in the future: the clocks of the box "
                          f"and the platform differ by over {FUTURE_S:g} s; check NTP on both")
        self.remember(cmd["id"], issued, now)
        if "expires" in cmd and float(cmd["expires"]) <= now:
            raise Refused(f"expired {now - float(cmd['expires']):.0f} s before it could start",
                          Status.EXPIRED)
        if cmd["name"] not in {n.value for n in Name}:
            raise Refused(f"unknown command {cmd['name']!r}; commands: {', '.join(Name)}")
        name = Name(cmd["name"])
        try:
            args = check_args(SPECS[name].args, cmd.get("args") or {})
        except ArgsError as exc:
            raise Refused(f"bad arguments: {exc}") from None
        deadline = float(cmd.get("expires", now + SPECS[name].deadline_s))
        return name, args, deadline

    def remember(self, cmd_id: str, issued: float, now: float) -> None:
        """Record the nonce; Refused when it was seen before (a replay)."""
        with self.lock:
            cur = self.db.execute("INSERT OR IGNORE INTO command_ids VALUES (?, ?, ?)",
                                  (cmd_id, issued, now))
            if cur.rowcount == 1:
                return
            row = self.db.execute("SELECT received FROM command_ids WHERE id = ?",
                                  (cmd_id,)).fetchone()
        when = f" {now - row[0]:.0f} s ago" if row else " before"
        raise Refused(f"replayed: command id {cmd_id} was received{when}; a command runs "
                      "once, send a new id to run it again")

    def prune(self) -> int:
        """Forget ids past the age window: a replay of one is refused as stale anyway."""
        with self.lock:
            return self.db.execute("DELETE FROM command_ids WHERE issued < ?",
                                   (self.clock.wall() - self.max_age_s,)).rowcount

    # ---- answers ----
    def refuse(self, msg: Message, reason: str, status: Status = Status.REFUSED) -> None:
        cmd = msg.payload
        log.warning("command %s (%s) %s: %s", cmd.get("id"), cmd.get("name"), status, reason)
        self.answer(msg, status, error=reason)

    def answer(self, msg: Message, status: Status, *, result: dict[str, Any] | None = None,
               error: str = "") -> None:
        cmd = msg.payload
        out: dict[str, Any] = {"id": cmd["id"], "name": str(cmd["name"])[:64],
                               "status": str(status), "time": self.clock.wall()}
        if result is not None:
            out["result"] = fit(result)
        if error:
            out["error"] = error[:2000]
        self.link.respond(msg, out)

    # ---- a worker thread ----
    def execute(self, msg: Message, name: Name, args: dict[str, Any], deadline: float) -> None:
        cmd_id = msg.payload["id"]
        left = deadline - self.clock.wall()
        if left <= 0:
            self.refuse(msg, f"expired {-left:.0f} s before a worker was free", Status.EXPIRED)
            return
        outcome = run_bounded(lambda: SPECS[name].handler(self, args), self.clock,
                              self.clock.now() + left, self.abandon, f"agent-cmd-{name}")
        if outcome.ending is Ending.DONE:
            log.info("command %s (%s) done", cmd_id, name)
            self.answer(msg, Status.OK, result=dict(outcome.value or {}))
        elif outcome.ending is Ending.TIMED_OUT:
            self.fail(msg, f"no result within its deadline ({left:.0f} s); the API call in "
                      "flight could not be interrupted and may still complete")
        elif outcome.ending is Ending.RAISED:
            self.raised(msg, outcome.error)

    def raised(self, msg: Message, exc: BaseException | None) -> None:
        if isinstance(exc, Refused):
            self.refuse(msg, str(exc), exc.status)
        elif isinstance(exc, CaptureRefused):
            self.refuse(msg, str(exc))
        elif isinstance(exc, ApiError):
            self.fail(msg, str(exc))
        else:
            log.error("command %s failed", msg.payload["id"], exc_info=exc)
            self.fail(msg, f"internal error: {type(exc).__name__}: {exc}")

    def fail(self, msg: Message, error: str) -> None:
        cmd = msg.payload
        log.warning("command %s (%s) failed: %s", cmd["id"], cmd["name"], error)
        self.answer(msg, Status.ERROR, error=error)
