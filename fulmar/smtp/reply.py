"""SMTP replies with enhanced status codes (RFC 5321 §4.2, RFC 3463).

NAME
    fulmar.smtp.reply - one SMTP reply and the replies Postfix's smtpd sends

SYNOPSIS
    from fulmar.smtp.reply import Reply
    r = Reply(250, "2.1.0", "Ok")
    r.to_bytes()                    -> b"250 2.1.0 Ok\\r\\n"
    Reply(250, "", "a\\nb").to_bytes() -> b"250-a\\r\\n250 b\\r\\n"
    r.is_positive / r.is_transient / r.is_permanent
    str(r)                          -> "250 2.1.0 Ok" (lines joined by "\\n")
    Reply.parse_access(text)        -> Reply | None   (access table "450 4.7.1 text")

DESCRIPTION
    A Reply is immutable.  Its text may hold several lines (separated by
    "\\n"); to_bytes() writes each as "code-enhanced text" with "-" on all
    but the last line, as a multi-line reply.  The enhanced code is written
    on every line, as Postfix does.  CR and LF are never copied into the
    wire form from the text (each line is cut at the first CR), so a reply
    built from peer data cannot inject a line.

    The module-level constants are the texts Postfix's smtpd uses
    (smtpd.c, smtpd_check.c); replies that carry the host name or an
    address are functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CODE_RE = re.compile(r"^([245]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3}))?(?:[ -](.*))?$", re.S)
_ENH_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str = ""
    text: str = ""
    _wire: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def lines(self) -> list[str]:
        """The reply as text lines, without line ends."""
        prefix = f"{self.enhanced} " if self.enhanced else ""
        parts = self.text.split("\n") if self.text else [""]
        out = []
        for i, part in enumerate(parts):
            part = part.split("\r", 1)[0]
            sep = "-" if i < len(parts) - 1 else " "
            line = f"{self.code}{sep}{prefix}{part}"
            out.append(line if part else line.rstrip(" "))
        return out

    def to_bytes(self) -> bytes:
        # Made once per Reply: the constants below (and a server's cached
        # EHLO reply) are sent in every session.
        out = self._wire
        if out is None:
            out = ("\r\n".join(self.lines()) + "\r\n").encode("utf-8", "surrogateescape")
            object.__setattr__(self, "_wire", out)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)

    @classmethod
    def parse(cls, text: str) -> Reply | None:
        """Parse "NXX [X.Y.Z] text" (one line); None when it is not a reply."""
        m = _CODE_RE.match(text.strip())
        if not m:
            return None
        code = int(m.group(1))
        enh = m.group(2) or ""
        if enh and enh[0] != str(code)[0]:
            # Postfix rewrites a mismatched class; keep the reply's class.
            enh = str(code)[0] + enh[1:]
        return cls(code, enh, (m.group(3) or "").strip())


# Connection-level replies -------------------------------------------------

def greeting(banner: str) -> Reply:
    return Reply(220, "", banner)


BYE = Reply(221, "2.0.0", "Bye")
OK = Reply(250, "2.0.0", "Ok")
MAIL_OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")
DATA_GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
HELP = Reply(214, "2.0.0", "Ok")  # XXX Postfix has no HELP (502 5.5.2); issue 3 lists it.
ETRN_QUEUED = Reply(250, "", "Queuing started")
# Postfix's ETRN replies carry no enhanced status code (smtpd.c etrn_cmd).
ETRN_UNAVAILABLE = Reply(458, "", "Unable to queue messages")


def etrn_denied(site: str) -> Reply:
    return Reply(459, "", f"<{site}>: service unavailable")


def queued_as(queue_id: str) -> Reply:
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


def bdat_chunk_ok(size: int) -> Reply:
    return Reply(250, "2.0.0", f"Ok: {size} bytes")


def vrfy_cannot(addr: str) -> Reply:
    return Reply(252, "2.0.0", f"<{addr}>")


# Syntax and sequence errors -----------------------------------------------

BAD_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
BAD_UTF8 = Reply(500, "5.5.2", "Error: bad UTF-8 syntax")
LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")  # XXX text unverified against Postfix
UNRECOGNIZED = Reply(502, "5.5.2", "Error: command not recognized")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
VRFY_DISABLED = Reply(502, "5.5.1", "VRFY command is disabled")

SYNTAX_HELO = Reply(501, "", "Syntax: HELO hostname")
SYNTAX_EHLO = Reply(501, "", "Syntax: EHLO hostname")
SYNTAX_MAIL = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
SYNTAX_RCPT = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
SYNTAX_DATA = Reply(501, "5.5.4", "Syntax: DATA")
SYNTAX_RSET = Reply(501, "5.5.4", "Syntax: RSET")
SYNTAX_NOOP = Reply(501, "5.5.4", "Syntax: NOOP")  # Postfix accepts NOOP arguments; kept for completeness
SYNTAX_QUIT = Reply(501, "5.5.4", "Syntax: QUIT")
SYNTAX_VRFY = Reply(501, "5.5.4", "Syntax: VRFY address")
SYNTAX_ETRN = Reply(500, "", "Syntax: ETRN domain")
SYNTAX_BDAT = Reply(501, "5.5.4", "Syntax: BDAT count [LAST]")
SYNTAX_BDAT_DISCONNECT = Reply(521, "5.5.4", "Syntax: BDAT count [LAST]")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RCPT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_SIZE = Reply(501, "5.5.4", "Bad message size syntax")
BAD_RET = Reply(501, "5.5.4", "Bad RET parameter syntax")
BAD_ENVID = Reply(501, "5.5.4", "Bad ENVID parameter syntax")
BAD_NOTIFY = Reply(501, "5.5.4", "Error: Bad NOTIFY parameter syntax")
BAD_ORCPT = Reply(501, "5.5.4", "Error: Bad ORCPT parameter syntax")
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")


def unsupported_option(arg: str) -> Reply:
    return Reply(555, "5.5.4", f"Unsupported option: {arg}")


NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NO_VALID_RCPT = Reply(554, "5.5.1", "Error: no valid recipients")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "Error: DATA after BDAT")
MAIL_AFTER_BDAT = Reply(503, "5.5.1", "Error: MAIL after BDAT")
RCPT_AFTER_BDAT = Reply(503, "5.5.1", "Error: RCPT after BDAT")
NULL_BDAT = Reply(551, "5.7.1", "Null BDAT request")
MAIL_IN_PROGRESS = Reply(503, "5.5.1", "Error: MAIL transaction in progress")

# Limits --------------------------------------------------------------------

SIZE_EXCEEDED = Reply(552, "5.3.4", "Message size exceeds fixed limit")
CHUNK_TOO_BIG = Reply(552, "5.3.4", "Chunk exceeds message size limit")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Error: too many recipients")
SYNC_ERROR = Reply(554, "5.5.0", "Error: SMTP protocol synchronization")


def timeout(host: str) -> Reply:
    return Reply(421, "4.4.2", f"{host} Error: timeout exceeded")


def too_many_errors(host: str) -> Reply:
    return Reply(421, "4.7.0", f"{host} Error: too many errors")


def too_many_connections(client_addr: str) -> Reply:
    return Reply(421, "4.7.0", f"Error: too many connections from {client_addr}")


def bare_lf(code: int, host: str) -> Reply:
    """smtpd_forbid_bare_newline = reject; code is smtpd_forbid_bare_newline_reject_code."""
    return Reply(code, "5.5.2", f"{host} Error: bare <LF> received")


def service_unavailable(host: str) -> Reply:
    return Reply(421, "4.3.2", f"{host} Service shutting down, closing transmission channel")


# Queue / cleanup results -------------------------------------------------

QUEUE_WRITE_ERROR = Reply(451, "4.3.0", "Error: queue file write error")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
TEMP_LOOKUP_FAILURE = Reply(451, "4.3.0", "Temporary lookup failure")
SERVER_CONFIG_ERROR = Reply(451, "4.3.5", "Server configuration error")


def relay_denied(addr: str, code: int = 554) -> Reply:
    return Reply(code, "5.7.1" if code >= 500 else "4.7.1", f"<{addr}>: Relay access denied")


def enhanced_for(code: int, detail: str) -> str:
    """Make "X.Y.Z" agree with the reply code class (Postfix does the same)."""
    if not _ENH_RE.match(detail):
        return f"{str(code)[0]}.0.0"
    return str(code)[0] + detail[1:]
