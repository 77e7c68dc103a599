"""The other table types: unix:, sqlite:, socketmap:, unionmap:, pipemap:.

NAME
    fulmar.tables.extra - tables that are not files of key/value lines

DESCRIPTION
    unix:passwd.byname   key: a user name; value: the passwd(5) line
                         "name:x:uid:gid:gecos:home:shell" (as Postfix's
                         dict_unix).  unix:group.byname: "name:x:gid:m1,m2".
    sqlite:/file.cf      sqlite_table(5): `dbpath`, `query` (%s key, %u
                         local part, %d domain, %[1-9] domain labels from
                         the right, %% a percent; single quotes in the
                         key are doubled), `result_format` (%s, %u, %d, %S
                         raw), `domain` (only keys in these domains are
                         looked up), `expansion_limit`.  Several rows are
                         joined with ", ".
    socketmap:inet:host:port:name, socketmap:unix:/path:name
                         Sendmail's socketmap protocol: the request is the
                         netstring "name key", the reply "OK value",
                         "NOTFOUND ", "TEMP reason", "TIMEOUT reason" or
                         "PERM reason" (the latter three: RETRY).  One
                         connection per lookup, timeout SOCKETMAP_TIMEOUT.
    unionmap:{t1, t2}    every table is asked; the found values are joined
                         with ","; RETRY if any table says RETRY.
    pipemap:{t1, t2}     the value of t1 is the key for t2, and so on;
                         NOTFOUND as soon as a table does not find it.

FAILURE BEHAVIOUR
    Unreachable servers, SQL errors and bad replies are RETRY, never
    NOTFOUND.
"""

from __future__ import annotations

import grp
import pwd
import re
import socket
import sqlite3

from fulmar.tables import FOUND, NOT_FOUND, NOTFOUND, RETRY, BaseTable, Result

#: socketmap replies are one short netstring; Postfix limits them at 100000
#: bytes (socketmap_max_reply) and waits 10 s (the dict_sockmap default).
SOCKETMAP_TIMEOUT = 10.0
SOCKETMAP_MAX_REPLY = 100000


class UnixTable(BaseTable):
    def __init__(self, spec: str, name: str):
        self.name = spec
        if name not in ("passwd.byname", "group.byname"):
            raise ValueError(f"unknown table: {spec}")
        self.which = name

    def lookup(self, key: str) -> Result:
        try:
            if self.which == "passwd.byname":
                p = pwd.getpwnam(key)
                return Result(FOUND, "%s:%s:%d:%d:%s:%s:%s" % (
                    p.pw_name, p.pw_passwd, p.pw_uid, p.pw_gid, p.pw_gecos, p.pw_dir, p.pw_shell))
            g = grp.getgrnam(key)
            return Result(FOUND, "%s:%s:%d:%s" % (g.gr_name, g.gr_passwd, g.gr_gid,
                                                   ",".join(g.gr_mem)))
        except KeyError:
            return NOT_FOUND
        except (OSError, ValueError) as e:
            return Result(RETRY, str(e))


def read_cf(path: str) -> dict[str, str]:
    """A *_table(5) configuration file: "name = value" lines (continuations allowed)."""
    from fulmar.tables.text import logical_lines
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out: dict[str, str] = {}
    for lineno, line in logical_lines(text):
        name, eq, value = line.partition("=")
        if not eq:
            raise ValueError(f"{path}, line {lineno}: missing '='")
        out[name.strip()] = value.strip()
    return out


_EXPAND_RE = re.compile(r"%(.)")


def _expand(template: str, key: str, quote) -> str | None:
    """Postfix's db_common_expand: None when the template needs a part the key lacks."""
    local, at, domain = key.rpartition("@")
    if not at:
        local, domain = key, ""
    labels = domain.split(".") if domain else []
    missing = False

    def rep(m: re.Match) -> str:
        nonlocal missing
        c = m.group(1)
        if c == "%":
            return "%"
        if c == "s":
            return quote(key)
        if c == "S":
            return key
        if c == "u":
            return quote(local)
        if c == "d":
            if not domain:
                missing = True
            return quote(domain)
        if c.isdigit() and c != "0":
            n = int(c)
            if n > len(labels):
                missing = True
                return ""
            return quote(labels[-n])
        raise ValueError(f"invalid %{c} in {template!r}")
    out = _EXPAND_RE.sub(rep, template)
    return None if missing else out


def _sql_quote(text: str) -> str:
    return text.replace("'", "''")


class SqliteTable(BaseTable):
    blocking = True

    def __init__(self, spec: str, cf: dict[str, str]):
        self.name = spec
        self.dbpath = cf.get("dbpath", "")
        if not self.dbpath:
            raise ValueError(f"{spec}: missing dbpath")
        self.query = cf.get("query") or self._legacy_query(cf)
        self.result_format = cf.get("result_format", "%s")
        self.domains = {d.lower() for d in re.split(r"[\s,]+", cf.get("domain", "")) if d}
        self.limit = int(cf.get("expansion_limit", "0") or 0)
        self.con: sqlite3.Connection | None = None

    @staticmethod
    def _legacy_query(cf: dict[str, str]) -> str:
        try:
            where = "%s = '%%s'" % cf["where_field"]
            q = "SELECT %s FROM %s WHERE %s" % (cf["select_field"], cf["table"], where)
        except KeyError:
            raise ValueError("missing query") from None
        if cf.get("additional_conditions"):
            q += " " + cf["additional_conditions"]
        return q

    @classmethod
    def from_file(cls, spec: str, path: str) -> SqliteTable:
        t = cls(spec, read_cf(path))
        t.path = path
        return t

    def _connect(self) -> sqlite3.Connection:
        if self.con is None:
            uri = "file:%s?mode=ro" % self.dbpath
            self.con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self.con

    def lookup(self, key: str) -> Result:
        if self.domains:
            _, at, domain = key.rpartition("@")
            if not at or domain.lower() not in self.domains:
                return NOT_FOUND
        try:
            q = _expand(self.query, key, _sql_quote)
        except ValueError as e:
            return Result(RETRY, str(e))
        if q is None:
            return NOT_FOUND
        try:
            rows = self._connect().execute(q).fetchall()
        except sqlite3.Error as e:
            self.con = None
            return Result(RETRY, f"{self.name}: {e}")
        values = []
        for row in rows:
            for col in row:
                if col is None:
                    continue
                v = _expand(self.result_format, str(col), lambda s: s)
                if v:
                    values.append(v)
        if not values:
            return NOT_FOUND
        if self.limit and len(values) > self.limit:
            return Result(RETRY, f"{self.name}: expansion limit exceeded for key {key!r}")
        return Result(FOUND, ",".join(values))


def _netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


class SocketmapTable(BaseTable):
    blocking = True

    def __init__(self, spec: str, name: str, cfg=None):
        self.name = spec
        if name.startswith("inet:"):
            rest = name[5:]
            host_port, _, self.map_name = rest.rpartition(":")
            host, _, port = host_port.rpartition(":")
            if not host or not port.isdigit() or not self.map_name:
                raise ValueError(f"{spec}: need socketmap:inet:host:port:name")
            self.family, self.address = socket.AF_INET, (host.strip("[]"), int(port))
            if ":" in self.address[0]:
                self.family = socket.AF_INET6
        elif name.startswith("unix:"):
            path, _, self.map_name = name[5:].rpartition(":")
            if not path or not self.map_name:
                raise ValueError(f"{spec}: need socketmap:unix:/path:name")
            self.family, self.address = socket.AF_UNIX, path
        else:
            raise ValueError(f"{spec}: need socketmap:inet:... or socketmap:unix:...")

    def lookup(self, key: str) -> Result:
        request = _netstring(("%s %s" % (self.map_name, key)).encode("utf-8", "surrogateescape"))
        try:
            with socket.socket(self.family, socket.SOCK_STREAM) as s:
                s.settimeout(SOCKETMAP_TIMEOUT)
                s.connect(self.address)
                s.sendall(request)
                reply = _read_netstring(s)
        except (OSError, ValueError) as e:
            return Result(RETRY, f"{self.name}: {e}")
        text = reply.decode("utf-8", "surrogateescape")
        status, _, value = text.partition(" ")
        if status == "OK":
            return Result(FOUND, value)
        if status == "NOTFOUND":
            return NOT_FOUND
        return Result(RETRY, f"{self.name}: {text}")


def _read_netstring(s: socket.socket) -> bytes:
    buf = b""
    while b":" not in buf:
        chunk = s.recv(32)
        if not chunk:
            raise ValueError("connection closed")
        buf += chunk
        if b":" not in buf and len(buf) > 12:
            raise ValueError("bad netstring length")
    length_txt, _, rest = buf.partition(b":")
    if not length_txt.isdigit():
        raise ValueError("bad netstring length")
    length = int(length_txt)
    if length > SOCKETMAP_MAX_REPLY:
        raise ValueError("reply too long")
    while len(rest) < length + 1:
        chunk = s.recv(length + 1 - len(rest))
        if not chunk:
            raise ValueError("connection closed")
        rest += chunk
    if rest[length:length + 1] != b",":
        raise ValueError("missing netstring terminator")
    return rest[:length]


class UnionTable(BaseTable):
    def __init__(self, spec: str, parts: list[BaseTable]):
        self.name = spec
        self.parts = parts
        self.blocking = any(p.blocking for p in parts)

    def lookup(self, key: str) -> Result:
        found = []
        for t in self.parts:
            r = t.lookup(key)
            if r.status == RETRY:
                return r
            if r.status == FOUND:
                found.append(r.value or "")
        return Result(FOUND, ",".join(found)) if found else NOT_FOUND


class PipeTable(BaseTable):
    def __init__(self, spec: str, parts: list[BaseTable]):
        self.name = spec
        self.parts = parts
        self.blocking = any(p.blocking for p in parts)
        self.fixed_string = parts[0].fixed_string

    def lookup(self, key: str) -> Result:
        for t in self.parts:
            r = t.lookup(key)
            if r.status != FOUND:
                return r if r.status == RETRY else NOT_FOUND
            key = r.value or ""
        return Result(FOUND, key)


__all__ = ["UnixTable", "SqliteTable", "SocketmapTable", "UnionTable", "PipeTable", "read_cf",
           "NOTFOUND"]
