"""postconf, called in-process."""

import os
import pathlib
import subprocess
import sys

import pytest

from fulmar.cli import postconf
from fulmar.config.params import PARAMS

CONF = pathlib.Path(__file__).resolve().parents[3] / "conf"

MAIN_CF = """# Head comment
myhostname = mx.example.org

# the size limit
message_size_limit = 1000
    # inside
relayhost =
"""


@pytest.fixture
def cdir(tmp_path):
    (tmp_path / "main.cf").write_text(MAIN_CF)
    (tmp_path / "master.cf").write_text((CONF / "master.cf").read_text())
    return tmp_path


def run(capsys, *args):
    status = postconf.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_names(capsys, cdir):
    status, out, err = run(capsys, "-c", str(cdir), "myhostname", "mydestination", "relayhost")
    assert status == 0
    assert out == ("myhostname = mx.example.org\n"
                   "mydestination = $myhostname, localhost.$mydomain, localhost\n"
                   "relayhost =\n")


def test_unknown_name_warns(capsys, cdir):
    status, out, err = run(capsys, "-c", str(cdir), "nosuch", "myhostname")
    assert status == 0
    assert err == "postconf: warning: nosuch: unknown parameter\n"
    assert out == "myhostname = mx.example.org\n"


def test_n_x_h_combined(capsys, cdir):
    assert run(capsys, "-c", str(cdir), "-n")[1] == (
        "message_size_limit = 1000\nmyhostname = mx.example.org\nrelayhost =\n")
    assert run(capsys, "-c", str(cdir), "-x", "smtpd_banner")[1] == "smtpd_banner = mx.example.org ESMTP Postfix\n"
    assert run(capsys, "-xh", "-c", str(cdir), "smtpd_banner")[1] == "mx.example.org ESMTP Postfix\n"
    assert run(capsys, f"-hc{cdir}", "message_size_limit")[1] == "1000\n"


def test_all_and_defaults_list_every_parameter(capsys, cdir):
    _, out, _ = run(capsys, "-c", str(cdir))
    names = [line.split(" =")[0] for line in out.splitlines()]
    assert names == sorted(names)
    assert set(PARAMS) <= set(names)
    assert "message_size_limit = 1000" in out.splitlines()
    _, out, _ = run(capsys, "-d", "-c", str(cdir))
    assert "message_size_limit = 10240000" in out.splitlines()
    assert len(out.splitlines()) == len(PARAMS)


def test_d_h(capsys, cdir):
    assert run(capsys, "-c", str(cdir), "-dh", "relay_domains")[1] == (
        "${{$compatibility_level} <level {2} ? {$mydestination} : {}}\n")


def test_override(capsys, cdir):
    assert run(capsys, "-c", str(cdir), "-o", "relayhost=[r]:587", "-x", "relayhost")[1] == "relayhost = [r]:587\n"


def test_edit_keeps_comments_and_order(capsys, cdir):
    status, _, _ = run(capsys, "-c", str(cdir), "-e", "message_size_limit = 2000", "newname=x y")
    assert status == 0
    assert (cdir / "main.cf").read_text() == MAIN_CF.replace(
        "message_size_limit = 1000\n", "message_size_limit = 2000\n") + "newname = x y\n"


def test_bare_assignment_edits(capsys, cdir):
    assert run(capsys, "-c", str(cdir), "myhostname=a.example")[0] == 0
    text = (cdir / "main.cf").read_text()
    assert "myhostname = a.example\n" in text and "mx.example.org" not in text
    assert text.startswith("# Head comment\n")


def test_edit_replaces_continued_value(capsys, tmp_path):
    (tmp_path / "main.cf").write_text("a_b = 1\nmydestination = x,\n  # c\n  y\nrelayhost = r\n")
    run(capsys, "-c", str(tmp_path), "-e", "mydestination=z")
    assert (tmp_path / "main.cf").read_text() == "a_b = 1\nmydestination = z\n  # c\nrelayhost = r\n"


def test_edit_creates_main_cf(capsys, tmp_path):
    run(capsys, "-c", str(tmp_path), "-e", "relayhost=[x]")
    assert (tmp_path / "main.cf").read_text() == "relayhost = [x]\n"


def test_remove_and_comment_out(capsys, cdir):
    run(capsys, "-c", str(cdir), "-X", "relayhost")
    run(capsys, "-c", str(cdir), "-#", "message_size_limit")
    text = (cdir / "main.cf").read_text()
    assert "relayhost" not in text
    assert "#message_size_limit = 1000\n" in text
    assert "# the size limit\n" in text


def test_bad_edit_is_fatal(capsys, cdir):
    status, out, err = run(capsys, "-c", str(cdir), "-e", "bad")
    assert status == 1
    assert err == "postconf: fatal: missing '=' after attribute name: \"bad\"\n"


def test_bad_config_is_fatal(capsys, tmp_path):
    (tmp_path / "main.cf").write_text("message_size_limit = ten\n")
    status, out, err = run(capsys, "-c", str(tmp_path), "-n")
    assert status == 1
    assert err == f"postconf: fatal: {tmp_path}/main.cf:1: bad numerical configuration: message_size_limit = ten\n"


def test_unknown_option(capsys):
    status, _, err = run(capsys, "-q")
    assert status == 1 and err.startswith("postconf: fatal: invalid option -- 'q'")


def test_config_warnings_printed(capsys, tmp_path):
    (tmp_path / "main.cf").write_text("foo = 1\n")
    _, _, err = run(capsys, "-c", str(tmp_path), "-n")
    assert err == f"postconf: warning: {tmp_path}/main.cf:1: unknown parameter name: foo\n"


def test_master_listing(capsys, cdir):
    _, out, _ = run(capsys, "-c", str(cdir), "-M", "smtp/inet", "relay")
    assert out == ("smtp       inet  n       -       n       -       -       smtpd\n"
                   "relay      unix  -       -       n       -       -       smtp -o syslog_name=postfix/$service_name\n")
    _, out, _ = run(capsys, "-c", str(cdir), "-Mf", "relay/unix")
    assert out == ("relay      unix  -       -       n       -       -       smtp\n"
                   "    -o syslog_name=postfix/$service_name\n")
    _, out, err = run(capsys, "-c", str(cdir), "-M", "foo/bar")
    assert out == "" and err == "postconf: warning: unmatched request: \"foo/bar\"\n"


def test_master_fields_and_parameters(capsys, cdir):
    _, out, _ = run(capsys, "-c", str(cdir), "-F", "smtp/inet")
    assert out.splitlines() == [
        "smtp/inet/service = smtp", "smtp/inet/type = inet", "smtp/inet/private = n",
        "smtp/inet/unprivileged = -", "smtp/inet/chroot = n", "smtp/inet/wakeup = -",
        "smtp/inet/process_limit = -", "smtp/inet/command = smtpd"]
    _, out, _ = run(capsys, "-c", str(cdir), "-F", "qmgr/unix/wakeup")
    assert out == "qmgr/unix/wakeup = 300\n"
    _, out, _ = run(capsys, "-c", str(cdir), "-P", "submissions/inet/smtpd_tls_wrappermode")
    assert out == "submissions/inet/smtpd_tls_wrappermode = yes\n"


def test_master_edit(capsys, cdir):
    run(capsys, "-c", str(cdir), "-Me", "smtp/inet=smtp inet n - n - 1 smtpd -o x=y")
    run(capsys, "-c", str(cdir), "-Me", "127.0.0.2:2525/inet=127.0.0.2:2525 inet n - n - - smtpd")
    run(capsys, "-c", str(cdir), "-MX", "lmtp/unix")
    run(capsys, "-c", str(cdir), "-M#", "showq/unix")
    text = (cdir / "master.cf").read_text()
    assert "\nsmtp inet n - n - 1 smtpd -o x=y\n" in text
    assert text.endswith("127.0.0.2:2525 inet n - n - - smtpd\n")
    assert "\nlmtp " not in text and "\n#showq     unix" in text
    assert "#smtp      inet  n       -       n       -       1       postscreen" in text


def test_master_edit_refuses_bad_entry(capsys, cdir):
    before = (cdir / "master.cf").read_text()
    status, _, err = run(capsys, "-c", str(cdir), "-Me", "smtp/inet=smtp inet n - n - lots smtpd")
    assert status == 1 and "bad process count" in err
    assert (cdir / "master.cf").read_text() == before


def test_map_types(capsys):
    _, out, _ = run(capsys, "-m")
    assert out.split() == sorted(out.split())
    assert {"hash", "lmdb", "cdb", "texthash", "regexp", "pcre", "cidr", "inline",
            "proxy", "unix", "sqlite", "socketmap", "unionmap", "pipemap", "static"} <= set(out.split())


def test_mail_config_env(capsys, cdir, monkeypatch):
    monkeypatch.setenv("MAIL_CONFIG", str(cdir))
    assert run(capsys, "-h", "myhostname")[1] == "mx.example.org\n"


def test_stock_main_cf(capsys):
    status, out, err = run(capsys, "-n", "-c", str(CONF))
    assert status == 0 and err == ""
    assert "compatibility_level = 3.9\n" in out


def test_console_script(tmp_path):
    env = dict(os.environ, MAIL_CONFIG=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "fulmar.cli.postconf", "-h", "mail_name"],
                       capture_output=True, text=True, env=env)
    assert (r.returncode, r.stdout) == (0, "Postfix\n")
