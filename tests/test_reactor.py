"""The reactor: timers in time order, fake time jumps, real time sleeps, call_soon across threads."""

import threading
import time

from foundation.reactor import NEVER, FakeClock, MonotonicClock, Reactor


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


def test_periodic_timers_stay_on_their_grid_when_woken_late():
    reactor = Reactor(MonotonicClock())
    t0 = reactor.now()
    ticks = []

    def slow(eventtime):
        ticks.append(eventtime)
        time.sleep(0.004)  # every wake-up is a little late, as on a busy box

    reactor.register_periodic(slow, 0.02, start=t0)
    reactor.run_for(1.0)
    # 50 per second on the grid; drifting by 4 ms a tick would give only ~42.
    assert 49 <= len(ticks) <= 51
    assert abs(ticks[-1] - (t0 + 0.02 * (len(ticks) - 1))) < 0.015


def test_periodic_timer_resyncs_after_a_long_stall(reactor):
    t0 = reactor.now()
    ticks = []

    def stall_once(eventtime):
        ticks.append(eventtime)
        if len(ticks) == 3:
            reactor.clock.set(eventtime + 1.0)  # the process was stopped for a second

    reactor.register_periodic(stall_once, 0.02, start=t0)
    reactor.run_until(t0 + 1.5)
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(gaps) < 1.05 and sum(1 for g in gaps if g < 0.019) == 0
