"""Who the daemons run as.

    queue_owner(mail_owner, main_cf, euid, getpwnam) -> (uid, gid) | None
    setgid_gid(setgid_group, main_cf, euid, getgrnam) -> gid | None

Started as root (euid 0), master checks `mail_owner` as Postfix does and
refuses to start when it is missing or privileged:

    fatal: file /etc/postfix/main.cf: parameter mail_owner: unknown user name value: postfix
    fatal: file /etc/postfix/main.cf: parameter mail_owner: user postfix has privileged user ID

The daemons are started as root and drop to mail_owner themselves in the
daemon skeleton (fulmar/daemon.py), so that one may open a root-only file
(a TLS key) first; `local` keeps root to deliver as each recipient.
Started as an ordinary user, everything runs as that user and mail_owner
is not consulted: the queue is owned by the invoking user (both functions
return None: "leave owners alone").
"""

from __future__ import annotations

import os
import grp
import pwd
from typing import Callable


class PrivilegeError(Exception):
    """str() is the text after `fatal: `."""


def queue_owner(mail_owner: str, main_cf: str, euid: int | None = None,
                getpwnam: Callable[[str], pwd.struct_passwd] = pwd.getpwnam) -> tuple[int, int] | None:
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return None
    try:
        entry = getpwnam(mail_owner)
    except KeyError:
        raise PrivilegeError(f"file {main_cf}: parameter mail_owner: "
                             f"unknown user name value: {mail_owner}") from None
    if entry.pw_uid == 0:
        raise PrivilegeError(f"file {main_cf}: parameter mail_owner: "
                             f"user {mail_owner} has privileged user ID")
    return entry.pw_uid, entry.pw_gid


def setgid_gid(setgid_group: str, main_cf: str, euid: int | None = None,
               getgrnam: Callable[[str], grp.struct_group] = grp.getgrnam) -> int | None:
    """The group of maildrop/ and public/ (root only; None otherwise)."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return None
    try:
        return getgrnam(setgid_group).gr_gid
    except KeyError:
        raise PrivilegeError(f"file {main_cf}: parameter setgid_group: "
                             f"unknown group name: {setgid_group}") from None
