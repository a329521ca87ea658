"""The config shadow against a real Mosquitto and a real sim core: desired -> validated ->
saved -> reported; bad documents rejected with field and rule and nothing changed; a
handled version never applied twice; commit-confirmed success and rollback (the MQTT
session cannot come back; SIP registration fails after the core restarts for it); a
confirmation window that survives an agent restart (fake clock, real SQLite, real core).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from drivers.sim.board import SimBoard
from firmware.agent import protocol
from firmware.agent.link import Link, LinkSettings
from firmware.agent.protocol import Topic
from firmware.agent.shadow import Pending, Shadow, ShadowDb, Work
from firmware.api.client import ApiClient, ApiError, CoreDown
from firmware.api.server import ApiServer
from firmware.core.config import ConfigStore
from firmware.core.runtime import Core
from foundation.clock import FakeClock, MonotonicClock
from foundation.reactor import Reactor
from lab.box import trunk_doc
from lab.kamailio import Kamailio
from lab.mosquitto import Mosquitto, PlatformClient
from lab.ports import free_port
from lab.procs import stop_process
from lab.wait import wait_until

if TYPE_CHECKING:
    from tests.agent.conftest import Core as CoreRig

ROOT = Path(__file__).resolve().parents[2]


class Loop:
    """What the agent app does for the shadow, on a thread of its own: poll the link, tick
    the part, tell it of link changes, and reconnect the link when GET /config's
    cloud.broker changes (the app re-reads it after every config_applied event)."""

    def __init__(self, link: Link, shadow: Shadow, api: ApiClient) -> None:
        self.link, self.shadow, self.api = link, shadow, api
        self.broker = self._broker()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _broker(self) -> str | None:
        try:
            return str(self.api.config()["document"].get("cloud", {}).get("broker", ""))
        except ApiError:
            return None

    def _run(self) -> None:
        clock, next_config = MonotonicClock(), 0.0
        while not self._stop.is_set():
            self.link.poll(0.05)
            self.shadow.tick(clock.now())
            if clock.now() >= next_config:
                next_config = clock.now() + 0.3
                self._follow_config()

    def _follow_config(self) -> None:
        broker = self._broker()
        if broker is None or broker == self.broker:
            return
        self.broker = broker
        s = self.link.settings
        if broker:
            self.link.reconfigure(LinkSettings.from_url(
                broker, device=s.device, ca_file=s.ca_file, cert_file=s.cert_file,
                key_file=s.key_file, keepalive_s=s.keepalive_s, version=s.version))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.shadow.stop()


class Agent:
    """A Link, a Shadow on agent.db in `data` and their Loop: one agent run."""

    def __init__(self, device_link: Callable[..., Link], device: str, api: ApiClient,
                 data: Path, **kw: Any) -> None:
        self.link = device_link(device, start=False)
        self.shadow = Shadow(self.link, api, MonotonicClock(), data / "agent.db",
                             **{"hold_s": 1.0, "check_s": 0.25, **kw})
        self.link.on_connect(self.shadow.connected)
        self.loop = Loop(self.link, self.shadow, api)
        self.link.start()

    def stop(self) -> None:
        self.loop.stop()
        self.link.stop()


@pytest.fixture
def agents(device_link: Callable[..., Link]) -> Iterator[Callable[..., Agent]]:
    made: list[Agent] = []

    def make(device: str, api: ApiClient, data: Path, **kw: Any) -> Agent:
        agent = Agent(device_link, device, api, data, **kw)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


def desire(platform: PlatformClient, device: str, version: int, **body: Any) -> None:
    platform.publish(protocol.topic(device, Topic.DESIRED),
                     {"version": version, "issued": time.time(), **body}, retain=True)


def reports(platform: PlatformClient, device: str) -> list[dict[str, Any]]:
    return [m.json() for m in platform.messages(protocol.topic(device, Topic.REPORTED))]


def wait_report(platform: PlatformClient, device: str, version: int, state: str,
                timeout: float = 15.0) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((r for r in reports(platform, device)
                     if r["version"] == version and r["state"] == state), None)
    return wait_until(found, timeout, f"report {state} of version {version}",
                      detail=lambda: reports(platform, device)[-5:])


def watch(platform: PlatformClient, device: str) -> PlatformClient:
    platform.subscribe(protocol.topic(device, Topic.REPORTED))
    return platform


def store_version(api: ApiClient) -> int | None:
    return api.config()["version"]


# ---- applied and rejected ----

def test_desired_set_is_applied_and_reported_with_the_store_version(
        tmp_path: Path, core: CoreRig, agents: Callable[..., Agent], platform_client: Callable[..., PlatformClient]) -> None:
    device = "shadow-apply"
    platform = watch(platform_client(), device)
    agents(device, core.api, tmp_path)
    desire(platform, device, 1, set={"system.name": "shadow-apply-1", "calls.interdigit_s": 5.0},
           confirm_s=0, reason="rename")
    report = wait_report(platform, device, 1, "applied")
    config = core.api.config()
    assert report["store_version"] == config["version"]
    assert config["document"]["system"]["name"] == "shadow-apply-1"
    assert config["document"]["calls"]["interdigit_s"] == 5.0
    kept = [v for v in core.api.config_versions() if v["version"] == report["store_version"]]
    assert kept[0]["reason"] == "cloud desired version 1: rename"
    assert "error" not in report and "restart" not in report

    # a whole document works the same way
    doc = config["document"]
    doc["system"]["name"] = "shadow-apply-2"
    desire(platform, device, 2, document=doc, confirm_s=0)
    report = wait_report(platform, device, 2, "applied")
    assert core.api.config()["document"]["system"]["name"] == "shadow-apply-2"
    assert report["store_version"] == store_version(core.api)


@pytest.mark.parametrize("device, body, field, rule", [
    ("bad-type", {"set": {"sip.local_port": "5060x"}}, "sip.local_port", "must be an integer"),
    ("bad-line", {"set": {"lines.fxs9.flash_max_ms": 300}}, "lines.fxs9.kind", "missing"),
    ("bad-name", {"set": {"system.nmae": "x"}}, "system.nmae", "did you mean 'name'"),
    ("bad-path", {"set": {"system.name.first": "x"}}, "set.system.name.first",
     "system.name is a setting, not a table"),
    ("bad-doc", {"document": {"calls": {"call_waiting": "yes"}}}, "calls.call_waiting",
     "true or false"),
])
def test_bad_desired_is_rejected_with_field_and_rule_and_changes_nothing(
        tmp_path: Path, core: CoreRig, agents: Callable[..., Agent], platform_client: Callable[..., PlatformClient], device: str, body: dict[str, Any], field: str, rule: str) -> None:
    platform = watch(platform_client(), device)
    before, kept = store_version(core.api), len(core.api.config_versions())
    doc = core.api.config()["document"]
    agents(device, core.api, tmp_path)
    desire(platform, device, 1, **body)
    report = wait_report(platform, device, 1, "rejected")
    assert report["error"]["field"] == field and rule in report["error"]["rule"], report
    assert report["store_version"] == before
    assert store_version(core.api) == before and len(core.api.config_versions()) == kept
    assert core.api.config()["document"] == doc


def test_a_handled_version_is_not_applied_again_after_an_agent_restart(
        tmp_path: Path, core: CoreRig, agents: Callable[..., Agent], platform_client: Callable[..., PlatformClient]) -> None:
    device = "shadow-restart"
    platform = watch(platform_client(), device)
    first = agents(device, core.api, tmp_path)
    desire(platform, device, 1, set={"system.name": "shadow-once"}, confirm_s=0)
    applied = wait_report(platform, device, 1, "applied")
    first.stop()
    # someone changes the config locally; the retained version 1 must not undo it
    core.api.patch_config({"system.name": "changed-locally"}, "technician")
    local = store_version(core.api)
    platform.clear()
    agents(device, core.api, tmp_path)  # the same agent.db; the broker re-sends version 1
    again = wait_report(platform, device, 1, "applied")
    assert again == applied  # re-reported as it was
    assert store_version(core.api) == local
    assert core.api.config()["document"]["system"]["name"] == "changed-locally"
    assert ShadowDb(tmp_path / "agent.db").load()[0] == 1


# ---- commit-confirmed ----

def test_commit_confirmed_success(
        tmp_path: Path, core: CoreRig, agents: Callable[..., Agent], platform_client: Callable[..., PlatformClient]) -> None:
    device = "shadow-confirm"
    platform = watch(platform_client(), device)
    agents(device, core.api, tmp_path)
    desire(platform, device, 1, set={"system.name": "confirmed-name"}, confirm_s=30)
    confirming = wait_report(platform, device, 1, "confirming")
    assert confirming["deadline"] == pytest.approx(time.time() + 30, abs=5)
    confirmed = wait_report(platform, device, 1, "confirmed", timeout=20)
    assert confirmed["store_version"] == confirming["store_version"] == store_version(core.api)
    assert core.api.config()["document"]["system"]["name"] == "confirmed-name"


def test_rollback_when_the_mqtt_session_cannot_come_back(
        tmp_path: Path, core: CoreRig, broker: Mosquitto, agents: Callable[..., Agent], platform_client: Callable[..., PlatformClient]) -> None:
    device = "shadow-mqtt"
    platform = watch(platform_client(), device)
    core.api.patch_config({"cloud.broker": broker.url}, "the lab broker")
    good = store_version(core.api)
    agent = agents(device, core.api, tmp_path)
    wait_until(lambda: agent.link.connected, 10, "link up")
    dead = f"mqtts://127.0.0.1:{free_port('tcp')}"
    desire(platform, device, 1, set={"cloud.broker": dead}, confirm_s=6)
    report = wait_report(platform, device, 1, "rolled_back", timeout=30)
    assert report["error"]["rule"].startswith("MQTT session did not come back within 6 s")
    assert report["error"]["field"] is None
    config = core.api.config()
    assert config["document"]["cloud"]["broker"] == broker.url
    assert report["store_version"] == config["version"] > good
    wait_until(lambda: agent.link.connected, 10, "the link back on the good broker")
    assert agent.link.settings.port == broker.tls_port
    states = [r["state"] for r in reports(platform, device)]
    assert states.index("confirming") < states.index("rolled_back")


# ---- the confirmation window across an agent restart (fake clock) ----

class Recorder:
    """A Link's surface for a Shadow in fake time: handlers kept, reports recorded."""

    last_error = "connection refused"

    def __init__(self) -> None:
        self.handlers: dict[Topic, Callable[[Any], None]] = {}
        self.sent: list[dict[str, Any]] = []

    def on(self, t: Topic, handler: Callable[[Any], None]) -> None:
        self.handlers[t] = handler

    def publish(self, t: Topic, payload: Mapping[str, Any]) -> None:
        protocol.encode(t, payload)
        self.sent.append(json.loads(json.dumps(payload)))

    def deliver(self, payload: dict[str, Any]) -> None:
        class Msg:
            pass
        msg = Msg()
        msg.payload = protocol.validate(Topic.DESIRED, payload)  # type: ignore[attr-defined]
        self.handlers[Topic.DESIRED](msg)


def _fake_shadow(db: Path, clock: FakeClock, api: ApiClient) -> tuple[Shadow, Recorder]:
    link = Recorder()
    shadow = Shadow(link, api, clock, db, background=False, hold_s=5.0, check_s=1.0)
    return shadow, link


def _advance(clock: FakeClock, shadow: Shadow, seconds: float) -> None:
    end = clock.now() + seconds
    while clock.now() < end:
        clock.set(clock.now() + 1.0)
        shadow.tick(clock.now())


def test_an_agent_restart_continues_the_countdown(tmp_path: Path, core: CoreRig) -> None:
    clock, db = FakeClock(epoch=time.time()), tmp_path / "agent.db"
    before = store_version(core.api)
    a, link = _fake_shadow(db, clock, core.api)
    link.deliver({"version": 1, "issued": clock.wall(), "set": {"system.name": "countdown"},
                  "confirm_s": 100})
    a.tick(clock.now())
    assert link.sent[-1]["state"] == "confirming"
    applied = link.sent[-1]["store_version"]
    deadline = link.sent[-1]["deadline"]
    _advance(clock, a, 50)  # the link never came up: no confirmation
    a.stop()

    b, link = _fake_shadow(db, clock, core.api)  # the agent restarted, 50 s left
    assert b.pending is not None and b.pending.deadline == pytest.approx(deadline)
    _advance(clock, b, 40)
    assert link.sent == [] and store_version(core.api) == applied
    _advance(clock, b, 12)
    report = link.sent[-1]
    assert report["state"] == "rolled_back" and report["version"] == 1
    assert report["error"]["rule"].startswith("MQTT session did not come back within 100 s")
    assert core.api.config()["document"]["system"]["name"] != "countdown"
    restored = [v for v in core.api.config_versions() if v["version"] == report["store_version"]]
    assert restored and store_version(core.api) == report["store_version"] != before
    b.stop()


def test_a_restart_after_the_deadline_rolls_back_at_once(tmp_path: Path, core: CoreRig) -> None:
    clock, db = FakeClock(epoch=time.time()), tmp_path / "agent.db"
    a, link = _fake_shadow(db, clock, core.api)
    link.deliver({"version": 4, "issued": clock.wall(), "set": {"system.name": "too-late"},
                  "confirm_s": 30})
    a.tick(clock.now())
    assert link.sent[-1]["state"] == "confirming"
    a.stop()
    clock.set(clock.now() + 600)  # the agent was down past the deadline
    b, link = _fake_shadow(db, clock, core.api)
    b.connected(True)  # even with the link up: the window is over
    b.tick(clock.now())
    assert link.sent[-1]["state"] == "rolled_back"
    assert core.api.config()["document"]["system"]["name"] != "too-late"
    b.stop()


def test_confirmed_in_fake_time_once_the_link_holds(tmp_path: Path, core: CoreRig) -> None:
    clock, db = FakeClock(epoch=time.time()), tmp_path / "agent.db"
    s, link = _fake_shadow(db, clock, core.api)
    link.deliver({"version": 1, "issued": clock.wall(), "set": {"calls.first_digit_s": 11.0},
                  "confirm_s": 60})
    s.tick(clock.now())
    _advance(clock, s, 20)
    assert link.sent[-1]["state"] == "confirming"
    s.connected(True)  # republishes the confirming report
    _advance(clock, s, 3)
    assert link.sent[-1]["state"] == "confirming"
    _advance(clock, s, 4)  # held for 5 s
    assert link.sent[-1]["state"] == "confirmed"
    assert core.api.config()["document"]["calls"]["first_digit_s"] == 11.0
    s.stop()


# ---- POST /restart and the registration variant (a core under a restart loop) ----

SUPERVISOR = """
import signal, subprocess, sys, time
cmd, stop, child = sys.argv[1:], False, None
def term(*_):
    global stop
    stop = True
    if child is not None and child.poll() is None:
        child.terminate()
signal.signal(signal.SIGTERM, term)
while not stop:
    child = subprocess.Popen(cmd)
    code = child.wait()
    print(f"supervisor: core exited {code}", flush=True)
    if not stop:
        time.sleep(0.2)
"""


class SupervisedCore:
    """`branchline run --sim` started again whenever it exits (supervisord's autorestart),
    by a tiny wrapper process the test stops."""

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.config_dir, self.data_dir = tmp / "etc", tmp / "core-data"
        self.listen = f"127.0.0.1:{free_port('tcp')}"
        self.api = ApiClient(tcp=self.listen)
        self.log = tmp / "core.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SupervisedCore:
        cmd = [sys.executable, "-m", "firmware", "run", "--sim", "--config-dir",
               str(self.config_dir), "--data-dir", str(self.data_dir), "--api", self.listen]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, *cmd], cwd=ROOT,
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.wait_up()
        return self

    def wait_up(self, timeout: float = 30.0) -> dict[str, Any]:
        return wait_until(self.api.status, timeout, "the core's API", step=0.2,
                          retry=(ApiError,), detail=lambda: self.log.read_text()[-1500:])

    def exits(self) -> int:
        return self.log.read_text().count("supervisor: core exited 0")

    def stop(self) -> None:
        stop_process(self.proc, grace=20)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., SupervisedCore]]:
    cores: list[SupervisedCore] = []

    def make(doc: dict[str, Any] | None = None) -> SupervisedCore:
        c = SupervisedCore(tmp_path / f"core{len(cores)}")
        if doc is not None:
            ConfigStore(c.config_dir).save(doc, "test setup")
        cores.append(c)
        return c.start()

    yield make
    for c in cores:
        c.stop()


def test_restart_endpoint_waits_for_idle_and_the_supervisor_restarts_the_core(
        supervised: Callable[..., SupervisedCore]) -> None:
    c = supervised()
    api = c.api
    api.sim_phone("fxs1", "off_hook")
    wait_until(lambda: api.status()["ports"][0]["hook"] == "off", 5, "fxs1 off hook")
    api.sim_phone("fxs1", "dial", "202")
    wait_until(lambda: api.status()["calls"], 10, "a call up", step=0.1)
    with pytest.raises(ApiError) as refused:
        api.restart("idle")
    assert refused.value.status == 409 and re.search(r"\d calls? (is|are) up",
                                                     str(refused.value))
    assert refused.value.field == "when"
    assert api.restart("now")["ok"]
    wait_until(lambda: c.exits() == 1, 15, "the core to exit 0")
    st = c.wait_up()
    assert st["calls"] == [] and st["box"]["uptime_s"] < 15
    cdrs = api.cdrs()["items"]
    assert cdrs and cdrs[0]["ended"] is not None  # the call hung up, its CDR written
    assert api.restart("idle")["ok"]  # idle now
    wait_until(lambda: c.exits() == 2, 15, "the core to exit 0 again")
    c.wait_up()


def test_restart_refused_by_a_core_without_a_supervisor(tmp_path: Path) -> None:
    """A core embedded in another program (the API tests' rig, a bench) cannot restart."""
    store = ConfigStore(tmp_path / "etc")
    doc = store.load()
    reactor = Reactor(MonotonicClock())
    embedded = Core(doc, SimBoard(reactor, doc), reactor)
    embedded.start()
    server = ApiServer(embedded, store, tcp="127.0.0.1:0")
    server.start()
    thread = threading.Thread(target=reactor.run_forever, daemon=True)
    thread.start()
    try:
        assert server.tcp_address is not None
        with pytest.raises(ApiError) as refused:
            ApiClient(tcp=f"127.0.0.1:{server.tcp_address[1]}").restart("now")
        assert refused.value.status == 409 and "branchline run" in str(refused.value)
    finally:
        server.stop()
        reactor.call_soon(reactor.stop)
        thread.join(10)
        embedded.stop()


def _registered(api: ApiClient) -> bool:
    try:
        regs = api.status()["registrations"]
    except CoreDown:
        return False
    return bool(regs) and all(r["ok"] for r in regs)


def test_rollback_when_registration_fails_after_the_core_restarts_for_it(
        tmp_path: Path, supervised: Callable[..., SupervisedCore], agents: Callable[..., Agent], platform_client: Callable[..., PlatformClient]) -> None:
    device = "shadow-sip"
    with Kamailio(tmp_path / "kamailio") as kam:
        c = supervised(trunk_doc(kam, "5550100"))
        wait_until(lambda: _registered(c.api), 20, "the core registered at Kamailio",
                   detail=lambda: c.api.status()["registrations"])
        good_edges = c.api.config()["document"]["sip"]["edges"]
        platform = watch(platform_client(), device)
        agents(device, c.api, tmp_path)
        dead = f"sip:127.0.0.1:{free_port('udp')}"
        desire(platform, device, 1, set={"sip.edges": [dead]}, confirm_s=20)
        confirming = wait_report(platform, device, 1, "confirming")
        assert confirming["restart"] == ["sip.edges"]
        wait_until(lambda: c.exits() >= 1, 20, "the core restarted for sip.edges")
        report = wait_report(platform, device, 1, "rolled_back", timeout=40)
        assert report["error"]["rule"].startswith("registration failed"), report
        print("rolled back:", report["error"]["rule"])
        assert report["restart"] == ["sip.edges"]
        assert c.api.config()["document"]["sip"]["edges"] == good_edges
        wait_until(lambda: c.exits() >= 2, 20, "the core restarted for the old sip.edges")
        wait_until(lambda: _registered(c.api), 20, "registered again",
                   detail=lambda: c.log.read_text()[-1500:])
        assert c.api.status()["box"]["restart_required"] == []


def test_a_password_set_through_the_api_stays_out_of_the_version_reason(core: CoreRig) -> None:
    core.api.patch_config({"cloud.password": "pw-not-in-logs", "cloud.username": "box"})
    reason = core.api.config_versions()[-1]["reason"]
    assert "pw-not-in-logs" not in reason and "cloud.password = (secret)" in reason
    assert "'box'" in reason


def test_a_save_cut_short_by_an_agent_crash_is_found_or_applied_again(
        tmp_path: Path, core: CoreRig) -> None:
    clock, db = FakeClock(epoch=time.time()), tmp_path / "agent.db"
    before = store_version(core.api)
    # the crash came after the save: the store version is found by its reason
    core.api.patch_config({"calls.interdigit_s": 6.0}, "cloud desired version 9: crash")
    saved = store_version(core.api)
    ShadowDb(db).save(None, None, Pending(Work.CONFIRM, 9, before, None, clock.wall() + 60, 60))
    s, link = _fake_shadow(db, clock, core.api)
    s.tick(clock.now())
    assert link.sent[-1]["state"] == "confirming" and link.sent[-1]["store_version"] == saved
    assert s.pending is not None and s.pending.after == saved
    s.stop()
    # the crash came before the save: nothing is found; the retained version applies again
    ShadowDb(db).save(9, link.sent[-1], Pending(Work.CONFIRM, 10, saved, None,
                                                clock.wall() + 60, 60))
    s, link = _fake_shadow(db, clock, core.api)
    s.tick(clock.now())
    assert s.pending is None and link.sent == []
    link.deliver({"version": 10, "issued": clock.wall(), "set": {"calls.interdigit_s": 7.0},
                  "confirm_s": 0})
    _advance(clock, s, 1)
    assert link.sent[-1]["state"] == "applied" and link.sent[-1]["version"] == 10
    assert core.api.config()["document"]["calls"]["interdigit_s"] == 7.0
    s.stop()
