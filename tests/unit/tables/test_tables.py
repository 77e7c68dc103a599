"""fulmar.tables: every type, three outcomes, reload on change; postmap -q agrees."""

import os
import socket
import sqlite3
import threading

import pytest
from hypothesis import given, strategies as st

from fulmar import tables
from fulmar.tables import cidr, indexed, regexp, text


def test_texthash_file(tmp_path):
    f = tmp_path / "access"
    f.write_text("# comment\nExample.COM   REJECT no\n  thanks\n1.2.3 OK\n\nuser@ DUNNO\n")
    t = tables.open_table(f"texthash:{f}")
    assert t.lookup("example.com") == tables.Result(tables.FOUND, "REJECT no thanks")
    assert t.lookup("1.2.3").value == "OK"
    assert t.lookup("USER@").value == "DUNNO"
    assert t.lookup("nope").status == tables.NOTFOUND


def test_hash_needs_postmap_and_sees_rebuilds(tmp_path, monkeypatch):
    src = tmp_path / "virtual"
    src.write_text("a@x b@y\n")
    t = tables.open_table(f"hash:{src}")
    assert t.lookup("a@x").status == tables.RETRY          # no .db yet: never "not found"
    indexed.build(str(src) + ".db", [("a@x", "b@y")], source=str(src))
    clock = [100.0]
    monkeypatch.setattr(tables, "RELOAD_CHECK_INTERVAL", 1.0)
    t = tables.ReloadingTable(f"hash:{src}", str(src) + ".db",
                              lambda: indexed.IndexedTable(f"hash:{src}", str(src) + ".db"),
                              clock=lambda: clock[0])
    assert t.lookup("A@X").value == "b@y"
    indexed.build(str(src) + ".db", [("a@x", "c@z")], source=str(src))
    assert t.lookup("a@x").value == "b@y"                  # checked at most once a second
    clock[0] += 1.5
    assert t.lookup("a@x").value == "c@z"                  # rebuilt file picked up
    os.unlink(str(src) + ".db")
    clock[0] += 1.5
    assert t.lookup("a@x").status == tables.RETRY


def test_lmdb_and_cdb_use_their_own_suffix(tmp_path):
    src = tmp_path / "m"
    indexed.build(str(src) + ".lmdb", [("k", "v")])
    indexed.build(str(src) + ".cdb", [("k", "w")])
    assert tables.open_table(f"lmdb:{src}").lookup("k").value == "v"
    assert tables.open_table(f"cdb:{src}").lookup("k").value == "w"


def test_not_our_format_is_retry(tmp_path):
    bad = tmp_path / "old.db"
    bad.write_bytes(b"\0\x06\x15\x61 berkeley db junk" * 10)
    assert tables.open_table(f"hash:{tmp_path}/old").lookup("x").status == tables.RETRY


def test_indexed_update(tmp_path):
    db = str(tmp_path / "t.db")
    assert indexed.update(db, add=[("K", "1")]) == (1, 0)
    assert indexed.update(db, delete=["k"]) == (0, 1)
    assert indexed.update(db, delete=["k"]) == (0, 0)


def test_missing_file_and_unknown_type_are_retry_not_notfound(tmp_path):
    assert tables.open_table(f"texthash:{tmp_path}/nope").lookup("x").status == tables.RETRY
    assert tables.open_table("bogus:/x").lookup("x").status == tables.RETRY
    assert tables.open_table("nocolon").lookup("x").status == tables.RETRY


def test_inline_static_proxy_unix():
    t = tables.open_table("inline:{a=1, B=2, { c = x, y }}")
    assert (t.lookup("A").value, t.lookup("b").value, t.lookup("c").value) == ("1", "2", "x, y")
    assert tables.open_table("inline:{broken").lookup("a").status == tables.RETRY
    assert tables.open_table("static:{REJECT go away}").lookup("anything").value == "REJECT go away"
    pw = tables.open_table("proxy:unix:passwd.byname")
    assert pw.lookup("root").value.startswith("root:x:0:0:")
    assert pw.lookup("no-such-user-fm").status == tables.NOTFOUND
    assert tables.open_table("unix:group.byname").lookup("root").value.startswith("root:")


def test_cidr(tmp_path):
    f = tmp_path / "c"
    f.write_text("192.0.2.0/24 REJECT\n[::1]/128 OK\n2001:db8::/32 DUNNO\n0.0.0.0/0 x\n")
    t = tables.open_table(f"cidr:{f}")
    assert t.lookup("192.0.2.77").value == "REJECT"
    assert t.lookup("::1").value == "OK"
    assert t.lookup("2001:db8::5").value == "DUNNO"
    assert t.lookup("198.51.100.1").value == "x"
    assert t.lookup("example.com").status == tables.NOTFOUND
    f.write_text("192.0.2.1/24 REJECT\n")   # host bits set: Postfix refuses the file
    assert tables.open_table(f"cidr:{f}").lookup("192.0.2.1").status == tables.RETRY


def test_regexp_and_pcre(tmp_path):
    f = tmp_path / "r"
    f.write_text("/^(.*)@evil\\.test$/ REJECT no $1\n!/\\.test$/ OK\n/^CASE$/i x\n")
    t = tables.open_table(f"regexp:{f}")
    assert not t.fixed_string
    assert t.lookup("Bob@EVIL.test").value == "REJECT no Bob"
    assert t.lookup("a@b.org").value == "OK"
    assert t.lookup("case.test").status == tables.NOTFOUND
    f.write_text("if /@example\\.com$/\n/^(a|b)@/ inner $1\nif !/^a/\n/./ not-a ${1}$$\nendif\n"
                 "endif\n/^(.)/ outer $1\n")
    t = tables.open_table(f"pcre:{f}")
    assert t.lookup("a@example.com").value == "inner a"
    assert t.lookup("c@example.com").value == "not-a $"
    assert t.lookup("c@example.org").value == "outer c"
    f.write_text("if /x/\n/y/ z\n")
    assert tables.open_table(f"pcre:{f}").lookup("y").status == tables.RETRY
    f.write_text("endif\n")
    assert tables.open_table(f"pcre:{f}").lookup("y").status == tables.RETRY


def test_sqlite(tmp_path):
    db = tmp_path / "users.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE alias (address TEXT, goto TEXT)")
    con.executemany("INSERT INTO alias VALUES (?, ?)", [
        ("bob@example.com", "bob@x"), ("list@example.com", "a@x"), ("list@example.com", "b@x"),
        ("o'neil@example.com", "o@x")])
    con.commit()
    con.close()
    cf = tmp_path / "sqlite.cf"
    cf.write_text(f"dbpath = {db}\nquery = SELECT goto FROM alias WHERE address = '%s'\n"
                  "domain = example.com\n")
    t = tables.open_table(f"sqlite:{cf}")
    assert t.lookup("bob@example.com").value == "bob@x"
    assert t.lookup("list@example.com").value == "a@x,b@x"
    assert t.lookup("o'neil@example.com").value == "o@x"          # quoted, no injection
    assert t.lookup("bob@other.com").status == tables.NOTFOUND     # domain filter
    cf.write_text(f"dbpath = {db}\nquery = SELECT goto FROM nosuchtable WHERE a='%s'\n")
    assert tables.open_table(f"sqlite:{cf}").lookup("x").status == tables.RETRY


def _socketmap_server(sock: socket.socket, answers: dict):
    def run():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b","):
                    chunk = conn.recv(100)
                    if not chunk:
                        break
                    data += chunk
                req = data.split(b":", 1)[1][:-1].decode()
                name, key = req.split(" ", 1)
                reply = answers.get(key, "NOTFOUND ").encode()
                conn.sendall(b"%d:%s," % (len(reply), reply))
    threading.Thread(target=run, daemon=True).start()


def test_socketmap_unix(tmp_path):
    path = str(tmp_path / "sm")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    _socketmap_server(srv, {"bob": "OK bob@x", "tmp": "TEMP busy"})
    try:
        t = tables.open_table(f"socketmap:unix:{path}:virtual")
        assert t.lookup("bob").value == "bob@x"
        assert t.lookup("nobody").status == tables.NOTFOUND
        assert t.lookup("tmp").status == tables.RETRY
    finally:
        srv.close()
    assert tables.open_table(f"socketmap:unix:{tmp_path}/none:x").lookup("a").status == tables.RETRY


def test_unionmap_and_pipemap():
    u = tables.open_table("unionmap:{inline:{a=1, b=2}, inline:{a=3}}")
    assert u.lookup("a").value == "1,3" and u.lookup("b").value == "2"
    assert u.lookup("c").status == tables.NOTFOUND
    assert tables.open_table("unionmap:{inline:{a=1}, bogus:x}").lookup("a").status == tables.RETRY
    p = tables.open_table("pipemap:{inline:{a=b}, inline:{b=c}}")
    assert p.lookup("a").value == "c" and p.lookup("b").status == tables.NOTFOUND


def test_table_list_retry_before_found():
    good = tables.open_table("inline:{a=1}")
    bad = tables.FailedTable("x:y", "down")
    assert tables.TableList("p", [bad, good]).lookup("a").status == tables.RETRY
    assert tables.TableList("p", [good, bad]).lookup("a").value == "1"


async def test_alookup():
    assert (await tables.open_table("static:v").alookup("k")).value == "v"


@given(st.text(max_size=200))
def test_source_parser_never_raises(src):
    entries = text.parse_source(src)
    assert all(k == k.lower() for k in entries)


@given(st.text(max_size=200))
def test_alias_parser_never_raises(src):
    for _lineno, key, _value in text.iter_aliases(src):
        assert key is None or key == key.lower()


@given(st.text(max_size=100))
def test_inline_parser_raises_only_valueerror(body):
    try:
        text.parse_inline(body)
    except ValueError:
        pass


@given(st.text(max_size=100))
def test_cidr_and_regexp_parsers_raise_only_valueerror(src):
    for parser in (cidr.CidrTable.from_text, regexp.RegexpTable.from_text):
        try:
            parser("t", src)
        except ValueError:
            pass
