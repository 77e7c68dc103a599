"""fulmar.daemon: argv, Context, privileges, and a real daemon process.

The last tests start daemon.main() in a child process, as master does:
an inherited listening socket, a status pipe, SIGTERM.
"""

import asyncio
import os
import pwd
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from fulmar import daemon, log
from fulmar.ipc import frames


@pytest.fixture(autouse=True)
def restore_log():
    yield
    log.cli_setup("fulmar")


class FakeConfig:
    def __init__(self, **params):
        self.params = {"queue_directory": "/var/spool/postfix",
                       "daemon_timeout": 18000, "mail_owner": "postfix"}
        self.params.update(params)
        self.config_dir = "/etc/postfix"

    def get(self, name):
        return self.params[name]


def test_parse_args():
    opts = daemon.parse_args("smtpd", [
        "-c", "/etc/fulmar", "-s", "submission", "-t", "inet",
        "-o", "syslog_name=postfix/submission",
        "-o", "smtpd_tls_security_level=encrypt", "-o", "empty=", "-v",
        "-v"])
    assert opts.config_dir == "/etc/fulmar"
    assert opts.service == "submission"
    assert opts.service_type == "inet"
    assert opts.overrides == {"syslog_name": "postfix/submission",
                              "smtpd_tls_security_level": "encrypt",
                              "empty": ""}
    assert opts.verbose == 2


@pytest.mark.parametrize("argv, message", [
    (["-x"], "option -x not recognized; usage: smtpd [-c config_dir]"),
    (["-o", "novalue"], "bad -o option: novalue (expected name=value)"),
    (["extra"], "unexpected argument: extra"),
])
def test_parse_args_usage_errors(argv, message, capsys):
    log.cli_setup("smtpd")
    with pytest.raises(SystemExit) as info:
        daemon.parse_args("smtpd", argv)
    assert info.value.code == 1
    assert capsys.readouterr().err.startswith("smtpd: fatal: " + message)


def test_context_paths_and_ready():
    read_end, write_end = os.pipe()
    try:
        ctx = daemon.Context(FakeConfig(queue_directory="/q"),
                             service="submission", process_name="smtpd",
                             status_fd=write_end)
        assert ctx.private_path("cleanup") == "/q/private/cleanup"
        assert ctx.public_path("qmgr") == "/q/public/qmgr"
        assert ctx.queue_dir == "/q" and ctx.daemon_timeout == 18000
        assert not ctx.stopping.is_set() and not ctx.reloading.is_set()
        ctx.ready()
        ctx.ready()                                     # only once
        assert os.read(read_end, 10) == b"R"
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.fixture
def as_root(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(os, name, lambda arg, name=name:
                            calls.append((name, arg)))
    return calls


def test_drop_privileges_switches_to_mail_owner(as_root):
    nobody = pwd.getpwnam("nobody")
    daemon.drop_privileges(FakeConfig(mail_owner="nobody"))
    assert as_root == [("setgroups", [nobody.pw_gid]),
                       ("setgid", nobody.pw_gid), ("setuid", nobody.pw_uid)]


def test_drop_privileges_keep_root_still_checks(as_root, capsys):
    daemon.drop_privileges(FakeConfig(mail_owner="nobody"), keep_root=True)
    assert as_root == []
    log.cli_setup("local")
    with pytest.raises(SystemExit):
        daemon.drop_privileges(FakeConfig(mail_owner="root"), keep_root=True)
    assert "local: fatal: file /etc/postfix/main.cf: parameter mail_owner: " \
        "user root has privileged user ID" in capsys.readouterr().err


@pytest.mark.parametrize("owner, message", [
    ("root", "user root has privileged user ID"),
    ("no-such-user-fulmar", "unknown user name value: no-such-user-fulmar"),
    ("", "unknown user name value: "),
])
def test_drop_privileges_refuses(as_root, capsys, owner, message):
    log.cli_setup("smtpd")
    with pytest.raises(SystemExit):
        daemon.drop_privileges(FakeConfig(mail_owner=owner))
    assert as_root == []
    assert "fatal: file /etc/postfix/main.cf: parameter mail_owner: " \
        + message in capsys.readouterr().err


def test_not_root_does_nothing(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "setuid", lambda uid: pytest.fail("setuid"))
    daemon.drop_privileges(FakeConfig(mail_owner="root"))


# -- a real daemon process --------------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, os, sys
    from fulmar import daemon, log
    from fulmar.ipc import channel

    MODE = sys.argv[1]

    async def serve(ctx):
        if MODE == "crash":
            raise ValueError("boom")
        if MODE == "stuck":             # ignores ctx.stopping
            ctx.ready()
            await ctx.reloading.wait()
            log.info("reloading")
            await asyncio.Event().wait()
        async def handler(ch):
            frame = await ch.recv()
            await ch.send_attr({"id": frame.attrs["id"], "uid": os.getuid(),
                                "service": ctx.service,
                                "type": ctx.service_type,
                                "queue_dir": ctx.queue_dir,
                                "nice": os.getpriority(os.PRIO_PROCESS, 0)})
        server = await channel.serve(ctx.listeners[0], "test", handler,
                                     log_name=ctx.private_path("test"))
        ctx.ready()
        await ctx.stopping.wait()
        server.close()
        await server.wait_closed()
        log.info("stopped")

    daemon.main("testd", serve, keep_root=(MODE in ("keep_root", "background")),
                background=(MODE == "background"), argv=sys.argv[2:])
""")


@pytest.fixture
def config_dir(tmp_path):
    queue = tmp_path / "queue"
    queue.mkdir()
    (tmp_path / "main.cf").write_text(
        "queue_directory = %s\nmaillog_file = %s\nmail_owner = nobody\n"
        % (queue, tmp_path / "maillog"))
    return tmp_path


def start_child(config_dir, mode, listener=None, extra=()):
    env = dict(os.environ)
    pass_fds = []
    read_end, write_end = os.pipe()
    env["FULMAR_STATUS_FD"] = str(write_end)
    pass_fds.append(write_end)
    if listener is not None:
        env["FULMAR_LISTEN_FDS"] = str(listener.fileno())
        pass_fds.append(listener.fileno())
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", CHILD, mode, "-c", str(config_dir),
         "-s", "testsvc", "-t", "unix", "-o", "syslog_name=postfix/testsvc",
         *extra],
        env=env, pass_fds=pass_fds, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    os.close(write_end)
    return proc, read_end


def wait_ready(proc, status_fd, timeout=30):
    ready, _, _ = select.select([status_fd], [], [], timeout)
    assert ready, "daemon did not report ready"
    data = os.read(status_fd, 1)
    if data != b"R":
        out, err = proc.communicate(timeout=10)
        pytest.fail("no readiness: %r %r" % (data, err))


def request(path_or_sock):
    sock = path_or_sock
    dec = frames.FrameDecoder()
    got = []
    sock.sendall(frames.encode_attr({"id": 7}))
    while len(got) < 2:
        data = sock.recv(65536)
        assert data
        got += dec.feed(data)
    return got[0].attrs, got[1].attrs


def ask_child(tmp_path, config_dir, mode, extra=()):
    """Start the child on a listening socket, send it one request, then
    SIGTERM: (proc, hello, reply, stderr) once it has exited."""
    path = str(tmp_path / "test.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    proc, status_fd = start_child(config_dir, mode, listener, extra)
    listener.close()
    try:
        wait_ready(proc, status_fd)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(path)
        hello, reply = request(client)
        client.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(status_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, hello, reply, err


@pytest.mark.parametrize("mode", ["keep_root", "drop"])
def test_daemon_serves_inherited_socket_and_stops_on_sigterm(
        tmp_path, config_dir, mode):
    if mode == "drop" and os.geteuid() == 0:
        # After the switch to mail_owner the child must still be able to
        # read the interpreter it runs; a Python under /root is not.
        probe = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             sys.executable, "-I", "-c", "import fulmar.daemon"],
            capture_output=True)
        if probe.returncode != 0:
            pytest.skip("this Python is not readable by nobody")
    proc, hello, reply, err = ask_child(tmp_path, config_dir, mode)
    assert hello == {"protocol": "test", "version": 1}
    assert reply["id"] == 7
    assert reply["service"] == "testsvc" and reply["type"] == "unix"
    assert reply["queue_dir"] == str(tmp_path / "queue")
    if os.geteuid() == 0:
        expected = (0 if mode == "keep_root"
                    else pwd.getpwnam("nobody").pw_uid)
    else:
        expected = os.geteuid()
    assert reply["uid"] == expected
    assert proc.returncode == 0, err
    lines = (tmp_path / "maillog").read_text().splitlines()
    assert re.fullmatch(r"\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ "
                        r"postfix/testsvc/testd\[%d\]: stopped" % proc.pid,
                        lines[-1]), lines


def test_daemon_crash_is_a_panic_and_nonzero_exit(tmp_path, config_dir):
    proc, status_fd = start_child(config_dir, "crash")
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(status_fd)
    assert proc.returncode == 1
    text = (tmp_path / "maillog").read_text()
    assert re.search(r"postfix/testsvc/testd\[%d\]: panic: testd: "
                     r"unexpected ValueError: boom \(.*in serve\)" % proc.pid,
                     text), text


def test_daemon_bad_config_is_fatal(tmp_path, config_dir):
    proc, status_fd = start_child(config_dir, "keep_root",
                                  extra=["-o", "daemon_timeout=soon"])
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(status_fd)
    assert proc.returncode == 1
    assert b"fatal: " in err and b"daemon_timeout" in err


def test_sighup_reload_then_sigterm_twice(tmp_path, config_dir):
    proc, status_fd = start_child(config_dir, "stuck")
    try:
        wait_ready(proc, status_fd)
        proc.send_signal(signal.SIGHUP)
        log_path = tmp_path / "maillog"
        for _ in range(300):
            if log_path.exists() and "reloading" in log_path.read_text():
                break
            select.select([], [], [], 0.05)
        else:
            pytest.fail("no reload")
        proc.send_signal(signal.SIGTERM)     # stuck: grace period runs
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        proc.send_signal(signal.SIGTERM)     # the second one ends it
        proc.communicate(timeout=30)
    finally:
        os.close(status_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_grace_period_is_daemon_timeout(tmp_path, config_dir):
    proc, status_fd = start_child(config_dir, "stuck",
                                  extra=["-o", "daemon_timeout=1s"])
    try:
        wait_ready(proc, status_fd)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        os.close(status_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "warning: stopping: work still in progress after 1 seconds" in \
        (tmp_path / "maillog").read_text()


class FakeServer:
    def __init__(self, active=0):
        self.active = active
        self.closed = False

    def close(self):
        self.closed = True


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


async def _ticks(n):
    for _ in range(n):
        await asyncio.sleep(0)


async def test_exit_when_idle_closes_listeners_then_stops(monkeypatch):
    # max_idle is tiny so that the real loop timers fire at once; the
    # injected clock decides what "idle long enough" means.
    ctx = daemon.Context(FakeConfig(max_idle=0.0), service="cleanup",
                         process_name="cleanup", idle_exit=True)
    clock, server, busy = FakeClock(), FakeServer(active=1), [True]
    ctx.exit_when_idle([server], lambda: busy[0], clock=clock)
    clock.now += 1
    server.active = 0                         # busy() decides, not connections
    await _ticks(5)
    assert not ctx.stopping.is_set()
    server.active = 1
    busy[0] = False
    await asyncio.wait_for(ctx.stopping.wait(), 5)
    assert server.closed and ctx.idle_exited


async def test_exit_when_idle_waits_max_idle():
    ctx = daemon.Context(FakeConfig(max_idle=0.004), service="bounce",
                         process_name="bounce", idle_exit=True)
    clock, server = FakeClock(), FakeServer(active=1)
    ctx.exit_when_idle([server], clock=clock)
    clock.now += 1
    await asyncio.sleep(0.02)                 # an open connection: not idle
    assert not ctx.stopping.is_set() and not server.closed
    server.active = 0
    await asyncio.sleep(0.02)                 # several checks, clock frozen
    assert not ctx.stopping.is_set() and not server.closed
    clock.now += 0.004
    await asyncio.wait_for(ctx.stopping.wait(), 5)
    assert server.closed


async def test_exit_when_idle_is_a_noop_unless_on_demand():
    ctx = daemon.Context(FakeConfig(max_idle=0.0), service="smtp",
                         process_name="smtp")
    server = FakeServer()
    ctx.exit_when_idle([server], clock=FakeClock())
    await asyncio.sleep(0.01)
    assert not ctx.stopping.is_set() and not server.closed


@pytest.mark.parametrize("mode, extra, step", [
    ("background", (), 10),                                    # the default
    ("background", ("-o", "delivery_process_nice=3"), 3),
    ("background", ("-o", "delivery_process_nice=0"), 0),
    ("keep_root", (), 0),                                      # smtpd, cleanup: unchanged
])
def test_background_daemon_lowers_its_priority(tmp_path, config_dir, mode, extra, step):
    """qmgr, bounce and the delivery agents run $delivery_process_nice
    below the process that started them; the others keep its priority."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    proc, _, reply, err = ask_child(tmp_path, config_dir, mode, extra)
    assert proc.returncode == 0, err
    assert reply["nice"] == min(19, base + step)


def test_lower_priority_failure_is_a_warning(monkeypatch, capsys):
    log.cli_setup("testd")

    def refuse(step):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "nice", refuse)
    daemon.lower_priority(FakeConfig(delivery_process_nice=5))
    assert "testd: warning: cannot lower the process priority by 5: Operation not permitted" \
        in capsys.readouterr().err
