"""Header address rewriting in cleanup: Rewriter.header_address, contexts, HeaderProcessor hook."""

import pytest

from cleanup.headers import HeaderProcessor
from cleanup.rewrite import CONTEXT_LOCAL, CONTEXT_REMOTE, HeaderRewriter, Rewriter
from fulmar import config

CANON = "inline:{{alice@example.com=alice.smith@example.org}, {bob=robert@example.org}}"


@pytest.fixture
def make_rw(tmp_path):
    (tmp_path / "main.cf").write_text("myhostname = host.example.com\nmydomain = example.com\n"
                                      "alias_maps =\ninet_interfaces = 192.0.2.1\n"
                                      "mynetworks = 198.51.100.0/24\n")
    base = config.load(str(tmp_path))
    return lambda **kw: Rewriter(base.with_overrides(kw))


def run(rw, context, message, cuts=()):
    hp = HeaderProcessor(102400)
    hrw = HeaderRewriter(rw, context)
    hp.rewrite = hrw
    out, last = [], 0
    for c in list(cuts) + [len(message)]:
        out.append(hp.feed(message[last:c]))
        last = c
    out.append(hp.finish())
    return b"".join(out), hrw


MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob, carol@other.test (Carol)\r\n"
           b"Subject: alice@example.com stays\r\nX-Mailer: bob\r\n\r\n"
           b"To: alice@example.com in the body\r\n")


def test_canonical_in_headers_only_address_headers(make_rw):
    rw = make_rw(canonical_maps=CANON)
    out, hrw = run(rw, CONTEXT_LOCAL, MESSAGE)
    assert hrw.error is None
    assert out == (b"From: Alice <alice.smith@example.org>\r\nTo: robert@example.org, "
                   b"carol@other.test (Carol)\r\nSubject: alice@example.com stays\r\nX-Mailer: bob\r\n\r\n"
                   b"To: alice@example.com in the body\r\n")


def test_block_cuts_do_not_matter(make_rw):
    rw = make_rw(canonical_maps=CANON)
    whole = run(rw, CONTEXT_LOCAL, MESSAGE)[0]
    for a in range(len(MESSAGE)):
        assert run(rw, CONTEXT_LOCAL, MESSAGE, [a])[0] == whole
        assert run(rw, CONTEXT_LOCAL, MESSAGE, [a, min(a + 7, len(MESSAGE))])[0] == whole


def test_local_context_completes_bare_names(make_rw):
    rw = make_rw()
    out, _ = run(rw, CONTEXT_LOCAL, b"From: root\r\nCc: x@y.test\r\n\r\n")
    assert out == b"From: root@host.example.com\r\nCc: x@y.test\r\n\r\n"


def test_remote_context_uses_remote_header_rewrite_domain(make_rw):
    rw = make_rw(remote_header_rewrite_domain="domain.invalid")
    out, _ = run(rw, CONTEXT_REMOTE, b"From: root\r\nTo: a@b.test\r\n\r\n")
    assert out == b"From: root@domain.invalid\r\nTo: a@b.test\r\n\r\n"


def test_classes(make_rw):
    rw = make_rw(canonical_maps=CANON, canonical_classes="envelope_sender, envelope_recipient")
    out, _ = run(rw, CONTEXT_LOCAL, b"From: alice@example.com\r\n\r\n")
    assert out == b"From: alice@example.com\r\n\r\n"
    assert rw.sender("alice@example.com") == ("alice.smith@example.org", None)
    rw = make_rw(canonical_maps=CANON, canonical_classes="header_sender")
    assert rw.sender("alice@example.com") == ("alice@example.com", None)
    out, _ = run(rw, CONTEXT_LOCAL, b"From: alice@example.com\r\nTo: alice@example.com\r\n\r\n")
    assert out == b"From: alice.smith@example.org\r\nTo: alice@example.com\r\n\r\n"
    rw = make_rw(sender_canonical_maps=CANON)
    out, _ = run(rw, CONTEXT_LOCAL, b"Reply-To: alice@example.com\r\nBcc: alice@example.com\r\n\r\n")
    assert out == b"Reply-To: alice.smith@example.org\r\nBcc: alice@example.com\r\n\r\n"


def test_masquerade_classes(make_rw):
    rw = make_rw(masquerade_domains="example.com", masquerade_exceptions="root")
    out, _ = run(rw, CONTEXT_LOCAL, b"From: a@mail.example.com\r\nSender: root@mail.example.com\r\n"
                                    b"To: b@dev.example.com\r\n\r\n")
    assert out == (b"From: a@example.com\r\nSender: root@mail.example.com\r\n"
                   b"To: b@example.com\r\n\r\n")
    rw = make_rw(masquerade_domains="example.com", masquerade_classes="envelope_sender, header_sender")
    out, _ = run(rw, CONTEXT_LOCAL, b"From: a@mail.example.com\r\nTo: b@dev.example.com\r\n\r\n")
    assert out == b"From: a@example.com\r\nTo: b@dev.example.com\r\n\r\n"


def test_lookup_failure_is_reported(make_rw):
    rw = make_rw(canonical_maps="hash:/nonexistent/canonical")
    out, hrw = run(rw, CONTEXT_LOCAL, b"From: a@x.test\r\n\r\n")
    assert hrw.error == ("tempfail", "4.3.0 Temporary lookup failure")
    assert hrw.failed_address == "a@x.test"


def test_headers_without_tables_are_rewritten_once(make_rw, monkeypatch):
    rw = make_rw()
    first, _ = run(rw, CONTEXT_LOCAL, b"From: root\r\nTo: x@y.test\r\n\r\n")
    calls = []
    real = rw.header_address
    monkeypatch.setattr(rw, "header_address", lambda *a: calls.append(a) or real(*a))
    again, _ = run(rw, CONTEXT_LOCAL, b"From: root\r\nTo: x@y.test\r\n\r\n")
    assert again == first == b"From: root@host.example.com\r\nTo: x@y.test\r\n\r\n"
    assert calls == []
    # The context is part of what is kept: a remote client's bare name is
    # left alone (no remote_header_rewrite_domain).
    out, _ = run(rw, CONTEXT_REMOTE, b"From: root\r\n\r\n")
    assert out == b"From: root\r\n\r\n"
    # A long header is not kept.
    long = b"To: " + b", ".join(b"u%d@y.test" % i for i in range(100)) + b"\r\n\r\n"
    run(rw, CONTEXT_LOCAL, long)
    run(rw, CONTEXT_LOCAL, long)
    assert len(calls) == 1 + 2 * 100


def test_headers_with_tables_are_looked_up_each_time(make_rw, tmp_path):
    table = tmp_path / "canonical"
    table.write_text("alice@example.com alice.smith@example.org\n")
    rw = make_rw(canonical_maps="texthash:%s" % table)
    out, _ = run(rw, CONTEXT_LOCAL, b"From: alice@example.com\r\n\r\n")
    assert out == b"From: alice.smith@example.org\r\n\r\n"
    # Recipient headers have the same table (canonical_classes): not kept either.
    out, _ = run(rw, CONTEXT_LOCAL, b"To: alice@example.com\r\n\r\n")
    assert out == b"To: alice.smith@example.org\r\n\r\n"
    assert rw.header_cache == {}


def test_a_failed_lookup_is_not_kept(make_rw):
    rw = make_rw(sender_canonical_maps="hash:/nonexistent/canonical")
    # From: has a table that fails; To: has none and is kept.  (Once a
    # lookup has failed, the message's later headers are left alone.)
    for _ in range(2):
        out, hrw = run(rw, CONTEXT_LOCAL, b"To: b@x.test\r\nFrom: a@x.test\r\n\r\n")
        assert hrw.error == ("tempfail", "4.3.0 Temporary lookup failure")
    assert [k[2] for k in rw.header_cache] == [b"To: b@x.test\r\n"]


def test_header_context(make_rw):
    rw = make_rw()
    assert rw.header_context("pickup") == CONTEXT_LOCAL
    assert rw.header_context("bounce") == CONTEXT_LOCAL
    assert rw.header_context("smtpd", "192.0.2.1") == CONTEXT_LOCAL       # permit_inet_interfaces
    assert rw.header_context("smtpd", "198.51.100.7") is None
    assert rw.header_context("smtpd", "unknown") is None
    rw = make_rw(local_header_rewrite_clients="permit_mynetworks, permit_sasl_authenticated, 203.0.113.0/24")
    assert rw.header_context("smtpd", "198.51.100.7") == CONTEXT_LOCAL
    assert rw.header_context("smtpd", "203.0.113.9") == CONTEXT_LOCAL
    assert rw.header_context("smtpd", "192.0.2.200", "alice") == CONTEXT_LOCAL
    assert rw.header_context("smtpd", "192.0.2.200") is None
    rw = make_rw(remote_header_rewrite_domain="domain.invalid")
    assert rw.header_context("smtpd", "198.51.100.7") == CONTEXT_REMOTE
    assert make_rw(local_header_rewrite_clients="static:all").header_context("smtpd", "x") == CONTEXT_LOCAL


def test_header_context_is_worked_out_once_per_client(make_rw, monkeypatch):
    # The answer for a client address (and whether it authenticated) is
    # kept: the next message from it parses nothing.
    from cleanup import rewrite
    rw = make_rw(local_header_rewrite_clients="permit_sasl_authenticated, 203.0.113.0/24")
    assert rw.header_context("smtpd", "203.0.113.9") == CONTEXT_LOCAL
    assert rw.header_context("smtpd", "192.0.2.200") is None
    monkeypatch.setattr(rewrite.ipaddress, "ip_address", None)     # any parse would fail now
    assert rw.header_context("smtpd", "203.0.113.9") == CONTEXT_LOCAL
    assert rw.header_context("smtpd", "192.0.2.200") is None
    monkeypatch.undo()
    assert rw.header_context("smtpd", "192.0.2.200", "alice") == CONTEXT_LOCAL
