"""postfix - Fulmar control program (Postfix's postfix(1) and postfix-script).

SYNOPSIS
    postfix [-c config_dir] [-Dv] command

    start       check the configuration, create a missing queue layout, start
                master in the background and wait until it is up (its lock is
                held and its listeners are bound and served); 0 on success
    start-fg    the same, but master runs in the foreground (this process)
    stop        SIGTERM master (in-flight work finishes, bounded by
                service_stop_timeout) and wait until it has exited; after
                that bound plus STOP_MARGIN, kill its process group
    abort       SIGQUIT master: every daemon is killed at once
    reload      SIGHUP master: re-read the configuration, replace workers
    status      exit 0 and say so when master runs, else 1
    check       validate main.cf and master.cf, create missing queue
                directories; exit 1 on a fatal configuration error
    set-permissions   fix owners and modes of the queue layout
    flush       ask qmgr (public/qmgr) to retry deferred mail now

    -c DIR or $MAIL_CONFIG chooses the configuration directory.

DESCRIPTION
    Messages are Postfix's, printed on stderr and logged with the tag
    `postfix/postfix-script`:
        postfix/postfix-script: starting the Postfix mail system
        postfix/postfix-script: fatal: the Postfix mail system is already running
        postfix/postfix-script: the Postfix mail system is running: PID: 1234
        postfix/postfix-script: the Postfix mail system is not running
        postfix/postfix-script: stopping the Postfix mail system
        postfix/postfix-script: refreshing the Postfix mail system
        postfix/postfix-script: aborting the Postfix mail system
    "Running" means: someone holds the lock on $queue_directory/pid/master.pid
    (master/pidfile.py); the PID printed is the one in that file.

    `start` hands master a pipe in FULMAR_STATUS_FD and returns when master
    writes b"R" on it (master/supervisor.py); if master exits first, its
    own `postfix/master: fatal: ...` line has been printed and start exits 1.

DIAGNOSTICS
    Configuration errors: `postfix: fatal: FILE:LINE: what is wrong`, exit 1.
    Commands Postfix has and Fulmar does not yet: exit 69 (EX_UNAVAILABLE).
    flush without a running qmgr: `postqueue: fatal: Cannot flush mail queue -
    mail system is down`, exit 69.
"""

from __future__ import annotations

import sys

from fulmar.version import require_python

require_python()

import asyncio  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from fulmar import config, log  # noqa: E402
from fulmar.config.mastercf import parse_master_cf  # noqa: E402
from fulmar.queue import layout  # noqa: E402
from master import pidfile, privilege, services  # noqa: E402
from master.supervisor import STARTUP_READY_WAIT, STATUS_FD_ENV, PARAM_FALLBACKS  # noqa: E402

EX_OK = 0
EX_FAIL = 1
EX_USAGE = 1                    # Postfix's postfix exits 1 on usage errors
EX_UNAVAILABLE = 69
SCRIPT_TAG = "postfix/postfix-script"
PROGRAM = "postfix"
READY_BYTE = b"R"
# Beyond master's own bounds: time for Python to start and master to log.
START_MARGIN = 5.0
STOP_MARGIN = 5.0
POLL_INTERVAL = 0.1
UNIMPLEMENTED = ("upgrade-configuration", "logrotate", "tls", "post-install")
USAGE_COMMANDS = ("start (or stop, reload, abort, flush, check, status, "
                  "set-permissions, upgrade-configuration)")
STDIO_LOGS = ("/dev/stdout", "/dev/stderr")


class Script:
    """One postfix invocation: its configuration and its messages."""

    def __init__(self, config_dir: str | None, debug: bool, verbose: int) -> None:
        self.config_dir = config_dir
        self.debug = debug
        self.verbose = verbose
        self.cfg = None
        self.specs = None
        self.log_too = False

    # -- messages ----------------------------------------------------------

    def say(self, text: str, level: str = "") -> None:
        prefix = f"{level}: " if level else ""
        sys.stderr.write(f"{SCRIPT_TAG}: {prefix}{text}\n")
        sys.stderr.flush()
        if self.log_too:
            {"": log.info, "warning": log.warning, "fatal": log.error}[level]("%s", text)

    # -- configuration -----------------------------------------------------

    def load(self, with_master_cf: bool) -> bool:
        """main.cf always (it names the queue); master.cf for check and start only,
        so that `reload` of a broken master.cf reaches master, which keeps running."""
        try:
            self.cfg = config.load(self.config_dir)
            if with_master_cf:
                self.specs = parse_master_cf(os.path.join(self.cfg.config_dir, "master.cf"))
        except config.ConfigError as e:
            sys.stderr.write(f"{PROGRAM}: fatal: {e}\n")
            return False
        except OSError as e:
            sys.stderr.write(f"{PROGRAM}: fatal: {e.filename}: {e.strerror}\n")
            return False
        maillog = str(self.cfg.get("maillog_file") or "")
        # Log as postfix-script does, unless the log is this very terminal.
        self.log_too = maillog not in STDIO_LOGS and (bool(maillog) or os.path.exists(log.SYSLOG_PATH))
        if self.log_too:
            log.setup(self.cfg, "postfix-script")
        return True

    @property
    def queue_dir(self) -> str:
        return str(self.cfg.get("queue_directory"))

    @property
    def pid_path(self) -> str:
        return pidfile.pid_path(self.queue_dir)

    def running(self) -> int | None:
        try:
            return pidfile.running_pid(self.pid_path)
        except OSError:
            return None

    def make_layout(self) -> bool:
        main_cf = os.path.join(self.cfg.config_dir, "main.cf")
        try:
            owner = privilege.queue_owner(str(self.cfg.get("mail_owner")), main_cf)
            group = privilege.setgid_gid(str(self.cfg.get("setgid_group")), main_cf)
        except privilege.PrivilegeError as e:
            sys.stderr.write(f"{PROGRAM}: fatal: {e}\n")
            return False
        try:
            layout.configure(self.cfg)
            if owner is None:
                layout.create(self.queue_dir)
            else:
                layout.create(self.queue_dir, *owner, group)
        except OSError as e:
            self.say(f"cannot create queue directory {self.queue_dir}: {e.strerror or e}", "fatal")
            return False
        return True

    def stop_timeout(self) -> float:
        try:
            return float(self.cfg.get("service_stop_timeout"))
        except (LookupError, config.ConfigError):
            return float(PARAM_FALLBACKS["service_stop_timeout"])

    # -- commands ----------------------------------------------------------

    def cmd_check(self, quiet: bool = False) -> int:
        """quiet (start): master logs unimplemented services itself."""
        for warning in getattr(self.cfg, "warnings", []):
            sys.stderr.write(f"{PROGRAM}: warning: {warning}\n")
        if not quiet:
            # (start: master logs these itself.)
            for warning in config.unimplemented(self.cfg, self.specs):
                sys.stderr.write(f"{PROGRAM}: warning: {warning}\n")
        try:
            extra = services.parse_extra_commands(os.environ.get(services.EXTRA_COMMANDS_ENV))
        except ValueError as e:
            sys.stderr.write(f"{PROGRAM}: fatal: {e}\n")
            return EX_FAIL
        for spec in [] if quiet else self.specs:
            program = services.resolve_program(spec.command, extra)
            if program is None or not services.is_runnable(program):
                self.say(f"service {spec.name}: command {spec.command} is not implemented",
                         "warning")
        if not self.make_layout():
            return EX_FAIL
        for problem in layout.check(self.queue_dir):
            self.say(problem, "warning")
        return EX_OK

    def cmd_set_permissions(self) -> int:
        return EX_OK if self.make_layout() else EX_FAIL

    def _master_argv(self, detach: bool) -> list[str]:
        argv = [sys.executable, "-I", "-m", "master", "-c", os.path.abspath(self.cfg.config_dir)]
        if self.debug:
            argv.append("-D")
        argv += ["-v"] * self.verbose
        if detach:
            argv.append("-w")
        return argv

    def _prepare_start(self) -> bool:
        if self.cmd_check(quiet=True) != EX_OK:
            return False
        if self.running() is not None:
            self.say("the Postfix mail system is already running", "fatal")
            return False
        return True

    def cmd_start(self) -> int:
        if not self._prepare_start():
            return EX_FAIL
        self.say("starting the Postfix mail system")
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env[STATUS_FD_ENV] = str(write_fd)
        try:
            proc = subprocess.Popen(self._master_argv(detach=True), pass_fds=(write_fd,), env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            os.close(read_fd)
            self.say(f"cannot start master: {e.strerror or e}", "fatal")
            return EX_FAIL
        finally:
            os.close(write_fd)
        try:
            ready, _, _ = select.select([read_fd], [], [], STARTUP_READY_WAIT + START_MARGIN)
            data = os.read(read_fd, 1) if ready else b""
        finally:
            os.close(read_fd)
        if data == READY_BYTE:
            proc.returncode = EX_OK       # detached on purpose: never waited for here
            return EX_OK
        if not ready:
            self.say("mail system startup timed out", "fatal")
            proc.returncode = EX_FAIL
        else:
            proc.wait()
            self.say("mail system startup failed", "fatal")
        return EX_FAIL

    def cmd_start_fg(self) -> int:
        if not self._prepare_start():
            return EX_FAIL
        self.say("starting the Postfix mail system")
        argv = self._master_argv(detach=False)
        os.execv(argv[0], argv)
        return EX_FAIL                    # not reached

    def _signal_master(self, signum: int, message: str) -> int | None:
        pid = self.running()
        if pid is None:
            self.say("the Postfix mail system is not running", "fatal")
            return None
        if pid <= 0:
            self.say(f"cannot read the master PID from {self.pid_path}", "fatal")
            return None
        self.say(message)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
        return pid

    def cmd_stop(self) -> int:
        pid = self._signal_master(signal.SIGTERM, "stopping the Postfix mail system")
        if pid is None:
            return EX_FAIL
        deadline = time.monotonic() + self.stop_timeout() + STOP_MARGIN
        while time.monotonic() < deadline:
            if self.running() is None:
                return EX_OK
            time.sleep(POLL_INTERVAL)
        self.say("stopping the Postfix mail system with force", "warning")
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)     # master and the daemons it started
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return EX_OK

    def cmd_abort(self) -> int:
        pid = self._signal_master(signal.SIGQUIT, "aborting the Postfix mail system")
        return EX_FAIL if pid is None else EX_OK

    def cmd_reload(self) -> int:
        pid = self._signal_master(signal.SIGHUP, "refreshing the Postfix mail system")
        return EX_FAIL if pid is None else EX_OK

    def cmd_status(self) -> int:
        pid = self.running()
        if pid is None:
            self.say("the Postfix mail system is not running")
            return EX_FAIL
        self.say(f"the Postfix mail system is running: PID: {pid}")
        return EX_OK

    def cmd_flush(self) -> int:
        path = os.path.join(self.queue_dir, layout.QUEUE_PUBLIC, "qmgr")
        timeout = float(self.cfg.get("ipc_timeout"))
        try:
            reply = asyncio.run(_flush(path, timeout))
        except Exception as e:            # any failure means the same to the user
            if self.verbose:
                sys.stderr.write(f"postqueue: {type(e).__name__}: {e}\n")
            reply = None
        if not reply or reply.get("status") != "ok":
            sys.stderr.write("postqueue: fatal: Cannot flush mail queue - mail system is down\n")
            return EX_UNAVAILABLE
        return EX_OK


async def _flush(path: str, timeout: float) -> dict:
    from fulmar.ipc import channel
    ch = await channel.connect(path, "qmgr", timeout=timeout)
    try:
        return await ch.request({"request": "flush", "id": 1}, "qmgr.flush_reply", timeout)
    finally:
        await ch.close()


COMMANDS = {
    "start": Script.cmd_start,
    "start-fg": Script.cmd_start_fg,
    "stop": Script.cmd_stop,
    "abort": Script.cmd_abort,
    "reload": Script.cmd_reload,
    "status": Script.cmd_status,
    "check": Script.cmd_check,
    "flush": Script.cmd_flush,
    "set-permissions": Script.cmd_set_permissions,
}


NEEDS_MASTER_CF = ("start", "start-fg", "check")


def parse_args(argv: list[str]) -> tuple[str | None, bool, int, list[str]]:
    """Postfix's getopt "c:Dv"; raises ValueError on a bad option."""
    config_dir, debug, verbose = None, False, 0
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        j = 1
        while j < len(arg):
            flag = arg[j]
            if flag == "c":
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise ValueError("option requires an argument -- 'c'")
                    value = argv[i]
                config_dir = value
                break
            if flag == "D":
                debug = True
            elif flag == "v":
                verbose += 1
            else:
                raise ValueError(f"invalid option -- '{flag}'")
            j += 1
        i += 1
    return config_dir, debug, verbose, argv[i:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = f"{PROGRAM}: fatal: usage: {PROGRAM} [-c config_dir] [-Dv] command\n"
    try:
        config_dir, debug, verbose, rest = parse_args(argv)
    except ValueError as e:
        sys.stderr.write(f"{PROGRAM}: {e}\n{usage}")
        return EX_USAGE
    if not rest:
        sys.stderr.write(usage)
        return EX_USAGE
    command = rest[0]
    if command in UNIMPLEMENTED:
        sys.stderr.write(f"{PROGRAM}: fatal: command {command} is not implemented yet\n")
        return EX_UNAVAILABLE
    handler = COMMANDS.get(command)
    if handler is None:
        sys.stderr.write(f"{SCRIPT_TAG}: fatal: unknown command: '{command}'. "
                         f"Usage: {PROGRAM} {USAGE_COMMANDS}\n")
        return EX_USAGE
    script = Script(config_dir, debug, verbose)
    if not script.load(with_master_cf=command in NEEDS_MASTER_CF):
        return EX_FAIL
    return handler(script)


if __name__ == "__main__":
    sys.exit(main())
