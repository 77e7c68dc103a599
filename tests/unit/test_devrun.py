"""fulmar.devrun: the configuration `make run` and the integration tests write."""
from __future__ import annotations

from fulmar import devrun

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       -       smtpd
#submission inet n       -       y       -       -       smtpd
#  -o syslog_name=postfix/submission
submissions inet n      -       y       -       -       smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
smtp      unix  -       -       y       -       -       smtp
  -o smtp_helo_timeout=5s
"""


def test_drop_inet_entries_keeps_everything_else():
    out = devrun._drop_inet_entries(MASTER_CF)
    assert "smtp      inet" not in out
    assert "submissions inet" not in out
    assert "smtpd_tls_wrappermode" not in out
    assert "syslog_name=postfix/submissions" not in out
    # comments, unix services and their continuation lines survive
    assert "#submission inet n" in out and "#  -o syslog_name=postfix/submission\n" in out
    for line in ("pickup    unix", "cleanup   unix", "qmgr      unix", "smtp      unix",
                 "  -o smtp_helo_timeout=5s"):
        assert line in out


def test_write_config(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text("myhostname = shipped.example\nqueue_directory = /var/spool/postfix")
    (conf / "master.cf").write_text(MASTER_CF)
    devrun.write_config(conf, tmp_path / "etc",
                        [devrun.InetService("127.0.0.1:2525"),
                         devrun.InetService("127.0.0.1:4650", options={"smtpd_tls_wrappermode": "yes"})],
                        {"queue_directory": "/tmp/q", "maillog_file": "/dev/stdout"})
    main = (tmp_path / "etc" / "main.cf").read_text()
    # the shipped file first, the overrides after it (last assignment wins)
    assert main.index("queue_directory = /var/spool/postfix") < main.index("queue_directory = /tmp/q")
    assert main.endswith("queue_directory = /tmp/q\nmaillog_file = /dev/stdout\n")
    master = (tmp_path / "etc" / "master.cf").read_text()
    inet = [ln.split() for ln in master.splitlines()
            if ln and not ln[0].isspace() and not ln.startswith("#") and ln.split()[1] == "inet"]
    assert inet == [["127.0.0.1:2525", "inet", "n", "-", "n", "-", "-", "smtpd"],
                    ["127.0.0.1:4650", "inet", "n", "-", "n", "-", "-", "smtpd"]]
    assert master.endswith("smtpd\n  -o smtpd_tls_wrappermode=yes\n")
    assert "cleanup   unix" in master


def test_dev_config_and_banner(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text("")
    # the shipped master.cf: its inet services move to the dev ports with
    # their -o options (TLS and AUTH on submission)
    (conf / "master.cf").write_text((devrun.SOURCE_ROOT / "conf" / "master.cf").read_text())
    run = tmp_path / "run"
    monkeypatch.setattr(devrun.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(devrun.pwd, "getpwuid", lambda uid: type("P", (), {"pw_name": "alice"})())
    monkeypatch.setattr(devrun.getpass, "getuser", lambda: "alice")
    overrides = devrun.dev_config(run, conf)
    assert overrides["mail_owner"] == "alice"
    assert overrides["queue_directory"] == str(run / "queue")
    assert overrides["mail_spool_directory"] == str(run / "mail")
    assert overrides["maillog_file"] == "/dev/stdout"
    assert (run / "etc" / "tls" / "cert.pem").exists()
    master = (run / "etc" / "master.cf").read_text()
    for port in (2525, 5870, 4650):
        assert f"127.0.0.1:{port}" in master
    submission = master.split("127.0.0.1:5870", 1)[1].split("127.0.0.1:4650", 1)[0]
    assert "-o smtpd_sasl_auth_enable=yes" in submission
    assert "-o smtpd_tls_security_level=encrypt" in submission
    password = (run / devrun.DEV_SECRET).read_text().strip()
    stored = (run / "etc" / "sasl" / "smtpd.passwd").read_text()
    assert stored.startswith("alice:") and password not in stored
    text = devrun.banner(run, overrides)
    assert "swaks --server 127.0.0.1:2525 --to alice@localhost" in text
    assert "/mail/alice" in text
    assert f"--auth-user alice --auth-password {password}" in text


def test_root_never_owns_the_mail(monkeypatch):
    monkeypatch.setattr(devrun.os, "geteuid", lambda: 0)
    monkeypatch.delenv("FULMAR_MAIL_OWNER", raising=False)
    assert devrun.mail_owner() == "nobody"
