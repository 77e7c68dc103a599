"""regexp: and pcre: tables: "/pattern/flags result", "!/pattern/ result", if/endif.

Patterns are Python regular expressions (close to PCRE; POSIX regexp
tables use the same engine).  As in Postfix the match is
case-insensitive unless the "i" flag toggles it; "x" is verbose, "m"
multi-line, "s" dot-all (pcre).  Any delimiter character works
("/", "#", ...).  "$1".."$9" and "${1}" in the result are replaced by the
groups, "$$" by "$".

    if /pattern/flags        the rules up to the matching endif apply only
    ...                      when the key matches (if !/pattern/: when it
    endif                    does not); blocks nest.

A file with a bad pattern, an unknown flag, or unbalanced if/endif is
unavailable (every lookup RETRY), never silently wrong.
"""

from __future__ import annotations

import re

from fulmar.tables import FOUND, NOT_FOUND, BaseTable, Result

_SUBST_RE = re.compile(r"\$(\d|\{\d+\}|\$)")


def _parse_rule(line: str, need_result: bool = True) -> tuple[re.Pattern[str], bool, str]:
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
        elif f == "s":
            flags |= re.DOTALL
        elif f in "AEUX":        # pcre flags without a Python equivalent that matters here
            pass
        else:
            raise ValueError(f"unknown flag {f!r}")
    if need_result and not result and not negate:
        raise ValueError("no lookup result")
    if not need_result and result:
        raise ValueError("text after if pattern")
    return re.compile(pattern, flags), negate, result


class RegexpTable(BaseTable):
    fixed_string = False

    def __init__(self, name: str, rules: list[tuple[re.Pattern[str], bool, str | int]]):
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
        opened: list[int] = []           # indexes of open "if" rules
        for lineno, line in entries:
            low = line.lower()
            try:
                if low == "endif":
                    if not opened:
                        raise ValueError("ignoring ENDIF without matching IF")
                    start = opened.pop()
                    rx, negate, _ = rules[start]
                    rules[start] = (rx, negate, len(rules))   # where to skip to
                    continue
                if low.startswith(("if ", "if\t", "if/", "if!")) or low == "if":
                    rules.append(_parse_rule(line[2:].strip(), need_result=False))
                    opened.append(len(rules) - 1)
                    continue
                rules.append(_parse_rule(line))
            except (ValueError, re.error) as e:
                raise ValueError(f"{spec}, line {lineno}: {e}") from None
        if opened:
            raise ValueError(f"{spec}: IF has no matching ENDIF")
        return cls(spec, rules)

    def lookup(self, key: str) -> Result:
        rules = self.rules
        i, n = 0, len(rules)
        while i < n:
            rx, negate, result = rules[i]
            m = rx.search(key)
            if isinstance(result, int):       # if: enter the block or skip it
                i = i + 1 if (m is None) == negate else result
                continue
            i += 1
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
