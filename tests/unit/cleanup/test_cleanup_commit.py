"""cleanup.service: where the commit (the fsync) runs.

The only message in a cleanup process is committed on the event loop: a
thread hand-off cost more than it saved on the serial path (0.1 ms to the
250, docs/performance.md).  With several messages in progress the commit
goes to the worker threads, so that their fsyncs overlap and none waits
behind another.
"""
from __future__ import annotations

import os

from fulmar.ipc import channel
from fulmar.queue import qfile
from cleanup import service as S


def _service(daemon_context):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    return S.CleanupService(ctx), qdir


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
    svc, qdir = _service(daemon_context)
    submitted = []
    monkeypatch.setattr(svc.executor, "submit", lambda fn: submitted.append(fn))
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        ch, qid = await _open(path, 1)
        reply = await _commit(ch)
        assert reply["status"] == "ok" and reply["queue_id"] == qid
        assert submitted == []
        env = qfile.read_envelope(qfile.path_of(qdir, "incoming", qid))
        assert env.sender == "a@example.org"
        await ch.close()
    finally:
        server.close()
        svc.executor.shutdown()


async def test_concurrent_messages_commit_in_worker_threads(daemon_context, tmp_path, monkeypatch):
    svc, qdir = _service(daemon_context)
    submitted = []
    real_submit = svc.executor.submit

    def counting_submit(fn):
        submitted.append(fn)
        return real_submit(fn)

    monkeypatch.setattr(svc.executor, "submit", counting_submit)
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        (ch1, q1), (ch2, q2) = await _open(path, 1), await _open(path, 2)
        assert (await _commit(ch1))["status"] == "ok"     # two in progress: a thread
        assert (await _commit(ch2))["status"] == "ok"     # the last one left: inline
        assert len(submitted) == 1
        for qid in (q1, q2):
            assert os.path.exists(qfile.path_of(qdir, "incoming", qid))
        await ch1.close()
        await ch2.close()
    finally:
        server.close()
        svc.executor.shutdown()
