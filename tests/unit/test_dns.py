"""fulmar.dns against a tiny in-process UDP DNS responder on 127.0.0.1."""

import asyncio
import random

import dns.message
import dns.rcode
import dns.rrset
import pytest

from fulmar import dns as fdns

ZONE = {
    ("example.org.", "MX"): ["10 mx1.example.org.", "20 mx2.example.org.", "10 mx3.example.org."],
    ("mx1.example.org.", "A"): ["192.0.2.1"],
    ("mx1.example.org.", "AAAA"): ["2001:db8::1"],
    ("mx2.example.org.", "A"): ["192.0.2.2"],
    ("noaddr.example.org.", "A"): [],
    ("plain.example.org.", "A"): ["192.0.2.9"],
    ("nullmx.example.org.", "MX"): ["0 ."],
    ("7.2.0.192.in-addr.arpa.", "PTR"): ["mx.example.org."],
}
SERVFAIL = {"broken.example.org."}
SILENT = {"slow.example.org."}


class Responder(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        q = dns.message.from_wire(data)
        question = q.question[0]
        name = question.name.to_text().lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        if name in SILENT:
            return
        r = dns.message.make_response(q)
        if name in SERVFAIL:
            r.set_rcode(dns.rcode.SERVFAIL)
        elif not any(k[0] == name for k in ZONE):
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif ZONE.get((name, rtype)):
            r.answer.append(dns.rrset.from_text_list(name, 300, "IN", rtype, ZONE[(name, rtype)]))
        self.t.sendto(r.to_wire(), addr)


@pytest.fixture
async def resolver():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    yield fdns.Resolver([f"127.0.0.1:{port}"], lifetime=0.5, rng=random.Random(1))
    transport.close()


async def test_mx_sorted(resolver):
    r = await resolver.resolve_mx("example.org")
    assert not r.implicit and not r.null_mx
    assert sorted(r.hosts[:2]) == [(10, "mx1.example.org"), (10, "mx3.example.org")]
    assert r.hosts[2] == (20, "mx2.example.org")


async def test_equal_preferences_shuffled(resolver):
    seen = set()
    for _ in range(20):
        seen.add(tuple((await resolver.resolve_mx("example.org")).hosts[:2]))
    assert len(seen) == 2


async def test_implicit_mx(resolver):
    r = await resolver.resolve_mx("plain.example.org")
    assert r.implicit and r.hosts == [(0, "plain.example.org")]


async def test_null_mx(resolver):
    r = await resolver.resolve_mx("nullmx.example.org")
    assert r.null_mx and r.hosts == []


async def test_nxdomain_is_permanent(resolver):
    with pytest.raises(fdns.DnsError) as e:
        await resolver.resolve_mx("nope.example.org")
    assert not e.value.temporary and e.value.dsn == "5.1.2"
    assert e.value.text == ("Host or domain name not found. Name service error for "
                            "name=nope.example.org type=MX: Host not found")


async def test_servfail_is_temporary(resolver):
    with pytest.raises(fdns.DnsError) as e:
        await resolver.resolve_mx("broken.example.org")
    assert e.value.temporary and e.value.dsn == "4.4.3"
    assert e.value.text == ("Host or domain name not found. Name service error for "
                            "name=broken.example.org type=MX: Host not found, try again")


async def test_timeout_is_temporary(resolver):
    with pytest.raises(fdns.DnsError) as e:
        await resolver.resolve_mx("slow.example.org")
    assert e.value.temporary and e.value.dsn == "4.4.3"


async def test_no_servers_is_temporary():
    r = fdns.Resolver(["127.0.0.1:9"], lifetime=0.3)   # nothing listens on discard
    with pytest.raises(fdns.DnsError) as e:
        await r.resolve_mx("example.org")
    assert e.value.temporary


async def test_addresses(resolver):
    assert await resolver.resolve_addresses("mx1.example.org", ["ipv4", "ipv6"]) == ["192.0.2.1", "2001:db8::1"]
    assert await resolver.resolve_addresses("mx1.example.org", ["all"], preference="ipv6") == \
        ["2001:db8::1", "192.0.2.1"]
    assert await resolver.resolve_addresses("mx1.example.org", ["ipv4"]) == ["192.0.2.1"]
    assert await resolver.resolve_addresses("mx2.example.org", ["all"]) == ["192.0.2.2"]
    assert await resolver.resolve_addresses("192.0.2.50", ["ipv4"]) == ["192.0.2.50"]


async def test_address_failures(resolver):
    with pytest.raises(fdns.DnsError) as e:
        await resolver.resolve_addresses("noaddr.example.org", ["ipv4"])
    assert not e.value.temporary and e.value.dsn == "5.4.4"
    assert e.value.text.endswith("type=A: Host found but no data record of requested type")
    with pytest.raises(fdns.DnsError) as e:
        await resolver.resolve_addresses("gone.example.org", ["ipv4"])
    assert not e.value.temporary and e.value.text.endswith("type=A: Host not found")
    with pytest.raises(fdns.DnsError) as e:
        await resolver.resolve_addresses("broken.example.org", ["ipv4", "ipv6"])
    assert e.value.temporary


async def test_ptr(resolver):
    assert await resolver.resolve_ptr("192.0.2.7") == "mx.example.org"
    assert await resolver.resolve_ptr("192.0.2.8") is None


@pytest.mark.parametrize("text,out", [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5300", ("127.0.0.1", 5300)),
    ("::1", ("::1", 53)), ("[::1]:5300", ("::1", 5300)), ("[2001:db8::1]", ("2001:db8::1", 53)),
])
def test_parse_server_address(text, out):
    assert fdns.parse_server_address(text) == out


@pytest.mark.parametrize("bad", ["host.example", "1.2.3.4:x", "[::1", "[::1]x", "1.2.3.4:70000"])
def test_parse_server_address_bad(bad):
    with pytest.raises(ValueError):
        fdns.parse_server_address(bad)
