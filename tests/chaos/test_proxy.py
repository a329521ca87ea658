"""The chaos proxy's own behaviour, measured with echo servers on 127.0.0.1: passthrough
both ways, random drop %, delay and jitter, one-way loss, a flapping schedule, TCP
passthrough / stall / reset, and the control socket of a proxy in another process.

Every server and proxy is on loopback, bounded in time, and stopped by its fixture.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest

from lab.chaos import ChaosClient, ChaosError, ChaosProxy, random_schedule
from lab.ports import free_port
from lab.wait import wait_until


class UdpEcho:
    """Echoes every datagram back; counts what it received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.received += 1
            self.sock.sendto(data, addr)

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


class TcpEcho:
    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.server.close()


@pytest.fixture
def udp_echo():
    echo = UdpEcho()
    yield echo
    echo.stop()


@pytest.fixture
def proxy(udp_echo):
    with ChaosProxy(0, ("127.0.0.1", udp_echo.port), seed=7) as p:
        yield p


def client(timeout: float = 0.3) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def burst(proxy: ChaosProxy, n: int, gap: float = 0.0) -> int:
    """Send n datagrams through the proxy; how many echoes came back."""
    got = 0
    with client(0.2) as s:
        for i in range(n):
            s.sendto(i.to_bytes(4, "big"), ("127.0.0.1", proxy.port))
            if gap:
                time.sleep(gap)
            got += _drain(s)  # keep the receive buffer from overflowing
        s.settimeout(0.2)
        while True:
            try:
                s.recv(64)
                got += 1
            except TimeoutError:
                return got


def _drain(s: socket.socket) -> int:
    s.setblocking(False)
    n = 0
    try:
        while True:
            s.recv(64)
            n += 1
    except BlockingIOError:
        return n


def rtt(proxy: ChaosProxy, n: int = 20) -> list[float]:
    times = []
    with client(2.0) as s:
        for i in range(n):
            t0 = time.monotonic()
            s.sendto(i.to_bytes(4, "big"), ("127.0.0.1", proxy.port))
            s.recv(64)
            times.append((time.monotonic() - t0) * 1000.0)
    return times


def test_udp_passthrough_counts_both_directions(proxy, udp_echo):
    assert burst(proxy, 50) == 50
    c = proxy.counters()
    assert c["up"] == {"forwarded": 50, "dropped": 0}
    assert c["down"] == {"forwarded": 50, "dropped": 0}
    assert proxy.status()["udp_clients"] == 1


def test_drop_percentage_is_what_was_asked(proxy, udp_echo):
    proxy.drop(30, "up")
    got = burst(proxy, 1000, gap=0.0002)
    c = proxy.counters()["up"]
    assert c["forwarded"] + c["dropped"] == 1000
    assert 250 <= c["dropped"] <= 350, c  # 30 % of 1000, seeded
    assert got == c["forwarded"] == udp_echo.received


def test_delay_and_jitter_one_way(proxy):
    base = statistics.median(rtt(proxy, 10))
    proxy.delay(60, jitter_ms=10, direction="up")
    times = rtt(proxy, 30)
    assert 50 <= statistics.median(times) - base <= 70, times
    assert 48 <= min(times) and max(times) <= 85, times
    assert statistics.pstdev(times) > 2.0  # jitter is really there


def test_one_way_loss_up_and_down(proxy, udp_echo):
    proxy.one_way("up")
    assert burst(proxy, 20) == 0 and udp_echo.received == 0
    proxy.one_way("up", on=False)
    proxy.one_way("down")
    assert burst(proxy, 20) == 0
    assert udp_echo.received == 20  # the cloud heard the box; the box heard nothing back
    c = proxy.counters()
    assert c["up"] == {"forwarded": 20, "dropped": 20}
    assert c["down"] == {"forwarded": 0, "dropped": 20}
    proxy.heal()
    assert burst(proxy, 5) == 5


def test_blackhole_and_heal(proxy):
    proxy.blackhole()
    assert burst(proxy, 10) == 0
    proxy.heal()
    assert burst(proxy, 10) == 10
    assert [what for _, what in proxy.events] == ["down", "up"]


def test_flapping_follows_the_schedule(proxy, udp_echo):
    schedule = [(0.3, 0.2), (0.1, 0.3), (0.5, 0.1)]
    received: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with client(0.005) as s:
            while not stop.is_set():
                s.sendto(b"x", ("127.0.0.1", proxy.port))
                try:
                    s.recv(64)
                    received.append(time.monotonic())
                except TimeoutError:
                    pass
                time.sleep(0.005)
    t0 = time.monotonic()
    proxy.flap(schedule)
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    assert proxy.wait_flap(3.0)
    time.sleep(0.1)
    stop.set()
    worker.join(2)
    marks = [(t - t0, what) for t, what in proxy.events]
    assert [w for _, w in marks] == ["down", "up"] * 3
    expected = 0.0
    for (at, _), step in zip(marks, [x for pair in schedule for x in pair], strict=False):
        assert abs(at - expected) < 0.08, marks  # each edge within 80 ms of the schedule
        expected += step
    for i in range(0, 6, 2):  # nothing got through while down
        down_at, up_at = proxy.events[i][0], proxy.events[i + 1][0]
        assert not [t for t in received if down_at + 0.02 < t < up_at - 0.01]
    assert len(received) > 20


def test_random_schedule_is_reproducible_and_bounded():
    a = random_schedule(50, seed=3, down=(0.1, 2.0), up=(0.5, 4.0))
    assert a == random_schedule(50, seed=3, down=(0.1, 2.0), up=(0.5, 4.0))
    assert a != random_schedule(50, seed=4, down=(0.1, 2.0), up=(0.5, 4.0))
    assert all(0.1 <= d <= 2.0 and 0.5 <= u <= 4.0 for d, u in a)
    with pytest.raises(ChaosError, match="at most 3600 s"):
        ChaosProxy(0, "127.0.0.1:9").flap([(3000, 1000)])


def test_tcp_passthrough_stall_and_reset():
    echo = TcpEcho()
    try:
        with ChaosProxy(0, ("127.0.0.1", echo.port)) as proxy:
            conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=1.0)
            conn.sendall(b"hello")
            assert conn.recv(64) == b"hello"
            proxy.blackhole()
            conn.sendall(b"during the cut")
            with pytest.raises(TimeoutError):
                conn.settimeout(0.4)
                conn.recv(64)
            proxy.heal()  # stalled bytes arrive, in order, once the path is back
            conn.settimeout(2.0)
            got = b""
            while len(got) < len(b"during the cut"):
                got += conn.recv(64)
            assert got == b"during the cut"
            proxy.reset_tcp()
            conn.settimeout(2.0)
            with pytest.raises((ConnectionResetError, ConnectionAbortedError, OSError)):
                conn.sendall(b"x")
                if not conn.recv(64):
                    raise ConnectionResetError("closed")
            conn.close()
            assert proxy.counters()["up"]["forwarded"] >= 2
    finally:
        echo.stop()


def test_only_loopback_or_test_namespace_addresses():
    with pytest.raises(ChaosError, match="not loopback"):
        ChaosProxy(0, "8.8.8.8:5060")
    with pytest.raises(ChaosError, match="direction"):
        ChaosProxy(0, "127.0.0.1:9").drop(10, "sideways")
    with pytest.raises(ChaosError, match="0 to 100"):
        ChaosProxy(0, "127.0.0.1:9").drop(120)


def test_control_socket_from_another_process(udp_echo):
    control = free_port("tcp")
    proc = subprocess.Popen([sys.executable, "-m", "lab.chaos", "--target",
                             f"127.0.0.1:{udp_echo.port}", "--control", str(control),
                             "--max-seconds", "30"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "READY"
        port = int(line[1])
        ctl = wait_until(lambda: ChaosClient(control), 5, "control port open",
                         retry=(ConnectionRefusedError,))
        ctl.blackhole()
        with client(0.2) as s:
            s.sendto(b"x", ("127.0.0.1", port))
            with pytest.raises(TimeoutError):
                s.recv(64)
            ctl.heal()
            s.sendto(b"y", ("127.0.0.1", port))
            assert s.recv(64) == b"y"
        counts = ctl.counters()
        assert counts["up"] == {"forwarded": 1, "dropped": 1}
        with pytest.raises(ChaosError, match="0 to 100"):
            ctl.drop(pct=500)
        assert json.dumps(ctl.status())
        ctl.close()
    finally:
        proc.terminate()
        proc.wait(5)
