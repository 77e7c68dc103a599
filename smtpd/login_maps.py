"""smtpd_sender_login_maps: which SASL login may use which MAIL FROM address.

NAME
    smtpd.login_maps - the *_sender_login_mismatch restrictions

SYNOPSIS
    from smtpd import login_maps
    verdict, reply = await login_maps.check(policy, name, client, sender)
    login_maps.RESTRICTIONS   # the four restriction names

DESCRIPTION
    The sender address is looked up in every table of
    smtpd_sender_login_maps: the full address, then "@domain", then the
    bare local part when the domain is in $mydestination (Postfix's
    mail_addr_find order).  The value lists the owners (SASL login names,
    separated by commas or white space).  Then, as Postfix's
    smtpd_check.c:

      reject_authenticated_sender_login_mismatch
          an authenticated client whose login is not an owner of the
          sender (or the sender has no owner):
          553 5.7.1 <addr>: Sender address rejected: not owned by user NAME
      reject_unauthenticated_sender_login_mismatch
          a client that did not authenticate, for a sender that has an owner:
          553 5.7.1 <addr>: Sender address rejected: not logged in
      reject_sender_login_mismatch       both of the above
      reject_known_sender_login_mismatch both, for senders that have an owner only

    The null sender is never checked.  A table that fails answers
    451 4.3.0 <addr>: Sender address rejected: Temporary lookup failure.
"""

from __future__ import annotations

import re

from fulmar import tables
from fulmar.smtp.reply import Reply

RESTRICTIONS = frozenset({
    "reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
    "reject_known_sender_login_mismatch", "reject_unauthenticated_sender_login_mismatch",
})
PERMIT, DUNNO, REJECT = "permit", "dunno", "reject"


class _Retry(Exception):
    pass


def lookup_keys(address: str, local_domain: bool) -> list[str]:
    local, at, domain = address.rpartition("@")
    if not at:
        return [address]
    keys = [address, "@" + domain]
    if local_domain:
        keys.append(local)
    return keys


def _owners(policy, address: str) -> set[str] | None:
    cfg = policy.s.cfg
    specs = cfg.get("smtpd_sender_login_maps") if cfg is not None else []
    if isinstance(specs, str):
        specs = specs.replace(",", " ").split()
    if not specs:
        return None
    domain = address.rpartition("@")[2]
    local_domain = bool(domain) and bool(policy.mydestination.match(domain))
    for key in lookup_keys(address, local_domain):
        for spec in specs:
            r = policy._table(spec).lookup(key)
            if r.status == tables.RETRY:
                raise _Retry(spec)
            if r.status == tables.FOUND and r.value is not None:
                return {w for w in re.split(r"[\s,]+", r.value.strip()) if w}
    return None


async def check(policy, name: str, client, sender) -> tuple[str, Reply | None]:
    if sender is None or not sender.address:
        return DUNNO, None
    addr = sender.address
    try:
        owners = _owners(policy, addr)
    except _Retry:
        return REJECT, Reply(451, "4.3.0", f"<{addr}>: Sender address rejected: Temporary lookup failure")
    login = client.sasl_username
    check_auth = name in ("reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
                          "reject_known_sender_login_mismatch")
    check_unauth = name in ("reject_sender_login_mismatch", "reject_unauthenticated_sender_login_mismatch",
                            "reject_known_sender_login_mismatch")
    if login:
        if not check_auth:
            return DUNNO, None
        if owners is None and name == "reject_known_sender_login_mismatch":
            return DUNNO, None
        if owners is None or login not in owners:
            return REJECT, Reply(553, "5.7.1", f"<{addr}>: Sender address rejected: not owned by user {login}")
        return DUNNO, None
    if check_unauth and owners:
        return REJECT, Reply(553, "5.7.1", f"<{addr}>: Sender address rejected: not logged in")
    return DUNNO, None
