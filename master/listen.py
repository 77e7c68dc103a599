"""Listening sockets: which addresses an inet service binds, and binding them.

Address selection is pure (`inet_endpoints`, injectable resolver); binding
is a thin layer over `socket`.

    inet_endpoints(host, port, inet_interfaces, inet_protocols, ipv6_available,
                   resolve=...) -> list[Endpoint]
    parse_port("smtp") -> 25;  parse_port("2525") -> 2525
    families(inet_protocols, ipv6_available) -> list[int]
    bind_inet(endpoint, backlog) -> socket;  bind_unix(path, backlog, kind) -> socket
    listen_backlog(maxproc, default_process_limit) -> int
    ipv6_available() -> bool

Rules, as Postfix's master:
* master.cf `host:port` binds that host only (a name binds each of its
  addresses); `port` alone binds every address in `inet_interfaces`.
* `inet_interfaces = all` binds the wildcard of each family in
  `inet_protocols` (`all` = IPv4 and, when the kernel has it, IPv6).
  `loopback-only` binds 127.0.0.1 and ::1.  IPv6 sockets are V6ONLY so
  that the IPv4 wildcard can be bound next to them.
* Addresses of a family not in `inet_protocols` are dropped.
Failures: unknown `inet_protocols` values and unknown port names raise
ValueError; bind errors are OSError, which the caller turns into Postfix's
`fatal: bind ADDR port PORT: REASON`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from typing import Callable, Iterable

INET_INTERFACES_ALL = "all"
INET_INTERFACES_LOOPBACK = "loopback-only"
PROTOCOL_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
PROTOCOLS_ALL = "all"
WILDCARD = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}

# Postfix's services/ports when /etc/services lacks them (minimal containers).
WELL_KNOWN_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465,
                    "lmtp": 24}

# Postfix's master uses max(maxproc, default_process_limit) as the backlog,
# sized for one connection per process.  A Fulmar worker accepts in a loop
# and serves many clients, so during a burst the kernel queue is the only
# buffer: never go below the kernel's own maximum (it caps larger values).
BACKLOG_FLOOR = socket.SOMAXCONN

UNIX_SOCKET_MODE = 0o666   # Postfix's unix_listen(): access is governed by the directory


@dataclass(frozen=True, order=True)
class Endpoint:
    family: int
    host: str
    port: int

    def __str__(self) -> str:
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def strip_brackets(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def parse_port(port: str, lookup: Callable[[str, str], int] = socket.getservbyname) -> int:
    port = port.strip()
    if port.isdigit():
        value = int(port)
        if not 0 < value < 65536:
            raise ValueError(f"bad port number: {port}")
        return value
    try:
        return lookup(port, "tcp")
    except OSError:
        if port in WELL_KNOWN_PORTS:
            return WELL_KNOWN_PORTS[port]
        raise ValueError(f"unknown service: {port}/tcp") from None


def families(inet_protocols: Iterable[str], ipv6: bool) -> list[int]:
    """Address families enabled by inet_protocols (in Postfix's order: IPv4 first)."""
    wanted: set[int] = set()
    for item in inet_protocols:
        item = item.strip().lower()
        if item == PROTOCOLS_ALL:
            wanted.update(PROTOCOL_FAMILIES.values())
        elif item in PROTOCOL_FAMILIES:
            wanted.add(PROTOCOL_FAMILIES[item])
        elif item:
            raise ValueError(f"parameter inet_protocols: unknown value: {item}")
    if not ipv6:
        wanted.discard(socket.AF_INET6)
    return [f for f in (socket.AF_INET, socket.AF_INET6) if f in wanted]


def _literal_family(host: str) -> int | None:
    try:
        addr = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


def default_resolve(host: str) -> list[tuple[int, str]]:
    infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    return [(fam, sa[0]) for fam, _t, _p, _c, sa in infos
            if fam in (socket.AF_INET, socket.AF_INET6)]


def _addresses(host: str, fams: list[int],
               resolve: Callable[[str], list[tuple[int, str]]]) -> list[tuple[int, str]]:
    host = strip_brackets(host.strip())
    fam = _literal_family(host)
    if fam is not None:
        return [(fam, host)] if fam in fams else []
    return [(f, a) for f, a in resolve(host) if f in fams]


def inet_endpoints(host: str | None, port: str, inet_interfaces: list[str],
                   inet_protocols: list[str], ipv6: bool,
                   resolve: Callable[[str], list[tuple[int, str]]] = default_resolve,
                   lookup_port: Callable[[str, str], int] = socket.getservbyname) -> list[Endpoint]:
    """Every (family, address, port) an inet service listens on, without duplicates."""
    number = parse_port(port, lookup_port)
    fams = families(inet_protocols, ipv6)
    pairs: list[tuple[int, str]] = []
    if host:
        pairs = _addresses(host, fams, resolve)
    else:
        names = [n.strip() for n in inet_interfaces if n.strip()] or [INET_INTERFACES_ALL]
        for name in names:
            lowered = name.lower()
            if lowered == INET_INTERFACES_ALL:
                pairs += [(f, WILDCARD[f]) for f in fams]
            elif lowered == INET_INTERFACES_LOOPBACK:
                pairs += [(f, LOOPBACK[f]) for f in fams]
            else:
                pairs += _addresses(name, fams, resolve)
    seen: set[Endpoint] = set()
    result: list[Endpoint] = []
    for fam, addr in pairs:
        ep = Endpoint(fam, addr, number)
        if ep not in seen:
            seen.add(ep)
            result.append(ep)
    return result


def listen_backlog(maxproc: int | None, default_process_limit: int) -> int:
    return max(maxproc or 0, default_process_limit, BACKLOG_FLOOR)


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def bind_inet(ep: Endpoint, backlog: int) -> socket.socket:
    sock = socket.socket(ep.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ep.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((ep.host, ep.port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def bind_unix(path: str, backlog: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """Bind a Unix socket at path, replacing a stale one (master holds the pid lock)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(path)
        os.chmod(path, UNIX_SOCKET_MODE)
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
