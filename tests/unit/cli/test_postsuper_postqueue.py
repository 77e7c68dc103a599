"""postsuper and postqueue: options, Postfix's messages and exit codes, queue operations."""

import io
import os
import stat

import pytest

from fulmar.cli import _common as C
from fulmar.cli import postqueue as Q
from fulmar.cli import postsuper as PS
from fulmar.cli import qshape
from fulmar.queue import layout, qfile, showq


@pytest.fixture
def qdir(tmp_path):
    layout.reset_hashing()
    layout.create(str(tmp_path))
    return str(tmp_path)


def add(qdir, queue="deferred", sender="a@b", rcpt="c@d"):
    w = qfile.QueueWriter.create(qdir, queue_name=queue)
    w.set_sender(sender)
    w.add_recipient(qfile.Recipient(rcpt))
    w.write_content(b"Subject: x\r\n\r\nhi\r\n")
    w.commit()
    return w.queue_id


def where(qdir):
    return {q: sorted(i for i, _ in qfile.scan(qdir, q)) for q in PS.ALLOWED_QUEUES}


# -- postsuper -----------------------------------------------------------------

def test_postsuper_usage(capsys):
    for argv, first in ((["-d"], "postsuper: option requires an argument -- 'd'\n"),
                        (["-Z"], "postsuper: invalid option -- 'Z'\n")):
        with pytest.raises(C.Fatal) as e:
            PS.parse_args(argv)
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err == first + "postsuper: fatal: " + PS.USAGE + "\n"
    with pytest.raises(C.Fatal):
        PS.parse_args(["-d", "ALL", "corrupt"])
    assert capsys.readouterr().err == "postsuper: fatal: invalid directory name: corrupt\n"


def test_postsuper_not_root(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert PS.main(["-d", "ALL"]) == 1
    assert capsys.readouterr().err == \
        "postsuper: fatal: use of this command is reserved for the superuser\n"


def test_summary_lines():
    assert PS.summary("d", 1) == "postsuper: Deleted: 1 message"
    assert PS.summary("h", 2) == "postsuper: Placed on hold: 2 messages"
    assert PS.summary("H", 0) == "postsuper: Released from hold: 0 messages"
    assert PS.summary("r", 3) == "postsuper: Requeued: 3 messages"
    assert PS.summary("e", 1) == "postsuper: Force-expired: 1 message"


def test_hold_release_expire_requeue_delete(qdir, capsys):
    a, b = add(qdir), add(qdir, "incoming")
    s = PS.Super(qdir)
    assert s.run_op("h", "ALL", []) == 2
    assert where(qdir)["hold"] == sorted([a, b])
    assert s.run_op("h", "ALL", []) == 0            # hold is not a source queue
    assert s.run_op("e", a, []) == 1
    assert showq.is_force_expired(os.stat(qfile.path_of(qdir, "hold", a)).st_mode)
    assert s.run_op("H", "ALL", []) == 2
    assert where(qdir)["deferred"] == sorted([a, b])
    assert s.run_op("r", b, ["deferred"]) == 1
    assert where(qdir)["incoming"] == [b]
    assert s.run_op("d", "ALL", []) == 2
    assert all(v == [] for v in where(qdir).values())


def test_requeue_makes_an_old_unready_file_visible_in_incoming(qdir):
    # A queue file committed before the ready bit existed (mode 0600).
    a = add(qdir, "hold")
    path = qfile.path_of(qdir, "hold", a)
    os.chmod(path, 0o600)
    assert PS.Super(qdir).run_op("r", a, []) == 1
    assert where(qdir)["incoming"] == [a]
    assert qfile.is_ready(os.stat(qfile.path_of(qdir, "incoming", a)).st_mode)


def test_requeue_leaves_a_file_cleanup_is_still_writing_alone(qdir):
    # Not ready in incoming/: cleanup's file before its commit, which may
    # hold a recycled inode's old message (qfile).  Made ready, qmgr would
    # deliver those bytes.
    a = add(qdir, "incoming")
    path = qfile.path_of(qdir, "incoming", a)
    os.chmod(path, 0o600)
    assert PS.Super(qdir).run_op("r", a, []) == 0
    assert PS.Super(qdir).run_op("r", "ALL", []) == 0
    assert not qfile.is_ready(os.stat(path).st_mode)


def test_f_expires_and_releases(qdir):
    a = add(qdir, "hold")
    assert PS.Super(qdir).run_op("f", a, []) == 1
    assert where(qdir)["deferred"] == [a]


def test_bad_ids_change_nothing(qdir, capsys):
    a = add(qdir)
    before = where(qdir)
    s = PS.Super(qdir)
    assert s.run_op("d", "all", []) == 0
    assert s.run_op("d", "../x", []) == 0
    assert s.run_op("d", "deferred/" + a, []) == 0
    assert s.run_op("h", "", []) == 0
    assert where(qdir) == before
    err = capsys.readouterr().err
    assert "postsuper: warning: invalid mail queue id: ../x\n" in err
    assert f"postsuper: warning: invalid mail queue id: deferred/{a}\n" in err


def test_ids_from_stdin(qdir, monkeypatch):
    a, b = add(qdir), add(qdir)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{a}\n{b} extra words\n\n"))
    assert PS.Super(qdir).run_op("d", "-", []) == 2


def test_purge_and_structure(qdir):
    old = os.path.join(qdir, "incoming", ".123.0")
    open(old, "w").close()
    os.utime(old, (0, 0))
    fresh = os.path.join(qdir, "maildrop", ".456.0")
    open(fresh, "w").close()
    # A queue file in incoming/ never made ready: a message cut off mid-way.
    writers = [qfile.QueueWriter.create(qdir) for _ in range(2)]   # kept: not aborted
    cut, young = (w.path for w in writers)
    os.utime(cut, (0, 0))
    ready = add(qdir, "incoming")
    os.utime(qfile.path_of(qdir, "incoming", ready), (0, 0))
    s = PS.Super(qdir)
    assert s.purge() == 2
    assert not os.path.exists(old) and os.path.exists(fresh)
    assert not os.path.exists(cut) and os.path.exists(young)
    assert os.path.exists(qfile.path_of(qdir, "incoming", ready))
    a = add(qdir)
    wrong = os.path.join(qdir, "deferred", a)
    os.rename(qfile.path_of(qdir, "deferred", a), wrong)
    assert s.structure() == 1
    assert os.path.exists(qfile.path_of(qdir, "deferred", a))


# -- postqueue -----------------------------------------------------------------

@pytest.mark.parametrize("argv,first", [
    (["-Z"], "postqueue: invalid option -- 'Z'\n"),
    ([], ""),
    (["-i"], "postqueue: option requires an argument -- 'i'\n"),
    (["-p", "-j"], ""),
    (["-p", "extra"], ""),
])
def test_postqueue_usage(argv, first, capsys):
    assert Q.main(argv) == C.EX_UNAVAILABLE
    assert capsys.readouterr().err == first + "postqueue: fatal: " + Q.USAGE + "\n"


def test_postqueue_modes():
    assert Q.parse_args(["-c", "/x", "-p"])[:3] == ("p", "", "/x")
    assert Q.parse_args(["-s", "example.com"])[:2] == ("s", "example.com")
    assert Q.parse_args(["-i", "ABC"])[:2] == ("i", "ABC")


def _cfg(tmp_path, extra=""):
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "main.cf").write_text(f"queue_directory = {tmp_path}/q\n{extra}")
    layout.create(str(tmp_path / "q"))
    return C.load_config("postqueue", str(etc))


def test_flush_errors(tmp_path, capsys):
    cfg = _cfg(tmp_path, "relay_domains = relay.test\n")
    with pytest.raises(C.Fatal) as e:
        Q.flush(cfg, "i", "../x")
    assert e.value.code == 69
    assert capsys.readouterr().err == 'postqueue: fatal: Cannot flush queue ID - invalid name: "../x"\n'
    with pytest.raises(C.Fatal):
        Q.flush(cfg, "s", "example.com")
    assert capsys.readouterr().err == \
        'postqueue: fatal: Flush service is not configured for destination "example.com"\n'
    with pytest.raises(C.Fatal):          # no qmgr listening
        Q.flush(cfg, "f", "")
    assert capsys.readouterr().err == "postqueue: fatal: Cannot flush mail queue - mail system is down\n"
    with pytest.raises(C.Fatal):
        Q.flush(cfg, "s", "relay.test")
    assert "mail system is down" in capsys.readouterr().err


def test_mailq_authorization(tmp_path, monkeypatch, capsys):
    cfg = _cfg(tmp_path, "authorized_mailq_users = someoneelse\nmail_owner = nobody\n")
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    with pytest.raises(C.Fatal) as e:
        Q.list_queue(cfg, False)
    assert e.value.code == C.EX_NOPERM
    assert "is not allowed to view the mail queue" in capsys.readouterr().err


def test_list_queue_text_and_json(tmp_path):
    cfg = _cfg(tmp_path)
    add(str(tmp_path / "q"), "active", sender="")
    out = io.StringIO()
    Q.list_queue(cfg, False, out)
    lines = out.getvalue().splitlines()
    assert lines[1].split()[0].endswith("*") and lines[1].endswith(" MAILER-DAEMON")
    assert lines[-1] == "-- 0 Kbytes in 1 Request."
    out = io.StringIO()
    Q.list_queue(cfg, True, out)
    assert '"queue_name": "active"' in out.getvalue()


# -- qshape --------------------------------------------------------------------

def test_qshape_buckets_and_layout():
    assert [qshape.bucket(m * 60, 5, 10, False) for m in (0, 4.9, 5, 9.9, 10, 20, 99999)] == \
        [1, 1, 2, 2, 3, 4, 10]
    s = qshape.Shape()
    s.add(0, "a@x", ["b@dead.example", "c@dead.example", "d@Other.example"], now=400)
    text = s.render().splitlines()
    assert text[0] == " " * 41 + "T  5 10 20 40 80 160 320 640 1280 1280+"
    assert text[1] == " " * 34 + "TOTAL  3  0  3  0  0  0   0   0   0    0     0"
    assert text[2] == " " * 27 + "dead.example  2  0  2  0  0  0   0   0   0    0     0"
    assert text[3].endswith("other.example  1  0  1  0  0  0   0   0   0    0     0")


def test_qshape_parents():
    s = qshape.Shape(parents=True, min_sub=2)
    s.add(0, "", ["a@x.sub.example.com", "b@y.sub.example.com"], now=0)
    names = [l.split()[0] for l in s.render().splitlines()[1:]]
    assert ".sub.example.com" in names and ".example.com" not in names
