"""Telemetry's firmware update figures (Device.DeviceInfo.X_BRANCHLINE_Update.*) from a real
update service (`branchline update serve` on a Unix socket, lab/updatesvc.py): its phase,
progress and the outcome of the last update as the service's state file holds them (the
state is written the way the install and the confirm step leave it), sent when they move;
and nothing of them, without waiting long, when the service is missing or hangs."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.agent import protocol
from firmware.agent.protocol import Topic
from firmware.agent.telemetry import (
    UPDATE,
    UPDATE_OUTCOME,
    UPDATE_PHASE,
    UPDATE_PROGRESS,
    UPDATE_REASON,
    UPDATE_TIMEOUT_S,
    UPDATE_VERSION,
    Telemetry,
)
from firmware.api.client import ApiClient
from foundation.clock import FakeClock
from lab.ports import free_port
from lab.updatesvc import UpdateService
from tests.agent.test_telemetry import Recorder


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpdateService]:
    tmp = tmp_path_factory.mktemp("update")
    keyring = tmp / "keyring.pem"  # no bundle is checked here
    keyring.write_text("")
    svc = UpdateService(tmp, keyring, "127.0.0.1:9")
    try:
        yield svc.start()
    finally:
        svc.stop()


def _telemetry(tmp_path: Path, socket_path: Path) -> tuple[Telemetry, Recorder, FakeClock]:
    link, clock = Recorder(), FakeClock()
    no_core = ApiClient(tcp=f"127.0.0.1:{free_port()}", timeout=2.0)  # nothing listens
    t = Telemetry(link, no_core, clock, telemetry_s=60, full_s=3600, data_dir=tmp_path,
                  background=False, update_socket=str(socket_path))
    t.connected(True)
    return t, link, clock


def _write_state(service: UpdateService, **doc: Any) -> None:
    """The state file as the update service / the confirm step leave it."""
    state = service.data_dir / "update" / "state.json"
    state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = {"phase": "IDLE", "source": "", "bundle": "", "version_from": "1.0.0",
            "version_to": "", "progress": 0, "message": "", "reason": "", "job": None,
            "started": None, "finished": None, "baseline": []}
    state.write_text(json.dumps({**base, **doc}))


def _update_part(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload["params"].items() if k.startswith(UPDATE)}


def test_phase_progress_and_outcome_from_the_update_service(
        service: UpdateService, tmp_path: Path) -> None:
    _write_state(service)
    t, link, clock = _telemetry(tmp_path, service.socket)
    t.tick(clock.now())
    full = link.sent[-1]
    assert full["full"] and protocol.validate(Topic.TELEMETRY, full) == full
    assert _update_part(full) == {UPDATE_PHASE: "IDLE", UPDATE_PROGRESS: 0,
                                  UPDATE_OUTCOME: None, UPDATE_REASON: None,
                                  UPDATE_VERSION: None}

    _write_state(service, phase="INSTALLING", progress=5, version_to="2.0.0", source="agent")
    clock.set(clock.now() + 60)
    t.tick(clock.now())  # 5 points of progress: inside its deadband, the phase is not
    assert _update_part(link.sent[-1]) == {UPDATE_PHASE: "INSTALLING",
                                           UPDATE_VERSION: "2.0.0"}
    _write_state(service, phase="INSTALLING", progress=9, version_to="2.0.0")
    clock.set(clock.now() + 60)
    quiet = t.run_once(clock.now())  # 9 against the 0 last sent: still inside
    assert quiet is None or not _update_part(quiet), quiet  # (the CPU figure may move)
    _write_state(service, phase="INSTALLING", progress=40, version_to="2.0.0")
    clock.set(clock.now() + 60)
    t.tick(clock.now())
    assert _update_part(link.sent[-1]) == {UPDATE_PROGRESS: 40}

    _write_state(service, phase="GOOD", progress=100, version_to="2.0.0",
                 message="healthy: kept")
    clock.set(clock.now() + 60)
    t.tick(clock.now())
    sent = link.sent[-1]
    assert protocol.validate(Topic.TELEMETRY, sent) == sent
    assert _update_part(sent) == {UPDATE_PHASE: "GOOD", UPDATE_PROGRESS: 100,
                                  UPDATE_OUTCOME: "GOOD"}

    _write_state(service, phase="ROLLED_BACK", version_to="2.0.0", reason="health_failed")
    clock.set(clock.now() + 60)
    t.tick(clock.now())
    assert _update_part(link.sent[-1]) == {UPDATE_PHASE: "ROLLED_BACK", UPDATE_PROGRESS: 0,
                                           UPDATE_OUTCOME: "ROLLED_BACK",
                                           UPDATE_REASON: "health_failed"}


def test_a_missing_or_hung_update_service_leaves_them_out(tmp_path: Path) -> None:
    t, link, clock = _telemetry(tmp_path, tmp_path / "nobody.sock")
    t.tick(clock.now())
    assert link.sent and not _update_part(link.sent[-1])

    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:  # accepts connections (the backlog) and never answers
        hung.bind(str(tmp_path / "hung.sock"))
        hung.listen(4)
        t, link, clock = _telemetry(tmp_path, tmp_path / "hung.sock")
        started = time.monotonic()
        t.tick(clock.now())
        took = time.monotonic() - started
    finally:
        hung.close()
    assert link.sent and not _update_part(link.sent[-1])
    assert took < UPDATE_TIMEOUT_S + 2.0, f"a sample waited {took:.1f} s for the service"
