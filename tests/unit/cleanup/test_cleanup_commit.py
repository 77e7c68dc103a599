"""cleanup.service: where the commit (the fsync) runs.

The only message in a cleanup process is committed on the event loop: a
thread hand-off cost more than it saved on the serial path (0.1 ms to the
250, docs/performance.md).  With several messages in progress the file is
written on the loop and only its fsync goes to a worker thread
(cleanup/syncer.py), so that the fsyncs overlap and none waits behind
another.
"""
from __future__ import annotations

import asyncio
import gc
import os
import weakref

from fulmar.ipc import channel
from fulmar.queue import qfile
from cleanup import service as S
from cleanup_served import served


async def _open(path, n):
    ch = await channel.connect(path, protocol=S.PROTOCOL, timeout=5)
    reply = await ch.request({"request": "open", "id": n, "origin": "smtpd",
                              "client_address": "192.0.2.1"}, timeout=5)
    assert reply["status"] == "ok"
    for rtype, data in ((b"S", b"a@example.org"), (b"R", b"b@example.net\0\0\0" + b"0"),
                        (b"M", b""), (b"B", b"Subject: t\r\n\r\nhello\r\n"), (b"X", b"")):
        await ch.send_record(rtype, data)
    return ch, reply["queue_id"]


async def _commit(ch):
    await ch.send_record(b"E", b"")
    return await ch.recv_attr(timeout=5)


async def test_only_message_is_committed_without_a_thread(daemon_context, tmp_path, monkeypatch):
    async with served(daemon_context, tmp_path) as (svc, qdir, path):
        submitted = []
        monkeypatch.setattr(svc.syncer, "fsync", lambda fd: submitted.append(fd))
        ch, qid = await _open(path, 1)
        reply = await _commit(ch)
        assert reply["status"] == "ok" and reply["queue_id"] == qid
        assert submitted == []
        env = qfile.read_envelope(qfile.path_of(qdir, "incoming", qid))
        assert env.sender == "a@example.org"
        await ch.close()


async def test_a_committed_message_is_freed_without_the_garbage_collector(
        daemon_context, tmp_path, monkeypatch):
    # A reference cycle per message (the header processor held a method of
    # its Submission) left every message's objects to the collector: a
    # pause of about a millisecond every couple of hundred messages
    # (docs/performance.md, item 58).
    made = []

    class Tracked(S.Submission):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(S, "Submission", Tracked)
    gc.collect()
    gc.disable()
    try:
        async with served(daemon_context, tmp_path) as (svc, qdir, path):
            ch, qid = await _open(path, 1)
            assert (await _commit(ch))["status"] == "ok"
            await ch.close()
            # The connection's handler ends (and drops its last reference)
            # once it sees the close.
            for _ in range(200):
                if made[0]() is None:
                    break
                await asyncio.sleep(0.005)
        assert len(made) == 1
        assert made[0]() is None
    finally:
        gc.enable()


async def test_concurrent_messages_fsync_in_worker_threads(daemon_context, tmp_path, monkeypatch):
    async with served(daemon_context, tmp_path) as (svc, qdir, path):
        synced = []
        real_fsync = svc.syncer.fsync

        def counting_fsync(fd):
            # The file is complete and ready before its fsync is asked for.
            st = os.fstat(fd)
            synced.append((st.st_mode & 0o777, st.st_size))
            return real_fsync(fd)

        monkeypatch.setattr(svc.syncer, "fsync", counting_fsync)
        (ch1, q1), (ch2, q2) = await _open(path, 1), await _open(path, 2)
        assert (await _commit(ch1))["status"] == "ok"     # two in progress: a thread
        assert (await _commit(ch2))["status"] == "ok"     # the last one left: inline
        assert len(synced) == 1 and svc.syncer.threads == 1
        mode, size = synced[0]
        assert mode == 0o700
        assert size == os.path.getsize(qfile.path_of(qdir, "incoming", q1))
        for qid in (q1, q2):
            p = qfile.path_of(qdir, "incoming", qid)
            assert qfile.read_envelope(p).sender == "a@example.org"
            assert os.stat(p).st_mode & 0o777 == 0o700
        await ch1.close()
        await ch2.close()


async def test_a_failed_fsync_in_a_worker_is_a_4xx_and_takes_the_file_back(
        daemon_context, tmp_path, monkeypatch):
    # A descriptor whose fsync fails (EINVAL on a pipe), as a dying disk's would.
    pipe_r, pipe_w = os.pipe()
    try:
        async with served(daemon_context, tmp_path) as (svc, qdir, path):
            real_fsync = svc.syncer.fsync
            monkeypatch.setattr(svc.syncer, "fsync", lambda fd: real_fsync(pipe_r))
            (ch1, q1), (ch2, q2) = await _open(path, 1), await _open(path, 2)
            reply = await _commit(ch1)
            assert reply["status"] != "ok"
            assert reply["reason"].startswith("4")
            assert not os.path.exists(qfile.path_of(qdir, "incoming", q1))
            assert (await _commit(ch2))["status"] == "ok"     # inline, not the worker
            assert os.path.exists(qfile.path_of(qdir, "incoming", q2))
            await ch1.close()
            await ch2.close()
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
