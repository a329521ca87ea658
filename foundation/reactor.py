"""The one clock and timer loop every timer in the gateway reads.

Timers are callbacks in Klipper's manner: `callback(eventtime)` returns its next wake time
(or NEVER). A `FakeClock` jumps from timer to timer; a `MonotonicClock` sleeps in between.
Other threads enter only through `call_soon()`.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

NEVER = float("inf")
NOW = 0.0


class MonotonicClock:
    """Wall-clock seconds from time.monotonic()."""

    fake = False

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch, for records people read (CDRs, logs)."""
        return time.time()


class FakeClock:
    """Seconds that only move when the reactor (or a test) moves them."""

    fake = True

    def __init__(self, start: float = 1000.0, epoch: float = 1_795_000_000.0) -> None:
        self._t = start
        self._epoch = epoch - start  # wall() = epoch at `start`, moving with the clock

    def now(self) -> float:
        return self._t

    def wall(self) -> float:
        return self._epoch + self._t

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError(f"fake clock cannot go back from {self._t} to {t}")
        self._t = t


TimerCallback = Callable[[float], float | None]  # returns the next wake time (None: NEVER)
Clock = MonotonicClock | FakeClock


class Timer:
    """A registered callback; `seq` tells the heap entry in force (-1: none)."""

    __slots__ = ("callback", "waketime", "seq")

    def __init__(self, callback: TimerCallback, waketime: float, seq: int) -> None:
        self.callback = callback
        self.waketime = waketime
        self.seq = seq


class Reactor:
    """Runs timers in time order on one thread; `clock` is a MonotonicClock or FakeClock."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._soon: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._depth = 0  # run_until() may nest (a chip's start() waiting for calibration)

    def now(self) -> float:
        return self.clock.now()

    def register_timer(self, callback: TimerCallback, waketime: float = NOW) -> Timer:
        timer = Timer(callback, NEVER, next(self._seq))
        self.update_timer(timer, waketime)
        return timer

    def register_periodic(self, fn: Callable[[float], object], period: float,
                          start: float | None = None, max_behind: int = 5) -> Timer:
        """Call fn(eventtime) every `period` seconds on a fixed grid (media clocks): each
        wake is due one period after the last one was due, not after it ran, so wake-up
        delays never accumulate. More than `max_behind` periods late, it re-syncs."""
        due = [self.now() if start is None else start]

        def tick(eventtime: float) -> float:
            fn(eventtime)
            due[0] += period
            if eventtime - due[0] > max_behind * period:
                due[0] = eventtime + period
            return due[0]

        return self.register_timer(tick, due[0])

    def update_timer(self, timer: Timer, waketime: float) -> None:
        timer.waketime = max(waketime, NOW)
        timer.seq = next(self._seq)
        if waketime != NEVER:
            heapq.heappush(self._heap, (timer.waketime, timer.seq, timer))
        self._wake.set()

    def unregister_timer(self, timer: Timer) -> None:
        timer.waketime = NEVER
        timer.seq = -1

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Thread-safe: run fn(*args) on the reactor thread at the next opportunity."""
        self._soon.append((fn, args))
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _next_due(self) -> Timer | None:
        while self._heap:
            waketime, seq, timer = self._heap[0]
            if seq != timer.seq:  # superseded by update_timer/unregister_timer
                heapq.heappop(self._heap)
                continue
            return timer
        return None

    def _run_soon(self) -> None:
        while self._soon:
            fn, args = self._soon.popleft()
            fn(*args)

    def _fire(self, timer: Timer, eventtime: float) -> None:
        heapq.heappop(self._heap)
        timer.seq = -1
        nxt = timer.callback(eventtime)
        if nxt is not None and nxt != NEVER and timer.seq == -1:
            self.update_timer(timer, nxt)

    def run_until(self, end: float) -> None:
        """Run every timer due up to `end` (absolute clock seconds), then return.

        Calls may nest; stop() ends every level, and only the outermost call clears it.
        """
        self._depth += 1
        if self._depth == 1:
            self._stopping = False
        try:
            self._loop(end)
        finally:
            self._depth -= 1

    def _loop(self, end: float) -> None:
        while not self._stopping:
            self._run_soon()
            timer = self._next_due()
            due = timer.waketime if timer else NEVER
            target = min(due, end)
            if target > self.now():
                if not isinstance(self.clock, FakeClock):
                    self._wait(target)  # may wake early for call_soon()
                    continue
                if target == NEVER:
                    return
                self.clock.set(target)
            if timer is None or due > end:
                return
            self._fire(timer, self.now())

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now() + seconds)

    def run_forever(self) -> None:
        self.run_until(NEVER)

    def _wait(self, t: float) -> None:
        self._wake.clear()
        if self._soon or self._stopping:
            return
        self._wake.wait(None if t == NEVER else max(0.0, t - self.now()))
