"""The local and virtual delivery agents.

NAME
    local -- deliver mail to local users (local(8)) and virtual mailboxes (virtual(8))

SYNOPSIS
    python -I -m local -c CONFIG_DIR -s local -t unix     (started by master)
    python -I -m local -c CONFIG_DIR -s virtual -t unix   (master.cf command "virtual")

DESCRIPTION
    Serves the `delivery` protocol (docs/internals.md) on `private/local`
    (or `private/virtual`).  The daemon keeps root (daemon.main keep_root)
    only to start, per delivery, a child process with the recipient's uid,
    gid and groups: `python -I -m local.worker` for mbox, Maildir and file
    writes, `/bin/sh -c command` for commands.  No delivery ever runs as
    root: a root-owned alias table or include file runs its commands and
    files as $default_privs.

    local: each recipient is expanded by local.expand (Delivered-To loop
    check, aliases, .forward, the mailbox) into actions, then:

      mailbox   mbox in $mail_spool_directory/<user> or $home/$home_mailbox:
                From_ line, Return-Path:, X-Original-To:, Delivered-To:,
                ">From " quoting, a blank line; dotlock + fcntl locking;
                mailbox_size_limit.  The spool file is created by the daemon
                (owned by the user, mode 0600) when missing, so a spool
                directory that users cannot write still works; when the
                spool directory is group-writable the worker also gets that
                group for the dotlock.
      maildir   Return-Path:, X-Original-To:, Delivered-To:, the message.
      file      like mailbox (Delivered-To: per prepend_delivered_header).
      command   "/bin/sh -c command" as the user, in $home, stdin = From_
                line + headers + message; environment HOME LOGNAME USER
                SHELL SENDER RECIPIENT LOCAL EXTENSION DOMAIN
                ORIGINAL_RECIPIENT PATH and $export_environment; at most
                $command_time_limit.  Exit 0: sent "delivered to command:
                cmd"; 75 (EX_TEMPFAIL) and other soft sysexits: deferred;
                other sysexits: the sysexits.h DSN; any other status: bounced
                5.3.0 "Command died with status N: "cmd"".  Output (first
                COMMAND_OUTPUT_LIMIT bytes) is appended as ". Command
                output: ...".  A timeout defers (4.3.0) and kills the
                command's process group.
      forward   one new message through cleanup (origin "local", no new
                Received:) per sender, with "Delivered-To: <rcpt>"
                prepended: "forwarded as QID".
      pass      mailbox_transport / fallback_transport: the recipient is
                handed to private/<transport> with that next hop (for
                example lmtp:unix:/path); that agent logs and answers.
      error     the status expand decided (loops, unknown user, ...).

    One delivery line per action (relay=local); the recipient's result to
    qmgr is the worst of its actions (deferred > bounced > sent).

    virtual: virtual_mailbox_maps (full address, then @domain) gives the
    path under virtual_mailbox_base ("/" at the end: Maildir), with
    virtual_uid_maps / virtual_gid_maps (uid below virtual_minimum_uid:
    deferred 4.3.0); virtual_mailbox_limit; relay=virtual.  Unknown:
    bounced 5.1.1.

FAILURE BEHAVIOUR
    Nothing is acknowledged before the data is fsync'd by the worker.  A
    worker that dies or answers garbage defers the recipient (4.3.0).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time

from fulmar import log, tables
from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import KIND_ATTR
from fulmar.queue import qfile, records
from fulmar.resolve import Resolver, split_transport
from fulmar.smtp import delivery_log
from fulmar.tables.addr import find_address, split_address, split_extension
from local.expand import Action, Expander, Settings
from local.mailbox import from_line

PROTOCOL = "delivery"
#: Bytes of command output kept for the DSN and the log (Postfix keeps a
#: short excerpt as well).
COMMAND_OUTPUT_LIMIT = 2048
SEVERITY = {"sent": 0, "bounced": 1, "deferred": 2}

# sysexits.h → (status, dsn, text) as Postfix's sys_exits.c.
SYSEXITS = {
    64: ("bounced", "5.3.0", "command line usage error"),
    65: ("bounced", "5.6.0", "data format error"),
    66: ("bounced", "5.3.0", "cannot open input"),
    67: ("bounced", "5.1.1", "user unknown"),
    68: ("bounced", "5.1.2", "host name unknown"),
    69: ("bounced", "5.3.0", "service unavailable"),
    70: ("bounced", "5.3.0", "internal software error"),
    71: ("deferred", "4.3.0", "system resource problem"),
    72: ("bounced", "5.3.0", "critical OS file missing"),
    73: ("bounced", "5.2.0", "can't create user output file"),
    74: ("bounced", "5.3.0", "input/output error"),
    75: ("deferred", "4.3.0", "temporary failure"),
    76: ("bounced", "5.5.0", "remote error in protocol"),
    77: ("bounced", "5.7.0", "permission denied"),
    78: ("bounced", "5.3.5", "local configuration error"),
}


def _param(cfg, name: str, default):
    try:
        return cfg.get(name)
    except KeyError:
        return default


def _printable(data: bytes) -> str:
    return " ".join(data.decode("utf-8", "replace").split())


def delivered_to(content: bytes) -> set[str]:
    """Delivered-To: values in the header section (lower case)."""
    end = content.find(b"\r\n\r\n")
    head = content[:end if end >= 0 else len(content)]
    out = set()
    for line in head.split(b"\r\n"):
        if line[:13].lower() == b"delivered-to:":
            out.add(line[13:].strip().decode("utf-8", "replace").lower())
    return out


def lf(content: bytes) -> bytes:
    data = content.replace(b"\r\n", b"\n")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def mbox_quote(data: bytes) -> bytes:
    if data.startswith(b"From "):
        data = b">" + data
    return data.replace(b"\nFrom ", b"\n>From ") + b"\n"


class LocalAgent:
    def __init__(self, ctx, mode: str = "local") -> None:
        self.ctx = ctx
        self.mode = mode
        cfg = ctx.cfg
        self.cfg = cfg
        self.relay = mode
        self.resolver = Resolver(cfg)
        self.settings = Settings.from_config(cfg, self.resolver.is_local_domain)
        self.expander = Expander(self.settings)
        self.spool = cfg.get("mail_spool_directory")
        self.delimiter = cfg.get("recipient_delimiter")
        self.size_limit = cfg.get("mailbox_size_limit")
        self.stale_lock_time = _param(cfg, "stale_lock_time", 500)
        self.command_time_limit = _param(cfg, "command_time_limit", 1000)
        self.prepend_delivered = {c.lower() for c in _param(cfg, "prepend_delivered_header",
                                                             ["command", "file", "forward"])}
        self.export_env = _param(cfg, "export_environment", ["TZ", "MAIL_CONFIG", "LANG"])
        self.hostname = cfg.get("myhostname")
        self.ipc_timeout = cfg.get("ipc_timeout")
        self.active = 0
        if mode == "virtual":
            cache: dict = {}
            self.v_maps = tables.open_maps(cfg, "virtual_mailbox_maps", cache)
            self.v_uid = tables.open_maps(cfg, "virtual_uid_maps", cache)
            self.v_gid = tables.open_maps(cfg, "virtual_gid_maps", cache)
            self.v_base = cfg.get("virtual_mailbox_base")
            self.v_min_uid = cfg.get("virtual_minimum_uid")
            self.v_limit = cfg.get("virtual_mailbox_limit")

    # -- the protocol ------------------------------------------------------------

    async def handle(self, ch) -> None:
        try:
            while True:
                frame = await ch.recv(timeout=None)
                if frame is None:
                    break
                if frame.kind != KIND_ATTR or frame.attrs.get("request") != "deliver":
                    log.warning("%s: unexpected request", self.mode)
                    break
                self.active += 1
                try:
                    try:
                        results = await self.deliver(frame.attrs)
                    except Exception as exc:     # our bug: defer, never crash the daemon
                        log.error("%s: delivery failed: %s: %s", frame.attrs.get("queue_id", "?"),
                                  type(exc).__name__, exc)
                        results = [{"offset": r.get("offset"), "status": "deferred",
                                    "dsn": "4.3.0", "reason": "unknown mail transport error",
                                    "relay": "none"} for r in frame.attrs.get("recipients") or []]
                finally:
                    self.active -= 1
                await ch.send_attr({"id": frame.attrs.get("id"), "results": results})
        except (ipc.ChannelError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            await ch.close()

    async def deliver(self, req: dict) -> list[dict]:
        handoff = time.time()
        path = os.path.join(self.ctx.queue_dir, req["path"])
        loop = asyncio.get_running_loop()
        try:
            content = await loop.run_in_executor(None, self._read, path)
        except (OSError, qfile.CorruptQueueFile) as exc:
            log.warning("%s: cannot read queue file %s: %s", req["queue_id"], path, exc)
            return [self._log(req, r, r["address"], handoff, "deferred", "4.3.0",
                              "error reading queue file") for r in req["recipients"]]
        msg = Message(req, content, handoff)
        results = []
        for r in req["recipients"]:
            if self.mode == "virtual":
                results.append(await self._virtual(msg, r))
            else:
                results.append(await self._local(msg, r))
        return results

    @staticmethod
    def _read(path: str) -> bytes:
        env = qfile.read_envelope(path)
        return b"".join(qfile.iter_content(path, env))

    # -- local ------------------------------------------------------------------

    async def _local(self, msg: "Message", r: dict) -> dict:
        loop = asyncio.get_running_loop()
        actions = await loop.run_in_executor(None, self.expander.expand, r["address"],
                                             msg.delivered)
        outcomes: list[tuple[str, str, str]] = []
        forwards: dict[str | None, list[Action]] = {}
        for a in actions:
            if a.kind == "forward":
                forwards.setdefault(a.sender, []).append(a)
                continue
            if a.kind == "pass":
                res = await self._pass(msg, r, a)
                outcomes.append((res.get("status", "deferred"), res.get("dsn", "4.3.0"),
                                 res.get("reason", "")))
                continue
            if a.kind == "error":
                st, dsn, reason = a.status, a.dsn, a.reason
            elif a.kind == "command":
                st, dsn, reason = await self._command(msg, r, a)
            else:
                st, dsn, reason = await self._write(msg, r, a)
            self._log(msg.req, r, a.address, msg.handoff, st, dsn, reason)
            outcomes.append((st, dsn, reason))
        for sender, acts in forwards.items():
            st, dsn, reason = await self._forward(msg, r, sender, acts)
            for a in acts:
                self._log(msg.req, r, a.target, msg.handoff, st, dsn, reason)
            outcomes.append((st, dsn, reason))
        if not outcomes:      # cannot happen (expand always decides); never lose mail
            outcomes.append(("deferred", "4.3.0", "no delivery action"))
        st, dsn, reason = max(outcomes, key=lambda o: SEVERITY.get(o[0], 2))
        return {"offset": r["offset"], "status": st, "dsn": dsn, "reason": reason,
                "relay": self.relay}

    def _headers(self, msg: "Message", r: dict, a: Action, *, from_line_: bool,
                 delivered: bool) -> bytes:
        sender = msg.req.get("sender", "")
        out = from_line(sender, time.time()) if from_line_ else b""
        orig = r.get("orig_address") or r["address"]
        text = "Return-Path: <%s>\n" % sender
        if orig:
            text += "X-Original-To: %s\n" % orig
        if delivered:
            text += "Delivered-To: %s\n" % a.address
        return out + text.encode("utf-8", "surrogateescape")

    async def _write(self, msg: "Message", r: dict, a: Action) -> tuple[str, str, str]:
        privs = a.privs
        if a.kind == "maildir":
            data = self._headers(msg, r, a, from_line_=False, delivered=True) + msg.lf
            req = {"action": "maildir", "path": a.target.rstrip("/") + "/",
                   "size_limit": self.size_limit, "hostname": self.hostname,
                   "fail_prefix": "maildir delivery failed: "}
            ok = "delivered to maildir" if a.klass == "mailbox" else "delivered to maildir: %s" % a.target
        else:
            delivered = a.kind == "mailbox" or "file" in self.prepend_delivered
            data = self._headers(msg, r, a, from_line_=True, delivered=delivered) + msg.mbox
            if a.klass == "mailbox":
                prefix = "cannot update mailbox %s for user %s. " % (a.target, privs.user)
                ok = "delivered to mailbox"
            else:
                prefix = "cannot append message to file %s: " % a.target
                ok = "delivered to file: %s" % a.target
            req = {"action": "mbox", "path": a.target, "size_limit": self.size_limit,
                   "stale_lock_time": self.stale_lock_time, "fail_prefix": prefix}
        extra = self._groups(privs)
        if a.klass == "mailbox" and a.kind == "mailbox" and os.path.dirname(a.target) == self.spool.rstrip("/"):
            err = await asyncio.get_running_loop().run_in_executor(
                None, self._prepare_spool, a.target, privs)
            if err:
                return err
            try:
                st = os.stat(self.spool)
                # A group-writable spool (Debian: root:mail 2775): the mail
                # group lets the worker make the dotlock.  Never group 0.
                if (st.st_mode & stat.S_IWGRP and not st.st_mode & stat.S_IWOTH
                        and st.st_gid != 0 and st.st_gid not in extra):
                    extra.append(st.st_gid)
            except OSError:
                pass
        # root's own mailbox is written as root, as Postfix's local(8) does
        # (cron mail to root lands in /var/mail/root); files and commands
        # never run as root.
        res = await self._run_worker(req, data, privs, extra, allow_root=a.klass == "mailbox")
        if res["status"] == "sent":
            return "sent", "2.0.0", ok
        return res["status"], res["dsn"], res["reason"]

    def _prepare_spool(self, path: str, privs) -> tuple[str, str, str] | None:
        """Create a missing spool mailbox as root, owned by the user (Postfix does the same)."""
        try:
            os.makedirs(self.spool, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return None
        except OSError as e:
            return ("deferred", "4.2.0", "cannot update mailbox %s for user %s. cannot create file: %s"
                    % (path, privs.user, e.strerror or e))
        try:
            if os.geteuid() == 0:
                os.fchown(fd, privs.uid, privs.gid)
        finally:
            os.close(fd)
        return None

    @staticmethod
    def _groups(privs) -> list[int]:
        try:
            return [g for g in os.getgrouplist(privs.user, privs.gid) if g != privs.gid]
        except (OSError, KeyError):
            return []

    def _child_ids(self, privs, extra: list[int]) -> dict:
        if os.geteuid() != 0:
            return {}          # tests as an ordinary user: we can only be ourselves
        return {"user": privs.uid, "group": privs.gid, "extra_groups": extra}

    async def _run_worker(self, req: dict, data: bytes, privs, extra: list[int],
                          allow_root: bool = False) -> dict:
        if privs is None or (privs.uid == 0 and not allow_root):
            return {"status": "deferred", "dsn": "4.3.0",
                    "reason": "mail delivery as root is not allowed"}
        try:
            code, out, err = await asyncio.get_running_loop().run_in_executor(
                None, lambda: _spawn([sys.executable, "-I", "-m", "local.worker"],
                                     json.dumps(req).encode() + b"\n" + data, cwd="/",
                                     env={"PATH": "/usr/bin:/bin", "LANG": "C"},
                                     ids=self._child_ids(privs, extra), timeout=None))
        except OSError as e:
            return {"status": "deferred", "dsn": "4.3.0",
                    "reason": "cannot start delivery process: %s" % (e.strerror or e)}
        try:
            res = json.loads(out.decode().splitlines()[-1])
            if res.get("status") in SEVERITY:
                return res
        except (ValueError, IndexError, UnicodeDecodeError):
            pass
        if err:
            log.warning("local worker: %s", _printable(err[-COMMAND_OUTPUT_LIMIT:]))
        return {"status": "deferred", "dsn": "4.3.0",
                "reason": "delivery process failed (exit status %s)" % code}

    async def _command(self, msg: "Message", r: dict, a: Action) -> tuple[str, str, str]:
        privs = a.privs
        if privs is None or privs.uid == 0:
            return "deferred", "4.3.0", "mail delivery as root is not allowed"
        delivered = "command" in self.prepend_delivered
        data = self._headers(msg, r, a, from_line_=True, delivered=delivered) + msg.lf
        local, domain = split_address(a.address)
        user, ext = split_extension(local, self.delimiter)
        env = {k: os.environ[k] for k in self.export_env if k in os.environ}
        env.update({"HOME": privs.home, "LOGNAME": privs.user, "USER": privs.user,
                    "SHELL": privs.shell or "/bin/sh", "PATH": "/usr/bin:/bin",
                    "SENDER": msg.req.get("sender", ""), "RECIPIENT": a.address,
                    "LOCAL": local, "EXTENSION": ext or "", "DOMAIN": domain,
                    "ORIGINAL_RECIPIENT": r.get("orig_address") or r["address"]})
        cwd = privs.home if privs.home and os.path.isdir(privs.home) else "/"
        try:
            status, output, _ = await asyncio.get_running_loop().run_in_executor(
                None, lambda: _spawn(["/bin/sh", "-c", a.target], data, cwd=cwd, env=env,
                                     ids=self._child_ids(privs, self._groups(privs)),
                                     timeout=self.command_time_limit, merge=True))
        except OSError as e:
            return "deferred", "4.3.0", "cannot execute command: %s" % (e.strerror or e)
        if status is None:
            return "deferred", "4.3.0", 'Command time limit exceeded: "%s"' % a.target
        text = _printable(output[:COMMAND_OUTPUT_LIMIT])
        if status == 0:
            return "sent", "2.0.0", "delivered to command: %s" % a.target
        suffix = ". Command output: %s" % text if text else ""
        if status in SYSEXITS:
            st, dsn, what = SYSEXITS[status]
            return st, dsn, what + suffix
        if status < 0:
            return "bounced", "5.3.0", 'Command died with signal %d: "%s"%s' % (-status, a.target, suffix)
        return "bounced", "5.3.0", 'Command died with status %d: "%s"%s' % (status, a.target, suffix)

    async def _forward(self, msg: "Message", r: dict, sender: str | None,
                       acts: list[Action]) -> tuple[str, str, str]:
        sender = msg.req.get("sender", "") if sender is None else sender
        head = b""
        if "forward" in self.prepend_delivered:
            head = ("Delivered-To: %s\r\n" % acts[0].address).encode("utf-8", "surrogateescape")
        orig = r.get("orig_address") or r["address"]
        notify = int(r.get("dsn_notify") or 0)
        enc = "utf-8"
        try:
            ch = await ipc.connect(self.ctx.service_path("cleanup"), protocol="cleanup",
                                   timeout=self.ipc_timeout)
        except (OSError, ipc.ChannelError, asyncio.TimeoutError) as e:
            return "deferred", "4.3.0", "cannot forward: cleanup service unavailable: %s" % (e or "timeout")
        try:
            req_id = ch.next_id()
            reply = await ch.request({"request": "open", "id": req_id, "origin": "local"})
            if reply.get("status") != "ok":
                return "deferred", "4.3.0", "cannot forward: %s" % reply.get("reason", "cleanup refused")
            await ch.send_record(records.REC_FROM, sender.encode(enc, "surrogateescape"))
            for a in acts:
                await ch.send_record(records.REC_RCPT, b"%s\0%s\0%s\0%d" % (
                    a.target.encode(enc, "surrogateescape"), orig.encode(enc, "surrogateescape"),
                    (r.get("dsn_orcpt") or "").encode(enc, "surrogateescape"), notify))
            await ch.send_record(records.REC_MESG, b"")
            data = head + msg.content
            for i in range(0, len(data), records.MAX_BLOCK):
                await ch.send_record(records.REC_BLOCK, data[i:i + records.MAX_BLOCK])
            await ch.send_record(records.REC_XTRA, b"")
            await ch.send_record(records.REC_END, b"")
            result = await ch.recv_attr()
        except (OSError, ipc.ChannelError, asyncio.TimeoutError) as e:
            return "deferred", "4.3.0", "cannot forward: %s" % (e or "timeout")
        finally:
            await ch.close()
        if result.get("status") != "ok":
            st = "bounced" if result.get("status") in ("reject", "toolarge") else "deferred"
            dsn = "5.3.4" if st == "bounced" else "4.3.0"
            return st, dsn, "cannot forward: %s" % result.get("reason", result.get("status"))
        return "sent", "2.0.0", "forwarded as %s" % result.get("queue_id", "")

    async def _pass(self, msg: "Message", r: dict, a: Action) -> dict:
        transport, nexthop = split_transport(a.target)
        req = dict(msg.req)
        req.update({"transport": transport, "nexthop": nexthop or self.hostname,
                    "recipients": [dict(r, address=a.address,
                                        orig_address=r.get("orig_address") or r["address"])]})
        req.pop("id", None)
        path = self.ctx.service_path(transport)
        try:
            ch = await ipc.connect(path, protocol=PROTOCOL, timeout=self.ipc_timeout)
        except (OSError, ipc.ChannelError, asyncio.TimeoutError):
            return self._log(msg.req, r, a.address, msg.handoff, "deferred", "4.3.0",
                             "mail transport unavailable")
        try:
            rid = ch.next_id()
            reply = await ch.request(dict(req, id=rid))
            for res in reply.get("results") or []:
                if isinstance(res, dict) and res.get("offset") == r["offset"]:
                    return res
            raise ipc.ChannelError("no result")
        except (OSError, ipc.ChannelError, asyncio.TimeoutError):
            return self._log(msg.req, r, a.address, msg.handoff, "deferred", "4.3.0",
                             "unknown mail transport error")
        finally:
            await ch.close()

    # -- virtual -----------------------------------------------------------------

    async def _virtual(self, msg: "Message", r: dict) -> dict:
        loop = asyncio.get_running_loop()
        st, dsn, reason = await loop.run_in_executor(None, self._virtual_plan, msg, r)
        if st is None:
            path, privs = dsn, reason
            a = Action("maildir" if path.endswith("/") else "mailbox", r["address"],
                       target=path, privs=privs, klass="mailbox")
            if a.kind == "maildir":
                data = self._headers(msg, r, a, from_line_=False, delivered=True) + msg.lf
                req = {"action": "maildir", "path": path, "size_limit": self.v_limit,
                       "hostname": self.hostname, "fail_prefix": "maildir delivery failed: "}
                ok = "delivered to maildir"
            else:
                data = self._headers(msg, r, a, from_line_=True, delivered=True) + msg.mbox
                req = {"action": "mbox", "path": path, "size_limit": self.v_limit,
                       "stale_lock_time": self.stale_lock_time,
                       "fail_prefix": "cannot update mailbox %s for user %s. " % (path, r["address"])}
                ok = "delivered to mailbox"
            res = await self._run_worker(req, data, privs, [])
            st, dsn, reason = (("sent", "2.0.0", ok) if res["status"] == "sent"
                               else (res["status"], res["dsn"], res["reason"]))
        return self._log(msg.req, r, r["address"], msg.handoff, st, dsn, reason)

    def _virtual_plan(self, msg: "Message", r: dict):
        from local.expand import Privs
        addr = r["address"]
        if addr.lower() in msg.delivered:
            return "bounced", "5.4.6", "mail forwarding loop for %s" % addr
        found = {}
        for name, maps in (("mailbox", self.v_maps), ("uid", self.v_uid), ("gid", self.v_gid)):
            res = find_address(maps, addr, delimiter=self.delimiter) if maps else tables.NOT_FOUND
            if res.status == tables.RETRY:
                return "deferred", "4.3.0", "virtual_%s_maps lookup failure" % (
                    "mailbox" if name == "mailbox" else name)
            if not res.found:
                if name == "mailbox":
                    return "bounced", "5.1.1", 'unknown user: "%s"' % addr.lower()
                return "deferred", "4.3.0", "recipient %s: uid or gid not found in virtual_%s_maps" % (addr, name)
            found[name] = (res.value or "").strip()
        try:
            uid, gid = int(found["uid"]), int(found["gid"])
        except ValueError:
            return "deferred", "4.3.0", "recipient %s: bad uid or gid in virtual_uid_maps/virtual_gid_maps" % addr
        if uid < self.v_min_uid:
            return "deferred", "4.3.0", "recipient %s: bad uid %d in virtual_uid_maps" % (addr, uid)
        path = os.path.join(self.v_base, found["mailbox"].lstrip("/"))
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        return None, path, Privs(uid, gid, user, "/")

    # -- logging -----------------------------------------------------------------

    def _log(self, req: dict, r: dict, to: str, handoff: float, status: str, dsn: str,
             reason: str) -> dict:
        orig = r.get("orig_address") or r["address"]
        log.info("%s", delivery_log.format_delivery(
            req["queue_id"], recipient=to, orig_recipient=orig, relay=self.relay,
            times=delivery_log.DeliveryTimes(
                arrival=req.get("arrival_time", handoff), active=req.get("qmgr_time"),
                handoff=handoff),
            dsn=dsn, status=status, reason=reason, now=time.time()))
        return {"offset": r["offset"], "status": status, "dsn": dsn, "reason": reason,
                "relay": self.relay}


def _spawn(argv: list[str], data: bytes, *, cwd: str, env: dict, ids: dict,
           timeout: float | None, merge: bool = False) -> tuple[int | None, bytes, bytes]:
    """Run a child with other ids (blocking; called in a worker thread).

    subprocess, not asyncio's subprocess support: uvloop's does not take
    user=/group=/extra_groups=/umask=.  Returns (exit status or None on
    timeout, stdout, stderr).  The child gets its own session so that a
    timeout kills the whole command, not only the shell.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                            cwd=cwd, env=env, umask=0o077, start_new_session=True,
                            close_fds=True, **ids)
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return None, b"", b""
    return proc.returncode, out or b"", err or b""


class Message:
    """The message being delivered, in the forms the actions need (made lazily)."""

    def __init__(self, req: dict, content: bytes, handoff: float) -> None:
        self.req = req
        self.content = content
        self.handoff = handoff
        self.delivered = delivered_to(content)
        self._lf: bytes | None = None
        self._mbox: bytes | None = None

    @property
    def lf(self) -> bytes:
        if self._lf is None:
            self._lf = lf(self.content)
        return self._lf

    @property
    def mbox(self) -> bytes:
        if self._mbox is None:
            self._mbox = mbox_quote(self.lf)
        return self._mbox


async def serve(ctx) -> None:
    agent = LocalAgent(ctx, mode="virtual" if ctx.process_name == "virtual" else "local")
    servers = [await ipc.serve(sock, protocol=PROTOCOL, handler=agent.handle)
               for sock in ctx.listeners]
    ctx.ready()
    ctx.exit_when_idle(servers, lambda: agent.active)
    await ctx.stopping.wait()
    for server in servers:
        server.close()
    deadline = time.monotonic() + 30
    while agent.active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


__all__ = ["LocalAgent", "serve", "delivered_to", "SYSEXITS"]
