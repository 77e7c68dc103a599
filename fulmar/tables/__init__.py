"""Lookup tables: "type:name" → key/value lookups with three outcomes.

NAME
    fulmar.tables - Postfix-style lookup tables (DATABASE_README)

SYNOPSIS
    from fulmar import tables
    t = tables.open_table("hash:/etc/postfix/virtual", cfg=None)
    r = t.lookup("example.com")        # Result(status, value)
    r.status in (tables.FOUND, tables.NOTFOUND, tables.RETRY)
    await t.alookup(key)               # same, for callers on an event loop
    maps = tables.open_maps(cfg, "virtual_alias_maps")   # TableList
    maps.lookup(key)                   # first table that finds it wins
    tables.TYPES                       # the type names open_table knows

DESCRIPTION
    Types (docs/tables.md has the file formats):

      texthash:/file         postmap source read into memory
      hash: btree: lmdb: cdb: dbm: sdbm:
                             Fulmar's indexed format (an sqlite3 file,
                             fulmar.tables.indexed) built by postmap/postalias
      regexp: pcre:          /pattern/flags result, if/endif, $1 substitution
      cidr:                  network/prefix result
      static:value           always found
      inline:{k=v, ...}      in-line table
      unix:passwd.byname     the password database (unix:group.byname too)
      proxy:type:name        looked through (proxymap is not needed)
      sqlite:/file.cf        sqlite_table(5) configuration file
      socketmap:inet:host:port:name, socketmap:unix:/path:name
      unionmap:{t1, t2}      all results joined with commas
      pipemap:{t1, t2}       the result of t1 is the key for t2

    Keys of texthash/indexed/inline tables are case-folded as Postfix's
    postmap does by default.  Tables backed by a file notice a rebuilt
    file (postmap) without a restart: at most once per
    RELOAD_CHECK_INTERVAL seconds a lookup stats the file and reopens it
    when its inode, size or mtime changed.

    Every table has `fixed_string` (False for regexp/pcre: Postfix looks
    only the full address up in those) and `path` (the file whose owner
    decides privileges for alias deliveries, or None).

FAILURE BEHAVIOUR
    A table that cannot be opened (missing file, unknown type, bad syntax in
    inline:/cidr:/regexp: files) is not "not found": every lookup on it
    answers RETRY and one warning is logged, as Postfix's surrogate tables
    do (rule 5: a failing table never reads as "not found").  A table that
    opens later (the file appears) starts working at the next check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Protocol

FOUND = "FOUND"
NOTFOUND = "NOTFOUND"
RETRY = "RETRY"

#: Seconds between checks for a rebuilt table file: cheap enough per lookup,
#: and an admin's `postmap` is visible within a second (Postfix daemons
#: notice a changed table "soon" and restart; Fulmar reopens the table).
RELOAD_CHECK_INTERVAL = 1.0

#: Types that postmap builds into Fulmar's indexed format, and the suffix of
#: the file each one uses (Postfix's names: .db for Berkeley DB types).
INDEXED_SUFFIX = {"hash": ".db", "btree": ".db", "dbm": ".db", "sdbm": ".db",
                  "lmdb": ".lmdb", "cdb": ".cdb"}

TYPES = ("texthash", *INDEXED_SUFFIX, "regexp", "pcre", "cidr", "static", "inline", "unix",
         "proxy", "sqlite", "socketmap", "unionmap", "pipemap")

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
    fixed_string = True
    path: str | None = None
    #: True when a lookup may block on I/O (network, database): alookup
    #: then runs it in a worker thread.
    blocking = False

    def lookup(self, key: str) -> Result:  # pragma: no cover - overridden
        raise NotImplementedError

    async def alookup(self, key: str) -> Result:
        if self.blocking:
            return await asyncio.get_running_loop().run_in_executor(None, self.lookup, key)
        return self.lookup(key)

    def items(self):
        """(key, value) pairs for postmap -s; tables that cannot list raise ValueError."""
        raise ValueError(f"table {self.name} does not support sequential access")


class FailedTable(BaseTable):
    """Stand-in for a table that could not be opened: every lookup is RETRY."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason

    def lookup(self, key: str) -> Result:
        return Result(RETRY, self.reason)


class ReloadingTable(BaseTable):
    """A file-backed table that reopens itself when the file changes.

    `load()` builds the inner table; a failed (re)load makes lookups RETRY
    until the file is good again, never NOTFOUND.
    """

    def __init__(self, spec: str, path: str, load: Callable[[], BaseTable],
                 fixed_string: bool = True, clock=time.monotonic):
        self.name = spec
        self.path = path
        self.fixed_string = fixed_string
        self._load = load
        self._clock = clock
        self._stamp: tuple | None = None
        self._checked = float("-inf")
        self._inner: BaseTable = FailedTable(spec, "not loaded")
        self._reload(first=True)

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_dev)

    def _reload(self, first: bool = False) -> None:
        self._stamp = self._file_stamp()
        try:
            self._inner = self._load()
        except (OSError, ValueError) as e:
            if not first and not isinstance(self._inner, FailedTable):
                _warn(f"{self.name} is unavailable. {e}")
            self._inner = FailedTable(self.name, str(e))
            self.first_error = str(e)

    def _check(self) -> None:
        now = self._clock()
        if now - self._checked < RELOAD_CHECK_INTERVAL:
            return
        self._checked = now
        if self._file_stamp() != self._stamp or isinstance(self._inner, FailedTable):
            self._reload()

    @property
    def inner(self) -> BaseTable:
        self._check()
        return self._inner

    def lookup(self, key: str) -> Result:
        return self.inner.lookup(key)

    def items(self):
        inner = self.inner
        if isinstance(inner, FailedTable):
            raise OSError(inner.reason)
        return inner.items()


class TableList:
    """The tables of one parameter (virtual_alias_maps = t1, t2): first FOUND wins.

    A RETRY from a table before any FOUND makes the whole lookup RETRY,
    as Postfix's maps_find() does (a later table must not answer for a
    failed earlier one).
    """

    def __init__(self, param: str, tables_: list[BaseTable]):
        self.param = param
        self.tables = tables_

    def __bool__(self) -> bool:
        return bool(self.tables)

    @property
    def fixed_string(self) -> bool:
        return all(t.fixed_string for t in self.tables)

    def lookup(self, key: str) -> Result:
        for t in self.tables:
            r = t.lookup(key)
            if r.status != NOTFOUND:
                return r
        return NOT_FOUND

    def lookup_each(self, key: str, fixed_only: bool = False) -> Result:
        """Like lookup, skipping pattern tables when `fixed_only`."""
        for t in self.tables:
            if fixed_only and not t.fixed_string:
                continue
            r = t.lookup(key)
            if r.status != NOTFOUND:
                return r
        return NOT_FOUND


def _warn(msg: str) -> None:
    try:
        from fulmar import log
        log.warning("%s", msg)
    except Exception:  # the log module may not be set up (tests, tools)
        _log.warning("%s", msg)


def split_spec(spec: str) -> tuple[str, str]:
    kind, sep, name = spec.partition(":")
    if not sep:
        raise ValueError(f"unsupported dictionary type: {spec}")
    return kind.lower(), name


def indexed_path(kind: str, name: str) -> str:
    """The file an indexed table of `kind` lives in (name may carry the suffix)."""
    suffix = INDEXED_SUFFIX[kind]
    return name if name.endswith(suffix) else name + suffix


def open_table(spec: str, cfg=None) -> BaseTable:
    """Open "type:name"; never raises for bad files or types (see FAILURE)."""
    try:
        return _checked(_open(spec, cfg))
    except (OSError, ValueError) as e:
        _warn(f"{spec} is unavailable. {e}")
        return FailedTable(spec, str(e))


def _checked(t: BaseTable) -> BaseTable:
    """Warn once when a file table failed its first load (open_table's promise)."""
    if isinstance(t, ReloadingTable) and isinstance(t._inner, FailedTable):
        _warn(f"{t.name} is unavailable. {t._inner.reason}")
    return t


def _open(spec: str, cfg) -> BaseTable:
    from fulmar.tables import cidr, extra, indexed, regexp, text

    kind, name = split_spec(spec)
    if kind == "proxy":
        return _open(name, cfg)
    if kind == "texthash":
        return ReloadingTable(spec, name, lambda: text.TextTable.from_file(spec, name))
    if kind in INDEXED_SUFFIX:
        path = indexed_path(kind, name)
        return ReloadingTable(spec, path, lambda: indexed.IndexedTable(spec, path))
    if kind == "inline":
        return text.TextTable.from_inline(spec, name)
    if kind == "static":
        return text.StaticTable(spec, name)
    if kind == "cidr":
        return ReloadingTable(spec, name, lambda: cidr.CidrTable.from_file(spec, name))
    if kind in ("regexp", "pcre"):
        return ReloadingTable(spec, name, lambda: regexp.RegexpTable.from_file(spec, name),
                              fixed_string=False)
    if kind == "unix":
        return extra.UnixTable(spec, name)
    if kind == "sqlite":
        return ReloadingTable(spec, name, lambda: extra.SqliteTable.from_file(spec, name))
    if kind == "socketmap":
        return extra.SocketmapTable(spec, name, cfg)
    if kind in ("unionmap", "pipemap"):
        inner = name.strip()
        if not (inner.startswith("{") and inner.endswith("}")):
            raise ValueError(f"{spec}: need {kind}:{{type:name, ...}}")
        from fulmar.tables.text import split_braced
        parts = [open_table(p, cfg) for p in split_braced(inner[1:-1])]
        if not parts:
            raise ValueError(f"{spec}: empty table list")
        cls = extra.UnionTable if kind == "unionmap" else extra.PipeTable
        return cls(spec, parts)
    raise ValueError(f"unsupported dictionary type: {kind}")


def open_maps(cfg, param: str, cache: dict | None = None) -> TableList:
    """The tables named by a main.cf parameter (missing parameter: empty list)."""
    try:
        specs = cfg.get(param)
    except KeyError:
        specs = []
    if isinstance(specs, str):
        specs = specs.replace(",", " ").split()
    out = []
    for spec in specs:
        if cache is not None and spec in cache:
            out.append(cache[spec])
            continue
        if spec.startswith("/"):
            spec = "texthash:" + spec     # a file in a list means its lines
        t = open_table(spec, cfg)
        if cache is not None:
            cache[spec] = t
        out.append(t)
    return TableList(param, out)


__all__ = ["FOUND", "NOTFOUND", "RETRY", "Result", "Table", "BaseTable", "FailedTable",
           "ReloadingTable", "TableList", "open_table", "open_maps", "NOT_FOUND", "TYPES",
           "INDEXED_SUFFIX", "indexed_path", "split_spec"]
