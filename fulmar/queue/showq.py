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

def _defer_log(queue_dir: str, queue_id: str):
    # bounce.logfile is the owner of the log format; imported lazily so that
    # this module stays importable without the bounce package.
    from bounce import logfile
    try:
        return logfile.read(queue_dir, logfile.LOG_DEFER, queue_id, warn=lambda m: None)
    except (OSError, ValueError):
        return []


def _bounce_reasons(queue_dir: str, queue_id: str) -> dict[str, str]:
    from bounce import logfile
    try:
        entries = logfile.read(queue_dir, logfile.LOG_BOUNCE, queue_id, warn=lambda m: None)
    except (OSError, ValueError):
        return {}
    return {e.address: e.reason for e in entries}


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
    entry = Entry(queue_name, queue_id, int(env.arrival_time), env.message_size,
                  is_force_expired(st.st_mode), show_address(env.sender, empty_address))
    bounces = _bounce_reasons(queue_dir, queue_id) if want_bounce else {}
    seen: set[str] = set()
    orig_of = {r.address: r.orig_address for r in env.recipients}
    for e in _defer_log(queue_dir, queue_id):
        # The logs keep internal (unquoted) addresses: compare external forms.
        shown = show_address(e.address, empty_address)
        if dup_limit == 0 or len(seen) < dup_limit:
            seen.add(shown)
        entry.recipients.append(ShowRecipient(
            shown, e.reason, e.orig_address or orig_of.get(e.address, ""),
            bounces.get(e.address, "")))
    for r in env.recipients:
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


def write_mailq(entries: Iterable[Entry], out: IO[str]) -> tuple[int, int]:
    """Print the listing, flushing after each message; (messages, bytes)."""
    count = size = 0
    for entry in entries:
        if count:
            out.write("\n")
        else:
            out.write(L_STRING_FORMAT % L_HEADINGS)
        out.write(format_message(entry))
        out.flush()
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
    for entry in entries:
        out.write(json.dumps(json_object(entry), ensure_ascii=False) + "\n")
        out.flush()
        count += 1
    return count
