"""postalias -- build and query alias databases (postalias(1)).

SYNOPSIS
    postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key]
              [file_type:]file_name ...

DESCRIPTION
    fulmar.cli.postmap with aliases(5) source syntax ("name: value, ...",
    continuation lines, quoted names) and the "@" → "@" entry.  The same
    options and exit statuses as postmap.  `newaliases` / `sendmail -bi`
    call main(["postalias", *alias_database]).
"""

import sys

from fulmar.version import require_python


def main(argv: list[str] | None = None) -> int:
    require_python()
    from fulmar.cli.postmap import run
    return run(list(sys.argv if argv is None else argv), aliases=True)


if __name__ == "__main__":
    sys.exit(main())
