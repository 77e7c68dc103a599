"""fulmar/cli/postfix.py: options, texts and exit codes (no master started)."""

import os
import pwd

import pytest
from hypothesis import given, strategies as st

from fulmar.cli import postfix
from master import pidfile


def test_parse_args_forms():
    assert postfix.parse_args(["-c", "/x", "start"]) == ("/x", False, 0, ["start"])
    assert postfix.parse_args(["-c/x", "status"]) == ("/x", False, 0, ["status"])
    assert postfix.parse_args(["-Dvv", "-c", "/y", "stop"]) == ("/y", True, 2, ["stop"])
    assert postfix.parse_args(["--", "-c"]) == (None, False, 0, ["-c"])
    assert postfix.parse_args(["tls", "-x"]) == (None, False, 0, ["tls", "-x"])


@pytest.mark.parametrize("argv", [["-x", "start"], ["-c"], ["-vq"]])
def test_parse_args_errors(argv):
    with pytest.raises(ValueError):
        postfix.parse_args(argv)


@given(st.lists(st.sampled_from(["-D", "-v", "-vD"]), max_size=4),
       st.from_regex(r"/[a-z]{1,8}", fullmatch=True),
       st.sampled_from(list(postfix.COMMANDS)))
def test_parse_args_property(flags, directory, command):
    got = postfix.parse_args([*flags, "-c", directory, command])
    text = "".join(flags)
    assert got == (directory, "D" in text, text.count("v"), [command])


def test_usage_and_unknown_commands(capsys):
    assert postfix.main([]) == 1
    assert "usage: postfix [-c config_dir] [-Dv] command" in capsys.readouterr().err
    assert postfix.main(["frobnicate"]) == 1
    assert "postfix/postfix-script: fatal: unknown command: 'frobnicate'" in capsys.readouterr().err
    assert postfix.main(["logrotate"]) == 69


@pytest.fixture
def confdir(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    owner = pwd.getpwuid(os.getuid()).pw_name if os.geteuid() else "nobody"
    group = "\nsetgid_group = nogroup" if os.geteuid() == 0 else ""
    (etc / "main.cf").write_text(f"queue_directory = {tmp_path / 'queue'}\n"
                                 f"maillog_file = {tmp_path / 'maillog'}\n"
                                 f"mail_owner = {owner}{group}\n")
    (etc / "master.cf").write_text("")
    (tmp_path / "queue" / "pid").mkdir(parents=True)
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    return etc


def test_status_follows_the_lock(confdir, capsys):
    assert postfix.main(["-c", str(confdir), "status"]) == 1
    assert capsys.readouterr().err == "postfix/postfix-script: the Postfix mail system is not running\n"
    path = pidfile.pid_path(str(confdir.parent / "queue"))
    fd = pidfile.acquire(path)
    try:
        pidfile.write_pid(fd, 4242)
        assert postfix.main(["-c", str(confdir), "status"]) == 0
        assert capsys.readouterr().err == \
            "postfix/postfix-script: the Postfix mail system is running: PID: 4242\n"
        assert postfix.main(["-c", str(confdir), "start"]) == 1
        assert "fatal: the Postfix mail system is already running" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert "the Postfix mail system is running: PID: 4242" in \
        (confdir.parent / "maillog").read_text()


def test_mail_config_environment_chooses_the_directory(confdir, capsys, monkeypatch):
    monkeypatch.setenv("MAIL_CONFIG", str(confdir))
    assert postfix.main(["status"]) == 1
    assert "not running" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["stop", "reload", "abort"])
def test_commands_need_a_running_master(confdir, capsys, command):
    assert postfix.main(["-c", str(confdir), command]) == 1
    assert capsys.readouterr().err == \
        "postfix/postfix-script: fatal: the Postfix mail system is not running\n"


def test_check_names_file_and_line(confdir, capsys):
    assert postfix.main(["-c", str(confdir), "check"]) == 0
    assert (confdir.parent / "queue" / "incoming").is_dir()
    with open(confdir / "main.cf", "a") as f:
        f.write("message_size_limit = lots\n")
    line = len((confdir / "main.cf").read_text().splitlines())
    assert postfix.main(["-c", str(confdir), "check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("postfix: fatal: ") and f"main.cf:{line}:" in err


def test_check_reports_unimplemented_commands(confdir, capsys):
    (confdir / "master.cf").write_text("tlsmgr unix - - n 1000? 1 tlsmgr\n")
    assert postfix.main(["-c", str(confdir), "check"]) == 0
    assert "warning: service tlsmgr: command tlsmgr is not implemented" in capsys.readouterr().err


def test_check_reports_settings_fulmar_ignores(confdir, capsys):
    with open(confdir / "main.cf", "a") as f:
        f.write("\nheader_checks = regexp:/etc/postfix/header_checks\n")
    line = len((confdir / "main.cf").read_text().splitlines())
    assert postfix.main(["-c", str(confdir), "check"]) == 0
    assert capsys.readouterr().err == (
        f"postfix: warning: {confdir}/main.cf:{line}: parameter header_checks is not "
        "implemented by Fulmar: the setting has no effect\n")
