"""Queue-file record codec (sans-IO).

A record is::

    type (1 byte) | length (4 bytes, big-endian) | crc32 (4 bytes, big-endian) | data

The CRC-32 (zlib) covers the type byte, the length and the data, in that
order, with one exception: a done recipient ``D`` is counted as a pending
recipient ``R``.  Marking a recipient done is then a one-byte in-place
rewrite of the type byte that leaves the CRC valid (see qfile.py for what
that costs in error detection).

The record types (names after Postfix rec_type.h where the meaning is the
same; ``V`` is Fulmar's version record, not Postfix's VERP record)::

    C  REC_SIZE      "%15d %15d %15d %15d" content_size content_offset rcpt_count flags
    V  REC_VERSION   "fulmar-queue 1"
    T  REC_TIME      "%d.%06d" arrival time
    A  REC_ATTR      "name=value"
    S  REC_FROM      sender address ("" for <>)
    R  REC_RCPT      address NUL orig_address NUL dsn_orcpt NUL dsn_notify
    D  REC_DONE      same as R, delivered
    M  REC_MESG      start of content (empty)
    B  REC_BLOCK     content bytes, at most MAX_BLOCK
    X  REC_XTRA      end of content (empty)
    E  REC_END       end of file (empty)

Interface::

    encode(rtype, data) -> bytes              # ValueError on a bad type or size
    append(out, rtype, data)                  # out += encode(rtype, data)
    encode_header(rtype, data) -> bytes        # the 9 bytes before data (for writev)
    decode_header(buf9) -> (rtype, length, crc) # CorruptRecord on bad type/length
    check_crc(rtype, length, crc, data)        # CorruptRecord on mismatch
    RecordReader(source, offset=0, end=None)   # iterate (offset, rtype, data)
    CorruptRecord(offset, reason)

``RecordReader`` reads from a bytes-like object or a binary file object
positioned at ``offset``; it stops cleanly only at a record boundary that
is ``end`` (or the end of the input when ``end`` is None) and raises
``CorruptRecord`` for an unknown type, a length above the type's maximum, a
CRC mismatch or a truncated record.  It never returns data it did not check.
"""

from __future__ import annotations

import struct
import zlib
TYPE_CHECKING = False          # typing costs ~3 ms of start-up; annotations only
if TYPE_CHECKING:
    from typing import BinaryIO, Iterator

REC_SIZE = b"C"
REC_VERSION = b"V"
REC_TIME = b"T"
REC_ATTR = b"A"
REC_FROM = b"S"
REC_RCPT = b"R"
REC_DONE = b"D"
REC_MESG = b"M"
REC_BLOCK = b"B"
REC_XTRA = b"X"
REC_END = b"E"

RECORD_NAMES = {
    REC_SIZE: "message_size",
    REC_VERSION: "queue_file_version",
    REC_TIME: "message_arrival_time",
    REC_ATTR: "named_attribute",
    REC_FROM: "sender",
    REC_RCPT: "recipient",
    REC_DONE: "done_recipient",
    REC_MESG: "message_content",
    REC_BLOCK: "content_block",
    REC_XTRA: "extracted_info",
    REC_END: "message_end",
}

VERSION = b"fulmar-queue 1"

HEADER = struct.Struct(">cII")   # type, length, crc
HEADER_LEN = HEADER.size          # 9

SIZE_FIELD_WIDTH = 15             # Postfix REC_TYPE_SIZE_FORMAT field width
SIZE_FIELDS = 4
SIZE_FORMAT = " ".join([f"%{SIZE_FIELD_WIDTH}d"] * SIZE_FIELDS)
SIZE_DATA_LEN = SIZE_FIELD_WIDTH * SIZE_FIELDS + (SIZE_FIELDS - 1)   # 63
SIZE_RECORD_LEN = HEADER_LEN + SIZE_DATA_LEN
SIZE_FIELD_MAX = 10 ** SIZE_FIELD_WIDTH - 1

# Maximum data length per record type.
MAX_BLOCK = 65536          # content block
MAX_ATTR = 65536           # name=value (large values: e.g. a milter's macros)
MAX_ADDRESS_RECORD = 16384 # sender, or a recipient with its orig/ORCPT/NOTIFY
MAX_SMALL = 64             # version and time records
MAX_DATA = {
    REC_SIZE: SIZE_DATA_LEN,
    REC_VERSION: MAX_SMALL,
    REC_TIME: MAX_SMALL,
    REC_ATTR: MAX_ATTR,
    REC_FROM: MAX_ADDRESS_RECORD,
    REC_RCPT: MAX_ADDRESS_RECORD,
    REC_DONE: MAX_ADDRESS_RECORD,
    REC_MESG: 0,
    REC_BLOCK: MAX_BLOCK,
    REC_XTRA: 0,
    REC_END: 0,
}
MIN_DATA = {REC_SIZE: SIZE_DATA_LEN, REC_BLOCK: 1}
# Lookup by the type's integer value, for the hot path.
_MAX_BY_ORD = {t[0]: n for t, n in MAX_DATA.items()}
_MIN_BY_ORD = {t[0]: n for t, n in MIN_DATA.items()}
_DONE_ORD = REC_DONE[0]
_R_CRC = zlib.crc32(REC_RCPT)          # CRC state after an R type byte
_unpack_header = HEADER.unpack_from


class CorruptRecord(Exception):
    """A record that cannot be trusted; str() says where and why."""

    def __init__(self, offset: int, reason: str):
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


# CRC state after each type byte (D counted as R): a record's CRC is then
# two crc32() calls, its length's and its data's (encode_header runs ~17
# times per message in cleanup).
_TYPE_CRC = {t[0]: zlib.crc32(REC_RCPT if t == REC_DONE else t) for t in MAX_DATA}


def _crc(type_ord: int, length: int, data) -> int:
    start = _TYPE_CRC.get(type_ord)
    if start is None:               # not a record type: check_crc() then says "mismatch"
        start = zlib.crc32(bytes((type_ord,)))
    return zlib.crc32(data, zlib.crc32(length.to_bytes(4, "big"), start))


# type -> (minimum length, maximum length, CRC state after the type byte):
# one lookup per record written (cleanup writes ~15 per message).
_SPEC = {t: (MIN_DATA.get(t, 0), n, _TYPE_CRC[t[0]]) for t, n in MAX_DATA.items()}
_pack = HEADER.pack
_crc32 = zlib.crc32


def encode_header(rtype: bytes, data) -> bytes:
    """The 9-byte header for data (bytes-like); ValueError if invalid."""
    n = len(data)
    spec = _SPEC.get(rtype)
    if spec is None:
        raise ValueError(f"unknown record type {rtype!r}")
    if n > spec[1] or n < spec[0]:
        raise ValueError(f"record {rtype!r}: bad data length {n}")
    return _pack(rtype, n, _crc32(data, _crc32(n.to_bytes(4, "big"), spec[2])))


def encode(rtype: bytes, data: bytes = b"") -> bytes:
    """One whole record."""
    return encode_header(rtype, data) + bytes(data)


def append(out: bytearray, rtype: bytes, data) -> None:
    """out += encode(rtype, data), without the intermediate bytes."""
    out += encode_header(rtype, data)
    out += data


def decode_header(buf, offset: int = 0) -> tuple[bytes, int, int]:
    """Parse 9 header bytes; offset is only for the error message."""
    if len(buf) < HEADER_LEN:
        raise CorruptRecord(offset, "truncated record header")
    rtype, length, crc = HEADER.unpack_from(buf)
    t = rtype[0]
    limit = _MAX_BY_ORD.get(t)
    if limit is None:
        raise CorruptRecord(offset, f"unknown record type {rtype!r}")
    if length > limit or length < _MIN_BY_ORD.get(t, 0):
        raise CorruptRecord(offset, f"record {rtype.decode('latin-1')}: bad length {length}")
    return rtype, length, crc


def check_crc(rtype: bytes, length: int, crc: int, data, offset: int = 0) -> None:
    if _crc(rtype[0], length, data) != crc:
        raise CorruptRecord(offset, f"record {rtype.decode('latin-1')}: CRC mismatch")


def encode_size(content_size: int, content_offset: int, rcpt_count: int, flags: int) -> bytes:
    values = (content_size, content_offset, rcpt_count, flags)
    if any(v < 0 or v > SIZE_FIELD_MAX for v in values):
        raise ValueError(f"size record value out of range: {values}")
    return (SIZE_FORMAT % values).encode("ascii")


def decode_size(data: bytes, offset: int = 0) -> tuple[int, int, int, int]:
    """Parse the fixed-width size record; CorruptRecord if malformed."""
    if len(data) != SIZE_DATA_LEN:
        raise CorruptRecord(offset, "bad size record length")
    values = []
    for i in range(SIZE_FIELDS):
        start = i * (SIZE_FIELD_WIDTH + 1)
        field = data[start:start + SIZE_FIELD_WIDTH]
        digits = field.lstrip(b" ")
        if not digits or not digits.isdigit() or not digits.isascii():
            raise CorruptRecord(offset, "malformed size record")
        if i < SIZE_FIELDS - 1 and data[start + SIZE_FIELD_WIDTH] != 0x20:
            raise CorruptRecord(offset, "malformed size record")
        values.append(int(digits))
    return tuple(values)  # type: ignore[return-value]


class RecordReader:
    """Iterate over (offset, rtype, data) from bytes or a binary file.

    ``source`` is a bytes-like object (records start at ``offset`` in it) or
    a file object already positioned at ``offset`` (offset is then only the
    number reported).  Iteration ends at ``end`` or, if ``end`` is None, at
    the end of the input; ending anywhere else raises CorruptRecord.
    """

    def __init__(self, source, offset: int = 0, end: int | None = None):
        self._offset = offset
        self._end = end
        if isinstance(source, (bytes, bytearray, memoryview)):
            # bytes: the fast path of read() (qmgr reads every envelope).
            self._buf = source if type(source) is bytes else bytes(source)
            self._file: BinaryIO | None = None
            if end is None:
                self._end = len(self._buf)
        else:
            self._buf = None
            self._file = source

    @property
    def offset(self) -> int:
        """Offset of the next record."""
        return self._offset

    def __iter__(self) -> Iterator[tuple[int, bytes, bytes]]:
        return self

    def __next__(self) -> tuple[int, bytes, bytes]:
        rec = self.read()
        if rec is None:
            raise StopIteration
        return rec

    def read(self) -> tuple[int, bytes, bytes] | None:
        """The next record, or None at the clean end."""
        buf = self._buf
        if buf is not None:
            return self._read_buffer(buf)
        off = self._offset
        end = self._end
        if end is not None:
            if off == end:
                return None
            if end - off < HEADER_LEN:
                raise CorruptRecord(off, "truncated record header")
        head = self._file.read(HEADER_LEN)
        if not head and end is None:
            return None
        rtype, length, crc = decode_header(head, off)
        start = off + HEADER_LEN
        if end is not None and start + length > end:
            raise CorruptRecord(off, f"record {rtype.decode('latin-1')}: truncated data")
        data = self._file.read(length) if length else b""
        if len(data) != length:
            raise CorruptRecord(off, f"record {rtype.decode('latin-1')}: truncated data")
        check_crc(rtype, length, crc, data, off)
        self._offset = start + length
        return off, rtype, data

    def _read_buffer(self, buf: bytes) -> tuple[int, bytes, bytes] | None:
        # The same checks as decode_header() and check_crc(), inlined: the
        # CRC's 5 header bytes are the record's own type and length, except
        # that a D record is checked as the R it was written as.
        off = self._offset
        end = self._end
        if off == end:
            return None
        if end - off < HEADER_LEN or len(buf) - off < HEADER_LEN:
            raise CorruptRecord(off, "truncated record header")
        rtype, length, crc = _unpack_header(buf, off)
        t = rtype[0]
        limit = _MAX_BY_ORD.get(t)
        if limit is None:
            raise CorruptRecord(off, f"unknown record type {rtype!r}")
        if length > limit or length < _MIN_BY_ORD.get(t, 0):
            raise CorruptRecord(off, f"record {rtype.decode('latin-1')}: bad length {length}")
        start = off + HEADER_LEN
        stop = start + length
        if stop > end or stop > len(buf):
            raise CorruptRecord(off, f"record {rtype.decode('latin-1')}: truncated data")
        data = buf[start:stop]
        if t == _DONE_ORD:
            head_crc = zlib.crc32(buf[off + 1:off + 5], _R_CRC)
        else:
            head_crc = zlib.crc32(buf[off:off + 5])
        if zlib.crc32(data, head_crc) != crc:
            raise CorruptRecord(off, f"record {rtype.decode('latin-1')}: CRC mismatch")
        self._offset = stop
        return off, rtype, data

    def expect(self, rtype: bytes) -> tuple[int, bytes]:
        """Read one record that must be of type rtype; (offset, data)."""
        off = self._offset
        rec = self.read()
        if rec is None:
            raise CorruptRecord(off, f"missing record {rtype.decode('latin-1')}")
        if rec[1] != rtype:
            raise CorruptRecord(
                off, f"expected record {rtype.decode('latin-1')}, found {rec[1].decode('latin-1')}"
            )
        return rec[0], rec[2]
