#!/usr/bin/env python3
"""bench/ab.py: serial latency of two Fulmar builds (and Postfix), interleaved.

usage: .venv/bin/python bench/ab.py [--old REV] [--messages N] [--burst B]
                                    [--accept ROUNDS] [--no-postfix] [--keep]

On a shared VM the same build's latency moves by ±20 % from one minute to
the next, which hides a change worth 0.1 ms when builds are measured one
after the other.  This runs the working tree ("new"), an older revision
("old", default HEAD) and Postfix side by side, and sends messages one at
a time (each waits for its arrival, as `make bench`'s latency workload)
in bursts of B to each in turn, in a random order per round, so that all
of them see the same machine.  The first two messages after a switch are
not counted (a build that was idle for a burst starts cold).  Each
instance's sink runs in a process of its own (loadgen.SinkProcess).

The old revision is checked out with `git worktree` under the instance
directory and gets its own .venv (`make install`, a few seconds with the
pip cache); its instance uses this tree's bench configuration and the old
tree's commands and daemons.  Run as root, as `make bench`.

Prints, per build: p50 and p90 of submission -> arrival, p50 to the 250.

--accept ROUNDS measures `smtp-source -s 1` instead (`make bench`'s serial
accept throughput, 2,000 messages per run, delivery to smtp-sink): the
builds take turns, ROUNDS runs each, in a random order per round; prints
the median and range of msg/s and the machine's busy CPU time per
message (/proc/stat, the load tools included).  --sessions N runs
`smtp-source -s N` instead (the concurrent accept workloads).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fulmar.queue import fsinfo  # noqa: E402
import instances as I  # noqa: E402
import loadgen  # noqa: E402
from run import drain, percentile, ensure_tools, smtp_source, EX_UNAVAILABLE  # noqa: E402

WARMUP = 2          # messages after a switch that are not counted


def old_tree(base: str, rev: str) -> str:
    """Check rev out under base and build its venv; its venv's bin/."""
    tree = os.path.join(base, "old-tree")
    subprocess.run(["git", "-C", I.REPO, "worktree", "add", "--detach", "-f", tree, rev],
                   check=True, capture_output=True)
    os.chmod(base, 0o755)
    subprocess.run(["make", "-C", tree, "install"], check=True, capture_output=True)
    return os.path.join(tree, ".venv", "bin")


def use_commands(inst: I.Instance, sbin: str) -> None:
    inst.postfix_cmd[0] = os.path.join(sbin, "postfix")
    inst.postqueue[0] = os.path.join(sbin, "postqueue")
    inst.sendmail[0] = os.path.join(sbin, "sendmail")


async def interleave(targets: dict[str, I.Instance], messages: int,
                     burst: int) -> dict[str, list[tuple[float, float]]]:
    arrivals = loadgen.Arrivals()
    sinks = [await loadgen.SinkProcess.start(inst.sink_port, arrivals)
             for inst in targets.values()]
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    names = list(targets)
    try:
        for n in range(0, messages, burst):
            random.shuffle(names)
            for name in names:
                for i in range(burst + WARMUP):
                    sample = await loadgen.timed_message(targets[name].smtpd_port,
                                                         "ab-%s-%d-%d" % (name, n, i), arrivals, 30)
                    if i >= WARMUP:
                        out[name].append(sample)
    finally:
        for sink in sinks:
            await sink.close()
    return out


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6]     # user nice system irq softirq


def accept_rounds(targets: dict[str, I.Instance], rounds: int, count: int = 2000,
                  sessions: int = 1, size: int = 1024) -> str:
    """Alternated smtp-source -s SESSIONS runs; one line per build."""
    rates: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, list[float]] = {name: [] for name in targets}
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    for inst in targets.values():
        inst.start_sink()
        base = inst.sent_count()
        smtp_source(inst, 1, 300, 1024)             # warm-up, not counted
        drain(inst, base + 300)
    names = list(targets)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            inst = targets[name]
            base = inst.sent_count()
            b0 = _busy_ticks()
            secs = smtp_source(inst, sessions, count, size)
            b1 = _busy_ticks()
            rates[name].append(count / secs)
            cpu[name].append((b1 - b0) * tick_ms / count)
            drain(inst, base + count)
    lines = ["build     msg/s (median, min-max)   busy ms/msg (median)"]
    for name in targets:
        r = rates[name]
        lines.append("%-8s %6.0f %6.0f-%-6.0f %16.3f" % (
            name, percentile(r, 50), min(r), max(r), percentile(cpu[name], 50)))
    return "\n".join(lines)


def summary(samples: dict[str, list[tuple[float, float]]]) -> str:
    lines = ["build     p50 ms  p90 ms  to 250 p50 ms  messages"]
    for name, s in samples.items():
        total = [t * 1000 for t, _ in s]
        to250 = [t * 1000 for _, t in s]
        lines.append("%-8s %7.3f %7.3f %14.3f %9d" % (
            name, percentile(total, 50), percentile(total, 90), percentile(to250, 50), len(s)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="HEAD", help="the revision to compare with (default HEAD)")
    ap.add_argument("--messages", type=int, default=600, help="counted messages per build")
    ap.add_argument("--burst", type=int, default=20, help="messages to one build before switching")
    ap.add_argument("--accept", type=int, metavar="ROUNDS",
                    help="alternate smtp-source -s 1 runs instead (ROUNDS per build)")
    ap.add_argument("--sessions", type=int, default=1,
                    help="with --accept: smtp-source -s SESSIONS (default 1)")
    ap.add_argument("--size", type=int, default=1024,
                    help="with --accept: message size, smtp-source -l (default 1024)")
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the instance directory")
    ap.add_argument("--dir", default="/tmp",
                    help="where the instance directory is made (default /tmp): "
                         "put it on another file system to compare there")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/ab.py: must run as root (the instances switch to mail_owner=postfix)",
              file=sys.stderr)
        return EX_UNAVAILABLE
    ensure_tools()
    base = tempfile.mkdtemp(prefix="fulmar-ab-", dir=args.dir)
    os.chmod(base, 0o755)
    print("bench/ab.py: queues on %s" % fsinfo.describe(base), flush=True)
    port0 = 21000 + (os.getpid() % 1000) * 10
    targets = {"new": I.Instance("fulmar", os.path.join(base, "new"), port0 + 1, port0 + 2),
               "old": I.Instance("fulmar", os.path.join(base, "old"), port0 + 3, port0 + 4)}
    if not args.no_postfix:
        targets["postfix"] = I.Instance("postfix", os.path.join(base, "postfix"), port0 + 5, port0 + 6)
    try:
        use_commands(targets["old"], old_tree(base, args.old))
        for inst in targets.values():
            inst.setup()
            inst.start()
        if args.accept:
            print(accept_rounds(targets, args.accept, sessions=args.sessions, size=args.size))
        else:
            samples = asyncio.run(interleave(targets, args.messages, args.burst))
            print(summary(samples))
    finally:
        for inst in targets.values():
            try:
                inst.stop()
            except Exception as exc:
                print("bench/ab.py: stopping %s: %s" % (inst.base, exc), file=sys.stderr)
        subprocess.run(["git", "-C", I.REPO, "worktree", "remove", "--force",
                        os.path.join(base, "old-tree")], capture_output=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
