"""A real Dovecot LMTP server for delivery tests (Debian's dovecot-lmtpd).

    d = DovecotLmtp(base_dir, host="127.0.0.1", port=40124,
                    users=["alice@example.test"], mail_uid=65534, mail_gid=65534)
    d.start()           # dovecot -F -c base_dir/dovecot.conf, waits for both listeners
    d.socket_path       # the LMTP unix socket (mode 0666)
    d.maildir("alice@example.test")   # .../mail/alice/Maildir
    d.stop()            # `doveadm stop`, then the PID we started (never by name)

Self-contained configuration: no include of /etc/dovecot; users in a
passwd-file; mail under base_dir/mail/<user>/Maildir owned by mail_uid.
Dovecot's master insists on running as root (it switches to the mail uid),
so callers skip when not root.  DOVECOT is None when it is not installed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import addrs

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
LMTP_BINARY = "/usr/lib/dovecot/lmtp"
START_TIMEOUT = 15.0

CONF = """\
protocols = lmtp
listen = {host}
base_dir = {base}/run
state_dir = {base}/state
instance_name = fulmar-test-{port}
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
last_valid_uid = {uid}
postmaster_address = postmaster@example.test
hostname = lmtp.example.test
lmtp_save_to_detail_mailbox = no
recipient_delimiter = +
auth_username_format = %Lu
passdb {{
  driver = passwd-file
  args = {base}/users
}}
userdb {{
  driver = passwd-file
  args = {base}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = {host}
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service auth {{
  unix_listener auth-userdb {{
    mode = 0600
  }}
}}
"""


def problem() -> str | None:
    """Why Dovecot LMTP cannot run here, or None."""
    if DOVECOT is None or not os.path.exists(LMTP_BINARY):
        return "dovecot-core/dovecot-lmtpd not installed (apt-get install dovecot-lmtpd)"
    if os.geteuid() != 0:
        return "Dovecot's master must run as root"
    return None


class DovecotLmtp:
    def __init__(self, base_dir, *, host: str = "127.0.0.1", port: int | None = None,
                 users: list[str] = (), mail_uid: int = 65534, mail_gid: int = 65534) -> None:
        self.base = Path(base_dir)
        self.host = host
        self.port = port or addrs.ALLOCATOR.port(host)
        self.users = list(users)
        self.uid, self.gid = mail_uid, mail_gid
        self.proc: subprocess.Popen | None = None

    @property
    def conf(self) -> Path:
        return self.base / "dovecot.conf"

    @property
    def socket_path(self) -> str:
        return str(self.base / "run" / "lmtp")

    def maildir(self, user: str) -> Path:
        return self.base / "mail" / user.split("@")[0] / "Maildir"

    def log_text(self) -> str:
        try:
            return (self.base / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> "DovecotLmtp":
        for d in ("run", "state", "mail"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        os.chown(self.base / "mail", self.uid, self.gid)
        self.base.chmod(0o755)
        with open(self.base / "users", "w") as f:
            for u in self.users:
                f.write("%s::%d:%d::%s::\n" % (u, self.uid, self.gid,
                                               self.base / "mail" / u.split("@")[0]))
        self.conf.write_text(CONF.format(host=self.host, port=self.port, base=self.base,
                                         uid=self.uid))
        out = open(self.base / "dovecot.out", "ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dovecot did not start:\n" + self.log_text()
                                   + (self.base / "dovecot.out").read_text(errors="replace"))
            time.sleep(0.05)
        addrs.wait_bound(self.host, self.port, START_TIMEOUT)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            subprocess.run([DOVEADM, "-c", str(self.conf), "stop"], capture_output=True,
                           timeout=30)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
