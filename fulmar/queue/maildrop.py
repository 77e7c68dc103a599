"""Maildrop files: the record stream local submission hands to pickup.

NAME
    fulmar.queue.maildrop -- write and read the files in maildrop/

SYNOPSIS
    from fulmar.queue import maildrop
    w = maildrop.StreamWriter(binary_out)       # any writable binary stream
    w.envelope(sender, recipients, attrs, t)     # V T A... S R...  M
    w.content(data)                              # B records (cut at MAX_BLOCK)
    w.finish(extracted_recipients)               # X R... E
    path = maildrop.deliver_direct(queue_dir, chunks)   # dot-file, fsync, link
    for rtype, data in maildrop.read_stream(f, limits): ...   # pickup

DESCRIPTION
    A maildrop file is a stream of queue-file records (fulmar.queue.records:
    type, length, CRC, data), in this order and nothing else:

        V  "fulmar-maildrop 1"
        T  arrival time "%d.%06d"
        A  name=value ...         (full_name, dsn_envid, dsn_ret, smtputf8,
                                   body_type, submit_uid)
        S  sender ("" for <>; unqualified login names allowed)
        R  recipient: address NUL orig_address NUL dsn_orcpt NUL dsn_notify
        M  start of content
        B  content, CRLF line ends, at most MAX_BLOCK bytes each
        X  end of content
        R  recipients extracted from headers (sendmail -t)
        E  end

    Unlike a queue file it has no size record: it is written front to back
    through a pipe (sendmail | postdrop) and read front to back by pickup,
    which hands each record to cleanup as it is read, so that neither side
    holds a message in memory.

    deliver_direct() is the trusted-writer path (root, or everything running
    as one user in development): it writes `maildrop/.<pid>.<n>` with
    O_EXCL, fsyncs it, links it under a queue-ID name and fsyncs the
    directory; a reader never sees a partial file under a queue-ID name.
    The setgid helper `postdrop` (fulmar/postdrop/postdrop.c) does the same
    for unprivileged users.

FAILURE BEHAVIOUR
    read_stream() treats the file as hostile: an unknown record type, a bad
    CRC, a length over the type's limit, records out of order, too many
    recipients or attributes, a missing end record or data after it raise
    BadMaildropFile (str: the reason); it never returns unchecked data and
    never allocates more than one record's maximum.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
TYPE_CHECKING = False          # typing costs ~3 ms of start-up; annotations only
if TYPE_CHECKING:
    from typing import BinaryIO, Iterable, Iterator

from fulmar.queue import qid as _qid
from fulmar.queue import records as rec
from fulmar.queue.records import CorruptRecord

VERSION = b"fulmar-maildrop 1"
MAILDROP = "maildrop"

# Modes: the file is group/world-readable so that pickup (mail_owner) can
# read a file written by root; maildrop/ itself (1730) keeps other users out.
FILE_MODE = 0o644

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_counter = itertools.count()
CREATE_TRIES = 100

# Attributes a submitting user may set; pickup drops anything else.
USER_ATTRS = frozenset({"full_name", "dsn_envid", "dsn_ret", "smtputf8",
                        "body_type", "submit_uid"})


class BadMaildropFile(Exception):
    """A maildrop file that must not be trusted."""


def encode_recipient(address: str, orig: str = "", orcpt: str = "", notify: int = 0) -> bytes:
    return b"\0".join((address.encode("utf-8", "surrogateescape"),
                       orig.encode("utf-8", "surrogateescape"),
                       orcpt.encode("utf-8", "surrogateescape"), b"%d" % notify))


class StreamWriter:
    """Writes the record stream to a binary file object (buffered by it)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pending = bytearray()
        self.size = 0

    def _put(self, rtype: bytes, data: bytes = b"") -> None:
        self.out.write(rec.encode_header(rtype, data))
        if data:
            self.out.write(data)

    def envelope(self, sender: str, recipients: Iterable[bytes], attrs: dict[str, str],
                 t: float | None = None) -> None:
        """V, T, A..., S, R..., M. recipients are encode_recipient() values."""
        sec, usec = _qid.split_time(time.time() if t is None else t)
        self._put(rec.REC_VERSION, VERSION)
        self._put(rec.REC_TIME, b"%d.%06d" % (sec, usec))
        for name, value in attrs.items():
            self._put(rec.REC_ATTR, name.encode("ascii") + b"=" + value.encode("utf-8", "surrogateescape"))
        self._put(rec.REC_FROM, sender.encode("utf-8", "surrogateescape"))
        for r in recipients:
            self._put(rec.REC_RCPT, r)
        self._put(rec.REC_MESG)

    def content(self, data) -> None:
        """Content bytes (CRLF lines); cut into full MAX_BLOCK records."""
        self.size += len(data)
        pending = self.pending
        pending += data
        block = rec.MAX_BLOCK
        if len(pending) < block:
            return
        view = memoryview(pending)
        n = len(pending) - len(pending) % block
        for i in range(0, n, block):
            self._put(rec.REC_BLOCK, bytes(view[i:i + block]))
        view.release()
        del pending[:n]

    def finish(self, extracted: Iterable[bytes] = ()) -> None:
        """Last block, X, extracted recipients, E; flushes the stream."""
        if self.pending:
            self._put(rec.REC_BLOCK, bytes(self.pending))
            self.pending.clear()
        self._put(rec.REC_XTRA)
        for r in extracted:
            self._put(rec.REC_RCPT, r)
        self._put(rec.REC_END)
        self.out.flush()


# ---------------------------------------------------------------- direct write

class DirectFile:
    """A maildrop file being written by a trusted writer (see deliver_direct)."""

    def __init__(self, queue_dir: str) -> None:
        self.dir_path = os.path.join(queue_dir, MAILDROP)
        self.dir_fd = os.open(self.dir_path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        pid = os.getpid()
        for _ in range(CREATE_TRIES):
            self.tmp = f".{pid}.{next(_counter)}"
            try:
                fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
                             | getattr(os, "O_NOFOLLOW", 0), FILE_MODE, dir_fd=self.dir_fd)
                break
            except FileExistsError:
                continue
        else:
            os.close(self.dir_fd)
            raise FileExistsError(errno.EEXIST, "no free temporary file name", self.dir_path)
        os.fchmod(fd, FILE_MODE)       # exact, whatever the umask
        self.file = os.fdopen(fd, "wb", buffering=rec.MAX_BLOCK * 4)
        self.done = False

    def commit(self) -> str:
        """fsync, link to a queue-ID name, fsync the directory; the final path."""
        self.file.flush()
        os.fsync(self.file.fileno())
        st = os.fstat(self.file.fileno())
        self.file.close()
        try:
            for _ in range(CREATE_TRIES):
                sec, usec = divmod(time.time_ns() // 1000, _qid.USEC_PER_SEC)
                name = _qid.from_parts(sec, usec, st.st_ino)
                try:
                    os.link(self.tmp, name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
                    break
                except FileExistsError:
                    continue
            else:
                raise FileExistsError(errno.EEXIST, "no free file name", self.dir_path)
            os.unlink(self.tmp, dir_fd=self.dir_fd)
            os.fsync(self.dir_fd)
        finally:
            self.abort()
        return os.path.join(self.dir_path, name)

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.tmp, dir_fd=self.dir_fd)
        except FileNotFoundError:
            pass
        os.close(self.dir_fd)


# ---------------------------------------------------------------- reading

class Limits:
    """Bounds pickup applies to a hostile file (from main.cf)."""

    __slots__ = ("max_recipients", "max_attrs", "max_content")

    def __init__(self, max_recipients: int = 0,   # 0: none beyond the file size
                 max_attrs: int = 64,
                 max_content: int = 0) -> None:    # message_size_limit; 0: none
        self.max_recipients, self.max_attrs, self.max_content = max_recipients, max_attrs, max_content


_ENVELOPE_ORDER = {
    # state -> record types allowed next
    "start": (rec.REC_VERSION,),
    "version": (rec.REC_TIME,),
    "time": (rec.REC_ATTR, rec.REC_FROM),
    "sender": (rec.REC_RCPT, rec.REC_MESG),
    "content": (rec.REC_BLOCK, rec.REC_XTRA),
    "extracted": (rec.REC_RCPT, rec.REC_END),
}


def read_stream(f: BinaryIO, limits: Limits = Limits()) -> Iterator[tuple[bytes, bytes]]:
    """Yield (rtype, data) for every record, checking order and bounds.

    The last item is (REC_END, b""); BadMaildropFile for anything wrong.
    """
    reader = rec.RecordReader(f, 0)
    state = "start"
    n_rcpt = n_attr = content = 0
    try:
        while True:
            got = reader.read()
            if got is None:
                raise BadMaildropFile("premature end of file (no end record)")
            off, rtype, data = got
            allowed = _ENVELOPE_ORDER[state]
            if rtype not in allowed:
                raise BadMaildropFile("offset %d: unexpected record type %r in state %s"
                                      % (off, rtype.decode("latin-1"), state))
            if rtype == rec.REC_VERSION:
                if data != VERSION:
                    raise BadMaildropFile("unsupported maildrop version %r" % data[:64])
                state = "version"
            elif rtype == rec.REC_TIME:
                state = "time"
            elif rtype == rec.REC_ATTR:
                n_attr += 1
                if n_attr > limits.max_attrs:
                    raise BadMaildropFile("too many attribute records")
            elif rtype == rec.REC_FROM:
                state = "sender"
            elif rtype == rec.REC_RCPT:
                n_rcpt += 1
                if limits.max_recipients and n_rcpt > limits.max_recipients:
                    raise BadMaildropFile("too many recipients")
                if len(data.split(b"\0")) != 4:
                    raise BadMaildropFile("offset %d: malformed recipient record" % off)
            elif rtype == rec.REC_MESG:
                state = "content"
            elif rtype == rec.REC_BLOCK:
                content += len(data)
                if limits.max_content and content > limits.max_content:
                    raise BadMaildropFile("message content larger than %d bytes" % limits.max_content)
            elif rtype == rec.REC_XTRA:
                state = "extracted"
            elif rtype == rec.REC_END:
                if f.read(1):
                    raise BadMaildropFile("data after the end record")
                yield rtype, data
                return
            yield rtype, data
    except CorruptRecord as e:
        raise BadMaildropFile(str(e)) from None
