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

import pytest

from fulmar.ipc import channel
from fulmar.queue import qfile
from cleanup import service as S
from cleanup_served import served


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
    async with served(daemon_context, tmp_path) as (svc, qdir, path):
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


async def test_a_fill_that_ends_after_stop_leaves_nothing(daemon_context):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    pool = S.SparePool(qdir)
    pool.close()
    pool._fill(3)                                  # a fill still running at stop
    assert len(pool) == 0 and _incoming(qdir) == []


async def test_an_abort_before_any_record_keeps_the_file_for_the_next_open(daemon_context, tmp_path):
    # smtpd opens at MAIL FROM; when no recipient is accepted it aborts
    # without having sent a record, and the queue ID was never logged.
    async with served(daemon_context, tmp_path) as (svc, qdir, path):
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


_MESSAGE = ((b"S", b"a@example.org"), (b"R", b"b@example.net\0\0\0" + b"0"), (b"M", b""),
            (b"B", b"Subject: t\r\n\r\nhello\r\n"), (b"X", b""), (b"E", b""))


async def _send_message(ch):
    for rtype, data in _MESSAGE:
        await ch.send_record(rtype, data)
    return await ch.recv_attr(timeout=5)


async def _reserving(path):
    """A connection as smtpd's after one message: (channel, reserved queue ID)."""
    ch = await channel.connect(path, protocol=S.PROTOCOL, timeout=5)
    await ch.request({"request": "open", "id": 1, "origin": "smtpd", "reserve_next": True},
                     timeout=5)
    return ch, (await _send_message(ch))["next_queue_id"]


async def test_a_queue_id_is_reserved_for_the_connections_next_open(daemon_context, tmp_path):
    # smtpd asks for it (reserve_next); its next open names the reserved
    # queue ID and gets no answer: the next frame is the commit's answer.
    async with served(daemon_context, tmp_path) as (svc, qdir, path):
        svc.spares.want(3)
        await _spares(svc, 3)
        ch = await channel.connect(path, protocol=S.PROTOCOL, timeout=5)
        reply = await ch.request({"request": "open", "id": 1, "origin": "smtpd",
                                  "reserve_next": True}, timeout=5)
        answer = await _send_message(ch)
        assert answer["status"] == "ok" and answer["queue_id"] == reply["queue_id"]
        reserved = answer["next_queue_id"]
        # Taken from the spares: a not-ready file that no open can take.
        assert reserved in _incoming(qdir) and reserved not in await _spares(svc, 1)
        assert [q for q, _ in qfile.scan(qdir, "incoming")] == [reply["queue_id"]]
        await ch.send_attr({"request": "open", "id": 2, "origin": "smtpd", "reserve_next": True,
                            "queue_id": reserved})
        answer = await _send_message(ch)
        assert answer["id"] == 2 and answer["status"] == "ok" and answer["queue_id"] == reserved
        assert sorted(q for q, _ in qfile.scan(qdir, "incoming")) == sorted([reply["queue_id"],
                                                                              reserved])
        # The next reservation goes back to the spares with the connection.
        again = answer["next_queue_id"]
        await ch.close()
        for _ in range(200):
            if again in await _spares(svc, 1):
                break
            await asyncio.sleep(0.01)
        assert again in [w.queue_id for w, _ in svc.spares._files] and again in _incoming(qdir)
        svc.stop()


async def test_no_reservation_without_asking_and_a_wrong_one_closes_the_connection(daemon_context,
                                                                                     tmp_path):
    async with served(daemon_context, tmp_path) as (svc, qdir, path):
        svc.spares.want(2)
        await _spares(svc, 2)
        ch, q1 = await _open(path, 1)                  # pickup, bounce: no reserve_next
        answer = await _send_message(ch)
        assert answer["status"] == "ok" and "next_queue_id" not in answer
        # An open naming a queue ID this connection was not given.
        await ch.send_attr({"request": "open", "id": 2, "origin": "smtpd", "queue_id": q1})
        await ch.flush()
        with pytest.raises(channel.ChannelClosed):     # a protocol error
            await ch.recv(timeout=5)
        await ch.close()
        assert [q for q, _ in qfile.scan(qdir, "incoming")] == [q1]
        svc.stop()


async def test_a_plain_open_gives_an_unused_reservation_back(daemon_context, tmp_path):
    # smtpd leaves a reservation it kept too long unused and opens the
    # plain way: the reserved spare is not lost, it is the next one taken.
    async with served(daemon_context, tmp_path) as (svc, qdir, path):
        svc.spares.want(3)
        await _spares(svc, 3)
        ch, reserved = await _reserving(path)
        reply = await ch.request({"request": "open", "id": 2, "origin": "smtpd"}, timeout=5)
        assert reply["queue_id"] == reserved
        assert (await _send_message(ch))["queue_id"] == reserved
        await ch.close()
        svc.stop()


async def test_a_stop_says_bye_where_a_reserved_open_may_be_on_its_way(daemon_context, tmp_path):
    # An idle connection without a reservation is closed at once; one that
    # holds a reservation gets a "bye", and an open that crossed it (smtpd
    # does not wait for an answer, so it could not retry it elsewhere) is
    # still served before the connection is closed.
    async with served(daemon_context, tmp_path) as (svc, qdir, path):
        svc.spares.want(3)
        await _spares(svc, 3)
        plain, _ = await _open(path, 1)
        await _send_message(plain)
        ch, reserved = await _reserving(path)
        for _ in range(200):
            if len(svc.idle) == 2:
                break
            await asyncio.sleep(0.01)
        svc.stop()
        await ch.send_attr({"request": "open", "id": 2, "origin": "smtpd", "reserve_next": True,
                            "queue_id": reserved})
        assert (await ch.recv_attr(timeout=5)) == {"request": "bye"}
        answer = await _send_message(ch)
        assert answer["status"] == "ok" and answer["queue_id"] == reserved
        assert "next_queue_id" not in answer            # stopping: no new reservation
        with pytest.raises(channel.ChannelClosed):
            await ch.recv(timeout=5)
        with pytest.raises(channel.ChannelClosed):
            await plain.recv(timeout=5)
        assert reserved in [q for q, _ in qfile.scan(qdir, "incoming")]
        await ch.close()
        await plain.close()


def test_spares_reuse_recycled_inodes_only_where_the_file_system_wants_it(daemon_context, monkeypatch):
    """cleanup takes inodes from recycle/ where qmgr puts them there
    (fsinfo.scans_freed_inodes), and its fills then do reuse them."""
    from fulmar.queue import fsinfo
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    monkeypatch.setattr(fsinfo, "scans_freed_inodes", lambda path: False)
    svc = S.CleanupService(ctx)
    assert svc.spares.reuse is False
    svc.spares.close()
    svc.syncer.close()
    monkeypatch.setattr(fsinfo, "scans_freed_inodes", lambda path: True)
    svc = S.CleanupService(ctx)
    assert svc.spares.reuse is True
    spare = os.path.join(qdir, "recycle", "4jdMWK1Q4HzvvYY")
    with open(spare, "wb") as fh:
        fh.write(b"old")
    ino = os.stat(spare).st_ino
    svc.spares._fill(2)
    assert ino in {os.stat(w.path).st_ino for w, _ in svc.spares._files}
    assert os.listdir(os.path.join(qdir, "recycle")) == []
    svc.spares.close()
    svc.syncer.close()
