"""Address lookup order, resolve (classes, transport_maps, relocated, sender maps),
cleanup rewriting and smtpd recipient validation, on a real Config."""

import pytest
from hypothesis import given, strategies as st

from fulmar import config, tables
from fulmar.resolve import Resolver
from fulmar.tables.addr import address_keys, find_address, split_extension


def rt(route):
    return (route.transport, route.nexthop, route.address_class)


@pytest.fixture
def make_cfg(tmp_path):
    (tmp_path / "main.cf").write_text("myhostname = host.example\nmydomain = example\n"
                                      "alias_maps =\nrecipient_delimiter = +\n")
    base = config.load(str(tmp_path))
    return lambda **kw: base.with_overrides(kw)


def test_split_extension():
    assert split_extension("bob+x+y", "+") == ("bob", "x+y")
    assert split_extension("bob-x", "+-") == ("bob", "x")
    assert split_extension("owner-list", "-") == ("owner-list", None)
    assert split_extension("list-request", "-") == ("list-request", None)
    assert split_extension("+x", "+") == ("+x", None)
    assert split_extension("bob", "") == ("bob", None)


def test_lookup_order():
    keys = address_keys("bob+x@local.example", "+", lambda d: d == "local.example")
    assert [k for k, _ in keys] == ["bob+x@local.example", "bob@local.example", "bob+x", "bob",
                                    "@local.example"]
    assert [k for k, _ in address_keys("bob@remote.example", "+", lambda d: False)] == [
        "bob@remote.example", "@remote.example"]
    t = tables.open_table("inline:{bob@d.example=x@y, @d.example=@e.example, bob=local}")
    assert find_address(t, "bob+ext@d.example", delimiter="+", propagate=True).value == "x+ext@y"
    assert find_address(t, "bob+ext@d.example", delimiter="+").value == "x@y"
    assert find_address(t, "joe@d.example", delimiter="+").value == "joe@e.example"
    r = tables.open_table("regexp:/dev/null")   # pattern tables see only the full address
    assert find_address(tables.TableList("p", [tables.FailedTable("x", "down"), t]),
                        "bob@d.example").status == tables.RETRY
    assert r.fixed_string is False


@given(st.text(max_size=40), st.text(alphabet="+-", max_size=2))
def test_split_extension_never_raises(local, delim):
    user, ext = split_extension(local, delim)
    assert local.startswith(user)


def test_address_classes_and_transports(make_cfg):
    r = Resolver(make_cfg(virtual_alias_domains="valias.example",
                          virtual_mailbox_domains="vbox.example",
                          virtual_transport="lmtp:unix:/run/dovecot/lmtp",
                          relay_domains="relay.example", relayhost="[gw.example]:2525"))
    assert rt(r.resolve("bob@host.example"))[:3] == ("local", "host.example", "local")
    assert rt(r.resolve("bob"))[:3] == ("local", "host.example", "local")
    assert rt(r.resolve("x@valias.example"))[:3] == ("error", "5.1.1 User unknown in virtual alias table",
                                                 "virtual_alias")
    assert rt(r.resolve("x@vbox.example"))[:2] == ("lmtp", "unix:/run/dovecot/lmtp")
    assert rt(r.resolve("x@relay.example"))[:2] == ("relay", "[gw.example]:2525")
    assert rt(r.resolve("x@else.example"))[:3] == ("smtp", "[gw.example]:2525", "default")


def test_transport_maps_relocated_and_sender_maps(make_cfg):
    r = Resolver(make_cfg(
        transport_maps="inline:{bob@else.example=error:nope, .sub.example=slow:, "
                       "other.example=:[mx.other]:26, *=smtp:[fallback]}",
        relocated_maps="inline:{moved@host.example=new@place.example}",
        sender_dependent_relayhost_maps="inline:{@vip.example=[vip-relay]}",
        sender_dependent_default_transport_maps="inline:{<>=bounces:}"))
    assert rt(r.resolve("bob+x@else.example"))[:2] == ("error", "nope")
    assert rt(r.resolve("a@deep.sub.example", "s@x"))[:2] == ("slow", "deep.sub.example")
    assert rt(r.resolve("a@other.example"))[:2] == ("smtp", "[mx.other]:26")
    assert rt(r.resolve("moved@host.example"))[:2] == ("error", "5.1.6 User has moved to new@place.example")
    r = Resolver(make_cfg(sender_dependent_relayhost_maps="inline:{@vip.example=[vip-relay]}",
                          sender_dependent_default_transport_maps="inline:{<>=bounces:}"))
    assert rt(r.resolve("a@b.example", "boss@vip.example"))[:2] == ("smtp", "[vip-relay]")
    assert rt(r.resolve("a@b.example", ""))[:2] == ("bounces", "b.example")
    assert rt(r.resolve("a@b.example", "x@y.example"))[:2] == ("smtp", "b.example")


def test_table_failure_is_retry_never_unknown(make_cfg, tmp_path):
    r = Resolver(make_cfg(transport_maps=f"hash:{tmp_path}/missing"))
    assert rt(r.resolve("a@b.example"))[:3] == ("retry", "4.3.0 Temporary lookup failure", "retry")
    r = Resolver(make_cfg(mydestination=f"hash:{tmp_path}/missing"))
    assert r.resolve("a@b.example").transport == "retry"


# -- cleanup.rewrite ---------------------------------------------------------------

def test_canonical_masquerade_and_completion(make_cfg):
    from cleanup.rewrite import Rewriter
    rw = Rewriter(make_cfg(
        sender_canonical_maps="inline:{alice=alice.smith@host.example}",
        canonical_maps="inline:{@old.test=@new.test}",
        recipient_canonical_maps="inline:{bob@host.example=robert@host.example}",
        masquerade_domains="!keep.example, example", masquerade_exceptions="root",
        masquerade_classes="envelope_sender, envelope_recipient"))
    assert rw.sender("alice") == ("alice.smith@example", None)        # canonical, then masquerade
    assert rw.sender("joe@mail.example") == ("joe@example", None)     # masqueraded
    assert rw.sender("root@mail.example") == ("root@mail.example", None)
    assert rw.sender("x@keep.example") == ("x@keep.example", None)
    assert rw.sender("") == ("", None)
    assert rw.recipient("bob+tag@host.example") == (["robert+tag@example"], None)
    assert rw.recipient("u@old.test") == (["u@new.test"], None)
    assert rw.complete("u@shorthost") == "u@shorthost.example"      # append_dot_mydomain (compat 0)


def test_virtual_alias_expansion_loops_and_limits(make_cfg):
    from cleanup.rewrite import Rewriter, EXPANSION_ERROR, LOOKUP_FAILURE
    rw = Rewriter(make_cfg(virtual_alias_maps="inline:{{list@v.example=a@x.test, b@v.example}, "
                                               "{b@v.example=b@v.example, c@y.test}, "
                                               "loop1@v.example=loop2@v.example, "
                                               "loop2@v.example=loop1@v.example, "
                                               "@catch.example=sink@z.test}"))
    assert rw.recipient("list@v.example") == (["a@x.test", "b@v.example", "c@y.test"], None)
    assert rw.recipient("loop1@v.example") == (["loop1@v.example"], None)
    assert rw.recipient("anyone@catch.example") == (["sink@z.test"], None)
    assert rw.recipient("x+t@catch.example") == (["sink@z.test"], None)
    chain = ", ".join(f"c{i}@v.example=c{i + 1}@v.example" for i in range(5))
    rw = Rewriter(make_cfg(virtual_alias_maps="inline:{%s}" % chain,
                           virtual_alias_recursion_limit="3"))
    assert rw.recipient("c0@v.example")[1] == ("tempfail", EXPANSION_ERROR)
    rw = Rewriter(make_cfg(virtual_alias_maps="inline:{{big@v.example=a@x, b@x, c@x}}",
                           virtual_alias_expansion_limit="2"))
    assert rw.recipient("big@v.example")[1] == ("tempfail", EXPANSION_ERROR)
    rw = Rewriter(make_cfg(virtual_alias_maps="hash:/nonexistent/x"))
    assert rw.recipient("a@b.example")[1] == ("tempfail", LOOKUP_FAILURE)


# -- smtpd.recipients ----------------------------------------------------------------

def test_unlisted_recipients(make_cfg, tmp_path):
    from smtpd.recipients import RecipientValidator
    rv = RecipientValidator(make_cfg(
        local_recipient_maps="proxy:unix:passwd.byname inline:{postmaster=x}",
        virtual_alias_domains="valias.example", virtual_alias_maps="inline:{ok@valias.example=a@b}",
        virtual_mailbox_domains="vbox.example", virtual_mailbox_maps="inline:{ok@vbox.example=x}",
        relay_domains="relay.example", relay_recipient_maps="inline:{ok@relay.example=x}",
        relocated_maps="inline:{root@host.example=root@new.example}"))
    assert rv.check("root@host.example").text == (
        "<root@host.example>: Recipient address rejected: User has moved to root@new.example")
    assert rv.check("daemon@host.example") is None
    assert rv.check("postmaster+x@host.example") is None
    r = rv.check("nosuchuser@host.example")
    assert (r.code, r.enhanced) == (550, "5.1.1")
    assert r.text == "<nosuchuser@host.example>: Recipient address rejected: User unknown in local recipient table"
    assert rv.check("ok@valias.example") is None
    assert rv.check("no@valias.example").text.endswith("User unknown in virtual alias table")
    assert rv.check("ok@vbox.example") is None
    assert rv.check("no@vbox.example").text.endswith("User unknown in virtual mailbox table")
    assert rv.check("ok@relay.example") is None
    assert rv.check("no@relay.example").text.endswith("User unknown in relay recipient table")
    assert rv.check("anyone@elsewhere.example") is None
    rv = RecipientValidator(make_cfg(local_recipient_maps=f"hash:{tmp_path}/gone"))
    r = rv.check("x@host.example")
    assert (r.code, r.enhanced, r.text) == (451, "4.3.0", "<x@host.example>: Temporary lookup failure")
    assert RecipientValidator(make_cfg(local_recipient_maps="")).check("x@host.example") is None
    assert rv.check("PostMaster") is None
