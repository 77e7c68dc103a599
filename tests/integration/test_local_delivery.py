"""Local, virtual and LMTP delivery against real users, files, commands and Dovecot.

Each test starts a Fulmar instance (postfix -c DIR start), creates real
system users (useradd; removed afterwards), sends mail over SMTP and checks
what lands on disk byte by byte, or which DSN or deferral results.  Needs
root (users, chown, mounts, Dovecot); skipped otherwise.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from support import dovecot as dovecot_mod

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates system users")

HOST = "a.test"     # myhostname of the first fulmar_instance: in mydestination


@pytest.fixture
def users(instance_base_dir):
    """users(n) -> names of n fresh system users with homes under the instance dir."""
    made: list[str] = []
    homes = instance_base_dir / "home"
    homes.mkdir(exist_ok=True)
    homes.chmod(0o755)

    def make(n: int = 1) -> list[str]:
        names = []
        for _ in range(n):
            name = "fm" + uuid.uuid4().hex[:8]
            subprocess.run(["useradd", "-m", "-d", str(homes / name), "-s", "/bin/sh", "-K",
                            "MAIL_DIR=/nonexistent", name], check=True, capture_output=True)
            made.append(name)
            names.append(name)
        return names

    yield make
    for name in made:
        subprocess.run(["userdel", "-r", name], capture_output=True)


@pytest.fixture
def spool(instance_base_dir):
    """A Debian-like mail spool: root:mail 2775."""
    d = instance_base_dir / "spool"
    d.mkdir()
    os.chown(d, 0, grp.getgrnam("mail").gr_gid)
    d.chmod(0o2775)
    return d


def send(inst, rcpts, body: bytes, sender: str = "sender@example.org") -> None:
    with smtplib.SMTP(*inst.smtp_addr, timeout=30) as s:
        s.sendmail(sender, rcpts, body)


def message(subject: str, extra: bytes = b"") -> bytes:
    return (b"From: Sender <sender@example.org>\r\nTo: someone\r\n"
            b"Subject: " + subject.encode() + b"\r\n"
            b"Message-ID: <" + uuid.uuid4().hex.encode() + b"@example.org>\r\n"
            b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n\r\n"
            b"Hello.\r\nFrom the body: quoted in mbox.\r\n" + extra)


def strip_received(data: bytes) -> bytes:
    """Remove the Received: header cleanup added (its date and queue ID vary)."""
    return re.sub(rb"Received: [^\n]*\n(?:[ \t][^\n]*\n)*", b"", data, count=1)


def instance(fulmar_instance, spool, **main_cf):
    cf = {"mail_spool_directory": str(spool), "mailbox_size_limit": "0", **main_cf}
    return fulmar_instance(main_cf=cf)


def test_mbox_delivery_byte_exact(fulmar_instance, users, spool):
    (u,) = users(1)
    inst = instance(fulmar_instance, spool)
    body = message("mbox")
    send(inst, [f"{u}@{HOST}"], body)
    inst.wait_log(rf"to=<{u}@{HOST}>, relay=local, .*status=sent \(delivered to mailbox\)")
    box = spool / u
    data = box.read_bytes()
    first, rest = data.split(b"\n", 1)
    assert re.fullmatch(rb"From sender@example\.org  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", first)
    expected = (f"Return-Path: <sender@example.org>\nX-Original-To: {u}@{HOST}\n"
                f"Delivered-To: {u}@{HOST}\n").encode() + body.replace(b"\r\n", b"\n").replace(
                    b"\nFrom the body", b"\n>From the body") + b"\n"
    assert strip_received(rest) == expected
    st = box.stat()
    pw = pwd.getpwnam(u)
    assert (st.st_uid, st.st_mode & 0o777) == (pw.pw_uid, 0o600)
    assert not Path(str(box) + ".lock").exists()


def test_maildir_delivery_byte_exact(fulmar_instance, users, spool):
    (u,) = users(1)
    inst = instance(fulmar_instance, spool, home_mailbox="Maildir/")
    body = message("maildir")
    send(inst, [f"{u}@{HOST}"], body)
    inst.wait_log(rf"to=<{u}@{HOST}>, relay=local, .*status=sent \(delivered to maildir\)")
    pw = pwd.getpwnam(u)
    new = Path(pw.pw_dir) / "Maildir" / "new"
    (f,) = list(new.iterdir())
    expected = (f"Return-Path: <sender@example.org>\nX-Original-To: {u}@{HOST}\n"
                f"Delivered-To: {u}@{HOST}\n").encode() + body.replace(b"\r\n", b"\n")
    assert strip_received(f.read_bytes()) == expected
    assert f.stat().st_uid == pw.pw_uid
    assert not list((Path(pw.pw_dir) / "Maildir" / "tmp").iterdir())


def _aliases(inst, text: str) -> str:
    path = inst.config_dir / "aliases"
    path.write_text(text)
    r = inst.command("postalias", str(path))
    assert r.returncode == 0, r.stderr
    return f"hash:{path}"


def test_aliases_include_command_file_and_forward(fulmar_instance, users, spool, instance_base_dir):
    u1, u2 = users(2)
    out = instance_base_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    inc = instance_base_dir / "list.inc"
    inc.write_text(f"# members\n{u2}\n")
    inst = fulmar_instance(start=False, main_cf={"mail_spool_directory": str(spool),
                                                 "mailbox_size_limit": "0"})
    inst.write_config()
    amap = _aliases(inst, f"team: {u1}, :include:{inc}\n"
                          f"pipe: \"|cat > {out}/cmd.txt\"\n"
                          f"tofile: {out}/file.mbox\n")
    inst.overrides.update({"alias_maps": amap, "alias_database": amap})
    inst.start()
    send(inst, [f"team@{HOST}"], message("team"))
    inst.wait_log(rf"to=<{u1}@{HOST}>, orig_to=<team@{HOST}>, relay=local, .*status=sent")
    inst.wait_log(rf"to=<{u2}@{HOST}>, orig_to=<team@{HOST}>, relay=local, .*status=sent")
    assert b"Subject: team" in (spool / u1).read_bytes()
    assert b"Subject: team" in (spool / u2).read_bytes()
    send(inst, [f"pipe@{HOST}", f"tofile@{HOST}"], message("pipe"))
    inst.wait_log(r"status=sent \(delivered to command: cat > ")
    inst.wait_log(r"status=sent \(delivered to file: ")
    cmd = (out / "cmd.txt").read_bytes()
    assert cmd.startswith(b"From sender@example.org  ") and b"Delivered-To: pipe@" in cmd
    # root-owned alias table: commands and files run as default_privs, never root
    assert (out / "cmd.txt").stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert b"Subject: pipe" in (out / "file.mbox").read_bytes()


def _wait_dsn_in(box: Path, text: bytes, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.exists() and text in box.read_bytes():
            return box.read_bytes()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {box}")


def test_alias_and_include_loops_bounce(fulmar_instance, users, spool, instance_base_dir):
    (owner,) = users(1)
    inc = instance_base_dir / "self.inc"
    inc.write_text(f":include:{inc}\n")
    inst = fulmar_instance(start=False, main_cf={"mail_spool_directory": str(spool),
                                                 "mailbox_size_limit": "0"})
    inst.write_config()
    amap = _aliases(inst, f"loopa: loopb\nloopb: loopa\nincl: :include:{inc}\n")
    inst.overrides.update({"alias_maps": amap, "alias_database": amap})
    inst.start()
    send(inst, [f"loopa@{HOST}"], message("loop"), sender=f"{owner}@{HOST}")
    inst.wait_log(r"dsn=5\.4\.6, status=bounced \(mail forwarding loop for loop")
    send(inst, [f"incl@{HOST}"], message("incloop"), sender=f"{owner}@{HOST}")
    inst.wait_log(rf"to=<incl@{HOST}>.*dsn=5\.4\.6, status=bounced \(mail forwarding loop for incl@")
    # Two independent notices: they may arrive in either order (qmgr asks
    # the bounce daemon for different messages in parallel).
    _wait_dsn_in(spool / owner, b"Subject: incloop")
    data = _wait_dsn_in(spool / owner, b"Subject: loop")
    assert data.count(b"mail forwarding loop") >= 2


def test_over_quota_mailbox_bounces(fulmar_instance, users, spool):
    u, owner = users(2)
    inst = instance(fulmar_instance, spool, mailbox_size_limit="20000",
                    message_size_limit="20000")
    (spool / u).write_bytes(b"x" * 15000)
    os.chown(spool / u, pwd.getpwnam(u).pw_uid, -1)
    send(inst, [f"{u}@{HOST}"], message("big", b"y" * 8000 + b"\r\n"), sender=f"{owner}@{HOST}")
    inst.wait_log(rf"to=<{u}@{HOST}>.*dsn=5\.2\.2, status=bounced \(cannot update mailbox .* file too large\)")
    assert (spool / u).read_bytes() == b"x" * 15000          # untouched
    _wait_dsn_in(spool / owner, b"file too large")


def test_failing_commands_bounce_or_defer(fulmar_instance, users, spool):
    (owner,) = users(1)
    inst = fulmar_instance(start=False, main_cf={"mail_spool_directory": str(spool),
                                                 "mailbox_size_limit": "0"})
    inst.write_config()
    amap = _aliases(inst, "fail: \"|echo no such luck; exit 3\"\n"
                          "later: \"|echo busy; exit 75\"\n")
    inst.overrides.update({"alias_maps": amap, "alias_database": amap})
    inst.start()
    send(inst, [f"fail@{HOST}"], message("fail"), sender=f"{owner}@{HOST}")
    inst.wait_log(r'dsn=5\.3\.0, status=bounced \(Command died with status 3: "echo no such luck; '
                  r'exit 3"\. Command output: no such luck\)')
    _wait_dsn_in(spool / owner, b"Command output: no such luck")
    send(inst, [f"later@{HOST}"], message("later"), sender=f"{owner}@{HOST}")
    inst.wait_log(r"dsn=4\.3\.0, status=deferred \(temporary failure\. Command output: busy\)")
    deadline = time.monotonic() + 10
    while not inst.queue_files("deferred") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inst.queue_files("deferred")                     # kept, not lost


def test_full_disk_defers_and_keeps_mail(fulmar_instance, users, instance_base_dir):
    (u,) = users(1)
    spool = instance_base_dir / "tiny"
    spool.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs", str(spool)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())
    try:
        inst = fulmar_instance(main_cf={"mail_spool_directory": str(spool),
                                        "mailbox_size_limit": "0"})
        send(inst, [f"{u}@{HOST}"], message("huge", (b"z" * 998 + b"\r\n") * 100))
        inst.wait_log(rf"to=<{u}@{HOST}>.*dsn=4\.3\.0, status=deferred \(cannot update mailbox .*"
                      r"No space left on device\)")
        assert (spool / u).stat().st_size == 0             # truncated back, no half message
        deadline = time.monotonic() + 10
        while not inst.queue_files("deferred") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert inst.queue_files("deferred")
        inst.stop()
    finally:
        subprocess.run(["umount", "-l", str(spool)], capture_output=True)


def test_unknown_local_user_rejected_at_rcpt(fulmar_instance, spool):
    inst = instance(fulmar_instance, spool)
    with smtplib.SMTP(*inst.smtp_addr, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("sender@example.org")
        code, text = s.rcpt(f"nosuchuser{uuid.uuid4().hex[:6]}@{HOST}")
    assert code == 550
    assert text.startswith(b"5.1.1 <nosuchuser") and \
        text.endswith(b"Recipient address rejected: User unknown in local recipient table")


def test_virtual_delivery(fulmar_instance, instance_base_dir):
    base = instance_base_dir / "vmail"
    base.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    inst = fulmar_instance(main_cf={
        "virtual_mailbox_domains": "vdom.test", "virtual_transport": "virtual",
        "virtual_mailbox_base": str(base),
        "virtual_mailbox_maps": "inline:{bob@vdom.test=bob/Maildir/, carol@vdom.test=carol.mbox}",
        "virtual_uid_maps": f"static:{nobody.pw_uid}", "virtual_gid_maps": f"static:{nobody.pw_gid}"})
    body = message("virtual")
    send(inst, ["bob@vdom.test", "carol@vdom.test"], body)
    inst.wait_log(r"to=<bob@vdom\.test>, relay=virtual, .*status=sent \(delivered to maildir\)")
    inst.wait_log(r"to=<carol@vdom\.test>, relay=virtual, .*status=sent \(delivered to mailbox\)")
    (f,) = list((base / "bob" / "Maildir" / "new").iterdir())
    assert strip_received(f.read_bytes()) == (
        b"Return-Path: <sender@example.org>\nX-Original-To: bob@vdom.test\n"
        b"Delivered-To: bob@vdom.test\n" + body.replace(b"\r\n", b"\n"))
    assert f.stat().st_uid == nobody.pw_uid
    assert b">From the body" in (base / "carol.mbox").read_bytes()
    with smtplib.SMTP(*inst.smtp_addr, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("sender@example.org")
        code, text = s.rcpt("nobody-here@vdom.test")
    assert code == 550 and text.endswith(b"User unknown in virtual mailbox table")


@pytest.fixture
def dovecot(instance_base_dir):
    why = dovecot_mod.problem()
    if why:
        (pytest.fail if os.environ.get("CI") and shutil.which("dovecot") else pytest.skip)(why)
    d = dovecot_mod.DovecotLmtp(instance_base_dir / "dovecot",
                                users=["alice@example.test", f"lmtpuser@{HOST}"])
    d.start()
    yield d
    d.stop()


def test_lmtp_to_dovecot_inet_and_unix(fulmar_instance, dovecot, users, spool):
    inst = fulmar_instance(main_cf={
        "mail_spool_directory": str(spool),
        "virtual_mailbox_domains": "example.test",
        "virtual_mailbox_maps": "inline:{alice@example.test=x}",
        "virtual_transport": f"lmtp:inet:{dovecot.host}:{dovecot.port}",
        "mailbox_transport": f"lmtp:unix:{dovecot.socket_path}"})
    subprocess.run(["useradd", "-M", "-N", "lmtpuser"], capture_output=True)
    try:
        body = message("lmtp")
        send(inst, ["alice@example.test"], body)
        inst.wait_log(r"postfix/lmtp\[\d+\]: \w+: to=<alice@example\.test>, relay=.*status=sent")
        send(inst, [f"lmtpuser@{HOST}"], message("lmtp-unix"))
        inst.wait_log(rf"postfix/lmtp\[\d+\]: \w+: to=<lmtpuser@{HOST}>, relay=.*status=sent")
        (f,) = list((dovecot.maildir("alice@example.test") / "new").iterdir())
        got = f.read_bytes()
        assert body.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1] in got
        assert b"Subject: lmtp\n" in got
        assert list((dovecot.maildir(f"lmtpuser@{HOST}") / "new").iterdir())
    finally:
        subprocess.run(["userdel", "lmtpuser"], capture_output=True)


def test_error_and_retry_services_relocated_and_transport_maps(fulmar_instance, users, spool):
    (owner,) = users(1)
    inst = instance(fulmar_instance, spool,
                    relocated_maps="inline:{moved@a.test=new@else.example}",
                    transport_maps="inline:{{held.example=retry:4.7.0 held for review}}")
    msg = message("via sendmail").decode()
    r = inst.command("sendmail", "-f", f"{owner}@{HOST}", f"moved@{HOST}", "x@held.example",
                     input=msg)
    assert r.returncode == 0, r.stderr
    inst.wait_log(rf"to=<moved@{HOST}>, relay=none, .*dsn=5\.1\.6, "
                  r"status=bounced \(User has moved to new@else\.example\)")
    inst.wait_log(r"to=<x@held\.example>, relay=none, .*dsn=4\.7\.0, status=deferred \(held for review\)")
    _wait_dsn_in(spool / owner, b"User has moved to new@else.example")
    with smtplib.SMTP(*inst.smtp_addr, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("sender@example.org")
        code, text = s.rcpt(f"moved@{HOST}")
    assert (code, text) == (550, f"5.1.6 <moved@{HOST}>: Recipient address rejected: "
                                 "User has moved to new@else.example".encode())
