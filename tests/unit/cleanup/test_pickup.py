"""pickup: hostile maildrop files are logged and removed; good ones reach cleanup."""

import asyncio
import io
import os
import socket

import pytest

from cleanup import pickup as P
from fulmar import config, log
from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import Frame
from fulmar.queue import layout, maildrop
from fulmar.queue import records as rec


class FakeChannel:
    """Records what pickup sends; answers like cleanup."""

    def __init__(self, final="ok"):
        self.sent = []
        self.final = final
        self.closed = False
        self._replies = []

    def next_id(self):
        return 1

    async def send_attr(self, attrs):
        self.sent.append(("A", attrs))
        if attrs.get("request") == "open":
            self._replies.append(Frame(ipc.KIND_ATTR, {"id": 1, "status": "ok", "queue_id": "QID1"}))

    async def send_record(self, rtype, data):
        self.sent.append((rtype, bytes(data)))
        if rtype == rec.REC_END:
            self._replies.append(Frame(ipc.KIND_ATTR, {"id": 1, "status": self.final, "reason": "r"}))

    async def flush(self):
        pass

    async def recv(self, timeout=None):
        return self._replies.pop(0)

    def abort(self):
        self.closed = True

    async def close(self):
        self.closed = True


class Ctx:
    def __init__(self, queue_dir, cfg):
        self.queue_dir = queue_dir
        self.cfg = cfg
        self.stopping = asyncio.Event()

    def private_path(self, name):
        return os.path.join(self.queue_dir, "private", name)

    def public_path(self, name):
        return os.path.join(self.queue_dir, "public", name)


@pytest.fixture
def env(tmp_path):
    layout.reset_hashing()
    layout.create(str(tmp_path))
    (tmp_path / "main.cf").write_text("myorigin = origin.test\n")
    cfg = config.load(str(tmp_path))
    logbuf = io.StringIO()
    log.setup(None, "pickup", stream=logbuf)
    p = P.Pickup(Ctx(str(tmp_path), cfg))
    ch = FakeChannel()
    p.cleanup = ch
    return p, ch, tmp_path / "maildrop", logbuf


def good_stream(sender="alice", rcpts=("bob", "c@d"), attrs=None):
    out = io.BytesIO()
    w = maildrop.StreamWriter(out)
    w.envelope(sender, [maildrop.encode_recipient(r) for r in rcpts],
               attrs if attrs is not None else {"submit_uid": str(os.geteuid()), "full_name": "A"})
    w.content(b"Subject: x\r\n\r\nhi\r\n")
    w.finish()
    return out.getvalue()


def run_scan(p):
    asyncio.run(p.scan())


def test_good_file_is_fed_and_removed(env):
    p, ch, md, logbuf = env
    (md / "F1").write_bytes(good_stream())
    run_scan(p)
    assert not (md / "F1").exists()
    opened = ch.sent[0][1]
    assert opened["origin"] == "pickup" and opened["submit_uid"] == str(os.geteuid())
    assert (b"S", b"alice@origin.test") in ch.sent
    assert (b"R", b"bob@origin.test\0bob\0\x000") in ch.sent
    assert (b"R", b"c@d\0\0\x000") in ch.sent
    assert (b"A", b"full_name=A") in ch.sent
    assert ch.sent[-1] == (rec.REC_END, b"")
    assert "QID1: uid=%d from=<alice>" % os.geteuid() in logbuf.getvalue()


@pytest.mark.parametrize("name,make,reason", [
    ("trunc", lambda md: (md / "trunc").write_bytes(good_stream()[:-5]), ""),
    ("junk", lambda md: (md / "junk").write_bytes(b"garbage" * 10), ""),
    ("empty", lambda md: (md / "empty").write_bytes(b""), "premature end"),
    ("huge", lambda md: (md / "huge").write_bytes(b"V\x7f\xff\xff\xff\0\0\0\0"), ""),
    ("link", lambda md: os.symlink("/etc/passwd", md / "link"), "symbolic link"),
    ("fifo", lambda md: os.mkfifo(md / "fifo"), "not a regular file"),
    ("dir", lambda md: os.mkdir(md / "dir"), "not a regular file"),
    ("extra", lambda md: (md / "extra").write_bytes(good_stream() + b"x"), "after the end"),
])
def test_hostile_files_are_removed(env, name, make, reason):
    p, ch, md, logbuf = env
    make(md)
    run_scan(p)
    assert not os.path.lexists(md / name)
    text = logbuf.getvalue()
    assert f"warning: maildrop/{name}: " in text and "-- removed" in text
    assert reason in text


def test_hard_link_is_refused(env, tmp_path):
    p, ch, md, logbuf = env
    (tmp_path / "outside").write_bytes(good_stream())
    os.link(tmp_path / "outside", md / "hl")
    run_scan(p)
    assert not (md / "hl").exists() and (tmp_path / "outside").exists()
    assert "file has 2 links" in logbuf.getvalue()


def test_uid_mismatch_from_untrusted_owner(env):
    p, ch, md, logbuf = env
    p.trusted_uids = set()            # pretend the file's owner is an ordinary user
    (md / "F").write_bytes(good_stream(attrs={"submit_uid": "12345"}))
    run_scan(p)
    assert not (md / "F").exists()
    assert "does not match submitter uid 12345" in logbuf.getvalue()
    assert ch.sent == []


def test_unknown_attribute_dropped(env):
    p, ch, md, logbuf = env
    (md / "F").write_bytes(good_stream(attrs={"client_address": "1.2.3.4"}))
    run_scan(p)
    assert all(not (t == b"A" and d.startswith(b"client_address")) for t, d in ch.sent)
    assert "ignoring attribute client_address" in logbuf.getvalue()


def test_tempfail_keeps_file_reject_removes(env):
    p, ch, md, logbuf = env
    ch.final = "tempfail"
    (md / "F").write_bytes(good_stream())
    run_scan(p)
    assert (md / "F").exists()
    ch.final = "toolarge"
    run_scan(p)
    assert not (md / "F").exists()
    assert "QID1: message rejected by cleanup" in logbuf.getvalue()


def test_bad_file_midway_aborts_transaction(env):
    p, ch, md, logbuf = env
    data = good_stream()
    (md / "F").write_bytes(data[:-12])       # cut inside the content
    run_scan(p)
    assert ("A", {"request": "abort", "id": 1}) in ch.sent
    assert not (md / "F").exists()


def test_dot_files_are_left_alone(env):
    p, ch, md, logbuf = env
    (md / ".busy").write_bytes(b"partial")
    run_scan(p)
    assert (md / ".busy").exists() and ch.sent == []


def test_qualify():
    assert P.qualify("bob", "o.test", True) == "bob@o.test"
    assert P.qualify("bob", "o.test", False) == "bob"
    assert P.qualify("", "o.test", True) == ""
    assert P.qualify("a@b", "o.test", True) == "a@b"
