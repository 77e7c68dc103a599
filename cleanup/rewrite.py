"""Envelope address rewriting in cleanup: canonical, masquerade, virtual aliases.

NAME
    cleanup.rewrite -- what Postfix's cleanup does to envelope addresses

SYNOPSIS
    rw = Rewriter(cfg)                   # once per process
    sender, err = rw.sender("alice")     # ("alice@$myorigin", None)
    rcpts, err = rw.recipient("list@example.com")   # (["a@x", "b@y"], None)
    err is None or (status, reason) with status "tempfail"

DESCRIPTION
    Every envelope address is first made complete as trivial-rewrite does
    in the "local" context: a bare name gets "@$myorigin"
    (append_at_myorigin), a domain without a dot gets ".$mydomain"
    (append_dot_mydomain).

    Sender: sender_canonical_maps, then canonical_maps, then masquerading
    (masquerade_domains, masquerade_exceptions) when masquerade_classes
    has envelope_sender.

    Recipient: recipient_canonical_maps, then canonical_maps, then
    masquerading when masquerade_classes has envelope_recipient, then
    virtual alias expansion (virtual_alias_maps).

    Canonical lookups use Postfix's address order (fulmar.tables.addr),
    with the extension propagated when propagate_unmatched_extensions has
    "canonical"; a result is rewritten again until it maps to itself or
    CANONICAL_RECURSION_LIMIT is reached (cleanup_map11.c).

    Virtual alias expansion (cleanup_map1n.c): each address is looked up;
    a result list replaces it and each member is looked up in turn; an
    address already expanded once is kept as it is (so "a → b, b → a"
    ends with a, and "a → a, b" keeps a).  More than
    virtual_alias_recursion_limit levels or more than
    virtual_alias_expansion_limit addresses defers the message with
    "4.6.0 Alias expansion error", as Postfix does; a table that fails
    defers it with "4.3.0 Temporary lookup failure".

    canonical_classes, sender_canonical_classes and
    recipient_canonical_classes say which of envelope_sender,
    envelope_recipient, header_sender and header_recipient each table
    applies to; masquerade_classes does the same for masquerading.

    Headers (HeaderRewriter, one per message): the addresses of sender
    headers (From:, Sender:, Reply-To:, Return-Path:, Errors-To:,
    Resent-From:, Resent-Sender:, Resent-Reply-To:) and recipient headers
    (To:, Cc:, Bcc:, Apparently-To:, Resent-To:, Resent-Cc:, Resent-Bcc:)
    are found with fulmar.smtp.headeraddr and rewritten in place: made
    complete for the rewrite context, then the canonical tables and
    masquerading of the header_sender / header_recipient classes.  The
    context is "local" (append_at_myorigin, append_dot_mydomain) for
    local submissions and for SMTP clients matching
    local_header_rewrite_clients, "remote" (a bare name gets
    "@$remote_header_rewrite_domain") for other SMTP clients when
    remote_header_rewrite_domain is set, and None otherwise: then headers
    are not rewritten at all (header_context()).  Unchanged addresses
    leave the header byte-identical.  A table that fails defers the
    message ("4.3.0 Temporary lookup failure"), as for the envelope.
    When no table applies to a header class, the result depends on the
    header and the context alone, and the last HEADER_CACHE such results
    are kept (most mail repeats its From: and To:); tables can change
    under a running process, so headers they apply to are looked up
    each time.

    local_header_rewrite_clients items: permit_inet_interfaces,
    permit_mynetworks, permit_sasl_authenticated, static:all, and
    addresses / networks; XXX permit_tls_clientcerts, host names and
    type:table lists never match (cleanup does not know them).
"""

from __future__ import annotations

import ipaddress

from fulmar import tables
from fulmar.smtp.headeraddr import RECIPIENT_HEADERS, SENDER_HEADERS, rewrite_header
from fulmar.tables.addr import find_address, split_address

#: cleanup_map11.c's MAX_RECURSION: canonical results rewritten again at most this often.
CANONICAL_RECURSION_LIMIT = 10
# Client addresses whose local_header_rewrite_clients answer is kept.
LOCAL_CLIENT_CACHE = 4096
# Rewritten address headers kept when no table applies to them (the result
# then depends on the header alone): most mail repeats its From: and To:.
# Headers longer than HEADER_CACHE_TEXT are not kept, which bounds the
# memory to HEADER_CACHE * HEADER_CACHE_TEXT * 2 bytes.
HEADER_CACHE = 1024
HEADER_CACHE_TEXT = 512

TEMPFAIL = "tempfail"
LOOKUP_FAILURE = "4.3.0 Temporary lookup failure"
EXPANSION_ERROR = "4.6.0 Alias expansion error"


#: Postfix's defaults of the *_classes parameters (Fulmar may register them as plain text).
ALL_CLASSES = "envelope_sender, envelope_recipient, header_sender, header_recipient"
CONTEXT_LOCAL = "local"
CONTEXT_REMOTE = "remote"


def _param(cfg, name: str, default):
    try:
        return cfg.get(name)
    except KeyError:
        return default


def _classes(cfg, name: str, default: str) -> set[str]:
    value = _param(cfg, name, default)
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return {c.lower() for c in value}


class Rewriter:
    def __init__(self, cfg) -> None:
        cache: dict = {}
        self.myorigin = cfg.get("myorigin")
        self.mydomain = cfg.get("mydomain")
        self.append_at_myorigin = _param(cfg, "append_at_myorigin", True)
        self.append_dot_mydomain = _param(cfg, "append_dot_mydomain", False)
        self.delimiter = _param(cfg, "recipient_delimiter", "")
        propagate = {p.lower() for p in _param(cfg, "propagate_unmatched_extensions",
                                              ["canonical", "virtual"])}
        self.propagate_canonical = "canonical" in propagate
        self.propagate_virtual = "virtual" in propagate
        self.sender_canonical = tables.open_maps(cfg, "sender_canonical_maps", cache)
        self.recipient_canonical = tables.open_maps(cfg, "recipient_canonical_maps", cache)
        self.canonical = tables.open_maps(cfg, "canonical_maps", cache)
        common = _classes(cfg, "canonical_classes", ALL_CLASSES)
        send = _classes(cfg, "sender_canonical_classes", "envelope_sender, header_sender")
        recip = _classes(cfg, "recipient_canonical_classes", "envelope_recipient, header_recipient")
        # The tables for each class, in Postfix's order (sender/recipient first).
        self.canon_for = {
            cls: tuple(m for m, classes in ((self.sender_canonical if "sender" in cls else
                                             self.recipient_canonical, send if "sender" in cls else recip),
                                            (self.canonical, common))
                       if cls in classes)
            for cls in ("envelope_sender", "envelope_recipient", "header_sender", "header_recipient")}
        self.remote_domain = _param(cfg, "remote_header_rewrite_domain", "")
        # (sender?, context, header) -> rewritten header, for the header
        # classes without tables (HeaderRewriter); configuration is fixed
        # for the process's life, tables are not.
        self.header_static = {sender: not any(self.canon_for[cls]) for sender, cls in
                              ((True, "header_sender"), (False, "header_recipient"))}
        self.header_cache: dict[tuple[bool, str, bytes], bytes] = {}
        self.local_clients = [c for c in _param(cfg, "local_header_rewrite_clients",
                                                ["permit_inet_interfaces"])]
        self._cfg = cfg
        # (client address, authenticated) -> local?  Fixed for the process's
        # life, like the networks it is computed from; bounded.
        self._local_seen: dict[tuple[str, bool], bool] = {}
        self.virtual = tables.open_maps(cfg, "virtual_alias_maps", cache)
        self.masq_domains = [d.lower() for d in _param(cfg, "masquerade_domains", [])]
        self.masq_exceptions = {u.lower() for u in _param(cfg, "masquerade_exceptions", [])}
        classes = {c.lower() for c in _param(cfg, "masquerade_classes", [])}
        self.masq_sender = "envelope_sender" in classes
        self.masq_recipient = "envelope_recipient" in classes
        self.masq_header_sender = "header_sender" in classes
        self.masq_header_recipient = "header_recipient" in classes
        self.expansion_limit = cfg.get("virtual_alias_expansion_limit")
        self.recursion_limit = cfg.get("virtual_alias_recursion_limit")
        self.local_domains = {d.lower() for d in cfg.get("mydestination") if ":" not in d}
        self.local_domains.add(self.myorigin.lower())
        for item in _param(cfg, "inet_interfaces", []) + _param(cfg, "proxy_interfaces", []):
            try:
                self.local_domains.add("[%s]" % ipaddress.ip_address(item))
            except ValueError:
                pass

    def is_local(self, domain: str) -> bool:
        return domain.lower() in self.local_domains

    # -- steps ----------------------------------------------------------------

    def complete(self, address: str) -> str:
        """append_at_myorigin / append_dot_mydomain (rewrite context local)."""
        if not address:
            return address
        local, domain = split_address(address)
        if "@" not in address:
            return "%s@%s" % (address, self.myorigin) if self.append_at_myorigin else address
        if (self.append_dot_mydomain and domain and "." not in domain
                and not domain.startswith("[") and self.mydomain):
            return "%s@%s.%s" % (local, domain, self.mydomain)
        return address

    def _canonical(self, address: str, maps_list) -> tuple[str, tuple | None]:
        for maps in maps_list:
            if not maps:
                continue
            for _ in range(CANONICAL_RECURSION_LIMIT):
                r = find_address(maps, address, delimiter=self.delimiter, is_local=self.is_local,
                                 propagate=self.propagate_canonical)
                if r.status == tables.RETRY:
                    return address, (TEMPFAIL, LOOKUP_FAILURE)
                if not r.found:
                    break
                new = self.complete((r.value or "").split(",")[0].strip())
                if not new or new.lower() == address.lower():
                    break
                address = new
        return address, None

    def masquerade(self, address: str) -> str:
        if not self.masq_domains or "@" not in address:
            return address
        local, domain = split_address(address)
        if local.lower() in self.masq_exceptions:
            return address
        low = domain.lower()
        for masq in self.masq_domains:
            if masq.startswith("!"):
                if masq[1:] == low:
                    return address
                continue
            if len(masq) < len(low) and low.endswith("." + masq):
                return "%s@%s" % (local, masq)
        return address

    # -- public ---------------------------------------------------------------

    def sender(self, address: str) -> tuple[str, tuple | None]:
        if not address:
            return address, None
        address = self.complete(address)
        address, err = self._canonical(address, self.canon_for["envelope_sender"])
        if err:
            return address, err
        if self.masq_sender:
            address = self.masquerade(address)
        return address, None

    def recipient(self, address: str) -> tuple[list[str], tuple | None]:
        address = self.complete(address)
        address, err = self._canonical(address, self.canon_for["envelope_recipient"])
        if err:
            return [address], err
        if self.masq_recipient:
            address = self.masquerade(address)
        if not self.virtual:
            return [address], None
        return self.expand(address)

    def expand(self, address: str) -> tuple[list[str], tuple | None]:
        """Virtual alias expansion as cleanup_map1n.c."""
        out = [address]
        expanded: set[str] = set()
        i = 0
        while i < len(out):
            for depth in range(self.recursion_limit + 1):
                addr = out[i]
                key = addr.lower()
                if key in expanded:
                    break
                if depth >= self.recursion_limit:
                    return out, (TEMPFAIL, EXPANSION_ERROR)
                r = find_address(self.virtual, addr, delimiter=self.delimiter,
                                 is_local=self.is_local, propagate=self.propagate_virtual)
                if r.status == tables.RETRY:
                    return out, (TEMPFAIL, LOOKUP_FAILURE)
                if not r.found:
                    break
                expanded.add(key)
                results = [self.complete(a.strip()) for a in (r.value or "").split(",") if a.strip()]
                if not results:
                    break
                out[i] = results[0]
                out.extend(results[1:])
                if len(out) > self.expansion_limit:
                    return out, (TEMPFAIL, EXPANSION_ERROR)
                if results[0].lower() == key:
                    break
            i += 1
        seen: set[str] = set()
        unique = []
        for a in out:
            if a.lower() not in seen:
                seen.add(a.lower())
                unique.append(a)
        return unique, None

    # -- headers --------------------------------------------------------------

    def header_context(self, origin: str, client_address: str = "", sasl_username: str = "") -> str | None:
        """The rewrite context of a message's headers; None: leave them alone."""
        if origin != "smtpd":
            return CONTEXT_LOCAL         # sendmail/pickup, bounce, local(8) re-injection
        key = (client_address, bool(sasl_username))
        local = self._local_seen.get(key)
        if local is None:
            local = self._local_client(client_address, sasl_username)
            if len(self._local_seen) >= LOCAL_CLIENT_CACHE:
                self._local_seen.clear()
            self._local_seen[key] = local
        if local:
            return CONTEXT_LOCAL
        return CONTEXT_REMOTE if self.remote_domain else None

    def _local_client(self, client_address: str, sasl_username: str) -> bool:
        try:
            ip = ipaddress.ip_address(client_address.split("%", 1)[0])
        except ValueError:
            ip = None
        for item in self.local_clients:
            low = item.lower()
            if low == "permit_sasl_authenticated":
                if sasl_username:
                    return True
            elif low == "permit_inet_interfaces":
                if ip is not None and ip in self._inet_addresses():
                    return True
            elif low == "permit_mynetworks":
                if ip is not None and _in_networks(ip, _param(self._cfg, "mynetworks", [])):
                    return True
            elif low == "static:all":
                return True
            elif ip is not None and _in_networks(ip, [item]):
                return True
        return False

    def _inet_addresses(self) -> set:
        cached = getattr(self, "_inet_cache", None)
        if cached is None:
            from fulmar.config.params import interface_networks
            cached = set()
            for item in _param(self._cfg, "inet_interfaces", []) + _param(self._cfg, "proxy_interfaces", []):
                low = item.lower()
                if low == "all":
                    cached |= {i.ip for i in interface_networks()}
                    cached |= {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
                elif low == "loopback-only":
                    cached |= {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
                else:
                    try:
                        cached.add(ipaddress.ip_address(item.strip("[]")))
                    except ValueError:
                        pass
            self._inet_cache = cached
        return cached

    def header_address(self, address: str, sender: bool, context: str) -> tuple[str, tuple | None]:
        """One header address: completed for `context`, canonical, masqueraded."""
        if context == CONTEXT_REMOTE:
            if "@" not in address and self.remote_domain:
                address = "%s@%s" % (address, self.remote_domain)
        else:
            address = self.complete(address)
        cls = "header_sender" if sender else "header_recipient"
        address, err = self._canonical(address, self.canon_for[cls])
        if err:
            return address, err
        if self.masq_header_sender if sender else self.masq_header_recipient:
            address = self.masquerade(address)
        return address, None


def _in_networks(ip, items) -> bool:
    for item in items:
        text = item.strip()
        if text.startswith("["):
            text = text.replace("[", "").replace("]", "")
        try:
            if ip in ipaddress.ip_network(text, strict=False):
                return True
        except ValueError:
            continue            # host names and tables: XXX not matched here
    return False


class HeaderRewriter:
    """Rewrites the address headers of one message (cleanup.headers calls it)."""

    def __init__(self, rewriter: Rewriter, context: str) -> None:
        self.rw = rewriter
        self.context = context
        self.error: tuple | None = None     # (status, reason) of a failed lookup
        self.failed_address = ""

    def __call__(self, name: bytes, text: bytes) -> bytes:
        """A complete logical header -> the header to store."""
        if name in SENDER_HEADERS:
            sender = True
        elif name in RECIPIENT_HEADERS:
            sender = False
        else:
            return text
        cache = None
        if self.rw.header_static[sender] and len(text) <= HEADER_CACHE_TEXT:
            cache = self.rw.header_cache
            key = (sender, self.context, text)
            done = cache.get(key)
            if done is not None:
                return done

        def mapper(address: str) -> str | None:
            if not address or self.error:
                return None
            new, err = self.rw.header_address(address, sender, self.context)
            if err:
                self.error, self.failed_address = err, address
                return None
            return new
        new = rewrite_header(text, mapper)
        done = text if new is None else new
        if cache is not None and not self.error:
            if len(cache) >= HEADER_CACHE:
                cache.clear()
            cache[key] = done
        return done


__all__ = ["Rewriter", "HeaderRewriter", "CONTEXT_LOCAL", "CONTEXT_REMOTE"]
