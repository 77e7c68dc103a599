"""bench/instances.py: a Fulmar and a Postfix instance of the bench's own, on loopback.

Interface
    Instance(kind, base, smtpd_port, sink_port)   kind: "fulmar" | "postfix"
        .setup()        writes base/etc/{main,master}.cf, creates the queue dir
        .start() / .stop()   `postfix -c base/etc start|stop` (the right binary)
        .start_sink() / .stop_sink()   smtp-sink on sink_port (the relayhost)
        .processes() -> list[Proc]     master and all its descendants
        .queue_counts() -> dict        messages (not files being written) in incoming/active/deferred/hold/maildrop
        .sent_count() -> int           "status=sent" lines in the maillog
        .log_size() / .deferrals_since(offset) -> Counter
                                       the maillog's size now; the reasons of
                                       the "status=deferred" lines after offset
        .wait_drained(sent, timeout)   until that many are sent and the queue is
                                       empty; .longest_stall: the longest time in
                                       it without a new delivery (s)
        .postqueue / .sendmail         argv prefixes of the instance's commands
    Proc(pid, name, ...)  name is the Postfix program name (smtpd, cleanup, ...)
    memory(pids) -> (rss_kib, pss_kib) summed from /proc/<pid>/smaps_rollup
    cpu_ticks(pid) -> (utime, stime, cutime, cstime) from /proc/<pid>/stat

Both instances get the same main.cf essentials (relay everything from
127.0.0.0/8 to [127.0.0.1]:sink_port, no DNS, no per-client connection
limit, maillog_file) so the numbers compare like with like.  Postfix's
smtpd gets maxproc 1000 (one process per session; its default of 100
would cap the connection-scale workload); Fulmar's smtpd keeps "-"
(one worker per two CPUs, each serving many sessions).

The instances' commands and daemons run in the bench's environment
without its PYTHON* variables (instance_environ): a shell or CI runner
with PYTHONUNBUFFERED=1 would otherwise make every `postqueue -p` line a
write(2), which no admin's mailq pays.

Everything lives under `base` (mode 755 so that mail_owner can reach it);
nothing under /etc/postfix or /var/spool/postfix is touched.  Failure: a
start that does not open the SMTP port within START_TIMEOUT raises
RuntimeError with the tail of the maillog.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
POSTFIX_SBIN = "/usr/sbin"
MAIL_OWNER = "postfix"
START_TIMEOUT = 30.0
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
CLK_TCK = os.sysconf("SC_CLK_TCK")

COMMON_MAIN_CF = """\
mail_owner = {owner}
myhostname = mx.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination = $myhostname, localhost
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtpd_peername_lookup = no
smtpd_client_connection_count_limit = 0
queue_directory = {base}/q
maillog_file = {base}/log
message_size_limit = 10240000
"""

FULMAR_MAIN_CF = "compatibility_level = 3.9\n"

POSTFIX_MAIN_CF = """\
compatibility_level = 3.7
data_directory = {base}/data
setgid_group = postdrop
inet_protocols = ipv4
smtp_host_lookup = native
disable_dns_lookups = yes
maillog_file_prefixes = {base}
alias_maps =
alias_database =
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
"""

FULMAR_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
smtp unix - - n - - smtp
relay unix - - n - - smtp
local unix - n n - - local
"""

POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n - n - 1000 smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


@dataclass
class Proc:
    pid: int
    ppid: int
    name: str


def compile_tree(venv_bin: str) -> None:
    """Byte-compile the tree whose venv holds venv_bin, as root: its
    daemons run as mail_owner, who cannot write __pycache__, so a module
    edited since the last run as root would be compiled again by every
    process that starts (a few ms each; the long-lived daemons pay it
    once, at their start)."""
    tree = os.path.dirname(os.path.dirname(venv_bin))
    subprocess.run([os.path.join(venv_bin, "python"), "-m", "compileall", "-q",
                    "-x", r"/\.venv/|/\.git/|/tests/", tree],
                   capture_output=True, timeout=300)


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def proc_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (ppid, argv) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = _read("/proc/%s/stat" % entry)
            with open("/proc/%s/cmdline" % entry, "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        table[int(entry)] = (ppid, argv)
    return table


def program_name(argv: list[str]) -> str:
    """Postfix program name of a daemon: `python -m smtp_client` -> smtp, /usr/lib/.../smtpd -> smtpd."""
    if "-m" in argv:
        module = argv[argv.index("-m") + 1]
        return {"smtp_client": "smtp", "cleanup.pickup": "pickup"}.get(module, module)
    return os.path.basename(argv[0]) if argv else "?"


def memory(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over pids (processes that vanished count 0)."""
    rss = pss = 0
    for pid in pids:
        try:
            text = _read("/proc/%d/smaps_rollup" % pid)
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def cpu_ticks(pid: int) -> tuple[int, int, int, int] | None:
    """(utime, stime, cutime, cstime) in clock ticks; None if the process is gone.

    cutime/cstime are the children this process has reaped."""
    try:
        stat = _read("/proc/%d/stat" % pid)
    except OSError:
        return None
    f = stat[stat.rindex(")") + 2:].split()
    # fields after "(comm) ": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
    return int(f[11]), int(f[12]), int(f[13]), int(f[14])


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.settimeout(5.0)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _ready(entry) -> bool:
    try:
        return bool(entry.stat().st_mode & 0o100)    # qfile.READY_BIT
    except FileNotFoundError:
        return False


def instance_environ(environ, etc: str) -> dict[str, str]:
    """The environment of an instance's commands: environ without PYTHON*
    variables (module docstring), MAIL_CONFIG set to etc."""
    env = {k: v for k, v in environ.items() if not k.startswith("PYTHON")}
    env["MAIL_CONFIG"] = etc
    return env


class Instance:
    def __init__(self, kind: str, base: str, smtpd_port: int, sink_port: int):
        assert kind in ("fulmar", "postfix")
        self.kind = kind
        self.base = base
        self.etc = os.path.join(base, "etc")
        self.queue = os.path.join(base, "q")
        self.logfile = os.path.join(base, "log")
        self.longest_stall = 0.0
        self.smtpd_port = smtpd_port
        self.sink_port = sink_port
        self.sink: subprocess.Popen | None = None
        self._log_pos = 0
        self._sent = 0
        sbin = VENV_BIN if kind == "fulmar" else POSTFIX_SBIN
        self.postfix_cmd = [os.path.join(sbin, "postfix"), "-c", self.etc]
        self.postqueue = [os.path.join(sbin, "postqueue"), "-c", self.etc]
        self.sendmail = [os.path.join(sbin, "sendmail")]
        self.env = instance_environ(os.environ, self.etc)

    @property
    def label(self) -> str:
        return "Fulmar" if self.kind == "fulmar" else "Postfix"

    def setup(self) -> None:
        os.makedirs(self.etc, exist_ok=True)
        os.chmod(self.base, 0o755)
        fmt = {"base": self.base, "owner": MAIL_OWNER, "sink_port": self.sink_port,
               "port": self.smtpd_port}
        main = COMMON_MAIN_CF.format(**fmt)
        if self.kind == "fulmar":
            main += FULMAR_MAIN_CF
            master = FULMAR_MASTER_CF.format(**fmt)
        else:
            main += POSTFIX_MAIN_CF.format(**fmt)
            master = POSTFIX_MASTER_CF.format(**fmt)
            os.makedirs(self.queue, exist_ok=True)
            data = os.path.join(self.base, "data")
            os.makedirs(data, exist_ok=True)
            shutil.chown(data, MAIL_OWNER)
        with open(os.path.join(self.etc, "main.cf"), "w") as fh:
            fh.write(main)
        with open(os.path.join(self.etc, "master.cf"), "w") as fh:
            fh.write(master)

    def _run(self, verb: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.postfix_cmd + [verb], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def start(self) -> None:
        if self.kind == "fulmar":
            compile_tree(os.path.dirname(self.postfix_cmd[0]))
        res = self._run("start")
        if res.returncode != 0 or not wait_port(self.smtpd_port, START_TIMEOUT):
            raise RuntimeError("%s did not start (rc=%s): %s %s\n%s" % (
                self.label, res.returncode, res.stdout, res.stderr, self.log_tail()))
        # qmgr and the rest start with master; give them a moment to be listening
        time.sleep(0.5)

    def stop(self) -> None:
        if self.master_pid():
            self._run("stop")
        self.stop_sink()

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(_read(self.logfile).splitlines()[-n:])
        except OSError:
            return "(no maillog)"

    def start_sink(self) -> None:
        if self.sink is None:
            self.sink = subprocess.Popen(
                ["smtp-sink", "-u", MAIL_OWNER, "127.0.0.1:%d" % self.sink_port, "1000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(self.sink_port, 10.0)

    def stop_sink(self) -> None:
        if self.sink is not None:
            self.sink.send_signal(signal.SIGTERM)
            try:
                self.sink.wait(10)
            except subprocess.TimeoutExpired:
                self.sink.kill()
                self.sink.wait()
            self.sink = None

    def master_pid(self) -> int | None:
        try:
            pid = int(_read(os.path.join(self.queue, "pid", "master.pid")).split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def processes(self) -> list[Proc]:
        root = self.master_pid()
        if root is None:
            return []
        table = proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _argv) in table.items():
            children.setdefault(ppid, []).append(pid)
        out, todo = [], [root]
        while todo:
            pid = todo.pop()
            if pid in table:
                out.append(Proc(pid, table[pid][0], program_name(table[pid][1])))
                todo.extend(children.get(pid, []))
        return out

    def queue_counts(self) -> dict[str, int]:
        counts = {}
        for q in QUEUES:
            n = 0
            stack = [os.path.join(self.queue, q)]
            while stack:
                try:
                    with os.scandir(stack.pop()) as it:
                        for e in it:
                            if e.is_dir(follow_symlinks=False):
                                stack.append(e.path)
                            elif not e.name.startswith(".") and (q != "incoming" or _ready(e)):
                                # A dot-file, or a file in incoming/ without
                                # its ready bit, is being written (or is one
                                # of cleanup's spares): not a queued message.
                                n += 1
                except OSError:
                    pass
            counts[q] = n
        return counts

    def queue_total(self) -> int:
        return sum(self.queue_counts().values())

    def sent_count(self) -> int:
        """Cumulative count of status=sent log lines (reads only what is new)."""
        try:
            with open(self.logfile, "rb") as fh:
                fh.seek(self._log_pos)
                data = fh.read()
        except OSError:
            return self._sent
        cut = data.rfind(b"\n") + 1
        self._sent += data[:cut].count(b"status=sent")
        self._log_pos += cut
        return self._sent

    def wait_drained(self, expect_sent: int, timeout: float) -> bool:
        """Until the maillog shows expect_sent deliveries in all and the queue is empty."""
        start = time.monotonic()
        deadline = start + timeout
        last, progress = self.sent_count(), start
        self.longest_stall = 0.0
        while True:
            now = time.monotonic()
            sent = self.sent_count()
            if sent != last:
                last, progress = sent, now
            self.longest_stall = max(self.longest_stall, now - progress)
            if sent >= expect_sent and self.queue_total() == 0:
                return True
            if now >= deadline:
                return False
            time.sleep(0.02)

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def deferrals_since(self, offset: int) -> collections.Counter:
        """Why messages were deferred after offset in the maillog: the text
        in parentheses of each "status=deferred" line, queue IDs and ports
        left as they are (one destination here)."""
        try:
            with open(self.logfile, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return collections.Counter()
        reasons: collections.Counter = collections.Counter()
        for line in data.decode("utf-8", "replace").splitlines():
            at = line.find("status=deferred")
            if at >= 0:
                reasons[line[at + len("status=deferred"):].strip(" ()")] += 1
        return reasons
