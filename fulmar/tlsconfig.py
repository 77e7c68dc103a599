"""TLS settings shared by the SMTP server and client: Postfix syntax to ssl.

NAME
    fulmar.tlsconfig - protocol ranges, cipher grades, server contexts,
    Postfix-style TLS log text

SYNOPSIS
    from fulmar import tlsconfig
    lo, hi = tlsconfig.parse_protocols(">=TLSv1.2")        # ssl.TLSVersion pair
    tlsconfig.apply_protocols(ctx, "!SSLv2, !SSLv3, !TLSv1")
    tlsconfig.cipher_list(cfg, "medium", exclude="")       # OpenSSL cipher string
    ctx = tlsconfig.server_context(cfg, mandatory=False)   # raises TlsConfigError
    tlsconfig.summary(ssl_object)  -> "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    tlsconfig.received_attrs(ssl_object) -> {"tls_protocol", "tls_cipher", "tls_cipher_bits", ...}
    sni = tlsconfig.SniSelector(cfg, base_ctx_factory); sni.install(ctx)

DESCRIPTION
    Protocols follow postconf(5) smtpd_tls_protocols: either ">=V" and/or
    "<=V", or a list of names to include, or a list of "!name" to exclude
    (separated by commas, colons or white space).  Known names: SSLv2,
    SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3; SSLv2/SSLv3 are never
    enabled (OpenSSL 3 cannot).  A gap in the allowed set is closed to
    the range from its lowest to its highest member (OpenSSL only has a
    range).  Unknown names raise TlsConfigError.

    Cipher grades are Postfix's: high, medium, low, export, null select
    $tls_<grade>_cipherlist; exclusions (smtpd_tls_exclude_ciphers) are
    appended as ":!name".  They apply to TLS 1.2 and older; TLS 1.3
    suites are OpenSSL's defaults, as in Postfix.

    Server certificates: smtpd_tls_chain_files (each file holds a private
    key and its chain; RSA and ECDSA side by side, OpenSSL keeps one per
    key type), else smtpd_tls_cert_file/smtpd_tls_key_file plus
    smtpd_tls_eccert_file/smtpd_tls_eckey_file.  smtpd_tls_CAfile and
    _CApath are loaded for client certificates; smtpd_tls_ask_ccert asks
    for one (never required: smtpd_tls_req_ccert is not implemented).
    Session resumption: TLS 1.3 tickets and the TLS 1.2 session cache are
    on (per smtpd process; Postfix shares them through tlsmgr).

    SNI (tls_server_sni_maps): the client's server name, then its parent
    domains as ".example.com", are looked up; the value is either file
    names (each a key with its chain) or base64 PEM blobs as `postmap -F`
    stores them.  A name with no entry keeps the default certificate; a
    table that fails aborts the handshake (internal_error), as Postfix.

FAILURE BEHAVIOUR
    Problems with files or settings raise TlsConfigError with a one-line
    reason naming the parameter and file; callers log it as Postfix's
    "warning: ..." and carry on without TLS where the level allows.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import tempfile
import warnings

_ORDER = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
_VERSION = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_LOWER = {name.lower(): name for name in _ORDER}
GRADES = ("high", "medium", "low", "export", "null")


class TlsConfigError(Exception):
    """A TLS setting or file that cannot be used; str() is the reason."""


def _split(text: str) -> list[str]:
    return [w for w in re.split(r"[\s,:]+", text or "") if w]


def _name(word: str, param: str) -> str:
    name = _LOWER.get(word.lower())
    if name is None:
        raise TlsConfigError(f'{param}: unknown protocol name "{word}"')
    return name


def parse_protocols(text: str, param: str = "smtpd_tls_protocols") -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """Postfix protocol syntax -> (minimum_version, maximum_version)."""
    allowed = set(_ORDER)
    included: set[str] = set()
    words = _split(text)
    # ">= TLSv1" with a space is two words; join a bare operator to the next.
    joined: list[str] = []
    for w in words:
        if joined and joined[-1] in (">=", "<=", "!"):
            joined[-1] += w
        else:
            joined.append(w)
    for w in joined:
        if w.startswith(">="):
            lo = _ORDER.index(_name(w[2:], param))
            allowed &= set(_ORDER[lo:])
        elif w.startswith("<="):
            hi = _ORDER.index(_name(w[2:], param))
            allowed &= set(_ORDER[:hi + 1])
        elif w.startswith("!"):
            allowed.discard(_name(w[1:], param))
        else:
            included.add(_name(w, param))
    if included:
        allowed &= included
    usable = [n for n in _ORDER if n in allowed and n in _VERSION]
    if not usable:
        raise TlsConfigError(f"{param}: no usable protocol in \"{text}\"")
    return _VERSION[usable[0]], _VERSION[usable[-1]]


def apply_protocols(ctx: ssl.SSLContext, text: str, param: str) -> None:
    lo, hi = parse_protocols(text, param)
    try:
        with warnings.catch_warnings():
            # Python deprecates TLSv1/TLSv1.1; Postfix's default ">=TLSv1"
            # still names them (OpenSSL's security level decides in the end).
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = lo
            ctx.maximum_version = hi
    except (ValueError, ssl.SSLError) as e:
        raise TlsConfigError(f"{param}: {e}") from None


def cipher_list(cfg, grade: str, exclude: str = "", param: str = "smtpd_tls_ciphers") -> str:
    grade = (grade or "medium").strip().lower()
    if grade not in GRADES:
        raise TlsConfigError(f'{param}: unknown cipher grade "{grade}"')
    text = _get(cfg, f"tls_{grade}_cipherlist", "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH")
    for name in _split(exclude):
        text += f":!{name}"
    return text


def apply_ciphers(ctx: ssl.SSLContext, cfg, grade: str, exclude: str, param: str) -> None:
    try:
        ctx.set_ciphers(cipher_list(cfg, grade, exclude, param))
    except ssl.SSLError as e:
        raise TlsConfigError(f"{param}: invalid cipher list: {e}") from None


def _get(cfg, name: str, default=""):
    try:
        v = cfg.get(name)
    except (KeyError, LookupError):
        return default
    return default if v is None else v


def _files(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v)]
    return _split_files(str(value or ""))


def _split_files(text: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", text) if w]


def load_chain(ctx: ssl.SSLContext, certfile: str, keyfile: str | None, param: str) -> None:
    try:
        ctx.load_cert_chain(certfile, keyfile or None)
    except FileNotFoundError:
        raise TlsConfigError(f"{param}: cannot load certificate from file \"{certfile}\": "
                             "No such file or directory") from None
    except PermissionError:
        raise TlsConfigError(f"{param}: cannot read \"{keyfile or certfile}\": Permission denied") from None
    except (ssl.SSLError, OSError) as e:
        raise TlsConfigError(f"{param}: cannot load key and certificate from \"{certfile}\""
                             f"{' / ' + keyfile if keyfile else ''}: {getattr(e, 'reason', None) or e}") from None


def server_certificates(cfg, prefix: str = "smtpd") -> list[tuple[str, str | None, str]]:
    """[(certfile, keyfile or None, parameter name)] for a server context."""
    chains = _files(_get(cfg, f"{prefix}_tls_chain_files", ""))
    if chains:
        return [(f, None, f"{prefix}_tls_chain_files") for f in chains]
    out = []
    for cert_p, key_p in (("cert_file", "key_file"), ("eccert_file", "eckey_file")):
        cert = str(_get(cfg, f"{prefix}_tls_{cert_p}", "") or "")
        if cert:
            key = str(_get(cfg, f"{prefix}_tls_{key_p}", "") or "") or cert
            out.append((cert, key, f"{prefix}_tls_{cert_p}"))
    return out


def server_context(cfg, mandatory: bool = False, prefix: str = "smtpd",
                   certificates: list[tuple[str, str | None, str]] | None = None) -> ssl.SSLContext:
    """An SSLContext for smtpd with the Postfix parameters applied."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_NO_COMPRESSION
    if str(_get(cfg, "tls_preempt_cipherlist", "no")).lower() in ("yes", "true", "1") or \
            _get(cfg, "tls_preempt_cipherlist", False) is True:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    kind = "mandatory_" if mandatory else ""
    apply_protocols(ctx, str(_get(cfg, f"{prefix}_tls_{kind}protocols", ">=TLSv1")),
                    f"{prefix}_tls_{kind}protocols")
    excl = str(_get(cfg, f"{prefix}_tls_exclude_ciphers", "") or "")
    if mandatory:
        excl += " " + str(_get(cfg, f"{prefix}_tls_mandatory_exclude_ciphers", "") or "")
    apply_ciphers(ctx, cfg, str(_get(cfg, f"{prefix}_tls_{kind}ciphers", "medium")), excl,
                  f"{prefix}_tls_{kind}ciphers")
    certs = server_certificates(cfg, prefix) if certificates is None else certificates
    if not certs:
        raise TlsConfigError(f"no certificate configured: set {prefix}_tls_chain_files or "
                             f"{prefix}_tls_cert_file")
    for certfile, keyfile, param in certs:
        load_chain(ctx, certfile, keyfile, param)
    cafile = str(_get(cfg, f"{prefix}_tls_CAfile", "") or "")
    capath = str(_get(cfg, f"{prefix}_tls_CApath", "") or "")
    if cafile or capath:
        try:
            ctx.load_verify_locations(cafile or None, capath or None)
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(f"{prefix}_tls_CAfile: cannot load CA certificates: {e}") from None
    ask = _get(cfg, f"{prefix}_tls_ask_ccert", False)
    ctx.verify_mode = ssl.CERT_OPTIONAL if (ask is True and (cafile or capath)) else ssl.CERT_NONE
    return ctx


# ----------------------------------------------------------------------
# SNI

def sni_keys(name: str) -> list[str]:
    """example.com lookups: "mx.example.com", ".example.com", ".com"."""
    name = name.lower().rstrip(".")
    labels = name.split(".")
    return [name] + ["." + ".".join(labels[i:]) for i in range(1, len(labels))]


def _pem_blobs(value: str) -> list[bytes] | None:
    """Values stored by `postmap -F`: base64 of the files' contents."""
    out = []
    for word in value.split():
        try:
            data = base64.b64decode(word, validate=True)
        except (binascii.Error, ValueError):
            return None
        if b"-----BEGIN" not in data:
            return None
        out.append(data)
    return out or None


class SniSelector:
    """Switches the handshake to the certificate named by tls_server_sni_maps."""

    def __init__(self, table, make_context, log_warning=None):
        self.table = table                 # a fulmar.tables table, or None
        self.make_context = make_context   # f(certificates) -> ssl.SSLContext
        self.warn = log_warning or (lambda *a: None)
        self._cache: dict[str, ssl.SSLContext | None] = {}

    def install(self, ctx: ssl.SSLContext) -> None:
        if self.table is not None:
            ctx.sni_callback = self._callback

    def context_for(self, server_name: str) -> ssl.SSLContext | None:
        """The context for a name; None keeps the default. Raises LookupError on RETRY."""
        from fulmar import tables
        name = server_name.lower().rstrip(".")
        if name in self._cache:
            return self._cache[name]
        ctx = None
        for key in sni_keys(name):
            r = self.table.lookup(key)
            if r.status == tables.RETRY:
                raise LookupError(f"{self.table.name}: lookup of {key} failed")
            if r.status == tables.FOUND and r.value:
                ctx = self._load(key, r.value)
                break
        self._cache[name] = ctx
        return ctx

    def _load(self, key: str, value: str) -> ssl.SSLContext:
        blobs = _pem_blobs(value)
        if blobs is None:
            return self.make_context([(f, None, "tls_server_sni_maps") for f in _split_files(value)])
        # ssl only loads keys from files: a private temporary file each.
        paths = []
        try:
            for blob in blobs:
                fd, path = tempfile.mkstemp(prefix="fulmar-sni-")
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                paths.append(path)
            return self.make_context([(p, None, "tls_server_sni_maps") for p in paths])
        finally:
            for p in paths:
                os.unlink(p)

    def _callback(self, sslobj, server_name, _ctx):
        if not server_name:
            return None
        try:
            ctx = self.context_for(server_name)
        except LookupError as e:
            self.warn("%s", e)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        except TlsConfigError as e:
            self.warn("SNI %s: %s", server_name, e)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        if ctx is not None:
            sslobj.context = ctx
        return None


# ----------------------------------------------------------------------
# Log and header text

def summary(sslobj) -> str:
    """"TLSv1.3 with cipher NAME (256/256 bits)" as Postfix's tls_log_summary."""
    version = sslobj.version() or "unknown"
    name, _proto, bits = sslobj.cipher() or ("unknown", "", 0)
    return f"{version} with cipher {name} ({bits}/{bits} bits)"


def received_attrs(sslobj) -> dict:
    """Attributes for cleanup's Received: header (Postfix's smtpd_tls_received_header)."""
    name, _proto, bits = sslobj.cipher() or ("unknown", "", 0)
    return {"tls_protocol": sslobj.version() or "unknown", "tls_cipher": name,
            "tls_cipher_bits": str(bits), "tls_cipher_alg_bits": str(bits)}
