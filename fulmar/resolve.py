"""Address resolution: which transport and next hop deliver a recipient.

NAME
    fulmar.resolve -- Postfix's trivial-rewrite "resolve" step

SYNOPSIS
    resolver = Resolver(cfg)                # build once per Config
    route = resolver.resolve("bob@example.org", sender="alice@example.com")
    route.transport, route.nexthop, route.address_class
    resolver.address_class("example.org") -> (class, retry: bool)

DESCRIPTION
    Decides, for one recipient address, the address class and with it the
    transport and next hop, in Postfix's order (ADDRESS_CLASS_README):

    * local: the domain is in `mydestination`, or is an address literal
      [ip] of `inet_interfaces`/`proxy_interfaces`; an address without a
      domain gets `@$myorigin` first.  `local_transport`
      (default `local:$myhostname`).
    * virtual alias: the domain is in `virtual_alias_domains`.  cleanup
      has already expanded every address that virtual_alias_maps knows,
      so what reaches here is unknown: `error:5.1.1 User unknown in
      virtual alias table`.
    * virtual mailbox: the domain is in `virtual_mailbox_domains`:
      `virtual_transport` (e.g. `virtual`, `lmtp:unix:private/dovecot`).
    * relay: the domain is in `relay_domains`: `relay_transport`.
    * default: anything else: `default_transport`, or what
      `sender_dependent_default_transport_maps` says for the sender.

    The next hop of the relay and default classes is `relayhost` (or the
    sender's `sender_dependent_relayhost_maps` entry) when set, else the
    recipient domain; of the local and virtual classes $myhostname.

    Then, in this order, overrides:
    * `relocated_maps` (address lookup order of fulmar.tables.addr): found
      → `error:5.1.6 User has moved to <value>`.
    * `transport_maps`: keys user+ext@domain, user@domain, domain, then
      its parents as ".parent" (or "parent" with transport_maps in
      `parent_domain_matches_subdomains`), then "*".  The value
      `transport:nexthop`; an empty transport keeps the class transport,
      an empty next hop keeps the class next hop.

    Domain lists accept names, "/file" lists and type:table entries.
    A transport value has Postfix's `transport:nexthop` form.

FAILURE BEHAVIOUR
    A table that answers RETRY never makes an address unknown: the route
    is the `retry` transport with next hop "4.3.0 ..." (master.cf's
    `retry ... error` service defers it), class "retry".

    Lookups are synchronous; file tables are cheap (in-memory or an
    indexed file).  XXX socketmap:/sqlite: tables in these maps block
    qmgr's event loop for the duration of a lookup.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fulmar import tables
from fulmar.tables.addr import find_address

CLASS_LOCAL = "local"
CLASS_ALIAS = "virtual_alias"
CLASS_VIRTUAL = "virtual_mailbox"
CLASS_RELAY = "relay"
CLASS_DEFAULT = "default"
CLASS_RETRY = "retry"

ERROR_TRANSPORT = "error"
RETRY_TRANSPORT = "retry"
RETRY_NEXTHOP = "4.3.0 Temporary lookup failure"
UNKNOWN_ALIAS = "5.1.1 User unknown in virtual alias table"
#: The key Postfix uses for the null sender in sender-dependent maps
#: (empty_address_relayhost_maps_lookup_key and friends).
NULL_SENDER_KEY = "<>"


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


def _param(cfg, name: str, default):
    try:
        return cfg.get(name)
    except KeyError:
        return default


class DomainList:
    """mydestination-style list: names, "/file" lists, type:table entries."""

    def __init__(self, items, parent_matches: bool, cfg=None, cache: dict | None = None):
        self.names: set[str] = set()
        self.tables: list = []
        self.parent_matches = parent_matches
        for item in items:
            if item.startswith("/"):
                item = "texthash:" + item
            if ":" in item and not item.startswith("["):
                if cache is not None and item in cache:
                    self.tables.append(cache[item])
                else:
                    t = tables.open_table(item, cfg)
                    if cache is not None:
                        cache[item] = t
                    self.tables.append(t)
            else:
                self.names.add(item.lower().rstrip("."))

    def __bool__(self) -> bool:
        return bool(self.names or self.tables)

    def match(self, domain: str) -> bool | None:
        """True/False; None when a table answered RETRY."""
        d = domain.lower().rstrip(".")
        if not d:
            return False
        if d in self.names:
            return True
        parents = []
        if self.parent_matches:
            labels = d.split(".")
            parents = [".".join(labels[i:]) for i in range(1, len(labels))]
            if any(p in self.names or "." + p in self.names for p in parents):
                return True
        retry = False
        for t in self.tables:
            for key in [d, *parents]:
                r = t.lookup(key)
                if r.status == tables.FOUND:
                    return True
                if r.status == tables.RETRY:
                    retry = True
        return None if retry else False


class Resolver:
    """Resolves addresses under one configuration; build once per Config."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        cache: dict = {}
        parent = {p.lower() for p in _param(cfg, "parent_domain_matches_subdomains", [])}
        self.mydestination = DomainList(cfg.get("mydestination"), "mydestination" in parent, cfg, cache)
        self.relay_domains = DomainList(cfg.get("relay_domains"), "relay_domains" in parent, cfg, cache)
        self.alias_domains = DomainList(_param(cfg, "virtual_alias_domains", []), False, cfg, cache)
        self.mailbox_domains = DomainList(_param(cfg, "virtual_mailbox_domains", []), False, cfg, cache)
        self.transport_parent = "transport_maps" in parent
        self.relayhost = cfg.get("relayhost").strip()
        self.local_transport = split_transport(cfg.get("local_transport"))
        self.relay_transport = split_transport(cfg.get("relay_transport"))
        self.default_transport = split_transport(cfg.get("default_transport"))
        self.virtual_transport = split_transport(_param(cfg, "virtual_transport", "virtual"))
        self.myhostname = cfg.get("myhostname").lower()
        self.myorigin = _param(cfg, "myorigin", self.myhostname).lower()
        self.delimiter = _param(cfg, "recipient_delimiter", "")
        self.interfaces = self._interface_literals(cfg)
        self.transport_maps = tables.open_maps(cfg, "transport_maps", cache)
        self.relocated_maps = tables.open_maps(cfg, "relocated_maps", cache)
        self.sender_relayhost = tables.open_maps(cfg, "sender_dependent_relayhost_maps", cache)
        self.sender_transport = tables.open_maps(cfg, "sender_dependent_default_transport_maps", cache)

    @staticmethod
    def _interface_literals(cfg) -> set[str]:
        out = set()
        for name in ("inet_interfaces", "proxy_interfaces"):
            for item in _param(cfg, name, []):
                try:
                    ip = ipaddress.ip_address(item.strip("[]"))
                except ValueError:
                    continue
                out.add("[%s]" % ip)
                if ip.version == 6:
                    out.add("[ipv6:%s]" % ip)
        return out

    # -- classes ----------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        return bool(self.mydestination.match(domain)) or domain.lower() in self.interfaces

    def is_relay_domain(self, domain: str) -> bool:
        return bool(self.relay_domains.match(domain))

    def address_class(self, domain: str) -> tuple[str, bool]:
        """(class, retry): retry is True when a domain table failed on the way."""
        if not domain:
            domain = self.myorigin
        if domain.lower() in self.interfaces:
            return CLASS_LOCAL, False
        for cls, dl in ((CLASS_LOCAL, self.mydestination), (CLASS_ALIAS, self.alias_domains),
                        (CLASS_VIRTUAL, self.mailbox_domains), (CLASS_RELAY, self.relay_domains)):
            m = dl.match(domain)
            if m is None:
                return CLASS_RETRY, True
            if m:
                return cls, False
        return CLASS_DEFAULT, False

    # -- routing ----------------------------------------------------------

    def resolve(self, address: str, sender: str | None = None) -> Route:
        domain = domain_of(address)
        if not domain:
            address = "%s@%s" % (address, self.myorigin)
            domain = self.myorigin
        cls, _ = self.address_class(domain)
        retry = Route(RETRY_TRANSPORT, RETRY_NEXTHOP, CLASS_RETRY)
        if cls == CLASS_RETRY:
            return retry
        if cls == CLASS_LOCAL:
            transport, nexthop = self.local_transport
            route = Route(transport, nexthop or self.myhostname, cls)
        elif cls == CLASS_ALIAS:
            route = Route(ERROR_TRANSPORT, UNKNOWN_ALIAS, cls)
        elif cls == CLASS_VIRTUAL:
            transport, nexthop = self.virtual_transport
            route = Route(transport, nexthop or self.myhostname, cls)
        else:
            transport, nexthop = self.relay_transport if cls == CLASS_RELAY else self.default_transport
            relayhost = self.relayhost
            if sender is not None and self.sender_relayhost:
                r = self._sender_lookup(self.sender_relayhost, sender)
                if r.status == tables.RETRY:
                    return retry
                if r.found and r.value:
                    relayhost = r.value.strip()
            if cls == CLASS_DEFAULT and sender is not None and self.sender_transport:
                r = self._sender_lookup(self.sender_transport, sender)
                if r.status == tables.RETRY:
                    return retry
                if r.found and r.value:
                    transport, nexthop = split_transport(r.value)
            route = Route(transport, nexthop or relayhost or domain, cls)
        if self.relocated_maps:
            r = find_address(self.relocated_maps, address, delimiter=self.delimiter,
                             is_local=self.is_local_domain)
            if r.status == tables.RETRY:
                return retry
            if r.found:
                return Route(ERROR_TRANSPORT, "5.1.6 User has moved to %s" % (r.value or ""), cls)
        if self.transport_maps:
            r = self._transport_lookup(address, domain)
            if r.status == tables.RETRY:
                return retry
            if r.found:
                transport, nexthop = split_transport(r.value or "")
                route = Route(transport or route.transport, nexthop or route.nexthop, cls)
        return route

    def _sender_lookup(self, maps, sender: str) -> tables.Result:
        if sender == "":
            return maps.lookup(NULL_SENDER_KEY)
        return find_address(maps, sender, delimiter=self.delimiter)

    def _transport_lookup(self, address: str, domain: str) -> tables.Result:
        from fulmar.tables.addr import split_address, split_extension
        local, _ = split_address(address)
        user, ext = split_extension(local, self.delimiter)
        keys = [address]
        if ext is not None:
            keys.append("%s@%s" % (user, domain))
        keys.append(domain)
        labels = domain.split(".")
        for i in range(1, len(labels)):
            parent = ".".join(labels[i:])
            keys.append(parent if self.transport_parent else "." + parent)
        keys.append("*")
        for i, key in enumerate(keys):
            r = self.transport_maps.lookup_each(key, fixed_only=i > 0)
            if r.status != tables.NOTFOUND:
                return r
        return tables.NOT_FOUND


def resolve(cfg, address: str, sender: str | None = None) -> Route:
    """One-shot convenience wrapper; daemons keep a Resolver instead."""
    return Resolver(cfg).resolve(address, sender)
