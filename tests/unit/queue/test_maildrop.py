"""Maildrop streams: write/read round trip and hostile input."""

import io
import os

import pytest
from hypothesis import given, settings, strategies as st

from fulmar.queue import layout, maildrop
from fulmar.queue import records as rec


def stream(sender="a@b", rcpts=("c@d",), body=b"Subject: x\r\n\r\nhi\r\n", attrs=None) -> bytes:
    out = io.BytesIO()
    w = maildrop.StreamWriter(out)
    w.envelope(sender, [maildrop.encode_recipient(r) for r in rcpts], attrs or {"submit_uid": "5"}, 1.5)
    w.content(body)
    w.finish()
    return out.getvalue()


def read_all(data: bytes, limits=maildrop.Limits()):
    return list(maildrop.read_stream(io.BytesIO(data), limits))


def test_round_trip_and_blocking():
    body = b"x" * (rec.MAX_BLOCK * 2 + 10)
    recs = read_all(stream(body=body))
    types = [t for t, _ in recs]
    assert types == [b"V", b"T", b"A", b"S", b"R", b"M", b"B", b"B", b"B", b"X", b"E"]
    assert b"".join(d for t, d in recs if t == b"B") == body
    assert [len(d) for t, d in recs if t == b"B"] == [rec.MAX_BLOCK, rec.MAX_BLOCK, 10]
    assert recs[1] == (b"T", b"1.500000")


def test_stream_ends_with_the_postdrop_end_record():
    # postdrop.c compares the last 9 bytes with this constant.
    assert stream().endswith(bytes.fromhex("450000000056312024"))


@pytest.mark.parametrize("cut", [1, 9, 20, -1, -9, -10])
def test_truncated(cut):
    data = stream()
    with pytest.raises(maildrop.BadMaildropFile):
        read_all(data[:cut])


def test_trailing_data_and_bad_order():
    with pytest.raises(maildrop.BadMaildropFile, match="after the end"):
        read_all(stream() + b"x")
    bad = rec.encode(b"S", b"a") + stream()
    with pytest.raises(maildrop.BadMaildropFile, match="unexpected record"):
        read_all(bad)
    with pytest.raises(maildrop.BadMaildropFile, match="version"):
        read_all(rec.encode(b"V", b"other 1") + stream()[len(rec.encode(b"V", maildrop.VERSION)):])


def test_limits():
    with pytest.raises(maildrop.BadMaildropFile, match="too many recipients"):
        read_all(stream(rcpts=["a@b"] * 3), maildrop.Limits(max_recipients=2))
    with pytest.raises(maildrop.BadMaildropFile, match="too many attribute"):
        read_all(stream(attrs={f"a{i}": "x" for i in range(5)}), maildrop.Limits(max_attrs=4))
    with pytest.raises(maildrop.BadMaildropFile, match="larger than"):
        read_all(stream(body=b"x" * 100), maildrop.Limits(max_content=50))


def test_huge_length_is_refused_without_allocation():
    data = bytearray(stream())
    # Make the sender record claim 2**31 bytes.
    off = data.index(b"S")
    data[off + 1:off + 5] = (2 ** 31).to_bytes(4, "big")
    with pytest.raises(maildrop.BadMaildropFile):
        read_all(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=300))
def test_hostile_bytes_never_crash(noise, pos):
    data = bytearray(stream())
    pos = min(pos, len(data))
    data[pos:pos + len(noise)] = noise
    try:
        read_all(bytes(data))
    except maildrop.BadMaildropFile:
        pass


def test_direct_file(tmp_path):
    layout.create(str(tmp_path))
    f = maildrop.DirectFile(str(tmp_path))
    f.file.write(stream())
    path = f.commit()
    assert os.path.dirname(path) == str(tmp_path / "maildrop")
    assert os.stat(path).st_mode & 0o777 == maildrop.FILE_MODE
    assert os.listdir(tmp_path / "maildrop") == [os.path.basename(path)]
    with open(path, "rb") as fh:
        assert read_all(fh.read())[-1] == (b"E", b"")
    g = maildrop.DirectFile(str(tmp_path))
    g.abort()
    assert len(os.listdir(tmp_path / "maildrop")) == 1
