"""master.supervisor: on-demand services (no processes, no sockets: fakes)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from master import supervisor as S
from master.throttle import Throttle


class FakeLoop:
    def __init__(self):
        self.readers = {}

    def add_reader(self, fd, callback, *args):
        self.readers[fd] = (callback, args)

    def remove_reader(self, fd):
        self.readers.pop(fd, None)

    def call_later(self, delay, callback, *args):
        return SimpleNamespace(cancel=lambda: None)


class FakeSock:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def make_master(on_demand=True):
    clock = Clock()
    m = S.Master(None, environ={}, clock=clock)
    m.loop = FakeLoop()
    m.settings = SimpleNamespace(throttle_time=60.0, stop_timeout=30.0, env={}, queue_dir="/q")
    plan = S.ServicePlan(key=("cleanup", "unix"), name="cleanup", type="unix", argv=["x"],
                         path="/usr/libexec/postfix/cleanup", target=2, solitary=False,
                         backlog=128, on_demand=on_demand,
                         listeners=[("unix", "/q/private/cleanup", 1)])
    rt = S.ServiceRuntime(plan, [FakeSock(7)], 1, Throttle(clock))
    m.services = {plan.key: rt}
    spawned = []
    pids = iter(range(1000, 2000))

    def spawn(rt):
        pid = next(pids)
        w = S.Worker(SimpleNamespace(pid=pid), rt.plan.key, rt.plan.path, rt.generation,
                     clock(), None, ready_at=clock())
        m.workers[pid] = w
        spawned.append(w)
        return True
    m._spawn = spawn
    return m, rt, spawned, clock


def test_on_demand_service_starts_nothing_and_watches():
    m, rt, spawned, _ = make_master()
    m._reconcile(rt)
    assert spawned == [] and rt.watching and 7 in m.loop.readers


def test_always_on_service_starts_its_workers():
    m, rt, spawned, _ = make_master(on_demand=False)
    m._reconcile(rt)
    assert len(spawned) == 2 and not m.loop.readers


def test_connection_starts_one_worker_and_stops_watching():
    m, rt, spawned, _ = make_master()
    m._reconcile(rt)
    callback, args = m.loop.readers[7]
    callback(*args)
    assert len(spawned) == 1 and not rt.watching and not m.loop.readers
    m._reconcile(rt)                          # a live worker: nothing more
    assert len(spawned) == 1 and not m.loop.readers


def test_idle_exit_is_not_a_crash_and_waits_for_the_next_client(monkeypatch):
    warnings = []
    monkeypatch.setattr(S.log, "warning", lambda *a: warnings.append(a))
    m, rt, spawned, clock = make_master()
    m._reconcile(rt)
    m.loop.readers[7][0](*m.loop.readers[7][1])
    clock.now += 100                          # max_idle later
    m._exited(spawned[0], 0)
    assert warnings == [] and len(spawned) == 1
    assert rt.watching and 7 in m.loop.readers
    assert not rt.throttle.active()


def test_crash_is_logged_and_replaced_at_once(monkeypatch):
    warnings = []
    monkeypatch.setattr(S.log, "warning", lambda *a: warnings.append(a))
    m, rt, spawned, clock = make_master()
    m._reconcile(rt)
    m.loop.readers[7][0](*m.loop.readers[7][1])
    clock.now += 100
    m._exited(spawned[0], -9)
    assert any("killed by signal 9" in str(w) for w in warnings)
    assert len(spawned) == 2 and not rt.watching


def test_bad_startup_throttles_then_watches_again(monkeypatch):
    monkeypatch.setattr(S.log, "warning", lambda *a: None)
    m, rt, spawned, clock = make_master()
    m._reconcile(rt)
    m.loop.readers[7][0](*m.loop.readers[7][1])
    m._exited(spawned[0], 1)                  # died at once: bad startup
    assert rt.throttle.active() and not rt.watching and len(spawned) == 1
    clock.now += 61
    m._unthrottle(rt)
    assert rt.watching and len(spawned) == 1


@pytest.mark.parametrize("on_demand, reported", [(True, True), (False, False)])
def test_readiness_does_not_wait_for_on_demand_services(on_demand, reported):
    import os
    m, rt, _spawned, _ = make_master(on_demand)
    read_end, write_end = os.pipe()
    m.parent_status_fd = write_end
    try:
        m._report_ready()                     # no worker at all
        assert (m.parent_status_fd is None) is reported
    finally:
        os.close(read_end)
        if m.parent_status_fd is not None:
            os.close(m.parent_status_fd)
