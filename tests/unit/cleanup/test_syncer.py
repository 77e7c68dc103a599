"""cleanup.syncer: fsyncs in worker threads that overlap, errors come
back to the awaiting task, workers start on demand up to the cap and end
on close().  Real threads and real files; os.fsync is replaced only where
a test must hold fsyncs in flight together."""
from __future__ import annotations

import asyncio
import errno
import os
import threading

import pytest

from cleanup import syncer as Y


async def test_the_fsync_runs_in_a_worker_thread(tmp_path, monkeypatch):
    where = []
    real = os.fsync
    monkeypatch.setattr(Y.os, "fsync", lambda fd: (where.append(threading.get_ident()), real(fd)))
    s = Y.Syncer()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"x")
        assert await s.fsync(fd) is None
    finally:
        os.close(fd)
        s.close()
    assert len(where) == 1 and where[0] != threading.get_ident()
    assert s.threads == 1


async def test_fsyncs_in_flight_together_overlap(monkeypatch):
    # Each fsync returns only once the other has started: with one worker
    # (no overlap) this would never finish.
    both = threading.Barrier(2, timeout=5)
    monkeypatch.setattr(Y.os, "fsync", lambda fd: both.wait())
    s = Y.Syncer(max_threads=4)
    try:
        await asyncio.wait_for(asyncio.gather(s.fsync(1), s.fsync(2)), 10)
        assert s.threads == 2
    finally:
        s.close()


async def test_workers_are_capped_and_every_fsync_is_answered(monkeypatch):
    done = []
    monkeypatch.setattr(Y.os, "fsync", lambda fd: done.append(fd))
    s = Y.Syncer(max_threads=2)
    try:
        await asyncio.wait_for(asyncio.gather(*(s.fsync(n) for n in range(10))), 10)
        assert sorted(done) == list(range(10))
        assert s.threads == 2
        assert s._in_flight == 0
    finally:
        s.close()


async def test_an_fsync_error_is_raised_in_the_awaiting_task():
    r, w = os.pipe()        # fsync on a pipe: EINVAL
    s = Y.Syncer()
    try:
        with pytest.raises(OSError) as info:
            await s.fsync(r)
        assert info.value.errno == errno.EINVAL
    finally:
        s.close()
        os.close(r)
        os.close(w)


async def test_a_cancelled_wait_leaves_the_syncer_usable(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(Y.os, "fsync", lambda fd: release.wait(5) if fd == 1 else None)
    s = Y.Syncer(max_threads=2)
    try:
        slow = s.fsync(1)
        slow.cancel()
        release.set()
        assert await asyncio.wait_for(s.fsync(2), 10) is None
        for _ in range(100):            # the cancelled one's answer arrives too
            if s._in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert s._in_flight == 0
    finally:
        s.close()


async def _fails_on_a_pipe(s):
    r, w = os.pipe()        # fsync on a pipe: EINVAL
    try:
        with pytest.raises(OSError):
            await s.fsync(r)
    finally:
        os.close(r)
        os.close(w)


async def test_close_ends_the_workers_and_later_fsyncs_run_in_the_caller(tmp_path, monkeypatch):
    s = Y.Syncer()
    await _fails_on_a_pipe(s)
    threads = list(s._threads)
    s.close()
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    # A stop's last message is still made durable, in this thread.
    where = []
    real = os.fsync
    monkeypatch.setattr(Y.os, "fsync", lambda fd: (where.append(threading.get_ident()), real(fd)))
    fd = os.open(tmp_path / "late", os.O_WRONLY | os.O_CREAT)
    try:
        fut = s.fsync(fd)
        assert fut.done() and fut.result() is None
    finally:
        os.close(fd)
    assert where == [threading.get_ident()] and s.threads == len(threads)
    await _fails_on_a_pipe(s)


def test_the_default_cap_is_thread_pool_executors():
    assert Y.default_threads() == min(32, (os.cpu_count() or 1) + 4)
