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


async def _spares(svc, n):
    for _ in range(200):
        if len(svc.spares) >= n:
            return [w.queue_id for w, _ in svc.spares._files]
        await asyncio.sleep(0.01)
    raise AssertionError("no spare queue files were made")


async def test_open_takes_a_spare_and_stop_removes_them(daemon_context, tmp_path):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
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
