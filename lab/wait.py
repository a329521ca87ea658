"""The one polling helper of the tests, the lab and the demo: try, pass time, try again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TimedOut(AssertionError):
    """What `wait_until` raises: "no <what> within <timeout> s" (and the detail)."""


def wait_until(predicate: Callable[[], T | None], timeout: float = 5.0, what: str = "a condition",
               *, step: float = 0.05, tick: Callable[[float], object] = time.sleep,
               retry: tuple[type[BaseException], ...] = (),
               detail: Callable[[], object] | None = None) -> T:
    """The first truthy value of predicate(), tried every `step` seconds for `timeout`.

    `tick(step)` passes the time between tries (a reactor's run_for, to keep it running);
    exceptions in `retry` count as "not yet". On time-out: TimedOut, naming `what` and
    `detail()`, chained to the last retried exception.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: BaseException | None = None
        try:
            got = predicate()
        except retry as exc:
            last = exc
        else:
            if got:
                return got
        if time.monotonic() > deadline:
            extra = f"; {detail()}" if detail is not None else ""
            raise TimedOut(f"no {what} within {timeout:g} s{extra}") from last
        tick(step)
