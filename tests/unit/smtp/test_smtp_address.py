import pytest
from hypothesis import given, strategies as st

from fulmar.smtp import address as A


def parse(arg, **kw):
    return A.parse_path_arg(arg, **kw)


@pytest.mark.parametrize("arg,address,route,params", [
    ("<a@b.c>", "a@b.c", "", []),
    ("<>", "", "", []),
    (" <a@b.c> SIZE=10 BODY=8BITMIME", "a@b.c", "", [("SIZE", "10"), ("BODY", "8BITMIME")]),
    ('<"john doe"@b.c>', "john doe@b.c", "", []),
    ('<"a\\"b"@b.c>', 'a"b@b.c', "", []),
    ('<"a@x"@b.c>', "a@x@b.c", "", []),
    ("<@r1.test,@r2.test:u@d.test>", "u@d.test", "@r1.test,@r2.test", []),
    ("<a@[192.0.2.1]>", "a@[192.0.2.1]", "", []),
    ("<postmaster>", "postmaster", "", []),
    ("a@b.c", "a@b.c", "", []),                      # strict_rfc821_envelopes = no
    ("a@b.c SMTPUTF8", "a@b.c", "", [("SMTPUTF8", None)]),
    ("<j\u00f6@b\u00fccher.test>", "j\u00f6@b\u00fccher.test", "", []),
])
def test_paths(arg, address, route, params):
    path, p = parse(arg)
    assert (path.address, path.route, p) == (address, route, params)


@pytest.mark.parametrize("arg", [
    "<a@b", "<a b@c>", "<a@b>x", "<@r:>", "<@r a:u@d>", '<"a@b>', "<a@b..c>", "<a@>", "<@a@b>",
    "<a@b> =x", "<a<b@c>", "<a@b\x00>", "<a@-b->" ,
])
def test_bad_paths(arg):
    with pytest.raises(A.AddressError) as e:
        parse(arg, strict=True)
    assert e.value.reply.code in (501, 555)


def test_strict_requires_brackets_and_rcpt_no_null():
    with pytest.raises(A.AddressError) as e:
        parse("a@b.c", strict=True)
    assert str(e.value.reply) == "501 5.1.7 Bad sender address syntax"
    with pytest.raises(A.AddressError) as e:
        parse("<>", is_sender=False)
    assert str(e.value.reply) == "501 5.1.3 Bad recipient address syntax"


def test_utf8_refused_unless_allowed():
    with pytest.raises(A.AddressError):
        parse("<j\u00f6@b.c>", utf8_ok=False)


def test_mail_params():
    mp = A.parse_mail_params([("SIZE", "5"), ("BODY", "7bit"), ("RET", "full"), ("ENVID", "a+2Bb"),
                              ("SMTPUTF8", None), ("AUTH", "<>")])
    assert (mp.size, mp.body, mp.ret, mp.envid, mp.smtputf8, mp.auth) == (5, "7BIT", "FULL", "a+b", True, "<>")
    with pytest.raises(A.AddressError):
        A.parse_mail_params([("RET", "FULL")], dsn=False)
    assert A.parse_mail_params([("BODY", "BINARYMIME")], binarymime=True).body == "BINARYMIME"


def test_rcpt_params():
    rp = A.parse_rcpt_params([("NOTIFY", "success,delay"), ("ORCPT", "rfc822;a+40b@c")])
    assert rp.notify == A.NOTIFY_SUCCESS | A.NOTIFY_DELAY
    assert rp.orcpt == "rfc822;a@b@c"
    assert A.parse_rcpt_params([("NOTIFY", "NEVER")]).notify == A.NOTIFY_NEVER
    for bad in ([("NOTIFY", "NEVER,SUCCESS")], [("NOTIFY", "SOMETIMES")], [("ORCPT", "rfc822")],
                [("ORCPT", "rfc822;a+zz")], [("X", None)]):
        with pytest.raises(A.AddressError):
            A.parse_rcpt_params(bad)


def test_split_quote_and_tricks():
    assert A.split_address("a@b@c") == ("a@b", "c")
    assert A.split_address("postmaster") == ("postmaster", "")
    assert A.quote_local_part("a b") == '"a b"'
    assert A.quote_local_part("a.b") == "a.b"
    assert A.external_form("a@x@d") == '"a@x"@d'
    for local in ("u%h", "h!u", "u@h"):
        assert A.is_relay_trick(local)
    assert not A.is_relay_trick("user.name+tag")
    assert A.is_relay_trick(A.Path("u@d", route="@r"))


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_xtext_roundtrip(text):
    enc = A.xtext_encode(text)
    assert all(33 <= ord(c) <= 126 and c != "=" for c in enc)
    assert A.xtext_decode(enc) == text


def test_xtext_decode_errors():
    for bad in ("a=b", "a+4", "a+G0", "a b"):
        with pytest.raises(ValueError):
            A.xtext_decode(bad)


@given(st.text(max_size=80))
def test_parser_raises_only_address_errors(text):
    for strict in (False, True):
        try:
            path, params = parse(text, strict=strict)
        except A.AddressError as e:
            assert e.reply.code in (501, 553, 555)
            continue
        assert "\r" not in path.address and "\n" not in path.address and "\x00" not in path.address


_atom = st.text(alphabet="abcxyz0129-_+.", min_size=1, max_size=10).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)
_label = st.text(alphabet="abcxyz0129", min_size=1, max_size=8)


@given(_atom, st.lists(_label, min_size=1, max_size=4))
def test_valid_mailboxes_roundtrip(local, labels):
    addr = f"{local}@{'.'.join(labels)}"
    path, _ = parse(f"<{addr}>", strict=True)
    assert path.address == addr and not path.route
    path2, _ = parse(f"<{A.external_form(path.address)}>", strict=True)
    assert path2.address == addr


@given(st.text(alphabet='abc @."\\%!', min_size=1, max_size=12), _label)
def test_quoted_local_parts_roundtrip(local, domain):
    ext = A.quote_local_part(local)
    path, _ = parse(f"<{ext}@{domain}>")
    assert path.address == f"{local}@{domain}"
    assert A.is_relay_trick(path) == any(c in local for c in "%!@")



@pytest.mark.parametrize("domain,ok", [
    ("a_b.test", True), ("x-1.test", True), ("0.0", True), ("b\u00fccher.test", True),
    ("a!b.test", False), ("a+b.test", False), ("a..b", False), ("a*b.test", False),
    ("a=b.test", False), ("a\x7fb.test", False),
])
def test_loose_domain_labels(domain, ok):
    # Without strict_rfc821_envelopes a label is letters, digits, "-" and
    # "_" (Postfix lets "_" through), or non-ASCII when SMTPUTF8 is allowed.
    try:
        parse(f"<a@{domain}>", utf8_ok=True)
        accepted = True
    except A.AddressError:
        accepted = False
    assert accepted == ok
