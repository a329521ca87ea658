"""WAN chaos proxy: a UDP and TCP relay between the box and the (simulated) cloud that breaks
the WAN on command (blackhole, drop, delay, one-way loss, flaps, TCP resets), for the
survivability tests, the lab and the benchmarks. SIP only: media addresses travel in SDP,
so media faults cut a real link instead (lab/netns.py). `python -m lab.chaos ... --control C`
runs it as a process driven by `ChaosClient(C)`. Loopback or namespace addresses; real time.
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import itertools
import json
import logging
import random
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

UP, DOWN = "up", "down"  # box -> cloud, cloud -> box
DIRECTIONS = (UP, DOWN)
MAX_UDP_CLIENTS = 256
MAX_QUEUED = 20000  # delayed packets in flight, both ways
MAX_DELAY_MS = 10000.0
MAX_FLAP_S = 3600.0  # a whole schedule
TCP_STALL_LIMIT = 1 << 20
UDP_IDLE_S = 120.0
_ALLOWED = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "192.168.0.0/16")]


class ChaosError(ValueError):
    """A chaos proxy request that is out of range or not allowed (says which and why)."""


def check_host(host: str) -> str:
    """Loopback, or a private address that lives in a test's own network namespace."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ChaosError(f"chaos proxy: {host!r} is not an IPv4 address; use 127.0.0.1 "
                         "or an address inside a test's own network namespace") from None
    if not any(addr in net for net in _ALLOWED):
        raise ChaosError(f"chaos proxy: {host} is not loopback, 10.x or 192.168.x: the lab "
                         "only talks to loopback or to namespaces the test created")
    return host


def parse_target(target: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(target, str):
        host, _, port = target.rpartition(":")
        target = (host, int(port))
    return check_host(target[0]), int(target[1])


@dataclass
class Faults:
    """What the proxy does to traffic now; per direction except `blackhole`."""

    blackhole: bool = False
    cut: dict[str, bool] = field(default_factory=lambda: {UP: False, DOWN: False})
    drop_pct: dict[str, float] = field(default_factory=lambda: {UP: 0.0, DOWN: 0.0})
    delay_ms: dict[str, float] = field(default_factory=lambda: {UP: 0.0, DOWN: 0.0})
    jitter_ms: dict[str, float] = field(default_factory=lambda: {UP: 0.0, DOWN: 0.0})

    def passes(self, direction: str) -> bool:
        return not (self.blackhole or self.cut[direction])

    def describe(self) -> dict[str, Any]:
        return {"blackhole": self.blackhole, "cut": dict(self.cut),
                "drop_pct": dict(self.drop_pct), "delay_ms": dict(self.delay_ms),
                "jitter_ms": dict(self.jitter_ms)}


def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction not in DIRECTIONS:
        raise ChaosError(f"chaos proxy: direction {direction!r}: use 'up' (box->cloud), "
                         "'down' (cloud->box) or 'both'")
    return (direction,)


def random_schedule(count: int, seed: int, down: tuple[float, float] = (0.2, 3.0),
                    up: tuple[float, float] = (0.2, 5.0)) -> list[tuple[float, float]]:
    """`count` (down_s, up_s) pairs drawn uniformly from the ranges, reproducibly."""
    rng = random.Random(seed)
    return [(round(rng.uniform(*down), 3), round(rng.uniform(*up), 3)) for _ in range(count)]


class _TcpPair:
    """One relayed TCP connection: the box's socket and ours to the cloud."""

    def __init__(self, box: socket.socket, cloud: socket.socket) -> None:
        self.socks = {UP: box, DOWN: cloud}  # the socket each direction READS from
        self.pending: dict[str, list[tuple[float, bytes]]] = {UP: [], DOWN: []}
        self.closed = False

    def out(self, direction: str) -> socket.socket:
        return self.socks[DOWN if direction == UP else UP]

    def stalled_bytes(self) -> int:
        return sum(len(b) for d in DIRECTIONS for _, b in self.pending[d])


class ChaosProxy:
    """The proxy; start()/stop() or a `with` block. Every method is thread-safe."""

    def __init__(self, listen_port: int = 0, target: str | tuple[str, int] = "",
                 host: str = "127.0.0.1", udp: bool = True, tcp: bool = True,
                 seed: int = 0) -> None:
        self.host = check_host(host)
        self.target = parse_target(target)
        self.want = {"udp": udp, "tcp": tcp}
        self.port = listen_port
        self.faults = Faults()
        self.events: list[tuple[float, str]] = []  # (monotonic time, "down"/"up"/...)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts = {d: {"forwarded": 0, "dropped": 0} for d in DIRECTIONS}
        self._sel = selectors.DefaultSelector()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._clients: dict[tuple[str, int], socket.socket] = {}
        self._client_seen: dict[tuple[str, int], float] = {}
        self._pairs: list[_TcpPair] = []
        self._queue: list[tuple[float, int, socket.socket, bytes, Any]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flap_thread: threading.Thread | None = None
        self._flap_stop = threading.Event()

    # --- life cycle -------------------------------------------------------------------
    def __enter__(self) -> ChaosProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.address}"

    def start(self) -> ChaosProxy:
        self._bind()
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)
        self._thread.start()
        log.info("chaos proxy %s -> %s:%s", self.address, *self.target)
        return self

    def _bind(self) -> None:
        """UDP and TCP on the same port; with port 0, retry until one is free for both."""
        auto = self.port == 0
        for _ in range(20 if auto else 1):
            try:
                self._bind_once()
                return
            except OSError:
                self._close_listeners()
                if not auto:
                    raise
                self.port = 0
        raise OSError(f"chaos proxy: no port free for both UDP and TCP on {self.host}")

    def _bind_once(self) -> None:
        if self.want["udp"]:
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.bind((self.host, self.port))
            self.port = self._udp.getsockname()[1]
            self._udp.setblocking(False)
            self._sel.register(self._udp, selectors.EVENT_READ, ("udp-listen", None))
        if self.want["tcp"]:
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((self.host, self.port))
            self.port = self._tcp.getsockname()[1]
            self._tcp.listen(16)
            self._tcp.setblocking(False)
            self._sel.register(self._tcp, selectors.EVENT_READ, ("tcp-listen", None))

    def _close_listeners(self) -> None:
        for sock in (self._udp, self._tcp):
            if sock is not None:
                try:
                    self._sel.unregister(sock)
                except (KeyError, ValueError):
                    pass
                sock.close()
        self._udp = self._tcp = None

    def stop(self) -> None:
        """Stop flapping and relaying; close every socket. Safe to call twice."""
        self.stop_flap()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            for pair in self._pairs:
                self._close_pair(pair)
            self._pairs.clear()
            for sock in self._clients.values():
                sock.close()
            self._clients.clear()
            self._close_listeners()
        self._sel.close()

    # --- faults -----------------------------------------------------------------------
    def blackhole(self, on: bool = True) -> None:
        """Drop every datagram and stall every stream, both ways, until blackhole(False)."""
        with self._lock:
            if self.faults.blackhole != on:
                self.events.append((time.monotonic(), DOWN if on else UP))
            self.faults.blackhole = on

    def drop(self, pct: float, direction: str = "both") -> None:
        """Lose `pct` % of UDP datagrams at random in `direction`."""
        if not 0.0 <= pct <= 100.0:
            raise ChaosError(f"chaos proxy: drop {pct} %: use 0 to 100")
        with self._lock:
            for d in _directions(direction):
                self.faults.drop_pct[d] = float(pct)

    def delay(self, ms: float, jitter_ms: float = 0.0, direction: str = "both") -> None:
        """Delay every datagram/chunk by ms ± jitter_ms (uniform), in `direction`."""
        if not (0.0 <= ms <= MAX_DELAY_MS and 0.0 <= jitter_ms <= MAX_DELAY_MS):
            raise ChaosError(f"chaos proxy: delay {ms} ms jitter {jitter_ms} ms: use 0 to "
                             f"{MAX_DELAY_MS:.0f} ms")
        with self._lock:
            for d in _directions(direction):
                self.faults.delay_ms[d] = float(ms)
                self.faults.jitter_ms[d] = float(jitter_ms)

    def one_way(self, direction: str, on: bool = True) -> None:
        """Lose everything in one direction only ("up": box->cloud, "down": cloud->box)."""
        with self._lock:
            for d in _directions(direction):
                self.faults.cut[d] = on

    def heal(self) -> None:
        """Back to a perfect WAN (stops flapping too)."""
        self.stop_flap()
        with self._lock:
            if self.faults.blackhole:
                self.events.append((time.monotonic(), UP))
            self.faults = Faults()

    def reset_tcp(self) -> None:
        """Close every relayed TCP connection now (both sides see the connection die)."""
        with self._lock:
            for pair in self._pairs:
                self._close_pair(pair, reset=True)
            self._pairs.clear()

    def flap(self, schedule: Iterable[tuple[float, float]]) -> None:
        """Blackhole for down_s, pass for up_s, for each pair, on a thread of its own."""
        steps = [(float(d), float(u)) for d, u in schedule]
        total = sum(d + u for d, u in steps)
        if any(d < 0 or u < 0 for d, u in steps) or total > MAX_FLAP_S:
            raise ChaosError(f"chaos proxy: flap schedule of {total:.0f} s: durations must "
                             f"be >= 0 and add up to at most {MAX_FLAP_S:.0f} s")
        self.stop_flap()
        self._flap_stop.clear()
        self._flap_thread = threading.Thread(target=self._flap_run, args=(steps,),
                                             name="chaos-flap", daemon=True)
        self._flap_thread.start()

    def flap_random(self, count: int, seed: int, down: tuple[float, float] = (0.2, 3.0),
                    up: tuple[float, float] = (0.2, 5.0)) -> list[tuple[float, float]]:
        """Flap `count` times at random (reproducible by seed); returns the schedule."""
        schedule = random_schedule(count, seed, down, up)
        self.flap(schedule)
        return schedule

    def flapping(self) -> bool:
        return self._flap_thread is not None and self._flap_thread.is_alive()

    def wait_flap(self, timeout: float) -> bool:
        """Wait until the schedule has run out; False on timeout."""
        if self._flap_thread is not None:
            self._flap_thread.join(timeout)
        return not self.flapping()

    def stop_flap(self) -> None:
        self._flap_stop.set()
        if self._flap_thread is not None and self._flap_thread is not threading.current_thread():
            self._flap_thread.join(5)
        self._flap_thread = None

    def _flap_run(self, steps: list[tuple[float, float]]) -> None:
        for down_s, up_s in steps:
            self.blackhole(True)
            if self._flap_stop.wait(down_s):
                break
            self.blackhole(False)
            if self._flap_stop.wait(up_s):
                return
        self.blackhole(False)

    # --- figures ----------------------------------------------------------------------
    def counters(self) -> dict[str, dict[str, int]]:
        """{"up": {"forwarded": n, "dropped": n}, "down": {...}} since start or reset."""
        with self._lock:
            return {d: dict(c) for d, c in self._counts.items()}

    def reset_counters(self) -> None:
        with self._lock:
            for c in self._counts.values():
                c["forwarded"] = c["dropped"] = 0

    def status(self) -> dict[str, Any]:
        with self._lock:
            faults = self.faults.describe()
        return {"listen": self.address, "target": f"{self.target[0]}:{self.target[1]}", "faults": faults,
                "counters": self.counters(), "flapping": self.flapping(),
                "udp_clients": len(self._clients), "tcp_connections": len(self._pairs)}

    # --- relay loop (proxy thread) ------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                log.exception("chaos proxy: relay step failed (continuing)")

    def _step(self) -> None:
        now = time.monotonic()
        wait = 0.05
        if self._queue:
            wait = max(0.0, min(wait, self._queue[0][0] - now))
        for key, _ in self._sel.select(wait):
            kind, obj = key.data
            getattr(self, "_on_" + kind.replace("-", "_"))(key.fileobj, obj)
        self._flush(time.monotonic())
        self._flush_tcp(time.monotonic())
        self._expire_clients(time.monotonic())

    def _decide(self, direction: str) -> float | None:
        """The delay (s) for one packet going `direction`, or None to drop it."""
        with self._lock:
            f = self.faults
            lost = not f.passes(direction) or self._rng.random() * 100.0 < f.drop_pct[direction]
            if lost:
                self._counts[direction]["dropped"] += 1
                return None
            jitter = f.jitter_ms[direction]
            ms = f.delay_ms[direction] + (self._rng.uniform(-jitter, jitter) if jitter else 0.0)
        return max(0.0, ms) / 1000.0

    def _send(self, direction: str, delay: float, sock: socket.socket, data: bytes,
              dest: Any) -> None:
        if delay <= 0.0:
            self._transmit(direction, sock, data, dest)
            return
        if len(self._queue) >= MAX_QUEUED:
            with self._lock:
                self._counts[direction]["dropped"] += 1
            return
        heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), sock, data,
                                     (direction, dest)))

    def _transmit(self, direction: str, sock: socket.socket, data: bytes, dest: Any) -> None:
        try:
            if dest is None:
                sock.send(data)
            else:
                sock.sendto(data, dest)
        except OSError as exc:
            log.debug("chaos proxy: send %s failed: %s", direction, exc)
            with self._lock:
                self._counts[direction]["dropped"] += 1
            return
        with self._lock:
            self._counts[direction]["forwarded"] += 1

    def _flush(self, now: float) -> None:
        while self._queue and self._queue[0][0] <= now:
            _, _, sock, data, (direction, dest) = heapq.heappop(self._queue)
            if sock.fileno() >= 0:
                self._transmit(direction, sock, data, dest)

    # UDP ------------------------------------------------------------------------------
    def _on_udp_listen(self, sock: socket.socket, _: Any) -> None:
        try:
            data, client = sock.recvfrom(65535)
        except OSError:
            return
        upstream = self._upstream(client)
        self._client_seen[client] = time.monotonic()
        if upstream is None:
            return
        delay = self._decide(UP)
        if delay is not None:
            self._send(UP, delay, upstream, data, None)

    def _upstream(self, client: tuple[str, int]) -> socket.socket | None:
        sock = self._clients.get(client)
        if sock is not None:
            return sock
        if len(self._clients) >= MAX_UDP_CLIENTS:
            log.warning("chaos proxy: more than %d UDP clients; %s ignored", MAX_UDP_CLIENTS,
                        client)
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, 0))
        sock.connect(self.target)
        sock.setblocking(False)
        self._sel.register(sock, selectors.EVENT_READ, ("udp_up", client))
        with self._lock:
            self._clients[client] = sock
        return sock

    def _on_udp_up(self, sock: socket.socket, client: tuple[str, int]) -> None:
        try:
            data = sock.recv(65535)
        except OSError:
            return  # ICMP port unreachable from a dead cloud: nothing to relay
        delay = self._decide(DOWN)
        if delay is not None and self._udp is not None:
            self._send(DOWN, delay, self._udp, data, client)

    def _expire_clients(self, now: float) -> None:
        for client, seen in list(self._client_seen.items()):
            if now - seen > UDP_IDLE_S:
                del self._client_seen[client]
                with self._lock:
                    sock = self._clients.pop(client, None)
                if sock is not None:
                    self._sel.unregister(sock)
                    sock.close()

    # TCP ------------------------------------------------------------------------------
    def _on_tcp_listen(self, sock: socket.socket, _: Any) -> None:
        try:
            box, _addr = sock.accept()
        except OSError:
            return
        try:
            cloud = socket.create_connection(self.target, timeout=2.0)
        except OSError as exc:
            log.info("chaos proxy: TCP to %s:%s failed: %s", *self.target, exc)
            box.close()
            return
        pair = _TcpPair(box, cloud)
        for direction, s in pair.socks.items():
            # A timeout (the fd is non-blocking underneath, so select works) rather than
            # non-blocking: sendall of a big chunk waits for room instead of failing.
            s.settimeout(2.0)
            self._sel.register(s, selectors.EVENT_READ, ("tcp_data", (pair, direction)))
        with self._lock:
            self._pairs.append(pair)

    def _on_tcp_data(self, sock: socket.socket, obj: tuple[_TcpPair, str]) -> None:
        pair, direction = obj
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop_pair(pair)
            return
        with self._lock:
            f = self.faults
            jitter = f.jitter_ms[direction]
            ms = f.delay_ms[direction] + (self._rng.uniform(0, jitter) if jitter else 0.0)
        pending = pair.pending[direction]
        due = max([time.monotonic() + ms / 1000.0] + [t for t, _ in pending[-1:]])
        pending.append((due, data))  # never reordered: a stream keeps its byte order
        if pair.stalled_bytes() > TCP_STALL_LIMIT:
            log.info("chaos proxy: %d bytes stalled on a TCP connection: reset",
                     pair.stalled_bytes())
            self._drop_pair(pair, reset=True)

    def _flush_tcp(self, now: float) -> None:
        for pair in list(self._pairs):
            for direction in DIRECTIONS:
                self._flush_pair(pair, direction, now)

    def _flush_pair(self, pair: _TcpPair, direction: str, now: float) -> None:
        pending = pair.pending[direction]
        with self._lock:
            passes = self.faults.passes(direction)
        while passes and pending and pending[0][0] <= now and not pair.closed:
            _, data = pending.pop(0)
            try:
                pair.out(direction).sendall(data)
            except OSError:  # the peer is gone, or no room for 2 s: a dead connection
                self._drop_pair(pair)
                return
            with self._lock:
                self._counts[direction]["forwarded"] += 1

    def _drop_pair(self, pair: _TcpPair, reset: bool = False) -> None:
        with self._lock:
            self._close_pair(pair, reset)
            if pair in self._pairs:
                self._pairs.remove(pair)

    def _close_pair(self, pair: _TcpPair, reset: bool = False) -> None:
        if pair.closed:
            return
        pair.closed = True
        for s in pair.socks.values():
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if reset:  # RST instead of FIN: linger 0
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()


# --- control over TCP (for a proxy in another process) -----------------------------------
COMMANDS = ("blackhole", "drop", "delay", "one_way", "heal", "reset_tcp", "flap",
            "flap_random", "counters", "reset_counters", "status", "wait_flap")


def handle_command(proxy: ChaosProxy, request: dict[str, Any]) -> dict[str, Any]:
    """One control request -> its reply; errors come back as {"ok": false, "error": ...}."""
    cmd = request.pop("cmd", None)
    if cmd not in COMMANDS:
        return {"ok": False, "error": f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}"}
    try:
        result = getattr(proxy, cmd)(**request)
    except (ChaosError, TypeError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "result": result}


def serve_control(proxy: ChaosProxy, port: int, until: float) -> None:
    """Serve JSON-line commands on 127.0.0.1:port, one client at a time, until `until`."""
    with socket.create_server(("127.0.0.1", port)) as server:
        server.settimeout(0.5)
        while time.monotonic() < until:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, conn.makefile("rw") as f:
                conn.settimeout(max(0.1, until - time.monotonic()))
                try:
                    for line in f:
                        f.write(json.dumps(handle_command(proxy, json.loads(line))) + "\n")
                        f.flush()
                except (OSError, ValueError) as exc:
                    log.info("chaos control connection ended: %s", exc)


class ChaosClient:
    """Drives a proxy in another process through its control port (same method names)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((check_host(host), port), timeout=timeout)
        self._file = self._sock.makefile("rw")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __getattr__(self, name: str):
        if name not in COMMANDS:
            raise AttributeError(name)

        def call(**params: Any) -> Any:
            self._file.write(json.dumps({"cmd": name, **params}) + "\n")
            self._file.flush()
            reply = json.loads(self._file.readline() or '{"ok": false, "error": "closed"}')
            if not reply["ok"]:
                raise ChaosError(reply["error"])
            return reply["result"]
        return call


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=int, default=0, help="port on --host (0: any)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--target", required=True, help="HOST:PORT of the cloud edge")
    p.add_argument("--control", type=int, required=True, help="control port on 127.0.0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    with ChaosProxy(args.listen, args.target, host=args.host, seed=args.seed) as proxy:
        sys.stdout.write(f"READY {proxy.port}\n")
        sys.stdout.flush()
        serve_control(proxy, args.control, time.monotonic() + args.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
