"""Jobs end to end: a platform client sends jobs/new and jobs/cancel through a real
Mosquitto; the agent's Jobs part (real Link, real agent.db) runs them against a real sim
core and reports on jobs/status; the outbox is the core's real CdrStore."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.agent.jobs import Jobs, State
from firmware.agent.link import Link
from firmware.agent.protocol import Topic, topic
from firmware.api.client import ApiError
from firmware.cdr import CdrStore
from foundation.clock import FakeClock, MonotonicClock
from lab.mosquitto import PlatformClient
from lab.wait import wait_until
from tests.agent.conftest import Core

Clock = MonotonicClock | FakeClock


class Box:
    """One run of the agent: a Link and a Jobs part, the app's main loop on a thread."""

    def __init__(self, link: Link, core: Core, db: Path, clock: Clock, store: CdrStore,
                 **kw: Any) -> None:
        self.link, self.clock = link, clock
        self.jobs = Jobs(link, core.api, clock, db, store, **kw)
        link.on_connect(self.jobs.connected)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        link.start()
        wait_until(lambda: link.subscribed, 10, "the jobs subscriptions")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.link.poll(0.05)
            self.jobs.tick(self.clock.now())

    def close(self) -> None:
        """The agent stops (the app stops the parts, then the link)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        self.jobs.stop()
        self.link.stop()


class Cloud:
    """The platform's side of jobs."""

    def __init__(self, client: PlatformClient, device: str) -> None:
        self.client, self.device = client, device
        client.subscribe(topic(device, Topic.JOB_STATUS))

    def new(self, kind: str, args: dict[str, Any] | None = None, *, job_id: str = "",
            **extra: Any) -> str:
        job_id = job_id or str(uuid.uuid4())
        body: dict[str, Any] = {"id": job_id, "kind": kind, "issued": time.time(), **extra}
        if args is not None:
            body["args"] = args
        self.client.publish(topic(self.device, Topic.JOBS), body)
        return job_id

    def cancel(self, job_id: str) -> None:
        self.client.publish(topic(self.device, Topic.JOB_CANCEL),
                            {"id": job_id, "issued": time.time()})

    def statuses(self, job_id: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.client.messages(topic(self.device, Topic.JOB_STATUS))
                if m.json()["id"] == job_id]

    def wait(self, job_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
             what: str = "a status") -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((s for s in self.statuses(job_id) if pred(s)), None)
        return wait_until(found, timeout, f"{what} of job {job_id}",
                          detail=lambda: [(s["state"], s["step"]) for s in self.statuses(job_id)])

    def final(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait(job_id, lambda s: s["state"] not in ("QUEUED", "IN_PROGRESS"),
                         timeout, "the final status")


Setup = Callable[..., tuple[Box, Cloud]]


@pytest.fixture
def store(core: Core) -> Iterator[CdrStore]:
    s = CdrStore(core.data_dir / "cdr.db")
    yield s
    s.close()


@pytest.fixture
def setup(device_link: Callable[..., Link], platform_client: Callable[..., PlatformClient],
          core: Core, store: CdrStore, tmp_path: Path) -> Iterator[Setup]:
    boxes: list[Box] = []

    def make(device: str, clock: Clock | None = None, cloud: bool = True,
             **kw: Any) -> tuple[Box, Cloud]:
        platform = Cloud(platform_client(), device) if cloud else None
        box = Box(device_link(device, start=False), core, tmp_path / "agent.db",
                  clock or MonotonicClock(), store, **kw)
        boxes.append(box)
        return box, platform  # type: ignore[return-value]

    yield make
    for box in boxes:
        box.close()


def _row(db: Path, job_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row)
    finally:
        conn.close()


def _line_tests_started(core: Core, since: float, port: str) -> int:
    items = core.api.logs(0, 1000)["items"]
    return sum(1 for r in items if r["time"] >= since
               and r["message"] == f"{port}: line test started through the control API")


def _lines(core: Core) -> list[str]:
    return [p["name"] for p in core.api.status()["ports"] if p["kind"] in ("fxs", "fxo")]


# ---- a line test of every port -------------------------------------------------------------

def test_a_line_test_job_over_every_port(setup: Setup, core: Core) -> None:
    _, cloud = setup("job-all")
    job = cloud.new("line_test")
    final = cloud.final(job)
    assert final["state"] == "SUCCEEDED" and final["progress"] == 100, final
    states = cloud.statuses(job)
    assert states[0]["state"] == "QUEUED"
    running = [s for s in states if s["state"] == "IN_PROGRESS"]
    ports = _lines(core)
    assert [s["step"] for s in running] == [
        f"{i + 1}/{len(ports)}: line test of {p}" for i, p in enumerate(ports)]
    progress = [s["progress"] for s in states]
    assert progress == sorted(progress) and len(set(progress)) == len(ports) + 1
    assert list(final["result"]["ports"]) == ports and final["result"]["pass"] is True
    assert final["result"]["ports"]["fxs1"]["test"] == "gr909"
    assert final["result"]["ports"]["fxo1"]["test"] == "fxo"


def test_a_job_id_is_not_created_twice(setup: Setup, core: Core) -> None:
    _, cloud = setup("job-twice")
    began = time.time() - 0.5
    job = cloud.new("line_test", {"ports": ["fxs2"]})
    assert cloud.final(job)["state"] == "SUCCEEDED"
    cloud.new("line_test", {"ports": ["fxs2"]}, job_id=job)
    wait_until(lambda: [s["state"] for s in cloud.statuses(job)].count("SUCCEEDED") == 2, 10,
               "the status again")
    assert _line_tests_started(core, began, "fxs2") == 1


def test_bad_args_and_firmware_update_fail_at_once(setup: Setup) -> None:
    _, cloud = setup("job-refused")
    bad = cloud.new("line_test", {"ports": ["fxs1", "fxs1"]})
    final = cloud.final(bad)
    assert final["state"] == "FAILED" and final["error"].startswith("args.ports: ")
    update = cloud.new("firmware_update", {"version": "2.0"})
    final = cloud.final(update)
    assert final["state"] == "FAILED" and final["error"].startswith("args.version: ")


# ---- cancel ----------------------------------------------------------------------------------

def test_cancel_a_queued_and_a_running_job(setup: Setup, core: Core) -> None:
    _, cloud = setup("job-cancel")
    running = cloud.new("line_test", {"ports": ["fxo1", "fxs1", "fxs2"]})
    queued = cloud.new("line_test", {"ports": ["fxs1"]})
    cloud.wait(running, lambda s: s["step"].startswith("1/3"), what="the first step")
    cloud.cancel(queued)
    final = cloud.final(queued, 5)
    assert final["state"] == "CANCELLED" and final["step"] == "cancelled before it started"
    assert not [s for s in cloud.statuses(running) if s["state"] != "IN_PROGRESS"
                and s["state"] != "QUEUED"], "the running job moved with the queued one"
    cloud.cancel(running)
    note = cloud.wait(running, lambda s: s["step"].startswith("cancelling"), 10, "the note")
    assert "cannot be interrupted" in note["step"]
    final = cloud.final(running)
    assert final["state"] == "CANCELLED" and final["step"] == "cancelled before step 2/3 (fxs1)"
    assert [s["step"][:3] for s in cloud.statuses(running) if s["state"] == "IN_PROGRESS"
            and not s["step"].startswith("cancelling")] == ["1/3"]


def _free(core: Core, port: str) -> bool:
    """A line test of port runs (the one a test abandoned is over)."""
    core.api.line_test(port)
    return True


# ---- timeouts --------------------------------------------------------------------------------

def test_a_step_over_its_timeout_ends_the_job_timed_out(setup: Setup, core: Core) -> None:
    clock = FakeClock(epoch=time.time())
    _, cloud = setup("job-step-timeout", clock=clock)
    job = cloud.new("line_test", {"ports": ["fxo1", "fxs1"], "test_call_s": 3},
                    step_timeout_s=5)
    cloud.wait(job, lambda s: s["step"] == "1/2: line test of fxo1", what="the step")
    clock.set(clock.now() + 6)  # the FXO line test with a test call takes ~5 s of real time
    final = cloud.final(job, 5)
    assert final["state"] == "TIMED_OUT"
    assert final["error"] == ("step 1/2 (fxo1) took over its 5 s; its late result is ignored")
    wait_until(lambda: _free(core, "fxo1"), 20, "the abandoned line test over",
               retry=(ApiError,))
    assert [s["state"] for s in cloud.statuses(job)][-1] == "TIMED_OUT"
    assert len([s for s in cloud.statuses(job) if s["state"] == "TIMED_OUT"]) == 1


def test_a_job_over_its_timeout_ends_timed_out(setup: Setup, core: Core) -> None:
    clock = FakeClock(epoch=time.time())
    _, cloud = setup("job-timeout", clock=clock)
    job = cloud.new("line_test", {"ports": ["fxo1"]}, timeout_s=10)
    cloud.wait(job, lambda s: s["step"] == "1/1: line test of fxo1", what="the step")
    clock.set(clock.now() + 11)
    final = cloud.final(job, 5)
    assert final["state"] == "TIMED_OUT" and final["error"].startswith("the job took over its 10 s")
    wait_until(lambda: _free(core, "fxo1"), 20, "the abandoned line test over",
               retry=(ApiError,))


# ---- restarts ------------------------------------------------------------------------------

def test_a_restart_mid_job_resumes_at_its_step(setup: Setup, core: Core,
                                               tmp_path: Path) -> None:
    began = time.time() - 0.5
    first, cloud = setup("job-resume")
    job = cloud.new("line_test", {"ports": ["fxs1", "fxo1", "fxs2"]})
    cloud.wait(job, lambda s: s["step"].startswith("2/3"), what="the second step")
    first.close()  # the agent stops mid-job
    row = _row(tmp_path / "agent.db", job)
    assert row["state"] == "IN_PROGRESS" and row["step"] in (1, 2)
    setup("job-resume", cloud=False)  # the agent again, same agent.db
    final = cloud.final(job)
    assert final["state"] == "SUCCEEDED", final
    assert list(final["result"]["ports"]) == ["fxs1", "fxo1", "fxs2"]
    assert _line_tests_started(core, began, "fxs1") == 1  # done before: not run again
    assert _line_tests_started(core, began, "fxs2") == 1


def test_a_deadline_passed_while_the_agent_was_down(setup: Setup, tmp_path: Path) -> None:
    clock = FakeClock(epoch=time.time())
    first, cloud = setup("job-overdue", clock=clock)
    job = cloud.new("line_test", {"ports": ["fxs1", "fxo1", "fxs2"]}, timeout_s=60)
    cloud.wait(job, lambda s: s["step"].startswith("2/3"), what="the second step")
    first.close()
    assert _row(tmp_path / "agent.db", job)["state"] == "IN_PROGRESS"
    clock.set(clock.now() + 120)  # down for two minutes
    setup("job-overdue", clock=clock, cloud=False)
    final = cloud.final(job, 10)
    assert final["state"] == "TIMED_OUT"
    assert "deadline passed while the agent was not running" in final["error"]


def test_reconnect_republishes_what_the_platform_may_have_missed(setup: Setup,
                                                                tmp_path: Path) -> None:
    box, cloud = setup("job-republish")
    done = cloud.new("line_test", {"ports": ["fxs2"]})
    assert cloud.final(done)["state"] == "SUCCEEDED"
    wait_until(lambda: _row(tmp_path / "agent.db", done)["acked"] == 1, 10, "the PUBACK noted")
    running = cloud.new("line_test", {"ports": ["fxo1"]})
    cloud.wait(running, lambda s: s["state"] == "IN_PROGRESS", what="the start")
    before = len(cloud.statuses(done)), len(cloud.statuses(running))
    box.jobs.connected(True)
    wait_until(lambda: len(cloud.statuses(running)) > before[1], 10, "the running job again")
    assert len(cloud.statuses(done)) == before[0]  # acknowledged: not again
    assert cloud.final(running)["state"] == "SUCCEEDED"


# ---- collect logs ------------------------------------------------------------------------

def test_collect_logs_queues_a_bundle_in_the_outbox(setup: Setup, store: CdrStore) -> None:
    _, cloud = setup("job-logs")
    job = cloud.new("collect_logs", {"limit": 500})
    final = cloud.final(job)
    assert final["state"] == "SUCCEEDED", final
    uuid_, size = final["result"]["file"], final["result"]["size"]
    row = next(r for r in store.pending(1000, files=True) if r["uuid"] == uuid_)
    assert row["body"]["label"] == "logs" and row["body"]["meta"]["job"] == job
    assert row["file_bytes"] == size > 0
    lines = [json.loads(x) for x in gzip.decompress(Path(row["path"]).read_bytes()).splitlines()]
    assert lines and all(x["origin"] == "core" and "message" in x for x in lines)
    times = [x["time"] for x in lines]
    assert times == sorted(times)  # oldest first


def test_collect_logs_takes_the_agents_own_lines_when_given(setup: Setup,
                                                            store: CdrStore) -> None:
    own = [{"time": time.time(), "level": "info", "source": "agent", "message": "hello"}]
    _, cloud = setup("job-own-logs", agent_log=lambda: own)
    job = cloud.new("collect_logs")
    final = cloud.final(job)
    assert final["state"] == "SUCCEEDED", final
    row = next(r for r in store.pending(1000, files=True) if r["uuid"] == final["result"]["file"])
    lines = [json.loads(x) for x in gzip.decompress(Path(row["path"]).read_bytes()).splitlines()]
    assert lines[-1] == {**own[0], "origin": "agent"}
    assert final["state"] == State.SUCCEEDED
