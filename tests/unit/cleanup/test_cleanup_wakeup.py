"""cleanup.service: qmgr's wakeup goes out before smtpd's commit reply,
and for a message committed on the event loop before its fsync; and it
never waits for qmgr: without a connection the answer goes first.

The message's delivery waits for the wakeup, and qmgr's first steps then
overlap smtpd's 250 (docs/performance.md, item 18) and the disk's write
(item 50).  A stopped or busy qmgr accepts a connection and says nothing;
the client must not wait for it.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket

import pytest

from fulmar.ipc import channel, frames
from fulmar.queue import qfile
from cleanup import service as S


async def _fake_qmgr(ctx, got):
    """A qmgr socket at ctx's public/qmgr that keeps every wakeup's queue ID."""
    async def handle(ch):
        while (frame := await ch.recv(timeout=5)) is not None:
            got.append(frame.attrs.get("queue_id"))
    return await channel.serve(ctx.public_path("qmgr"), "qmgr", handle)


async def _eventually(predicate, timeout=1.0):
    """Until predicate() holds (the fake qmgr reads on the same loop)."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate()


async def _submit(path):
    ch = await channel.connect(path, protocol=S.PROTOCOL, timeout=5)
    qid = (await ch.request({"request": "open", "id": 1, "origin": "smtpd"}, timeout=5))["queue_id"]
    for rtype, data in ((b"S", b"a@example.org"), (b"R", b"b@example.net\0\0\0" + b"0"),
                        (b"M", b""), (b"B", b"Subject: t\r\n\r\nhello\r\n"), (b"X", b""),
                        (b"E", b"")):
        await ch.send_record(rtype, data)
    reply = await ch.recv_attr(timeout=5)
    await ch.close()
    return qid, reply


async def test_wakeup_is_sent_before_the_commit_reply(daemon_context, tmp_path, monkeypatch):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    order = []

    def wakeup_qmgr(queue_id):
        order.append(("wakeup", queue_id))
    svc.wakeup_qmgr = wakeup_qmgr
    write_out = channel.Channel._write_out

    def spy(self):
        order.extend(("write", bytes(b)) for b in self._wbuf)
        write_out(self)
    monkeypatch.setattr(channel.Channel, "_write_out", spy)
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        qid, reply = await _submit(path)
        assert reply["status"] == "ok"
        wakeup = order.index(("wakeup", qid))
        reply = max(i for i, (kind, data) in enumerate(order)
                    if kind == "write" and b'"status":"ok"' in data and b'"reason"' in data)
        assert wakeup < reply
        svc.stop()
    finally:
        server.close()
        svc.syncer.close()


async def test_a_serial_commit_wakes_qmgr_before_its_fsync(daemon_context, tmp_path, monkeypatch):
    """The file is complete and ready when qmgr is told (it may deliver it
    while the disk works); the reply still waits for the fsync; one wakeup
    per message."""
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    woken, order = [], []
    qmgr = await _fake_qmgr(ctx, woken)
    write_out = channel.Channel._write_out
    real_fsync = os.fsync

    def spy_write(self):
        order.extend(("write", bytes(b)) for b in self._wbuf)
        write_out(self)

    def spy_fsync(fd):
        order.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)
    monkeypatch.setattr(channel.Channel, "_write_out", spy_write)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        # The first message's wakeup goes out once a connection to qmgr is
        # made, after the answer; the second finds the connection and
        # wakes qmgr before its fsync.
        for n in (1, 2):
            del order[:]
            qid, reply = await _submit(path)
            assert reply["status"] == "ok"

            def wakeups():
                return [i for i, (kind, data) in enumerate(order)
                        if kind == "write" and b'"wakeup"' in data and qid.encode() in data]
            await _eventually(lambda: wakeups())
            wakeup = wakeups()
            ino = os.stat(qfile.path_of(qdir, "incoming", qid)).st_ino
            fsync = order.index(("fsync", ino))
            answer = [i for i, (kind, data) in enumerate(order)
                      if kind == "write" and b'"status":"ok"' in data and b'"reason"' in data]
            assert len(wakeup) == 1 and len(answer) == 1
            assert (wakeup[0] < fsync) == (n == 2)
            assert (wakeup[0] < answer[0]) == (n == 2)
            assert fsync < answer[0]
        await _eventually(lambda: len(woken) == 2)
        assert len(set(woken)) == 2
        svc.stop()
    finally:
        server.close()
        qmgr.close()
        svc.syncer.close()


async def test_an_fsync_that_fails_after_the_wakeup_is_a_tempfail(daemon_context, tmp_path,
                                                                   monkeypatch, capfd):
    """The client is told 451 (it will send the message again); cleanup
    warns that qmgr may deliver it anyway, and takes its file back if qmgr
    has not moved it."""
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    woken = []
    qmgr = await _fake_qmgr(ctx, woken)
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        assert (await _submit(path))[1]["status"] == "ok"     # connects to qmgr
        real_fsync = os.fsync

        def failing_fsync(fd):
            if os.readlink("/proc/self/fd/%d" % fd).startswith(os.path.join(qdir, "incoming", "")):
                raise OSError(errno.EIO, "Input/output error")
            real_fsync(fd)
        monkeypatch.setattr(os, "fsync", failing_fsync)
        qid, reply = await _submit(path)
        assert reply["status"] == "tempfail"
        assert reply["reason"].startswith("4.3.0")
        err = capfd.readouterr().err
        assert qid + ": qmgr had the file before the error: it may be delivered" in err
        assert not os.path.exists(os.path.join(qdir, "incoming", qid))
        await _eventually(lambda: qid in woken)
        svc.stop()
    finally:
        server.close()
        qmgr.close()
        svc.syncer.close()


async def test_a_wakeup_after_qmgr_went_away_reconnects(daemon_context, tmp_path):
    """qmgr restarted: the connection cleanup keeps is dead; the next
    message's wakeup is sent on a new one (after its commit)."""
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    woken, connections = [], []

    async def one_wakeup_per_connection(ch):
        connections.append(ch)
        frame = await ch.recv(timeout=5)
        if frame is not None:
            woken.append(frame.attrs.get("queue_id"))
    qmgr = await channel.serve(ctx.public_path("qmgr"), "qmgr", one_wakeup_per_connection)
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        first, reply = await _submit(path)
        assert reply["status"] == "ok"
        await _eventually(lambda: woken == [first] and svc.qmgr.closed)
        second, reply = await _submit(path)
        assert reply["status"] == "ok"
        await _eventually(lambda: woken == [first, second])
        assert len(connections) == 2
        svc.stop()
    finally:
        server.close()
        qmgr.close()
        svc.syncer.close()


class _SilentQmgr:
    """A qmgr socket nobody serves: connections wait in its backlog and get
    no hello (qmgr stopped, or busy) until speak() answers the first."""

    def __init__(self, path):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.conn = None
        self.decoder = frames.FrameDecoder()

    async def speak(self):
        """Accept the first waiting connection and send qmgr's hello."""
        self.conn, _ = self.listener.accept()
        self.conn.setblocking(False)
        await asyncio.get_running_loop().sock_sendall(
            self.conn, frames.encode_attr({"protocol": "qmgr", "version": 1}))

    async def wakeups(self, n):
        """The queue IDs of the next n wakeups on that connection."""
        woken = []
        async with asyncio.timeout(5):
            while len(woken) < n:
                data = await asyncio.get_running_loop().sock_recv(self.conn, 4096)
                assert data
                woken += [f.attrs["queue_id"] for f in self.decoder.feed(data)
                          if f.attrs.get("request") == "wakeup"]
        return woken

    def close(self):
        self.listener.close()
        if self.conn is not None:
            self.conn.close()


async def test_a_qmgr_that_says_nothing_delays_delivery_not_the_client(daemon_context, tmp_path):
    """Each commit is answered at once; cleanup makes one connection, and
    sends every waiting wakeup once qmgr speaks."""
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n"
                               "trigger_timeout = 60s\nipc_timeout = 60s\n")
    svc = S.CleanupService(ctx)
    qmgr = _SilentQmgr(ctx.public_path("qmgr"))
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        # _submit waits 5 s for the answer: far less than the 60 s a
        # connect to this qmgr could take.
        ids = []
        for _ in range(3):
            qid, reply = await _submit(path)
            assert reply["status"] == "ok"
            ids.append(qid)
        await qmgr.speak()
        with pytest.raises(BlockingIOError):
            qmgr.listener.accept()          # one connection, not one per message
        assert await qmgr.wakeups(3) == ids
        # The connection is kept: the next message's wakeup goes out on it.
        qid, reply = await _submit(path)
        assert reply["status"] == "ok"
        assert await qmgr.wakeups(1) == [qid]
        svc.stop()
    finally:
        server.close()
        qmgr.close()
        svc.syncer.close()


async def test_wakeups_beyond_the_bound_become_one_scan_request(daemon_context, tmp_path,
                                                                monkeypatch):
    """While the connection is being made at most UNSENT_MAX wakeups wait;
    the last of them then asks qmgr to scan incoming/ (queue_id "", which
    qmgr takes as a scan request), so none is lost and memory is bounded."""
    monkeypatch.setattr(S, "UNSENT_MAX", 2)
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    qmgr = _SilentQmgr(ctx.public_path("qmgr"))
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        ids = [(await _submit(path))[0] for _ in range(4)]
        assert svc.unsent == [ids[0], ""]
        await qmgr.speak()
        assert await qmgr.wakeups(2) == [ids[0], ""]
        assert svc.unsent == []
        svc.stop()
    finally:
        server.close()
        qmgr.close()
        svc.syncer.close()
