"""The one retry delay of every process that reconnects to something remote (the records
server, the broker, the core's event stream): exponential, capped, and jittered so a
fleet that lost the same server does not come back in step."""

from __future__ import annotations

import random


def backoff_s(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """The wait after the `failures`-th failure in a row (1 = the first): doubling from
    min_s up to max_s, times a random factor in [0.5, 1)."""
    base = min(max_s, min_s * 2 ** min(max(0, failures - 1), 30))
    return base * (0.5 + 0.5 * rng.random())
