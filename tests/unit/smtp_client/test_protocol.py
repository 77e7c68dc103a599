"""smtp_client.protocol against scripted server replies (no sockets)."""

from hypothesis import given, strategies as st

from smtp_client import protocol as P

PEER = "mx.example.org[192.0.2.7]"
EHLO_FULL = (b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
             b"250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n"
             b"250 AUTH PLAIN LOGIN\r\n")
EHLO_PLAIN = b"250-mx.example.org\r\n250 8BITMIME\r\n"


def kinds(evs):
    return [type(e).__name__ for e in evs]


def ready_client(ehlo=EHLO_FULL, **kw):
    c = P.Client(peer=PEER, helo_name="me.example.com", myhostname="me.example.com", **kw)
    assert c.receive(b"220 mx.example.org ESMTP\r\n") == []
    assert c.pull() == b"EHLO me.example.com\r\n"
    evs = c.receive(ehlo)
    assert kinds(evs) == ["Ready"]
    return c


def msg(*rcpts, **kw):
    return P.Message(sender="s@example.com", recipients=[P.Rcpt(r) for r in rcpts], size=kw.pop("size", 100), **kw)


def test_capabilities():
    c = ready_client()
    caps = c.caps
    assert caps.pipelining and caps.size == 1000 and caps.eightbitmime and caps.smtputf8
    assert caps.dsn and caps.chunking and caps.enhancedstatuscodes and caps.auth == ["PLAIN", "LOGIN"]
    assert not caps.starttls


def test_ehlo_refused_falls_back_to_helo():
    c = P.Client(peer=PEER, helo_name="me", myhostname="me")
    c.receive(b"220 hi\r\n")
    c.pull()
    assert c.receive(b"502 5.5.2 Error: command not recognized\r\n") == []
    assert c.pull() == b"HELO me\r\n"
    assert kinds(c.receive(b"250 mx\r\n")) == ["Ready"]
    assert not c.caps.esmtp and not c.caps.pipelining
    c.begin(msg("a@x"))
    assert c.pull() == b"MAIL FROM:<s@example.com>\r\n"


def test_ehlo_421_is_session_failure():
    c = P.Client(peer=PEER, helo_name="me")
    c.receive(b"220 hi\r\n")
    evs = c.receive(b"421 4.3.2 shutting down\r\n")
    assert kinds(evs) == ["SessionFailed"]
    f = evs[0].failure
    assert f.dsn == "4.3.2" and f.temporary
    assert f.reason == f"host {PEER} said: 421 4.3.2 shutting down (in reply to EHLO command)"


def test_greeting_refused():
    c = P.Client(peer=PEER, helo_name="me")
    evs = c.receive(b"554-5.7.1 go away\r\n554 5.7.1 really\r\n")
    f = evs[0].failure
    assert f.reason == f"host {PEER} refused to talk to me: 554-5.7.1 go away 554 5.7.1 really"
    assert f.status == "bounced" and f.stage == "greeting"


def test_greeted_with_own_hostname():
    c = P.Client(peer=PEER, helo_name="me.example.com", myhostname="me.example.com")
    evs = c.receive(b"220 ME.example.com ESMTP\r\n")
    assert evs[0].failure.dsn == "5.4.6"
    assert "greeted me with my own hostname" in evs[0].failure.reason


def test_pipelined_group_and_mixed_results():
    c = ready_client()
    c.begin(msg("a@x", "b@x", "c@x"))
    assert c.pull() == (b"MAIL FROM:<s@example.com> SIZE=100\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\n"
                        b"RCPT TO:<c@x>\r\nDATA\r\n")
    evs = c.receive(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <b@x>: Recipient address rejected\r\n"
                    b"450 4.2.0 <c@x>: greylisted\r\n354 go\r\n")
    assert kinds(evs) == ["SendContent"]
    assert c.waiting_for == "content"
    enc = P.ContentEncoder()
    c.content_end(enc.encode(b"Subject: x\r\n\r\nhi\r\n") + enc.finish())
    assert c.pull() == b"Subject: x\r\n\r\nhi\r\n.\r\n"
    evs = c.receive(b"250 2.0.0 Ok: queued as ABC\r\n")
    assert kinds(evs) == ["TransactionDone", "Ready"]
    r = evs[0].results
    assert (r[0].status, r[0].dsn, r[0].reason) == ("sent", "2.0.0", "250 2.0.0 Ok: queued as ABC")
    assert r[1].status == "bounced" and r[1].dsn == "5.1.1"
    assert r[1].reason == (f"host {PEER} said: 550 5.1.1 <b@x>: Recipient address rejected "
                           "(in reply to RCPT TO command)")
    assert r[2].status == "deferred" and r[2].dsn == "4.2.0"


def test_unpipelined_one_command_at_a_time():
    c = ready_client(EHLO_PLAIN)
    c.begin(msg("a@x", "b@x"))
    assert c.pull() == b"MAIL FROM:<s@example.com>\r\n"
    c.receive(b"250 ok\r\n")
    assert c.pull() == b"RCPT TO:<a@x>\r\n"
    c.receive(b"550 no\r\n")
    assert c.pull() == b"RCPT TO:<b@x>\r\n"
    c.receive(b"250 ok\r\n")
    assert c.pull() == b"DATA\r\n"
    assert kinds(c.receive(b"354 go\r\n")) == ["SendContent"]
    c.content_end(b".\r\n")
    evs = c.receive(b"250 ok\r\n")
    r = evs[0].results
    assert r[0].status == "bounced" and r[0].dsn == "5.0.0"     # class.0.0 without enhanced code
    assert r[1].status == "sent" and r[1].dsn == "2.0.0"


def test_all_recipients_rejected_sends_rset():
    c = ready_client(EHLO_PLAIN)
    c.begin(msg("a@x"))
    c.pull()
    c.receive(b"250 ok\r\n")
    c.pull()
    evs = c.receive(b"550 5.1.1 no\r\n")
    assert kinds(evs) == ["TransactionDone"]
    assert c.pull() == b"RSET\r\n"
    assert kinds(c.receive(b"250 ok\r\n")) == ["Ready"]


def test_mail_rejected_pipelined():
    c = ready_client()
    c.begin(msg("a@x", "b@x"))
    c.pull()
    evs = c.receive(b"451 4.3.0 try later\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"
                    b"554 5.5.1 no valid recipients\r\n")
    assert kinds(evs) == ["TransactionDone", "Ready"]
    done = evs[0]
    assert done.mail_failed.dsn == "4.3.0"
    assert all(r.status == "deferred" and "(in reply to MAIL FROM command)" in r.reason for r in done.results)


def test_dsn_and_size_parameters():
    c = ready_client()
    m = P.Message(sender="s@example.com",
                  recipients=[P.Rcpt("a@x", "orig+1@x", "", P.NOTIFY_SUCCESS | P.NOTIFY_FAILURE),
                              P.Rcpt("b@x", "", "rfc822;B=b@x", P.NOTIFY_NEVER)],
                  size=42, body_8bit=True, smtputf8=0, dsn_ret="HDRS", dsn_envid="id 1")
    c.begin(m)
    out = c.pull().split(b"\r\n")
    assert out[0] == b"MAIL FROM:<s@example.com> SIZE=42 BODY=8BITMIME RET=HDRS ENVID=id+201"
    assert out[1] == b"RCPT TO:<a@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2B1@x"
    assert out[2] == b"RCPT TO:<b@x> NOTIFY=NEVER ORCPT=rfc822;B+3Db@x"


def test_no_dsn_params_without_dsn_peer():
    c = ready_client(EHLO_PLAIN)
    c.begin(P.Message("s@x", [P.Rcpt("a@x", "o@x", "", P.NOTIFY_NEVER)], size=5, dsn_ret="FULL", dsn_envid="e"))
    assert c.pull() == b"MAIL FROM:<s@x>\r\n"


def test_size_limit_bounces_everything():
    c = ready_client()
    evs = c.begin(msg("a@x", "b@x", size=5000))
    assert kinds(evs) == ["TransactionDone", "Ready"]
    assert c.pull() == b""
    r = evs[0].results
    assert r[0].status == "bounced" and r[0].dsn == "5.3.4"
    assert r[0].reason == f"message size 5000 exceeds size limit 1000 of server {PEER}"


def test_smtputf8_refused():
    c = ready_client(EHLO_PLAIN)
    evs = c.begin(P.Message("s@x", [P.Rcpt("jösé@x")], size=1, smtputf8=P.SMTPUTF8_REQUESTED))
    assert evs[0].results[0].dsn == "5.6.7"
    assert evs[0].results[0].reason == f"SMTPUTF8 is required, but was not offered by host {PEER}"
    # All-ASCII mail that merely asked for SMTPUTF8 goes out without it.
    evs = c.begin(P.Message("s@x", [P.Rcpt("a@x")], size=1, smtputf8=P.SMTPUTF8_REQUESTED))
    assert c.pull() == b"MAIL FROM:<s@x>\r\n"


def test_smtputf8_passed_on():
    c = ready_client()
    c.begin(P.Message("s@x", [P.Rcpt("jösé@x")], size=1, smtputf8=P.SMTPUTF8_REQUESTED))
    assert c.pull().startswith("MAIL FROM:<s@x> SIZE=1 SMTPUTF8\r\nRCPT TO:<jösé@x>".encode())


def test_lost_connection_defers_undecided():
    c = ready_client()
    c.begin(msg("a@x", "b@x"))
    c.pull()
    c.receive(b"250 ok\r\n550 5.1.1 no\r\n")
    evs = c.connection_lost()
    assert kinds(evs) == ["TransactionDone", "SessionFailed"]
    r = evs[0].results
    assert r[0].status == "bounced"
    assert r[1].status == "deferred" and r[1].dsn == "4.4.2"
    assert r[1].reason == f"lost connection with {PEER} while sending RCPT TO"


def test_timeout_text():
    c = P.Client(peer=PEER, helo_name="me")
    evs = c.connection_lost(timeout=True)
    assert evs[0].failure.reason == f"conversation with {PEER} timed out while receiving the initial server greeting"


def test_garbage_reply_ends_session():
    c = ready_client()
    c.begin(msg("a@x"))
    c.pull()
    evs = c.receive(b"hello there\r\n")
    assert kinds(evs) == ["TransactionDone", "SessionFailed"]
    assert evs[0].results[0].status == "deferred"
    assert "hello there (in reply to MAIL FROM command)" in evs[0].results[0].reason


def test_multiline_reply_split_across_reads():
    c = P.Client(peer=PEER, helo_name="me")
    for chunk in (b"220-a", b"b\r\n22", b"0 c\r", b"\n"):
        c.receive(chunk)
    assert c.pull() == b"EHLO me\r\n"


def test_starttls_then_ehlo_again():
    c = P.Client(peer=PEER, helo_name="me", tls="may")
    c.receive(b"220 hi\r\n")
    c.pull()
    assert c.receive(b"250-mx\r\n250 STARTTLS\r\n") == []
    assert c.pull() == b"STARTTLS\r\n"
    assert kinds(c.receive(b"220 go\r\n")) == ["StartTLS"]
    c.tls_established()
    assert c.pull() == b"EHLO me\r\n"
    assert kinds(c.receive(b"250-mx\r\n250 STARTTLS\r\n")) == ["Ready"]   # no second STARTTLS


def test_encrypt_without_starttls_fails():
    c = P.Client(peer=PEER, helo_name="me", tls="encrypt")
    c.receive(b"220 hi\r\n")
    evs = c.receive(b"250 mx\r\n")
    assert evs[0].failure.dsn == "4.7.4"


def test_rset_pipelined_after_dot():
    c = ready_client()
    c.begin(msg("a@x"))
    c.pull()
    c.receive(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.content_end(b".\r\n", rset=True)
    assert c.pull() == b".\r\nRSET\r\n"
    assert kinds(c.receive(b"250 2.0.0 Ok: queued as Q\r\n")) == ["TransactionDone"]
    assert kinds(c.receive(b"250 2.0.0 Ok\r\n")) == ["Ready"]


def test_lmtp_per_recipient_replies():
    c = P.Client(peer=PEER, helo_name="me", lmtp=True)
    c.receive(b"220 hi\r\n")
    assert c.pull() == b"LHLO me\r\n"
    c.receive(b"250-lmtp\r\n250 PIPELINING\r\n")
    c.begin(msg("a@x", "b@x"))
    c.pull()
    c.receive(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    c.content_end(b".\r\n")
    assert c.receive(b"250 2.0.0 a ok\r\n") == []
    evs = c.receive(b"452 4.2.2 b over quota\r\n")
    r = evs[0].results
    assert r[0].status == "sent" and r[1].status == "deferred"
    assert "(in reply to end of DATA command)" in r[1].reason


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_reply_parser_never_crashes(chunks):
    p = P.ReplyParser(64)
    for ch in chunks:
        try:
            for r in p.feed(ch):
                assert 0 <= r.code <= 999 and r.lines
        except P.ProtocolError:
            p = P.ReplyParser(64)


@given(st.lists(st.tuples(st.sampled_from([250, 451, 550]),
                          st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)),
                min_size=1, max_size=5), st.integers(1, 7))
def test_reply_parser_roundtrip(lines, cut):
    wire = b"".join(f"{code}{'-' if i < len(lines) - 1 else ' '}{text}\r\n".encode()
                    for i, (code, text) in enumerate(lines))
    p = P.ReplyParser(1000)
    got = []
    for i in range(0, len(wire), cut):
        got += p.feed(wire[i:i + cut])
    assert len(got) == 1
    assert got[0].code == lines[-1][0]
    assert len(got[0].lines) == len(lines)


def test_overlong_reply_line_is_cut():
    p = P.ReplyParser(20)
    got = p.feed(b"250 " + b"x" * 100 + b"\r\n250 next\r\n")
    assert [len(r.lines[0]) for r in got] == [20, 8]
