"""regexp: and pcre: tables (basic): "/pattern/flags result" and "!/pattern/ result".

Patterns are Python regular expressions (close to PCRE).  As in Postfix the
match is case-insensitive unless the "i" flag toggles it; "x" is verbose,
"m" multi-line.  "$1".."$9" and "${1}" in the result are replaced by the
groups.  XXX if/endif blocks are not supported yet; a table with them is
unavailable (RETRY), never silently wrong.
"""

from __future__ import annotations

import re

from fulmar.tables import FOUND, NOT_FOUND, BaseTable, Result

_SUBST_RE = re.compile(r"\$(\d|\{\d+\}|\$)")


def _parse_rule(line: str) -> tuple[re.Pattern[str], bool, str]:
    negate = line.startswith("!")
    if negate:
        line = line[1:]
    if not line or line[0] in " \t":
        raise ValueError("no pattern")
    delim = line[0]
    i = 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == delim:
            break
        i += 1
    else:
        raise ValueError("missing closing delimiter")
    pattern = line[1:i]
    rest = line[i + 1:]
    flags_end = 0
    while flags_end < len(rest) and rest[flags_end] not in " \t":
        flags_end += 1
    flags_txt, result = rest[:flags_end], rest[flags_end:].strip()
    flags = re.IGNORECASE
    for f in flags_txt:
        if f == "i":
            flags ^= re.IGNORECASE
        elif f == "x":
            flags |= re.VERBOSE
        elif f == "m":
            flags |= re.MULTILINE
        else:
            raise ValueError(f"unknown flag {f!r}")
    if not result and not negate:
        raise ValueError("no lookup result")
    return re.compile(pattern, flags), negate, result


class RegexpTable(BaseTable):
    def __init__(self, name: str, rules: list[tuple[re.Pattern[str], bool, str]]):
        self.name = name
        self.rules = rules

    @classmethod
    def from_file(cls, spec: str, path: str) -> RegexpTable:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return cls.from_text(spec, f.read())

    @classmethod
    def from_text(cls, spec: str, text: str) -> RegexpTable:
        rules = []
        lines = text.splitlines()
        entries: list[tuple[int, str]] = []
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            if raw[0] in " \t" and entries:
                entries[-1] = (entries[-1][0], entries[-1][1] + " " + raw.strip())
            else:
                entries.append((lineno, raw.strip()))
        for lineno, line in entries:
            if line.lower().startswith(("if ", "if\t", "endif")) or line.lower() == "if":
                raise ValueError(f"{spec}, line {lineno}: if/endif not supported yet")
            try:
                rules.append(_parse_rule(line))
            except (ValueError, re.error) as e:
                raise ValueError(f"{spec}, line {lineno}: {e}") from None
        return cls(spec, rules)

    def lookup(self, key: str) -> Result:
        for rx, negate, result in self.rules:
            m = rx.search(key)
            if negate:
                if m is None:
                    return Result(FOUND, result)
                continue
            if m is not None:
                return Result(FOUND, _substitute(result, m))
        return NOT_FOUND


def _substitute(result: str, m: re.Match[str]) -> str:
    def rep(sm: re.Match[str]) -> str:
        tok = sm.group(1)
        if tok == "$":
            return "$"
        idx = int(tok.strip("{}"))
        try:
            return m.group(idx) or ""
        except IndexError:
            return ""
    return _SUBST_RE.sub(rep, result)
