"""The config shadow: the cloud's desired config (retained, versioned) is validated through
the core's control API, saved atomically (a bad document changes nothing) and answered on
config/reported: applied, rejected (field and rule), or confirming -> confirmed /
rolled_back.

Commit-confirmed, as network equipment does it: before applying, the store version is
remembered; the change stands once the MQTT session is up again after it and, when the
box has a SIP account, the core registers, both holding for `hold_s`. Settings that wait
for a core restart (sip.*) get one (POST /restart when idle) so the confirmation covers
them. If the deadline (wall clock, kept in agent.db so an agent restart continues the
countdown) passes first, the remembered version is restored and the reason reported.

All control-API work runs on the part's worker thread; the main thread only hands it
messages, link changes and ticks.
"""

from __future__ import annotations

import copy
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from firmware.agent.protocol import Topic
from firmware.api.client import ApiClient, ApiError, CoreDown
from firmware.core.config import paths
from firmware.core.config.schema import ConfigError

log = logging.getLogger(__name__)

HOLD_S = 5.0  # link (and registration) must hold this long to confirm
CHECK_S = 1.0  # how often a pending confirmation is looked at
RETRY_S = 5.0  # a core that was down, or busy with a call, is asked again after this
REASON = "cloud desired version"  # the store version's reason names the desired version
RESTART_GIVE_UP_S = 3600.0  # a restart with no confirmation waits this long for idle


class State(StrEnum):
    """config/reported states."""

    APPLIED = "applied"
    REJECTED = "rejected"
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"


class Work(StrEnum):
    """What a pending record waits for."""

    CONFIRM = "confirm"  # commit-confirmed: confirm or roll back by the deadline
    RESTART = "restart"  # only a core restart (no confirmation, or after a rollback)


@dataclass
class Pending:
    """A confirmation (or restart) in progress; persisted as JSON in agent.db."""

    work: Work
    version: int  # the desired version
    before: int | None  # the store version to roll back to
    after: int | None  # the store version the apply made (None: not known yet)
    deadline: float  # wall clock
    confirm_s: int
    restart: list[str] = field(default_factory=list)
    restart_asked: bool = False
    sip: bool = False  # the applied config registers with the cloud

    @classmethod
    def from_json(cls, text: str) -> Pending:
        raw = json.loads(text)
        return cls(**{**raw, "work": Work(raw["work"])})


class ShadowDb:
    """The shadow's row in agent.db: last handled version, its report, the pending work."""

    TABLE = """CREATE TABLE IF NOT EXISTS shadow (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER,
        report TEXT,
        pending TEXT)"""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(self.TABLE)
            db.execute("INSERT OR IGNORE INTO shadow (id) VALUES (1)")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10.0)

    def load(self) -> tuple[int | None, dict[str, Any] | None, Pending | None]:
        db = self._db()
        try:
            version, report, pending = db.execute(
                "SELECT version, report, pending FROM shadow WHERE id = 1").fetchone()
        finally:
            db.close()
        return (version, json.loads(report) if report else None,
                Pending.from_json(pending) if pending else None)

    def save(self, version: int | None, report: Mapping[str, Any] | None,
             pending: Pending | None) -> None:
        db = self._db()
        try:
            with db:
                db.execute("UPDATE shadow SET version = ?, report = ?, pending = ? WHERE id = 1",
                           (version, json.dumps(report) if report is not None else None,
                            json.dumps(asdict(pending)) if pending is not None else None))
        finally:
            db.close()


class Clock(Protocol):
    def now(self) -> float: ...
    def wall(self) -> float: ...


class ShadowLink(Protocol):
    @property
    def last_error(self) -> str: ...

    def on(self, t: Topic, handler: Callable[[Any], None]) -> None: ...
    def publish(self, t: Topic, payload: Mapping[str, Any]) -> object: ...


class Rejected(Exception):  # noqa: N818 - an outcome, not a fault
    """A desired document the core refuses: the field and the rule."""

    def __init__(self, field: str | None, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


def _rejected(exc: ApiError) -> Rejected:
    """The core's refusal as {field, rule}: its first problem without the field prefix."""
    rule = (exc.problems or [str(exc)])[0]
    if exc.field:
        rule = rule.removeprefix(f"{exc.field}: ")
    return Rejected(exc.field, rule)


class Shadow:
    """See the module docstring. `background=False` does the work inline (tests)."""

    def __init__(self, link: ShadowLink, api: ApiClient, clock: Clock, db_path: Path, *,
                 confirm_s: int = 120, hold_s: float = HOLD_S, check_s: float = CHECK_S,
                 background: bool = True) -> None:
        self.link, self.api, self.clock = link, api, clock
        self.confirm_s, self.hold_s, self.check_s = confirm_s, hold_s, check_s
        self.db = ShadowDb(db_path)
        self.handled, self.report, self.pending = self.db.load()
        self.background = background
        self.link_up = False
        self.held_since: float | None = None  # clock.now() since every criterion holds
        self.why = ""  # the criterion failing now, for the rollback report
        self.next_check = 0.0
        self.next_try = 0.0  # a core that was down or busy: not before this (clock.now())
        self._desired: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.handlers: dict[Work, Callable[[Pending], None]] = {
            Work.CONFIRM: self._confirm, Work.RESTART: self._restart_only}
        if background:
            self._thread = threading.Thread(target=self._run, name="agent-shadow", daemon=True)
            self._thread.start()
        if self.pending is not None:
            left = self.pending.deadline - clock.wall()
            log.info("shadow: desired version %d: %s pending, deadline in %.0f s",
                     self.pending.version, self.pending.work, left)
            if left <= 0:
                self.why = "the confirmation deadline passed while the agent was not running"
        link.on(Topic.DESIRED, self._on_desired)

    # ---- Part (main thread) ----
    def connected(self, up: bool) -> None:
        self.link_up = up
        self.held_since = None
        self.next_check = 0.0
        if up and self.report is not None:
            self.link.publish(Topic.REPORTED, self.report)  # the platform may have missed it

    def tick(self, now: float) -> None:
        if now < self.next_check or (self._desired is None and self.pending is None):
            return
        self.next_check = now + self.check_s
        if self.background:
            self._wake.set()
        else:
            self.step()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def on_event(self, event: Mapping[str, Any]) -> None:
        """A core event (the pump's thread): registrations and applied configs are looked
        at on the next tick."""
        if event.get("kind") in ("registration", "config_applied"):
            self.next_check = 0.0

    def _on_desired(self, msg: Any) -> None:
        payload = dict(msg.payload)
        with self._lock:
            if self._desired is None or payload["version"] >= self._desired["version"]:
                self._desired = payload  # retained: only the newest matters
        self.next_check = 0.0

    # ---- the worker ----
    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the shadow must outlive one bad round
                log.exception("shadow: a round failed; retrying on the next tick")

    def step(self) -> None:
        """One round: the pending work first (a new desired version waits for it), then
        the newest desired document."""
        if self.clock.now() < self.next_try:
            return
        if self.pending is not None:
            self.handlers[self.pending.work](self.pending)
            return
        with self._lock:
            desired, self._desired = self._desired, None
        if desired is not None and not self._handle(desired):
            with self._lock:  # the core did not answer: keep it unless a newer one came
                if self._desired is None:
                    self._desired = desired

    # ---- a desired version ----
    def _handle(self, desired: dict[str, Any]) -> bool:
        """Apply one desired version; False when the core did not answer (try again)."""
        version = int(desired["version"])
        if self.handled is not None and version <= self.handled:
            if version < self.handled:
                log.info("shadow: desired version %d is older than %d, handled already",
                         version, self.handled)
            if self.report is not None:
                self.link.publish(Topic.REPORTED, self.report)
            return True
        try:
            self._apply(version, desired)
        except Rejected as exc:
            log.warning("shadow: desired version %d rejected: %s: %s", version, exc.field,
                        exc.rule)
            self._finish(version, State.REJECTED, self._store_version(),
                         error={"field": exc.field, "rule": exc.rule})
        except ApiError as exc:  # the core is down or failed: the version is not handled
            log.warning("shadow: desired version %d waits for the core: %s", version, exc)
            self.next_try = self.clock.now() + RETRY_S
            return False
        return True

    def _apply(self, version: int, desired: dict[str, Any]) -> None:
        current = self.api.config()
        before, doc = current.get("version"), copy.deepcopy(current["document"])
        if before is None:  # no kept version yet: keep one, or there is nothing to restore
            before = int(self.api.put_config(doc, "kept before a cloud desired config")
                         ["version"])
        new = self._document(doc, desired)
        try:
            self.api.validate_config(new)
        except CoreDown:
            raise
        except ApiError as exc:
            raise _rejected(exc) from None
        confirm_s = int(desired.get("confirm_s", self.confirm_s))
        sip = _registers(new)
        pending = Pending(Work.CONFIRM, version, before, None,
                          self.clock.wall() + confirm_s, confirm_s, sip=sip)
        if confirm_s:
            self._remember(pending)
        saved = self._save(version, desired, new)
        self._applied(version, confirm_s, pending, saved)

    def _document(self, doc: dict[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
        if "document" in desired:
            return dict(desired["document"])
        for path, value in desired["set"].items():
            try:
                paths.put(doc, path, value)
            except ConfigError as exc:
                rule = exc.problems[0].removeprefix(f"{path}: ")
                raise Rejected(f"set.{path}", rule) from None
        return doc

    def _save(self, version: int, desired: Mapping[str, Any],
              new: dict[str, Any]) -> dict[str, Any]:
        reason = f"{REASON} {version}"
        if desired.get("reason"):
            reason = f"{reason}: {desired['reason']}"[:200]
        try:
            if "set" in desired:
                answer: dict[str, Any] = self.api.patch_config(dict(desired["set"]), reason)
                return answer
            answer = self.api.put_config(new, reason)
            return answer
        except CoreDown:
            raise
        except ApiError as exc:  # changed under us between validate and save
            self._forget()
            raise _rejected(exc) from None

    def _applied(self, version: int, confirm_s: int, pending: Pending,
                 saved: Mapping[str, Any]) -> None:
        after, changed = int(saved["version"]), list(saved.get("changed") or [])
        restart = _restart_paths(saved, changed)
        log.info("shadow: desired version %d saved as store version %d (%d changed%s)",
                 version, after, len(changed), f", restart for {', '.join(restart)}"
                 if restart else "")
        extra: dict[str, Any] = {"restart": restart} if restart else {}
        if not confirm_s or not changed:
            pending = Pending(Work.RESTART, version, None, after,
                              self.clock.wall() + RESTART_GIVE_UP_S, 0, restart)
            self._finish(version, State.APPLIED, after, pending=pending if restart else None,
                         **extra)
            return
        pending.after, pending.restart = after, restart
        self.held_since, self.why = None, ""
        self._finish(version, State.CONFIRMING, after, pending=pending,
                     deadline=round(pending.deadline, 3), **extra)

    # ---- the confirmation ----
    def _confirm(self, p: Pending) -> None:
        if p.after is None and not self._recover(p):
            return
        if p.restart and not p.restart_asked:
            self._ask_restart(p)
        why = self._failing(p)
        now = self.clock.now()
        if not why:
            self.held_since = now if self.held_since is None else self.held_since
            if now - self.held_since >= self.hold_s:
                log.info("shadow: desired version %d confirmed", p.version)
                self._finish(p.version, State.CONFIRMED, p.after)
                return
        else:
            self.held_since, self.why = None, why
        if self.clock.wall() >= p.deadline:
            self._roll_back(p, self.why or f"not stable for {self.hold_s:g} s")

    def _recover(self, p: Pending) -> bool:
        """The agent stopped (or the core went away) during the save: find the store
        version it made by its reason; none means it never happened (the retained desired
        message is applied again). True when the confirmation goes on."""
        try:
            versions = self.api.config_versions()
        except CoreDown:
            self.next_try = self.clock.now() + RETRY_S
            return False
        mine = [v for v in versions if _reason_version(str(v.get("reason", ""))) == p.version
                and int(v["version"]) != p.before]
        if not mine:
            log.info("shadow: desired version %d was not saved; it is applied again",
                     p.version)
            self._forget()
            return False
        p.after = int(mine[-1]["version"])
        self._finish(p.version, State.CONFIRMING, p.after, pending=p,
                     deadline=round(p.deadline, 3))
        return True

    def _failing(self, p: Pending) -> str:
        """The first confirmation criterion that does not hold now ('' when all do)."""
        if not self.link_up:
            error = f" ({self.link.last_error})" if self.link.last_error else ""
            return f"MQTT session did not come back within {p.confirm_s} s{error}"
        if not (p.sip or p.restart):
            return ""
        try:
            status = self.api.status()
        except ApiError as exc:
            return f"the core's control API did not answer ({exc})"
        waiting = set(p.restart) & set(status.get("box", {}).get("restart_required") or [])
        if waiting:
            return f"the core did not restart to take {', '.join(sorted(waiting))}"
        return _registration_problem(status) if p.sip else ""

    def _roll_back(self, p: Pending, why: str) -> None:
        try:
            answer = self.api.rollback(p.before) if p.before is not None else None
        except CoreDown as exc:
            log.warning("shadow: rollback of desired version %d waits for the core: %s",
                        p.version, exc)
            self.next_try = self.clock.now() + RETRY_S
            return
        except ApiError as exc:
            log.error("shadow: rollback of desired version %d to store version %s refused: "
                      "%s", p.version, p.before, exc)
            why = f"{why}; the rollback to store version {p.before} failed too ({exc})"
            answer = None
        store = int(answer["version"]) if answer else self._store_version()
        restart = _restart_paths(answer, list(answer.get("changed") or [])) if answer else []
        log.warning("shadow: desired version %d rolled back to store version %s (now %s): %s",
                    p.version, p.before, store, why)
        follow = Pending(Work.RESTART, p.version, None, store,
                         self.clock.wall() + RESTART_GIVE_UP_S, 0, restart)
        self._finish(p.version, State.ROLLED_BACK, store, pending=follow if restart else None,
                     error={"field": None, "rule": why}, **({"restart": restart}
                                                            if restart else {}))

    # ---- restarts ----
    def _restart_only(self, p: Pending) -> None:
        if self.clock.wall() >= p.deadline:
            log.error("shadow: the core never became idle for a restart; %s wait for one",
                      ", ".join(p.restart))
        elif not self._ask_restart(p):
            return
        self.pending = None
        self.db.save(self.handled, self.report, None)

    def _ask_restart(self, p: Pending) -> bool:
        """POST /restart when idle; True once the core took the request."""
        try:
            self.api.restart("idle")
        except CoreDown:
            self.next_try = self.clock.now() + RETRY_S  # restarting already, or down
            return False
        except ApiError as exc:
            log.info("shadow: restart for %s not yet: %s", ", ".join(p.restart), exc)
            self.next_try = self.clock.now() + RETRY_S
            return False
        log.info("shadow: core restart asked for %s", ", ".join(p.restart))
        p.restart_asked = True
        self.db.save(self.handled, self.report, p)
        return True

    # ---- reports and state ----
    def _remember(self, pending: Pending) -> None:
        """Before the save: a crash from here on still ends in a confirmation or rollback."""
        self.pending = pending
        self.db.save(self.handled, self.report, pending)

    def _forget(self) -> None:
        self.pending = None
        self.db.save(self.handled, self.report, None)

    def _finish(self, version: int, state: State, store_version: int | None, *,
                pending: Pending | None = None, **extra: Any) -> None:
        report = {"version": version, "state": str(state), "time": round(self.clock.wall(), 3),
                  "store_version": store_version, **extra}
        self.handled, self.report, self.pending = version, report, pending
        self.db.save(version, report, pending)
        self.link.publish(Topic.REPORTED, report)

    def _store_version(self) -> int | None:
        try:
            current = [v["version"] for v in self.api.config_versions() if v.get("current")]
        except ApiError:
            return None
        return int(current[-1]) if current else None


def _restart_paths(saved: Mapping[str, Any], changed: list[str]) -> list[str]:
    """The paths of this change that wait for a core restart (not older ones)."""
    return sorted(set(saved.get("restart_required") or []) & set(changed))


def _reason_version(reason: str) -> int | None:
    """The desired version a store version's reason names ("cloud desired version 7: ...")."""
    if not reason.startswith(REASON + " "):
        return None
    head = reason[len(REASON) + 1:].split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _registers(doc: Mapping[str, Any]) -> bool:
    """True when the document registers with the cloud (an edge and a registration)."""
    sip = doc.get("sip") or {}
    return bool(sip.get("edges")) and sip.get("registration", "trunk") != "none"


def _registration_problem(status: Mapping[str, Any]) -> str:
    regs = status.get("registrations") or []
    if not regs:
        edges = (status.get("wan") or {}).get("edges") or []
        down = [str(e.get("uri")) for e in edges if not e.get("ok")]
        where = f" (edges not answering: {', '.join(down)})" if down else ""
        return f"registration failed: no answer to REGISTER yet{where}"
    for reg in regs:
        if reg.get("ok"):
            continue
        if reg.get("code") is None:
            return f"registration failed: no answer yet ({reg.get('account')})"
        return (f"registration failed: {reg['code']} {reg.get('reason') or ''}".rstrip()
                + f" ({reg.get('account')})")
    return ""
