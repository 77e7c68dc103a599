"""The smtp/lmtp delivery agent: serves the "delivery" protocol.

NAME
    smtp_client.deliver - deliver one queued message to one next hop

SYNOPSIS
    await serve(ctx)                         # daemon entry (see __main__)
    agent = Agent(Settings.from_config(cfg, "smtp"), resolver, queue_dir, logger)
    results = await agent.deliver(request)   # request: the "deliver" attributes
    await agent.shutdown()

DESCRIPTION
    For each "deliver" request (docs/internals.md, protocol "delivery") the
    agent reads the envelope and content with fulmar.queue.qfile, finds the
    servers, talks SMTP (or LMTP) with smtp_client.protocol, logs one
    Postfix delivery line per recipient and replies with per-recipient
    results {offset, status, dsn, reason, relay}.  It never writes the
    queue file; qmgr marks recipients done.

    Next hop forms: "[host]:port", "[host]" (no MX lookup), "host:port",
    "host" (MX lookup, default port $smtp_tcp_port), "[ipv6:addr]", and for
    LMTP "inet:host:port" and "unix:/path" (LMTP never looks up MX).

    MX handling: hosts in preference order (equal preferences shuffled by
    fulmar.dns), addresses limited by $smtp_mx_address_limit, sessions by
    $smtp_mx_session_limit.  A null MX bounces every recipient with 5.1.10
    "Domain X does not accept mail (nullMX)" (Postfix says 5.1.0; issue 3
    asks for RFC 7505's 5.1.10).  When we are an MX host for the domain
    (an address we listen on, or $myhostname as MX name) the list is cut
    at our preference; nothing left gives 5.4.6 "mail for X loops back to
    myself" (or 4.4.4 "unable to find primary relay for X").

    The next server is tried after a connection failure, a greeting that
    is not 2xx (5xx only with $smtp_skip_5xx_greeting), a 4xx at
    HELO/EHLO/MAIL, or a lost connection; recipients that got 4xx are
    retried at the next server, as Postfix does.  The last server's result
    is final.  A recipient that was never tried on an established session
    gets the last connection error ("connect to H[IP]:25: Connection
    refused", 4.4.1) with relay=none.

    TLS (smtp_client.tls_policy): the level comes from
    $smtp_tls_policy_maps for the next hop, else $smtp_tls_security_level.
    "may" uses STARTTLS when offered, without verification; a failed
    handshake is retried once in plain text with the same server, as
    Postfix does.  "encrypt", "verify" and "secure" never fall back to
    plain text: a server without STARTTLS defers with 4.7.4, a failed
    handshake with 4.7.5 "Cannot start TLS: handshake failure", a
    certificate that does not verify or match with 4.7.5 "Server
    certificate not verified" (the next MX host is tried).  Before the
    handshake, whatever the server sent after its 220 is thrown away.
    With $smtp_tls_loglevel >= 1: "Verified|Trusted|Untrusted TLS
    connection established to host[ip]:port: TLSv1.3 with cipher ...".
    SMTP AUTH with $smtp_sasl_password_maps credentials (looked up by
    server name, then next hop), after STARTTLS when there is one.

    Fallback relays ($smtp_fallback_relay, SMTP only, as Postfix's
    smtp_connect.c): the next hop is tried first, then each fallback
    destination in order (the same syntax as a next hop: "domain",
    "host:port", "[host]", "[host]:port", "[address]:port"; an entry equal
    to the next hop is skipped).  A recipient moves on to the next
    destination when the next hop was not found in DNS (NXDOMAIN, no
    address: instead of bouncing), when a DNS lookup failed temporarily,
    or when it got a non-permanent result at every server of the
    destination (instead of deferring).  Fallbacks are not used when mail
    for the next hop loops back to us, when we are an MX host for it (the
    MX list was cut at our preference), or for a null MX.  Per-destination
    limits ($smtp_mx_address_limit, $smtp_mx_session_limit) count each
    destination on its own.  When the last destination tried was a
    fallback relay, or the next hop is $relayhost, a permanent failure
    that is not a server's reply to a recipient (DNS, loop) is logged as
    "warning: smtp_fallback_relay configuration problem" (or relayhost)
    and deferred with 4.3.5 instead of bounced, as Postfix does.

    $smtp_generic_maps (smtp_client.generic, set as agent.generic by
    serve()) rewrites the envelope and, while the content streams out,
    the addresses in the header section's address headers.

    Connection reuse: after a transaction the connection is kept for
    $smtp_connection_cache_time_limit seconds per next hop (RSET is
    pipelined after the end of data to prove it alive), at most
    $smtp_connection_reuse_count_limit uses (0 = no limit) and
    $smtp_connection_reuse_time_limit seconds.  A request for the same
    next hop takes it without a DNS lookup.  If a reused connection turns
    out dead before MAIL FROM is answered, a fresh connection is made and
    nothing is reported for the dead one.  Idle connections are closed
    with QUIT in the background.

FAILURES
    A queue file that cannot be read defers every recipient with 4.3.0
    and a warning; the DATA phase is then aborted by closing the
    connection, so no truncated message is ever completed with ".".
    An exception in the agent (our bug) defers the request with 4.3.0
    "unknown mail transport error" and logs an error; the daemon goes on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field

from fulmar import dns as fdns
from fulmar.smtp.delivery_log import DeliveryTimes, format_delivery
from fulmar.tlsconfig import TlsConfigError
from smtp_client import protocol as P
from smtp_client import tls_policy as TP

#: Well-known ports for service names when /etc/services lacks them.
_SERVICE_PORTS = {"smtp": 25, "lmtp": 24}
RELAY_NONE = "none"
STOP_POLL = 0.05            # seconds between checks for the last channel to close
DSN_CONNECT = "4.4.1"
DSN_QUEUE_FILE = "4.3.0"
#: A pending-write size above which the content writer waits for drain;
#: asyncio's own high-water mark default (64 KiB) times four.
CONTENT_BUFFER = 4 * 65536

# Stage -> name of the timeout setting.
_STAGE_TIMEOUT = {
    P.STAGE_GREETING: "helo_timeout",
    P.STAGE_HELO: "helo_timeout",
    P.STAGE_HELO_FALLBACK: "helo_timeout",
    P.STAGE_STARTTLS: "starttls_timeout",
    P.STAGE_TLS: "starttls_timeout",
    P.STAGE_MAIL: "mail_timeout",
    P.STAGE_RCPT: "rcpt_timeout",
    P.STAGE_DATA: "data_init_timeout",
    P.STAGE_CONTENT: "data_xfer_timeout",
    P.STAGE_DOT: "data_done_timeout",
    P.STAGE_RSET: "rset_timeout",
    P.STAGE_QUIT: "quit_timeout",
}


# Settings ----------------------------------------------------------------------

def _param(cfg, prefix: str, name: str):
    """$<prefix>_<name>, falling back to smtp_<name> for LMTP."""
    try:
        return cfg.get(f"{prefix}_{name}")
    except KeyError:
        if prefix == "smtp":
            raise
        return cfg.get(f"smtp_{name}")


@dataclass
class Settings:
    prefix: str = "smtp"
    connect_timeout: float = 30
    helo_timeout: float = 300
    mail_timeout: float = 300
    rcpt_timeout: float = 300
    data_init_timeout: float = 120
    data_xfer_timeout: float = 180
    data_done_timeout: float = 600
    rset_timeout: float = 20
    quit_timeout: float = 300
    starttls_timeout: float = 300
    mx_address_limit: int = 5
    mx_session_limit: int = 2
    default_port: int = 25
    cache_time_limit: float = 2
    reuse_count_limit: int = 0
    reuse_time_limit: float = 300
    tls_level: str = "may"
    helo_name: str = "localhost"
    myhostname: str = "localhost"
    skip_5xx_greeting: bool = True
    inet_protocols: list[str] = field(default_factory=lambda: ["ipv4", "ipv6"])
    address_preference: str = "any"
    randomize_addresses: bool = True
    max_line: int = 2048
    delay_resolution: int = 2
    own_addresses: frozenset = frozenset()
    fallback_relay: list[str] = field(default_factory=list)   # SMTP only
    relayhost: str = ""

    @property
    def lmtp(self) -> bool:
        return self.prefix == "lmtp"

    def timeout_for(self, stage: str | None) -> float:
        return getattr(self, _STAGE_TIMEOUT.get(stage or P.STAGE_QUIT, "quit_timeout"))

    @classmethod
    def from_config(cls, cfg, prefix: str = "smtp") -> Settings:
        g = lambda name: _param(cfg, prefix, name)  # noqa: E731
        helo = "lhlo" if prefix == "lmtp" else "helo"
        protocols = cfg.get("inet_protocols")
        if isinstance(protocols, str):
            protocols = protocols.replace(",", " ").split()
        return cls(
            prefix=prefix,
            connect_timeout=g("connect_timeout"),
            helo_timeout=g(f"{helo}_timeout"),
            mail_timeout=g("mail_timeout"),
            rcpt_timeout=g("rcpt_timeout"),
            data_init_timeout=g("data_init_timeout"),
            data_xfer_timeout=g("data_xfer_timeout"),
            data_done_timeout=g("data_done_timeout"),
            rset_timeout=g("rset_timeout"),
            quit_timeout=g("quit_timeout"),
            starttls_timeout=g("starttls_timeout"),
            mx_address_limit=g("mx_address_limit"),
            mx_session_limit=g("mx_session_limit"),
            default_port=parse_port(str(g("tcp_port"))),
            cache_time_limit=g("connection_cache_time_limit"),
            reuse_count_limit=g("connection_reuse_count_limit"),
            reuse_time_limit=g("connection_reuse_time_limit"),
            tls_level=(g("tls_security_level") or "none").lower(),
            helo_name=g(f"{helo}_name"),
            myhostname=cfg.get("myhostname"),
            skip_5xx_greeting=g("skip_5xx_greeting"),
            inet_protocols=protocols,
            address_preference=g("address_preference"),
            randomize_addresses=g("randomize_addresses"),
            max_line=cfg.get("line_length_limit"),
            delay_resolution=cfg.get("delay_logging_resolution_limit"),
            own_addresses=own_addresses(cfg.get("inet_interfaces"), cfg.get("proxy_interfaces")),
            # Postfix's lmtp(8) never uses fallback relays.
            fallback_relay=[] if prefix == "lmtp" else list(cfg.get("smtp_fallback_relay") or []),
            relayhost=str(cfg.get("relayhost") or ""),
        )


def parse_port(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        if text in _SERVICE_PORTS:
            return _SERVICE_PORTS[text]
        raise ValueError(f"unknown service: {text}") from None


def _interface_addresses() -> set[str]:
    """Addresses of this host's interfaces (Linux /proc), for inet_interfaces=all."""
    out: set[str] = set()
    try:
        with open("/proc/net/fib_trie") as f:
            last = None
            for line in f:
                s = line.strip()
                if s.startswith("|--"):
                    last = s[3:].strip()
                elif "host LOCAL" in s and last:
                    out.add(last)
    except OSError:
        out.add("127.0.0.1")
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                h = line.split()[0]
                out.add(str(ipaddress.IPv6Address(bytes.fromhex(h))))
    except (OSError, ValueError, IndexError):
        pass
    return out


def own_addresses(inet_interfaces, proxy_interfaces=()) -> frozenset:
    """The addresses this MTA receives mail on (Postfix own_inet_addr_list)."""
    def items(v):
        return v.replace(",", " ").split() if isinstance(v, str) else list(v or [])
    out: set[str] = set()
    for item in items(inet_interfaces) + items(proxy_interfaces):
        low = item.lower()
        if low == "all":
            out |= _interface_addresses()
        elif low == "loopback-only":
            out |= {"127.0.0.1", "::1"}
        else:
            addr = item.strip("[]")
            try:
                out.add(str(ipaddress.ip_address(addr)))
            except ValueError:
                pass   # XXX host names in inet_interfaces are not resolved here
    return frozenset(out)


# Next hops -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    port: int
    mx: bool
    unix_path: str = ""

    @property
    def key(self) -> tuple:
        return (self.host.lower(), self.port, self.mx, self.unix_path)


def parse_nexthop(nexthop: str, default_port: int, lmtp: bool = False) -> Destination:
    """Postfix's smtp/lmtp destination syntax -> Destination."""
    s = nexthop.strip()
    if lmtp:
        if s.startswith("unix:"):
            return Destination("", 0, False, s[5:])
        if s.startswith("inet:"):
            s = s[5:]
    port = default_port
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError(f"bad destination: {nexthop}")
        host, rest = s[1:end], s[end + 1:]
        if host.lower().startswith("ipv6:"):
            host = host[5:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad destination: {nexthop}")
            port = parse_port(rest[1:])
        return Destination(host, port, False)
    host, sep, p = s.rpartition(":")
    if sep and host and ":" not in host:
        port = parse_port(p)
    else:
        host = s
    return Destination(host, port, not lmtp)


@dataclass(slots=True)
class Target:
    name: str
    ip: str
    port: int
    pref: int = 0
    unix_path: str = ""

    @property
    def namaddr(self) -> str:
        return f"{self.name}[{self.unix_path or self.ip}]"

    @property
    def relay(self) -> str:
        return self.namaddr if self.unix_path else f"{self.namaddr}:{self.port}"


class TargetList(list):
    """Servers in order; i_am_mx: the MX list was cut at our own preference."""

    def __init__(self, items=(), i_am_mx: bool = False):
        super().__init__(items)
        self.i_am_mx = i_am_mx


class FinalError(Exception):
    def __init__(self, failure: P.Failure):
        super().__init__(failure.reason)
        self.failure = failure


class QueueFileError(Exception):
    pass


# Connections ---------------------------------------------------------------------

@dataclass
class Connection:
    target: Target
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client: P.Client
    created: float
    uses: int = 0
    timer: asyncio.TimerHandle | None = None
    tls_policy: TP.TlsPolicy | None = None
    nexthop: str = ""          # the next-hop domain, for certificate names


class ConnectionCache:
    """Idle connections per next hop, closed after the time limit."""

    def __init__(self, closer):
        self._idle: dict[tuple, list[Connection]] = {}
        self._closer = closer

    def put(self, key: tuple, conn: Connection, ttl: float) -> None:
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(ttl, self._expire, key, conn)
        self._idle.setdefault(key, []).append(conn)

    def get(self, key: tuple) -> Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.timer:
                conn.timer.cancel()
                conn.timer = None
            if not conns:
                del self._idle[key]
            if conn.writer.is_closing():
                continue
            return conn
        return None

    def _expire(self, key: tuple, conn: Connection) -> None:
        conns = self._idle.get(key, [])
        if conn in conns:
            conns.remove(conn)
            if not conns:
                self._idle.pop(key, None)
            self._closer(conn)

    def drain_all(self) -> list[Connection]:
        out = [c for conns in self._idle.values() for c in conns]
        for c in out:
            if c.timer:
                c.timer.cancel()
        self._idle.clear()
        return out

    def __len__(self) -> int:
        return sum(len(v) for v in self._idle.values())


@dataclass
class Attempt:
    done: P.TransactionDone | None = None
    failure: P.Failure | None = None
    setup_done: float | None = None
    reusable: bool = False
    alive: bool = False
    tls_failed: bool = False


@dataclass(slots=True)
class Outcome:
    status: str
    dsn: str
    reason: str
    relay: str = RELAY_NONE
    setup_done: float | None = None
    done: float = 0.0
    conn_use: int = 0


class _NullLog:
    def info(self, *a):
        pass

    warning = error = info


# The agent ---------------------------------------------------------------------------

class Agent:
    def __init__(self, settings: Settings, resolver: fdns.Resolver, queue_dir: str,
                 logger=None, qfile=None, tls_context: ssl.SSLContext | None = None):
        self.s = settings
        self.resolver = resolver
        self.queue_dir = queue_dir
        self.log = logger or _NullLog()
        if qfile is None:
            from fulmar.queue import qfile as _qfile
            qfile = _qfile
        self.qfile = qfile
        self.cache = ConnectionCache(self._close_later)
        self._background: set[asyncio.Task] = set()
        self._tls_context = tls_context
        # Graceful stop (reload, postfix stop): channels from qmgr with no
        # request in progress are closed, busy ones after their last reply,
        # so that a request is either answered or never started (qmgr then
        # retries it on a fresh connection, to the new generation).
        self.stopping = False
        self._channels: dict = {}           # channel -> its request tasks

    def stop(self) -> None:
        self.stopping = True
        for ch, tasks in list(self._channels.items()):
            if not tasks:
                ch.abort()

    async def wait_idle(self) -> None:
        """Until every channel has been closed (after stop()); a channel
        accepted just before the listener closed is closed when idle too."""
        while self._channels:
            await asyncio.sleep(STOP_POLL)
            self.stop()

    # -- IPC ---------------------------------------------------------------------
    async def handle_channel(self, ch) -> None:
        from fulmar.ipc import channel
        tasks: set[asyncio.Task] = set()
        self._channels[ch] = tasks
        try:
            while True:
                try:
                    frame = await ch.recv(timeout=None)
                except (channel.ChannelError, ConnectionError, asyncio.IncompleteReadError, EOFError):
                    break
                if ch.closed:
                    # stop() closed this channel while the request was on its
                    # way: no reply can go back, so qmgr sends the request
                    # again elsewhere.  Delivering it here too would deliver
                    # the message twice (seen in a reload during a stream).
                    break
                attrs = _frame_attrs(frame)
                if not isinstance(attrs, dict) or attrs.get("request") != "deliver":
                    self.log.warning("unexpected delivery request: %.100r", attrs)
                    continue
                # Eager: the delivery starts now, not one loop turn later.
                t = asyncio.Task(self._serve_request(ch, attrs), loop=asyncio.get_running_loop(),
                                 eager_start=True)
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._channels.pop(ch, None)

    async def _serve_request(self, ch, req: dict) -> None:
        try:
            results = await self.deliver(req)
        except Exception as e:   # our bug: defer, never crash the daemon
            self.log.error("%s: delivery failed: %s: %s", req.get("queue_id", "?"), type(e).__name__, e)
            results = [{"offset": r.get("offset"), "status": "deferred", "dsn": "4.3.0",
                        "reason": "unknown mail transport error", "relay": RELAY_NONE}
                       for r in req.get("recipients") or [] if isinstance(r, dict)]
        await ch.send_attr({"id": req.get("id"), "results": results})
        if self.stopping and len(self._channels.get(ch, ())) <= 1:   # only this request
            await ch.close()

    # -- one request ----------------------------------------------------------------
    async def deliver(self, req: dict) -> list[dict]:
        handoff = time.time()
        queue_id = str(req.get("queue_id", ""))
        rcpts = [r for r in req.get("recipients") or [] if isinstance(r, dict)]
        arrival = float(req.get("arrival_time") or handoff)
        active = req.get("qmgr_time")
        times_base = (arrival, float(active) if active is not None else None, handoff)
        outcomes: list[Outcome | None] = [None] * len(rcpts)
        path = os.path.join(self.queue_dir, str(req.get("path", "")))
        try:
            if isinstance(req.get("content_offset"), int) and isinstance(req.get("content_size"), int):
                # qmgr read the envelope a moment ago: only the content is
                # read here, or (a small file qmgr has just read) taken from
                # the request.
                content = req.get("content")
                if isinstance(content, str):
                    env = self.qfile.content_envelope_of(path, content.encode("latin-1"),
                                                         req["content_offset"], req["content_size"])
                else:
                    env = self.qfile.content_envelope(path, req["content_offset"], req["content_size"])
                env.attrs["body_type"] = str(req.get("body_type") or "")
            else:
                env = self.qfile.read_envelope(path)
        except Exception as e:   # CorruptQueueFile, OSError
            self.log.warning("%s: cannot read queue file %s: %s", queue_id, path, e)
            now = time.time()
            outcomes = [Outcome("deferred", DSN_QUEUE_FILE, "error reading queue file", done=now)
                        for _ in rcpts]
            return self._report(queue_id, rcpts, outcomes, times_base)
        msg = P.Message(
            sender=str(req.get("sender", env.sender) or ""),
            recipients=[P.Rcpt(str(r.get("address", "")), str(r.get("orig_address") or ""),
                               str(r.get("dsn_orcpt") or ""), int(r.get("dsn_notify") or 0)) for r in rcpts],
            size=int(env.content_size),
            body_8bit=str(env.attrs.get("body_type", "")).upper() == "8BITMIME",
            smtputf8=_smtputf8_mask(req.get("smtputf8", env.attrs.get("smtputf8"))),
            dsn_ret=req.get("dsn_ret") or env.attrs.get("dsn_ret") or "",
            dsn_envid=str(req.get("dsn_envid") or env.attrs.get("dsn_envid") or ""),
        )
        generic = getattr(self, "generic", None)     # smtp_client.generic (smtp_generic_maps)
        if generic is not None:
            msg = generic.apply(msg)
        try:
            await self._deliver_message(str(req.get("nexthop", "")), msg, path, env, outcomes)
        except QueueFileError as e:
            self.log.warning("%s: cannot read queue file %s: %s", queue_id, path, e)
            now = time.time()
            for i, o in enumerate(outcomes):
                if o is None or o.status == "deferred":
                    outcomes[i] = Outcome("deferred", DSN_QUEUE_FILE, "error reading queue file", done=now)
        return self._report(queue_id, rcpts, outcomes, times_base)

    def _report(self, queue_id, rcpts, outcomes, times_base) -> list[dict]:
        arrival, active, handoff = times_base
        results = []
        for r, o in zip(rcpts, outcomes):
            if o is None:   # cannot happen; never lose a recipient
                o = Outcome("deferred", "4.3.0", "unknown mail transport error", done=time.time())
            times = DeliveryTimes(arrival, active, handoff, o.setup_done)
            self.log.info("%s", format_delivery(
                queue_id, recipient=str(r.get("address", "")), orig_recipient=str(r.get("orig_address") or ""),
                relay=o.relay, times=times, dsn=o.dsn, status=o.status, reason=o.reason,
                now=o.done, conn_use=o.conn_use, resolution=self.s.delay_resolution))
            results.append({"offset": r.get("offset"), "status": o.status, "dsn": o.dsn,
                            "reason": o.reason, "relay": o.relay})
        return results

    def sites(self, nexthop: str) -> list[str]:
        """The next hop, then the fallback relays not equal to it (SMTP only)."""
        sites = [nexthop]
        seen = {nexthop.strip().lower()}
        for site in self.s.fallback_relay:
            key = site.strip().lower()
            if key and key not in seen:
                seen.add(key)
                sites.append(site.strip())
        return sites

    async def _deliver_message(self, nexthop: str, msg: P.Message, path: str, env,
                               outcomes: list) -> None:
        pending = list(range(len(msg.recipients)))
        last: P.Failure | None = None
        sites = self.sites(nexthop)
        fallback = False
        for k, site in enumerate(sites):
            fallback = k > 0
            pending, last, stop = await self._deliver_site(
                site, k + 1 == len(sites), msg, path, env, outcomes, pending)
            if not pending or stop:
                break
        if pending and last is not None:
            if not last.temporary and last.code == 0:
                # A destination we were told to use (not one the mail names)
                # is unknown or loops: a configuration problem, not a bounce.
                if fallback:
                    self.log.warning("smtp_fallback_relay configuration problem")
                    last = P.Failure("4.3.5", last.reason, last.stage)
                elif not self.s.lmtp and self.s.relayhost and nexthop == self.s.relayhost:
                    self.log.warning("relayhost configuration problem")
                    last = P.Failure("4.3.5", last.reason, last.stage)
            now = time.time()
            for i in pending:
                outcomes[i] = Outcome(last.status, last.dsn, last.reason, RELAY_NONE, None, now)
        # else: the soft results of the last session are already final

    async def _deliver_site(self, site: str, final: bool, msg: P.Message, path: str, env,
                            outcomes: list, pending: list[int]) -> tuple[list[int], P.Failure | None, bool]:
        """Try one destination (the next hop or a fallback relay).

        Returns (recipients still without a final result, the failure to
        give them if nothing else answers, whether to stop here).  Soft
        results are final only when `final` (the last destination, or one
        we are MX host for).
        """
        s = self.s

        def settled(f: P.Failure, relay: str = RELAY_NONE, setup=None):
            now = time.time()
            for i in pending:
                outcomes[i] = Outcome(f.status, f.dsn, f.reason, relay, setup, now)
            return [], None, True

        try:
            dest = parse_nexthop(site, s.default_port, s.lmtp)
        except ValueError as e:
            return pending, P.Failure("4.3.5", f"mail transport unavailable: {e}", "setup"), False
        sessions = 0
        # A cached connection to this destination needs no DNS at all.
        conn = self.cache.get(dest.key)
        if conn is not None:
            att = await self._attempt(conn, msg, pending, path, env, reused=True)
            if att is not None:
                sessions += 1
                pending = self._apply(att, conn, msg, pending, outcomes, more=True)
                self._after(dest, conn, att)
                if not pending:
                    return pending, None, True
        try:
            targets = await self._targets(dest)
        except fdns.DnsError as e:
            # Not found or not now: the next destination may take it.
            return pending, P.Failure(e.dsn, e.text, "dns"), False
        except FinalError as e:
            # Null MX, or the mail loops back to us: no fallback either.
            return pending, e.failure, True
        if getattr(targets, "i_am_mx", False):
            final = True             # no fallback relays for domains we are MX host for
        last: P.Failure | None = None
        for n, target in enumerate(targets):
            if s.mx_session_limit and sessions >= s.mx_session_limit:
                break
            more = not final or (n + 1 < len(targets)
                                 and not (s.mx_session_limit and sessions + 1 >= s.mx_session_limit))
            pol = self._policies().lookup(site)
            if pol.level == TP.RETRY:
                return settled(P.Failure("4.3.0", f"TLS policy lookup error for {site}", "setup"))
            tls = pol.level
            while True:
                conn = await self._connect(target, tls, pol, dest, site)
                if isinstance(conn, P.Failure):
                    last = conn
                    break
                sessions += 1
                att = await self._attempt(conn, msg, pending, path, env, reused=False)
                if att.tls_failed and tls == "may":
                    pol = TP.TlsPolicy("none")
                    self._close_later(conn, polite=False)
                    tls = "none"       # RETRY_AS_PLAINTEXT, same server
                    continue
                if att.tls_failed:
                    att.failure = P.Failure("4.7.5", "Cannot start TLS: handshake failure", P.STAGE_TLS)
                break
            if isinstance(conn, P.Failure):
                continue
            if att.failure is not None and att.done is None:
                f = att.failure
                next_ok = f.temporary or (f.stage == P.STAGE_GREETING and s.skip_5xx_greeting)
                self._after(dest, conn, att)
                if next_ok and more:
                    last = f
                    continue
                return settled(f, target.relay, att.setup_done)
            pending = self._apply(att, conn, msg, pending, outcomes, more=more)
            self._after(dest, conn, att)
            if not pending:
                return pending, None, True
            last = None
        return pending, last, final

    def _apply(self, att: Attempt, conn: Connection, msg, pending, outcomes, more: bool) -> list[int]:
        """Record an attempt's results; return the recipients to try again."""
        now = time.time()
        relay = conn.target.relay
        done = att.done
        if done is None:
            f = att.failure or P.Failure("4.4.2", f"lost connection with {conn.target.namaddr}", "setup")
            for i in pending:
                outcomes[i] = Outcome(f.status, f.dsn, f.reason, relay, att.setup_done, now, conn.uses)
            return list(pending) if (f.temporary and more) else []
        if done.mail_failed is not None and done.mail_failed.temporary and more:
            f = done.mail_failed
            for i in pending:
                outcomes[i] = Outcome(f.status, f.dsn, f.reason, relay, att.setup_done, now, conn.uses)
            return list(pending)
        again = []
        for i, res in zip(pending, done.results):
            outcomes[i] = Outcome(res.status, res.dsn, res.reason, relay, att.setup_done, now, conn.uses)
            if res.status == "deferred" and more:
                again.append(i)
        return again

    def _after(self, dest: Destination, conn: Connection, att: Attempt) -> None:
        """Cache a reusable connection or close it."""
        s = self.s
        if att.reusable and not conn.client.closed and self._may_reuse(conn):
            self.cache.put(dest.key, conn, s.cache_time_limit)
        else:
            self._close_later(conn, polite=att.alive and not conn.client.closed)

    def _may_reuse(self, conn: Connection) -> bool:
        s = self.s
        if s.cache_time_limit <= 0:
            return False
        if s.reuse_count_limit and conn.uses >= s.reuse_count_limit:
            return False
        return time.time() - conn.created < s.reuse_time_limit

    # -- DNS --------------------------------------------------------------------
    async def _targets(self, dest: Destination) -> list[Target]:
        s = self.s
        if dest.unix_path:
            return [Target(s.myhostname, "", 0, 0, dest.unix_path)]
        if not dest.mx:
            ips = await self.resolver.resolve_addresses(
                dest.host, s.inet_protocols, preference=s.address_preference,
                randomize=s.randomize_addresses)
            targets = [Target(dest.host, ip, dest.port) for ip in ips]
            return targets[: s.mx_address_limit] if s.mx_address_limit else targets
        mx = await self.resolver.resolve_mx(dest.host)
        if mx.null_mx:
            raise FinalError(P.Failure("5.1.10", f"Domain {dest.host} does not accept mail (nullMX)", "dns"))
        outs = await asyncio.gather(*(
            self.resolver.resolve_addresses(h, s.inet_protocols, preference=s.address_preference,
                                            randomize=s.randomize_addresses)
            for _, h in mx.hosts), return_exceptions=True)
        targets = TargetList()
        errors: list[fdns.DnsError] = []
        for (pref, host), out in zip(mx.hosts, outs):
            if isinstance(out, fdns.DnsError):
                errors.append(out)
            elif isinstance(out, BaseException):
                raise out
            else:
                targets += [Target(host, ip, dest.port, pref) for ip in out]
        if not targets:
            soft = [e for e in errors if e.temporary]
            if not mx.implicit:
                self.log.warning("no MX host for %s has a valid address record", dest.host)
            raise (soft or errors)[-1]
        # Loop detection: cut the list at our own preference.
        me = s.myhostname.lower().rstrip(".")
        mine = [t.pref for t in targets if t.ip in s.own_addresses or t.name.lower() == me]
        if mine:
            self_pref = min(mine)
            best_found = targets[0].pref
            targets = TargetList(t for t in targets if t.pref < self_pref)
            if not targets:
                if mx.hosts[0][0] != best_found:
                    raise FinalError(P.Failure("4.4.4", f"unable to find primary relay for {dest.host}", "dns"))
                raise FinalError(P.Failure("5.4.6", f"mail for {dest.host} loops back to myself", "dns"))
            targets.i_am_mx = True
        return TargetList(targets[: s.mx_address_limit], targets.i_am_mx) if s.mx_address_limit else targets

    # -- sessions ---------------------------------------------------------------
    def _policies(self):
        pols = getattr(self, "policies", None)
        if pols is None:
            pols = self.policies = _StaticPolicies(self.s.tls_level)
        return pols

    async def _connect(self, target: Target, tls: str, pol: TP.TlsPolicy | None = None,
                       dest: Destination | None = None, nexthop_text: str = "") -> Connection | P.Failure:
        s = self.s
        nexthop = dest.host if dest is not None else target.name
        creds = self._policies().sasl_credentials(target.name, nexthop_text or nexthop)
        if creds == TP.RETRY:
            return P.Failure("4.3.0", f"SASL password lookup error for {target.name}", "connect")
        try:
            if target.unix_path:
                coro = asyncio.open_unix_connection(target.unix_path)
            else:
                coro = asyncio.open_connection(target.ip, target.port)
            # 0 means the system's own connect timeout (Postfix: lmtp_connect_timeout = 0s)
            reader, writer = await asyncio.wait_for(coro, s.connect_timeout or None)
        except TimeoutError:
            return P.Failure(DSN_CONNECT, f"connect to {target.relay}: Connection timed out", "connect")
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else (e.strerror or str(e))
            return P.Failure(DSN_CONNECT, f"connect to {target.relay}: {why}", "connect")
        client = P.Client(peer=target.namaddr, helo_name=s.helo_name, myhostname=s.myhostname,
                          lmtp=s.lmtp, tls="none" if target.unix_path else _tls_mode(tls),
                          max_line=s.max_line, sasl=creds)
        return Connection(target, reader, writer, client, time.time(),
                          tls_policy=pol or TP.TlsPolicy(TP.normal_level(tls)), nexthop=nexthop)

    async def _read_events(self, conn: Connection) -> list:
        client = conn.client
        out = client.pull()
        try:
            if out:
                w = conn.writer
                w.write(out)
                if w.transport.get_write_buffer_size():   # else drain() has nothing to wait for
                    await asyncio.wait_for(w.drain(), self.s.timeout_for(client.waiting_for))
            data = await asyncio.wait_for(conn.reader.read(65536),
                                          self.s.timeout_for(client.waiting_for))
        except TimeoutError:
            return client.connection_lost(timeout=True)
        except (OSError, ConnectionError):
            return client.connection_lost()
        if not data:
            return client.connection_lost()
        return client.receive(data)

    async def _attempt(self, conn: Connection, msg: P.Message, pending: list[int], path, env,
                       reused: bool) -> Attempt | None:
        """Run one transaction on a connection; None: reused and found dead."""
        client = conn.client
        sub = P.Message(msg.sender, [msg.recipients[i] for i in pending], msg.size, msg.body_8bit,
                        msg.smtputf8, msg.dsn_ret, msg.dsn_envid)
        want_cache = self.s.cache_time_limit > 0
        att = Attempt()
        queue: deque = deque()
        begun = False
        if reused:
            queue.append(P.Ready())
        while True:
            if not queue:
                queue.extend(await self._read_events(conn))
                continue
            ev = queue.popleft()
            if isinstance(ev, P.Ready):
                if begun:
                    att.reusable = att.alive = True
                    return att
                begun = True
                conn.uses += 1
                att.setup_done = time.time()
                queue.extend(client.begin(sub))
            elif isinstance(ev, P.StartTLS):
                result = await self._start_tls(conn)
                if result is False:
                    att.tls_failed = True
                    return att
                if isinstance(result, P.Failure):
                    att.failure = result
                    return att
                client.tls_established()
            elif isinstance(ev, P.SendContent):
                queue.extend(await self._send_content(conn, path, env, want_cache))
            elif isinstance(ev, P.TransactionDone):
                sf = ev.session_failure
                if reused and sf is not None and not client.mail_replied:
                    self._close_later(conn, polite=False)
                    return None
                if reused and ev.mail_failed is not None and ev.mail_failed.code == 421:
                    self._close_later(conn, polite=False)
                    return None
                att.done = ev
                if sf is not None:
                    return att
                att.alive = True
                if not want_cache:
                    return att
            elif isinstance(ev, P.SessionFailed):
                if att.done is None:
                    att.failure = ev.failure
                att.alive = False
                return att
            elif isinstance(ev, P.Closed):
                return att

    async def _send_content(self, conn: Connection, path, env, want_cache: bool) -> list:
        enc = P.ContentEncoder()
        w = conn.writer
        timeout = self.s.data_xfer_timeout
        # smtp_generic_maps also rewrites header addresses (smtp_client.generic);
        # once the header section is over, blocks go through untouched.
        generic = getattr(self, "generic", None)
        headers = generic.header_stream() if generic is not None else None
        # Blocks are gathered and written CONTENT_BUFFER at a time; the
        # last (for most messages the only) write carries the end of data
        # too: one send() per message instead of one per block plus one.
        out: list[bytes] = []
        out_len = 0
        try:
            try:
                for block in self.qfile.iter_content(path, env):
                    if headers is not None and not headers.done:
                        block = headers.feed(block)
                    data = enc.encode(block)
                    out.append(data)
                    out_len += len(data)
                    if out_len >= CONTENT_BUFFER:
                        w.write(b"".join(out))
                        out.clear()
                        out_len = 0
                        if w.transport.get_write_buffer_size() > CONTENT_BUFFER:
                            await asyncio.wait_for(w.drain(), timeout)
                if headers is not None:
                    out.append(enc.encode(headers.finish()))
            except (OSError, ConnectionError, TimeoutError):
                raise
            except Exception as e:   # corrupt queue file: never finish the DATA
                w.transport.abort()
                conn.client.closed = True
                raise QueueFileError(str(e)) from e
            evs = conn.client.content_end(enc.finish(), rset=want_cache)
            out.append(conn.client.pull())
            w.write(b"".join(out))
            if w.transport.get_write_buffer_size():
                await asyncio.wait_for(w.drain(), timeout)
            return evs
        except TimeoutError:
            return conn.client.content_timeout()
        except (OSError, ConnectionError):
            return conn.client.connection_lost()

    async def _start_tls(self, conn: Connection):
        """True: TLS is on; False: the handshake failed; a Failure: TLS is
        up but not good enough for the policy (or not possible at all)."""
        pols = self._policies()
        pol = conn.tls_policy or TP.TlsPolicy("may")
        target = conn.target
        try:
            ctx = self._tls_context or pols.context(pol)
        except TlsConfigError as e:
            self.log.warning("TLS library problem: %s", e)
            if pol.mandatory:
                return P.Failure("4.7.5", "TLS is required, but our TLS engine is unavailable", P.STAGE_TLS)
            return False
        # The client side of CVE-2011-0411: bytes the server sent after its
        # 220 are not part of the TLS session.  XXX asyncio has no public
        # way to empty a StreamReader's buffer.
        buffered = getattr(conn.reader, "_buffer", None)
        if buffered:
            buffered.clear()
        sni = pols.server_hostname(pol, target.name, conn.nexthop)
        try:
            await asyncio.wait_for(conn.writer.start_tls(ctx, server_hostname=sni),
                                   self.s.starttls_timeout)
        except ssl.SSLCertVerificationError as e:
            self.log.info("server certificate verification failed for %s: %s",
                          target.relay, e.verify_message or e.reason or e)
            return P.Failure("4.7.5", "Server certificate not verified", P.STAGE_TLS)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as e:
            self.log.info("SSL_connect error to %s: %s", target.relay, getattr(e, "reason", None) or e)
            return False
        sslobj = conn.writer.get_extra_info("ssl_object")
        if sslobj is None:
            return False
        matched = False
        if pol.verifying:
            names = pols.match_names(pol, target.name, conn.nexthop)
            matched = TP.cert_matches(sslobj.getpeercert(), names)
        label = TP.trust_label(pol.verifying, matched, has_cert=True)
        if getattr(pols, "loglevel", 0) >= 1:
            from fulmar.tlsconfig import summary
            self.log.info("%s TLS connection established to %s: %s", label, target.relay, summary(sslobj))
        if pol.verifying and not matched:
            self.log.info("server certificate verification failed for %s: certificate name does not "
                          "match %s", target.relay, ", ".join(pols.match_names(pol, target.name, conn.nexthop)))
            return P.Failure("4.7.5", "Server certificate not verified", P.STAGE_TLS)
        return True

    # -- closing -----------------------------------------------------------------
    def _close_later(self, conn: Connection, polite: bool = True) -> None:
        t = asyncio.get_running_loop().create_task(self._close(conn, polite))
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    async def _close(self, conn: Connection, polite: bool) -> None:
        try:
            if polite and not conn.client.closed and not conn.writer.is_closing():
                conn.client.quit()
                conn.writer.write(conn.client.pull())
                await asyncio.wait_for(conn.reader.read(self.s.max_line), self.s.quit_timeout)
        except (OSError, ConnectionError, TimeoutError):
            pass
        finally:
            conn.writer.close()

    async def shutdown(self) -> None:
        for conn in self.cache.drain_all():
            self._close_later(conn)
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


def _tls_mode(level: str) -> str:
    """The protocol's view: no TLS, opportunistic, or required (verification is ours)."""
    level = TP.normal_level(level)
    if level == "none":
        return "none"
    if level == "may":
        return "may"
    return "encrypt"


class _StaticPolicies:
    """Policies without a configuration: one level, no verification data (tests)."""

    loglevel = 0

    def __init__(self, level: str):
        self.level = TP.normal_level(level)

    def lookup(self, nexthop: str) -> TP.TlsPolicy:
        return TP.TlsPolicy(self.level)

    def context(self, pol: TP.TlsPolicy):
        return _default_tls_context()

    def match_names(self, pol, hostname: str, nexthop: str) -> list[str]:
        return [hostname.lower()]

    def server_hostname(self, pol, hostname: str, nexthop: str):
        return None

    def sasl_credentials(self, hostname: str, nexthop: str):
        return None


def _default_tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _smtputf8_mask(value) -> int:
    if isinstance(value, bool):
        return P.SMTPUTF8_REQUESTED if value else 0
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v.isdigit():
            return int(v)
        return P.SMTPUTF8_REQUESTED if v in ("yes", "true", "y", "1") else 0
    return 0


def _frame_attrs(frame):
    for name in ("attrs", "payload", "data"):
        v = getattr(frame, name, None)
        if isinstance(v, dict):
            return v
    if isinstance(frame, dict):
        return frame
    if isinstance(frame, tuple) and len(frame) == 2 and isinstance(frame[1], dict):
        return frame[1]
    return None


# The daemon -----------------------------------------------------------------------

async def serve(ctx) -> None:
    from fulmar import log
    from fulmar.ipc import channel
    prefix = "lmtp" if ctx.process_name == "lmtp" else "smtp"
    settings = Settings.from_config(ctx.cfg, prefix)
    agent = Agent(settings, fdns.Resolver.from_config(ctx.cfg), ctx.queue_dir, logger=log)
    agent.policies = TP.Policies.from_config(ctx.cfg, prefix)
    from smtp_client.generic import GenericMaps
    agent.generic = GenericMaps.from_config(ctx.cfg, prefix, warn=log.warning)
    servers = [await channel.serve(sock, "delivery", agent.handle_channel) for sock in ctx.listeners]
    ctx.ready()
    # qmgr keeps idle channels pooled: idle = no delivery in progress.
    ctx.exit_when_idle(servers, lambda: any(agent._channels.values()))
    await ctx.stopping.wait()
    for srv in servers:
        close = getattr(srv, "close", None)
        if close is not None:
            close()
    # Deliveries in progress finish and are answered (daemon.main bounds
    # the wait by daemon_timeout); idle channels close at once.
    agent.stop()
    await agent.wait_idle()
    await agent.shutdown()
