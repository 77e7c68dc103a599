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

    sendmail, which runs once per message, is also started with `-I -S`
    (ISOLATED): the interpreter then skips site, whose search for
    sitecustomize and usercustomize and reading of the venv's .pth files
    cost ~1.3 ms of a 20 ms call here (docs/performance.md, item 53), and
    ignores PYTHON* variables, which a command that local users run has
    no business reading.  The paths site would have added (site-packages,
    and the source tree of an editable install) are written into the
    script, in site's order, after `import sys`: as they were when `make
    install` ran, which rewrites the script again each time.  The #! line
    gets ` -IS` (one argument: Linux passes the rest of the line as one),
    pip's /bin/sh trampoline gets it after the interpreter's path; a #!
    line that already has an argument is left as it is.

EXIT STATUS
    0, also when BINDIR holds none of the scripts; 1 with a one-line
    message when a script cannot be rewritten.
"""

from __future__ import annotations

import os
import subprocess
import sys

MARK = "# fulmar.cli.launchers: pip's `import re` removed (start-up time).\n"
ISOLATED_MARK = "# fulmar.cli.launchers: started with -I -S; site's paths:\n"
# The commands started with -I -S.
ISOLATED = frozenset({"sendmail"})


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


def site_paths(python: str) -> list[str]:
    """What site adds to python's sys.path, in its order."""
    import json
    code = "import sys, json; print(json.dumps(sys.path))"
    full = json.loads(subprocess.check_output([python, "-I", "-c", code]))
    bare = json.loads(subprocess.check_output([python, "-I", "-S", "-c", code]))
    return [p for p in full if p not in bare]


_TRAMPOLINE = "'''exec' \""      # pip's /bin/sh trampoline's second line
_TRAMPOLINE_END = '" "$0" "$@"'


def interpreter(text: str) -> str | None:
    """The interpreter of a pip script: its #! line's, or the one pip's
    /bin/sh trampoline execs; None if the #! line has arguments."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#!"):
        return None
    if lines[0] == "#!/bin/sh":
        if len(lines) > 1 and lines[1].startswith(_TRAMPOLINE) and lines[1].endswith(_TRAMPOLINE_END):
            return lines[1][len(_TRAMPOLINE):-len(_TRAMPOLINE_END)]
        return None
    first = lines[0][2:].strip()
    return None if " " in first else first


def isolated(text: str, paths: list[str]) -> str | None:
    """A script without re (without_re's) started with -I -S, site's paths
    after `import sys`; None if its interpreter line cannot take the flag."""
    lines = text.splitlines(keepends=True)
    if ISOLATED_MARK in lines:
        return text
    python = interpreter(text)
    if MARK not in lines or python is None or "import sys\n" not in lines:
        return None
    if lines[0] == "#!/bin/sh\n":
        lines[1] = lines[1][:-len(_TRAMPOLINE_END) - 1] + '" -IS "$0" "$@"\n'
    else:
        lines[0] = f"#!{python} -IS\n"
    at = lines.index("import sys\n") + 1
    lines[at:at] = [ISOLATED_MARK, f"sys.path += {paths!r}\n"]
    return "".join(lines)


def rewrite(path: str, module: str, func: str, isolate: bool = False) -> bool:
    """Rewrite pip's script at path (and start it with -I -S if isolate);
    False if it is not one (left alone)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = without_re(text, module, func)
    if new is None:
        return False
    if isolate:
        python = interpreter(new)
        if python is not None:
            new = isolated(new, site_paths(python)) or new
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
            rewrite(path, module, func, isolate=name in ISOLATED)
        except (OSError, ValueError, subprocess.CalledProcessError) as e:
            sys.stderr.write(f"launchers: {path}: {getattr(e, 'strerror', None) or e}\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
