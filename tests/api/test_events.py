"""GET /events against the live rig: a real HTTP client reads the stream while a simulated
call rings, is answered and hangs up; the kinds filter; a reader that stops reading gets
`dropped` while the core keeps its pace; the cap on concurrent streams."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time

import pytest

from firmware.api.client import ApiError
from firmware.api.stream import QUEUE_DEPTH, Subscription, core_events
from firmware.events import CoreEvent, EventKind
from lab.wait import wait_until
from tests.api.test_api import port


def _reader(stream) -> queue.Queue:
    got: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [got.put(ev) for ev in stream], daemon=True).start()
    return got


def _until(got: queue.Queue, want, timeout: float = 10.0) -> list[dict]:
    """Events read until one matches `want` (TimedOut naming what came)."""
    seen: list[dict] = []

    def matched() -> bool:
        while not got.empty():
            seen.append(got.get_nowait())
            if want(seen[-1]):
                return True
        return False

    wait_until(matched, timeout, "matching event", detail=lambda: f"got {seen}")
    return seen


def _publish(live, *events: CoreEvent) -> None:
    bus = core_events(live.core)
    live.on_reactor(lambda: [bus.publish(ev) for ev in events])


def _wan(up: bool, blob: str = "") -> CoreEvent:
    return CoreEvent(EventKind.WAN, time.time(), data={"up": up, **({"blob": blob} if blob else {})})


def test_a_local_call_rings_answers_and_hangs_up_on_the_stream(live):
    stream = live.api.events()
    got = _reader(stream)
    try:
        time.sleep(0.2)
        live.api.sim_phone("fxs1", "off_hook")
        time.sleep(0.3)
        live.api.sim_phone("fxs1", "dial", digits="202")
        seen = _until(got, lambda e: e["kind"] == "ringing" and e.get("dnis") == "202")
        assert seen[-1]["port"] == "fxs1" and seen[-1]["call_id"] and seen[-1]["ani"] == "201"
        live.api.sim_phone("fxs2", "off_hook")
        seen += _until(got, lambda e: e["kind"] == "answered")
        live.api.sim_phone("fxs1", "on_hook")
        live.api.sim_phone("fxs2", "on_hook")
        seen += _until(got, lambda e: e["kind"] == "hung_up")
        ids = [e["id"] for e in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(isinstance(e["time"], float) for e in seen)
    finally:
        stream.close()
        live.api.sim_phone("fxs1", "on_hook")
        live.api.sim_phone("fxs2", "on_hook")


def test_the_kinds_filter(live):
    stream = live.api.events(kinds=["config_applied"])
    got = _reader(stream)
    try:
        time.sleep(0.2)
        _publish(live, _wan(False), CoreEvent(EventKind.CONFIG_APPLIED, time.time(),
                                              data={"version": 7}), _wan(True))
        first = got.get(timeout=5)
        assert first["kind"] == "config_applied" and first["data"] == {"version": 7}
        time.sleep(0.3)
        assert got.empty()
    finally:
        stream.close()
    with pytest.raises(ApiError) as err:
        live.api.events(kinds=["ringing", "nonsense"])
    assert err.value.status == 400 and err.value.field == "kinds"


def _raw_stream(live, rcvbuf: int = 4096) -> socket.socket:
    host, tcp_port = live.tcp.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(tcp_port)))
    sock.sendall(b"GET /api/v1/events?kinds=wan HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def _read_events(sock: socket.socket, last_id: int) -> list[dict]:
    sock.settimeout(10)
    data = b""
    while f"id: {last_id}\n".encode() not in data:
        chunk = sock.recv(1 << 16)
        assert chunk, "the stream closed early"
        data += chunk
    out = []
    for block in data.split(b"\n\n"):
        fields = dict(line.split(": ", 1) for line in block.decode().splitlines()
                      if line and not line.startswith((":", "HTTP/")) and ": " in line)
        if "data" in fields and "event" in fields:
            out.append({**json.loads(fields["data"]), "id": int(fields.get("id", 0))})
    return out


def test_a_slow_reader_gets_dropped_and_the_core_keeps_its_pace(live):
    sock = _raw_stream(live)
    try:
        time.sleep(0.3)
        blob, n = "x" * 1000, 4 * QUEUE_DEPTH + 2000
        bus = core_events(live.core)

        def flood() -> float:
            start = time.monotonic()
            for i in range(n):
                bus.publish(_wan(bool(i % 2), blob))
            return time.monotonic() - start

        took = live.on_reactor(flood, timeout=30)
        assert took < 2.0, f"publishing {n} events took {took:.2f} s with a stalled reader"
        started = time.monotonic()
        assert live.api.status()["box"] and time.monotonic() - started < 2.0
        marker = CoreEvent(EventKind.WAN, time.time(), data={"up": True, "last": True})
        live.on_reactor(bus.publish, marker)
        last = live.server.streams.seq
        events = _read_events(sock, last)
        dropped = [e for e in events if e["kind"] == "dropped"]
        assert dropped and sum(e["count"] for e in dropped) > 0
        assert events[-1]["id"] == last and events[-1]["data"].get("last")
        assert len(events) < n
    finally:
        sock.close()


def test_the_stream_cap(live):
    cap = live.server.streams.cap
    streams = [live.api.events() for _ in range(cap - len(live.server.streams.open_streams))]
    try:
        with pytest.raises(ApiError) as err:
            live.api.events()
        assert err.value.status == 503 and "event streams" in str(err.value)
        streams.pop().close()

        def freed() -> bool:
            _publish(live, _wan(True))  # the server notices a gone client when it writes
            return len(live.server.streams.open_streams) < cap

        wait_until(freed, 10, "a freed stream slot")
        streams.append(live.api.events())
    finally:
        for s in streams:
            s.close()
    assert port(live.api.status(), "fxs1")  # the API still answers


def test_a_quiet_stream_whose_reader_hung_up_frees_its_slot_without_a_write(live):
    """No event of its kind comes and the next ping is 15 s away: the server still sees the
    reader go within about a second (HANGUP_CHECK_S), so closed clients never fill the cap."""
    def none_open() -> bool:
        return not live.server.streams.open_streams

    wait_until(none_open, 5, "the streams earlier tests closed freed", step=0.05)
    quiet = [live.api.events(kinds=["config_applied"]) for _ in range(3)]
    assert len(live.server.streams.open_streams) == 3
    for stream in quiet:
        stream.close()
    wait_until(none_open, 5, "the hung-up streams' slots freed", step=0.05)


def test_pings_when_idle_and_close_ends_the_frames():
    sub = Subscription(None, 4)
    frames = sub.frames(ping_s=0.01)
    assert next(frames) == b": ping\n\n"
    sub.push(1, _wan(True))
    assert next(frames).startswith(b"id: 1\nevent: wan\ndata: {")
    sub.close()
    assert next(frames, None) is None


def test_close_from_another_thread_ends_a_reader_waiting_on_a_quiet_stream(live):
    stream = live.api.events(kinds=["config_applied"])  # nothing of that kind comes
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(next(stream, "ended")), daemon=True)
    reader.start()
    time.sleep(0.3)  # let it block in readline
    assert reader.is_alive()
    stream.close()
    reader.join(2.0)
    assert not reader.is_alive(), "close() must shut the socket under a blocked reader"
    assert got == ["ended"]
