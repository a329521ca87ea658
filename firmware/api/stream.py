"""GET /events: the core's typed events (firmware/events.py) as server-sent events.

One listener on the core's EventBus numbers each event and hands it to every open
stream's own bounded queue, on the reactor thread and without blocking (a full queue
drops its oldest and counts them); each stream's connection thread does the writing."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from firmware.events import CoreEvent, EventBus, EventKind

MAX_STREAMS = 8
QUEUE_DEPTH = 256
PING_S = 15.0
HANGUP_CHECK_S = 1.0  # how soon an idle stream notices its reader hung up


class StreamsFull(Exception):
    """Every stream slot is taken."""


class Reactor(Protocol):
    def call_soon(self, fn: Callable[..., object], *args: object) -> None: ...


def sse(kind: str, data: dict[str, object], seq: int | None = None) -> bytes:
    """One server-sent event: `id:` (when numbered), `event:` and one `data:` line."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Subscription:
    """One client's queue: filled on the reactor thread, emptied by its connection."""

    def __init__(self, kinds: frozenset[EventKind] | None, depth: int) -> None:
        self.kinds, self.depth = kinds, depth
        self.queue: deque[tuple[int, CoreEvent]] = deque()
        self.dropped = 0
        self.closed = False
        self.ready = threading.Condition()

    def push(self, seq: int, event: CoreEvent) -> None:
        if self.kinds is not None and event.kind not in self.kinds:
            return
        with self.ready:
            if len(self.queue) >= self.depth:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append((seq, event))
            self.ready.notify()

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify()

    def take(self, timeout: float = PING_S) -> bytes | None:
        """What to send next: queued events (a `dropped` notice first when some were
        lost), b"" after `timeout` with nothing to send (time for a ping), or None when
        the stream is closed."""
        with self.ready:
            if not self.queue and not self.closed:
                self.ready.wait(timeout)
            if self.closed:
                return None
            items, self.queue = list(self.queue), deque()
            dropped, self.dropped = self.dropped, 0
        out = [sse("dropped", {"kind": "dropped", "count": dropped})] if dropped else []
        return b"".join(out + [sse(str(ev.kind), ev.to_json(), seq) for seq, ev in items])

    def frames(self, ping_s: float = PING_S, gone: Callable[[], bool] = lambda: False,
               check_s: float = HANGUP_CHECK_S) -> Iterator[bytes]:
        """The bytes to write, forever until closed or gone(); `: ping` comments when
        idle. While idle, gone() is asked every check_s: a reader that hung up frees its
        slot at once, not at the next write (a quiet stream may not write for minutes)."""
        idle, step = 0.0, min(check_s, ping_s)
        while (chunk := self.take(step)) is not None:
            if chunk:
                idle = 0.0
                yield chunk
                continue
            if gone():
                return
            idle += step
            if idle >= ping_s:
                idle = 0.0
                yield b": ping\n\n"


class EventStreams:
    """The open event streams of one API server (at most `cap`)."""

    def __init__(self, reactor: Reactor, cap: int = MAX_STREAMS,
                 depth: int = QUEUE_DEPTH) -> None:
        self.reactor, self.cap, self.depth = reactor, cap, depth
        self.seq = 0
        self.open_streams: list[Subscription] = []
        self.lock = threading.Lock()
        self.unsubscribe: Callable[[], None] | None = None

    def start(self, bus: EventBus | None) -> None:
        if bus is not None:
            self.reactor.call_soon(self.attach, bus)

    def attach(self, bus: EventBus) -> None:
        self.unsubscribe = bus.subscribe(self.publish)

    def stop(self) -> None:
        if self.unsubscribe is not None:
            self.reactor.call_soon(self.unsubscribe)
            self.unsubscribe = None
        with self.lock:
            subs, self.open_streams = self.open_streams, []
        for sub in subs:
            sub.close()

    def publish(self, event: CoreEvent) -> None:
        """The bus listener (reactor thread): number the event and queue it."""
        self.seq += 1
        for sub in self.open_streams:  # a copy is replaced, never changed, by open/close
            sub.push(self.seq, event)

    def open(self, kinds: Iterable[EventKind] | None = None) -> Subscription:
        sub = Subscription(frozenset(kinds) if kinds else None, self.depth)
        with self.lock:
            if len(self.open_streams) >= self.cap:
                raise StreamsFull(f"{self.cap} event streams are open already; close one")
            self.open_streams = [*self.open_streams, sub]
        return sub

    def close(self, sub: Subscription) -> None:
        sub.close()
        with self.lock:
            self.open_streams = [s for s in self.open_streams if s is not sub]


def core_events(core: object) -> EventBus | None:
    """The core's event bus (call control's while the core has none of its own)."""
    bus = getattr(core, "events", None) or getattr(getattr(core, "cc", None), "events", None)
    return bus if isinstance(bus, EventBus) else None


def parse_kinds(text: str | None) -> list[EventKind] | None:
    """`ringing,answered` as kinds; ValueError naming an unknown one."""
    if not text:
        return None
    out = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        try:
            out.append(EventKind(word))
        except ValueError:
            known = ", ".join(k.value for k in EventKind)
            raise ValueError(f"kinds: {word!r} is not an event kind; kinds: {known}") from None
    return out
