"""Per-message delivery status logs: defer/QID, bounce/QID, trace/QID.

NAME
    bounce.logfile -- read and write the per-recipient logs the bounce
    daemon keeps for each queued message

SYNOPSIS
    LOG_BOUNCE, LOG_DEFER, LOG_TRACE = "bounce", "defer", "trace"
    log_path(queue_dir, log_name, queue_id) -> str
    append(queue_dir, log_name, queue_id, entries: Iterable[RecipientStatus]) -> None
    replace_all(queue_dir, log_name, queue_id, entries) -> None
    read(queue_dir, log_name, queue_id, *, missing_ok=True, warn=None) -> list[RecipientStatus]
    remove(queue_dir, log_name, queue_id) -> bool
    format_entry(entry) -> bytes          parse_log(data, *, warn=None, where="") -> list

DESCRIPTION
    A log is a sequence of entries, one per recipient and event, each a
    block of `name=value` lines ended by one empty line, as Postfix's
    bounce logs (bounce_log.c).  Names are Postfix's attribute names:

        recipient=bob@example.net
        original_recipient=bob@example.net
        dsn_orig_rcpt=rfc822;bob@example.net
        notify_flags=8
        offset=1234
        status=5.1.1
        action=failed
        reason=host mx.example.net[192.0.2.7] said: 550 5.1.1 ...
        mta_type=dns
        mta_mname=mx.example.net
        diag_type=smtp
        diag_text=550 5.1.1 ...
        log_time=1764398275.123456

    Values are escaped so that an entry stays one line per field:
    backslash as `\\\\`, LF `\\n`, CR `\\r`, other control characters
    `\\xHH`.  The file is UTF-8 (undecodable bytes survive as surrogate
    escapes).  `mailq` reads the delay reason (`reason=`) from defer/QID
    with read() or parse_log().

    Paths are hashed like the queues (fulmar.queue.layout.queue_subdir):
    defer/ is in hash_queue_names by default, so its logs live in
    defer/H/QID (H = first hex digit of the queue ID's microseconds).
    The daemon calls layout.configure(cfg) once so that hash_queue_names
    and hash_queue_depth from main.cf apply.

    append() writes all its entries with one write(2) on an O_APPEND
    descriptor and fsyncs (and, for bounce/ and trace/, fsyncs the
    directory when it created the file; a defer log lost in a crash
    costs only a delay reason, rewritten at the next attempt): a crash
    leaves at worst an unterminated last entry, which read() drops.  replace_all() writes a dot-file, fsyncs, renames it over
    the log and fsyncs the directory.  All functions block: call them
    from a worker thread in a daemon.

FAILURE BEHAVIOUR
    Reading never fails on content: a malformed entry (a line without
    `=`, a bad escape, no recipient, a non-numeric number, an entry cut
    off by a crash) is skipped with one warning naming the file; unknown
    attribute names are ignored with a warning, as Postfix does.
    OSError from the file system propagates.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable

from fulmar import log
from fulmar.queue import layout
from fulmar.smtp.dsn import RecipientStatus, notify_ok

LOG_BOUNCE = layout.QUEUE_BOUNCE
LOG_DEFER = layout.QUEUE_DEFER
LOG_TRACE = layout.QUEUE_TRACE
LOG_NAMES = (LOG_BOUNCE, LOG_DEFER, LOG_TRACE)

# Postfix attribute names (mail_proto.h) <-> RecipientStatus fields.
ATTR_RECIPIENT = "recipient"
_FIELDS = (
    (ATTR_RECIPIENT, "address", str),
    ("original_recipient", "orig_address", str),
    ("dsn_orig_rcpt", "dsn_orcpt", str),
    ("notify_flags", "dsn_notify", int),
    ("offset", "offset", int),
    ("status", "status", str),
    ("action", "action", str),
    ("reason", "reason", str),
    ("mta_type", "mta_type", str),
    ("mta_mname", "mta_name", str),
    ("diag_type", "diag_type", str),
    ("diag_text", "diag_text", str),
    ("log_time", "time", float),
)
_BY_NAME = {name: (attr, kind) for name, attr, kind in _FIELDS}

LOG_FILE_MODE = 0o600

Warn = Callable[[str], None]


def _default_warn(message: str) -> None:
    log.warning("%s", message)


# --------------------------------------------------------------------------
# Paths

def log_path(queue_dir: str, log_name: str, queue_id: str) -> str:
    if log_name not in LOG_NAMES:
        raise ValueError("unknown log name: %r" % log_name)
    if not queue_id or "/" in queue_id or queue_id.startswith("."):
        raise ValueError("bad queue ID: %r" % queue_id)
    return os.path.join(queue_dir, layout.queue_subdir(log_name, queue_id), queue_id)


# --------------------------------------------------------------------------
# Encoding

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f\x7f\\]")
_UNESCAPE = re.compile(r"\\(\\|n|r|x[0-9A-Fa-f]{2}|.|$)", re.S)


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    return _ESCAPES.get(c) or "\\x%02x" % ord(c)


def escape(value: str) -> str:
    return _NEEDS_ESCAPE.sub(_escape_char, value)


def unescape(text: str) -> str:
    """Undo escape(); ValueError on a malformed escape."""
    if "\\" not in text:
        return text               # the common case: nothing escaped
    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code == "\\":
            return "\\"
        if code == "n":
            return "\n"
        if code == "r":
            return "\r"
        if len(code) == 3 and code[0] == "x":
            return chr(int(code[1:], 16))
        raise ValueError("bad escape")
    return _UNESCAPE.sub(one, text)


def format_entry(entry: RecipientStatus) -> bytes:
    lines = []
    for name, attr, kind in _FIELDS:
        value = getattr(entry, attr)
        if kind is str:
            if value or name == ATTR_RECIPIENT:
                lines.append("%s=%s\n" % (name, escape(value)))
        elif kind is int:
            if value:
                lines.append("%s=%d\n" % (name, value))
        elif value:
            lines.append("%s=%.6f\n" % (name, value))
    lines.append("\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def parse_log(data: bytes, *, warn: Warn | None = None, where: str = "") -> list[RecipientStatus]:
    """All well-formed entries of a log's bytes; bad ones are skipped with a warning."""
    if warn is None:
        warn = _default_warn
    text = data.decode("utf-8", "surrogateescape")
    entries: list[RecipientStatus] = []
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines.pop()                      # the empty string after the last LF
    block: list[str] = []
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if line == "":
            if block:
                entry = _parse_entry(block, warn, where)
                if entry is not None:
                    entries.append(entry)
                block = []
            continue
        block.append(line)
        if last:
            # No blank line after it: an append cut short by a crash.
            warn("%s: incomplete entry at end of log, ignored" % (where or "log"))
    return entries


def _parse_entry(lines: list[str], warn: Warn, where: str) -> RecipientStatus | None:
    values: dict[str, object] = {}
    for line in lines:
        name, sep, raw = line.partition("=")
        if not sep or not name:
            warn("%s: malformed record: %.30s..." % (where or "log", _printable(line)))
            return None
        target = _BY_NAME.get(name)
        if target is None:
            warn("%s: unknown attribute name: %s, ignored" % (where or "log", _printable(name)))
            continue
        attr, kind = target
        try:
            value = unescape(raw)
            if kind is int:
                values[attr] = int(value, 10)
            elif kind is float:
                values[attr] = float(value)
            else:
                values[attr] = value
        except ValueError:
            warn("%s: malformed %s value, entry skipped" % (where or "log", name))
            return None
    if not values.get("address"):
        warn("%s: entry without recipient, skipped" % (where or "log"))
        return None
    notify = values.get("dsn_notify", 0)
    if not isinstance(notify, int) or not notify_ok(notify) or notify < 0:
        values["dsn_notify"] = 0
    offset = values.get("offset", 0)
    if not isinstance(offset, int) or offset < 0:
        values["offset"] = 0
    return RecipientStatus(**values)  # type: ignore[arg-type]


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)


# --------------------------------------------------------------------------
# File operations (blocking)

def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(queue_dir: str, log_name: str, queue_id: str,
           entries: Iterable[RecipientStatus]) -> None:
    """Append entries to the log with one write and fsync."""
    data = b"".join(format_entry(e) for e in entries)
    if not data:
        return
    path = log_path(queue_dir, log_name, queue_id)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    # A new bounce or trace log's name is made durable: its recipients are
    # done in the queue file, and the log is all that is left of them.  A
    # defer log is not: its message stays queued, and the next attempt
    # writes the reason again; one directory fsync per first deferral
    # halved the rate at which qmgr could defer (Postfix fsyncs none).
    if created and log_name != LOG_DEFER:
        _fsync_dir(directory)


def replace_all(queue_dir: str, log_name: str, queue_id: str,
                entries: Iterable[RecipientStatus]) -> None:
    """Replace the log atomically (dot-file, fsync, rename, directory fsync)."""
    path = log_path(queue_dir, log_name, queue_id)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.%d.tmp" % (queue_id, os.getpid()))
    data = b"".join(format_entry(e) for e in entries)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, LOG_FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def read(queue_dir: str, log_name: str, queue_id: str, *, missing_ok: bool = True,
         warn: Warn | None = None) -> list[RecipientStatus]:
    """Entries of a log in order; [] for a missing log unless missing_ok is false."""
    path = log_path(queue_dir, log_name, queue_id)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    return parse_log(data, warn=warn, where=path)


def remove(queue_dir: str, log_name: str, queue_id: str) -> bool:
    """Delete a log; False when it did not exist."""
    try:
        os.unlink(log_path(queue_dir, log_name, queue_id))
    except FileNotFoundError:
        return False
    return True
