"""The SMTP server protocol as a sans-IO state machine.

NAME
    smtpd.protocol - bytes in, events and reply bytes out

SYNOPSIS
    from smtpd.protocol import ServerProtocol, Settings, RcptTo, DataChunk, ...
    p = ServerProtocol(Settings.from_config(cfg))
    p.start()                          # queues the 220 greeting
    p.receive_data(data)               # from the client
    for e in p.events(): ...           # drain events (see below)
    p.respond(reply_or_None)           # answer the one pending decision
    out = p.data_to_send()             # bytes for the client
    p.closing                          # True: close once `out` is written
    p.timeout() / p.eof_received() / p.reset_after_tls()
    p.where, p.data_bytes, p.command_stats()   # for log lines

DESCRIPTION
    Input is processed as far as it can go; processing stops at a decision
    event (attribute `decision = True`) until the shell calls respond().
    respond(None) means "accept" (the protocol sends its own positive reply);
    respond(Reply) sends that reply instead.  Input arriving meanwhile is
    buffered, never interpreted out of order.

    Decision events: MailFrom, RcptTo, DataStart (DATA or first BDAT of a
    transaction; None → 354 or read the chunk), DataEnd (respond with the
    final reply, e.g. "250 2.0.0 Ok: queued as X"), BdatChunkEnd (non-LAST
    chunk; None → "250 2.0.0 Ok: N bytes"), Etrn, StartTls (None → the
    protocol answers "220 2.0.0 Ready to start TLS", throws away every
    byte already received and ignores input until the shell, after the
    handshake, calls reset_after_tls(); a Reply refuses), Authenticate
    (a completed SASL exchange: respond with smtpd.sasl.AUTH_OK to log the
    client in, or with the failure reply), ErrorSleep (the shell sleeps
    smtpd_error_sleep_time, then respond(None)).  Information events:
    Helo, DataChunk, TransactionReset, Quit, ImproperPipelining,
    BareNewline, TooManyErrors, NonSmtpCommand, LineTooLong, AuthAborted
    (the client cancelled or garbled an exchange; for the warning line).

    TLS and AUTH (issue 6, RFC 3207, RFC 4954): STARTTLS is announced
    while TLS is off and Settings.starttls_available; with tls_required
    (smtpd_tls_security_level = encrypt) MAIL gets 530 5.7.0 Must issue a
    STARTTLS command first.  After the handshake the session starts over
    (HELO, MAIL, RCPT and any login are forgotten, CVE-2011-0411).  AUTH
    is announced with Settings.auth_mechanisms once TLS is on, with
    auth_mechanisms_without_tls before (empty with smtpd_tls_auth_only);
    the exchange itself (PLAIN, LOGIN, "*", base64 errors, the response
    length limit) runs here through smtpd.sasl.ServerExchange.  The
    ImproperPipelining event of an AUTH command never carries the
    pipelined bytes: they may hold a password.

    DATA is a buffer scan, not a line loop: the end of data is found with
    bytes.find(b"\\r\\n.\\r\\n") over the raw stream (a virtual CRLF precedes
    the first line when the DATA command ended in CRLF), so only
    <CR><LF>.<CR><LF> ever ends DATA; <LF>.<LF>, <CR>.<CR>, <LF>.<CR><LF>
    and <CR><LF>.<LF> never do, whatever smtpd_forbid_bare_newline says
    (Fulmar's "no" keeps bare LF but, unlike Postfix's, still requires the
    standard end; a deliberate deviation: never vulnerable to smuggling).
    Bare LF is detected by comparing count(b"\\n") with count(b"\\r\\n");
    "normalize" rewrites it to CRLF with two replace() calls; "reject"
    discards the message, reads on to the real end and answers
    `$code 5.5.2 $myhostname Error: bare <LF> received` (521 disconnects).
    Dot-unstuffing is one replace(b"\\r\\n.", b"\\r\\n") per region.  The
    stream is cut only after a LF (so unstuffing and the end search see
    whole lines) or, for a partial line of line_length_limit bytes or more,
    anywhere except between CR and LF; such a cut leaves the next bytes
    mid-line, so the tail of an over-long line is never a line start: it
    can become neither an end of data nor a command.  Content reaches the
    shell as DataChunk(bytes) with CRLF line ends, already unstuffed.

    Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP ETRN
    STARTTLS AUTH; replies are Postfix's (fulmar.smtp.reply).  Command lines
    longer than line_length_limit are refused (500 5.5.2) and skipped up to
    their end.  With smtpd_forbid_unauth_pipelining, a recognized command
    followed by more input where RFC 2920 forbids it (after EHLO, HELO,
    DATA, NOOP, VRFY, ETRN, STARTTLS, AUTH, or any command before PIPELINING
    was announced), or input sent before the greeting, gets
    `554 5.5.0 Error: SMTP protocol synchronization` and the connection is
    closed.  (Postfix's smtpd only sees pre-greeting input through the
    pipelining check; ours also catches a single early command when the
    greeting is delayed by the client hostname lookup.)

    Error counting as Postfix: every 4xx/5xx reply counts; NOOP, VRFY,
    ETRN and RSET beyond smtpd_junk_command_limit count; from
    smtpd_soft_error_limit errors on, each error reply is preceded by an
    ErrorSleep decision; at smtpd_hard_error_limit:
    `421 4.7.0 $myhostname Error: too many errors` and close.

FAILURE BEHAVIOUR
    No input makes this module raise: every malformed line gets a Postfix
    reply.  Methods called in the wrong state (respond() without a pending
    decision) raise RuntimeError: that is a bug in the shell.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

from fulmar.smtp import address as A
from fulmar.smtp import reply as R
from fulmar.smtp.reply import Reply

CRLF = b"\r\n"
END_MARK = b"\r\n.\r\n"

# Command groups (RFC 2920 §3.1): these must be the last in a pipelined group.
_LAST_IN_GROUP = frozenset({"EHLO", "HELO", "DATA", "NOOP", "VRFY", "ETRN", "STARTTLS", "AUTH", "EXPN"})
_JUNK = frozenset({"NOOP", "VRFY", "ETRN", "RSET"})
# Order of the disconnect-line counters (Postfix's command table order).
_STATS_ORDER = ("helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat",
                "rset", "noop", "vrfy", "etrn", "quit", "help")
READY_TO_START_TLS = Reply(220, "2.0.0", "Ready to start TLS")
_BARE_MODES = {"yes": "normalize", "normalize": "normalize", "reject": "reject", "no": "no"}


# ----------------------------------------------------------------------
# Events.  `decision = True` ones wait for respond().

class Event:
    decision = False

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in getattr(self, "__slots__", ()))
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and all(
            getattr(self, k) == getattr(other, k) for k in getattr(self, "__slots__", ()))


class Helo(Event):
    __slots__ = ("name", "esmtp")

    def __init__(self, name: str, esmtp: bool):
        self.name, self.esmtp = name, esmtp


class MailFrom(Event):
    __slots__ = ("path", "params")
    decision = True

    def __init__(self, path: A.Path, params: A.MailParams):
        self.path, self.params = path, params


class RcptTo(Event):
    __slots__ = ("path", "params")
    decision = True

    def __init__(self, path: A.Path, params: A.RcptParams):
        self.path, self.params = path, params


class DataStart(Event):
    __slots__ = ("bdat",)
    decision = True

    def __init__(self, bdat: bool):
        self.bdat = bdat


class DataChunk(Event):
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


class DataEnd(Event):
    """End of DATA or of BDAT LAST.  error: the reply the protocol already
    decided on (size exceeded, bare LF); the shell then discards the message
    and responds with that reply."""
    __slots__ = ("error", "size")
    decision = True

    def __init__(self, error: Reply | None, size: int):
        self.error, self.size = error, size


class BdatChunkEnd(Event):
    __slots__ = ("size", "error")
    decision = True

    def __init__(self, size: int, error: Reply | None):
        self.size, self.error = size, error


class TransactionReset(Event):
    """The MAIL transaction was abandoned (RSET, HELO, QUIT, error, EOF)."""
    __slots__ = ()


class Quit(Event):
    __slots__ = ()


class Etrn(Event):
    __slots__ = ("site",)
    decision = True

    def __init__(self, site: str):
        self.site = site


class StartTls(Event):
    __slots__ = ()
    decision = True


class Authenticate(Event):
    """A completed AUTH exchange; `credentials` hides the password in repr()."""
    __slots__ = ("credentials",)
    decision = True

    def __init__(self, credentials):
        self.credentials = credentials

    @property
    def mechanism(self) -> str:
        return self.credentials.mechanism


class AuthAborted(Event):
    __slots__ = ("mechanism", "reply", "username")

    def __init__(self, mechanism: str, reply: Reply, username: str = ""):
        self.mechanism, self.reply, self.username = mechanism, reply, username


class ErrorSleep(Event):
    """Sleep smtpd_error_sleep_time, then respond(None)."""
    __slots__ = ()
    decision = True


class ImproperPipelining(Event):
    __slots__ = ("command", "pending")

    def __init__(self, command: str, pending: bytes):
        self.command, self.pending = command, pending


class BareNewline(Event):
    __slots__ = ("where",)

    def __init__(self, where: str):
        self.where = where


class TooManyErrors(Event):
    __slots__ = ("where",)

    def __init__(self, where: str):
        self.where = where


class NonSmtpCommand(Event):
    __slots__ = ("line",)

    def __init__(self, line: str):
        self.line = line


class LineTooLong(Event):
    __slots__ = ("where",)

    def __init__(self, where: str):
        self.where = where


@dataclass(frozen=True)
class Settings:
    """The smtpd parameters the protocol needs (Postfix names in comments)."""
    myhostname: str                  # myhostname
    banner: str                      # smtpd_banner, expanded
    helo_required: bool              # smtpd_helo_required
    hard_error_limit: int            # smtpd_hard_error_limit
    soft_error_limit: int            # smtpd_soft_error_limit
    junk_command_limit: int          # smtpd_junk_command_limit
    recipient_limit: int             # smtpd_recipient_limit
    message_size_limit: int          # message_size_limit (0 = none)
    line_length_limit: int           # line_length_limit
    forbid_bare_newline: str         # smtpd_forbid_bare_newline: normalize|reject|no
    bare_newline_reject_code: int    # smtpd_forbid_bare_newline_reject_code
    forbid_unauth_pipelining: bool   # smtpd_forbid_unauth_pipelining
    disable_vrfy: bool               # disable_vrfy_command
    discard_ehlo_keywords: frozenset[str]  # smtpd_discard_ehlo_keywords (upper case)
    smtputf8_enable: bool            # smtputf8_enable
    strict_rfc821_envelopes: bool    # strict_rfc821_envelopes
    forbidden_commands: frozenset[str] = frozenset({"CONNECT", "GET", "POST"})  # smtpd_forbidden_commands
    starttls_available: bool = False  # smtpd_tls_security_level may/encrypt, with a usable certificate
    tls_required: bool = False        # smtpd_tls_security_level = encrypt
    tls_wrapper: bool = False         # smtpd_tls_wrappermode: TLS from the first byte
    auth_enabled: bool = False        # smtpd_sasl_auth_enable
    auth_mechanisms: tuple[str, ...] = ()  # offered with TLS (smtpd_sasl_tls_security_options)
    auth_mechanisms_without_tls: tuple[str, ...] = ()  # offered without TLS (empty with smtpd_tls_auth_only)
    auth_hidden: bool = False         # smtpd_sasl_exceptions_networks: accept AUTH, do not announce it
    sasl_response_limit: int = 12288  # smtpd_sasl_response_limit

    @classmethod
    def from_config(cls, cfg) -> Settings:
        mode = _BARE_MODES.get(str(cfg.get("smtpd_forbid_bare_newline")).lower(), "normalize")
        try:
            forbidden = cfg.get("smtpd_forbidden_commands")
        except Exception:  # XXX not in the registry yet: Postfix's default names
            forbidden = ["CONNECT", "GET", "POST"]
        return cls(
            myhostname=cfg.get("myhostname"),
            banner=cfg.get("smtpd_banner"),
            helo_required=cfg.get("smtpd_helo_required"),
            hard_error_limit=cfg.get("smtpd_hard_error_limit"),
            soft_error_limit=cfg.get("smtpd_soft_error_limit"),
            junk_command_limit=cfg.get("smtpd_junk_command_limit"),
            recipient_limit=cfg.get("smtpd_recipient_limit"),
            message_size_limit=cfg.get("message_size_limit"),
            line_length_limit=cfg.get("line_length_limit"),
            forbid_bare_newline=mode,
            bare_newline_reject_code=cfg.get("smtpd_forbid_bare_newline_reject_code"),
            forbid_unauth_pipelining=cfg.get("smtpd_forbid_unauth_pipelining"),
            disable_vrfy=cfg.get("disable_vrfy_command"),
            discard_ehlo_keywords=frozenset(k.upper() for k in cfg.get("smtpd_discard_ehlo_keywords")),
            smtputf8_enable=cfg.get("smtputf8_enable"),
            strict_rfc821_envelopes=cfg.get("strict_rfc821_envelopes"),
            forbidden_commands=frozenset(w.upper() for w in forbidden if ":" not in w),
        )

    def with_overrides(self, **kw) -> Settings:
        return replace(self, **kw)


# (id(settings), tls_active) -> (settings, EHLO reply); see _ehlo_reply.
_EHLO_REPLIES: dict = {}

# Modes of the input scanner.
_CMD, _DATA, _BDAT, _CLOSED, _AUTH, _HANDSHAKE = range(6)


class ServerProtocol:
    def __init__(self, settings: Settings):
        self.s = settings
        self._buf = bytearray()
        self._out = bytearray()
        self._held = bytearray()          # reply waiting for an ErrorSleep
        self._events: deque[Event] = deque()
        self._pending: Callable[[Reply | None], None] | None = None
        self._pending_event: Event | None = None
        self._mode = _CMD
        self._started = False
        self._close = False
        self._skip_line = False           # skipping the rest of an over-long command
        # session state
        self.helo_name: str | None = None
        self.esmtp = False
        self.where = "CONNECT"
        self.error_count = 0
        self.junk_count = 0
        self.tls_active = settings.tls_wrapper
        self.sasl_username: str | None = None
        self.sasl_method: str | None = None
        self._sasl = None                 # the running smtpd.sasl.ServerExchange
        self._stats: dict[str, list[int]] = {}
        self._unknown = [0, 0]
        # transaction state
        self._reset_transaction(notify=False)
        # DATA/BDAT scanner state
        self.data_bytes = 0
        self._data_error: Reply | None = None
        self._at_line_start = True
        self._prev_crlf = True
        self._bdat_reject: Reply | None = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_chunk = 0

    # ------------------------------------------------------------------
    # public interface

    def start(self) -> None:
        """Send the greeting (or refuse a client that talked first)."""
        self._started = True
        if self._buf and self.s.forbid_unauth_pipelining:
            self._emit(ImproperPipelining("CONNECT", bytes(self._buf[:100])))
            self._send(R.SYNC_ERROR, count=False)
            self._close_now()
            return
        self._send(R.greeting(self.s.banner), count=False)
        self._process()

    def receive_data(self, data: bytes) -> None:
        if self._mode in (_CLOSED, _HANDSHAKE):
            # _HANDSHAKE: plaintext after "220 Ready to start TLS" is never
            # a command (CVE-2011-0411).
            return
        self._buf += data
        if self._started:
            self._process()

    def events(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def closing(self) -> bool:
        return self._close and not self._held

    @property
    def pending(self) -> Event | None:
        return self._pending_event

    def respond(self, reply: Reply | None = None) -> None:
        cont = self._pending
        if cont is None:
            raise RuntimeError("respond() without a pending decision")
        self._pending = None
        self._pending_event = None
        cont(reply)
        if not self._pending:
            self._check_hard_limit()
            self._process()

    def timeout(self) -> None:
        """smtpd_timeout expired: 421 and close."""
        if self._mode == _CLOSED:
            return
        self._abort_transaction()
        self._send(R.timeout(self.s.myhostname), count=False)
        self._close_now()

    def eof_received(self) -> None:
        """The client closed its side: the transaction (if any) is abandoned."""
        self._abort_transaction()
        self._mode = _CLOSED
        self._close = True

    def shutdown(self) -> None:
        """Server stopping: 421 and close (only between transactions)."""
        self._send(R.service_unavailable(self.s.myhostname), count=False)
        self._abort_transaction()
        self._close_now()

    def reset_after_tls(self) -> None:
        """After a TLS handshake: forget buffered plaintext and the session (CVE-2011-0411)."""
        self._buf.clear()
        self.helo_name = None
        self.esmtp = False
        self.sasl_username = self.sasl_method = None
        self._sasl = None
        self._reset_transaction(notify=True)
        self.tls_active = True
        if self._mode != _CLOSED:
            self._mode = _CMD
            if self._started:
                self._process()

    def command_stats(self) -> str:
        """The counters of Postfix's disconnect line: "ehlo=1 mail=1 ... commands=5"."""
        parts = []
        ok_all = total_all = 0
        for name in _STATS_ORDER:
            c = self._stats.get(name)
            if not c:
                continue
            ok, total = c
            ok_all += ok
            total_all += total
            parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
        if self._unknown[1]:
            ok, total = self._unknown
            ok_all += ok
            total_all += total
            parts.append(f"unknown={ok}/{total}")
        parts.append(f"commands={ok_all}" if ok_all == total_all else f"commands={ok_all}/{total_all}")
        return " ".join(parts)

    @property
    def in_data(self) -> bool:
        return self._mode in (_DATA, _BDAT)

    @property
    def in_transaction(self) -> bool:
        return self.mail_from is not None

    # ------------------------------------------------------------------
    # output helpers

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _decide(self, event: Event, cont: Callable[[Reply | None], None]) -> None:
        self._pending = cont
        self._pending_event = event
        self._events.append(event)

    def _count(self, name: str, ok: bool) -> None:
        c = self._stats.setdefault(name, [0, 0])
        c[1] += 1
        if ok:
            c[0] += 1

    def _send(self, reply: Reply, count: bool = True) -> None:
        data = reply.to_bytes()
        if count and reply.code >= 400:
            self.error_count += 1
            if self.error_count > self.s.soft_error_limit and self._mode != _CLOSED:
                self._held += data
                self._decide(ErrorSleep(), self._release_held)
                return
        self._out += data

    def _release_held(self, _reply: Reply | None) -> None:
        self._out += self._held
        self._held.clear()

    def _finish(self, name: str, reply: Reply) -> None:
        """Reply to a command and count it for the disconnect line."""
        if name == "unknown":
            self._unknown[1] += 1
        else:
            self._count(name, reply.code < 400)
        self._send(reply)

    def _close_now(self) -> None:
        self._mode = _CLOSED
        self._close = True
        self._buf.clear()

    def _check_hard_limit(self) -> None:
        if self._mode != _CLOSED and self.error_count >= self.s.hard_error_limit:
            self._emit(TooManyErrors(self.where))
            self._abort_transaction()
            self._out += self._held
            self._held.clear()
            self._send(R.too_many_errors(self.s.myhostname), count=False)
            self._close_now()

    # ------------------------------------------------------------------
    # transaction state

    def _reset_transaction(self, notify: bool = True) -> None:
        had = getattr(self, "mail_from", None) is not None
        self.mail_from: A.Path | None = None
        self.mail_params: A.MailParams | None = None
        self.rcpt_count = 0
        self.rcpt_attempts = 0
        self.bdat_active = False
        self._bdat_error: Reply | None = None
        self._bdat_size = 0
        self._content_size = 0
        self._bdat_prev_cr = False
        if had and notify:
            self._emit(TransactionReset())

    def _abort_transaction(self) -> None:
        if self._mode in (_DATA, _BDAT):
            self._mode = _CMD
        self._reset_transaction(notify=True)

    # ------------------------------------------------------------------
    # the input loop

    def _process(self) -> None:
        while self._pending is None and self._mode != _CLOSED:
            if self._mode == _CMD:
                if not self._command_step():
                    return
            elif self._mode == _DATA:
                if not self._data_step():
                    return
            elif self._mode == _BDAT:
                if not self._bdat_step():
                    return
            elif self._mode == _AUTH:
                if not self._auth_step():
                    return
            else:               # _HANDSHAKE: nothing is read until reset_after_tls()
                return
            if self._pending is None:
                self._check_hard_limit()

    def _command_step(self) -> bool:
        buf = self._buf
        nl = buf.find(b"\n")
        limit = self.s.line_length_limit
        if self._skip_line:
            if nl < 0:
                buf.clear()
                return False
            del buf[:nl + 1]
            self._skip_line = False
            return True
        if nl < 0:
            if len(buf) > limit:
                # Over-long command: refuse it and skip to its end; its tail
                # is never read as a command.
                self._emit(LineTooLong(self.where))
                buf.clear()
                self._skip_line = True
                self._finish("unknown", R.LINE_TOO_LONG)
                return True
            return False
        if nl > limit:
            del buf[:nl + 1]
            self._emit(LineTooLong(self.where))
            self._finish("unknown", R.LINE_TOO_LONG)
            return True
        bare = nl == 0 or buf[nl - 1] != 0x0D
        raw = bytes(buf[:nl - (0 if bare else 1)])
        del buf[:nl + 1]
        pending = bool(buf)
        if bare and self.s.forbid_bare_newline == "reject":
            self._emit(BareNewline(self.where))
            self._reject_bare_lf()
            return True
        self._dispatch(raw, pending)
        return True

    def _reject_bare_lf(self) -> None:
        code = self.s.bare_newline_reject_code
        self._finish("unknown", R.bare_lf(code, self.s.myhostname))
        if code == 521:
            self._abort_transaction()
            self._close_now()

    def _dispatch(self, raw: bytes, pending: bool) -> None:
        try:
            line = raw.decode("utf-8") if self.s.smtputf8_enable else raw.decode("latin-1")
        except UnicodeDecodeError:
            self._finish("unknown", R.BAD_UTF8)
            return
        if "\r" in line or "\0" in line:
            self._finish("unknown", R.BAD_SYNTAX)
            return
        stripped = line.strip(" \t")
        if not stripped:
            self._finish("unknown", R.BAD_SYNTAX)
            return
        verb, _, arg = stripped.replace("\t", " ").partition(" ")
        verb = verb.upper()
        arg = arg.strip(" ")
        handler = _HANDLERS.get(verb)
        if handler is None:
            if verb in self.s.forbidden_commands or verb.endswith(":"):
                self._emit(NonSmtpCommand(stripped))
                self._unknown[1] += 1
                self._send(Reply(221, "2.7.0", "Error: I can break rules, too. Goodbye."), count=False)
                self._abort_transaction()
                self._close_now()
                return
            self.where = "UNKNOWN"
            self._finish("unknown", R.UNRECOGNIZED)
            return
        self.where = verb
        if pending and self.s.forbid_unauth_pipelining and (
                verb in _LAST_IN_GROUP or not (self.esmtp and "PIPELINING" not in self.s.discard_ehlo_keywords)):
            if not (verb == "QUIT"):
                # After AUTH the pipelined bytes may be a password: never log them.
                self._emit(ImproperPipelining(verb, b"" if verb == "AUTH" else bytes(self._buf[:100])))
                self._count(verb.lower(), False)
                self._abort_transaction()
                self._send(R.SYNC_ERROR, count=False)
                self._close_now()
                return
        if verb in _JUNK:
            self.junk_count += 1
            if self.junk_count > self.s.junk_command_limit:
                self.error_count += 1
        handler(self, arg)

    # ------------------------------------------------------------------
    # commands

    def _cmd_helo(self, arg: str, esmtp: bool = False) -> None:
        name = "ehlo" if esmtp else "helo"
        if not arg:
            self._finish(name, R.SYNTAX_EHLO if esmtp else R.SYNTAX_HELO)
            return
        self._abort_transaction()
        self.helo_name = arg
        self.esmtp = esmtp
        self._emit(Helo(arg, esmtp))
        if not esmtp:
            self._finish(name, Reply(250, "", self.s.myhostname))
            return
        self._finish(name, self._ehlo_reply())

    def _ehlo_reply(self) -> Reply:
        # One Reply (and wire form) per settings and TLS state: the list
        # is the same for every client of a service.
        key = (id(self.s), self.tls_active)
        cached = _EHLO_REPLIES.get(key)
        if cached is None or cached[0] is not self.s:
            if len(_EHLO_REPLIES) >= 64:
                _EHLO_REPLIES.clear()
            cached = _EHLO_REPLIES[key] = (
                self.s, Reply(250, "", "\n".join([self.s.myhostname, *self.ehlo_keywords()])))
        return cached[1]

    def _cmd_ehlo(self, arg: str) -> None:
        self._cmd_helo(arg, esmtp=True)

    def ehlo_keywords(self) -> list[str]:
        s = self.s
        kw = ["PIPELINING"]
        kw.append(f"SIZE {s.message_size_limit}" if s.message_size_limit else "SIZE")
        if not s.disable_vrfy:
            kw.append("VRFY")
        kw.append("ETRN")
        if s.starttls_available and not self.tls_active:
            kw.append("STARTTLS")
        mechs = self._auth_mechanisms()
        if mechs and not s.auth_hidden:
            kw.append("AUTH " + " ".join(mechs))
        kw += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if s.smtputf8_enable:
            kw.append("SMTPUTF8")
        kw.append("CHUNKING")
        return [k for k in kw if k.split(" ", 1)[0] not in s.discard_ehlo_keywords]

    def _announced(self, keyword: str) -> bool:
        return keyword not in self.s.discard_ehlo_keywords

    def _auth_mechanisms(self) -> tuple[str, ...]:
        if not self.s.auth_enabled:
            return ()
        return self.s.auth_mechanisms if self.tls_active else self.s.auth_mechanisms_without_tls

    def _cmd_mail(self, arg: str) -> None:
        if self.s.tls_required and not self.tls_active:
            self._finish("mail", Reply(530, "5.7.0", "Must issue a STARTTLS command first"))
            return
        if self.s.helo_required and self.helo_name is None:
            self._finish("mail", R.NEED_HELO)
            return
        if self.bdat_active:
            self._finish("mail", R.MAIL_AFTER_BDAT)
            return
        if self.mail_from is not None:
            self._finish("mail", R.NESTED_MAIL)
            return
        if arg[:5].upper() != "FROM:":
            self._finish("mail", R.SYNTAX_MAIL)
            return
        rest = arg[5:]
        if rest.strip(" ") == "":
            self._finish("mail", R.SYNTAX_MAIL)
            return
        try:
            path, params = A.parse_path_arg(rest, strict=self.s.strict_rfc821_envelopes,
                                            utf8_ok=self.s.smtputf8_enable, is_sender=True)
            mp = A.parse_mail_params(params, dsn=self._announced("DSN"),
                                     smtputf8=self.s.smtputf8_enable)
        except A.AddressError as e:
            self._finish("mail", e.reply)
            return
        if not path.address.isascii() and not mp.smtputf8:
            self._finish("mail", R.NEED_SMTPUTF8)
            return
        if mp.size is not None and self.s.message_size_limit and mp.size > self.s.message_size_limit:
            self._finish("mail", R.SIZE_EXCEEDED)
            return

        def done(reply: Reply | None) -> None:
            if reply is None:
                self.mail_from = path
                self.mail_params = mp
                self.rcpt_count = 0
                self.rcpt_attempts = 0
                reply = R.MAIL_OK
            self._finish("mail", reply)

        self._decide(MailFrom(path, mp), done)

    def _cmd_rcpt(self, arg: str) -> None:
        if self.mail_from is None:
            self._finish("rcpt", R.NEED_MAIL)
            return
        if self.bdat_active:
            self._finish("rcpt", R.RCPT_AFTER_BDAT)
            return
        if arg[:3].upper() != "TO:" or arg[3:].strip(" ") == "":
            self._finish("rcpt", R.SYNTAX_RCPT)
            return
        try:
            path, params = A.parse_path_arg(arg[3:], strict=self.s.strict_rfc821_envelopes,
                                            utf8_ok=self.s.smtputf8_enable, is_sender=False)
            rp = A.parse_rcpt_params(params, dsn=self._announced("DSN"))
        except A.AddressError as e:
            self._finish("rcpt", e.reply)
            return
        if not path.address.isascii() and not self.mail_params.smtputf8:
            self._finish("rcpt", R.NEED_SMTPUTF8)
            return
        if self.rcpt_count >= self.s.recipient_limit:
            self._finish("rcpt", R.TOO_MANY_RCPTS)
            return
        self.rcpt_attempts += 1

        def done(reply: Reply | None) -> None:
            if reply is None:
                self.rcpt_count += 1
                reply = R.RCPT_OK
            self._finish("rcpt", reply)

        self._decide(RcptTo(path, rp), done)

    def _data_precheck(self) -> Reply | None:
        if self.mail_from is None:
            return R.NEED_RCPT
        if self.rcpt_count == 0:
            return R.NO_VALID_RCPT if self.rcpt_attempts else R.NEED_RCPT
        return None

    def _cmd_data(self, arg: str) -> None:
        if arg:
            self._finish("data", R.SYNTAX_DATA)
            return
        if self.bdat_active:
            self._finish("data", R.DATA_AFTER_BDAT)
            return
        err = self._data_precheck()
        if err is not None:
            self._finish("data", err)
            return

        def done(reply: Reply | None) -> None:
            if reply is not None:
                self._finish("data", reply)
                return
            self._send(R.DATA_GO_AHEAD, count=False)
            self._mode = _DATA
            self._at_line_start = True
            self._prev_crlf = True
            self._data_error = None
            self._content_size = 0
            self.data_bytes = 0

        self._decide(DataStart(bdat=False), done)

    def _cmd_bdat(self, arg: str) -> None:
        words = arg.split()
        if not words or len(words) > 2 or not words[0].isascii() or not words[0].isdigit() \
                or (len(words) == 2 and words[1].upper() != "LAST"):
            # The chunk size is unknown, so the stream cannot be followed.
            self._count("bdat", False)
            self._abort_transaction()
            self._send(R.SYNTAX_BDAT_DISCONNECT, count=False)
            self._close_now()
            return
        size = int(words[0])
        last = len(words) == 2
        self._bdat_left = size
        self._bdat_last = last
        self._bdat_chunk = size
        err = self._bdat_error or self._data_precheck()
        if err is None and size == 0 and not last:
            err = R.NULL_BDAT
        if err is None and self.s.message_size_limit and \
                self._bdat_size + size > self.s.message_size_limit:
            err = R.CHUNK_TOO_BIG
        if err is not None:
            self._bdat_reject = err
            self._mode = _BDAT
            return
        self._bdat_reject = None
        if not self.bdat_active:
            def done(reply: Reply | None) -> None:
                if reply is not None:
                    self._bdat_error = reply
                    self._bdat_reject = reply
                else:
                    self.bdat_active = True
                    self._data_error = None
                    self._content_size = 0
                    self.data_bytes = 0
                self._mode = _BDAT
            self._decide(DataStart(bdat=True), done)
            return
        self._mode = _BDAT

    def _cmd_rset(self, arg: str) -> None:
        if arg:
            self._finish("rset", R.SYNTAX_RSET)
            return
        self._abort_transaction()
        self._finish("rset", R.OK)

    def _cmd_noop(self, arg: str) -> None:
        # RFC 5321 allows an argument; Postfix refuses one (501 Syntax: NOOP).
        self._finish("noop", R.SYNTAX_NOOP if arg else R.OK)

    def _cmd_quit(self, arg: str) -> None:
        self._count("quit", True)
        self._abort_transaction()
        self._emit(Quit())
        self._send(R.BYE, count=False)
        self._close_now()

    def _cmd_vrfy(self, arg: str) -> None:
        if self.s.disable_vrfy:
            self._finish("vrfy", R.VRFY_DISABLED)
            return
        if not arg:
            self._finish("vrfy", R.SYNTAX_VRFY)
            return
        s = arg[1:-1] if arg.startswith("<") and arg.endswith(">") else arg
        try:
            path = A.parse_path(s, utf8_ok=self.s.smtputf8_enable, allow_null=False)
        except ValueError:
            self._finish("vrfy", R.BAD_RCPT_SYNTAX)
            return
        # XXX Postfix runs the recipient restrictions and local_recipient_maps
        # before this reply; Fulmar never confirms or denies a mailbox.
        self._finish("vrfy", R.vrfy_cannot(path.address))

    def _cmd_help(self, arg: str) -> None:
        # Postfix has no HELP (502 5.5.2); issue 3 asks for it, so answer 214.
        self._finish("help", R.HELP)

    def _cmd_etrn(self, arg: str) -> None:
        if self.helo_name is None:
            self._finish("etrn", Reply(503, "5.5.1", "Error: send HELO/EHLO first"))
            return
        if self.mail_from is not None:
            self._finish("etrn", R.MAIL_IN_PROGRESS)
            return
        if not arg or " " in arg:
            self._finish("etrn", R.SYNTAX_ETRN)
            return
        site = arg[1:] if arg.startswith("@") or arg.startswith("#") else arg

        def done(reply: Reply | None) -> None:
            self._finish("etrn", reply or R.ETRN_QUEUED)

        self._decide(Etrn(site), done)

    def _cmd_starttls(self, arg: str) -> None:
        # Postfix's order of checks (smtpd.c starttls_cmd).
        if arg:
            self._finish("starttls", Reply(501, "5.5.4", "Syntax: STARTTLS"))
            return
        if self.tls_active:
            self._finish("starttls", Reply(554, "5.5.1", "Error: TLS already active"))
            return
        if not self.s.starttls_available or "STARTTLS" in self.s.discard_ehlo_keywords:
            self._finish("starttls", R.NOT_IMPLEMENTED)
            return

        def done(reply: Reply | None) -> None:
            if reply is not None:
                self._finish("starttls", reply)
                return
            self._count("starttls", True)
            self._out += READY_TO_START_TLS.to_bytes()
            # Everything the client sent after STARTTLS, before the
            # handshake, is discarded unread (CVE-2011-0411); the shell
            # calls reset_after_tls() once the handshake is done.
            self._buf.clear()
            self._mode = _HANDSHAKE

        self._decide(StartTls(), done)

    def _cmd_auth(self, arg: str) -> None:
        from smtpd import sasl
        s = self.s
        # Postfix's order of checks (smtpd_sasl_proto.c).
        if not s.auth_enabled:
            self._finish("auth", sasl.AUTH_NOT_ENABLED)
            return
        if self.mail_from is not None:
            self._finish("auth", sasl.AUTH_IN_TRANSACTION)
            return
        if not self.tls_active and s.auth_mechanisms and not s.auth_mechanisms_without_tls:
            self._finish("auth", sasl.AUTH_NEED_TLS)
            return
        if self.sasl_username is not None:
            self._finish("auth", sasl.AUTH_ALREADY)
            return
        words = arg.split(" ")
        words = [w for w in words if w]
        if not 1 <= len(words) <= 2:
            self._finish("auth", sasl.AUTH_SYNTAX)
            return
        mech = words[0].upper()
        if mech not in sasl.MECHANISMS:
            self._finish("auth", sasl.AUTH_UNKNOWN_MECH)
            return
        if mech not in self._auth_mechanisms():
            # Known, but not allowed on this connection (security options).
            self._finish("auth", sasl.AUTH_TOO_WEAK)
            return
        self._sasl = sasl.ServerExchange(mech, words[1] if len(words) == 2 else None)
        self._auth_result(self._sasl.start())

    def _auth_result(self, step) -> None:
        from smtpd import sasl
        ex = self._sasl
        if isinstance(step, sasl.Challenge):
            self._out += f"334 {step.text}\r\n".encode("ascii")
            self._mode = _AUTH
            return
        self._mode = _CMD
        self._sasl = None
        if isinstance(step, sasl.Failed):
            self._emit(AuthAborted(ex.mechanism, step.reply, step.username))
            self._finish("auth", step.reply)
            return

        def done(reply: Reply | None) -> None:
            reply = reply or sasl.auth_failed("authentication failure")
            if reply.code == 235:
                self.sasl_username = step.username
                self.sasl_method = step.mechanism
            self._finish("auth", reply)

        self._decide(Authenticate(step), done)

    def _auth_step(self) -> bool:
        from smtpd import sasl
        buf = self._buf
        nl = buf.find(b"\n")
        limit = self.s.sasl_response_limit
        if nl < 0:
            if len(buf) > limit:
                self._emit(AuthAborted(self._sasl.mechanism, sasl.AUTH_LINE_TOO_LONG))
                buf.clear()
                self._skip_line = True
                self._mode = _CMD
                self._sasl = None
                self._finish("auth", sasl.AUTH_LINE_TOO_LONG)
                return True
            return False
        raw = bytes(buf[:nl]).rstrip(b"\r")
        del buf[:nl + 1]
        if len(raw) > limit:
            self._emit(AuthAborted(self._sasl.mechanism, sasl.AUTH_LINE_TOO_LONG))
            self._mode = _CMD
            self._sasl = None
            self._finish("auth", sasl.AUTH_LINE_TOO_LONG)
            return True
        self._auth_result(self._sasl.respond(raw.decode("latin-1")))
        return True

    # ------------------------------------------------------------------
    # DATA: the buffer scan

    def _data_step(self) -> bool:
        buf = self._buf
        if not buf:
            return False
        end_at = -1        # region length before the end marker
        consume = 0
        if self._at_line_start and self._prev_crlf and buf[:3] == b".\r\n":
            end_at, consume = 0, 3
        else:
            i = buf.find(END_MARK)
            if i >= 0:
                end_at, consume = i + 2, i + 5
        if end_at >= 0:
            region = bytes(buf[:end_at])
            del buf[:consume]
            self.data_bytes += consume
            self._data_region(region)
            self._data_end()
            return True
        limit = self.s.line_length_limit
        j = buf.rfind(b"\n")
        if j >= 0 and len(buf) - (j + 1) < limit:
            cut = j + 1
        elif len(buf) >= limit:
            cut = len(buf) - (1 if buf[-1] == 0x0D else 0)
        else:
            return False
        # Cut after a LF: a marker split here is found at the next region's
        # start through _at_line_start/_prev_crlf (the virtual CRLF).
        region = bytes(buf[:cut])
        del buf[:cut]
        self.data_bytes += cut
        self._data_region(region)
        return True

    def _data_region(self, region: bytes) -> None:
        if not region:
            return
        ends_line = region[-1:] == b"\n"
        ends_crlf = region[-2:] == CRLF
        nl = region.count(b"\n")
        if nl and nl != region.count(CRLF):
            if self.s.forbid_bare_newline == "reject":
                if self._data_error is None:
                    self._emit(BareNewline(self.where))
                    self._data_error = R.bare_lf(self.s.bare_newline_reject_code, self.s.myhostname)
            else:
                region = region.replace(CRLF, b"\n").replace(b"\n", CRLF)
        if self._at_line_start and region[:1] == b".":
            region = region[1:]
        region = region.replace(b"\r\n.", CRLF)
        self._at_line_start = ends_line
        self._prev_crlf = ends_crlf
        self._content_out(region)

    def _content_out(self, data: bytes) -> None:
        if self._data_error is not None or not data:
            return
        self._content_size += len(data)
        if self.s.message_size_limit and self._content_size > self.s.message_size_limit:
            self._data_error = R.SIZE_EXCEEDED
            return
        self._emit(DataChunk(data))

    def _data_end(self) -> None:
        self._mode = _CMD
        error = self._data_error
        self.where = "END-OF-MESSAGE"

        def done(reply: Reply | None) -> None:
            final = reply or error or R.QUEUE_WRITE_ERROR
            self._reset_transaction(notify=False)
            self._finish("data", final)
            if error is not None and error.code == 521:
                self._close_now()

        self._decide(DataEnd(error=error, size=self._content_size), done)

    # ------------------------------------------------------------------
    # BDAT: counted chunks

    def _bdat_step(self) -> bool:
        buf = self._buf
        if self._bdat_left:
            if not buf:
                return False
            take = min(self._bdat_left, len(buf))
            chunk = bytes(buf[:take])
            del buf[:take]
            self._bdat_left -= take
            self.data_bytes += take
            if self._bdat_reject is None:
                self._bdat_content(chunk)
        if self._bdat_left:
            return False
        self._mode = _CMD
        if self._bdat_reject is not None:
            err = self._bdat_reject
            if self._bdat_last:
                self._reset_transaction(notify=True)
            elif (self.bdat_active or self._bdat_error is not None) and err is not R.NULL_BDAT:
                self._bdat_error = err
            self._finish("bdat", err)
            return True
        self._bdat_size += self._bdat_chunk
        if self._bdat_last:
            self._data_end_bdat()
            return True
        size = self._bdat_chunk
        error = self._data_error

        def done(reply: Reply | None) -> None:
            if reply is None and error is None:
                self._finish("bdat", R.bdat_chunk_ok(size))
            else:
                self._bdat_error = reply or error
                self._finish("bdat", self._bdat_error)

        self._decide(BdatChunkEnd(size=size, error=error), done)
        return True

    def _bdat_content(self, chunk: bytes) -> None:
        # Line ends: the same bare-LF policy as DATA, with a CR carried over
        # from the previous piece so that a CRLF split between chunks is whole.
        nl = chunk.count(b"\n")
        if nl:
            lead = 1 if (self._bdat_prev_cr and chunk[:1] == b"\n") else 0
            if nl != chunk.count(CRLF) + lead:
                if self.s.forbid_bare_newline == "reject":
                    if self._data_error is None:
                        self._emit(BareNewline(self.where))
                        self._data_error = R.bare_lf(self.s.bare_newline_reject_code, self.s.myhostname)
                else:
                    body = chunk[lead:].replace(CRLF, b"\n").replace(b"\n", CRLF)
                    chunk = chunk[:lead] + body
        self._bdat_prev_cr = chunk[-1:] == b"\r"
        self._content_out(chunk)

    def _data_end_bdat(self) -> None:
        error = self._data_error
        self.where = "END-OF-MESSAGE"

        def done(reply: Reply | None) -> None:
            final = reply or error or R.QUEUE_WRITE_ERROR
            self._reset_transaction(notify=False)
            self._finish("bdat", final)
            if error is not None and error.code == 521:
                self._close_now()

        self._decide(DataEnd(error=error, size=self._content_size), done)


_HANDLERS: dict[str, Callable[[ServerProtocol, str], None]] = {
    "HELO": ServerProtocol._cmd_helo,
    "EHLO": ServerProtocol._cmd_ehlo,
    "MAIL": ServerProtocol._cmd_mail,
    "RCPT": ServerProtocol._cmd_rcpt,
    "DATA": ServerProtocol._cmd_data,
    "BDAT": ServerProtocol._cmd_bdat,
    "RSET": ServerProtocol._cmd_rset,
    "NOOP": ServerProtocol._cmd_noop,
    "QUIT": ServerProtocol._cmd_quit,
    "VRFY": ServerProtocol._cmd_vrfy,
    "HELP": ServerProtocol._cmd_help,
    "ETRN": ServerProtocol._cmd_etrn,
    "STARTTLS": ServerProtocol._cmd_starttls,
    "AUTH": ServerProtocol._cmd_auth,
}
