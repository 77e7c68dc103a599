"""The bounce daemon: delivery status logs and DSNs.

NAME
    bounce -- Postfix's bounce(8), defer(8) and trace(8) services in one

SYNOPSIS
    python -I -m bounce -c CONFIG_DIR -s bounce -t unix   (started by master;
    the same code serves the master.cf services bounce, defer and trace)

DESCRIPTION
    bounce keeps the per-message logs bounce/QID (final failures), defer/QID
    (delay reasons, read by mailq) and trace/QID (successful deliveries of
    NOTIFY=SUCCESS recipients) with bounce.logfile, and turns them into
    RFC 3464 notices with fulmar.smtp.dsn.  A notice is posted like any
    message: through cleanup (`private/cleanup`, origin "bounce"), with the
    null sender `<>`, so it is queued, delivered and retried as usual.

    It never bounces a bounce: when the failed message had the null sender,
    the failure notice goes to $2bounce_notice_recipient (From
    $double_bounce_sender, the whole original attached) and is logged as
    `QID: postmaster non-delivery notification: NEWQID`; when the failed
    message was itself such a notice (sender $double_bounce_sender), it is
    dropped with `warning: QID: undeliverable postmaster notification
    discarded`, as Postfix does.

PROTOCOL "bounce" (served on private/bounce, private/defer, private/trace;
    client: qmgr).  Every request is one attribute frame with "request" and
    "id"; every reply is {"id": N, "status": "ok" | "fail", ...}; "fail"
    means "nothing was done, try again later" and carries "reason".

    append   {"log": "bounce"|"defer"|"trace", "queue_id",
              "address", "orig_address"?, "dsn_orcpt"?, "dsn_notify"?,
              "offset"?, "status": "sent"|"deferred"|"bounced"|"expired",
              "dsn": "5.1.1", "reason", "relay"?, "action"?,
              "mta_type"?, "mta_name"?, "diag_type"?, "diag_text"?}
             or the same with "recipients": [{per-recipient fields}] in
             place of the top-level recipient fields (one write, one fsync
             for all).  Appends the entries to log/QID and fsyncs; reply
             {"status": "ok"} only after that.  Without explicit
             mta_*/diag_*, a reason of the smtp client's form ("host H[A]
             said: TEXT (in reply to ...)") gives Remote-MTA `dns; H` and
             Diagnostic-Code `smtp; TEXT`; otherwise the relay host, when
             it names one (`H[A]:port`), gives Remote-MTA.
    flush    {"queue_name", "queue_id", "sender", "log"?: "bounce"|"defer"
             (default "bounce"; "defer" for messages past
             maximal_queue_lifetime), "path"? (queue file, relative to
             queue_directory)}.  Reads the log and the queue file, sends a
             failure notice for the recipients whose NOTIFY allows FAILURE
             (NOTIFY not given counts as DELAY,FAILURE), logs
             `QID: sender non-delivery notification: NEWQID`, removes the
             log; reply {"status": "ok", "dsn_queue_id": NEWQID} ("" when
             no notice was due: empty or missing log, NOTIFY=NEVER...).
             If cleanup fails: {"status": "fail", "reason"} and the log is
             kept, so that qmgr can retry.
    warn     {"queue_name", "queue_id", "sender", "path"?}: delay warning
             from defer/QID (recipients whose NOTIFY allows DELAY), Action
             delayed, Will-Retry-Until; logs `QID: sender delay
             notification: NEWQID`; the defer log is kept.  No warning for
             null-sender mail.
    success  {"queue_name", "queue_id", "sender", "path"?}: delivery report
             from trace/QID for recipients with NOTIFY=SUCCESS (Action from
             the entry: delivered, relayed, expanded); logs `QID: sender
             delivery status notification: NEWQID`; removes trace/QID.
    remove   {"queue_id", "log"?}: deletes that log, or all three; reply ok.

    A request with a missing or mistyped attribute closes the connection
    with a warning (docs/internals.md, IPC).

FILES
    $queue_directory/{bounce,defer,trace}/QID (defer/ hashed as the queues)

CONFIGURATION PARAMETERS
    myhostname, myorigin, mail_name, bounce_size_limit,
    2bounce_notice_recipient, double_bounce_sender, delay_warning_time,
    maximal_queue_lifetime, ipc_timeout, hash_queue_names, hash_queue_depth.

BUGS
    XXX notify_classes: Postfix sends the double bounce only when
    notify_classes has "bounce" or "2bounce" and adds postmaster copies
    (bounce_notice_recipient, delay_notice_recipient); Fulmar always sends
    the double bounce (issue 3) and sends no postmaster copies yet.
    XXX bounce_template_file and enable_threaded_bounces are not supported.
"""

from __future__ import annotations

import asyncio
# asyncio.to_thread() imports this lazily; import it while the interpreter's
# library is still readable (before daemon.main drops to mail_owner).
import concurrent.futures.thread  # noqa: F401
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace

from fulmar import log
from fulmar.ipc import channel
from fulmar.ipc.frames import KIND_ATTR
from fulmar.queue import layout, qfile, records
from fulmar.smtp import dsn
from fulmar.smtp.dsn import RecipientStatus, ReportKind

from bounce import logfile

PROTOCOL = "bounce"
CLEANUP_PROTOCOL = "cleanup"
CLEANUP_SERVICE = "cleanup"
# How often an idle-exiting daemon checks that its last request ended.
IDLE_STOP_POLL = 0.05
ORIGIN = "bounce"

STATUS_OK = "ok"
STATUS_FAIL = "fail"

REQ_APPEND = "append"
REQ_FLUSH = "flush"
REQ_WARN = "warn"
REQ_SUCCESS = "success"
REQ_REMOVE = "remove"

DELIVERY_STATUSES = ("sent", "deferred", "bounced", "expired")
# The DSN Action of a log entry when the client names none.
_DEFAULT_ACTION = {"sent": "delivered", "deferred": "delayed",
                   "bounced": "failed", "expired": "failed"}

_RELAY_HOST_RE = re.compile(r"^([^\s\[\]]+)\[[^\]]*\](?::\d+)?$")


class ProtocolViolation(Exception):
    """A client request is malformed; the connection is closed."""


class SubmitError(Exception):
    """cleanup did not take the notice; str() is the reason."""


@dataclass(frozen=True)
class Settings:
    """The configuration the bounce service uses, read once."""
    myhostname: str
    myorigin: str
    mail_name: str
    bounce_size_limit: int
    notice_2bounce_recipient: str
    double_bounce_sender: str
    delay_warning_time: int
    maximal_queue_lifetime: int
    ipc_timeout: float

    @classmethod
    def from_config(cls, cfg) -> "Settings":
        return cls(
            myhostname=cfg.get("myhostname"),
            myorigin=cfg.get("myorigin"),
            mail_name=cfg.get("mail_name"),
            bounce_size_limit=cfg.get("bounce_size_limit"),
            notice_2bounce_recipient=cfg.get("2bounce_notice_recipient"),
            double_bounce_sender=cfg.get("double_bounce_sender"),
            delay_warning_time=cfg.get("delay_warning_time"),
            maximal_queue_lifetime=cfg.get("maximal_queue_lifetime"),
            ipc_timeout=cfg.get("ipc_timeout"),
        )

    def qualify(self, address: str) -> str:
        """Append @$myorigin to a bare local name, as cleanup would."""
        return address if "@" in address or not address else "%s@%s" % (address, self.myorigin)

    @property
    def double_bounce_address(self) -> str:
        return self.qualify(self.double_bounce_sender)


@dataclass
class Original:
    """What a notice needs from the original queue file."""
    sender: str
    arrival_time: float = 0.0
    envid: str = ""
    ret: int = 0
    encoding: str = dsn.ENC_7BIT
    smtputf8: bool = False
    content_size: int = -1
    content: Callable[[], Iterator[bytes]] | None = None


def load_original(path: str) -> Original | None:
    """Read the queue file envelope (blocking); None when unreadable.

    A notice is a best effort (Postfix bounce_mail_alloc): a missing or
    corrupt original is reported as unavailable, not as an error.
    """
    try:
        env = qfile.read_envelope(path)
    except FileNotFoundError:
        return None
    except (OSError, qfile.CorruptQueueFile) as exc:
        log.warning("%s: cannot read queue file for notice: %s", os.path.basename(path), exc)
        return None
    attrs = env.attrs
    body_type = str(attrs.get("body_type", "")).upper()
    smtputf8 = str(attrs.get("smtputf8", "")).lower() in ("1", "yes", "true")
    return Original(
        sender=env.sender,
        arrival_time=env.arrival_time,
        envid=str(attrs.get("dsn_envid", "")),
        ret=dsn.ret_from_attr(attrs.get("dsn_ret", "")),
        encoding=dsn.ENC_8BIT if body_type == "8BITMIME" or smtputf8 else dsn.ENC_7BIT,
        smtputf8=smtputf8,
        content_size=env.content_size,
        content=lambda: qfile.iter_content(path, env),
    )


# submit(sender, recipient, make_content) -> new queue ID; make_content(new_id)
# returns the notice text, so that it can carry Message-Id: <new_id@host>.
ContentMaker = Callable[[str], Iterator[bytes]]
Submit = Callable[[str, str, ContentMaker], Awaitable[str]]


class CleanupSubmitter:
    """Posts a notice through cleanup over one reused connection.

    submit(sender, recipient, make_content) -> the new queue ID, or
    SubmitError.  make_content(new_queue_id) is a blocking iterator of CRLF
    text; it is pulled in a worker thread (it reads the original queue
    file) and cut into content records.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._ch: channel.Channel | None = None
        self._lock = asyncio.Lock()

    async def submit(self, sender: str, recipient: str, make_content: ContentMaker) -> str:
        async with self._lock:
            try:
                return await self._submit(sender, recipient, make_content)
            except SubmitError:
                raise
            except (OSError, channel.ChannelError, asyncio.TimeoutError) as exc:
                await self.close()
                raise SubmitError("cleanup service unavailable: %s" % (exc or "timeout")) from None

    async def _submit(self, sender: str, recipient: str, make_content: ContentMaker) -> str:
        if self._ch is None or self._ch.closed:
            self._ch = await channel.connect(self.path, protocol=CLEANUP_PROTOCOL,
                                             timeout=self.timeout)
        ch = self._ch
        req_id = ch.next_id()
        reply = await ch.request({"request": "open", "id": req_id, "origin": ORIGIN})
        if reply.get("status") != STATUS_OK or not reply.get("queue_id"):
            raise SubmitError("cleanup refused: %s" % reply.get("reason", reply.get("status")))
        new_id = str(reply["queue_id"])
        enc = "utf-8"
        await ch.send_record(records.REC_FROM, sender.encode(enc, "surrogateescape"))
        await ch.send_record(records.REC_RCPT, b"%s\0\0\0%d" % (
            recipient.encode(enc, "surrogateescape"), 0))
        await ch.send_record(records.REC_MESG, b"")
        content = make_content(new_id)
        pending = bytearray()
        while True:
            piece = await asyncio.to_thread(next, content, None)
            if piece is None:
                break
            pending += piece
            while len(pending) >= records.MAX_BLOCK:
                await ch.send_record(records.REC_BLOCK, bytes(pending[:records.MAX_BLOCK]))
                del pending[:records.MAX_BLOCK]
        if pending:
            await ch.send_record(records.REC_BLOCK, bytes(pending))
        await ch.send_record(records.REC_XTRA, b"")
        await ch.send_record(records.REC_END, b"")
        result = await ch.recv_attr()
        if result.get("id") != req_id:
            raise channel.ChannelError("cleanup reply id mismatch")
        if result.get("status") != STATUS_OK:
            raise SubmitError("cleanup: %s %s" % (result.get("status"), result.get("reason", "")))
        return str(result.get("queue_id") or new_id)

    async def close(self) -> None:
        ch, self._ch = self._ch, None
        if ch is not None:
            try:
                await ch.close()
            except Exception:  # closing a broken channel: nothing to save
                pass


# --------------------------------------------------------------------------
# Request validation

def _need(attrs: dict, name: str, kind: type, *, optional: bool = False, default=None):
    value = attrs.get(name, default) if optional else attrs.get(name)
    if value is None and optional:
        return default
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ProtocolViolation('%s attribute "%s"' % ("mistyped" if name in attrs else "missing", name))
    return value


def _queue_id(attrs: dict) -> str:
    qid = _need(attrs, "queue_id", str)
    if not qid or "/" in qid or qid.startswith(".") or len(qid) > records.MAX_SMALL:
        raise ProtocolViolation("bad queue_id")
    return qid


def _log_name(attrs: dict, allowed: tuple[str, ...], default: str | None) -> str:
    name = _need(attrs, "log", str, optional=default is not None, default=default)
    if name not in allowed:
        raise ProtocolViolation('bad "log" value')
    return name


def entry_from_attrs(item: dict, now: float) -> RecipientStatus:
    """One log entry from the per-recipient attributes of an append request."""
    address = _need(item, "address", str)
    status_word = _need(item, "status", str)
    if status_word not in DELIVERY_STATUSES:
        raise ProtocolViolation('bad "status" value')
    reason = _need(item, "reason", str)
    notify = _need(item, "dsn_notify", int, optional=True, default=0)
    offset = _need(item, "offset", int, optional=True, default=0)
    mta_type = _need(item, "mta_type", str, optional=True, default="")
    mta_name = _need(item, "mta_name", str, optional=True, default="")
    diag_type = _need(item, "diag_type", str, optional=True, default="")
    diag_text = _need(item, "diag_text", str, optional=True, default="")
    if not (diag_type and diag_text):
        d_mtype, d_mname, diag_type, diag_text = dsn.diagnostic_from_reason(reason)
        if not (mta_type and mta_name):
            mta_type, mta_name = d_mtype, d_mname
    if not (mta_type and mta_name):
        m = _RELAY_HOST_RE.match(_need(item, "relay", str, optional=True, default=""))
        if m:
            mta_type, mta_name = "dns", m.group(1)
    return RecipientStatus(
        address=address,
        orig_address=_need(item, "orig_address", str, optional=True, default=""),
        dsn_orcpt=_need(item, "dsn_orcpt", str, optional=True, default=""),
        dsn_notify=notify if dsn.notify_ok(notify) and notify >= 0 else 0,
        offset=max(offset, 0),
        status=_need(item, "dsn", str),
        action=_need(item, "action", str, optional=True, default="") or _DEFAULT_ACTION[status_word],
        reason=reason,
        mta_type=mta_type, mta_name=mta_name, diag_type=diag_type, diag_text=diag_text,
        time=now,
    )


def latest_per_recipient(entries: list[RecipientStatus]) -> list[RecipientStatus]:
    """One entry per recipient (the last logged), in first-seen order.

    defer/QID collects an entry per attempt; a notice reports each
    recipient once, with its latest reason.
    """
    latest: dict[tuple[str, int], RecipientStatus] = {}
    for entry in entries:
        key = (entry.address, entry.offset)
        latest.pop(key, None)
        latest[key] = entry
    order = {}
    for entry in entries:
        order.setdefault((entry.address, entry.offset), len(order))
    return sorted(latest.values(), key=lambda e: order[(e.address, e.offset)])


# --------------------------------------------------------------------------
# The service

class BounceService:
    """Request handling for one bounce process (sans socket: see handle())."""

    def __init__(self, settings: Settings, queue_dir: str, submit: Submit, *,
                 loader: Callable[[str], Original | None] = load_original,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.queue_dir = queue_dir
        self.submit = submit
        self.loader = loader
        self.clock = clock
        self.active = 0

    async def handle(self, ch: channel.Channel) -> None:
        """One client connection: requests and replies, one at a time."""
        while True:
            try:
                frame = await ch.recv(timeout=self.settings.ipc_timeout)
            except channel.ChannelClosed:
                return
            if frame.kind != KIND_ATTR:
                log.warning("bounce: protocol error: unexpected record frame")
                return
            try:
                reply = await self.dispatch(frame.attrs)
            except ProtocolViolation as exc:
                log.warning("bounce: protocol error: %s", exc)
                return
            await ch.send_attr(reply)

    async def dispatch(self, attrs: dict) -> dict:
        """Serve one request; return its reply.  ProtocolViolation if malformed."""
        req_id = _need(attrs, "id", int)
        request = _need(attrs, "request", str)
        handler = {
            REQ_APPEND: self.append,
            REQ_FLUSH: self.flush,
            REQ_WARN: self.warn,
            REQ_SUCCESS: self.success,
            REQ_REMOVE: self.remove,
        }.get(request)
        if handler is None:
            raise ProtocolViolation("unknown request %r" % request[:32])
        self.active += 1
        try:
            reply = await handler(attrs)
        except OSError as exc:
            log.warning("%s: %s request failed: %s", attrs.get("queue_id", "bounce"),
                        request, exc.strerror or exc)
            reply = {"status": STATUS_FAIL, "reason": "4.3.0 bounce service I/O error"}
        finally:
            self.active -= 1
        reply["id"] = req_id
        return reply

    # -- requests ----------------------------------------------------------------

    async def append(self, attrs: dict) -> dict:
        qid = _queue_id(attrs)
        log_name = _log_name(attrs, logfile.LOG_NAMES, None)
        now = self.clock()
        items = attrs.get("recipients")
        if items is None:
            entries = [entry_from_attrs(attrs, now)]
        elif isinstance(items, list) and all(isinstance(i, dict) for i in items):
            entries = [entry_from_attrs(i, now) for i in items]
        else:
            raise ProtocolViolation('mistyped attribute "recipients"')
        await asyncio.to_thread(logfile.append, self.queue_dir, log_name, qid, entries)
        return {"status": STATUS_OK}

    async def remove(self, attrs: dict) -> dict:
        qid = _queue_id(attrs)
        names = [_log_name(attrs, logfile.LOG_NAMES, "")] if "log" in attrs else list(logfile.LOG_NAMES)

        def remove_all() -> None:
            for name in names:
                logfile.remove(self.queue_dir, name, qid)
        await asyncio.to_thread(remove_all)
        return {"status": STATUS_OK}

    async def flush(self, attrs: dict) -> dict:
        log_name = _log_name(attrs, (logfile.LOG_BOUNCE, logfile.LOG_DEFER), logfile.LOG_BOUNCE)
        return await self._notify(attrs, ReportKind.FAILURE, log_name, remove_log=True)

    async def warn(self, attrs: dict) -> dict:
        return await self._notify(attrs, ReportKind.DELAY, logfile.LOG_DEFER, remove_log=False)

    async def success(self, attrs: dict) -> dict:
        return await self._notify(attrs, ReportKind.SUCCESS, logfile.LOG_TRACE, remove_log=True)

    # -- notices -----------------------------------------------------------------

    def _queue_path(self, attrs: dict, queue_name: str, qid: str) -> str:
        rel = _need(attrs, "path", str, optional=True, default="")
        if rel:
            if os.path.isabs(rel) or ".." in rel.split("/"):
                raise ProtocolViolation('bad "path" value')
            return os.path.join(self.queue_dir, rel)
        return os.path.join(self.queue_dir, layout.queue_subdir(queue_name, qid), qid)

    async def _notify(self, attrs: dict, kind: ReportKind, log_name: str,
                      remove_log: bool) -> dict:
        s = self.settings
        qid = _queue_id(attrs)
        queue_name = _need(attrs, "queue_name", str)
        if queue_name not in layout.MESSAGE_QUEUES:
            raise ProtocolViolation('bad "queue_name" value')
        sender = _need(attrs, "sender", str)
        path = self._queue_path(attrs, queue_name, qid)

        entries = await asyncio.to_thread(logfile.read, self.queue_dir, log_name, qid)
        if kind is not ReportKind.FAILURE or log_name == logfile.LOG_DEFER:
            entries = latest_per_recipient(entries)
        done = {"status": STATUS_OK, "dsn_queue_id": ""}

        async def finish() -> dict:
            if remove_log:
                await asyncio.to_thread(logfile.remove, self.queue_dir, log_name, qid)
            return done

        if not entries:
            return await finish()

        # Who gets the notice, from whom (never bounce a bounce).
        postmaster_copy = False
        if sender.lower() == s.double_bounce_address.lower():
            if kind is ReportKind.FAILURE:
                log.warning("%s: undeliverable postmaster notification discarded", qid)
            return await finish()
        if sender == "":
            if kind is not ReportKind.FAILURE:
                return await finish()      # no delay or success notice to <>
            postmaster_copy = True
            to = s.qualify(s.notice_2bounce_recipient)
            notice_sender = s.double_bounce_address
            label = "postmaster non-delivery notification"
        else:
            to = sender
            notice_sender = ""
            label = {ReportKind.FAILURE: "sender non-delivery notification",
                     ReportKind.DELAY: "sender delay notification",
                     ReportKind.SUCCESS: "sender delivery status notification"}[kind]

        chosen = [e for e in entries if dsn.wants_notice(kind, e.dsn_notify, postmaster_copy)]
        if not chosen:
            return await finish()          # e.g. NOTIFY=NEVER: nothing is due

        original = await asyncio.to_thread(self.loader, path)
        now = self.clock()
        report = dsn.Report(
            kind=kind, to=to, queue_id=qid, sender=sender, recipients=chosen,
            postmaster_copy=postmaster_copy,
            myhostname=s.myhostname, myorigin=s.myorigin, mail_name=s.mail_name,
            bounce_size_limit=s.bounce_size_limit,
            delay_warning_time=s.delay_warning_time,
            maximal_queue_lifetime=s.maximal_queue_lifetime,
            date=now, now=now,
        )
        if original is not None:
            report = replace(
                report, arrival_time=original.arrival_time, envid=original.envid,
                # The double bounce carries the whole original (Postfix DSN_RET_FULL).
                ret=dsn.DSN_RET_FULL if postmaster_copy else original.ret,
                encoding=original.encoding, smtputf8=original.smtputf8,
                content_size=original.content_size)

        def make_content(new_id: str) -> Iterator[bytes]:
            content = original.content() if original is not None and original.content else None
            return dsn.iter_report(replace(report, message_id="<%s@%s>" % (new_id, s.myhostname)),
                                   content)

        try:
            new_id = await self.submit(notice_sender, to, make_content)
        except SubmitError as exc:
            log.warning("%s: %s failed: %s", qid, label, exc)
            return {"status": STATUS_FAIL, "reason": "4.3.0 %s" % exc}
        log.info("%s: %s: %s", qid, label, new_id)
        done["dsn_queue_id"] = new_id
        return await finish()


# --------------------------------------------------------------------------
# Daemon entry

async def serve(ctx) -> None:
    """Serve the bounce protocol on every listener master passed us."""
    layout.configure(ctx.cfg)
    settings = Settings.from_config(ctx.cfg)
    submitter = CleanupSubmitter(ctx.service_path(CLEANUP_SERVICE), settings.ipc_timeout)
    service = BounceService(settings, ctx.queue_dir, submitter.submit)
    servers = [await channel.serve(sock, PROTOCOL, service.handle,
                                   log_name="private/%s" % ctx.service,
                                   timeout=settings.ipc_timeout)
               for sock in ctx.listeners]
    ctx.ready()
    # qmgr keeps its bounce channel open: idle = no request in progress.
    ctx.exit_when_idle(servers, lambda: service.active)
    await ctx.stopping.wait()
    for server in servers:
        server.close()
    if ctx.idle_exited:
        # Idle clients' channels would hold us until ipc_timeout: end
        # them once no request is running (qmgr reconnects).
        while service.active:
            await asyncio.sleep(IDLE_STOP_POLL)
        for server in servers:
            server.abort()
    # Requests in progress end by themselves (a log append, one notice).
    for server in servers:
        await server.wait_closed()
    await submitter.close()
