"""mailq -- list the mail queue: the same as `sendmail -bp` (postqueue -p)."""

import sys

from fulmar.version import require_python


def main(argv: list[str] | None = None) -> int:
    require_python()
    from fulmar.cli import _common as C
    from fulmar.cli import sendmail
    return C.run_main(sendmail.run, argv, prog_mode="p")


if __name__ == "__main__":
    sys.exit(main())
