"""Fulmar's indexed table format: what hash:, btree:, lmdb:, cdb: (dbm:, sdbm:) read.

NAME
    fulmar.tables.indexed - the file postmap/postalias build

SYNOPSIS
    t = IndexedTable("hash:/etc/postfix/virtual", "/etc/postfix/virtual.db")
    t.lookup("bob@example.com")
    build("/etc/postfix/virtual.db", [(key, value), ...], kind="hash", source=path,
          fold=True)                          # atomic: temp file + rename
    update("/etc/postfix/virtual.db", add=[(k, v)], delete=[k])  # postmap -i / -d

DESCRIPTION
    Berkeley DB is gone from modern distributions, so every hash-like type
    uses one format of Fulmar's own: an SQLite 3 database (Python's sqlite3,
    no extra dependency) in the file Postfix would use: NAME.db for hash,
    btree, dbm and sdbm, NAME.lmdb for lmdb and NAME.cdb for cdb.  Schema:

        fulmar_meta(name TEXT PRIMARY KEY, value TEXT)
            format = "fulmar-map 1", type = hash|btree|..., fold = 1|0,
            source = path of the source file
        fulmar_map(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID

    Keys are stored folded to lower case unless built with postmap -f
    (fold = 0).  A build writes a temporary file next to the target and
    renames it over the target, so a reader sees the old table or the new
    one, never half of one; running daemons reopen it (fulmar.tables
    ReloadingTable).  Incremental updates (-i, -d) are SQLite transactions
    on the file itself.

FAILURE BEHAVIOUR
    A file that is not in this format (for example a Berkeley DB file
    left by Postfix) raises ValueError at open, with "run postmap"; the
    table then answers RETRY.  An SQLite error during a lookup is RETRY.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile

from fulmar.tables import FOUND, NOT_FOUND, RETRY, BaseTable, Result

FORMAT = "fulmar-map 1"

_SCHEMA = (
    "CREATE TABLE fulmar_meta (name TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE fulmar_map (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)


def _connect(path: str, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not os.path.exists(path):
            raise FileNotFoundError(f"open database {path}: No such file or directory")
        uri = "file:%s?mode=ro" % path.replace("?", "%3f").replace("#", "%23")
        return sqlite3.connect(uri, uri=True, check_same_thread=False)
    return sqlite3.connect(path, check_same_thread=False)


def _meta(con: sqlite3.Connection, path: str) -> dict[str, str]:
    try:
        meta = dict(con.execute("SELECT name, value FROM fulmar_meta").fetchall())
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{path}: not a Fulmar indexed table ({e}); run postmap") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown table format {meta.get('format')!r}; run postmap")
    return meta


class IndexedTable(BaseTable):
    def __init__(self, spec: str, path: str):
        self.name = spec
        self.path = path
        try:
            self.con = _connect(path, readonly=True)
            meta = _meta(self.con, path)
        except sqlite3.Error as e:
            raise ValueError(f"open database {path}: {e}") from None
        self.fold = meta.get("fold", "1") == "1"

    def lookup(self, key: str) -> Result:
        if self.fold:
            key = key.lower()
        try:
            row = self.con.execute("SELECT value FROM fulmar_map WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            return Result(RETRY, f"{self.path}: {e}")
        return NOT_FOUND if row is None else Result(FOUND, row[0])

    def items(self):
        return self.con.execute("SELECT key, value FROM fulmar_map ORDER BY key").fetchall()


def _inherit(path: str, source: str | None, keep_mode: bool) -> None:
    if not source or not keep_mode:
        return
    try:
        st = os.stat(source)
    except OSError:
        return
    os.chmod(path, st.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(path, st.st_uid, st.st_gid)


def build(path: str, entries, *, kind: str = "hash", source: str | None = None,
          fold: bool = True, inherit_mode: bool = True) -> int:
    """Write a new table atomically; entries are (key, value), keys already folded."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    os.close(fd)
    count = 0
    try:
        con = sqlite3.connect(tmp)
        try:
            con.execute("PRAGMA journal_mode = OFF")
            for stmt in _SCHEMA:
                con.execute(stmt)
            con.executemany("INSERT INTO fulmar_meta VALUES (?, ?)", [
                ("format", FORMAT), ("type", kind), ("fold", "1" if fold else "0"),
                ("source", source or "")])
            for key, value in entries:
                con.execute("INSERT OR REPLACE INTO fulmar_map VALUES (?, ?)", (key, value))
                count += 1
            con.commit()
        finally:
            con.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _inherit(tmp, source, inherit_mode)
        if not inherit_mode:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return count


def update(path: str, *, add=(), delete=(), kind: str = "hash", replace: bool = True) -> tuple[int, int]:
    """postmap -i / -d: add (key, value) pairs and delete keys in place.

    Returns (added, deleted).  A missing file is created (postmap -i does).
    """
    exists = os.path.exists(path)
    con = _connect(path, readonly=False)
    try:
        if not exists:
            con.execute("PRAGMA journal_mode = DELETE")
            for stmt in _SCHEMA:
                con.execute(stmt)
            con.executemany("INSERT INTO fulmar_meta VALUES (?, ?)", [
                ("format", FORMAT), ("type", kind), ("fold", "1"), ("source", "")])
        meta = _meta(con, path)
        fold = meta.get("fold", "1") == "1"
        added = deleted = 0
        for key, value in add:
            key = key.lower() if fold else key
            verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
            added += con.execute(f"{verb} INTO fulmar_map VALUES (?, ?)", (key, value)).rowcount
        for key in delete:
            key = key.lower() if fold else key
            deleted += con.execute("DELETE FROM fulmar_map WHERE key = ?", (key,)).rowcount
        con.commit()
        return added, deleted
    except sqlite3.Error as e:
        raise OSError(f"{path}: {e}") from None
    finally:
        con.close()
