"""bench/profile.py: where Fulmar's CPU goes, per daemon, as flame graphs (`make profile`).

Usage (as root, like bench/run.py)
    bench/profile.py [--daemon NAME ...] [--messages N] [--sessions S] [--length L]
                     [--rate HZ] [--quick]
    make profile                    all four hot daemons, 20,000 1 KB messages
    make profile QUICK=1            3,000 messages
    NAME is a Postfix program name: smtpd, cleanup, qmgr, smtp (default: all
    four), or master, bounce, pickup, local.

What it does
    Starts a Fulmar instance of its own (bench/instances.py, relaying to
    smtp-sink), sends a warm-up batch so every daemon process exists, then
    attaches `py-spy record --format raw --nolineno` to every process of
    each chosen daemon, runs `smtp-source -s S -m N -l L`, waits until the
    sink has everything and the queue is empty, and stops py-spy.  Per
    daemon it writes, under bench/results/:
        profile-<daemon>-<stamp>.svg        flame graph (all its processes merged)
        profile-<daemon>-<stamp>.collapsed  the merged stacks (flamegraph.pl input)
    and prints the top functions by self time.  By default only samples of
    the thread holding the GIL are kept (py-spy --gil): that is the
    daemon's Python CPU time.  Without it py-spy's idle filter counts
    uvloop's epoll wait and the thread pool's fsync()s as busy, so
    `Runner.run` and `_worker` would dominate; --wall shows that view
    (useful for where a daemon *waits*).  System calls made with the GIL
    held (uvloop's send(), os.unlink) are counted in the Python function
    that made them.  Compare with `cpu/msg <daemon>` in bench/run.py's
    table to know how much each daemon matters.

py-spy is installed into the venv on demand (`pip install py-spy`); it is
not a project dependency.  Exit 69 when it cannot be installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flamegraph  # noqa: E402
import instances as I  # noqa: E402

EX_UNAVAILABLE = 69
RESULTS = os.path.join(I.REPO, "bench", "results")
HOT = ("smtpd", "cleanup", "qmgr", "smtp")
WARMUP = 200


def ensure_py_spy() -> str:
    exe = os.path.join(I.VENV_BIN, "py-spy")
    if not os.path.exists(exe):
        print("profile: installing py-spy into the venv", file=sys.stderr)
        if subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", "py-spy"]).returncode != 0:
            print("profile: cannot install py-spy (pip install py-spy)", file=sys.stderr)
            sys.exit(EX_UNAVAILABLE)
    return exe


def source(inst: I.Instance, sessions: int, count: int, length: int) -> None:
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(length),
                    "-f", "bench@bench.test", "-t", "sink@remote.test",
                    "127.0.0.1:%d" % inst.smtpd_port], check=True)


def run(args, inst: I.Instance, daemons: list[str], count: int, spy: str, base: str,
        spies: list) -> None:
    """Start the instance, attach py-spy to each chosen daemon, run the load."""
    try:
        inst.setup()
        inst.start_sink()
        inst.start()
        source(inst, args.sessions, WARMUP, args.length)
        inst.wait_drained(WARMUP, 120)
        for proc in inst.processes():
            if proc.name in daemons:
                raw = os.path.join(base, "%s-%d.raw" % (proc.name, proc.pid))
                p = subprocess.Popen([spy, "record", "--pid", str(proc.pid), "--format", "raw",
                                      "--nolineno", "--rate", str(args.rate), "--output", raw]
                                     + ([] if args.wall else ["--gil"]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                spies.append((proc.name, p, raw))
        time.sleep(1.0)          # py-spy attaches
        t0 = time.monotonic()
        source(inst, args.sessions, count, args.length)
        inst.wait_drained(WARMUP + count, 600)
        print("profile: %d messages in %.1f s" % (count, time.monotonic() - t0))
    finally:
        for _name, p, _raw in spies:
            p.send_signal(signal.SIGINT)
        for _name, p, _raw in spies:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        inst.stop()


def report(args, daemons: list[str], count: int, stamp: str, spies: list) -> None:
    """Merge each daemon's raw stacks, write SVG and .collapsed, print the top."""
    for daemon in daemons:
        merged = flamegraph.Counter()
        n = 0
        for name, _p, raw in spies:
            if name == daemon and os.path.exists(raw):
                with open(raw, encoding="utf-8", errors="replace") as fh:
                    merged.update(flamegraph.parse_collapsed(fh.read()))
                n += 1
        if not merged:
            print("profile: no samples for %s" % daemon)
            continue
        stem = os.path.join(RESULTS, "profile-%s-%s" % (daemon, stamp))
        title = "Fulmar %s, %d process(es), %d x %d-byte messages, -s %d" % (
            daemon, n, count, args.length, args.sessions)
        with open(stem + ".svg", "w") as fh:
            fh.write(flamegraph.render_svg(merged, title))
        with open(stem + ".collapsed", "w") as fh:
            for stack, c in sorted(merged.items()):
                fh.write("%s %d\n" % (";".join(stack), c))
        total = sum(merged.values())
        print("\n== %s: %d samples (%.2f s at %d Hz) -> %s.svg" % (
            daemon, total, total / args.rate, args.rate, os.path.relpath(stem, I.REPO)))
        print("%6s %6s  %s" % ("self%", "total%", "function (file)"))
        for frame, self_n, total_n in flamegraph.top_functions(merged, args.top):
            print("%6.1f %6.1f  %s" % (100.0 * self_n / total, 100.0 * total_n / total, frame))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--daemon", action="append", default=[])
    ap.add_argument("--quick", action="store_true", default=bool(os.environ.get("QUICK")))
    ap.add_argument("--messages", type=int)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--wall", action="store_true",
                    help="sample every non-idle thread, not only the one holding the GIL")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("profile: must run as root", file=sys.stderr)
        return EX_UNAVAILABLE
    spy = ensure_py_spy()
    daemons = args.daemon or list(HOT)
    count = args.messages or (3000 if args.quick else 20000)

    base = tempfile.mkdtemp(prefix="fulmar-profile-", dir="/tmp")
    os.chmod(base, 0o755)          # mail_owner must reach the queue
    port0 = 20000 + (os.getpid() % 1000) * 10 + 5
    inst = I.Instance("fulmar", os.path.join(base, "fulmar"), port0, port0 + 1)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(RESULTS, exist_ok=True)
    spies: list[tuple[str, subprocess.Popen, str]] = []
    try:
        run(args, inst, daemons, count, spy, base, spies)
        report(args, daemons, count, stamp, spies)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
