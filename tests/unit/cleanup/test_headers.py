"""cleanup.headers: header section detection, bounds, missing headers."""

from hypothesis import given, strategies as st

from cleanup.headers import HeaderProcessor

MSG = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n"
       b" continued\r\nReceived: from x\r\n\r\nbody line\r\nFrom me\r\n")


def run(chunks, limit=102400, add=b"Message-Id: <x@y>\r\n"):
    hp = HeaderProcessor(limit)
    out = b"".join(hp.feed(c, lambda: add) for c in chunks)
    return hp, out + hp.finish()


def test_missing_headers_appended_before_blank_line():
    hp, out = run([MSG])
    assert out == MSG.replace(b"\r\n\r\n", b"\r\nMessage-Id: <x@y>\r\n\r\n", 1)
    assert hp.seen[b"from"] == 1 and b"date" not in hp.seen
    assert hp.hops == 1
    assert hp.header_value(b"to") == b"b@example.org"


def test_body_is_passed_through_untouched():
    hp, out = run([MSG])
    assert out.endswith(b"\r\n\r\nbody line\r\nFrom me\r\n")
    assert not hp.in_headers


def test_non_header_line_ends_headers():
    msg = b"Subject: x\r\nthis is not a header\r\nSubject: y\r\n"
    hp, out = run([msg])
    assert out == b"Subject: x\r\nMessage-Id: <x@y>\r\nthis is not a header\r\nSubject: y\r\n"
    assert hp.seen == {}


def test_headers_only_message_gets_missing_headers():
    hp, out = run([b"Subject: x\r\nTo: y"])
    assert out == b"Subject: x\r\nTo: y\r\nMessage-Id: <x@y>\r\n"


def test_over_long_header_is_truncated():
    big = b"Subject: " + b"x" * 50 + b"\r\n" + b" " + b"y" * 200 + b"\r\n"
    hp, out = run([big + b"\r\nbody\r\n"], limit=100)
    first = out.split(b"\r\n\r\n")[0]
    assert first.startswith(b"Subject: xxx")
    assert b"yyy" not in first
    assert out.endswith(b"\r\n\r\nbody\r\n")


def test_a_first_line_over_the_limit_keeps_its_head_and_the_other_headers():
    # (It used to drop that header and, its truncation flag left set,
    # every header after it.)
    big = b"X-Long: " + b"a" * 200 + b"\r\n"
    hp, out = run([big + b"Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n"], limit=100)
    assert out == (big[:100] + b"\r\nSubject: hi\r\nFrom: a@b\r\n"
                   b"Message-Id: <x@y>\r\n\r\nbody\r\n")
    assert hp.seen == {b"from": 1}


@given(st.lists(st.integers(min_value=0, max_value=len(MSG)), max_size=6))
def test_any_split_gives_same_output(cuts):
    cuts = sorted(set(cuts))
    chunks, prev = [], 0
    for c in cuts + [len(MSG)]:
        chunks.append(MSG[prev:c])
        prev = c
    assert run(chunks)[1] == run([MSG])[1]
