"""Build and install the setgid postdrop helper.

NAME
    fulmar.postdrop.build -- compile postdrop.c with the system C compiler

SYNOPSIS
    python -m fulmar.postdrop.build [--cc CC] [--install BINDIR] [--group GROUP]

DESCRIPTION
    Compiles fulmar/postdrop/postdrop.c (`$CC -O2 -Wall`, CC defaulting to
    `cc`) to BINDIR/postdrop (default: the scripts directory of this Python,
    next to `sendmail`, where sendmail looks for it). As root the binary
    becomes root:GROUP mode 2755 (GROUP: setgid_group's default, postdrop),
    so that unprivileged users can submit mail (docs/local-submission.md);
    as an ordinary user it is left unprivileged, which a one-user
    development setup does not need anyway (sendmail writes maildrop/
    itself there).

    Exit 0 on success; 1 with a one-line message when the compiler is
    missing or fails or the group does not exist.
"""

from __future__ import annotations

import argparse
import grp
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from fulmar.config.params import PARAMS

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "postdrop.c")
MODE_SETGID = 0o2755
MODE_PLAIN = 0o755


def build(bindir: str, cc: str = "cc", group: str | None = None) -> str:
    """Compile and install; the installed path. RuntimeError on failure."""
    os.makedirs(bindir, exist_ok=True)
    target = os.path.join(bindir, "postdrop")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "postdrop")
        try:
            subprocess.run([cc, "-O2", "-Wall", "-o", out, SOURCE], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError("cannot compile %s: %s" % (SOURCE, exc)) from None
        partial = target + ".new"
        shutil.copyfile(out, partial)
        if os.geteuid() == 0:
            name = group or PARAMS["setgid_group"].default
            try:
                gid = grp.getgrnam(name).gr_gid
            except KeyError:
                os.unlink(partial)
                raise RuntimeError("unknown group %s (setgid_group)" % name) from None
            os.chown(partial, 0, gid)
            os.chmod(partial, MODE_SETGID)   # after chown: chown clears set-gid
        else:
            os.chmod(partial, MODE_PLAIN)
        os.replace(partial, target)
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="fulmar.postdrop.build")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--install", default=sysconfig.get_path("scripts"))
    ap.add_argument("--group", default=None)
    args = ap.parse_args(argv)
    try:
        print(build(args.install, args.cc, args.group))
    except RuntimeError as exc:
        sys.stderr.write("postdrop build: %s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
