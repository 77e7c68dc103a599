"""cleanup.service: spare queue files (SparePool).

A worker thread creates queue files ahead, in batches with one directory
fsync each, so that neither the creation nor the fsync that makes a name
durable is on smtpd's RCPT reply path; `open` takes one. A spare older
than SPARE_MAX_AGE is replaced, stopping removes them all, and none of
them is ever seen by a queue reader (they are not ready).
"""
from __future__ import annotations

import asyncio
import os

from fulmar.ipc import channel
from fulmar.queue import qfile
from cleanup import service as S


def _incoming(qdir):
    return sorted(os.listdir(os.path.join(qdir, "incoming")))


async def _open(path, n):
    ch = await channel.connect(path, protocol=S.PROTOCOL, timeout=5)
    reply = await ch.request({"request": "open", "id": n, "origin": "smtpd"}, timeout=5)
    assert reply["status"] == "ok"
    return ch, reply["queue_id"]


async def _serve(daemon_context, tmp_path):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    path = str(tmp_path / "cleanup.sock")
    return svc, qdir, path, await channel.serve(path, S.PROTOCOL, svc.handle)


async def _spares(svc, n):
    for _ in range(200):
        if len(svc.spares) >= n:
            return [w.queue_id for w, _ in svc.spares._files]
        await asyncio.sleep(0.01)
    raise AssertionError("no spare queue files were made")


async def test_open_takes_a_spare_and_stop_removes_them(daemon_context, tmp_path):
    svc, qdir, path, server = await _serve(daemon_context, tmp_path)
    try:
        svc.spares.want(3)
        spare_ids = await _spares(svc, 3)
        assert _incoming(qdir) == sorted(spare_ids)
        # Named by queue ID, not ready: invisible to every queue reader.
        assert list(qfile.scan(qdir, "incoming")) == []
        ch1, q1 = await _open(path, 1)
        assert q1 == spare_ids[0]
        # Old spares are not used: a fresh file (and queue ID), the old
        # ones removed.
        old_ids = spare_ids[1:]
        svc.spares._files = type(svc.spares._files)(
            (w, made - S.SPARE_MAX_AGE - 1) for w, made in svc.spares._files)
        ch2, q2 = await _open(path, 2)
        assert q2 not in spare_ids
        assert _incoming(qdir) == sorted([q1, q2])
        # A commit refills the pool: one spare per message in progress,
        # and one more.
        for rtype, data in ((b"S", b"a@example.org"), (b"R", b"b@example.net\0\0\0" + b"0"),
                            (b"M", b""), (b"B", b"Subject: t\r\n\r\nhello\r\n"), (b"X", b""),
                            (b"E", b"")):
            await ch2.send_record(rtype, data)
        assert (await ch2.recv_attr(timeout=5))["status"] == "ok"
        refill = await _spares(svc, 2)
        assert not set(refill) & set(old_ids)
        assert [q for q, _ in qfile.scan(qdir, "incoming")] == [q2]
        for ch in (ch1, ch2):
            await ch.close()
        await asyncio.sleep(0.05)                  # message 1's file goes
        svc.stop()
        assert len(svc.spares) == 0 and _incoming(qdir) == [q2]
    finally:
        server.close()
        svc.executor.shutdown()


async def test_a_fill_that_ends_after_stop_leaves_nothing(daemon_context):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    pool = S.SparePool(qdir)
    pool.close()
    pool._fill(3)                                  # a fill still running at stop
    assert len(pool) == 0 and _incoming(qdir) == []


async def test_an_abort_before_any_record_keeps_the_file_for_the_next_open(daemon_context, tmp_path):
    # smtpd opens at MAIL FROM; when no recipient is accepted it aborts
    # without having sent a record, and the queue ID was never logged.
    svc, qdir, path, server = await _serve(daemon_context, tmp_path)
    try:
        svc.spares.want(1)
        (spare,) = await _spares(svc, 1)
        ch, q1 = await _open(path, 1)
        assert q1 == spare and len(svc.spares) == 0
        await ch.send_attr({"request": "abort", "id": 1})
        await ch.flush()
        await _spares(svc, 1)
        # The same file, still there and still not ready, is the next one.
        assert _incoming(qdir) == [q1] and list(qfile.scan(qdir, "incoming")) == []
        reply = await ch.request({"request": "open", "id": 2, "origin": "smtpd"}, timeout=5)
        assert reply["queue_id"] == q1
        # After a record the file is the message's: an abort removes it.
        await ch.send_record(b"S", b"a@example.org")
        await ch.send_attr({"request": "abort", "id": 2})
        await ch.flush()
        for _ in range(200):
            if q1 not in _incoming(qdir):
                break
            await asyncio.sleep(0.01)
        assert q1 not in _incoming(qdir) and len(svc.spares) == 0
        await ch.close()
        svc.stop()
    finally:
        server.close()
        svc.executor.shutdown()


def test_give_back_removes_a_file_that_was_not_a_spare_or_is_too_old(daemon_context):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    pool = S.SparePool(qdir)
    try:
        fresh = qfile.QueueWriter.create(qdir)          # made on the loop: no spare
        pool.give_back(fresh)
        pool._fill(1)
        old = pool.take()
        old.spare_made -= S.SPARE_MAX_AGE + 1
        pool.give_back(old)
        assert len(pool) == 0 and _incoming(qdir) == []
    finally:
        pool.close()


def test_a_fill_starts_below_the_need_and_makes_a_batch(daemon_context, tmp_path):
    # want(n, upto): nothing while n spares are there; below that, one fill
    # makes max(n, upto), so that one directory fsync serves several
    # messages (item 26 of docs/performance.md).
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    pool = S.SparePool(qdir)
    fills = []
    pool.executor.submit = lambda fn, n: fills.append(n) or fn(n)
    try:
        pool.want(2, 2 + S.SPARE_BATCH)
        assert fills == [2 + S.SPARE_BATCH] and len(pool) == 2 + S.SPARE_BATCH
        for _ in range(S.SPARE_BATCH):
            pool.take().abort()
            pool.want(2, 2 + S.SPARE_BATCH)
        assert fills == [2 + S.SPARE_BATCH] and len(pool) == 2    # no fill yet
        pool.take().abort()
        pool.want(2, 2 + S.SPARE_BATCH)
        assert fills == [2 + S.SPARE_BATCH, S.SPARE_BATCH + 1] and len(pool) == 2 + S.SPARE_BATCH
    finally:
        pool.close()
    assert _incoming(qdir) == []
