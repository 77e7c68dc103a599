"""SMTP/LMTP client protocol: a sans-IO state machine (RFC 5321, 2920, 3461).

NAME
    smtp_client.protocol - replies in, commands and per-recipient results out

SYNOPSIS
    from smtp_client.protocol import Client, Message, Rcpt, ContentEncoder, events
    c = Client(peer="mx.example.org[192.0.2.7]:25", helo_name="me.example.com",
               myhostname="me.example.com", tls="may")
    evs = c.receive(bytes_from_socket)     # -> list of events
    sock.write(c.pull())                   # bytes to send, after every call
    c.begin(Message(...))                  # when Ready: MAIL, RCPT..., DATA
    enc = ContentEncoder(); sock.write(enc.encode(block)) ...  # on SendContent
    c.content_end(enc.finish(), rset=True) # "." (and RSET for connection reuse)
    c.tls_established() / c.reset() / c.quit()
    c.connection_lost(timeout=False)       # EOF or timeout -> events
    c.waiting_for                          # stage of the next expected reply

EVENTS
    Ready()                 a mail transaction may begin
    StartTLS()              do the TLS handshake now, then tls_established()
    SendContent()           stream the content through a ContentEncoder,
                            then content_end()
    TransactionDone(results, mail_failed, reused_ok)
                            one RcptResult per recipient of the Message
    SessionFailed(failure)  this connection cannot deliver; close it
    Closed()                QUIT answered

DESCRIPTION
    The greeting, EHLO (LHLO for LMTP), a HELO fallback when EHLO is
    refused with anything but 421, the capabilities (PIPELINING, SIZE,
    8BITMIME, SMTPUTF8, DSN, STARTTLS, CHUNKING, AUTH,
    ENHANCEDSTATUSCODES), opportunistic STARTTLS (tls="may") or required
    STARTTLS (tls="encrypt"), SMTP AUTH when `sasl` credentials are given
    (ClientSasl: PLAIN, else LOGIN, among the allowed mechanisms; none
    allowed: "SASL authentication failed; cannot authenticate to server
    H[IP]: no mechanism available", 4.7.0; a 5xx is deferred as 4.x.x, as
    Postfix's smtp_sasl_auth_soft_bounce; a server that offers no AUTH is
    used without it, as Postfix does), then transactions.

    After the 220 to STARTTLS nothing more is read as SMTP until
    tls_established(): replies the server sent in the same packet, or
    before the handshake, are discarded (the client side of
    CVE-2011-0411).  With PIPELINING, MAIL,
    every RCPT and DATA go out in one write (RFC 2920); without it each
    command waits for its reply.

    MAIL FROM carries SIZE (when the peer has SIZE), BODY=8BITMIME (only
    when the peer offers 8BITMIME; XXX no 8-to-7 bit conversion is done
    for peers without it), SMTPUTF8 (when the message needs it and the
    peer offers it), RET and ENVID (when the peer has DSN).  RCPT TO
    carries NOTIFY and ORCPT when the peer has DSN; without an ORCPT of
    its own, the original recipient is sent as ORCPT=rfc822;..., as
    Postfix does.

    Checks before MAIL, as Postfix's smtp_proto.c (each bounces every
    recipient of the message and leaves the session usable):
        5.3.4 message size N exceeds size limit M of server HOST[IP]
        5.6.7 SMTPUTF8 is required, but was not offered by host HOST[IP]
    SMTPUTF8 is "required" when the message carries SMTPUTF8 flags beyond
    "requested" (UTF-8 headers) or a non-ASCII envelope address.

    Result texts are Postfix's:
        host mx.example.org[192.0.2.7] said: 550 5.1.1 <x@y>: Recipient
          address rejected (in reply to RCPT TO command)
        host H[IP] refused to talk to me: 554 ...           (greeting)
        lost connection with H[IP] while sending RCPT TO    (4.4.2)
        conversation with H[IP] timed out while sending MAIL FROM (4.4.2)
    A multi-line reply is quoted with its lines joined by spaces.  The DSN
    status is the reply's enhanced code, or class.0.0 from the reply code.

    ContentEncoder turns queue-file content (CRLF lines, dot-unstuffed, in
    blocks cut anywhere) into DATA bytes: "\\r\\n." becomes "\\r\\n.." with
    bytes.replace, across block boundaries too, a leading "." is doubled,
    and finish() returns the end of data, "\\r\\n.\\r\\n" or ".\\r\\n", adding a
    CRLF when the content does not end with one.

FAILURES
    A reply line that is not "NNN", "NNN-..." or "NNN ..." ends the
    session: undecided recipients are deferred with 4.5.0 and the peer's
    line quoted (XXX Postfix records a protocol error and goes on; we
    cannot trust the reply sequence after garbage).  Reply lines longer
    than max_line are cut; a reply's stored text is bounded by max_line
    too, the rest is read and dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from fulmar.smtp.address import xtext_encode

# Postfix DSN NOTIFY bit mask (dsn_mask.h).
NOTIFY_NEVER = 1 << 0
NOTIFY_SUCCESS = 1 << 1
NOTIFY_DELAY = 1 << 2
NOTIFY_FAILURE = 1 << 3
# Postfix SMTPUTF8 flags (smtputf8.h): only REQUESTED means "all ASCII".
SMTPUTF8_REQUESTED = 1 << 0

STAGE_GREETING = "greeting"
STAGE_HELO = "helo"
STAGE_HELO_FALLBACK = "helo_fallback"
STAGE_STARTTLS = "starttls"
STAGE_TLS = "tls"
STAGE_AUTH = "auth"
STAGE_MAIL = "mail"
STAGE_RCPT = "rcpt"
STAGE_DATA = "data"
STAGE_CONTENT = "content"
STAGE_DOT = "dot"
STAGE_RSET = "rset"
STAGE_QUIT = "quit"

_WHILE = {
    STAGE_GREETING: "receiving the initial server greeting",
    STAGE_HELO: "performing the {helo} handshake",
    STAGE_HELO_FALLBACK: "performing the HELO handshake",
    STAGE_STARTTLS: "receiving the STARTTLS response",
    STAGE_TLS: "performing the TLS handshake",
    STAGE_AUTH: "performing the SASL authentication",
    STAGE_MAIL: "sending MAIL FROM",
    STAGE_RCPT: "sending RCPT TO",
    STAGE_DATA: "sending DATA command",
    STAGE_CONTENT: "sending message body",
    STAGE_DOT: "sending end of data -- message may be sent more than once",
    STAGE_RSET: "sending RSET",
    STAGE_QUIT: "sending QUIT",
}
_IN_REPLY_TO = {
    STAGE_HELO: "{helo}",
    STAGE_HELO_FALLBACK: "HELO",
    STAGE_STARTTLS: "STARTTLS",
    STAGE_AUTH: "AUTH",
    STAGE_MAIL: "MAIL FROM",
    STAGE_RCPT: "RCPT TO",
    STAGE_DATA: "DATA",
    STAGE_CONTENT: "end of DATA",
    STAGE_DOT: "end of DATA",
    STAGE_RSET: "RSET",
    STAGE_QUIT: "QUIT",
    STAGE_GREETING: "initial greeting",
}

DSN_LOST = "4.4.2"
DSN_PROTOCOL = "4.5.0"


class ProtocolError(Exception):
    """The peer sent something that is not an SMTP reply."""

    def __init__(self, line: str):
        super().__init__(line)
        self.line = line


# Replies -------------------------------------------------------------------

@dataclass(slots=True)
class Reply:
    """One (possibly multi-line) reply as received."""

    code: int
    lines: list[str]          # full lines, e.g. "250-PIPELINING", without CRLF

    @property
    def enhanced(self) -> str:
        """The RFC 3463 code of the first line, or ""."""
        first = self.lines[0][4:] if self.lines else ""
        word = first.split(" ", 1)[0]
        parts = word.split(".")
        if (len(parts) == 3 and parts[0] in ("2", "4", "5")
                and all(p.isdigit() and 1 <= len(p) <= 3 for p in parts[1:])):
            return word
        return ""

    @property
    def dsn(self) -> str:
        """Enhanced code with the reply code's class, else class.0.0."""
        cls = str(self.code)[0] if self.code >= 100 else "4"
        if cls not in "245":
            cls = "4"
        enh = self.enhanced
        return cls + enh[1:] if enh else f"{cls}.0.0"

    @property
    def text(self) -> str:
        """The reply as Postfix quotes it: lines joined by spaces."""
        return " ".join(self.lines)

    @property
    def keywords(self) -> list[str]:
        """Text after the code on each line (EHLO keywords)."""
        return [line[4:] for line in self.lines]


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class ReplyParser:
    """Bytes in, complete replies out; bounded memory."""

    def __init__(self, max_line: int):
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False       # inside an over-long line
        self._lines: list[str] = []
        self._stored = 0

    def feed(self, data: bytes) -> list[Reply]:
        out: list[Reply] = []
        self._buf += data
        start = 0
        buf = self._buf
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            raw = bytes(buf[start:nl])
            start = nl + 1
            if self._skipping:
                self._skipping = False
                continue
            reply = self._line(raw.rstrip(b"\r")[: self.max_line])
            if reply is not None:
                out.append(reply)
        del buf[:start]
        if len(buf) > self.max_line and not self._skipping:
            # Keep the head of an over-long line, drop the rest up to LF.
            reply = self._line(bytes(buf[: self.max_line]).rstrip(b"\r"))
            if reply is not None:
                out.append(reply)
            self._skipping = True
            buf.clear()
        elif self._skipping:
            buf.clear()
        return out

    def _line(self, raw: bytes) -> Reply | None:
        line = _printable(raw)
        if (len(line) < 3 or not line[:3].isdigit()
                or (len(line) > 3 and line[3] not in " -")):
            raise ProtocolError(line)
        if self._stored < self.max_line:
            self._lines.append(line)
            self._stored += len(line)
        if len(line) > 3 and line[3] == "-":
            return None
        reply = Reply(int(line[:3]), self._lines or [line])
        self._lines = []
        self._stored = 0
        return reply


# Capabilities ----------------------------------------------------------------

@dataclass(slots=True)
class Capabilities:
    esmtp: bool = False
    pipelining: bool = False
    size: int | None = None          # None: no SIZE; 0: no limit given
    eightbitmime: bool = False
    smtputf8: bool = False
    dsn: bool = False
    starttls: bool = False
    chunking: bool = False
    enhancedstatuscodes: bool = False
    auth: list[str] = field(default_factory=list)
    greeting_name: str = ""
    warnings: list[str] = field(default_factory=list)


def parse_ehlo(reply: Reply) -> Capabilities:
    """Capabilities from a 250 EHLO/LHLO reply (first line is the name)."""
    caps = Capabilities(esmtp=True)
    words = reply.keywords
    caps.greeting_name = words[0].split(" ", 1)[0] if words else ""
    for kw in words[1:]:
        parts = kw.split()
        if not parts:
            continue
        name = parts[0].upper()
        if name == "PIPELINING":
            caps.pipelining = True
        elif name == "SIZE":
            caps.size = 0
            if len(parts) > 1:
                if parts[1].isdigit():
                    caps.size = int(parts[1])
                else:
                    caps.warnings.append(f'bad EHLO SIZE limit "{parts[1]}"')
        elif name == "8BITMIME":
            caps.eightbitmime = True
        elif name == "SMTPUTF8":
            caps.smtputf8 = True
        elif name == "DSN":
            caps.dsn = True
        elif name == "STARTTLS":
            caps.starttls = True
        elif name == "CHUNKING":
            caps.chunking = True
        elif name == "ENHANCEDSTATUSCODES":
            caps.enhancedstatuscodes = True
        elif name == "AUTH" or name.startswith("AUTH="):
            mechs = parts[1:] if name == "AUTH" else [name[5:]] + parts[1:]
            for m in mechs:
                if m.upper() not in caps.auth:
                    caps.auth.append(m.upper())
    return caps


# Envelope encoding -----------------------------------------------------------

def notify_param(mask: int) -> str:
    if mask & NOTIFY_NEVER:
        return "NEVER"
    names = []
    if mask & NOTIFY_SUCCESS:
        names.append("SUCCESS")
    if mask & NOTIFY_DELAY:
        names.append("DELAY")
    if mask & NOTIFY_FAILURE:
        names.append("FAILURE")
    return ",".join(names)


def orcpt_param(orcpt: str, orig_address: str) -> str:
    """ORCPT=type;xtext from the stored "type;address" or the original address."""
    if orcpt:
        kind, sep, addr = orcpt.partition(";")
        if not sep:
            kind, addr = "rfc822", orcpt
        # The address may be stored xtext-decoded; encode it for the wire.
        return f"{kind};{xtext_encode(addr)}"
    if orig_address:
        return f"rfc822;{xtext_encode(orig_address)}"
    return ""


def _ret_param(ret) -> str:
    if isinstance(ret, str):
        r = ret.upper()
        return r if r in ("FULL", "HDRS") else ""
    # Postfix's mask: DSN_RET_FULL 1, DSN_RET_HDRS 2.
    return {1: "FULL", 2: "HDRS"}.get(ret or 0, "")


@dataclass(slots=True)
class Rcpt:
    address: str
    orig_address: str = ""
    dsn_orcpt: str = ""
    dsn_notify: int = 0


@dataclass(slots=True)
class Message:
    sender: str
    recipients: list[Rcpt]
    size: int = 0
    body_8bit: bool = False
    smtputf8: int = 0            # Postfix SMTPUTF8 flag mask; 0 = not requested
    dsn_ret: object = ""         # "FULL" / "HDRS" / Postfix mask
    dsn_envid: str = ""


@dataclass(slots=True)
class RcptResult:
    status: str                  # "sent" | "deferred" | "bounced"
    dsn: str
    reason: str


@dataclass(slots=True)
class Failure:
    dsn: str
    reason: str
    stage: str
    code: int = 0                # reply code, 0 when not a reply

    @property
    def temporary(self) -> bool:
        return self.dsn.startswith("4")

    @property
    def status(self) -> str:
        return "deferred" if self.temporary else "bounced"

    def result(self) -> RcptResult:
        return RcptResult(self.status, self.dsn, self.reason)


# Events ------------------------------------------------------------------------

@dataclass(slots=True)
class Ready:
    pass


@dataclass(slots=True)
class StartTLS:
    pass


@dataclass(slots=True)
class SendContent:
    pass


@dataclass(slots=True)
class TransactionDone:
    results: list[RcptResult]
    mail_failed: Failure | None = None     # MAIL FROM or a pre-MAIL check failed
    session_failure: Failure | None = None  # the connection is gone


@dataclass(slots=True)
class SessionFailed:
    failure: Failure


@dataclass(slots=True)
class Closed:
    pass


def _needs_smtputf8(msg: Message) -> bool:
    if msg.smtputf8 & ~SMTPUTF8_REQUESTED:
        return True
    if not msg.sender.isascii():
        return True
    return any(not r.address.isascii() for r in msg.recipients)


# SASL ------------------------------------------------------------------------

@dataclass
class ClientSasl:
    """Credentials for one server; the password is kept out of repr()."""
    username: str
    password: str = field(repr=False)
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")   # allowed without TLS, in order of preference
    tls_mechanisms: tuple[str, ...] | None = None      # allowed with TLS (None: the same)

    def initial(self, mech: str) -> str:
        import base64
        if mech == "PLAIN":
            raw = b"\0" + self.username.encode("utf-8") + b"\0" + self.password.encode("utf-8")
            return base64.b64encode(raw).decode("ascii")
        return ""

    def login_answer(self, challenge: str) -> str:
        """LOGIN: answer "Username:" with the name, anything else with the password."""
        import base64
        import binascii
        try:
            prompt = base64.b64decode(challenge, validate=True).decode("utf-8", "replace").lower()
        except (binascii.Error, ValueError):
            prompt = ""
        value = self.username if prompt.startswith("user") else self.password
        return base64.b64encode(value.encode("utf-8")).decode("ascii")


# The client ------------------------------------------------------------------

class Client:
    """One SMTP/LMTP connection's protocol state; see the module docstring."""

    def __init__(self, *, peer: str, helo_name: str, myhostname: str = "",
                 lmtp: bool = False, tls: str = "none", max_line: int = 2048,
                 tls_active: bool = False, sasl: ClientSasl | None = None):
        self.peer = peer
        self.helo_name = helo_name
        self.myhostname = myhostname.lower().rstrip(".")
        self.lmtp = lmtp
        self.tls_policy = tls
        self.tls_active = tls_active
        self.sasl = sasl
        self.sasl_mechanism: str | None = None
        self.authenticated = False
        self.caps = Capabilities()
        self.helo_cmd = "LHLO" if lmtp else "EHLO"
        self.closed = False
        self._parser = ReplyParser(max_line)
        self._out = bytearray()
        self._expect: deque[tuple[str, int]] = deque([(STAGE_GREETING, -1)])
        self._events: list = []
        self._msg: Message | None = None
        self._results: list[RcptResult | None] = []
        self._accepted: list[int] = []
        self._mail_failure: Failure | None = None
        self._mail_ok = False
        self.mail_replied = False     # the current MAIL FROM got its reply
        self._data_done = False
        self.transactions = 0

    # -- output ----------------------------------------------------------
    def pull(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def _send_secret(self, line: str, stage: str) -> None:
        """Like _send, for AUTH lines: nothing about them is kept anywhere."""
        self._out += line.encode("ascii") + b"\r\n"
        self._expect.append((stage, -1))

    def _send(self, line: str, stage: str, index: int = -1) -> None:
        self._out += line.encode("utf-8") + b"\r\n"
        self._expect.append((stage, index))

    @property
    def waiting_for(self) -> str | None:
        return self._expect[0][0] if self._expect else None

    @property
    def in_transaction(self) -> bool:
        return self._msg is not None

    def _text_while(self, stage: str) -> str:
        return _WHILE.get(stage, "talking").format(helo=self.helo_cmd)

    def _said(self, reply: Reply, stage: str) -> Failure:
        cmd = _IN_REPLY_TO.get(stage, stage).format(helo=self.helo_cmd)
        return Failure(reply.dsn, f"host {self.peer} said: {reply.text} (in reply to {cmd} command)",
                       stage, reply.code)

    def _flush_events(self) -> list:
        evs, self._events = self._events, []
        return evs

    # -- input -----------------------------------------------------------
    def receive(self, data: bytes) -> list:
        if self.closed:
            return []
        if self.waiting_for == STAGE_TLS:
            return []     # plaintext between the 220 and the handshake: discarded
        try:
            replies = self._parser.feed(data)
        except ProtocolError as e:
            stage = self.waiting_for or STAGE_QUIT
            cmd = _IN_REPLY_TO.get(stage, stage).format(helo=self.helo_cmd)
            failure = Failure(DSN_PROTOCOL,
                              f"host {self.peer} said: {e.line} (in reply to {cmd} command)",
                              stage)
            self._fail_session(failure)
            return self._flush_events()
        for reply in replies:
            if self.closed:
                break
            if self.waiting_for == STAGE_TLS:
                # Sent after the 220 to STARTTLS, before the handshake: never SMTP.
                self._parser = ReplyParser(self._parser.max_line)
                break
            if not self._expect:
                # Unsolicited reply (e.g. 421 while idle): the peer is leaving.
                self._fail_session(self._said(reply, STAGE_RSET))
                break
            stage, index = self._expect.popleft()
            getattr(self, "_on_" + stage)(reply, index)
        return self._flush_events()

    def connection_lost(self, timeout: bool = False) -> list:
        """The socket closed or a read timed out."""
        if self.closed:
            return []
        stage = self.waiting_for or STAGE_QUIT
        if timeout:
            text = f"conversation with {self.peer} timed out while {self._text_while(stage)}"
        else:
            text = f"lost connection with {self.peer} while {self._text_while(stage)}"
        self._fail_session(Failure(DSN_LOST, text, stage))
        return self._flush_events()

    def content_timeout(self) -> list:
        """A write of the content did not drain in time."""
        self._expect.appendleft((STAGE_CONTENT, -1))
        return self.connection_lost(timeout=True)

    def _fail_session(self, failure: Failure) -> None:
        self.closed = True
        self._expect.clear()
        if self._msg is not None and failure.stage not in (STAGE_RSET, STAGE_QUIT):
            self._finish(session_failure=failure, default=failure)
        self._events.append(SessionFailed(failure))

    # -- session setup ------------------------------------------------------
    def _on_greeting(self, reply: Reply, _i: int) -> None:
        if reply.code // 100 != 2:
            self._fail_session(Failure(reply.dsn, f"host {self.peer} refused to talk to me: {reply.text}",
                                       STAGE_GREETING, reply.code))
            return
        words = reply.keywords[0].split() if reply.lines else []
        if self.myhostname and words and words[0].lower().rstrip(".") == self.myhostname:
            self._fail_session(Failure("5.4.6", f"host {self.peer} greeted me with my own hostname {words[0]}",
                                       STAGE_GREETING, reply.code))
            return
        self._send(f"{self.helo_cmd} {self.helo_name}", STAGE_HELO)

    def _on_helo(self, reply: Reply, _i: int) -> None:
        if reply.code // 100 != 2:
            if self.lmtp or reply.code == 421:
                self._fail_session(self._said(reply, STAGE_HELO))
            else:
                self._send(f"HELO {self.helo_name}", STAGE_HELO_FALLBACK)
            return
        self.caps = parse_ehlo(reply)
        name = self.caps.greeting_name.lower().rstrip(".")
        if self.myhostname and name == self.myhostname:
            self._fail_session(Failure("5.4.6", f"host {self.peer} replied to HELO/EHLO with my own "
                                                f"hostname {self.caps.greeting_name}", STAGE_HELO, reply.code))
            return
        if not self.tls_active and self.tls_policy in ("may", "encrypt"):
            if self.caps.starttls:
                self._send("STARTTLS", STAGE_STARTTLS)
                return
            if self.tls_policy == "encrypt":
                self._fail_session(Failure("4.7.4", f"TLS is required, but was not offered by host {self.peer}",
                                           STAGE_HELO))
                return
        if self.sasl is not None and self.caps.auth and not self.authenticated:
            self._start_auth()
            return
        self._events.append(Ready())

    def _start_auth(self) -> None:
        allowed = self.sasl.mechanisms
        if self.tls_active and self.sasl.tls_mechanisms is not None:
            allowed = self.sasl.tls_mechanisms
        mech = next((m for m in allowed if m in self.caps.auth), None)
        if mech is None:
            self._fail_session(Failure("4.7.0", "SASL authentication failed; cannot authenticate to server "
                                                f"{self.peer}: no mechanism available", STAGE_AUTH))
            return
        self.sasl_mechanism = mech
        initial = self.sasl.initial(mech)
        self._send_secret(f"AUTH {mech} {initial}" if initial else f"AUTH {mech}", STAGE_AUTH)

    def _on_auth(self, reply: Reply, _i: int) -> None:
        if reply.code == 334 and self.sasl_mechanism == "LOGIN":
            challenge = reply.keywords[0].strip() if reply.lines else ""
            self._send_secret(self.sasl.login_answer(challenge), STAGE_AUTH)
            return
        if reply.code // 100 == 2:
            self.authenticated = True
            self._events.append(Ready())
            return
        if reply.code == 334:       # PLAIN got a challenge after its initial response
            self._send_secret("*", STAGE_AUTH)
            return
        dsn = "4" + reply.dsn[1:]   # smtp_sasl_auth_soft_bounce = yes
        self._fail_session(Failure(dsn, f"SASL authentication failed; server {self.peer} said: {reply.text}",
                                   STAGE_AUTH, reply.code))

    def _on_helo_fallback(self, reply: Reply, _i: int) -> None:
        if reply.code // 100 != 2:
            self._fail_session(self._said(reply, STAGE_HELO_FALLBACK))
            return
        self.caps = Capabilities(esmtp=False)
        if self.tls_policy == "encrypt" and not self.tls_active:
            self._fail_session(Failure("4.7.4", f"TLS is required, but was not offered by host {self.peer}",
                                       STAGE_HELO))
            return
        self._events.append(Ready())

    def _on_starttls(self, reply: Reply, _i: int) -> None:
        if reply.code // 100 == 2:
            self._expect.append((STAGE_TLS, -1))   # nothing is read until tls_established
            self._events.append(StartTLS())
            return
        if self.tls_policy == "encrypt":
            self._fail_session(Failure(reply.dsn if reply.code // 100 == 4 else "4.7.5",
                                       f"TLS is required, but host {self.peer} refused to start TLS: {reply.text}",
                                       STAGE_STARTTLS, reply.code))
            return
        self._events.append(Ready())

    def tls_established(self) -> None:
        """The TLS handshake succeeded: say EHLO again (RFC 3207 §4.2)."""
        if self._expect and self._expect[0][0] == STAGE_TLS:
            self._expect.popleft()
        self.tls_active = True
        self.caps = Capabilities()
        self._send(f"{self.helo_cmd} {self.helo_name}", STAGE_HELO)

    # -- transactions ----------------------------------------------------------
    def begin(self, msg: Message) -> list:
        """Start a mail transaction (the session must be Ready)."""
        if self._msg is not None or self.closed:
            raise RuntimeError("begin() outside the Ready state")
        self._msg = msg
        n = len(msg.recipients)
        self._results = [None] * n
        self._accepted = []
        self._mail_failure = None
        self._mail_ok = False
        self.mail_replied = False
        self._data_done = False
        self.transactions += 1
        caps = self.caps
        if caps.size and msg.size > caps.size:
            f = Failure("5.3.4", f"message size {msg.size} exceeds size limit {caps.size} of server {self.peer}",
                        STAGE_MAIL)
            self._finish(mail_failed=f, default=f)
            return self._flush_events_ready()
        utf8 = msg.smtputf8 != 0 and _needs_smtputf8(msg)
        if utf8 and not caps.smtputf8:
            f = Failure("5.6.7", f"SMTPUTF8 is required, but was not offered by host {self.peer}", STAGE_MAIL)
            self._finish(mail_failed=f, default=f)
            return self._flush_events_ready()
        mail = f"MAIL FROM:<{msg.sender}>"
        if caps.size is not None:
            mail += f" SIZE={msg.size}"
        if msg.body_8bit and caps.eightbitmime:
            mail += " BODY=8BITMIME"
        if msg.smtputf8 and caps.smtputf8:
            mail += " SMTPUTF8"
        if caps.dsn:
            ret = _ret_param(msg.dsn_ret)
            if ret:
                mail += f" RET={ret}"
            if msg.dsn_envid:
                mail += f" ENVID={xtext_encode(msg.dsn_envid)}"
        self._send(mail, STAGE_MAIL)
        if caps.pipelining:
            for i in range(n):
                self._send_rcpt(i)
            self._send("DATA", STAGE_DATA)
        return self._flush_events()

    def _flush_events_ready(self) -> list:
        self._events.append(Ready())
        return self._flush_events()

    def _send_rcpt(self, i: int) -> None:
        r = self._msg.recipients[i]
        line = f"RCPT TO:<{r.address}>"
        if self.caps.dsn:
            if r.dsn_notify:
                line += f" NOTIFY={notify_param(r.dsn_notify)}"
            orcpt = orcpt_param(r.dsn_orcpt, r.orig_address)
            if orcpt:
                line += f" ORCPT={orcpt}"
        self._send(line, STAGE_RCPT, i)

    def _on_mail(self, reply: Reply, _i: int) -> None:
        self.mail_replied = True
        if reply.code // 100 == 2:
            self._mail_ok = True
            if not self.caps.pipelining:
                if self._msg.recipients:
                    self._send_rcpt(0)
                else:
                    self._after_rcpts()
            return
        self._mail_failure = self._said(reply, STAGE_MAIL)
        if not self.caps.pipelining:
            self._finish(mail_failed=self._mail_failure, default=self._mail_failure)
            self._events.append(Ready())

    def _on_rcpt(self, reply: Reply, i: int) -> None:
        if self._mail_failure is None:
            if reply.code // 100 == 2:
                self._accepted.append(i)
            else:
                self._results[i] = self._said(reply, STAGE_RCPT).result()
        if not self.caps.pipelining:
            if i + 1 < len(self._msg.recipients):
                self._send_rcpt(i + 1)
            else:
                self._after_rcpts()

    def _after_rcpts(self) -> None:
        """Without pipelining: DATA when some recipient was accepted."""
        if self._accepted:
            self._send("DATA", STAGE_DATA)
        else:
            self._end_without_data()

    def _end_without_data(self) -> None:
        self._finish(mail_failed=self._mail_failure, default=self._mail_failure)
        if self._mail_ok:
            # The server still holds our MAIL FROM; clear it for the next one.
            self._send("RSET", STAGE_RSET)
        else:
            self._events.append(Ready())

    def _on_data(self, reply: Reply, _i: int) -> None:
        if self._mail_failure is not None or not self._accepted:
            if reply.code // 100 == 3:
                # A peer that accepts DATA without recipients (RFC 2920 says
                # it must not); end the empty message and ignore the reply.
                self._out += b".\r\n"
                self._expect.append((STAGE_DOT, -2))
                return
            self._end_without_data()
            return
        if reply.code // 100 != 3:
            f = self._said(reply, STAGE_DATA)
            for i in self._accepted:
                self._results[i] = f.result()
            self._end_without_data()
            return
        self._expect.appendleft((STAGE_CONTENT, -1))
        self._events.append(SendContent())

    def content_end(self, terminator: bytes, rset: bool = False) -> list:
        """Send the end of data (and RSET to keep the connection for reuse)."""
        if self._expect and self._expect[0][0] == STAGE_CONTENT:
            self._expect.popleft()
        self._out += terminator
        if self.lmtp:
            for i in self._accepted:
                self._expect.append((STAGE_DOT, i))
        else:
            self._expect.append((STAGE_DOT, -1))
        if rset:
            self._send("RSET", STAGE_RSET)
        return self._flush_events()

    def _on_content(self, reply: Reply, _i: int) -> None:
        # A reply before the content was sent: the peer gave up on DATA.
        self._fail_session(self._said(reply, STAGE_CONTENT))

    def _on_dot(self, reply: Reply, i: int) -> None:
        if i == -2:   # end of an empty DATA we did not want
            self._end_without_data()
            return
        targets = self._accepted if i == -1 else [i]
        if reply.code // 100 == 2:
            res = RcptResult("sent", reply.dsn, reply.text)
        else:
            res = self._said(reply, STAGE_DOT).result()
        for j in targets:
            self._results[j] = res
        if i == -1 or i == self._accepted[-1]:
            self._data_done = True
            self._finish()
            if not (self._expect and self._expect[0][0] == STAGE_RSET):
                self._events.append(Ready())

    def _on_rset(self, reply: Reply, _i: int) -> None:
        if reply.code // 100 != 2:
            self._fail_session(self._said(reply, STAGE_RSET))
            return
        self._events.append(Ready())

    def _finish(self, mail_failed: Failure | None = None, session_failure: Failure | None = None,
                default: Failure | None = None) -> None:
        if self._msg is None:
            return
        fallback = default.result() if default else RcptResult("deferred", DSN_LOST, "delivery incomplete")
        results = []
        for r in self._results:
            if r is None or (session_failure is not None and r.status == "sent" and not self._data_done):
                results.append(fallback)
            else:
                results.append(r)
        self._msg = None
        self._events.append(TransactionDone(results, mail_failed, session_failure))

    # -- idle ------------------------------------------------------------------
    def reset(self) -> list:
        self._send("RSET", STAGE_RSET)
        return self._flush_events()

    def quit(self) -> list:
        self._send("QUIT", STAGE_QUIT)
        return self._flush_events()

    def _on_quit(self, reply: Reply, _i: int) -> None:
        self.closed = True
        self._expect.clear()
        self._events.append(Closed())

    def _on_tls(self, reply: Reply, _i: int) -> None:
        self._fail_session(self._said(reply, STAGE_STARTTLS))


# Content ---------------------------------------------------------------------

class ContentEncoder:
    """Dot-stuff queue-file content for DATA, block by block."""

    __slots__ = ("_bol", "_cr", "bytes_in")

    def __init__(self) -> None:
        self._bol = True      # the next byte starts a line
        self._cr = False      # the last byte was CR
        self.bytes_in = 0

    def encode(self, block: bytes) -> bytes:
        if not block:
            return b""
        self.bytes_in += len(block)
        out = block.replace(b"\r\n.", b"\r\n..")
        if self._bol and block[:1] == b".":
            out = b"." + out
        elif self._cr and block[:2] == b"\n.":
            # "\r" ended the previous block: this "\n." completes "\r\n.".
            out = b"\n.." + out[2:]
        self._bol = block.endswith(b"\r\n") or (self._cr and block == b"\n")
        self._cr = block.endswith(b"\r")
        return out

    def finish(self) -> bytes:
        if self._bol:
            return b".\r\n"
        if self._cr:
            return b"\n.\r\n"
        return b"\r\n.\r\n"
