"""fulmar.log: Postfix's line format on every destination."""

import io
import os
import re
import socket
import time

import pytest

from fulmar import log

PID = os.getpid()
STAMP = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123]\d " \
        r"[012]\d:[0-5]\d:[0-5]\d"


class FakeConfig:
    """Just what log.setup reads: cfg.get(name)."""

    def __init__(self, **params):
        self.params = {"syslog_name": "postfix", "syslog_facility": "mail",
                       "maillog_file": "", "myhostname": "mx.example.org"}
        self.params.update(params)

    def get(self, name):
        return self.params[name]


@pytest.fixture(autouse=True)
def restore():
    yield
    log.set_verbose(0)
    log.cli_setup("fulmar")


def test_stream_lines_and_severities():
    out = io.StringIO()
    log.setup(None, "smtpd", stream=out)
    log.info("%s: client=%s", "4Xk2Lm1Qz7z9vRs", "a[192.0.2.1]")
    log.warning("w %d", 1)
    log.error("e")
    with pytest.raises(SystemExit) as fatal:
        log.fatal("f %s", "x")
    assert fatal.value.code == 1
    with pytest.raises(SystemExit) as panic:
        log.panic("p")
    assert panic.value.code == 1
    assert out.getvalue().splitlines() == [
        "postfix/smtpd[%d]: 4Xk2Lm1Qz7z9vRs: client=a[192.0.2.1]" % PID,
        "postfix/smtpd[%d]: warning: w 1" % PID,
        "postfix/smtpd[%d]: error: e" % PID,
        "postfix/smtpd[%d]: fatal: f x" % PID,
        "postfix/smtpd[%d]: panic: p" % PID,
    ]
    assert log.tag == "postfix/smtpd"


def test_tag_follows_syslog_name_override():
    out = io.StringIO()
    log.setup(FakeConfig(syslog_name="postfix/submission"), "smtpd",
              service_name="submission", stream=out)
    log.info("connect")
    assert out.getvalue() == "postfix/submission/smtpd[%d]: connect\n" % PID
    assert log.service_name == "submission"


def test_format_only_when_emitted_and_never_raises():
    out = io.StringIO()
    log.setup(None, "qmgr", stream=out)
    formatted = []

    class Arg:
        def __str__(self):
            formatted.append(1)
            return "arg"
    log.debug("%s", Arg())
    assert formatted == [] and out.getvalue() == ""
    log.set_verbose(1)
    log.debug("%s", Arg())
    assert formatted == [1]
    log.info("100% literal, no args")
    log.info("%d", "not a number")
    assert out.getvalue().splitlines()[1:] == [
        "postfix/qmgr[%d]: 100%% literal, no args" % PID,
        "postfix/qmgr[%d]: %%d ('not a number',)" % PID]


def test_control_characters_cannot_forge_lines():
    out = io.StringIO()
    log.setup(None, "smtpd", stream=out)
    log.warning("%s", "evil\nPostfix/smtpd[1]: fake\r\x00\x7f\x85 ok \u00e9")
    assert out.getvalue() == \
        "postfix/smtpd[%d]: warning: evil?Postfix/smtpd[1]: fake???? ok " \
        "\u00e9\n" % PID


def test_cli_lines():
    out = io.StringIO()
    log.cli_setup("postconf", stream=out)
    log.warning("%s: unknown parameter", "foo")
    with pytest.raises(SystemExit):
        log.fatal("open /nonexistent/main.cf: No such file or directory")
    assert out.getvalue().splitlines() == [
        "postconf: warning: foo: unknown parameter",
        "postconf: fatal: open /nonexistent/main.cf: No such file or "
        "directory"]


def test_cli_default_stream_is_stderr(capsys):
    log.cli_setup("postsuper")
    log.error("bad")
    assert capsys.readouterr().err == "postsuper: error: bad\n"


def test_timestamp():
    t = time.mktime((2024, 3, 5, 7, 8, 9, 0, 0, -1))
    assert log.timestamp(t) == "Mar  5 07:08:09"
    t = time.mktime((2024, 12, 25, 23, 59, 1, 0, 0, -1))
    assert log.timestamp(t) == "Dec 25 23:59:01"
    assert re.fullmatch(STAMP, log.timestamp())


def test_maillog_file(tmp_path):
    path = tmp_path / "maillog"
    path.write_text("earlier line\n")
    log.setup(FakeConfig(maillog_file=str(path)), "cleanup")
    log.info("%s: message-id=<%s>", "4Xk2Lm1Qz7z9vRs", "x@y")
    log.warning("disk %s", "full")
    log.setup(FakeConfig(maillog_file=str(path),
                         syslog_name="postfix/sub"), "smtpd")
    log.error("third")
    lines = path.read_text().splitlines()
    assert lines[0] == "earlier line"          # appended, not truncated
    pattern = r"%s mx\.example\.org %s\[%d\]: %s"
    assert re.fullmatch(pattern % (STAMP, "postfix/cleanup", PID,
                                   "4Xk2Lm1Qz7z9vRs: message-id=<x@y>"),
                        lines[1])
    assert re.fullmatch(pattern % (STAMP, "postfix/cleanup", PID,
                                   "warning: disk full"), lines[2])
    assert re.fullmatch(pattern % (STAMP, "postfix/sub/smtpd", PID,
                                   "error: third"), lines[3])
    assert len(lines) == 4


def test_maillog_file_one_write_per_line(tmp_path, monkeypatch):
    path = tmp_path / "maillog"
    log.setup(FakeConfig(maillog_file=str(path)), "cleanup")
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data)
                        or real_write(fd, data))
    log.info("a %s", "b")
    assert len(writes) == 1 and writes[0].endswith(b": a b\n")


def test_maillog_file_dev_stdout(capfd):
    log.setup(FakeConfig(maillog_file="/dev/stdout"), "master")
    log.info("daemon started")
    out = capfd.readouterr().out
    assert re.fullmatch(r"%s mx\.example\.org postfix/master\[%d\]: daemon "
                        r"started\n" % (STAMP, PID), out)


def test_maillog_file_unopenable_is_fatal(tmp_path, capfd):
    with pytest.raises(SystemExit):
        log.setup(FakeConfig(maillog_file=str(tmp_path / "no" / "log")),
                  "smtpd")
    assert "postfix/smtpd[%d]: fatal: open maillog_file %s: No such file " \
        "or directory" % (PID, tmp_path / "no" / "log") in capfd.readouterr().err


@pytest.fixture
def syslogd(tmp_path, monkeypatch):
    path = str(tmp_path / "log")
    monkeypatch.setattr(log, "SYSLOG_PATH", path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    yield server, path
    server.close()


def test_syslog_datagrams(syslogd):
    server, path = syslogd
    log.setup(FakeConfig(), "smtp")
    log.info("%s: to=<%s>, status=sent", "4Xk2Lm1Qz7z9vRs", "a@b")
    log.warning("w")
    log.error("e")
    with pytest.raises(SystemExit):
        log.fatal("f")
    got = [server.recv(4096).decode() for _ in range(4)]
    assert re.fullmatch(r"<22>%s postfix/smtp\[%d\]: 4Xk2Lm1Qz7z9vRs: "
                        r"to=<a@b>, status=sent" % (STAMP, PID), got[0])
    assert re.fullmatch(r"<20>%s postfix/smtp\[%d\]: warning: w"
                        % (STAMP, PID), got[1])
    assert got[2].startswith("<19>") and got[2].endswith(": error: e")
    assert got[3].startswith("<18>") and got[3].endswith(": fatal: f")


def test_syslog_facility_and_reconnect(syslogd):
    server, path = syslogd
    log.setup(FakeConfig(syslog_facility="local3"), "qmgr")
    log.info("one")
    assert server.recv(4096).decode().startswith("<158>")
    # syslogd restarts: a new socket at the same path.
    server.close()
    os.unlink(path)
    again = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    again.bind(path)
    again.settimeout(5)
    try:
        log.info("two")
        assert again.recv(4096).decode().endswith("postfix/qmgr[%d]: two"
                                                  % PID)
    finally:
        again.close()


def test_unknown_facility_is_fatal(syslogd, capfd):
    with pytest.raises(SystemExit):
        log.setup(FakeConfig(syslog_facility="mial"), "smtpd")
    assert "postfix/smtpd[%d]: fatal: unknown syslog facility: mial" % PID \
        in capfd.readouterr().err


def test_no_syslog_socket_falls_back_to_stderr(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "absent"))
    log.setup(FakeConfig(), "pickup")
    log.warning("x")
    err = capfd.readouterr().err
    assert re.fullmatch(r"%s mx\.example\.org postfix/pickup\[%d\]: "
                        r"warning: x\n" % (STAMP, PID), err)
