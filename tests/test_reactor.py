"""The reactor: timers in time order, fake time jumps, real time sleeps, call_soon across threads."""

import threading
import time

from drivers.reactor import NEVER, FakeClock, MonotonicClock, Reactor


def test_timers_fire_in_time_order_and_reschedule(reactor):
    log = []
    start = reactor.now()

    def every_half_second(t):
        log.append(("a", round(t - start, 3)))
        return t + 0.5 if t - start < 1.4 else NEVER

    reactor.register_timer(lambda t: log.append(("b", round(t - start, 3))) or NEVER, start + 0.7)
    reactor.register_timer(every_half_second, start + 0.1)
    reactor.run_until(start + 10)
    assert log == [("a", 0.1), ("a", 0.6), ("b", 0.7), ("a", 1.1), ("a", 1.6)]
    assert reactor.now() == start + 10


def test_update_and_unregister_supersede_earlier_schedule(reactor):
    fired = []
    t0 = reactor.now()
    timer = reactor.register_timer(lambda t: fired.append(t) or NEVER, t0 + 1)
    reactor.update_timer(timer, t0 + 3)
    reactor.run_until(t0 + 2)
    assert fired == []
    reactor.run_until(t0 + 4)
    assert fired == [t0 + 3]
    other = reactor.register_timer(lambda t: fired.append(t) or NEVER, t0 + 5)
    reactor.unregister_timer(other)
    reactor.run_until(t0 + 6)
    assert fired == [t0 + 3]


def test_fake_time_runs_an_hour_instantly():
    reactor = Reactor(FakeClock(0.0))
    ticks = []
    reactor.register_timer(lambda t: ticks.append(t) or t + 0.02, 0.0)
    wall = time.monotonic()
    reactor.run_until(3600.0)
    assert len(ticks) == 180001
    assert time.monotonic() - wall < 10


def test_fake_clock_never_goes_back():
    clock = FakeClock(5.0)
    clock.set(6.0)
    try:
        clock.set(1.0)
    except ValueError as exc:
        assert "cannot go back" in str(exc)
    else:
        raise AssertionError("clock went back")


def test_real_clock_sleeps_and_call_soon_wakes_it_from_another_thread():
    reactor = Reactor(MonotonicClock())
    got = []
    threading.Timer(0.05, lambda: reactor.call_soon(got.append, "edge")).start()
    reactor.run_for(0.3)
    assert got == ["edge"]
    fired = []
    t0 = reactor.now()
    reactor.register_timer(lambda t: fired.append(t) or NEVER, t0 + 0.1)
    reactor.run_for(0.2)
    assert fired and 0.09 <= fired[0] - t0 < 0.2


def test_stop_inside_a_nested_run_ends_the_outer_run_too(reactor):
    t0 = reactor.now()
    fired = []

    def nested(t):
        reactor.register_timer(lambda t: reactor.stop(), t + 0.5)
        reactor.run_until(t + 5)  # e.g. a chip waiting for calibration
        return NEVER

    reactor.register_timer(nested, t0 + 1)
    reactor.register_timer(lambda t: fired.append(t) or NEVER, t0 + 8)
    reactor.run_until(t0 + 10)
    assert fired == [] and reactor.now() < t0 + 8
