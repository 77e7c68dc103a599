"""The master lock: `$queue_directory/pid/master.pid`.

    pid_path(queue_dir) -> str
    acquire(path) -> int            # fd holding an exclusive flock; raises Locked
    write_pid(fd, pid)              # Postfix's format: "%*lu\n", width 32
    running_pid(path) -> int | None # the master's PID if someone holds the lock

Whether Postfix "is running" is decided by the lock, never by the file's
existence or contents: a master that died leaves the file but not the
lock (the kernel drops an flock with the last descriptor).  The lock is an
flock(2) on an open file description, held by master only (the descriptor
is close-on-exec, daemons never inherit it).

`running_pid` tests by trying the lock itself (as `master -t` does), so a
master starting at that very instant could see it held; `acquire` retries
for LOCK_RETRY_TIME to ride over such a probe.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

PID_DIR = "pid"
PID_FILE = "master.pid"
PID_FILE_MODE = 0o644
# Postfix master.c: vstream_fprintf(lock_fp, "%*lu\n", (int) sizeof(unsigned long) * 4, pid)
PID_FIELD_WIDTH = 32
# Long enough to outlast a concurrent running_pid() probe, short enough to
# answer "already running" at once.
LOCK_RETRY_TIME = 0.2
LOCK_RETRY_STEP = 0.02
LOCK_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


class Locked(Exception):
    """Another process holds the master lock."""


def pid_path(queue_dir: str) -> str:
    return os.path.join(queue_dir, PID_DIR, PID_FILE)


def format_pid(pid: int) -> bytes:
    return b"%*d\n" % (PID_FIELD_WIDTH, pid)


def parse_pid(data: bytes) -> int | None:
    first = data.split(b"\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


def acquire(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PID_FILE_MODE)
    deadline = time.monotonic() + LOCK_RETRY_TIME
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in LOCK_BUSY:
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise Locked(f"open lock file {path}: unable to set exclusive lock: "
                             f"{os.strerror(e.errno)}") from None
            time.sleep(LOCK_RETRY_STEP)


def write_pid(fd: int, pid: int) -> None:
    data = format_pid(pid)
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def running_pid(path: str) -> int | None:
    """The PID in the file when its lock is held, 0 if held but unreadable, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in LOCK_BUSY:
                raise
            pid = parse_pid(os.pread(fd, PID_FIELD_WIDTH * 2, 0))
            return pid if pid is not None else 0
        return None           # we got the lock: nobody is running
    finally:
        os.close(fd)
