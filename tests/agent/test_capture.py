"""Diagnostic capture end to end: capture_start / capture_stop from a platform client
through a real Mosquitto, a real tcpdump on loopback, calls counted from the real sim
core's hung_up events (EventPump), the pcap queued in the core's real outbox. The core
here has a SIP edge configured (a silent UDP socket of the test), so its SIP OPTIONS
pings are real packets to capture; a local call carries no RTP in sim."""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.agent.capture import NO_PERMISSION, NO_TCPDUMP, Capture, CaptureRefused
from firmware.agent.commands import Commands
from firmware.agent.events import EventPump
from firmware.agent.link import Link
from firmware.agent.protocol import Topic, topic
from firmware.cdr import CdrStore
from firmware.core.config import ConfigStore
from foundation.clock import FakeClock, MonotonicClock
from lab.mosquitto import PlatformClient
from lab.wait import wait_until
from tests.agent.conftest import Core


@pytest.fixture(scope="module")
def edge() -> Iterator[socket.socket]:
    """A cloud edge that never answers: the core keeps sending it OPTIONS."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def sip_core(tmp_path_factory: pytest.TempPathFactory, edge: socket.socket) -> Iterator[Core]:
    c = Core(tmp_path_factory.mktemp("capture-core"))
    configs = ConfigStore(c.config_dir)
    doc = configs.load()
    doc["sip"].update(edges=[f"sip:127.0.0.1:{edge.getsockname()[1]}"], domain="cloud.test",
                      bind_address="127.0.0.1", local_port=0, registration="none")
    configs.save(doc, "a silent edge for the capture tests")
    c.start()
    yield c
    c.stop()


@pytest.fixture
def store(sip_core: Core) -> Iterator[CdrStore]:
    s = CdrStore(sip_core.data_dir / "cdr.db")
    yield s
    s.close()


class Box:
    """Link, Commands with a Capture, the EventPump feeding it, the app's loop."""

    def __init__(self, link: Link, core: Core, store: CdrStore, agent_dir: Path,
                 tcpdump: str = "tcpdump") -> None:
        self.link, self.clock = link, MonotonicClock()
        self.capture = Capture(core.api, self.clock, store, agent_dir, tcpdump=tcpdump)
        self.commands = Commands(link, core.api, self.clock, agent_dir / "agent.db",
                                 capture=self.capture)
        self.pump = EventPump(link, core.api, self.clock, listeners=[self.capture.on_event])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        link.start()
        self.pump.start()
        wait_until(lambda: link.subscribed and self.pump.streaming, 10, "link and events")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.link.poll(0.05)
            self.commands.tick(self.clock.now())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pump.stop()
        self.commands.stop()
        self.capture.stop()


class Cloud:
    def __init__(self, client: PlatformClient, device: str) -> None:
        self.client, self.device = client, device
        client.subscribe(topic(device, Topic.CMD_RESULT))

    def run(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        cmd_id = str(uuid.uuid4())
        self.client.publish(topic(self.device, Topic.CMD),
                            {"id": cmd_id, "name": name, "issued": time.time(),
                             "args": args or {}},
                            response_topic=topic(self.device, Topic.CMD_RESULT),
                            correlation=cmd_id.encode())
        got = self.client.wait_for(lambda m: m.correlation == cmd_id.encode(), 20,
                                   f"the answer to {name}")
        body: dict[str, Any] = got.json()
        return body


Setup = Callable[..., tuple[Box, Cloud]]


@pytest.fixture
def setup(device_link: Callable[..., Link], platform_client: Callable[..., PlatformClient],
          sip_core: Core, store: CdrStore, tmp_path: Path) -> Iterator[Setup]:
    boxes: list[Box] = []

    def make(device: str, **kw: Any) -> tuple[Box, Cloud]:
        cloud = Cloud(platform_client(), device)
        agent_dir = tmp_path / "agent"
        agent_dir.mkdir(mode=0o700, exist_ok=True)
        box = Box(device_link(device, start=False), sip_core, store, agent_dir, **kw)
        boxes.append(box)
        return box, cloud

    yield make
    for box in boxes:
        box.close()


def _capture_rows(store: CdrStore) -> list[dict[str, Any]]:
    return [r for r in store.pending(1000, files=True) if r["body"]["label"] == "capture"]


def _udp(path: Path) -> list[tuple[int, bytes]]:
    """(destination port, payload) of every IPv4 UDP packet of a pcap taken on lo."""
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4 and linktype == 1, (hex(magic), linktype)  # Ethernet on lo
    out, at = [], 24
    while at + 16 <= len(data):
        incl = struct.unpack("<IIII", data[at:at + 16])[2]
        frame = data[at + 16:at + 16 + incl]
        at += 16 + incl
        if frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
            continue
        ip = frame[14:]
        udp = ip[(ip[0] & 0x0F) * 4:]
        out.append((struct.unpack(">H", udp[2:4])[0], udp[8:]))
    return out


def _local_call(core: Core) -> None:
    api = core.api
    api.sim_phone("fxs1", "off_hook")
    wait_until(lambda: _state(core, "fxs1") == "off-hook", 5, "fxs1 off hook")
    api.sim_phone("fxs1", "dial", digits="202")
    wait_until(lambda: _ringing(core, "fxs2"), 10, "fxs2 ringing")
    api.sim_phone("fxs2", "off_hook")
    wait_until(lambda: _state(core, "fxs1") == "in-call", 10, "the call answered")
    api.sim_phone("fxs1", "on_hook")
    api.sim_phone("fxs2", "on_hook")


def _port(core: Core, name: str) -> dict[str, Any]:
    return next(p for p in core.api.status()["ports"] if p["name"] == name)


def _state(core: Core, name: str) -> str:
    return str(_port(core, name)["state"])


def _ringing(core: Core, name: str) -> bool:
    return bool(_port(core, name)["ringing"])


# ---- the tests -----------------------------------------------------------------------------

def test_a_capture_of_one_local_call(setup: Setup, sip_core: Core, store: CdrStore,
                                     edge: socket.socket) -> None:
    _, cloud = setup("cap-call")
    answer = cloud.run("capture_start", {"calls": 1, "max_s": 120})
    assert answer["status"] == "ok", answer
    assert answer["result"]["status"] == "capturing" and answer["result"]["filter"] == "udp"
    _local_call(sip_core)
    rows = wait_until(lambda: _capture_rows(store), 20, "the pcap in the outbox")
    row = rows[-1]
    meta = row["body"]["meta"]
    assert meta["calls"] == 1 and meta["reason"] == "1 call(s) ended", meta
    assert meta["packets"] and meta["packets"] > 0
    packets = _udp(Path(row["path"]))
    to_edge = [p for port, p in packets if port == edge.getsockname()[1]]
    assert to_edge and all(p.startswith(b"OPTIONS sip:") for p in to_edge), packets[:3]
    after = cloud.run("capture_stop")
    assert after["status"] == "refused" and row["uuid"] in after["error"]


def test_capture_stop_ends_it_at_once(setup: Setup, store: CdrStore) -> None:
    box, cloud = setup("cap-stop")
    assert cloud.run("capture_start", {"calls": 5, "max_s": 600})["status"] == "ok"
    again = cloud.run("capture_start", {"calls": 1})
    assert again["status"] == "refused" and "already running" in again["error"]
    stopped = cloud.run("capture_stop")
    assert stopped["status"] == "ok", stopped
    result = stopped["result"]
    assert result["reason"] == "stopped by command" and result["calls"] == 0
    row = next(r for r in _capture_rows(store) if r["uuid"] == result["uuid"])
    assert row["file_bytes"] == result["bytes"] >= 24  # at least the pcap header
    assert box.capture.running is None


def test_max_s_ends_the_capture(sip_core: Core, store: CdrStore, tmp_path: Path) -> None:
    clock = FakeClock(epoch=time.time())
    capture = Capture(sip_core.api, clock, store, tmp_path)
    try:
        capture.begin(3, 30)
        clock.set(clock.now() + 31)
        last = wait_until(lambda: capture.last, 10, "the capture ended and queued")
        assert last["reason"] == "max_s reached" and capture.running is None
        assert any(r["uuid"] == last["uuid"] for r in _capture_rows(store))
    finally:
        capture.stop()


def test_missing_tcpdump_is_refused_with_the_fix(setup: Setup) -> None:
    _, cloud = setup("cap-missing", tcpdump="tcpdump-not-installed")
    answer = cloud.run("capture_start", {"calls": 1})
    assert answer["status"] == "refused" and answer["error"] == NO_TCPDUMP


def test_no_capture_permission_is_refused_with_the_fix(sip_core: Core, store: CdrStore,
                                                       tmp_path: Path) -> None:
    """tcpdump without CAP_NET_RAW (dropped from its bounding set, as root too)."""
    wrapper = tmp_path / "tcpdump-no-caps"
    wrapper.write_text("#!/bin/sh\nexec setpriv --bounding-set -net_raw,-net_admin "
                       "tcpdump \"$@\"\n")
    wrapper.chmod(0o755)
    capture = Capture(sip_core.api, MonotonicClock(), store, tmp_path, tcpdump=str(wrapper))
    with pytest.raises(CaptureRefused) as refused:
        capture.begin(1, 10)
    assert str(refused.value).startswith(NO_PERMISSION)
    assert "permission" in str(refused.value).lower()
    assert capture.running is None and not list(tmp_path.glob("*.pcap"))
