"""Fixtures for the agent's tests: real peers only.

- `pki` (session): a CA made at test time (lab/pki.py).
- `broker` (module): a real Mosquitto on loopback with the repo's config and ACL
  (lab/mosquitto.py); one fallback user, PASSWORD_USER / PASSWORD.
- `device_link(device_id, **settings)`: a started Link for a device with a client cert
  from `pki`, stopped at teardown (waits for the first connect unless wait=False).
- `platform_client(**kw)`: a connected PlatformClient (the cloud side), closed at teardown.
- `core` (module): a real sim core subprocess with its control API on loopback TCP;
  `.api` is an ApiClient, `.data_dir`/`.config_dir` its directories.
Every process started here is stopped here, bounded in time.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.agent.link import Link, LinkSettings
from firmware.api.client import ApiClient, ApiError
from foundation.clock import MonotonicClock
from lab.mosquitto import Mosquitto, PlatformClient
from lab.pki import Pki
from lab.ports import free_port
from lab.procs import stop_process
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
PASSWORD_USER, PASSWORD = "dev-pw", "fallback-secret-1"
LINK_VERSION = "test-1.0"
DeviceLink = Callable[..., Link]  # the device_link fixture's factory
Platform = Callable[..., PlatformClient]  # the platform_client fixture's factory


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"), pki,
                  password_users={PASSWORD_USER: PASSWORD})
    b.start()
    yield b
    b.stop()


def link_settings(broker: Mosquitto, pki: Pki, device: str, **kw: Any) -> LinkSettings:
    """Settings for `device` on the broker's mTLS listener with a fresh client cert."""
    cert, key = pki.client(device)
    base: dict[str, Any] = {"device": device, "host": broker.host, "port": broker.tls_port,
                            "ca_file": str(pki.ca_file), "cert_file": str(cert),
                            "key_file": str(key), "version": LINK_VERSION, "keepalive_s": 10}
    base.update(kw)
    return LinkSettings(**base)


@pytest.fixture
def device_link(broker: Mosquitto, pki: Pki) -> Iterator[Callable[..., Link]]:
    links: list[Link] = []

    def make(device: str, *, wait: bool = True, start: bool = True,
             backoff_min_s: float = 0.2, backoff_max_s: float = 2.0, **kw: Any) -> Link:
        link = Link(link_settings(broker, pki, device, **kw), MonotonicClock(),
                    backoff_min_s=backoff_min_s, backoff_max_s=backoff_max_s)
        links.append(link)
        if start:
            link.start()
            if wait:
                wait_until(lambda: link.connected, 10, f"link of {device} up",
                           detail=lambda: link.last_error)
        return link

    yield make
    for link in links:
        link.stop()


@pytest.fixture
def platform_client(broker: Mosquitto) -> Iterator[Callable[..., PlatformClient]]:
    clients: list[PlatformClient] = []

    def make(**kw: Any) -> PlatformClient:
        client = PlatformClient(broker, **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class Core:
    """A sim core with the control API on loopback TCP; start()/stop() may be repeated."""

    def __init__(self, tmp: Path) -> None:
        self.config_dir, self.data_dir = tmp / "etc", tmp / "core-data"
        self.listen = f"127.0.0.1:{free_port('tcp')}"
        self.api = ApiClient(tcp=self.listen)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "core.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "firmware", "run", "--sim", "--config-dir",
                str(self.config_dir), "--data-dir", str(self.data_dir), "--api", self.listen]

    def _up(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("core did not start: " + self.log.read_text()[-2000:])
        try:
            self.api.status()
        except ApiError:
            return False
        return True

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        wait_until(self._up, 20, "core up", step=0.1,
                   detail=lambda: self.log.read_text()[-2000:])

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Core]:
    c = Core(tmp_path_factory.mktemp("core"))
    c.start()
    yield c
    c.stop()
