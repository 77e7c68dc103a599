"""One mailbox or file write, run as the recipient: `python -I -m local.worker`.

NAME
    local.worker -- the unprivileged half of a local delivery

SYNOPSIS
    (started by local.deliver with subprocess user=, group=, extra_groups=)
    stdin:  one JSON line {"action": "mbox"|"maildir", "path", "size_limit",
            "stale_lock_time", "lock_timeout", "hostname", "fail_prefix"},
            then the message bytes (From_ line and delivery headers included
            for mbox) up to end of file
    stdout: one JSON line {"status": "sent"|"deferred"|"bounced", "dsn", "reason"}

DESCRIPTION
    The local daemon keeps root only to start this process with the
    recipient's uid, gid and groups (never root); all file system work on
    the recipient's mailbox happens here, with the recipient's rights, in
    a fresh single-threaded process (no fork() of the daemon's event loop).

    Error mapping, as Postfix's mbox_dsn(): EAGAIN/ESTALE 4.2.0 deferred
    (lock busy), ENOSPC 4.3.0 deferred (full disk), EDQUOT/EFBIG 5.2.2
    bounced (over quota), mailbox_size_limit 5.2.2 bounced, anything else
    4.2.0 deferred (never lose mail on an unexpected error).  The reason is
    "<fail_prefix><error text>", e.g. "cannot update mailbox /var/mail/bob
    for user bob. Disk quota exceeded".
"""

from __future__ import annotations

import errno
import json
import sys


def dsn_for(err: int) -> tuple[str, str]:
    if err in (errno.EAGAIN, errno.ESTALE):
        return "deferred", "4.2.0"
    if err == errno.ENOSPC:
        return "deferred", "4.3.0"
    if err in (errno.EDQUOT, errno.EFBIG):
        return "bounced", "5.2.2"
    return "deferred", "4.2.0"


def run(req: dict, data: bytes) -> dict:
    from local.mailbox import MailboxFull, deliver_maildir, deliver_mbox
    prefix = req.get("fail_prefix", "")
    try:
        if req["action"] == "maildir":
            deliver_maildir(req["path"], data, size_limit=int(req.get("size_limit") or 0),
                            hostname=req.get("hostname") or "localhost")
        else:
            deliver_mbox(req["path"], b"", data, size_limit=int(req.get("size_limit") or 0),
                         stale_lock_time=float(req.get("stale_lock_time") or 500),
                         lock_timeout=float(req.get("lock_timeout") or 30))
    except MailboxFull:
        return {"status": "bounced", "dsn": "5.2.2", "reason": prefix + "file too large"}
    except OSError as e:
        status, dsn = dsn_for(e.errno or 0)
        return {"status": status, "dsn": dsn, "reason": prefix + (e.strerror or str(e))}
    return {"status": "sent", "dsn": "2.0.0", "reason": ""}


def main() -> int:
    stdin = sys.stdin.buffer
    try:
        req = json.loads(stdin.readline())
        data = stdin.read()
        result = run(req, data)
    except (ValueError, KeyError) as e:
        result = {"status": "deferred", "dsn": "4.3.0", "reason": "local worker: bad request: %s" % e}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
