"""cleanup.service: the spare queue file.

After answering an `open`, cleanup creates the file for the next message
(off smtpd's RCPT reply path); the next `open` takes it. A spare older than
SPARE_MAX_AGE is replaced (its queue ID carries its creation time), and
stopping removes it.
"""
from __future__ import annotations

import asyncio
import os

from fulmar.ipc import channel
from cleanup import service as S


def _dot_files(qdir):
    return sorted(n for n in os.listdir(os.path.join(qdir, "incoming")) if n.startswith("."))


async def _open(path, n):
    ch = await channel.connect(path, protocol=S.PROTOCOL, timeout=5)
    reply = await ch.request({"request": "open", "id": n, "origin": "smtpd"}, timeout=5)
    assert reply["status"] == "ok"
    return ch, reply["queue_id"]


async def test_next_open_takes_the_spare_and_stop_removes_it(daemon_context, tmp_path):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        ch1, q1 = await _open(path, 1)
        await asyncio.sleep(0.01)                  # the spare is made after the reply
        assert svc.spare is not None
        spare_id = svc.spare[0].queue_id
        assert len(_dot_files(qdir)) == 2          # message 1's file and the spare
        ch2, q2 = await _open(path, 2)
        assert q2 == spare_id != q1
        # An old spare is not used: a fresh file (and queue ID) instead.
        await asyncio.sleep(0.01)
        old_id = svc.spare[0].queue_id
        svc.spare = (svc.spare[0], svc.spare[1] - S.SPARE_MAX_AGE - 1)
        ch3, q3 = await _open(path, 3)
        assert q3 != old_id
        for ch in (ch1, ch2, ch3):
            await ch.close()
        await asyncio.sleep(0.05)                  # the aborted messages' files go
        svc.stop()
        assert svc.spare is None and _dot_files(qdir) == []
    finally:
        server.close()
        svc.executor.shutdown()
