"""The hand-written scanners that replaced regular expressions on
sendmail's path (docs/performance.md, item 51) accept exactly what the
regular expressions did: each is compared with its old pattern on chosen
and on random input."""

import re

from hypothesis import given, settings, strategies as st

from fulmar.cli.sendmail import header_name
from fulmar.config import maincf
from fulmar.config.mastercf import _wakeup_ok
from fulmar.queue import layout, qid

OLD_HEADER_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
OLD_NAME = re.compile(r"[A-Za-z0-9_]+")
OLD_REF = re.compile(r"\$(?:\{|\()?([A-Za-z0-9_]+)")
OLD_INT = re.compile(r"[+-]?[0-9]+")
OLD_TIME = re.compile(r"([0-9]+)([A-Za-z]?)")
OLD_WAKEUP = re.compile(r"[0-9]+\??")

# Text made of the characters that matter to the patterns, and some others.
MACRO_TEXT = st.text(alphabet="$${}()ab_Z09 ,:?\t+-é٣", max_size=30)
LINE_BYTES = st.binary(max_size=30) | st.text(alphabet="ab-:X \t\x7f~", max_size=20).map(str.encode)


def _old_header_name(line: bytes):
    m = OLD_HEADER_NAME.match(line)
    return m.group(1) if m else None


def test_header_name_examples():
    assert header_name(b"Subject: hi") == b"Subject"
    assert header_name(b"Subject \t: hi") == b"Subject"
    assert header_name(b"X-A:b:c") == b"X-A"
    for line in (b"", b": x", b" Subject: x", b"Sub ject: x", b"Subject x", b"\xc3\xa9: x",
                 b"Subj\x7fect: x"):
        assert header_name(line) is None, line


@settings(max_examples=500)
@given(LINE_BYTES)
def test_header_name_is_the_old_pattern(line):
    assert header_name(line) == _old_header_name(line)


@settings(max_examples=500)
@given(MACRO_TEXT)
def test_referenced_names_is_the_old_pattern(text):
    assert maincf.referenced_names(text) == set(OLD_REF.findall(text))


@settings(max_examples=500)
@given(MACRO_TEXT, st.integers(0, 30))
def test_name_end_is_the_old_pattern(text, pos):
    pos = min(pos, len(text))
    m = OLD_NAME.match(text, pos)
    assert maincf._name_end(text, pos) == (m.end() if m else pos)


def test_expansion_still_reads_names_and_conditionals():
    values = {"a_1": "x", "empty": "", "n": "5"}
    look = lambda name: values.get(name, "")
    assert maincf.expand_text("$a_1/${a_1}/$(a_1)-$$", look) == "x/x/x-$"
    assert maincf.expand_text("${a_1?yes}${empty?no}${empty:alt}", look) == "yesalt"
    assert maincf.expand_text("${{$n} >= {4} ? {big} : {small}}", look) == "big"


@settings(max_examples=500)
@given(st.text(alphabet="+-0129aZs٣ ", max_size=8))
def test_int_and_time_syntax_is_the_old_pattern(text):
    assert maincf._is_int(text) == bool(OLD_INT.fullmatch(text))
    m = OLD_TIME.fullmatch(text)
    assert maincf._split_time(text) == (m.groups() if m else None)
    assert _wakeup_ok(text) == bool(OLD_WAKEUP.fullmatch(text))


def test_queue_id_names_and_forms_unchanged():
    assert qid.name_ok("4jdHVn17_x") and not qid.name_ok("a/b") and not qid.name_ok("é")
    assert not qid.name_ok("") and not qid.name_ok("a.b")
    long_id = qid.from_parts(1_700_000_000, 123456, 98765)
    assert qid.is_long(long_id) and qid.is_queue_id(long_id)
    assert qid.parse(long_id) == (1_700_000_000, 123456, 98765)
    assert qid.is_queue_id("3F2A91C8D") and not qid.is_queue_id("3f2a9")


def test_hash_queue_names_split_on_commas_and_white_space():
    assert layout._split_names("deferred, Defer\tincoming,,") == {"deferred", "defer", "incoming"}
