"""fulmar.queue.fsinfo names the file system under a path, journal included.

The parsing is tested on mountinfo text of the kinds this VM has (its
root is ext4 without a journal; a loop-mounted ext4 with one); the last
test reads this machine's own /proc.
"""

import os

from fulmar.queue import fsinfo

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
41 27 7:0 / /tmp/s/mnt rw,relatime - ext4 /dev/loop0 rw
42 41 7:1 / /tmp/s/mnt/inner rw,relatime - xfs /dev/loop1 rw
43 27 254:0 /srv /tmp/bind rw,relatime - ext4 /dev/vda rw
"""


def test_the_longest_mount_point_above_the_path_on_its_device_wins():
    assert fsinfo.parse_mountinfo(MOUNTINFO, "254:0", "/tmp/q/incoming") == ("/", "ext4", "/dev/vda")
    assert fsinfo.parse_mountinfo(MOUNTINFO, "7:0", "/tmp/s/mnt/b") == ("/tmp/s/mnt", "ext4", "/dev/loop0")
    assert fsinfo.parse_mountinfo(MOUNTINFO, "7:1", "/tmp/s/mnt/inner/x") == (
        "/tmp/s/mnt/inner", "xfs", "/dev/loop1")
    # A bind mount of the same device: the deeper point holds the path.
    assert fsinfo.parse_mountinfo(MOUNTINFO, "254:0", "/tmp/bind/q") == ("/tmp/bind", "ext4", "/dev/vda")
    # "/tmp/s/mntx" is not under "/tmp/s/mnt".
    assert fsinfo.parse_mountinfo(MOUNTINFO, "7:0", "/tmp/s/mntx") is None
    assert fsinfo.parse_mountinfo(MOUNTINFO, "9:9", "/") is None


def test_the_journal_is_read_from_the_device_name_in_jbd2():
    root = ("/", "ext4", "/dev/vda")
    loop = ("/tmp/s/mnt", "ext4", "/dev/loop0")
    journals = ["loop0-8"]
    assert fsinfo.describe_from(root, "vda", journals) == \
        "ext4 without a journal (/dev/vda, mounted on /)"
    assert fsinfo.describe_from(loop, "loop0", journals) == \
        "ext4 with a journal (/dev/loop0, mounted on /tmp/s/mnt)"
    # loop1's journal is not loop10's.
    assert fsinfo.describe_from(loop, "loop1", ["loop10-8"]).startswith("ext4 without")
    assert fsinfo.describe_from(("/x", "xfs", "/dev/sdb"), "sdb", []) == "xfs (/dev/sdb, mounted on /x)"
    assert fsinfo.describe_from(None, "", []) == "unknown"


def test_this_machines_root_is_described_by_its_type():
    line = fsinfo.describe(os.path.dirname(os.path.abspath(__file__)))
    with open("/proc/self/mounts") as f:
        types = {fields.split()[2] for fields in f if len(fields.split()) > 2}
    assert line.split()[0] in types
    assert fsinfo.describe("/nonexistent/path/for/fsinfo") == "unknown"


def test_only_ext_file_systems_without_a_journal_scan_freed_inodes():
    root = ("/", "ext4", "/dev/vda")
    loop = ("/tmp/s/mnt", "ext4", "/dev/loop0")
    assert fsinfo.scans_freed_inodes_from(root, "vda", ["loop0-8"]) is True
    assert fsinfo.scans_freed_inodes_from(loop, "loop0", ["loop0-8"]) is False
    assert fsinfo.scans_freed_inodes_from(("/o", "ext2", "/dev/sdc"), "sdc", []) is True
    assert fsinfo.scans_freed_inodes_from(("/x", "xfs", "/dev/sdb"), "sdb", []) is False
    assert fsinfo.scans_freed_inodes_from(("/t", "tmpfs", "tmpfs"), "", []) is False
    # Unknown device, mount or journals: no recycling (Postfix's behaviour).
    assert fsinfo.scans_freed_inodes_from(root, "", []) is False
    assert fsinfo.scans_freed_inodes_from(root, "vda", None) is False
    assert fsinfo.scans_freed_inodes_from(None, "vda", []) is False
    assert fsinfo.scans_freed_inodes("/nonexistent/path/for/fsinfo") is False
