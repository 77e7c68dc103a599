"""Fulmar's name and version, and the Python version check.

MAIL_NAME is "Postfix" on purpose: `$mail_name` appears in `smtpd_banner`
(`$myhostname ESMTP $mail_name`) and in log tags, and tools that talk to or
read from a Postfix host expect that word.  MAIL_VERSION says what we are.

require_python() is the first thing every entry point calls.  On Python
older than 3.12 it prints one line,
    fatal: Fulmar requires Python 3.12 or newer (this is X.Y)
to stderr and exits 1.  (Python 3.11's standard library has a module named
`smtpd` that would shadow our package.)  This file must stay parseable by
old interpreters, so it uses no syntax newer than Python 3.0.
"""

import sys

MAIL_NAME = "Postfix"
MAIL_VERSION = "3.9.0-fulmar0.1"
FULMAR_VERSION = "0.1.0"

REQUIRED_PYTHON = (3, 12)


def require_python(version_info=None):
    """Exit 1 with a one-line message when Python is too old."""
    if version_info is None:
        version_info = sys.version_info
    if tuple(version_info[:2]) < REQUIRED_PYTHON:
        sys.stderr.write(
            "fatal: Fulmar requires Python %d.%d or newer (this is %d.%d)\n"
            % (REQUIRED_PYTHON[0], REQUIRED_PYTHON[1],
               version_info[0], version_info[1]))
        sys.exit(1)
