"""Clocks: re-exported from the reactor so `from foundation.clock import FakeClock` reads well."""

from foundation.reactor import NEVER, FakeClock, MonotonicClock

__all__ = ["NEVER", "FakeClock", "MonotonicClock"]
