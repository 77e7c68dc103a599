"""sendmail, mailq, postqueue, postsuper against a running (and a stopped) Fulmar.

Scenarios (issue 4, "Done means"):
  * sendmail -t while Fulmar runs: the message reaches a real SMTP sink
    with the Bcc: header removed and the Bcc recipient delivered; pickup
    logs `QID: uid=N from=<sender>`;
  * sendmail while Fulmar is stopped: the file waits in maildrop/ and is
    delivered after `postfix start`;
  * two unprivileged users (root only; throwaway users fulmartest1/2,
    removed afterwards) submit through the setgid postdrop helper, and
    neither can read, list, rename or delete the other's queued mail;
  * Debian's bsd-mailx `mail` pointed at Fulmar's sendmail delivers;
  * mailq / postqueue -p / -j list deferred mail; postsuper -h/-H/-d work;
    postsuper bad input changes nothing.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TEST_USERS = ("fulmartest1", "fulmartest2")


def _relay_to(sink) -> dict[str, str]:
    return {"relayhost": f"[{sink.host}]:{sink.port}", "smtp_dns_support_level": "disabled"}


def _wait(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _sink_messages(sink, n=1, timeout=60):
    return sink.wait_for(n, timeout=timeout)


def test_sendmail_t_running(fulmar_instance, smtp_sink):
    sink = smtp_sink()
    inst = fulmar_instance(main_cf=_relay_to(sink))
    msg = ("From: Alice <alice@a.test>\nTo: bob@b.test\nCc: carol@b.test\n"
           "Bcc: hidden@b.test\nSubject: -t test\n\nhello\n.\nnot the end\n")
    r = inst.command("sendmail", "-t", "-i", "-f", "alice@a.test", input=msg)
    assert r.returncode == 0, r.stderr
    inst.wait_log(r"postfix/pickup\[\d+\]: \w+: uid=\d+ from=<alice@a\.test>")
    (m,) = _sink_messages(sink)
    assert sorted(m.rcpt_tos) == ["bob@b.test", "carol@b.test", "hidden@b.test"]
    text = m.data.decode()
    assert "not the end" in text              # -i: "." is not the end
    assert "Bcc:" not in text and "hidden@b.test" not in text


def test_sendmail_dot_ends_message_without_i(fulmar_instance, smtp_sink):
    sink = smtp_sink()
    inst = fulmar_instance(main_cf=_relay_to(sink))
    r = inst.command("sendmail", "-f", "a@a.test", "bob@b.test",
                     input="Subject: dot\n\nbefore\n.\nafter\n")
    assert r.returncode == 0, r.stderr
    (m,) = _sink_messages(sink)
    assert b"before" in m.data and b"after" not in m.data


def test_sendmail_while_stopped(fulmar_instance, smtp_sink):
    sink = smtp_sink()
    inst = fulmar_instance(main_cf=_relay_to(sink))
    inst.stop()
    r = inst.command("sendmail", "-f", "down@a.test", "bob@b.test",
                     input="Subject: while down\n\nqueued while stopped\n")
    assert r.returncode == 0, r.stderr
    assert len(inst.queue_files("maildrop")) == 1
    listing = inst.command("mailq")
    assert "down@a.test" in listing.stdout and "bob@b.test" in listing.stdout
    inst.start()
    inst.wait_log(r"uid=\d+ from=<down@a\.test>")
    inst.wait_log(r"to=<bob@b\.test>.*status=sent")
    assert inst.queue_files("maildrop") == []


def test_bsd_mailx_delivers(fulmar_instance, smtp_sink, tmp_path):
    mail = shutil.which("bsd-mailx") or shutil.which("mail")
    if mail is None:
        pytest.skip("bsd-mailx not installed (apt-get install bsd-mailx)")
    sink = smtp_sink()
    inst = fulmar_instance(main_cf=_relay_to(sink))
    rc = tmp_path / "mailrc"
    rc.write_text(f"set sendmail={BIN / 'sendmail'}\n")
    env = {**inst.env(), "MAILRC": str(rc), "HOME": str(tmp_path)}
    r = subprocess.run([mail, "-s", "from mailx", "rcpt@b.test"], input="body from mailx\n",
                       text=True, capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    (m,) = _sink_messages(sink)
    assert m.rcpt_tos == ["rcpt@b.test"] and b"body from mailx" in m.data


def _deferred_instance(fulmar_instance, alloc, n=2):
    """An instance whose mail is deferred (relayhost: a port nobody listens on)."""
    host = alloc.host()
    inst = fulmar_instance(main_cf={"relayhost": f"[{host}]:{alloc.port(host)}",
                                    "smtp_dns_support_level": "disabled",
                                    "minimal_backoff_time": "300s",
                                    "maximal_backoff_time": "600s",
                                    "queue_run_delay": "300s"})
    for i in range(n):
        r = inst.command("sendmail", "-f", f"s{i}@a.test", f"r{i}@b.test",
                         input=f"Subject: {i}\n\nbody {i}\n")
        assert r.returncode == 0, r.stderr
    inst.wait_log(r"status=deferred", count=n, timeout=60)
    _wait(lambda: len(inst.queue_files("deferred")) == n, what="deferred files")
    return inst


def test_mailq_postqueue_listing(fulmar_instance, alloc):
    inst = _deferred_instance(fulmar_instance, alloc)
    p = inst.command("postqueue", "-p")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------"
    assert lines[-1].startswith("-- ") and lines[-1].endswith(" in 2 Requests.")
    assert any(l.strip().startswith("(") for l in lines)          # the delay reason
    assert inst.command("mailq").stdout == p.stdout
    assert inst.command("sendmail", "-bp").stdout == p.stdout
    j = inst.command("postqueue", "-j")
    objs = [json.loads(l) for l in j.stdout.splitlines()]
    assert {o["queue_name"] for o in objs} == {"deferred"}
    assert all(o["recipients"][0].get("delay_reason") for o in objs)


@pytest.mark.skipif(os.geteuid() != 0, reason="postsuper is for the superuser")
def test_postsuper_hold_release_delete(fulmar_instance, alloc):
    inst = _deferred_instance(fulmar_instance, alloc)
    qid = inst.queue_files("deferred")[0]
    r = inst.command("postsuper", "-h", qid)
    assert r.stderr.strip() == "postsuper: Placed on hold: 1 message"
    assert qid in inst.queue_files("hold")
    assert f"{qid}!" in inst.command("mailq").stdout
    r = inst.command("postsuper", "-H", "ALL")
    assert r.stderr.strip() == "postsuper: Released from hold: 1 message"
    r = inst.command("postsuper", "-e", qid)
    assert r.stderr.strip() == "postsuper: Force-expired: 1 message"
    r = inst.command("postsuper", "-d", "-", input=qid + "\n")
    assert r.stderr.strip() == "postsuper: Deleted: 1 message"
    assert qid not in inst.queue_files("deferred") + inst.queue_files("hold")


@pytest.mark.skipif(os.geteuid() != 0, reason="postsuper is for the superuser")
@pytest.mark.parametrize("args,err,status", [
    (["-d", "all"], "postsuper: Deleted: 0 messages\n", 0),
    (["-d", "../x"], "postsuper: warning: invalid mail queue id: ../x\n"
                     "postsuper: Deleted: 0 messages\n", 0),
    (["-d"], None, 1),
    (["-Z"], None, 1),
    (["-d", "ALL", "bogus"], "postsuper: fatal: invalid directory name: bogus\n", 1),
    (["-h", "deferred/../x"], None, 0),
])
def test_postsuper_bad_input_changes_nothing(fulmar_instance, alloc, args, err, status):
    inst = _deferred_instance(fulmar_instance, alloc, n=1)
    before = {q: inst.queue_files(q) for q in ("deferred", "hold", "incoming", "active")}
    r = inst.command("postsuper", *args)
    assert r.returncode == status
    if err is not None:
        assert r.stderr == err
    else:
        assert r.stderr.count("\n") <= 2
    after = {q: inst.queue_files(q) for q in ("deferred", "hold", "incoming", "active")}
    assert after == before


# ---------------------------------------------------------------- two users

@pytest.fixture
def test_users():
    if os.geteuid() != 0:
        pytest.skip("needs root to create the throwaway users fulmartest1/fulmartest2")
    made = []
    for name in TEST_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
            made.append(name)
    yield [pwd.getpwnam(n) for n in TEST_USERS]
    for name in made:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def postdrop_helper():
    """The setgid helper, built into a directory the test users can reach."""
    from fulmar.postdrop import build
    try:
        grp.getgrnam("postdrop")
    except KeyError:
        pytest.skip("group postdrop does not exist (setgid_group)")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build postdrop")
    d = Path(tempfile.mkdtemp(prefix="fm-pd-"))
    d.chmod(0o755)
    yield build.build(str(d))
    shutil.rmtree(d, ignore_errors=True)


def _as_user(user, argv, inst, helper, input=None):
    env = {"PATH": "/usr/bin:/bin", "MAIL_CONFIG": str(inst.config_dir),
           "FULMAR_POSTDROP": helper, "HOME": "/"}
    return subprocess.run(argv, input=input, capture_output=True, text=True, env=env,
                          user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          timeout=60)


def test_two_users_cannot_touch_each_others_mail(fulmar_instance, alloc, test_users,
                                                 postdrop_helper):
    u1, u2 = test_users
    host = alloc.host()
    inst = fulmar_instance(main_cf={"relayhost": f"[{host}]:{alloc.port(host)}",
                                    "smtp_dns_support_level": "disabled"})
    inst.stop()          # keep the files in maildrop/ where users could try
    md = inst.queue_dir / "maildrop"
    r = _as_user(u1, [str(BIN / "sendmail"), "x@b.test"], inst, postdrop_helper,
                 input="Subject: u1\n\nsecret of user 1\n")
    assert r.returncode == 0, r.stderr
    names = inst.queue_files("maildrop")
    assert len(names) == 1
    path = md / names[0]
    assert path.stat().st_uid == u1.pw_uid
    # user 2: cannot list, read, delete, rename or hard-link it, nor run postsuper.
    for argv in (["ls", str(md)], ["cat", str(path)], ["rm", "-f", str(path)],
                 ["mv", str(path), "/tmp/stolen"], ["ln", str(path), str(md / "x")]):
        r = _as_user(u2, argv, inst, postdrop_helper)
        assert r.returncode != 0, argv
    r = _as_user(u2, [str(BIN / "postsuper"), "-d", "ALL"], inst, postdrop_helper)
    assert r.returncode == 1 and "reserved for the superuser" in r.stderr
    r = _as_user(u2, [str(BIN / "mailq")], inst, postdrop_helper)
    assert "secret" not in r.stdout
    assert inst.queue_files("maildrop") == names
    inst.start()
    inst.wait_log(rf"uid={u1.pw_uid} from=<{u1.pw_name}>")
    # Postfix's maildrop mode: the sticky bit stops group members from
    # removing files they do not own (fulmar.queue.layout must create it).
    assert md.stat().st_mode & 0o7777 == 0o1730, oct(md.stat().st_mode)
