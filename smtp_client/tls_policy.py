"""The SMTP client's TLS policy and SASL credentials per destination.

NAME
    smtp_client.tls_policy - levels, policy maps, contexts, certificate names, passwords

SYNOPSIS
    from smtp_client.tls_policy import TlsPolicy, Policies, parse_policy, cert_matches
    pols = Policies.from_config(cfg, "smtp")
    pol = pols.lookup(nexthop)             # TlsPolicy (level "retry" when a table failed)
    ctx = pols.context(pol)                # ssl.SSLContext for that policy
    names = pols.match_names(pol, hostname="mx1.example.com", nexthop="example.com")
    cert_matches(ssl_object.getpeercert(), names) -> bool
    creds = pols.sasl_credentials(hostname, nexthop)   # ClientSasl | None | "retry"
    parse_policy("secure match=example.com:.example.com protocols=>=TLSv1.2")

DESCRIPTION
    Levels (smtp_tls_security_level, or per destination in
    smtp_tls_policy_maps): none; may (STARTTLS when offered, no
    verification, plaintext if the handshake fails); encrypt (TLS
    required, not verified); verify (TLS required, the chain must verify
    against smtp_tls_CAfile/smtp_tls_CApath, or the system store when
    both are empty, and a name in smtp_tls_verify_cert_match must match);
    secure (the same with smtp_tls_secure_cert_match).  Mandatory levels
    use smtp_tls_mandatory_protocols and _ciphers.  dane and dane-only
    belong to a later issue: dane is treated as may and dane-only as
    encrypt (XXX); fingerprint as encrypt (XXX: digests not checked).

    Match names: "hostname" (the server's name from MX or the next hop),
    "nexthop" (the next-hop domain), "dot-nexthop" (any sub-domain of it),
    or a literal name; a literal ".example.com" matches sub-domains.
    Certificates match on their DNS subjectAltNames (the CN only when
    there are none); "*.example.com" matches exactly one label.

    Policy map keys: the next hop as written ("[host]:port", "[host]",
    "domain"), then, for a domain, its parent domains as ".example.com".
    Values: a level, then attributes match=a:b, protocols=..., ciphers=...,
    servername=... (the SNI name: "hostname", "nexthop" or a name).

    SNI: smtp_tls_servername (empty: none; "hostname": the server's name;
    "nexthop": the next hop; else the name given); at verify/secure the
    server's name is always sent, as Postfix does.

    SASL: smtp_sasl_password_maps is looked up with the server's host
    name, then the next hop as written; the value is "username:password".
    Allowed mechanisms: PLAIN and LOGIN unless smtp_sasl_security_options
    (without TLS) or smtp_sasl_tls_security_options (with TLS) says
    "noplaintext"; smtp_sasl_mechanism_filter narrows them further.

FAILURE BEHAVIOUR
    A table that fails gives level "retry" / "retry" credentials: the
    caller defers (4.3.0 ... lookup error), never sends in plaintext.
    Bad files give TlsConfigError when the context is made; the caller
    defers with 4.7.5.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass, field

from fulmar import tables, tlsconfig

LEVELS = ("none", "may", "encrypt", "verify", "secure")
MANDATORY = frozenset({"encrypt", "verify", "secure"})
VERIFYING = frozenset({"verify", "secure"})
RETRY = "retry"
_ALIASES = {"": "none", "dane": "may", "dane-only": "encrypt", "fingerprint": "encrypt"}


@dataclass(frozen=True)
class TlsPolicy:
    level: str
    match: tuple[str, ...] = ()
    protocols: str = ""
    ciphers: str = ""
    servername: str = ""
    attrs: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def mandatory(self) -> bool:
        return self.level in MANDATORY

    @property
    def verifying(self) -> bool:
        return self.level in VERIFYING


def normal_level(level: str) -> str:
    level = (level or "").strip().lower()
    level = _ALIASES.get(level, level)
    return level if level in LEVELS else "none"


def parse_policy(value: str) -> TlsPolicy:
    """"verify match=hostname:nexthop protocols=..." -> TlsPolicy (ValueError if bad)."""
    words = value.split()
    if not words:
        raise ValueError("empty TLS policy")
    level = words[0].lower()
    if level not in LEVELS and level not in _ALIASES:
        raise ValueError(f'unknown TLS security level "{words[0]}"')
    attrs: dict[str, str] = {}
    for w in words[1:]:
        k, eq, v = w.partition("=")
        if not eq:
            raise ValueError(f'bad TLS policy attribute "{w}"')
        attrs[k.lower()] = v
    match = tuple(m for m in re.split(r"[:\s,]+", attrs.get("match", "")) if m)
    return TlsPolicy(normal_level(level), match, attrs.get("protocols", ""), attrs.get("ciphers", ""),
                     attrs.get("servername", ""), attrs)


def policy_keys(nexthop: str) -> list[str]:
    keys = [nexthop]
    if not nexthop.startswith("[") and ":" not in nexthop:
        labels = nexthop.lower().split(".")
        keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
    elif nexthop.startswith("["):
        bare = nexthop.split("]")[0] + "]"
        if bare != nexthop:
            keys.append(bare)
    return keys


def _dns_names(cert: dict) -> list[str]:
    names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    names.append(v)
    return [n.lower().rstrip(".") for n in names]


def _name_matches(cert_name: str, pattern: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("."):
        # Sub-domains of the pattern; "*.example.com" stands for them too.
        wild = cert_name.startswith("*.")
        base = cert_name[1:] if wild else cert_name
        return base.endswith(pattern) and (wild or len(base) > len(pattern))
    if cert_name == pattern:
        return True
    if cert_name.startswith("*."):
        head, _, tail = pattern.partition(".")
        return bool(head) and tail == cert_name[2:]
    return False


def cert_matches(cert: dict | None, patterns: list[str]) -> bool:
    if not cert:
        return False
    names = _dns_names(cert)
    return any(_name_matches(n, p) for n in names for p in patterns)


def _get(cfg, name, default=""):
    try:
        v = cfg.get(name)
    except (KeyError, LookupError):
        return default
    return default if v is None else v


def _param(cfg, prefix: str, name: str, default=""):
    v = _get(cfg, f"{prefix}_{name}", None)
    if v is None and prefix != "smtp":
        v = _get(cfg, f"smtp_{name}", None)
    return default if v is None else v


def _list(v) -> list[str]:
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v if str(x)]
    return [w for w in re.split(r"[\s,]+", str(v or "")) if w]


class Policies:
    def __init__(self, cfg, prefix: str = "smtp", opener=tables.open_table):
        self.cfg = cfg
        self.prefix = prefix
        p = lambda name, d="": _param(cfg, prefix, name, d)  # noqa: E731
        self.default_level = normal_level(str(p("tls_security_level", "none")))
        self.tables = [opener(spec, cfg) for spec in _list(p("tls_policy_maps"))]
        self.verify_match = _list(p("tls_verify_cert_match", "hostname")) or ["hostname"]
        self.secure_match = _list(p("tls_secure_cert_match", "nexthop, dot-nexthop")) or ["nexthop", "dot-nexthop"]
        self.servername = str(p("tls_servername", "") or "")
        self.loglevel = int(p("tls_loglevel", 0) or 0)
        self.cafile = str(p("tls_CAfile", "") or "")
        self.capath = str(p("tls_CApath", "") or "")
        self.sasl_enabled = bool(p("sasl_auth_enable", False))
        self.sasl_tables = [opener(spec, cfg) for spec in _list(p("sasl_password_maps"))] \
            if self.sasl_enabled else []
        self.sasl_options = [o.lower() for o in _list(p("sasl_security_options", "noplaintext, noanonymous"))]
        self.sasl_tls_options = [o.lower() for o in _list(p("sasl_tls_security_options", ""))] or self.sasl_options
        self.sasl_filter = [m.upper() for m in _list(p("sasl_mechanism_filter", ""))]
        self._contexts: dict[tuple, ssl.SSLContext] = {}

    @classmethod
    def from_config(cls, cfg, prefix: str = "smtp") -> Policies:
        return cls(cfg, prefix)

    # -- policy ---------------------------------------------------------------
    def lookup(self, nexthop: str) -> TlsPolicy:
        for key in policy_keys(nexthop):
            for t in self.tables:
                r = t.lookup(key)
                if r.status == tables.RETRY:
                    return TlsPolicy(RETRY)
                if r.status == tables.FOUND and r.value:
                    try:
                        return parse_policy(r.value)
                    except ValueError:
                        # Postfix: a malformed policy entry is a configuration
                        # error; deferring is the safe choice.
                        return TlsPolicy(RETRY, attrs={"error": f"{t.name}: bad policy for {key}"})
        return TlsPolicy(self.default_level)

    def match_names(self, pol: TlsPolicy, hostname: str, nexthop: str) -> list[str]:
        if pol.match:
            words = list(pol.match)
        else:
            words = self.secure_match if pol.level == "secure" else self.verify_match
        host = hostname.lower().rstrip(".")
        nh = nexthop.lower().rstrip(".")
        out = []
        for w in words:
            lw = w.lower()
            if lw == "hostname":
                out.append(host)
            elif lw == "nexthop":
                out.append(nh)
            elif lw == "dot-nexthop":
                out.append("." + nh)
            else:
                out.append(lw)
        return out

    def server_hostname(self, pol: TlsPolicy, hostname: str, nexthop: str) -> str | None:
        """The SNI name to send, or None."""
        choice = pol.servername or self.servername
        if not choice and pol.verifying:
            choice = "hostname"
        name = {"hostname": hostname, "nexthop": nexthop}.get(choice.lower(), choice) if choice else ""
        if not name:
            return None
        try:
            ipaddress.ip_address(name)
            return None     # SNI carries host names only (RFC 6066 §3)
        except ValueError:
            return name

    def context(self, pol: TlsPolicy) -> ssl.SSLContext:
        key = (pol.level, pol.protocols, pol.ciphers)
        ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        p = lambda name, d="": _param(self.cfg, self.prefix, name, d)  # noqa: E731
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False      # names are checked by cert_matches, per policy
        ctx.options |= ssl.OP_NO_COMPRESSION
        kind = "mandatory_" if pol.mandatory else ""
        tlsconfig.apply_protocols(ctx, pol.protocols or str(p(f"tls_{kind}protocols", ">=TLSv1")),
                                  f"{self.prefix}_tls_{kind}protocols")
        tlsconfig.apply_ciphers(ctx, self.cfg, pol.ciphers or str(p(f"tls_{kind}ciphers", "medium")),
                                str(p("tls_exclude_ciphers", "") or ""), f"{self.prefix}_tls_{kind}ciphers")
        if pol.verifying:
            ctx.verify_mode = ssl.CERT_REQUIRED
            try:
                if self.cafile or self.capath:
                    ctx.load_verify_locations(self.cafile or None, self.capath or None)
                else:
                    ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
            except (OSError, ssl.SSLError) as e:
                raise tlsconfig.TlsConfigError(f"{self.prefix}_tls_CAfile: cannot load CA certificates: {e}") \
                    from None
        else:
            ctx.verify_mode = ssl.CERT_NONE
        certs = tlsconfig.server_certificates(self.cfg, self.prefix)
        for certfile, keyfile, param in certs:       # a client certificate, when configured
            tlsconfig.load_chain(ctx, certfile, keyfile, param)
        self._contexts[key] = ctx
        return ctx

    # -- SASL -----------------------------------------------------------------
    def _mechanisms(self, opts: list[str]) -> tuple[str, ...]:
        return tuple(m for m in ("PLAIN", "LOGIN")
                     if "noplaintext" not in opts and (not self.sasl_filter or m in self.sasl_filter))

    def sasl_credentials(self, hostname: str, nexthop: str):
        """ClientSasl for this server, None (no AUTH), or RETRY."""
        if not self.sasl_enabled or not self.sasl_tables:
            return None
        from smtp_client.protocol import ClientSasl
        for key in (hostname, nexthop):
            if not key:
                continue
            for t in self.sasl_tables:
                r = t.lookup(key)
                if r.status == tables.RETRY:
                    return RETRY
                if r.status == tables.FOUND and r.value is not None:
                    user, _, password = r.value.strip().partition(":")
                    return ClientSasl(user, password, self._mechanisms(self.sasl_options),
                                      self._mechanisms(self.sasl_tls_options))
        return None


def trust_label(verified_chain: bool, name_matched: bool, has_cert: bool) -> str:
    """Postfix's words: Verified, Trusted, Untrusted, Anonymous."""
    if not has_cert:
        return "Anonymous"
    if verified_chain and name_matched:
        return "Verified"
    return "Trusted" if verified_chain else "Untrusted"
