"""Address resolution: which transport and next hop deliver a recipient.

NAME
    fulmar.resolve -- Postfix's trivial-rewrite "resolve" step

SYNOPSIS
    route = resolve(cfg, "bob@example.org")
    route.transport, route.nexthop, route.address_class

DESCRIPTION
    Decides, for one recipient address, the address class and with it the
    transport and next hop, in Postfix's order (ADDRESS_CLASS_README):

    * local: the domain is listed in `mydestination` (or the address has no
      domain at all): `local_transport` (default `local:$myhostname`).
    * relay: the domain is in `relay_domains`: `relay_transport`
      (default `relay`), next hop the domain, or `relayhost` when set.
    * default: anything else: `default_transport` (default `smtp`), next
      hop the domain, or `relayhost` when set.

    A transport value has Postfix's `transport:nexthop` form; an empty next
    hop means "the recipient domain". Domain lists match
    case-insensitively; `relay_domains` also matches subdomains as
    `parent_domain_matches_subdomains` says for Postfix.

    Virtual alias and virtual mailbox classes, `transport_maps` and the
    sender-dependent maps belong to the tables issue and are not handled
    here yet (XXX).

    The function is pure and cheap: daemons cache a Resolver per Config.
"""

from __future__ import annotations

from dataclasses import dataclass

CLASS_LOCAL = "local"
CLASS_RELAY = "relay"
CLASS_DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Route:
    transport: str
    nexthop: str
    address_class: str


def split_transport(value: str) -> tuple[str, str]:
    """Split Postfix's `transport:nexthop` (nexthop may be empty)."""
    transport, _, nexthop = value.partition(":")
    return transport.strip(), nexthop.strip()


def domain_of(address: str) -> str:
    """The domain part of an address, lower case, without a trailing dot."""
    at = address.rfind("@")
    if at < 0:
        return ""
    return address[at + 1:].rstrip(".").lower()


class Resolver:
    """Resolves addresses under one configuration; build once per Config."""

    def __init__(self, cfg) -> None:
        self.mydestination = {d.lower().rstrip(".") for d in cfg.get("mydestination")
                              if not _is_table(d)}
        self.relay_domains = {d.lower().rstrip(".") for d in cfg.get("relay_domains")
                              if not _is_table(d)}
        self.parent_matches = "relay_domains" in cfg.get("parent_domain_matches_subdomains")
        self.relayhost = cfg.get("relayhost").strip()
        self.local_transport = split_transport(cfg.get("local_transport"))
        self.relay_transport = split_transport(cfg.get("relay_transport"))
        self.default_transport = split_transport(cfg.get("default_transport"))
        self.myhostname = cfg.get("myhostname").lower()

    def is_local_domain(self, domain: str) -> bool:
        return domain in self.mydestination

    def is_relay_domain(self, domain: str) -> bool:
        if domain in self.relay_domains:
            return True
        if self.parent_matches:
            parts = domain.split(".")
            for i in range(1, len(parts)):
                if ".".join(parts[i:]) in self.relay_domains:
                    return True
        return False

    def resolve(self, address: str) -> Route:
        domain = domain_of(address)
        if not domain or self.is_local_domain(domain):
            transport, nexthop = self.local_transport
            return Route(transport, nexthop or self.myhostname, CLASS_LOCAL)
        if self.is_relay_domain(domain):
            transport, nexthop = self.relay_transport
            return Route(transport, nexthop or self.relayhost or domain, CLASS_RELAY)
        transport, nexthop = self.default_transport
        return Route(transport, nexthop or self.relayhost or domain, CLASS_DEFAULT)


def _is_table(item: str) -> bool:
    # "type:name" lookup tables and "/file" lists in domain lists are the
    # tables issue's business; a bare domain never contains ":" or "/".
    return ":" in item or item.startswith("/")


def resolve(cfg, address: str) -> Route:
    """One-shot convenience wrapper; daemons keep a Resolver instead."""
    return Resolver(cfg).resolve(address)
