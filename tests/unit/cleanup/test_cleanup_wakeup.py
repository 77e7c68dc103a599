"""cleanup.service: qmgr's wakeup goes out before smtpd's commit reply.

The message's delivery waits for the wakeup, and qmgr's first steps then
overlap smtpd's 250 (docs/performance.md, item 18).
"""
from __future__ import annotations

from fulmar.ipc import channel
from cleanup import service as S


async def test_wakeup_is_sent_before_the_commit_reply(daemon_context, tmp_path, monkeypatch):
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    order = []

    async def wakeup_qmgr(queue_id):
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
        ch = await channel.connect(path, protocol=S.PROTOCOL, timeout=5)
        qid = (await ch.request({"request": "open", "id": 1, "origin": "smtpd"}, timeout=5))["queue_id"]
        for rtype, data in ((b"S", b"a@example.org"), (b"R", b"b@example.net\0\0\0" + b"0"),
                            (b"M", b""), (b"B", b"Subject: t\r\n\r\nhello\r\n"), (b"X", b""),
                            (b"E", b"")):
            await ch.send_record(rtype, data)
        assert (await ch.recv_attr(timeout=5))["status"] == "ok"
        wakeup = order.index(("wakeup", qid))
        reply = max(i for i, (kind, data) in enumerate(order)
                    if kind == "write" and b'"status":"ok"' in data and b'"reason"' in data)
        assert wakeup < reply
        await ch.close()
        svc.stop()
    finally:
        server.close()
        svc.executor.shutdown()
