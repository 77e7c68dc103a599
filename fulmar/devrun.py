"""fulmar-devrun: run Fulmar in the foreground for development (`make run`).

SYNOPSIS
    python -m fulmar.devrun [--dir RUN_DIR] [--print-only]

DESCRIPTION
    Writes a configuration under RUN_DIR (default `run/` in the source
    tree) from the shipped `conf/main.cf` and `conf/master.cf`, with:

        smtp          127.0.0.1:2525
        submission    127.0.0.1:5870   (STARTTLS and AUTH required)
        submissions   127.0.0.1:4650   (TLS from the first byte, AUTH)
                      (the shipped entries of conf/master.cf with their
                      -o options, moved to these ports; an AUTH login for
                      the current user is made once, its password kept in
                      RUN_DIR/etc/sasl/dev-password and printed)
        queue_directory      = RUN_DIR/queue
        mail_spool_directory = RUN_DIR/mail
        data_directory       = RUN_DIR/data
        maillog_file         = /dev/stdout
        mail_owner           = the current user (see PRIVILEGES)
        smtpd_tls_cert_file, smtpd_tls_key_file = a self-signed localhost
                               certificate made once in RUN_DIR/etc/tls/

    then prints how to send a first message and where it lands, and runs
    `postfix -c RUN_DIR/etc start-fg` (the `postfix` next to this Python)
    until Ctrl-C.  The configuration is rewritten on every run, so edits
    belong in conf/ (or pass through `postconf -c RUN_DIR/etc -e` for one
    session).

    write_config() is also what the integration tests use to make their
    instances: one rule for "the shipped configuration, with these
    listeners and these parameters".

        write_config(conf_dir, etc_dir, inet_services, overrides)
        InetService(listen="127.0.0.1:2525", name="smtp", command="smtpd",
                    options={"syslog_name": "postfix/submission"})

    master.cf: every `inet` entry of the shipped file is dropped (with its
    continuation lines) and the given ones are appended; all other entries
    and comments are kept as they are.  main.cf: the shipped file followed
    by the overrides (Postfix: the last assignment wins).

PRIVILEGES
    Fulmar never runs its daemons as root.  Run as root, mail_owner becomes
    $FULMAR_MAIL_OWNER or `nobody`, and the run directory must be reachable
    by that user.

DIAGNOSTICS
    Exit 69 (EX_UNAVAILABLE) with one line saying what is missing when the
    shipped configuration or the `postfix` command is not there yet;
    otherwise the exit status of `postfix start-fg`.
"""
from __future__ import annotations

import argparse
import datetime
import getpass
import importlib.util
import ipaddress
import os
import pwd
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fulmar.version import require_python

EX_UNAVAILABLE = 69
SOURCE_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT = 2525, 5870, 4650
CERT_DAYS = 365
OWNER_CHECK_TIMEOUT = 60
GENERATED_MARK = "# ---- written by fulmar.devrun: the settings below win ----"


@dataclass
class InetService:
    listen: str                       # "[host:]port" as in master.cf
    name: str = "smtp"                # for the comment only: the service is named by `listen`
    command: str = "smtpd"
    options: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        line = f"{self.listen:<22} inet  n       -       n       -       -       {self.command}\n"
        return line + "".join(f"  -o {k}={v}\n" for k, v in self.options.items())


def _drop_inet_entries(master_cf: str) -> str:
    """master.cf text without its inet entries (continuation lines included)."""
    out, dropping = [], False
    for line in master_cf.splitlines(keepends=True):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
            continue
        if not line[0].isspace():            # a new logical entry starts here
            fields = line.split()
            dropping = len(fields) > 1 and fields[1] == "inet"
        if not dropping:
            out.append(line)
    return "".join(out)


def write_config(conf_dir: str | os.PathLike, etc_dir: str | os.PathLike,
                 inet_services: list[InetService], overrides: dict[str, str]) -> None:
    """Write etc_dir/main.cf and etc_dir/master.cf (see the module docstring)."""
    conf_dir, etc_dir = Path(conf_dir), Path(etc_dir)
    etc_dir.mkdir(parents=True, exist_ok=True)
    main_src = conf_dir / "main.cf"
    master_src = conf_dir / "master.cf"
    main = main_src.read_text() if main_src.exists() else ""
    if main and not main.endswith("\n"):
        main += "\n"
    main += f"\n{GENERATED_MARK}\n" + "".join(f"{k} = {v}\n" for k, v in overrides.items())
    master = _drop_inet_entries(master_src.read_text()) if master_src.exists() else ""
    if master and not master.endswith("\n"):
        master += "\n"
    master += f"\n{GENERATED_MARK}\n" + "".join(s.render() for s in inet_services)
    for name, text in (("main.cf", main), ("master.cf", master)):
        tmp = etc_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(etc_dir / name)


def self_signed_cert(tls_dir: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for `hostname` and 127.0.0.1, made once."""
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    tls_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def mail_owner() -> str:
    """The current user, or a non-root stand-in when we are root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    return os.environ.get("FULMAR_MAIL_OWNER", "nobody")


def owner_problem(owner: str) -> str | None:
    """Why daemons dropped to ``owner`` could not run this Python, or None.

    Started as root, master's daemons drop to mail_owner, so the
    interpreter, its standard library and the source tree must be readable
    by that user (a pyenv Python under a 0700 /root is not).
    """
    if os.geteuid() != 0:
        return None
    try:
        ent = pwd.getpwnam(owner)
    except KeyError:
        return f"mail_owner {owner} does not exist"
    try:
        r = subprocess.run([sys.executable, "-I", "-c", "import json, fulmar.version"],
                           user=ent.pw_uid, group=ent.pw_gid, extra_groups=[], cwd="/",
                           capture_output=True, text=True, timeout=OWNER_CHECK_TIMEOUT)
    except OSError as e:          # exec itself failed: the interpreter is out of reach
        last = str(e)
    else:
        if r.returncode == 0:
            return None
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
    return (f"user {owner} (mail_owner) cannot run {sys.executable} ({last}); make the "
            f"directories above {sys.base_prefix} and {SOURCE_ROOT} searchable "
            f"(chmod o+x, as .ci/run does) or run as an ordinary user")


def dev_config(run_dir: Path, conf_dir: Path) -> dict[str, str]:
    """Write run_dir/etc and return the main.cf overrides used."""
    for sub in ("etc", "mail", "data"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    cert, key = self_signed_cert(run_dir / "etc" / "tls")
    owner = mail_owner()
    overrides = {
        "smtpd_sasl_path": str(run_dir / "etc" / "sasl" / "smtpd.passwd"),
        "queue_directory": str(run_dir / "queue"),
        "data_directory": str(run_dir / "data"),
        "mail_spool_directory": str(run_dir / "mail"),
        "maillog_file": "/dev/stdout",
        "mail_owner": owner,
        "inet_interfaces": LOOPBACK,
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "alias_maps": "",
        "alias_database": "",
        "smtpd_tls_cert_file": str(cert),
        "smtpd_tls_key_file": str(key),
        "smtpd_tls_security_level": "may",
    }
    services = shipped_services(conf_dir)
    write_config(conf_dir, run_dir / "etc", services, overrides)
    sasl_file = run_dir / "etc" / "sasl" / "smtpd.passwd"
    dev_login(sasl_file, run_dir / DEV_SECRET)
    if owner != pwd.getpwuid(os.geteuid()).pw_name:
        # the daemons run as `owner`: let them write the mail and data dirs
        # and read the AUTH password file
        ent = pwd.getpwnam(owner)
        for sub in ("mail", "data"):
            os.chown(run_dir / sub, ent.pw_uid, ent.pw_gid)
        os.chown(sasl_file, ent.pw_uid, ent.pw_gid)
    return overrides


# Shipped inet services and the loopback ports `make run` gives them; their
# -o options (TLS and AUTH for submission) come from conf/master.cf as is.
DEV_SECRET = "etc/sasl/dev-password"
DEV_PORTS = {"smtp": SMTP_PORT, "submission": SUBMISSION_PORT, "submissions": SUBMISSIONS_PORT}


def shipped_services(conf_dir: Path) -> list[InetService]:
    """The shipped smtp/submission/submissions entries, moved to loopback ports."""
    from fulmar.config.mastercf import parse_master_cf
    out = []
    for svc in parse_master_cf(str(conf_dir / "master.cf")):
        if svc.type == "inet" and svc.name in DEV_PORTS:
            out.append(InetService(f"{LOOPBACK}:{DEV_PORTS[svc.name]}", svc.name,
                                   svc.command, dict(svc.overrides)))
    return out


def dev_login(passwd_file: Path, secret_file: Path) -> str:
    """An AUTH login for the current user, made once; returns its password.

    The password is random and kept (mode 0600) next to the password file,
    which holds only its scrypt hash, so that `make run` can print it.
    """
    from smtpd.sasl import hash_password
    passwd_file.parent.mkdir(parents=True, exist_ok=True)
    if secret_file.exists() and passwd_file.exists():
        return secret_file.read_text().strip()
    import secrets
    password = secrets.token_urlsafe(12)
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    tmp = passwd_file.with_suffix(".tmp")
    tmp.write_text(f"{getpass.getuser()}:{hash_password(password)}\n")
    os.chmod(tmp, 0o640)
    tmp.replace(passwd_file)
    return password


def banner(run_dir: Path, overrides: dict[str, str]) -> str:
    user = getpass.getuser()
    secret = run_dir / DEV_SECRET
    password = secret.read_text().strip() if secret.exists() else "(none)"
    rel = os.path.relpath(run_dir)
    return f"""\
Fulmar, in the foreground.  Configuration: {rel}/etc (rewritten from conf/ on every run)
  smtp        {LOOPBACK}:{SMTP_PORT}
  submission  {LOOPBACK}:{SUBMISSION_PORT}  (STARTTLS and AUTH required; self-signed certificate in {rel}/etc/tls/)
  submissions {LOOPBACK}:{SUBMISSIONS_PORT}  (TLS from the first byte, AUTH)
  queue {rel}/queue, mailboxes {rel}/mail, log lines below; mail_owner = {overrides['mail_owner']}

Send a first message from another terminal:
  swaks --server {LOOPBACK}:{SMTP_PORT} --to {user}@localhost
or
  python3 -c "import smtplib; smtplib.SMTP('{LOOPBACK}', {SMTP_PORT}).sendmail('me@localhost', ['{user}@localhost'], b'Subject: hello\\r\\n\\r\\nfirst message\\r\\n')"
It lands in {rel}/mail/{user} (mbox).

Submission with AUTH (user {user}, password {password}, kept in {rel}/{DEV_SECRET}):
  swaks --server {LOOPBACK}:{SUBMISSION_PORT} --tls --auth-user {user} --auth-password {password} --to someone@example.org
Stop with Ctrl-C.
"""


def main(argv: list[str] | None = None) -> int:
    require_python()
    ap = argparse.ArgumentParser(prog="fulmar-devrun", description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=str(SOURCE_ROOT / "run"), help="run directory")
    ap.add_argument("--print-only", action="store_true",
                    help="write the configuration and print the banner, start nothing")
    args = ap.parse_args(argv)
    run_dir = Path(args.dir).resolve()
    conf_dir = SOURCE_ROOT / "conf"
    missing = [f for f in ("main.cf", "master.cf") if not (conf_dir / f).exists()]
    if missing:
        print(f"fulmar-devrun: conf/{' and conf/'.join(missing)} not there yet: nothing to run",
              file=sys.stderr)
        return EX_UNAVAILABLE
    overrides = dev_config(run_dir, conf_dir)
    print(banner(run_dir, overrides), flush=True)
    problem = owner_problem(overrides["mail_owner"])
    if problem:
        print(f"fulmar-devrun: warning: {problem}", file=sys.stderr, flush=True)
    if args.print_only:
        return 0
    postfix = Path(sys.executable).parent / "postfix"
    if importlib.util.find_spec("fulmar.cli.postfix") is None or not postfix.exists():
        print("fulmar-devrun: the `postfix` command (fulmar/cli/postfix.py) is not there yet; "
              f"the configuration in {run_dir}/etc is ready for it", file=sys.stderr)
        return EX_UNAVAILABLE
    # Ctrl-C reaches postfix (same process group); we only wait for it to finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rc = subprocess.call([str(postfix), "-c", str(run_dir / "etc"), "start-fg"])
    if rc == EX_UNAVAILABLE:
        print("fulmar-devrun: `postfix start-fg` is not implemented yet (exit 69)",
              file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
