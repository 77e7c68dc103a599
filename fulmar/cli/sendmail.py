"""sendmail: not implemented yet (prints a one-line fatal error, exits 69)."""

import sys

from fulmar.version import require_python


def main() -> int:
    require_python()
    from fulmar.cli._stub import stub_main
    return stub_main("sendmail")


if __name__ == "__main__":
    sys.exit(main())
