"""bounce.service: the bounce protocol, NOTIFY handling, never bouncing a bounce.

Most tests drive BounceService.dispatch() with a fake submit function and
real queue files in a temporary queue directory; the last ones run the
real channel code over Unix sockets in that directory (a fake cleanup
server, and a client talking to the bounce server).
"""

import asyncio
import email
import email.policy
import io
import os

import pytest

from bounce import logfile
from bounce.service import (
    BounceService, CleanupSubmitter, Settings, SubmitError, load_original)
from fulmar import log
from fulmar.ipc import channel
from fulmar.queue import layout, qfile, records
from fulmar.smtp import dsn

SETTINGS = Settings(
    myhostname="mail.example.com", myorigin="example.com", mail_name="Postfix",
    bounce_size_limit=50000, notice_2bounce_recipient="postmaster",
    double_bounce_sender="double-bounce", delay_warning_time=4 * 3600,
    maximal_queue_lifetime=5 * 86400, ipc_timeout=10.0)

CONTENT = b"From: alice@example.com\r\nSubject: lunch\r\n\r\nShall we?\r\n"
FAIL_REASON = ("host mx.example.net[192.0.2.7] said: 550 5.1.1 <bob@example.net>: "
               "User unknown (in reply to RCPT TO command)")


@pytest.fixture
def logs():
    buf = io.StringIO()
    log.setup(None, "bounce", stream=buf)
    yield buf
    log.cli_setup("fulmar")


@pytest.fixture
def queue_dir(tmp_path):
    q = str(tmp_path / "q")
    os.mkdir(q)
    layout.create(q)
    return q


def make_queue_file(queue_dir, sender="alice@example.com", ret=None, content=CONTENT):
    w = qfile.QueueWriter.create(queue_dir)
    w.set_arrival(1764400000.0)
    if ret:
        w.add_attr("dsn_ret", ret)
    w.add_attr("dsn_envid", "ENV-1")
    w.set_sender(sender)
    w.add_recipient(qfile.Recipient("bob@example.net", "bob@example.net", "rfc822;bob@example.net", 0))
    w.write_content(content)
    w.commit()
    return qfile.move(queue_dir, w.queue_id, "incoming", "active")


class FakeSubmit:
    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail
        self.n = 0

    async def __call__(self, sender, recipient, make_content):
        if self.fail:
            raise SubmitError("cleanup service unavailable: refused")
        self.n += 1
        new_id = "NEWQID%d" % self.n
        data = b"".join(make_content(new_id))
        self.calls.append((sender, recipient, data))
        return new_id


def service(queue_dir, submit, **kw):
    return BounceService(SETTINGS, queue_dir, submit, clock=lambda: 1764400500.0, **kw)


def append_req(qid, address="bob@example.net", log_name="bounce", status="bounced", dsn_code="5.1.1",
               reason=FAIL_REASON, **kw):
    return dict({"request": "append", "id": 1, "log": log_name, "queue_id": qid,
                 "address": address, "status": status, "dsn": dsn_code, "reason": reason}, **kw)


def notice_req(request, qid, sender="alice@example.com", **kw):
    return dict({"request": request, "id": 2, "queue_name": "active", "queue_id": qid,
                 "sender": sender}, **kw)


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.compat32)


def qid_of(path):
    return os.path.basename(path)


async def test_flush_sends_failure_notice_to_sender(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    assert await svc.dispatch(append_req(qid, orig_address="bob@example.net",
                                         dsn_orcpt="rfc822;bob@example.net", offset=77)) \
        == {"id": 1, "status": "ok"}
    entries = logfile.read(queue_dir, "bounce", qid)
    assert entries[0].mta_name == "mx.example.net" and entries[0].diag_type == "smtp"
    assert entries[0].action == "failed" and entries[0].offset == 77

    reply = await svc.dispatch(notice_req("flush", qid))
    assert reply == {"id": 2, "status": "ok", "dsn_queue_id": "NEWQID1"}
    sender, recipient, data = submit.calls[0]
    assert (sender, recipient) == ("", "alice@example.com")
    msg = parse(data)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Message-Id"] == "<NEWQID1@mail.example.com>"
    ds = msg.get_payload()[1].get_payload()
    assert ds[0]["X-Postfix-Queue-ID"] == qid
    assert ds[0]["Original-Envelope-Id"] == "ENV-1"
    assert ds[0]["Arrival-Date"]
    assert ds[1]["Final-Recipient"] == "rfc822; bob@example.net"
    assert ds[1]["Original-Recipient"] == "rfc822; bob@example.net"
    assert ds[1]["Remote-MTA"] == "dns; mx.example.net"
    assert ds[1]["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert msg.get_payload()[2].get_payload()[0]["Subject"] == "lunch"
    assert logfile.read(queue_dir, "bounce", qid) == []          # log removed
    assert "%s: sender non-delivery notification: NEWQID1" % qid in logs.getvalue()


async def test_ret_hdrs_from_queue_file(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir, ret="2"))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    await svc.dispatch(append_req(qid))
    await svc.dispatch(notice_req("flush", qid))
    part = parse(submit.calls[0][2]).get_payload()[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert "Shall we?" not in part.get_payload()


async def test_notify_never_and_success_only_send_no_failure_notice(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    await svc.dispatch(append_req(qid, dsn_notify=dsn.DSN_NOTIFY_NEVER))
    await svc.dispatch(append_req(qid, address="carol@example.net", dsn_notify=dsn.DSN_NOTIFY_SUCCESS))
    reply = await svc.dispatch(notice_req("flush", qid))
    assert reply == {"id": 2, "status": "ok", "dsn_queue_id": ""}
    assert submit.calls == []
    assert logfile.read(queue_dir, "bounce", qid) == []


async def test_only_recipients_whose_notify_allows_failure_are_reported(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    await svc.dispatch(append_req(qid, dsn_notify=dsn.DSN_NOTIFY_NEVER))
    await svc.dispatch(append_req(qid, address="carol@example.net", dsn_notify=dsn.DSN_NOTIFY_FAILURE))
    await svc.dispatch(append_req(qid, address="dave@example.net"))
    await svc.dispatch(notice_req("flush", qid))
    ds = parse(submit.calls[0][2]).get_payload()[1].get_payload()
    assert [g["Final-Recipient"] for g in ds[1:]] == ["rfc822; carol@example.net",
                                                       "rfc822; dave@example.net"]


async def test_null_sender_goes_to_2bounce_recipient(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir, sender=""))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    await svc.dispatch(append_req(qid, dsn_notify=dsn.DSN_NOTIFY_NEVER))
    reply = await svc.dispatch(notice_req("flush", qid, sender=""))
    assert reply["status"] == "ok" and reply["dsn_queue_id"] == "NEWQID1"
    sender, recipient, data = submit.calls[0]
    assert sender == "double-bounce@example.com"
    assert recipient == "postmaster@example.com"
    msg = parse(data)
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_payload()[2].get_content_type() == "message/rfc822"   # the whole original
    assert "%s: postmaster non-delivery notification: NEWQID1" % qid in logs.getvalue()


async def test_failed_double_bounce_is_dropped(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir, sender="double-bounce@example.com"))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    await svc.dispatch(append_req(qid))
    reply = await svc.dispatch(notice_req("flush", qid, sender="double-bounce@example.com"))
    assert reply == {"id": 2, "status": "ok", "dsn_queue_id": ""}
    assert submit.calls == []
    assert "warning: %s: undeliverable postmaster notification discarded" % qid in logs.getvalue()
    assert logfile.read(queue_dir, "bounce", qid) == []


async def test_cleanup_failure_keeps_the_log_for_a_retry(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir))
    svc = service(queue_dir, FakeSubmit(fail=True))
    await svc.dispatch(append_req(qid))
    reply = await svc.dispatch(notice_req("flush", qid))
    assert reply["status"] == "fail" and reply["id"] == 2 and reply["reason"].startswith("4.3.0")
    assert len(logfile.read(queue_dir, "bounce", qid)) == 1
    assert "warning: %s: sender non-delivery notification failed" % qid in logs.getvalue()


async def test_flush_of_expired_message_uses_defer_log(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    for reason in ("first try", "second try"):
        await svc.dispatch(append_req(qid, log_name="defer", status="deferred", dsn_code="4.4.1",
                                      reason="connect to mx[192.0.2.7]:25: " + reason, offset=5))
    await svc.dispatch(notice_req("flush", qid, log="defer"))
    msg = parse(submit.calls[0][2])
    ds = msg.get_payload()[1].get_payload()
    assert len(ds) == 2                                      # one group per recipient
    assert ds[1]["Action"] == "failed" and ds[1]["Status"] == "4.4.1"
    assert "second try" in ds[1]["Diagnostic-Code"] and ds[1]["Remote-MTA"] is None
    assert logfile.read(queue_dir, "defer", qid) == []


async def test_missing_original_still_reports(queue_dir, logs):
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    await svc.dispatch(append_req("4Xk2Lm1Qz7z9vRs"))
    reply = await svc.dispatch(notice_req("flush", "4Xk2Lm1Qz7z9vRs"))
    assert reply["dsn_queue_id"] == "NEWQID1"
    assert b"--- Undelivered message unavailable ---" in submit.calls[0][2]


async def test_flush_without_log_sends_nothing(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir))
    submit = FakeSubmit()
    reply = await service(queue_dir, submit).dispatch(notice_req("flush", qid))
    assert reply == {"id": 2, "status": "ok", "dsn_queue_id": ""} and submit.calls == []


async def test_delay_warning(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    await svc.dispatch(append_req(qid, log_name="defer", status="deferred", dsn_code="4.4.1",
                                  reason="connect to mx[192.0.2.7]:25: refused"))
    await svc.dispatch(append_req(qid, address="never@example.net", log_name="defer",
                                  status="deferred", dsn_code="4.4.1", reason="x",
                                  dsn_notify=dsn.DSN_NOTIFY_FAILURE))
    reply = await svc.dispatch(notice_req("warn", qid))
    assert reply["dsn_queue_id"] == "NEWQID1"
    msg = parse(submit.calls[0][2])
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    ds = msg.get_payload()[1].get_payload()
    assert len(ds) == 2 and ds[1]["Action"] == "delayed" and ds[1]["Will-Retry-Until"]
    assert len(logfile.read(queue_dir, "defer", qid)) == 2      # kept for mailq
    assert "%s: sender delay notification: NEWQID1" % qid in logs.getvalue()
    # No warning to the null sender.
    reply = await svc.dispatch(notice_req("warn", qid, sender=""))
    assert reply["dsn_queue_id"] == "" and len(submit.calls) == 1


async def test_success_notice_only_for_notify_success(queue_dir, logs):
    qid = qid_of(make_queue_file(queue_dir))
    submit = FakeSubmit()
    svc = service(queue_dir, submit)
    await svc.dispatch(append_req(qid, log_name="trace", status="sent", dsn_code="2.0.0",
                                  reason="250 2.0.0 Ok: queued as X", relay="mx.example.net[192.0.2.7]:25",
                                  action="relayed", dsn_notify=dsn.DSN_NOTIFY_SUCCESS))
    await svc.dispatch(append_req(qid, address="quiet@example.net", log_name="trace", status="sent",
                                  dsn_code="2.0.0", reason="delivered to mailbox"))
    reply = await svc.dispatch(notice_req("success", qid))
    assert reply["dsn_queue_id"] == "NEWQID1"
    msg = parse(submit.calls[0][2])
    assert msg["Subject"] == "Successful Mail Delivery Report"
    ds = msg.get_payload()[1].get_payload()
    assert len(ds) == 2
    assert ds[1]["Action"] == "relayed" and ds[1]["Remote-MTA"] == "dns; mx.example.net"
    assert "%s: sender delivery status notification: NEWQID1" % qid in logs.getvalue()
    assert logfile.read(queue_dir, "trace", qid) == []


async def test_batch_append_and_remove(queue_dir, logs):
    svc = service(queue_dir, FakeSubmit())
    qid = "4Xk2Lm1Qz7z9vRs"
    items = [{"address": a, "status": "deferred", "dsn": "4.4.1", "reason": "r"} for a in ("a@x", "b@x")]
    assert (await svc.dispatch({"request": "append", "id": 7, "log": "defer", "queue_id": qid,
                                "recipients": items}))["status"] == "ok"
    await svc.dispatch(append_req(qid))
    assert [e.address for e in logfile.read(queue_dir, "defer", qid)] == ["a@x", "b@x"]
    assert await svc.dispatch({"request": "remove", "id": 8, "queue_id": qid, "log": "defer"}) \
        == {"id": 8, "status": "ok"}
    assert logfile.read(queue_dir, "defer", qid) == []
    assert logfile.read(queue_dir, "bounce", qid) != []
    await svc.dispatch({"request": "remove", "id": 9, "queue_id": qid})
    assert logfile.read(queue_dir, "bounce", qid) == []


@pytest.mark.parametrize("bad", [
    {"request": "append", "id": 1, "log": "bounce", "queue_id": "Q", "address": "a", "status": "bounced",
     "dsn": "5.0.0"},                                                       # no reason
    {"request": "append", "id": 1, "log": "nope", "queue_id": "Q", "address": "a", "status": "bounced",
     "dsn": "5.0.0", "reason": "r"},
    {"request": "append", "id": 1, "log": "bounce", "queue_id": "../etc", "address": "a",
     "status": "bounced", "dsn": "5.0.0", "reason": "r"},
    {"request": "append", "id": 1, "log": "bounce", "queue_id": "Q", "address": "a", "status": "odd",
     "dsn": "5.0.0", "reason": "r"},
    {"request": "append", "id": 1, "log": "bounce", "queue_id": "Q", "address": "a", "status": "bounced",
     "dsn": "5.0.0", "reason": "r", "offset": "12"},
    {"request": "flush", "id": 1, "queue_name": "active", "queue_id": "Q"},     # no sender
    {"request": "flush", "id": 1, "queue_name": "/etc", "queue_id": "Q", "sender": ""},
    {"request": "flush", "id": 1, "queue_name": "active", "queue_id": "Q", "sender": "",
     "path": "../../etc/passwd"},
    {"request": "explode", "id": 1},
    {"request": "remove", "queue_id": "Q"},                                    # no id
])
async def test_malformed_requests_are_protocol_errors(queue_dir, bad):
    from bounce.service import ProtocolViolation
    with pytest.raises(ProtocolViolation):
        await service(queue_dir, FakeSubmit()).dispatch(bad)


def test_load_original(queue_dir):
    path = make_queue_file(queue_dir, ret="2")
    orig = load_original(path)
    assert orig.sender == "alice@example.com" and orig.arrival_time == 1764400000.0
    assert orig.ret == dsn.DSN_RET_HDRS and orig.envid == "ENV-1"
    assert orig.content_size == len(CONTENT)
    assert b"".join(orig.content()) == CONTENT
    assert load_original(path + "-gone") is None


# -- over real sockets ------------------------------------------------------------

class FakeCleanup:
    """A cleanup server that records what it is sent."""

    def __init__(self, status="ok"):
        self.status = status
        self.messages = []

    async def handle(self, ch):
        while True:
            try:
                frame = await ch.recv(timeout=5)
            except channel.ChannelClosed:
                return
            assert frame.attrs["request"] == "open" and frame.attrs["origin"] == "bounce"
            req_id = frame.attrs["id"]
            await ch.send_attr({"id": req_id, "status": "ok", "queue_id": "DSNQID%d" % len(self.messages)})
            recs = []
            while True:
                f = await ch.recv(timeout=5)
                recs.append((f.rtype, f.data))
                if f.rtype == records.REC_END:
                    break
            self.messages.append(recs)
            await ch.send_attr({"id": req_id, "status": self.status, "reason": "4.3.0 test",
                                "queue_id": "DSNQID%d" % (len(self.messages) - 1)})


async def test_cleanup_submitter_over_a_socket(tmp_path, logs):
    fake = FakeCleanup()
    path = str(tmp_path / "cleanup")
    server = await channel.serve(path, "cleanup", fake.handle)
    sub = CleanupSubmitter(path, 5.0)
    big = b"x" * (records.MAX_BLOCK + 10)
    try:
        assert await sub.submit("", "alice@example.com", lambda new_id: iter([b"A: " + new_id.encode(),
                                                                             b"\r\n\r\n", big])) == "DSNQID0"
        assert await sub.submit("", "bob@example.com", lambda new_id: iter([b"B\r\n"])) == "DSNQID1"
    finally:
        await sub.close()
        server.close()
        await server.wait_closed()
    recs = fake.messages[0]
    assert recs[0] == (records.REC_FROM, b"")
    assert recs[1] == (records.REC_RCPT, b"alice@example.com\0\0\0" + b"0")
    assert recs[2] == (records.REC_MESG, b"")
    blocks = [d for t, d in recs if t == records.REC_BLOCK]
    assert all(len(b) <= records.MAX_BLOCK for b in blocks)
    assert b"".join(blocks) == b"A: DSNQID0\r\n\r\n" + big
    assert [t for t, _ in recs[-2:]] == [records.REC_XTRA, records.REC_END]


async def test_cleanup_submitter_errors(tmp_path, logs):
    fake = FakeCleanup(status="tempfail")
    path = str(tmp_path / "cleanup")
    server = await channel.serve(path, "cleanup", fake.handle)
    sub = CleanupSubmitter(path, 5.0)
    try:
        with pytest.raises(SubmitError):
            await sub.submit("", "a@b", lambda new_id: iter([b"x\r\n"]))
    finally:
        await sub.close()
        server.close()
        await server.wait_closed()
    with pytest.raises(SubmitError):
        await CleanupSubmitter(str(tmp_path / "nobody"), 1.0).submit("", "a@b", lambda n: iter([]))


async def test_bounce_protocol_end_to_end(queue_dir, tmp_path, logs):
    fake = FakeCleanup()
    cleanup_path = str(tmp_path / "cleanup")
    bounce_path = str(tmp_path / "bounce")
    cleanup_server = await channel.serve(cleanup_path, "cleanup", fake.handle)
    sub = CleanupSubmitter(cleanup_path, 5.0)
    svc = service(queue_dir, sub.submit)
    bounce_server = await channel.serve(bounce_path, "bounce", svc.handle)
    qid = qid_of(make_queue_file(queue_dir))
    try:
        ch = await channel.connect(bounce_path, protocol="bounce", timeout=5)
        assert (await ch.request(append_req(qid)))["status"] == "ok"
        reply = await ch.request(notice_req("flush", qid))
        assert reply == {"id": 2, "status": "ok", "dsn_queue_id": "DSNQID0"}
        # A malformed request closes the connection.
        await ch.send_attr({"request": "flush", "id": 3})
        with pytest.raises(channel.ChannelError):
            await ch.recv(timeout=5)
        await ch.close()
    finally:
        await sub.close()
        for server in (bounce_server, cleanup_server):
            server.close()
            await server.wait_closed()
    body = b"".join(d for t, d in fake.messages[0] if t == records.REC_BLOCK)
    assert b"Message-Id: <DSNQID0@mail.example.com>\r\n" in body
    assert "warning: bounce: protocol error: missing attribute \"queue_id\"" in logs.getvalue()
