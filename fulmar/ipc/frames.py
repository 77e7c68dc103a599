"""IPC frame codec (sans-IO): bytes in, frames out, and back.

NAME
    fulmar.ipc.frames - the framing every Fulmar IPC channel speaks

SYNOPSIS
    from fulmar.ipc import frames
    wire = frames.encode_attr({"request": "open", "id": 1})
    wire += frames.encode_record(b"B", b"Subject: hi\\r\\n")
    dec = frames.FrameDecoder()
    for frame in dec.feed(wire):       # any chunking of the stream
        frame.kind                     # "A" or "R"
        frame.attrs                    # dict (kind "A"), else None
        frame.rtype, frame.data        # bytes, bytes (kind "R"), else None

DESCRIPTION
    A frame is

        kind (1 byte) | length (4 bytes, big-endian) | payload (length bytes)

    kind "A" (attribute frame): the payload is one UTF-8 JSON object whose
    values are scalars (string, integer, finite number, boolean, null) or
    lists whose items are scalars or objects of scalars.  At most
    MAX_ATTR_PAYLOAD bytes.

    kind "R" (record frame): the payload is one queue-file record without
    its length and CRC: a type byte followed by the record data.  At most
    MAX_RECORD_PAYLOAD bytes, so a 64 KiB content block fits with room.

    The limits are part of the wire protocol (docs/internals.md, "IPC"),
    not tunables: both ends must agree on them.

    encode_attr(obj) -> bytes and encode_record(rtype, data) -> bytes build
    one frame each.  record_header(rtype, size) builds only the 6 bytes that
    precede the data, so that a writer can send a large block without
    copying it.  FrameDecoder.feed(data) returns the frames completed by
    data, in order, keeping any partial frame for the next call.

DIAGNOSTICS
    Everything wrong with the input raises FrameError (a ValueError) with a
    one-line reason fit for a log line: an unknown kind byte, a length
    above the kind's limit (detected from the 5-byte header alone, before
    any of the payload is buffered), an empty record, a payload that is not
    UTF-8, not JSON, not an object, or holds a value of the wrong shape.
    After a FrameError the decoder is poisoned: every later feed() raises
    the same error, because the stream can no longer be re-synchronised.
    Nothing else is ever raised for any input (a hypothesis test feeds
    random bytes).  encode_* raise FrameError for values that cannot be
    sent (too large, not JSON-encodable, not UTF-8-encodable).
"""

import json
import math
import re
import struct
from collections import namedtuple

KIND_ATTR = "A"
KIND_RECORD = "R"
_KIND_ATTR_BYTE = ord(KIND_ATTR)
_KIND_RECORD_BYTE = ord(KIND_RECORD)

MAX_ATTR_PAYLOAD = 1024 * 1024
# A content record carries up to 64 KiB of message; the rest is headroom
# for the type byte and for non-content records.
MAX_RECORD_PAYLOAD = 70 * 1024

HEADER = struct.Struct(">BI")
HEADER_SIZE = HEADER.size

_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


class FrameError(ValueError):
    """The byte stream or a value is not a valid frame; str() says why."""


# One decoded frame: kind "A" carries attrs, kind "R" rtype and data.
# (collections.namedtuple, not typing.NamedTuple: typing costs start-up
# time in every command that wakes a daemon.)
Frame = namedtuple("Frame", "kind attrs rtype data", defaults=(None, None, None))


def _reject_constant(name):
    raise FrameError("JSON constant %s is not allowed" % name)


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise FrameError("number out of range: %.40s" % text)
    return value


# Prebuilt coder objects: json.dumps/json.loads with non-default arguments
# build a new encoder or decoder on every call.
_encode_json = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_decode_json = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float).decode

_SCALAR_TYPES = frozenset((str, int, float, bool, type(None)))
# Only a \\uD800-\\uDFFF escape can smuggle a lone surrogate past the strict
# UTF-8 decode; such a string could never be written out again.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def encode_attr(obj: dict) -> bytes:
    """Return the attribute frame for obj (a dict of JSON-able values)."""
    try:
        payload = _encode_json(obj).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise FrameError("cannot encode attributes: %s" % exc) from None
    if len(payload) > MAX_ATTR_PAYLOAD:
        raise FrameError("attribute frame too large: %d bytes (limit %d)"
                         % (len(payload), MAX_ATTR_PAYLOAD))
    return _pack_header(_KIND_ATTR_BYTE, len(payload)) + payload


def record_header(rtype: bytes, size: int) -> bytes:
    """Return the bytes preceding size bytes of record data of type rtype."""
    if len(rtype) != 1:
        raise FrameError("record type must be one byte, not %r" % (rtype,))
    if size + 1 > MAX_RECORD_PAYLOAD:
        raise FrameError("record frame too large: %d bytes (limit %d)"
                         % (size + 1, MAX_RECORD_PAYLOAD))
    return _pack_header(_KIND_RECORD_BYTE, size + 1) + rtype


def encode_record(rtype: bytes, data: bytes) -> bytes:
    """Return the record frame for one record of type rtype."""
    return record_header(rtype, len(data)) + data


def check_attrs(obj) -> dict:
    """Return obj if it has the shape of an attribute frame's object."""
    if type(obj) is not dict:
        raise FrameError("attribute frame is not a JSON object")
    scalar = _SCALAR_TYPES
    if scalar.issuperset(map(type, obj.values())):
        return obj              # the usual frame, checked without a Python loop
    for name, value in obj.items():
        if type(value) in scalar:
            continue
        if type(value) is not list:
            raise FrameError("attribute %.100r: nested object not allowed"
                             % name)
        for item in value:
            if type(item) in scalar:
                continue
            if type(item) is not dict:
                raise FrameError("attribute %.100r: nested list not allowed"
                                 % name)
            for sub in item.values():
                if type(sub) not in scalar:
                    raise FrameError(
                        "attribute %.100r: list item has a non-scalar value"
                        % name)
    return obj


def decode_attr_payload(payload) -> dict:
    """Decode and check one attribute payload (bytes-like)."""
    try:
        text = str(payload, "utf-8")
        obj = _decode_json(text)
    except FrameError:
        raise
    except RecursionError:
        raise FrameError("attribute frame nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError, UnicodeDecodeError, int digit limits
        raise FrameError("bad attribute frame: %s"
                         % str(exc).split("\n", 1)[0][:200]) from None
    check_attrs(obj)
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        try:
            _encode_json(obj).encode("utf-8")
        except UnicodeEncodeError:
            raise FrameError("attribute frame has a lone surrogate") from None
    return obj


class FrameDecoder:
    """Incremental decoder: feed() bytes, get complete frames back.

    Bytes are copied out of data only into the frames themselves and, for
    a frame that data leaves incomplete, into a buffer holding just that
    frame; data may therefore be a reused receive buffer.
    """

    __slots__ = ("_buf", "_error")

    def __init__(self):
        self._buf = bytearray()
        self._error = None

    @property
    def pending(self) -> int:
        """Number of bytes of an incomplete frame held (0 at a boundary)."""
        return len(self._buf)

    def _fail(self, reason):
        self._error = reason
        self._buf = bytearray()
        raise FrameError(reason)

    def _check_header(self, kind, length):
        if kind == _KIND_ATTR_BYTE:
            if length > MAX_ATTR_PAYLOAD:
                self._fail("attribute frame too large: %d bytes (limit %d)"
                           % (length, MAX_ATTR_PAYLOAD))
        elif kind == _KIND_RECORD_BYTE:
            if length > MAX_RECORD_PAYLOAD:
                self._fail("record frame too large: %d bytes (limit %d)"
                           % (length, MAX_RECORD_PAYLOAD))
            if length == 0:
                self._fail("record frame without a record type")
        else:
            self._fail("unknown frame kind 0x%02x" % kind)

    def _frame(self, src, kind, start, end):
        if kind == _KIND_ATTR_BYTE:
            try:
                return Frame(KIND_ATTR, decode_attr_payload(src[start:end]))
            except FrameError as exc:
                self._fail(str(exc))
        return Frame(KIND_RECORD, None, bytes(src[start:start + 1]),
                     bytes(src[start + 1:end]))

    def feed(self, data) -> list:
        """Return the frames that data completes; raise FrameError."""
        if self._error is not None:
            raise FrameError(self._error)
        frames = []
        pos = 0
        size = len(data)
        buf = self._buf
        if buf:
            # Complete the held frame, taking no more of data than it needs.
            if len(buf) < HEADER_SIZE:
                pos = min(HEADER_SIZE - len(buf), size)
                buf += data[:pos]
                if len(buf) < HEADER_SIZE:
                    return frames
            kind, length = _unpack_header(buf)
            self._check_header(kind, length)
            take = min(HEADER_SIZE + length - len(buf), size - pos)
            buf += data[pos:pos + take]
            pos += take
            if len(buf) < HEADER_SIZE + length:
                return frames
            with memoryview(buf) as view:
                frames.append(self._frame(view, kind, HEADER_SIZE, len(buf)))
            self._buf = buf = bytearray()
        append = frames.append
        while True:
            left = size - pos
            if left < HEADER_SIZE:
                if left:
                    if data[pos] not in (_KIND_ATTR_BYTE, _KIND_RECORD_BYTE):
                        self._fail("unknown frame kind 0x%02x" % data[pos])
                    buf += data[pos:]
                return frames
            kind, length = _unpack_header(data, pos)
            start = pos + HEADER_SIZE
            end = start + length
            if kind == _KIND_RECORD_BYTE and 0 < length <= MAX_RECORD_PAYLOAD and end <= size:
                # A whole record frame (most frames): _frame() inlined.
                append(Frame(KIND_RECORD, None, bytes(data[start:start + 1]),
                             bytes(data[start + 1:end])))
                pos = end
                continue
            self._check_header(kind, length)
            if end > size:
                buf += data[pos:]
                return frames
            append(self._frame(data, kind, start, end))
            pos = end
