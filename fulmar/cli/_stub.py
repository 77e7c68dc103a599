"""Placeholder main() for commands whose issue has not landed yet.

stub_main(cmd) checks the Python version, prints
    <cmd>: fatal: not implemented yet
to stderr and returns 69 (EX_UNAVAILABLE from sysexits.h), which the
console script passes to sys.exit().
"""

from __future__ import annotations

import sys

from fulmar.version import require_python

EX_UNAVAILABLE = 69


def stub_main(cmd: str) -> int:
    require_python()
    sys.stderr.write(f"{cmd}: fatal: not implemented yet\n")
    return EX_UNAVAILABLE
