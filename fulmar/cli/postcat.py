"""postcat - show queue file contents, as Postfix's postcat(1).

SYNOPSIS
    postcat [-bdehoqv] [-c config_dir] [files...]

DESCRIPTION
    Prints the named queue files (standard input when none) in Postfix's
    section layout::

        *** ENVELOPE RECORDS incoming/4jccWL4hF4zJ9Wx ***
        message_size:             312             180               1               0             312
        message_arrival_time: Sat Nov 28 10:00:00 2026
        create_time: Sat Nov 28 10:00:00 2026
        named_attribute: client_name=mail.example.org
        sender: a@example.org
        original_recipient: B@example.net
        recipient: b@example.net
        *** MESSAGE CONTENTS incoming/4jccWL4hF4zJ9Wx ***
        Subject: hi
        <blank line>
        body
        *** HEADER EXTRACTED incoming/4jccWL4hF4zJ9Wx ***
        *** MESSAGE FILE END incoming/4jccWL4hF4zJ9Wx ***

    -e envelope, -h header, -b body select sections (default all three);
    -o prefixes each line with its file offset ("%9lu "), -d with the
    decimal record type ("%3d "); -q takes the arguments as queue IDs and
    looks in incoming, active, deferred, hold, maildrop, corrupt and saved
    under queue_directory (from main.cf in -c DIR, $MAIL_CONFIG or
    /etc/postfix); -v also shows the queue file version record.

    message_size shows Postfix's five fields: Fulmar's size record has the
    first four (content size, content offset, recipients, flags) and the
    fifth, Postfix's content length, equals the content size.

DIAGNOSTICS
    Postfix's: "postcat: fatal: open queue file ID: No such file or
    directory", "postcat: fatal: bad mail queue ID: ID" (exit 1);
    "postcat: warning: FILE: input is not a valid queue file" (skipped); a
    damaged record ends the output with "postcat: warning: FILE: reason"
    and "postcat: fatal: record read error" (exit 1).

DEVIATIONS
    main.cf is read only with -q (a file argument needs no configuration).
"""

from __future__ import annotations

import errno
import getopt
import os
import re
import sys
import time
from dataclasses import dataclass

from fulmar import version
from fulmar.queue import layout, qfile, qid
from fulmar.queue import records as rec

PROG = "postcat"
USAGE = ("usage: postcat [-b (body text)] [-c config_dir] [-d (decimal record type)] "
         "[-e (envelope records)] [-h (header text)] [-q (access queue)] [-v] [file(s)...]")
# Where -q looks, in this order.
SEARCH_QUEUES = (
    layout.QUEUE_INCOMING, layout.QUEUE_ACTIVE, layout.QUEUE_DEFERRED, layout.QUEUE_HOLD,
    layout.QUEUE_MAILDROP, layout.QUEUE_CORRUPT, layout.QUEUE_SAVED,
)
# Postfix is_header(): a name of printable non-colon characters, then ':'.
_HEADER_RE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_ENC = ("utf-8", "surrogateescape")

_ENV, _HEADER, _BODY = range(3)


class Fatal(Exception):
    pass


@dataclass
class Options:
    env: bool = False
    header: bool = False
    body: bool = False
    offsets: bool = False
    decimal: bool = False
    verbose: int = 0


def _asctime(seconds: int) -> str:
    return time.asctime(time.localtime(seconds))


class _Printer:
    """The Postfix postcat state machine over Fulmar records."""

    def __init__(self, out, label: str, opts: Options):
        self.out = out
        self.label = label
        self.o = opts
        self.state = _ENV
        self.printing = opts.env
        self.partial = b""         # a content line cut by a block boundary
        self.partial_offset = 0
        self.content_size = 0

    def _prefix(self, offset: int, rtype: bytes) -> bytes:
        p = b""
        if self.o.offsets:
            p += b"%9d " % offset
        if self.o.decimal:
            p += b"%3d " % rtype[0]
        return p

    def _line(self, offset: int, rtype: bytes, text: str) -> None:
        self.out.write(self._prefix(offset, rtype) + text.encode(*_ENC) + b"\n")

    def _marker(self, offset: int, rtype: bytes, text: str) -> None:
        self._line(offset, rtype, f"*** {text} {self.label} ***")

    def record(self, offset: int, rtype: bytes, data: bytes) -> bool:
        """Handle one record; False when nothing more will be printed."""
        if rtype == rec.REC_BLOCK:
            if self.state != _ENV and (self.o.header or self.o.body):
                return self._content(offset + rec.HEADER_LEN, data)
            return True
        if rtype == rec.REC_MESG:
            if self.o.env:
                self._marker(offset, rtype, "MESSAGE CONTENTS")
            self.state = _HEADER
            self.printing = self.o.header
            return True
        if rtype == rec.REC_XTRA:
            self._flush_partial()
            if self.o.env:
                self._marker(offset, rtype, "HEADER EXTRACTED")
            self.state = _ENV
            self.printing = self.o.env
            return self.o.env
        if rtype == rec.REC_END:
            if self.o.env:
                self._marker(offset, rtype, "MESSAGE FILE END")
            return False
        if not self.printing:
            return True
        self._envelope(offset, rtype, data)
        return True

    def _envelope(self, offset: int, rtype: bytes, data: bytes) -> None:
        name = rec.RECORD_NAMES.get(rtype, "unknown_record_type")
        if rtype == rec.REC_SIZE:
            size, off, rcpts, flags = rec.decode_size(data, offset)
            self.content_size = size
            self._line(offset, rtype, f"{name}: {data.decode('ascii')} {size:15d}")
        elif rtype == rec.REC_VERSION:
            if self.o.verbose:
                self._line(offset, rtype, f"{name}: {data.decode(*_ENC)}")
        elif rtype == rec.REC_TIME:
            sec, _ = qfile.decode_time(data, offset)
            self._line(offset, rtype, f"{name}: {_asctime(sec)}")
        elif rtype == rec.REC_ATTR:
            attr, value = qfile.decode_attr(data, offset)
            if attr == qfile.ATTR_CREATE_TIME and value.isdigit():
                self._line(offset, rtype, f"{attr}: {_asctime(int(value))}")
            elif attr == qfile.ATTR_QUEUE_ID:
                # Fulmar's own, like the version record: -v shows it.
                if self.o.verbose:
                    self._line(offset, rtype, f"{name}: {attr}={value}")
            else:
                self._line(offset, rtype, f"{name}: {attr}={value}")
        elif rtype in (rec.REC_RCPT, rec.REC_DONE):
            r = qfile.decode_recipient(data, offset, rtype == rec.REC_DONE)
            # Postfix's order of a recipient's records (cleanup_out_recipient).
            if r.dsn_orcpt:
                self._line(offset, rtype, f"dsn_original_recipient: {r.dsn_orcpt}")
            if r.dsn_notify:
                self._line(offset, rtype, f"dsn_notify_flags: {r.dsn_notify}")
            if r.orig_address:
                self._line(offset, rtype, f"original_recipient: {r.orig_address}")
            self._line(offset, rtype, f"{name}: {r.address}")
        else:
            self._line(offset, rtype, f"{name}: {data.decode(*_ENC)}")

    def _text(self, offset: int, line: bytes) -> bool:
        if line.endswith(b"\r"):
            line = line[:-1]
        if self.state == _HEADER and not (_HEADER_RE.match(line) or line[:1] in (b" ", b"\t")):
            self.state = _BODY
            self.printing = self.o.body
            if not self.printing and not self.o.env:
                return False
        if self.printing:
            self.out.write(self._prefix(offset, rec.REC_BLOCK) + line + b"\n")
        return True

    def _content(self, offset: int, data: bytes) -> bool:
        if self.state == _BODY and not self.printing:
            return True
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if self.partial:
                line, line_off = self.partial + data[start:nl], self.partial_offset
                self.partial = b""
            else:
                line, line_off = data[start:nl], offset + start
            if not self._text(line_off, line):
                return False
            if self.state == _BODY and not self.printing:
                return True
            start = nl + 1
        if start < len(data):
            if not self.partial:
                self.partial_offset = offset + start
            self.partial += data[start:]
        return True

    def _flush_partial(self) -> None:
        if self.partial and self.state != _ENV:
            line, self.partial = self.partial, b""
            self._text(self.partial_offset, line)


def postcat(source, label: str, opts: Options, out) -> None:
    """Print one queue file (path or binary file); Fatal on a damaged record."""
    printer = _Printer(out, label, opts)
    seen = 0
    try:
        for offset, rtype, data in qfile.iter_records(source):
            if seen == 0:
                if rtype != rec.REC_SIZE:
                    raise qfile.CorruptQueueFile(label, "input is not a valid queue file")
                if opts.env:
                    out.write(f"*** ENVELOPE RECORDS {label} ***\n".encode(*_ENC))
            seen += 1
            if not printer.record(offset, rtype, data):
                break
    except (qfile.CorruptQueueFile, rec.CorruptRecord) as e:
        out.flush()
        reason = e.reason if isinstance(e, qfile.CorruptQueueFile) else str(e)
        if seen == 0:
            _warn(f"{label}: input is not a valid queue file")
            return
        _warn(f"{label}: {reason}")
        raise Fatal("record read error") from None


def _warn(text: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {text}\n")


def _queue_setup(config_dir: str | None) -> str:
    """Load main.cf, apply its hashing settings; return queue_directory."""
    from fulmar import config
    try:
        cfg = config.load(config_dir)
    except config.ConfigError as e:
        raise Fatal(str(e)) from None
    layout.configure(cfg)
    return cfg.get("queue_directory")


def _find_in_queue(queue_dir: str, queue_id: str) -> tuple[str, str]:
    """(path, label) of queue_id in the first queue that has it."""
    if not qid.name_ok(queue_id):
        raise Fatal(f"bad mail queue ID: {queue_id}")
    for name in SEARCH_QUEUES:
        path = qfile.path_of(queue_dir, name, queue_id)
        if os.path.isfile(path):
            return path, os.path.relpath(path, queue_dir)
    raise Fatal(f"open queue file {queue_id}: {os.strerror(errno.ENOENT)}")


def _run(argv: list[str], out) -> int:
    try:
        opts_list, args = getopt.getopt(argv, "bc:dehoqv")
    except getopt.GetoptError:
        raise Fatal(USAGE) from None
    opts = Options()
    config_dir = None
    search = False
    for flag, value in opts_list:
        if flag == "-b":
            opts.body = True
        elif flag == "-c":
            config_dir = value
        elif flag == "-d":
            opts.decimal = True
        elif flag == "-e":
            opts.env = True
        elif flag == "-h":
            opts.header = True
        elif flag == "-o":
            opts.offsets = True
        elif flag == "-q":
            search = True
        elif flag == "-v":
            opts.verbose += 1
    if not (opts.env or opts.header or opts.body):
        opts.env = opts.header = opts.body = True

    if not args:
        postcat(sys.stdin.buffer, "stdin", opts, out)
    elif search:
        queue_dir = _queue_setup(config_dir)
        for queue_id in args:
            for attempt in (1, 2):
                path, label = _find_in_queue(queue_dir, queue_id)
                try:
                    postcat(path, label, opts, out)
                    break
                except FileNotFoundError:
                    continue    # moved to another queue meanwhile: look again
                except BrokenPipeError:
                    raise
                except OSError as e:
                    raise Fatal(f"open queue file {queue_id}: {e.strerror}") from None
            else:
                raise Fatal(f"open queue file {queue_id}: {os.strerror(errno.ENOENT)}")
    else:
        for path in args:
            try:
                postcat(path, path, opts, out)
            except BrokenPipeError:
                raise
            except OSError as e:
                raise Fatal(f"open {path}: {e.strerror}") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    version.require_python()
    out = sys.stdout.buffer
    try:
        status = _run(sys.argv[1:] if argv is None else argv, out)
    except Fatal as e:
        out.flush()
        sys.stderr.write(f"{PROG}: fatal: {e}\n")
        return 1
    except BrokenPipeError:
        # The reader went away (postcat | head): no traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
