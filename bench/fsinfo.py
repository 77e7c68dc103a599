"""fsinfo -- which file system the bench's queues are on, in one line.

    describe(path) -> "ext4 without a journal (/dev/vda, mounted on /)"

The file system under the queues decides much of both MTAs' kernel time
(docs/performance.md, "Where it stands (end of session 15)"): on ext4
without a journal an fsync needs no kernel thread, with one it waits for
jbd2's.  statfs() says "ext4" for both, so the journal is read from
/proc/fs/jbd2, which has a directory `<device>-<n>` for every mounted
journal.  bench/run.py prints the line at its start, so that a results
file can be told apart later.  Linux only; anything unreadable gives
"unknown".
"""

from __future__ import annotations

import os

_JOURNALED_TYPES = ("ext3", "ext4")


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
        has = any(name.rpartition("-")[0] == device for name in journals)
        return f"{fstype} {'with' if has else 'without'} a journal {where}"
    return f"{fstype} {where}"


def describe(path: str) -> str:
    try:
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
            journals = os.listdir("/proc/fs/jbd2")
        except OSError:
            journals = []
    except OSError:
        return "unknown"
    return describe_from(mount, device, journals)


if __name__ == "__main__":
    import sys
    for p in sys.argv[1:] or ["."]:
        print(f"{p}: {describe(p)}")
