"""Jobs: the cloud's long work on the box (a line test of every port, a log bundle, a
firmware update handed to the update service). One job runs at a time on this part's worker thread, the others wait
QUEUED in order. Every job lives in agent.db (kind, args, state, steps, per-step results,
wall-clock start and deadline), so an agent restart or a reboot resumes it at the step it
was in (steps are idempotent) or times it out when its deadline passed meanwhile.
Progress goes out on jobs/status at every step. A step or a job over its time ends
TIMED_OUT (the step's thread is abandoned, its late result ignored); a cancel stops a
running job at the next step boundary, because an API call in flight cannot be
interrupted (a firmware update's steps also look for it inside: a download stops, an
update the service has not started writing is cancelled there too)."""

from __future__ import annotations

import gzip
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from firmware.agent import download
from firmware.agent.link import Delivery, Link, Message
from firmware.agent.protocol import MAX_PAYLOAD, Topic
from firmware.api.client import ApiClient, ApiError
from firmware.update.client import DEFAULT_SOCKET, UpdateClient, UpdateError
from firmware.update.rauc import file_hash

log = logging.getLogger(__name__)

UPDATE_IS_A_JOB = ("update_firmware is a job, not a command: send jobs/new with kind "
                   "firmware_update and args url (https), sha256, size; its progress comes "
                   "on jobs/status")
POLL_S = 0.05  # how often a waiting worker looks at the clock, the stop and abandon flags
IDLE_WAIT_S = 0.5  # the runner looks for work at least this often
STOP_GRACE_S = 3.0  # stop() lets the step in flight finish for this long, then abandons it
KEEP_S = 30 * 86400.0  # finished, acknowledged jobs are forgotten after this
RESULT_BUDGET = MAX_PAYLOAD - 4096  # bytes of a result, leaving room for the envelope
BUSY_RETRIES, BUSY_WAIT_S = 5, 2.0  # a port busy (a test before a restart still runs)
LOG_PAGE = 1000  # the control API's largest page of GET /logs


class Clock(Protocol):
    def now(self) -> float: ...
    def wall(self) -> float: ...


class FileQueue(Protocol):
    """The outbox's file side (CdrStore.queue_file): moves the file, returns its uuid."""

    def queue_file(self, src: str | Path, label: str,
                   meta: dict[str, Any] | None = None) -> str: ...


class State(StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"


class Kind(StrEnum):
    LINE_TEST = "line_test"
    COLLECT_LOGS = "collect_logs"
    FIRMWARE_UPDATE = "firmware_update"


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED})
TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.IN_PROGRESS, State.FAILED, State.CANCELLED}),
    State.IN_PROGRESS: frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT,
                                  State.CANCELLED}),
    **{s: frozenset() for s in TERMINAL},  # a finished job never moves again
}
DEFAULT_TIMEOUT_S = {Kind.LINE_TEST: 1800, Kind.COLLECT_LOGS: 600, Kind.FIRMWARE_UPDATE: 3600}
DEFAULT_STEP_TIMEOUT_S = {Kind.LINE_TEST: 180, Kind.COLLECT_LOGS: 120,
                          Kind.FIRMWARE_UPDATE: 3600}  # waiting for calls to end is long
MAX_BUNDLE = 1 << 30
PORT = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,31}$"}
LEVEL = {"enum": ["debug", "info", "warning", "error"]}
ARGS: dict[Kind, dict[str, Any]] = {
    Kind.LINE_TEST: {"properties": {
        "ports": {"type": "array", "items": PORT, "minItems": 1, "maxItems": 64,
                  "uniqueItems": True},
        "test_call_s": {"type": "number", "minimum": 0, "maximum": 300}}},
    Kind.COLLECT_LOGS: {"properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": 20000}, "level": LEVEL}},
    Kind.FIRMWARE_UPDATE: {"properties": {
        "url": {"type": "string", "pattern": "^https://[^\\s]{1,2000}$"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "size": {"type": "integer", "minimum": 1, "maximum": MAX_BUNDLE},
        "force": {"type": "boolean"}}, "required": ["url", "sha256", "size"]},
}


# ---- shared with commands.py: argument checks, bounded work, results that fit --------------

class ArgsError(ValueError):
    """An argument that breaks its command's or job's rule; str() is "args.<field>: <rule>"."""


def check_args(schema: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of args valid under `schema` (an object schema; unknown names refused)."""
    full = {"type": "object", "additionalProperties": False, **schema}
    error = best_match(Draft202012Validator(full).iter_errors(dict(args)))
    if error is None:
        return dict(args)
    where = ".".join(["args", *map(str, error.absolute_path)])
    names = dict(schema.get("properties", {}))
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(names)) if isinstance(error.instance, dict) else []
        raise ArgsError(f"{where}.{extra[0] if extra else '?'}: not an argument here; "
                        f"known: {', '.join(names) or 'none'}")
    if error.validator == "required":
        missing = [n for n in error.validator_value if n not in error.instance]
        raise ArgsError(f"{where}.{missing[0] if missing else '?'}: is required")
    raise ArgsError(f"{where}: {error.message}")


class Interrupted(Exception):
    """A step given up because the agent stops: it runs again after the restart."""


class Ending(StrEnum):
    DONE = "done"
    RAISED = "raised"
    TIMED_OUT = "timed out"
    ABANDONED = "abandoned"


@dataclass
class Outcome:
    ending: Ending
    value: Any = None
    error: BaseException | None = None


def run_bounded(fn: Callable[[], Any], clock: Clock, end: float,
                abandon: threading.Event | None = None, name: str = "agent-work") -> Outcome:
    """fn() on its own daemon thread, waited for until clock.now() >= end (TIMED_OUT) or
    `abandon` is set; the thread of a call given up on runs on and its result is dropped."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=name, daemon=True).start()
    while not done.wait(POLL_S):
        if abandon is not None and abandon.is_set():
            return Outcome(Ending.ABANDONED)
        if clock.now() >= end:
            return Outcome(Ending.TIMED_OUT)
    if "error" in box:
        return Outcome(Ending.RAISED, error=box["error"])
    return Outcome(Ending.DONE, box.get("value"))


def size(doc: Any) -> int:
    """Bytes of doc as the link sends it (compact UTF-8 JSON)."""
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False,
                          default=str).encode())


def fit(doc: dict[str, Any], budget: int = RESULT_BUDGET) -> dict[str, Any]:
    """doc, its longest lists halved (and long strings cut) until it encodes within
    `budget` bytes; "truncated": true says something was left out."""
    if size(doc) <= budget:
        return doc
    out: Any = json.loads(json.dumps(doc, default=str))
    for _ in range(64):
        if not _shrink(out):
            break
        if size(out) + 20 <= budget:
            return {**out, "truncated": True}
    return {"truncated": True, "detail": f"the result was {size(doc)} bytes, over the "
                                         f"{budget} byte limit of a message"}


def _shrink(value: Any) -> bool:
    """Halve the biggest list inside value (or cut its longest string); False: nothing left."""
    best: tuple[int, Any, Any] | None = None
    stack = [value]
    while stack:
        node = stack.pop()
        children = list(node.items()) if isinstance(node, dict) else (
            list(enumerate(node)) if isinstance(node, list) else [])
        for key, child in children:
            weight = size(child)
            if isinstance(child, list | str) and len(child) > 1 and (
                    best is None or weight > best[0]):
                best = (weight, node, key)
            if isinstance(child, dict | list):
                stack.append(child)
    if best is None:
        return False
    _, parent, key = best
    item = parent[key]
    parent[key] = item[: len(item) // 2] if isinstance(item, list) else item[: len(item) // 2] + "…"
    return True


# ---- the job record and its table -------------------------------------------------------

@dataclass
class Job:
    id: str
    kind: Kind
    args: dict[str, Any]
    state: State
    issued: float
    created: float
    timeout_s: int
    step_timeout_s: int
    steps: list[str] = field(default_factory=list)
    step: int = 0  # the index of the step to run next
    results: list[Any] = field(default_factory=list)  # one per finished step
    progress: float = 0.0
    text: str = "queued"
    error: str = ""
    result: dict[str, Any] | None = None
    started: float | None = None
    deadline: float | None = None  # wall clock: started + timeout_s
    cancel: bool = False
    acked: bool = False

    def status(self, now: float) -> dict[str, Any]:
        """The jobs/status payload."""
        out: dict[str, Any] = {"id": self.id, "kind": str(self.kind), "state": str(self.state),
                               "progress": round(self.progress, 1), "step": self.text[:200],
                               "time": now}
        if self.result is not None:
            out["result"] = fit(self.result)
        if self.error:
            out["error"] = self.error[:2000]
        return out

    def where(self) -> str:
        """'step 2/3 (fxs2)' for texts."""
        if not self.steps:
            return "before its first step"
        i = min(self.step, len(self.steps) - 1)
        return f"step {i + 1}/{len(self.steps)} ({self.steps[i]})"


SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL,
    issued REAL NOT NULL, created REAL NOT NULL, timeout_s INTEGER NOT NULL,
    step_timeout_s INTEGER NOT NULL, steps TEXT NOT NULL DEFAULT '[]',
    step INTEGER NOT NULL DEFAULT 0, results TEXT NOT NULL DEFAULT '[]',
    progress REAL NOT NULL DEFAULT 0, text TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '', result TEXT, started REAL, deadline REAL,
    finished REAL, cancel INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0)
"""
JSON_COLUMNS = ("args", "steps", "results", "result")
PROGRESS_COLUMNS = ("steps", "step", "results", "progress", "text", "error", "result",
                    "started", "deadline")  # never cancel nor acked: others write those


class JobDb:
    """The jobs table of agent.db; one connection shared by the main and runner threads."""

    def __init__(self, path: Path) -> None:
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None,
                                    check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(SCHEMA)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def get(self, job_id: str) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def in_states(self, states: Iterable[State]) -> list[Job]:
        names = [str(s) for s in states]
        marks = ",".join("?" * len(names))
        return self._read(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq", names)

    def unacked(self) -> list[Job]:
        return self._read("SELECT * FROM jobs WHERE acked = 0 ORDER BY seq", ())

    def next_runnable(self) -> Job | None:
        """A job left IN_PROGRESS (resumed first), else the oldest QUEUED."""
        rows = self._read("SELECT * FROM jobs WHERE state IN ('IN_PROGRESS', 'QUEUED') "
                          "ORDER BY state = 'QUEUED', seq LIMIT 1", ())
        return rows[0] if rows else None

    def insert(self, job: Job) -> bool:
        with self.lock:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO jobs (id, kind, args, state, issued, created, timeout_s,"
                " step_timeout_s, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, str(job.kind), json.dumps(job.args), str(job.state), job.issued,
                 job.created, job.timeout_s, job.step_timeout_s, job.text))
            return cur.rowcount == 1

    def update(self, job: Job, was: State, finished: float | None = None) -> bool:
        """Write job's progress columns and state, only if the row is still in `was`."""
        values = [json.dumps(getattr(job, c)) if c in JSON_COLUMNS else getattr(job, c)
                  for c in PROGRESS_COLUMNS]
        sets = ", ".join(f"{c} = ?" for c in PROGRESS_COLUMNS)
        with self.lock:
            cur = self.conn.execute(
                f"UPDATE jobs SET {sets}, state = ?, acked = 0, finished = ? "
                "WHERE id = ? AND state = ?",
                (*values, str(job.state), finished, job.id, str(was)))
            return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> bool:
        with self.lock:
            cur = self.conn.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND state = ?",
                                    (job_id, str(State.IN_PROGRESS)))
            return cur.rowcount == 1

    def mark_acked(self, job_id: str, state: State) -> None:
        with self.lock:
            self.conn.execute("UPDATE jobs SET acked = 1 WHERE id = ? AND state = ?",
                              (job_id, str(state)))

    def prune(self, before: float) -> int:
        terminal = ",".join(f"'{s}'" for s in TERMINAL)
        with self.lock:
            return self.conn.execute(f"DELETE FROM jobs WHERE acked = 1 AND state IN "
                                     f"({terminal}) AND finished < ?", (before,)).rowcount

    def _read(self, sql: str, params: Iterable[Any]) -> list[Job]:
        with self.lock:
            rows = self.conn.execute(sql, tuple(params)).fetchall()
        return [_job(r) for r in rows]


def _job(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], kind=Kind(row["kind"]), args=json.loads(row["args"]),
               state=State(row["state"]), issued=row["issued"], created=row["created"],
               timeout_s=row["timeout_s"], step_timeout_s=row["step_timeout_s"],
               steps=json.loads(row["steps"]), step=row["step"],
               results=json.loads(row["results"]), progress=row["progress"], text=row["text"],
               error=row["error"],
               result=json.loads(row["result"]) if row["result"] is not None else None,
               started=row["started"], deadline=row["deadline"], cancel=bool(row["cancel"]),
               acked=bool(row["acked"]))


# ---- what each kind does ------------------------------------------------------------------

class Work(Protocol):
    """A kind's steps: planned once when the job starts, each idempotent, then a verdict."""

    def plan(self, job: Job) -> list[str]: ...
    def run(self, job: Job, index: int) -> Any: ...
    def text(self, job: Job, index: int) -> str: ...
    def share(self, job: Job, index: int) -> float: ...
    def finish(self, job: Job) -> tuple[State, dict[str, Any], str]: ...


def even(job: Job, index: int) -> float:
    """The progress (0..100) at the start of step `index` when all steps weigh the same."""
    return 100.0 * index / max(1, len(job.steps))


class LineTestWork:
    """One step per port (args.ports, else every FXS and FXO port of GET /status):
    POST /diag/line-test; a port the core could not test is that port's error."""

    def __init__(self, api: ApiClient, sleep: Callable[[float], bool]) -> None:
        self.api, self.sleep = api, sleep

    def plan(self, job: Job) -> list[str]:
        ports = job.args.get("ports")
        if ports:
            return [str(p) for p in ports]
        return [p["name"] for p in self.api.status()["ports"] if p.get("kind") in ("fxs", "fxo")]

    def run(self, job: Job, index: int) -> dict[str, Any]:
        port = job.steps[index]
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return self.api.line_test(port, float(job.args.get("test_call_s", 0.0)))
            except ApiError as exc:
                if exc.status != 409 or "busy" not in str(exc) or attempt == BUSY_RETRIES:
                    return {"port": port, "error": str(exc)}
                if self.sleep(BUSY_WAIT_S):  # a test of ours before a restart still runs
                    raise Interrupted(f"the agent stopped while {port} was busy") from None
        return {"port": port, "error": "busy"}  # not reached: the last attempt returns

    def text(self, job: Job, index: int) -> str:
        return f"line test of {job.steps[index]}"

    def share(self, job: Job, index: int) -> float:
        return even(job, index)

    def finish(self, job: Job) -> tuple[State, dict[str, Any], str]:
        ports = {r.get("port", name): r for name, r in zip(job.steps, job.results, strict=False)}
        failed = [f"{p} ({r['error']})" for p, r in ports.items() if "error" in r]
        result = {"ports": ports, "pass": not failed and all(
            r.get("pass", True) is not False for r in ports.values())}
        if failed:
            return State.FAILED, result, "could not test " + "; ".join(failed)
        return State.SUCCEEDED, result, ""


class LogStep(StrEnum):
    CORE = "core logs"
    AGENT = "agent logs"
    BUNDLE = "bundle"


class CollectLogsWork:
    """The core's logs (GET /logs, page by page), the agent's own recent lines when the
    app gives a source, one gzip JSON-lines bundle (oldest first, each line's "origin"
    "core" or "agent") queued in the outbox for upload."""

    def __init__(self, api: ApiClient, store: FileQueue, work_dir: Path,
                 agent_log: Callable[[], Iterable[Mapping[str, Any]]] | None) -> None:
        self.api, self.store, self.work_dir, self.agent_log = api, store, work_dir, agent_log

    def plan(self, job: Job) -> list[str]:
        steps = [LogStep.CORE] + ([LogStep.AGENT] if self.agent_log else []) + [LogStep.BUNDLE]
        return [str(s) for s in steps]

    def part(self, job: Job, step: str) -> Path:
        return self.work_dir / f"job-{job.id}.{step.split()[0]}.jsonl"

    def run(self, job: Job, index: int) -> dict[str, Any]:
        step = LogStep(job.steps[index])
        if step is LogStep.CORE:
            return self.write(job, step, self.core_lines(job))
        if step is LogStep.AGENT:
            own = self.agent_log() if self.agent_log is not None else []
            return self.write(job, step, [{**r, "origin": "agent"} for r in own])
        return self.bundle(job)

    def core_lines(self, job: Job) -> list[dict[str, Any]]:
        limit, level = int(job.args.get("limit", 5000)), job.args.get("level")
        lines: list[dict[str, Any]] = []
        while len(lines) < limit:
            page = self.api.logs(len(lines), min(LOG_PAGE, limit - len(lines)), level)
            lines += page["items"]
            if not page["items"] or len(lines) >= int(page["total"]):
                break
        return [{**r, "origin": "core"} for r in reversed(lines)]  # oldest first

    def write(self, job: Job, step: LogStep, lines: list[dict[str, Any]]) -> dict[str, Any]:
        path = self.part(job, step)
        path.write_text("".join(json.dumps(r, default=str) + "\n" for r in lines))
        return {"lines": len(lines)}

    def bundle(self, job: Job) -> dict[str, Any]:
        parts = [self.part(job, s) for s in job.steps if s != LogStep.BUNDLE]
        path = self.work_dir / f"logs-{job.id}.jsonl.gz"
        lines = 0
        with gzip.open(path, "wb") as out:
            for part in parts:
                data = part.read_bytes() if part.exists() else b""
                lines += data.count(b"\n")
                out.write(data)
        nbytes = path.stat().st_size
        uuid = self.store.queue_file(path, "logs", {"job": job.id, "lines": lines,
                                                    "level": job.args.get("level")})
        for part in parts:
            part.unlink(missing_ok=True)
        return {"file": uuid, "size": nbytes, "lines": lines}

    def text(self, job: Job, index: int) -> str:
        return {LogStep.CORE: "reading the core's logs", LogStep.AGENT: "the agent's own logs",
                LogStep.BUNDLE: "writing and queuing the bundle"}[LogStep(job.steps[index])]

    def share(self, job: Job, index: int) -> float:
        return even(job, index)

    def finish(self, job: Job) -> tuple[State, dict[str, Any], str]:
        return State.SUCCEEDED, dict(job.results[-1]), ""


class StepCancelled(Exception):
    """A cancel that took effect inside a step: the job ends CANCELLED (str() the text)."""


class StepFailed(Exception):
    """A step's plain failure: str() is the job's error."""


class FwStep(StrEnum):
    DOWNLOAD = "download"
    INSTALL = "install"


class UpdateOutcome(StrEnum):
    """The update service's phases after a reboot into the new slot; the job's
    result.outcome (UNKNOWN: another update came since and its state is gone)."""

    GOOD = "GOOD"
    ROLLED_BACK = "ROLLED_BACK"
    UNKNOWN = "UNKNOWN"


DOWNLOAD_SHARE = 40.0  # the download is 0..40 % of the job, the install 40..100 %
HANDED_OVER = ("REBOOTING", "TRIAL", "GOOD", "ROLLED_BACK")  # the job's part is done
CANCELLABLE = ("CHECKING", "WAITING")  # the update service drops these on cancel
UPDATE_POLL_S = 0.5
OUTCOME_CHECK_S = 10.0  # an idle runner asks the update service this often, while a job waits
UNANSWERED_LIMIT = 60  # polls the update service may miss in a row (30 s) during a job


class FirmwareUpdateWork:
    """Download the bundle (args url, sha256, size) to data/update/incoming/<sha256>.raucb,
    then hand it to the update service (job = this job's id) and follow its phases until
    REBOOTING. Both steps are idempotent: a bundle already there with the right hash is
    not fetched again, and an install step that runs again after an agent restart or the
    reboot first looks whether the update service already has this job."""

    def __init__(self, jobs: Jobs, incoming: Path, fleet_ca: Path | None) -> None:
        self.jobs, self.incoming, self.fleet_ca = jobs, incoming, fleet_ca

    def plan(self, job: Job) -> list[str]:
        return [str(FwStep.DOWNLOAD), str(FwStep.INSTALL)]

    def text(self, job: Job, index: int) -> str:
        return {FwStep.DOWNLOAD: "downloading the bundle",
                FwStep.INSTALL: "handing it to the update service"}[FwStep(job.steps[index])]

    def share(self, job: Job, index: int) -> float:
        return (0.0, DOWNLOAD_SHARE, 100.0)[min(index, 2)]

    def run(self, job: Job, index: int) -> dict[str, Any]:
        if FwStep(job.steps[index]) is FwStep.DOWNLOAD:
            return self.download(job)
        return self.install(job, str(job.results[0]["file"]))

    def finish(self, job: Job) -> tuple[State, dict[str, Any], str]:
        return State.SUCCEEDED, {**job.results[0], **job.results[-1]}, ""

    # ---- download ----
    def download(self, job: Job) -> dict[str, Any]:
        sha, size, url = str(job.args["sha256"]), int(job.args["size"]), str(job.args["url"])
        dest = self.incoming / f"{sha}.raucb"
        summary = {"file": str(dest), "sha256": sha, "size": size}
        if dest.is_file() and dest.stat().st_size == size and file_hash(dest) == sha:
            return {**summary, "reused": True}
        self.prune(keep=dest)
        shown = [-1]

        def progress(got: int) -> None:
            pct = int(100 * got / size)
            if pct != shown[0]:
                shown[0] = pct
                self.jobs.report(job, DOWNLOAD_SHARE * got / size,
                                 f"1/2: downloading the bundle ({pct} %, {got} of {size} bytes)")

        try:
            download.fetch(url, dest, sha, size, download.tls_context(self.fleet_ca),
                           progress=progress, should_stop=lambda: self.should_stop(job))
        except download.DownloadError as exc:
            raise StepFailed(str(exc)) from None
        except download.Stopped:
            self.stopped(job, "the download stopped")
        return summary

    def should_stop(self, job: Job) -> bool:
        return self.jobs.stopping.is_set() or self.jobs.cancelled(job.id)

    def stopped(self, job: Job, what: str) -> None:
        """Raise what ends the step: the agent stops (Interrupted) or a cancel came."""
        if self.jobs.stopping.is_set():
            raise Interrupted(f"{what}: the agent stops")
        raise StepCancelled(f"cancelled: {what}")

    def prune(self, keep: Path) -> None:
        """Bundles of earlier jobs and torn downloads go before a new download."""
        if not self.incoming.is_dir():
            return
        for path in self.incoming.iterdir():
            if path != keep and path.name.endswith((".raucb", ".raucb.part")):
                path.unlink(missing_ok=True)

    # ---- install ----
    def install(self, job: Job, bundle: str) -> dict[str, Any]:
        client = self.jobs.updater()
        st = self.ask(lambda: client.status(), "the update service's status")
        if st.get("job") != job.id:
            force = bool(job.args.get("force", False))
            st = self.ask(lambda: client.install(bundle, "agent", force=force, job=job.id),
                          "the update service refused the bundle")
        return self.follow(job, client, st)

    def follow(self, job: Job, client: UpdateClient, st: dict[str, Any]) -> dict[str, Any]:
        """Poll the update service until it reboots (the job's part done) or fails."""
        misses, told = 0, False
        while True:
            phase = str(st.get("phase", ""))
            if st.get("job") not in (None, job.id):
                raise StepFailed(f"the update service now runs another update (job "
                                 f"{st.get('job')}, from {st.get('source')})")
            if phase in HANDED_OVER:
                return _installed(st)
            if phase in ("FAILED", "IDLE"):
                raise StepFailed(f"the update service: {st.get('reason') or phase}: "
                                 f"{st.get('message') or 'the update was dropped'}")
            self.jobs.report(job, DOWNLOAD_SHARE + (100 - DOWNLOAD_SHARE) * float(
                st.get("progress") or 0) / 100, f"2/2: {phase.lower()}: {st.get('message', '')}")
            if self.jobs.cancelled(job.id) and not told:
                if phase in CANCELLABLE:
                    self.ask(lambda: client.cancel(), "the update service refused the cancel")
                    raise StepCancelled(f"cancelled while {phase}: the update service "
                                        "dropped the update")
                told = True
                self.jobs.report(job, job.progress, f"2/2: cannot cancel now: {phase.lower()}")
            if self.jobs.stopping.wait(UPDATE_POLL_S):
                raise Interrupted("the agent stops while the update service works; the job "
                                  "follows it again after the restart")
            try:
                st, misses = client.status(), 0
            except UpdateError as exc:
                misses += 1
                if misses >= UNANSWERED_LIMIT:
                    raise StepFailed(f"the update service stopped answering: {exc}") from None

    @staticmethod
    def ask(call: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
        """One call to the update service; its refusal as the step's error (with reason)."""
        try:
            return call()
        except UpdateError as exc:
            raise StepFailed(f"{what}: {exc.reason}: {exc}") from None


def _outcome_of(job: Job, st: Mapping[str, Any]) -> dict[str, Any] | None:
    """The outcome fields for job's result from the update state (None: not known yet)."""
    if st.get("job") != job.id:
        return {"outcome": str(UpdateOutcome.UNKNOWN), "reason": "",
                "message": "the update service has since worked on another update"}
    if st.get("phase") not in set(UpdateOutcome):
        return None  # still rebooting or in its trial boot
    return {"outcome": st.get("phase"), "reason": st.get("reason") or "",
            "message": st.get("message") or ""}


def _installed(st: Mapping[str, Any]) -> dict[str, Any]:
    """The install step's result from the update service's state."""
    out = {"phase": st.get("phase"), "version_from": st.get("version_from"),
           "version_to": st.get("version_to")}
    if st.get("phase") in set(UpdateOutcome):
        out.update(outcome=st.get("phase"), reason=st.get("reason") or "",
                   message=st.get("message") or "")
    return {k: v for k, v in out.items() if v is not None}


# ---- the part -----------------------------------------------------------------------------

class Jobs:
    """See the module docstring. Handlers run on the main thread; jobs on `runner`."""

    def __init__(self, link: Link, api: ApiClient, clock: Clock, db_path: Path,
                 store: FileQueue, *,
                 agent_log: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
                 stop_grace_s: float = STOP_GRACE_S, update: UpdateClient | None = None,
                 update_socket: str | None = None, fleet_ca: str | Path | None = None,
                 incoming: Path | None = None) -> None:
        """`update` (or one on `update_socket`, default the service's socket) takes the
        firmware bundles; downloads trust the system's CAs plus `fleet_ca` (default
        <data>/agent/broker-ca.pem) and land in `incoming` (<data>/update/incoming)."""
        self.link, self.api, self.clock = link, api, clock
        self._update, self._update_socket = update, update_socket
        self.db = JobDb(db_path)
        self.stop_grace_s = stop_grace_s
        self.stopping, self.abandon, self.wake = (threading.Event(), threading.Event(),
                                                  threading.Event())
        self.work: dict[Kind, Work] = {
            Kind.LINE_TEST: LineTestWork(api, self.stopping.wait),
            Kind.COLLECT_LOGS: CollectLogsWork(api, store, db_path.parent, agent_log),
            Kind.FIRMWARE_UPDATE: FirmwareUpdateWork(
                self, incoming or db_path.parent.parent / "update" / "incoming",
                Path(fleet_ca) if fleet_ca else db_path.parent / "broker-ca.pem"),
        }
        self._next_outcome = 0.0
        self.deliveries: dict[str, tuple[State, Delivery]] = {}
        self.deliveries_lock = threading.Lock()
        self.intake = threading.Lock()
        link.on(Topic.JOBS, self.on_new)
        link.on(Topic.JOB_CANCEL, self.on_cancel)
        self.db.prune(clock.wall() - KEEP_S)
        self.time_out_overdue()
        self.runner = threading.Thread(target=self.loop, name="agent-jobs", daemon=True)
        self.runner.start()

    # ---- Part ----
    def tick(self, now: float) -> None:
        """Note which terminal statuses the broker acknowledged (not republished again)."""
        with self.deliveries_lock:
            items = list(self.deliveries.items())
        for job_id, (state, delivery) in items:
            if delivery.done or delivery.failed:  # failed: republished at the next connect
                if delivery.done:
                    self.db.mark_acked(job_id, state)
                with self.deliveries_lock:
                    if self.deliveries.get(job_id, (None, None))[1] is delivery:
                        del self.deliveries[job_id]

    def connected(self, up: bool) -> None:
        """On every (re)connect: the status of every job the platform may have missed."""
        if not up:
            return
        unfinished = self.db.in_states([State.QUEUED, State.IN_PROGRESS])
        unacked = [j for j in self.db.unacked() if j.state in TERMINAL]
        for job in sorted(unfinished + unacked, key=lambda j: j.created):
            self.publish(job)

    def stop(self) -> None:
        """End the runner: the step in flight gets stop_grace_s, then is abandoned (the job
        stays IN_PROGRESS at that step and is re-run after the restart)."""
        self.stopping.set()
        self.wake.set()
        self.runner.join(self.stop_grace_s)
        if self.runner.is_alive():
            self.abandon.set()
            self.runner.join(2.0)
        if not self.runner.is_alive():
            self.db.close()

    # ---- inbound (main thread) ----
    def on_new(self, msg: Message) -> None:
        p = msg.payload
        known = self.db.get(p["id"])
        if known is not None:
            log.info("job %s (%s) was received before: answering its status (%s)",
                     known.id, known.kind, known.state)
            self.publish(known)
            return
        kind, args = Kind(p["kind"]), dict(p.get("args") or {})
        refusal = self.refusal(kind, args)
        wait = 0 if refusal else int(args.get("test_call_s", 0))
        job = Job(id=p["id"], kind=kind, args=args, state=State.QUEUED,
                  issued=float(p["issued"]), created=self.clock.wall(),
                  timeout_s=int(p.get("timeout_s") or DEFAULT_TIMEOUT_S[kind]),
                  step_timeout_s=int(p.get("step_timeout_s")
                                     or DEFAULT_STEP_TIMEOUT_S[kind] + wait))
        with self.intake:  # the runner takes it only once QUEUED is published
            if not self.db.insert(job):
                return
            if refusal:
                self.end(job, State.FAILED, refusal, "refused")
                return
            log.info("job %s (%s) queued", job.id, job.kind)
            self.publish(job)
        self.wake.set()

    @staticmethod
    def refusal(kind: Kind, args: dict[str, Any]) -> str:
        """Why a job cannot run at all ("" when it can)."""
        try:
            check_args(ARGS[kind], args)
        except ArgsError as exc:
            return str(exc)
        return ""

    def on_cancel(self, msg: Message) -> None:
        job = self.db.get(msg.payload["id"])
        if job is None:
            log.warning("jobs/cancel: no job %s on this box; nothing cancelled", msg.payload["id"])
            return
        if job.state is State.QUEUED:
            if self.end(job, State.CANCELLED, "", "cancelled before it started"):
                return
            job = self.db.get(job.id) or job  # it started meanwhile
        if job.state is State.IN_PROGRESS and self.db.request_cancel(job.id):
            log.info("job %s: cancel requested at %s", job.id, job.where())
            job.text = (f"cancelling after {job.where()}: the API call in flight cannot "
                        "be interrupted")
            self.publish(job)  # the runner writes the row; this text is only published
            return
        self.publish(self.db.get(job.id) or job)  # finished already: its status again

    # ---- for the work of a job (its thread) ----
    def updater(self) -> UpdateClient:
        if self._update is None:
            self._update = UpdateClient(self._update_socket or DEFAULT_SOCKET)
        return self._update

    def cancelled(self, job_id: str) -> bool:
        job = self.db.get(job_id)
        return job is not None and job.cancel

    def report(self, job: Job, progress: float, text: str) -> None:
        """Progress inside a step: written and published while the job is IN_PROGRESS."""
        current = self.db.get(job.id)
        if current is None or current.state is not State.IN_PROGRESS:
            return
        current.progress, current.text = round(min(100.0, max(0.0, progress)), 1), text[:200]
        job.progress = current.progress
        if self.db.update(current, State.IN_PROGRESS):
            self.publish(current)

    def note_outcomes(self) -> None:
        """After the reboot: a firmware_update job SUCCEEDED at REBOOTING gets the update's
        outcome (GOOD / ROLLED_BACK) in its result and its status is sent again."""
        now = self.clock.wall()
        waiting = [j for j in self.db.in_states([State.SUCCEEDED])
                   if j.kind is Kind.FIRMWARE_UPDATE and "outcome" not in (j.result or {})]
        if not waiting:
            return
        try:
            st = self.updater().status()
        except UpdateError as exc:
            log.debug("update outcome: the update service does not answer (%s)", exc)
            return
        for job in waiting:
            outcome = _outcome_of(job, st)
            if outcome is None:
                continue
            new = replace(job, result={**(job.result or {}), **outcome})
            if self.db.update(new, State.SUCCEEDED, finished=now):
                log.info("job %s (firmware_update): the update ended %s", job.id,
                         outcome["outcome"])
                self.publish(new)

    # ---- state changes ----
    def end(self, job: Job, state: State, error: str, text: str,
            result: dict[str, Any] | None = None) -> bool:
        """Move job to a terminal state (if the table allows it from where it is)."""
        if state not in TRANSITIONS[job.state]:
            log.warning("job %s: %s -> %s is not a transition; ignored", job.id, job.state,
                        state)
            return False
        was = job.state
        new = replace(job, state=state, error=error, text=text, result=result,
                      progress=100.0 if state is State.SUCCEEDED else job.progress)
        if not self.db.update(new, was, finished=self.clock.wall()):
            return False
        log_fn = log.info if state is State.SUCCEEDED else log.warning
        log_fn("job %s (%s): %s%s", job.id, job.kind, state, f": {error}" if error else "")
        self.publish(new)
        return True

    def publish(self, job: Job) -> None:
        delivery = self.link.publish(Topic.JOB_STATUS, job.status(self.clock.wall()))
        if job.state in TERMINAL:
            with self.deliveries_lock:
                self.deliveries[job.id] = (job.state, delivery)

    def time_out_overdue(self) -> None:
        """At start: a job whose deadline passed while the agent was down is TIMED_OUT."""
        now = self.clock.wall()
        for job in self.db.in_states([State.IN_PROGRESS]):
            if job.deadline is not None and now >= job.deadline:
                self.end(job, State.TIMED_OUT, "the job's deadline passed while the agent "
                         f"was not running (it was at {job.where()})", f"timed out at {job.where()}")
            else:
                log.info("job %s (%s): resuming at %s", job.id, job.kind, job.where())

    # ---- the runner thread ----
    def loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            with self.intake:
                job = self.db.next_runnable()
            if job is None:
                self.idle()
                continue
            try:
                self.run(job)
            except Exception as exc:  # noqa: BLE001 - one job's bug must not stop the others
                log.exception("job %s (%s) failed unexpectedly", job.id, job.kind)
                current = self.db.get(job.id)
                if current is not None:
                    self.end(current, State.FAILED, f"internal error: {type(exc).__name__}: "
                             f"{exc}", "failed")

    def idle(self) -> None:
        """No job to run: now and then, the outcome of an update the box rebooted for."""
        if self.clock.now() >= self._next_outcome:
            self._next_outcome = self.clock.now() + OUTCOME_CHECK_S
            try:
                self.note_outcomes()
            except Exception:  # noqa: BLE001 - the runner must keep running
                log.exception("update outcome check failed")
        self.wake.wait(IDLE_WAIT_S)

    def run(self, job: Job) -> None:
        work = self.work[job.kind]
        if job.state is State.QUEUED:
            started = self.begin(job, work)
            if started is None:
                return
            job = started
        while job.step < len(job.steps):
            if self.stopping.is_set():
                return
            job = self.db.get(job.id) or job  # a cancel may have come meanwhile
            if self.at_boundary(job):
                return
            moved = self.one_step(job, work)
            if moved is None:
                return
            job = moved
        state, result, error = work.finish(job)
        self.end(job, state, error, "done" if state is State.SUCCEEDED else "failed", result)

    def begin(self, job: Job, work: Work) -> Job | None:
        """QUEUED -> IN_PROGRESS: the planned steps, the start time and the deadline."""
        now = self.clock.wall()
        outcome = run_bounded(lambda: work.plan(job), self.clock,
                              self.clock.now() + job.step_timeout_s, self.abandon, "agent-job-plan")
        if outcome.ending is Ending.ABANDONED:
            return None
        if outcome.ending is not Ending.DONE or not outcome.value:
            why = ("no steps: nothing to do on this box" if outcome.ending is Ending.DONE else
                   f"could not plan the steps: {outcome.error or 'no answer in time'}")
            self.end(job, State.FAILED, why, "failed")
            return None
        started = replace(job, state=State.IN_PROGRESS, started=now, deadline=now + job.timeout_s,
                          steps=list(outcome.value), text="started")
        if not self.db.update(started, State.QUEUED):
            return None  # cancelled meanwhile
        log.info("job %s (%s) started: %s", job.id, job.kind, ", ".join(started.steps))
        return started

    def at_boundary(self, job: Job) -> bool:
        """Between steps: a cancel or a passed deadline ends the job here (True)."""
        if job.cancel:
            self.end(job, State.CANCELLED, "", f"cancelled before {job.where()}")
            return True
        if job.deadline is not None and self.clock.wall() >= job.deadline:
            self.end(job, State.TIMED_OUT, f"the job took over its {job.timeout_s} s",
                     f"timed out before {job.where()}")
            return True
        return False

    def one_step(self, job: Job, work: Work) -> Job | None:
        """Announce, run (bounded) and record step job.step; None when the job ended or
        the runner stops."""
        i, n = job.step, len(job.steps)
        job.text = f"{i + 1}/{n}: {work.text(job, i)}"
        job.progress = round(work.share(job, i), 1)
        self.db.update(job, State.IN_PROGRESS)
        self.publish(job)
        step_end = self.clock.now() + job.step_timeout_s
        job_end = self.clock.now() + ((job.deadline or float("inf")) - self.clock.wall())
        outcome = run_bounded(lambda: work.run(job, i), self.clock, min(step_end, job_end),
                              self.abandon, f"agent-job-{job.kind}")
        if outcome.ending is Ending.ABANDONED or isinstance(outcome.error, Interrupted):
            return None
        current = self.db.get(job.id)
        if current is None or current.state is not State.IN_PROGRESS:
            return None
        if outcome.ending is Ending.TIMED_OUT:
            what = (f"step {i + 1}/{n} ({job.steps[i]}) took over its {job.step_timeout_s} s"
                    if step_end <= job_end else f"the job took over its {job.timeout_s} s")
            self.end(current, State.TIMED_OUT, what + "; its late result is ignored",
                     f"timed out at {job.where()}")
            return None
        if isinstance(outcome.error, StepCancelled):
            self.end(current, State.CANCELLED, "", str(outcome.error))
            return None
        if outcome.ending is Ending.RAISED:
            self.end(current, State.FAILED, f"step {i + 1}/{n} ({job.steps[i]}): "
                     f"{outcome.error}", f"failed at {job.where()}")
            return None
        current.results = [*current.results[:i], outcome.value]
        current.step, current.progress = i + 1, round(work.share(job, i + 1), 1)
        self.db.update(current, State.IN_PROGRESS)
        return current
