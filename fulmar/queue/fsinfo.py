"""fsinfo -- which file system the queue is on.

NAME
    fulmar.queue.fsinfo -- the file system under a path, journal included

SYNOPSIS
    describe(path) -> "ext4 without a journal (/dev/vda, mounted on /)"
    scans_freed_inodes(path) -> bool

DESCRIPTION
    The file system under the queue decides much of an MTA's kernel time
    (docs/performance.md, "Where it stood (end of session 15)"): on ext4
    without a journal an fsync needs no kernel thread, with one it waits
    for jbd2's.  statfs() says "ext4" for both, so the journal is read from
    /proc/fs/jbd2, which has a directory `<device>-<n>` for every mounted
    journal.

    describe() is the bench's one-line description (bench/run.py prints it
    at its start, so that a results file can be told apart later).

    scans_freed_inodes() is true for ext2, ext3 and ext4 mounted without a
    journal: there the inode allocator skips, one inode-table lookup each,
    every free inode of the group freed in the last minute
    (recently_deleted() in fs/ext4/ialloc.c, which only runs without a
    journal), so under load each new file costs a scan of the whole group.
    qmgr and cleanup recycle queue-file inodes only there
    (qfile.Recycler); with a journal recycling measured slightly slower.

    Linux only; anything unreadable gives "unknown" and False.
"""

from __future__ import annotations

import os

_JOURNALED_TYPES = ("ext3", "ext4")
# Types the ext4 driver mounts, with or without a journal (ext2 never has one).
_EXT_TYPES = ("ext2", "ext3", "ext4")


def parse_mountinfo(text: str, dev: str, path: str) -> tuple[str, str, str] | None:
    """(mount point, type, source) of the mount of device "major:minor"
    that holds path (the longest mount point above it), or None."""
    best = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or fields[2] != dev:
            continue
        point = fields[4]
        if not (path == point or path.startswith(point.rstrip("/") + "/")):
            continue
        rest = right.split()
        if len(rest) < 2:
            continue
        if best is None or len(point) > len(best[0]):
            best = (point, rest[0], rest[1])
    return best


def describe_from(mount: tuple[str, str, str] | None, device: str,
                  journals: list[str]) -> str:
    """The line for a mount, its block device's name (e.g. "vda", or ""
    if unknown) and the names in /proc/fs/jbd2."""
    if mount is None:
        return "unknown"
    point, fstype, source = mount
    where = f"({source}, mounted on {point})"
    if fstype in _JOURNALED_TYPES and device:
        has = _has_journal(device, journals)
        return f"{fstype} {'with' if has else 'without'} a journal {where}"
    return f"{fstype} {where}"


def scans_freed_inodes_from(mount: tuple[str, str, str] | None, device: str,
                            journals: list[str] | None) -> bool:
    """scans_freed_inodes() for a mount, its device's name and /proc/fs/jbd2
    (None: unreadable, so a journal cannot be ruled out)."""
    if mount is None or mount[1] not in _EXT_TYPES or not device or journals is None:
        return False
    return not _has_journal(device, journals)


def _has_journal(device: str, journals: list[str]) -> bool:
    return any(name.rpartition("-")[0] == device for name in journals)


def _facts(path: str):
    """(mount, device name, journal names) for path; OSError if unreadable."""
    path = os.path.realpath(path)
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    with open("/proc/self/mountinfo") as f:
        mount = parse_mountinfo(f.read(), dev, path)
    try:
        device = os.path.basename(os.readlink(f"/sys/dev/block/{dev}"))
    except OSError:
        device = ""
    try:
        journals: list[str] | None = os.listdir("/proc/fs/jbd2")
    except OSError:
        # No journal mounted anywhere, or /proc/fs hidden (a container).
        journals = [] if os.path.isdir("/proc/fs") else None
    return mount, device, journals


def describe(path: str) -> str:
    try:
        mount, device, journals = _facts(path)
    except OSError:
        return "unknown"
    return describe_from(mount, device, journals or [])


def scans_freed_inodes(path: str) -> bool:
    try:
        return scans_freed_inodes_from(*_facts(path))
    except OSError:
        return False


if __name__ == "__main__":
    import sys
    for p in sys.argv[1:] or ["."]:
        print(f"{p}: {describe(p)}")
