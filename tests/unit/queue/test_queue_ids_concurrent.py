"""100,000 queue IDs from 4 processes at once, each creating and deleting
real queue files in one shared incoming/ (so inodes are reused all the
time): no duplicate, and each process's IDs in time order."""

import subprocess
import sys

from fulmar.queue import layout, qid

PROCESSES = 4
IDS_PER_PROCESS = 25_000

# Each child says "ready", waits for the go line (so that all four run at
# the same time), then makes its IDs through the real writer and prints them.
CHILD = r"""
import sys
from fulmar.queue import qfile
queue_dir, n = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
ids = []
for _ in range(n):
    w = qfile.QueueWriter.create(queue_dir)
    ids.append(w.queue_id)
    w.abort()
sys.stdout.write("\n".join(ids) + "\n")
"""


def test_unique_and_ordered_across_processes(tmp_path):
    # The test's own file system: ext4 and the like hand inodes straight
    # back (the case that matters); tmpfs never reuses them.
    queue_dir = str(tmp_path / "spool")
    layout.create(queue_dir)
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, queue_dir, str(IDS_PER_PROCESS)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    for p in procs:
        assert p.stdout.readline() == "ready\n"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        results.append(out.split())

    every = [q for ids in results for q in ids]
    assert len(every) == PROCESSES * IDS_PER_PROCESS
    assert len(set(every)) == len(every), "duplicate queue ID"
    for ids in results:
        times = [qid.parse(q)[:2] for q in ids]
        assert times == sorted(times), "queue IDs of one process out of time order"
        prefixes = [q[:qid.LG_TIME_PAD] for q in ids]
        assert prefixes == sorted(prefixes)   # string order is time order
