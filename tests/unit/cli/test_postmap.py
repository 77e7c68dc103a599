"""postmap / postalias: build, -q for every table type, -s, -d, -i, -r, -w, -f, errors."""

import socket
import sqlite3
import threading

import pytest

from fulmar.cli import postalias, postmap


def run(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = postmap.main(["postmap", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def files(tmp_path):
    (tmp_path / "map").write_text("Key@Example.com  value one\nother  two\n")
    for t in ("hash", "btree", "lmdb", "cdb"):
        (tmp_path / f"src-{t}").write_text("Key@Example.com  value one\nother  two\n")
    (tmp_path / "re").write_text("/^key@(.*)$/ value $1\n/^other$/ two\n")
    (tmp_path / "cidr").write_text("192.0.2.0/24 net\n")
    db = tmp_path / "s.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE m (k TEXT, v TEXT)")
    con.execute("INSERT INTO m VALUES ('key@example.com', 'value one')")
    con.commit()
    con.close()
    (tmp_path / "s.cf").write_text(f"dbpath = {db}\nquery = SELECT v FROM m WHERE k='%s'\n")
    sm = str(tmp_path / "sm.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sm)
    srv.listen()

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b","):
                    chunk = conn.recv(100)
                    if not chunk:
                        break
                    data += chunk
                key = data.split(b" ", 1)[1][:-1]
                reply = b"OK value one" if key.lower() == b"key@example.com" else b"NOTFOUND "
                conn.sendall(b"%d:%s," % (len(reply), reply))
    threading.Thread(target=serve, daemon=True).start()
    yield tmp_path
    srv.close()


# (spec template, key, expected value or None for "absent")
EXPECTED = [
    ("texthash:{d}/map", "key@example.com", "value one"),
    ("texthash:{d}/map", "nope", None),
    ("hash:{d}/src-hash", "KEY@example.com", "value one"),
    ("btree:{d}/src-btree", "other", "two"),
    ("lmdb:{d}/src-lmdb", "other", "two"),
    ("cdb:{d}/src-cdb", "missing", None),
    ("regexp:{d}/re", "key@example.com", "value example.com"),
    ("pcre:{d}/re", "other", "two"),
    ("pcre:{d}/re", "x", None),
    ("cidr:{d}/cidr", "192.0.2.9", "net"),
    ("cidr:{d}/cidr", "198.51.100.1", None),
    ("static:fixed", "anything", "fixed"),
    ("inline:{{a=1, b=2}}", "b", "2"),
    ("inline:{{a=1, b=2}}", "c", None),
    ("unix:passwd.byname", "root", "root:x:0:0:root:/root:/bin/bash"),
    ("proxy:unix:passwd.byname", "no-such-user-fm", None),
    ("sqlite:{d}/s.cf", "key@example.com", "value one"),
    ("sqlite:{d}/s.cf", "other", None),
    ("socketmap:unix:{d}/sm.sock:name", "key@example.com", "value one"),
    ("socketmap:unix:{d}/sm.sock:name", "other", None),
    ("unionmap:{{inline:{{a=1}}, inline:{{a=2}}}}", "a", "1,2"),
    ("pipemap:{{inline:{{a=b}}, inline:{{b=c}}}}", "a", "c"),
]


@pytest.mark.parametrize("spec,key,expected", EXPECTED)
def test_query_every_type(files, capsys, spec, key, expected):
    import pwd
    if spec.startswith("unix:passwd"):
        p = pwd.getpwnam("root")
        expected = "root:%s:0:0:%s:%s:%s" % (p.pw_passwd, p.pw_gecos, p.pw_dir, p.pw_shell)
    spec = spec.format(d=files)
    kind = spec.split(":")[0]
    if kind in ("hash", "btree", "lmdb", "cdb"):
        assert run(capsys, spec)[0] == 0
    rc, out, err = run(capsys, "-q", key, spec)
    if expected is None:
        assert (rc, out) == (1, "")
    else:
        assert (rc, out) == (0, expected + "\n"), err


def test_build_warns_on_duplicates_and_bad_lines(tmp_path, capsys):
    src = tmp_path / "v"
    src.write_text("a 1\nnovalue\na 2\n")
    rc, out, err = run(capsys, str(src))
    assert rc == 0
    assert f"postmap: warning: {src}, line 2: expected format: key whitespace value" in err
    assert f"postmap: warning: {src}, line 3: duplicate entry: \"a\"" in err
    assert run(capsys, "-q", "a", str(src))[1] == "1\n"
    assert "duplicate entry" not in run(capsys, "-r", str(src))[2]
    assert run(capsys, "-q", "a", str(src))[1] == "2\n"
    assert "duplicate entry" not in run(capsys, "-w", str(src))[2]


def test_dump_delete_incremental_and_stdin_query(tmp_path, capsys, monkeypatch):
    src = tmp_path / "v"
    src.write_text("b 2\na 1\n")
    assert run(capsys, f"hash:{src}")[0] == 0
    assert run(capsys, "-s", f"hash:{src}")[1] == "a\t1\nb\t2\n"
    assert run(capsys, "-d", "a", str(src))[0] == 0
    assert run(capsys, "-d", "a", str(src))[0] == 1
    assert run(capsys, "-i", str(src), stdin="c 3\n", monkeypatch=monkeypatch)[0] == 0
    assert run(capsys, "-q", "-", str(src), stdin="c\nx\nb\n", monkeypatch=monkeypatch)[1] == "c\t3\nb\t2\n"


def test_no_fold(tmp_path, capsys):
    src = tmp_path / "v"
    src.write_text("MiXed 1\n")
    assert run(capsys, "-f", str(src))[0] == 0
    assert run(capsys, "-q", "MiXed", str(src))[1] == "1\n"
    assert run(capsys, "-q", "mixed", str(src))[0] == 1


def test_errors(tmp_path, capsys):
    rc, out, err = run(capsys, str(tmp_path / "missing"))
    assert (rc, err) == (1, f"postmap: fatal: open {tmp_path}/missing: No such file or directory\n")
    rc, out, err = run(capsys, "-q", "x", f"hash:{tmp_path}/missing")
    assert rc == 1 and err.startswith("postmap: fatal: open database ")
    assert run(capsys, f"regexp:{tmp_path}/x")[2] == "postmap: fatal: unsupported dictionary type: regexp\n"
    assert run(capsys)[0] == 1


def test_postalias(tmp_path, capsys):
    src = tmp_path / "aliases"
    src.write_text('root: bob\n"with space": x\nlist: a,\n  b, "|cmd arg"\nbad line\n')
    assert postalias.main(["postalias", str(src)]) == 0
    err = capsys.readouterr().err
    assert "line 5: need name:value pair" in err
    assert postalias.main(["postalias", "-q", "list", str(src)]) == 0
    assert capsys.readouterr().out == 'a, b, "|cmd arg"\n'
    assert postalias.main(["postalias", "-q", "with space", str(src)]) == 0
    assert postalias.main(["postalias", "-q", "@", str(src)]) == 0
    assert capsys.readouterr().out == "x\n@\n"
