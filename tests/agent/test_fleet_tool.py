"""`python -m lab.fleet`, the platform's side in the lab, as a real process against a real
Mosquitto and a running `branchline agent run` on a real sim core: watch (status, CTI
events with latency, quality, records acknowledged), set, cmd, job, enrol, and bad input
(one line, exit 2)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from lab.fleet import Fleet
from lab.mosquitto import Mosquitto, PlatformClient
from lab.pki import Pki
from lab.procs import stop_process
from lab.wait import wait_until
from tests.agent.conftest import Core
from tests.agent.test_agent_process import AgentProc, enrol, hang_up, local_call

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def running(core: Core, broker: Mosquitto, pki: Pki,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The module's core enrolled, pointed at the broker, with its agent running."""
    tmp = tmp_path_factory.mktemp("fleet")
    device = enrol(core.data_dir, pki, tmp)
    core.api.patch_config({"cloud.broker": broker.url}, "fleet tool tests")
    client = PlatformClient(broker)  # acknowledges what waits in the outbox from the start
    platform = Fleet(client, device).start()
    agent = AgentProc(core, tmp).start()
    try:
        platform.until(lambda: core.api.status()["outbox"]["pending"] == 0, 20,
                       "the outbox delivered", step=0.2)
        yield {"device": device, "agent": agent, "tmp": tmp}
    finally:
        client.close()
        agent.stop()


def fleet_args(broker: Mosquitto, pki: Pki, device: str, *verb: str) -> list[str]:
    return [sys.executable, "-m", "lab.fleet", "--broker", broker.url, "--ca", str(pki.ca_file),
            "--cert", str(broker.platform_cert), "--key", str(broker.platform_key),
            "--timeout", "30", device, *verb]


def fleet(broker: Mosquitto, pki: Pki, device: str, *verb: str,
          timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fleet_args(broker, pki, device, *verb), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_watch_prints_the_box_and_acknowledges_its_records(
        core: Core, broker: Mosquitto, pki: Pki, running: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "watch.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(fleet_args(broker, pki, running["device"], "watch",
                                           "--seconds", "25"),
                                cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        text = lambda: out.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "status ONLINE" in text(), 10, "the retained birth", detail=text)
        local_call(core)
        hang_up(core)
        wait_until(lambda: "quality fxs" in text(), 15, "the call's quality", detail=text)
        for line in ("event RINGING fxs1 local 201 -> 202", "event ANSWERED",
                     "event HUNG_UP", "port->agent", "port->cloud"):
            assert line in text(), text()
        wait_until(lambda: "(cdr 1): acknowledged" in text(), 15, "the CDR acknowledged",
                   detail=text)
        wait_until(lambda: core.api.status()["outbox"]["pending"] == 0, 15, "the outbox drained",
                   step=0.2)
        assert "INVALID" not in text()
    finally:
        stop_process(proc, grace=5)


def test_set_applies_a_setting_and_reports_the_version(
        core: Core, broker: Mosquitto, pki: Pki, running: dict[str, Any]) -> None:
    got = fleet(broker, pki, running["device"], "set", "system.name=branch-fleet",
                "--confirm-s", "0")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "APPLIED (store version" in got.stdout, got.stdout
    assert core.api.config()["document"]["system"]["name"] == "branch-fleet"
    bad = fleet(broker, pki, running["device"], "set", "survive.announce_every_s=1",
                "--confirm-s", "0")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "REJECTED: survive.announce_every_s:" in bad.stdout, bad.stdout


def test_cmd_and_job_get_their_answers(broker: Mosquitto, pki: Pki,
                                       running: dict[str, Any]) -> None:
    got = fleet(broker, pki, running["device"], "cmd", "fetch_logs", "limit=3")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "cmd fetch_logs OK" in got.stdout
    refused = fleet(broker, pki, running["device"], "cmd", "make_coffee")
    assert refused.returncode == 1 and "cmd make_coffee REFUSED" in refused.stdout, refused.stdout
    job = fleet(broker, pki, running["device"], "job", "line_test", 'ports=["fxs2"]')
    assert job.returncode == 0, job.stdout + job.stderr
    assert "IN_PROGRESS" in job.stdout and "SUCCEEDED 100%" in job.stdout
    assert "fxs2 gr909 pass" in job.stdout


def test_enrol_signs_a_box_csr_with_the_lab_ca(pki: Pki, broker: Mosquitto,
                                               running: dict[str, Any], tmp_path: Path) -> None:
    csr = tmp_path / "box.csr"
    out = subprocess.run([sys.executable, "-m", "firmware", "agent", "identity", "--data-dir",
                          str(tmp_path / "data"), "--csr", str(csr)], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cert = tmp_path / "box.pem"
    got = fleet(broker, pki, "anybox", "enrol", str(csr), "--pki", str(pki.directory),
                "--out", str(cert))
    assert got.returncode == 0, got.stderr
    cn = x509.load_pem_x509_certificate(cert.read_bytes()).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value
    assert out.stdout.split("device id: ")[1].split()[0] == cn


@pytest.mark.parametrize(("verb", "message"), [
    (["set", "nonsense"], "set 'nonsense': write NAME=VALUE, e.g. survive.announce_every_s=8"),
    (["enrol", "/nonexistent.csr", "--pki", "/nonexistent-ca"],
     "enrol: cannot read the CSR /nonexistent.csr: No such file or directory"),
])
def test_bad_input_is_one_line_and_exit_2(broker: Mosquitto, pki: Pki, verb: list[str],
                                          message: str) -> None:
    got = fleet(broker, pki, "anybox", *verb)
    assert got.returncode == 2, got.stdout + got.stderr
    assert got.stderr.strip().splitlines() == [f"lab.fleet: {message}"], got.stderr


def test_a_bad_broker_url_is_one_line(pki: Pki, broker: Mosquitto) -> None:
    got = subprocess.run([sys.executable, "-m", "lab.fleet", "--broker", "http://nowhere",
                          "--ca", str(pki.ca_file), "anybox", "watch"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert got.returncode == 2
    assert got.stderr.strip() == "lab.fleet: --broker 'http://nowhere': give mqtts://HOST:PORT"
