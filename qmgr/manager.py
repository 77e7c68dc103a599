"""The queue manager: moves mail through the queues and hands it to agents.

NAME
    qmgr -- Postfix-style queue manager

SYNOPSIS
    python -I -m qmgr -c CONFIG_DIR -s qmgr -t unix   (started by master)

DESCRIPTION
    qmgr is the only process that moves queue files between queues
    (house rule 1). It serves the `qmgr` protocol on `public/qmgr`
    (wakeups from cleanup, flush requests from postqueue/postfix).

    incoming/ -> active/
        On a wakeup naming a queue ID (at once, in the connection's
        handler, when there is room), and on scans of incoming/ (at start,
        every `queue_run_delay`, after a scan cut short by the active limit
        and at most once a second while messages finish), files are
        renamed into active/ while
        fewer than `qmgr_message_active_limit` messages are active and
        fewer than BOUNCE_BACKLOG requests wait for the bounce daemon. The
        envelope is read (fulmar.queue.qfile); a corrupt file goes to
        corrupt/ with a warning. qmgr logs
        `QID: from=<sender>, size=N, nrcpt=N (queue active)`.

    routing
        Each pending recipient is resolved (fulmar.resolve) to a transport
        and next hop; recipients are grouped into delivery jobs per
        destination (up to `<transport>_destination_recipient_limit`) and
        scheduled by qmgr.scheduler.

    delivery
        A job is a `deliver` request on a channel to `private/<transport>`
        (a pool of connections per transport; each connection carries one
        request at a time), with the content offsets so that the agent
        reads only the content. The agent logs the delivery lines and
        answers with per-recipient results. qmgr keeps only the envelope
        fields the requests carry, for up to `qmgr_message_active_limit`
        messages.

    results
        sent: the recipient is done. bounced: the reason is appended to
        the message's bounce log (bounce daemon), then the recipient is
        done. deferred: the recipient stays pending and its reason goes to
        the defer log when the message is deferred. A recipient is marked
        done in the file (fsync'd) only while the message stays in the
        queue; a message whose recipients are all done is simply removed.

    end of an attempt
        All done: bounce log flushed into a DSN if there is one (bounce
        daemon, through cleanup), logs removed, file removed,
        `QID: removed`. Some deferred: if the message is older than
        `maximal_queue_lifetime` (`bounce_queue_lifetime` for null-sender
        mail) they are bounced (`status=expired, returned to sender`);
        otherwise the file moves to deferred/ with its mtime set to the next
        attempt: now + clamp(age, minimal_backoff_time, maximal_backoff_time)
        as Postfix. Once a deferred message is older than
        `delay_warning_time` (when set), the sender gets one delay notice
        (bounce daemon, `warn`).

    deferred/ -> active/
        Every `queue_run_delay` (and on flush) deferred/ is scanned and the
        files whose time has come are activated, within the active limit;
        a pass cut short by the limit resumes where it stopped when there
        is room (one stat per file and pass).  A flush (postqueue -f,
        postfix flush, ETRN) makes one pass that takes every file deferred
        before it, whatever its next attempt time: a file deferred again
        during the pass (its ctime is later than the flush) waits for its
        time, so a flush while the destination is still down tries each
        message once, as Postfix's, instead of going round until it is up.

    restart
        On start, files left in active/ by a crash are taken up again:
        their done recipients are skipped, so nothing is lost and nothing
        done is delivered twice.
"""

from __future__ import annotations

import asyncio
import os
import time

from fulmar import log
from fulmar.config.mastercf import parse_master_cf
from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import KIND_ATTR
from fulmar.queue import fsinfo, layout, qfile
from fulmar.queue import qid as queue_ids
from fulmar.queue import showq
from fulmar.resolve import Resolver
from fulmar.smtp import delivery_log
from fulmar.smtp.dsn import DSN_NOTIFY_SUCCESS
from qmgr.bounce_client import BounceClient
from qmgr.scheduler import Job, Limits, Scheduler
from qmgr.transport import TransportPool, TransportUnavailable

PROTOCOL = "qmgr"

INCOMING = "incoming"
ACTIVE = "active"
DEFERRED = "deferred"
CORRUPT = "corrupt"


# <linux/time.h>; Python's time module does not name it.  File timestamps
# come from this clock (flush()).
CLOCK_REALTIME_COARSE = 5

# No message is taken into active/ while this many requests to the bounce
# daemon (defer and bounce log entries, notices) wait for an answer: a
# destination that is down defers every message at once, and each one then
# waits in memory for its defer log entry.  Postfix's qmgr writes those
# entries itself, blocking, so it takes no new mail meanwhile; here the
# backlog would grow to qmgr_message_active_limit messages (6.6 KB each,
# tracemalloc; 133 MiB after the bench's flood of 100,000), and the mail
# waits in incoming/ or deferred/ instead, on disk.
BOUNCE_BACKLOG = 500
# A scan takes at most SCAN_BATCH files into active/ at a time, and looks
# at most SCAN_LOOK of them (a stat each, in deferred/); run() schedules
# what it took and lets the event loop turn before it goes on: the first
# steps of those deliveries run (a dead destination's deferrals then count
# in the backlog above), finished ones are read, and a wakeup from cleanup
# is not kept waiting.  Larger turns (500 taken, any number looked at)
# held a flush's deliveries to 4-80 a second while it filled the active
# set, and a periodic pass over a large deferred/ of messages not yet due
# held qmgr for as many stat() calls (docs/performance.md, item 49).
SCAN_BATCH = 100
SCAN_LOOK = 2000

# A finished message asks for an incoming/ scan if none ran for this long.
INCOMING_RESCAN = 1.0
# While the active set is full, run() waits for a finished message's kick,
# or this long (seconds), before it looks again.
FULL_RECHECK = 1.0

# Envelope attributes a delivery request carries (deliver()).
REQUEST_ATTRS = frozenset({"dsn_envid", "dsn_ret", "smtputf8", "body_type"})
#: A message activated by cleanup's wakeup and sent to its agent at once
#: carries its queue file's bytes in the request when the file is this
#: small ("content", latin-1 text): the agent need not open the file.
INLINE_CONTENT_MAX = 16 * 1024


class Message:
    """An active message: its envelope and the state of this attempt."""

    __slots__ = ("queue_id", "env", "from_queue", "qmgr_time", "jobs", "deferred",
                 "bounced", "done_offsets", "notify_success", "force_expired", "marking")

    def __init__(self, queue_id: str, env, from_queue: str) -> None:
        self.queue_id = queue_id
        self.env = env
        self.from_queue = from_queue
        self.qmgr_time = time.time()
        self.jobs = 0
        self.deferred: dict[int, dict] = {}      # offset -> result
        self.bounced = False
        self.done_offsets: list[int] = []        # done this attempt, not yet on disk
        self.notify_success = False
        self.force_expired = False
        self.marking: set = set()                # mark_done writes in progress

    @property
    def path(self) -> str:
        return os.path.join(ACTIVE, self.queue_id)


class QueueManager:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.cfg = cfg = ctx.cfg
        self.queue_dir = ctx.queue_dir
        # A delivered file's inode goes to cleanup's next message
        # (qfile.Recycler), where the file system makes new inodes dear.
        self.recycler = qfile.Recycler(self.queue_dir, fsinfo.scans_freed_inodes(self.queue_dir))
        self.resolver = Resolver(cfg)
        self.active_limit = cfg.get("qmgr_message_active_limit")
        self.run_delay = cfg.get("queue_run_delay")
        self.min_backoff = cfg.get("minimal_backoff_time")
        self.max_backoff = cfg.get("maximal_backoff_time")
        self.max_lifetime = cfg.get("maximal_queue_lifetime")
        self.bounce_lifetime = cfg.get("bounce_queue_lifetime")
        self.delay_warning = cfg.get("delay_warning_time")
        self.messages: dict[str, Message] = {}
        self.process_limits = self._process_limits()
        self._limits_cache: dict[str, Limits] = {}
        self.scheduler = Scheduler(self._limits, self._transport_limit, self.min_backoff)
        self.transports = TransportPool(ctx)
        self.bounce = BounceClient(ctx)
        self.kick = asyncio.Event()           # something to schedule or scan
        self.incoming_wanted = True           # scan incoming/ at next chance
        self.incoming_scanned = 0.0           # time of the last incoming/ scan
        self.deferred_scan_due = 0.0
        self.force_deferred = False
        self.flush_started_ns = 0             # ctime before which a flush takes a file
        self.passes: dict[str, tuple] = {}    # queue -> (files, held item): scan()
        self.scan_more = False                # a scan stopped at SCAN_BATCH
        self.tasks: set[asyncio.Task] = set()
        self.pending_ids: list[str] = []      # wakeups to handle
        self.held_log: list | None = None     # see handle()
        self.fresh: dict | None = None        # queue ID -> file bytes, see handle()

    # -- configuration helpers ----------------------------------------------

    def _process_limits(self) -> dict[str, int]:
        limits = {}
        try:
            for svc in parse_master_cf(os.path.join(self.cfg.config_dir, "master.cf")):
                if svc.type == "unix" and svc.maxproc is not None:
                    limits[svc.name] = svc.maxproc
        except (OSError, Exception) as exc:   # master already validated it
            log.warning("cannot read master.cf: %s", exc)
        return limits

    def _transport_limit(self, transport: str) -> int:
        limit = self.process_limits.get(transport) or self.cfg.get("default_process_limit")
        return max(1, limit)

    def _limits(self, transport: str) -> Limits:
        # Once per transport: asked for every message (recipient_limit),
        # and the configuration does not change in a process's lifetime.
        limits = self._limits_cache.get(transport)
        if limits is None:
            tp = self.cfg.transport_param
            limits = self._limits_cache[transport] = Limits(
                concurrency=tp(transport, "destination_concurrency_limit"),
                initial=self.cfg.get("initial_destination_concurrency"),
                recipients=tp(transport, "destination_recipient_limit"),
                rate_delay=tp(transport, "destination_rate_delay"))
        return limits

    # -- the qmgr protocol ----------------------------------------------------

    async def handle(self, ch) -> None:
        try:
            while True:
                frame = await ch.recv(timeout=None)
                if frame is None:
                    break
                if frame.kind != KIND_ATTR:
                    log.warning("qmgr: unexpected record frame from client")
                    break
                req = frame.attrs.get("request")
                if req == "wakeup":
                    qid = frame.attrs.get("queue_id")
                    if not (isinstance(qid, str) and queue_ids.is_queue_id(qid)):
                        self.incoming_wanted = True
                        self.kick.set()
                    elif (not self.pending_ids and not self.ctx.stopping.is_set()
                          and not self.full()):
                        # The usual case, handled here rather than by waking
                        # run() (two task switches less on a new message's
                        # way to its delivery agent).
                        if qid not in self.messages:
                            # While the requests are made here: the "queue
                            # active" line waits until they are written, and
                            # a small file's bytes go with them (activate,
                            # deliver); both are dropped right after.
                            self.held_log, self.fresh = [], {}
                            try:
                                self.activate(qid, INCOMING)
                                self.schedule(time.time())
                            finally:
                                self._flush_held_log()
                                self.held_log = self.fresh = None
                    else:
                        self.pending_ids.append(qid)
                        self.kick.set()
                elif req in ("flush", "flush_site", "flush_id"):
                    self.flush()
                    if "id" in frame.attrs:
                        await ch.send_attr({"id": frame.attrs["id"], "status": "ok"})
                else:
                    log.warning("qmgr: unknown request %r", str(req)[:32])
        except (ipc.ChannelError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            await ch.close()

    def _flush_held_log(self) -> None:
        if self.held_log:
            held, self.held_log = self.held_log, []
            for args in held:
                log.info(*args)

    def flush(self) -> None:
        """Make deferred mail eligible now (postqueue -f, postfix flush)."""
        self.scheduler.revive_all()
        self.force_deferred = True
        # The clock file timestamps are taken from (the kernel's coarse
        # one): a file deferred again after this instant has a ctime at or
        # after it, even within the same clock tick.
        self.flush_started_ns = time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
        self.passes.pop(DEFERRED, None)       # a new pass, from the start
        self.deferred_scan_due = 0.0
        self.incoming_wanted = True
        self.kick.set()

    # -- main loop ------------------------------------------------------------

    async def run(self) -> None:
        # Files left in active/ by a crash first: they are ours already.
        for qid, _path in list(qfile.scan(self.queue_dir, ACTIVE)):
            self.activate(qid, ACTIVE)
        while not self.ctx.stopping.is_set():
            now = time.time()
            if self.pending_ids:
                ids, self.pending_ids = self.pending_ids, []
                for qid in ids:
                    if self.full():
                        self.incoming_wanted = True
                        break
                    if qid not in self.messages:
                        self.activate(qid, INCOMING)
            if self.incoming_wanted and not self.full():
                self.incoming_scanned = now
                self.incoming_wanted = not self.scan(INCOMING, now)
            if now >= self.deferred_scan_due and not self.full():
                complete = self.scan(DEFERRED, now, force=self.force_deferred)
                if complete:
                    self.force_deferred = False
                    self.deferred_scan_due = now + self.run_delay
                    self.incoming_wanted = True
            self.schedule(now)
            if self.scan_more:
                self.scan_more = False
                await asyncio.sleep(0)
                continue
            due = self.deferred_scan_due
            if self.full():
                # No scan can take a file before a message finishes, and
                # finish() kicks: a scan due in the past made this wait
                # return at once, and qmgr spun here while the active set
                # stayed full (16 turns per message through a flush of
                # 100,000, docs/performance.md item 61).  FULL_RECHECK
                # bounds the wait all the same (the bounce backlog, too,
                # makes full()).
                due = max(due, now + FULL_RECHECK)
            timeout = max(0.0, min(due, now + self.run_delay) - time.time())
            if self.scheduler.next_wakeup is not None:
                timeout = min(timeout, max(0.0, self.scheduler.next_wakeup - time.time()))
            self.kick.clear()
            try:
                await asyncio.wait_for(self.kick.wait(), timeout)
            except asyncio.TimeoutError:
                self.incoming_wanted = True
        # Stopping: let deliveries in flight finish, bounded by the agents'
        # own timeouts; master kills us after its grace period anyway.
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.ctx.cfg.get("daemon_timeout"))

    def full(self) -> bool:
        """No room for another message: qmgr_message_active_limit, or the
        bounce daemon's backlog (BOUNCE_BACKLOG)."""
        return (len(self.messages) >= self.active_limit
                or self.bounce.waiting >= BOUNCE_BACKLOG)

    def scan(self, queue: str, now: float, force: bool = False) -> bool:
        """Activate files of `queue` while there is room, at most
        SCAN_BATCH, looking at most at SCAN_LOOK; True if the pass over the
        directory completed.  A pass cut short by the active limit
        is resumed where it stopped by the next call (Postfix's qmgr_scan):
        starting over made every resumption walk, and stat, the files
        already passed (quadratic in a large deferred/, one resumption per
        finished message), and in a flush take them again."""
        files, held = self.passes.pop(queue, None) or (qfile.scan(self.queue_dir, queue), None)
        taken = looked = 0
        while True:
            item = held or next(files, None)
            held = None
            if item is None:
                return True
            if self.full():
                self.passes[queue] = (files, item)
                return False
            looked += 1
            if looked > SCAN_LOOK:
                self.passes[queue] = (files, item)
                self.scan_more = True
                return False
            qid, path = item
            if qid in self.messages:
                continue
            if queue == DEFERRED:
                try:
                    st = os.stat(os.path.join(self.queue_dir, path))
                except FileNotFoundError:
                    continue
                if st.st_mtime > now and not (force and st.st_ctime_ns < self.flush_started_ns):
                    continue
            self.activate(qid, queue)
            taken += 1
            if taken >= SCAN_BATCH:
                self.passes[queue] = (files, None)
                self.scan_more = True
                return False

    def activate(self, qid: str, from_queue: str) -> None:
        """Move one file into active/ and queue its recipients for delivery."""
        try:
            if from_queue != ACTIVE:
                # No directory fsync: after a crash the file is in one of
                # the two directories, and either is scanned at start.
                qfile.move(self.queue_dir, qid, from_queue, ACTIVE, sync=False)
        except FileNotFoundError:
            return                      # gone meanwhile (postsuper -d, or a duplicate wakeup)
        except OSError as exc:
            log.warning("%s: move to active: %s", qid, exc.strerror or exc)
            return
        path = qfile.path_of(self.queue_dir, ACTIVE, qid)
        try:
            env = qfile.read_envelope(path)
        except qfile.CorruptQueueFile as exc:
            log.warning("%s: corrupt queue file: %s; moved to corrupt/", qid, exc)
            try:
                qfile.move(self.queue_dir, qid, ACTIVE, CORRUPT)
            except OSError:
                pass
            return
        except OSError as exc:
            log.warning("%s: read queue file: %s", qid, exc.strerror or exc)
            return
        # Up to qmgr_message_active_limit envelopes stay in memory: keep
        # only what the delivery requests carry (the agents read the
        # content, and bounce the file, themselves).
        if self.fresh is not None and env.data is not None and len(env.data) <= INLINE_CONTENT_MAX:
            self.fresh[qid] = env.data
        env.data = None
        env.attrs = {k: v for k, v in env.attrs.items() if k in REQUEST_ATTRS}
        msg = Message(qid, env, from_queue)
        self.messages[qid] = msg
        pending = [r for r in env.recipients if not r.done]
        line = ("%s: from=<%s>, size=%d, nrcpt=%d (queue active)",
                qid, env.sender, env.content_size, len(env.recipients))
        if self.held_log is not None:
            self.held_log.append(line)
        else:
            log.info(*line)
        if from_queue == DEFERRED:
            self._remove_defer_log(qid)
        if pending and showq.is_force_expired(env.mode):   # from read_envelope's fstat
            # postsuper -e/-f: return to sender without another attempt.
            msg.force_expired = True
            for rcpt in pending:
                msg.deferred[rcpt.offset] = self._bounce_entry(rcpt, self._result(
                    rcpt, "deferred", "4.7.0", "message is administratively expired"))
            pending = []
        if not pending:
            self.spawn(self.finish(msg))
            return
        groups: dict[tuple[str, str], list] = {}
        for rcpt in pending:
            route = self.resolver.resolve(rcpt.address, sender=env.sender)
            groups.setdefault((route.transport, route.nexthop), []).append(rcpt)
        for (transport, nexthop), rcpts in groups.items():
            limit = self.scheduler.recipient_limit(transport)
            for i in range(0, len(rcpts), limit):
                msg.jobs += 1
                self.scheduler.add(Job(msg, transport, nexthop, rcpts[i:i + limit]))
        # No kick: every caller schedules right after (handle(), run()); a
        # kick cost run() a loop turn per message for nothing.

    def schedule(self, now: float) -> None:
        # Taken all at once: a delivery started below runs up to its first
        # await right away, before the rest are taken.
        for dest, job, dead in list(self.scheduler.runnable(now)):
            if dead:
                reason = "delivery temporarily suspended: " + dest.dead_reason
                results = [self._result(r, "deferred", dest.dead_dsn or "4.4.1", reason)
                           for r in job.recipients]
                self._log_results(job, results, relay="none")
                self.spawn(self.job_done(job, results))
            else:
                # Eager: the request is built and written to the agent now,
                # not one event-loop turn later (about 20 us per message).
                self.spawn(self.deliver(dest, job), eager=True)
        if self.scheduler.next_wakeup is not None:
            # A job waits for a destination's rate delay: run() sets its
            # timer from next_wakeup (a no-op kick when run() called us).
            self.kick.set()

    def spawn(self, coro, eager: bool = False) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.Task(coro, loop=loop, eager_start=True) if eager else loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("qmgr: internal error: %s: %s", type(exc).__name__, exc)

    # -- delivery -------------------------------------------------------------

    async def deliver(self, dest, job: Job) -> None:
        msg = job.message
        env = msg.env
        request = {
            "request": "deliver",
            "queue_name": ACTIVE,
            "queue_id": msg.queue_id,
            # (As path_of(), relative: relpath cost ~5 us per message.)
            "path": os.path.join(layout.queue_subdir(ACTIVE, msg.queue_id), msg.queue_id),
            "transport": job.transport,
            "nexthop": job.nexthop,
            "sender": env.sender,
            "arrival_time": env.arrival_time,
            "qmgr_time": msg.qmgr_time,
            "dsn_envid": env.attrs.get("dsn_envid", ""),
            "dsn_ret": env.attrs.get("dsn_ret", ""),
            "smtputf8": env.attrs.get("smtputf8", ""),
            # The agent reads only the content (qfile.content_envelope).
            "content_offset": env.content_offset,
            "content_size": env.content_size,
            "body_type": env.attrs.get("body_type", ""),
            "recipients": [{"address": r.address, "orig_address": r.orig_address,
                            "dsn_orcpt": r.dsn_orcpt, "dsn_notify": r.dsn_notify,
                            "offset": r.offset} for r in job.recipients],
        }
        data = self.fresh.get(msg.queue_id) if self.fresh else None
        if data is not None:
            request["content"] = data.decode("latin-1")
        site_failure = False
        reason = ""
        try:
            results = await self.transports.request(job.transport, request)
            by_offset = {r.get("offset"): r for r in results if isinstance(r, dict)}
            results = [by_offset.get(r.offset) or
                       self._result(r, "deferred", "4.3.0", "unknown mail transport error")
                       for r in job.recipients]
            site_failure = all(r["status"] == "deferred" for r in results) and all(
                r.get("relay", "none") == "none" or r.get("site_failure") for r in results)
            reason = results[0].get("reason", "") if results else ""
        except TransportUnavailable as exc:
            results = [self._result(r, "deferred", "4.3.0", str(exc)) for r in job.recipients]
            self._log_results(job, results, relay="none")
        self.scheduler.done(dest, time.time(), site_failure=site_failure, reason=reason,
                            dsn=results[0]["dsn"] if results else "4.4.1")
        self.kick.set()
        await self.job_done(job, results)

    @staticmethod
    def _result(rcpt, status: str, dsn: str, reason: str) -> dict:
        return {"offset": rcpt.offset, "status": status, "dsn": dsn, "reason": reason,
                "relay": "none"}

    def _log_results(self, job: Job, results: list[dict], relay: str) -> None:
        """Delivery lines for results qmgr decided itself (no agent ran)."""
        self._flush_held_log()          # "queue active" first
        now = time.time()
        env = job.message.env
        for rcpt, res in zip(job.recipients, results):
            log.info("%s", delivery_log.format_delivery(
                job.message.queue_id, recipient=rcpt.address, orig_recipient=rcpt.orig_address,
                relay=relay, times=delivery_log.DeliveryTimes(
                    arrival=env.arrival_time, active=job.message.qmgr_time),
                dsn=res["dsn"], status=res["status"], reason=res["reason"], now=now))

    async def job_done(self, job: Job, results: list[dict]) -> None:
        msg = job.message
        done_now: list[int] = []
        for rcpt, res in zip(job.recipients, results):
            status = res.get("status")
            if status == "sent":
                done_now.append(rcpt.offset)
                if rcpt.dsn_notify & DSN_NOTIFY_SUCCESS:
                    # Recorded in trace/QID; the bounce daemon turns it
                    # into a delivery report when the message is done.
                    if await self.bounce.append("trace", msg.queue_id, self._bounce_entry(rcpt, res)):
                        msg.notify_success = True
            elif status == "bounced":
                ok = await self.bounce.append("bounce", msg.queue_id, self._bounce_entry(rcpt, res))
                if ok:
                    msg.bounced = True
                    done_now.append(rcpt.offset)
                else:
                    msg.deferred[rcpt.offset] = self._bounce_entry(
                        rcpt, dict(res, status="deferred"))
            else:
                msg.deferred[rcpt.offset] = self._bounce_entry(rcpt, res)
        msg.jobs -= 1
        # Decided now: another job may end while we wait below, and only
        # the last one may finish the message (else it is finished twice).
        last = msg.jobs == 0
        msg.done_offsets.extend(done_now)
        if not last and done_now:
            # Other jobs of this message are still running: make these
            # recipients' completion durable now, so that a crash never
            # delivers them twice.
            await self._mark_done(msg)
        if last:
            await self.finish(msg)

    @staticmethod
    def _bounce_entry(rcpt, res: dict) -> dict:
        return {"address": rcpt.address, "orig_address": rcpt.orig_address,
                "dsn_orcpt": rcpt.dsn_orcpt, "dsn_notify": rcpt.dsn_notify,
                "offset": rcpt.offset, "status": res.get("status", "deferred"),
                "dsn": res.get("dsn", "4.0.0"), "reason": res.get("reason", ""),
                "relay": res.get("relay", "none")}

    async def _mark_done(self, msg: Message) -> None:
        offsets, msg.done_offsets = msg.done_offsets, []
        if not offsets:
            return
        path = qfile.path_of(self.queue_dir, ACTIVE, msg.queue_id)
        fut = asyncio.get_running_loop().run_in_executor(None, qfile.mark_done, path, offsets)
        msg.marking.add(fut)
        try:
            await fut
        except FileNotFoundError:
            # Removed under us (postsuper -d): nothing left to record.
            log.warning("%s: queue file vanished from active/", msg.queue_id)
        finally:
            msg.marking.discard(fut)

    async def finish(self, msg: Message) -> None:
        """End of an attempt: remove, bounce, or defer the message."""
        qid = msg.queue_id
        env = msg.env
        if msg.marking:
            # Another job's recipients are being marked done in the file:
            # let that finish before the file is removed or moved.
            await asyncio.wait(list(msg.marking))
        now = time.time()
        try:
            if msg.deferred:
                lifetime = self.bounce_lifetime if env.sender == "" else self.max_lifetime
                if msg.force_expired or now - env.arrival_time >= lifetime:
                    for entry in msg.deferred.values():
                        if await self.bounce.append("bounce", qid, dict(entry, status="expired")):
                            msg.done_offsets.append(entry["offset"])
                            msg.bounced = True
                    log.info("%s: from=<%s>, status=expired, returned to sender", qid, env.sender)
                    msg.deferred = {o: e for o, e in msg.deferred.items()
                                    if o not in set(msg.done_offsets)}
            if msg.bounced or self._has_log("bounce", qid):
                if not await self.bounce.flush(qid, ACTIVE, msg.path, env.sender):
                    # No DSN could be queued: keep the message and retry.
                    await self._mark_done(msg)
                    self._defer(msg, now, retry_soon=True)
                    return
            if msg.notify_success:
                await self.bounce.success(qid, ACTIVE, msg.path, env.sender)
            if msg.deferred:
                await self._mark_done(msg)
                for entry in msg.deferred.values():
                    await self.bounce.append("defer", qid, entry)
                await self._delay_warning(msg, now)
                self._defer(msg, now)
                return
            if msg.from_queue != INCOMING:
                self._remove_defer_log(qid)
            self.recycler.give(ACTIVE, qid)
            log.info("%s: removed", qid)
        finally:
            self.messages.pop(qid, None)
            # cleanup's wakeups name each new file, and a scan cut short by
            # the active limit asks for the next one itself (run()); so a
            # finished message asks for a scan at most once a second, for a
            # file whose wakeup was lost (qmgr busy restarting, say), not
            # once per message as it did (an opendir/getdents/close each).
            if now - self.incoming_scanned >= INCOMING_RESCAN:
                self.incoming_wanted = True
            self.kick.set()

    def _remove_defer_log(self, qid: str) -> None:
        """Unlink defer/QID here, as Postfix's qmgr does, not through bounce.

        A round trip to the bounce daemon per message, serialised on its one
        channel, made `postqueue -f` of a large deferred queue wait on
        thousands of queued removals (docs/performance.md).  The previous
        attempt's appends have all completed before the file went to
        deferred/, so nothing can append to this log while it is unlinked.
        """
        try:
            qfile.remove(self.queue_dir, "defer", qid)
        except OSError as exc:
            log.warning("%s: remove defer log: %s", qid, exc.strerror or exc)

    def _has_log(self, which: str, qid: str) -> bool:
        return os.path.exists(qfile.path_of(self.queue_dir, which, qid))

    async def _delay_warning(self, msg: Message, now: float) -> None:
        """Send the delay_warning_time notice once per message (Postfix's
        W record; here a flag in the size record, set after the notice is
        queued, so a crash in between sends it again rather than never)."""
        env = msg.env
        if (not self.delay_warning or env.flags & qfile.FLAG_DELAY_WARNED
                or now - env.arrival_time < self.delay_warning):
            return
        if await self.bounce.warn(msg.queue_id, ACTIVE, msg.path, env.sender):
            path = qfile.path_of(self.queue_dir, ACTIVE, msg.queue_id)
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, qfile.set_flags, path, qfile.FLAG_DELAY_WARNED)
            except (OSError, qfile.CorruptQueueFile) as exc:
                log.warning("%s: cannot record the delay warning: %s", msg.queue_id, exc)

    def _defer(self, msg: Message, now: float, retry_soon: bool = False) -> None:
        age = now - msg.env.arrival_time
        delay = self.min_backoff if retry_soon else min(max(age, self.min_backoff), self.max_backoff)
        try:
            path = qfile.move(self.queue_dir, msg.queue_id, ACTIVE, DEFERRED, sync=False)
            qfile.set_next_attempt(path, now + delay)
        except OSError as exc:
            log.warning("%s: move to deferred: %s", msg.queue_id, exc.strerror or exc)


async def serve(ctx) -> None:
    qm = QueueManager(ctx)
    servers = [await ipc.serve(sock, protocol=PROTOCOL, handler=qm.handle)
               for sock in ctx.listeners]
    ctx.ready()
    runner = asyncio.get_running_loop().create_task(qm.run())
    await ctx.stopping.wait()
    qm.kick.set()
    for server in servers:
        server.close()
    await runner
    await qm.transports.close()
    await qm.bounce.close()


