"""The queue directory: names, modes, hashing; create and check the layout.

Postfix's layout (postfix-files), under ``queue_directory``::

    maildrop  1730  mail_owner:setgid_group   (sendmail drops files here; sticky:
                    a submitter cannot remove another's file)
    public    0710  mail_owner:setgid_group   (pickup, qmgr, showq sockets)
    pid       0755  owner of the queue directory (root when started as root)
    all else  0700  mail_owner
    the queue directory itself 0755

and one directory of Fulmar's own, ``recycle`` (0700 mail_owner): the
files of delivered messages (up to 64 KiB of their bytes kept, for the
next message to be written over), whose inodes cleanup reuses for new
queue files (qfile.Recycler; docs/deviations.md).

Queues named in ``hash_queue_names`` (default ``deferred, defer``) keep their
files ``hash_queue_depth`` levels (default 1) of one-character
sub-directories deep; see qid.hash_path().  The settings live in this
module so that every path computation in the process agrees: daemons and
commands call ``configure(cfg)`` once after loading main.cf; until then
Postfix's defaults apply.

Interface::

    QUEUE_NAMES, QUEUE_INCOMING, QUEUE_ACTIVE, ... (constants)
    MESSAGE_QUEUES                       # queues that hold queue files
    configure(cfg)                       # take hash_queue_names/_depth from a Config
    set_hashing(names, depth)            # the same, explicitly
    reset_hashing()                      # back to the defaults
    hashed(queue_name, cfg_hash_names=None) -> bool
    hash_depth() -> int
    queue_subdir(queue_name, queue_id) -> str   # "deferred/A" or "incoming"
    create(queue_dir, uid=None, gid=None, setgid_gid=None)   # idempotent
    check(queue_dir, uid=None, gid=None, setgid_gid=None) -> list[str]

``create`` makes what is missing and corrects modes and owners (owners only
when a uid/gid is given, which needs root); it raises OSError when it
cannot.  ``check`` changes nothing and returns one line per problem.
"""

from __future__ import annotations

import os
import stat

from fulmar.config.params import PARAMS
from fulmar.queue import qid as _qid

QUEUE_MAILDROP = "maildrop"
QUEUE_INCOMING = "incoming"
QUEUE_ACTIVE = "active"
QUEUE_DEFERRED = "deferred"
QUEUE_HOLD = "hold"
QUEUE_CORRUPT = "corrupt"
QUEUE_BOUNCE = "bounce"
QUEUE_DEFER = "defer"
QUEUE_TRACE = "trace"
QUEUE_SAVED = "saved"
QUEUE_FLUSH = "flush"
QUEUE_PUBLIC = "public"
QUEUE_PRIVATE = "private"
QUEUE_PID = "pid"
# Fulmar's: delivered queue files waiting to be reused (qfile.Recycler).
QUEUE_RECYCLE = "recycle"

QUEUE_NAMES = (
    QUEUE_MAILDROP, QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD,
    QUEUE_CORRUPT, QUEUE_BOUNCE, QUEUE_DEFER, QUEUE_TRACE, QUEUE_SAVED,
    QUEUE_FLUSH, QUEUE_PUBLIC, QUEUE_PRIVATE, QUEUE_PID, QUEUE_RECYCLE,
)
# Queues whose files are queue files (the others hold logs and sockets).
MESSAGE_QUEUES = (
    QUEUE_MAILDROP, QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD,
    QUEUE_CORRUPT, QUEUE_SAVED,
)

MODE_QUEUE_DIR = 0o755
MODE_DEFAULT = 0o700
MODES = {QUEUE_MAILDROP: 0o1730, QUEUE_PUBLIC: 0o710, QUEUE_PID: 0o755}
# Directories whose group is setgid_group (postdrop) rather than mail_owner's.
SETGID_GROUP_DIRS = (QUEUE_MAILDROP, QUEUE_PUBLIC)
# Directories owned by the queue directory's owner (root), not mail_owner.
ROOT_DIRS = (QUEUE_PID,)

# The registry's defaults of hash_queue_names and hash_queue_depth apply
# until configure() is called.
DEF_HASH_QUEUE_NAMES = PARAMS["hash_queue_names"].default
DEF_HASH_QUEUE_DEPTH = int(PARAMS["hash_queue_depth"].default)
HASH_CHARS = "0123456789ABCDEF"   # hex microseconds: the first char of any hash key



def _split_names(names) -> frozenset[str]:
    if isinstance(names, str):
        names = names.replace(",", " ").split()
    return frozenset(n.lower() for n in names if n)


def set_hashing(names, depth: int) -> None:
    global _hash_names, _hash_depth
    if depth < 0:
        raise ValueError("hash_queue_depth must not be negative")
    _hash_names = _split_names(names)
    _hash_depth = depth


_hash_names: frozenset[str] = _split_names(DEF_HASH_QUEUE_NAMES)
_hash_depth: int = DEF_HASH_QUEUE_DEPTH


def reset_hashing() -> None:
    """Back to the registry's defaults (for tests)."""
    set_hashing(DEF_HASH_QUEUE_NAMES, DEF_HASH_QUEUE_DEPTH)


def configure(cfg) -> None:
    """Take hash_queue_names and hash_queue_depth from a fulmar Config."""
    set_hashing(cfg.get("hash_queue_names"), int(cfg.get("hash_queue_depth")))


def hashed(queue_name: str, cfg_hash_names=None) -> bool:
    """True if queue_name is hashed (Postfix compares case-insensitively)."""
    names = _hash_names if cfg_hash_names is None else _split_names(cfg_hash_names)
    return queue_name.lower() in names


def hash_depth() -> int:
    return _hash_depth


def queue_subdir(queue_name: str, queue_id: str) -> str:
    """Directory of queue_id relative to queue_directory."""
    if _hash_depth and hashed(queue_name):
        return f"{queue_name}/{_qid.hash_path(queue_id, _hash_depth)}"
    return queue_name


def _hash_subdirs(depth: int) -> list[str]:
    """Every hash directory, parents before children: "0", ..., "0/0", ..."""
    out: list[str] = []
    level = [""]
    for _ in range(depth):
        level = [f"{d}/{c}" if d else c for d in level for c in HASH_CHARS]
        out.extend(level)
    return out


def _wanted(queue_dir: str, uid, gid, setgid_gid):
    """(path, mode, uid, gid) for every directory of the layout."""
    yield queue_dir, MODE_QUEUE_DIR, None, None
    for name in QUEUE_NAMES:
        path = os.path.join(queue_dir, name)
        mode = MODES.get(name, MODE_DEFAULT)
        if name in ROOT_DIRS:
            owner, group = None, None
        elif name in SETGID_GROUP_DIRS:
            owner, group = uid, setgid_gid if setgid_gid is not None else gid
        else:
            owner, group = uid, gid
        yield path, mode, owner, group
        if _hash_depth and hashed(name):
            # Postfix makes these on demand; making them up front keeps the
            # hot path (qfile.move) from ever meeting ENOENT.
            for sub in _hash_subdirs(_hash_depth):
                yield os.path.join(path, sub), mode, owner, group


def create(queue_dir: str, uid: int | None = None, gid: int | None = None,
           setgid_gid: int | None = None) -> None:
    """Create the layout; fix modes (and owners when given). Idempotent."""
    for path, mode, owner, group in _wanted(queue_dir, uid, gid, setgid_gid):
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"{path}: not a directory")
        if (owner is not None and st.st_uid != owner) or (group is not None and st.st_gid != group):
            os.chown(path, -1 if owner is None else owner, -1 if group is None else group,
                     follow_symlinks=False)
        # mkdir's mode is filtered by the umask; chmod states it exactly.
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)


def check(queue_dir: str, uid: int | None = None, gid: int | None = None,
          setgid_gid: int | None = None) -> list[str]:
    """Problems with the layout, one line each; empty when all is well."""
    problems = []
    for path, mode, owner, group in _wanted(queue_dir, uid, gid, setgid_gid):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problems.append(f"{path}: directory is missing")
            continue
        if not stat.S_ISDIR(st.st_mode):
            problems.append(f"{path}: not a directory")
            continue
        if stat.S_IMODE(st.st_mode) != mode:
            problems.append(
                f"{path}: mode {stat.S_IMODE(st.st_mode):04o}, expected {mode:04o}"
            )
        if owner is not None and st.st_uid != owner:
            problems.append(f"{path}: owner uid {st.st_uid}, expected {owner}")
        if group is not None and st.st_gid != group:
            problems.append(f"{path}: group gid {st.st_gid}, expected {group}")
    return problems
