"""smtp_generic_maps / lmtp_generic_maps: rewrite envelope addresses on the way out.

NAME
    smtp_client.generic -- Postfix's generic(5) mapping in the SMTP client

SYNOPSIS
    g = GenericMaps.from_config(cfg, "smtp")    # None when the maps are empty
    msg = g.apply(msg)                          # a new smtp_client.protocol.Message

DESCRIPTION
    The envelope sender and each recipient are looked up in
    $<prefix>_generic_maps in Postfix's address order (fulmar.tables.addr:
    user+ext@domain, user@domain, user+ext and user when the domain is
    local, @domain, with "@domain → @other" keeping the local part) and
    replaced by the result.  Delivery log lines keep showing the
    original addresses, as Postfix's do.

    Headers, as Postfix's smtp(8) does: header_stream() gives a
    fulmar.smtp.headeraddr.HeaderStream that rewrites the addresses of
    every address header (From:, Sender:, Reply-To:, To:, Cc:, ... the
    sender and recipient headers of cleanup) in the header section of the
    content on its way out; smtp_client.deliver streams the content
    through it.  Unmapped addresses leave a header byte-identical.

    XXX a table failure leaves the address unchanged and logs a warning
    instead of deferring.  XXX the SIZE= announced is the queued size,
    before header rewriting.
"""

from __future__ import annotations

from dataclasses import replace

from fulmar import tables
from fulmar.smtp.headeraddr import RECIPIENT_HEADERS, SENDER_HEADERS, HeaderStream, rewrite_header
from fulmar.tables.addr import find_address

ADDRESS_HEADERS = SENDER_HEADERS | RECIPIENT_HEADERS


class GenericMaps:
    def __init__(self, maps, delimiter: str, local_domains: set[str], warn=None):
        self.maps = maps
        self.delimiter = delimiter
        self.local_domains = local_domains
        self.warn = warn

    @classmethod
    def from_config(cls, cfg, prefix: str = "smtp", warn=None):
        try:
            maps = tables.open_maps(cfg, f"{prefix}_generic_maps")
        except KeyError:
            return None
        if not maps:
            return None
        local = {d.lower() for d in cfg.get("mydestination") if ":" not in d}
        local.add(cfg.get("myorigin").lower())
        return cls(maps, cfg.get("recipient_delimiter"), local, warn)

    def map(self, address: str) -> str:
        if not address:
            return address
        r = find_address(self.maps, address, delimiter=self.delimiter,
                         is_local=lambda d: d.lower() in self.local_domains)
        if r.status == tables.RETRY:
            if self.warn:
                self.warn("%s map lookup problem for %s", self.maps.param, address)
            return address
        if r.found and r.value:
            return r.value.split(",")[0].strip()
        return address

    def apply(self, msg):
        return replace(msg, sender=self.map(msg.sender),
                       recipients=[replace(r, address=self.map(r.address)) for r in msg.recipients])

    def rewrite_header(self, name: bytes, text: bytes) -> bytes:
        if name not in ADDRESS_HEADERS:
            return text
        new = rewrite_header(text, self.map)
        return text if new is None else new

    def header_stream(self) -> HeaderStream:
        return HeaderStream(self.rewrite_header)
