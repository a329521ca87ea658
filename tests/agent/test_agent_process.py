"""`branchline agent run` as a real process against a real sim core subprocess and a real
Mosquitto, with the lab's fleet tool as the platform: enrolment through the CLI, birth and
telemetry, a desired config applied and reported, CTI events and the quality of a local
call, a command, a job, records acknowledged; SIGTERM (offline "stopped", exit 0 within
5 s), SIGKILL (the core's call stays up, the last will says "lost"), a broker and a core
that are down when the agent starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.core.config import ConfigStore
from lab.fleet import TERMINAL_JOB, Fleet
from lab.mosquitto import Mosquitto, PlatformClient
from lab.pki import Pki
from lab.procs import stop_process
from lab.wait import wait_until
from tests.agent.conftest import PASSWORD, PASSWORD_USER, Core

ROOT = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "firmware", "agent"]
STOP_LIMIT_S = 5.0


def cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def enrol(data_dir: Path, pki: Pki, tmp: Path) -> str:
    """A device id of its own (tests share one machine-id), a CSR from `agent identity`,
    signed by the lab CA and installed with `agent install-cert`; the device id."""
    device = f"bl-test-{uuid.uuid4().hex[:10]}"
    agent_dir = data_dir / "agent"
    agent_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (agent_dir / "device-id").write_text(device + "\n")
    csr, cert = tmp / f"{device}.csr", tmp / f"{device}.pem"
    out = cli("identity", "--data-dir", str(data_dir), "--csr", str(csr))
    assert out.returncode == 0, out.stderr
    assert f"device id: {device}" in out.stdout
    cert.write_bytes(pki.sign_csr(csr.read_bytes()))
    out = cli("install-cert", str(cert), "--ca", str(pki.ca_file), "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    return device


class AgentProc:
    """`branchline agent run` against `core`, its output in a log file."""

    def __init__(self, core: Core, tmp: Path) -> None:
        self.core = core
        self.log = tmp / f"agent-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*AGENT, "run", "--api", self.core.listen, "--data-dir", str(self.core.data_dir)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, grace=STOP_LIMIT_S)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProc]]:
    started: list[AgentProc] = []
    yield started
    for a in started:
        a.stop()


def platform(broker: Mosquitto, device: str) -> tuple[PlatformClient, Fleet]:
    client = PlatformClient(broker)
    return client, Fleet(client, device).start()


def online(fleet: Fleet, timeout: float = 20.0, what: str = "the box online") -> dict[str, Any]:
    return fleet.until(lambda: fleet.state.status if (fleet.state.status or {}).get("state")
                       == "online" else None, timeout, what)


@pytest.fixture(scope="module")
def box(core: Core, broker: Mosquitto, pki: Pki,
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The module's sim core, enrolled and pointed at the module's broker."""
    device = enrol(core.data_dir, pki, tmp_path_factory.mktemp("enrol"))
    core.api.patch_config({"cloud.broker": broker.url, "cloud.telemetry_s": 5}, "agent tests")
    return {"device": device}


def local_call(core: Core) -> None:
    """fxs1 calls fxs2 (202); fxs2 answers."""
    core.api.sim_phone("fxs1", "off_hook")
    wait_until(lambda: _port(core, "fxs1") == "off-hook", 5, "fxs1 off hook")
    core.api.sim_phone("fxs1", "dial", digits="202")
    wait_until(lambda: _port(core, "fxs2", "ringing"), 5, "fxs2 ringing")
    core.api.sim_phone("fxs2", "off_hook")
    wait_until(lambda: _port(core, "fxs1") == "in-call", 5, "the call up")


def hang_up(core: Core) -> None:
    for port in ("fxs1", "fxs2"):
        core.api.sim_phone(port, "on_hook")
    wait_until(lambda: _port(core, "fxs1") == "on-hook" and _port(core, "fxs2") == "on-hook",
               5, "both phones on hook")


def _port(core: Core, name: str, field: str = "state") -> Any:
    return next(p.get(field) for p in core.api.status()["ports"] if p["name"] == name)


def test_the_agent_process_end_to_end(core: Core, broker: Mosquitto, box: dict[str, Any],
                                      agents: list[AgentProc], tmp_path: Path) -> None:
    client, fleet = platform(broker, box["device"])
    try:
        agent = AgentProc(core, tmp_path).start()
        agents.append(agent)
        # birth, retained: a platform that subscribes later still sees it
        online(fleet)
        late_client, late = platform(broker, box["device"])
        try:
            assert online(late, 5, "the retained birth")["version"]
        finally:
            late_client.close()
        fleet.until(lambda: fleet.state.telemetry_count, 15, "telemetry")
        assert "Device.DeviceInfo.UpTime" in fleet.state.telemetry
        # desired config applied and reported
        version = fleet.set({"system.name": "branch-agent-test"}, confirm_s=0)
        report = fleet.until(lambda: fleet.report_for(version), 15, "the report")
        assert report["state"] == "applied", report
        assert core.api.config()["document"]["system"]["name"] == "branch-agent-test"
        assert report["store_version"] == core.api.config()["version"]
        # a local call: CTI events and its quality
        local_call(core)
        hang_up(core)
        hung = fleet.until(lambda: next((e for e in fleet.state.events
                                         if e["kind"] == "hung_up"), None), 10, "hung_up")
        kinds = [e["kind"] for e in fleet.state.events if e.get("call_id") == hung["call_id"]]
        assert kinds[:2] == ["ringing", "answered"] and kinds[-1] == "hung_up", kinds
        assert hung["sent"] >= hung["time"] and hung["received"] - hung["time"] < 2.0
        quality = fleet.until(lambda: next((q for q in fleet.state.quality
                                            if q["call_id"] == hung["call_id"]), None), 10,
                              "the call's quality")
        assert quality["port"] in ("fxs1", "fxs2")
        # its CDR over MQTT, acknowledged: the outbox drains
        fleet.until(lambda: any(r["kind"] == "cdr" and r["body"].get("uuid", r["uuid"])
                                for r in fleet.state.records.values()), 15, "the CDR")
        wait_until(lambda: core.api.status()["outbox"]["pending"] == 0, 15, "the outbox drained",
                   step=0.2)
        # a command answered
        cid = fleet.command("fetch_logs", {"limit": 5})
        answer = fleet.until(lambda: fleet.state.results.get(cid), 15, "the command's answer")
        assert answer["status"] == "ok" and answer["result"]["items"], answer
        # a job done
        jid = fleet.job("line_test", {"ports": ["fxs1"]})
        done = fleet.until(lambda: _finished(fleet, jid), 30, "the job's end")
        assert done["state"] == "SUCCEEDED", done
        assert not fleet.state.invalid
        # SIGTERM: offline "stopped" and exit 0 within 5 s
        began = time.monotonic()
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(STOP_LIMIT_S) == 0, agent.text()
        assert time.monotonic() - began < STOP_LIMIT_S
        gone = fleet.until(lambda: fleet.state.status if fleet.state.status["state"] == "offline"
                           else None, 5, "the offline status")
        assert gone["reason"] == "stopped"
        assert "Traceback" not in agent.text(), agent.text()
    finally:
        client.close()


def _finished(fleet: Fleet, job_id: str) -> dict[str, Any] | None:
    status = fleet.state.jobs.get(job_id)
    return status if status and status["state"] in TERMINAL_JOB else None


def test_killing_the_agent_leaves_the_call_and_the_last_will_says_lost(
        core: Core, broker: Mosquitto, box: dict[str, Any], agents: list[AgentProc],
        tmp_path: Path) -> None:
    client, fleet = platform(broker, box["device"])
    try:
        agent = AgentProc(core, tmp_path).start()
        agents.append(agent)
        online(fleet)
        local_call(core)
        assert agent.proc is not None
        agent.proc.kill()
        agent.proc.wait(5)
        will = fleet.until(lambda: fleet.state.status if fleet.state.status["state"] == "offline"
                           else None, 10, "the last will")
        assert will["reason"] == "lost"
        assert _port(core, "fxs1") == "in-call" and _port(core, "fxs2") == "in-call"
        assert {c["port"] for c in core.api.status()["calls"]
                if c["state"] == "connected"} == {"fxs1", "fxs2"}
        hang_up(core)
    finally:
        client.close()


def own_core(tmp: Path) -> Core:
    """A sim core of the test's own (not started)."""
    (tmp / "own").mkdir()
    return Core(tmp / "own")


def _preset_cloud(config_dir: Path, url: str) -> None:
    """The core's config store says cloud.broker before that core ever starts."""
    store = ConfigStore(config_dir)
    doc = store.load()
    doc["cloud"] = {"broker": url}
    store.save(doc, "agent test: the fleet broker")


def test_a_broker_down_at_start_is_retried_until_it_comes(
        pki: Pki, agents: list[AgentProc], tmp_path: Path) -> None:
    late = Mosquitto(tmp_path / "late-broker", pki)
    own = own_core(tmp_path)
    _preset_cloud(own.config_dir, late.url)
    own.start()
    try:
        device = enrol(own.data_dir, pki, tmp_path)
        agent = AgentProc(own, tmp_path).start()
        agents.append(agent)
        wait_until(lambda: "cloud link: cannot connect" in agent.text(), 15, "the agent's retry line", detail=agent.text)
        assert agent.proc is not None and agent.proc.poll() is None
        late.start()
        client, fleet = platform(late, device)
        try:
            online(fleet, 30, "the box online once the broker came")
        finally:
            client.close()
        assert agent.text().count("cloud link: ") <= 3, agent.text()  # one line, not a flood
    finally:
        own.stop()
        late.stop()


def test_a_core_down_at_start_is_waited_for(broker: Mosquitto, pki: Pki,
                                            agents: list[AgentProc], tmp_path: Path) -> None:
    own = own_core(tmp_path)
    _preset_cloud(own.config_dir, broker.url)
    device = enrol(own.data_dir, pki, tmp_path)
    client, fleet = platform(broker, device)
    try:
        agent = AgentProc(own, tmp_path).start()
        agents.append(agent)
        wait_until(lambda: "waiting for the core" in agent.text(), 15,
                   "the agent's waiting line", detail=agent.text)
        assert agent.proc is not None and agent.proc.poll() is None, agent.text()
        assert fleet.state.status is None
        own.start()
        online(fleet, 30, "the box online once the core came")
        assert agent.text().count("waiting for the core") == 1, agent.text()
        agent.stop()
        assert agent.proc.returncode == 0
    finally:
        client.close()
        own.stop()


def test_an_empty_broker_idles_then_cloud_changes_are_followed_live(
        broker: Mosquitto, pki: Pki, agents: list[AgentProc], tmp_path: Path) -> None:
    own = own_core(tmp_path)
    own.start()
    other = Mosquitto(tmp_path / "other-broker", pki).start()
    try:
        device = enrol(own.data_dir, pki, tmp_path)
        agent = AgentProc(own, tmp_path).start()
        agents.append(agent)
        wait_until(lambda: "idle: cloud.broker is empty" in agent.text(), 15,
                   "the agent saying why it idles", detail=agent.text)
        client, fleet = platform(broker, device)
        other_client, other_fleet = platform(other, device)
        try:
            own.api.patch_config({"cloud.broker": broker.url}, "agent test")
            online(fleet, 15, "the box online once cloud.broker was set")
            own.api.patch_config({"cloud.broker": other.url}, "agent test: another broker")
            online(other_fleet, 15, "the box online at the new broker")
            assert agent.text().count("cloud.broker is empty") == 1, agent.text()
            assert "reconnecting to 127.0.0.1" in agent.text()
        finally:
            client.close()
            other_client.close()
    finally:
        own.stop()
        other.stop()


def test_the_agent_commands_refuse_bad_input_in_one_line(core: Core, box: dict[str, Any],
                                                         pki: Pki, tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    cases = [
        (cli("install-cert", str(bad), *data), f"certificate {bad}: not a PEM certificate"),
        (cli("install-cert", "/nonexistent.pem", *data), "certificate /nonexistent.pem: "
                                                         "cannot read it"),
        (cli("install-cert", str(pki.client("someone-else")[0]), *data),
         "certificate refused: its public key is not this box's key"),
    ]
    for out, message in cases:
        assert out.returncode == 2, out.stdout + out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], out.stderr
    status = cli("status", "--api", core.listen, "--data-dir", str(core.data_dir))
    assert status.returncode == 0, status.stderr
    assert f"device id    {box['device']}" in status.stdout
    assert "device.pem" in status.stdout and "broker-ca.pem" in status.stdout
    assert "mqtts://127.0.0.1:" in status.stdout
    down = cli("status", "--api", "127.0.0.1:9", "--data-dir", str(tmp_path / "data"))
    assert down.returncode == 0 and "unknown (the core does not answer" in down.stdout


def test_the_password_fallback_connects_and_the_password_is_never_logged(
        broker: Mosquitto, pki: Pki, agents: list[AgentProc], tmp_path: Path) -> None:
    own = own_core(tmp_path)
    agent_dir = own.data_dir / "agent"
    agent_dir.mkdir(parents=True, mode=0o700)
    (agent_dir / "device-id").write_text(PASSWORD_USER + "\n")  # the ACL's %u is the user
    store = ConfigStore(own.config_dir)
    doc = store.load()
    doc["cloud"] = {"broker": broker.password_url, "ca_file": str(pki.ca_file)}
    store.save(doc, "agent test: no certificate yet")
    own.start()
    client, fleet = platform(broker, PASSWORD_USER)
    try:
        agent = AgentProc(own, tmp_path).start()
        agents.append(agent)
        wait_until(lambda: "no device certificate installed and no cloud.username"
                   in agent.text(), 15, "the agent saying why it idles", detail=agent.text)
        own.api.patch_config({"cloud.username": PASSWORD_USER, "cloud.password": PASSWORD})
        online(fleet, 15, "the box online with the fallback login")
        agent.stop()
        assert PASSWORD not in agent.text() and "(username, pinned CA)" in agent.text()
    finally:
        client.close()
        own.stop()
