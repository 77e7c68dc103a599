"""postmap -- build and query Postfix lookup tables (postmap(1)).

SYNOPSIS
    postmap [-bfhimnNoprsuUvw] [-c config_dir] [-d key] [-q key]
            [file_type:]file_name ...

DESCRIPTION
    Without -q/-d/-s/-i: build each table from its source file
    (`file_name`) into Fulmar's indexed format (fulmar.tables.indexed:
    file_name.db for hash/btree, .lmdb for lmdb, .cdb for cdb).  The type
    defaults to $default_database_type.  The build is atomic and keeps the
    source file's mode and (as root) owner, unless -p.

    -q key   print the value of key and exit 0; exit 1 when absent.
             "-q -" reads keys from stdin and prints "key<TAB>value" for
             each one found (exit 0 when any was found).  Works with every
             table type (regexp:, cidr:, texthash:, ...).
    -d key   delete key (exit 1 when absent); "-d -" reads keys from stdin.
    -s       print every "key<TAB>value" (types that can list).
    -i       incremental: add "key value" lines read from stdin.
    -r       replace duplicate keys silently (default: warn, keep the first).
    -w       ignore duplicate keys silently.
    -f       do not fold keys to lower case when building.
    -u, -U, -N, -n, -o, -b, -h, -m, -v
             accepted for compatibility (Fulmar tables are always UTF-8
             clean and carry no trailing null).
    -c dir   configuration directory.

    postalias(1) is this command with aliases(5) source syntax
    ("name: value"): run(..., aliases=True).  It also stores the
    "@" → "@" entry sendmail expects.

EXIT STATUS
    0 success (found); 1 not found, usage or fatal error (Postfix's
    msg_fatal status).
    Messages are Postfix's: `postmap: fatal: open /x: No such file or
    directory`, `postmap: warning: /x, line 3: duplicate entry: "key"`.
"""

from __future__ import annotations

import os
import sys

from fulmar.version import require_python

USAGE = "usage: %s [-bfhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file..."


def _default_type(config_dir: str | None) -> str:
    try:
        from fulmar import config
        return config.load(config_dir).get("default_database_type") or "hash"
    except Exception:      # a broken main.cf must not stop table builds
        return "hash"


def _spec(name: str, default_type: str) -> tuple[str, str]:
    """(type, name): "hash:/x" → ("hash", "/x"); "/x" → (default, "/x")."""
    if ":" in name and not name.startswith("/"):
        kind, _, rest = name.partition(":")
        return kind.lower(), rest
    return default_type, name


def run(argv: list[str], aliases: bool = False) -> int:
    from fulmar import tables
    from fulmar.cli import _common as C
    from fulmar.tables import indexed, text

    prog = os.path.basename(argv[0]) if argv else ("postalias" if aliases else "postmap")
    try:
        opts, args = C.getopt(argv[1:], "bc:d:fhimnNopq:rsuUvwF")
    except C.GetoptError as e:
        sys.stderr.write("%s: %s\n" % (prog, e))
        return _usage(prog)
    config_dir = None
    query = delete = None
    dump, incremental, fold = False, False, True
    dup = "warn"
    inherit = True
    for o, v in opts:
        if o == "-c":
            config_dir = v
        elif o == "-q":
            query = v
        elif o == "-d":
            delete = v
        elif o == "-s":
            dump = True
        elif o == "-i":
            incremental = True
        elif o == "-r":
            dup = "replace"
        elif o == "-w":
            dup = "ignore"
        elif o == "-f":
            fold = False
        elif o == "-p":
            inherit = False
        elif o == "-F":
            return _fatal(prog, "-F (SNI maps) is not supported")
    if sum(x is not None and x is not False for x in (query, delete, dump or None)) > 1:
        return _fatal(prog, "specify at most one of -q, -d or -s")
    if not args:
        return _usage(prog)
    default_type = _default_type(config_dir)
    try:
        if query is not None:
            return _query(prog, query, args, default_type)
        if delete is not None:
            return _delete(prog, delete, args, default_type)
        if dump:
            return _dump(prog, args, default_type)
        for name in args:
            kind, path = _spec(name, default_type)
            if kind not in tables.INDEXED_SUFFIX:
                return _fatal(prog, "unsupported dictionary type: %s" % kind)
            db = tables.indexed_path(kind, path)
            if incremental:
                parse = text.iter_aliases if aliases else text.iter_source
                pairs = _checked(prog, "-", parse(sys.stdin.read(), fold=fold), aliases)
                indexed.update(db, add=[(k, v) for k, v, _ in pairs], kind=kind,
                               replace=dup != "warn")
                continue
            try:
                with open(path, encoding="utf-8", errors="surrogateescape") as f:
                    src = f.read()
            except OSError as e:
                return _fatal(prog, "open %s: %s" % (path, e.strerror or e))
            parse = text.iter_aliases if aliases else text.iter_source
            entries = _unique(prog, path, _checked(prog, path, parse(src, fold=fold), aliases), dup)
            if aliases:
                entries.setdefault("@", "@")
            indexed.build(db, entries.items(), kind=kind, source=path, fold=fold,
                          inherit_mode=inherit)
    except _OpenError as e:
        return _fatal(prog, str(e))
    except OSError as e:
        return _fatal(prog, str(e.strerror if e.strerror and not e.filename else e))
    return 0


def _checked(prog: str, path: str, items, aliases: bool):
    out = []
    for lineno, key, value in items:
        if key is None:
            _warn(prog, "%s, line %d: need name:value pair" % (path, lineno))
            continue
        if not value:
            _warn(prog, "%s, line %d: expected format: key whitespace value" % (path, lineno))
            continue
        out.append((key, value, lineno))
    return out


def _unique(prog: str, path: str, pairs, dup: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for key, value, lineno in pairs:
        if key in entries:
            if dup == "replace":
                entries[key] = value
            elif dup == "warn":
                _warn(prog, "%s, line %d: duplicate entry: \"%s\"" % (path, lineno, key))
            continue
        entries[key] = value
    return entries


class _OpenError(Exception):
    pass


def _open(spec_name: str, default_type: str):
    """Open a table for -q/-s; failures are the command's fatal error, not a log warning."""
    from fulmar import tables
    kind, path = _spec(spec_name, default_type)
    try:
        t = tables._open("%s:%s" % (kind, path), None)
        inner = getattr(t, "inner", t)
    except (OSError, ValueError) as e:
        raise _OpenError(str(e)) from None
    if isinstance(inner, tables.FailedTable):
        raise _OpenError(inner.reason)
    return t


def _query(prog: str, key: str, names: list[str], default_type: str) -> int:
    from fulmar import tables
    tbls = [_open(n, default_type) for n in names]
    keys = [k.rstrip("\n") for k in sys.stdin] if key == "-" else [key]
    found_any = False
    for k in keys:
        for t in tbls:
            r = t.lookup(k)
            if r.status == tables.RETRY:
                return _fatal(prog, "table %s: query error: %s" % (t.name, r.value))
            if r.found:
                found_any = True
                print("%s\t%s" % (k, r.value) if key == "-" else r.value)
                break
    return 0 if found_any else 1


def _delete(prog: str, key: str, names: list[str], default_type: str) -> int:
    from fulmar import tables
    from fulmar.tables import indexed
    keys = [k.strip() for k in sys.stdin] if key == "-" else [key]
    deleted = 0
    for name in names:
        kind, path = _spec(name, default_type)
        if kind not in tables.INDEXED_SUFFIX:
            return _fatal(prog, "unsupported dictionary type: %s" % kind)
        _, n = indexed.update(tables.indexed_path(kind, path), delete=[k for k in keys if k])
        deleted += n
    return 0 if deleted else 1


def _dump(prog: str, names: list[str], default_type: str) -> int:
    for name in names:
        t = _open(name, default_type)
        try:
            items = t.items()
        except (ValueError, OSError) as e:
            return _fatal(prog, "table %s: %s" % (t.name, e))
        for k, v in items:
            print("%s\t%s" % (k, v))
    return 0


def _warn(prog: str, text: str) -> None:
    sys.stderr.write("%s: warning: %s\n" % (prog, text))


def _fatal(prog: str, text: str) -> int:
    sys.stdout.flush()
    sys.stderr.write("%s: fatal: %s\n" % (prog, text))
    return 1


def _usage(prog: str) -> int:
    sys.stderr.write("%s: fatal: %s\n" % (prog, USAGE % prog))
    return 1


def main(argv: list[str] | None = None) -> int:
    require_python()
    return run(list(sys.argv if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
