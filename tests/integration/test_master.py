"""master and the `postfix` command, against real processes.

The daemons here are a throwaway stdlib program
(support/dummy_daemon/dummy_daemon.py) that master runs through its test
hook FULMAR_EXTRA_COMMANDS=dummy=<path>: it listens on the inherited
sockets, greets each connection with a JSON line naming its pid and
service, echoes one line and closes.  The service named "crasher" exits 1
before it is ready.  So these tests exercise master alone: listeners,
worker counts, restarts, throttling, reload, stop, the pid lock and the
`postfix` command's texts and exit codes.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from support.mail import children
from support.addrs import ALLOCATOR  # noqa: E402

from master import listen, pidfile  # noqa: E402
from master.throttle import MIN_HEALTHY_UPTIME  # noqa: E402

DUMMY = HERE / "support" / "dummy_daemon" / "dummy_daemon.py"
TIMEOUT = 30.0
STEP = 0.05


def _mail_owner() -> str:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name
    return os.environ.get("FULMAR_TEST_MAIL_OWNER", "nobody")


def wait_for(predicate, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(STEP)


def hello(addr, family=socket.AF_INET, line=b"ping"):
    """Connect, read the greeting, send a line, check the echo; the greeting as a dict."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(addr)
        f = s.makefile("rb")
        greeting = json.loads(f.readline())
        s.sendall(line + b"\n")
        assert f.readline() == b"echo: " + line + b"\n"
        return greeting


class Instance:
    def __init__(self, master_cf: str, main_cf: dict[str, str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="fm-"))
        os.chmod(self.dir, 0o755)
        self.etc = self.dir / "etc"
        self.etc.mkdir()
        self.queue = self.dir / "queue"
        self.maillog = self.dir / "maillog"
        settings = {
            "queue_directory": str(self.queue),
            "maillog_file": str(self.maillog),
            "mail_owner": _mail_owner(),
            "service_throttle_time": "60s",
            "inet_protocols": "all",
            # Two workers per service whatever the machine's CPU count
            # (the default is one per two CPUs): the tests count them.
            "default_worker_processes": "2",
        }
        if os.geteuid() == 0:
            settings["setgid_group"] = os.environ.get("FULMAR_TEST_SETGID_GROUP", "nogroup")
        settings.update(main_cf or {})
        self.write_main_cf(settings)
        (self.etc / "master.cf").write_text(master_cf)
        self.env = dict(os.environ, FULMAR_EXTRA_COMMANDS=f"dummy={DUMMY}")
        self.env.pop("MAIL_CONFIG", None)
        self.seen: set[int] = set()

    def write_main_cf(self, settings):
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))

    def postfix(self, *args, timeout=TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fulmar.cli.postfix", "-c", str(self.etc),
                               *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def start(self):
        r = self.postfix("start")
        assert r.returncode == 0, r.stderr + self.log()
        return r

    @property
    def pid(self) -> int | None:
        return pidfile.running_pid(pidfile.pid_path(str(self.queue)))

    def workers(self) -> set[int]:
        pid = self.pid
        kids = children(pid) if pid else set()
        self.seen |= kids
        return kids

    def wait_workers(self, predicate, what):
        def check():
            w = self.workers()
            return w if predicate(w) else None
        return wait_for(check, what=what)

    def log(self) -> str:
        try:
            return self.maillog.read_text()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=TIMEOUT):
        return wait_for(lambda: re.search(pattern, self.log()), timeout, f"log line {pattern!r}")

    def cleanup(self):
        if self.pid:
            self.seen.add(self.pid)
            self.postfix("stop")
        for pid in self.seen:          # only processes this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def make_instance():
    made: list[Instance] = []

    def make(master_cf, main_cf=None):
        inst = Instance(master_cf, main_cf)
        made.append(inst)
        return inst
    yield make
    for inst in made:
        inst.cleanup()


def test_start_status_second_master_and_graceful_stop(make_instance):
    host = ALLOCATOR.host()
    port = ALLOCATOR.port(host)
    inst = make_instance(f"{host}:{port} inet n - n - 2 dummy\n"
                         f"echo unix - - n - 1 dummy -o foo=bar\n"
                         f"tlsmgr unix - - n 1000? 1 tlsmgr\n"
                         f"foo unix - - n - 1 nosuchcommand\n")
    r = inst.postfix("status")
    assert r.returncode == 1
    assert r.stderr == "postfix/postfix-script: the Postfix mail system is not running\n"

    r = inst.start()
    assert "postfix/postfix-script: starting the Postfix mail system" in r.stderr
    pid = inst.pid
    assert pid and os.path.exists(f"/proc/{pid}")
    raw = Path(pidfile.pid_path(str(inst.queue))).read_bytes()
    assert raw == b"%32d\n" % pid
    r = inst.postfix("status")
    assert r.returncode == 0
    assert r.stderr == f"postfix/postfix-script: the Postfix mail system is running: PID: {pid}\n"

    # 2 inet workers + 1 unix worker; tlsmgr (built into Fulmar's daemons) is
    # skipped silently, an unknown command with a warning
    wait_for(lambda: len(inst.workers()) == 3, what="3 workers")
    inst.wait_log(r"postfix/master\[\d+\]: daemon started -- version \S+, configuration "
                  + re.escape(str(inst.etc)))
    assert "warning: service foo: command nosuchcommand is not implemented, skipped" in inst.log()
    assert "tlsmgr" not in inst.log()
    pids = {hello((host, port))["pid"] for _ in range(40)}
    assert pids <= inst.workers()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(inst.queue / "private" / "echo"))
        greeting = json.loads(s.makefile("rb").readline())
    assert greeting["service"] == "echo" and greeting["overrides"] == {"foo": "bar"}
    assert os.stat(inst.queue / "private" / "echo").st_mode & 0o777 == 0o666

    r = inst.postfix("start")
    assert r.returncode == 1
    assert "postfix/postfix-script: fatal: the Postfix mail system is already running" in r.stderr
    second = subprocess.run([sys.executable, "-I", "-m", "master", "-c", str(inst.etc)],
                            env=inst.env, capture_output=True, text=True, timeout=TIMEOUT)
    assert second.returncode == 1
    assert "unable to set exclusive lock" in second.stderr
    assert inst.pid == pid

    # stop is graceful: a connection open before the stop is still served
    workers = inst.workers()
    conn = socket.create_connection((host, port), timeout=TIMEOUT)
    f = conn.makefile("rb")
    json.loads(f.readline())
    stopper = subprocess.Popen([sys.executable, "-m", "fulmar.cli.postfix", "-c", str(inst.etc),
                                "stop"], env=inst.env, stderr=subprocess.PIPE, text=True)
    inst.wait_log(r"postfix/master\[\d+\]: terminating on signal 15")
    time.sleep(0.3)
    conn.sendall(b"late\n")
    assert f.readline() == b"echo: late\n"
    conn.close()
    assert stopper.wait(TIMEOUT) == 0
    assert "postfix/postfix-script: stopping the Postfix mail system" in stopper.stderr.read()
    assert inst.pid is None
    wait_for(lambda: not any(os.path.exists(f"/proc/{w}") for w in workers), what="workers gone")
    r = inst.postfix("status")
    assert r.returncode == 1
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()
    r = inst.postfix("stop")
    assert r.returncode == 1
    assert "fatal: the Postfix mail system is not running" in r.stderr


def test_ipv4_and_ipv6_listeners(make_instance):
    if not listen.ipv6_available():
        pytest.skip("no ::1 on this host")
    host = ALLOCATOR.host()
    port = ALLOCATOR.port(host)
    inst = make_instance(f"{host}:{port} inet n - n - 1 dummy\n"
                         f"[::1]:{port} inet n - n - 1 dummy\n")
    inst.start()
    assert hello((host, port))["service"] == f"{host}:{port}"
    got = hello(("::1", port), socket.AF_INET6)
    assert got["type"] == "inet"
    assert got["service"] in (f"[::1]:{port}", f"::1:{port}")


def test_restart_after_kill_9(make_instance):
    host = ALLOCATOR.host()
    port = ALLOCATOR.port(host)
    inst = make_instance(f"{host}:{port} inet n - n - 2 dummy\n")
    inst.start()
    before = inst.wait_workers(lambda w: len(w) == 2, "2 workers")
    victim = hello((host, port))["pid"]       # certainly ready: it served a client
    time.sleep(MIN_HEALTHY_UPTIME * 1.5)      # a healthy run, not a start-up failure
    os.kill(victim, signal.SIGKILL)
    after = inst.wait_workers(lambda w: len(w) == 2 and victim not in w, "a replacement worker")
    assert len(after - before) == 1
    inst.wait_log(rf"warning: process \S+/dummy pid {victim} killed by signal 9")
    assert "bad command startup" not in inst.log()
    hello((host, port))


def test_crashing_service_is_throttled_not_looped(make_instance):
    host = ALLOCATOR.host()
    port = ALLOCATOR.port(host)
    throttle = 1
    inst = make_instance(f"crasher unix - - n - 1 dummy\n"
                         f"{host}:{port} inet n - n - 1 dummy\n",
                         {"service_throttle_time": f"{throttle}s"})
    inst.start()          # returns although crasher never gets ready
    inst.wait_log(r"warning: \S+/dummy: bad command startup -- throttling")
    start = time.monotonic()
    count0 = len(re.findall(r"exit status 1", inst.log()))
    window = 4.0
    time.sleep(window)
    starts = len(re.findall(r"exit status 1", inst.log())) - count0
    elapsed = time.monotonic() - start
    # one start per throttle period, give or take the edges: never a tight loop
    assert 1 <= starts <= elapsed / throttle + 2
    assert re.search(r"warning: process \S+/dummy pid \d+ exit status 1", inst.log())
    hello((host, port))   # the healthy service is unaffected


def test_reload_replaces_workers_without_refusing(make_instance):
    host = ALLOCATOR.host()
    port = ALLOCATOR.port(host)
    inst = make_instance(f"{host}:{port} inet n - n - 2 dummy\n"
                         f"solo unix - - n - 1 dummy\n")
    inst.start()
    old = inst.wait_workers(lambda w: len(w) == 3, "3 workers")
    errors: list[str] = []
    served = []
    done = threading.Event()

    def client():
        while not done.is_set():
            try:
                served.append(hello((host, port))["pid"])
            except (OSError, ValueError, AssertionError) as e:
                errors.append(repr(e))

    t = threading.Thread(target=client)
    t.start()
    try:
        time.sleep(0.3)
        r = inst.postfix("reload")
        assert r.returncode == 0
        assert "postfix/postfix-script: refreshing the Postfix mail system" in r.stderr
        new = inst.wait_workers(lambda w: len(w) == 3 and not (w & old),
                                "a new generation of workers")
        wait_for(lambda: set(served[-20:]) & new, what="connections served by new workers")
    finally:
        done.set()
        t.join(TIMEOUT)
    assert errors == []
    assert set(served) & old and set(served) & new
    inst.wait_log(r"postfix/master\[\d+\]: reload -- version \S+, configuration ")
    assert "killed by signal" not in inst.log()
    assert inst.postfix("status").returncode == 0


def test_reload_with_bad_config_keeps_running(make_instance):
    host = ALLOCATOR.host()
    port = ALLOCATOR.port(host)
    inst = make_instance(f"{host}:{port} inet n - n - 1 dummy\n")
    inst.start()
    before = inst.wait_workers(lambda w: len(w) == 1, "one worker")
    master_cf = (inst.etc / "master.cf").read_text()
    (inst.etc / "master.cf").write_text(master_cf + "broken line\n")
    assert inst.postfix("reload").returncode == 0
    inst.wait_log(r"error: .*master\.cf.*keeping the current configuration")
    time.sleep(0.5)
    assert inst.workers() == before
    hello((host, port))


def test_reload_adds_and_removes_services(make_instance):
    host = ALLOCATOR.host()
    port1 = ALLOCATOR.port(host)
    port2 = ALLOCATOR.port(host)
    inst = make_instance(f"{host}:{port1} inet n - n - 1 dummy\n")
    inst.start()
    hello((host, port1))
    (inst.etc / "master.cf").write_text(f"{host}:{port2} inet n - n - 1 dummy\n")
    assert inst.postfix("reload").returncode == 0

    def port2_up():
        try:
            return hello((host, port2))["service"] == f"{host}:{port2}"
        except OSError:
            return False
    wait_for(port2_up, what="the new listener")

    def port1_down():
        try:
            socket.create_connection((host, port1), timeout=1).close()
            return False
        except OSError:
            return True
    wait_for(port1_down, what="the removed listener to close")


def test_master_warns_of_settings_it_ignores(make_instance):
    # An admin who brought header_checks or a content filter along must
    # hear that they do nothing: in the mail log, at start and at reload.
    host = ALLOCATOR.host()
    port = ALLOCATOR.port(host)
    inst = make_instance(f"{host}:{port} inet n - n - 1 dummy"
                         f" -o content_filter=smtp:[127.0.0.1]:10025\n",
                         {"header_checks": "regexp:/etc/postfix/header_checks",
                          "body_checks": ""})
    inst.start()
    text = "is not implemented by Fulmar: the setting has no effect"
    inst.wait_log(rf"postfix/master\[\d+\]: warning: \S+/main\.cf:\d+: "
                  rf"parameter header_checks {text}")
    inst.wait_log(rf"postfix/master\[\d+\]: warning: \S+/master\.cf:1: service {host}:{port}: "
                  rf"parameter content_filter {text}")
    assert "body_checks" not in inst.log()        # set to its default
    assert inst.log().count("parameter header_checks") == 1
    assert inst.postfix("reload").returncode == 0
    wait_for(lambda: inst.log().count("parameter header_checks") == 2,
             what="the warning again at reload")


def test_postfix_check(make_instance):
    inst = make_instance("smtp inet n - n - - smtpd\n")
    r = inst.postfix("check")
    assert r.returncode == 0, r.stderr
    for name in ("incoming", "active", "deferred", "private", "public", "pid"):
        assert (inst.queue / name).is_dir()
    with open(inst.etc / "main.cf", "a") as f:
        f.write("message_size_limit = lots\n")
    r = inst.postfix("check")
    assert r.returncode == 1
    assert re.search(r"main\.cf:\d+", r.stderr)
    r = inst.postfix("start")
    assert r.returncode == 1 and inst.pid is None


def test_usage_and_unknown_command(make_instance):
    inst = make_instance("")
    r = inst.postfix()
    assert r.returncode == 1 and "usage" in r.stderr
    r = inst.postfix("frobnicate")
    assert r.returncode == 1
    assert "fatal: unknown command: 'frobnicate'" in r.stderr


def test_flush_without_qmgr_says_mail_system_is_down(make_instance):
    inst = make_instance("")
    r = inst.postfix("flush")
    assert r.returncode == 69
    assert "Cannot flush mail queue - mail system is down" in r.stderr


def test_abort_and_start_fg(make_instance):
    host = ALLOCATOR.host()
    port = ALLOCATOR.port(host)
    inst = make_instance(f"{host}:{port} inet n - n - 2 dummy\n")
    inst.start()
    workers = inst.wait_workers(lambda w: len(w) == 2, "2 workers")
    r = inst.postfix("abort")
    assert r.returncode == 0
    assert "postfix/postfix-script: aborting the Postfix mail system" in r.stderr
    wait_for(lambda: inst.pid is None, what="master gone")
    wait_for(lambda: not any(os.path.exists(f"/proc/{w}") for w in workers), what="workers gone")

    fg = subprocess.Popen([sys.executable, "-m", "fulmar.cli.postfix", "-c", str(inst.etc),
                           "start-fg"], env=inst.env, stderr=subprocess.PIPE, text=True)
    try:
        pid = wait_for(lambda: inst.pid, what="foreground master")
        assert pid == fg.pid                  # master replaced the postfix process
        inst.wait_workers(lambda w: len(w) == 2, "2 workers")
        hello((host, port))
        os.kill(pid, signal.SIGINT)
        assert fg.wait(TIMEOUT) == 0
        assert "starting the Postfix mail system" in fg.stderr.read()
        inst.wait_log(r"terminating on signal 2")
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()
