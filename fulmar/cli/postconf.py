"""postconf: show and edit the Fulmar (Postfix) configuration.

NAME
    postconf - Postfix configuration utility, Fulmar's implementation

SYNOPSIS
    postconf [-dhnx] [-c config_dir] [-o name=value] [name...]
    postconf -e [-c config_dir] name=value...      (also: postconf name=value...)
    postconf -X name...        postconf -# name...
    postconf -M [-f] [service[/type]...]       postconf -Me service/type='entry'...
    postconf -MX service/type...               postconf -M# service/type...
    postconf -F [service[/type[/field]]...]    postconf -P [service[/type[/name]]...]
    postconf -m

DESCRIPTION
    As Postfix's postconf(1).  Without options: every parameter with its
    value in force, `name = value`, sorted.  -n: only those set in main.cf.
    -d: built-in defaults.  -h: values only.  -x: expand $name.  -e edits
    main.cf in place (an existing assignment is replaced where it is, all
    comments and the order are kept; a new one is appended); -X removes
    assignments; -# comments them out.  -M lists master.cf services (-f
    folds -o options onto their own lines), -Me replaces or adds entries,
    -MX removes them, -M# comments them out; -F prints the fields of
    master.cf entries, -P their -o parameters.  -m lists the lookup table
    types Fulmar supports.  -c DIR or $MAIL_CONFIG choose the configuration
    directory (default /etc/postfix).  Single-letter flags combine (-nx, -Mf).
    Files are rewritten atomically (temporary file, fsync, rename).

    Differences from Postfix: a missing main.cf is not an error (all
    defaults apply); -n does not list config_directory when -c is given;
    -a, -A, -b, -t, -T, -l, -j and -p are not implemented.

DIAGNOSTICS
    Unknown parameter names: "postconf: warning: NAME: unknown parameter"
    (exit status 0, as Postfix).  Configuration warnings are printed as
    "postconf: warning: ...".  Errors: one line "postconf: fatal: ..." on
    stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys

from fulmar.version import require_python

PROG = "postconf"

# Lookup table types fulmar/tables supports (postconf -m).
MAP_TYPES = ("btree", "cdb", "cidr", "hash", "inline", "lmdb", "pcre", "pipemap",
             "proxy", "regexp", "socketmap", "sqlite", "static", "texthash",
             "unionmap", "unix")

# Options that take an argument; the rest are flags.
_ARG_OPTIONS = "co"
_FLAG_OPTIONS = "dehnxXMFPmf#"

USAGE = ("usage: postconf [-c config_dir] [-d (parameter defaults)] [-e (edit configuration)] "
         "[-f (fold lines)] [-F (master.cf fields)] [-h (no names)] [-m (map types)] "
         "[-M (master.cf)] [-n (non-default parameters)] [-o name=value (override parameter value)] "
         "[-P (master.cf parameters)] [-x (expand parameter values)] [-X (exclude)] "
         "[-# (comment-out)] [name...]")


class Fatal(Exception):
    """One-line fatal error; main() prints "postconf: fatal: TEXT"."""


def _read_lines(path: str) -> list[str]:
    """A configuration file's lines for in-place editing ([] when missing)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape").splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise Fatal(f"open {path}: {e.strerror}") from None


def _warn(text: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {text}\n")


def _line(name: str, value: str, values_only: bool = False) -> str:
    # Postfix prints values with white space runs collapsed to one space.
    value = " ".join(value.split())
    if values_only:
        return value
    return f"{name} = {value}" if value else f"{name} ="


def parse_args(argv: list[str]) -> tuple[set[str], str | None, dict[str, str], list[str]]:
    """getopt-style parsing: (flags, config_dir, overrides, operands)."""
    flags: set[str] = set()
    config_dir: str | None = None
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            opt = arg[j]
            if opt in _ARG_OPTIONS:
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise Fatal(f"option requires an argument -- '{opt}'; {USAGE}")
                    value = argv[i]
                if opt == "c":
                    config_dir = value
                else:
                    name, eq, val = value.partition("=")
                    if not eq or not name.strip():
                        raise Fatal(f"invalid -o parameter: \"{value}\"")
                    overrides[name.strip()] = val.strip()
                break
            if opt not in _FLAG_OPTIONS:
                raise Fatal(f"invalid option -- '{opt}'; {USAGE}")
            flags.add(opt)
            j += 1
        i += 1
    return flags, config_dir, overrides, argv[i:]


# ---------------------------------------------------------------------------
# main.cf editing

def _split_edit(arg: str) -> tuple[str, str]:
    name, eq, value = arg.partition("=")
    name = name.strip()
    if not eq:
        raise Fatal(f"missing '=' after attribute name: \"{arg}\"")
    if not name:
        raise Fatal(f"missing attribute name: \"{arg}\"")
    return name, value.strip()


def edit_main_cf(path: str, edits: dict[str, str] | None = None,
                 remove: set[str] | None = None, comment: set[str] | None = None) -> None:
    """Rewrite main.cf: set `edits`, delete `remove`, comment out `comment`.

    The lines of an assignment that is changed are replaced where they
    are; comment and blank lines inside or around it stay.  New names are
    appended.  The file is replaced atomically.
    """
    from fulmar.config.maincf import atomic_write, logical_lines, split_assignment
    edits = dict(edits or {})
    remove = remove or set()
    comment = comment or set()
    lines = _read_lines(path)
    out: list[str | None] = list(lines)
    done: set[str] = set()
    for ll in logical_lines(lines, path):
        name, _ = split_assignment(ll.text, f"{path}:{ll.first + 1}")
        if name in edits:
            for k in ll.parts:
                out[k] = None
            out[ll.parts[0]] = f"{name} = {edits[name]}"
            done.add(name)
        elif name in remove:
            for k in ll.parts:
                out[k] = None
        elif name in comment:
            for k in ll.parts:
                out[k] = "#" + lines[k]
    result = [line for line in out if line is not None]
    for name, value in edits.items():
        if name not in done:
            result.append(f"{name} = {value}")
    atomic_write(path, "".join(line + "\n" for line in result))


# ---------------------------------------------------------------------------
# master.cf

def _load_services(config_dir: str):
    from fulmar.config.mastercf import parse_master_cf
    return parse_master_cf(os.path.join(config_dir, "master.cf"))


def _service_text(svc, fold: bool) -> str:
    name, stype, private, unpriv, chroot, wakeup, maxproc, _ = svc.fields
    head = (f"{name:<10} {stype:<5} {private:<7} {unpriv:<7} {chroot:<7} "
            f"{wakeup:<7} {maxproc:<7} ")
    if not fold:
        return head + " ".join(svc.argv)
    parts: list[str] = []
    cur = head + svc.argv[0]
    argv = svc.argv[1:]
    i = 0
    while i < len(argv):
        if argv[i] == "-o" and i + 1 < len(argv):
            parts.append(cur)
            cur = f"    -o {argv[i + 1]}"
            i += 2
            continue
        cur += " " + argv[i]
        i += 1
    parts.append(cur)
    return "\n".join(parts)


def _match(svc, pattern: str) -> bool:
    parts = pattern.split("/")
    if parts[0] and parts[0] != svc.name:
        return False
    return len(parts) < 2 or not parts[1] or parts[1] == svc.type


def _select(services, patterns: list[str], strip: int = 0):
    """Services matching any pattern (all when none); warn on unmatched."""
    if not patterns:
        return [(s, None) for s in services]
    chosen = []
    for pat in patterns:
        head = "/".join(pat.split("/")[:2]) if strip else pat
        rest = pat.split("/")[2] if strip and pat.count("/") >= 2 else None
        hits = [(s, rest) for s in services if _match(s, head)]
        if not hits:
            _warn(f"unmatched request: \"{pat}\"")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def edit_master_cf(path: str, entries: dict[str, str] | None = None,
                   remove: set[str] | None = None, comment: set[str] | None = None) -> None:
    """Replace/add (`entries`: "name/type" → full entry), remove or comment out."""
    from fulmar.config.maincf import atomic_write, logical_lines
    entries = dict(entries or {})
    remove = remove or set()
    comment = comment or set()
    lines = _read_lines(path)
    out: list[str | None] = list(lines)
    done: set[str] = set()
    for ll in logical_lines(lines, path):
        key = "/".join(ll.text.split()[:2])
        if key in entries:
            for k in ll.parts:
                out[k] = None
            out[ll.parts[0]] = entries[key]
            done.add(key)
        elif key in remove:
            for k in ll.parts:
                out[k] = None
        elif key in comment:
            for k in ll.parts:
                out[k] = "#" + lines[k]
    result = [line for line in out if line is not None]
    for key, entry in entries.items():
        if key not in done:
            result.append(entry)
    text = "".join(line + "\n" for line in result)
    from fulmar.config.mastercf import parse_master_cf_text
    parse_master_cf_text(text, path)     # never write a file master would refuse
    atomic_write(path, text)


def _master_entry(arg: str) -> tuple[str, str]:
    key, eq, entry = arg.partition("=")
    key = key.strip()
    if not eq or key.count("/") != 1:
        raise Fatal(f"-Me requires service/type=entry: \"{arg}\"")
    entry = entry.strip()
    fields = entry.split()
    if "/".join(fields[:2]) != key:
        raise Fatal(f"entry does not start with \"{key.replace('/', ' ')}\": \"{entry}\"")
    return key, entry


# ---------------------------------------------------------------------------

def run(argv: list[str]) -> int:
    from fulmar import config
    from fulmar.config.mastercf import FIELD_NAMES

    flags, config_dir, overrides, operands = parse_args(argv)
    config_dir = config_dir or config.default_config_dir()
    main_cf = os.path.join(config_dir, "main.cf")
    master_cf = os.path.join(config_dir, "master.cf")
    out = sys.stdout

    if "m" in flags:
        for t in MAP_TYPES:
            out.write(t + "\n")
        return 0

    if "M" in flags:
        if "e" in flags:
            edit_master_cf(master_cf, entries=dict(_master_entry(a) for a in operands))
        elif "X" in flags:
            edit_master_cf(master_cf, remove=set(operands))
        elif "#" in flags:
            edit_master_cf(master_cf, comment=set(operands))
        else:
            for svc, _ in _select(_load_services(config_dir), operands):
                out.write(_service_text(svc, "f" in flags) + "\n")
        return 0

    if "F" in flags:
        for svc, field in _select(_load_services(config_dir), operands, strip=1):
            for fname, fvalue in zip(FIELD_NAMES, svc.fields[:7] + (" ".join(svc.argv),)):
                if field is None or field == fname:
                    out.write(_line(f"{svc.key}/{fname}", fvalue,
                                    values_only="h" in flags) + "\n")
        return 0

    if "P" in flags:
        if "e" in flags or "X" in flags or "#" in flags:
            raise Fatal("-P with -e, -X or -# is not implemented")
        for svc, pname in _select(_load_services(config_dir), operands, strip=1):
            for name, value in svc.overrides.items():
                if pname is None or pname == name:
                    out.write(_line(f"{svc.key}/{name}", value,
                                    values_only="h" in flags) + "\n")
        return 0

    edit_args = [a for a in operands if "=" in a]
    if "e" in flags or ("X" not in flags and "#" not in flags and operands
                        and len(edit_args) == len(operands)):
        edits = dict(_split_edit(a) for a in operands)
        edit_main_cf(main_cf, edits=edits)
        return 0
    if "X" in flags:
        edit_main_cf(main_cf, remove=set(operands))
        return 0
    if "#" in flags:
        edit_main_cf(main_cf, comment=set(operands))
        return 0

    cfg = config.load(config_dir, overrides)
    for w in cfg.warnings:
        _warn(w)
    if "d" in flags:
        cfg = cfg.defaults_only()
    expand = "x" in flags
    values_only = "h" in flags

    def value_of(name: str) -> str:
        if expand:
            return cfg.expand(cfg.raw(name)) if name not in config.RAW_PARAMS else cfg.raw(name)
        return cfg.raw(name)

    if operands:
        names = []
        for name in operands:
            if cfg.param(name) is None and not cfg.is_set(name):
                _warn(f"{name}: unknown parameter")
            else:
                names.append(name)
    elif "n" in flags:
        names = cfg.set_names()
    else:
        names = cfg.names()
    for name in names:
        if "n" in flags and operands and not cfg.is_set(name):
            continue
        out.write(_line(name, value_of(name), values_only=values_only) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    require_python()
    from fulmar.config import ConfigError
    try:
        status = run(sys.argv[1:] if argv is None else argv)
    except (Fatal, ConfigError) as e:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: fatal: {e}\n")
        return 1
    except BrokenPipeError:
        return 0
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
