"""Asynchronous DNS lookups for mail routing (MX, A/AAAA, PTR).

NAME
    fulmar.dns - MX and address resolution with Postfix's outcomes and texts

SYNOPSIS
    from fulmar import dns as fdns
    r = fdns.Resolver.from_config(cfg)           # honours dns_server_addresses
    r = fdns.Resolver(["127.0.0.1:5300", "[::1]:5300"])   # or explicit servers
    mx = await r.resolve_mx("example.org")      -> MxResult
    mx.hosts      [(10, "mx1.example.org"), (20, "mx2.example.org")]
    mx.implicit   True when there is no MX and the domain itself is used
    mx.null_mx    True for RFC 7505 "MX 0 ." (hosts is then empty)
    ips = await r.resolve_addresses("mx1.example.org", ("ipv4", "ipv6"),
                                    preference="any") -> list[str]
    name = await r.resolve_ptr("192.0.2.7")     -> str | None
    fdns.parse_server_address("[::1]:53")       -> ("::1", 53)
    fdns.DnsError: .temporary (bool), .dsn ("4.4.3", "5.1.2", ...), .text

DESCRIPTION
    Every lookup has three outcomes (house rule 5): an answer, a permanent
    failure, or "try again later"; a failure is raised as DnsError and
    never reads as "not found".

    MX lookup (RFC 5321 §5.1): the MX records sorted by preference, hosts
    of equal preference shuffled.  NOERROR without MX records gives the
    implicit MX (preference 0, the domain itself).  A single "0 ." record
    (RFC 7505 null MX) gives null_mx=True.  NXDOMAIN is permanent:
        5.1.2 Host or domain name not found. Name service error for
              name=X type=MX: Host not found
    SERVFAIL, REFUSED from every server, timeouts and "no servers" are
    temporary:
        4.4.3 Host or domain name not found. Name service error for
              name=X type=MX: Host not found, try again
    (Postfix looks up the A record after an NXDOMAIN MX answer and
    reports 5.4.4 for type=A; Fulmar stops at the MX answer because the
    name does not exist, with the 5.1.2 that issue 3 asks for.)

    Address lookup: A and/or AAAA by the families given (Postfix's
    inet_protocols values "ipv4", "ipv6"; "all" means both), in parallel.
    Any address found is success.  Otherwise a temporary failure of either
    query wins (4.4.3); else NXDOMAIN or no data is permanent 5.4.4 with
    Postfix's dns_strerror() text ("Host not found", "Host found but no
    data record of requested type").  A numeric address is returned as is.
    preference "ipv4"/"ipv6" puts that family first; "any" keeps the
    order of the answers (A first).  randomize shuffles the addresses of
    each family, as smtp_randomize_addresses does.

    Servers: dns_server_addresses lists "ip", "ip:port" or "[ipv6]:port";
    empty means /etc/resolv.conf.  The lifetime of a query is
    RESOLVER_LIFETIME seconds (libc's RES_TIMEOUT 5 s x RES_DFLRETRY 2).

FAILURES
    Names longer than DNS allows or with empty labels are permanent 5.4.4
    ("Malformed or unexpected name server reply" is not used: the name is
    simply not found).  A server list entry that does not parse raises
    ValueError at construction, which daemons report as a fatal config
    error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

#: Query lifetime in seconds: libc's RES_TIMEOUT (5) times RES_DFLRETRY (2).
RESOLVER_LIFETIME = 10.0
DNS_PORT = 53

# Postfix dns_strerror() texts for h_errno values.
TEXT_HOST_NOT_FOUND = "Host not found"
TEXT_TRY_AGAIN = "Host not found, try again"
TEXT_NO_DATA = "Host found but no data record of requested type"
TEXT_NO_RECOVERY = "Non-recoverable error"

DSN_DOMAIN_NOT_FOUND = "5.1.2"
DSN_TRY_AGAIN = "4.4.3"
DSN_HOST_NOT_FOUND = "5.4.4"


class DnsError(Exception):
    """A lookup that did not give an answer; temporary or permanent."""

    def __init__(self, temporary: bool, dsn: str, text: str):
        super().__init__(text)
        self.temporary = temporary
        self.dsn = dsn
        self.text = text


@dataclass(slots=True)
class MxResult:
    domain: str
    hosts: list[tuple[int, str]] = field(default_factory=list)
    implicit: bool = False
    null_mx: bool = False


def name_service_text(name: str, rtype: str, why: str) -> str:
    """Postfix's dns_query() failure text."""
    return f"Host or domain name not found. Name service error for name={name} type={rtype}: {why}"


def parse_server_address(text: str) -> tuple[str, int]:
    """"ip", "ip:port", "[ipv6]" or "[ipv6]:port" -> (ip, port)."""
    s = text.strip()
    port = DNS_PORT
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError(f"bad DNS server address: {text!r}")
        host, rest = s[1:end], s[end + 1:]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"bad DNS server address: {text!r}")
            port = int(rest[1:])
    elif s.count(":") == 1:
        host, _, p = s.partition(":")
        if not p.isdigit():
            raise ValueError(f"bad DNS server address: {text!r}")
        port = int(p)
    else:
        host = s  # bare IPv4 or bare IPv6
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad DNS server address: {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad DNS server address: {text!r}")
    return host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _families(families) -> list[str]:
    out: list[str] = []
    for f in families:
        f = f.lower()
        if f == "all":
            out += ["ipv4", "ipv6"]
        elif f in ("ipv4", "ipv6") and f not in out:
            out.append(f)
    return out


class Resolver:
    """dnspython's asyncio resolver with Postfix's error classification."""

    def __init__(self, servers: list[str] | None = None, *,
                 lifetime: float = RESOLVER_LIFETIME, rng: random.Random | None = None):
        if servers:
            self._res = dns.asyncresolver.Resolver(configure=False)
            self._res.nameservers = [
                dns.nameserver.Do53Nameserver(ip, port)
                for ip, port in (parse_server_address(s) for s in servers)
            ]
        else:
            self._res = dns.asyncresolver.Resolver(configure=True)
        self._res.lifetime = lifetime
        self._res.timeout = lifetime
        self._res.cache = None
        self._rng = rng or random.Random()

    @classmethod
    def from_config(cls, cfg) -> Resolver:
        return cls(cfg.get("dns_server_addresses"))

    async def _query(self, name: str, rtype: str):
        """Answer RRset, or None for NOERROR/no data; raises DnsError."""
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, ValueError):
            raise DnsError(False, DSN_HOST_NOT_FOUND,
                           name_service_text(name, rtype, TEXT_HOST_NOT_FOUND)) from None
        try:
            answer = await self._res.resolve(qname, rtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise DnsError(False, DSN_HOST_NOT_FOUND,
                           name_service_text(name, rtype, TEXT_HOST_NOT_FOUND)) from None
        except dns.resolver.YXDOMAIN:
            raise DnsError(False, DSN_HOST_NOT_FOUND,
                           name_service_text(name, rtype, TEXT_NO_RECOVERY)) from None
        except (dns.exception.DNSException, OSError):
            # NoNameservers (SERVFAIL/REFUSED everywhere), LifetimeTimeout,
            # malformed replies, socket errors: try again later.
            raise DnsError(True, DSN_TRY_AGAIN,
                           name_service_text(name, rtype, TEXT_TRY_AGAIN)) from None
        return answer.rrset

    async def resolve_mx(self, domain: str) -> MxResult:
        domain = domain.rstrip(".")
        try:
            rrset = await self._query(domain, "MX")
        except DnsError as e:
            if not e.temporary:
                raise DnsError(False, DSN_DOMAIN_NOT_FOUND,
                               name_service_text(domain, "MX", TEXT_HOST_NOT_FOUND)) from None
            raise
        result = MxResult(domain)
        if rrset is None or len(rrset) == 0:
            result.implicit = True
            result.hosts = [(0, domain)]
            return result
        records = []
        for rr in rrset:
            if rr.exchange == dns.name.root:
                # RFC 7505: one "0 ." record; Postfix treats any root
                # exchange as null MX.
                result.null_mx = True
                return result
            records.append((rr.preference, rr.exchange.to_text(omit_final_dot=True)))
        self._rng.shuffle(records)
        records.sort(key=lambda r: r[0])   # stable: equal preferences stay shuffled
        result.hosts = records
        return result

    async def resolve_addresses(self, host: str, families=("ipv4", "ipv6"), *,
                                preference: str = "any", randomize: bool = False) -> list[str]:
        host = host.rstrip(".")
        fams = _families(families)
        if _is_ip(host):
            ip = ipaddress.ip_address(host)
            if f"ipv{ip.version}" in fams:
                return [host]
            raise DnsError(False, DSN_HOST_NOT_FOUND, f"{host}: host not found")
        types = ["A" if f == "ipv4" else "AAAA" for f in fams]
        outcomes = await asyncio.gather(*(self._query(host, t) for t in types),
                                        return_exceptions=True)
        found: dict[str, list[str]] = {}
        errors: list[DnsError] = []
        no_data_type = None
        for rtype, out in zip(types, outcomes):
            if isinstance(out, DnsError):
                errors.append(out)
            elif isinstance(out, BaseException):
                raise out
            elif out is None or len(out) == 0:
                no_data_type = rtype
            else:
                ips = [rr.address for rr in out]
                if randomize:
                    self._rng.shuffle(ips)
                found[rtype] = ips
        if found:
            order = list(types)
            if preference == "ipv6" and "AAAA" in order:
                order = ["AAAA"] + [t for t in order if t != "AAAA"]
            elif preference == "ipv4" and "A" in order:
                order = ["A"] + [t for t in order if t != "A"]
            return [ip for t in order for ip in found.get(t, [])]
        temp = [e for e in errors if e.temporary]
        if temp:
            raise temp[-1]
        if errors:
            raise errors[-1]
        rtype = no_data_type or (types[-1] if types else "A")
        raise DnsError(False, DSN_HOST_NOT_FOUND, name_service_text(host, rtype, TEXT_NO_DATA))

    async def resolve_ptr(self, ip: str) -> str | None:
        """The first PTR name of an address, None when there is none."""
        rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        try:
            rrset = await self._query(rev, "PTR")
        except DnsError as e:
            if e.temporary:
                raise
            return None
        if not rrset:
            return None
        return rrset[0].target.to_text(omit_final_dot=True)
