"""smtpd.protocol driven with byte strings."""

import pytest
from hypothesis import given, settings, strategies as st

from fulmar.smtp.reply import Reply
from smtpd import protocol as P
from smtpd_support import HOST, Driver

TXN = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"


def session(**kw):
    d = Driver(**kw)
    d.replies()
    return d


def in_data(**kw):
    d = session(**kw)
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n")
    assert d.replies()[-1].startswith("354 ")
    return d


def test_greeting_and_ehlo_keywords_in_postfix_order():
    d = Driver()
    assert d.replies() == [f"220 {HOST} ESMTP Postfix"]
    d.send(b"EHLO client.test\r\n")
    assert d.replies() == [f"250-{HOST}", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY",
                           "250-ETRN", "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN",
                           "250-SMTPUTF8", "250 CHUNKING"]


def test_ehlo_reply_is_made_once_per_settings():
    # Every client of a service gets the same list: one Reply (and one
    # wire form) per settings and TLS state (test_smtpd_tls_auth checks
    # that the list still changes with TLS).
    settings = P.Settings(**vars(Driver().p.s))
    replies = []
    for _ in range(2):
        p = P.ServerProtocol(settings)
        p.start()
        p.receive_data(b"EHLO c\r\n")
        replies.append(p._ehlo_reply())
    assert replies[0] is replies[1]
    assert str(replies[0]).startswith(f"250-{HOST}\n250-PIPELINING")


def test_ehlo_discard_keywords_and_vrfy_disabled():
    d = session(discard_ehlo_keywords=frozenset({"DSN", "CHUNKING"}), disable_vrfy=True)
    d.send(b"EHLO c\r\n")
    r = d.replies()
    assert "250-DSN" not in r and "250 CHUNKING" not in r and "250-VRFY" not in r
    assert r[-1] == "250 SMTPUTF8"
    d.send(b"VRFY u\r\n")
    assert d.replies() == ["502 5.5.1 VRFY command is disabled"]


def test_helo():
    d = session()
    d.send(b"HELO c.test\r\n")
    assert d.replies() == [f"250 {HOST}"]
    d.send(b"HELO\r\n")
    assert d.replies() == ["501 Syntax: HELO hostname"]
    d.send(b"EHLO\r\n")
    assert d.replies() == ["501 Syntax: EHLO hostname"]


def test_full_transaction_and_stats():
    d = session()
    d.send(b"EHLO c.test\r\n")
    d.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert d.replies()[-3:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
    d.send(b"Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert d.replies() == ["250 2.0.0 Ok: queued as TESTQID", "221 2.0.0 Bye"]
    assert bytes(d.content) == b"Subject: t\r\n\r\nbody\r\n"
    assert d.p.command_stats() == "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
    assert d.p.closing


def test_failed_commands_are_counted_as_postfix():
    d = session(decide=lambda e: Reply(554, "5.7.1", "<x@y.test>: Relay access denied")
                if isinstance(e, P.RcptTo) else None)
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\n")
    d.send(b"RCPT TO:<x@y.test>\r\n")
    d.send(b"DATA\r\n")
    d.send(b"BOGUS\r\n")
    d.send(b"QUIT\r\n")
    r = d.replies()
    assert r[-5:] == ["250 2.1.0 Ok", "554 5.7.1 <x@y.test>: Relay access denied",
                      "554 5.5.1 Error: no valid recipients", "502 5.5.2 Error: command not recognized",
                      "221 2.0.0 Bye"]
    assert d.p.command_stats() == "ehlo=1 mail=1 rcpt=0/1 data=0/1 quit=1 unknown=0/1 commands=3/6"


@pytest.mark.parametrize("cmds,reply", [
    (b"RCPT TO:<x@y>\r\n", "503 5.5.1 Error: need MAIL command"),
    (b"DATA\r\n", "503 5.5.1 Error: need RCPT command"),
    (b"MAIL FROM:<a@b>\r\nDATA\r\n", "503 5.5.1 Error: need RCPT command"),
    (b"MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n", "503 5.5.1 Error: nested MAIL command"),
    (b"MAIL TO:<a@b>\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    (b"MAIL FROM:\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    (b"MAIL FROM:<a@b\r\n", "501 5.1.7 Bad sender address syntax"),
    (b"MAIL FROM:<a@b>\r\nRCPT TO:<>\r\n", "501 5.1.3 Bad recipient address syntax"),
    (b"MAIL FROM:<a@b>\r\nRCPT FOR:<x@y>\r\n", "501 5.5.4 Syntax: RCPT TO:<address>"),
    (b"MAIL FROM:<a@b> SIZE=99999999\r\n", "552 5.3.4 Message size exceeds fixed limit"),
    (b"MAIL FROM:<a@b> SIZE=x\r\n", "501 5.5.4 Bad message size syntax"),
    (b"MAIL FROM:<a@b> FOO=bar\r\n", "555 5.5.4 Unsupported option: FOO=bar"),
    (b"MAIL FROM:<a@b> BODY=BINARYMIME\r\n", "555 5.5.4 Unsupported option: BODY=BINARYMIME"),
    (b"MAIL FROM:<a@b> RET=X\r\n", "501 5.5.4 Bad RET parameter syntax"),
    (b"MAIL FROM:<a@b> ENVID=a+zz\r\n", "501 5.5.4 Bad ENVID parameter syntax"),
    (b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y> NOTIFY=NEVER,DELAY\r\n", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    (b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y> ORCPT=bogus\r\n", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    ("MAIL FROM:<j\u00f6@b>\r\n".encode(), "553 5.6.7 Must declare SMTPUTF8 to send unicode address"),
    (b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA x\r\n", "501 5.5.4 Syntax: DATA"),
    (b"RSET x\r\n", "501 5.5.4 Syntax: RSET"),
    (b"NOOP\r\n", "250 2.0.0 Ok"),
    (b"RSET\r\n", "250 2.0.0 Ok"),
    (b"VRFY\r\n", "501 5.5.4 Syntax: VRFY address"),
    (b"VRFY <u@d>\r\n", "252 2.0.0 <u@d>"),
    (b"HELP\r\n", "214 2.0.0 Ok"),
    (b"ETRN\r\n", "500 Syntax: ETRN domain"),
    (b"STARTTLS\r\n", "502 5.5.1 Error: command not implemented"),
    (b"AUTH PLAIN\r\n", "503 5.5.1 Error: authentication not enabled"),
    (b"XYZZY\r\n", "502 5.5.2 Error: command not recognized"),
    (b"\r\n", "500 5.5.2 Error: bad syntax"),
    (b"EHLO a\x00b\r\n", "500 5.5.2 Error: bad syntax"),
    (b"EHLO \xff\xfe\r\n", "500 5.5.2 Error: bad UTF-8 syntax"),
])
def test_command_replies(cmds, reply):
    d = session()
    d.send(b"EHLO c\r\n")
    d.replies()
    for line in cmds.split(b"\r\n")[:-1]:
        d.send(line + b"\r\n")
    assert d.replies()[-1] == reply


def test_mail_with_all_parameters():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x+2By SMTPUTF8\r\n")
    ev = d.of(P.MailFrom)[0]
    assert (ev.params.size, ev.params.body, ev.params.ret, ev.params.envid, ev.params.smtputf8) == \
        (100, "8BITMIME", "HDRS", "x+y", True)
    d.send(b"RCPT TO:<x@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2By@y\r\n")
    rc = d.of(P.RcptTo)[0]
    assert rc.params.notify == (1 << 1) | (1 << 3) and rc.params.orcpt == "rfc822;x+y@y"


def test_null_sender_and_unicode_with_smtputf8():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send("MAIL FROM:<> SMTPUTF8\r\nRCPT TO:<j\u00f6@b\u00fccher.test>\r\n".encode())
    assert d.replies()[-2:] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    assert d.of(P.MailFrom)[0].path.null


def test_helo_required():
    d = session(helo_required=True)
    d.send(b"MAIL FROM:<a@b>\r\n")
    assert d.replies() == ["503 5.5.1 Error: send HELO/EHLO first"]


def test_recipient_limit():
    d = session(recipient_limit=2)
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\n")
    assert d.replies()[-1] == "452 4.5.3 Error: too many recipients"


def test_pipelining_allowed_after_ehlo():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n")
    assert d.replies()[-4:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
                                "354 End data with <CR><LF>.<CR><LF>"]
    assert not d.of(P.ImproperPipelining)


@pytest.mark.parametrize("data", [
    b"EHLO c\r\nMAIL FROM:<a@b>\r\n",                       # EHLO must end a group
    b"HELO c\r\nMAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n",                 # no EHLO: nothing may be pipelined
])
def test_unauth_pipelining_disconnects(data):
    d = session()
    d.send(data)
    assert d.replies() == ["554 5.5.0 Error: SMTP protocol synchronization"]
    assert d.p.closing and d.of(P.ImproperPipelining)


def test_data_content_before_354_is_refused():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nSubject: smuggled\r\n.\r\n")
    assert d.replies()[-1] == "554 5.5.0 Error: SMTP protocol synchronization"
    assert d.p.closing and not d.content


def test_pipelining_check_can_be_disabled():
    d = session(forbid_unauth_pipelining=False)
    d.send(b"HELO c\r\nMAIL FROM:<a@b>\r\n")
    assert d.replies() == [f"250 {HOST}", "250 2.1.0 Ok"]


def test_input_before_greeting_is_refused():
    d = Driver(start=False)
    d.send(b"EHLO c\r\n")
    d.p.start()
    d._pump()
    assert d.replies() == ["554 5.5.0 Error: SMTP protocol synchronization"]
    assert d.p.closing


def test_too_many_errors_and_soft_limit_sleep():
    d = session(hard_error_limit=3, soft_error_limit=1)
    for _ in range(3):
        d.send(b"BOGUS\r\n")
    assert d.replies() == ["502 5.5.2 Error: command not recognized"] * 3 + \
        [f"421 4.7.0 {HOST} Error: too many errors"]
    assert len(d.of(P.ErrorSleep)) == 2
    assert d.of(P.TooManyErrors) and d.p.closing


def test_error_sleep_holds_the_reply_until_responded():
    p = P.ServerProtocol(__import__("smtpd_support").make_settings(soft_error_limit=0))
    p.start()
    p.data_to_send()
    p.receive_data(b"BOGUS\r\nNOOP\r\n")
    assert p.data_to_send() == b""
    assert isinstance(p.pending, P.ErrorSleep)
    p.respond(None)
    assert p.data_to_send() == b"502 5.5.2 Error: command not recognized\r\n250 2.0.0 Ok\r\n"


def test_junk_commands_count_as_errors_beyond_limit():
    d = session(junk_command_limit=2, hard_error_limit=2, soft_error_limit=100)
    d.send(b"NOOP\r\n")
    d.send(b"NOOP\r\n")
    d.send(b"NOOP\r\n")
    d.send(b"NOOP\r\n")
    assert d.replies()[-1] == f"421 4.7.0 {HOST} Error: too many errors"


def test_timeout():
    d = session()
    d.p.timeout()
    d._pump()
    assert d.replies() == [f"421 4.4.2 {HOST} Error: timeout exceeded"]
    assert d.p.closing


def test_command_line_too_long_never_becomes_a_command():
    d = session(line_length_limit=64)
    d.send(b"NOOP " + b"x" * 100)
    d.send(b"RSET\r\nNOOP\r\n")
    assert d.replies() == ["500 5.5.2 Error: line too long", "250 2.0.0 Ok"]
    d.send(b"NOOP " + b"y" * 100 + b"\r\nQUIT\r\n")
    assert d.replies()[0] == "500 5.5.2 Error: line too long"


def test_non_smtp_command_disconnects():
    d = session()
    d.send(b"GET / HTTP/1.0\r\n")
    assert d.replies() == ["221 2.7.0 Error: I can break rules, too. Goodbye."]
    assert d.p.closing


def test_rset_and_helo_reset_the_transaction():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRSET\r\n")
    d.send(b"MAIL FROM:<a@b>\r\n")
    assert d.replies()[-1] == "250 2.1.0 Ok"
    assert len(d.of(P.TransactionReset)) == 1


# ---------------------------------------------------------------- DATA

def test_dot_unstuffing_and_first_line():
    d = in_data()
    d.send(b"..first\r\n.second\r\n..\r\nlast\r\n.\r\n")
    assert bytes(d.content) == b".first\r\nsecond\r\n.\r\nlast\r\n"


def test_empty_message():
    d = in_data()
    d.send(b".\r\n")
    assert d.replies() == ["250 2.0.0 Ok: queued as TESTQID"]
    assert bytes(d.content) == b""


@pytest.mark.parametrize("smuggle", [
    b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r",
])
@pytest.mark.parametrize("mode", ["normalize", "no"])
def test_smuggling_forms_never_end_data(smuggle, mode):
    d = in_data(forbid_bare_newline=mode)
    d.send(b"Subject: one\r\n\r\nbody" + smuggle + b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n")
    assert d.replies() == []
    assert len(d.of(P.DataEnd)) == 0
    d.send(b"tail\r\n.\r\n")
    assert d.replies() == ["250 2.0.0 Ok: queued as TESTQID"]
    assert len(d.of(P.DataEnd)) == 1
    assert b"MAIL FROM:<evil@x>" in d.content
    assert not d.of(P.MailFrom)[1:]


def test_dot_after_overlong_line_is_content():
    d = in_data(line_length_limit=16)
    d.send(b"x" * 40)
    d.send(b".\r\nMAIL FROM:<evil@x>\r\n")
    assert not d.of(P.DataEnd)
    d.send(b".\r\n")
    assert d.of(P.DataEnd)
    assert bytes(d.content) == b"x" * 40 + b".\r\nMAIL FROM:<evil@x>\r\n"


def test_overlong_line_split_at_cr_keeps_crlf():
    d = in_data(line_length_limit=16)
    d.send(b"y" * 40 + b"\r")
    d.send(b"\n.\r\n")
    assert bytes(d.content) == b"y" * 40 + b"\r\n"
    assert d.of(P.DataEnd)


def test_bare_lf_normalized():
    d = in_data()
    d.send(b"a\nb\r\n.c\n\r\n.\r\n")
    assert bytes(d.content) == b"a\r\nb\r\nc\r\n\r\n"


def test_bare_lf_dot_lf_becomes_an_empty_line():
    d = in_data()
    d.send(b"a\n.\nb\r\n.\r\n")
    assert bytes(d.content) == b"a\r\n\r\nb\r\n"


def test_bare_cr_passes_through():
    d = in_data()
    d.send(b"a\r.\rb\r\n.\r\n")
    assert bytes(d.content) == b"a\r.\rb\r\n"


def test_bare_lf_reject_mode():
    d = in_data(forbid_bare_newline="reject")
    d.send(b"a\nb\r\n.\r\nNOOP\r\n")
    assert d.replies() == [f"550 5.5.2 {HOST} Error: bare <LF> received", "250 2.0.0 Ok"]
    assert d.of(P.DataEnd)[0].error is not None
    assert not d.p.closing


def test_bare_lf_reject_521_disconnects():
    d = session(forbid_bare_newline="reject", bare_newline_reject_code=521)
    d.send(b"EHLO c\n")
    assert d.replies() == [f"521 5.5.2 {HOST} Error: bare <LF> received"]
    assert d.p.closing


def test_bare_lf_in_commands_normalized():
    d = session()
    d.send(b"EHLO c\n")
    assert d.replies()[0] == f"250-{HOST}"


def test_size_limit_during_data():
    d = in_data(message_size_limit=10)
    d.send(b"0123456789abcdef\r\nmore\r\n.\r\nNOOP\r\n")
    assert d.replies() == ["552 5.3.4 Message size exceeds fixed limit", "250 2.0.0 Ok"]
    assert d.of(P.DataEnd)[0].error.code == 552


def test_data_rejected_at_start():
    d = session(decide=lambda e: Reply(554, "5.7.1", "<DATA>: Data command rejected: no")
                if isinstance(e, P.DataStart) else None)
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n")
    assert d.replies()[-1] == "554 5.7.1 <DATA>: Data command rejected: no"


def _feed_in_pieces(stream: bytes, cuts: list[int], **kw):
    d = in_data(**kw)
    prev = 0
    for c in sorted(set(cuts)):
        d.send(stream[prev:c])
        prev = c
    d.send(stream[prev:])
    return d


STREAM = (b"Subject: x\r\n\r\n..dot\r\n.\n\nbare\nlf\r\n" + b"L" * 50 + b"\r\n.x\r\n"
          b"\r.\r\nend\r\n.\r\nNOOP\r\n")


def test_every_split_position_gives_identical_output():
    whole = _feed_in_pieces(STREAM, [], line_length_limit=16)
    whole_replies = whole.replies()
    assert whole_replies == ["250 2.0.0 Ok: queued as TESTQID", "250 2.0.0 Ok"]
    for i in range(len(STREAM) + 1):
        d = _feed_in_pieces(STREAM, [i], line_length_limit=16)
        assert bytes(d.content) == bytes(whole.content), i
        assert d.replies() == whole_replies
    whole = _feed_in_pieces(STREAM, [], line_length_limit=16)
    assert bytes(whole.content) == (b"Subject: x\r\n\r\n.dot\r\n\r\n\r\nbare\r\nlf\r\n" + b"L" * 50
                                    + b"\r\nx\r\n\r.\r\nend\r\n")


@settings(max_examples=300, deadline=None)
@given(body=st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"x" * 20, b"\r\n.\r"]),
                     max_size=30).map(b"".join),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_chunk_boundaries_never_change_the_result(body, cuts):
    stream = body + b"\r\n.\r\nNOOP\r\n"
    one = _feed_in_pieces(stream, [], line_length_limit=16)
    many = _feed_in_pieces(stream, [c for c in cuts if c <= len(stream)], line_length_limit=16)
    assert bytes(many.content) == bytes(one.content)
    assert len(many.of(P.DataEnd)) == len(one.of(P.DataEnd))
    assert many.replies() == one.replies()
    # The first message is what a slow line-by-line reading gives.
    first = many.of(P.DataEnd)[0]
    assert first.size == len(reference_content(stream))
    if len(many.of(P.DataEnd)) == 1:
        assert bytes(many.content) == reference_content(stream)


def reference_content(stream: bytes) -> bytes:
    """Line-by-line model: only CRLF.CRLF ends, LF ends lines, leading dot removed."""
    s = b"\r\n" + stream
    end = s.find(b"\r\n.\r\n")
    body = s[2:end + 2]
    out = []
    for line in body.split(b"\n")[:-1]:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"."):
            line = line[1:]
        out.append(line + b"\r\n")
    return b"".join(out)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_input_never_raises(data):
    d = session(line_length_limit=32)
    d.send(data)
    d.send(TXN)
    d.send(data)
    d.send(b"\r\n.\r\n")
    for line in d.replies():
        assert line[:3].isdigit()


# ---------------------------------------------------------------- BDAT

def test_bdat_chunks():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n")
    d.send(b"BDAT 4\r\nab\r\nBDAT 7 LAST\r\n.cd\r\n\r\n")
    assert d.replies()[-2:] == ["250 2.0.0 Ok: 4 bytes", "250 2.0.0 Ok: queued as TESTQID"]
    assert bytes(d.content) == b"ab\r\n.cd\r\n\r\n"
    assert d.p.command_stats().startswith("ehlo=1 mail=1 rcpt=1 bdat=2")


def test_bdat_zero_last_and_null_bdat():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 3\r\nabcBDAT 0\r\nBDAT 0 LAST\r\n")
    assert d.replies()[-3:] == ["250 2.0.0 Ok: 3 bytes", "551 5.7.1 Null BDAT request",
                                "250 2.0.0 Ok: queued as TESTQID"]


def test_bdat_without_transaction_skips_the_chunk():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
    assert d.replies()[-2:] == ["503 5.5.1 Error: need RCPT command", "250 2.0.0 Ok"]


def test_bdat_syntax_error_disconnects():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"BDAT x\r\n")
    assert d.replies()[-1] == "521 5.5.4 Syntax: BDAT count [LAST]"
    assert d.p.closing


def test_bdat_crlf_split_between_chunks_is_not_bare():
    d = session(forbid_bare_newline="reject")
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 2\r\na\rBDAT 2 LAST\r\n\nb")
    assert d.replies()[-1] == "250 2.0.0 Ok: queued as TESTQID"
    assert bytes(d.content) == b"a\r\nb"


def test_bdat_bare_lf_normalized():
    d = session()
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 4 LAST\r\na\nb\n")
    assert bytes(d.content) == b"a\r\nb\r\n"


def test_data_after_bdat_and_chunk_too_big():
    d = session(message_size_limit=4)
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 2\r\nab")
    d.send(b"DATA\r\n")
    d.send(b"BDAT 5 LAST\r\n12345")
    assert d.replies()[-3:] == ["250 2.0.0 Ok: 2 bytes", "503 5.5.1 Error: DATA after BDAT",
                                "552 5.3.4 Chunk exceeds message size limit"]
    assert d.of(P.TransactionReset)


def test_reset_after_tls_discards_buffered_plaintext():
    d = session()
    d.send(b"EHLO c\r\n")
    d.p.receive_data(b"")
    d.p._buf += b"MAIL FROM:<injected@x>\r\n"
    d.p.reset_after_tls()
    d.send(b"")
    assert not d.of(P.MailFrom) and d.p.helo_name is None
