"""sendmail: option parsing, input handling, -t, submission into maildrop/, -bs."""

import io
import os
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from fulmar.cli import _common as C
from fulmar.cli import sendmail as S
from fulmar.queue import layout, maildrop


def fd_of(data: bytes) -> int:
    f = tempfile.TemporaryFile()
    f.write(data)
    f.seek(0)
    fd = os.dup(f.fileno())
    f.close()
    return fd


@pytest.fixture
def cfg(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"queue_directory = {tmp_path}/q\nmyhostname = h.test\n")
    layout.reset_hashing()
    layout.create(str(tmp_path / "q"))
    return C.load_config("sendmail", str(etc))


def records_of(cfg):
    md = os.path.join(cfg.get("queue_directory"), "maildrop")
    (name,) = os.listdir(md)
    with open(os.path.join(md, name), "rb") as f:
        return list(maildrop.read_stream(f))


# -- options -------------------------------------------------------------------

def test_options():
    o = S.parse_args(["-t", "-i", "-f", "<a@b>", "-F", "Al", "-N", "success,delay", "-R", "hdrs",
                      "-V", "env1", "-B", "8bitmime", "-C", "/x", "-oi", "-om", "-Am", "-U",
                      "--", "-odd@x", "b@c"])
    assert o.extract and o.ignore_dots and o.sender == "<a@b>" and o.full_name == "Al"
    assert o.notify == 2 | 4 and o.ret == "HDRS" and o.envid == "env1"
    assert o.body_type == "8BITMIME" and o.config_dir == "/x"
    assert o.recipients == ["-odd@x", "b@c"]
    assert S.parse_args(["-SMTPUTF8", "x"]).smtputf8
    assert S.parse_args(["-O", "smtputf8", "x"]).smtputf8
    assert S.parse_args(["-bs"]).mode == "s"
    assert S.parse_args(["-bp"]).mode == "p"
    assert S.parse_args(["-I"]).mode == "i"
    assert S.parse_args(["-q"]).flush == ("f", "")
    assert S.parse_args(["-qRexample.com"]).flush == ("s", "example.com")
    assert S.parse_args(["-qIABC"]).flush == ("i", "ABC")
    assert S.parse_args(["-q30m"]).flush is None
    assert S.parse_args(["-N", "never", "x"]).notify == 1


def test_bad_options(capsys):
    with pytest.raises(C.Fatal) as e:
        S.parse_args(["-Z"])
    assert e.value.code == C.EX_TEMPFAIL
    err = capsys.readouterr().err
    assert err == ("sendmail: invalid option -- 'Z'\nsendmail: invalid option -- 'Z'\n"
                   "sendmail: fatal: usage: sendmail [options]\n")
    with pytest.raises(C.Fatal):
        S.parse_args(["-bz"])
    assert capsys.readouterr().err == "sendmail: fatal: unsupported: -bz\n"
    with pytest.raises(C.Fatal):
        S.parse_args(["-B", "BOGUS"])
    assert capsys.readouterr().err == "sendmail: fatal: -B option needs 8BITMIME or 7BIT\n"
    o = S.parse_args(["-N", "bogus", "-R", "bogus", "x"])
    assert o.notify == 0 and o.ret is None
    assert capsys.readouterr().err == (
        'sendmail: warning: unknown DSN NOTIFY command value "bogus" in "bogus"\n'
        "sendmail: warning: bad -N option value -- ignored\n"
        "sendmail: warning: bad -R option value -- ignored\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=8))
def test_getopt_never_crashes(argv):
    try:
        C.getopt(argv, S.OPTSPEC)
    except C.GetoptError:
        pass


def test_clean_sender():
    assert S.clean_sender("<>") == "" and S.clean_sender("") == ""
    assert S.clean_sender("<a@b>") == "a@b" and S.clean_sender("a@b") == "a@b"


# -- input ---------------------------------------------------------------------

def read_message(data: bytes, ignore_dots=False):
    r = S.Reader(fd_of(data), ignore_dots, 102400, 0)
    headers, first = r.headers()
    body = b""
    if first is not None:
        body = first + b"\r\n" + b"".join(r.body_chunks())
    return headers, body


def test_reader_dot_and_line_ends():
    h, body = read_message(b"From someone Thu\nSubject: a\r\n\nx\n.\ny\n")
    assert h == [b"Subject: a"]
    assert body == b"\r\nx\r\n"
    h, body = read_message(b"Subject: a\n\nx\n.\ny", ignore_dots=True)
    assert body == b"\r\nx\r\n.\r\ny\r\n"
    h, body = read_message(b"Subject: a\n\n.\n")
    assert body == b"\r\n"


def test_reader_long_body_in_chunks():
    body = b"".join(b"line %d\n" % i for i in range(100000))
    h, got = read_message(b"Subject: big\n\n" + body)
    assert got == b"\r\n" + body.replace(b"\n", b"\r\n")


def test_reader_no_body_separator():
    h, body = read_message(b"Subject: a\nnot a header line\nmore\n")
    assert h == [b"Subject: a"]
    assert body == b"not a header line\r\nmore\r\n"


def test_extract_recipients():
    hdrs = S.logical_headers([b"To: a@x, \"B\" <b@x>", b"Cc: c@x", b"Bcc: d@x,",
                              b"  e@x", b"Subject: s"])
    rcpts, keep = S.extract_recipients(hdrs)
    assert rcpts == ["a@x", "b@x", "c@x", "d@x", "e@x"]
    assert [h[0].split(b":")[0] for h in keep] == [b"To", b"Cc", b"Subject"]
    hdrs = S.logical_headers([b"To: a@x", b"Resent-To: r@x", b"Resent-Bcc: rb@x"])
    rcpts, keep = S.extract_recipients(hdrs)
    assert rcpts == ["r@x", "rb@x"] and len(keep) == 2
    rcpts, _ = S.extract_recipients(S.logical_headers([b"To: undisclosed-recipients:;"]))
    assert rcpts == []


# -- submission ----------------------------------------------------------------

def test_submit_direct(cfg):
    o = S.parse_args(["-t", "-f", "a@b", "-F", "Al", "-N", "failure", "c@d"])
    assert S.submit_message(o, cfg, fd_of(b"To: x@y\nBcc: z@y\nSubject: s\n\nbody\n")) == 0
    recs = records_of(cfg)
    assert (b"S", b"a@b") in recs
    assert [d.split(b"\0")[0] for t, d in recs if t == b"R"] == [b"c@d", b"x@y", b"z@y"]
    assert all(d.endswith(b"\x008") for t, d in recs if t == b"R")
    content = b"".join(d for t, d in recs if t == b"B")
    assert content == b"To: x@y\r\nSubject: s\r\n\r\nbody\r\n"
    assert (b"A", b"full_name=Al") in recs
    assert (b"A", b"submit_uid=%d" % os.getuid()) in recs


def test_submit_default_sender_is_login(cfg):
    S.submit_message(S.parse_args(["c@d"]), cfg, fd_of(b"hi\n"))
    assert (b"S", C.user_name(os.getuid()).encode()) in records_of(cfg)


def test_submit_needs_recipients(cfg, capsys):
    with pytest.raises(C.Fatal) as e:
        S.submit_message(S.parse_args([]), cfg, fd_of(b"x\n"))
    assert e.value.code == C.EX_TEMPFAIL
    assert "Recipient addresses must be specified on the command line or via the -t option" \
        in capsys.readouterr().err
    with pytest.raises(C.Fatal):
        S.submit_message(S.parse_args(["-t"]), cfg, fd_of(b"Subject: x\n\n"))
    assert "No recipient addresses found in message header" in capsys.readouterr().err
    assert os.listdir(os.path.join(cfg.get("queue_directory"), "maildrop")) == []


def test_smtp_session(cfg):
    dialogue = (b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\nDATA\r\n"
                b"Subject: bs\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
    out = tempfile.TemporaryFile()
    assert S.smtp_session(S.parse_args(["-bs"]), cfg, fd_of(dialogue), out.fileno()) == 0
    out.seek(0)
    text = out.read().decode()
    assert text.startswith("220 h.test ESMTP")
    assert "250 2.0.0 Ok: queued as " in text and text.endswith("221 2.0.0 Bye\r\n")
    recs = records_of(cfg)
    assert (b"S", b"a@b") in recs
    assert b"".join(d for t, d in recs if t == b"B") == b"Subject: bs\r\n\r\n.dot\r\n"


def test_newaliases_builds_alias_database(tmp_path, capsys):
    from fulmar.cli import newaliases
    (tmp_path / "aliases").write_text("root: bob\n")
    (tmp_path / "main.cf").write_text(f"alias_database = hash:{tmp_path}/aliases\n")
    assert S.main(["-C", str(tmp_path), "-bi"]) == 0
    assert (tmp_path / "aliases.db").exists()
    (tmp_path / "aliases").write_text("root bob\n")
    assert newaliases.main(["-C", str(tmp_path)]) == 0
    assert "postalias: warning: " in capsys.readouterr().err
