"""UNIX mbox and Maildir delivery (blocking; run by local.worker as the recipient).

NAME
    local.mailbox -- append a message to an mbox file or a Maildir as local(8)

SYNOPSIS
    deliver_mbox(path, headers, body, size_limit=N)     # headers include the From_ line
    name = deliver_maildir(dir, data, size_limit=N, hostname=H)
    mbox_body(blocks), lf_body(blocks), from_line(sender, now)

DESCRIPTION
    The message is appended in the "From " format Postfix writes:

        From sender@example.org  Sun Nov 29 06:14:14 2026
        Return-Path: <sender@example.org>
        X-Original-To: rcpt (when it differs)
        Delivered-To: rcpt@example.org
        <message with LF line ends, body lines starting "From " quoted ">From ">
        <empty line>

    Locking is Postfix's default for mbox (`mailbox_delivery_lock`
    fcntl + dotlock): a `path.lock` file created with O_EXCL (stale locks
    older than `stale_lock_time` are removed) and an fcntl lock on the mbox.
    A failed write truncates the file back to its old size, so a mailbox is
    never left with half a message. The file is fsync'd before success.

    `mailbox_size_limit` is enforced: a mailbox that would grow beyond it
    fails with MailboxFull (Postfix bounces with 5.2.2).

    A dotlock that cannot be made because the directory is not writable
    for the recipient (EACCES/EPERM/EROFS) is skipped, the fcntl lock still
    applies (Postfix's "dotlock may fail" for unprivileged deliveries).

    Maildir (a path ending in "/", home_mailbox = Maildir/): tmp/, new/ and
    cur/ are created when missing; the message is written to
    tmp/<time>.P<pid>Q<n>.<hostname>, fsync'd, and renamed into new/.
    mailbox_size_limit applies to the one message file, as Postfix does.

DIAGNOSTICS
    Raises OSError (temporary, the caller defers) or MailboxFull.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

LOCK_SUFFIX = ".lock"
LOCK_RETRY_DELAY = 0.05


class MailboxFull(Exception):
    """The mailbox would exceed mailbox_size_limit."""


def from_line(sender: str, now: float) -> bytes:
    return ("From %s  %s\n" % (sender or "MAILER-DAEMON", time.asctime(time.localtime(now)))).encode(
        "utf-8", "surrogateescape")


def mbox_body(blocks) -> bytes:
    """Convert queue content (CRLF lines) to mbox form with From_ quoting."""
    data = b"".join(blocks).replace(b"\r\n", b"\n")
    if data.startswith(b"From "):
        data = b">" + data
    data = data.replace(b"\nFrom ", b"\n>From ")
    if not data.endswith(b"\n"):
        data += b"\n"
    return data + b"\n"


def lf_body(blocks) -> bytes:
    """Queue content (CRLF lines) as LF text, unquoted (Maildir, commands)."""
    data = b"".join(blocks).replace(b"\r\n", b"\n")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def _dotlock(path: str, stale_after: float, deadline: float) -> str | None:
    """Create path.lock; None when the directory does not let us (fcntl still locks)."""
    lock = path + LOCK_SUFFIX
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            return lock
        except FileExistsError:
            pass
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return None
            raise
        try:
            if time.time() - os.stat(lock).st_mtime > stale_after:
                os.unlink(lock)
                continue
        except FileNotFoundError:
            continue
        if time.time() > deadline:
            raise OSError(errno.EAGAIN, "unable to lock for exclusive access")
        time.sleep(LOCK_RETRY_DELAY)


def deliver_mbox(path: str, headers: bytes, body: bytes, *, size_limit: int,
                 uid: int | None = None, gid: int | None = None,
                 stale_lock_time: float = 500, lock_timeout: float = 30) -> None:
    """Append one message (From_ line + headers already in `headers`)."""
    lock = _dotlock(path, stale_lock_time, time.time() + lock_timeout)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if uid is not None and os.geteuid() == 0:
                os.fchown(fd, uid, gid if gid is not None else -1)
            fcntl.lockf(fd, fcntl.LOCK_EX)
            start = os.fstat(fd).st_size
            if size_limit and start + len(headers) + len(body) > size_limit:
                raise MailboxFull("cannot update mailbox %s for user: file too large" % path)
            try:
                data = memoryview(headers + body)
                while data:
                    n = os.write(fd, data)
                    data = data[n:]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
    finally:
        if lock is not None:
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass


_maildir_count = 0


def deliver_maildir(directory: str, data: bytes, *, size_limit: int, hostname: str) -> str:
    """Write one message into a Maildir; returns the file name in new/."""
    global _maildir_count
    if size_limit and len(data) > size_limit:
        raise MailboxFull("message file too large")
    os.makedirs(directory, 0o700, exist_ok=True)
    for sub in ("tmp", "new", "cur"):
        try:
            os.mkdir(os.path.join(directory, sub), 0o700)
        except FileExistsError:
            pass
    _maildir_count += 1
    now = time.time()
    name = "%d.P%dQ%dM%06d.%s" % (now, os.getpid(), _maildir_count, int(now % 1 * 1e6),
                                  hostname.replace("/", "\\057").replace(":", "\\072"))
    tmp = os.path.join(directory, "tmp", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, os.path.join(directory, "new", name))
    except BaseException:
        os.unlink(tmp)
        raise
    return name
