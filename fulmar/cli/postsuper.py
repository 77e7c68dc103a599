"""postsuper -- Postfix superintendent: delete, hold, release, requeue, expire.

SYNOPSIS
    postsuper [-psSv] [-c config_dir] [-d queue_id] [-e queue_id] [-f queue_id]
              [-h queue_id] [-H queue_id] [-r queue_id] [queue...]

DESCRIPTION
    As Postfix's postsuper(1), for the superuser only. queue_id is a queue
    ID, `ALL` (upper case only: `all` is just an ID that matches nothing, as
    in Postfix) or `-` (IDs one per line on standard input). The optional
    queue names limit ALL and IDs to those queues (hold, incoming, active,
    deferred, maildrop; anything else is `fatal: invalid directory name`).

        -d  delete the message and its defer/bounce/trace logs
            (default queues: hold incoming active deferred)
        -h  put on hold: move to hold/ (incoming active deferred)
        -H  release from hold: move hold/ -> deferred/, due now (hold)
        -r  requeue: move to incoming/ so that qmgr routes the message again
            (hold incoming active deferred).  Postfix moves it to maildrop/
            for a new cleanup pass; Fulmar's maildrop holds submission
            streams, not queue files (a deliberate deviation, see
            docs/local-submission.md)
        -e  force-expire: set the S_IXGRP mode bit (Postfix's
            MAIL_QUEUE_STAT_EXPIRE); qmgr returns the message to the sender
            at its next attempt (hold incoming active deferred)
        -f  -e, and release the message from hold
        -p  purge temporary files (dot-files, and files in incoming/ never
            made ready) older than FRESH_TEMP seconds
            in incoming/, maildrop/ and the hashed queues
        -s/-S  structure check: files in the wrong hash directory are moved
            to the right one; non-queue names are reported

    Postfix's house rule exception: postsuper renames queue files itself
    (house rule 1 says only qmgr moves them); afterwards it tells qmgr
    (`flush` on public/qmgr) so that released and requeued mail moves on.
    Force-expired mail waits for its next attempt, as in Postfix.

    Summary lines on standard error, Postfix's texts:
    `postsuper: Deleted: N message(s)`, `Placed on hold: N message(s)`,
    `Released from hold: N message(s)`, `Requeued: N message(s)`,
    `Force-expired: N message(s)`; a malformed ID is
    `postsuper: warning: invalid mail queue id: ID` and is skipped.

DIAGNOSTICS
    Not root: `postsuper: fatal: use of this command is reserved for the
    superuser`, exit 1. Usage errors: glibc's getopt message and Postfix's
    fatal usage line, exit 1. Nothing is changed in the queue by a command
    that fails its argument checks.
"""

from __future__ import annotations

import os
import stat
import sys
import time

from fulmar.cli import _common as C
from fulmar.queue.showq import FORCE_EXPIRE_BIT
from fulmar.version import require_python

PROG = "postsuper"
OPTSPEC = "c:d:e:f:h:H:pr:sSv"
USAGE = ("usage: postsuper [-c config_dir] [-d queue_id (delete)] [-e queue_id (expire)] "
         "[-f queue_id (expire and/or un-hold)] [-h queue_id (hold)] [-H queue_id (un-hold)] "
         "[-p (purge temporary files)] [-r queue_id (requeue)] [-s (structure fix)] "
         "[-S (redundant structure fix)][-v (verbose)] [queue...]")

HOLD, INCOMING, ACTIVE, DEFERRED, MAILDROP = "hold", "incoming", "active", "deferred", "maildrop"
ALLOWED_QUEUES = (HOLD, INCOMING, ACTIVE, DEFERRED, MAILDROP)
DEFAULT_QUEUES = {
    "d": (HOLD, INCOMING, ACTIVE, DEFERRED),
    "h": (INCOMING, ACTIVE, DEFERRED),
    "H": (HOLD,),
    "r": (HOLD, INCOMING, ACTIVE, DEFERRED),
    "e": (HOLD, INCOMING, ACTIVE, DEFERRED),
    "f": (HOLD, INCOMING, ACTIVE, DEFERRED),
}
SUMMARY = {"d": "Deleted", "h": "Placed on hold", "H": "Released from hold",
           "r": "Requeued", "e": "Force-expired", "f": "Force-expired"}
ORDER = "dhHrfe"          # operations run in this order when combined
# A temporary file younger than this may still be written (Postfix: MAX_TEMP_AGE).
FRESH_TEMP = 60 * 60
SYSLOG_SOCKET = "/dev/log"


def usage():
    C.fatal(PROG, 1, USAGE)


def parse_args(argv: list[str]):
    """(ops: list[(letter, id)], flags: set, config_dir, queues)."""
    try:
        opts, rest = C.getopt(argv, OPTSPEC)
    except C.GetoptError as exc:
        sys.stderr.write("%s: %s\n" % (PROG, exc))
        usage()
    ops: list[tuple[str, str]] = []
    flags: set[str] = set()
    config_dir = None
    for flag, value in opts:
        f = flag[1]
        if f == "c":
            config_dir = value
        elif f in "dehfHr":
            ops.append((f, value))
        elif f in "pSs":
            flags.add("s" if f == "S" else f)
        elif f == "v":
            pass
    for q in rest:
        if q not in ALLOWED_QUEUES:
            C.fatal(PROG, 1, "invalid directory name: %s" % q)
    return ops, flags, config_dir, rest


class Super:
    def __init__(self, queue_dir: str, log=None) -> None:
        self.queue_dir = queue_dir
        self.log = log or (lambda fmt, *a: None)
        self._stdin_ids: list[str] | None = None

    # -- helpers ----------------------------------------------------------------

    def ids_for(self, arg: str, queues) -> list[tuple[str, str]]:
        """(queue, id) pairs an argument names, checked; skips bad IDs with a warning."""
        from fulmar.queue import qfile, qid
        if arg == "ALL":
            out = []
            for q in queues:
                try:
                    out.extend((q, i) for i, _ in qfile.scan(self.queue_dir, q))
                except FileNotFoundError:
                    pass
            return out
        if arg == "-":
            if self._stdin_ids is None:
                self._stdin_ids = [l.strip() for l in sys.stdin.read().split("\n") if l.strip()]
            names = [l.split()[0] for l in self._stdin_ids]
        else:
            names = [arg]
        out = []
        for name in names:
            if not qid.name_ok(name):
                C.warn(PROG, "invalid mail queue id: %s" % name)
                continue
            for q in queues:
                if os.path.lexists(qfile.path_of(self.queue_dir, q, name)):
                    out.append((q, name))
                    break
        return out

    def _remove_logs(self, queue_id: str) -> None:
        try:
            from bounce import logfile
        except ImportError:
            return
        for name in logfile.LOG_NAMES:
            try:
                logfile.remove(self.queue_dir, name, queue_id)
            except (OSError, ValueError):
                pass

    # -- operations ---------------------------------------------------------------

    def delete(self, q: str, i: str) -> bool:
        from fulmar.queue import qfile
        if not qfile.remove(self.queue_dir, q, i):
            return False
        self._remove_logs(i)
        self.log("%s: removed", i)
        return True

    def _move(self, q: str, i: str, to: str) -> bool:
        from fulmar.queue import qfile
        try:
            qfile.move(self.queue_dir, i, q, to)
        except FileNotFoundError:
            return False
        return True

    def hold(self, q: str, i: str) -> bool:
        if q == HOLD or not self._move(q, i, HOLD):
            return False
        self.log("%s: placed on hold", i)
        return True

    def release(self, q: str, i: str) -> bool:
        from fulmar.queue import qfile
        if q != HOLD or not self._move(q, i, DEFERRED):
            return False
        try:
            qfile.set_next_attempt(qfile.path_of(self.queue_dir, DEFERRED, i), time.time())
        except OSError:
            pass
        self.log("%s: released from hold", i)
        return True

    def requeue(self, q: str, i: str) -> bool:
        from fulmar.queue import qfile
        if q == MAILDROP:
            return False
        path = qfile.path_of(self.queue_dir, INCOMING, i)
        if q == INCOMING:
            # A file there without the ready bit is one cleanup is still
            # writing (or a recycled inode's old bytes: qfile), not a
            # message: "ALL" never names it, and a named one is left alone.
            try:
                if not qfile.is_ready(os.stat(path).st_mode):
                    return False
            except FileNotFoundError:
                return False
        elif not self._move(q, i, INCOMING):
            return False
        # A file outside incoming/ is complete; one written before the
        # ready bit existed (mode 0600) would be skipped there as unready.
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if not qfile.is_ready(mode):
                os.chmod(path, mode | qfile.READY_BIT)
        except FileNotFoundError:
            pass
        self.log("%s: requeued", i)
        return True

    def expire(self, q: str, i: str) -> bool:
        from fulmar.queue import qfile
        path = qfile.path_of(self.queue_dir, q, i)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            os.chmod(path, mode | FORCE_EXPIRE_BIT)
        except FileNotFoundError:
            return False
        self.log("%s: expired", i)
        return True

    def run_op(self, op: str, arg: str, queues) -> int:
        pairs = self.ids_for(arg, queues or DEFAULT_QUEUES[op])
        count = 0
        for q, i in pairs:
            if op == "d":
                count += self.delete(q, i)
            elif op == "h":
                count += self.hold(q, i)
            elif op == "H":
                count += self.release(q, i)
            elif op == "r":
                count += self.requeue(q, i)
            elif op in "ef":
                done = self.expire(q, i)
                count += done
                if op == "f" and done and q == HOLD:
                    self.release(q, i)
        return count

    def purge(self, now: float | None = None) -> int:
        """Remove stale dot-files, and files in incoming/ never made ready
        (a message cut off mid-way); the number removed."""
        from fulmar.queue import qfile
        now = time.time() if now is None else now
        removed = 0
        for q in (INCOMING, MAILDROP, ACTIVE, DEFERRED, HOLD):
            top = os.path.join(self.queue_dir, q)
            for dirpath, dirnames, filenames in os.walk(top):
                for name in filenames:
                    p = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(p)
                        if not name.startswith(".") and (q != INCOMING or qfile.is_ready(st.st_mode)):
                            continue
                        if now - st.st_mtime > FRESH_TEMP:
                            os.unlink(p)
                            removed += 1
                    except OSError:
                        pass
        return removed

    def structure(self) -> int:
        """Move queue files that sit in the wrong hash directory; count them."""
        from fulmar.queue import layout, qfile
        fixed = 0
        for q in (INCOMING, ACTIVE, DEFERRED, HOLD):
            try:
                found = list(qfile.scan(self.queue_dir, q))
            except FileNotFoundError:
                continue
            for i, path in found:
                want = qfile.path_of(self.queue_dir, q, i)
                if os.path.normpath(path) != os.path.normpath(want):
                    os.makedirs(os.path.dirname(want), layout.MODE_DEFAULT, exist_ok=True)
                    os.rename(path, want)
                    fixed += 1
        return fixed


def summary(op: str, count: int) -> str:
    return "%s: %s: %d message%s" % (PROG, SUMMARY[op], count, "" if count == 1 else "s")


def run(argv: list[str], require_root: bool = True) -> int:
    if require_root and os.geteuid() != 0:
        C.fatal(PROG, 1, "use of this command is reserved for the superuser")
    ops, flags, config_dir, queues = parse_args(argv)
    cfg = C.load_config(PROG, config_dir)
    from fulmar import log
    # Per-message lines go to the mail log only (as Postfix); without a log
    # to write to they are dropped rather than cluttering standard error.
    logging = bool(cfg.get("maillog_file")) or os.path.exists(SYSLOG_SOCKET)
    if logging:
        log.setup(cfg, PROG)
    info = log.info if logging else (lambda fmt, *a: None)
    sup = Super(cfg.get("queue_directory"), log=info)
    if "s" in flags:
        n = sup.structure()
        if n:
            sys.stderr.write("%s: Renamed to match hash directory: %d message%s\n"
                             % (PROG, n, "" if n == 1 else "s"))
    if "p" in flags:
        n = sup.purge()
        if n:
            sys.stderr.write("%s: Deleted: %d temporary file%s\n" % (PROG, n, "" if n == 1 else "s"))
    changed = False
    for op in ORDER:
        wanted = [arg for o, arg in ops if o == op]
        if not wanted:
            continue
        count = sum(sup.run_op(op, arg, queues) for arg in wanted)
        line = summary(op, count)
        sys.stderr.write(line + "\n")
        info("%s", line.split(": ", 1)[1])
        changed |= count > 0 and op in "Hr"
    if changed:
        # Released and requeued mail should not wait for a queue run.
        # Force-expired mail is returned at its next scheduled attempt, as
        # Postfix's postsuper(1) says; an admin who wants it now runs
        # `postqueue -f`.
        C.qmgr_request(cfg, {"request": "flush"})
    return 0


def main(argv: list[str] | None = None) -> int:
    require_python()
    return C.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
