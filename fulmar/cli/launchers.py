"""launchers -- Fulmar's command scripts, without pip's `import re`.

SYNOPSIS
    python -m fulmar.cli.launchers BINDIR      (run by `make install`)

DESCRIPTION
    pip writes each console script of pyproject.toml's [project.scripts]
    as

        import re
        import sys
        from fulmar.cli.sendmail import entry
        if __name__ == '__main__':
            sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
            sys.exit(entry())

    The re.sub() strips Windows suffixes; importing re costs ~7 ms on this
    kind of machine, and sendmail runs once per message (cron, PHP's
    mail(), scripts): with Fulmar's own modules free of re on that path,
    the wrapper's import was a quarter of a submission's time
    (docs/performance.md, item 51).  This rewrites every such script of
    the fulmar distribution found in BINDIR without those two lines (and
    with a comment saying so): the same interpreter line (or pip's /bin/sh
    trampoline, for a long path), entry point and exit status.  A script
    that is not pip's (no `from MODULE import FUNC` line for its entry
    point, or other uses of re) is left alone.  Running it again changes
    nothing.

EXIT STATUS
    0, also when BINDIR holds none of the scripts; 1 with a one-line
    message when a script cannot be rewritten.
"""

from __future__ import annotations

import os
import sys

MARK = "# fulmar.cli.launchers: pip's `import re` removed (start-up time).\n"


def fulmar_scripts() -> dict[str, tuple[str, str]]:
    """name -> (module, function) of the fulmar distribution's console scripts."""
    from importlib import metadata
    out = {}
    for ep in metadata.distribution("fulmar").entry_points:
        if ep.group == "console_scripts":
            module, _, func = ep.value.partition(":")
            out[ep.name] = (module.strip(), func.strip())
    return out


def without_re(text: str, module: str, func: str) -> str | None:
    """pip's script text without its two lines of re, or None if it is not
    pip's script for module:func.  Every other line stays, so the
    interpreter line works as pip wrote it (also its /bin/sh trampoline
    for a long interpreter path)."""
    lines = text.splitlines(keepends=True)
    if f"from {module} import {func}\n" not in lines:
        return None
    if MARK in lines:
        return text
    out = []
    dropped = 0
    for line in lines:
        if line == "import re\n" or line.lstrip().startswith("sys.argv[0] = re.sub("):
            dropped += 1
            continue
        if line == "import sys\n":
            out.append(MARK)
        out.append(line)
    body = "".join(out[out.index(MARK) + 1:]) if MARK in out else ""
    if dropped != 2 or not body or "re." in body:
        return None
    return "".join(out)


def rewrite(path: str, module: str, func: str) -> bool:
    """Rewrite pip's script at path; False if it is not one (left alone)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = without_re(text, module, func)
    if new is None:
        return False
    if new != text:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m fulmar.cli.launchers BINDIR\n")
        return 1
    bindir = args[0]
    for name, (module, func) in sorted(fulmar_scripts().items()):
        path = os.path.join(bindir, name)
        if not os.path.isfile(path):
            continue
        try:
            rewrite(path, module, func)
        except OSError as e:
            sys.stderr.write(f"launchers: {path}: {e.strerror or e}\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
