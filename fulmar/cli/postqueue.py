"""postqueue -- Postfix queue control (list, flush), as Postfix's postqueue(1).

SYNOPSIS
    postqueue [-v] [-c config_dir] -f
    postqueue [-v] [-c config_dir] -i queue_id
    postqueue [-v] [-c config_dir] -j
    postqueue [-v] [-c config_dir] -p
    postqueue [-v] [-c config_dir] -s site

DESCRIPTION
    -p  the mailq listing (fulmar.queue.showq.write_mailq), streamed: the
        first message is printed as soon as it has been read, the rest at
        least every showq.FLUSH_INTERVAL (0.2 s), as the output fills.
    -j  the same as JSON lines (Postfix 3.11 fields).
    -f  flush: qmgr makes deferred mail eligible now (`flush` request on
        public/qmgr).
    -s site  flush mail for a site; as Postfix, only for destinations in
        fast_flush_domains (`flush_site` request).
    -i queue_id  flush one message (`flush_id` request).

    Listing reads the queue directory itself (Fulmar has no showq daemon;
    see docs/local-submission.md): it needs read access to the queue
    (root, mail_owner, or the one user of a development setup); anyone
    else gets Postfix's "Queue report unavailable" error.
    authorized_mailq_users and authorized_flush_users are honoured
    (user names or static:anyone; root and mail_owner always pass).

DIAGNOSTICS
    Postfix's texts and exit codes: usage errors and an unavailable mail
    system exit 69 (EX_UNAVAILABLE), a refused user 77 (EX_NOPERM).
"""

from __future__ import annotations

import os
import sys

from fulmar.cli import _common as C
from fulmar.version import require_python

PROG = "postqueue"
USAGE = ("usage: postqueue -f | postqueue -i queueid | postqueue -j | "
         "postqueue -p | postqueue -s site")
OPTSPEC = "c:fi:jps:v"

MODE_FLUSH, MODE_FLUSH_ID, MODE_JSON, MODE_LIST, MODE_SITE = "f", "i", "j", "p", "s"


def parse_args(argv: list[str], prog: str = PROG) -> tuple[str, str, str | None, int]:
    """(mode, argument, config_dir, verbose); Fatal(69) on usage errors."""
    try:
        opts, rest = C.getopt(argv, OPTSPEC)
    except C.GetoptError as exc:
        sys.stderr.write("%s: %s\n" % (prog, exc))
        C.fatal(prog, C.EX_UNAVAILABLE, USAGE)
    mode = None
    arg = ""
    config_dir = None
    verbose = 0
    for flag, value in opts:
        if flag == "-c":
            config_dir = value
        elif flag == "-v":
            verbose += 1
        else:
            if mode is not None:
                C.fatal(prog, C.EX_UNAVAILABLE, USAGE)
            mode, arg = flag[1], value
    if mode is None or rest:
        C.fatal(prog, C.EX_UNAVAILABLE, USAGE)
    return mode, arg, config_dir, verbose


def list_queue(cfg, json_mode: bool, out=None, prog: str = PROG) -> int:
    from fulmar.queue import showq
    out = out or sys.stdout
    if not C.user_listed(cfg, "authorized_mailq_users", os.getuid()):
        C.fatal(prog, C.EX_NOPERM, "User %s(%d) is not allowed to view the mail queue"
                % (C.user_name(os.getuid()), os.getuid()))
    queue_dir = cfg.get("queue_directory")
    if not os.access(os.path.join(queue_dir, "deferred"), os.R_OK | os.X_OK):
        C.fatal(prog, C.EX_UNAVAILABLE, "Queue report unavailable - mail system is down")
    entries = showq.scan_queue(queue_dir, empty_address=cfg.get("empty_address_recipient"),
                               dup_limit=cfg.get("duplicate_filter_limit"),
                               want_bounce=json_mode)
    try:
        if json_mode:
            showq.write_json(entries, out)
        else:
            showq.write_mailq(entries, out)
    except BrokenPipeError:
        # `mailq | head`: stop quietly, as Postfix does on EPIPE.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
    return 0


def _site_ok(cfg, site: str) -> bool:
    """Is site one of fast_flush_domains (or a subdomain where configured)?"""
    site = site.lower().strip("[]")
    parent = "fast_flush_domains" in [n.lower() for n in cfg.get("parent_domain_matches_subdomains")]
    for item in cfg.get("fast_flush_domains"):
        item = item.lower()
        if ":" in item and not item.startswith("["):
            continue          # a lookup table: not supported here (XXX)
        if item.startswith("."):
            if site.endswith(item):
                return True
        elif site == item or (parent and site.endswith("." + item)):
            return True
    return False


def flush(cfg, mode: str, arg: str, prog: str = PROG) -> int:
    from fulmar.queue import qid
    if not C.user_listed(cfg, "authorized_flush_users", os.getuid()):
        C.fatal(prog, C.EX_NOPERM, "User %s(%d) is not allowed to flush the mail queue"
                % (C.user_name(os.getuid()), os.getuid()))
    if mode == MODE_FLUSH:
        request = {"request": "flush"}
        failure = "Cannot flush mail queue - mail system is down"
    elif mode == MODE_SITE:
        if not _site_ok(cfg, arg):
            C.fatal(prog, C.EX_UNAVAILABLE,
                    'Flush service is not configured for destination "%s"' % arg)
        request = {"request": "flush_site", "site": arg}
        failure = "Cannot flush mail queue - mail system is down"
    else:
        if not qid.name_ok(arg):
            C.fatal(prog, C.EX_UNAVAILABLE, 'Cannot flush queue ID - invalid name: "%s"' % arg)
        request = {"request": "flush_id", "queue_id": arg}
        failure = "Cannot flush mail queue - mail system is down"
    if not C.qmgr_request(cfg, request):
        C.fatal(prog, C.EX_UNAVAILABLE, failure)
    return 0


def run(argv: list[str], prog: str = PROG) -> int:
    mode, arg, config_dir, verbose = parse_args(argv, prog)
    cfg = C.load_config(prog, config_dir)
    if mode in (MODE_LIST, MODE_JSON):
        return list_queue(cfg, mode == MODE_JSON, prog=prog)
    return flush(cfg, mode, arg, prog)


def main(argv: list[str] | None = None) -> int:
    require_python()
    return C.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
