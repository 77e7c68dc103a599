"""Recipient validation at RCPT TO: is the address known? (smtpd_check.c check_rcpt_maps)

NAME
    smtpd.recipients -- reject_unlisted_recipient and friends

SYNOPSIS
    rv = RecipientValidator(cfg)           # once per process (tables stay open)
    reply = rv.check("bob@example.com")    # Reply | None (known, or not ours to check)

DESCRIPTION
    Applied by smtpd.policy after the restriction lists when
    smtpd_reject_unlisted_recipient = yes (the default), and wherever a
    restriction list names reject_unlisted_recipient.

    An address that canonical_maps, recipient_canonical_maps or
    virtual_alias_maps knows is always known.  One in relocated_maps gets
    `550 5.1.6 <addr>: Recipient address rejected: User has moved to X`.
    Otherwise, by address class (fulmar.resolve):

      local            local_recipient_maps (empty: every address is known)
                       → "User unknown in local recipient table"
      virtual alias    → "User unknown in virtual alias table"
      virtual mailbox  virtual_mailbox_maps → "User unknown in virtual mailbox table"
      relay            relay_recipient_maps (empty: every address is known)
                       → "User unknown in relay recipient table"
      default          not checked

    The reply is `<code> 5.1.1 <addr>: Recipient address rejected: <text>`
    with code unknown_{local,virtual_alias,virtual_mailbox,relay}_recipient
    _reject_code (550).  Lookups use Postfix's address order
    (fulmar.tables.addr); a table that fails gives
    `451 4.3.0 <addr>: Temporary lookup failure`, never "unknown".
"""

from __future__ import annotations

from fulmar import resolve, tables
from fulmar.smtp.reply import Reply
from fulmar.tables.addr import find_address

_CLASS_CHECK = {
    # class: (maps parameter, reject code parameter, text, empty maps accept everything)
    resolve.CLASS_LOCAL: ("local_recipient_maps", "unknown_local_recipient_reject_code",
                          "User unknown in local recipient table", True),
    resolve.CLASS_ALIAS: (None, "unknown_virtual_alias_reject_code",
                          "User unknown in virtual alias table", False),
    resolve.CLASS_VIRTUAL: ("virtual_mailbox_maps", "unknown_virtual_mailbox_reject_code",
                            "User unknown in virtual mailbox table", False),
    resolve.CLASS_RELAY: ("relay_recipient_maps", "unknown_relay_recipient_reject_code",
                          "User unknown in relay recipient table", True),
}


def _lookup_failure(shown: str) -> Reply:
    return Reply(451, "4.3.0", f"<{shown}>: Temporary lookup failure")


class RecipientValidator:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        cache: dict = {}
        self.resolver = resolve.Resolver(cfg)
        self.delimiter = cfg.get("recipient_delimiter")
        self.myorigin = cfg.get("myorigin")
        self.known_maps = [tables.open_maps(cfg, p, cache) for p in
                           ("canonical_maps", "recipient_canonical_maps", "virtual_alias_maps")]
        self.class_maps = {cls: tables.open_maps(cfg, spec[0], cache) if spec[0] else None
                           for cls, spec in _CLASS_CHECK.items()}
        self.codes = {cls: cfg.get(spec[1]) for cls, spec in _CLASS_CHECK.items()}
        self.relocated = self.resolver.relocated_maps

    def _find(self, maps, address: str) -> tables.Result:
        return find_address(maps, address, delimiter=self.delimiter,
                            is_local=self.resolver.is_local_domain)

    def check(self, address: str, shown: str | None = None) -> Reply | None:
        """None when the address is known (or not checked); else the reject reply."""
        shown = address if shown is None else shown
        if not address or address.lower() == "postmaster":   # RFC 5321 4.5.1, as smtpd_check.c
            return None
        if "@" not in address:
            address = "%s@%s" % (address, self.myorigin)
        address = address.lower()
        for maps in self.known_maps:
            if not maps:
                continue
            r = self._find(maps, address)
            if r.status == tables.RETRY:
                return _lookup_failure(shown)
            if r.found:
                return None
        if self.relocated:
            r = self._find(self.relocated, address)
            if r.status == tables.RETRY:
                return _lookup_failure(shown)
            if r.found:
                return Reply(550, "5.1.6", f"<{shown}>: Recipient address rejected: "
                                           f"User has moved to {r.value}")
        cls, retry = self.resolver.address_class(resolve.domain_of(address))
        if retry:
            return _lookup_failure(shown)
        spec = _CLASS_CHECK.get(cls)
        if spec is None:
            return None
        _, _, text, empty_ok = spec
        maps = self.class_maps[cls]
        if maps is not None:
            if not maps:
                if empty_ok:
                    return None
            else:
                r = self._find(maps, address)
                if r.status == tables.RETRY:
                    return _lookup_failure(shown)
                if r.found:
                    return None
        code = self.codes[cls]
        return Reply(code, f"{str(code)[0]}.1.1", f"<{shown}>: Recipient address rejected: {text}")
