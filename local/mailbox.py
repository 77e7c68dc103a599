"""UNIX mbox delivery (sans event loop; called in a worker thread).

NAME
    local.mailbox -- append a message to an mbox file as Postfix's local(8)

SYNOPSIS
    deliver_mbox(path, sender, recipient, blocks, uid=None, gid=None, now=None)

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


def _dotlock(path: str, stale_after: float, deadline: float) -> str:
    lock = path + LOCK_SUFFIX
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            return lock
        except FileExistsError:
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
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
