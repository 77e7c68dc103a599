"""Delivery status notifications: RFC 3461 values and RFC 3464 reports.

NAME
    fulmar.smtp.dsn -- DSN parameters (NOTIFY, RET, ENVID, ORCPT) and
    report composition in Postfix's shape

SYNOPSIS
    DSN_NOTIFY_NEVER, DSN_NOTIFY_SUCCESS, DSN_NOTIFY_DELAY, DSN_NOTIFY_FAILURE
    parse_notify("SUCCESS,FAILURE") -> 10      format_notify(10) -> "SUCCESS,FAILURE"
    notify_ok(mask) -> bool                    wants_notice(kind, mask) -> bool
    DSN_RET_FULL, DSN_RET_HDRS
    parse_ret("HDRS") -> 2    format_ret(2) -> "HDRS"    ret_from_attr("2"|"HDRS"|"") -> int
    xtext_encode(s) -> str    xtext_decode(s) -> str   (ValueError on bad xtext)
    parse_envid(xtext) -> str                  parse_orcpt(xtext) -> "rfc822;addr"
    format_orcpt("rfc822;addr") -> xtext
    diagnostic_from_reason(reason) -> (mta_type, mta_name, diag_type, diag_text)

    ReportKind.FAILURE | DELAY | SUCCESS | VERIFY
    RecipientStatus(address, orig_address, dsn_orcpt, dsn_notify, offset,
                    status, action, reason, mta_type, mta_name, diag_type, diag_text)
    Report(kind, to, queue_id, sender, recipients, myhostname, ...)
    iter_report(report, content) -> Iterator[bytes]
    compose_report(report, content) -> bytes

DESCRIPTION
    NOTIFY is kept as Postfix's bit mask (dsn_mask.h): NEVER=1, SUCCESS=2,
    DELAY=4, FAILURE=8; 0 means "not specified", which RFC 3461 and Postfix
    treat as DELAY,FAILURE.  RET is 1 (FULL) or 2 (HDRS), 0 when not given.
    ORCPT is stored decoded as "addr-type;address" (Postfix's dsn_orcpt).

    The report is a multipart/report; report-type=delivery-status message
    exactly as Postfix's bounce(8) writes it (bounce_notify_util.c and the
    built-in bounce templates): a header block (From MAILER-DAEMON, the
    template's Subject, To, Auto-Submitted, MIME headers, plus Date and
    Message-Id when given), part 1 the template text and one wrapped line
    per recipient (`<rcpt> (expanded from <orig>): reason`), part 2
    message/delivery-status (Reporting-MTA, Original-Envelope-Id,
    X-Postfix-Queue-ID, X-Postfix-Sender, Arrival-Date; per recipient
    Final-Recipient, Original-Recipient, Action, Status, Remote-MTA,
    Diagnostic-Code, and Will-Retry-Until for delay notices), part 3 the
    original: message/rfc822 (RET=FULL or not given) or text/rfc822-headers
    (RET=HDRS, or when the message is larger than bounce_size_limit, so
    the MIME structure is never cut), preceded by `Return-Path: <sender>`.
    Lines end in CRLF (queue content form).  The original content is read
    from an iterator of byte blocks and streamed, never joined.

    The caller chooses the recipients (wants_notice() is the NOTIFY
    filter); every text taken from logs is masked (control characters
    and, for non-UTF-8 reports, non-ASCII become "?") so nothing can
    inject a header or a MIME boundary line.

FAILURE BEHAVIOUR
    Parsers raise ValueError with a short reason; composition never fails
    on odd data (a missing original becomes Postfix's
    "--- Undelivered message unavailable ---" line).
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from fulmar.maildate import mail_date
# xtext has one implementation, beside the other ESMTP parameter parsers.
from fulmar.smtp.address import xtext_decode, xtext_encode  # noqa: F401 (re-exported)
from fulmar.version import MAIL_NAME

# --------------------------------------------------------------------------
# NOTIFY (RFC 3461 §4.1; Postfix dsn_mask.h)

DSN_NOTIFY_NEVER = 1
DSN_NOTIFY_SUCCESS = 2
DSN_NOTIFY_DELAY = 4
DSN_NOTIFY_FAILURE = 8
DSN_NOTIFY_ANY = DSN_NOTIFY_SUCCESS | DSN_NOTIFY_DELAY | DSN_NOTIFY_FAILURE
# Postmaster copies report every recipient, whatever its NOTIFY says.
DSN_NOTIFY_OVERRIDE = DSN_NOTIFY_NEVER | DSN_NOTIFY_ANY
# What "not specified" means (RFC 3461 §4.1, Postfix).
DSN_NOTIFY_DEFAULT = DSN_NOTIFY_DELAY | DSN_NOTIFY_FAILURE

# Postfix's name_mask table order, which format_notify() follows.
_NOTIFY_NAMES = (
    ("NEVER", DSN_NOTIFY_NEVER),
    ("SUCCESS", DSN_NOTIFY_SUCCESS),
    ("FAILURE", DSN_NOTIFY_FAILURE),
    ("DELAY", DSN_NOTIFY_DELAY),
)


def notify_ok(mask: int) -> bool:
    """True for a valid stored mask: 0 (not given), NEVER alone, or a set of the others."""
    return mask == 0 or mask == DSN_NOTIFY_NEVER or (mask & ~DSN_NOTIFY_ANY) == 0


def parse_notify(value: str) -> int:
    """Parse the NOTIFY= parameter value; ValueError when malformed."""
    mask = 0
    for word in value.split(","):
        for name, bit in _NOTIFY_NAMES:
            if word.upper() == name:
                if mask & bit:
                    raise ValueError("duplicate NOTIFY keyword")
                mask |= bit
                break
        else:
            raise ValueError("bad NOTIFY keyword")
    if mask & DSN_NOTIFY_NEVER and mask != DSN_NOTIFY_NEVER:
        raise ValueError("NEVER combined with other NOTIFY keywords")
    return mask


def format_notify(mask: int) -> str:
    """The NOTIFY= value for a mask ("" for 0)."""
    return ",".join(name for name, bit in _NOTIFY_NAMES if mask & bit)


class ReportKind(enum.StrEnum):
    FAILURE = "failure"     # bounce/QID or expired defer/QID: sender non-delivery notice
    DELAY = "delay"         # defer/QID after delay_warning_time: delay warning
    SUCCESS = "success"     # trace/QID: NOTIFY=SUCCESS delivery report
    VERIFY = "verify"       # sendmail -v / -bv report (not produced yet)


_KIND_NOTIFY = {
    ReportKind.FAILURE: DSN_NOTIFY_FAILURE,
    ReportKind.DELAY: DSN_NOTIFY_DELAY,
    ReportKind.SUCCESS: DSN_NOTIFY_SUCCESS,
}


def wants_notice(kind: ReportKind, mask: int, postmaster_copy: bool = False) -> bool:
    """Whether a recipient with NOTIFY `mask` is reported in a `kind` notice.

    As Postfix's bounce_diagnostic_dsn(): mask 0 is "compat" (reported in
    failure and delay notices; success notices need an explicit SUCCESS).
    Postmaster copies take everybody.
    """
    if postmaster_copy or kind is ReportKind.VERIFY:
        return True
    if mask == 0:
        return bool(_KIND_NOTIFY[kind] & DSN_NOTIFY_DEFAULT)
    return bool(mask & _KIND_NOTIFY[kind])


# --------------------------------------------------------------------------
# RET (RFC 3461 §4.3)

DSN_RET_FULL = 1
DSN_RET_HDRS = 2
_RET_NAMES = {"FULL": DSN_RET_FULL, "HDRS": DSN_RET_HDRS}


def parse_ret(value: str) -> int:
    try:
        return _RET_NAMES[value.upper()]
    except KeyError:
        raise ValueError("bad RET keyword") from None


def format_ret(ret: int) -> str:
    for name, val in _RET_NAMES.items():
        if val == ret:
            return name
    return ""


def ret_from_attr(value: object) -> int:
    """Tolerant reading of a stored dsn_ret attribute (number or keyword); 0 if unknown."""
    if isinstance(value, int) and value in (DSN_RET_FULL, DSN_RET_HDRS):
        return value
    text = str(value or "").strip()
    if text.isdigit() and int(text) in (DSN_RET_FULL, DSN_RET_HDRS):
        return int(text)
    return _RET_NAMES.get(text.upper(), 0)


# --------------------------------------------------------------------------
# xtext (RFC 3461 §4), ENVID (§4.4) and ORCPT (§4.2)

ENVID_MAX = 100      # RFC 3461 §4.4: ENVID MUST NOT exceed 100 characters
ORCPT_MAX = 500      # RFC 3461 §4.2: ORCPT MUST NOT exceed 500 characters

def _printable_ascii(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)


def parse_envid(value: str) -> str:
    """ENVID= value, decoded; ValueError when malformed or too long."""
    if len(value) > ENVID_MAX:
        raise ValueError("ENVID too long")
    decoded = xtext_decode(value)
    if not decoded or not _printable_ascii(decoded):
        raise ValueError("bad ENVID syntax")
    return decoded


def parse_orcpt(value: str) -> str:
    """ORCPT= value, decoded to Postfix's "addr-type;address" form.

    The address type must be rfc822 or utf-8 (RFC 6533), as Postfix
    accepts; ValueError otherwise.
    """
    if len(value) > ORCPT_MAX:
        raise ValueError("ORCPT too long")
    addr_type, sep, encoded = value.partition(";")
    if not sep or addr_type.lower() not in ("rfc822", "utf-8") or not encoded:
        raise ValueError("bad ORCPT syntax")
    address = xtext_decode(encoded)
    if addr_type.lower() == "rfc822" and not _printable_ascii(address):
        raise ValueError("bad ORCPT address")
    if any(ord(c) < 0x20 or c == "\x7f" for c in address):
        raise ValueError("bad ORCPT address")
    return "%s;%s" % (addr_type.lower(), address)


def format_orcpt(dsn_orcpt: str) -> str:
    """The ORCPT= value for a stored "addr-type;address"."""
    addr_type, sep, address = dsn_orcpt.partition(";")
    if not sep:
        addr_type, address = "rfc822", dsn_orcpt
    return "%s;%s" % (addr_type, xtext_encode(address))


# --------------------------------------------------------------------------
# Structured diagnostics from a delivery agent's reason text

# The smtp client's wording (Postfix smtp_proto.c / smtp_connect.c):
#   host mx.example.org[192.0.2.7] said: 550 5.1.1 ... (in reply to RCPT TO command)
_SAID_RE = re.compile(
    r"^host (?P<host>[^\s\[]+)\[[^\]]*\](?::\d+)? said: (?P<text>.*?)"
    r"(?: \(in reply to [^()]* command\))?$", re.S)
_REFUSED_RE = re.compile(
    r"^host (?P<host>[^\s\[]+)\[[^\]]*\](?::\d+)? refused to talk to me: (?P<text>.*)$", re.S)


def diagnostic_from_reason(reason: str) -> tuple[str, str, str, str]:
    """(mta_type, mta_name, diag_type, diag_text) recovered from a reason.

    Remote SMTP replies become `dns; host` and `smtp; reply`; anything
    else has no remote MTA and no diagnostic type, so the report falls
    back to Postfix's `X-Postfix; reason`.
    """
    for regex in (_SAID_RE, _REFUSED_RE):
        m = regex.match(reason)
        if m and m.group("text"):
            return "dns", m.group("host"), "smtp", m.group("text")
    return "", "", "", ""


# --------------------------------------------------------------------------
# Report composition

@dataclass(frozen=True)
class RecipientStatus:
    """One recipient line of a report (and of a bounce/defer/trace log)."""
    address: str
    orig_address: str = ""
    dsn_orcpt: str = ""
    dsn_notify: int = 0
    offset: int = 0
    status: str = ""        # enhanced status code, "5.1.1"
    action: str = ""        # failed | delayed | delivered | relayed | expanded
    reason: str = ""        # human text, as in the delivery log line
    mta_type: str = ""      # "dns"
    mta_name: str = ""      # remote host name
    diag_type: str = ""     # "smtp"
    diag_text: str = ""     # remote reply text
    time: float = 0.0       # when the status was logged


# Built-in template texts (Postfix bounce_templates.c); $myhostname etc.
# are filled in by _template_lines().
_TEMPLATES = {
    ReportKind.FAILURE: (
        "Undelivered Mail Returned to Sender",
        "Postmaster Copy: Undelivered Mail",
        (
            "This is the mail system at host {myhostname}.",
            "",
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. It's attached below.",
            "",
            "For further assistance, please send mail to <postmaster>",
            "",
            "If you do so, please include this problem report. You can",
            "delete your own text from the attached returned message.",
            "",
            "                   The mail system",
        )),
    ReportKind.DELAY: (
        "Delayed Mail (still being retried)",
        "Postmaster Warning: Delayed Mail",
        (
            "This is the mail system at host {myhostname}.",
            "",
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            "Your message could not be delivered for more than "
            "{delay_warning_time_hours} hour(s).",
            "It will be retried until it is {maximal_queue_lifetime_days} day(s) old.",
            "",
            "For further assistance, please send mail to <postmaster>",
            "",
            "If you do so, please include this problem report. You can",
            "delete your own text from the attached returned message.",
            "",
            "                   The mail system",
        )),
    ReportKind.SUCCESS: (
        "Successful Mail Delivery Report",
        None,
        (
            "This is the mail system at host {myhostname}.",
            "",
            "Your message was successfully delivered to the destination(s)",
            "listed below. If the message was delivered to mailbox you will",
            "receive no further notifications. Otherwise you may still receive",
            "notifications of mail delivery errors from other systems.",
            "",
            "                   The mail system",
        )),
    ReportKind.VERIFY: (
        "Mail Delivery Status Report",
        None,
        (
            "This is the mail system at host {myhostname}.",
            "",
            "Enclosed is the mail delivery report that you requested.",
            "",
            "                   The mail system",
        )),
}

_SECONDS_PER_HOUR = 3600
_SECONDS_PER_DAY = 86400
# Postfix bounce_notify_util.c: human-readable lines wrap at 79 columns,
# continuation lines indented by 4 (which also folds DSN fields legally).
_WRAP_LENGTH = 79
_WRAP_INDENT = 4

ENC_7BIT = "7bit"
ENC_8BIT = "8bit"


@dataclass
class Report:
    """Everything one notice needs besides the original content."""
    kind: ReportKind
    to: str                              # envelope recipient of the notice
    queue_id: str                        # the original message's queue ID
    sender: str                          # the original envelope sender
    recipients: Sequence[RecipientStatus]
    myhostname: str
    myorigin: str = ""                   # domain for MAILER-DAEMON@; "" = myhostname
    mail_name: str = MAIL_NAME
    arrival_time: float = 0.0
    envid: str = ""
    ret: int = 0                         # DSN_RET_*; 0 = not given (full)
    encoding: str = ENC_7BIT             # of the original: "7bit" | "8bit" | ""
    smtputf8: bool = False               # the original requested SMTPUTF8
    postmaster_copy: bool = False
    content_size: int = -1               # of the original; < 0 = unknown
    bounce_size_limit: int = 50000       # Postfix default; the daemon passes $bounce_size_limit
    delay_warning_time: int = 0          # seconds, for the delay template
    maximal_queue_lifetime: int = 0      # seconds, for delay template / Will-Retry-Until
    boundary: str = ""                   # "" = Postfix's QID.time/myhostname
    message_id: str = ""                 # "<...>" or "" (cleanup adds one)
    date: float | None = None            # Date: header time; None = no Date:
    now: float | None = None             # for the boundary; None = time.time()

    def mime_boundary(self) -> str:
        if self.boundary:
            return self.boundary
        now = self.now if self.now is not None else time.time()
        return "%s.%d/%s" % (self.queue_id, int(now), self.myhostname)


def _mask(text: str, utf8: bool) -> str:
    """Postfix printable(): control characters (and non-ASCII unless UTF-8) become '?'."""
    out = []
    for c in text:
        o = ord(c)
        if o < 0x20 or o == 0x7f or (0x80 <= o < 0xa0):
            out.append("?")
        elif o > 0x7e and not utf8:
            out.append("?")
        elif 0xd800 <= o <= 0xdfff:      # surrogate escapes from undecodable bytes
            out.append("?")
        else:
            out.append(c)
    return "".join(out)


def _wrap(text: str) -> list[str]:
    """Postfix line_wrap(): fill to 79 columns at blanks, indent continuations by 4."""
    indent = " " * _WRAP_INDENT
    words = text.split(" ")
    lines: list[str] = []
    cur = words[0]
    for word in words[1:]:
        if len(cur) + 1 + len(word) <= _WRAP_LENGTH:
            cur += " " + word
        elif word:
            lines.append(cur)
            cur = indent + word
    lines.append(cur)
    # A continuation line must never be blank: that would end the field group.
    return [line for i, line in enumerate(lines) if i == 0 or line.strip()]


_LOCAL_SPECIALS = re.compile(r'[\x00-\x20()<>@,;:\\".\[\]\x7f]')


def quote_822_local(address: str) -> str:
    """Quote the local part of an address when RFC 5322 requires it (Postfix quote_822_local)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not local or not _needs_quote(local):
        return address
    quoted = '"%s"' % local.replace("\\", "\\\\").replace('"', '\\"')
    return quoted + (at + domain if at else "")


def _needs_quote(local: str) -> bool:
    # A dot-atom needs no quotes: atoms separated by single dots.
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return True
    return bool(_LOCAL_SPECIALS.search(local.replace(".", "a")))


def _is_utf8_address(address: str) -> bool:
    return any(ord(c) > 0x7f for c in address)


def _template_lines(report: Report) -> Sequence[str]:
    _, _, body = _TEMPLATES[report.kind]
    values = {
        "myhostname": report.myhostname,
        "delay_warning_time_hours": report.delay_warning_time // _SECONDS_PER_HOUR,
        "maximal_queue_lifetime_days": report.maximal_queue_lifetime // _SECONDS_PER_DAY,
    }
    return [line.format(**values) for line in body]


def _action(report: Report, rcpt: RecipientStatus) -> str:
    if report.kind is ReportKind.FAILURE:
        return "failed"
    if report.kind is ReportKind.DELAY:
        return "delayed"
    return rcpt.action or "delivered"


def _status(report: Report, rcpt: RecipientStatus) -> str:
    if rcpt.status:
        return rcpt.status
    # bounce_log.c's compat values for an entry without a status.
    return {ReportKind.FAILURE: "5.0.0", ReportKind.DELAY: "4.0.0"}.get(report.kind, "2.0.0")


def _header_lines(report: Report, boundary: str, eight_bit: bool) -> list[str]:
    subject, pm_subject, _ = _TEMPLATES[report.kind]
    if report.postmaster_copy and pm_subject:
        subject = pm_subject
    utf8 = report.smtputf8
    lines = []
    if report.date is not None:
        lines.append("Date: " + mail_date(report.date))
    lines.append("From: MAILER-DAEMON@%s (Mail Delivery System)"
                 % (report.myorigin or report.myhostname))
    lines.append("Subject: " + subject)
    lines.append("To: " + _mask(quote_822_local(report.to), utf8))
    lines.append("Auto-Submitted: " + ("auto-generated" if report.postmaster_copy
                                       else "auto-replied"))
    lines.append("MIME-Version: 1.0")
    lines.append("Content-Type: multipart/report; report-type=delivery-status;")
    lines.append('\tboundary="%s"' % boundary)
    if report.encoding:
        lines.append("Content-Transfer-Encoding: " + (ENC_8BIT if eight_bit else ENC_7BIT))
    if report.message_id:
        lines.append("Message-Id: " + report.message_id)
    lines += ["", "This is a MIME-encapsulated message.", ""]
    return lines


def _human_lines(report: Report, boundary: str, eight_bit: bool) -> list[str]:
    utf8 = report.smtputf8 or eight_bit
    lines = ["--" + boundary, "Content-Description: Notification",
             "Content-Type: text/plain; charset=%s" % ("utf-8" if eight_bit else "us-ascii")]
    if eight_bit:
        lines.append("Content-Transfer-Encoding: " + ENC_8BIT)
    lines.append("")
    if not report.postmaster_copy:
        lines += _template_lines(report)
    for rcpt in report.recipients:
        lines.append("")
        address = _mask(rcpt.address, utf8)
        reason = _mask(rcpt.reason or "(description unavailable)", utf8)
        if rcpt.orig_address and rcpt.orig_address.lower() != rcpt.address.lower():
            text = "<%s> (expanded from <%s>): %s" % (
                address, _mask(rcpt.orig_address, utf8), reason)
        else:
            text = "<%s>: %s" % (address, reason)
        lines += _wrap(text)
    return lines


def _addr_type(report: Report, address: str) -> str:
    return "utf-8" if report.smtputf8 and _is_utf8_address(address) else "rfc822"


def _status_lines(report: Report, boundary: str, eight_bit: bool) -> list[str]:
    utf8 = report.smtputf8
    lines = ["", "--" + boundary, "Content-Description: Delivery report",
             "Content-Type: message/%sdelivery-status" % ("global-" if utf8 else "")]
    if eight_bit and utf8:
        lines.append("Content-Transfer-Encoding: " + ENC_8BIT)
    lines.append("")
    lines.append("Reporting-MTA: dns; " + report.myhostname)
    if report.envid:
        lines.append("Original-Envelope-Id: " + _mask(report.envid, False))
    lines.append("X-%s-Queue-ID: %s" % (report.mail_name, report.queue_id))
    if report.sender:
        lines.append("X-%s-Sender: %s; %s" % (
            report.mail_name, _addr_type(report, report.sender), _mask(report.sender, utf8)))
    if report.arrival_time > 0:
        lines.append("Arrival-Date: " + mail_date(report.arrival_time))
    for rcpt in report.recipients:
        lines.append("")
        lines.append("Final-Recipient: %s; %s" % (
            _addr_type(report, rcpt.address), _mask(rcpt.address, utf8)))
        # Postfix always reports an Original-Recipient when it knows one:
        # the ORCPT as given, else the address before rewriting.
        if rcpt.dsn_orcpt:
            orcpt_type, sep, orcpt_addr = rcpt.dsn_orcpt.partition(";")
            if not sep:
                orcpt_type, orcpt_addr = "rfc822", rcpt.dsn_orcpt
            lines.append("Original-Recipient: %s; %s" % (
                _mask(orcpt_type.strip(), False), _mask(orcpt_addr.strip(), utf8)))
        elif rcpt.orig_address:
            lines.append("Original-Recipient: %s; %s" % (
                _addr_type(report, rcpt.orig_address), _mask(rcpt.orig_address, utf8)))
        lines.append("Action: " + _mask(_action(report, rcpt), False))
        lines.append("Status: " + _mask(_status(report, rcpt), False))
        if rcpt.mta_type and rcpt.mta_name:
            lines += _wrap("Remote-MTA: %s; %s" % (
                _mask(rcpt.mta_type, False), _mask(rcpt.mta_name, utf8)))
        if rcpt.diag_type and rcpt.diag_text:
            lines += _wrap("Diagnostic-Code: %s; %s" % (
                _mask(rcpt.diag_type, False), _mask(rcpt.diag_text, utf8)))
        else:
            lines += _wrap("Diagnostic-Code: X-%s; %s" % (
                report.mail_name, _mask(rcpt.reason or "(description unavailable)", utf8)))
        if report.kind is ReportKind.DELAY and report.arrival_time > 0:
            lines.append("Will-Retry-Until: " + mail_date(
                report.arrival_time + report.maximal_queue_lifetime))
    return lines


def headers_only(report: Report) -> bool:
    """Whether part 3 carries only the original headers (RET=HDRS or too large)."""
    if report.ret == DSN_RET_HDRS:
        return True
    # bounce_original(): never cut a message in the middle; above the limit
    # (or of unknown size) send the headers only.
    return report.bounce_size_limit > 0 and (
        report.content_size <= 0 or report.content_size > report.bounce_size_limit)


_HEADER_RE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


def _is_header_line(line: bytes) -> bool:
    """Postfix IS_HEADER(): a continuation line or `name:`."""
    return line[:1] in (b" ", b"\t") or bool(_HEADER_RE.match(line))


def _iter_header_section(content: Iterable[bytes]) -> Iterator[bytes]:
    """The leading header lines of content, each with its CRLF, streamed."""
    pending = b""
    for block in content:
        pending += block
        start = 0
        while True:
            nl = pending.find(b"\n", start)
            if nl < 0:
                break
            line = pending[start:nl + 1]
            if not _is_header_line(line.rstrip(b"\r\n")):
                return
            yield line
            start = nl + 1
        pending = pending[start:]
    if pending and _is_header_line(pending):
        yield pending + b"\r\n"


def _crlf(lines: Iterable[str], utf8: bool) -> bytes:
    enc = "utf-8" if utf8 else "ascii"
    return "".join(line + "\r\n" for line in lines).encode(enc, "replace")


def iter_report(report: Report, content: Iterable[bytes] | None) -> Iterator[bytes]:
    """Yield the notice in CRLF form; the original is streamed from `content`."""
    boundary = report.mime_boundary()
    eight_bit = report.encoding == ENC_8BIT or report.smtputf8
    utf8 = report.smtputf8 or eight_bit
    yield _crlf(_header_lines(report, boundary, eight_bit), utf8)
    yield _crlf(_human_lines(report, boundary, eight_bit), utf8)
    yield _crlf(_status_lines(report, boundary, eight_bit), utf8)

    hdrs = headers_only(report)
    undelivered = report.kind in (ReportKind.FAILURE, ReportKind.DELAY)
    part = ["", "--" + boundary,
            "Content-Description: %s%s" % ("Undelivered " if undelivered else "",
                                           "Message Headers" if hdrs else "Message")]
    if report.smtputf8:
        part.append("Content-Type: message/%s" % ("global-headers" if hdrs else "global"))
    else:
        part.append("Content-Type: %s" % ("text/rfc822-headers" if hdrs else "message/rfc822"))
    if eight_bit:
        part.append("Content-Transfer-Encoding: " + ENC_8BIT)
    part.append("")
    if content is None:
        part.append("\t--- Undelivered message unavailable ---")
        part += ["", "--%s--" % boundary]
        yield _crlf(part, utf8)
        return
    part.append("Return-Path: <%s>" % _mask(report.sender, utf8))
    yield _crlf(part, utf8)

    last = b"\n"
    source = _iter_header_section(content) if hdrs else content
    for block in source:
        if block:
            last = block[-1:]
            yield block
    tail = b"" if last == b"\n" else b"\r\n"
    yield tail + _crlf(["", "--%s--" % boundary], utf8)


def compose_report(report: Report, content: Iterable[bytes] | None) -> bytes:
    """The whole notice as bytes (bounded by bounce_size_limit for the original)."""
    return b"".join(iter_report(report, content))
