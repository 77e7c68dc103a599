"""The record codec: encode/decode, limits, CRC, and a reader that only
ever raises CorruptRecord on bad input."""

import io
import zlib

import pytest
from hypothesis import given, strategies as st

from fulmar.queue import records as rec

TYPES = list(rec.MAX_DATA)


def _record_strategy():
    """(type, data) for every type but the fixed-width size record."""
    def build(t):
        lo = rec.MIN_DATA.get(t, 0)
        hi = min(rec.MAX_DATA[t], 300)
        return st.tuples(st.just(t), st.binary(min_size=lo, max_size=hi))
    simple = [t for t in TYPES if t != rec.REC_SIZE]
    return st.sampled_from(simple).flatmap(build)


def test_record_layout():
    r = rec.encode(rec.REC_FROM, b"a@b")
    assert r[:1] == b"S"
    assert int.from_bytes(r[1:5], "big") == 3
    crc = zlib.crc32(b"a@b", zlib.crc32(b"S" + (3).to_bytes(4, "big")))
    assert int.from_bytes(r[5:9], "big") == crc
    assert r[9:] == b"a@b"


def test_done_has_the_crc_of_pending():
    r = rec.encode(rec.REC_RCPT, b"x@y\0\0\0" + b"0")
    d = rec.encode(rec.REC_DONE, b"x@y\0\0\0" + b"0")
    assert r[1:] == d[1:]
    assert list(rec.RecordReader(b"D" + r[1:])) == [(0, b"D", b"x@y\0\0\0" + b"0")]


def test_other_type_change_is_detected():
    r = bytearray(rec.encode(rec.REC_RCPT, b"x@y\0\0\0" + b"0"))
    r[0] = ord("S")
    with pytest.raises(rec.CorruptRecord, match="CRC"):
        list(rec.RecordReader(bytes(r)))


def test_check_crc_of_an_unknown_type_is_a_corrupt_record():
    with pytest.raises(rec.CorruptRecord, match="CRC mismatch"):
        rec.check_crc(b"Z", 3, 0, b"abc")


def test_limits():
    with pytest.raises(ValueError):
        rec.encode(rec.REC_BLOCK, b"x" * (rec.MAX_BLOCK + 1))
    with pytest.raises(ValueError):
        rec.encode(rec.REC_BLOCK, b"")
    with pytest.raises(ValueError):
        rec.encode(rec.REC_END, b"x")
    with pytest.raises(ValueError):
        rec.encode(b"Q", b"")
    rec.encode(rec.REC_BLOCK, b"x" * rec.MAX_BLOCK)
    # A header that claims too much is refused before any data is read.
    head = rec.HEADER.pack(rec.REC_FROM, rec.MAX_ADDRESS_RECORD + 1, 0)
    with pytest.raises(rec.CorruptRecord, match="bad length"):
        rec.decode_header(head)


@given(_record_strategy())
def test_append_is_encode(item):
    t, data = item
    out = bytearray(b"before")
    rec.append(out, t, data)
    assert out == b"before" + rec.encode(t, data)


def test_append_checks_as_encode():
    for t, data in ((rec.REC_BLOCK, b"x" * (rec.MAX_BLOCK + 1)), (rec.REC_BLOCK, b""),
                    (rec.REC_END, b"x"), (b"Q", b""), (rec.REC_SIZE, b"1")):
        out = bytearray(b"kept")
        with pytest.raises(ValueError):
            rec.append(out, t, data)
        assert out == b"kept"


def test_size_record():
    data = rec.encode_size(312, 180, 1, 0)
    assert len(data) == rec.SIZE_DATA_LEN == 63
    assert data == b"%15d %15d %15d %15d" % (312, 180, 1, 0)
    assert rec.decode_size(data) == (312, 180, 1, 0)
    for bad in (b" " * 63, data.replace(b"312", b"3a2"), data[:-1] + b"-",
                data.replace(b" 180", b"+180")):
        with pytest.raises(rec.CorruptRecord):
            rec.decode_size(bad)


@given(st.lists(_record_strategy(), max_size=8))
def test_round_trip_bytes_and_file(items):
    blob = b"".join(rec.encode(t, d) for t, d in items)
    got = [(t, d) for _, t, d in rec.RecordReader(blob)]
    assert got == [(t, bytes(d)) for t, d in items]
    got = [(t, d) for _, t, d in rec.RecordReader(io.BytesIO(blob))]
    assert got == [(t, bytes(d)) for t, d in items]
    offsets = [o for o, _, _ in rec.RecordReader(blob)]
    expect, pos = [], 0
    for t, d in items:
        expect.append(pos)
        pos += rec.HEADER_LEN + len(d)
    assert offsets == expect


@given(st.binary(max_size=200))
def test_reader_on_garbage_raises_only_corrupt_record(blob):
    for source in (blob, io.BytesIO(blob)):
        try:
            for _ in rec.RecordReader(source):
                pass
        except rec.CorruptRecord:
            pass


@given(st.lists(_record_strategy(), min_size=1, max_size=4), st.data())
def test_truncation_is_corrupt(items, data):
    blob = b"".join(rec.encode(t, d) for t, d in items)
    cut = data.draw(st.integers(1, len(blob) - 1)) if len(blob) > 1 else 0
    boundaries, pos = {0}, 0
    for t, d in items:
        pos += rec.HEADER_LEN + len(d)
        boundaries.add(pos)
    if cut in boundaries:
        return
    with pytest.raises(rec.CorruptRecord):
        list(rec.RecordReader(blob[:cut]))
    with pytest.raises(rec.CorruptRecord):
        list(rec.RecordReader(io.BytesIO(blob[:cut])))
    with pytest.raises(rec.CorruptRecord):
        list(rec.RecordReader(blob, 0, cut))


def test_expect():
    blob = rec.encode(rec.REC_MESG) + rec.encode(rec.REC_XTRA)
    r = rec.RecordReader(blob)
    assert r.expect(rec.REC_MESG) == (0, b"")
    with pytest.raises(rec.CorruptRecord, match="expected record E"):
        r.expect(rec.REC_END)
    with pytest.raises(rec.CorruptRecord, match="missing record"):
        rec.RecordReader(b"").expect(rec.REC_END)


def test_buffer_shorter_than_end_is_truncation_not_the_end():
    blob = rec.encode(rec.REC_FROM, b"a@b") + rec.encode(rec.REC_RCPT, b"c@d\0\0\0" + b"0")
    for cut in range(1, len(blob)):
        with pytest.raises(rec.CorruptRecord):
            list(rec.RecordReader(blob[:cut], 0, len(blob)))
    assert [t for _, t, _ in rec.RecordReader(blob, 0, len(blob))] == [rec.REC_FROM, rec.REC_RCPT]
