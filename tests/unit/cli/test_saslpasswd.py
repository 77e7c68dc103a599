"""fulmar-passwd: set, replace, list and delete users in a password file."""

import io
import os

import pytest

from fulmar.cli import saslpasswd
from smtpd import sasl


def run(monkeypatch, argv, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    monkeypatch.setattr(sasl, "SCRYPT_LOG_N", 4)         # fast hashes in tests
    monkeypatch.setattr(sasl.hash_password, "__kwdefaults__", {"log_n": 4, "r": 8, "p": 1})
    return saslpasswd.main(argv)


def test_set_replace_list_delete(monkeypatch, tmp_path, capsys):
    f = tmp_path / "sasl" / "smtpd.passwd"
    assert run(monkeypatch, ["-f", str(f), "alice"], "first\n") == 0
    assert oct(os.stat(f).st_mode & 0o777) == "0o640"
    run(monkeypatch, ["-f", str(f), "bob"], "bobpw\n")
    run(monkeypatch, ["-f", str(f), "alice"], "second\n")
    users = sasl.parse_password_file(f.read_text())
    assert list(users) == ["alice", "bob"]
    assert sasl.verify_password("second", users["alice"]) and not sasl.verify_password("first", users["alice"])
    assert "second" not in f.read_text()
    capsys.readouterr()
    run(monkeypatch, ["-f", str(f), "-l"])
    assert capsys.readouterr().out == "alice\nbob\n"
    run(monkeypatch, ["-f", str(f), "-d", "alice"])
    assert list(sasl.parse_password_file(f.read_text())) == ["bob"]


def test_errors(monkeypatch, tmp_path):
    f = tmp_path / "p"
    for argv, stdin in ((["-f", str(f), "-d", "nobody"], ""), (["-f", str(f), "a:b"], "x\n"),
                        (["-f", str(f), "alice"], "\n"), (["-f", str(f)], "")):
        with pytest.raises(SystemExit) as e:
            run(monkeypatch, argv, stdin)
        assert e.value.code != 0
