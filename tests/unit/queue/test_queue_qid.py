"""Queue IDs: Postfix long form, parsing, validation, hash directories."""

import re

import pytest
from hypothesis import given, strategies as st

from fulmar.queue import qid

MAX_TIME = 52 ** 8 - 1          # well past any real clock
MAX_INODE = 2 ** 64 - 1


def test_alphabet_is_postfix_safe_alphabet():
    assert qid.ALPHABET == "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
    assert len(qid.ALPHABET) == 52
    assert not set("AEIOUaeiou") & set(qid.ALPHABET)
    assert list(qid.ALPHABET) == sorted(qid.ALPHABET)   # string order = value order


def test_known_postfix_id():
    # 3Pt2mN2VXxznjll: the example in Postfix's documentation.
    sec, usec, inode = qid.parse("3Pt2mN2VXxznjll")
    assert qid.from_parts(sec, usec, inode) == "3Pt2mN2VXxznjll"
    assert (sec, usec) == (qid._decode("3Pt2mN", 52), qid._decode("2VXx", 52))
    assert inode == qid._decode("njll", 51)


def test_layout_of_a_new_id():
    q = qid.new_queue_id(1, t=1_700_000_000.25)
    assert re.fullmatch(r"[0-9B-Zb-z]{6}[0-9B-Zb-z]{4}z1", q)
    assert qid.parse(q) == (1_700_000_000, 250_000, 1)
    assert qid.time_of(q) == 1_700_000_000.25


@given(st.integers(0, MAX_TIME), st.integers(0, 999_999), st.integers(0, MAX_INODE))
def test_round_trip(sec, usec, inode):
    q = qid.from_parts(sec, usec, inode)
    assert qid.parse(q) == (sec, usec, inode)
    assert qid.is_queue_id(q)
    assert qid.name_ok(q)
    assert len(q) >= qid.LG_TIME_PAD + 2


@given(st.integers(0, 52 ** 6 - 1), st.integers(0, 999_999),
       st.integers(0, 52 ** 6 - 1), st.integers(0, 999_999),
       st.integers(0, MAX_INODE), st.integers(0, MAX_INODE))
def test_ids_sort_by_time(s1, u1, s2, u2, i1, i2):
    a, b = qid.from_parts(s1, u1, i1), qid.from_parts(s2, u2, i2)
    if (s1, u1) < (s2, u2):
        assert a[:qid.LG_TIME_PAD] < b[:qid.LG_TIME_PAD]


@given(st.text(max_size=40))
def test_parse_never_crashes(s):
    try:
        sec, usec, inode = qid.parse(s)
    except ValueError:
        return
    assert usec < 1_000_000
    assert qid.from_parts(sec, usec, inode).lstrip("0") == s.lstrip("0")


_QID_CHARS = st.sampled_from(qid.ALPHABET + "AEIOU_./")


@given(st.text(_QID_CHARS, max_size=20) | st.text(max_size=20))
def test_is_long_is_parse_accepting(s):
    try:
        qid.parse(s)
        parsed = True
    except ValueError:
        parsed = False
    assert qid.is_long(s) == parsed


@pytest.mark.parametrize("good", ["4F9D195432C", "ABCDEF", "3Pt2mN2VXxznjll", "3Pt2mz0VXxznjll", "zzzzzz0VXxz1"])
def test_is_queue_id_accepts(good):
    assert qid.is_queue_id(good)


@pytest.mark.parametrize("bad", [
    "", "ABCDE", "4f9d195432c", "../etc/passwd", "3Pt2mN2VXxz", "3Pt2mN2VXxznj.l",
    "3Pt2mN2VXx/njll", "-q", "3Pt2mNVXxznjll", "3Pt2mN2VXxznjlz" + "", "AEIOUAEIOUznj",
    "A" * 100, "3Pt2mN2VXxz\n",
])
def test_is_queue_id_rejects(bad):
    assert not qid.is_queue_id(bad)


def test_name_ok_is_postfix_mail_queue_id_ok():
    assert qid.name_ok("XXX") and qid.name_ok("a_b")
    for bad in ("", "a/b", "a.b", ".x", "a b", "x" * 256):
        assert not qid.name_ok(bad)


def test_hash_path_long_id_uses_hex_microseconds():
    q = qid.from_parts(1_700_000_000, 0xABCDE, 42)
    assert qid.hash_path(q, 1) == "A"
    assert qid.hash_path(q, 2) == "A/B"
    assert qid.hash_path(q, 0) == ""
    q = qid.from_parts(1_700_000_000, 5, 42)          # hex "00005"
    assert qid.hash_path(q, 1) == "0"


def test_hash_path_short_id_and_padding():
    assert qid.hash_path("4F9D195432C", 1) == "4"
    assert qid.hash_path("4F9D195432C", 2) == "4/F"
    assert qid.hash_path("AB", 3) == "A/B/_"


@given(st.integers(0, MAX_TIME), st.integers(0, 999_999), st.integers(0, MAX_INODE))
def test_hash_char_is_hex(sec, usec, inode):
    assert qid.hash_path(qid.from_parts(sec, usec, inode), 1) in "0123456789ABCDEF"
