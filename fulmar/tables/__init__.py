"""Lookup tables: "type:name" → key/value lookups with three outcomes.

NAME
    fulmar.tables - Postfix-style lookup tables (minimal set)

SYNOPSIS
    from fulmar import tables
    t = tables.open_table("texthash:/etc/postfix/access", cfg=None)
    r = t.lookup("example.com")        # Result(status, value)
    r.status in (tables.FOUND, tables.NOTFOUND, tables.RETRY)
    await t.alookup(key)               # same, for callers on an event loop

DESCRIPTION
    Types: texthash:, inline:{k=v, ...}, static:value, cidr:, regexp:,
    pcre: (Python re), and hash:/lmdb:/btree:/cdb: which for now read the
    plain source text file (the file named without the .db suffix), like
    texthash:.  XXX issue 5 adds the indexed formats and postmap.

    Keys of texthash/hash-like tables are case-folded (Postfix folds
    lookups with DICT_FLAG_FOLD_FIX).  Values are the rest of the line
    after white space; lines starting with white space continue the
    previous one; "#" starts a comment line.

FAILURE BEHAVIOUR
    A table that cannot be opened (missing file, unknown type, bad syntax in
    inline:/cidr:/regexp: files) is not "not found": every lookup on it
    answers RETRY and one warning is logged, as Postfix's surrogate tables
    do (rule 5: a failing table never reads as "not found").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

FOUND = "FOUND"
NOTFOUND = "NOTFOUND"
RETRY = "RETRY"

_log = logging.getLogger("fulmar.tables")


@dataclass(frozen=True, slots=True)
class Result:
    status: str
    value: str | None = None

    @property
    def found(self) -> bool:
        return self.status == FOUND


NOT_FOUND = Result(NOTFOUND)


class Table(Protocol):
    name: str  # "type:name" as configured

    def lookup(self, key: str) -> Result: ...

    async def alookup(self, key: str) -> Result: ...


class BaseTable:
    name = ""

    def lookup(self, key: str) -> Result:  # pragma: no cover - overridden
        raise NotImplementedError

    async def alookup(self, key: str) -> Result:
        return self.lookup(key)


class FailedTable(BaseTable):
    """Stand-in for a table that could not be opened: every lookup is RETRY."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason

    def lookup(self, key: str) -> Result:
        return Result(RETRY, self.reason)


def _warn(msg: str) -> None:
    try:
        from fulmar import log
        log.warning("%s", msg)
    except Exception:  # the log module may not be set up (tests, tools)
        _log.warning("%s", msg)


def open_table(spec: str, cfg=None) -> BaseTable:
    """Open "type:name"; never raises for bad files or types (see FAILURE)."""
    from fulmar.tables import cidr, regexp, text

    kind, sep, name = spec.partition(":")
    kind = kind.lower()
    try:
        if not sep:
            raise ValueError(f"unsupported dictionary type: {spec}")
        if kind in ("texthash", "hash", "btree", "lmdb", "cdb", "dbm", "sdbm"):
            return text.TextTable.from_file(spec, name, strip_db=kind != "texthash")
        if kind == "inline":
            return text.TextTable.from_inline(spec, name)
        if kind == "static":
            return text.StaticTable(spec, name)
        if kind == "cidr":
            return cidr.CidrTable.from_file(spec, name)
        if kind in ("regexp", "pcre"):
            return regexp.RegexpTable.from_file(spec, name)
        raise ValueError(f"unsupported dictionary type: {kind}")
    except (OSError, ValueError) as e:
        _warn(f"{spec} is unavailable. {e}")
        return FailedTable(spec, str(e))


__all__ = ["FOUND", "NOTFOUND", "RETRY", "Result", "Table", "BaseTable", "FailedTable",
           "open_table", "NOT_FOUND"]
