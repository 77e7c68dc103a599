"""The asyncio shell around smtpd.protocol: one Session per SMTP connection.

NAME
    smtpd.session - sockets, timers, cleanup channels and log lines

SYNOPSIS
    from smtpd.session import Service
    svc = Service(cfg, cleanup_path, log=None, lookup_client_name=None, policy=None)
    server = await loop.create_server(svc.protocol_factory, sock=listener)
    ...
    await svc.drain(timeout)      # wait (bounded) for in-flight sessions

DESCRIPTION
    Session is an asyncio.Protocol.  The worker task starts eagerly in
    connection_made, so the greeting is written there (unless a peername
    lookup or a TLS wrapper handshake comes first).  data_received() feeds
    the sans-IO ServerProtocol and writes its replies at once; every event
    goes through the worker task, in order (except a HELO/EHLO, MAIL
    FROM, or DATA without smtpd_data_restrictions, with nothing queued
    before it while the worker is idle: they need no I/O and are handled
    in the read callback), so the cleanup records
    of a message are written in the order the content arrived.  Decisions that
    need I/O (restrictions, cleanup open/commit, ETRN, the error sleep) run
    in that task; the protocol buffers further input meanwhile.  Reading
    pauses while more than READ_PAUSE_BYTES of content wait for cleanup
    (backpressure), and resumes below half of that.

    Cleanup (contract in docs/internals.md, protocol "cleanup"): the open
    request goes to cleanup at the first accepted RCPT, as with Postfix's
    smtpd_delay_open_until_valid_rcpt = yes, and neither that RCPT nor
    DATA waits for its reply (see CleanupTransaction); the queue ID is
    logged once it is known (`QID: client=host[ip]`), before any line
    cleanup logs for it.  A transaction without an accepted recipient
    never reaches cleanup (NOQUEUE).  The sender (S), the recipients (R),
    M and the content (B) follow the open; they are written to cleanup
    with X and E at the end (or in WRITE_BATCH pieces, for a big
    message), then the commit reply decides the 250/4xx/5xx.  Cleanup
    channels are pooled per process (CleanupPool) and reused across
    transactions and sessions; a commit's reply names the queue ID cleanup
    keeps for that channel's next open, which then needs no reply at all
    (CleanupTransaction.open).

    Per-client concurrency: smtpd_client_connection_count_limit is counted
    per smtpd process (Postfix counts per service in anvil(8)); excess
    connections get `421 4.7.0 Error: too many connections from ADDR`.
    smtpd_forbid_bare_newline_exclusions (default $mynetworks) switches the
    bare-LF policy to "no" for the clients it matches.

    TLS (smtpd.tls) and AUTH (smtpd.sasl): for STARTTLS the worker answers
    the StartTls decision, writes the 220 and calls loop.start_tls() with
    no await in between, so no plaintext can be read after the 220; while
    the handshake runs, decrypted bytes that arrive early are held and fed
    to the protocol only after reset_after_tls().  In wrapper mode reading
    is paused in connection_made() and the handshake runs before the
    greeting.  Authenticate decisions go through the per-process brake
    (smtpd_client_auth_rate_limit) and the backend; failures are logged
    as Postfix's "warning: host[ip]: SASL PLAIN authentication failed:
    reason, sasl_username=name", never with the password.

    The client host name is "unknown" unless the injectable
    lookup_client_name(addr) returns a name; the default does a PTR lookup
    with forward confirmation through fulmar.dns when
    smtpd_peername_lookup = yes.

LOGS (as Postfix)
    connect from host[ip] / QID: client=host[ip] /
    NOQUEUE: reject: RCPT from host[ip]: 554 5.7.1 <x>: Relay access denied; from=<a> to=<x> proto=ESMTP helo=<h> /
    improper command pipelining after CMD from host[ip]: TEXT /
    timeout after CMD from host[ip] / lost connection after CMD from host[ip] /
    too many errors after CMD from host[ip] /
    disconnect from host[ip] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5

FAILURE BEHAVIOUR
    A cleanup failure (connect, timeout, bad reply) answers
    451 4.3.0 Error: queue file write error: at DATA or BDAT if known by
    then, else at the end of the data (the open goes out with the first
    accepted RCPT, whose 250 does not wait for it; Postfix gives that RCPT
    the 451: docs/deviations.md); status "diskfull" answers
    452 4.3.1 Insufficient system storage; the session goes on.  An
    exception in the worker is logged as a warning and the connection is
    closed with 421; nothing is ever sent to the client as a traceback.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque

from fulmar.queue import qid as queue_ids
from fulmar.smtp import address as A
from fulmar.smtp import reply as R
from fulmar.smtp.reply import Reply
from smtpd import protocol as P
from smtpd import sasl as S
from smtpd.tls import ServerTls, TlsHandshakeError
from smtpd.policy import Client, NetworkList, Policy, PolicySettings, reject_log_line, split_restrictions

# Content waiting for cleanup before reading from the client pauses.
READ_PAUSE_BYTES = 1 << 20
# One B record carries at most this much (docs/internals.md).
RECORD_MAX = 65536
# Opens retried after a cleanup connection broke (reload, restart).
CLEANUP_OPEN_RETRIES = 3
# Idle cleanup channels kept per process.
CLEANUP_POOL_SIZE = 8
# A queue ID cleanup reserved for a pooled channel's next open is used for
# at most this long after (seconds; as cleanup's SPARE_MAX_AGE: a queue ID
# carries its file's creation time); an older one is left to cleanup,
# which gives it back at the channel's next plain open.
CLEANUP_RESERVATION_MAX_AGE = 60.0


class _FulmarLog:
    def __call__(self, level: str, fmt: str, *args) -> None:
        from fulmar import log
        getattr(log, level)(fmt, *args)


class CleanupError(Exception):
    def __init__(self, reply: Reply, why: str = ""):
        super().__init__(why or str(reply))
        self.reply = reply


class CleanupPool:
    """A few reusable channels to private/cleanup, each with the queue ID
    cleanup reserved for its next open (or None)."""

    def __init__(self, path: str, timeout: float, size: int = CLEANUP_POOL_SIZE):
        self.path = path
        self.timeout = timeout
        self.size = size
        self._idle: list = []        # (channel, reserved queue ID or None, released at)

    @property
    def has_idle(self) -> bool:
        return bool(self._idle)

    async def acquire(self, fresh: bool = False):
        """(channel, reserved queue ID or None)."""
        from fulmar.ipc import channel
        while self._idle and not fresh:
            ch, reserved, since = self._idle.pop()
            if ch.pending:
                ch.abort()      # cleanup's "bye": it is stopping
                continue
            if not ch.closed:
                if time.monotonic() - since > CLEANUP_RESERVATION_MAX_AGE:
                    reserved = None
                return ch, reserved
        return await channel.connect(self.path, protocol="cleanup", timeout=self.timeout), None

    def release(self, ch, healthy: bool, reserved: str | None = None) -> None:
        if healthy and not ch.closed and len(self._idle) < self.size:
            self._idle.append((ch, reserved, time.monotonic()))
        else:
            ch.abort()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for ch, _reserved, _since in idle:
            try:
                await ch.close(timeout=1.0)
            except Exception:
                ch.abort()


_STATUS_REPLIES = {
    "tempfail": R.QUEUE_WRITE_ERROR,
    "diskfull": R.INSUFFICIENT_STORAGE,
    "toolarge": R.SIZE_EXCEEDED,
}


def _send_fin(transport) -> None:
    """End our side of a plain TCP connection whose last reply is written.

    transport.close() closes the socket from a callback at the next loop
    turn (uvloop and asyncio alike), after the worker's wake-up and
    whatever else is ready: the client, which waits for the EOF after
    221, waited ~20 µs longer than for Postfix's smtpd.  shutdown(SHUT_WR)
    sends the FIN now; close() still releases the socket.  Only with
    nothing left in the transport's buffer (else that would be cut off),
    and never under TLS (its close_notify comes first).
    """
    if transport.get_write_buffer_size():
        return
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        # Family and type given: no getsockopt() calls to find them.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, sock.fileno())
    except OSError:
        return
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass            # the peer is gone: close() cleans up
    finally:
        s.detach()      # the transport still owns the descriptor


class CleanupTransaction:
    """One message on a pooled cleanup channel.

    begin() sends the open request, at the first accepted recipient (an
    open at MAIL FROM, tried until session 7, woke cleanup while smtpd
    answered RCPT and DATA: on two CPUs the two then took turns, 4 % fewer
    messages a second in `smtp-source -s 1`; docs/performance.md, item
    31).  The recipient's reply does not wait for the open (that wait
    was most of RCPT's reply time); the records wait in
    a backlog that the open task sends once the file is open, and the
    queue ID is announced (logged: Postfix's "QID: client=") then.  DATA
    does not wait for it either: the 354 goes out at once and the content
    joins the backlog (that wait was most of DATA's reply time, a
    cross-process round trip that Postfix's DATA does not make).  An open
    that fails is reported at DATA when smtpd knows by then, else by
    commit() at the end of the data, with the 451 Postfix gives the RCPT.

    On a pooled channel whose last commit reply named a reserved queue ID
    (`next_queue_id`), open() names it and returns at once: cleanup sends
    no reply (docs/performance.md, item 36: one write, one wake-up of
    smtpd and a JSON decode less per message), and the open is held in
    the channel with the records, so cleanup gets the whole message in
    one write at the end of the data and wakes once for it; how the open
    went shows in the commit's reply.  Such an open cannot be retried on a fresh
    channel, so a stopping cleanup says "bye" on the channel (the pool
    then drops it) and serves an open that crossed the bye; only a
    cleanup that dies under the open fails the transaction, at the end of
    the data (docs/deviations.md).
    """

    def __init__(self, pool: CleanupPool):
        self.pool = pool
        self.ch = None
        self.id = 0
        self.queue_id = ""
        self.failed: Reply | None = None
        self.error: CleanupError | None = None    # why the open failed
        self._opening: asyncio.Task | None = None
        self._backlog: list[tuple[bytes, bytes]] | None = None  # records waiting for the open
        self._announce = None       # called with the queue ID once the open is done

    def begin(self, attrs: dict, announce) -> None:
        """The first recipient is accepted: send the open request in the
        background (settle() waits for it).  Records wait in the backlog
        until the file is open; announce(queue_id) runs then."""
        self._announce = announce
        self._backlog = []
        self._opening = asyncio.get_running_loop().create_task(self._open_then_backlog(attrs))

    @property
    def open_pending(self) -> bool:
        return self._opening is not None and not self._opening.done()

    async def settle(self) -> Reply | None:
        """Wait for a pending open and its backlog; the reply for a
        transaction that has failed, else None."""
        if self.open_pending:
            try:
                await self._opening
            except CleanupError:
                pass
        return self.failed

    async def _open_then_backlog(self, attrs: dict) -> str:
        try:
            qid = await self.open(attrs)
        except CleanupError as err:
            self.error = err
            self.failed = err.reply
            self._backlog = self._announce = None
            raise
        if self._announce is not None:
            announce, self._announce = self._announce, None
            announce(qid)
        # record() appends while this awaits; nothing is left behind
        # because the backlog is dropped only when it is empty.
        while self._backlog:
            rtype, data = self._backlog.pop(0)
            await self._send(rtype, data)
        self._backlog = None
        return qid

    async def open(self, attrs: dict) -> str:
        # A pooled channel may lead to a cleanup process that has just
        # exited (reload, crash), and a new connection may reach one that is
        # stopping: nothing was queued through it, so an open that fails
        # other than by a timeout is retried on a fresh connection.
        from fulmar.ipc import channel
        retries = CLEANUP_OPEN_RETRIES
        fresh = not self.pool.has_idle
        while True:
            try:
                self.ch, reserved = await self.pool.acquire(fresh=fresh)
                self.id = self.ch.next_id()
                request = {"request": "open", "id": self.id, "origin": "smtpd",
                           "reserve_next": True, **attrs}
                if reserved is not None:
                    # The queue ID cleanup reserved for this channel: no
                    # answer comes (cleanup/service.py), the commit's
                    # tells how it went.  No round trip, and no wake-up
                    # here in the middle of the client's next command.
                    await self.ch.send_attr({**request, "queue_id": reserved}, hold=True)
                    self.queue_id = reserved
                    return reserved
                reply = await self.ch.request(request, "cleanup.open_reply",
                                              timeout=self.pool.timeout)
                break
            except Exception as e:
                self._drop()
                if retries and not isinstance(e, (asyncio.TimeoutError, channel.ChannelTimeout)):
                    retries, fresh = retries - 1, True
                    continue
                raise CleanupError(R.QUEUE_WRITE_ERROR, f"cleanup open: {e}") from None
        if reply.get("status") != "ok" or not reply.get("queue_id"):
            self.pool.release(self.ch, True)
            self.ch = None
            raise CleanupError(_STATUS_REPLIES.get(reply.get("status"), R.QUEUE_WRITE_ERROR),
                               f"cleanup open: {reply.get('status')} {reply.get('reason', '')}")
        self.queue_id = reply["queue_id"]
        return self.queue_id

    async def record(self, rtype: bytes, data: bytes) -> None:
        if not self._absorbed(rtype, data):
            await self._send(rtype, data)

    def _absorbed(self, rtype: bytes, data: bytes) -> bool:
        """True when the record is not to be sent now: the transaction has
        failed, or the open is on its way (the record joins its backlog)."""
        if self.failed is not None:
            return True
        if self._backlog is not None:
            self._backlog.append((rtype, data))
            return True
        return False

    async def _send(self, rtype: bytes, data: bytes) -> None:
        if self.failed is not None or self.ch is None:
            return
        try:
            # Held: cleanup needs the records only by the commit, which
            # sends them with X and E (or WRITE_BATCH, for a big message),
            # instead of a wake-up for S and R, another for M, ...
            if len(data) <= RECORD_MAX:
                await self.ch.send_record(rtype, data, hold=True)
            else:
                view = memoryview(data)
                for i in range(0, len(data), RECORD_MAX):
                    await self.ch.send_record(rtype, bytes(view[i:i + RECORD_MAX]), hold=True)
        except Exception:
            self._channel_failed()

    def start_content(self) -> None:
        """record(b"M", b"") without a wait, so that DATA's reply needs no
        I/O (Session._data_now): an empty record is queued, and a channel
        backed up meanwhile is drained by the content's first write."""
        if self._absorbed(b"M", b"") or self.ch is None:
            return
        try:
            self.ch.queue_record(b"M", b"", hold=True)
        except Exception:
            self._channel_failed()

    def _channel_failed(self) -> None:
        self.failed = R.QUEUE_WRITE_ERROR
        self._drop()

    async def commit(self) -> Reply:
        await self.settle()
        if self.failed is not None or self.ch is None:
            self._drop()
            return self.failed or R.QUEUE_WRITE_ERROR
        try:
            await self.ch.send_record(b"X", b"")
            await self.ch.send_record(b"E", b"")
            # A "bye" cleanup sent before our open reached it (a stop: it
            # serves such an open, then closes) comes first: passed over.
            reply = await self.ch.recv_attr("cleanup.commit_reply", timeout=self.pool.timeout,
                                            skip=("bye",))
        except Exception:
            self._drop()
            return R.QUEUE_WRITE_ERROR
        reserved = reply.get("next_queue_id")
        if not (isinstance(reserved, str) and queue_ids.is_queue_id(reserved)):
            reserved = None
        self.pool.release(self.ch, reply.get("id") == self.id, reserved)
        self.ch = None
        status = reply.get("status")
        if status == "ok":
            return R.queued_as(reply.get("queue_id") or self.queue_id)
        if status == "reject":
            parsed = Reply.parse(reply.get("reason", "") or "")
            if parsed is not None and parsed.code >= 400:
                return parsed
            return Reply(550, "5.7.1", reply.get("reason") or "Message rejected")
        return _STATUS_REPLIES.get(status, R.QUEUE_WRITE_ERROR)

    async def abort(self) -> None:
        if self._opening is not None:
            try:
                await self._opening     # (also takes a failed open's exception)
            except Exception:
                pass
        self._backlog = self._announce = None
        if self.ch is None:
            return
        try:
            await self.ch.send_attr({"request": "abort", "id": self.id})
            await self.ch.flush()
            self.pool.release(self.ch, True)
        except Exception:
            self._drop()
        self.ch = None

    def _drop(self) -> None:
        if self.ch is not None:
            self.pool.release(self.ch, False)
            self.ch = None


async def default_lookup_client_name(cfg, addr: str) -> str:
    """PTR lookup with forward confirmation; "unknown" on any failure."""
    try:
        from fulmar import dns as fdns
        resolver = fdns.Resolver.from_config(cfg)
        name = await resolver.resolve_ptr(addr)
        if not name:
            return "unknown"
        name = name.rstrip(".")
        addrs = await resolver.resolve_addresses(name)
        return name if addr in addrs else "unknown"
    except Exception:
        return "unknown"


class Service:
    """Per-process state shared by the sessions of one smtpd service."""

    def __init__(self, cfg, cleanup_path: str, *, log=None, lookup_client_name=None,
                 policy: Policy | None = None, settings: P.Settings | None = None,
                 tls: ServerTls | None = None, sasl_backend=None):
        self.cfg = cfg
        self.log = log or _FulmarLog()
        if tls is None:
            try:
                tls = ServerTls.from_config(cfg, self.log)
            except KeyError:     # a partial configuration (tests, tools): no TLS
                tls = ServerTls("none", False, None)
        self.tls = tls
        self.sasl_backend = sasl_backend
        self._variants: dict[tuple[bool, bool], P.Settings] = {}
        self.settings = (settings or P.Settings.from_config(cfg)).with_overrides(
            **self.tls.protocol_overrides(), **self._auth_overrides(cfg))
        self.policy = policy or Policy(PolicySettings.from_config(cfg))
        self.timeout = float(cfg.get("smtpd_timeout"))
        self.error_sleep = float(cfg.get("smtpd_error_sleep_time"))
        self.conn_limit = cfg.get("smtpd_client_connection_count_limit")
        self.port_logging = bool(cfg.get("smtpd_client_port_logging"))
        self.pool = CleanupPool(cleanup_path, float(cfg.get("ipc_timeout")))
        try:
            excl = split_restrictions(cfg.expand(cfg.raw("smtpd_forbid_bare_newline_exclusions")))
        except Exception:
            excl = list(cfg.get("smtpd_forbid_bare_newline_exclusions"))
        self.bare_newline_exclusions = NetworkList(excl, cfg)
        try:
            self.fast_flush = split_restrictions(cfg.expand(cfg.raw("fast_flush_domains")))
        except Exception:
            self.fast_flush = list(cfg.get("fast_flush_domains"))
        if lookup_client_name is None:
            if cfg.get("smtpd_peername_lookup"):
                async def lookup_client_name(addr: str) -> str:
                    return await default_lookup_client_name(cfg, addr)
            else:
                async def lookup_client_name(addr: str) -> str:
                    return "unknown"
        self.lookup_client_name = lookup_client_name
        self.counts: dict[str, int] = {}
        self.sessions: set[Session] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def _auth_overrides(self, cfg) -> dict:
        try:
            enabled = cfg.get("smtpd_sasl_auth_enable")
        except KeyError:         # a partial configuration (tests, tools)
            enabled = False
        if not enabled:
            return {"auth_enabled": False}
        if self.sasl_backend is None:
            try:
                self.sasl_backend = S.open_backend(cfg)
            except ValueError as e:
                self.log("warning", "%s: SMTP AUTH will fail", e)
        with_tls = S.allowed_mechanisms(cfg.get("smtpd_sasl_tls_security_options"))
        tls_only = bool(cfg.get("smtpd_tls_auth_only")) or self.tls.level == "encrypt"
        without = () if tls_only else S.allowed_mechanisms(cfg.get("smtpd_sasl_security_options"))
        try:
            limit = int(cfg.get("smtpd_sasl_response_limit"))
        except (KeyError, LookupError, TypeError, ValueError):
            limit = P.Settings.sasl_response_limit
        self.auth_brake = S.AuthBrake(int(cfg.get("smtpd_client_auth_rate_limit")),
                                      float(cfg.get("anvil_rate_time_unit")))
        try:
            self.sasl_exceptions = NetworkList(
                split_restrictions(cfg.expand(cfg.raw("smtpd_sasl_exceptions_networks"))), cfg)
        except Exception:
            self.sasl_exceptions = None
        return {"auth_enabled": True, "auth_mechanisms": with_tls,
                "auth_mechanisms_without_tls": without, "sasl_response_limit": limit}

    auth_brake = S.AuthBrake(0, 1.0)
    sasl_exceptions = None

    def settings_variant(self, bare_ok: bool, hide_auth: bool) -> P.Settings:
        """self.settings with the per-client exceptions applied; made once
        per combination (a dataclasses.replace per connection was a visible
        part of accepting one)."""
        key = (bare_ok, hide_auth)
        settings = self._variants.get(key)
        if settings is None:
            kw = {}
            if bare_ok:
                kw["forbid_bare_newline"] = "no"
            if hide_auth:
                kw["auth_hidden"] = True
            settings = self._variants[key] = self.settings.with_overrides(**kw)
        return settings

    def protocol_factory(self) -> Session:
        return Session(self)

    def _add(self, s: Session) -> None:
        self.sessions.add(s)
        self._idle.clear()

    def _remove(self, s: Session) -> None:
        self.sessions.discard(s)
        if not self.sessions:
            self._idle.set()

    async def drain(self, timeout: float) -> None:
        """Wait for the sessions to end; then close the rest with 421."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            for s in list(self.sessions):
                s.shutdown()
        await self.pool.close()


class Session(asyncio.Protocol):
    def __init__(self, service: Service, peer: tuple[str, int] | None = None):
        self.svc = service
        self._peer = peer       # tests and socketpairs: the client's (addr, port)
        self.transport = None
        self.proto: P.ServerProtocol | None = None
        self.client: Client | None = None
        self._queue: deque = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._idle = False              # the worker waits for events
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0            # loop.time() when smtpd_timeout expires
        self._lost = False
        self._paused = False
        self._counted = False
        self.txn: CleanupTransaction | None = None
        self.sender: A.Path | None = None
        # The transaction's first accepted recipient: Postfix's DATA and
        # END-OF-MESSAGE reject lines name it (to=) when it is the only one.
        self.first_rcpt: A.Path | None = None
        self.mail_params: A.MailParams | None = None
        self._tls_early: bytearray | None = None   # decrypted bytes during a handshake
        self._handshake: asyncio.Task | None = None  # wrapper mode: started in connection_made

    # ------------------------------------------------------------------
    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = self._peer or transport.get_extra_info("peername") or ("", 0)
        addr = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        port = int(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else 0
        if addr.startswith("::ffff:") and "." in addr:
            addr = addr[7:]
        self.client = Client("unknown", addr, port)
        svc = self.svc
        svc._add(self)
        settings = svc.settings
        bare_ok = settings.forbid_bare_newline != "no" and svc.bare_newline_exclusions.match(addr)
        hide_auth = (settings.auth_enabled and svc.sasl_exceptions is not None
                     and svc.sasl_exceptions.match(addr))
        if bare_ok or hide_auth:
            settings = svc.settings_variant(bare_ok, hide_auth)
        self.proto = P.ServerProtocol(settings)
        n = svc.counts.get(addr, 0) + 1
        svc.counts[addr] = n
        self._counted = True
        if svc.conn_limit and n > svc.conn_limit:
            svc.log("warning", "Connection concurrency limit exceeded: %d from %s for service smtp",
                    n, self._namaddr())
            transport.write(R.too_many_connections(addr).to_bytes())
            transport.close()
            self._lost = True
            return
        if svc.tls.wrapper and svc.tls.context is not None:
            # Not one byte may be read before the handshake: it is the
            # ClientHello.  An eager task runs loop.start_tls() up to its
            # first await right here, which takes the transport over.
            # (Pausing reading instead hangs uvloop's handshake when the
            # ClientHello is already waiting in the socket.)
            loop = asyncio.get_running_loop()
            self._tls_early = bytearray()
            self._handshake = asyncio.Task(svc.tls.handshake(loop, transport, self),
                                           loop=loop, eager_start=True)
        self._arm_timer()
        # Started eagerly: the greeting is written here, not one loop turn
        # later; the task then waits for the first command.
        self._task = asyncio.Task(self._run(), loop=asyncio.get_running_loop(), eager_start=True)

    def data_received(self, data: bytes) -> None:
        if self.proto is None or self._lost:
            return
        if self._tls_early is not None:
            self._tls_early += data
            return
        self._arm_timer()
        self.proto.receive_data(data)
        self._after()

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._counted:
            addr = self.client.addr
            n = self.svc.counts.get(addr, 1) - 1
            if n <= 0:
                self.svc.counts.pop(addr, None)
            else:
                self.svc.counts[addr] = n
            self._counted = False
        if self.proto is not None and not self.proto.closing and not self._lost:
            self._log_info("lost connection after %s from %s", self._where(), self._namaddr())
        self._lost = True
        if self.proto is not None:
            self.proto.eof_received()
            self._after()
        self._wake.set()
        if self._task is None:
            self.svc._remove(self)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # ------------------------------------------------------------------

    def shutdown(self) -> None:
        if self.proto is not None and not self._lost:
            self.proto.shutdown()
            self._after()

    def _namaddr(self) -> str:
        c = self.client
        if self.svc.port_logging and c.port:
            return f"{c.name}[{c.addr}]:{c.port}"
        return c.namaddr

    def _where(self) -> str:
        p = self.proto
        where = p.where if p else "CONNECT"
        if p is not None and p.in_data:
            return f"{where} ({p.data_bytes} bytes)"
        return where

    def _log_info(self, fmt: str, *args) -> None:
        self.svc.log("info", fmt, *args)

    def _arm_timer(self) -> None:
        """(Re)start the smtpd_timeout clock.  Called for every read, so it
        only moves the deadline; the one timer handle re-arms itself for
        the rest when it fires early (a timer per command cost a few µs)."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.svc.timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._on_timer)
            return
        self._on_timeout()

    def _on_timeout(self) -> None:
        if self._lost or self.proto is None:
            return
        if self._tls_early is not None:
            self._arm_timer()   # the handshake has its own timeout
            return
        if self.proto.pending is not None:
            self._arm_timer()   # we are the slow one; the client is not idle
            return
        self._log_info("timeout after %s from %s", self._where(), self._namaddr())
        self.proto.timeout()
        self._after()

    def _after(self) -> None:
        """Move protocol events to the worker, write replies, close if done."""
        p = self.proto
        events = p.events()
        while events:
            for e in events:
                kind = type(e)
                if ((kind is P.MailFrom or kind is P.Helo) and self._idle and not self._queue
                        and self.txn is None and self._tls_early is None):
                    # Nothing before it is pending and it needs no I/O: done
                    # now (MAIL's 250 goes out now), without the worker
                    # task's wake-up.
                    try:
                        if kind is P.Helo:
                            self._helo(e)
                        else:
                            self._mail_from(e)
                    except Exception as exc:   # a bug, as in the worker
                        self._internal_error(exc)
                        return
                    continue
                if kind is P.DataStart and self._idle and not self._queue and self._tls_early is None:
                    # The same for DATA's 354, when _data_now() can answer.
                    try:
                        done = self._data_now()
                    except Exception as exc:   # a bug, as in the worker
                        self._internal_error(exc)
                        return
                    if done:
                        continue
                if isinstance(e, P.DataChunk):
                    self._queued_bytes += len(e.data)
                self._queue.append(e)
            events = p.events()
        if self._queue:
            self._wake.set()
        if self._tls_early is not None:
            return   # the transport belongs to the handshake
        out = p.data_to_send()
        t = self.transport
        if out and t is not None and not t.is_closing():
            t.write(out)
        if self._queued_bytes > READ_PAUSE_BYTES and not self._paused and t is not None and not t.is_closing():
            self._paused = True
            t.pause_reading()
        if p.closing and t is not None and not t.is_closing():
            if not p.tls_active:
                _send_fin(t)
            t.close()

    # ------------------------------------------------------------------
    # the worker

    async def _run(self) -> None:
        svc = self.svc
        try:
            try:
                name = await svc.lookup_client_name(self.client.addr)
            except Exception:
                name = "unknown"
            self.client.name = name or "unknown"
            wrapper = svc.tls.wrapper and not self._lost
            if wrapper:
                self._log_info("connect from %s", self._namaddr())
                if svc.tls.context is None:
                    svc.log("warning", "%s: TLS not available: %s", self._namaddr(), svc.tls.error)
                    self.transport.close()
                else:
                    await self._start_tls(self._handshake)
            if not self._lost and not self.transport.is_closing():
                self.proto.start()
                self._after()
            if not wrapper:
                # Logged once the greeting is written: the client waits
                # for the 220, not for the log line.
                self._log_info("connect from %s", self._namaddr())
            while True:
                while self._queue:
                    e = self._queue.popleft()
                    if isinstance(e, P.DataChunk):
                        self._queued_bytes -= len(e.data)
                        if self._paused and self._queued_bytes <= READ_PAUSE_BYTES // 2:
                            self._paused = False
                            if not self._lost and not self.transport.is_closing():
                                self.transport.resume_reading()
                    await self._handle(e)
                    self._after()
                if self._lost or (self.proto.closing and not self._queue):
                    break
                self._wake.clear()
                self._idle = True
                try:
                    await self._wake.wait()
                finally:
                    self._idle = False
        except Exception as e:  # a bug: log it, never show it to the client
            self._internal_error(e)
        finally:
            if self.txn is not None:
                await self.txn.abort()
                self.txn = None
            # Logged from a callback queued behind the transport's close
            # (transport.close() queues that): the client waits for the
            # EOF after the 221, not for the log line.
            asyncio.get_running_loop().call_soon(
                self._log_info, "disconnect from %s %s", self._namaddr(), self.proto.command_stats())
            svc._remove(self)

    async def _handle(self, e) -> None:
        p = self.proto
        if isinstance(e, P.DataChunk):
            if self.txn is not None:
                await self.txn.record(b"B", e.data)
        elif isinstance(e, P.Helo):
            self._helo(e)
        elif isinstance(e, P.MailFrom):
            if self.txn is not None:    # (the core resets before a new MAIL)
                await self.txn.abort()
                self.txn = None
            self._mail_from(e)
        elif isinstance(e, P.RcptTo):
            p.respond(await self._rcpt(e))
        elif isinstance(e, P.DataStart):
            p.respond(await self._data_start(e))
        elif isinstance(e, P.DataEnd):
            p.respond(await self._data_end(e))
        elif isinstance(e, P.BdatChunkEnd):
            if self.txn is None or self.txn.failed is not None:
                p.respond((self.txn and self.txn.failed) or R.QUEUE_WRITE_ERROR)
            else:
                p.respond(None)
        elif isinstance(e, P.TransactionReset):
            if self.txn is not None:
                await self.txn.abort()
                self.txn = None
            self.sender = None
        elif isinstance(e, P.ErrorSleep):
            await asyncio.sleep(self.svc.error_sleep)
            p.respond(None)
        elif isinstance(e, P.Etrn):
            p.respond(await self._etrn(e.site))
        elif isinstance(e, P.StartTls):
            if self.svc.tls.context is None:
                p.respond(TLS_UNAVAILABLE)
            else:
                p.respond(None)
                self._after()        # the 220, and nothing read in between
                await self._start_tls()
        elif isinstance(e, P.Authenticate):
            p.respond(await self._authenticate(e.credentials))
        elif isinstance(e, P.AuthAborted):
            if e.reply is S.AUTH_ABORTED:
                self.svc.log("warning", "%s: SASL %s authentication aborted", self._namaddr(), e.mechanism)
            else:
                self.svc.log("warning", "%s: SASL %s authentication failed: %s%s", self._namaddr(),
                             e.mechanism, e.reply.text,
                             f", sasl_username={e.username}" if e.username else "")
        elif isinstance(e, P.ImproperPipelining):
            self._log_info("improper command pipelining after %s from %s: %s",
                           e.command, self._namaddr(), _printable(e.pending))
        elif isinstance(e, P.TooManyErrors):
            self._log_info("too many errors after %s from %s", e.where, self._namaddr())
        elif isinstance(e, P.BareNewline):
            self._log_info("bare <LF> received after %s from %s", e.where, self._namaddr())
        elif isinstance(e, P.NonSmtpCommand):
            self.svc.log("warning", "non-SMTP command from %s: %s", self._namaddr(), e.line)
        elif isinstance(e, P.LineTooLong):
            self.svc.log("warning", "%s: command line too long after %s", self._namaddr(), e.where)

    def _internal_error(self, e: Exception) -> None:
        """A bug: log it, never show it to the client; 421 and close."""
        svc = self.svc
        svc.log("warning", "%s: internal error in session: %s: %s", self._namaddr(), type(e).__name__, e)
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(Reply(421, "4.3.0", f"{svc.settings.myhostname} Server local error").to_bytes())
            t.close()

    def _helo(self, e: P.Helo) -> None:
        c = self.client
        c.helo = e.name
        c.protocol = "ESMTP" if e.esmtp else "SMTP"

    def _mail_from(self, e: P.MailFrom) -> None:
        self.sender, self.mail_params = e.path, e.params
        self.first_rcpt = None
        self.proto.respond(None)

    async def _start_tls(self, started: asyncio.Task | None = None) -> bool:
        """Handshake on the current transport (or finish one `started`
        already); False (and closed) on failure."""
        svc = self.svc
        self._tls_early = bytearray()
        try:
            if started is not None:
                new = await started
            else:
                new = await svc.tls.handshake(asyncio.get_running_loop(), self.transport, self)
        except TlsHandshakeError as e:
            self._tls_early = None
            self._log_info("SSL_accept error from %s: %s", self._namaddr(), e)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.abort()
            return False
        self.transport = new
        early, self._tls_early = self._tls_early, None
        line = svc.tls.established_line(self._namaddr(), new)
        if line:
            self._log_info("%s", line)
        self.client.sasl_username = None
        self.client.helo = None
        self.proto.reset_after_tls()
        if early:
            self.proto.receive_data(bytes(early))
        self._after()
        return True

    async def _authenticate(self, creds: S.Credentials) -> Reply:
        svc = self.svc
        c = self.client
        if not svc.auth_brake.allow(c.addr):
            svc.log("warning", "AUTH command rate limit exceeded: %d from %s for service %s",
                    svc.auth_brake.limit + 1, self._namaddr(), getattr(svc, "service_name", "smtp"))
            return S.auth_rate_exceeded(c.addr)
        if svc.sasl_backend is None:
            result = S.AuthResult(S.TEMP, "no SASL authentication mechanisms")
        else:
            info = S.ClientInfo(c.addr, c.port, *self._local(), tls=self.proto.tls_active)
            try:
                result = await svc.sasl_backend.authenticate(creds, info)
            except Exception as err:   # a backend bug: temporary, never a traceback
                result = S.AuthResult(S.TEMP, f"{type(err).__name__}")
        if result.status == S.OK:
            creds.username = result.username or creds.username
            c.sasl_username = creds.username
            return S.AUTH_OK
        svc.log("warning", "%s: SASL %s authentication failed: %s, sasl_username=%s",
                self._namaddr(), creds.mechanism, result.reason, creds.username)
        if result.status == S.TEMP:
            return S.auth_temporary(result.reason)
        return S.auth_failed(result.reason)

    def _local(self) -> tuple[str, int]:
        sock = self.transport.get_extra_info("sockname") if self.transport is not None else None
        if isinstance(sock, tuple) and len(sock) >= 2:
            return str(sock[0]), int(sock[1])
        return "", 0

    async def _rcpt(self, e: P.RcptTo) -> Reply | None:
        svc = self.svc
        reply = await svc.policy.check_rcpt(self.client, self.sender, e.path)
        if reply is not None:
            if self.txn is not None:
                await self.txn.settle()     # the queue ID for the log line
            self._log_info("%s", reject_log_line(self._logged_queue_id(), "RCPT",
                                                 self.client, reply, self.sender, e.path))
            return reply
        txn = self.txn
        if txn is None:
            # The first accepted recipient: the queue file is opened now.
            txn = self.txn = CleanupTransaction(svc.pool)
            p = self.proto
            if p.sasl_username is not None:
                fmt = "%s: client=%s, sasl_method=%s, sasl_username=%s"
                args = (self._namaddr(), p.sasl_method, p.sasl_username)
            else:
                fmt, args = "%s: client=%s", (self._namaddr(),)
            # The line waits for the queue ID (the open task logs it).
            txn.begin(self._open_attrs(), lambda qid: self._log_info(fmt, qid, *args))
            await txn.record(b"S", self.sender.address.encode("utf-8", "surrogateescape"))
        rp = e.params
        rec = "\0".join([e.path.address, e.path.address, rp.orcpt, str(rp.notify)])
        await self.txn.record(b"R", rec.encode("utf-8", "surrogateescape"))
        if self.txn.failed is not None:
            return self.txn.failed
        if self.proto.rcpt_count == 0:
            self.first_rcpt = e.path
        return None

    def _only_rcpt(self) -> A.Path | None:
        """The recipient, when the transaction has exactly one."""
        return self.first_rcpt if self.proto.rcpt_count == 1 else None

    def _logged_queue_id(self) -> str | None:
        """The queue ID once logged (first accepted recipient), else None
        (NOQUEUE), even when the file is already open."""
        return (self.txn.queue_id or None) if self.txn is not None else None

    def _open_attrs(self) -> dict:
        c = self.client
        mp = self.mail_params or A.MailParams()
        p = self.proto
        protocol = c.protocol
        if protocol == "ESMTP":     # RFC 3848
            protocol += ("S" if p.tls_active else "") + ("A" if p.sasl_username is not None else "")
        attrs = {
            "client_name": c.name, "client_address": c.addr, "client_port": str(c.port),
            "helo_name": c.helo or "", "protocol": protocol, "rewrite_context": "remote",
        }
        if p.sasl_username is not None:
            attrs["sasl_method"] = p.sasl_method
            attrs["sasl_username"] = p.sasl_username
        if p.tls_active:
            attrs.update(self.svc.tls.received_attrs(self.transport))
        if mp.body:
            attrs["body_type"] = mp.body
        if mp.smtputf8:
            attrs["smtputf8"] = "yes"
        if mp.envid is not None:
            attrs["dsn_envid"] = mp.envid
        if mp.ret is not None:
            attrs["dsn_ret"] = mp.ret
        if mp.size is not None:
            attrs["size"] = mp.size
        return attrs

    async def _data_start(self, e: P.DataStart) -> Reply | None:
        txn = self.txn
        reply = await self.svc.policy.check_data(self.client, self.sender, self.proto.rcpt_count)
        if reply is not None:
            if txn is not None:
                await txn.settle()      # the queue ID for the log line
            self._log_info("%s", reject_log_line(self._logged_queue_id(),
                                                 "BDAT" if e.bdat else "DATA",
                                                 self.client, reply, self.sender, self._only_rcpt()))
            return reply
        if txn is None:
            return R.QUEUE_WRITE_ERROR
        return self._begin_content(txn)

    def _data_now(self) -> bool:
        """DATA answered here, without the worker's wake-up, when it needs
        no I/O: no smtpd_data_restrictions to evaluate (as MAIL above)."""
        txn = self.txn
        if txn is None or self.svc.policy.data_restricted:
            return False
        self.proto.respond(self._begin_content(txn))
        return True

    def _begin_content(self, txn: CleanupTransaction) -> Reply | None:
        # An open still on its way is not waited for (see CleanupTransaction):
        # M and the content join its backlog.
        txn.start_content()
        if txn.failed is not None:
            self._log_open_error(txn)
        return txn.failed

    def _log_open_error(self, txn: CleanupTransaction) -> None:
        if txn.error is not None:
            self.svc.log("warning", "%s: %s", self._namaddr(), txn.error)

    async def _data_end(self, e: P.DataEnd) -> Reply:
        txn, self.txn = self.txn, None
        sender, self.sender = self.sender, None
        if e.error is not None:
            if txn is not None:
                await txn.abort()
            return e.error
        if txn is None:
            return R.QUEUE_WRITE_ERROR
        if self.svc.policy.eod_restricted:
            reply = await self.svc.policy.check_eod(self.client, sender)
            if reply is not None:
                await txn.settle()      # the queue ID for the log line
                self._log_info("%s", reject_log_line(txn.queue_id or None, "END-OF-MESSAGE",
                                                     self.client, reply, sender, self._only_rcpt()))
                await txn.abort()
                return reply
        reply = await txn.commit()
        if reply.code >= 400:
            if txn.error is not None:       # the open failed after the 354
                self._log_open_error(txn)
            else:
                self.svc.log("warning", "%s: %s: cleanup: %s", txn.queue_id or "NOQUEUE",
                             self._namaddr(), reply)
        return reply

    async def _etrn(self, site: str) -> Reply:
        """smtpd_etrn_restrictions first, then Postfix's replies and
        warnings (smtpd.c etrn_cmd, whose fast flush service is qmgr
        here): no enhanced status codes."""
        from smtpd.policy import DomainList
        reply = await self.svc.policy.check_etrn(self.client, site)
        if reply is not None:
            self._log_info("%s", reject_log_line(None, "ETRN", self.client, reply, None, None))
            return reply
        if not DomainList(self.svc.fast_flush, True).match(site):
            self.svc.log("warning", "reject: ETRN %.100s... from %s", site, self._namaddr())
            return R.etrn_denied(site)
        try:
            from fulmar.ipc import channel
            # A trigger, as cleanup's wakeups: bounded by trigger_timeout, so
            # that a stopped or busy qmgr (its socket open, no hello) costs
            # the client seconds and a 458, not $ipc_timeout.
            ch = await channel.connect(self.svc.cfg.get("queue_directory") + "/public/qmgr",
                                       protocol="qmgr", timeout=self.svc.cfg.get("trigger_timeout"))
            try:
                await ch.send_attr({"request": "flush_site", "site": site})
                await ch.flush()
            finally:
                await ch.close(timeout=1.0)
        except Exception:
            self.svc.log("warning", "unable to talk to fast flush service")
            return R.ETRN_UNAVAILABLE
        return R.ETRN_QUEUED


TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available due to local problem")


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else {"\r": "\\r", "\n": "\\n"}.get(c, "?") for c in text)
