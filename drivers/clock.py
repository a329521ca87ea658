"""Clocks: re-exported from the reactor so `from drivers.clock import FakeClock` reads well."""

from drivers.reactor import NEVER, FakeClock, MonotonicClock

__all__ = ["NEVER", "FakeClock", "MonotonicClock"]
