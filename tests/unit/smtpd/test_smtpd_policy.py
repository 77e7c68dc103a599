import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from fulmar.smtp import address as A
from smtpd.policy import (Client, Policy, PolicySettings, address_keys, client_keys,
                          reject_log_line, split_restrictions)

DEFAULT_RELAY = ["permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"]


def policy(resolve=None, **kw):
    base = dict(
        mynetworks=["127.0.0.0/8", "[::1]/128", "192.0.2.0/24"],
        mydestination=["mx.example.test", "localhost"], myorigin="mx.example.test",
        relay_domains=["relay.test"], virtual_alias_domains=["virt.test"],
        virtual_mailbox_domains=[], parent_domain_matches_subdomains=[],
        client_restrictions=[], helo_restrictions=[], sender_restrictions=[],
        relay_restrictions=["permit_mynetworks", "permit_sasl_authenticated",
                            "reject_unauth_destination"],
        recipient_restrictions=[], data_restrictions=[])
    base.update(kw)
    return Policy(PolicySettings(**base), resolve_domain=resolve)


OUTSIDE = Client("unknown", "203.0.113.9", helo="h", protocol="ESMTP")
INSIDE = Client("localhost", "127.0.0.1", helo="h", protocol="ESMTP")


def rcpt(pol, client, to, sender="a@b.test"):
    return asyncio.run(pol.check_rcpt(client, A.Path(sender), A.parse_path_arg(f"<{to}>", is_sender=False)[0]))


@pytest.mark.parametrize("to,ok", [
    ("u@mx.example.test", True), ("u@MX.EXAMPLE.TEST.", True), ("u@relay.test", True),
    ("u@virt.test", True), ("postmaster", True), ("u@sub.relay.test", False),
    ("u@elsewhere.test", False), ("u%elsewhere.test@mx.example.test", False),
    ("elsewhere.test!u@mx.example.test", False), ('"u@elsewhere.test"@relay.test', False),
    ("@mx.example.test:u@elsewhere.test", False), ("@elsewhere.test:u@mx.example.test", False),
])
def test_relay_control(to, ok):
    reply = rcpt(policy(), OUTSIDE, to)
    if ok:
        assert reply is None
    else:
        assert reply.code == 554 and reply.enhanced == "5.7.1"
        assert reply.text.endswith(": Relay access denied")


def test_mynetworks_and_sasl_may_relay():
    assert rcpt(policy(), INSIDE, "u@elsewhere.test") is None
    assert rcpt(policy(), Client("x", "::1"), "u@elsewhere.test") is None
    sasl = Client("unknown", "203.0.113.9", sasl_username="alice")
    assert rcpt(policy(), sasl, "u@elsewhere.test") is None


def test_defer_unauth_destination():
    r = rcpt(policy(relay_restrictions=DEFAULT_RELAY), OUTSIDE, "u@elsewhere.test")
    assert str(r) == "454 4.7.1 <u@elsewhere.test>: Relay access denied"


def test_no_relay_guard_means_config_error():
    pol = policy(relay_restrictions=["permit_mynetworks"])
    assert str(rcpt(pol, OUTSIDE, "u@mx.example.test")) == "451 4.3.5 Server configuration error"


def test_parent_domain_matching():
    pol = policy(relay_domains=["relay.test", ".dot.test"], parent_domain_matches_subdomains=["relay_domains"])
    assert rcpt(pol, OUTSIDE, "u@a.relay.test") is None
    assert rcpt(policy(relay_domains=[".dot.test"]), OUTSIDE, "u@a.dot.test") is None
    assert rcpt(policy(relay_domains=[".dot.test"]), OUTSIDE, "u@dot.test") is not None


def test_non_fqdn_and_generic():
    pol = policy(recipient_restrictions=["reject_non_fqdn_recipient"],
                 sender_restrictions=["reject_non_fqdn_sender"])
    assert str(rcpt(pol, OUTSIDE, "u@mx.example.test", sender="a@nodot")) == \
        "504 5.5.2 <a@nodot>: Sender address rejected: need fully-qualified address"
    assert str(rcpt(pol, OUTSIDE, "postmaster")) == \
        "504 5.5.2 <postmaster>: Recipient address rejected: need fully-qualified address"
    assert rcpt(pol, OUTSIDE, "u@mx.example.test", sender="") is None
    pol = policy(client_restrictions=["reject"])
    assert str(rcpt(pol, INSIDE, "u@mx.example.test")) == \
        "554 5.7.1 <u@mx.example.test>: Recipient address rejected: Access denied"


def test_unknown_recipient_domain():
    async def resolve(domain):
        return {"gone.test": "notfound", "flaky.test": "tempfail"}.get(domain, "ok")
    pol = policy(resolve, relay_restrictions=["permit_mynetworks", "reject_unauth_destination"],
                 recipient_restrictions=["reject_unknown_recipient_domain"])
    assert str(rcpt(pol, INSIDE, "u@gone.test")) == \
        "450 4.1.2 <u@gone.test>: Recipient address rejected: Domain not found"
    assert str(rcpt(pol, INSIDE, "u@flaky.test")) == \
        "450 4.1.2 <u@flaky.test>: Recipient address rejected: Domain not found"
    assert rcpt(pol, INSIDE, "u@fine.test") is None
    pol2 = policy(resolve, unknown_address_reject_code=550,
                  recipient_restrictions=["reject_unknown_recipient_domain", "reject"])
    assert rcpt(pol2, INSIDE, "u@gone.test").code == 550
    # tempfail is defer_if_permit: a later reject wins
    assert rcpt(pol2, INSIDE, "u@flaky.test").code == 554


def test_access_tables(tmp_path):
    (tmp_path / "rcpt").write_text("spam.test REJECT go away\nuser@ 450 4.2.0 later\n"
                                   "vip@elsewhere.test OK\n.sub.test DEFER\nok.test DUNNO\n")
    (tmp_path / "client").write_text("203.0.113 REJECT\n")
    spec = f"texthash:{tmp_path}/rcpt"
    pol = policy(recipient_restrictions=["check_recipient_access", spec])
    assert rcpt(pol, INSIDE, "x@ok.test") is None
    assert str(rcpt(pol, INSIDE, "x@spam.test")) == "554 5.7.1 <x@spam.test>: Recipient address rejected: go away"
    assert str(rcpt(pol, OUTSIDE, "user@mx.example.test")) == \
        "450 4.2.0 <user@mx.example.test>: Recipient address rejected: later"
    assert str(rcpt(pol, INSIDE, "x@a.sub.test")) == "450 4.7.1 <x@a.sub.test>: Recipient address rejected: Access denied"
    # OK in the recipient list does not bypass relay control (relay list comes first)
    assert rcpt(pol, OUTSIDE, "vip@elsewhere.test").code == 554
    pol = policy(client_restrictions=["check_client_access", f"texthash:{tmp_path}/client"])
    assert str(rcpt(pol, OUTSIDE, "u@mx.example.test")) == \
        "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: Access denied"
    pol = policy(sender_restrictions=["check_sender_access", "inline:{{a@b.test=550 5.7.0 nope}}"])
    assert str(rcpt(pol, OUTSIDE, "u@mx.example.test")) == "550 5.7.0 <a@b.test>: Sender address rejected: nope"
    pol = policy(recipient_restrictions=["check_recipient_access", f"texthash:{tmp_path}/missing"])
    assert str(rcpt(pol, OUTSIDE, "u@mx.example.test")) == "451 4.3.0 <u@mx.example.test>: Temporary lookup failure"
    pol = policy(relay_restrictions=["check_client_access", "inline:{203.0.113.9=permit_mynetworks}",
                                     "reject_unauth_destination"])
    assert rcpt(pol, OUTSIDE, "u@elsewhere.test").code == 554


def test_unknown_restriction_is_config_error():
    pol = policy(recipient_restrictions=["reject_everything_please"])
    assert rcpt(pol, OUTSIDE, "u@mx.example.test").code == 451


def test_lookup_keys():
    assert address_keys("User@Sub.Example.com", False) == [
        "user@sub.example.com", "sub.example.com", ".example.com", ".com", "user@"]
    assert address_keys("u@a.b", True) == ["u@a.b", "a.b", "b", "u@"]
    assert client_keys("mail.ex.org", "192.0.2.1", False) == [
        "mail.ex.org", ".ex.org", ".org", "192.0.2.1", "192.0.2", "192.0", "192"]
    assert client_keys("unknown", "2001:db8::1", False)[:3] == ["2001:db8::1", "2001:db8:0:0:0:0:0", "2001:db8:0:0:0:0"]


def test_reject_log_line():
    reply = rcpt(policy(), OUTSIDE, "x@y.test")
    line = reject_log_line(None, "RCPT", OUTSIDE, reply, A.Path("a@b"), A.Path("x@y.test"))
    assert line == ("NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 554 5.7.1 <x@y.test>: "
                    "Relay access denied; from=<a@b> to=<x@y.test> proto=ESMTP helo=<h>")


def test_split_restrictions_keeps_braces():
    assert split_restrictions("check_client_access inline:{a=b, c=d}, permit") == [
        "check_client_access", "inline:{a=b, c=d}", "permit"]


_local = st.text(alphabet="abu.-+%!@\" ", min_size=1, max_size=10)
_domain = st.sampled_from(["mx.example.test", "relay.test", "virt.test", "elsewhere.test", "sub.relay.test",
                           "localhost", "[192.0.2.1]", "MX.example.test"])
_route = st.sampled_from(["", "@mx.example.test:", "@elsewhere.test,@relay.test:"])


@settings(max_examples=400, deadline=None)
@given(_route, _local, _domain)
def test_never_an_open_relay(route, local, domain):
    """For an outside client, every accepted recipient is a plain address in one of our domains."""
    arg = f"<{route}{A.quote_local_part(local)}@{domain}>"
    try:
        path, _ = A.parse_path_arg(arg, is_sender=False)
    except A.AddressError:
        return
    for relay in (DEFAULT_RELAY, ["reject_unauth_destination"], ["permit_sasl_authenticated",
                                                                 "reject_unauth_destination"]):
        pol = policy(relay_restrictions=relay)
        reply = asyncio.run(pol.check_rcpt(OUTSIDE, A.Path("a@b.test"), path))
        if reply is None:
            assert not path.route
            assert not any(c in path.local for c in "%!@")
            assert path.domain.lower().rstrip(".") in ("mx.example.test", "relay.test", "virt.test", "localhost")


class _FlipTable:
    """A table whose answer for one key changes: it must never be cached."""

    def __init__(self):
        self.found = False

    def lookup(self, key):
        from fulmar import tables
        return tables.Result(tables.FOUND if self.found else tables.NOTFOUND, "OK" if self.found else None)


def test_network_list_caches_literal_networks_but_not_tables():
    from smtpd.policy import NetworkList
    nets = NetworkList(["127.0.0.0/8", "[::1]/128"])
    for _ in range(2):      # the second answer comes from the cache
        assert nets.match("127.0.0.1") is True
        assert nets.match("::1") is True
        assert nets.match("192.0.2.1") is False
        assert nets.match("not an address") is False
    table = _FlipTable()
    with_table = NetworkList(["127.0.0.0/8", "cidr:/x"], opener=lambda name, cfg: table)
    assert with_table.match("192.0.2.1") is False
    table.found = True
    assert with_table.match("192.0.2.1") is True
    assert with_table.match("127.0.0.1") is True


def etrn(pol, client, domain):
    return asyncio.run(pol.check_etrn(client, domain))


def test_etrn_restrictions(tmp_path):
    # None by default: fast_flush_domains alone decides (smtpd.session).
    assert etrn(policy(), OUTSIDE, "example.org") is None
    pol = policy(etrn_restrictions=["permit_mynetworks", "reject"])
    assert etrn(pol, INSIDE, "example.org") is None
    assert str(etrn(pol, OUTSIDE, "example.org")) == \
        "554 5.7.1 <example.org>: Etrn command rejected: Access denied"
    # check_etrn_access: the domain, then its parents.
    (tmp_path / "etrn").write_text(".example.org REJECT not from here\nok.example.org OK\n")
    pol = policy(etrn_restrictions=["check_etrn_access", f"texthash:{tmp_path}/etrn"])
    assert str(etrn(pol, OUTSIDE, "a.example.org")) == \
        "554 5.7.1 <a.example.org>: Etrn command rejected: not from here"
    assert etrn(pol, OUTSIDE, "ok.example.org") is None
    assert etrn(pol, OUTSIDE, "example.net") is None
    # The client and HELO lists apply at ETRN too (smtpd_delay_reject).
    pol = policy(client_restrictions=["check_client_access", "inline:{203.0.113.9=REJECT}"])
    assert str(etrn(pol, OUTSIDE, "example.org")) == \
        "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: Access denied"
    # ...and the recipient list does not (nor does relay control).
    pol = policy(recipient_restrictions=["reject"])
    assert etrn(pol, OUTSIDE, "example.org") is None


def eod(pol, client, sender="a@b.test"):
    return asyncio.run(pol.check_eod(client, A.Path(sender)))


def test_end_of_data_restrictions():
    assert not policy().eod_restricted
    assert eod(policy(), OUTSIDE) is None
    pol = policy(end_of_data_restrictions=["permit_mynetworks", "reject"])
    assert pol.eod_restricted
    assert eod(pol, INSIDE) is None
    assert str(eod(pol, OUTSIDE)) == "554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied"
    pol = policy(end_of_data_restrictions=["check_sender_access", "inline:{{a@b.test=550 5.7.0 nope}}"])
    assert str(eod(pol, OUTSIDE)) == "550 5.7.0 <a@b.test>: Sender address rejected: nope"
    assert eod(pol, OUTSIDE, sender="c@d.test") is None
