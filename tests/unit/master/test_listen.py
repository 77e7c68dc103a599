"""master/listen.py: which addresses an inet service binds (no sockets)."""

import socket

import pytest
from hypothesis import given, strategies as st

from master import listen
from master.listen import Endpoint

V4, V6 = socket.AF_INET, socket.AF_INET6


def no_lookup(name, proto):
    raise OSError("no /etc/services")


def resolver(table):
    return lambda host: table[host]


def eps(host, port, interfaces=("all",), protocols=("all",), ipv6=True, resolve=None):
    return listen.inet_endpoints(host, port, list(interfaces), list(protocols), ipv6,
                                 resolve=resolve or resolver({}), lookup_port=no_lookup)


def test_all_interfaces_both_families():
    assert eps(None, "2525") == [Endpoint(V4, "0.0.0.0", 2525), Endpoint(V6, "::", 2525)]


def test_all_interfaces_without_ipv6():
    assert eps(None, "2525", ipv6=False) == [Endpoint(V4, "0.0.0.0", 2525)]


def test_inet_protocols_ipv4_only():
    assert eps(None, "25", protocols=["ipv4"]) == [Endpoint(V4, "0.0.0.0", 25)]
    assert eps(None, "25", protocols=["ipv6"]) == [Endpoint(V6, "::", 25)]
    assert eps(None, "25", protocols=["ipv4", "ipv6"]) == eps(None, "25")


def test_bad_inet_protocols():
    with pytest.raises(ValueError, match="inet_protocols"):
        eps(None, "25", protocols=["ipx"])


def test_loopback_only():
    assert eps(None, "25", interfaces=["loopback-only"]) == [
        Endpoint(V4, "127.0.0.1", 25), Endpoint(V6, "::1", 25)]


def test_service_host_overrides_interfaces():
    assert eps("127.1.2.3", "2525", interfaces=["10.0.0.1"]) == [Endpoint(V4, "127.1.2.3", 2525)]
    assert eps("::1", "2525") == [Endpoint(V6, "::1", 2525)]
    assert eps("[::1]", "2525") == [Endpoint(V6, "::1", 2525)]


def test_ipv6_literal_dropped_when_ipv6_is_off():
    assert eps("::1", "2525", protocols=["ipv4"]) == []


def test_interface_list_with_names_and_duplicates():
    resolve = resolver({"localhost": [(V4, "127.0.0.1"), (V6, "::1"), (V4, "127.0.0.1")]})
    got = eps(None, "25", interfaces=["localhost", "127.0.0.1", "[::1]"], resolve=resolve)
    assert got == [Endpoint(V4, "127.0.0.1", 25), Endpoint(V6, "::1", 25)]
    got = eps(None, "25", interfaces=["localhost"], protocols=["ipv4"], resolve=resolve)
    assert got == [Endpoint(V4, "127.0.0.1", 25)]


def test_port_names():
    assert listen.parse_port("smtp", no_lookup) == 25
    assert listen.parse_port("submission", no_lookup) == 587
    assert listen.parse_port("smtp", lambda n, p: 2525) == 2525
    with pytest.raises(ValueError):
        listen.parse_port("nosuchservice", no_lookup)
    for bad in ("0", "65536"):
        with pytest.raises(ValueError):
            listen.parse_port(bad, no_lookup)


@given(st.integers(1, 65535))
def test_port_numbers(port):
    assert listen.parse_port(str(port), no_lookup) == port


@given(st.lists(st.sampled_from(["all", "loopback-only", "127.0.0.1", "::1", "[::1]", "127.9.9.9"]),
                max_size=6),
       st.lists(st.sampled_from(["all", "ipv4", "ipv6"]), min_size=1, max_size=3),
       st.booleans())
def test_endpoints_unique_and_in_enabled_families(interfaces, protocols, ipv6):
    got = eps(None, "2525", interfaces=interfaces, protocols=protocols, ipv6=ipv6)
    assert len(got) == len(set(got))
    fams = set(listen.families(protocols, ipv6))
    assert all(ep.family in fams for ep in got)


def test_endpoint_text():
    assert str(Endpoint(V4, "127.0.0.1", 25)) == "127.0.0.1:25"
    assert str(Endpoint(V6, "::1", 25)) == "[::1]:25"


def test_backlog_never_below_postfix_or_kernel():
    assert listen.listen_backlog(None, 100) >= 100
    assert listen.listen_backlog(5000, 100) >= 5000
    assert listen.listen_backlog(1, 100) >= socket.SOMAXCONN
