"""fulmar.ipc.frames: round trips, limits, and hostile input."""

import json
import struct

import pytest
from hypothesis import given, settings, strategies as st

from fulmar.ipc import frames
from fulmar.ipc.frames import Frame, FrameDecoder, FrameError


def decode_all(data, chunks=None):
    dec = FrameDecoder()
    out = []
    if chunks is None:
        out += dec.feed(data)
    else:
        pos = 0
        for size in chunks:
            out += dec.feed(data[pos:pos + size])
            pos += size
        out += dec.feed(data[pos:])
    assert dec.pending == 0
    return out


def test_attr_round_trip():
    attrs = {"request": "deliver", "id": 7, "ok": True, "none": None,
             "t": 1.5, "name": "r\u00e9sum\u00e9 \U0001f600",
             "recipients": [{"address": "a@b", "offset": 12}, "x", 3]}
    wire = frames.encode_attr(attrs)
    assert wire[:1] == b"A"
    assert struct.unpack(">I", wire[1:5])[0] == len(wire) - 5
    assert decode_all(wire) == [Frame("A", attrs)]


def test_attr_encoding_is_compact_json():
    wire = frames.encode_attr({"a": 1, "b": "c"})
    assert wire[5:] == b'{"a":1,"b":"c"}'


def test_record_round_trip():
    wire = frames.encode_record(b"B", b"line\r\n")
    assert wire == b"R\x00\x00\x00\x07Bline\r\n"
    assert decode_all(wire) == [Frame("R", None, b"B", b"line\r\n")]
    assert decode_all(frames.encode_record(b"E", b"")) == [
        Frame("R", None, b"E", b"")]


def test_stream_of_frames_in_order():
    wire = (frames.encode_attr({"id": 1}) + frames.encode_record(b"S", b"a")
            + frames.encode_record(b"B", b"x" * 65536)
            + frames.encode_attr({"id": 2}))
    got = decode_all(wire)
    assert [f.kind for f in got] == ["A", "R", "R", "A"]
    assert got[2].data == b"x" * 65536
    assert got[3].attrs == {"id": 2}


def test_largest_frames_accepted():
    data = b"y" * (frames.MAX_RECORD_PAYLOAD - 1)
    assert decode_all(frames.encode_record(b"B", data))[0].data == data
    filler = "z" * (frames.MAX_ATTR_PAYLOAD - len('{"a":""}'))
    wire = frames.encode_attr({"a": filler})
    assert len(wire) - 5 == frames.MAX_ATTR_PAYLOAD
    assert decode_all(wire)[0].attrs["a"] == filler


def test_encode_refuses_oversize_and_bad_values():
    with pytest.raises(FrameError, match="too large"):
        frames.encode_record(b"B", b"y" * frames.MAX_RECORD_PAYLOAD)
    with pytest.raises(FrameError, match="too large"):
        frames.encode_attr({"a": "z" * frames.MAX_ATTR_PAYLOAD})
    with pytest.raises(FrameError):
        frames.encode_attr({"a": object()})
    with pytest.raises(FrameError):
        frames.encode_attr({"a": float("nan")})
    with pytest.raises(FrameError):
        frames.encode_attr({"a": "\udc80"})
    with pytest.raises(FrameError, match="one byte"):
        frames.encode_record(b"BB", b"")


def test_oversize_length_refused_from_header_alone():
    dec = FrameDecoder()
    header = struct.pack(">BI", ord("R"), frames.MAX_RECORD_PAYLOAD + 1)
    with pytest.raises(FrameError, match="record frame too large"):
        dec.feed(header)          # no payload byte sent at all
    assert dec.pending == 0
    dec = FrameDecoder()
    with pytest.raises(FrameError, match="attribute frame too large"):
        dec.feed(struct.pack(">BI", ord("A"), 0xFFFFFFFF))


def test_header_split_across_feeds_is_still_checked_early():
    dec = FrameDecoder()
    header = struct.pack(">BI", ord("A"), frames.MAX_ATTR_PAYLOAD + 1)
    assert dec.feed(header[:2]) == []
    with pytest.raises(FrameError):
        dec.feed(header[2:])


def test_unknown_kind_refused_at_first_byte():
    with pytest.raises(FrameError, match="unknown frame kind 0x5a"):
        FrameDecoder().feed(b"Z")


def test_decoder_stays_failed():
    dec = FrameDecoder()
    with pytest.raises(FrameError):
        dec.feed(b"Q\x00\x00\x00\x00")
    with pytest.raises(FrameError):
        dec.feed(frames.encode_attr({"id": 1}))


@pytest.mark.parametrize("payload, reason", [
    (b"[1,2]", "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (b"{", "bad attribute frame"),
    (b"\xff{}", "bad attribute frame"),
    (b'{"a":{"b":1}}', "nested object"),
    (b'{"a":[[1]]}', "nested list"),
    (b'{"a":[{"b":[1]}]}', "non-scalar"),
    (b'{"a":[{"b":{}}]}', "non-scalar"),
    (b'{"a":NaN}', "NaN"),
    (b'{"a":Infinity}', "Infinity"),
    (b'{"a":1e400}', "out of range"),
    (b'{"a":"\\ud800"}', "lone surrogate"),
    (b'{"a":' + b"1" * 5000 + b"}", "bad attribute frame"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply|not a JSON object"),
])
def test_bad_attribute_payloads(payload, reason):
    wire = struct.pack(">BI", ord("A"), len(payload)) + payload
    with pytest.raises(FrameError, match=reason):
        FrameDecoder().feed(wire)


def test_escaped_surrogate_pair_is_fine():
    payload = b'{"a":"\\ud83d\\ude00"}'
    wire = struct.pack(">BI", ord("A"), len(payload)) + payload
    assert FrameDecoder().feed(wire)[0].attrs == {"a": "\U0001f600"}


def test_empty_record_refused():
    with pytest.raises(FrameError, match="without a record type"):
        FrameDecoder().feed(b"R\x00\x00\x00\x00")


def test_decoder_accepts_reused_buffer():
    # The channel hands the decoder a view of one reused receive buffer:
    # frames must not change when that buffer is overwritten later.
    buf = bytearray(64)
    wire = frames.encode_record(b"B", b"abc") + frames.encode_attr({"k": 1})
    buf[:len(wire)] = wire
    dec = FrameDecoder()
    got = dec.feed(memoryview(buf)[:12])
    buf[:] = b"\0" * 64
    rest = wire[12:]
    buf[:len(rest)] = rest
    got += dec.feed(memoryview(buf)[:len(rest)])
    buf[:] = b"\0" * 64
    assert got == [Frame("R", None, b"B", b"abc"), Frame("A", {"k": 1})]


# -- hypothesis ---------------------------------------------------------

scalars = (st.none() | st.booleans()
           | st.integers(min_value=-2**63, max_value=2**63)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=20))
attr_objects = st.dictionaries(
    st.text(max_size=10),
    scalars | st.lists(scalars | st.dictionaries(st.text(max_size=5),
                                                scalars, max_size=3),
                       max_size=3),
    max_size=6)
one_frame = (attr_objects.map(lambda a: ("A", a))
             | st.tuples(st.sampled_from([b"B", b"R", b"E", b"\x00"]),
                         st.binary(max_size=300)).map(lambda t: ("R", t)))


def encode(item):
    kind, value = item
    if kind == "A":
        return frames.encode_attr(value)
    return frames.encode_record(*value)


def expected(item):
    kind, value = item
    if kind == "A":
        return Frame("A", value)
    return Frame("R", None, value[0], value[1])


@settings(max_examples=300)
@given(st.lists(one_frame, max_size=8), st.lists(st.integers(0, 60)))
def test_any_chunking_decodes_identically(items, chunks):
    wire = b"".join(encode(i) for i in items)
    assert decode_all(wire, chunks) == [expected(i) for i in items]


@settings(max_examples=500)
@given(st.binary(max_size=200), st.lists(st.integers(0, 30), max_size=10))
def test_random_bytes_only_frame_error(data, chunks):
    dec = FrameDecoder()
    pos = 0
    try:
        for size in chunks + [len(data)]:
            for frame in dec.feed(data[pos:pos + size]):
                assert frame.kind in ("A", "R")
            pos += size
    except FrameError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=100))
def test_random_attr_payload_only_frame_error(payload):
    wire = struct.pack(">BI", ord("A"), len(payload)) + payload
    try:
        got = FrameDecoder().feed(wire)
    except FrameError:
        return
    # Whatever is accepted can be sent on again unchanged.
    assert decode_all(frames.encode_attr(got[0].attrs)) == got


@settings(max_examples=200)
@given(st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner,
                                      max_size=3), max_leaves=10))
def test_random_json_only_frame_error(value):
    payload = json.dumps(value).encode()
    wire = struct.pack(">BI", ord("A"), len(payload)) + payload
    try:
        FrameDecoder().feed(wire)
    except FrameError:
        pass
