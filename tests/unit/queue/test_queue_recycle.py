"""qfile.Recycler and create()'s reuse of recycled inodes (real files)."""
from __future__ import annotations

import os
import stat
import time

import pytest

from fulmar.queue import layout, qfile, qid as queue_ids


@pytest.fixture
def qdir(tmp_path, monkeypatch):
    layout.reset_hashing()
    d = str(tmp_path / "q")
    layout.create(d)
    # A listing left by another test's queue directory must not leak in.
    monkeypatch.setattr(qfile, "_recycled_names", [])
    monkeypatch.setattr(qfile, "_listed_empty", None)
    return d


def _commit(w: qfile.QueueWriter, sender: str, body: bytes) -> str:
    w.set_arrival(1.0)
    w.set_sender(sender)
    w.add_recipient(qfile.Recipient("b@example.net"))
    w.write_content(body)
    return w.commit()


def _delivered(qdir: str) -> tuple[str, int]:
    """A committed message moved to active/, as qmgr has it: (queue ID, inode)."""
    w = qfile.QueueWriter.create(qdir)
    _commit(w, "a@example.org", b"Subject: old\r\n\r\nsecret old body\r\n")
    qfile.move(qdir, w.queue_id, "incoming", "active")
    return w.queue_id, os.stat(qfile.path_of(qdir, "active", w.queue_id)).st_ino


def _recycled(qdir: str) -> list[str]:
    return sorted(os.listdir(os.path.join(qdir, layout.QUEUE_RECYCLE)))


def _leftovers(qdir: str) -> list[str]:
    return [n for n in os.listdir(os.path.join(qdir, "incoming")) if n.startswith(".")]


def test_give_moves_the_file_to_recycle_keeping_a_small_files_bytes(qdir):
    """Its blocks are written over by the next message: no truncate, no
    block freed or allocated (qfile's docstring, RECYCLE_KEEP)."""
    qid, ino = _delivered(qdir)
    size = os.stat(qfile.path_of(qdir, "active", qid)).st_size
    assert qfile.Recycler(qdir, True).give("active", qid) is True
    assert not os.path.exists(qfile.path_of(qdir, "active", qid))
    st = os.stat(os.path.join(qdir, "recycle", qid))
    assert (st.st_ino, st.st_size) == (ino, size)


def test_give_empties_a_file_over_the_kept_size(qdir, monkeypatch):
    """recycle/ holds at most RECYCLE_MAX files of RECYCLE_KEEP bytes."""
    qid, ino = _delivered(qdir)
    size = os.stat(qfile.path_of(qdir, "active", qid)).st_size
    monkeypatch.setattr(qfile, "RECYCLE_KEEP", size - 1)
    assert qfile.Recycler(qdir, True).give("active", qid) is True
    st = os.stat(os.path.join(qdir, "recycle", qid))
    assert (st.st_ino, st.st_size) == (ino, 0)


def test_create_reuses_a_recycled_inode_as_a_new_not_ready_file(qdir):
    qid, ino = _delivered(qdir)
    qfile.Recycler(qdir, True).give("active", qid)
    two_days_ago = time.time() - 2 * 86400
    os.utime(os.path.join(qdir, "recycle", qid), (two_days_ago, two_days_ago))
    w = qfile.QueueWriter.create(qdir, reuse=True)
    st = os.stat(w.path)
    assert st.st_ino == ino
    assert queue_ids.parse(w.queue_id)[2] == ino        # the ID carries the inode
    assert w.queue_id != qid
    assert not qfile.is_ready(st.st_mode)            # (it holds the old bytes)
    assert stat.S_IMODE(st.st_mode) == qfile.FILE_MODE
    # postsuper -p takes an hour-old not-ready file for a leftover.
    assert time.time() - st.st_mtime < 60
    assert _recycled(qdir) == [] and _leftovers(qdir) == []
    path = _commit(w, "c@example.org", b"Subject: new\r\n\r\nnew\r\n")
    env = qfile.verify(path)
    assert env.sender == "c@example.org"
    # The new message is shorter than the old: seal() cut the old tail.
    assert b"secret" not in open(path, "rb").read()
    assert os.stat(path).st_size == w._file_size


def test_the_old_message_never_reads_as_the_new_one(qdir):
    """A crash after seal() put the new file's ready bit and length on disk
    but before its bytes got there (ext4 without a journal orders nothing):
    what is on disk is the old message, under the new name.  It is corrupt,
    never delivered again (qfile.ATTR_QUEUE_ID)."""
    qid, ino = _delivered(qdir)
    old_size = os.stat(qfile.path_of(qdir, "active", qid)).st_size
    qfile.Recycler(qdir, True).give("active", qid)
    w = qfile.QueueWriter.create(qdir, reuse=True)
    assert os.stat(w.path).st_size == old_size       # the same length, the worst case
    os.chmod(w.path, qfile.FILE_MODE | qfile.READY_BIT)
    with pytest.raises(qfile.CorruptQueueFile, match="written as queue file " + qid):
        qfile.read_envelope(w.path)
    w.abort()


def test_a_file_names_its_queue_id_and_a_client_cannot_set_it(qdir):
    w = qfile.QueueWriter.create(qdir)
    w.add_attr(qfile.ATTR_QUEUE_ID, "4jdMWK1Q4HzvvYY")      # ignored: the writer's own
    w.add_attr("client_name", "mail.example.org")
    path = _commit(w, "a@example.org", b"Subject: s\r\n\r\nbody\r\n")
    raw = open(path, "rb").read()
    assert b"queue_id=" + w.queue_id.encode() in raw and b"4jdMWK1Q4HzvvYY" not in raw
    env = qfile.read_envelope(path)
    assert qfile.ATTR_QUEUE_ID not in env.attrs and env.attrs["client_name"] == "mail.example.org"
    # Moved between queues (postsuper, qmgr) it keeps its name, and reads.
    qfile.move(qdir, w.queue_id, "incoming", "deferred")
    assert qfile.read_envelope(qfile.path_of(qdir, "deferred", w.queue_id)).sender == "a@example.org"


def test_a_longer_message_on_a_recycled_inode_is_whole(qdir):
    qid, ino = _delivered(qdir)
    old_size = os.stat(qfile.path_of(qdir, "active", qid)).st_size
    qfile.Recycler(qdir, True).give("active", qid)
    w = qfile.QueueWriter.create(qdir, reuse=True)
    assert os.stat(w.path).st_ino == ino
    body = b"Subject: long\r\n\r\n" + b"z" * 70000 + b"\r\n"     # (several writes)
    path = _commit(w, "d@example.org", body)
    assert os.stat(path).st_size > old_size
    env = qfile.verify(path)
    assert env.sender == "d@example.org"
    assert b"secret" not in open(path, "rb").read()


def test_a_file_gone_meanwhile_is_false_and_recycling_goes_on(qdir):
    r = qfile.Recycler(qdir, True)
    assert r.give("active", "4jdMWK1Q4HzvvYY") is False
    qid, _ = _delivered(qdir)
    assert r.give("active", qid) is True
    assert _recycled(qdir) == [qid]


def test_recycle_is_bounded(qdir):
    r = qfile.Recycler(qdir, True, limit=3, recount=2)
    ids = [_delivered(qdir)[0] for _ in range(6)]
    for qid in ids:
        assert r.give("active", qid) is True
        assert not os.path.exists(qfile.path_of(qdir, "active", qid))
    assert _recycled(qdir) == sorted(ids[:3])      # the rest were removed


def test_without_recycle_the_file_is_removed_and_create_makes_new_files(qdir):
    os.rmdir(os.path.join(qdir, "recycle"))
    qid, _ = _delivered(qdir)
    assert qfile.Recycler(qdir, True).give("active", qid) is True
    assert not os.path.exists(qfile.path_of(qdir, "active", qid))
    assert not os.path.exists(os.path.join(qdir, "recycle"))
    w = qfile.QueueWriter.create(qdir, reuse=True)
    assert os.path.exists(w.path)
    w.abort()


def test_what_is_not_a_plain_file_is_removed_not_used(qdir):
    rdir = os.path.join(qdir, "recycle")
    os.mkfifo(os.path.join(rdir, "fifo"))            # would block an open for writing
    target = os.path.join(qdir, "target")
    with open(target, "wb") as fh:
        fh.write(b"not ours")
    os.symlink(target, os.path.join(rdir, "link"))
    os.link(target, os.path.join(rdir, "twolinks"))
    w = qfile.QueueWriter.create(qdir, reuse=True)
    st = os.stat(w.path)
    assert st.st_ino != os.stat(target).st_ino and stat.S_ISREG(st.st_mode)
    assert _recycled(qdir) == [] and _leftovers(qdir) == []
    assert open(target, "rb").read() == b"not ours"
    w.abort()


def test_a_name_taken_by_another_cleanup_is_skipped(qdir):
    r = qfile.Recycler(qdir, True)
    a, ino_a = _delivered(qdir)
    b, ino_b = _delivered(qdir)
    r.give("active", a)
    r.give("active", b)
    first = qfile.QueueWriter.create(qdir, reuse=True)           # lists both, takes one
    rest = _recycled(qdir)
    assert len(rest) == 1
    # Another cleanup process claims the other one first.
    os.rename(os.path.join(qdir, "recycle", rest[0]), os.path.join(qdir, "elsewhere"))
    second = qfile.QueueWriter.create(qdir, reuse=True)
    inodes = {os.stat(first.path).st_ino, os.stat(second.path).st_ino}
    assert len(inodes) == 2 and os.stat(first.path).st_ino in (ino_a, ino_b)
    assert _leftovers(qdir) == []
    first.abort()
    second.abort()


def test_create_many_takes_recycled_files_then_makes_new_ones(qdir):
    r = qfile.Recycler(qdir, True)
    ids = [_delivered(qdir) for _ in range(2)]
    for qid, _ in ids:
        r.give("active", qid)
    writers = qfile.QueueWriter.create_many(qdir, 4, reuse=True)
    inodes = [os.stat(w.path).st_ino for w in writers]
    assert len(set(inodes)) == 4
    assert {ino for _, ino in ids} <= set(inodes)
    assert _recycled(qdir) == []
    for w in writers:
        w.abort()


def test_a_big_file_give_did_not_empty_is_emptied_when_taken(qdir, monkeypatch):
    """A crash between give()'s rename and its truncate leaves the old bytes."""
    qid, ino = _delivered(qdir)
    spare = os.path.join(qdir, "recycle", qid)
    os.rename(qfile.path_of(qdir, "active", qid), spare)
    monkeypatch.setattr(qfile, "RECYCLE_KEEP", os.stat(spare).st_size - 1)
    w = qfile.QueueWriter.create(qdir, reuse=True)
    st = os.stat(w.path)
    assert st.st_ino == ino and st.st_size == 0
    w.abort()


def test_disabled_recycling_removes_and_create_without_reuse_makes_new_files(qdir):
    """Where the file system has a journal (fsinfo), nothing is recycled."""
    qid, ino = _delivered(qdir)
    assert qfile.Recycler(qdir, False).give("active", qid) is True
    assert _recycled(qdir) == [] and not os.path.exists(qfile.path_of(qdir, "active", qid))
    a, _ = _delivered(qdir)
    qfile.Recycler(qdir, True).give("active", a)
    w = qfile.QueueWriter.create(qdir)                # reuse=False: a new inode
    assert _recycled(qdir) == [a]
    w.abort()


def test_an_empty_recycle_is_not_listed_again_until_it_changes(qdir, monkeypatch):
    """Mail arriving while nothing is delivered: a stat, not a listing, per
    new file; a file given back (a new mtime on recycle/) is found."""
    monkeypatch.setattr(qfile, "_listed_empty", None)
    listings = []
    real_listdir = os.listdir
    monkeypatch.setattr(qfile.os, "listdir", lambda p: listings.append(p) or real_listdir(p))
    for _ in range(3):
        qfile.QueueWriter.create(qdir, reuse=True).abort()
    assert len(listings) == 1
    qid, ino = _delivered(qdir)
    rdir = os.path.join(qdir, "recycle")
    old = os.stat(rdir).st_mtime_ns
    qfile.Recycler(qdir, True).give("active", qid)
    # (the directory's mtime moves in clock ticks: make sure it moved)
    os.utime(rdir, ns=(old + 10**9, old + 10**9))
    w = qfile.QueueWriter.create(qdir, reuse=True)
    assert os.stat(w.path).st_ino == ino
    w.abort()
