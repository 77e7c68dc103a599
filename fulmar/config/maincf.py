"""main.cf syntax: the reader, `$name` expansion, and typed values.

NAME
    fulmar.config.maincf - parse main.cf, expand parameter values, convert types

SYNOPSIS
    from fulmar.config.maincf import (ConfigError, Assignment, parse_main_cf,
        read_main_cf, logical_lines, expand_text, convert, split_list,
        referenced_names)

DESCRIPTION
    Syntax (postconf(5)): a logical line starts with a non-blank character
    and goes on over every following line that starts with white space.
    A line whose first non-blank character is `#`, and a blank line, is
    ignored, and does not end the logical line.  A logical line is
    `name = value` (white space around `=` optional; leading and trailing
    white space of the value dropped; continuation lines joined with one
    space).  The last assignment of a name wins; each Assignment remembers
    its file and line.  A logical line that starts with white space is
    ignored with a warning, as Postfix does.

    Expansion (expand_text), lazy, with the caller's lookup function:
        $name  ${name}  $(name)       value of the parameter (empty if unknown)
        ${name?value}  ${name?{value}}  value if $name is not empty
        ${name:value}  ${name:{value}}  value if $name is empty
        ${name?{value1}:{value2}}       one or the other
        ${{text1} OP {text2} ? {value1} : {value2}}   (Postfix 3.6 forms;
            either branch may be left out).  OP is == or != (text), < <= > >=
            (decimal numbers), or ==level !=level <level <=level >level
            >=level (compatibility levels such as 2 or 3.9, compared part by
            part as numbers).
        $$                            a literal $
    The values inside these forms are expanded in turn.  Loops are caught by
    the lookup (Config keeps the stack) and reported naming the parameters.

    Types (convert): str, int, bool (yes/no), time (N[smhdw], a bare number
    takes the parameter's unit), size (bytes), list (split_list: commas and
    white space separate items; a {...} group is one item, braces kept).

DIAGNOSTICS
    Every problem is a ConfigError whose text is one line, "path:line: what"
    when the place is known, with Postfix's wording:
        missing '=' after attribute name: "text"
        missing attribute name: "text"
        empty macro name: "value"
        bad numerical configuration: name = value
        bad boolean configuration: name = value
        parameter name: bad time value or unit: value
        invalid name parameter value: N < MIN  (or > MAX)
        invalid name parameter value: "value" (for parameters with choices)
    parse_main_cf never raises anything but ConfigError, whatever the input.
"""

from __future__ import annotations

import os
TYPE_CHECKING = False          # typing costs ~3 ms of start-up; annotations only
if TYPE_CHECKING:
    from typing import Callable, Iterator

from fulmar.config.params import TIME_UNITS, Param


class ConfigError(Exception):
    """A configuration problem; str(e) is one line, "path:line: what"."""


class Assignment:
    """`name = value` at path:lineno (the first physical line)."""

    __slots__ = ("name", "value", "path", "lineno")

    def __init__(self, name: str, value: str, path: str, lineno: int) -> None:
        self.name, self.value, self.path, self.lineno = name, value, path, lineno

    def __eq__(self, other: object) -> bool:
        return (type(other) is Assignment and (self.name, self.value, self.path, self.lineno)
                == (other.name, other.value, other.path, other.lineno))

    def __repr__(self) -> str:
        return f"Assignment({self.name!r}, {self.value!r}, {self.path!r}, {self.lineno!r})"

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


class LogicalLine:
    """One logical line: its text and the physical lines it spans.

    `first` and `last` are 0-based indexes into the file's lines; `parts`
    are the indexes of the lines that carry text (not comments or blanks).
    """

    __slots__ = ("text", "first", "last", "parts")

    def __init__(self, text: str, first: int, last: int, parts: tuple[int, ...]) -> None:
        self.text, self.first, self.last, self.parts = text, first, last, parts

    def __eq__(self, other: object) -> bool:
        return (type(other) is LogicalLine and (self.text, self.first, self.last, self.parts)
                == (other.text, other.first, other.last, other.parts))

    def __repr__(self) -> str:
        return f"LogicalLine({self.text!r}, {self.first!r}, {self.last!r}, {self.parts!r})"


def _is_comment_or_blank(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


def logical_lines(lines: list[str], path: str = "main.cf",
                  warnings: list[str] | None = None) -> Iterator[LogicalLine]:
    """Group physical lines (without line ends) into logical lines."""
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if _is_comment_or_blank(line):
            i += 1
            continue
        if line[0].isspace():
            if warnings is not None:
                warnings.append(f"{path}:{i + 1}: logical line must not start "
                                f"with whitespace: \"{line.strip()}\"")
            i += 1
            continue
        first, parts, texts = i, [i], [line.strip()]
        i += 1
        last = first
        while i < n and (not lines[i] or lines[i][0].isspace() or lines[i][0] == "#"):
            if not _is_comment_or_blank(lines[i]):
                parts.append(i)
                texts.append(lines[i].strip())
                last = i
            i += 1
        yield LogicalLine(" ".join(texts), first, last, tuple(parts))


# The characters of a parameter name in $name, Postfix's [A-Za-z0-9_].
# This module scans by hand, without re: every command reads main.cf,
# and importing re costs sendmail ~7 ms a message (docs/performance.md,
# item 51); only the rare ${{a} op {b}...} form imports it.
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _name_end(text: str, pos: int) -> int:
    """The end of the run of name characters that starts at text[pos]."""
    n = len(text)
    while pos < n and text[pos] in _NAME_CHARS:
        pos += 1
    return pos


def split_assignment(text: str, where: str) -> tuple[str, str]:
    """`name = value` → (name, value); ConfigError on bad syntax."""
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq:
        raise ConfigError(f"{where}: missing '=' after attribute name: \"{text}\"")
    if not name:
        raise ConfigError(f"{where}: missing attribute name: \"{text}\"")
    if any(c.isspace() for c in name):
        raise ConfigError(f"{where}: bad parameter name: \"{name}\"")
    return name, value.strip()


def parse_main_cf(text: str, path: str = "main.cf",
                  warnings: list[str] | None = None) -> list[Assignment]:
    """All assignments of a main.cf text, in file order (duplicates kept)."""
    out: list[Assignment] = []
    for ll in logical_lines(text.splitlines(), path, warnings):
        where = f"{path}:{ll.first + 1}"
        name, value = split_assignment(ll.text, where)
        out.append(Assignment(name, value, path, ll.first + 1))
    return out


def read_main_cf(path: str, warnings: list[str] | None = None) -> list[Assignment]:
    """parse_main_cf on a file; a missing file has no assignments."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigError(f"open {path}: {e.strerror}") from None
    return parse_main_cf(data.decode("utf-8", "surrogateescape"), path, warnings)


# ---------------------------------------------------------------------------
# Expansion

def referenced_names(text: str) -> set[str]:
    """Names that `text` references as $name, ${name...} or $(name...)."""
    names = set()
    j = text.find("$")
    while j >= 0:
        start = j + 2 if text[j + 1:j + 2] in ("{", "(") else j + 1
        end = _name_end(text, start)
        if end > start:
            names.add(text[start:end])
        j = text.find("$", j + 1)
    return names


def _match_close(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at text[start], or -1."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i
    return -1


def _group(text: str, pos: int, value: str) -> tuple[str, int]:
    """Parse `{...}` at text[pos] (after white space); return (inside, end)."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text) or text[pos] != "{":
        raise ConfigError(f"bad macro syntax: \"{value}\"")
    end = _match_close(text, pos, "{", "}")
    if end < 0:
        raise ConfigError(f"unbalanced {{ in macro: \"{value}\"")
    return text[pos + 1:end], end + 1


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


_OP_PATTERN = r"\s*(==|!=|<=|>=|<|>)(level)?\s*"


def _level(text: str, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.strip().split("."))
    except ValueError:
        raise ConfigError(f"bad compatibility level: \"{text.strip()}\" in \"{value}\"") from None


def _number(text: str, value: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"bad numerical value: \"{text.strip()}\" in \"{value}\"") from None


def _compare(a: str, op: str, level: bool, b: str, value: str) -> bool:
    x: object
    y: object
    if level:
        x, y = _level(a, value), _level(b, value)
    elif op in ("==", "!="):
        x, y = a, b
    else:
        x, y = _number(a, value), _number(b, value)
    return {"==": x == y, "!=": x != y, "<": x < y, "<=": x <= y,   # type: ignore[operator]
            ">": x > y, ">=": x >= y}[op]                           # type: ignore[operator]


def _branches(rest: str, pos: int, value: str) -> tuple[str | None, str | None]:
    """Parse `? {a} : {b}` / `? {a}` / `: {b}` from rest[pos:]."""
    yes = no = None
    pos = _skip_ws(rest, pos)
    if pos < len(rest) and rest[pos] == "?":
        yes, pos = _group(rest, pos + 1, value)
        pos = _skip_ws(rest, pos)
    if pos < len(rest) and rest[pos] == ":":
        no, pos = _group(rest, pos + 1, value)
        pos = _skip_ws(rest, pos)
    if pos != len(rest) or (yes is None and no is None):
        raise ConfigError(f"bad macro syntax: \"{value}\"")
    return yes, no


def expand_text(text: str, lookup: Callable[[str], str], value: str | None = None) -> str:
    """Expand `text`; lookup(name) returns the expanded value of a parameter."""
    if "$" not in text:
        return text
    whole = text if value is None else value
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        c = text[j + 1] if j + 1 < n else ""
        if c == "$":
            out.append("$")
            i = j + 2
        elif c in ("{", "("):
            close = _match_close(text, j + 1, c, "}" if c == "{" else ")")
            if close < 0:
                raise ConfigError(f"unbalanced {c} in macro: \"{whole}\"")
            out.append(_expand_inner(text[j + 2:close], lookup, whole))
            i = close + 1
        else:
            end = _name_end(text, j + 1)
            if end == j + 1:
                raise ConfigError(f"empty macro name: \"{whole}\"")
            out.append(lookup(text[j + 1:end]))
            i = end
    return "".join(out)


def _expand_inner(inner: str, lookup: Callable[[str], str], whole: str) -> str:
    """The inside of ${...} or $(...)."""
    start = _skip_ws(inner, 0)
    if start < len(inner) and inner[start] == "{":
        # ${{text1} OP {text2} ? {value1} : {value2}}
        a, pos = _group(inner, start, whole)
        import re
        m = re.compile(_OP_PATTERN).match(inner, pos)
        if not m:
            raise ConfigError(f"bad macro syntax: \"{whole}\"")
        b, pos = _group(inner, m.end(), whole)
        yes, no = _branches(inner, pos, whole)
        left, right = expand_text(a, lookup, whole), expand_text(b, lookup, whole)
        chosen = yes if _compare(left, m.group(1), bool(m.group(2)), right, whole) else no
        return "" if chosen is None else expand_text(chosen, lookup, whole)
    end = _name_end(inner, 0)
    if end == 0:
        raise ConfigError(f"empty macro name: \"{whole}\"")
    name, rest = inner[:end], inner[end:]
    if not rest:
        return lookup(name)
    op = rest[0]
    if op not in "?:":
        raise ConfigError(f"bad macro syntax: \"{whole}\"")
    body = rest[1:]
    if body.lstrip().startswith("{"):
        yes, no = _branches(rest, 0, whole)
    elif op == "?":
        yes, no = body, None
    else:
        yes, no = None, body
    chosen = yes if lookup(name) else no
    return "" if chosen is None else expand_text(chosen, lookup, whole)


# ---------------------------------------------------------------------------
# Types

def split_list(text: str) -> list[str]:
    """Split on commas and white space; `{...}` stays one item (braces kept)."""
    items: list[str] = []
    cur: list[str] = []
    depth = 0
    for c in text:
        if c == "{":
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        elif depth == 0 and (c == "," or c.isspace()):
            if cur:
                items.append("".join(cur))
                cur = []
            continue
        cur.append(c)
    if cur:
        items.append("".join(cur))
    return items


def _is_int(text: str) -> bool:
    """[+-]?[0-9]+"""
    digits = text[1:] if text[:1] in ("+", "-") else text
    return digits.isascii() and digits.isdigit()


def _split_time(text: str) -> tuple[str, str] | None:
    """([0-9]+)([A-Za-z]?): (digits, unit letter or ""), else None."""
    unit = text[-1:]
    if unit.isascii() and unit.isalpha():
        text = text[:-1]
    else:
        unit = ""
    return (text, unit) if text.isascii() and text.isdigit() else None


def _bounds(p: Param, n: int, where: str) -> int:
    if p.min is not None and n < p.min:
        raise ConfigError(f"{where}invalid {p.name} parameter value: {n} < {p.min}")
    if p.max is not None and n > p.max:
        raise ConfigError(f"{where}invalid {p.name} parameter value: {n} > {p.max}")
    return n


def convert(p: Param, value: str, where: str = "") -> object:
    """The typed value of parameter `p` from its expanded text.

    `where` ("path:line") prefixes error messages.
    """
    loc = f"{where}: " if where else ""
    kind = p.kind
    if kind == "str":
        if p.choices is not None and value.strip().lower() not in p.choices:
            raise ConfigError(f"{loc}invalid {p.name} parameter value: \"{value}\"")
        return value
    if kind == "list":
        return split_list(value)
    text = value.strip()
    if kind in ("int", "size"):
        if not _is_int(text):
            raise ConfigError(f"{loc}bad numerical configuration: {p.name} = {value}")
        return _bounds(p, int(text), loc)
    if kind == "bool":
        low = text.lower()
        if low == "yes":
            return True
        if low == "no":
            return False
        raise ConfigError(f"{loc}bad boolean configuration: {p.name} = {value}")
    if kind == "time":
        parts = _split_time(text)
        unit = (parts[1] or p.unit).lower() if parts else ""
        if not parts or unit not in TIME_UNITS:
            raise ConfigError(f"{loc}parameter {p.name}: bad time value or unit: {value}")
        return _bounds(p, int(parts[0]) * TIME_UNITS[unit], loc)
    raise ConfigError(f"{loc}{p.name}: unknown parameter type {kind}")


def atomic_write(path: str, text: str) -> None:
    """Replace `path` with `text`: temporary file, fsync, rename, dir fsync."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"write {path}: {e.strerror}") from None
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
