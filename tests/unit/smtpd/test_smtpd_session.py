"""smtpd.session with a fake cleanup server on a real Unix socket (no network)."""

import asyncio
import socket

import pytest

from fulmar.ipc import channel
from fulmar.queue import qid as queue_ids
from smtpd.policy import Policy, PolicySettings
from smtpd.session import Service, Session
from smtpd_support import HOST, make_settings


class FakeCfg:
    values = {
        "smtpd_timeout": 5, "smtpd_error_sleep_time": 0, "smtpd_client_connection_count_limit": 2,
        "smtpd_client_port_logging": False, "ipc_timeout": 5,
        "smtpd_forbid_bare_newline_exclusions": [], "fast_flush_domains": [],
        "smtpd_peername_lookup": False, "queue_directory": "/nonexistent",
        "trigger_timeout": 5,
    }

    def __init__(self, **overrides):
        self.values = {**FakeCfg.values, **overrides}

    def get(self, name):
        return self.values[name]

    def raw(self, name):
        raise KeyError(name)


class FakeCleanup:
    def __init__(self, status="ok"):
        self.messages = []
        self.aborted = 0
        self.status = status
        self.n = 0
        self.gate = asyncio.Event()     # the open reply waits for it
        self.gate.set()
        self.open_status = []           # statuses for the next opens (then "ok")
        self.reserve = False            # commit answers name the next open's queue ID
        self.bye_first = False          # a "bye" crosses the next open (a stop)
        self.reserved = None
        self.opens = []                 # the open requests, as received

    async def handler(self, ch):
        while True:
            attrs = await ch.recv_attr()
            if attrs.get("request") == "abort":
                self.aborted += 1
                continue
            assert attrs["request"] == "open" and attrs["origin"] == "smtpd"
            self.opens.append(attrs)
            self.n += 1
            qid = f"QID{self.n}"
            if "queue_id" in attrs:
                # The reserved queue ID: cleanup does not answer this open.
                assert attrs["queue_id"] == self.reserved
                qid, self.reserved = self.reserved, None
            else:
                await self.gate.wait()
                if self.open_status:
                    await ch.send_attr({"id": attrs["id"], "status": self.open_status.pop(0)})
                    await ch.flush()
                    continue
                await ch.send_attr({"id": attrs["id"], "status": "ok", "queue_id": qid})
            records = []
            while True:
                frame = await ch.recv()
                if frame.kind == "A":
                    assert frame.attrs.get("request") == "abort"
                    self.aborted += 1
                    break
                records.append((frame.rtype, frame.data))
                if frame.rtype == b"E":
                    self.messages.append((attrs, records))
                    answer = {"id": attrs["id"], "status": self.status, "queue_id": qid}
                    if self.reserve and attrs.get("reserve_next"):
                        self.reserved = answer["next_queue_id"] = queue_ids.new_queue_id(4711 + self.n)
                    if self.bye_first:
                        await ch.send_attr({"request": "bye"})
                    await ch.send_attr(answer)
                    break


def _service(cfg, path, logs, etrn_restrictions=()):
    pol = Policy(PolicySettings(
        mynetworks=["127.0.0.0/8"], mydestination=[HOST], myorigin=HOST, relay_domains=[],
        virtual_alias_domains=[], virtual_mailbox_domains=[], parent_domain_matches_subdomains=[],
        client_restrictions=[], helo_restrictions=[], sender_restrictions=[],
        relay_restrictions=["permit_mynetworks", "reject_unauth_destination"],
        recipient_restrictions=[], data_restrictions=[],
        etrn_restrictions=list(etrn_restrictions)))
    return Service(cfg, path, log=lambda level, fmt, *a: logs.append((level, fmt % a)),
                   policy=pol, settings=make_settings())


@pytest.fixture
async def env(tmp_path):
    cleanup = FakeCleanup()
    path = str(tmp_path / "cleanup")
    server = await channel.serve(path, "cleanup", cleanup.handler)
    logs = []
    svc = _service(FakeCfg(), path, logs)
    yield svc, cleanup, logs
    server.close()
    await svc.pool.close()


async def connect(svc, addr="203.0.113.9"):
    a, b = socket.socketpair()
    loop = asyncio.get_running_loop()
    await loop.connect_accepted_socket(lambda: Session(svc, peer=(addr, 4711)), b)
    reader, writer = await asyncio.open_connection(sock=a)
    return reader, writer


async def greeted(svc, addr="203.0.113.9"):
    """A connection past the 220 and EHLO."""
    r, w = await connect(svc, addr)
    await reply(r)
    w.write(b"EHLO c\r\n")
    await reply(r)
    return r, w


async def reply(reader):
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        lines.append(line.decode().rstrip("\r\n"))
        if line[3:4] != b"-":
            return lines


async def accepted(r, w, data=False):
    """MAIL FROM and one accepted RCPT (and DATA), answered."""
    w.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@" + HOST.encode() + b">\r\n" + (b"DATA\r\n" if data else b""))
    assert (await reply(r)) == ["250 2.1.0 Ok"]
    assert (await reply(r)) == ["250 2.1.5 Ok"]
    if data:
        assert (await reply(r)) == ["354 End data with <CR><LF>.<CR><LF>"]


async def disconnected(logs):
    """Until the session's last line, "disconnect from ...", is logged."""
    for _ in range(250):
        if logs and logs[-1][1].startswith("disconnect"):
            return
        await asyncio.sleep(0.01)


async def test_message_is_streamed_to_cleanup(env):
    svc, cleanup, logs = env
    r, w = await connect(svc)
    assert (await reply(r)) == [f"220 {HOST} ESMTP Postfix"]
    w.write(b"EHLO client.test\r\n")
    await reply(r)
    w.write(b"MAIL FROM:<a@b.test> BODY=8BITMIME\r\nRCPT TO:<x@elsewhere.test>\r\n"
            b"RCPT TO:<u@" + HOST.encode() + b"> NOTIFY=FAILURE\r\nDATA\r\n")
    assert (await reply(r)) == ["250 2.1.0 Ok"]
    assert (await reply(r)) == ["554 5.7.1 <x@elsewhere.test>: Relay access denied"]
    assert (await reply(r)) == ["250 2.1.5 Ok"]
    assert (await reply(r)) == ["354 End data with <CR><LF>.<CR><LF>"]
    body = b"Subject: t\r\n\r\n" + b"line\r\n" * 30000 + b"..dot\r\n"
    w.write(body + b".\r\n")
    assert (await reply(r)) == ["250 2.0.0 Ok: queued as QID1"]
    w.write(b"QUIT\r\n")
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    assert await r.read() == b""
    w.close()
    await asyncio.sleep(0.05)
    attrs, records = cleanup.messages[0]
    assert attrs["client_address"] == "203.0.113.9" and attrs["helo_name"] == "client.test"
    assert attrs["protocol"] == "ESMTP" and attrs["body_type"] == "8BITMIME"
    types = [t for t, _ in records]
    assert types[:3] == [b"S", b"R", b"M"] and types[-2:] == [b"X", b"E"]
    assert records[0][1] == b"a@b.test"
    assert records[1][1] == f"u@{HOST}\0u@{HOST}\0\x008".encode()
    content = b"".join(d for t, d in records if t == b"B")
    assert content == b"Subject: t\r\n\r\n" + b"line\r\n" * 30000 + b".dot\r\n"
    assert all(len(d) <= 65536 for t, d in records if t == b"B")
    msgs = [m for _, m in logs]
    assert msgs[0] == "connect from unknown[203.0.113.9]"
    assert "QID1: client=unknown[203.0.113.9]" in msgs
    assert ("NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 554 5.7.1 <x@elsewhere.test>: "
            "Relay access denied; from=<a@b.test> to=<x@elsewhere.test> proto=ESMTP helo=<client.test>") in msgs
    assert msgs[-1] == ("disconnect from unknown[203.0.113.9] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 "
                        "commands=5/6")


async def test_queue_file_is_opened_at_the_first_accepted_recipient(env):
    # Nothing goes to cleanup at MAIL FROM or for a rejected recipient
    # (Postfix's smtpd_delay_open_until_valid_rcpt): a transaction without
    # an accepted recipient never reaches it, and logs NOQUEUE.
    svc, cleanup, logs = env
    r, w = await greeted(svc)
    w.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nRSET\r\n")
    assert (await reply(r)) == ["250 2.1.0 Ok"]
    assert (await reply(r))[0].startswith("554 5.7.1")
    assert (await reply(r)) == ["250 2.0.0 Ok"]
    await asyncio.sleep(0.05)
    assert cleanup.n == 0 and not svc.pool.has_idle
    w.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@" + HOST.encode() + b">\r\nQUIT\r\n")
    assert (await reply(r)) == ["250 2.1.0 Ok"]
    assert (await reply(r)) == ["250 2.1.5 Ok"]
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    w.close()
    for _ in range(250):
        if cleanup.aborted and logs and logs[-1][1].startswith("disconnect"):
            break
        await asyncio.sleep(0.01)
    assert cleanup.n == 1 and cleanup.aborted == 1 and cleanup.messages == []
    msgs = [m for _, m in logs]
    assert any(m.startswith("NOQUEUE: reject: RCPT from") for m in msgs)
    assert "QID1: client=unknown[203.0.113.9]" in msgs


async def test_rcpt_is_answered_before_the_open_completes(env):
    # The RCPT's 250 does not wait for cleanup's reply to the open it sent:
    # the records wait for it, and so does the queue ID's log line.
    svc, cleanup, logs = env
    cleanup.gate.clear()
    r, w = await greeted(svc)
    await accepted(r, w)
    assert not any("client=" in m for _, m in logs)
    cleanup.gate.set()
    w.write(b"RCPT TO:<x@elsewhere.test>\r\nDATA\r\n")
    assert (await reply(r))[0].startswith("554 5.7.1")
    assert (await reply(r)) == ["354 End data with <CR><LF>.<CR><LF>"]
    w.write(b"Subject: t\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert (await reply(r)) == ["250 2.0.0 Ok: queued as QID1"]
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    w.close()
    attrs, records = cleanup.messages[0]
    assert [t for t, _ in records] == [b"S", b"R", b"M", b"B", b"X", b"E"]
    msgs = [m for _, m in logs]
    client = msgs.index("QID1: client=unknown[203.0.113.9]")
    # The rejected recipient came after the open: its line has the queue ID.
    reject = [i for i, m in enumerate(msgs) if m.startswith("QID1: reject: RCPT from")]
    assert reject and client < reject[0]


async def _open_failure_known(svc):
    (session,) = svc.sessions
    for _ in range(250):
        if session.txn is not None and session.txn.failed is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the failed open never reached smtpd")


async def test_open_failing_after_an_accepted_rcpt_answers_data(env):
    # The open fails after the RCPT was answered and before DATA: DATA gets
    # the 451 the RCPT would have got, and the next transaction opens again.
    svc, cleanup, logs = env
    cleanup.gate.clear()
    cleanup.open_status = ["tempfail"]
    r, w = await greeted(svc)
    await accepted(r, w)
    cleanup.gate.set()
    await _open_failure_known(svc)
    w.write(b"DATA\r\n")
    assert (await reply(r)) == ["451 4.3.0 Error: queue file write error"]
    w.write(b"RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@" + HOST.encode() + b">\r\nDATA\r\n")
    assert (await reply(r)) == ["250 2.0.0 Ok"]
    assert (await reply(r)) == ["250 2.1.0 Ok"]
    assert (await reply(r)) == ["250 2.1.5 Ok"]
    assert (await reply(r)) == ["354 End data with <CR><LF>.<CR><LF>"]
    w.write(b"hi\r\n.\r\nQUIT\r\n")
    assert (await reply(r)) == ["250 2.0.0 Ok: queued as QID2"]
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    w.close()
    msgs = [m for level, m in logs if level == "warning"]
    assert any(m.startswith("unknown[203.0.113.9]: cleanup open: tempfail") for m in msgs)
    assert not any("QID1" in m for _, m in logs)
    assert len(cleanup.messages) == 1


async def test_data_is_answered_before_the_open_completes(env):
    # DATA's 354 does not wait for cleanup's reply to the open either: the
    # content waits in the backlog, and the records reach cleanup in order.
    svc, cleanup, logs = env
    cleanup.gate.clear()
    r, w = await greeted(svc)
    await accepted(r, w, data=True)
    assert not any("client=" in m for _, m in logs)     # the open is still pending
    w.write(b"Subject: t\r\n\r\nhi\r\n")
    await asyncio.sleep(0.05)
    cleanup.gate.set()
    w.write(b".\r\nQUIT\r\n")
    assert (await reply(r)) == ["250 2.0.0 Ok: queued as QID1"]
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    w.close()
    attrs, records = cleanup.messages[0]
    assert [t for t, _ in records] == [b"S", b"R", b"M", b"B", b"X", b"E"]
    assert b"".join(d for t, d in records if t == b"B") == b"Subject: t\r\n\r\nhi\r\n"
    assert "QID1: client=unknown[203.0.113.9]" in [m for _, m in logs]


async def test_open_failing_after_the_354_answers_the_end_of_data(env):
    # The open fails once the 354 is out: the content is dropped and the
    # end of the data gets the same 451, with the open's warning.
    svc, cleanup, logs = env
    cleanup.gate.clear()
    cleanup.open_status = ["tempfail"]
    r, w = await greeted(svc)
    await accepted(r, w, data=True)
    w.write(b"Subject: t\r\n\r\nhi\r\n")
    cleanup.gate.set()
    await _open_failure_known(svc)
    w.write(b".\r\nQUIT\r\n")
    assert (await reply(r)) == ["451 4.3.0 Error: queue file write error"]
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    w.close()
    await disconnected(logs)
    warnings = [m for level, m in logs if level == "warning"]
    assert any(m.startswith("unknown[203.0.113.9]: cleanup open: tempfail") for m in warnings)
    assert not any("QID1" in m for _, m in logs)
    assert cleanup.messages == []


async def test_the_connection_is_closed_before_the_disconnect_line(env):
    # After QUIT the client waits for the EOF: the socket is closed before
    # the "disconnect from" line is formatted and written.
    svc, cleanup, logs = env
    r, w = await greeted(svc)
    (session,) = svc.sessions
    lost = session.connection_lost
    session.connection_lost = lambda exc: (logs.append(("test", "closed")), lost(exc))
    w.write(b"QUIT\r\n")
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    assert (await r.read()) == b""
    await disconnected(logs)
    w.close()
    msgs = [m for _, m in logs]
    assert msgs[-2:] == ["closed", "disconnect from unknown[203.0.113.9] ehlo=1 quit=1 commands=2"]


async def test_the_fin_follows_the_221_without_waiting_for_close(env):
    # The transport's close() runs at the next loop turn; the client's EOF
    # after 221 does not wait for it (shutdown(SHUT_WR) at once).
    svc, cleanup, logs = env
    r, w = await greeted(svc)
    (session,) = svc.sessions
    transport = session.transport
    closes = []
    transport.close = lambda: closes.append(1)      # never closes: only the FIN can end it
    w.write(b"QUIT\r\n")
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    assert (await asyncio.wait_for(r.read(), 5)) == b""
    assert closes                                   # (it was asked to)
    del transport.close
    transport.close()
    w.close()


async def test_mail_from_is_answered_in_the_read_callback(env):
    # With the worker task idle and nothing queued, MAIL FROM needs no I/O:
    # its 250 is written before data_received() returns, not after the
    # worker's wake-up (docs/performance.md, item 22).
    svc, cleanup, logs = env
    r, w = await greeted(svc)
    (session,) = svc.sessions
    written = await written_in_read_callback(session, b"MAIL FROM:<a@b.test>\r\n")
    assert written == [b"250 2.1.0 Ok\r\n"]
    assert (await reply(r)) == ["250 2.1.0 Ok"]
    w.write(b"RCPT TO:<u@" + HOST.encode() + b">\r\nQUIT\r\n")
    assert (await reply(r)) == ["250 2.1.5 Ok"]
    assert (await reply(r)) == ["221 2.0.0 Bye"]
    w.close()


async def written_in_read_callback(session, data):
    """What data_received(data) writes itself, fed once the worker is idle."""
    for _ in range(250):
        if getattr(session, "_idle", True):
            break
        await asyncio.sleep(0.01)
    written = []
    write = session.transport.write
    session.transport.write = lambda out: (written.append(bytes(out)), write(out))
    session.data_received(data)
    return written


async def data_in_read_callback(svc):
    """A session past MAIL and RCPT, and what DATA's read callback wrote."""
    r, w = await greeted(svc)
    await accepted(r, w)
    (session,) = svc.sessions
    return r, w, await written_in_read_callback(session, b"DATA\r\n")


async def test_data_is_answered_in_the_read_callback(env):
    # As MAIL FROM: without smtpd_data_restrictions DATA needs no I/O, and
    # its 354 is written before data_received() returns; the M record
    # still reaches cleanup after the envelope and before the content.
    svc, cleanup, logs = env
    r, w, written = await data_in_read_callback(svc)
    assert written == [b"354 End data with <CR><LF>.<CR><LF>\r\n"]
    assert (await reply(r)) == ["354 End data with <CR><LF>.<CR><LF>"]
    w.write(b"Subject: t\r\n\r\nhi\r\n.\r\n")
    assert (await reply(r)) == ["250 2.0.0 Ok: queued as QID1"]
    [(_, records)] = cleanup.messages
    assert [t for t, _ in records] == [b"S", b"R", b"M", b"B", b"X", b"E"]
    w.close()


async def test_bdat_after_data_start_in_the_read_callback(env):
    # BDAT's chunk arrives with the command: the transaction's start is
    # handled in the read callback, the chunk by the worker, in order.
    svc, cleanup, logs = env
    r, w = await greeted(svc)
    await accepted(r, w)
    chunk = b"Subject: t\r\n\r\nhi\r\n"
    w.write(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert (await reply(r)) == ["250 2.0.0 Ok: queued as QID1"]
    [(_, records)] = cleanup.messages
    assert [t for t, _ in records] == [b"S", b"R", b"M", b"B", b"X", b"E"]
    assert b"".join(d for t, d in records if t == b"B").endswith(chunk)
    w.close()


async def test_data_restrictions_are_evaluated_by_the_worker(env):
    svc, cleanup, logs = env
    svc.policy.lists["data"] = [("reject", None)]
    r, w, written = await data_in_read_callback(svc)
    assert written == []                    # not in the read callback
    [rejected] = await reply(r)
    assert rejected.startswith("554 5.7.1 ")
    w.close()


async def test_cleanup_unavailable_gives_451(env, tmp_path):
    svc, cleanup, logs = env
    svc.pool.path = str(tmp_path / "nothing-here")
    r, w = await connect(svc, "127.0.0.1")
    await reply(r)
    w.write(b"EHLO c\r\n")
    await reply(r)
    w.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\n")
    assert (await reply(r)) == ["250 2.1.0 Ok"]
    assert (await reply(r)) == ["250 2.1.5 Ok"]     # (the open does not hold it up)
    await _open_failure_known(svc)
    w.write(b"DATA\r\n")
    assert (await reply(r)) == ["451 4.3.0 Error: queue file write error"]
    w.close()


async def test_diskfull_and_lost_connection(env):
    svc, cleanup, logs = env
    cleanup.status = "diskfull"
    r, w = await connect(svc, "127.0.0.1")
    await reply(r)
    w.write(b"EHLO c\r\n")
    await reply(r)
    w.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n")
    for _ in range(3):
        await reply(r)
    w.write(b"hi\r\n.\r\n")
    assert (await reply(r)) == ["452 4.3.1 Insufficient system storage"]
    w.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n")
    for _ in range(3):
        await reply(r)
    w.write(b"partial\r\n")
    await asyncio.sleep(0.05)
    w.close()
    for _ in range(50):
        if logs and logs[-1][1].startswith("disconnect"):
            break
        await asyncio.sleep(0.02)
    msgs = [m for _, m in logs]
    assert "lost connection after DATA (9 bytes) from unknown[127.0.0.1]" in msgs
    assert cleanup.aborted == 1


async def test_connection_count_limit(env):
    svc, cleanup, logs = env
    conns = [await connect(svc, "198.51.100.1") for _ in range(2)]
    for r, _ in conns:
        await reply(r)
    r, w = await connect(svc, "198.51.100.1")
    assert (await reply(r)) == ["421 4.7.0 Error: too many connections from 198.51.100.1"]
    for _, w2 in conns:
        w2.close()
    w.close()


async def test_timeout(env):
    svc, cleanup, logs = env
    svc.timeout = 0.05
    r, w = await connect(svc)
    await reply(r)
    assert (await reply(r)) == [f"421 4.4.2 {HOST} Error: timeout exceeded"]
    await asyncio.sleep(0.05)
    assert "timeout after CONNECT from unknown[203.0.113.9]" in [m for _, m in logs]
    w.close()


async def test_timeout_counts_from_the_last_command(env):
    # Every command moves the deadline (one timer that re-arms itself).
    svc, cleanup, logs = env
    svc.timeout = 0.2
    r, w = await connect(svc)
    await reply(r)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):                  # 0.5 s in all, never 0.2 s idle
        await asyncio.sleep(0.1)
        w.write(b"NOOP\r\n")
        assert (await reply(r)) == ["250 2.0.0 Ok"]
    assert (await reply(r)) == [f"421 4.4.2 {HOST} Error: timeout exceeded"]
    assert loop.time() - start >= 0.5 + 0.2 - 0.01
    w.close()


async def test_bare_newline_exclusion_settings_are_made_once(tmp_path):
    # Clients in smtpd_forbid_bare_newline_exclusions get forbid_bare_newline
    # = no: one Settings object for all of them, the shared one for others.
    cfg = FakeCfg()
    cfg.values = dict(FakeCfg.values, smtpd_forbid_bare_newline_exclusions=["192.0.2.0/24"])
    svc = Service(cfg, str(tmp_path / "cleanup"), log=lambda *a: None,
                  policy=Policy(PolicySettings(
                      mynetworks=[], mydestination=[HOST], myorigin=HOST, relay_domains=[],
                      virtual_alias_domains=[], virtual_mailbox_domains=[],
                      parent_domain_matches_subdomains=[], client_restrictions=[],
                      helo_restrictions=[], sender_restrictions=[],
                      relay_restrictions=["reject_unauth_destination"],
                      recipient_restrictions=[], data_restrictions=[])),
                  settings=make_settings())
    seen = []
    for addr in ("192.0.2.1", "192.0.2.2", "203.0.113.9"):
        s = Session(svc, peer=(addr, 25))
        transport = type("T", (), {"get_extra_info": lambda self, k: None, "write": lambda self, d: None,
                                   "close": lambda self: None, "is_closing": lambda self: False})()
        s.connection_made(transport)
        seen.append(s.proto.s)
        s._task.cancel()
        s._timer.cancel()
    assert seen[0] is seen[1] and seen[0].forbid_bare_newline == "no"
    assert seen[2] is svc.settings and seen[2].forbid_bare_newline == "normalize"
    await asyncio.sleep(0)


async def test_greeting_and_ehlo_need_no_loop_turn(env):
    # The 220 is written inside connection_made (the worker task starts
    # eagerly) and EHLO is recorded inside data_received, as MAIL FROM is:
    # neither waits for the worker task's wake-up (docs/performance.md).
    svc, cleanup, logs = env
    written = []
    transport = type("T", (), {"get_extra_info": lambda self, k: None,
                               "write": lambda self, d: written.append(bytes(d)),
                               "close": lambda self: None, "is_closing": lambda self: False})()
    s = Session(svc, peer=("203.0.113.9", 25))
    s.connection_made(transport)
    assert written == [f"220 {HOST} ESMTP Postfix\r\n".encode()]
    s.data_received(b"EHLO client.test\r\n")
    assert s.client.helo == "client.test" and s.client.protocol == "ESMTP"
    assert written[1].startswith(f"250-{HOST}\r\n".encode())
    s.data_received(b"HELO other.test\r\n")
    assert s.client.helo == "other.test" and s.client.protocol == "SMTP"
    s._task.cancel()
    s._timer.cancel()
    await asyncio.sleep(0)


async def test_the_next_open_on_a_channel_uses_the_reserved_queue_id_without_a_reply(env):
    # cleanup names, with a commit's answer, a queue ID kept for that
    # channel's next open; smtpd's next open names it and waits for no
    # answer (the fake sends none: waiting would end in a 451 after
    # ipc_timeout), logs it and reports it in the 250.
    svc, cleanup, logs = env
    cleanup.reserve = True
    r, w = await greeted(svc)
    for n in (1, 2):
        await accepted(r, w, data=True)
        if n == 2:
            # The reserved open waits in the channel for the records: it
            # reaches cleanup with them, one wake-up for the message.
            await asyncio.sleep(0.05)
            assert len(cleanup.opens) == 1
        w.write(b"Subject: t\r\n\r\nhi\r\n.\r\n")
        [queued] = await reply(r)
        assert queued.startswith("250 2.0.0 Ok: queued as ")
        if n == 1:
            assert queued.endswith(" QID1") and "queue_id" not in cleanup.opens[0]
            reserved = cleanup.reserved
            assert queue_ids.is_queue_id(reserved)
    assert queued.endswith(" " + reserved)
    assert cleanup.opens[1]["queue_id"] == reserved and cleanup.opens[1]["reserve_next"]
    assert len(cleanup.messages) == 2
    assert f"{reserved}: client=unknown[203.0.113.9]" in [m for _, m in logs]
    w.write(b"QUIT\r\n")
    await reply(r)
    w.close()
    await disconnected(logs)


async def test_a_bye_before_the_commit_reply_is_skipped(env):
    # A stopping cleanup says "bye" on an idle connection while smtpd's
    # reserved open is already on its way; it serves that message, and
    # smtpd takes the commit's reply after the bye.
    svc, cleanup, logs = env
    cleanup.bye_first = True
    r, w = await greeted(svc)
    await accepted(r, w, data=True)
    w.write(b"Subject: t\r\n\r\nhi\r\n.\r\n")
    assert (await reply(r)) == ["250 2.0.0 Ok: queued as QID1"]
    w.write(b"QUIT\r\n")
    await reply(r)
    w.close()
    await disconnected(logs)


@pytest.fixture
async def etrn(tmp_path):
    """A Service whose queue is tmp_path, fast flush for example.org, and
    trigger_timeout 0.2 s (ipc_timeout 30 s, far longer than reply()
    waits)."""
    (tmp_path / "public").mkdir()
    cfg = FakeCfg(queue_directory=str(tmp_path), fast_flush_domains=["example.org"],
                  trigger_timeout=0.2, ipc_timeout=30)
    logs = []
    svc = _service(cfg, str(tmp_path / "cleanup"), logs,
                   etrn_restrictions=["check_etrn_access", "inline:{{denied.example.org=REJECT}}"])
    svc.logs = logs
    yield svc, str(tmp_path / "public" / "qmgr")
    await svc.pool.close()


async def _etrn(svc, site):
    r, w = await greeted(svc)
    w.write(b"ETRN " + site.encode() + b"\r\n")
    answer = await reply(r)
    w.close()
    return answer


async def test_etrn_asks_qmgr_to_flush_the_site(etrn):
    svc, qmgr_path = etrn
    got = []

    async def qmgr(ch):
        got.append(await ch.recv_attr(timeout=5))
    server = await channel.serve(qmgr_path, "qmgr", qmgr)
    try:
        assert await _etrn(svc, "example.org") == ["250 Queuing started"]
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [{"request": "flush_site", "site": "example.org"}]
    finally:
        server.close()


# Postfix 3.7's texts, as its smtpd sends them (no enhanced status code
# even after EHLO) and logs them.

async def test_etrn_for_a_site_without_fast_flush_is_refused(etrn):
    svc, _ = etrn
    assert await _etrn(svc, "#example.net") == ["459 <example.net>: service unavailable"]
    assert ("warning", "reject: ETRN example.net... from unknown[203.0.113.9]") in svc.logs


async def test_etrn_without_qmgr_gives_458(etrn):
    svc, _ = etrn
    assert await _etrn(svc, "example.org") == ["458 Unable to queue messages"]
    assert ("warning", "unable to talk to fast flush service") in svc.logs


async def test_etrn_to_a_silent_qmgr_gives_458_after_trigger_timeout(etrn):
    """qmgr stopped with its socket open: the connection waits in the
    backlog without a hello.  The client gets its 458 after
    trigger_timeout (0.2 s), not after ipc_timeout (30 s: reply() gives
    up after 5)."""
    svc, qmgr_path = etrn
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(qmgr_path)
    listener.listen(8)
    try:
        assert await _etrn(svc, "example.org") == ["458 Unable to queue messages"]
    finally:
        listener.close()


async def test_etrn_restrictions_come_first(etrn):
    """smtpd_etrn_restrictions decide before fast_flush_domains (Postfix's
    order), and a reject is logged as Postfix's NOQUEUE line."""
    svc, _ = etrn          # check_etrn_access rejects denied.example.org
    assert await _etrn(svc, "denied.example.org") == [
        "554 5.7.1 <denied.example.org>: Etrn command rejected: Access denied"]
    assert ("info", "NOQUEUE: reject: ETRN from unknown[203.0.113.9]: 554 5.7.1 "
            "<denied.example.org>: Etrn command rejected: Access denied; proto=ESMTP helo=<c>") in svc.logs


async def test_end_of_data_restrictions_reject_before_the_message_is_queued(env):
    """smtpd_end_of_data_restrictions: the message is not committed (cleanup
    gets an abort), the client gets the reject, the session goes on."""
    svc, cleanup, logs = env
    svc.policy.lists["eod"] = [("reject", None)]
    r, w = await greeted(svc)
    await accepted(r, w, data=True)
    w.write(b"Subject: t\r\n\r\nbody\r\n.\r\n")
    assert (await reply(r)) == ["554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied"]
    svc.policy.lists["eod"] = []
    await accepted(r, w, data=True)
    w.write(b"Subject: t\r\n\r\nbody\r\n.\r\n")
    assert (await reply(r)) == ["250 2.0.0 Ok: queued as QID2"]
    w.close()
    await disconnected(logs)
    assert cleanup.aborted == 1 and len(cleanup.messages) == 1
    # As Postfix 3.7 logs it: to= names the only recipient.
    assert ("info", "QID1: reject: END-OF-MESSAGE from unknown[203.0.113.9]: 554 5.7.1 <END-OF-MESSAGE>: "
            f"End-of-data rejected: Access denied; from=<a@b.test> to=<u@{HOST}> proto=ESMTP helo=<c>") in logs


async def test_a_data_reject_names_the_recipient_when_it_is_the_only_one(env):
    """Postfix 3.7's DATA reject line: to=<...> with one recipient, none
    with two (checked against it)."""
    svc, cleanup, logs = env
    svc.policy.lists["data"] = [("reject", None)]
    r, w = await greeted(svc)
    await accepted(r, w)
    w.write(b"DATA\r\n")
    assert (await reply(r))[0].startswith("554 5.7.1 <DATA>: Data command rejected")
    w.write(b"RSET\r\n")
    await reply(r)
    await accepted(r, w)
    w.write(b"RCPT TO:<v@" + HOST.encode() + b">\r\nDATA\r\n")
    assert (await reply(r)) == ["250 2.1.5 Ok"]
    assert (await reply(r))[0].startswith("554 5.7.1 <DATA>: Data command rejected")
    w.close()
    await disconnected(logs)
    lines = [m for _, m in logs if ": reject: DATA from " in m]
    assert len(lines) == 2
    assert lines[0].endswith(f"Access denied; from=<a@b.test> to=<u@{HOST}> proto=ESMTP helo=<c>")
    assert lines[1].endswith("Access denied; from=<a@b.test> proto=ESMTP helo=<c>")
