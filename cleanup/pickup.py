"""The pickup daemon: move locally submitted mail from maildrop/ to cleanup.

NAME
    pickup -- Postfix-style local mail pickup

SYNOPSIS
    python -I -m cleanup.pickup -c CONFIG_DIR -s pickup -t unix   (started by master)

DESCRIPTION
    sendmail (directly, or through the setgid helper postdrop) leaves one
    file per message in `maildrop/` (format: fulmar.queue.maildrop) and
    connects to `public/pickup` to say so. pickup scans maildrop/ when it is
    triggered and every SCAN_INTERVAL seconds anyway (Postfix's pickup runs
    with a 60-second wakeup; a lost trigger only delays mail), and also once
    at start, so mail submitted while Fulmar was down goes out after start.

    Each file is fed to cleanup (`private/cleanup`, origin "pickup") record
    by record as it is read; nothing is held in memory but one record.
    The submitting user is the file's owner (the kernel's word, which a user
    cannot forge). A file written by a trusted writer (root, or pickup's own
    user: the queue owner, or the one user of a development setup) may name
    another user in its submit_uid attribute. pickup logs Postfix's
    `QID: uid=N from=<sender>`, qualifies bare login names with
    `@$myorigin` (append_at_myorigin; the unqualified form becomes the
    original recipient, as Postfix's orig_to=), and deletes the maildrop file
    only after cleanup has committed the queue file.

    Every file is hostile. Symbolic links, non-regular files, files with
    more than one link, undecodable or out-of-order records, oversized
    records, a missing end record, trailing data, and a submit_uid that does
    not match an untrusted owner are logged (`warning: maildrop/NAME: ...`)
    and the file is removed; none of them can crash pickup. A message that
    cleanup rejects (reject, toolarge) is logged and removed; tempfail and
    diskfull leave the file for the next scan.

    Dot-files (a writer still busy, or one that crashed) are skipped;
    `postsuper -p` removes stale ones.

XXX file reads are blocking calls on the event loop; pickup does nothing
else, and maildrop files are local.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat

from fulmar import daemon, log
from fulmar.ipc import channel as ipc
from fulmar.queue import layout, maildrop
from fulmar.queue import records as rec

PROTOCOL = "pickup"
CLEANUP_PROTOCOL = "cleanup"
# Seconds between scans without a trigger (Postfix: master.cf wakeup 60;
# shorter here because a trigger from an unprivileged submitter can be lost
# when public/ is not reachable).
SCAN_INTERVAL = 5.0
# Attributes a trusted writer may additionally set.
TRUSTED_ATTRS = maildrop.USER_ATTRS
READ_BUFFER = 4 * rec.MAX_BLOCK

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class BadFile(Exception):
    """The file is hostile or broken: log and remove it."""


class RetryLater(Exception):
    """cleanup is unavailable or asked us to try again: keep the file."""


def qualify(address: str, myorigin: str, enabled: bool) -> str:
    """Append @myorigin to a bare login name (Postfix append_at_myorigin)."""
    if not address or "@" in address or not enabled:
        return address
    return "%s@%s" % (address, myorigin)


class Pickup:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        cfg = ctx.cfg
        self.maildrop = os.path.join(ctx.queue_dir, layout.QUEUE_MAILDROP)
        self.myorigin = cfg.get("myorigin")
        self.append_at_myorigin = cfg.get("append_at_myorigin")
        self.ipc_timeout = cfg.get("ipc_timeout")
        self.limits = maildrop.Limits(max_content=0)
        self.trusted_uids = {0, os.geteuid()}
        self.cleanup: ipc.Channel | None = None
        self.kick = asyncio.Event()

    # -- triggers --------------------------------------------------------------

    async def trigger(self, ch) -> None:
        """A connection on public/pickup is a trigger; its content is ignored."""
        self.kick.set()
        try:
            while (await ch.recv(timeout=self.ipc_timeout)) is not None:
                self.kick.set()
        except ipc.ChannelError:
            pass

    # -- main loop -------------------------------------------------------------

    async def run(self) -> None:
        stop = asyncio.ensure_future(self.ctx.stopping.wait())
        try:
            while not self.ctx.stopping.is_set():
                self.kick.clear()
                await self.scan()
                kick = asyncio.ensure_future(self.kick.wait())
                await asyncio.wait({kick, stop}, timeout=SCAN_INTERVAL,
                                   return_when=asyncio.FIRST_COMPLETED)
                kick.cancel()
        finally:
            stop.cancel()
            if self.cleanup is not None:
                await self.cleanup.close()

    async def scan(self) -> None:
        try:
            with os.scandir(self.maildrop) as it:
                names = [e.name for e in it if not e.name.startswith(".")]
        except OSError as exc:
            log.warning("scan %s: %s", self.maildrop, exc.strerror or exc)
            return
        for name in names:
            if self.ctx.stopping.is_set():
                return
            try:
                await self.pickup_file(name)
            except RetryLater as exc:
                log.warning("maildrop/%s: %s -- will retry", name, exc)
                return

    # -- one file --------------------------------------------------------------

    def _remove(self, name: str) -> None:
        path = os.path.join(self.maildrop, name)
        try:
            os.unlink(path)
        except IsADirectoryError:
            try:
                os.rmdir(path)
            except OSError as exc:
                log.warning("maildrop/%s: cannot remove: %s", name, exc.strerror)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("maildrop/%s: cannot remove: %s", name, exc.strerror)

    def _open(self, name: str):
        """Open a maildrop entry safely; (file, owner uid) or BadFile/None."""
        path = os.path.join(self.maildrop, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadFile("symbolic link") from None
            if exc.errno in (errno.ENXIO, errno.EISDIR):   # socket, dir for O_WRONLY...
                raise BadFile("not a regular file") from None
            raise BadFile("cannot open: %s" % (exc.strerror or exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BadFile("not a regular file")
            if st.st_nlink != 1:
                raise BadFile("file has %d links" % st.st_nlink)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb", buffering=READ_BUFFER), st.st_uid

    async def pickup_file(self, name: str) -> None:
        try:
            opened = self._open(name)
        except BadFile as exc:
            log.warning("maildrop/%s: %s -- removed", name, exc)
            self._remove(name)
            return
        if opened is None:
            return
        f, owner = opened
        with f:
            try:
                done = await self.feed(name, f, owner)
            except BadFile as exc:
                log.warning("maildrop/%s: %s -- removed", name, exc)
                done = True
        if done:
            self._remove(name)

    async def _cleanup(self) -> ipc.Channel:
        if self.cleanup is None or self.cleanup.closed:
            self.cleanup = None
            # docs/internals.md says private/cleanup; Postfix's master.cf (and
            # ours) says `cleanup unix n ...`, i.e. public/cleanup: take
            # whichever master made.
            error = None
            for path in (self.ctx.private_path("cleanup"), self.ctx.public_path("cleanup")):
                if not os.path.exists(path):
                    continue
                try:
                    self.cleanup = await ipc.connect(path, protocol=CLEANUP_PROTOCOL,
                                                     timeout=self.ipc_timeout)
                    break
                except ipc.ChannelError as exc:
                    error = exc
            if self.cleanup is None:
                raise RetryLater(str(error) if error else "cleanup service socket not found")
        return self.cleanup

    def _drop_channel(self) -> None:
        if self.cleanup is not None:
            self.cleanup.abort()
            self.cleanup = None

    async def feed(self, name: str, f, owner: int) -> bool:
        """Stream one file to cleanup. True: remove the file; False: keep it."""
        records = maildrop.read_stream(f, self.limits)
        attrs: dict[str, str] = {}
        sender = None
        try:
            for rtype, data in records:
                if rtype == rec.REC_ATTR:
                    key, sep, value = data.partition(b"=")
                    k = key.decode("ascii", "replace")
                    if sep and k in TRUSTED_ATTRS:
                        attrs[k] = value.decode("utf-8", "surrogateescape")
                    else:
                        log.warning("maildrop/%s: ignoring attribute %.64s", name, k)
                elif rtype == rec.REC_FROM:
                    sender = data.decode("utf-8", "surrogateescape")
                    break
        except maildrop.BadMaildropFile as exc:
            raise BadFile(str(exc)) from None
        if sender is None:
            raise BadFile("no sender record")
        uid = owner
        claimed = attrs.pop("submit_uid", None)
        if claimed is not None:
            if not claimed.isdigit():
                raise BadFile("bad submit_uid %.20r" % claimed)
            if owner in self.trusted_uids:
                uid = int(claimed)
            elif int(claimed) != owner:
                raise BadFile("file owner uid %d does not match submitter uid %s" % (owner, claimed))
        if any(c in sender for c in "\0\r\n"):
            raise BadFile("control character in sender")

        ch = await self._cleanup()
        req = ch.next_id()
        open_attrs = {"request": "open", "id": req, "origin": "pickup",
                      "submit_uid": str(uid), "rewrite_context": "local"}
        try:
            await ch.send_attr(open_attrs)
            reply = await ch.recv(timeout=self.ipc_timeout)
        except ipc.ChannelError as exc:
            self._drop_channel()
            raise RetryLater("cleanup: %s" % exc) from None
        if reply is None or reply.kind != ipc.KIND_ATTR or reply.attrs.get("status") != "ok":
            self._drop_channel()
            raise RetryLater("cleanup refused the message: %s"
                             % (reply.attrs.get("reason", "") if reply is not None and
                                reply.kind == ipc.KIND_ATTR else "protocol error"))
        qid = reply.attrs.get("queue_id", "NOQUEUE")
        log.info("%s: uid=%d from=<%s>", qid, uid, sender)
        try:
            for k, v in attrs.items():
                await ch.send_record(rec.REC_ATTR, k.encode("ascii") + b"=" + v.encode("utf-8", "surrogateescape"))
            await ch.send_record(rec.REC_FROM, qualify(sender, self.myorigin, self.append_at_myorigin)
                                 .encode("utf-8", "surrogateescape"))
            try:
                for rtype, data in records:
                    if rtype == rec.REC_RCPT:
                        data = self._recipient(data)
                    await ch.send_record(rtype, data)
            except (maildrop.BadMaildropFile, BadFile) as exc:
                await ch.send_attr({"request": "abort", "id": req})
                await ch.flush()
                raise BadFile(str(exc)) from None
            result = await ch.recv(timeout=self.ipc_timeout)
        except ipc.ChannelError as exc:
            self._drop_channel()
            raise RetryLater("cleanup: %s" % exc) from None
        if result is None or result.kind != ipc.KIND_ATTR:
            self._drop_channel()
            raise RetryLater("cleanup closed the connection")
        status = result.attrs.get("status")
        if status == "ok":
            return True
        reason = str(result.attrs.get("reason", ""))
        if status in ("reject", "toolarge"):
            log.warning("%s: message rejected by cleanup: %s", qid, reason)
            return True
        raise RetryLater("%s: cleanup: %s %s" % (qid, status, reason))

    def _recipient(self, data: bytes) -> bytes:
        parts = data.split(b"\0")
        address = parts[0].decode("utf-8", "surrogateescape")
        if not address or any(c in address for c in "\r\n"):
            raise BadFile("bad recipient address")
        full = qualify(address, self.myorigin, self.append_at_myorigin)
        if full != address and not parts[1]:
            parts[1] = parts[0]
        parts[0] = full.encode("utf-8", "surrogateescape")
        return b"\0".join(parts)


async def serve(ctx) -> None:
    pickup = Pickup(ctx)
    servers = [await ipc.serve(sock, protocol=PROTOCOL, handler=pickup.trigger,
                               log_name="public/pickup", timeout=pickup.ipc_timeout)
               for sock in ctx.listeners]
    ctx.ready()
    try:
        await pickup.run()
    finally:
        for server in servers:
            server.abort()


def main() -> None:
    daemon.main("pickup", serve)


if __name__ == "__main__":
    main()
