"""fulmar.smtp.dsn: DSN parameter codecs and RFC 3464 report composition."""

import email
import email.policy
import re

import pytest
from hypothesis import given, settings, strategies as st

from fulmar.smtp import dsn
from fulmar.smtp.dsn import RecipientStatus, Report, ReportKind

ORIGINAL = (b"Received: from client.example (client.example [192.0.2.1])\r\n"
            b"\tby mail.example.com (Postfix) with ESMTP id ABC\r\n"
            b"From: Alice <alice@example.com>\r\n"
            b"To: bob@example.net\r\n"
            b"Subject: lunch\r\n"
            b"Message-Id: <m1@example.com>\r\n"
            b"\r\n"
            b"Shall we?\r\n"
            b"-- \r\nAlice\r\n")

SAID = ("host mx.example.net[192.0.2.7] said: 550 5.1.1 <bob@example.net>: "
        "Recipient address rejected: User unknown (in reply to RCPT TO command)")


def rcpt(address="bob@example.net", **kw):
    kw.setdefault("status", "5.1.1")
    kw.setdefault("reason", SAID)
    return RecipientStatus(address, **kw)


def report(kind=ReportKind.FAILURE, recipients=None, **kw):
    kw.setdefault("to", "alice@example.com")
    kw.setdefault("queue_id", "4Xk2Lm1Qz7z9vRs")
    kw.setdefault("sender", "alice@example.com")
    kw.setdefault("myhostname", "mail.example.com")
    kw.setdefault("arrival_time", 1764400000.0)
    kw.setdefault("content_size", len(ORIGINAL))
    kw.setdefault("now", 1764400100.0)
    return Report(kind=kind, recipients=recipients if recipients is not None else [rcpt()], **kw)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.compat32)


def chunks(data: bytes, size: int):
    return [data[i:i + size] for i in range(0, len(data), size)]


# -- NOTIFY ----------------------------------------------------------------------

def test_notify_bits_are_postfix_values():
    assert (dsn.DSN_NOTIFY_NEVER, dsn.DSN_NOTIFY_SUCCESS, dsn.DSN_NOTIFY_DELAY,
            dsn.DSN_NOTIFY_FAILURE) == (1, 2, 4, 8)


@pytest.mark.parametrize("text,mask", [
    ("NEVER", 1), ("never", 1), ("SUCCESS", 2), ("DELAY", 4), ("FAILURE", 8),
    ("SUCCESS,FAILURE", 10), ("failure,delay", 12), ("SUCCESS,DELAY,FAILURE", 14),
])
def test_parse_notify(text, mask):
    assert dsn.parse_notify(text) == mask


@pytest.mark.parametrize("text", ["", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "BOGUS", "SUCCESS,",
                                  " SUCCESS", "FAILURE;DELAY"])
def test_parse_notify_rejects(text):
    with pytest.raises(ValueError):
        dsn.parse_notify(text)


def test_format_notify_order():
    assert dsn.format_notify(14) == "SUCCESS,FAILURE,DELAY"
    assert dsn.format_notify(1) == "NEVER"
    assert dsn.format_notify(0) == ""


@given(st.sampled_from([1] + list(range(2, 15, 2))))
def test_notify_round_trip(mask):
    assert dsn.notify_ok(mask)
    assert dsn.parse_notify(dsn.format_notify(mask)) == mask


@given(st.text(max_size=40))
def test_parse_notify_only_value_error(text):
    try:
        mask = dsn.parse_notify(text)
    except ValueError:
        return
    assert dsn.notify_ok(mask) and mask


def test_notify_ok():
    assert dsn.notify_ok(0) and dsn.notify_ok(1) and dsn.notify_ok(14)
    assert not dsn.notify_ok(3) and not dsn.notify_ok(16) and not dsn.notify_ok(15)


@pytest.mark.parametrize("kind,mask,want", [
    (ReportKind.FAILURE, 0, True), (ReportKind.DELAY, 0, True), (ReportKind.SUCCESS, 0, False),
    (ReportKind.FAILURE, dsn.DSN_NOTIFY_NEVER, False), (ReportKind.DELAY, dsn.DSN_NOTIFY_NEVER, False),
    (ReportKind.SUCCESS, dsn.DSN_NOTIFY_NEVER, False),
    (ReportKind.SUCCESS, dsn.DSN_NOTIFY_SUCCESS, True), (ReportKind.FAILURE, dsn.DSN_NOTIFY_SUCCESS, False),
    (ReportKind.FAILURE, dsn.DSN_NOTIFY_FAILURE, True), (ReportKind.DELAY, dsn.DSN_NOTIFY_FAILURE, False),
    (ReportKind.DELAY, dsn.DSN_NOTIFY_DELAY | dsn.DSN_NOTIFY_FAILURE, True),
])
def test_wants_notice(kind, mask, want):
    assert dsn.wants_notice(kind, mask) is want


def test_postmaster_copy_takes_everyone():
    assert dsn.wants_notice(ReportKind.FAILURE, dsn.DSN_NOTIFY_NEVER, postmaster_copy=True)


# -- RET, xtext, ENVID, ORCPT ----------------------------------------------------

def test_ret():
    assert dsn.parse_ret("full") == dsn.DSN_RET_FULL == 1
    assert dsn.parse_ret("HDRS") == dsn.DSN_RET_HDRS == 2
    assert dsn.format_ret(2) == "HDRS" and dsn.format_ret(0) == ""
    with pytest.raises(ValueError):
        dsn.parse_ret("HEADERS")
    assert [dsn.ret_from_attr(v) for v in ("1", "2", "HDRS", "", None, "7", 2)] == [1, 2, 2, 0, 0, 0, 2]


def test_xtext_examples():
    assert dsn.xtext_encode("a+b=c d@e") == "a+2Bb+3Dc+20d@e"
    assert dsn.xtext_decode("a+2Bb+3dc") == "a+b=c"
    for bad in ("a+", "a+2", "a+ZZ", "a b", "a=b", "é"):
        with pytest.raises(ValueError):
            dsn.xtext_decode(bad)


@given(st.text())
def test_xtext_round_trip(text):
    encoded = dsn.xtext_encode(text)
    assert all("!" <= c <= "~" for c in encoded)
    assert dsn.xtext_decode(encoded) == text


@given(st.text(max_size=60))
def test_xtext_decode_only_value_error(text):
    try:
        dsn.xtext_decode(text)
    except ValueError:
        pass


def test_envid():
    assert dsn.parse_envid("QQ+2B123") == "QQ+123"
    for bad in ("x" * 101, "", "a+0Ab"):
        with pytest.raises(ValueError):
            dsn.parse_envid(bad)


def test_orcpt():
    assert dsn.parse_orcpt("rfc822;bob+2Bx@example.net") == "rfc822;bob+x@example.net"
    assert dsn.parse_orcpt("RFC822;a@b") == "rfc822;a@b"
    assert dsn.format_orcpt("rfc822;bob+x@example.net") == "rfc822;bob+2Bx@example.net"
    for bad in ("bob@example.net", "x400;a", "rfc822;", "rfc822;a+0Db", "x" * 501):
        with pytest.raises(ValueError):
            dsn.parse_orcpt(bad)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), min_size=1, max_size=80))
def test_orcpt_round_trip(address):
    stored = "rfc822;" + address
    assert dsn.parse_orcpt(dsn.format_orcpt(stored)) == stored


def test_diagnostic_from_reason():
    assert dsn.diagnostic_from_reason(SAID) == (
        "dns", "mx.example.net", "smtp",
        "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown")
    assert dsn.diagnostic_from_reason("host mx.example.net[192.0.2.7] refused to talk to me: "
                                      "554 go away") == ("dns", "mx.example.net", "smtp", "554 go away")
    assert dsn.diagnostic_from_reason("connect to mx[192.0.2.7]:25: Connection refused") == ("", "", "", "")
    assert dsn.diagnostic_from_reason("unknown user: \"bob\"") == ("", "", "", "")


# -- report composition -----------------------------------------------------------

def status_groups(msg):
    part = msg.get_payload()[1]
    if part.get_content_type() == "message/global-delivery-status":
        # email only splits message/delivery-status into field groups.
        raw = msg.as_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
        section = raw.split("--" + msg.get_boundary() + "\n")[2]
        body = section.split("\n\n", 1)[1]
        return [email.message_from_string(g, policy=email.policy.compat32)
                for g in body.strip().split("\n\n") if g]
    assert part.get_content_type() == "message/delivery-status"
    return part.get_payload()


def test_failure_report_structure():
    r = report(recipients=[
        rcpt(dsn_orcpt="rfc822;bob@example.net", mta_type="dns", mta_name="mx.example.net",
             diag_type="smtp", diag_text="550 5.1.1 <bob@example.net>: User unknown"),
        rcpt("carol@example.net", status="5.4.6", reason="mail forwarding loop for carol@example.net"),
    ], date=1764400100.0, message_id="<NEW@mail.example.com>", envid="ENV1")
    data = dsn.compose_report(r, [ORIGINAL])
    msg = parse(data)
    assert msg["From"] == "MAILER-DAEMON@mail.example.com (Mail Delivery System)"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["To"] == "alice@example.com"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Message-Id"] == "<NEW@mail.example.com>"
    assert msg["Date"]
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg.get_boundary() == "4Xk2Lm1Qz7z9vRs.1764400100/mail.example.com"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]

    human = parts[0].get_payload()
    assert "This is the mail system at host mail.example.com." in human
    assert "I'm sorry to have to inform you that your message could not" in human
    assert "<bob@example.net>: host mx.example.net[192.0.2.7] said: 550 5.1.1" in human
    assert "<carol@example.net>: mail forwarding loop for carol@example.net" in human

    groups = status_groups(msg)
    head, bob, carol = groups
    assert head["Reporting-MTA"] == "dns; mail.example.com"
    assert head["Original-Envelope-Id"] == "ENV1"
    assert head["X-Postfix-Queue-ID"] == "4Xk2Lm1Qz7z9vRs"
    assert head["X-Postfix-Sender"] == "rfc822; alice@example.com"
    assert head["Arrival-Date"]
    assert bob["Final-Recipient"] == "rfc822; bob@example.net"
    assert bob["Original-Recipient"] == "rfc822; bob@example.net"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx.example.net"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: User unknown"
    assert carol["Final-Recipient"] == "rfc822; carol@example.net"
    assert carol["Original-Recipient"] is None
    assert carol["Remote-MTA"] is None
    assert carol["Status"] == "5.4.6"
    assert carol["Diagnostic-Code"] == "X-Postfix; mail forwarding loop for carol@example.net"

    original = parts[2]
    assert original["Content-Description"] == "Undelivered Message"
    inner = original.get_payload()[0]
    assert inner["Return-Path"] == "<alice@example.com>"
    assert inner["Subject"] == "lunch"
    assert "Shall we?" in inner.get_payload()


def test_output_is_crlf_only_and_ends_with_closing_boundary():
    data = dsn.compose_report(report(), [ORIGINAL])
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert data.endswith(b"\r\n--4Xk2Lm1Qz7z9vRs.1764400100/mail.example.com--\r\n")


def test_original_recipient_from_orig_address_only_when_known():
    r = report(recipients=[rcpt(orig_address="bobby@example.net"), rcpt("dave@example.net")])
    msg = parse(dsn.compose_report(r, [ORIGINAL]))
    _, bob, dave = status_groups(msg)
    assert bob["Original-Recipient"] == "rfc822; bobby@example.net"
    assert dave["Original-Recipient"] is None
    assert "<bob@example.net> (expanded from <bobby@example.net>):" in msg.get_payload()[0].get_payload()


def test_ret_hdrs_gives_headers_only():
    msg = parse(dsn.compose_report(report(ret=dsn.DSN_RET_HDRS), [ORIGINAL]))
    part = msg.get_payload()[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert part["Content-Description"] == "Undelivered Message Headers"
    text = part.get_payload()
    assert "Subject: lunch" in text and "Return-Path: <alice@example.com>" in text
    assert "\tby mail.example.com" in text           # folded header line kept
    assert "Shall we?" not in text


def test_headers_only_when_larger_than_bounce_size_limit():
    msg = parse(dsn.compose_report(report(bounce_size_limit=len(ORIGINAL) - 1), [ORIGINAL]))
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"
    msg = parse(dsn.compose_report(report(bounce_size_limit=len(ORIGINAL)), [ORIGINAL]))
    assert msg.get_payload()[2].get_content_type() == "message/rfc822"


@given(st.integers(min_value=1, max_value=len(ORIGINAL)))
def test_streamed_blocks_give_the_same_report(size):
    for ret in (0, dsn.DSN_RET_HDRS):
        whole = dsn.compose_report(report(ret=ret), [ORIGINAL])
        assert dsn.compose_report(report(ret=ret), chunks(ORIGINAL, size)) == whole


def test_content_is_pulled_lazily_for_headers_only():
    pulled = []

    def blocks():
        for block in chunks(ORIGINAL, 10):
            pulled.append(block)
            yield block
        raise AssertionError("body should not be read")  # pragma: no cover

    dsn.compose_report(report(ret=dsn.DSN_RET_HDRS), blocks())
    assert len(pulled) < len(chunks(ORIGINAL, 10))


def test_missing_original_placeholder():
    data = dsn.compose_report(report(), None)
    assert b"\t--- Undelivered message unavailable ---\r\n" in data
    assert parse(data).get_payload()[2] is not None


def test_original_without_final_newline_is_terminated():
    data = dsn.compose_report(report(content_size=9), [b"X: y\r\n\r\nz"])
    assert b"\r\nz\r\n\r\n--" in data


def test_delay_report():
    r = report(ReportKind.DELAY, [rcpt(status="4.4.1", reason="connect to mx[192.0.2.7]:25: refused")],
               delay_warning_time=4 * 3600, maximal_queue_lifetime=5 * 86400)
    msg = parse(dsn.compose_report(r, [ORIGINAL]))
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    human = msg.get_payload()[0].get_payload()
    assert "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #" in human
    assert "Your message could not be delivered for more than 4 hour(s)." in human
    assert "It will be retried until it is 5 day(s) old." in human
    _, g = status_groups(msg)
    assert g["Action"] == "delayed" and g["Status"] == "4.4.1"
    assert g["Will-Retry-Until"]
    assert msg.get_payload()[2]["Content-Description"] == "Undelivered Message"


def test_success_report():
    r = report(ReportKind.SUCCESS, [rcpt(status="2.0.0", action="relayed", reason="250 ok")])
    msg = parse(dsn.compose_report(r, [ORIGINAL]))
    assert msg["Subject"] == "Successful Mail Delivery Report"
    assert "Your message was successfully delivered" in msg.get_payload()[0].get_payload()
    _, g = status_groups(msg)
    assert g["Action"] == "relayed"
    assert msg.get_payload()[2]["Content-Description"] == "Message"
    r = report(ReportKind.SUCCESS, [rcpt(status="2.0.0", reason="delivered to mailbox")])
    assert status_groups(parse(dsn.compose_report(r, [ORIGINAL])))[1]["Action"] == "delivered"


def test_postmaster_copy():
    r = report(postmaster_copy=True, to="postmaster@mail.example.com", sender="")
    msg = parse(dsn.compose_report(r, [ORIGINAL]))
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert msg["Auto-Submitted"] == "auto-generated"
    human = msg.get_payload()[0].get_payload()
    assert "I'm sorry" not in human and "<bob@example.net>:" in human
    assert status_groups(msg)[0]["X-Postfix-Sender"] is None


def test_no_header_injection_from_log_text():
    evil = "x\r\nAction: delivered\r\n\r\n--4Xk2Lm1Qz7z9vRs.1764400100/mail.example.com--"
    r = report(recipients=[rcpt(reason=evil, orig_address="a\nb@c", address="b\r@c")])
    data = dsn.compose_report(r, [ORIGINAL])
    msg = parse(data)
    groups = status_groups(msg)
    assert len(groups) == 2 and groups[1]["Action"] == "failed"
    lines = data.split(b"\r\n")
    assert lines.count(b"--4Xk2Lm1Qz7z9vRs.1764400100/mail.example.com--") == 1
    assert lines.count(b"--4Xk2Lm1Qz7z9vRs.1764400100/mail.example.com") == 3
    assert b"Action: delivered" not in data.replace(b"?Action: delivered", b"")


def test_long_diagnostics_are_folded():
    text = "550 " + " ".join(["word%d" % i for i in range(60)])
    r = report(recipients=[rcpt(diag_type="smtp", diag_text=text)])
    data = dsn.compose_report(r, [ORIGINAL])
    assert all(len(line) <= 79 for line in data.split(b"\r\n")[:60] if b" " in line)
    g = status_groups(parse(data))[1]
    assert re.sub(r"\s+", " ", g["Diagnostic-Code"]) == "smtp; " + text


def test_eight_bit_and_smtputf8():
    r = report(encoding=dsn.ENC_8BIT)
    msg = parse(dsn.compose_report(r, [ORIGINAL]))
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert msg.get_payload()[0].get_content_charset() == "utf-8"
    r = report(smtputf8=True, recipients=[rcpt("jörg@exämple.de")], sender="ünï@example.com")
    data = dsn.compose_report(r, [ORIGINAL])
    assert b"Content-Type: message/global-delivery-status" in data
    assert "Final-Recipient: utf-8; jörg@exämple.de".encode() in data
    assert b"Content-Type: message/global\r\n" in data
    r = report(recipients=[rcpt("jörg@example.de")])
    assert b"Final-Recipient: rfc822; j?rg@example.de" in dsn.compose_report(r, [ORIGINAL])


def test_to_header_quotes_local_part():
    msg = parse(dsn.compose_report(report(to="john doe@example.com"), [ORIGINAL]))
    assert msg["To"] == '"john doe"@example.com'
    assert dsn.quote_822_local("a.b@c") == "a.b@c"
    assert dsn.quote_822_local("a..b@c") == '"a..b"@c'


addresses = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=60)
@given(st.lists(st.tuples(addresses, st.text(max_size=300), st.text(max_size=20)), min_size=1, max_size=4),
       st.sampled_from(list(ReportKind)), st.booleans(), st.integers(0, 2))
def test_any_log_text_gives_a_well_formed_report(items, kind, utf8, ret):
    recipients = [rcpt(a, reason=reason, orig_address=orig) for a, reason, orig in items]
    r = report(kind, recipients, smtputf8=utf8, ret=ret)
    data = dsn.compose_report(r, [ORIGINAL])
    assert b"\n" not in data.replace(b"\r\n", b"")
    msg = parse(data)
    assert len(msg.get_payload()) == 3
    groups = status_groups(msg)
    assert len(groups) == 1 + len(recipients)
    assert all(g["Final-Recipient"] and g["Action"] and g["Status"] for g in groups[1:])
