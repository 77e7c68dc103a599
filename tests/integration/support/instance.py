"""A Fulmar instance under test, started with `postfix -c DIR start`.

    inst = FulmarInstance(base_dir, host="127.20.0.9", smtp_port=40123,
                          dns_address="127.0.0.1:5300", main_cf={"smtp_tcp_port": "2600"})
    inst.start()                 # writes etc/, runs `postfix -c etc start`, waits until
                                 # the smtp port is bound (no probe connection: clean logs)
    inst.smtp_addr               # ("127.20.0.9", 40123)
    inst.queue_dir, inst.config_dir, inst.maillog
    inst.log_text()              # the maillog so far
    inst.postfix("flush")        # CompletedProcess of `postfix -c etc flush`
    inst.command("postqueue", "-p")   # any Fulmar command, with MAIL_CONFIG set
    inst.queue_files("deferred") # queue IDs currently in that queue
    inst.wait_log(regex, timeout)     # -> re.Match once the maillog has it
    inst.stop()                  # `postfix stop`; if that fails, kill master.pid

The configuration is the shipped conf/ with the smtp listener on
host:smtp_port (the other inet entries dropped, unix services as shipped)
plus DEFAULTS below plus the test's ``main_cf`` overrides, written by
fulmar.devrun.write_config.  Commands are taken from the directory of the
running Python (the project's .venv/bin), never from PATH, so Debian's
Postfix installed for the reference tools is never used by mistake.

Privileges: as an ordinary user the instance runs as that user.  As root
(CI) Fulmar's master refuses mail_owner = root, so mail_owner is
$FULMAR_TEST_MAIL_OWNER or `nobody`, and the instance directory is made
traversable for it (the fixture puts instances under a short
directory in /tmp, not pytest's 0700 tmp_path, also because unix socket
paths are limited to 107 bytes).  (The source tree and the venv must then be readable
by that user: true for a clone outside /root.)

Failure: ``start`` raises RuntimeError with the postfix output and the
maillog when the command fails or the smtp port does not open in
START_TIMEOUT seconds.  ``stop`` never raises; it signals only the PID
found in $queue_directory/pid/master.pid.
"""
from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from fulmar.devrun import InetService, owner_problem, write_config
from fulmar.queue import qfile

from . import addrs

SOURCE_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = SOURCE_ROOT / "conf"
BIN_DIR = Path(sys.executable).parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0

# Short timers so that retry and expiry scenarios finish in seconds; any of
# them can be overridden per test through main_cf.
DEFAULTS = {
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "alias_maps": "",
    "alias_database": "",
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "4s",
    "smtp_connect_timeout": "5s",
    "smtpd_timeout": "30s",
    "daemon_timeout": "60s",
    "service_throttle_time": "2s",
    "delay_warning_time": "0h",
}


def test_mail_owner() -> str:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    return os.environ.get("FULMAR_TEST_MAIL_OWNER", "nobody")


def mail_owner_problem(owner: str | None = None) -> str | None:
    """Why daemons running as ``owner`` could not start, or None (as root
    only; see fulmar.devrun.owner_problem)."""
    return owner_problem(owner or test_mail_owner())


class FulmarInstance:
    def __init__(self, base_dir: str | os.PathLike, *, name: str = "fulmar",
                 host: str | None = None, smtp_port: int | None = None,
                 dns_address: str | None = None,
                 main_cf: dict[str, str] | None = None,
                 extra_services: list[InetService] = ()) -> None:
        self.name = name
        self.dir = Path(base_dir)
        self.host = host or addrs.ALLOCATOR.host()
        self.smtp_port = smtp_port or addrs.ALLOCATOR.port(self.host)
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "queue"
        self.mail_dir = self.dir / "mail"
        self.data_dir = self.dir / "data"
        self.maillog = self.dir / "maillog"
        self.mail_owner = test_mail_owner()
        self.overrides = {
            **DEFAULTS,
            "myhostname": f"{name}.test",
            "mydomain": "test",
            "inet_interfaces": self.host,
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_spool_directory": str(self.mail_dir),
            "maillog_file": str(self.maillog),
            "mail_owner": self.mail_owner,
        }
        if dns_address:
            self.overrides["dns_server_addresses"] = dns_address
        self.overrides.update(main_cf or {})
        self.services = [InetService(f"{self.host}:{self.smtp_port}", "smtp"),
                         *extra_services]
        self.started = False
        self.transcript: list[str] = []     # commands run and their output

    @property
    def smtp_addr(self) -> tuple[str, int]:
        return (self.host, self.smtp_port)

    # -- set-up -----------------------------------------------------------

    def write_config(self) -> None:
        for d in (self.dir, self.mail_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        write_config(CONF_DIR, self.config_dir, self.services, self.overrides)
        self.maillog.touch()
        if os.geteuid() == 0 and self.mail_owner != "root":
            ent = pwd.getpwnam(self.mail_owner)
            # Daemons run as mail_owner: they must reach the directory (the
            # fixture makes its parents traversable) and write the log, the
            # data and the mailboxes.
            self.dir.chmod(0o711)
            for path in (self.maillog, self.mail_dir, self.data_dir):
                os.chown(path, ent.pw_uid, ent.pw_gid)

    def start(self, timeout: float = START_TIMEOUT) -> "FulmarInstance":
        self.write_config()
        r = self.postfix("start")
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed ({r.returncode}):\n{r.stdout}{r.stderr}"
                               f"\n--- maillog ---\n{self.log_text()}")
        self.started = True
        try:
            addrs.wait_bound(self.host, self.smtp_port, timeout)
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n--- maillog ---\n{self.log_text()}") from None
        return self

    # -- commands ---------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, "MAIL_CONFIG": str(self.config_dir)}

    def command(self, name: str, *args: str, input: bytes | str | None = None,
                timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """Run a Fulmar command from the venv with MAIL_CONFIG set."""
        argv = [str(BIN_DIR / name), *args]
        r = subprocess.run(argv, input=input, capture_output=True, env=self.env(),
                           timeout=timeout, text=not isinstance(input, bytes))
        self.transcript.append(f"$ {' '.join(argv)} -> {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def postfix(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        return self.command("postfix", "-c", str(self.config_dir), *args, timeout=timeout)

    # -- looking inside ---------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 20.0, count: int = 1) -> list[re.Match]:
        """Wait until the maillog has ``count`` matches of ``pattern`` (a regex)."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            found = list(rx.finditer(self.log_text()))
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {len(found)} of {count} log lines match "
                                     f"{pattern!r} after {timeout}s; maillog:\n"
                                     + self.log_text()[-6000:])
            time.sleep(0.05)

    def queue_files(self, queue: str) -> list[str]:
        """Queue IDs in one queue directory (hashed sub-directories included);
        not files being written (cleanup's spares among them)."""
        root = self.queue_dir / queue
        if not root.exists():
            return []
        if queue == "incoming":
            return sorted(qid for qid, _ in qfile.scan(str(self.queue_dir), queue))
        return sorted(f for _, _, files in os.walk(root) for f in files
                      if not f.startswith("."))

    def master_pid(self) -> int | None:
        try:
            text = (self.queue_dir / "pid" / "master.pid").read_text().strip()
            return int(text) if text.isdigit() else None
        except (FileNotFoundError, ValueError):
            return None

    # -- tear-down --------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if not self.started:
            return
        self.started = False
        pid = self.master_pid()
        try:
            r = self.postfix("stop", timeout=timeout)
            ok = r.returncode == 0
        except (subprocess.TimeoutExpired, OSError):
            ok = False
        if pid is None:
            return
        if ok and _wait_gone(pid, timeout):
            return
        # `postfix stop` failed or master outlived it: kill that one PID only.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if _wait_gone(pid, 5):
                return


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        # reap it if it is our child (postfix start may exec master directly)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False
