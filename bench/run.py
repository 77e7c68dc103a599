"""bench/run.py: Fulmar and Postfix side by side (`make bench`, `make bench QUICK=1`).

Usage
    bench/run.py [--quick] [--reps N] [--only SUBSTRING ...] [--queue-size N]
                 [--keep] [--base DIR]
    QUICK=1 in the environment is the same as --quick (the Makefile passes it).

What it does (bench/README.md has the details and the JSON shape)
    1. Checks for Debian's postfix package (smtp-source, smtp-sink, Postfix
       itself); installs it with apt-get when missing and running as root,
       otherwise exits 69 with a message saying what to install.
    2. Sets up a Fulmar and a Postfix instance under /tmp/fulmar-bench-XXXX
       (bench/instances.py), each relaying to its own smtp-sink, and starts
       both.
    3. Runs each workload against both, alternating which goes first, REPS
       times (serial accept, -s 1: SERIAL_REPS shorter rounds); prints one
       table and writes bench/results/<UTC stamp>.json.
    4. Stops everything it started (`postfix -c DIR stop`, the sinks by
       PID) and removes the base directory unless --keep.

Must run as root (both instances need to switch to mail_owner = postfix).
Exit status: 0 when every workload ran, 69 when a prerequisite is
missing, 1 when an instance failed to start or a workload failed (the
table and JSON still hold the workloads that ran; a command that is not
available yet, e.g. postqueue, is an "n/a" cell, not a failure).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fulmar.queue import fsinfo  # noqa: E402
import instances as I  # noqa: E402
import loadgen  # noqa: E402
import report  # noqa: E402

EX_UNAVAILABLE = 69
RESULTS = os.path.join(I.REPO, "bench", "results")
SENDER, RCPT = "bench@bench.test", "sink@remote.test"
NOFILE = 65536                 # 10,000 idle sessions + the bench's own sockets
DRAIN_TIMEOUT = 600.0
FLUSH_STALL = 10.0             # s without a delivery in a flush worth a note (flush_note)
CPU_SAMPLE = 0.05              # seconds between /proc/<pid>/stat reads during a CPU run
HWM_POLL = 0.005               # seconds between VmHWM reads of a timed command

# The latency workload alternates the instances in short rounds, each
# round a fresh set of messages for one instance: on this kind of shared
# VM one instance's serial latency drifts by +-20 % within minutes, and
# two long rounds each (as the other workloads run) left the ratio at the
# mercy of that drift (0.81x to 1.03x across three runs of one build,
# docs/performance.md, session 10).  p50 is the median of the rounds'
# medians (min-max: the rounds'); p99 is taken over all of an instance's
# messages.  Each round runs twice per instance: with the sink in a
# process of its own (the rows "latency p50", "latency to 250 p50",
# "latency p99") and with it on the client's event loop, as sessions 1-11
# measured (LATENCY_LOOP; bench/loadgen.py says why it moved).
LATENCY_LOOP = "latency p50, sink in client loop"
#
# The serial workloads (latency, then accept -s 1) run first, right after
# a warm-up: on an ext4 file system without a journal, queue files
# deleted in the last minutes make new inodes slow to allocate
# (find_inode_bit skips and checks every recently deleted one), and a
# -s 1 run right after the -s 20 bursts measured that effect on
# Postfix (-s 1 837 -> 445 msg/s), not its serial path
# (docs/performance.md, "Where it stood (end of session 7)").
WARMUP = 300                   # -s 1 messages to each instance before anything is timed
# The throughput workloads run each instance REPS rounds, alternating which
# goes first: an even count puts each first equally often, and the median
# of four rounds lets one slow round on either side pass (with three, one
# dip -- the VM's drift, a drain that just deleted 100 MB -- decided the
# 100 KB ratio: docs/performance.md, session 10).
#
# Serial accept (-s 1) runs SERIAL_REPS shorter rounds instead: each
# build's -s 1 runs spread over 15-20 % within one run, so the median of
# four could not tell 0.97x from 1.03x (sessions 16-17 measured 0.96x to
# 1.05x of one build); twelve rounds of 800 messages take about as long
# as four of 2,000 did (docs/performance.md, session 18).
SERIAL_REPS = 12
FULL = {
    "reps": 4,
    "serial_reps": SERIAL_REPS,
    "accept": [(1, 800, 1024), (20, 5000, 1024), (50, 5000, 1024), (20, 1000, 102400)],
    "e2e": (20, 5000, 1024),
    # The target covers 100 KB messages end to end too.
    "e2e_more": [(20, 1000, 102400)],
    "latency": (8, 50),           # alternated rounds, messages per round (comment above)
    "conns": [100, 1000, 10000],
    "queue": 100000,              # the figure; --queue-size for less
    "sendmail": 500,
}
QUICK = {
    "reps": 3,
    "accept": [(20, 600, 1024)],
    "e2e": (20, 600, 1024),
    "e2e_more": [],
    "latency": (2, 20),
    "conns": [100],
    "queue": 0,
    "sendmail": 0,
}


def log(msg: str) -> None:
    print("bench: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- prerequisites

def ensure_tools() -> None:
    if shutil.which("smtp-source") and os.path.exists("/usr/sbin/postfix"):
        return
    if os.geteuid() != 0:
        log("smtp-source/smtp-sink/postfix missing: run `apt-get install postfix` as root, "
            "or run `make bench` as root")
        sys.exit(EX_UNAVAILABLE)
    log("installing Debian's postfix package (smtp-source, smtp-sink, reference Postfix)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input="postfix postfix/main_mailer_type select "
                   "No configuration\n", text=True, env=env)
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "postfix"]):
        if subprocess.run(argv, env=env).returncode != 0:
            log("%s failed" % " ".join(argv))
            sys.exit(EX_UNAVAILABLE)
    # the package's own instance is not ours to run: leave it as installed


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- helpers

def smtp_source(inst: I.Instance, sessions: int, count: int, length: int) -> float:
    """Wall seconds for smtp-source to hand over `count` messages."""
    argv = ["smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(length),
            "-f", SENDER, "-t", RCPT, "127.0.0.1:%d" % inst.smtpd_port]
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=DRAIN_TIMEOUT)
    elapsed = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError("smtp-source against %s: %s" % (inst.label, res.stderr.strip()))
    return elapsed


def drain(inst: I.Instance, expect: int) -> None:
    if not inst.wait_drained(expect, DRAIN_TIMEOUT):
        raise RuntimeError("%s did not deliver everything: sent %d of %d, queue %s" % (
            inst.label, inst.sent_count(), expect, inst.queue_counts()))


class CpuSampler:
    """CPU used by an instance's processes over an interval, per program name.

    /proc/<pid>/stat is read every CPU_SAMPLE seconds, so a process that
    exits during the run (Postfix's smtpd after max_use connections) is
    still counted under its name up to its last sample; what master's
    reaped-children counters gained beyond those last samples is
    "exited (unattributed)".  A process alive at the start counts from its
    ticks then; one born later counts from zero.
    """

    def __init__(self, inst: I.Instance):
        self.inst = inst
        self.first: dict[int, tuple[int, int]] = {}
        self.last: dict[int, tuple[str, int, int]] = {}
        self.master_first = (0, 0)
        self.master_last = (0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, initial: bool = False) -> None:
        for p in self.inst.processes():
            t = I.cpu_ticks(p.pid)
            if t is None:
                continue
            if initial:
                self.first[p.pid] = (t[0], t[1])
            name = p.name
            if name == "?":
                # an exiting process has no cmdline any more: keep its earlier name
                name = self.last[p.pid][0] if p.pid in self.last else "exited (unattributed)"
            self.last[p.pid] = (name, t[0], t[1])
            if p.name == "master":
                if initial:
                    self.master_first = (t[2], t[3])
                self.master_last = (t[2], t[3])

    def start(self) -> None:
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(CPU_SAMPLE):
            self._sample()

    def stop(self) -> dict[str, tuple[int, int]]:
        """program name -> (user ticks, system ticks) spent since start()."""
        self._stop.set()
        self._thread.join()
        alive = {p.pid for p in self.inst.processes()}
        self._sample()
        out: dict[str, list[int]] = {}
        vanished_u = vanished_s = 0
        for pid, (name, u, s) in self.last.items():
            u0, s0 = self.first.get(pid, (0, 0))
            acc = out.setdefault(name, [0, 0])
            acc[0] += u - u0
            acc[1] += s - s0
            if pid not in alive:
                vanished_u += u
                vanished_s += s
        rest_u = self.master_last[0] - self.master_first[0] - vanished_u
        rest_s = self.master_last[1] - self.master_first[1] - vanished_s
        out["exited (unattributed)"] = [max(0, rest_u), max(0, rest_s)]
        return {k: (v[0], v[1]) for k, v in out.items()}


def percentile(samples: list[float], pct: float) -> float:
    s = sorted(samples)
    k = max(0, min(len(s) - 1, int(round(pct / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def flush_note(label: str, deferred, stall: float) -> str:
    """What went wrong in a flush that still delivered everything: the
    messages deferred again during it (with the commonest reason) and the
    longest time without a delivery, when it exceeds FLUSH_STALL; "" for a
    clean flush.  (One run of Fulmar's took 338 s instead of ~45 and left
    nothing to tell why: docs/performance.md, session 12.)"""
    parts = []
    total = sum(deferred.values())
    if total:
        reason, _ = deferred.most_common(1)[0]
        parts.append("%d deferred again during the flush (%s)" % (total, reason[:120]))
    if stall > FLUSH_STALL:
        parts.append("no delivery for %.0f s" % stall)
    if not parts:
        return ""
    note = "%s: %s" % (label, "; ".join(parts))
    log("flush: " + note)
    return note


class Bench:
    def __init__(self, plan: dict, insts: list[I.Instance], only: list[str]):
        self.plan = plan
        self.insts = insts
        self.only = only
        self.rows: dict[str, report.Row] = {}
        self.order: list[str] = []

    def wanted(self, name: str) -> bool:
        return not self.only or any(o in name for o in self.only)

    def add(self, workload: str, unit: str, inst: I.Instance, value: float | None,
            note: str = "") -> None:
        row = self.rows.get(workload)
        if row is None:
            row = self.rows[workload] = report.Row(workload, unit)
            self.order.append(workload)
        if note:
            row.note = note
        if value is not None:
            (row.fulmar_samples if inst.kind == "fulmar" else row.postfix_samples).append(value)

    def result_rows(self) -> list[report.Row]:
        return [self.rows[w] for w in self.order]

    def alternating(self, rep: int) -> list[I.Instance]:
        return self.insts if rep % 2 == 0 else list(reversed(self.insts))

    # ------------------------------------------------------------ workloads

    def warm_up(self) -> None:
        """Not timed: both instances have started every process they use."""
        for inst in self.insts:
            base = inst.sent_count()
            smtp_source(inst, 1, WARMUP, 1024)
            drain(inst, base + WARMUP)

    def accept(self) -> None:
        for sessions, count, length in self.plan["accept"]:
            name = "accept throughput -s %d -l %d" % (sessions, length)
            if not self.wanted(name):
                continue
            reps = self.plan["reps"]
            if sessions == 1:
                reps = max(reps, self.plan.get("serial_reps", 0))
            for rep in range(reps):
                for inst in self.alternating(rep):
                    base = inst.sent_count()
                    secs = smtp_source(inst, sessions, count, length)
                    self.add(name, "msg/s", inst, count / secs)
                    drain(inst, base + count)
                    log("%s %s: %.0f msg/s" % (name, inst.label, count / secs))

    def e2e(self) -> None:
        # The first (1 KB) run also gives the cpu/msg rows.
        for i, (sessions, count, length) in enumerate([self.plan["e2e"], *self.plan["e2e_more"]]):
            self._e2e(sessions, count, length, cpu=i == 0)

    def _e2e(self, sessions: int, count: int, length: int, cpu: bool) -> None:
        name = "end-to-end throughput -s %d -l %d" % (sessions, length)
        if not self.wanted(name) and not (cpu and self.wanted("cpu")):
            return
        for rep in range(self.plan["reps"]):
            for inst in self.alternating(rep):
                base = inst.sent_count()
                sampler = CpuSampler(inst) if cpu else None
                if sampler is not None:
                    sampler.start()
                t0 = time.monotonic()
                smtp_source(inst, sessions, count, length)
                drain(inst, base + count)
                secs = time.monotonic() - t0
                self.add(name, "msg/s", inst, count / secs)
                if sampler is None:
                    log("%s %s: %.0f msg/s" % (name, inst.label, count / secs))
                    continue
                used = sampler.stop()
                per_msg = 1000.0 / I.CLK_TCK / count
                total = kernel = 0.0
                for proc, (user, system) in sorted(used.items()):
                    total += (user + system) * per_msg
                    kernel += system * per_msg
                    self.add("cpu/msg %s" % proc, "ms", inst, (user + system) * per_msg)
                self.add("cpu/msg all processes", "ms", inst, total)
                self.add("cpu/msg all processes, kernel part", "ms", inst, kernel)
                log("%s %s: %.0f msg/s, %.2f ms CPU/msg" % (name, inst.label, count / secs, total))
        # a program that used no CPU on either side is noise; one that exists on
        # one side only gets an n/a cell on the other, not a fake zero
        for w in list(self.order):
            if w.startswith("cpu/msg "):
                row = self.rows[w]
                if not any(row.fulmar_samples):
                    row.fulmar_samples.clear()
                if not any(row.postfix_samples):
                    row.postfix_samples.clear()
                if not row.fulmar_samples and not row.postfix_samples:
                    self.order.remove(w)
                    del self.rows[w]

    def latency(self) -> None:
        rounds, count = self.plan["latency"]
        if not count or not self.wanted("latency"):
            return
        pooled: dict[str, list[float]] = {inst.kind: [] for inst in self.insts}
        for rnd in range(rounds):
            for inst in self.alternating(rnd):
                # The sink in a process of its own (the measure), then on the
                # client's loop (as in sessions 1-11; loadgen's docstring).
                for sink in (loadgen.PROCESS, loadgen.LOOP):
                    base = inst.sent_count()
                    inst.stop_sink()
                    try:
                        samples = loadgen.latency_run(inst.smtpd_port, inst.sink_port, count,
                                                      tag="%s-%d-%s" % (inst.kind, rnd, sink),
                                                      sink=sink)
                    finally:
                        inst.start_sink()
                    drain(inst, base + count)
                    ms = [total * 1000.0 for total, _accepted in samples]
                    if sink == loadgen.LOOP:
                        self.add(LATENCY_LOOP, "ms", inst, statistics.median(ms))
                        continue
                    accepted = [acc * 1000.0 for _total, acc in samples]
                    pooled[inst.kind] += ms
                    self.add("latency p50", "ms", inst, statistics.median(ms))
                    # how much of it is the submission itself (connect to the 250 after DATA)
                    self.add("latency to 250 p50", "ms", inst, statistics.median(accepted))
        for inst in self.insts:
            ms = pooled[inst.kind]
            self.add("latency p99", "ms", inst, percentile(ms, 99))
            log("latency %s: p50 %.2f ms p99 %.1f ms (%d messages, %d rounds)" % (
                inst.label, statistics.median(ms), percentile(ms, 99), len(ms), rounds))

    def connections(self) -> None:
        if self.plan["conns"] and self.wanted("idle"):
            for inst in self.insts:
                rss, pss = I.memory([p.pid for p in inst.processes()])
                self.add("idle sessions 0: RSS", "MiB", inst, rss / 1024.0)
                self.add("idle sessions 0: PSS", "MiB", inst, pss / 1024.0)
        for level in self.plan["conns"]:
            name = "idle sessions %d" % level
            if not self.wanted(name) and not self.wanted("idle"):
                continue
            for inst in self.insts:
                if inst.kind == "postfix" and level > 1000:
                    # one process per session: 10,000 would need 10,000 smtpd processes
                    for what, unit in (("held", "sessions"), ("RSS", "MiB"), ("PSS", "MiB")):
                        self.add("%s: %s" % (name, what), unit, inst, None,
                                 note="Postfix not run: its smtpd maxproc is 1000 here")
                    continue
                holder = loadgen.SessionHolder()
                try:
                    held = holder.open(inst.smtpd_port, level, timeout=30.0)
                    time.sleep(0.5)
                    rss, pss = I.memory([p.pid for p in inst.processes()])
                finally:
                    holder.close()
                self.add("%s: held" % name, "sessions", inst, held)
                self.add("%s: RSS" % name, "MiB", inst, rss / 1024.0)
                self.add("%s: PSS" % name, "MiB", inst, pss / 1024.0)
                log("%s %s: held %d, RSS %.0f MiB, PSS %.0f MiB" % (
                    name, inst.label, held, rss / 1024, pss / 1024))
                time.sleep(1.0)

    def queue_scale(self) -> None:
        n = self.plan["queue"]
        if not n or not self.wanted("queue"):
            return
        for inst in self.insts:
            prefix = "queue %d" % n
            qmgr = [p.pid for p in inst.processes() if p.name == "qmgr"]
            self.add("queue 0: qmgr RSS", "MiB", inst, I.memory(qmgr)[0] / 1024.0)
            inst.stop_sink()                      # destination refuses
            smtp_source(inst, 20, n, 1024)
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while time.monotonic() < deadline:
                c = inst.queue_counts()
                if c["deferred"] >= n and c["incoming"] + c["active"] == 0:
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError("%s: messages did not all reach deferred: %s" % (
                    inst.label, inst.queue_counts()))
            qmgr = [p.pid for p in inst.processes() if p.name == "qmgr"]
            self.add("%s: qmgr RSS" % prefix, "MiB", inst, I.memory(qmgr)[0] / 1024.0)
            for flag in ("-p", "-j"):
                secs, kib, ok = self.timed_command(inst, inst.postqueue + [flag])
                note = "" if ok else "postqueue %s not available" % flag
                self.add("%s: postqueue %s time" % (prefix, flag), "s", inst,
                         secs if ok else None, note)
                self.add("%s: postqueue %s peak RSS" % (prefix, flag), "MiB", inst,
                         kib / 1024.0 if ok else None, note)
            base = inst.sent_count()
            mark = inst.log_size()
            inst.start_sink()
            t0 = time.monotonic()
            res = subprocess.run(inst.postqueue + ["-f"], env=inst.env, capture_output=True)
            if res.returncode == 0 and inst.wait_drained(base + n, DRAIN_TIMEOUT):
                self.add("%s: deliver after flush" % prefix, "s", inst, time.monotonic() - t0,
                         flush_note(inst.label, inst.deferrals_since(mark), inst.longest_stall))
            else:
                self.add("%s: deliver after flush" % prefix, "s", inst, None,
                         "flush failed or timed out")
                log("%s: flush failed: %s %s" % (inst.label, res.stderr, inst.queue_counts()))
            log("queue scale %s done" % inst.label)

    def timed_command(self, inst: I.Instance, argv: list[str]) -> tuple[float, int, bool]:
        """(seconds, peak RSS KiB, success) of one command, output discarded.

        The peak is the child's VmHWM polled from /proc until it exits: wait4's
        ru_maxrss would include the bench's own RSS, which the child has
        before its exec.
        """
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env=inst.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        hwm = 0
        marker = inst.etc.encode()
        while proc.poll() is None:
            try:
                # the first polls may still see the forked bench before its exec
                with open("/proc/%d/cmdline" % proc.pid, "rb") as fh:
                    execed = marker in fh.read()
                with open("/proc/%d/status" % proc.pid) as fh:
                    text = fh.read()
                if execed:
                    for line in text.splitlines():
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(HWM_POLL)
        secs = time.monotonic() - t0
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.stderr.close()
        ok = proc.returncode == 0 and "not implemented" not in err
        if not ok:
            log("%s %s: rc=%s %s" % (inst.label, " ".join(argv[-1:]), proc.returncode, err[:200]))
        return secs, hwm, ok

    def sendmail(self) -> None:
        n = self.plan["sendmail"]
        if not n or not self.wanted("sendmail"):
            return
        name = "sendmail throughput (submit+deliver)"
        msg = ("From: %s\nTo: %s\nSubject: bench\n\n" % (SENDER, RCPT) + "z" * 70 + "\n") * 1
        msg += ("w" * 78 + "\n") * 12
        for inst in self.insts:
            base = inst.sent_count()
            t0 = time.monotonic()
            ok = True
            for _ in range(n):
                res = subprocess.run(inst.sendmail + ["-i", "-f", SENDER, RCPT], input=msg.encode(),
                                     env=inst.env, capture_output=True)
                if res.returncode != 0:
                    ok = False
                    log("%s sendmail: rc=%d %s" % (inst.label, res.returncode, res.stderr[:200]))
                    break
            if ok and inst.wait_drained(base + n, DRAIN_TIMEOUT):
                self.add(name, "msg/s", inst, n / (time.monotonic() - t0))
            else:
                self.add(name, "msg/s", inst, None, "sendmail failed or mail not delivered")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=bool(os.environ.get("QUICK")))
    ap.add_argument("--reps", type=int)
    ap.add_argument("--only", action="append", default=[],
                    help="run only workloads whose name contains this (repeatable)")
    ap.add_argument("--queue-size", type=int)
    ap.add_argument("--keep", action="store_true", help="keep the instance directory")
    ap.add_argument("--base", help="instance directory (default: a new /tmp/fulmar-bench-XXXX)")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        log("must run as root (both instances switch to mail_owner=postfix)")
        return EX_UNAVAILABLE
    ensure_tools()
    raise_nofile()
    plan = dict(QUICK if args.quick else FULL)
    if args.reps:
        plan["reps"] = args.reps
    if args.queue_size is not None:
        plan["queue"] = args.queue_size

    base = args.base or tempfile.mkdtemp(prefix="fulmar-bench-", dir="/tmp")
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    port0 = 20000 + (os.getpid() % 1000) * 10
    insts = [I.Instance("fulmar", os.path.join(base, "fulmar"), port0 + 1, port0 + 2),
             I.Instance("postfix", os.path.join(base, "postfix"), port0 + 3, port0 + 4)]
    bench = Bench(plan, insts, args.only)
    started = time.monotonic()
    # other work on the machine skews everything: say how busy it was
    log("load average at start: %.1f %.1f %.1f" % os.getloadavg())
    # and where the queues are: it decides much of the kernel's share
    log("queues on %s" % fsinfo.describe(base))
    rc = 0
    try:
        for inst in insts:
            inst.setup()
            inst.start_sink()
            inst.start()
            log("%s up on 127.0.0.1:%d (sink %d), %s" % (inst.label, inst.smtpd_port,
                                                          inst.sink_port, inst.base))
        for step in (bench.warm_up, bench.latency, bench.accept, bench.e2e,
                     bench.connections, bench.queue_scale, bench.sendmail):
            try:
                step()
            except Exception:          # one broken workload must not lose the others
                log("workload %s failed:\n%s" % (step.__name__, traceback.format_exc()))
                rc = 1
    except Exception as exc:
        log("setup failed: %s" % exc)
        return 1
    finally:
        for inst in insts:
            try:
                inst.stop()
            except Exception as exc:
                log("stopping %s: %s" % (inst.label, exc))
        if not args.keep and not args.base:
            shutil.rmtree(base, ignore_errors=True)
    rows = bench.result_rows()
    if not rows:
        log("no workload ran")
        return 1
    print(report.format_table(rows))
    path = report.write_json(rows, RESULTS)
    log("wrote %s (%.0f s); load average at end: %.1f %.1f %.1f" % (
        (os.path.relpath(path, I.REPO), time.monotonic() - started) + os.getloadavg()))
    return rc


if __name__ == "__main__":
    sys.exit(main())
