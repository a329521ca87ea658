"""Commands end to end: a platform client sends cmd with a response topic and correlation
data through a real Mosquitto; the agent's Commands part (real Link, real agent.db)
runs it against a real sim core and answers on the response topic."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.agent.commands import FUTURE_S, Commands
from firmware.agent.jobs import UPDATE_IS_A_JOB, fit
from firmware.agent.link import Link
from firmware.agent.protocol import MAX_PAYLOAD, Topic, topic
from foundation.clock import FakeClock, MonotonicClock
from lab.mosquitto import PlatformClient, Received
from lab.wait import wait_until
from tests.agent.conftest import Core

Clock = MonotonicClock | FakeClock


class Box:
    """A Link and a Commands part, with the app's main loop on a thread of its own."""

    def __init__(self, link: Link, core: Core, db: Path, clock: Clock, **kw: Any) -> None:
        self.link, self.clock = link, clock
        self.commands = Commands(link, core.api, clock, db, **{"max_age_s": 300.0, **kw})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        if not link.connected:
            link.start()
        wait_until(lambda: link.subscribed, 10, "the cmd subscription")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.link.poll(0.05)
            self.commands.tick(self.clock.now())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.commands.stop()


class Cloud:
    """The platform's side: send a command, wait for its answer by correlation data."""

    def __init__(self, client: PlatformClient, device: str) -> None:
        self.client, self.device = client, device
        self.reply_to = topic(device, Topic.CMD_RESULT) + "/platform-1"
        client.subscribe(topic(device, Topic.CMD_RESULT) + "/#")

    def send(self, name: str, args: dict[str, Any] | None = None, *, cmd_id: str = "",
             issued: float | None = None, **extra: Any) -> str:
        cmd_id = cmd_id or str(uuid.uuid4())
        body: dict[str, Any] = {"id": cmd_id, "name": name,
                                "issued": time.time() if issued is None else issued, **extra}
        if args is not None:
            body["args"] = args
        self.client.publish(topic(self.device, Topic.CMD), body, response_topic=self.reply_to,
                            correlation=cmd_id.encode())
        return cmd_id

    def answers(self, cmd_id: str) -> list[Received]:
        return [m for m in self.client.messages(self.reply_to) if m.correlation == cmd_id.encode()]

    def answer(self, cmd_id: str, timeout: float = 20.0) -> dict[str, Any]:
        got = self.client.wait_for(lambda m: m.topic == self.reply_to
                                   and m.correlation == cmd_id.encode(), timeout,
                                   f"the answer to {cmd_id}")
        body: dict[str, Any] = got.json()
        assert body["id"] == cmd_id and len(got.payload) <= MAX_PAYLOAD
        return body

    def run(self, name: str, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return self.answer(self.send(name, args, **kw))


Setup = Callable[..., tuple[Box, Cloud]]


@pytest.fixture
def setup(device_link: Callable[..., Link], platform_client: Callable[..., PlatformClient],
          core: Core, tmp_path: Path) -> Iterator[Setup]:
    boxes: list[Box] = []

    def make(device: str, clock: Clock | None = None, db: Path | None = None,
             **kw: Any) -> tuple[Box, Cloud]:
        cloud = Cloud(platform_client(), device)
        box = Box(device_link(device, start=False), core, db or tmp_path / "agent.db",
                  clock or MonotonicClock(), **kw)
        boxes.append(box)
        return box, cloud

    yield make
    for box in boxes:
        box.close()


def _core_logs(core: Core, since: float, text: str) -> list[dict[str, Any]]:
    items = core.api.logs(0, 1000)["items"]
    return [r for r in items if r["time"] >= since and text in r["message"]]


# ---- each command ------------------------------------------------------------------------

def test_reboot_in_sim_is_logged_only(setup: Setup, core: Core) -> None:
    _, cloud = setup("cmd-reboot")
    began = time.time() - 1
    answer = cloud.run("reboot")
    assert answer["status"] == "ok" and answer["name"] == "reboot"
    assert answer["result"]["detail"] == "sim mode: reboot logged only"
    assert _core_logs(core, began, "reboot requested through the control API")


def test_ring_test_rings_fxs1(setup: Setup, core: Core) -> None:
    _, cloud = setup("cmd-ring")
    answer = cloud.run("ring_test", {"port": "fxs1", "seconds": 2})
    assert answer["status"] == "ok", answer
    assert answer["result"]["detail"] == "ringing fxs1 for 2 s"
    wait_until(lambda: not _port(core, "fxs1")["ringing"], 10, "fxs1 quiet after 2 s")


def _port(core: Core, name: str) -> dict[str, Any]:
    return next(p for p in core.api.status()["ports"] if p["name"] == name)


def test_line_test_of_one_port(setup: Setup) -> None:
    _, cloud = setup("cmd-line")
    answer = cloud.run("line_test", {"port": "fxs2"})
    assert answer["status"] == "ok", answer
    assert answer["result"]["port"] == "fxs2" and answer["result"]["test"] == "gr909"
    assert answer["result"]["pass"] is True


def test_sip_ping_answers_the_cores_verdict(setup: Setup) -> None:
    """The module's sim core has no cloud edges: the API's refusal is the answer."""
    _, cloud = setup("cmd-ping")
    answer = cloud.run("sip_ping")
    assert answer["status"] == "error"
    assert "no cloud edge configured" in answer["error"] and "sip.edges" in answer["error"]


def test_fetch_logs_within_the_limit(setup: Setup) -> None:
    _, cloud = setup("cmd-logs")
    cloud.run("reboot")  # a warning line for the log
    answer = cloud.run("fetch_logs", {"limit": 5, "level": "warning"})
    assert answer["status"] == "ok", answer
    items = answer["result"]["items"]
    assert 1 <= len(items) <= 5 and answer["result"]["total"] >= len(items)
    assert {i["level"] for i in items} <= {"warning", "error"}
    assert any("reboot requested" in i["message"] for i in items)


def test_a_result_too_big_for_a_message_is_trimmed_to_fit() -> None:
    items = [{"message": "x" * 200, "level": "info"} for _ in range(2000)]
    trimmed = fit({"total": 2000, "items": items})
    assert trimmed["truncated"] is True and 0 < len(trimmed["items"]) < 2000
    assert len(json.dumps(trimmed)) <= MAX_PAYLOAD


def test_selftest_one_result_per_check(setup: Setup, core: Core) -> None:
    _, cloud = setup("cmd-selftest")
    answer = cloud.run("selftest")
    assert answer["status"] == "ok", answer
    checks = answer["result"]["checks"]
    ports = [p["name"] for p in core.api.status()["ports"]]
    assert [c["port"] for c in checks if c["check"] == "initialised"] == ports
    assert all(c["pass"] for c in checks if c["check"] == "initialised")
    feeds = {c["port"]: c for c in checks if c["check"] in ("line feed", "line voltage")}
    assert set(feeds) == {"fxs1", "fxs2", "fxo1"} and all(c["pass"] for c in feeds.values())
    ping = next(c for c in checks if c["check"] == "sip ping")
    assert ping["pass"] is False and "sip.edges" in ping["fix"]  # no edges in this sim core
    assert answer["result"]["pass"] is False and answer["result"]["failed"] == ["sip ping"]
    assert all(set(c) >= {"check", "pass", "detail", "fix"} for c in checks)


def test_update_firmware_command_points_at_the_job(setup: Setup) -> None:
    _, cloud = setup("cmd-update")
    answer = cloud.run("update_firmware", {"url": "https://example.com/fw.img"})
    assert answer["status"] == "refused" and answer["error"] == UPDATE_IS_A_JOB


def test_commands_run_off_the_main_loop(setup: Setup) -> None:
    """A slow command (an FXO line test, ~2 s) does not hold up a quick one."""
    _, cloud = setup("cmd-pool")
    slow = cloud.send("line_test", {"port": "fxo1"})
    quick = cloud.send("reboot")
    assert cloud.answer(quick)["status"] == "ok"
    assert not cloud.answers(slow), "the quick command waited for the slow one"
    assert cloud.answer(slow)["status"] == "ok"


def test_a_command_over_its_deadline_answers_an_error(setup: Setup) -> None:
    _, cloud = setup("cmd-deadline")
    answer = cloud.run("line_test", {"port": "fxo1"}, expires=time.time() + 1.0)
    assert answer["status"] == "error"
    assert "no result within its deadline" in answer["error"]
    assert "could not be interrupted" in answer["error"]


# ---- refusals ------------------------------------------------------------------------------

def test_refusals_carry_the_reason_and_are_logged(setup: Setup,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="firmware.agent.commands")
    clock = FakeClock(epoch=time.time())
    _, cloud = setup("cmd-refuse", clock=clock)
    now = clock.wall()
    cases = {
        "stale": (cloud.send("reboot", issued=now - 400), "refused", "stale: issued 400 s ago"),
        "future": (cloud.send("reboot", issued=now + FUTURE_S + 60), "refused",
                   "in the future"),
        "expired": (cloud.send("reboot", issued=now - 10, expires=now - 5), "expired",
                    "expired 5 s before it could start"),
        "unknown": (cloud.send("self_destruct"), "refused", "unknown command 'self_destruct'"),
        "bad args": (cloud.send("ring_test", {"port": "fxs1", "seconds": 0}), "refused",
                     "args.seconds: 0 is less than the minimum of 1"),
        "missing": (cloud.send("ring_test", {}), "refused", "args.port: is required"),
        "extra": (cloud.send("reboot", {"force": True}), "refused", "args.force: not an "
                  "argument here"),
    }
    for what, (cmd_id, status, reason) in cases.items():
        answer = cloud.answer(cmd_id)
        assert answer["status"] == status, (what, answer)
        assert reason in answer["error"], (what, answer)
        assert any(cmd_id in r.getMessage() and reason in r.getMessage()
                   for r in caplog.records), f"no log line for {what}"


def test_a_replayed_command_is_refused(setup: Setup) -> None:
    _, cloud = setup("cmd-replay")
    cmd_id = cloud.send("reboot")
    assert cloud.answer(cmd_id)["status"] == "ok"
    cloud.send("reboot", cmd_id=cmd_id)
    wait_until(lambda: len(cloud.answers(cmd_id)) == 2, 10, "the second answer")
    second = cloud.answers(cmd_id)[1].json()
    assert second["status"] == "refused" and "replayed: command id" in second["error"]


def test_seen_ids_survive_a_restart_and_are_pruned_past_the_window(
        setup: Setup, tmp_path: Path) -> None:
    clock = FakeClock(epoch=time.time())
    db = tmp_path / "restart.db"
    box, cloud = setup("cmd-seen", clock=clock, db=db, max_age_s=60.0)
    issued = clock.wall()
    cmd_id = cloud.send("reboot", issued=issued)
    assert cloud.answer(cmd_id)["status"] == "ok"
    box.close()
    box.link.stop()
    box2, cloud2 = setup("cmd-seen", clock=clock, db=db, max_age_s=60.0)  # the agent again
    cloud2.send("reboot", cmd_id=cmd_id, issued=issued)
    assert "replayed" in cloud2.answer(cmd_id)["error"]
    clock.set(clock.now() + 61)
    assert box2.commands.prune() == 1  # the table keeps only the window
    cloud2.send("reboot", cmd_id=cmd_id, issued=issued)
    wait_until(lambda: len(cloud2.answers(cmd_id)) == 2, 10, "the answer to the late replay")
    assert "stale" in cloud2.answers(cmd_id)[1].json()["error"]
