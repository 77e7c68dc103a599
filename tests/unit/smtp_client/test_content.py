"""Dot-stuffing of queue-file content across block boundaries."""

from hypothesis import given, strategies as st

from smtp_client.protocol import ContentEncoder


def stuff(blocks):
    enc = ContentEncoder()
    return b"".join(enc.encode(b) for b in blocks) + enc.finish()


def unstuff(wire: bytes) -> bytes:
    """RFC 5321 §4.5.2 receiver side: lines end at CRLF, '.' removed."""
    assert wire.endswith(b".\r\n")
    lines = wire.split(b"\r\n")
    assert lines[-1] == b"" and lines[-2] == b"."
    body = [ln[1:] if ln.startswith(b".") else ln for ln in lines[:-2]]
    # No line before the end is a lone ".": the message cannot end early.
    assert all(ln != b"." for ln in lines[:-2])
    return b"".join(ln + b"\r\n" for ln in body)


def test_simple():
    assert stuff([b".a\r\n.\r\nb\r\n"]) == b"..a\r\n..\r\nb\r\n.\r\n"


def test_boundaries():
    assert stuff([b"a\r\n", b".b\r\n"]) == b"a\r\n..b\r\n.\r\n"
    assert stuff([b"a\r", b"\n.b\r\n"]) == b"a\r\n..b\r\n.\r\n"
    assert stuff([b"a\r", b"\n", b".b"]) == b"a\r\n..b\r\n.\r\n"
    assert stuff([b"a\r\n", b".", b"\r\n"]) == b"a\r\n..\r\n.\r\n"


def test_end_of_data_forms():
    assert stuff([]) == b".\r\n"
    assert stuff([b"x"]) == b"x\r\n.\r\n"
    assert stuff([b"x\r\n"]) == b"x\r\n.\r\n"
    assert stuff([b"x\r"]) == b"x\r\n.\r\n"


line = st.builds(lambda a, b: a + b, st.sampled_from([b"", b".", b"..", b".\r"]),
                 st.binary(max_size=8).filter(lambda b: b"\r\n" not in b))


@given(st.lists(line, max_size=12), st.lists(st.integers(0, 200), max_size=6))
def test_stuffed_then_unstuffed_is_original(lines, cuts):
    content = b"".join(ln + b"\r\n" for ln in lines)
    points = sorted({c % (len(content) + 1) for c in cuts})
    blocks, prev = [], 0
    for p in points + [len(content)]:
        blocks.append(content[prev:p])
        prev = p
    assert unstuff(stuff(blocks)) == content


@given(st.binary(max_size=200), st.integers(1, 50))
def test_any_bytes_never_end_early(data, size):
    blocks = [data[i:i + size] for i in range(0, len(data), size)]
    wire = stuff(blocks)
    assert wire.endswith(b".\r\n")
    assert b"\r\n.\r\n" not in wire[:-5]
    body = unstuff(wire)
    assert body == data if data.endswith(b"\r\n") or not data else body.startswith(data)
