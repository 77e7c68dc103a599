"""fulmar.resolve: address classes and next hops."""

from fulmar.resolve import Resolver


class Cfg(dict):
    def get(self, name):
        return self[name]


def cfg(**kw):
    base = Cfg(mydestination=["host.example", "localhost"], relay_domains=["relay.example"],
               parent_domain_matches_subdomains=["relay_domains"], relayhost="",
               local_transport="local:$myhostname", relay_transport="relay",
               default_transport="smtp", myhostname="host.example")
    base["local_transport"] = "local:host.example"
    base.update(kw)
    return base


def test_local_domain_and_bare_user_go_local():
    r = Resolver(cfg())
    assert r.resolve("bob@HOST.example").transport == "local"
    assert r.resolve("bob").address_class == "local"
    assert r.resolve("bob@localhost.").nexthop == "host.example"


def test_relay_domains_and_subdomains():
    r = Resolver(cfg())
    assert r.resolve("a@relay.example").transport == "relay"
    assert r.resolve("a@sub.relay.example").nexthop == "sub.relay.example"
    assert r.resolve("a@notrelay.example").transport == "smtp"


def test_relayhost_is_the_nexthop_for_remote_mail():
    r = Resolver(cfg(relayhost="[10.0.0.1]:587"))
    route = r.resolve("a@far.example")
    assert (route.transport, route.nexthop) == ("smtp", "[10.0.0.1]:587")
    assert r.resolve("a@host.example").transport == "local"


def test_transport_with_nexthop():
    r = Resolver(cfg(default_transport="smtp:[smart.example]"))
    assert r.resolve("a@far.example").nexthop == "[smart.example]"
