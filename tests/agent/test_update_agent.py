"""The cloud agent's firmware_update job end to end: the platform sends jobs/new through a
real Mosquitto; the agent's Jobs part downloads the bundle from a real HTTPS server on
loopback (certificate from the test CA of lab/pki.py, trusted as the fleet's CA) and
hands it to a real update service (`branchline update serve`) driving the real `rauc
service` on a private bus over one loop-device SD card for the module (lab/updatesvc.py
RaucBox; `systemctl` is a shim recording the reboot), reporting progress on jobs/status:
the download as 0..40 %, the install as 40..100 %, SUCCEEDED once the box reboots into the
new slot, and the update's outcome (GOOD) once the confirm step has written it."""

from __future__ import annotations

import hashlib
import http.server
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.agent.jobs import OUTCOME_CHECK_S
from firmware.agent.link import Link
from firmware.api.client import ApiClient
from firmware.cdr import CdrStore
from foundation.clock import MonotonicClock
from foundation.reactor import Clock
from lab.mosquitto import PlatformClient
from lab.pki import Pki
from lab.updatesvc import RaucBox, UpdateService, signed_bundle
from lab.wait import wait_until
from tests.agent.conftest import Core
from tests.agent.test_jobs import Box, Cloud
from tests.update.fixtures import serve
from tests.update.updaterig import Signer, make_bundle


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


DOWNLOAD_PAD = 512 << 10  # the agent reads 64 KiB at a time: a download of several reads


class SkipClock(MonotonicClock):
    """The real clock, which a test moves ahead so the idle agent looks for an update's
    outcome now rather than OUTCOME_CHECK_S later."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def now(self) -> float:
        return time.monotonic() + self.ahead

    def skip(self, seconds: float) -> None:
        self.ahead += seconds


class BundleServer:
    """HTTPS on 127.0.0.1 serving `root`, its certificate issued by `pki`."""

    def __init__(self, root: Path, pki: Pki) -> None:
        cert, key = pki.server("localhost")
        handler = lambda *a: _Files(*a, directory=str(root))  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def service(core: Core, signer: Signer, box: RaucBox,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpdateService]:
    yield from serve(core.listen, signer, box, tmp_path_factory)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("www")


@pytest.fixture(scope="module")
def server(files: Path, pki: Pki) -> Iterator[BundleServer]:
    s = BundleServer(files, pki)
    yield s
    s.close()


Setup = Callable[..., tuple[Box, Cloud]]


@pytest.fixture
def setup(device_link: Callable[..., Link], platform_client: Callable[..., PlatformClient],
          core: Core, service: UpdateService, pki: Pki, tmp_path: Path) -> Iterator[Setup]:
    boxes: list[Box] = []
    store = CdrStore(core.data_dir / "cdr.db")

    def make(device: str, clock: Clock | None = None, **kw: Any) -> tuple[Box, Cloud]:
        cloud = Cloud(platform_client(), device)
        box = Box(device_link(device, start=False), core, tmp_path / "agent.db",
                  clock or MonotonicClock(), store, update_socket=str(service.socket),
                  fleet_ca=pki.ca_file, incoming=tmp_path / "incoming", **kw)
        boxes.append(box)
        return box, cloud

    yield make
    for box in boxes:
        box.close()
    store.close()


def _publish(files: Path, bundle: Path) -> tuple[str, int]:
    (files / bundle.name).write_bytes(bundle.read_bytes())
    return hashlib.sha256(bundle.read_bytes()).hexdigest(), bundle.stat().st_size


def test_wrong_sha256_fails_naming_it(setup: Setup, server: BundleServer, files: Path,
                                      signer: Signer, tmp_path: Path) -> None:
    _box, cloud = setup("upd-sha")
    bundle = make_bundle(tmp_path / "b" / "branchline-9.0.raucb", "9.0", signer)
    _sha, size = _publish(files, bundle)
    wrong = "0" * 64
    job = cloud.new("firmware_update", {"url": server.url + bundle.name, "sha256": wrong,
                                        "size": size})
    final = cloud.final(job)
    assert final["state"] == "FAILED", final
    assert "SHA-256 mismatch" in final["error"] and wrong in final["error"]
    assert "download" in final["error"]
    assert not list((tmp_path / "incoming").glob("*.raucb*"))  # nothing half kept


def test_bad_args_refused_at_once(setup: Setup, server: BundleServer) -> None:
    _box, cloud = setup("upd-args")
    job = cloud.new("firmware_update", {"url": "http://example.com/x.raucb",
                                        "sha256": "0" * 64, "size": 10})
    final = cloud.final(job)
    assert final["state"] == "FAILED" and final["error"].startswith("args.url:")
    job = cloud.new("firmware_update", {"url": server.url + "x.raucb", "size": 10})
    assert cloud.final(job)["error"] == "args.sha256: is required"


def test_untrusted_server_certificate_fails(setup: Setup, files: Path, tmp_path: Path) -> None:
    other = BundleServer(files, Pki(tmp_path / "other-ca"))  # not the fleet's CA
    try:
        _box, cloud = setup("upd-tls")
        (files / "any.raucb").write_bytes(b"x" * 100)
        job = cloud.new("firmware_update", {"url": other.url + "any.raucb",
                                            "sha256": "1" * 64, "size": 100})
        final = cloud.final(job)
        assert final["state"] == "FAILED" and "not trusted" in final["error"], final
    finally:
        other.close()


def test_job_downloads_installs_with_progress_then_reports_good(
        setup: Setup, server: BundleServer, files: Path, signer: Signer,
        service: UpdateService, held: RaucBox, tmp_path: Path) -> None:
    """The install is held at its first write to the boot selection until the cloud has
    an IN_PROGRESS status inside the install's share (40..100 %), so the percentages are
    seen rising through both shares; then it runs on to REBOOTING."""
    clock = SkipClock()
    _box, cloud = setup("upd-good", clock=clock)
    bundle = signed_bundle(tmp_path / "b" / "branchline-2.0.0.raucb", "2.0.0", signer.cert,
                           signer.key, pad_bytes=DOWNLOAD_PAD)
    sha, size = _publish(files, bundle)
    try:
        job = cloud.new("firmware_update", {"url": server.url + bundle.name, "sha256": sha,
                                            "size": size})
        cloud.wait(job, lambda s: s["state"] == "IN_PROGRESS" and 40 < s["progress"] < 100
                   and "installing" in s["step"], 60, "the install's progress")
        assert held.holding(), "the install went past the hold"
    finally:
        held.release()
    final = cloud.final(job, timeout=60)
    assert final["state"] == "SUCCEEDED" and final["progress"] == 100, final
    assert final["result"]["phase"] == "REBOOTING"
    assert final["result"]["version_to"] == "2.0.0"
    progress = [s["progress"] for s in cloud.statuses(job) if s["state"] == "IN_PROGRESS"]
    assert progress == sorted(progress), progress
    assert any(0 < p < 40 for p in progress), progress  # the download's share
    assert any(40 < p < 100 for p in progress), progress  # the install's share
    assert any("downloading" in s["step"] for s in cloud.statuses(job))
    st = service.client.status()
    assert st["job"] == job and st["source"] == "agent" and st["phase"] == "REBOOTING"
    assert st["bundle"] == str(tmp_path / "incoming" / f"{sha}.raucb")
    assert (tmp_path / "incoming" / f"{sha}.raucb").read_bytes() == bundle.read_bytes()
    assert service.reboot_requests() == ["reboot 0 tryboot"]
    assert held.disk.release("B") == "2.0.0"  # RAUC wrote slot B's root
    # the trial boot's confirm step (simulated: it writes the state) keeps the slot
    state = service.data_dir / "update" / "state.json"
    state.write_text(json.dumps({**st, "phase": "GOOD", "message": "healthy: kept"}))
    clock.skip(OUTCOME_CHECK_S)
    again = cloud.wait(job, lambda s: "outcome" in s.get("result", {}), 10, "the outcome")
    assert again["state"] == "SUCCEEDED" and again["result"]["outcome"] == "GOOD"


def test_cancel_while_waiting_for_a_call_cancels_the_update(
        setup: Setup, server: BundleServer, files: Path, signer: Signer,
        service: UpdateService, core: Core, tmp_path: Path) -> None:
    _box, cloud = setup("upd-cancel")
    api = ApiClient(tcp=core.listen)
    bundle = make_bundle(tmp_path / "b" / "branchline-9.2.raucb", "9.2", signer)
    sha, size = _publish(files, bundle)
    api.sim_phone("fxs1", "off_hook")
    api.sim_phone("fxs1", "dial", digits="202")
    try:
        wait_until(lambda: api.status()["calls"], 10, "a call up")
        job = cloud.new("firmware_update", {"url": server.url + bundle.name, "sha256": sha,
                                            "size": size})
        cloud.wait(job, lambda s: "waiting" in s["step"], 60, "the waiting step")
        assert service.client.status()["reason"] == "calls_up"
        cloud.cancel(job)
        final = cloud.final(job)
        assert final["state"] == "CANCELLED" and "WAITING" in final["step"], final
        assert service.client.status()["phase"] == "IDLE"
    finally:
        api.sim_phone("fxs1", "on_hook")


def test_outcome_after_the_reboot_is_reported(setup: Setup, server: BundleServer,
                                              files: Path, signer: Signer,
                                              service: UpdateService, tmp_path: Path) -> None:
    """The reboot itself cannot happen here: the update state the box has when the agent
    comes back after it (REBOOTING for this job, as the service leaves it) is written to
    the service's state file, then GOOD as the confirm step writes it."""
    bundle = make_bundle(tmp_path / "b" / "branchline-9.3.raucb", "9.3", signer)
    sha, size = _publish(files, bundle)
    state = service.data_dir / "update" / "state.json"
    job = "fw-after-reboot-1"
    doc = {**service.client.status(), "phase": "REBOOTING", "job": job, "source": "agent",
           "version_to": "9.3", "progress": 100, "reason": "", "started": time.time()}
    state.write_text(json.dumps(doc))
    clock = SkipClock()
    _box, cloud = setup("upd-outcome", clock=clock)
    cloud.new("firmware_update", {"url": server.url + bundle.name, "sha256": sha,
                                  "size": size}, job_id=job)
    final = cloud.final(job, timeout=60)
    assert final["state"] == "SUCCEEDED" and final["result"]["phase"] == "REBOOTING"
    assert final["progress"] == 100
    state.write_text(json.dumps({**doc, "phase": "GOOD", "message": "healthy: kept"}))
    clock.skip(OUTCOME_CHECK_S)
    again = cloud.wait(job, lambda s: "outcome" in s.get("result", {}), 10, "the outcome")
    assert again["state"] == "SUCCEEDED" and again["result"]["outcome"] == "GOOD"
    assert again["result"]["message"] == "healthy: kept"
