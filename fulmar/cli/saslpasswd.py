"""fulmar-passwd: manage the built-in SMTP AUTH password file.

NAME
    fulmar-passwd - add, change, delete and list SMTP AUTH users

SYNOPSIS
    fulmar-passwd [-c config_dir] [-f file] user          # set (password on stdin or asked twice)
    fulmar-passwd [-c config_dir] [-f file] -d user       # delete
    fulmar-passwd [-c config_dir] [-f file] -l            # list user names

DESCRIPTION
    The file is the one smtpd uses when smtpd_sasl_type is "cyrus" (the
    default) or "fulmar": $smtpd_sasl_path when it is absolute, else
    $config_directory/sasl/$smtpd_sasl_path.passwd (-f names another).
    Lines are "user:hash" with an scrypt hash (see smtpd.sasl); no
    password is ever stored or printed in clear.  When standard input is
    not a terminal, its first line is the password; otherwise it is asked
    for twice.  The file is replaced atomically; a new file is made mode
    0640 (readable by the group, which should be mail_owner's, as smtpd
    reads it after dropping privileges), an existing one keeps its owner,
    group and mode.

DIAGNOSTICS
    "fulmar-passwd: fatal: ..." and exit status 64 (usage), 66 (no such
    file or user), 65 (bad password input) or 73 (cannot write).
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile

from fulmar.cli._common import EX_CANTCREAT, EX_DATAERR, EX_NOINPUT, EX_USAGE, fatal, getopt, load_config

PROG = "fulmar-passwd"
USAGE = f"usage: {PROG} [-c config_dir] [-f file] [-d user | -l | user]"
NEW_FILE_MODE = 0o640


def _read_password() -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        pw = line.rstrip("\r\n")
    else:
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Retype password: ") != pw:
            fatal(PROG, EX_DATAERR, "passwords do not match")
    if not pw:
        fatal(PROG, EX_DATAERR, "empty password")
    return pw


def _write(path: str, lines: list[str]) -> None:
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=".passwd.", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        else:
            os.chmod(tmp, NEW_FILE_MODE)
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts, args = getopt(argv, "c:f:dl")
    config_dir = path = None
    delete = listing = False
    for flag, value in opts:
        if flag == "-c":
            config_dir = value
        elif flag == "-f":
            path = value
        elif flag == "-d":
            delete = True
        elif flag == "-l":
            listing = True
    if listing != (not args) or len(args) > 1 or (listing and delete):
        fatal(PROG, EX_USAGE, USAGE)
    from smtpd import sasl
    if path is None:
        path = sasl.password_file_path(load_config(PROG, config_dir))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        if listing or delete:
            fatal(PROG, EX_NOINPUT, f"open {path}: No such file or directory")
        lines = []
    except OSError as e:
        fatal(PROG, EX_NOINPUT, f"open {path}: {e.strerror}")
    if listing:
        for user in sasl.parse_password_file("\n".join(lines)):
            print(user)
        return 0
    user = args[0]
    if not user or ":" in user or any(c.isspace() for c in user):
        fatal(PROG, EX_USAGE, f"bad user name: {user!r}")

    def is_user(line: str) -> bool:
        s = line.strip()
        return not s.startswith("#") and s.partition(":")[0] == user
    found = any(is_user(line) for line in lines)
    if delete:
        if not found:
            fatal(PROG, EX_NOINPUT, f"{user}: no such user in {path}")
        lines = [line for line in lines if not is_user(line)]
    else:
        entry = f"{user}:{sasl.hash_password(_read_password())}"
        lines = [entry if is_user(line) else line for line in lines] if found else lines + [entry]
    try:
        _write(path, lines)
    except OSError as e:
        fatal(PROG, EX_CANTCREAT, f"cannot write {path}: {e.strerror}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
