"""smtpd access restrictions and relay control, as Postfix's smtpd_check.c.

NAME
    smtpd.policy - restriction lists, access tables, relay control

SYNOPSIS
    from smtpd.policy import Policy, PolicySettings, Client
    pol = Policy(PolicySettings.from_config(cfg), resolve_domain=None)
    reply = await pol.check_rcpt(client, sender, recipient)   # Reply | None (accept)
    reply = await pol.check_data(client, sender, rcpt_count)  # Reply | None
    reply = await pol.check_etrn(client, domain)              # Reply | None
    reply = await pol.check_eod(client, sender)               # Reply | None
    pol.is_destination("user@example.com") -> bool
    pol.in_mynetworks("192.0.2.1") -> bool
    reject_log_line(qid, "RCPT", client, reply, sender, recipient) -> str

DESCRIPTION
    smtpd_delay_reject = yes semantics: at RCPT TO the lists
    smtpd_client_restrictions, smtpd_helo_restrictions,
    smtpd_sender_restrictions, smtpd_relay_restrictions and
    smtpd_recipient_restrictions are evaluated in that order; within a
    list the first restriction that decides (permit or reject) ends that
    list; a permit moves on to the next list, a reject ends everything.
    smtpd_data_restrictions are evaluated at DATA.  (smtpd_delay_reject =
    no is not implemented: the lists are still evaluated at RCPT, which is
    stricter, never looser.)  At ETRN, as Postfix's smtpd_check_etrn():
    smtpd_client_restrictions, smtpd_helo_restrictions, then
    smtpd_etrn_restrictions, whose generic reject reads
    `554 5.7.1 <domain>: Etrn command rejected: Access denied`.
    smtpd_end_of_data_restrictions are evaluated at the end of the
    message, before it is queued: `<END-OF-MESSAGE>: End-of-data
    rejected: Access denied`.

    Restrictions: permit, reject, defer, permit_mynetworks,
    permit_sasl_authenticated, reject_unauth_destination,
    defer_unauth_destination, reject_unknown_recipient_domain,
    reject_unknown_sender_domain, reject_non_fqdn_sender,
    reject_non_fqdn_recipient, check_client_access, check_helo_access,
    check_sender_access, check_recipient_access, check_etrn_access (the
    ETRN domain and its parent domains).  Unknown names are a
    configuration error: the request gets 451 4.3.5 Server configuration
    error and a warning is logged, as Postfix does.

    Never an open relay: unless smtpd_relay_restrictions or
    smtpd_recipient_restrictions contains reject_unauth_destination,
    defer_unauth_destination, reject or defer, every recipient gets
    451 4.3.5 (Postfix refuses to run that way).  A recipient is a
    "destination" when its domain is in mydestination (or is missing and
    $myorigin is), relay_domains, virtual_alias_domains or
    virtual_mailbox_domains, and the address carries no routing trick
    (`user%host@`, `host!user@`, `"user@host"@`, `@route:`): such an
    address is never a destination (allow_untrusted_routing = no).

    Access tables (check_*_access): lookup order as Postfix: a full
    address, then its domain and parent domains ("sub.example.com",
    then ".example.com" or, with smtpd_access_maps in
    parent_domain_matches_subdomains, "example.com"), then "user@"; for
    clients: the host name and its parents, the address, then the address
    with its last octets (IPv4) or 16-bit groups (IPv6) removed.  Results:
    OK/PERMIT, REJECT [text], DEFER [text], DUNNO, "4NN text"/"5NN text",
    or a restriction name.  A table lookup that fails (RETRY) answers
    451 4.3.0 <key>: Temporary lookup failure, never "not found".

    reject_unknown_*_domain asks an injectable coroutine
    resolve_domain(domain) -> "ok" | "notfound" | "tempfail"; the default
    uses fulmar.dns (MX, then A/AAAA).  notfound: $unknown_address_reject_code
    (450) 4.1.2 / 5.1.2 "Domain not found"; tempfail: 450 4.1.2 Domain not
    found, held back as unknown_address_tempfail_action = defer_if_permit
    (it applies only if the request would otherwise be accepted).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from fulmar import tables
from fulmar.smtp import address as A
from fulmar.smtp.reply import Reply
from fulmar.tables.cidr import parse_network

PERMIT, DUNNO, REJECT = "permit", "dunno", "reject"

_ACCESS_CHECKS = ("check_client_access", "check_helo_access", "check_sender_access",
                  "check_recipient_access", "check_etrn_access")
_LOGIN_MISMATCH = frozenset({"reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
                             "reject_known_sender_login_mismatch",
                             "reject_unauthenticated_sender_login_mismatch"})
_RELAY_GUARDS = frozenset({"reject_unauth_destination", "defer_unauth_destination", "reject", "defer"})

CLIENT_CLASS, HELO_CLASS = "Client host", "Helo command"
SENDER_CLASS, RCPT_CLASS, DATA_CLASS = "Sender address", "Recipient address", "Data command"
ETRN_CLASS = "Etrn command"
EOD_CLASS = "End-of-data"

CONFIG_ERROR = Reply(451, "4.3.5", "Server configuration error")


def _log_warning(fmt: str, *args) -> None:
    try:
        from fulmar import log
        log.warning(fmt, *args)
    except Exception:  # logging not set up (tests, tools)
        pass


def split_restrictions(text: str) -> list[str]:
    """Split a restriction list on commas/white space, keeping {...} groups whole."""
    out, cur, depth = [], [], 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        if depth == 0 and (ch in ", \t\n"):
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def parse_restrictions(words: list[str]) -> list[tuple[str, str | None]]:
    """["check_client_access", "hash:/x", "permit"] → [("check_client_access", "hash:/x"), ("permit", None)]."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(words):
        name = words[i].lower()
        if name in _ACCESS_CHECKS and i + 1 < len(words):
            out.append((name, words[i + 1]))
            i += 2
        else:
            out.append((name, None))
            i += 1
    return out


class DomainList:
    """A list of domains (and tables) as mydestination / relay_domains take."""

    def __init__(self, items: list[str], parent_matches: bool, cfg=None,
                 opener=tables.open_table):
        self.names: set[str] = set()
        self.tables: list[tables.BaseTable] = []
        self.parent_matches = parent_matches
        for item in items:
            if ":" in item and not item.startswith("["):
                self.tables.append(opener(item, cfg))
            elif item.startswith("/"):
                self.tables.append(opener("texthash:" + item, cfg))
            else:
                self.names.add(item.lower().rstrip("."))

    def match(self, domain: str) -> bool | None:
        """True/False; None when a table lookup must be retried."""
        d = domain.lower().rstrip(".")
        if not d:
            return False
        candidates = [d]
        labels = d.split(".")
        for i in range(1, len(labels)):
            parent = ".".join(labels[i:])
            candidates.append("." + parent)
            if self.parent_matches:
                candidates.append(parent)
        for c in candidates:
            if c in self.names:
                return True
        retry = False
        for t in self.tables:
            for c in candidates:
                r = t.lookup(c)
                if r.status == tables.FOUND:
                    return True
                if r.status == tables.RETRY:
                    retry = True
        return None if retry else False


class NetworkList:
    """mynetworks: CIDR blocks ("[::1]/128" too) and cidr:/other tables of addresses."""

    # Answers for literal networks only (tables can change), per address;
    # a busy server sees the same clients again and again.
    CACHE_SIZE = 4096

    def __init__(self, items: list[str], cfg=None, opener=tables.open_table):
        self.nets = []
        self.tables = []
        self._cache: dict[str, bool] = {}
        for item in items:
            if item.startswith("!"):
                _log_warning("mynetworks: negation is not supported: %s", item)
                continue
            if ":" in item and not item.startswith("[") and not _looks_ipv6(item):
                self.tables.append(opener(item, cfg))
                continue
            try:
                self.nets.append(ipaddress.ip_network(_unbracket(item), strict=False))
            except ValueError:
                _log_warning("mynetworks: bad network: %s", item)

    def match(self, addr: str) -> bool:
        cached = self._cache.get(addr)
        if cached is not None:
            return cached
        try:
            ip = ipaddress.ip_address(addr.strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip.version == n.version and ip in n for n in self.nets):
            found = True
        elif self.tables:
            return any(t.lookup(str(ip)).status == tables.FOUND for t in self.tables)
        else:
            found = False
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()
        self._cache[addr] = found
        return found


def _unbracket(item: str) -> str:
    if item.startswith("["):
        close = item.find("]")
        if close > 0:
            return item[1:close] + item[close + 1:]
    return item


def _looks_ipv6(item: str) -> bool:
    try:
        parse_network(item)
        return True
    except ValueError:
        return False


@dataclass
class Client:
    name: str                  # "unknown" when not verified
    addr: str
    port: int = 0
    helo: str | None = None
    protocol: str = "SMTP"     # "SMTP" | "ESMTP"
    sasl_username: str | None = None

    @property
    def namaddr(self) -> str:
        return f"{self.name}[{self.addr}]"


@dataclass
class PolicySettings:
    mynetworks: list[str]
    mydestination: list[str]
    myorigin: str
    relay_domains: list[str]
    virtual_alias_domains: list[str]
    virtual_mailbox_domains: list[str]
    parent_domain_matches_subdomains: list[str]
    client_restrictions: list[str]
    helo_restrictions: list[str]
    sender_restrictions: list[str]
    relay_restrictions: list[str]
    recipient_restrictions: list[str]
    data_restrictions: list[str]
    relay_domains_reject_code: int = 554
    unknown_address_reject_code: int = 450
    non_fqdn_reject_code: int = 504
    access_map_reject_code: int = 554
    access_map_defer_code: int = 450
    reject_code: int = 554
    defer_code: int = 450
    etrn_restrictions: list[str] = field(default_factory=list)
    end_of_data_restrictions: list[str] = field(default_factory=list)
    cfg: object = field(default=None, repr=False)

    @classmethod
    def from_config(cls, cfg) -> PolicySettings:
        def lst(name: str, fallback: list[str] | None = None) -> list[str]:
            try:
                return split_restrictions(cfg.expand(cfg.raw(name)))
            except Exception:
                try:
                    return list(cfg.get(name))
                except Exception:
                    if fallback is None:
                        raise
                    return fallback
        return cls(
            mynetworks=lst("mynetworks"),
            mydestination=lst("mydestination"),
            myorigin=cfg.get("myorigin"),
            relay_domains=lst("relay_domains"),
            virtual_alias_domains=lst("virtual_alias_domains"),
            virtual_mailbox_domains=lst("virtual_mailbox_domains"),
            # XXX not in the registry yet: Postfix >= 3.0 (compatibility_level >= 1) default, empty.
            parent_domain_matches_subdomains=lst("parent_domain_matches_subdomains", []),
            client_restrictions=lst("smtpd_client_restrictions"),
            helo_restrictions=lst("smtpd_helo_restrictions"),
            sender_restrictions=lst("smtpd_sender_restrictions"),
            relay_restrictions=lst("smtpd_relay_restrictions"),
            recipient_restrictions=lst("smtpd_recipient_restrictions"),
            data_restrictions=lst("smtpd_data_restrictions"),
            etrn_restrictions=lst("smtpd_etrn_restrictions"),
            end_of_data_restrictions=lst("smtpd_end_of_data_restrictions"),
            relay_domains_reject_code=cfg.get("relay_domains_reject_code"),
            unknown_address_reject_code=cfg.get("unknown_address_reject_code"),
            non_fqdn_reject_code=cfg.get("non_fqdn_reject_code"),
            access_map_reject_code=cfg.get("access_map_reject_code"),
            access_map_defer_code=cfg.get("access_map_defer_code"),
            reject_code=cfg.get("reject_code"),
            defer_code=cfg.get("defer_code"),
            cfg=cfg,
        )


ResolveDomain = Callable[[str], Awaitable[str]]


def _dsn_class(code: int, detail: str) -> str:
    return f"{str(code)[0]}.{detail}"


def reply_for(code: int, detail: str, text: str) -> Reply:
    """A reply whose enhanced code class follows the reply code (Postfix does)."""
    return Reply(code, _dsn_class(code, detail), text)


class _Ctx:
    """One request: who, what, and the defer_if_permit reply held back."""

    def __init__(self, client: Client, sender: A.Path | None, recipient: A.Path | None,
                 etrn: str | None = None, eod: bool = False):
        self.client = client
        self.sender = sender
        self.recipient = recipient
        self.etrn = etrn                # the ETRN domain, at ETRN
        self.eod = eod                  # at the end of the message
        self.defer_if_permit: Reply | None = None


class Policy:
    def __init__(self, settings: PolicySettings, resolve_domain: ResolveDomain | None = None,
                 opener=tables.open_table):
        self.s = settings
        cfg = settings.cfg
        self._opener = opener
        self._tables: dict[str, tables.BaseTable] = {}
        parent = {p.lower() for p in settings.parent_domain_matches_subdomains}
        self.mynetworks = NetworkList(settings.mynetworks, cfg, opener)
        self.mydestination = DomainList(settings.mydestination, "mydestination" in parent, cfg, opener)
        self.relay_domains = DomainList(settings.relay_domains, "relay_domains" in parent, cfg, opener)
        self.virtual_domains = DomainList(settings.virtual_alias_domains + settings.virtual_mailbox_domains,
                                          False, cfg, opener)
        self.access_parent_matches = "smtpd_access_maps" in parent
        self._resolve_domain = resolve_domain
        self.lists = {
            "client": parse_restrictions(settings.client_restrictions),
            "helo": parse_restrictions(settings.helo_restrictions),
            "sender": parse_restrictions(settings.sender_restrictions),
            "relay": parse_restrictions(settings.relay_restrictions),
            "recipient": parse_restrictions(settings.recipient_restrictions),
            "data": parse_restrictions(settings.data_restrictions),
            "etrn": parse_restrictions(settings.etrn_restrictions),
            "eod": parse_restrictions(settings.end_of_data_restrictions),
        }
        self.relay_guarded = any(name in _RELAY_GUARDS for name, _ in
                                 self.lists["relay"] + self.lists["recipient"])
        if not self.relay_guarded:
            _log_warning("in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, "
                         "specify at least one working instance of: reject_unauth_destination, "
                         "defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains")

    # ------------------------------------------------------------------

    def in_mynetworks(self, addr: str) -> bool:
        return self.mynetworks.match(addr)

    def _table(self, spec: str) -> tables.BaseTable:
        t = self._tables.get(spec)
        if t is None:
            t = self._tables[spec] = self._opener(spec, self.s.cfg)
        return t

    def is_destination(self, recipient: A.Path | str) -> bool | None:
        """A domain we accept mail for, with no routing trick; None = retry."""
        path = recipient if isinstance(recipient, A.Path) else A.Path(recipient)
        if A.is_relay_trick(path):
            return False
        domain = path.domain
        if "@" not in path.address:
            domain = self.s.myorigin
        retry = False
        for dl in (self.mydestination, self.relay_domains, self.virtual_domains):
            m = dl.match(domain)
            if m:
                return True
            if m is None:
                retry = True
        return None if retry else False

    # ------------------------------------------------------------------

    async def check_rcpt(self, client: Client, sender: A.Path, recipient: A.Path) -> Reply | None:
        if not self.relay_guarded:
            return CONFIG_ERROR
        ctx = _Ctx(client, sender, recipient)
        reply = await self._rejected(ctx, ("client", "helo", "sender", "relay", "recipient"))
        if reply is not None:
            return reply
        if self.s.cfg is not None and self.s.cfg.get("smtpd_reject_unlisted_recipient"):
            unlisted = self._unlisted_recipient(recipient)
            if unlisted is not None:
                return unlisted
        return ctx.defer_if_permit

    def _unlisted_recipient(self, recipient: A.Path | None) -> Reply | None:
        """Unknown-recipient check (smtpd.recipients); None when known or unchecked."""
        if recipient is None or self.s.cfg is None:
            return None
        validator = getattr(self, "_recipient_validator", None)
        if validator is None:
            from smtpd.recipients import RecipientValidator
            validator = self._recipient_validator = RecipientValidator(self.s.cfg)
        return validator.check(recipient.address, _shown(recipient))

    @property
    def data_restricted(self) -> bool:
        """smtpd_data_restrictions has something to evaluate."""
        return bool(self.lists["data"])

    async def check_data(self, client: Client, sender: A.Path | None, rcpt_count: int) -> Reply | None:
        if not self.data_restricted:
            return None
        ctx = _Ctx(client, sender, None)
        return await self._rejected(ctx, ("data",)) or ctx.defer_if_permit

    @property
    def eod_restricted(self) -> bool:
        """smtpd_end_of_data_restrictions has something to evaluate."""
        return bool(self.lists["eod"])

    async def check_eod(self, client: Client, sender: A.Path | None) -> Reply | None:
        if not self.eod_restricted:
            return None
        ctx = _Ctx(client, sender, None, eod=True)
        return await self._rejected(ctx, ("eod",)) or ctx.defer_if_permit

    async def check_etrn(self, client: Client, domain: str) -> Reply | None:
        """ETRN domain: the client and HELO lists (smtpd_delay_reject),
        then smtpd_etrn_restrictions."""
        ctx = _Ctx(client, None, None, etrn=domain)
        return await self._rejected(ctx, ("client", "helo", "etrn")) or ctx.defer_if_permit

    async def _rejected(self, ctx: _Ctx, names: tuple[str, ...]) -> Reply | None:
        """The named lists in order: the first reject's reply, else None
        (the caller then answers ctx.defer_if_permit, None or held back)."""
        for name in names:
            restrictions = self.lists[name]
            if not restrictions:        # (most are empty: no coroutine for them)
                continue
            verdict, reply = await self._eval_list(restrictions, ctx)
            if verdict == REJECT:
                return reply
        return None

    async def _eval_list(self, restrictions, ctx: _Ctx) -> tuple[str, Reply | None]:
        for name, arg in restrictions:
            verdict, reply = await self._eval_one(name, arg, ctx)
            if verdict != DUNNO:
                return verdict, reply
        return DUNNO, None

    async def _eval_one(self, name: str, arg: str | None, ctx: _Ctx, depth: int = 0) -> tuple[str, Reply | None]:
        s = self.s
        rcpt = ctx.recipient
        if name in ("permit", "ok"):
            return PERMIT, None
        if name == "dunno":
            return DUNNO, None
        if name == "reject":
            return REJECT, self._generic(s.reject_code, "7.1", ctx)
        if name == "defer":
            return REJECT, self._generic(s.defer_code, "7.1", ctx)
        if name == "permit_mynetworks":
            return (PERMIT, None) if self.in_mynetworks(ctx.client.addr) else (DUNNO, None)
        if name == "reject_unlisted_recipient":
            reply = self._unlisted_recipient(rcpt)
            return (REJECT, reply) if reply is not None else (DUNNO, None)
        if name == "permit_sasl_authenticated":
            return (PERMIT, None) if ctx.client.sasl_username else (DUNNO, None)
        if name in _LOGIN_MISMATCH:     # smtpd_sender_login_maps (issue 6)
            from smtpd import login_maps
            return await login_maps.check(self, name, ctx.client, ctx.sender)
        if name in ("reject_unauth_destination", "defer_unauth_destination"):
            if rcpt is None:
                return DUNNO, None
            dest = self.is_destination(rcpt)
            if dest:
                return DUNNO, None
            if dest is None:
                return REJECT, reply_for(451, "3.0", f"<{_shown(rcpt)}>: Temporary lookup failure")
            if name == "defer_unauth_destination":
                return REJECT, Reply(454, "4.7.1", f"<{_shown(rcpt)}>: Relay access denied")
            code = s.relay_domains_reject_code
            return REJECT, reply_for(code, "7.1", f"<{_shown(rcpt)}>: Relay access denied")
        if name == "reject_non_fqdn_recipient":
            return self._non_fqdn(rcpt, RCPT_CLASS)
        if name == "reject_non_fqdn_sender":
            return self._non_fqdn(ctx.sender, SENDER_CLASS)
        if name == "reject_unknown_recipient_domain":
            return await self._unknown_domain(rcpt, RCPT_CLASS, "1.2", ctx)
        if name == "reject_unknown_sender_domain":
            return await self._unknown_domain(ctx.sender, SENDER_CLASS, "1.8", ctx)
        if name in _ACCESS_CHECKS:
            if not arg:
                return self._config_error(f"restriction {name} needs a table")
            return await self._check_access(name, arg, ctx, depth)
        return self._config_error(f"unknown smtpd restriction: \"{name}\"")

    def _config_error(self, why: str) -> tuple[str, Reply]:
        _log_warning("%s", why)
        return REJECT, CONFIG_ERROR

    def _generic(self, code: int, detail: str, ctx: _Ctx) -> Reply:
        if ctx.recipient is not None:
            subject, klass = f"<{_shown(ctx.recipient)}>", RCPT_CLASS
        elif ctx.etrn is not None:
            subject, klass = f"<{ctx.etrn}>", ETRN_CLASS
        elif ctx.eod:
            subject, klass = "<END-OF-MESSAGE>", EOD_CLASS
        else:
            subject, klass = "<DATA>", DATA_CLASS
        return reply_for(code, detail, f"{subject}: {klass} rejected: Access denied")

    def _non_fqdn(self, path: A.Path | None, klass: str) -> tuple[str, Reply | None]:
        if path is None or path.null:
            return DUNNO, None
        domain = path.domain
        if "@" in path.address and (domain.startswith("[") or ("." in domain.strip(".") and _valid_hostname(domain))):
            return DUNNO, None
        return REJECT, reply_for(self.s.non_fqdn_reject_code, "5.2",
                                 f"<{_shown(path)}>: {klass} rejected: need fully-qualified address")

    async def _unknown_domain(self, path: A.Path | None, klass: str, detail: str, ctx: _Ctx):
        if path is None or path.null or "@" not in path.address:
            return DUNNO, None
        domain = path.domain
        if domain.startswith("["):
            return DUNNO, None
        if self.is_destination(A.Path("x@" + domain)):
            return DUNNO, None
        status = await self._resolve(domain)
        if status == "ok":
            return DUNNO, None
        text = f"<{_shown(path)}>: {klass} rejected: Domain not found"
        if status == "tempfail":
            if ctx.defer_if_permit is None:
                ctx.defer_if_permit = reply_for(450, detail, text)
            return DUNNO, None
        return REJECT, reply_for(self.s.unknown_address_reject_code, detail, text)

    async def _resolve(self, domain: str) -> str:
        if self._resolve_domain is None:
            self._resolve_domain = _default_resolver(self.s.cfg)
        try:
            return await self._resolve_domain(domain)
        except Exception as e:  # a resolver bug or network trouble is "try later"
            _log_warning("domain lookup for %s failed: %s", domain, e)
            return "tempfail"

    async def _check_access(self, name: str, spec: str, ctx: _Ctx, depth: int):
        client = ctx.client
        if name == "check_client_access":
            keys = client_keys(client.name, client.addr, self.access_parent_matches)
            subject, klass = f"<{client.namaddr}>", CLIENT_CLASS
        elif name == "check_helo_access":
            if not client.helo:
                return DUNNO, None
            keys = domain_keys(client.helo, self.access_parent_matches)
            subject, klass = f"<{client.helo}>", HELO_CLASS
        elif name == "check_etrn_access":
            if ctx.etrn is None:
                return DUNNO, None
            keys = domain_keys(ctx.etrn, self.access_parent_matches)
            subject, klass = f"<{ctx.etrn}>", ETRN_CLASS
        else:
            path = ctx.sender if name == "check_sender_access" else ctx.recipient
            if path is None:
                return DUNNO, None
            keys = address_keys(path.address, self.access_parent_matches)
            subject = f"<{_shown(path)}>"
            klass = SENDER_CLASS if name == "check_sender_access" else RCPT_CLASS
        table = self._table(spec)
        for key in keys:
            r = table.lookup(key)
            if r.status == tables.RETRY:
                return REJECT, reply_for(451, "3.0", f"{subject}: Temporary lookup failure")
            if r.status != tables.FOUND:
                continue
            return await self._access_action(r.value or "", subject, klass, ctx, depth)
        return DUNNO, None

    async def _access_action(self, value: str, subject: str, klass: str, ctx: _Ctx, depth: int):
        s = self.s
        word, _, text = value.strip().partition(" ")
        text = text.strip()
        upper = word.upper()
        if upper in ("OK", "PERMIT"):
            return PERMIT, None
        if upper == "DUNNO":
            return DUNNO, None
        if upper == "REJECT":
            return REJECT, reply_for(s.access_map_reject_code, "7.1",
                                     f"{subject}: {klass} rejected: {text or 'Access denied'}")
        if upper == "DEFER":
            return REJECT, reply_for(s.access_map_defer_code, "7.1",
                                     f"{subject}: {klass} rejected: {text or 'Access denied'}")
        if len(word) == 3 and word.isdigit() and word[0] in "45":
            code = int(word)
            detail = "7.1"
            first, _, rest = text.partition(" ")
            parts = first.split(".")
            if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in "245":
                detail = ".".join(parts[1:])
                text = rest
            return REJECT, reply_for(code, detail, f"{subject}: {klass} rejected: {text or 'Access denied'}")
        if len(word) == 3 and word.isdigit() and word[0] == "2":
            return PERMIT, None
        name = word.lower()
        if depth < 1 and name not in _ACCESS_CHECKS:
            return await self._eval_one(name, text or None, ctx, depth + 1)
        return self._config_error(f"access table result not supported: {value}")


def _shown(path: A.Path) -> str:
    return A.external_form(path.address) if path.address else ""


def _valid_hostname(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return all(label and len(label) <= 63 and all(c.isalnum() or c in "-_" or ord(c) > 127 for c in label)
               for label in labels)


def domain_keys(domain: str, parent_matches: bool) -> list[str]:
    d = domain.lower().rstrip(".")
    keys = [d]
    labels = d.split(".")
    for i in range(1, len(labels)):
        parent = ".".join(labels[i:])
        keys.append(parent if parent_matches else "." + parent)
    return keys


def address_keys(addr: str, parent_matches: bool) -> list[str]:
    """Postfix's access lookup order for an address."""
    if addr == "":
        return [""]    # the null sender is looked up as "" (smtpd_null_access_lookup_key = <>)
    local, domain = A.split_address(addr)
    keys = [addr.lower()]
    if "@" in addr and domain:
        keys += domain_keys(domain, parent_matches)
        keys.append(local.lower() + "@")
    return keys


def client_keys(name: str, addr: str, parent_matches: bool) -> list[str]:
    keys: list[str] = []
    if name and name != "unknown":
        keys += domain_keys(name, parent_matches)
    keys.append(addr)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return keys
    if ip.version == 4:
        octets = addr.split(".")
        keys += [".".join(octets[:n]) for n in (3, 2, 1)]
    else:
        groups = ip.exploded.split(":")
        compressed = [g.lstrip("0") or "0" for g in groups]
        keys += [":".join(compressed[:n]) for n in range(7, 0, -1)]
    return keys


def reject_log_line(qid: str | None, stage: str, client: Client, reply: Reply,
                    sender: A.Path | None, recipient: A.Path | None) -> str:
    """`NOQUEUE: reject: RCPT from host[ip]: 554 5.7.1 <x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<h>`."""
    text = str(reply).replace("\n", " ")
    parts = [f"{qid or 'NOQUEUE'}: reject: {stage} from {client.namaddr}: {text};"]
    if sender is not None:
        parts.append(f"from=<{_shown(sender)}>")
    if recipient is not None:
        parts.append(f"to=<{_shown(recipient)}>")
    parts.append(f"proto={client.protocol}")
    if client.helo:
        parts.append(f"helo=<{client.helo}>")
    return " ".join(parts)


def _default_resolver(cfg) -> ResolveDomain:
    async def resolve(domain: str) -> str:
        from fulmar import dns as fdns
        r = fdns.Resolver.from_config(cfg) if cfg is not None else fdns.Resolver()
        try:
            mx = await r.resolve_mx(domain)
            if mx.hosts or mx.implicit:
                if mx.implicit:
                    await r.resolve_addresses(domain)
                return "ok"
            return "notfound"   # XXX null MX: Postfix answers 556 5.1.10
        except fdns.DnsError as e:
            return "tempfail" if e.temporary else "notfound"
    return resolve
