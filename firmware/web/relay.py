"""The dashboard's live feed: one reader of the core's event stream (GET /events on the
control API) fanned out to each browser's own GET /events through a bounded queue. A
browser that falls behind loses its stream (its EventSource reconnects and the page
refreshes), never slowing the core or the other browsers."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator

from firmware.api.client import ApiClient, ApiError, EventStream

log = logging.getLogger(__name__)

QUEUE_DEPTH = 64
PING_S = 5.0  # to the browser: a closed one is noticed on the next write
RETRY_S = 3.0
READY = "event: ready\ndata: {}\n\n"  # the core's stream is up: refresh now


Feed = queue.Queue[str | None]  # SSE frames; None ends the browser's stream


class Relay:
    """See the module docstring; at most `max_feeds` browsers at once."""

    def __init__(self, api: ApiClient, max_feeds: int) -> None:
        self.api, self.max_feeds = api, max_feeds
        self._feeds: set[Feed] = set()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stream: EventStream | None = None
        self._stopped = False
        self._wake = threading.Event()

    def open(self) -> Feed | None:
        """A browser's feed, or None when every slot is taken; drop() gives it back."""
        feed: Feed = queue.Queue(QUEUE_DEPTH)
        with self._lock:
            if len(self._feeds) >= self.max_feeds or self._stopped:
                return None
            self._feeds.add(feed)
            if self._stream is not None:
                feed.put_nowait(READY)
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, name="events", daemon=True)
                self._reader.start()
        return feed

    @staticmethod
    def frames(feed: Feed) -> Iterator[str]:
        """A browser's stream: its feed's frames, a ping when it has been quiet."""
        yield f"retry: {int(RETRY_S * 1000)}\n\n"
        while True:
            try:
                frame = feed.get(timeout=PING_S)
            except queue.Empty:
                frame = ": ping\n\n"
            if frame is None:
                return
            yield frame

    def drop(self, feed: Feed) -> None:
        with self._lock:
            self._feeds.discard(feed)
            stream = self._stream if not self._feeds else None
        if stream is not None:
            stream.close()  # nobody listens: the reader ends

    def stop(self) -> None:
        """End every browser's stream and the reader (the web process is stopping)."""
        with self._lock:
            self._stopped, stream = True, self._stream
        self._wake.set()
        if stream is not None:
            stream.close()
        self._send(None)

    def _read(self) -> None:
        while self._wanted():
            try:
                self._relay(self.api.events())
            except ApiError as exc:
                log.debug("core events: %s", exc)
            self._send(None)  # the browsers reconnect, then refresh on `ready`
            self._wake.wait(RETRY_S)

    def _relay(self, stream: EventStream) -> None:
        with self._lock:
            listening = bool(self._feeds)
            self._stream = stream if listening else None
        if listening:
            self._send(READY)
            for event in stream:
                kind = str(event.get("kind", "event"))
                self._send(f"event: {kind}\ndata: {json.dumps(event)}\n\n")
        with self._lock:
            self._stream = None
        stream.close()

    def _wanted(self) -> bool:
        """Whether anybody listens; if not, the reader ends (the next open() starts one)."""
        with self._lock:
            if self._feeds and not self._stopped:
                return True
            self._reader = None
            return False

    def _send(self, frame: str | None) -> None:
        """To every browser without waiting; a browser whose queue is full is cut off."""
        with self._lock:
            feeds = list(self._feeds)
        for feed in feeds:
            try:
                feed.put_nowait(frame)
            except queue.Full:
                with self._lock:
                    self._feeds.discard(feed)
                with feed.mutex:
                    feed.queue.clear()
                feed.put_nowait(None)


