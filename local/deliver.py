"""The local delivery agent (minimal: mbox in mail_spool_directory).

NAME
    local -- deliver mail to local users' mailboxes

SYNOPSIS
    python -I -m local -c CONFIG_DIR -s local -t unix   (started by master)

DESCRIPTION
    Serves the `delivery` protocol (docs/internals.md) on `private/local`.
    For each recipient: the local part, with any `recipient_delimiter`
    extension removed and folded to lower case, must name a user in the
    password database; the message is appended to
    `$mail_spool_directory/<user>` (local.mailbox), with Return-Path: and
    Delivered-To: added, and the delivery line logged with `relay=local`.

    Outcomes as Postfix's local(8): unknown user → bounced 5.1.1
    `unknown user: "name"`; mailbox over `mailbox_size_limit` → bounced
    5.2.2; an I/O error → deferred 4.3.0 (4.3.1 when the disk is full).
    Delivered-To: already naming the recipient → bounced 5.4.6
    `mail forwarding loop for <rcpt>`.

    XXX: aliases, .forward, Maildir, commands, files, running the write
    with the recipient's privileges and LMTP belong to the tables/local
    issue; started as root this agent creates the mbox owned by the user
    but writes it itself.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pwd
import time

from fulmar import log
from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import KIND_ATTR, KIND_RECORD
from fulmar.queue import qfile
from fulmar.smtp import delivery_log
from local.mailbox import MailboxFull, deliver_mbox, from_line, mbox_body

PROTOCOL = "delivery"


class LocalAgent:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        cfg = ctx.cfg
        self.spool = cfg.get("mail_spool_directory")
        self.delimiter = cfg.get("recipient_delimiter")
        self.size_limit = cfg.get("mailbox_size_limit")
        self.active = 0

    def local_user(self, address: str) -> str:
        local = address.rpartition("@")[0] if "@" in address else address
        if self.delimiter:
            for ch in self.delimiter:
                if ch in local:
                    local = local.split(ch, 1)[0]
        return local.lower()

    async def handle(self, ch) -> None:
        try:
            while True:
                frame = await ch.recv(timeout=None)
                if frame is None:
                    break
                if frame.kind != KIND_ATTR or frame.attrs.get("request") != "deliver":
                    log.warning("local: unexpected request")
                    break
                self.active += 1
                try:
                    results = await self.deliver(frame.attrs)
                finally:
                    self.active -= 1
                await ch.send_attr({"id": frame.attrs.get("id"), "results": results})
        except (ipc.ChannelError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            await ch.close()

    async def deliver(self, req: dict) -> list[dict]:
        handoff = time.time()
        qid = req["queue_id"]
        path = os.path.join(self.ctx.queue_dir, req["path"])
        loop = asyncio.get_running_loop()
        results = []
        try:
            env = await loop.run_in_executor(None, qfile.read_envelope, path)
            body = await loop.run_in_executor(None, lambda: mbox_body(qfile.iter_content(path, env)))
        except (OSError, qfile.CorruptQueueFile) as exc:
            for r in req["recipients"]:
                results.append(self._log(req, r, handoff, "deferred", "4.3.0",
                                         "cannot read queue file: %s" % exc))
            return results
        for r in req["recipients"]:
            results.append(await loop.run_in_executor(None, self._deliver_one, req, r, body, handoff))
        return results

    def _deliver_one(self, req: dict, r: dict, body: bytes, handoff: float) -> dict:
        rcpt = r["address"]
        user = self.local_user(rcpt)
        if ("\ndelivered-to: %s\n" % rcpt.lower()).encode() in body[:body.find(b"\n\n") + 1].lower():
            return self._log(req, r, handoff, "bounced", "5.4.6",
                             "mail forwarding loop for %s" % rcpt)
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return self._log(req, r, handoff, "bounced", "5.1.1", 'unknown user: "%s"' % user)
        mbox = os.path.join(self.spool, pw.pw_name)
        sender = req.get("sender", "")
        headers = from_line(sender, time.time()) + (
            "Return-Path: <%s>\n" % sender).encode("utf-8", "surrogateescape")
        orig = r.get("orig_address") or ""
        if orig and orig.lower() != rcpt.lower():
            headers += ("X-Original-To: %s\n" % orig).encode("utf-8", "surrogateescape")
        headers += ("Delivered-To: %s\n" % rcpt).encode("utf-8", "surrogateescape")
        try:
            os.makedirs(self.spool, exist_ok=True)
            deliver_mbox(mbox, headers, body, size_limit=self.size_limit,
                         uid=pw.pw_uid, gid=pw.pw_gid)
        except MailboxFull:
            return self._log(req, r, handoff, "bounced", "5.2.2",
                             "cannot update mailbox %s for user %s. file too large" % (mbox, user))
        except OSError as exc:
            dsn = "4.3.1" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "4.2.0"
            return self._log(req, r, handoff, "deferred", dsn,
                             "cannot update mailbox %s for user %s. %s" % (
                                 mbox, user, exc.strerror or exc))
        return self._log(req, r, handoff, "sent", "2.0.0", "delivered to mailbox")

    def _log(self, req: dict, r: dict, handoff: float, status: str, dsn: str, reason: str) -> dict:
        log.info("%s", delivery_log.format_delivery(
            req["queue_id"], recipient=r["address"], orig_recipient=r.get("orig_address", ""),
            relay="local", times=delivery_log.DeliveryTimes(
                arrival=req.get("arrival_time", handoff), active=req.get("qmgr_time"),
                handoff=handoff),
            dsn=dsn, status=status, reason=reason, now=time.time()))
        return {"offset": r["offset"], "status": status, "dsn": dsn, "reason": reason,
                "relay": "local"}


async def serve(ctx) -> None:
    agent = LocalAgent(ctx)
    servers = [await ipc.serve(sock, protocol=PROTOCOL, handler=agent.handle)
               for sock in ctx.listeners]
    ctx.ready()
    await ctx.stopping.wait()
    for server in servers:
        server.close()
    deadline = time.monotonic() + 30
    while agent.active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
