"""CTI events to the cloud: a thread reads the core's event stream (GET /events) and
publishes each event on `events` (a call's `call_quality` on `quality`), stamped with
the time it was sent next to the time it happened, so the platform sees its latency. It
hands every event to the agent's listeners. A core that is down or restarts is waited
for with backoff and jitter, logged once per outage; while the broker is away the
Link queues the QoS1 messages.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Protocol

from firmware.agent.protocol import ProtocolError, Topic
from firmware.api.client import ApiClient, ApiError, EventStream
from foundation.backoff import backoff_s

log = logging.getLogger(__name__)

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
STOP_WAIT_S = 1.0
EVENT_FIELDS = ("port", "call_id", "ani", "dnis", "direction", "data")
Event = dict[str, Any]
Listener = Callable[[Event], None]


class Clock(Protocol):
    def now(self) -> float: ...
    def wall(self) -> float: ...


class Publisher(Protocol):  # what the pump needs of firmware.agent.link.Link
    def publish(self, t: Topic, payload: dict[str, Any]) -> object: ...


class Special(StrEnum):
    DROPPED = "dropped"            # the core's stream lost events for a slow reader
    CALL_QUALITY = "call_quality"  # a call's quality: its own topic


def events_payload(ev: Event, sent: float) -> dict[str, Any]:
    """The `events` message of one stream event (the core's time kept, `sent` added)."""
    out: dict[str, Any] = {"id": int(ev.get("id", 0)), "kind": ev.get("kind"),
                           "time": ev.get("time"), "sent": round(sent, 3)}
    out.update((k, ev[k]) for k in EVENT_FIELDS if ev.get(k) not in (None, ""))
    return out


def quality_payload(ev: Event) -> dict[str, Any]:
    """The `quality` message of a `call_quality` event: its data's network, dsp, ended."""
    data = ev.get("data") or {}
    out: dict[str, Any] = {"call_id": ev.get("call_id", ""), "port": ev.get("port", ""),
                           "time": ev.get("time"), "ended": data.get("ended", ev.get("time")),
                           "network": data.get("network"), "dsp": data.get("dsp")}
    if ev.get("direction"):
        out["direction"] = ev["direction"]
    return out


def dropped_payload(count: int, last_id: int, now: float) -> dict[str, Any]:
    """An `events` message saying the core's stream lost `count` events after last_id."""
    return {"id": last_id, "kind": Special.DROPPED, "time": round(now, 3),
            "sent": round(now, 3), "data": {"count": count}}


class EventPump:
    """See the module docstring. start() once; stop() ends the thread within a second."""

    def __init__(self, link: Publisher, api: ApiClient, clock: Clock,
                 listeners: Iterable[Listener] = (), *, rng: random.Random | None = None,
                 backoff_min_s: float = BACKOFF_MIN_S,
                 backoff_max_s: float = BACKOFF_MAX_S) -> None:
        self.link, self.api, self.clock = link, api, clock
        self.listeners = list(listeners)
        self.rng = rng or random.Random()
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.last_id = 0          # the stream id of the last event read
        self.published = 0        # events and quality messages handed to the link
        self.dropped = 0          # events the core's stream said it lost
        self.failures = 0         # consecutive failed attempts to open the stream
        self.outages = 0          # times the stream went away (core stopped or restarted)
        self.streaming = False    # the stream is open (False while the core is away)
        self._down_since: float | None = None
        self._refused: set[str] = set()  # kinds already logged as unpublishable
        self._faults: dict[tuple[str, str], int] = {}  # (listener, exception) -> failures
        self._stop = threading.Event()
        self._stream: EventStream | None = None
        self._thread = threading.Thread(target=self._run, name="agent-events", daemon=True)

    # ---- the Part surface ----
    def start(self) -> None:
        self._thread.start()

    def tick(self, now: float) -> None:
        """Nothing to do on the main thread: the pump has its own."""

    def connected(self, up: bool) -> None:
        """Nothing to republish: events are live; the Link queues them while offline."""

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # ---- the thread ----
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self.api.events()
            except ApiError as exc:
                self._outage(str(exc))
                self._stop.wait(self.backoff_s())
                continue
            self._follow(stream)
            if not self._stop.is_set():
                self._outage("the core's event stream ended (core stopped or restarted)")

    def _follow(self, stream: EventStream) -> None:
        self._stream = stream
        if self._stop.is_set():  # stop() came between events() and here
            stream.close()
            return
        self._back()
        self.streaming, first = True, True
        for ev in stream:
            if first and "id" in ev:
                self._check_gap(int(ev["id"]))
                first = False
            self.handle(ev)
        self.streaming, self._stream = False, None

    def backoff_s(self) -> float:
        """The wait before the next attempt: doubling from backoff_min_s up to
        backoff_max_s, times a random factor in [0.5, 1) so boxes do not retry in step."""
        return backoff_s(self.failures, self.backoff_min_s, self.backoff_max_s, self.rng)

    def _outage(self, why: str) -> None:
        self.failures += 1
        if self._down_since is None:
            self._down_since = self.clock.now()
            self.outages += 1
            log.warning("events: %s; retrying with backoff up to %.0f s (logged once per "
                        "outage)", why, self.backoff_max_s)

    def _back(self) -> None:
        if self._down_since is not None:
            log.info("events: the core's event stream is back after %.1f s (%d attempts)",
                     self.clock.now() - self._down_since, self.failures)
        elif self.outages == 0:
            log.info("events: reading the core's event stream at %s", self.api.where)
        self._down_since, self.failures = None, 0

    def _check_gap(self, first_id: int) -> None:
        """The stream numbers events from 1 per core run: a lower id means a new core."""
        if self.last_id and first_id <= self.last_id:
            log.info("events: the core restarted (stream ids start over at %d)", first_id)
        elif self.last_id and first_id > self.last_id + 1:
            log.warning("events: %d events happened while the stream was away and are "
                        "not sent (ids %d..%d)", first_id - self.last_id - 1,
                        self.last_id + 1, first_id - 1)

    # ---- one event ----
    def handle(self, ev: Event) -> None:
        """Publish one stream event and hand it to the listeners (on the pump's thread)."""
        kind = ev.get("kind")
        if "id" in ev:
            self.last_id = int(ev["id"])
        if kind == Special.DROPPED:
            self._dropped(int(ev.get("count", 0)))
        elif kind == Special.CALL_QUALITY:
            self._publish(Topic.QUALITY, str(kind), quality_payload(ev))
        else:
            self._publish(Topic.EVENTS, str(kind), events_payload(ev, self.clock.wall()))
        for fn in self.listeners:
            try:
                fn(ev)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the pump
                self._listener_failed(fn, kind, exc)

    def _listener_failed(self, fn: Listener, kind: object, exc: Exception) -> None:
        """The first failure of a listener with its traceback, then every 100th in a line."""
        key = (_name(fn), type(exc).__name__)
        n = self._faults[key] = self._faults.get(key, 0) + 1
        if n == 1:
            log.exception("events: listener %s failed on %s (the pump goes on)", key[0], kind)
        elif n % 100 == 0:
            log.error("events: listener %s failed %d times (%s: %s)", key[0], n, key[1], exc)

    def _dropped(self, count: int) -> None:
        self.dropped += count
        log.warning("events: the core's stream dropped %d events (agent too slow to read; "
                    "%d in all)", count, self.dropped)
        self._publish(Topic.EVENTS, Special.DROPPED,
                      dropped_payload(count, self.last_id, self.clock.wall()))

    def _publish(self, t: Topic, kind: str, payload: dict[str, Any]) -> None:
        try:
            self.link.publish(t, payload)
        except ProtocolError as exc:
            if kind not in self._refused:  # once per kind: a schema gap, not per event
                self._refused.add(kind)
                log.error("events: a %s event cannot be sent on %s (%s); such events are "
                          "skipped", kind, t, exc)
            return
        except Exception:  # noqa: BLE001 - the link's trouble must not stop the pump
            log.exception("events: publishing a %s event failed", kind)
            return
        self.published += 1


def _name(fn: Listener) -> str:
    return str(getattr(fn, "__qualname__", None) or fn)
