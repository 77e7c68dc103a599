"""What a daemon's exit means, and the per-service throttle.

Pure; the clock is injected so tests need no sleeps.

    classify_exit(returncode, requested_stop, ready_for, min_uptime) -> ExitKind
    describe_exit(returncode) -> "exit status 1" | "killed by signal 9"
    Throttle(clock).throttle(seconds) / .active() / .remaining() / .clear()

Policy (Postfix's master_spawn.c, extended for processes that announce
readiness):

* RETIRED: master asked the process to stop (reload, stop): never
  restarted, not an error.
* BAD_STARTUP: the process exited -- with any status -- before it wrote
  its ready byte, or within MIN_HEALTHY_UPTIME of doing so.  The service
  is throttled for `service_throttle_time` and master logs Postfix's
  `warning: PATH: bad command startup -- throttling`.  A daemon that
  cannot start is therefore restarted at most once per throttle period.
* CRASHED: a non-zero exit or a signal after a healthy run: logged and
  restarted at once (an admin's `kill -9`, a bug on one input).
* NORMAL: exit status 0 after a healthy run (a daemon that retires by
  itself, e.g. an on-demand daemon after max_idle without clients): not
  logged; an always-on service is restarted at once, an on-demand one on
  its next connection (master/supervisor.py).
"""

from __future__ import annotations

import enum
import signal
import time
from typing import Callable

# A process that dies this soon after announcing readiness did not really
# start (it crashed on its first wake-up, or on every connection): treat it
# as a bad startup, so that a broken daemon costs at most one Python start-up
# per service_throttle_time instead of a restart loop.
MIN_HEALTHY_UPTIME = 1.0


class ExitKind(enum.Enum):
    RETIRED = "retired"
    NORMAL = "normal"
    CRASHED = "crashed"
    BAD_STARTUP = "bad_startup"


def classify_exit(returncode: int, requested_stop: bool, ready_for: float | None,
                  min_uptime: float = MIN_HEALTHY_UPTIME) -> ExitKind:
    """ready_for: seconds between the ready byte and the exit, None if never ready."""
    if requested_stop:
        return ExitKind.RETIRED
    if ready_for is None or ready_for < min_uptime:
        return ExitKind.BAD_STARTUP
    if returncode != 0:
        return ExitKind.CRASHED
    return ExitKind.NORMAL


def describe_exit(returncode: int) -> str:
    """Postfix's wording: `exit status N` or `killed by signal N`."""
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def is_abnormal(returncode: int) -> bool:
    return returncode != 0


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class Throttle:
    """One service's "do not start before" time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: float | None = None

    def throttle(self, seconds: float) -> None:
        self._until = self._clock() + max(0.0, seconds)

    def active(self) -> bool:
        return self._until is not None and self._clock() < self._until

    def remaining(self) -> float:
        if self._until is None:
            return 0.0
        return max(0.0, self._until - self._clock())

    def clear(self) -> None:
        self._until = None
