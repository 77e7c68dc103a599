"""syncer -- fsync() in worker threads that do nothing else.

SYNOPSIS
    s = Syncer()                 # up to default_threads() workers, started on demand
    await s.fsync(fd)            # os.fsync(fd) in a worker; its OSError here
    s.close()                    # workers end once the queue is drained;
                                 # later fsyncs run in the caller's thread

DESCRIPTION
    cleanup commits several messages at once under load, one per smtpd
    session in DATA, and their fsyncs must overlap: on a journaled file
    system fsyncs that are in flight together share one journal commit,
    and a slow disk would otherwise serialize every client behind one
    fsync.  So the fsyncs run in threads, as Postfix runs one cleanup
    process per session.

    Only the fsync, though.  Every system call a Python thread makes
    gives up the GIL and takes it back, and while the event loop thread
    is busy each such hand-over is a futex wait and wake in both threads.
    A ThreadPoolExecutor running the whole commit in the worker (write,
    fchmod, fsync, two closes, then concurrent.futures' locks and
    asyncio.wrap_future's callbacks) cost about 25 futex calls per
    message, 54 per message in cleanup in all under `smtp-source -s 20`
    (strace; docs/performance.md, item 52).  Here the loop thread writes
    the file and sets its ready bit (microseconds, no waiting: see
    QueueWriter.seal), a worker blocks in the fsync alone, and its answer
    comes back with one call_soon_threadsafe.

    Workers are started as fsyncs wait for them, up to max_threads
    (ThreadPoolExecutor's default, cpu_count + 4, at most 32), and stay.
    fsync() must be called from the event loop's thread; the count of
    fsyncs in flight is kept there, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading


def default_threads() -> int:
    """ThreadPoolExecutor's default number of workers."""
    return min(32, (os.cpu_count() or 1) + 4)


class Syncer:
    def __init__(self, max_threads: int | None = None) -> None:
        self.max_threads = max_threads or default_threads()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0         # asked for, not yet answered (loop thread only)
        self._closed = False

    @property
    def threads(self) -> int:
        return len(self._threads)

    def fsync(self, fd: int) -> asyncio.Future:
        """A future for os.fsync(fd) in a worker: None, or the OSError.
        After close() (a stop's last messages) the fsync is made here, in
        the caller's thread, and the future comes back done."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._closed:
            try:
                os.fsync(fd)
                fut.set_result(None)
            except OSError as exc:
                fut.set_exception(exc)
            return fut
        self._in_flight += 1
        if self._in_flight > len(self._threads) and len(self._threads) < self.max_threads:
            t = threading.Thread(target=self._work, name="fsync", daemon=True)
            t.start()
            self._threads.append(t)
        self._queue.put((fd, fut, loop))
        return fut

    def close(self) -> None:
        """No more fsyncs; each worker ends after the ones queued before."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fd, fut, loop = item
            try:
                os.fsync(fd)
                err = None
            except OSError as exc:
                err = exc
            try:
                loop.call_soon_threadsafe(self._answer, fut, err)
            except RuntimeError:
                return          # the loop is closed: the process is ending

    def _answer(self, fut: asyncio.Future, err: OSError | None) -> None:
        self._in_flight -= 1
        if fut.cancelled():
            return
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)
