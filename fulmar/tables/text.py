"""Plain text tables: texthash:, inline:, static:, and the postmap/postalias source parsers.

The source format is Postfix's postmap(1) input: "key<white space>value",
comment lines start with "#", a line starting with white space continues
the previous line, keys are case-folded.  postalias(1) input is aliases(5):
"name: value, value", where the key ends at the first ":" (a quoted name
may contain one).  iter_source()/iter_aliases() yield (lineno, key, value)
for postmap, which reports duplicates; parse_source() keeps the first.
"""

from __future__ import annotations

from fulmar.tables import FOUND, NOT_FOUND, BaseTable, Result


def logical_lines(text: str):
    """(first line number, joined text) of each logical line (continuations joined)."""
    logical: list[str] = []
    start = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped:
            if logical:
                yield start, " ".join(logical)
                logical = []
            continue
        if raw.lstrip().startswith("#"):
            continue
        if raw[0] in " \t" and logical:
            logical.append(stripped)
            continue
        if logical:
            yield start, " ".join(logical)
        logical, start = [stripped], lineno
    if logical:
        yield start, " ".join(logical)


def iter_source(text: str, fold: bool = True):
    """postmap input → (lineno, key, value); a key without value has value ""."""
    for lineno, line in logical_lines(text):
        parts = line.split(None, 1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        yield lineno, key.lower() if fold else key, value


def iter_aliases(text: str, fold: bool = True):
    """aliases(5) input → (lineno, name, value); value "" means the ":" was missing."""
    for lineno, line in logical_lines(text):
        if line.startswith('"'):
            end = line.find('"', 1)
            colon = line.find(":", end + 1) if end > 0 else -1
        else:
            colon = line.find(":")
        if colon <= 0:
            yield lineno, None, line
            continue
        key = line[:colon].strip()
        if len(key) > 1 and key.startswith('"') and key.endswith('"'):
            key = key[1:-1]
        yield lineno, key.lower() if fold else key, line[colon + 1:].strip()


def parse_source(text: str, origin: str = "") -> dict[str, str]:
    """Parse postmap source text; later duplicates are ignored (postmap warns)."""
    entries: dict[str, str] = {}
    for _lineno, key, value in iter_source(text):
        entries.setdefault(key, value)
    return entries


def split_braced(body: str) -> list[str]:
    """Split "a, {b c}, d:{x, y}" on commas/white space outside braces."""
    out, cur, depth = [], [], 0
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        if depth == 0 and ch in ", \t\n":
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def parse_inline(body: str) -> dict[str, str]:
    """Parse the inside of inline:{...}: "k=v, { k = v with, commas }"."""
    items: list[str] = []
    i, n = 0, len(body)
    while i < n:
        while i < n and body[i] in " \t,":
            i += 1
        if i >= n:
            break
        if body[i] == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                depth += {"{": 1, "}": -1}.get(body[j], 0)
                j += 1
            if depth:
                raise ValueError("unbalanced '{' in inline table")
            items.append(body[i + 1:j - 1].strip())
            i = j
        else:
            j = i
            while j < n and body[j] not in ", \t":
                j += 1
            items.append(body[i:j])
            i = j
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"inline table: need name=value instead of \"{item}\"")
        out.setdefault(key.strip().lower(), value.strip())
    return out


class TextTable(BaseTable):
    def __init__(self, name: str, entries: dict[str, str]):
        self.name = name
        self.entries = entries

    @classmethod
    def from_file(cls, spec: str, path: str) -> TextTable:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return cls(spec, parse_source(f.read(), path))

    @classmethod
    def from_inline(cls, spec: str, name: str) -> TextTable:
        name = name.strip()
        if not (name.startswith("{") and name.endswith("}")):
            raise ValueError(f"{spec}: need inline:{{name=value...}}")
        return cls(spec, parse_inline(name[1:-1]))

    def lookup(self, key: str) -> Result:
        value = self.entries.get(key.lower())
        return NOT_FOUND if value is None else Result(FOUND, value)

    def items(self):
        return list(self.entries.items())


class StaticTable(BaseTable):
    def __init__(self, spec: str, value: str):
        self.name = spec
        value = value.strip()
        if value.startswith("{") and value.endswith("}"):
            value = value[1:-1].strip()
        self.value = value

    def lookup(self, key: str) -> Result:
        return Result(FOUND, self.value)
