"""All queue-file I/O: the only module that creates, reads, changes, moves
or deletes queue files.

File format (records.py has the record codec)::

    C  size: content_size content_offset recipient_count flags (fixed width)
    V  version "fulmar-queue 1"
    T  arrival time "%d.%06d"
    A  create_time=<seconds>   (written by QueueWriter unless the caller set it)
    A  name=value ...
    S  sender
    R  recipient ...            (D once delivered)
    M  start of content         <- content_offset
    B  content blocks: every block but the last holds exactly MAX_BLOCK bytes
    X  end of content
    R  recipients extracted from headers ...
    E  end (the last record; nothing follows it)

``content_size`` is the number of content bytes.  Because the blocking is
canonical, the offset of ``X`` follows from the size record alone
(content_offset + 9 + content_size + 9 * number_of_blocks), so
``read_envelope`` reads the envelope, jumps over the content and reads the
extracted recipients and the end record without touching the body.

Commit protocol (QueueWriter), Postfix's: ``create()`` makes
``incoming/.<pid>.<n>`` with O_EXCL and mode 0600; its inode and the
current time make the queue ID; it is linked to ``incoming/QID`` at once
(link, not rename: an existing file of that name is never replaced;
FileExistsError instead), the dot-file unlinked and the directory
fsync()ed, so the name is durable before any content is written.  Records
are buffered and written in large chunks; ``commit()`` appends the end
record, writes the real size record over the placeholder at offset 0,
sets the owner-execute bit (mode 0700: *ready*, Postfix's
MAIL_QUEUE_STAT_READY) and fsync()s the file (``commit(ready)`` calls
``ready()`` between the two: the file is complete, and cleanup wakes qmgr
there).  Only after the fsync may anyone say "queued".  Readers skip
files in incoming/ that are not ready (``scan``); cleanup is the only
writer, and writes only there.  A crash leaves a not-ready file (or a
dot-file), which every reader ignores and postsuper -p removes once it is
an hour old, or a ready file that no client was told about (delivered
anyway: a possible duplicate, never a loss).  The directory fsync at
create is off the path to the client's 250: cleanup creates the next
message's file ahead of time.

Inode recycling (Fulmar's, on ext2/3/4 without a journal only: see
fsinfo): qmgr disposes of a delivered file with ``Recycler.give()``
instead of ``remove()``: it is renamed into recycle/, and
``create(reuse=True)`` first claims one from there (renamed to its
dot-file name, made not ready, its mtime set) before it makes a new one,
so that the file system neither frees nor allocates an inode per
message.  On ext4 without a journal an allocation under load scans every
inode of the group freed in the last minute (recently_deleted()), 0.3-0.6
ms of kernel CPU per message here (docs/performance.md, item 54).  The
queue ID still comes from the inode and the time read while the file holds
it, so IDs stay unique among existing files; an inode's IDs differ in
their time, as when the file system reuses an inode.

A recycled file of at most RECYCLE_KEEP bytes keeps its blocks too: the
next message is written over the old one's bytes, and seal() cuts the
file to the new length, so that no data block is freed or allocated
either (docs/performance.md, item 62).  The old bytes stay only in
recycle/ (0700) and in a not-ready file in incoming/, which no reader
takes.  Nor do they ever read as a message under the new name, even
after a crash that put the new file's ready bit and length on disk but
not its bytes (ext4 without a journal orders nothing): every file names
its queue ID in an attribute, which read_envelope() checks
(ATTR_QUEUE_ID).

Interface::

    w = QueueWriter.create(queue_dir, queue_name="incoming")   # w.queue_id, w.path
    QueueWriter.create_many(queue_dir, n) -> [w, ...]   # one directory fsync,
                                                        # each file fsync()ed
    w.set_arrival(t); w.add_attr(name, value); w.set_sender(addr); w.flags = n
    w.add_recipient(Recipient(address, orig_address="", dsn_orcpt="", dsn_notify=0))
    w.write_content(data)          # any size, any number of calls
    w.end_content()                # optional; add_recipient() after it adds
                                   # extracted recipients (after X)
    w.commit(ready=None) -> str    # the final path; ready() before the fsync
    w.abort()                      # also done by `with` on error
    read_envelope(path) -> Envelope
    iter_content(path, env) -> Iterator[bytes]
    verify(path) -> Envelope       # envelope + every content CRC
    iter_records(path_or_binary_file) -> Iterator[(offset, rtype, data)]  # postcat
    mark_done(path, offsets)
    move(queue_dir, queue_id, from_queue, to_queue, sync=True) -> str
    remove(queue_dir, queue_name, queue_id) -> bool
    Recycler(queue_dir, enabled).give(queue_name, queue_id) -> bool   # remove(), recycling the inode
    QueueWriter.create(..., reuse=True)   # on an inode from recycle/ if there is one
    path_of(queue_dir, queue_name, queue_id) -> str
    scan(queue_dir, queue_name) -> Iterator[(queue_id, path)]
    set_next_attempt(path, t)      # a deferred file's mtime is its next attempt
    set_audit_hook(hook) -> previous hook; hook(operation, path, detail)

Failure behaviour: anything wrong with a file's contents raises
``CorruptQueueFile`` (str: "path: reason"); the reader checks types,
lengths, CRCs, record order, the size record's numbers and that ``E`` is
the last byte, so a truncated file or a flipped byte is reported, never
mis-read.  OS errors (a file moved away meanwhile, a full disk) propagate
as OSError.  Strings are UTF-8 with surrogateescape, so any bytes a client
sent survive the round trip.

The one flip that is not detected, on purpose: the CRC counts ``D`` as
``R`` so that marking a recipient done is a single in-place byte write
(os.pwrite + fsync) that needs no CRC rewrite.  A corruption that turns a
recipient's ``R`` into ``D`` or back therefore reads as a valid file with
that one recipient's done flag changed: a lost or repeated delivery to one
recipient, the same outcome as a crash on either side of mark_done().  Any
other damage to the type byte (``R``->``B``, ...) is caught by the CRC.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from fulmar.queue import layout, qid as _qid
from fulmar.queue import records as rec
from fulmar.queue.records import CorruptRecord

ENCODING = "utf-8"
ERRORS = "surrogateescape"

FILE_MODE = 0o600
# A file is complete when its owner-execute bit is set (Postfix:
# MAIL_QUEUE_STAT_READY); readers skip one without it.
READY_BIT = 0o100
DIR_MODE = layout.MODE_DEFAULT
# The writer hands the kernel this much at a time (and a small message in
# one write).
WRITE_CHUNK = 256 * 1024
# read_envelope's first read; the whole envelope of a usual message.
ENVELOPE_READ = 64 * 1024
READ_BUFFER = 256 * 1024
# Attempts at a fresh dot-file name before giving up.
CREATE_TRIES = 100

_ATTR_NAME_RE = re.compile(rb"[A-Za-z0-9_.\-]+")
_TIME_RE = re.compile(rb"([0-9]{1,15})\.([0-9]{6})")

_fsync_data = getattr(os, "fdatasync", os.fsync)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

ATTR_CREATE_TIME = "create_time"
_ATTR_CREATE_TIME_B = ATTR_CREATE_TIME.encode()
# Fulmar's: the queue ID the file was written under.  read_envelope()
# takes a file whose attribute names another ID for corrupt: a recycled
# inode's old message (module docstring).  Not in Envelope.attrs.
ATTR_QUEUE_ID = "queue_id"
_ATTR_QUEUE_ID_B = ATTR_QUEUE_ID.encode() + b"="

# Bits of the size record's flags field.
FLAG_DELAY_WARNED = 1    # the delay_warning_time notice was sent (Postfix: W record cleared)

AuditHook = Callable[[str, str, str], None]
_audit_hook: AuditHook | None = None


def set_audit_hook(hook: AuditHook | None) -> AuditHook | None:
    """Install hook(operation, path, detail); None removes it. Returns the old one."""
    global _audit_hook
    old, _audit_hook = _audit_hook, hook
    return old


def _audit(operation: str, path: str, detail: str = "") -> None:
    if _audit_hook is not None:
        _audit_hook(operation, path, detail)


class CorruptQueueFile(Exception):
    """A queue file that must not be trusted. str() is "path: reason"."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True)
class Recipient:
    address: str
    orig_address: str = ""
    dsn_orcpt: str = ""
    dsn_notify: int = 0
    offset: int = -1        # file offset of the R/D record (set by the reader)
    done: bool = False


@dataclass(slots=True)
class Envelope:
    queue_id: str
    arrival_time: float
    sender: str
    attrs: dict[str, str]
    recipients: list[Recipient]
    content_offset: int
    content_size: int
    flags: int
    file_size: int
    extracted_offset: int = 0   # offset of the X record
    version: str = rec.VERSION.decode()
    # The whole file when one read got it all (at most ENVELOPE_READ
    # bytes): iter_content then reads the content from here instead of
    # opening the file again.  The content never changes after commit
    # (only R records become D in place), so the copy stays valid.
    data: bytes | None = field(default=None, repr=False, compare=False)
    mode: int = field(default=0, repr=False, compare=False)   # st_mode when read

    @property
    def message_size(self) -> int:
        """What mailq and qmgr's size= report: the content bytes."""
        return self.content_size

    @property
    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if not r.done]


def _enc(text: str, what: str) -> bytes:
    data = text.encode(ENCODING, ERRORS)
    if b"\0" in data:
        raise ValueError(f"{what} contains NUL")
    return data


def _dec(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def encode_recipient(r: Recipient) -> bytes:
    if r.dsn_notify < 0:
        raise ValueError("dsn_notify must not be negative")
    return b"\0".join((
        _enc(r.address, "recipient"),
        _enc(r.orig_address, "original recipient"),
        _enc(r.dsn_orcpt, "ORCPT"),
        b"%d" % r.dsn_notify,
    ))


def decode_recipient(data: bytes, offset: int, done: bool) -> Recipient:
    parts = data.split(b"\0")
    if len(parts) != 4 or not parts[3].isdigit() or not parts[3].isascii():
        raise CorruptRecord(offset, "malformed recipient record")
    return Recipient(_dec(parts[0]), _dec(parts[1]), _dec(parts[2]), int(parts[3]),
                     offset=offset, done=done)


def decode_attr(data: bytes, offset: int) -> tuple[str, str]:
    name, sep, value = data.partition(b"=")
    if not sep or _ATTR_NAME_RE.fullmatch(name) is None:
        raise CorruptRecord(offset, "malformed attribute record")
    return name.decode("ascii"), _dec(value)


def decode_time(data: bytes, offset: int) -> tuple[int, int]:
    m = _TIME_RE.fullmatch(data)
    if m is None:
        raise CorruptRecord(offset, "malformed time record")
    return int(m[1]), int(m[2])


def _blocks(content_size: int) -> int:
    return -(-content_size // rec.MAX_BLOCK)


def extracted_offset(content_offset: int, content_size: int) -> int:
    """Offset of the X record, from the canonical blocking."""
    return (content_offset + rec.HEADER_LEN + content_size
            + rec.HEADER_LEN * _blocks(content_size))


# ---------------------------------------------------------------- writing

_ENVELOPE, _CONTENT, _EXTRACTED, _SEALED, _DONE = range(5)
# (name, value) -> the whole attribute record: a client's name, address,
# HELO and protocol repeat from message to message (cleanup writes ~9
# attribute records per message).  Bounded in entries and in size.
ATTR_RECORD_CACHE = 512
ATTR_RECORD_CACHE_DATA = 256
_attr_records: dict[tuple[str, str], bytes] = {}
# Every file's first two records: the size record's placeholder and the version.
_FILE_HEAD = rec.encode(rec.REC_SIZE, rec.encode_size(0, 0, 0, 0)) + rec.encode(rec.REC_VERSION, rec.VERSION)
_dot_counter = itertools.count()


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class QueueWriter:
    """Writes one new queue file; see the module docstring for the protocol."""

    def __init__(self, queue_dir: str, queue_name: str, path: str, dir_fd: int, fd: int,
                 queue_id: str, sec: int, usec: int, mode: int):
        self.queue_dir = queue_dir
        self.queue_name = queue_name
        self.queue_id = queue_id
        self.flags = 0
        self.path = path
        self.content_size = 0
        self._dir_fd = dir_fd           # the directory holding the file
        self._fd = fd
        self._mode = mode | READY_BIT
        self._arrival = (sec, usec)
        self._created = sec
        self._attrs: dict[str, bytes] = {}    # name -> its whole A record
        self._sender: bytes | None = None
        self._rcpts: list[bytes] = []
        self._n_rcpt = 0
        self._state = _ENVELOPE
        self._out = bytearray()
        self._pending = bytearray()     # the not yet full content block
        self._flushed = 0               # bytes already written to the file
        self._content_offset = 0
        self._file_size = 0             # set by seal()
        self._stale = 0                 # bytes of a recycled file's old message

    @classmethod
    def create(cls, queue_dir: str, queue_name: str = layout.QUEUE_INCOMING,
               mode: int = FILE_MODE, sync: bool = True, reuse: bool = False) -> QueueWriter:
        """Create the file under its queue ID, not yet ready (see the module
        docstring), with its name durable (unless not sync: create_many);
        with reuse, on an inode from recycle/ when there is one.  OSError if
        impossible."""
        if queue_name not in layout.QUEUE_NAMES:
            raise ValueError(f"bad queue name: {queue_name!r}")
        top = os.path.join(queue_dir, queue_name)
        top_fd = os.open(top, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        fd = dir_fd = -1
        tmp_name = ""
        try:
            pid = os.getpid()
            fd = -1
            stale = 0
            if reuse:
                tmp_name = f".{pid}.{next(_dot_counter)}"
                fd, ino, stale = _take_recycled(queue_dir, top_fd, tmp_name, mode & ~READY_BIT)
            if fd < 0:
                tmp_name = ""       # (none was made)
                fd, tmp_name = _create_dot_file(top_fd, top, pid, mode & ~READY_BIT)
                ino = os.fstat(fd).st_ino
            # The time is read while this file holds the inode: see qid.py.
            sec, usec = divmod(time.time_ns() // 1000, _qid.USEC_PER_SEC)
            queue_id = _qid.from_parts(sec, usec, ino)
            sub = layout.queue_subdir(queue_name, queue_id)
            if sub == queue_name:
                dir_fd, top_fd = top_fd, -1
            else:
                final_dir = os.path.join(queue_dir, sub)
                os.makedirs(final_dir, DIR_MODE, exist_ok=True)
                dir_fd = os.open(final_dir, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
            _take_name(top_fd if top_fd >= 0 else dir_fd, tmp_name, dir_fd, queue_id,
                       os.path.join(queue_dir, sub, queue_id))
            tmp_name = ""
            try:
                # The name is made durable now, off the commit's path:
                # commit() then needs only the file's own fsync.
                if sync:
                    os.fsync(dir_fd)
            except BaseException:
                os.unlink(queue_id, dir_fd=dir_fd)
                raise
        except BaseException:
            if fd >= 0:
                os.close(fd)
            if tmp_name:
                _unlink_quietly(tmp_name, top_fd if top_fd >= 0 else dir_fd)
            if dir_fd >= 0:
                os.close(dir_fd)
            raise
        finally:
            if top_fd >= 0:
                os.close(top_fd)
        w = cls(queue_dir, queue_name, os.path.join(queue_dir, sub, queue_id), dir_fd, fd,
                queue_id, sec, usec, mode)
        w._stale = stale
        _audit("create", w.path, queue_id)
        return w

    @classmethod
    def create_many(cls, queue_dir: str, n: int, queue_name: str = layout.QUEUE_INCOMING,
                    mode: int = FILE_MODE, reuse: bool = False) -> list[QueueWriter]:
        """create() n files, with one directory fsync for all of them, and
        each file (empty, or a recycled one's old bytes) fsync()ed too, so
        that commit()'s fsync carries only the message: the first fsync of
        a new file also writes what its creation changed (ext4 without a
        journal syncs the parent directory then; with one, the creating
        transaction), 40 us of the 165 a commit took here
        (docs/performance.md, item 34)."""
        writers: list[QueueWriter] = []
        try:
            for _ in range(n):
                writers.append(cls.create(queue_dir, queue_name, mode, sync=False, reuse=reuse))
            for w in writers:
                os.fsync(w._fd)
            synced = set()
            for w in writers:
                d = os.path.dirname(w.path)
                if d not in synced:
                    os.fsync(w._dir_fd)
                    synced.add(d)
        except BaseException:
            for w in writers:
                w.abort()
            raise
        return writers

    # -- context manager: abort unless committed
    def __enter__(self) -> QueueWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self._state != _DONE:
            self.abort()

    def __del__(self):
        if getattr(self, "_state", _DONE) != _DONE:
            try:
                self.abort()
            except Exception:
                pass

    # -- envelope
    def _need(self, *states: int) -> None:
        if self._state not in states:
            raise ValueError("queue file record out of order")

    def set_arrival(self, t: float) -> None:
        self._need(_ENVELOPE)
        self._arrival = _qid.split_time(t)

    def add_attr(self, name: str, value: str) -> None:
        self._need(_ENVELOPE)
        if name == ATTR_QUEUE_ID:
            return              # the writer's own (_start_content)
        key = (name, value)
        record = _attr_records.get(key)
        if record is None:
            raw = name.encode("ascii", "strict") if name.isascii() else b""
            if _ATTR_NAME_RE.fullmatch(raw) is None:
                raise ValueError(f"bad attribute name {name!r}")
            data = raw + b"=" + value.encode(ENCODING, ERRORS)
            if len(data) > rec.MAX_ATTR:
                raise ValueError(f"attribute {name} too long")
            record = rec.encode(rec.REC_ATTR, data)
            if len(data) <= ATTR_RECORD_CACHE_DATA:
                if len(_attr_records) >= ATTR_RECORD_CACHE:
                    _attr_records.clear()
                _attr_records[key] = record
        self._attrs[name] = record

    def set_sender(self, addr: str) -> None:
        self._need(_ENVELOPE)
        data = _enc(addr, "sender")
        if len(data) > rec.MAX_ADDRESS_RECORD:
            raise ValueError("sender too long")
        self._sender = data

    def add_recipient(self, r: Recipient) -> None:
        """Envelope recipient before content, extracted one after end_content()."""
        self._need(_ENVELOPE, _EXTRACTED)
        data = encode_recipient(r)
        if self._state == _ENVELOPE:
            rec.encode_header(rec.REC_RCPT, data)     # size check now, not at commit
            self._rcpts.append(data)
        else:
            self._emit(rec.REC_RCPT, data)
        self._n_rcpt += 1

    # -- content
    def _emit(self, rtype: bytes, data=b"") -> None:
        out = self._out
        rec.append(out, rtype, data)
        if len(out) >= WRITE_CHUNK:
            _write_all(self._fd, out)
            self._flushed += len(out)
            out.clear()

    def _start_content(self) -> None:
        if self._sender is None:
            raise ValueError("queue file without sender")
        out = self._out
        out += _FILE_HEAD          # placeholder size record (commit() rewrites it), version
        append = rec.append
        append(out, rec.REC_TIME, b"%d.%06d" % self._arrival)
        append(out, rec.REC_ATTR, _ATTR_QUEUE_ID_B + self.queue_id.encode("ascii"))
        if ATTR_CREATE_TIME not in self._attrs:
            append(out, rec.REC_ATTR, b"%s=%d" % (_ATTR_CREATE_TIME_B, self._created))
        for record in self._attrs.values():
            out += record
        append(out, rec.REC_FROM, self._sender)
        for data in self._rcpts:
            append(out, rec.REC_RCPT, data)
        self._rcpts = []
        self._content_offset = self._flushed + len(self._out)
        self._state = _CONTENT
        self._emit(rec.REC_MESG)

    def write_content(self, data) -> None:
        """Append message content (bytes-like, any size)."""
        if self._state == _ENVELOPE:
            self._start_content()
        self._need(_CONTENT)
        view = memoryview(data).cast("B")
        if not view:
            return
        self.content_size += len(view)
        pending = self._pending
        block = rec.MAX_BLOCK
        if pending:
            take = block - len(pending)
            pending += view[:take]
            view = view[take:]
            if len(pending) < block:
                return
            self._emit(rec.REC_BLOCK, pending)
            pending.clear()
        while len(view) >= block:
            self._emit(rec.REC_BLOCK, view[:block])
            view = view[block:]
        if view:
            pending += view

    def end_content(self) -> None:
        """Close the content; later add_recipient() calls add extracted recipients."""
        if self._state == _ENVELOPE:
            self._start_content()
        if self._state == _EXTRACTED:
            return
        self._need(_CONTENT)
        if self._pending:
            self._emit(rec.REC_BLOCK, self._pending)
            self._pending.clear()
        self._emit(rec.REC_XTRA)
        self._state = _EXTRACTED

    # -- commit / abort
    def commit(self, ready: Callable[[], None] | None = None) -> str:
        """Make the file complete, ready and durable; returns its path.

        Blocking (fsync): run it in a thread from asyncio code. On failure
        the file is removed and the error re-raised.  ready, if given, is
        called once the file is complete and ready, before the fsync.
        commit() is seal(), fsync(fd), finish(); a caller that wants
        only the fsync in another thread calls those itself.
        """
        fd = self.seal(ready)
        try:
            os.fsync(fd)
        except BaseException:
            # Not durable: take the name back, so that nobody delivers a
            # message whose sender is told it failed.
            self.abort()
            raise
        return self.finish()

    def seal(self, ready: Callable[[], None] | None = None) -> int:
        """commit() up to its fsync: the file complete (end record, real
        size record) and ready (mode 0700), ready() called; returns the
        descriptor the caller must fsync() before finish().  Not durable
        yet: nobody may say "queued" before that fsync.  On failure the
        file is removed and the error re-raised."""
        self._need(_ENVELOPE, _CONTENT, _EXTRACTED)
        try:
            self.end_content()
            self._emit(rec.REC_END)
            size = rec.encode(rec.REC_SIZE, rec.encode_size(
                self.content_size, self._content_offset, self._n_rcpt, self.flags))
            if self._flushed == 0:
                # The usual case: the whole file is still in memory, one write.
                self._out[:rec.SIZE_RECORD_LEN] = size
                _write_all(self._fd, self._out)
            else:
                _write_all(self._fd, self._out)
                os.pwrite(self._fd, size, 0)
            self._file_size = self._flushed + len(self._out)
            self._out = bytearray()
            if self._stale > self._file_size:
                # A recycled file's old message was longer: cut its tail.
                os.ftruncate(self._fd, self._file_size)
            # The ready bit last, and fsync (not fdatasync: the mode is
            # metadata): a file readers take is complete on disk.  Its
            # name has been durable since create().
            os.fchmod(self._fd, self._mode)
            if ready is not None:
                ready()
        except BaseException:
            self.abort()
            raise
        self._state = _SEALED
        return self._fd

    def finish(self) -> str:
        """After the caller's fsync of seal()'s descriptor: close; the
        file's path.  The file is queued."""
        if self._state != _SEALED:
            raise ValueError("queue file finish() before seal()")
        try:
            os.close(self._fd)
            self._fd = -1
            os.close(self._dir_fd)
            self._dir_fd = -1
        except BaseException:
            self.abort()
            raise
        self._state = _DONE
        _audit("commit", self.path, f"size={self._file_size}")
        return self.path

    def abort(self) -> None:
        """Discard the file. Safe to call more than once."""
        if self._state == _DONE and self._fd < 0 and self._dir_fd < 0:
            return
        self._state = _DONE
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._dir_fd >= 0:
            try:
                os.unlink(self.queue_id, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
            finally:
                os.close(self._dir_fd)
                self._dir_fd = -1
        _audit("abort", self.path, self.queue_id)


def _create_dot_file(top_fd: int, top: str, pid: int, mode: int) -> tuple[int, str]:
    """A new empty file incoming/.<pid>.<n> (O_EXCL): (descriptor, name)."""
    for _ in range(CREATE_TRIES):
        tmp_name = f".{pid}.{next(_dot_counter)}"
        try:
            return os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC,
                           mode, dir_fd=top_fd), tmp_name
        except FileExistsError:
            continue    # left over by a dead process with our pid
    raise FileExistsError(errno.EEXIST, "no free temporary file name", top)


# ---------------------------------------------------------------- recycling

# recycle/ holds at most this many files (Recycler), and qmgr counts them
# again after this many gives.
RECYCLE_MAX = 256
RECYCLE_RECOUNT = 32
# A recycled file of at most this many bytes keeps them (its blocks) for
# the next message to be written over; a bigger one is emptied, so that
# recycle/ holds at most RECYCLE_MAX * RECYCLE_KEEP bytes.
RECYCLE_KEEP = 64 * 1024

# Listed in recycle/, not yet tried.  create() runs in cleanup's event loop
# and its spare thread: list.pop() and slice assignment are atomic.
_recycled_names: list[str] = []
# (directory, mtime) of recycle/ when it was last listed empty: while its
# mtime stays so, nothing was renamed in and a stat() saves the listing
# (mail arriving while nothing is delivered would list it per message).
# A rename in within the same clock tick as that listing leaves the mtime
# alone: the file waits for the next one, nothing is lost.
_listed_empty: tuple[str, int] | None = None


def _take_recycled(queue_dir: str, top_fd: int, tmp_name: str, mode: int) -> tuple[int, int, int]:
    """Claim a file from recycle/ as top_fd's tmp_name, with mode and a
    fresh mtime: (descriptor, inode, size of the old bytes it keeps), or
    (-1, 0, 0) when there is none.  A file over RECYCLE_KEEP bytes (give()
    was cut short) is emptied.

    The claim is the rename: of two cleanup processes listing the same
    name one gets ENOENT and tries the next.  The file is made not ready
    (mode) before it gets a queue ID; its mtime is set because postsuper -p
    takes a not-ready file in incoming/ an hour old for a leftover.
    Anything that is not a plain file of one link is removed and skipped
    (only mail_owner and root can write in recycle/).
    """
    directory = os.path.join(queue_dir, layout.QUEUE_RECYCLE)
    for listed in (False, True):
        while True:
            try:
                name = _recycled_names.pop()
            except IndexError:
                break
            try:
                os.rename(os.path.join(directory, name), tmp_name, dst_dir_fd=top_fd)
            except FileNotFoundError:
                continue                # taken by another cleanup meanwhile
            except OSError:
                return -1, 0, 0         # (another file system: not reusable)
            try:
                # O_NONBLOCK: a FIFO fails instead of blocking the open.
                # Cut only once known to be a plain file of one link.
                fd = os.open(tmp_name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC,
                             dir_fd=top_fd)
            except OSError:
                _unlink_quietly(tmp_name, top_fd)
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    raise OSError(errno.EINVAL, "not a plain file")
                stale = st.st_size
                if stale > RECYCLE_KEEP:
                    os.ftruncate(fd, 0)     # (give() was cut short)
                    stale = 0
                os.fchmod(fd, mode)
                os.utime(fd)
            except OSError:
                os.close(fd)
                _unlink_quietly(tmp_name, top_fd)
                continue
            return fd, st.st_ino, stale
        if listed:
            break
        global _listed_empty
        try:
            seen = (directory, os.stat(directory).st_mtime_ns)
            if seen == _listed_empty:
                break
            names = os.listdir(directory)
        except OSError:
            break
        if not names:
            _listed_empty = seen
            break
        _recycled_names[:] = names
    return -1, 0, 0


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


class Recycler:
    """qmgr's way to dispose of a delivered queue file: give(), not remove().

    give() renames the file into recycle/ under its queue ID (unique among
    existing files); one over RECYCLE_KEEP bytes it then truncates (after a
    crash in between the file is whole, in active/, delivered again as
    after an unlink the kernel had not written, or in recycle/, emptied
    when reused), a smaller one keeps its bytes for the next message to be
    written over (module docstring).  create() reuses these inodes; the
    file system then neither frees nor allocates one per message.  Only when enabled: qmgr and cleanup
    enable it where the file system scans recently freed inodes
    (fsinfo.scans_freed_inodes: ext2/3/4 without a journal); with a journal
    it measured slower.  recycle/ is kept under RECYCLE_MAX files,
    counted again every RECYCLE_RECOUNT gives; when it is full, missing or
    on another file system, give() removes the file instead.
    """

    def __init__(self, queue_dir: str, enabled: bool, limit: int = RECYCLE_MAX,
                 recount: int = RECYCLE_RECOUNT) -> None:
        self.queue_dir = queue_dir
        self.directory = os.path.join(queue_dir, layout.QUEUE_RECYCLE)
        self.enabled = enabled
        self.limit = limit
        self.recount = recount
        # > 0: gives left before the next count; < 0: removals left.
        self._budget = 0

    def give(self, queue_name: str, queue_id: str) -> bool:
        """Recycle (or remove) a delivered queue file; False if it was not there."""
        if not self.enabled:
            return remove(self.queue_dir, queue_name, queue_id)
        if self._budget == 0:
            self._budget = self._count()
        if self._budget < 0:
            self._budget += 1
            return remove(self.queue_dir, queue_name, queue_id)
        path = path_of(self.queue_dir, queue_name, queue_id)
        spare = os.path.join(self.directory, queue_id)
        try:
            os.rename(path, spare)
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not os.path.lexists(path):
                return False
            # recycle/ missing or unusable: removed, as before recycling.
            self._budget = -self.recount
            return remove(self.queue_dir, queue_name, queue_id)
        self._budget -= 1
        _audit("recycle", path, queue_id)
        try:
            if os.stat(spare).st_size > RECYCLE_KEEP:
                os.truncate(spare, 0)
        except OSError:
            pass                # create() empties it
        return True

    def _count(self) -> int:
        try:
            n = len(os.listdir(self.directory))
        except OSError:
            return -self.recount
        if n >= self.limit:
            return -self.recount
        return min(self.limit - n, self.recount)


def _take_name(src_dir_fd: int, tmp_name: str, dir_fd: int, queue_id: str, final: str) -> None:
    """Give the new file its queue ID: link, never replacing another file."""
    try:
        os.link(tmp_name, queue_id, src_dir_fd=src_dir_fd, dst_dir_fd=dir_fd)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "queue file exists", final) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # A file system without hard links.
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "queue file exists", final) from None
        os.rename(tmp_name, queue_id, src_dir_fd=src_dir_fd, dst_dir_fd=dir_fd)
    else:
        os.unlink(tmp_name, dir_fd=src_dir_fd)


# ---------------------------------------------------------------- reading

def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    parts = []
    while n > 0:
        chunk = os.pread(fd, n, offset)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def read_envelope(path: str) -> Envelope:
    """Read and check the envelope, the extracted recipients and the end.

    The content is skipped (see iter_content for its CRCs).
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        try:
            env = _read_envelope_fd(fd, path)
        except CorruptRecord as e:
            raise CorruptQueueFile(path, str(e)) from None
    finally:
        os.close(fd)
    _audit("read", path, "envelope")
    return env


def _read_envelope_fd(fd: int, path: str) -> Envelope:
    st = os.fstat(fd)
    file_size = st.st_size
    if file_size == 0:
        raise CorruptRecord(0, "empty file")
    head = os.pread(fd, ENVELOPE_READ, 0)
    if len(head) < rec.SIZE_RECORD_LEN:
        head += _pread_exact(fd, rec.SIZE_RECORD_LEN - len(head), len(head))
    reader = rec.RecordReader(head, 0, min(len(head), file_size))
    _, size_data = reader.expect(rec.REC_SIZE)
    content_size, content_offset, rcpt_count, flags = rec.decode_size(size_data)
    env_end = content_offset + rec.HEADER_LEN      # end of the (empty) M record
    x_off = extracted_offset(content_offset, content_size)
    if content_offset < reader.offset or x_off + 2 * rec.HEADER_LEN > file_size:
        raise CorruptRecord(0, "size record does not match the file size")
    if env_end > len(head):
        head += _pread_exact(fd, env_end - len(head), len(head))
    if len(head) < env_end:
        raise CorruptRecord(len(head), "truncated envelope")

    reader = rec.RecordReader(head, reader.offset, content_offset)
    _, version = reader.expect(rec.REC_VERSION)
    if version != rec.VERSION:
        raise CorruptRecord(rec.SIZE_RECORD_LEN, f"unsupported queue file version {version!r}")
    arrival = sender = None
    attrs: dict[str, str] = {}
    rcpts: list[Recipient] = []
    for off, rtype, data in reader:
        if rtype == rec.REC_RCPT or rtype == rec.REC_DONE:
            rcpts.append(decode_recipient(data, off, rtype == rec.REC_DONE))
        elif rtype == rec.REC_ATTR:
            name, value = decode_attr(data, off)
            attrs[name] = value
        elif rtype == rec.REC_TIME and arrival is None:
            arrival = decode_time(data, off)
        elif rtype == rec.REC_FROM and sender is None:
            sender = _dec(data)
        else:
            raise CorruptRecord(off, f"unexpected record {rtype.decode('latin-1')} in envelope")
    if arrival is None:
        raise CorruptRecord(content_offset, "no arrival time record")
    if sender is None:
        raise CorruptRecord(content_offset, "no sender record")
    written_as = attrs.pop(ATTR_QUEUE_ID, None)
    if written_as is not None and written_as != os.path.basename(path):
        # (files written before the attribute existed have none)
        raise CorruptRecord(0, f"written as queue file {written_as[:20]}")
    rec.RecordReader(head, content_offset, env_end).expect(rec.REC_MESG)

    small = len(head) >= file_size
    if small:
        tail = head[x_off:file_size]        # a small file: already read whole
    else:
        tail = _pread_exact(fd, file_size - x_off, x_off)
    reader = rec.RecordReader(tail, 0, len(tail))
    try:
        reader.expect(rec.REC_XTRA)
        while True:
            off = reader.offset
            got = reader.read()
            if got is None:
                raise CorruptRecord(off, "no end record")
            _, rtype, data = got
            if rtype == rec.REC_END:
                if reader.offset != len(tail):
                    raise CorruptRecord(reader.offset, "data after the end record")
                break
            if rtype not in (rec.REC_RCPT, rec.REC_DONE):
                raise CorruptRecord(off, f"unexpected record {rtype.decode('latin-1')} after content")
            r = decode_recipient(data, off, rtype == rec.REC_DONE)
            r.offset += x_off
            rcpts.append(r)
    except CorruptRecord as e:
        # Report file offsets, not offsets in the tail buffer.
        raise CorruptRecord(x_off + e.offset, e.reason) from None
    if len(rcpts) != rcpt_count:
        raise CorruptRecord(0, f"size record says {rcpt_count} recipients, file has {len(rcpts)}")
    return Envelope(
        queue_id=os.path.basename(path),
        arrival_time=arrival[0] + arrival[1] / _qid.USEC_PER_SEC,
        sender=sender,
        attrs=attrs,
        recipients=rcpts,
        content_offset=content_offset,
        content_size=content_size,
        flags=flags,
        file_size=file_size,
        extracted_offset=x_off,
        data=head[:file_size] if small else None,
        mode=st.st_mode,
    )


def content_envelope(path: str, content_offset: int, content_size: int) -> Envelope:
    """What iter_content needs, from offsets qmgr already read and checked.

    A delivery agent gets the envelope (sender, recipients, attributes)
    from qmgr's request, as Postfix's do; it opens the file only for the
    content, and a small file is read whole here, in one pread.  Nothing
    of the envelope is parsed: the content blocks are still CRC-checked
    by iter_content, so wrong offsets end in CorruptQueueFile, never in
    wrong mail.  CorruptQueueFile if the offsets cannot fit the file.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        st = os.fstat(fd)
        _check_content_offsets(path, content_offset, content_size, st.st_size)
        data = _pread_exact(fd, st.st_size, 0) if st.st_size <= ENVELOPE_READ else None
    finally:
        os.close(fd)
    _audit("read", path, "content offsets")
    return _content_only(path, content_offset, content_size, st.st_size, data, st.st_mode)


def content_envelope_of(path: str, data: bytes, content_offset: int, content_size: int) -> Envelope:
    """content_envelope() for a file whose bytes (all of them) the caller
    already has: qmgr passes a small file it has just read (the content
    never changes after the commit; iter_content still checks its CRCs)."""
    path = os.fspath(path)
    _check_content_offsets(path, content_offset, content_size, len(data))
    return _content_only(path, content_offset, content_size, len(data), data, 0)


def _check_content_offsets(path: str, content_offset: int, content_size: int, file_size: int) -> None:
    x_off = extracted_offset(content_offset, content_size)
    if content_offset < rec.SIZE_RECORD_LEN or x_off + 2 * rec.HEADER_LEN > file_size:
        raise CorruptQueueFile(path, "content offsets do not fit the file")


def _content_only(path, content_offset, content_size, file_size, data, mode) -> Envelope:
    return Envelope(queue_id=os.path.basename(path), arrival_time=0.0, sender="", attrs={},
                    recipients=[], content_offset=content_offset, content_size=content_size,
                    flags=0, file_size=file_size,
                    extracted_offset=extracted_offset(content_offset, content_size), data=data,
                    mode=mode)


def iter_content(path: str, env: Envelope) -> Iterator[bytes]:
    """The content blocks in order, each CRC-checked; CorruptQueueFile if not."""
    path = os.fspath(path)
    _audit("read", path, "content")
    end = extracted_offset(env.content_offset, env.content_size) + rec.HEADER_LEN
    if env.data is not None:
        yield from _content_blocks(rec.RecordReader(env.data, env.content_offset, end), env, path)
        return
    with open(path, "rb", buffering=READ_BUFFER) as f:
        f.seek(env.content_offset)
        yield from _content_blocks(rec.RecordReader(f, env.content_offset, end), env, path)


def _content_blocks(reader: rec.RecordReader, env: Envelope, path: str) -> Iterator[bytes]:
    try:
        reader.expect(rec.REC_MESG)
        remaining = env.content_size
        while remaining:
            want = min(remaining, rec.MAX_BLOCK)
            off, data = reader.expect(rec.REC_BLOCK)
            if len(data) != want:
                raise CorruptRecord(off, "content block of the wrong size")
            remaining -= want
            yield data
        reader.expect(rec.REC_XTRA)
    except CorruptRecord as e:
        raise CorruptQueueFile(path, str(e)) from None


def verify(path: str) -> Envelope:
    """read_envelope() plus every content CRC: the full check."""
    env = read_envelope(path)
    for _ in iter_content(path, env):
        pass
    return env


def iter_records(source) -> Iterator[tuple[int, bytes, bytes]]:
    """Every record in file order, for postcat: (offset, rtype, data).

    source is a path or a readable binary file (e.g. stdin). Stops after the
    end record; CorruptQueueFile for a damaged record, a missing end record
    or data after it. Does not check the record order.
    """
    if isinstance(source, (str, bytes, os.PathLike)):
        path = os.fsdecode(source)
        _audit("read", path, "records")
        with open(path, "rb", buffering=READ_BUFFER) as f:
            yield from _iter_records(f, path)
    else:
        yield from _iter_records(source, getattr(source, "name", "stdin"))


def _iter_records(f: BinaryIO, path: str) -> Iterator[tuple[int, bytes, bytes]]:
    reader = rec.RecordReader(f, 0)
    try:
        while True:
            got = reader.read()
            if got is None:
                raise CorruptRecord(reader.offset, "no end record")
            yield got
            if got[1] == rec.REC_END:
                if f.read(1):
                    raise CorruptRecord(reader.offset, "data after the end record")
                return
    except CorruptRecord as e:
        raise CorruptQueueFile(str(path), str(e)) from None


# ---------------------------------------------------------------- changing

def mark_done(path: str, offsets: list[int]) -> None:
    """Mark the recipients at these record offsets done: one byte each, one fsync."""
    path = os.fspath(path)
    if not offsets:
        return
    fd = os.open(path, os.O_RDWR | _O_CLOEXEC)
    try:
        todo = []
        for off in offsets:
            cur = os.pread(fd, 1, off)
            if cur == rec.REC_RCPT:
                todo.append(off)
            elif cur != rec.REC_DONE:
                raise CorruptQueueFile(path, f"offset {off}: not a recipient record")
        for off in todo:
            os.pwrite(fd, rec.REC_DONE, off)
        if todo:
            _fsync_data(fd)
    finally:
        os.close(fd)
    _audit("mark_done", path, " ".join(map(str, offsets)))


def set_flags(path: str, set_bits: int) -> int:
    """OR bits into the size record's flags field in place; one fsync.

    The size record has a fixed width, so it is rewritten whole (header,
    CRC and data: 72 bytes, inside one sector) with one pwrite. Returns
    the new flags. CorruptQueueFile if the record does not parse.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDWR | _O_CLOEXEC)
    try:
        head = os.pread(fd, rec.SIZE_RECORD_LEN, 0)
        try:
            rtype, length, crc = rec.decode_header(head[:rec.HEADER_LEN])
            data = head[rec.HEADER_LEN:rec.HEADER_LEN + length]
            if rtype != rec.REC_SIZE:
                raise CorruptRecord(0, "first record is not the size record")
            rec.check_crc(rtype, length, crc, data)
            size, offset, count, flags = rec.decode_size(data)
        except CorruptRecord as e:
            raise CorruptQueueFile(path, str(e)) from None
        new = flags | set_bits
        if new != flags:
            os.pwrite(fd, rec.encode(rec.REC_SIZE, rec.encode_size(size, offset, count, new)), 0)
            _fsync_data(fd)
    finally:
        os.close(fd)
    _audit("set_flags", path, "%d" % set_bits)
    return new


def path_of(queue_dir: str, queue_name: str, queue_id: str) -> str:
    """The path of queue_id in queue_name (hashed as configured).

    ValueError for an unknown queue name or an ID that is not a safe name.
    """
    if queue_name not in layout.QUEUE_NAMES:
        raise ValueError(f"bad queue name: {queue_name!r}")
    if not _qid.name_ok(queue_id):
        raise ValueError(f"bad queue ID: {queue_id!r}")
    return os.path.join(queue_dir, layout.queue_subdir(queue_name, queue_id), queue_id)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move(queue_dir: str, queue_id: str, from_queue: str, to_queue: str,
         sync: bool = True) -> str:
    """rename(2) a queue file to another queue; returns the new path.

    With sync (the default) both directories are fsync()ed; qmgr may pass
    sync=False for moves that a restart redoes anyway (incoming -> active).
    FileNotFoundError if the file is not there.
    """
    src = path_of(queue_dir, from_queue, queue_id)
    dst = path_of(queue_dir, to_queue, queue_id)
    if src == dst:
        raise ValueError("move to the same queue")
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        dst_dir = os.path.dirname(dst)
        if os.path.isdir(dst_dir) or not os.path.lexists(src):
            raise
        os.makedirs(dst_dir, DIR_MODE, exist_ok=True)   # a hash directory
        os.rename(src, dst)
    if sync:
        _fsync_dir(os.path.dirname(dst))
        _fsync_dir(os.path.dirname(src))
    _audit("move", src, dst)
    return dst


def remove(queue_dir: str, queue_name: str, queue_id: str) -> bool:
    """Delete a queue file; False if it was not there.

    Not fsync()ed: the unlink is durable as soon as the kernel has it, so
    only a power cut can undo it; the file then comes back and its pending
    recipients are delivered again (a duplicate, never a loss).
    """
    path = path_of(queue_dir, queue_name, queue_id)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    _audit("remove", path, queue_id)
    return True


def set_next_attempt(path: str, t: float) -> None:
    """Set a deferred file's next delivery attempt time (its mtime)."""
    os.utime(path, (t, t))
    _audit("utime", os.fspath(path), "%.6f" % t)


def scan(queue_dir: str, queue_name: str) -> Iterator[tuple[str, str]]:
    """(queue_id, path) of every queue file in a queue, in directory order.

    Skips dot-files, names that are not queue file names and, in incoming/
    (where cleanup writes), files not yet ready (is_ready); walks
    one-character sub-directories at any level, as Postfix's scan_dir
    does, so files survive a hash_queue_depth change.
    """
    if queue_name not in layout.QUEUE_NAMES:
        raise ValueError(f"bad queue name: {queue_name!r}")
    yield from _scan(os.path.join(queue_dir, queue_name), queue_name == layout.QUEUE_INCOMING)


def is_ready(st_mode: int) -> bool:
    """True for a committed queue file (its owner-execute bit is set)."""
    return bool(st_mode & READY_BIT)


def _scan(directory: str, ready_only: bool) -> Iterator[tuple[str, str]]:
    subdirs = []
    with os.scandir(directory) as it:
        for entry in it:
            name = entry.name
            if name[0] == ".":
                continue
            if entry.is_dir(follow_symlinks=False):
                if len(name) == 1:
                    subdirs.append(entry.path)
            elif entry.is_file(follow_symlinks=False) and _qid.name_ok(name):
                if ready_only:
                    try:
                        if not is_ready(entry.stat(follow_symlinks=False).st_mode):
                            continue
                    except FileNotFoundError:
                        continue
                yield name, entry.path
    for sub in subdirs:
        try:
            yield from _scan(sub, ready_only)
        except FileNotFoundError:
            continue
