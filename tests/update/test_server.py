"""The update API over a real Unix socket (server.py) and its client (client.py): the
state document, an install queued (202) or refused with its reason (422), BUSY (409),
cancel, bad bodies (400 naming the field), unknown paths (404), the socket's mode 0660,
and a service that does not answer as one line."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.api.client import ApiClient
from firmware.update.client import UpdateClient
from firmware.update.rauc import Rauc, Reason, UpdateError
from firmware.update.server import UpdateServer
from firmware.update.service import UpdateService
from firmware.update.state import Phase
from foundation.reactor import FakeClock
from lab.wait import wait_until
from tests.update.updaterig import Signer, make_bundle


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Path, Path]:
    d = tmp_path_factory.mktemp("bundles")
    signer = Signer(d, "fleet")
    return signer, make_bundle(d / "new.raucb", "2.1.0", signer), make_bundle(
        d / "unsigned.raucb", "2.1.0", None)


class Served:
    def __init__(self, tmp: Path, signer: Signer) -> None:
        api = ApiClient(unix_path=str(tmp / "no-core.sock"), timeout=1)  # so it waits
        self.service = UpdateService(tmp / "data", Rauc(), lambda: api, FakeClock(),
                                     keyring=signer.ca, compatible="branchline-rpi",
                                     reboot=lambda tryboot: None, config_dir=tmp / "etc",
                                     retry_s=0.05, version=lambda: "2.0.0")
        self.socket = tmp / "run" / "update.sock"
        self.server = UpdateServer(self.service, self.socket)
        self.server.start()
        self.client = UpdateClient(str(self.socket))

    def raw(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(self.socket))
        conn = http.client.HTTPConnection("localhost", timeout=10)
        conn.sock = sock
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def close(self) -> None:
        self.server.stop()
        self.service.close()


@pytest.fixture
def served(tmp_path: Path, signed: tuple[Signer, Path, Path]) -> Iterator[Served]:
    s = Served(tmp_path, signed[0])
    yield s
    s.close()


def test_socket_is_0660_and_status_is_the_state_doc(served: Served) -> None:
    assert stat.S_IMODE(os.stat(served.socket).st_mode) == 0o660
    state = served.client.status()
    assert state["phase"] == Phase.IDLE and state["progress"] == 0


def test_install_queued_then_busy_then_cancelled(served: Served,
                                                 signed: tuple[Signer, Path, Path]) -> None:
    state = served.client.install(str(signed[1]), "agent", job="job-42")
    assert state["phase"] == Phase.CHECKING and state["job"] == "job-42"
    wait_until(lambda: served.client.status()["phase"] == Phase.WAITING, 10, "waiting")
    status, body = served.raw("POST", "/install", json.dumps(
        {"path": str(signed[1]), "source": "web"}).encode())
    assert status == 409 and body["reason"] == Reason.BUSY
    with pytest.raises(UpdateError) as err:
        served.client.install(str(signed[1]), "web")
    assert err.value.reason == Reason.BUSY
    assert served.client.cancel()["phase"] == Phase.IDLE


def test_refusal_is_422_with_reason_and_message(served: Served,
                                               signed: tuple[Signer, Path, Path]) -> None:
    status, body = served.raw("POST", "/install", json.dumps(
        {"path": str(signed[2]), "source": "console", "force": True}).encode())
    assert status == 422 and body == {
        "reason": "unsigned", "message": "bundle is not signed: get the signed .raucb from "
                                         "the release"}
    with pytest.raises(UpdateError) as err:
        served.client.install(str(signed[2]), "console")
    assert err.value.reason == Reason.UNSIGNED


def test_a_device_or_folder_is_not_a_bundle(served: Served, tmp_path: Path) -> None:
    """The service runs as root for its clients: /dev/zero would be read for ever."""
    for path in ("/dev/zero", str(tmp_path)):
        with pytest.raises(UpdateError) as err:
            served.client.install(path, "console")
        assert err.value.reason == Reason.BAD_INPUT and "not a regular file" in str(err.value)
    assert served.client.status()["phase"] != Phase.CHECKING


@pytest.mark.parametrize("body, field, words", [
    (b"{not json", None, "not valid JSON"),
    (b"[]", None, "send a JSON object"),
    (b'{"source": "web"}', "path", "path: missing"),
    (b'{"path": "x.raucb", "source": "web"}', "path", "must be an absolute path"),
    (b'{"path": "/x.raucb", "source": "fax"}', "source", "'fax' is not one of web, console"),
    (b'{"path": "/x.raucb", "source": "web", "force": "yes"}', "force", "true or false"),
    (b'{"path": "/x.raucb", "source": "web", "job": 7}', "job", "a string or null"),
    (b'{"path": "/x.raucb", "source": "web", "forse": true}', "forse", "unknown field")])
def test_bad_bodies_are_400_naming_the_field(served: Served, body: bytes, field: str | None,
                                             words: str) -> None:
    status, reply = served.raw("POST", "/install", body)
    assert status == 400 and reply["reason"] == Reason.BAD_INPUT
    assert reply["field"] == field and words in reply["message"]


def test_unknown_path_404_and_wrong_method_405(served: Served) -> None:
    status, body = served.raw("GET", "/reboot")
    assert status == 404 and "no such endpoint: /reboot" in body["message"]
    status, body = served.raw("GET", "/install")
    assert status == 405


def test_a_service_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UpdateError) as err:
        UpdateClient(str(tmp_path / "none.sock"), timeout=2).status()
    assert err.value.reason == Reason.UNAVAILABLE
    assert "does not answer" in str(err.value) and "branchline update serve" in str(err.value)
