"""Plain text tables: texthash: (and hash:-like types read from source), inline:, static:.

The source format is Postfix's postmap(1) input: "key<white space>value",
comment lines start with "#", a line starting with white space continues
the previous line, keys are case-folded.  hash:/btree:/lmdb:/cdb: read the
source file (name without a ".db"/".lmdb"/".cdb" suffix).  XXX issue 5:
indexed formats.
"""

from __future__ import annotations

from fulmar.tables import FOUND, NOT_FOUND, BaseTable, Result


def parse_source(text: str, origin: str = "") -> dict[str, str]:
    """Parse postmap source text; later duplicates are ignored (postmap warns)."""
    entries: dict[str, str] = {}
    logical: list[str] = []
    lines = text.splitlines()

    def flush() -> None:
        if not logical:
            return
        line = " ".join(logical).strip()
        logical.clear()
        parts = line.replace("\t", " ").split(None, 1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        entries.setdefault(key.lower(), value)

    for raw in lines:
        if raw.lstrip().startswith("#") or not raw.strip():
            if not raw.strip():
                flush()
            continue
        if raw[0] in " \t" and logical:
            logical.append(raw.strip())
            continue
        flush()
        logical.append(raw.strip())
    flush()
    return entries


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
    def from_file(cls, spec: str, path: str, strip_db: bool = False) -> TextTable:
        if strip_db:
            for suffix in (".db", ".lmdb", ".cdb"):
                if path.endswith(suffix):
                    path = path[: -len(suffix)]
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


class StaticTable(BaseTable):
    def __init__(self, spec: str, value: str):
        self.name = spec
        value = value.strip()
        if value.startswith("{") and value.endswith("}"):
            value = value[1:-1].strip()
        self.value = value

    def lookup(self, key: str) -> Result:
        return Result(FOUND, self.value)
