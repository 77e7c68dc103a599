"""Postfix's lookup order for email addresses (mail_addr_find).

NAME
    fulmar.tables.addr - look an address up in tables as Postfix does

SYNOPSIS
    user, ext = split_extension("bob+list", "+")          # ("bob", "list")
    r = find_address(maps, "bob+list@example.com", delimiter="+",
                     is_local=lambda domain: ..., propagate=True)
    r.status, r.value      # value with the extension propagated, see below

DESCRIPTION
    For tables of fixed strings (not regexp/pcre) the keys tried are, in
    order, as canonical(5), virtual(5) and transport(5) say:

        user+ext@domain    (only when there is an extension)
        user@domain
        user+ext           (only when domain is local: is_local(domain))
        user               (the same)
        @domain

    Each key is tried in every table before the next key (maps_find).
    Pattern tables (regexp:, pcre:) see only the full address.  With
    `propagate` (propagate_unmatched_extensions), a match found without
    the extension gets it back in each result address: user@domain →
    "x@y" answers "x+ext@y".  A result "@otherdomain" for the key
    "@domain" keeps the local part: user@domain → user@otherdomain.

    recipient_delimiter may list several characters; the local part is cut
    at the first of any.  With "-" as a delimiter, "owner-foo" and
    "foo-request" are never split (owner_request_special).

    The first RETRY ends the search with RETRY (a later key must not
    answer for a table that failed).
"""

from __future__ import annotations

from fulmar.tables import FOUND, NOT_FOUND, RETRY, Result


def split_extension(local: str, delimiter: str, owner_special: bool = True) -> tuple[str, str | None]:
    """Cut "user+ext" at the first delimiter character; (user, None) when there is none."""
    if not delimiter or not local:
        return local, None
    if owner_special and "-" in delimiter:
        low = local.lower()
        if low.startswith("owner-") or low.endswith("-request"):
            return local, None
    for i, ch in enumerate(local):
        if ch in delimiter and i > 0:
            return local[:i], local[i + 1:]
    return local, None


def split_address(address: str) -> tuple[str, str]:
    at = address.rfind("@")
    if at < 0:
        return address, ""
    return address[:at], address[at + 1:]


def _propagate(value: str, delim: str, ext: str) -> str:
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        local, domain = split_address(item)
        if local and not local.startswith(("|", "/", ":")):
            item = "%s%s%s%s" % (local, delim, ext, "@" + domain if "@" in item else "")
        out.append(item)
    return ", ".join(out)


def address_keys(address: str, delimiter: str = "", is_local=None) -> list[tuple[str, str]]:
    """The keys to try, each with its kind: "full", "noext", "local", "localnoext", "domain"."""
    local, domain = split_address(address)
    user, ext = split_extension(local, delimiter)
    keys: list[tuple[str, str]] = []
    if domain:
        keys.append((address, "full"))
        if ext is not None:
            keys.append(("%s@%s" % (user, domain), "noext"))
        if is_local is not None and is_local(domain.lower()):
            if ext is not None:
                keys.append((local, "local"))
            keys.append((user, "localnoext"))
        keys.append(("@" + domain, "domain"))
    else:
        keys.append((local, "local"))
        if ext is not None:
            keys.append((user, "localnoext"))
    return keys


def find_address(maps, address: str, *, delimiter: str = "", is_local=None,
                 propagate: bool = False) -> Result:
    """Look `address` up in a table or TableList in Postfix's order."""
    tables = getattr(maps, "tables", None) or [maps]
    local, domain = split_address(address)
    user, ext = split_extension(local, delimiter)
    delim = local[len(user)] if ext is not None else ""
    keys = address_keys(address, delimiter, is_local)
    for key, kind in keys:
        for table in tables:
            if not table.fixed_string and kind != "full":
                continue
            r = table.lookup(key)
            if r.status == RETRY:
                return r
            if r.status != FOUND:
                continue
            value = r.value or ""
            if kind == "domain" and value.startswith("@"):
                return Result(FOUND, local + value)
            if propagate and ext is not None and kind in ("noext", "localnoext"):
                value = _propagate(value, delim, ext)
            return Result(FOUND, value)
    return NOT_FOUND


__all__ = ["split_extension", "split_address", "address_keys", "find_address"]
