"""master/throttle.py: exit classification and the throttle clock."""

import pytest
from hypothesis import given, strategies as st

from master.throttle import (MIN_HEALTHY_UPTIME, ExitKind, Throttle, classify_exit,
                             describe_exit)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("rc, stop, ready_for, kind", [
    (0, True, None, ExitKind.RETIRED),
    (-9, True, 5.0, ExitKind.RETIRED),          # killed by us after the stop timeout
    (1, False, None, ExitKind.BAD_STARTUP),     # died before ready
    (0, False, None, ExitKind.BAD_STARTUP),     # "not implemented" exits 0: still no loop
    (1, False, MIN_HEALTHY_UPTIME / 2, ExitKind.BAD_STARTUP),
    (-9, False, MIN_HEALTHY_UPTIME * 5, ExitKind.CRASHED),
    (1, False, MIN_HEALTHY_UPTIME * 5, ExitKind.CRASHED),
    (0, False, MIN_HEALTHY_UPTIME * 5, ExitKind.NORMAL),
])
def test_classify_exit(rc, stop, ready_for, kind):
    assert classify_exit(rc, stop, ready_for) is kind


@given(st.integers(-64, 255), st.one_of(st.none(), st.floats(0, 1e6)))
def test_unrequested_exit_is_never_retired(rc, ready_for):
    kind = classify_exit(rc, False, ready_for)
    assert kind is not ExitKind.RETIRED
    if ready_for is None:
        assert kind is ExitKind.BAD_STARTUP


def test_describe_exit_uses_postfix_words():
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(-9) == "killed by signal 9"
    assert describe_exit(0) == "exit status 0"


def test_throttle_expires_with_the_clock():
    clock = Clock()
    t = Throttle(clock)
    assert not t.active() and t.remaining() == 0.0
    t.throttle(60)
    assert t.active()
    assert t.remaining() == 60
    clock.now += 59.5
    assert t.active() and t.remaining() == pytest.approx(0.5)
    clock.now += 0.5
    assert not t.active() and t.remaining() == 0.0


def test_throttle_clear_and_negative():
    clock = Clock()
    t = Throttle(clock)
    t.throttle(10)
    t.clear()
    assert not t.active()
    t.throttle(-5)
    assert not t.active()


def test_no_tight_loop_policy():
    """A daemon that always dies at start-up is started once per throttle period."""
    clock = Clock()
    t = Throttle(clock)
    throttle_time, starts = 60, 0
    end = clock.now + 600
    while clock.now < end:
        if t.active():
            clock.now += t.remaining()
            continue
        starts += 1                                  # master would spawn here
        clock.now += 0.3                             # ...the process dies at once
        if classify_exit(1, False, None) is ExitKind.BAD_STARTUP:
            t.throttle(throttle_time)
    assert starts <= 600 / throttle_time + 1
