"""fulmar.smtp.headeraddr: RFC 5322 address lists found and rewritten in place."""

from hypothesis import given, settings, strategies as st

from fulmar.smtp.headeraddr import header_name, parse_address_list, rewrite_header, simple_span


def addrs(value):
    return [s.address for s in parse_address_list(value)]


def test_forms():
    assert addrs(" alice@example.com") == ["alice@example.com"]
    assert addrs(' "Alice, A." <alice@example.com>, bob@x.test (Bob)') == ["alice@example.com", "bob@x.test"]
    assert addrs(" =?utf-8?q?J=C3=B6rg?= <j@x.test>") == ["j@x.test"]
    assert addrs(" undisclosed-recipients:;") == []
    assert addrs(" team: a@x.test, B <b@y.test>; c@z.test") == ["a@x.test", "b@y.test", "c@z.test"]
    assert addrs(' "a b"@x.test, "q\\"x"@y.test') == ["a b@x.test", 'q"x@y.test']
    assert addrs(" <@relay.test,@r2.test:u@x.test>") == ["u@x.test"]
    assert addrs(" user") == ["user"]
    assert addrs(" u@[192.0.2.1]") == ["u@[192.0.2.1]"]
    assert addrs(" <>") == []
    assert addrs(" a (comment, with: specials) @ x.test") == ["a@x.test"]
    assert addrs("\r\n\tFolded Name\r\n <f@x.test>") == ["f@x.test"]


def test_malformed_elements_are_left_alone():
    assert addrs(" Joe Smith") == []                 # words, no address
    assert addrs(" <a@x.test> trailing words") == []
    assert addrs(" <a@x.test") == []
    assert addrs(" a@@x.test, b.@x.test, .c@x.test") == []
    assert addrs(' "unterminated@x.test') == []
    assert addrs(" a@x.test, <b@y.test>, >") == ["a@x.test", "b@y.test"]


SIMPLE = [" <bench@bench.test>\r\n", " bench@bench.test\r\n", "<x@y>", " <a.b@c.d> \r\n",
          "\t<o'k+tag@x-y.test>\n", " a@b\r\n"]
NOT_SIMPLE = [" Bench <bench@bench.test>\r\n", " <a@b.c>, d@e.f\r\n", " <a@[192.0.2.1]>\r\n",
              " <a..b@c.d>\r\n", " <.a@c.d>\r\n", " <a@c.d.>\r\n", " <a@b.c\r\n", " a@b.c>\r\n",
              " <@r.test:a@b.c>\r\n", " a@b.c (c)\r\n", " \"q\"@b.c\r\n", " <j\u00f6rg@b.c>\r\n",
              " <a@b.c>\r\n\t\r\n", " a\r\n", " <>\r\n", " a @b.c\r\n"]


def test_simple_span_is_the_parsers_answer_or_none():
    for value in SIMPLE:
        assert [simple_span(value)] == parse_address_list(value), value
    for value in NOT_SIMPLE:
        assert simple_span(value) is None, value


def test_header_name():
    assert header_name(b"Reply-To : x\r\n") == b"reply-to"


MAP = {"alice@example.com": "alice.smith@example.org", "a b@x.test": "ab@x.test",
       "bob@x.test": "b c@x.test"}


def m(a):
    return MAP.get(a)


def test_rewrite_replaces_only_the_address():
    text = b'From: "Alice" <alice@example.com> (work)\r\n'
    assert rewrite_header(text, m) == b'From: "Alice" <alice.smith@example.org> (work)\r\n'
    text = b"To: alice@example.com (Alice),\r\n\tother@y.test\r\n"
    assert rewrite_header(text, m) == b"To: alice.smith@example.org (Alice),\r\n\tother@y.test\r\n"
    assert rewrite_header(b'To: "a b"@x.test\r\n', m) == b"To: ab@x.test\r\n"
    assert rewrite_header(b"To: bob@x.test\r\n", m) == b'To: "b c"@x.test\r\n'
    assert rewrite_header(b"To: g: alice@example.com;\r\n", m) == b"To: g: alice.smith@example.org;\r\n"
    assert rewrite_header(b"To: nobody@x.test\r\n", m) is None
    assert rewrite_header(b"To: J\xc3\xb6rg <alice@example.com>\r\n", m) == \
        b"To: J\xc3\xb6rg <alice.smith@example.org>\r\n"


def test_rewrite_folds_before_a_long_element_only():
    big = "x" * 60 + "@example.net"
    text = b"To: short@y.test, alice@example.com\r\n"
    out = rewrite_header(text, lambda a: big if a == "alice@example.com" else None)
    assert out == b"To: short@y.test,\r\n " + big.encode() + b"\r\n"
    # the first element of a line is never moved
    out = rewrite_header(b"To: alice@example.com\r\n", lambda a: big)
    assert out == b"To: " + big.encode() + b"\r\n"


header_text = st.lists(st.sampled_from(list('abc@.,;:<>()"\\[] \t\r\n=?xyz-') + ["\r\n ", "é"]),
                       max_size=60).map("".join)


@settings(max_examples=400)
@given(header_text)
def test_never_crashes_and_identity_is_byte_identical(value):
    text = b"To:" + value.encode("utf-8") + b"\r\n"
    for span in parse_address_list(value):
        assert 0 <= span.start < span.end <= len(value)
    assert rewrite_header(text, lambda a: a) is None
    assert rewrite_header(text, lambda a: None) is None


@given(st.binary(max_size=120))
def test_arbitrary_bytes_round_trip(raw):
    text = b"Cc:" + raw
    out = rewrite_header(text, lambda a: a)
    assert out is None
    # a changing mapper only touches addresses: everything else survives
    out = rewrite_header(text, lambda a: "z@z.test")
    if out is not None:
        assert out.startswith(b"Cc:")


@given(st.lists(st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.test", fullmatch=True), min_size=1, max_size=5),
       st.sampled_from([", ", ",\r\n\t", " ,  "]))
def test_rewritten_list_parses_to_mapped_addresses(addresses, sep):
    value = " " + sep.join(f"N{i} <{a}>" if i % 2 else a for i, a in enumerate(addresses))
    text = ("To:" + value + "\r\n").encode()
    out = rewrite_header(text, lambda a: "new." + a)
    again = [s.address for s in parse_address_list(out.decode()[3:])]
    assert again == ["new." + a for a in addresses]


# -- HeaderStream ---------------------------------------------------------------

from fulmar.smtp.headeraddr import HeaderStream  # noqa: E402

CONTENT = (b"From: Alice <alice@example.com>\r\nTo: x@y.test,\r\n alice@example.com\r\n"
           b"Subject: alice@example.com\r\n\r\nFrom: alice@example.com\r\nbody\r\n")
STREAMED = (b"From: Alice <alice.smith@example.org>\r\nTo: x@y.test,\r\n alice.smith@example.org\r\n"
            b"Subject: alice@example.com\r\n\r\nFrom: alice@example.com\r\nbody\r\n")


def stream(content, cuts):
    seen = []

    def rw(name, text):
        seen.append(name)
        if name in (b"from", b"to"):
            return rewrite_header(text, m) or text
        return text
    hs = HeaderStream(rw)
    out, last = [], 0
    for c in sorted(cuts) + [len(content)]:
        out.append(hs.feed(content[last:c]))
        last = c
    out.append(hs.finish())
    return b"".join(out), seen


@given(st.lists(st.integers(min_value=0, max_value=len(CONTENT)), max_size=5))
def test_header_stream_any_cuts(cuts):
    out, seen = stream(CONTENT, cuts)
    assert out == STREAMED
    assert seen == [b"from", b"to", b"subject"]


def test_header_stream_headers_only_and_passthrough():
    assert stream(b"To: alice@example.com", [])[0] == b"To: alice.smith@example.org"
    assert stream(b"To: alice@example.com\r\n", [5])[0] == b"To: alice.smith@example.org\r\n"
    assert stream(b"not a header\r\nTo: alice@example.com\r\n", [])[0] == \
        b"not a header\r\nTo: alice@example.com\r\n"
    hs = HeaderStream(lambda n, t: t)
    hs.feed(b"A: b\r\n\r\n")
    assert hs.done and hs.feed(b"x" * 10) == b"x" * 10


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=200), max_size=4))
def test_header_stream_identity_is_byte_identical(content, cuts):
    hs = HeaderStream(lambda n, t: t)
    out, last = [], 0
    for c in sorted(min(c, len(content)) for c in cuts) + [len(content)]:
        out.append(hs.feed(content[last:c]))
        last = c
    out.append(hs.finish())
    assert b"".join(out) == content


near_simple = st.lists(st.sampled_from(["a", "b.c", ".", "@", "<", ">", " ", "\t", "\r\n", "x-y", "'",
                                        "é", "[1.2.3.4]", ",", "(c)", '"q"']),
                       max_size=12).map("".join)


@settings(max_examples=600)
@given(st.one_of(header_text, near_simple))
def test_simple_span_agrees_with_the_parser(value):
    span = simple_span(value)
    assert span is None or [span] == parse_address_list(value)
