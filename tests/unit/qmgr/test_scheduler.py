"""qmgr.scheduler: windows, dead destinations, rate delay, process limits."""

from qmgr.scheduler import Job, Limits, Scheduler


def make(concurrency=20, initial=5, rate=0.0, plimit=100):
    return Scheduler(lambda t: Limits(concurrency, initial, 50, rate), lambda t: plimit, 300)


def jobs(s, n, nexthop="example.org"):
    for i in range(n):
        s.add(Job(object(), "smtp", nexthop, [i]))


def test_initial_window_bounds_parallel_jobs():
    s = make()
    jobs(s, 10)
    started = list(s.runnable(0))
    assert len(started) == 5 and not any(dead for _, _, dead in started)


def test_success_grows_window_up_to_limit():
    s = make(concurrency=6, initial=1)
    jobs(s, 10)
    (dest, _, _), = list(s.runnable(0))
    for _ in range(10):
        s.done(dest, 0, site_failure=False)
        dest.active += 1  # pretend another one runs
    assert dest.window == 6


def test_failures_shrink_then_mark_dead_and_defer_without_trying():
    s = make(initial=2)
    jobs(s, 5)
    started = list(s.runnable(0))
    dest = started[0][0]
    s.done(dest, 0, site_failure=True, reason="connect to x: Connection refused")
    assert dest.window == 1 and not dest.dead_until
    s.done(dest, 0, site_failure=True, reason="connect to x: Connection refused")
    assert dest.dead_until == 300
    rest = list(s.runnable(1))
    assert len(rest) == 3 and all(dead for _, _, dead in rest)
    assert dest.dead_reason.startswith("connect to x")


def test_dead_destination_does_not_block_others():
    s = make(initial=1)
    jobs(s, 1, "dead.example")
    (dest, _, _), = list(s.runnable(0))
    s.done(dest, 0, site_failure=True, reason="down")
    jobs(s, 2, "dead.example")
    jobs(s, 2, "alive.example")
    out = list(s.runnable(1))
    assert [d.nexthop for d, _, dead in out if dead] == ["dead.example", "dead.example"]
    assert [d.nexthop for d, _, dead in out if not dead] == ["alive.example"]


def test_dead_state_expires_and_flush_revives():
    s = make(initial=1)
    jobs(s, 1)
    (dest, _, _), = list(s.runnable(0))
    s.done(dest, 0, site_failure=True, reason="down")
    s.revive_all()
    jobs(s, 1)
    assert [dead for _, _, dead in s.runnable(1)] == [False]


def _killed(s, initial=3):
    """A destination shrunk to window 1 and marked dead by site failures."""
    jobs(s, initial + 10)
    started = list(s.runnable(0))
    dest = started[0][0]
    for _ in started:
        s.done(dest, 0, site_failure=True, reason="down")
    assert dest.dead_until == 300 and dest.window == 1
    return dest


def test_a_flush_revives_a_dead_destination_at_the_initial_window():
    # Postfix's qmgr_queue_unthrottle(): back from dead, the initial
    # concurrency again -- not the window of 1 it died at, where the first
    # failure after a flush would kill it for another minimal_backoff_time.
    s = make(initial=3)
    dest = _killed(s)
    s.revive_all()
    assert not dest.dead_until and dest.window == 3
    assert len([1 for _, _, dead in s.runnable(1) if not dead]) == 3
    s.done(dest, 1, site_failure=True, reason="down")
    assert not dest.dead_until and dest.window == 2


def test_a_destination_whose_dead_time_is_up_restarts_at_the_initial_window():
    s = make(initial=3)
    dest = _killed(s)
    assert len([1 for _, _, dead in s.runnable(300) if not dead]) == 3
    assert dest.window == 3


def test_revived_with_deliveries_in_flight_the_window_is_those():
    s = make(initial=3)
    dest = _killed(s)
    dest.active = 2                      # still running when it died
    s.revive_all()
    assert dest.window == 2


def test_a_flush_leaves_live_destinations_alone():
    s = make(concurrency=6, initial=1)
    jobs(s, 3)
    (dest, _, _), = list(s.runnable(0))
    s.done(dest, 0, site_failure=False)
    assert dest.window == 2
    s.revive_all()
    assert dest.window == 2


def test_rate_delay_serializes_and_reports_wakeup():
    s = make(rate=10.0)
    jobs(s, 3)
    first = list(s.runnable(0))
    assert len(first) == 1
    s.done(first[0][0], 0, site_failure=False)
    assert list(s.runnable(5)) == [] and s.next_wakeup == 10
    assert len(list(s.runnable(10))) == 1


def test_rate_delay_holds_after_the_destination_went_idle():
    # One message, delivered; the next arrives within the pause: it waits
    # for the pause's end, as Postfix's destination_rate_delay does.  Once
    # idle and past its pause, the destination is forgotten.
    s = make(rate=10.0)
    jobs(s, 1)
    (dest, _job, _dead), = s.runnable(0)
    s.done(dest, 1, site_failure=False)
    jobs(s, 1)
    assert list(s.runnable(2)) == [] and s.next_wakeup == 10
    (dest, _job, _dead), = s.runnable(10)
    s.done(dest, 25, site_failure=False)       # after its pause: forgotten
    assert s.destinations == {}


def test_transport_process_limit_caps_all_destinations():
    s = make(plimit=3)
    for d in ("a", "b", "c", "d"):
        jobs(s, 2, d)
    assert len(list(s.runnable(0))) == 3
