"""Per-destination scheduling state for qmgr (no I/O).

NAME
    qmgr.scheduler -- destinations, delivery jobs, concurrency windows

DESCRIPTION
    A destination is a (transport, nexthop) pair. Each has a FIFO of jobs
    (one job = one delivery request: up to the transport's recipient limit
    of one message's recipients for that destination), a count of jobs in
    flight, and a concurrency window:

    * the window starts at `initial_destination_concurrency` and grows by
      one per successful delivery up to
      `<transport>_destination_concurrency_limit` (Postfix's positive
      feedback of 1);
    * a delivery that fails for the whole site (no connection, greeting
      refused) shrinks it by one; a failure at window 1 marks the
      destination dead ("delivery temporarily suspended") for
      `minimal_backoff_time`: its queued and new jobs are deferred without
      a connection attempt, so a dead destination costs nothing and never
      stalls the others; back from dead (that time is up, or `postqueue
      -f`), the window restarts at the initial concurrency, or at the
      deliveries still in flight, as Postfix's does;
    * `<transport>_destination_rate_delay` > 0 means one delivery at a time
      with that pause between deliveries, also when the next message comes
      after the destination went idle: an idle destination is forgotten
      only once its pause is over (so that many destinations with a rate
      delay keep one small entry each until their next delivery).

    The transport as a whole is bounded by its process limit (the
    master.cf maxproc column, else `default_process_limit`), as Postfix
    is bounded by its delivery agent processes.

    Scheduler.runnable() yields jobs that may start now; the manager starts
    them and reports back with done().
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass(slots=True)
class Job:
    message: object            # qmgr.manager.Message
    transport: str
    nexthop: str
    recipients: list           # fulmar.queue.qfile.Recipient


@dataclass(slots=True)
class Limits:
    concurrency: int
    initial: int
    recipients: int
    rate_delay: float


@dataclass
class Destination:
    transport: str
    nexthop: str
    limits: Limits
    queue: collections.deque = field(default_factory=collections.deque)
    active: int = 0
    window: float = 0.0
    dead_until: float = 0.0
    dead_reason: str = ""
    dead_dsn: str = ""
    next_start: float = 0.0

    def __post_init__(self) -> None:
        self.window = self.initial_window()

    def initial_window(self) -> float:
        return float(max(1, min(self.limits.initial, self.limits.concurrency)))

    def revive(self) -> None:
        """Back from dead (its time is up, or a flush): "best concurrency
        is anyone's guess", as Postfix's qmgr_queue_unthrottle() says --
        the deliveries still in flight, else the initial window.  (A
        window of 1 made the first site failure after a flush kill the
        destination again, for minimal_backoff_time.)"""
        self.dead_until = 0.0
        self.window = float(self.active) if self.active > 0 else self.initial_window()

    def limit(self) -> int:
        if self.limits.rate_delay > 0:
            return 1
        return max(1, int(self.window))


class Scheduler:
    """All destinations of one qmgr."""

    def __init__(self, limits_for, transport_limit_for, min_backoff: float) -> None:
        self._limits_for = limits_for                 # transport -> Limits
        self._transport_limit_for = transport_limit_for  # transport -> int
        self.min_backoff = min_backoff
        self.destinations: dict[tuple[str, str], Destination] = {}
        self.transport_active: collections.Counter = collections.Counter()
        self.waiting: collections.OrderedDict = collections.OrderedDict()  # dest keys with queued jobs

    def destination(self, transport: str, nexthop: str) -> Destination:
        key = (transport, nexthop.lower())
        dest = self.destinations.get(key)
        if dest is None:
            dest = Destination(transport, nexthop, self._limits_for(transport))
            self.destinations[key] = dest
        return dest

    def recipient_limit(self, transport: str) -> int:
        return max(1, self._limits_for(transport).recipients)

    def add(self, job: Job) -> Destination:
        dest = self.destination(job.transport, job.nexthop)
        dest.queue.append(job)
        self.waiting[(dest.transport, dest.nexthop.lower())] = dest
        return dest

    def is_dead(self, dest: Destination, now: float) -> bool:
        if dest.dead_until and now >= dest.dead_until:
            dest.revive()
        return bool(dest.dead_until)

    def runnable(self, now: float):
        """Yield (dest, job, dead) for every job that may be handled now.

        dead=True means: defer this job at once with dest.dead_reason.
        Returns the earliest time a rate-delayed destination becomes
        runnable again (or None) through the `next_wakeup` attribute.
        """
        self.next_wakeup = None
        for key in list(self.waiting):
            dest = self.waiting[key]
            while dest.queue:
                if self.is_dead(dest, now):
                    yield dest, dest.queue.popleft(), True
                    continue
                if dest.active >= dest.limit():
                    break
                if self.transport_active[dest.transport] >= self._transport_limit_for(dest.transport):
                    break
                if dest.limits.rate_delay > 0 and now < dest.next_start:
                    if self.next_wakeup is None or dest.next_start < self.next_wakeup:
                        self.next_wakeup = dest.next_start
                    break
                dest.active += 1
                self.transport_active[dest.transport] += 1
                dest.next_start = now + dest.limits.rate_delay
                yield dest, dest.queue.popleft(), False
            if not dest.queue:
                self.waiting.pop(key, None)

    def done(self, dest: Destination, now: float, *, site_failure: bool, reason: str = "",
             dsn: str = "4.4.1") -> None:
        """A started job finished; adjust the window, maybe mark dead."""
        dest.active -= 1
        self.transport_active[dest.transport] -= 1
        if site_failure:
            if dest.window <= 1:
                dest.dead_until = now + self.min_backoff
                dest.dead_reason = reason
                dest.dead_dsn = dsn
            else:
                dest.window = max(1.0, dest.window - 1)
        else:
            dest.window = min(float(dest.limits.concurrency), dest.window + 1)
        if not dest.queue and not dest.active and not dest.dead_until and dest.next_start <= now:
            self.destinations.pop((dest.transport, dest.nexthop.lower()), None)

    def revive_all(self) -> None:
        """`postqueue -f`: forget dead destinations."""
        for dest in self.destinations.values():
            if dest.dead_until:
                dest.revive()
