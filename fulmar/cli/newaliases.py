"""newaliases -- rebuild the alias database: the same as `sendmail -bi`.

Builds every table of $alias_database with postalias(1)
(fulmar.cli.postalias), as Postfix's sendmail -bi does; its exit status.
"""

import sys

from fulmar.version import require_python


def main(argv: list[str] | None = None) -> int:
    require_python()
    from fulmar.cli import _common as C
    from fulmar.cli import sendmail
    return C.run_main(sendmail.run, argv, prog_mode="i")


if __name__ == "__main__":
    sys.exit(main())
