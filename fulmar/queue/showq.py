"""Queue listing: what mailq, postqueue -p/-j and qshape show (Postfix showq).

NAME
    fulmar.queue.showq -- walk the queue and render it as Postfix does

SYNOPSIS
    from fulmar.queue import showq
    for entry in showq.scan_queue(queue_dir, empty_address="MAILER-DAEMON"): ...
    showq.write_mailq(entries, out)          # postqueue -p text, streamed
    showq.write_json(entries, out)           # postqueue -j, one object per line
    showq.is_force_expired(st_mode) -> bool; FORCE_EXPIRE_BIT

DESCRIPTION
    scan_queue() walks the queues in Postfix showq's order (maildrop,
    active, incoming, deferred, hold), each in directory order, without
    sorting and without holding more than one message at a time: the first
    line is printed before the rest of the queue is read and memory stays
    flat however large the queue is.

    For each message (an Entry) it reports the queue, ID, arrival time
    (seconds), message size (the size record's content size; the file size
    for maildrop files), whether it is force-expired, the sender (<> shown
    as $empty_address_recipient, local part quoted as RFC 5321 wants,
    unprintable characters as "?"), and the recipients: first those in the
    message's defer log, each with its delay reason (bounce.logfile), then
    the still pending recipients of the queue file not already listed
    (Postfix's duplicate filter, bounded by duplicate_filter_limit), with
    an empty reason.

    Force-expire (postsuper -e/-f) is Postfix's mechanism: the group execute
    bit (S_IXGRP, Postfix MAIL_QUEUE_STAT_EXPIRE) of the queue file's mode.
    qmgr must bounce a file with that bit at its next delivery attempt.

    write_mailq() is Postfix's showq_compat(): long-ID layout
    `%-17s %8ld %19.19s %s`, `*` after the ID in active/, `!` in hold/, `#`
    when force-expired, the reason line `(reason)` right-aligned so that it
    ends in column 78 (no padding when longer) and printed only when it
    differs from the previous recipient's ("reason unavailable" when a
    recipient has none after one that had), recipients indented, one blank
    line between messages, `-- N Kbytes in M Request(s).` or
    `Mail queue is empty`.

    write_json() is Postfix 3.11's showq_json(): queue_name, queue_id,
    arrival_time, message_size, forced_expire, sender, recipients[] with
    address, orig_address (when known), delay_reason (when deferred) and
    bounce_reason (when a bounce log entry exists).

    Speed (a listing of 10,000 messages should not take seconds): each
    queue file is opened once (fstat gives the mode and size, one pread
    the envelope and, for a small file, the extracted recipients too) and
    its records are walked without checking their CRCs: the listing only
    displays, and qmgr verifies every file it delivers (a corrupt one goes
    to corrupt/).  Anything else that does not parse falls back to
    qfile.read_envelope, so a corrupt file gets the same warning as ever.
    The defer log is read whole (one entry per recipient: qmgr removes it
    at each activation) by bounce.logfile.

FAILURE BEHAVIOUR
    A file that vanishes while being read (delivered meanwhile) is skipped
    silently; a file that cannot be parsed is skipped with a warning
    (qmgr moves it to corrupt/), as Postfix's showq does.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import IO, Iterable, Iterator

from fulmar import log
from fulmar.queue import layout, maildrop, qfile
from fulmar.queue import records as rec
from fulmar.smtp.address import external_form

# Postfix showq's queue order.
SHOW_QUEUES = (layout.QUEUE_MAILDROP, layout.QUEUE_ACTIVE, layout.QUEUE_INCOMING,
               layout.QUEUE_DEFERRED, layout.QUEUE_HOLD)
FORCE_EXPIRE_BIT = stat.S_IXGRP          # Postfix MAIL_QUEUE_STAT_EXPIRE

# showq_compat.c formats (long queue IDs; Fulmar has no short ones).
L_STRING_FORMAT = "%-17s %8s %-19s %s\n"
L_SENDER_FORMAT = "%-17s %8d %19.19s %s\n"
L_HEADINGS = ("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")
REASON_COLUMN = 76                       # "(reason)" ends in column 78
KBYTE = 1024

STATUS_MARK = {layout.QUEUE_ACTIVE: "*", layout.QUEUE_HOLD: "!"}
EXPIRED_MARK = "#"


def is_force_expired(st_mode: int) -> bool:
    return bool(st_mode & FORCE_EXPIRE_BIT)


@dataclass(slots=True)
class ShowRecipient:
    address: str
    reason: str = ""
    orig_address: str = ""
    bounce_reason: str = ""


@dataclass(slots=True)
class Entry:
    queue_name: str
    queue_id: str
    arrival_time: int
    message_size: int
    forced_expire: bool
    sender: str
    recipients: list[ShowRecipient] = field(default_factory=list)


def printable(text: str) -> str:
    """Postfix printable(): every non-printable character becomes '?'."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def show_address(addr: str, empty_address: str) -> str:
    return printable(external_form(addr)) if addr else empty_address


# ---------------------------------------------------------------- scanning

# A defer log holds one short entry per recipient: one read gets it all.
LOG_READ = 64 * 1024

# The listing is flushed after the first message, then at most this often
# (and whenever the output buffer fills): a flush per message is a write(2)
# per message, a quarter of the time of `mailq | grep` on a large queue.
FLUSH_INTERVAL = 0.2


def _ignore(message: str) -> None:
    pass


def _read_log(queue_dir: str, log_name: str, queue_id: str):
    # bounce.logfile is the owner of the log format; imported lazily so that
    # this module stays importable without the bounce package.  The file is
    # read with os.open/os.read, not logfile.read's buffered open(): this
    # runs once per message of the listing, mostly on a missing file.
    from bounce import logfile
    try:
        fd = os.open(logfile.log_path(queue_dir, log_name, queue_id),
                     os.O_RDONLY | _O_CLOEXEC)
    except (OSError, ValueError):
        return []
    try:
        data = os.read(fd, LOG_READ)
        if len(data) == LOG_READ:
            # A log longer than one read (a message with many recipients).
            # A short read is the end of a regular file: no second read to
            # be told so, which is a system call per listed message.
            chunks = [data]
            while chunk := os.read(fd, LOG_READ):
                chunks.append(chunk)
            data = b"".join(chunks)
    except OSError:
        return []
    finally:
        os.close(fd)
    return logfile.parse_log(data, warn=_ignore)


def _defer_log(queue_dir: str, queue_id: str):
    from bounce import logfile
    return _read_log(queue_dir, logfile.LOG_DEFER, queue_id)


def _bounce_reasons(queue_dir: str, queue_id: str) -> dict[str, str]:
    from bounce import logfile
    return {e.address: e.reason for e in _read_log(queue_dir, logfile.LOG_BOUNCE, queue_id)}


_HEADER_UNPACK = rec.HEADER.unpack_from
_HEADER_LEN = rec.HEADER_LEN
_T_RCPT, _T_DONE, _T_TIME, _T_FROM = rec.REC_RCPT, rec.REC_DONE, rec.REC_TIME, rec.REC_FROM
_T_VERSION, _T_ATTR = rec.REC_VERSION, rec.REC_ATTR
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _listing_envelope(fd: int, file_size: int) -> tuple[int, str, int, list]:
    """(arrival seconds, sender, content size, recipients) for display.

    No CRC checks (module docstring); rec.CorruptRecord for anything
    unexpected, including an envelope larger than one read, which the
    caller then reads the checked way."""
    head = os.pread(fd, qfile.ENVELOPE_READ, 0)
    if len(head) < rec.SIZE_RECORD_LEN:
        raise rec.CorruptRecord(0, "short file")
    rtype, length, _crc = _HEADER_UNPACK(head, 0)
    if rtype != rec.REC_SIZE or length != rec.SIZE_DATA_LEN:
        raise rec.CorruptRecord(0, "no size record")
    content_size, content_offset, rcpt_count, _flags = rec.decode_size(
        head[_HEADER_LEN:rec.SIZE_RECORD_LEN])
    x_off = qfile.extracted_offset(content_offset, content_size)
    if content_offset > len(head) or x_off + 2 * _HEADER_LEN > file_size:
        raise rec.CorruptRecord(0, "envelope not in the first read")
    arrival = sender = None
    rcpts = []
    off = rec.SIZE_RECORD_LEN
    while off < content_offset:
        rtype, length, _crc = _HEADER_UNPACK(head, off)
        start = off + _HEADER_LEN
        end = start + length
        if end > content_offset:
            raise rec.CorruptRecord(off, "record crosses the content")
        if rtype == _T_RCPT or rtype == _T_DONE:
            rcpts.append(qfile.decode_recipient(head[start:end], off, rtype == _T_DONE))
        elif rtype == _T_TIME:
            if arrival is None:
                arrival = qfile.decode_time(head[start:end], off)[0]
        elif rtype == _T_FROM:
            if sender is None:
                sender = head[start:end].decode("utf-8", "surrogateescape")
        elif rtype == _T_VERSION:
            if head[start:end] != rec.VERSION:
                raise rec.CorruptRecord(off, "queue file version")
        elif rtype != _T_ATTR:
            raise rec.CorruptRecord(off, "unexpected record")
        off = end
    if off != content_offset or arrival is None or sender is None:
        raise rec.CorruptRecord(off, "incomplete envelope")
    if file_size <= len(head):
        tail = head[x_off:file_size]
    else:
        tail = os.pread(fd, file_size - x_off, x_off)
    if len(tail) != file_size - x_off or tail[:1] != rec.REC_XTRA:
        raise rec.CorruptRecord(x_off, "no extracted record")
    off = _HEADER_LEN
    while True:
        if off + _HEADER_LEN > len(tail):
            raise rec.CorruptRecord(x_off + off, "no end record")
        rtype, length, _crc = _HEADER_UNPACK(tail, off)
        start = off + _HEADER_LEN
        end = start + length
        if rtype == rec.REC_END:
            if end != len(tail):
                raise rec.CorruptRecord(x_off + off, "data after the end record")
            break
        if (rtype != _T_RCPT and rtype != _T_DONE) or end > len(tail):
            raise rec.CorruptRecord(x_off + off, "unexpected record after content")
        rcpts.append(qfile.decode_recipient(tail[start:end], x_off + off, rtype == _T_DONE))
        off = end
    if len(rcpts) != rcpt_count:
        raise rec.CorruptRecord(0, "recipient count")
    return arrival, sender, content_size, rcpts


def _open_listing(path: str):
    """(st_mode, arrival, sender, size, recipients), or None: use the checked path."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        return (st.st_mode, *_listing_envelope(fd, st.st_size))
    except (OSError, ValueError, rec.CorruptRecord, qfile.CorruptQueueFile):
        return None
    finally:
        os.close(fd)


def _maildrop_entry(path: str, queue_id: str, st: os.stat_result, empty_address: str) -> Entry | None:
    """The envelope of a maildrop file (sender, recipients), never its content."""
    sender = None
    arrival = int(st.st_mtime)
    rcpts: list[ShowRecipient] = []
    try:
        with open(path, "rb") as f:
            for rtype, data in maildrop.read_stream(f):
                if rtype == rec.REC_TIME:
                    arrival = int(data.split(b".")[0] or b"0")
                elif rtype == rec.REC_FROM:
                    sender = data.decode("utf-8", "surrogateescape")
                elif rtype == rec.REC_RCPT:
                    addr = data.split(b"\0")[0].decode("utf-8", "surrogateescape")
                    rcpts.append(ShowRecipient(show_address(addr, empty_address)))
                elif rtype == rec.REC_MESG:
                    break
    except (OSError, maildrop.BadMaildropFile, ValueError):
        return None
    if sender is None:
        return None
    return Entry(layout.QUEUE_MAILDROP, queue_id, arrival, st.st_size,
                 is_force_expired(st.st_mode), show_address(sender, empty_address), rcpts)


def read_entry(queue_dir: str, queue_name: str, queue_id: str, path: str,
               empty_address: str = "MAILER-DAEMON", dup_limit: int = 1000,
               want_bounce: bool = False) -> Entry | None:
    """One message as showq reports it; None when gone or unreadable."""
    fast = None if queue_name == layout.QUEUE_MAILDROP else _open_listing(path)
    if fast is not None:
        mode, arrival, sender, size, recipients = fast
    else:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if queue_name == layout.QUEUE_MAILDROP:
            return _maildrop_entry(path, queue_id, st, empty_address)
        try:
            env = qfile.read_envelope(path)
        except FileNotFoundError:
            return None
        except (qfile.CorruptQueueFile, OSError) as exc:
            log.warning("%s: %s", queue_id, exc)
            return None
        mode, arrival, sender = st.st_mode, int(env.arrival_time), env.sender
        size, recipients = env.message_size, env.recipients
    entry = Entry(queue_name, queue_id, arrival, size,
                  is_force_expired(mode), show_address(sender, empty_address))
    bounces = _bounce_reasons(queue_dir, queue_id) if want_bounce else {}
    seen: set[str] = set()
    orig_of = {r.address: r.orig_address for r in recipients}
    for e in _defer_log(queue_dir, queue_id):
        # The logs keep internal (unquoted) addresses: compare external forms.
        shown = show_address(e.address, empty_address)
        if dup_limit == 0 or len(seen) < dup_limit:
            seen.add(shown)
        entry.recipients.append(ShowRecipient(
            shown, e.reason, e.orig_address or orig_of.get(e.address, ""),
            bounces.get(e.address, "")))
    for r in recipients:
        if r.done:
            continue
        shown = show_address(r.address, empty_address)
        if shown in seen:
            continue
        entry.recipients.append(ShowRecipient(shown, "", r.orig_address,
                                              bounces.get(r.address, "")))
    return entry


def scan_queue(queue_dir: str, queues: Iterable[str] = SHOW_QUEUES,
               empty_address: str = "MAILER-DAEMON", dup_limit: int = 1000,
               want_bounce: bool = False) -> Iterator[Entry]:
    """Every message in Postfix showq order, one at a time (streaming)."""
    for queue_name in queues:
        try:
            files = qfile.scan(queue_dir, queue_name)
            for queue_id, path in files:
                entry = read_entry(queue_dir, queue_name, queue_id, path,
                                   empty_address, dup_limit, want_bounce)
                if entry is not None:
                    yield entry
        except FileNotFoundError:
            continue


# ---------------------------------------------------------------- rendering

def _asctime(t: int) -> str:
    return time.asctime(time.localtime(t))


def format_message(entry: Entry) -> str:
    """One message block of the mailq listing (without the separating blank line)."""
    ident = entry.queue_id + STATUS_MARK.get(entry.queue_name, "")
    if entry.forced_expire:
        ident += EXPIRED_MARK
    out = [L_SENDER_FORMAT % (ident, entry.message_size, _asctime(entry.arrival_time), entry.sender)]
    saved = ""
    for r in entry.recipients:
        if r.reason != saved:
            saved = r.reason
            show = saved or "reason unavailable"
            out.append("%*s(%s)\n" % (max(REASON_COLUMN - len(show), 0), "", show))
        out.append(L_STRING_FORMAT % ("", "", "", r.address))
    return "".join(out)


class _Flusher:
    """Flush out after the first message, then every FLUSH_INTERVAL seconds.

    So the first lines show at once and a slow listing (a cold cache, a
    queue on a busy disk) still shows its progress, without a write(2) for
    every message of a fast one."""

    __slots__ = ("out", "due")

    def __init__(self, out: IO[str]):
        self.out = out
        self.due = 0.0          # the first message is flushed at once

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self.due:
            self.out.flush()
            self.due = now + FLUSH_INTERVAL


def write_mailq(entries: Iterable[Entry], out: IO[str]) -> tuple[int, int]:
    """Print the listing, streamed (_Flusher); (messages, bytes)."""
    count = size = 0
    flush = _Flusher(out)
    for entry in entries:
        if count:
            out.write("\n")
        else:
            out.write(L_STRING_FORMAT % L_HEADINGS)
        out.write(format_message(entry))
        flush()
        count += 1
        size += entry.message_size
    if count == 0:
        out.write("Mail queue is empty\n")
    else:
        out.write("\n-- %d Kbytes in %d Request%s.\n" % (size // KBYTE, count, "" if count == 1 else "s"))
    out.flush()
    return count, size


def json_object(entry: Entry) -> dict:
    rcpts = []
    for r in entry.recipients:
        item = {"address": r.address}
        if r.orig_address and r.orig_address != r.address:
            item["orig_address"] = r.orig_address
        if r.reason:
            item["delay_reason"] = r.reason
        if r.bounce_reason:
            item["bounce_reason"] = r.bounce_reason
        rcpts.append(item)
    return {"queue_name": entry.queue_name, "queue_id": entry.queue_id,
            "arrival_time": entry.arrival_time, "message_size": entry.message_size,
            "forced_expire": entry.forced_expire, "sender": entry.sender,
            "recipients": rcpts}


def write_json(entries: Iterable[Entry], out: IO[str]) -> int:
    count = 0
    flush = _Flusher(out)
    for entry in entries:
        out.write(json.dumps(json_object(entry), ensure_ascii=False) + "\n")
        flush()
        count += 1
    out.flush()
    return count
