"""Control-API test rig: a real core (SimBoard twins, call control, CDRs in a tmp data
dir, SimCloud or no cloud) on a real-clock reactor in its own thread, and the real API
server on loopback TCP and a Unix socket in a tmp dir. Tests talk to it over the
sockets only (ApiClient, http.client, schemathesis)."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import threading

import pytest

from drivers.sim.board import SimBoard
from firmware.api.client import ApiClient
from firmware.api.server import ApiServer
from firmware.core.config import ConfigStore
from firmware.core.runtime import Core
from foundation.reactor import MonotonicClock, Reactor
from lab.simcloud import SimCloud


class LiveCore:
    """The core and its API server, running; see the module docstring."""

    def __init__(self, tmp, cloud: bool) -> None:
        self.store = ConfigStore(tmp / "etc")
        doc = self.store.load()
        self.reactor = Reactor(MonotonicClock())
        self.board = SimBoard(self.reactor, doc)
        bridge = SimCloud(self.reactor) if cloud else None
        self.core = Core(doc, self.board, self.reactor, bridge=bridge, data_dir=tmp / "data")
        ready, self.failure = threading.Event(), None
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(30), "the core did not start within 30 s"
        assert self.failure is None, self.failure
        self.socket = tmp / "run" / "core.sock"
        self.server = ApiServer(self.core, self.store, tcp="127.0.0.1:0",
                                unix_path=str(self.socket))
        self.server.start()
        self.tcp = f"127.0.0.1:{self.server.tcp_address[1]}"
        self.api = ApiClient(tcp=self.tcp)
        self.unix = ApiClient(unix_path=str(self.socket))

    def _run(self, ready: threading.Event) -> None:
        try:
            self.core.start()
        except Exception as exc:  # noqa: BLE001 - reported by the constructor
            self.failure = exc
            ready.set()
            return
        ready.set()
        self.reactor.run_forever()
        self.core.stop()

    def on_reactor(self, fn, *args, timeout: float = 5.0):
        """Run fn on the reactor thread (where the twins live) and return its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)

        self.reactor.call_soon(run)
        return future.result(timeout)

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
        """One request over TCP with exactly these bytes; (status, headers, body)."""
        host, port = self.tcp.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request(method, "/api/v1" + path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def post(self, path: str, obj) -> tuple[int, dict]:
        status, _h, data = self.raw("POST", path, json.dumps(obj).encode(),
                                    {"Content-Type": "application/json"})
        return status, json.loads(data)

    def close(self) -> None:
        self.server.stop()
        self.reactor.call_soon(self.reactor.stop)
        self.thread.join(15)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    rig = LiveCore(tmp_path_factory.mktemp("api"), cloud=True)
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def live_nocloud(tmp_path_factory):
    rig = LiveCore(tmp_path_factory.mktemp("api-nocloud"), cloud=False)
    yield rig
    rig.close()
