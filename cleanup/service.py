"""The cleanup service: turn a submission into a committed queue file.

NAME
    cleanup -- canonicalize and enqueue Postfix-style message

SYNOPSIS
    python -I -m cleanup -c CONFIG_DIR -s cleanup -t unix   (started by master)

DESCRIPTION
    cleanup serves the `cleanup` protocol (docs/internals.md) on the socket
    master hands it (`private/cleanup`). Its clients are smtpd, pickup and
    bounce; each is treated as hostile: every record is checked for type,
    order and size, and a protocol error discards the file and closes the
    connection.

    Per message:

    1. `open` takes a queue file in `incoming/` (fulmar.queue.qfile: named
       by its queue ID, not yet ready, its name already durable; one of the
       spares a worker thread creates ahead, or a new one) and answers with
       the queue ID, which smtpd logs (`QID: client=...`) at its first
       accepted recipient.  An open that asks for it (`reserve_next`) gets,
       with its commit's answer, the queue ID of a spare kept for that
       connection (`next_queue_id`); the connection's next `open` names it
       (`queue_id`) and gets no answer: smtpd neither waits for one nor is
       woken by one, and a failure shows in the commit's answer.  The
       reserved spare goes back to the pool when the connection closes.
       Since such an open cannot be retried elsewhere, stop() says "bye"
       on an idle connection holding a reservation instead of closing it,
       and serves an open that crossed the bye (BYE_GRACE).
       An `abort` before any record (no recipient was accepted) gives the
       untouched file back to the spares; any other `abort` removes it.
    2. Envelope records (`A` attributes, one `S`, `R` recipients), then `M`.
    3. Content blocks `B`: the header section goes through
       cleanup.headers (addresses in From:/To:/... rewritten by
       cleanup.rewrite.HeaderRewriter when the message's rewrite context
       allows it; Received: prepended, every header bounded by
       `header_size_limit`, Message-ID:/Date:/From: appended when missing
       for local submissions or with `always_add_missing_headers`); the body
       is written through untouched. `message_size_limit` is enforced on the
       stored size.
    4. `X`, then `E`: the file is committed (write, ready bit, fsync) -
       on the event loop when it is the only message in
       progress, else in a worker thread so that fsyncs overlap - then qmgr
       gets a wakeup on `public/qmgr` (first: the delivery waits for it,
       and qmgr's work overlaps smtpd's 250) and cleanup answers `ok`.
       On the event loop the wakeup goes before the fsync, once the file
       is complete and ready (qmgr's work then overlaps the disk's; the
       `ok`, and smtpd's 250, still wait for the fsync).  If that fsync
       fails, the client is told 4xx while the message may already be on
       its way: a duplicate when the client sends it again, never a loss
       (docs/deviations.md).  A wakeup never waits for qmgr: without a
       connection (the first message, or qmgr restarted) the answer goes
       out and the wakeup follows once a new connection is made
       (`trigger_timeout`), so a stopped or busy qmgr delays delivery,
       not the client.

    Results: `ok`, `reject` (bad envelope, too many hops: 5xx),
    `toolarge` (552), `diskfull` (452), `tempfail` (451). smtpd maps them to
    Postfix's replies.

    Logs `QID: message-id=<...>` as Postfix's cleanup, and warnings for
    protocol violations by a client.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import threading
import time

from fulmar import log
from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import KIND_RECORD
from fulmar.maildate import mail_date
from fulmar.queue import fsinfo, qfile, records
from cleanup.headers import HeaderProcessor
from cleanup.rewrite import HeaderRewriter, Rewriter
from cleanup.syncer import Syncer

PROTOCOL = "cleanup"

# Attributes a client may set on a message; anything else is logged and
# dropped (house rule 4: tolerate and log unknown names).
ALLOWED_ATTRS = frozenset({
    "client_name", "client_address", "client_port", "reverse_client_name",
    "helo_name", "protocol", "sasl_method", "sasl_username", "sasl_sender",
    "dsn_envid", "dsn_ret", "smtputf8", "body_type", "origin", "log_ident",
    "rewrite_context", "tls_protocol", "tls_cipher", "tls_cipher_bits", "tls_cipher_alg_bits", "tls_client_cert",
    "encoding", "submit_uid", "full_name", "extract_recipients",
})

STATUS_OK = "ok"
STATUS_TEMPFAIL = "tempfail"
STATUS_REJECT = "reject"
STATUS_TOOLARGE = "toolarge"
STATUS_DISKFULL = "diskfull"

# A spare queue file older than this is replaced: its queue ID carries its
# creation time (SparePool).  Long enough that a server receiving a message
# a minute still finds one.
SPARE_MAX_AGE = 60.0
# Spare queue files kept at most (SparePool.want asks for one per message
# in progress, and one more) and made beyond that by each fill.
SPARE_MAX = 8
SPARE_BATCH = 3
# On a stop, an idle connection that holds a reserved queue ID gets a
# "bye" frame instead of being closed at once, and this long (seconds)
# before it is closed: an open that crossed the bye on its way here is
# served (smtpd sends it without waiting for an answer, so it could not
# be retried elsewhere).
BYE_GRACE = 2.0

# Wakeups kept while cleanup connects to qmgr (wakeup_qmgr); beyond
# that, the last one asks qmgr to scan incoming/ instead.
UNSENT_MAX = 100

# Origins whose mail gets missing headers added, as Postfix does for
# locally submitted mail (local_header_rewrite_clients covers loopback).
LOCAL_ORIGINS = frozenset({"pickup", "sendmail", "bounce"})


class ProtocolViolation(Exception):
    """The client broke the cleanup protocol; the connection is closed."""


class Submission:
    """One message being received: the queue file and its header state."""

    def __init__(self, service: "CleanupService", writer: qfile.QueueWriter, attrs: dict) -> None:
        self.service = service
        self.writer = writer
        self.queue_id = writer.queue_id
        self.attrs = {k: v for k, v in attrs.items() if k in ALLOWED_ATTRS}
        self.origin = str(attrs.get("origin", "smtpd"))
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.written: set[tuple] = set()     # recipients written (duplicates dropped)
        self.state = "envelope"
        self.size = 0
        self.status = STATUS_OK
        self.reason = ""
        self.size_limit = service.size_limit
        self.headers = HeaderProcessor(service.header_size_limit)
        self.message_id: str | None = None
        self.arrival = time.time()
        self.records = 0                     # record frames received
        self.woken = False                   # qmgr woken before the fsync
        # The client wants a queue ID reserved for its next open.
        self.reserve_next = bool(attrs.get("reserve_next"))

    # -- records ---------------------------------------------------------------

    def record(self, rtype: bytes, data: bytes) -> None:
        """Handle one record frame; raise ProtocolViolation on misuse."""
        self.records += 1
        if self.state == "envelope":
            if rtype == records.REC_ATTR:
                name, sep, value = data.partition(b"=")
                if not sep:
                    raise ProtocolViolation("attribute record without '='")
                key = name.decode("ascii", "replace")
                if key in ALLOWED_ATTRS:
                    self.attrs[key] = _text(value)
                else:
                    log.warning("%s: ignoring unknown attribute %s", self.queue_id, key[:64])
            elif rtype == records.REC_FROM:
                if self.sender is not None:
                    raise ProtocolViolation("duplicate sender record")
                self.sender = self._rewrite_sender(self._address(data))
            elif rtype == records.REC_RCPT:
                self._recipient(data)
            elif rtype == records.REC_MESG:
                if self.sender is None:
                    raise ProtocolViolation("content before sender")
                self._start_content()
            else:
                raise ProtocolViolation("unexpected record type %r in envelope" % rtype)
        elif self.state == "content":
            if rtype == records.REC_BLOCK:
                self._content(data)
            elif rtype == records.REC_XTRA:
                self._end_content()
            else:
                raise ProtocolViolation("unexpected record type %r in content" % rtype)
        elif self.state == "extracted":
            if rtype == records.REC_RCPT:
                self._recipient(data)
            else:
                raise ProtocolViolation("unexpected record type %r after content" % rtype)
        else:
            raise ProtocolViolation("record after end of message")

    def _address(self, data: bytes) -> str:
        if len(data) > self.service.address_limit:
            raise ProtocolViolation("address too long")
        if b"\0" in data or b"\r" in data or b"\n" in data:
            raise ProtocolViolation("control character in address")
        return _text(data)

    def _recipient(self, data: bytes) -> None:
        fields = data.split(b"\0")
        if len(fields) != 4:
            raise ProtocolViolation("malformed recipient record")
        address = self._address(fields[0])
        orig = self._address(fields[1])
        orcpt = self._address(fields[2])
        try:
            notify = int(fields[3] or b"0")
        except ValueError:
            raise ProtocolViolation("bad dsn_notify value") from None
        if not 0 <= notify < 16:
            raise ProtocolViolation("bad dsn_notify value")
        self.recipients.append(address)
        if self.status == STATUS_OK:
            self._add_recipients(address, orig, orcpt, notify)

    # -- address rewriting (cleanup.rewrite) -------------------------------------

    def _rewrite_sender(self, address: str) -> str:
        new, err = self.service.rewriter.sender(address)
        if err:
            log.warning("%s: sender map lookup problem for %s -- message not accepted, "
                        "try again later", self.queue_id, address)
            self._fail(STATUS_TEMPFAIL, err[1])
        return new

    def _add_recipients(self, address: str, orig: str, orcpt: str, notify: int) -> None:
        """Canonical maps, masquerading, virtual aliases; duplicates written once."""
        new, err = self.service.rewriter.recipient(address)
        if err:
            log.warning("%s: recipient map lookup problem for %s -- message not accepted, "
                        "try again later", self.queue_id, address)
            self._fail(STATUS_TEMPFAIL, err[1])
            return
        orig = orig or address
        for rcpt in new:
            key = (rcpt.lower(), orig.lower(), orcpt, notify)
            if key in self.written:
                continue
            self.written.add(key)
            self.writer.add_recipient(qfile.Recipient(rcpt, orig, orcpt, notify))

    def _start_content(self) -> None:
        if not self.recipients:
            raise ProtocolViolation("message without recipients")
        w = self.writer
        w.set_arrival(self.arrival)
        for name, value in self.attrs.items():
            w.add_attr(name, value)
        w.set_sender(self.sender or "")
        self.state = "content"
        # Header address rewriting (cleanup.rewrite): decided once per
        # message; the processor calls it per complete header only.
        context = self.service.rewriter.header_context(
            self.origin, self.attrs.get("client_address", ""), self.attrs.get("sasl_username", ""))
        self.header_rewriter = None
        if context is not None:
            self.header_rewriter = HeaderRewriter(self.service.rewriter, context)
            self.headers.rewrite = self.header_rewriter
        self._store(self._received_header())

    def _content(self, data: bytes) -> None:
        if self.status != STATUS_OK:
            return                       # keep reading, store nothing
        self._store(self.headers.feed(data, self._missing_headers))

    def _end_content(self) -> None:
        if self.status == STATUS_OK:
            self._store(self.headers.finish(self._missing_headers))
            hrw = self.header_rewriter
            if hrw is not None and hrw.error:
                log.warning("%s: header map lookup problem for %s -- message not accepted, "
                            "try again later", self.queue_id, hrw.failed_address)
                self._fail(STATUS_TEMPFAIL, hrw.error[1])
            if self.headers.hops > self.service.hopcount_limit:
                self._fail(STATUS_REJECT, "5.4.6 Too many hops")
        if self.status == STATUS_OK:
            self.writer.end_content()
        self.state = "extracted"

    def _store(self, data: bytes) -> None:
        if not data or self.status != STATUS_OK:
            return
        self.size += len(data)
        if self.size > self.size_limit:
            self._fail(STATUS_TOOLARGE, "5.3.4 Message file too big")
            return
        try:
            self.writer.write_content(data)
        except OSError as exc:
            self._io_error(exc)

    def _fail(self, status: str, reason: str) -> None:
        if self.status == STATUS_OK:
            self.status, self.reason = status, reason

    def _io_error(self, exc: OSError) -> None:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._fail(STATUS_DISKFULL, "4.3.1 Insufficient system storage")
        else:
            log.warning("%s: queue file write error: %s", self.queue_id, exc.strerror or exc)
            self._fail(STATUS_TEMPFAIL, "4.3.0 Error: queue file write error")

    # -- headers -----------------------------------------------------------------

    def _received_header(self) -> bytes:
        """Postfix's Received: header (smtpd_received... RFC 5321 4.4)."""
        if self.origin == "local":
            return b""       # local(8) forwarding a delivered message: no new hop
        a = self.attrs
        date = mail_date(self.arrival)
        host = self.service.myhostname
        if self.origin in ("pickup", "sendmail"):
            uid = a.get("submit_uid", "")
            lines = ["Received: by %s (%s, from userid %s)" % (host, self.service.mail_name, uid),
                     "\tid %s; %s" % (self.queue_id, date)]
        else:
            helo = a.get("helo_name") or a.get("client_name") or "unknown"
            lines = ["Received: from %s (%s [%s])" % (
                helo, a.get("client_name", "unknown"), a.get("client_address", "unknown"))]
            if a.get("tls_protocol"):
                # Postfix's smtpd.c text (smtpd_tls_received_header = yes).
                bits = a.get("tls_cipher_bits", "0")
                lines.append("\t(using %s with cipher %s (%s/%s bits))" % (
                    a["tls_protocol"], a.get("tls_cipher", "unknown"), bits,
                    a.get("tls_cipher_alg_bits", bits)))
                lines.append("\t(%s)" % a.get("tls_client_cert", "No client certificate requested"))
            if self.service.sasl_authenticated_header and a.get("sasl_username"):
                lines.append("\t(Authenticated sender: %s)" % a["sasl_username"])
            proto = a.get("protocol", "SMTP")
            lines.append("\tby %s (%s) with %s id %s" % (host, self.service.mail_name, proto, self.queue_id))
            if len(self.recipients) == 1:
                lines.append("\tfor <%s>; %s" % (self.recipients[0], date))
            else:
                lines[-1] += ";"
                lines.append("\t%s" % date)
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")

    def _missing_headers(self) -> bytes:
        """Headers appended at the end of the header section when missing."""
        seen = self.headers.seen
        mid = self.headers.header_value(b"message-id")
        if mid:
            self.message_id = mid.decode("utf-8", "replace")
        add_missing = (self.origin in LOCAL_ORIGINS or self.service.always_add
                       or _is_loopback(self.attrs.get("client_address", "")))
        if not add_missing:
            return b""
        out = []
        host = self.service.myhostname
        if b"message-id" not in seen and b"resent-message-id" not in seen:
            self.message_id = "<%s@%s>" % (self.queue_id, host)
            out.append("Message-Id: %s\r\n" % self.message_id)
        if b"date" not in seen and b"resent-date" not in seen:
            out.append("Date: %s\r\n" % mail_date(self.arrival))
        if b"from" not in seen and b"resent-from" not in seen:
            sender = self.sender or "MAILER-DAEMON"
            full = self.attrs.get("full_name")
            out.append("From: %s (%s)\r\n" % (sender, full) if full else "From: %s\r\n" % sender)
        if not (seen.keys() & {b"to", b"cc", b"bcc"}) and self.origin in ("pickup", "sendmail"):
            out.append("To: undisclosed-recipients:;\r\n")
        return "".join(out).encode("utf-8", "surrogateescape")

    # -- commit --------------------------------------------------------------

    def _wake_before_fsync(self) -> None:
        # The file is complete and ready (module docstring, 4.).
        self.woken = self.service.wakeup_now(self.queue_id)

    async def commit(self) -> tuple[str, str]:
        if self.state != "extracted":
            raise ProtocolViolation("end record before end of content")
        if self.status != STATUS_OK:
            self.writer.abort()
            return self.status, self.reason
        # The only message in this process is committed on the event loop:
        # nothing else can wait behind the fsync except a client's next
        # `open` (for at most one fsync), and the thread hand-off costs more
        # than it saves (on the 2-CPU bench machine 0.1 ms to the 250 and
        # 0.4 ms to the reply after it, docs/performance.md); qmgr is woken
        # before the fsync (its work and the delivery overlap the disk's:
        # item 50 there).  Several messages: the file is written and made
        # ready here, and only its fsync goes to a worker thread, so that
        # the fsyncs overlap (cleanup/syncer.py says why nothing else goes
        # there); qmgr is woken after it.
        threaded = self.service.active != 1
        # Logged before the outcome, as Postfix's cleanup logs it when it
        # sees the header (and, threaded, while the disk works).
        if not threaded:
            log.info("%s: message-id=%s", self.queue_id, self.message_id or "")
        try:
            if not threaded:
                self.writer.commit(self._wake_before_fsync)
            else:
                try:
                    synced = self.service.syncer.fsync(self.writer.seal())
                finally:
                    log.info("%s: message-id=%s", self.queue_id, self.message_id or "")
                try:
                    await synced
                except BaseException:
                    self.writer.abort()     # not durable: take the name back
                    raise
                self.writer.finish()
        except OSError as exc:
            self._io_error(exc)
            if self.woken:
                log.warning("%s: qmgr had the file before the error: it may be "
                            "delivered although the client is told to try again",
                            self.queue_id)
            self.writer.abort()
            return self.status, self.reason
        return STATUS_OK, ""


class SparePool:
    """Queue files created ahead by a worker thread; the event loop takes them.

    take() and want() run on the event loop, _fill() in the pool's own
    thread (one fill at a time); the lock guards the list against close()
    (a stop) racing a fill.
    """

    def __init__(self, queue_dir: str, reuse: bool = False) -> None:
        self.queue_dir = queue_dir
        self.reuse = reuse              # take inodes from recycle/ (qfile.Recycler)
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spare")
        self._lock = threading.Lock()
        self._files: collections.deque = collections.deque()   # (writer, made)
        self._filling = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._files)

    def take(self) -> qfile.QueueWriter | None:
        """A spare younger than SPARE_MAX_AGE, or None."""
        now = time.monotonic()
        with self._lock:
            while self._files:
                writer, made = self._files.popleft()
                if now - made <= SPARE_MAX_AGE:
                    writer.spare_made = made      # for give_back()
                    return writer
                writer.abort()
        return None

    def give_back(self, writer: qfile.QueueWriter) -> None:
        """Keep a taken spare that nothing was written to (its queue ID
        was never logged) for the next open; a file that was not a spare,
        or that is too old, is removed."""
        made = getattr(writer, "spare_made", None)
        with self._lock:
            if (made is not None and not self._closed and len(self._files) < SPARE_MAX
                    and time.monotonic() - made <= SPARE_MAX_AGE):
                self._files.appendleft((writer, made))
                return
        writer.abort()

    def want(self, n: int, upto: int = 0) -> None:
        """Have n spares soon; a fill, when one starts, makes max(n, upto)."""
        if self._filling or self._closed or len(self._files) >= n:
            return
        self._filling = True
        try:
            self.executor.submit(self._fill, max(n, upto) - len(self._files))
        except RuntimeError:            # executor shut down: stopping
            self._filling = False

    def _fill(self, n: int) -> None:
        try:
            writers = qfile.QueueWriter.create_many(self.queue_dir, n, reuse=self.reuse)
        except OSError:
            writers = []        # the next open creates its own, and reports the error
        made = time.monotonic()
        with self._lock:
            for writer in writers:
                if self._closed:
                    writer.abort()
                else:
                    self._files.append((writer, made))
            self._filling = False

    def close(self) -> None:
        """Remove every spare; later fills remove theirs."""
        with self._lock:
            self._closed = True
            while self._files:
                self._files.popleft()[0].abort()
        self.executor.shutdown(wait=False)


class CleanupService:
    """Shared state of one cleanup process."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.cfg = cfg = ctx.cfg
        self.queue_dir = ctx.queue_dir
        self.myhostname = cfg.get("myhostname")
        self.mail_name = cfg.get("mail_name")
        self.always_add = cfg.get("always_add_missing_headers")
        self.hopcount_limit = cfg.get("hopcount_limit")
        self.address_limit = cfg.get("line_length_limit")
        # Read once, not per message.
        self.size_limit = cfg.get("message_size_limit")
        self.header_size_limit = cfg.get("header_size_limit")
        self.sasl_authenticated_header = cfg.get("smtpd_sasl_authenticated_header")
        self.rewriter = Rewriter(cfg)
        self.idle_timeout = cfg.get("max_idle")
        self.ipc_timeout = cfg.get("ipc_timeout")
        self.qmgr: ipc.Channel | None = None
        # wakeup_qmgr(): the connection being made in the background, the
        # wakeups waiting for it, and how long a connect may take.
        self.connecting: asyncio.Task | None = None
        self.unsent: list[str] = []
        self.trigger_timeout = cfg.get("trigger_timeout")
        self.active = 0
        # Commits' fsyncs run there, off the event loop, while several
        # messages are in progress.
        self.syncer = Syncer()
        # Connections waiting for their next message.  On a graceful stop
        # (reload) they are closed, so that clients reconnect to the new
        # generation instead of opening messages here until we are killed;
        # smtpd retries an open that fails on a pooled channel.
        self.stopping = False
        # Connections waiting for their next message -> whether they hold
        # a reserved queue ID (those get a "bye" on a stop, see stop()).
        self.idle: dict = {}
        self.byes: set = set()          # _bye() tasks in progress
        # Queue files created ahead for the next `open`s (see _take_writer).
        # Where qmgr recycles delivered files' inodes, new files take them.
        self.spares = SparePool(self.queue_dir, reuse=fsinfo.scans_freed_inodes(self.queue_dir))

    def stop(self) -> None:
        self.stopping = True
        for ch, holds_reservation in list(self.idle.items()):
            if holds_reservation:
                task = asyncio.get_running_loop().create_task(self._bye(ch))
                self.byes.add(task)
                task.add_done_callback(self.byes.discard)
            else:
                ch.abort()
        self.spares.close()

    async def _bye(self, ch) -> None:
        """Tell a client that holds a reserved queue ID to open elsewhere;
        close the connection after BYE_GRACE unless an open that crossed
        the bye is being served (handle() closes it after that one)."""
        try:
            await ch.send_attr({"request": "bye"})
            ch.push()
            await asyncio.sleep(BYE_GRACE)
        except (ipc.ChannelError, ConnectionError):
            pass                # closed meanwhile: nobody left to tell
        finally:
            if ch in self.idle:
                ch.abort()

    # -- spare queue files ---------------------------------------------------
    # Creating a queue file costs an inode, a link and the directory fsync
    # that makes its name durable (qfile's commit protocol): 0.1-0.3 ms on
    # ext4, which would sit in smtpd's RCPT reply.  So files are created
    # ahead in a worker thread (one directory fsync per fill), and `open`
    # takes one; only when none is left does it create its own.  Fills
    # follow commits: one starts when fewer than the messages in progress
    # plus two are left, and makes SPARE_BATCH more, so that a directory
    # fsync and a thread wake-up serve four messages (filling to SPARE_MAX
    # only once all were gone put the fill in the eighth message's way: a
    # slow 90th percentile; docs/performance.md, items 13 and 26).

    def _take_writer(self) -> qfile.QueueWriter:
        writer = self.spares.take()
        if writer is None:
            return qfile.QueueWriter.create(self.queue_dir, reuse=self.spares.reuse)
        # The message's file is "created" now, not when the spare was.
        writer.add_attr(qfile.ATTR_CREATE_TIME, str(int(time.time())))
        return writer

    async def handle(self, ch) -> None:
        """One client connection: any number of messages, one after another."""
        sub: Submission | None = None
        served = 0
        # The spare whose queue ID this connection was told for its next
        # open (module docstring, 1.); given back when the connection ends.
        reserved: qfile.QueueWriter | None = None
        try:
            while True:
                if sub is not None:
                    frame = await ch.recv(timeout=self.ipc_timeout)
                else:
                    if self.stopping and served and reserved is None:
                        break
                    self.idle[ch] = reserved is not None
                    try:
                        frame = await ch.recv(timeout=self.idle_timeout)
                    finally:
                        self.idle.pop(ch, None)
                if frame is None:
                    break
                if frame.kind == KIND_RECORD:
                    if sub is None:
                        raise ProtocolViolation("record outside a message")
                    if frame.rtype == records.REC_END:
                        status, reason = await sub.commit()
                        done, sub = sub, None
                        self.active -= 1
                        served += 1
                        # qmgr first: the message's delivery waits for the
                        # wakeup, and qmgr's work then overlaps smtpd's 250.
                        # Never waited for (wakeup_qmgr).
                        if status == STATUS_OK and not done.woken:
                            self.wakeup_qmgr(done.queue_id)
                        answer = {"id": done.req_id, "status": status,
                                  "reason": reason, "queue_id": done.queue_id}
                        if done.reserve_next and not self.stopping:
                            if reserved is None:
                                reserved = self.spares.take()
                            if reserved is not None:
                                answer["next_queue_id"] = reserved.queue_id
                        await ch.send_attr(answer)
                        # Written now, not at the next loop turn: smtpd's
                        # 250 (or 4xx) waits for it.
                        await ch.flush()
                        # Refilled after a commit, when this process is
                        # least busy: enough for the messages in progress
                        # and the next one.
                        self.spares.want(min(self.active + 2, SPARE_MAX),
                                         min(self.active + 2 + SPARE_BATCH, SPARE_MAX))
                        continue
                    sub.record(frame.rtype, frame.data)
                    continue
                attrs = frame.attrs
                request = attrs.get("request")
                if request == "open" and sub is None:
                    if "queue_id" in attrs:
                        writer, reserved = reserved, None
                        sub = self.open_reserved(attrs, writer)
                    else:
                        if reserved is not None:     # not used (too old for smtpd)
                            self.spares.give_back(reserved)
                            reserved = None
                        sub = await self.open(ch, attrs)
                elif request == "abort" and sub is not None:
                    if sub.records:
                        sub.writer.abort()
                    else:
                        # Aborted before any record (a client that opens
                        # ahead): the file is as it was made.
                        self.spares.give_back(sub.writer)
                    self.active -= 1
                    sub = None
                else:
                    raise ProtocolViolation("unexpected request %r" % str(request)[:32])
        except ProtocolViolation as exc:
            log.warning("%s: protocol error: %s", sub.queue_id if sub else "cleanup", exc)
        except (ipc.ChannelError, ConnectionError, asyncio.TimeoutError) as exc:
            if sub is not None:
                log.warning("%s: lost connection with %s: %s", sub.queue_id,
                            sub.origin, exc or "timeout")
        finally:
            if sub is not None:
                sub.writer.abort()
                self.active -= 1
            if reserved is not None:
                self.spares.give_back(reserved)
            await ch.close()

    async def open(self, ch, attrs: dict) -> Submission | None:
        req_id = attrs.get("id")
        try:
            # A spare, or (none left) a new file made here on the loop,
            # directory fsync included: rare, and a thread hop would put
            # every open behind it.
            writer = self._take_writer()
        except OSError as exc:
            status = STATUS_DISKFULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else STATUS_TEMPFAIL
            log.warning("cleanup: create file in incoming: %s", exc.strerror or exc)
            await ch.send_attr({"id": req_id, "status": status,
                                "reason": "4.3.0 Error: queue file write error"})
            return None
        sub = Submission(self, writer, attrs)
        sub.req_id = req_id
        self.active += 1
        await ch.send_attr({"id": req_id, "status": STATUS_OK, "queue_id": writer.queue_id})
        await ch.flush()             # smtpd's reply to RCPT waits for it
        return sub

    def open_reserved(self, attrs: dict, reserved: qfile.QueueWriter | None) -> Submission:
        """An open that names the queue ID reserved for this connection:
        no answer (the commit's tells how it went)."""
        if reserved is None or attrs.get("queue_id") != reserved.queue_id:
            if reserved is not None:
                self.spares.give_back(reserved)
            raise ProtocolViolation("open names a queue ID not reserved for this connection")
        # The message's file is "created" now, not when the spare was.
        reserved.add_attr(qfile.ATTR_CREATE_TIME, str(int(time.time())))
        sub = Submission(self, reserved, attrs)
        sub.req_id = attrs.get("id")
        self.active += 1
        return sub

    def wakeup_now(self, queue_id: str) -> bool:
        """Tell qmgr about a new file on the connection cleanup keeps:
        False when there is none or it is broken (the caller then calls
        wakeup_qmgr(), which makes one)."""
        if self.qmgr is None:
            return False
        try:
            # Now, not at the next loop turn: the message's delivery waits
            # for it (and never for a slow qmgr: the frame is buffered).
            self.qmgr.send_attr_now({"request": "wakeup", "queue_id": queue_id})
        except (OSError, ipc.ChannelError):
            return False
        return True

    def wakeup_qmgr(self, queue_id: str) -> None:
        """Tell qmgr about a new file, without waiting for anything.

        On the connection cleanup keeps; when there is none, or it is
        broken (qmgr restarted), a new one is made in the background and
        the wakeup goes out on it.  Never in the way of a commit's answer:
        a qmgr that is stopped or busy accepts the connection and says
        nothing, for up to $trigger_timeout (Postfix's time limit for
        triggers), and every message in between would wait for it.  A
        failure only delays delivery: qmgr scans incoming/ when it starts
        and periodically, so a lost wakeup never loses mail.
        """
        if self.wakeup_now(queue_id):
            return
        if self.qmgr is not None:
            self.qmgr.abort()
            self.qmgr = None
        if len(self.unsent) < UNSENT_MAX:
            self.unsent.append(queue_id)
        else:
            self.unsent[-1] = ""        # too many: a wakeup that asks for a scan
        if self.connecting is None:
            self.connecting = asyncio.get_running_loop().create_task(self._connect_qmgr())

    async def _connect_qmgr(self) -> None:
        """Connect to qmgr and send the wakeups that waited for it."""
        try:
            ch = await ipc.connect(self.ctx.service_path("qmgr"), protocol="qmgr",
                                   timeout=self.trigger_timeout)
        except (OSError, ipc.ChannelError, asyncio.TimeoutError):
            self.unsent.clear()         # qmgr's scans find them
            return
        finally:
            self.connecting = None
        self.qmgr = ch
        unsent, self.unsent = self.unsent, []
        for queue_id in unsent:
            if not self.wakeup_now(queue_id):
                break               # broken at once: the next message tries again


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


async def serve(ctx) -> None:
    service = CleanupService(ctx)
    service.spares.want(1)
    servers = [await ipc.serve(sock, protocol=PROTOCOL, handler=service.handle)
               for sock in ctx.listeners]
    ctx.ready()
    # Idle = no message being received; stop() below closes smtpd's
    # pooled channels, which smtpd retries on a fresh connection (those
    # holding a reserved queue ID after a "bye" and BYE_GRACE).
    ctx.exit_when_idle(servers, lambda: service.active)
    await ctx.stopping.wait()
    for server in servers:
        server.close()
    service.stop()
    # Let messages being received finish; smtpd sessions end on their own
    # timeouts, so bound the wait.
    deadline = time.monotonic() + 10
    while (service.active or service.byes or service.connecting) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    service.syncer.close()
