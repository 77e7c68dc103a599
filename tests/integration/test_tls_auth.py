"""TLS and SMTP AUTH against real peers: openssl s_client, swaks, smtplib,
raw sockets, a second Fulmar, and a real Dovecot auth server.

Certificates come from the session test CA (support.certs) plus an RSA
leaf made here, so smtpd_tls_chain_files carries RSA and ECDSA together.
Key files stay root-only (0600) when the tests run as root: smtpd reads
them before it switches to mail_owner, as Postfix does.
"""
from __future__ import annotations

import base64
import datetime
import os
import pwd
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support import certs
from support.instance import InetService

SECRET = "Corr3ct-Horse"
OPENSSL = shutil.which("openssl")
SWAKS = shutil.which("swaks")
DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
DOVEADM = shutil.which("doveadm")
REMOTE = "user@remote.test"


# -- certificates ---------------------------------------------------------------

def _rsa_leaf(ca: certs.TestCA, outdir: Path, name: str, ips: list[str]) -> Path:
    """An RSA leaf for `name`; returns one file: key + leaf + CA (a chain file)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress
    sans = [x509.DNSName(name)] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=True, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    path = outdir / f"{name}.rsa.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
                     + cert.public_bytes(serialization.Encoding.PEM) + ca.pem())
    path.chmod(0o600)
    return path


def _ec_chain(ca: certs.TestCA, outdir: Path, name: str, ips: list[str]) -> Path:
    leaf = ca.issue(outdir, name, ips=ips, basename=f"{name}.ec")
    path = outdir / f"{name}.ec.all.pem"
    path.write_bytes(leaf.key_path.read_bytes() + leaf.chain_path.read_bytes())
    path.chmod(0o600)
    return path


def _public_ca(ca: certs.TestCA, base: Path, name: str = "ca.pem") -> Path:
    """The CA certificate where mail_owner can read it (the smtp client loads it late)."""
    p = base / name
    p.write_bytes(ca.pem())
    p.chmod(0o644)
    return p


def _client_ctx(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _write_passwd(inst, user: str, password: str) -> Path:
    """fulmar-passwd, then hand the file to mail_owner's group (docs/sasl.md)."""
    r = inst.command("fulmar-passwd", "-c", str(inst.config_dir), user, input=password + "\n")
    assert r.returncode == 0, r.stderr
    path = inst.config_dir / "sasl" / "smtpd.passwd"
    text = path.read_text()
    assert password not in text and text.startswith(f"{user}:$scrypt$")
    if os.geteuid() == 0:
        ent = pwd.getpwnam(inst.mail_owner)
        os.chown(path, 0, ent.pw_gid)
        path.parent.chmod(0o755)
    return path


@pytest.fixture
def tls_files(test_ca, instance_base_dir, alloc):
    host = alloc.host()
    d = instance_base_dir / "tls"
    d.mkdir()
    d.chmod(0o711)
    rsa_chain = _rsa_leaf(test_ca, d, "a.test", [host])
    ec_chain = _ec_chain(test_ca, d, "a.test", [host])
    return {"host": host, "rsa": rsa_chain, "ec": ec_chain, "ca": _public_ca(test_ca, instance_base_dir)}


def _server_cf(files, **extra) -> dict:
    cf = {
        "smtpd_tls_chain_files": f"{files['rsa']}, {files['ec']}",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_loglevel": "1",
        "smtpd_tls_received_header": "yes",
        "smtpd_sender_login_maps": "inline:{alice@example.com=alice}",
    }
    cf.update(extra)
    return cf


SUBMISSION_OPTS = {
    "syslog_name": "postfix/submission",
    "smtpd_tls_security_level": "encrypt",
    "smtpd_sasl_auth_enable": "yes",
    "smtpd_tls_auth_only": "yes",
    "smtpd_relay_restrictions": "permit_sasl_authenticated,reject",
    "smtpd_sender_restrictions": "reject_sender_login_mismatch",
}
SUBMISSIONS_OPTS = {
    "syslog_name": "postfix/submissions",
    "smtpd_tls_wrappermode": "yes",
    "smtpd_sasl_auth_enable": "yes",
    "smtpd_relay_restrictions": "permit_sasl_authenticated,reject",
}


def _start_server(fulmar_instance, smtp_sink, alloc, files, *, name="a", submission=False, **extra):
    sink = smtp_sink()
    host = files["host"]
    services = []
    ports = {}
    if submission:
        ports["submission"] = alloc.port(host)
        ports["submissions"] = alloc.port(host)
        services = [InetService(f"{host}:{ports['submission']}", "submission", options=SUBMISSION_OPTS),
                    InetService(f"{host}:{ports['submissions']}", "submissions", options=SUBMISSIONS_OPTS)]
    cf = _server_cf(files, relayhost=f"[{sink.host}]:{sink.port}", **extra)
    inst = fulmar_instance(name, host=host, main_cf=cf, extra_services=services, start=False)
    if submission:
        inst.write_config()
        _write_passwd(inst, "alice", SECRET)
    inst.start()
    for p in ports.values():
        from support import addrs
        addrs.wait_bound(host, p, 20)
    return inst, sink, ports


# -- server side: STARTTLS with real clients ---------------------------------------------

@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_openssl_s_client_starttls_rsa_and_ecdsa(fulmar_instance, smtp_sink, alloc, tls_files):
    inst, _sink, _ = _start_server(fulmar_instance, smtp_sink, alloc, tls_files)
    host, port = inst.smtp_addr
    seen = {}
    for sigalg, want in (("ECDSA+SHA256", "ECDSA"), ("rsa_pss_rsae_sha256", "RSA")):
        r = subprocess.run([OPENSSL, "s_client", "-starttls", "smtp", "-connect", f"{host}:{port}",
                            "-CAfile", str(tls_files["ca"]), "-verify_return_error", "-sigalgs", sigalg,
                            "-servername", "a.test", "-verify_hostname", "a.test"],
                           input=b"QUIT\r\n", capture_output=True, timeout=30)
        out = (r.stdout + r.stderr).decode(errors="replace")
        assert r.returncode == 0, out
        assert "Verify return code: 0 (ok)" in out, out
        assert "250-AUTH" not in out      # AUTH not enabled on port 25
        seen[want] = out
    assert "Peer signature type: ECDSA" in seen["ECDSA"]
    assert "Peer signature type: RSA-PSS" in seen["RSA"]
    inst.wait_log(r"Anonymous TLS connection established from unknown\[[\d.]+\]: "
                  r"TLSv1\.3 with cipher \S+ \(\d+/\d+ bits\)", count=2)


@pytest.mark.skipif(SWAKS is None, reason="swaks not installed")
def test_swaks_tls_and_received_header(fulmar_instance, smtp_sink, alloc, tls_files):
    inst, sink, _ = _start_server(fulmar_instance, smtp_sink, alloc, tls_files)
    host, port = inst.smtp_addr
    r = subprocess.run([SWAKS, "--server", f"{host}:{port}", "--tls", "--tls-ca-path", str(tls_files["ca"]),
                        "--tls-verify", "--from", "a@client.test", "--to", REMOTE, "--helo", "client.test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "250 2.0.0 Ok: queued as" in r.stdout
    msg = sink.wait_for(1, timeout=30)[0]
    head = msg.data.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\n\t(using TLSv1.3 with cipher " in head and " bits))\r\n\t(No client certificate requested)" in head
    assert "with ESMTPS id" in head
    inst.wait_log(r"disconnect from .* ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7")


def _raw(host, port):
    s = socket.create_connection((host, port), timeout=10)
    f = s.makefile("rb")
    return s, f


def _reply(f) -> str:
    lines = []
    while True:
        line = f.readline().decode()
        assert line, "connection closed"
        lines.append(line.rstrip("\r\n"))
        if line[3:4] != "-":
            return "\n".join(lines)


def test_starttls_command_injection_is_discarded(fulmar_instance, smtp_sink, alloc, tls_files):
    inst, _sink, _ = _start_server(fulmar_instance, smtp_sink, alloc, tls_files,
                                   smtpd_forbid_unauth_pipelining="no")
    host, port = inst.smtp_addr
    s, f = _raw(host, port)
    assert _reply(f).startswith("220 ")
    s.sendall(b"EHLO c.test\r\n")
    assert "250-STARTTLS" in _reply(f)
    # One packet: the MAIL FROM must never be executed (CVE-2011-0411).
    s.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert _reply(f) == "220 2.0.0 Ready to start TLS"
    tls = _client_ctx(tls_files["ca"]).wrap_socket(s, server_hostname="a.test")
    tf = tls.makefile("rb")
    tls.sendall(b"RCPT TO:<" + REMOTE.encode() + b">\r\n")
    assert _reply(tf) == "503 5.5.1 Error: need MAIL command"
    tls.sendall(b"EHLO c.test\r\n")
    assert "STARTTLS" not in _reply(tf)
    tls.sendall(b"STARTTLS\r\n")
    assert _reply(tf) == "554 5.5.1 Error: TLS already active"
    tls.sendall(b"QUIT\r\n")
    assert _reply(tf).startswith("221")
    tls.close()
    assert "injected@evil.test" not in inst.log_text()


def test_starttls_pipelining_disconnects_by_default(fulmar_instance, smtp_sink, alloc, tls_files):
    inst, _sink, _ = _start_server(fulmar_instance, smtp_sink, alloc, tls_files)
    s, f = _raw(*inst.smtp_addr)
    _reply(f)
    s.sendall(b"EHLO c.test\r\n")
    _reply(f)
    s.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert _reply(f) == "554 5.5.0 Error: SMTP protocol synchronization"
    s.close()


# -- submission with AUTH ------------------------------------------------------------------

def test_submission_auth_codes_with_smtplib(fulmar_instance, smtp_sink, alloc, tls_files):
    inst, sink, ports = _start_server(fulmar_instance, smtp_sink, alloc, tls_files, submission=True)
    host = tls_files["host"]
    c = smtplib.SMTP(host, ports["submission"], timeout=30)
    code, text = c.ehlo("client.test")
    assert b"STARTTLS" in text and b"AUTH" not in text
    assert c.docmd("MAIL", "FROM:<alice@example.com>") == (530, b"5.7.0 Must issue a STARTTLS command first")
    plain = base64.b64encode(b"\0alice\0" + SECRET.encode()).decode()
    assert c.docmd("AUTH", "PLAIN " + plain) == (
        538, b"5.7.11 Encryption required for requested authentication mechanism")
    c.starttls(context=_client_ctx(tls_files["ca"]))
    code, text = c.ehlo("client.test")
    assert b"AUTH PLAIN LOGIN" in text and b"STARTTLS" not in text
    # unauthenticated relaying is refused
    c.docmd("MAIL", "FROM:<someone@other.test>")
    assert c.docmd("RCPT", f"TO:<{REMOTE}>") == (554, b"5.7.1 <user@remote.test>: Recipient address rejected: Access denied")
    c.docmd("RSET")
    wrong = base64.b64encode(b"\0alice\0wrong-password").decode()
    assert c.docmd("AUTH", "PLAIN " + wrong) == (
        535, b"5.7.8 Error: authentication failed: authentication failure")
    assert c.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")
    assert c.docmd("*") == (501, b"5.7.0 Authentication aborted")
    assert c.docmd("AUTH", "PLAIN " + plain) == (235, b"2.7.0 Authentication successful")
    assert c.docmd("AUTH", "PLAIN " + plain) == (503, b"5.5.1 Error: already authenticated")
    try:
        c.sendmail("bob@example.com", [REMOTE], b"Subject: x\r\n\r\nno\r\n")
        raise AssertionError("sender login mismatch was accepted")
    except smtplib.SMTPRecipientsRefused as e:
        assert e.recipients[REMOTE] == (
            553, b"5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice")
    c.sendmail("alice@example.com", [REMOTE], b"Subject: hello\r\n\r\nbody\r\n")
    c.quit()
    msg = sink.wait_for(1, timeout=30)[0]
    assert b"with ESMTPSA id" in msg.data
    log = inst.wait_log(r"postfix/submission/smtpd\[\d+\]: \S+: client=unknown\[[\d.]+\], "
                        r"sasl_method=PLAIN, sasl_username=alice")
    assert log
    inst.wait_log(r"warning: unknown\[[\d.]+\]: SASL PLAIN authentication failed: "
                  r"authentication failure, sasl_username=alice")
    inst.wait_log(r"warning: unknown\[[\d.]+\]: SASL LOGIN authentication aborted")
    text = inst.log_text()
    for secret in (SECRET, "wrong-password", plain, wrong):
        assert secret not in text


@pytest.mark.skipif(SWAKS is None, reason="swaks not installed")
def test_swaks_submission_and_submissions(fulmar_instance, smtp_sink, alloc, tls_files):
    inst, sink, ports = _start_server(fulmar_instance, smtp_sink, alloc, tls_files, submission=True)
    host = tls_files["host"]
    common = ["--from", "alice@example.com", "--to", REMOTE, "--auth-user", "alice",
              "--auth-password", SECRET, "--tls-ca-path", str(tls_files["ca"]), "--tls-verify",
              "--helo", "client.test"]
    for flag, port, mech in (("--tls", ports["submission"], "PLAIN"), ("--tlsc", ports["submissions"], "LOGIN")):
        r = subprocess.run([SWAKS, "--server", f"{host}:{port}", flag, "--auth", mech, *common,
                            "--timeout", "20"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "235 2.7.0 Authentication successful" in r.stdout
    sink.wait_for(2, timeout=30)
    inst.wait_log(r"postfix/submissions/smtpd\[\d+\]: \S+: client=unknown\[[\d.]+\], "
                  r"sasl_method=LOGIN, sasl_username=alice")
    inst.wait_log(r"postfix/submissions/smtpd\[\d+\]: Anonymous TLS connection established")
    # a plaintext client on the implicit-TLS port gets nothing useful
    s = socket.create_connection((host, ports["submissions"]), timeout=10)
    s.sendall(b"EHLO c.test\r\n")
    s.settimeout(10)
    try:
        data = s.recv(100)
    except (ConnectionResetError, socket.timeout):
        data = b""
    assert not data.startswith(b"220")
    s.close()


# -- client side: Fulmar to Fulmar --------------------------------------------------------

@pytest.mark.parametrize("policy,trusted_ca,outcome", [
    ("secure match=b.test", True, "sent"),
    ("verify match=b.test", True, "sent"),
    ("secure match=wrong.test", True, "Server certificate not verified"),
    ("verify match=b.test", False, "Server certificate not verified"),
    ("encrypt", False, "sent"),
])
def test_fulmar_to_fulmar_tls_levels(fulmar_instance, smtp_sink, alloc, test_ca, instance_base_dir,
                                     policy, trusted_ca, outcome):
    d = instance_base_dir / "tls-b"
    d.mkdir()
    d.chmod(0o711)
    b_host = alloc.host()
    chain = _ec_chain(test_ca, d, "b.test", [b_host])
    sink = smtp_sink()
    b = fulmar_instance("b", host=b_host, main_cf={
        "smtpd_tls_chain_files": str(chain), "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_loglevel": "1", "relayhost": f"[{sink.host}]:{sink.port}"})
    ca = test_ca if trusted_ca else certs.TestCA.create("Some Other CA")
    cafile = _public_ca(ca, instance_base_dir, "client-ca.pem")
    nexthop = f"[{b_host}]:{b.smtp_port}"
    a = fulmar_instance("a", main_cf={
        "relayhost": nexthop, "smtp_tls_CAfile": str(cafile), "smtp_tls_loglevel": "1",
        "smtp_tls_security_level": "may",
        "smtp_tls_policy_maps": f"texthash:{instance_base_dir / 'tls_policy'}"})
    (instance_base_dir / "tls_policy").write_text(f"{nexthop} {policy}\n")
    (instance_base_dir / "tls_policy").chmod(0o644)
    ah, ap = a.smtp_addr
    with smtplib.SMTP(ah, ap, timeout=30) as c:
        c.sendmail("sender@a.test", [REMOTE], b"Subject: tls\r\n\r\nhello\r\n")
    if outcome == "sent":
        a.wait_log(r"to=<" + REMOTE + r">, relay=[\d.]+\[[\d.]+\]:\d+, .*status=sent", timeout=30)
        label = "Verified" if policy.split()[0] in ("verify", "secure") else "Untrusted"
        a.wait_log(label + r" TLS connection established to [\d.]+\[[\d.]+\]:\d+: TLSv1\.3 with cipher")
        sink.wait_for(1, timeout=30)
    else:
        a.wait_log(r"to=<" + REMOTE + r">, .*dsn=4\.7\.5, status=deferred \(" + outcome, timeout=30)
        assert not sink.messages


# -- Dovecot SASL ------------------------------------------------------------------------

DOVECOT_CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {internal}
passdb {{
  driver = passwd-file
  args = {dir}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {dir}/auth-client {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture
def dovecot_auth(instance_base_dir):
    if DOVECOT is None or DOVEADM is None:
        pytest.skip("dovecot-core not installed (apt-get install dovecot-core); .ci/run installs it")
    if os.geteuid() != 0:
        pytest.skip("the Dovecot fixture starts dovecot as root")
    d = instance_base_dir / "dovecot"
    d.mkdir()
    d.chmod(0o755)
    hashed = subprocess.run([DOVEADM, "pw", "-s", "SHA512-CRYPT", "-p", SECRET],
                            capture_output=True, text=True, check=True).stdout.strip()
    (d / "users").write_text(f"carol:{hashed}\n")
    (d / "users").chmod(0o644)
    internal = "dovenull" if _user_exists("dovenull") else "nobody"
    conf = d / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(dir=d, internal=internal))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    sock = d / "auth-client"
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
            proc.kill()
            log = (d / "dovecot.log").read_text() if (d / "dovecot.log").exists() else ""
            pytest.fail(f"dovecot did not start: {out}\n{log}")
        time.sleep(0.05)
    yield sock
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_dovecot_sasl(fulmar_instance, smtp_sink, alloc, tls_files, dovecot_auth):
    sink = smtp_sink()
    inst = fulmar_instance("a", host=tls_files["host"], main_cf=_server_cf(
        tls_files, relayhost=f"[{sink.host}]:{sink.port}", smtpd_sasl_auth_enable="yes",
        smtpd_sasl_type="dovecot", smtpd_sasl_path=str(dovecot_auth), smtpd_tls_auth_only="yes",
        mynetworks="127.255.255.255/32",
        smtpd_relay_restrictions="permit_sasl_authenticated, reject_unauth_destination"))
    c = smtplib.SMTP(*inst.smtp_addr, timeout=30)
    c.starttls(context=_client_ctx(tls_files["ca"]))
    c.ehlo("client.test")
    wrong = base64.b64encode(b"\0carol\0nope").decode()
    assert c.docmd("AUTH", "PLAIN " + wrong)[0] == 535
    c.login("carol", SECRET)             # smtplib prefers PLAIN... whichever: both go to Dovecot
    c.sendmail("carol@example.com", [REMOTE], b"Subject: dovecot\r\n\r\nhi\r\n")
    c.quit()
    sink.wait_for(1, timeout=30)
    inst.wait_log(r"client=unknown\[[\d.]+\], sasl_method=\w+, sasl_username=carol")
    inst.wait_log(r"warning: unknown\[[\d.]+\]: SASL PLAIN authentication failed: "
                  r"[\w ]+, sasl_username=carol")
    assert SECRET not in inst.log_text()


# -- client side of CVE-2011-0411 -------------------------------------------------------------

class _InjectingServer:
    """Offers STARTTLS and answers it with "220" plus an injected reply in the
    same packet; then speaks SMTP over TLS and records the commands."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext):
        import threading
        self.ctx, self.commands, self.error = ctx, [], None
        self.sock = socket.create_server((host, port))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(30)
            f = conn.makefile("rb")
            conn.sendall(b"220 evil.test ESMTP\r\n")
            f.readline()
            conn.sendall(b"250-evil.test\r\n250 STARTTLS\r\n")
            assert f.readline() == b"STARTTLS\r\n"
            conn.sendall(b"220 2.0.0 Ready to start TLS\r\n554 5.7.1 injected before the handshake\r\n")
            tls = self.ctx.wrap_socket(conn, server_side=True)
            tf = tls.makefile("rb")
            answers = {b"EHLO": b"250-evil.test\r\n250 PIPELINING\r\n", b"MAIL": b"250 2.1.0 Ok\r\n",
                       b"RCPT": b"250 2.1.5 Ok\r\n", b"DATA": b"354 go\r\n", b"QUIT": b"221 Bye\r\n",
                       b"RSET": b"250 Ok\r\n"}
            while True:
                line = tf.readline()
                if not line:
                    break
                self.commands.append(line)
                verb = line[:4].upper()
                if verb == b"DATA":
                    tls.sendall(answers[verb])
                    while tf.readline() not in (b".\r\n", b""):
                        pass
                    tls.sendall(b"250 2.0.0 Ok: queued as EVIL1\r\n")
                    continue
                tls.sendall(answers.get(verb, b"502 what\r\n"))
                if verb == b"QUIT":
                    break
        except Exception as e:       # reported by the test
            self.error = e
        finally:
            self.sock.close()


def test_client_discards_replies_injected_before_the_handshake(fulmar_instance, alloc, test_ca,
                                                                instance_base_dir):
    shost = alloc.host()
    sport = alloc.port(shost)
    leaf = test_ca.issue(instance_base_dir / "evil", "evil.test", ips=[shost])
    srv = _InjectingServer(shost, sport, leaf.server_context())
    a = fulmar_instance("a", main_cf={"relayhost": f"[{shost}]:{sport}", "smtp_tls_security_level": "encrypt"})
    with smtplib.SMTP(*a.smtp_addr, timeout=30) as c:
        c.sendmail("sender@a.test", [REMOTE], b"Subject: x\r\n\r\nhi\r\n")
    a.wait_log(r"to=<" + REMOTE + r">, relay=[\d.]+\[[\d.]+\]:\d+, .*status=sent \(250 2\.0\.0 Ok: queued as EVIL1\)",
               timeout=30)
    srv.thread.join(10)
    assert srv.error is None
    assert srv.commands[0].startswith(b"EHLO ")


def test_tls_session_resumption(fulmar_instance, smtp_sink, alloc, tls_files):
    """A ticket from one smtpd process resumes with that process (tickets are
    per process: Fulmar has no tlsmgr; see docs/tls.md)."""
    import re
    inst, _sink, _ = _start_server(fulmar_instance, smtp_sink, alloc, tls_files)
    ctx = _client_ctx(tls_files["ca"])
    first = None
    reused = []
    for _ in range(8):
        s, f = _raw(*inst.smtp_addr)
        _reply(f)
        s.sendall(b"EHLO c.test\r\n")
        _reply(f)
        s.sendall(b"STARTTLS\r\n")
        assert _reply(f).startswith("220 ")
        tls = ctx.wrap_socket(s, server_hostname="a.test", session=first)
        tf = tls.makefile("rb")
        tls.sendall(b"EHLO c.test\r\n")
        _reply(tf)                      # the ticket arrives with the first data
        reused.append(tls.session_reused)
        if first is None:
            first = tls.session
        tls.sendall(b"QUIT\r\n")
        _reply(tf)
        tls.close()
    lines = inst.wait_log(r"postfix/smtpd\[(\d+)\]: disconnect from", count=8)
    pids = [m.group(1) for m in lines]
    assert reused[0] is False
    assert reused[1:] == [pid == pids[0] for pid in pids[1:]], (reused, pids)
    assert any(reused[1:]) or len(set(pids)) == len(pids)
