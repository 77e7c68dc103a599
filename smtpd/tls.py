"""smtpd's TLS: the security level, the server context, the handshake, log lines.

NAME
    smtpd.tls - STARTTLS (RFC 3207) and implicit TLS (RFC 8314) for smtpd

SYNOPSIS
    from smtpd.tls import ServerTls
    tls = ServerTls.from_config(cfg, log)     # before the switch to mail_owner
    tls.level ("none"|"may"|"encrypt"), tls.wrapper, tls.context (None: unusable)
    tls.protocol_overrides() -> dict for smtpd.protocol.Settings.with_overrides
    new_transport = await tls.handshake(loop, transport, protocol)   # raises TlsHandshakeError
    tls.established_line(namaddr, transport) -> "Anonymous TLS connection established from ..."
    tls.received_attrs(transport) -> {} or the tls_* attributes for cleanup

DESCRIPTION
    smtpd_tls_security_level: "none" (or empty, unless the obsolete
    smtpd_use_tls/smtpd_enforce_tls say otherwise) offers no STARTTLS;
    "may" offers it with $smtpd_tls_protocols and $smtpd_tls_ciphers;
    "encrypt" offers it with the mandatory protocols and ciphers, refuses
    MAIL before it (530 5.7.0 Must issue a STARTTLS command first) and
    implies smtpd_tls_auth_only.  smtpd_tls_wrappermode = yes starts TLS on
    the first byte (the submissions service on 465).

    The context is built by from_config(), which smtpd's __main__ calls
    before the daemon gives up root, so key files may stay readable by
    root only, as with Postfix.  If it cannot be built, the warning says
    why; at "may" STARTTLS is then not offered, at "encrypt" it is offered
    and answered 454 4.7.0 TLS not available due to local problem, and in
    wrapper mode each connection is closed after the warning.

    Log lines (smtpd_tls_loglevel >= 1), as Postfix's tls_log_summary:
        Anonymous TLS connection established from host[ip]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
    ("Trusted"/"Untrusted" when the client showed a certificate).  A
    failed handshake logs "SSL_accept error from host[ip]: reason" at any
    level, then the session's "lost connection after STARTTLS" line.

    smtpd_tls_received_header = yes passes tls_protocol, tls_cipher and
    tls_cipher_bits to cleanup for the Received: header.
"""

from __future__ import annotations

import ssl

from fulmar import tables, tlsconfig

LEVELS = ("none", "may", "encrypt")


class TlsHandshakeError(Exception):
    pass


def effective_level(cfg) -> str:
    level = str(cfg.get("smtpd_tls_security_level") or "").strip().lower()
    if level:
        return level if level in LEVELS else "none"

    def flag(name: str) -> bool:
        try:
            return str(cfg.get(name)).strip().lower() in ("yes", "true", "1")
        except (KeyError, LookupError):
            return False
    if flag("smtpd_enforce_tls"):
        return "encrypt"
    if flag("smtpd_use_tls"):
        return "may"
    return "none"


class ServerTls:
    def __init__(self, level: str, wrapper: bool, context: ssl.SSLContext | None,
                 error: str = "", loglevel: int = 0, received_header: bool = False,
                 handshake_timeout: float = 300.0):
        self.level = level
        self.wrapper = wrapper
        self.context = context
        self.error = error
        self.loglevel = loglevel
        self.received_header = received_header
        self.handshake_timeout = handshake_timeout

    @classmethod
    def from_config(cls, cfg, log=None) -> ServerTls:
        level = effective_level(cfg)
        wrapper = bool(cfg.get("smtpd_tls_wrappermode"))
        ctx, error = None, ""
        if level != "none" or wrapper:
            mandatory = level == "encrypt"
            try:
                ctx = tlsconfig.server_context(cfg, mandatory=mandatory)
                sni_spec = " ".join(cfg.get("tls_server_sni_maps") or [])
                if sni_spec:
                    def make(certs, _cfg=cfg, _m=mandatory):
                        return tlsconfig.server_context(_cfg, mandatory=_m, certificates=certs)
                    table = tables.open_table(sni_spec.split()[0], cfg)
                    warn = (lambda fmt, *a: log("warning", fmt, *a)) if log else None
                    tlsconfig.SniSelector(table, make, warn).install(ctx)
            except tlsconfig.TlsConfigError as e:
                error = str(e)
                if log is not None:
                    log("warning", "cannot use TLS: %s%s", error,
                        "; STARTTLS will not be offered" if level == "may" and not wrapper else "")
        return cls(level, wrapper, ctx, error, int(cfg.get("smtpd_tls_loglevel")),
                   bool(cfg.get("smtpd_tls_received_header")), float(cfg.get("smtpd_starttls_timeout")))

    @property
    def starttls_offered(self) -> bool:
        if self.wrapper:
            return False
        if self.level == "encrypt":
            return True
        return self.level == "may" and self.context is not None

    def protocol_overrides(self) -> dict:
        return {"starttls_available": self.starttls_offered,
                "tls_required": self.level == "encrypt" and not self.wrapper,
                "tls_wrapper": self.wrapper}

    async def handshake(self, loop, transport, protocol):
        """Wrap transport in TLS; the new transport, or TlsHandshakeError."""
        if self.context is None:
            raise TlsHandshakeError(self.error or "TLS not available")
        try:
            return await loop.start_tls(transport, protocol, self.context, server_side=True,
                                        ssl_handshake_timeout=self.handshake_timeout)
        except TimeoutError:
            raise TlsHandshakeError("handshake timeout") from None
        except ssl.SSLError as e:
            raise TlsHandshakeError(e.reason or str(e)) from None
        except (OSError, ConnectionError, EOFError) as e:
            raise TlsHandshakeError(str(e) or "connection lost") from None

    @staticmethod
    def _sslobj(transport):
        return transport.get_extra_info("ssl_object") if transport is not None else None

    def established_line(self, namaddr: str, transport) -> str | None:
        if self.loglevel < 1:
            return None
        sslobj = self._sslobj(transport)
        if sslobj is None:
            return None
        trust = "Trusted" if sslobj.getpeercert() else "Anonymous"
        return f"{trust} TLS connection established from {namaddr}: {tlsconfig.summary(sslobj)}"

    def received_attrs(self, transport) -> dict:
        sslobj = self._sslobj(transport)
        if sslobj is None or not self.received_header:
            return {}
        return tlsconfig.received_attrs(sslobj)
