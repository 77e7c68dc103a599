"""Queue files: write -> read round trip, commit protocol, done marks,
truncation and byte flips (always CorruptQueueFile, never a mis-read),
moves between hashed and unhashed queues, scan."""

import atexit
import errno
import os
import shutil
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fulmar.queue import layout, qfile, qid
from fulmar.queue import records as rec
from fulmar.queue.qfile import CorruptQueueFile, QueueWriter, Recipient

BODY = (b"Received: from x.example\r\nSubject: test\r\nFrom: a@example.org\r\n"
        b"\r\nhello\r\n.world\r\n")


@pytest.fixture(autouse=True)
def _defaults():
    layout.reset_hashing()
    old = qfile.set_audit_hook(None)
    yield
    layout.reset_hashing()
    qfile.set_audit_hook(old)


@pytest.fixture
def queue_dir(tmp_path):
    d = str(tmp_path / "spool")
    layout.create(d)
    return d


def write_message(queue_dir, content=BODY, rcpts=None, extracted=(), attrs=None,
                  sender="a@example.org", arrival=1_795_860_000.5):
    w = QueueWriter.create(queue_dir)
    w.set_arrival(arrival)
    for name, value in (attrs or {"client_name": "mail.example.org",
                                  "client_address": "192.0.2.1"}).items():
        w.add_attr(name, value)
    w.set_sender(sender)
    for r in rcpts or [Recipient("b@example.net", "B@example.net", "rfc822;B@example.net", 6),
                       Recipient("c@example.net")]:
        w.add_recipient(r)
    w.write_content(content)
    if extracted:
        w.end_content()
        for r in extracted:
            w.add_recipient(r)
    return w, w.commit()


def test_round_trip(queue_dir):
    w, path = write_message(queue_dir, extracted=[Recipient("x@example.com")])
    assert path == os.path.join(queue_dir, "incoming", w.queue_id)
    env = qfile.read_envelope(path)
    assert env.queue_id == w.queue_id
    assert env.arrival_time == 1_795_860_000.5
    assert env.sender == "a@example.org"
    assert env.attrs["client_name"] == "mail.example.org"
    assert env.attrs["client_address"] == "192.0.2.1"
    assert int(env.attrs["create_time"]) == qid.parse(w.queue_id)[0]
    assert [(r.address, r.orig_address, r.dsn_orcpt, r.dsn_notify, r.done) for r in env.recipients] == [
        ("b@example.net", "B@example.net", "rfc822;B@example.net", 6, False),
        ("c@example.net", "", "", 0, False),
        ("x@example.com", "", "", 0, False),
    ]
    assert env.content_size == env.message_size == len(BODY)
    assert env.file_size == os.path.getsize(path)
    assert b"".join(qfile.iter_content(path, env)) == BODY
    with open(path, "rb") as f:
        raw = f.read()
    for r in env.recipients:
        assert raw[r.offset:r.offset + 1] == b"R"
    assert raw[env.content_offset:env.content_offset + 1] == b"M"
    assert raw[:1] == b"C" and raw[-rec.HEADER_LEN:-rec.HEADER_LEN + 1] == b"E"


def test_file_mode_and_no_dot_file_left(queue_dir):
    _, path = write_message(queue_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700      # ready
    assert os.listdir(os.path.join(queue_dir, "incoming")) == [os.path.basename(path)]


def test_file_has_its_name_at_create_and_is_ready_only_after_commit(queue_dir, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode), real_fsync(fd)))
    w = QueueWriter.create(queue_dir)
    path = os.path.join(queue_dir, "incoming", w.queue_id)
    assert w.path == path
    # Named by its queue ID at once (no dot-file left), the directory
    # fsynced so that the name is durable before the commit; not ready.
    assert os.listdir(os.path.join(queue_dir, "incoming")) == [w.queue_id]
    assert [stat.S_ISDIR(m) for m in synced] == [True]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not qfile.is_ready(os.stat(path).st_mode)
    assert list(qfile.scan(queue_dir, "incoming")) == []
    w.set_sender("a@b")
    w.add_recipient(Recipient("c@d"))
    w.write_content(b"x\r\n")
    synced.clear()
    assert w.commit() == path
    # The commit: the ready bit, then one fsync of the file itself.
    assert [stat.S_ISREG(m) and qfile.is_ready(m) for m in synced] == [True]
    assert list(qfile.scan(queue_dir, "incoming")) == [(w.queue_id, path)]


def test_commit_calls_ready_with_the_file_complete_before_its_fsync(queue_dir, monkeypatch):
    """What cleanup wakes qmgr on: a reader at that moment finds a ready
    file it can read whole; the fsync comes after."""
    events = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    w = QueueWriter.create(queue_dir)
    w.set_sender("a@b")
    w.add_recipient(Recipient("c@d"))
    w.write_content(b"Subject: s\r\n\r\nbody\r\n")
    events.clear()

    def ready():
        assert [qid for qid, _ in qfile.scan(queue_dir, "incoming")] == [w.queue_id]
        env = qfile.read_envelope(w.path)
        events.append(("ready", env.sender, [r.address for r in env.recipients]))

    w.commit(ready)
    assert events == [("ready", "a@b", ["c@d"]), "fsync"]


def test_failed_commit_takes_the_name_back(queue_dir, monkeypatch):
    w = QueueWriter.create(queue_dir)
    w.set_sender("a@b")
    w.add_recipient(Recipient("c@d"))

    def broken(fd):
        raise OSError(errno.EIO, "I/O error")
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        w.commit()
    assert os.listdir(os.path.join(queue_dir, "incoming")) == []


def test_seal_leaves_the_fsync_to_the_caller_and_finish_closes(queue_dir, monkeypatch):
    """commit() in two halves, for a caller that fsyncs in another thread
    (cleanup/syncer.py): seal() makes no fsync and returns the descriptor
    of the complete, ready file; finish() closes it."""
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    w = QueueWriter.create(queue_dir)
    w.set_sender("a@b")
    w.add_recipient(Recipient("c@d"))
    w.write_content(b"Subject: s\r\n\r\nbody\r\n")
    synced.clear()
    with pytest.raises(ValueError):
        w.finish()                       # not sealed
    fd = w.seal()
    assert synced == []
    assert os.fstat(fd).st_ino == os.stat(w.path).st_ino
    assert qfile.is_ready(os.fstat(fd).st_mode)
    assert qfile.read_envelope(w.path).sender == "a@b"
    with pytest.raises(ValueError):
        w.write_content(b"more")         # sealed: nothing more goes in
    os.fsync(fd)
    assert w.finish() == w.path
    with pytest.raises(OSError):
        os.fstat(fd)                     # closed
    assert list(qfile.scan(queue_dir, "incoming")) == [(w.queue_id, w.path)]


def test_a_sealed_file_not_finished_is_taken_back(queue_dir):
    """Sealed but not fsynced is not queued: abort(), or leaving the
    `with`, removes it."""
    with pytest.raises(RuntimeError):
        with QueueWriter.create(queue_dir) as w:
            w.set_sender("a@b")
            w.add_recipient(Recipient("c@d"))
            w.seal()
            raise RuntimeError("the fsync failed")
    assert os.listdir(os.path.join(queue_dir, "incoming")) == []


def test_create_many_syncs_each_file_then_the_directory_once(queue_dir, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    writers = QueueWriter.create_many(queue_dir, 3)
    # Each spare's own first fsync is done here, off the commit's path.
    assert synced[:3] == [w._fd for w in writers]
    assert len(synced) == 4 and synced[3] not in synced[:3]
    assert sorted(os.listdir(os.path.join(queue_dir, "incoming"))) == sorted(w.queue_id for w in writers)
    assert len({w.queue_id for w in writers}) == 3
    for w in writers:
        w.abort()
    assert os.listdir(os.path.join(queue_dir, "incoming")) == []


@pytest.mark.parametrize("size", [0, 1, rec.MAX_BLOCK - 1, rec.MAX_BLOCK, rec.MAX_BLOCK + 1,
                                  3 * rec.MAX_BLOCK + 17])
def test_content_sizes_and_chunking(queue_dir, size):
    content = bytes(i % 251 for i in range(size))
    w = QueueWriter.create(queue_dir)
    w.set_sender("")
    w.add_recipient(Recipient("b@example.net"))
    # Odd write sizes: the writer must still cut canonical blocks.
    for i in range(0, size, 7000):
        w.write_content(content[i:i + 7000])
    path = w.commit()
    env = qfile.verify(path)
    blocks = list(qfile.iter_content(path, env))
    assert b"".join(blocks) == content
    assert all(len(b) == rec.MAX_BLOCK for b in blocks[:-1])
    assert env.sender == ""


def test_big_message_is_written_in_chunks_and_size_record_rewritten(queue_dir):
    content = os.urandom(3 * qfile.WRITE_CHUNK)
    w = QueueWriter.create(queue_dir)
    w.set_sender("a@b")
    w.add_recipient(Recipient("c@d"))
    w.write_content(content)
    path = w.commit()
    env = qfile.verify(path)
    assert env.content_size == len(content)
    assert b"".join(qfile.iter_content(path, env)) == content


def test_mark_done_survives_reread_and_crc(queue_dir):
    _, path = write_message(queue_dir, extracted=[Recipient("x@example.com")])
    env = qfile.read_envelope(path)
    before = os.path.getsize(path)
    qfile.mark_done(path, [env.recipients[0].offset, env.recipients[2].offset])
    env2 = qfile.verify(path)                         # every CRC still valid
    assert [r.done for r in env2.recipients] == [True, False, True]
    assert [r.address for r in env2.pending] == ["c@example.net"]
    assert os.path.getsize(path) == before
    qfile.mark_done(path, [env.recipients[0].offset])  # idempotent
    assert qfile.verify(path).recipients[0].done


def test_mark_done_refuses_a_non_recipient_offset(queue_dir):
    _, path = write_message(queue_dir)
    env = qfile.read_envelope(path)
    with pytest.raises(CorruptQueueFile):
        qfile.mark_done(path, [env.recipients[0].offset, env.content_offset])
    assert not qfile.read_envelope(path).recipients[0].done   # nothing written


def test_commit_protocol_audit(queue_dir):
    log = []
    qfile.set_audit_hook(lambda op, path, detail: log.append((op, path, detail)))
    w, path = write_message(queue_dir)
    env = qfile.read_envelope(path)
    qfile.mark_done(path, [env.recipients[0].offset])
    new = qfile.move(queue_dir, w.queue_id, "incoming", "active")
    qfile.remove(queue_dir, "active", w.queue_id)
    ops = [op for op, _, _ in log]
    assert ops == ["create", "commit", "read", "mark_done", "move", "remove"]
    assert log[0][1] == path and log[0][2] == w.queue_id     # the final name at create
    assert log[1][1] == path
    assert log[4][2] == new


def test_abort_and_context_manager(queue_dir):
    incoming = os.path.join(queue_dir, "incoming")
    w = QueueWriter.create(queue_dir)
    assert len(os.listdir(incoming)) == 1
    w.abort()
    w.abort()
    assert os.listdir(incoming) == []
    with pytest.raises(RuntimeError):
        with QueueWriter.create(queue_dir) as w:
            w.set_sender("a@b")
            raise RuntimeError
    assert os.listdir(incoming) == []


def test_create_never_replaces_an_existing_file(queue_dir, monkeypatch):
    victim_id = QueueWriter.create(queue_dir).queue_id        # left not ready
    victim = os.path.join(queue_dir, "incoming", victim_id)
    with open(victim, "wb") as f:
        f.write(b"other message")
    monkeypatch.setattr(qfile._qid, "from_parts", lambda sec, usec, ino: victim_id)
    with pytest.raises(FileExistsError):
        QueueWriter.create(queue_dir)
    with open(victim, "rb") as f:
        assert f.read() == b"other message"
    assert os.listdir(os.path.join(queue_dir, "incoming")) == [victim_id]


def test_repeated_attributes_read_back_per_file(queue_dir):
    # Attribute records are kept per (name, value) for the next file
    # (qfile._attr_records); each file still reads back its own values,
    # and a value too long to be kept is written all the same.
    long = "x" * (qfile.ATTR_RECORD_CACHE_DATA + 1)
    values = ["192.0.2.1", "192.0.2.2", "192.0.2.1", long, long]
    for value in values:
        _, path = write_message(queue_dir, attrs={"client_address": value, "helo_name": "h"})
        env = qfile.read_envelope(path)
        assert (env.attrs["client_address"], env.attrs["helo_name"]) == (value, "h")
        assert qfile.verify(path)


def test_writer_refuses_bad_input_and_order(queue_dir):
    with QueueWriter.create(queue_dir) as w:
        w.add_attr("good_name", "x")        # a checked name is remembered...
        w.add_attr("good_name", "y")
        with pytest.raises(ValueError):
            w.add_attr("bad name", "x")     # ...a bad one never is
        with pytest.raises(ValueError):
            w.add_attr("bad name", "x")
        with pytest.raises(ValueError):
            w.add_attr("a=b", "x")
        with pytest.raises(ValueError):
            w.set_sender("a\0b")
        with pytest.raises(ValueError):
            w.add_recipient(Recipient("x\0y"))
        w.set_sender("a@b")
        w.write_content(b"x")
        with pytest.raises(ValueError):
            w.add_recipient(Recipient("late@x"))      # inside content
        with pytest.raises(ValueError):
            w.set_sender("c@d")
        w.end_content()
        with pytest.raises(ValueError):
            w.write_content(b"more")
    with QueueWriter.create(queue_dir) as w:
        with pytest.raises(ValueError):
            w.commit()                                 # no sender
    assert os.listdir(os.path.join(queue_dir, "incoming")) == []


def test_eight_bit_data_survives(queue_dir):
    sender = b"\xff\xfe@x".decode("utf-8", "surrogateescape")
    _, path = write_message(queue_dir, sender=sender,
                            rcpts=[Recipient("jörg@bücher.example")])
    env = qfile.read_envelope(path)
    assert env.sender == sender
    assert env.recipients[0].address == "jörg@bücher.example"


def _file_bytes(queue_dir, **kw):
    _, path = write_message(queue_dir, **kw)
    with open(path, "rb") as f:
        return path, f.read()


def test_every_truncation_is_corrupt(queue_dir, tmp_path):
    path, data = _file_bytes(queue_dir, extracted=[Recipient("x@example.com")])
    victim = str(tmp_path / "victim")
    with open(victim, "wb") as f:
        f.write(data)
    for n in range(len(data) - 1, -1, -1):
        os.truncate(victim, n)
        with pytest.raises(CorruptQueueFile):
            qfile.verify(victim)
        with pytest.raises(CorruptQueueFile):
            list(qfile.iter_records(victim))


def test_every_truncation_of_a_multi_block_file_is_corrupt(queue_dir, tmp_path):
    content = os.urandom(rec.MAX_BLOCK + 100)
    path, data = _file_bytes(queue_dir, content=content)
    env = qfile.read_envelope(path)
    victim = str(tmp_path / "victim")
    with open(victim, "wb") as f:
        f.write(data)
    # read_envelope at every length (it does not read the body) ...
    for n in range(len(data) - 1, -1, -1):
        os.truncate(victim, n)
        with pytest.raises(CorruptQueueFile):
            qfile.read_envelope(victim)
    # ... and the content reader against the right envelope near every boundary.
    with open(victim, "wb") as f:
        f.write(data)
    cuts = set()
    for block in range(2):
        start = env.content_offset + rec.HEADER_LEN + block * (rec.MAX_BLOCK + rec.HEADER_LEN)
        cuts.update(range(start - 12, start + 12))
    for n in sorted(cuts, reverse=True):
        os.truncate(victim, n)
        with pytest.raises(CorruptQueueFile):
            b"".join(qfile.iter_content(victim, env))


def test_appended_garbage_is_corrupt(queue_dir):
    _, path = write_message(queue_dir)
    with open(path, "ab") as f:
        f.write(rec.encode(rec.REC_END))
    with pytest.raises(CorruptQueueFile, match="after the end"):
        qfile.read_envelope(path)


def test_unknown_version_is_refused(queue_dir, tmp_path):
    _, data = _file_bytes(queue_dir)
    i = data.index(rec.VERSION)
    bad = bytearray(data)
    new = b"fulmar-queue 2"
    bad[i - 9:i + len(new)] = rec.encode(rec.REC_VERSION, new)
    victim = tmp_path / "v2"
    victim.write_bytes(bytes(bad))
    with pytest.raises(CorruptQueueFile, match="version"):
        qfile.read_envelope(str(victim))


# Module-level, not tmp_path: hypothesis runs the test many times per
# function-scoped fixture.  Removed when the test process ends.
_FLIP_DIR = tempfile.mkdtemp(prefix="fulmar-flip-")
atexit.register(shutil.rmtree, _FLIP_DIR, True)
_FLIP_BASE = None


def _flip_base():
    """One valid file (with an extracted recipient and a multi-block body)."""
    global _FLIP_BASE
    if _FLIP_BASE is None:
        d = os.path.join(_FLIP_DIR, "spool")
        layout.create(d)
        path, data = _file_bytes(d, content=BODY * 10, extracted=[Recipient("x@example.com")])
        env = qfile.read_envelope(path)
        starts = [off for off, _, _ in qfile.iter_records(path)]
        _FLIP_BASE = (data, [r.offset for r in env.recipients], starts, env.queue_id)
    return _FLIP_BASE


RD = ord("R") ^ ord("D")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_byte_flips_are_corrupt_except_r_d(data):
    base, rcpt_offsets, starts, queue_id = _flip_base()
    flips = data.draw(st.lists(
        st.tuples(st.integers(0, len(base) - 1), st.integers(1, 255)), min_size=0, max_size=3))
    # Aim at record headers too: a type byte turned into another valid type,
    # and the length and CRC fields right after it.
    for _ in range(data.draw(st.integers(0 if flips else 1, 2))):
        start = data.draw(st.sampled_from(starts))
        if data.draw(st.booleans()):
            new_type = data.draw(st.sampled_from(sorted(rec.MAX_DATA)))
            flips.append((start, base[start] ^ new_type[0]))
        else:
            flips.append((start + data.draw(st.integers(1, 8)), data.draw(st.integers(1, 255))))
    # Sometimes aim at a recipient type byte with the legitimate R<->D flip.
    if data.draw(st.booleans()):
        flips.append((data.draw(st.sampled_from(rcpt_offsets)), RD))
    xor = {}
    for pos, x in flips:
        xor[pos] = xor.get(pos, 0) ^ x
    xor = {p: x for p, x in xor.items() if x}
    if not xor:
        return
    bad = bytearray(base)
    for pos, x in xor.items():
        bad[pos] ^= x
    victim = os.path.join(_FLIP_DIR, queue_id)     # (a file names its queue ID)
    with open(victim, "wb") as f:
        f.write(bad)
    legit = all(p in rcpt_offsets and x == RD for p, x in xor.items())
    if legit:
        env = qfile.verify(victim)
        assert {r.offset for r in env.recipients if r.done} == set(xor)
    else:
        with pytest.raises(CorruptQueueFile):
            qfile.verify(victim)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_files_are_corrupt(blob):
    victim = os.path.join(_FLIP_DIR, "random")
    with open(victim, "wb") as f:
        f.write(blob)
    with pytest.raises(CorruptQueueFile):
        qfile.verify(victim)


def test_move_between_unhashed_and_hashed_queues(queue_dir):
    w, path = write_message(queue_dir)
    q = w.queue_id
    hashdir = qid.hash_path(q, 1)
    deferred = qfile.move(queue_dir, q, "incoming", "deferred")
    assert deferred == os.path.join(queue_dir, "deferred", hashdir, q)
    assert deferred == qfile.path_of(queue_dir, "deferred", q)
    assert not os.path.exists(path)
    assert list(qfile.scan(queue_dir, "deferred")) == [(q, deferred)]
    assert qfile.read_envelope(deferred).queue_id == q
    active = qfile.move(queue_dir, q, "deferred", "active")
    assert active == os.path.join(queue_dir, "active", q)
    assert list(qfile.scan(queue_dir, "deferred")) == []
    with pytest.raises(FileNotFoundError):
        qfile.move(queue_dir, q, "deferred", "active")
    assert qfile.remove(queue_dir, "active", q)
    assert not qfile.remove(queue_dir, "active", q)


def test_move_with_depth_two_creates_missing_hash_dirs(tmp_path):
    d = str(tmp_path / "spool")
    layout.create(d)
    layout.set_hashing("deferred, hold", 2)
    w, _ = write_message(d)
    held = qfile.move(d, w.queue_id, "incoming", "hold")
    assert held == os.path.join(d, "hold", qid.hash_path(w.queue_id, 2), w.queue_id)
    assert [q for q, _ in qfile.scan(d, "hold")] == [w.queue_id]


def test_scan_skips_dot_files_unready_files_and_non_ids(queue_dir):
    w, path = write_message(queue_dir)
    pending = QueueWriter.create(queue_dir)           # being written: not ready
    open(os.path.join(queue_dir, "incoming", ".12.3"), "w").close()
    open(os.path.join(queue_dir, "incoming", "not.an.id"), "w").close()
    os.mkdir(os.path.join(queue_dir, "incoming", "subdir"))
    try:
        assert list(qfile.scan(queue_dir, "incoming")) == [(w.queue_id, path)]
    finally:
        pending.abort()


def test_path_of_rejects_unsafe_names(queue_dir):
    for bad_id in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            qfile.path_of(queue_dir, "incoming", bad_id)
    with pytest.raises(ValueError):
        qfile.path_of(queue_dir, "../etc", "ABCDEF")


def test_set_next_attempt(queue_dir):
    _, path = write_message(queue_dir)
    qfile.set_next_attempt(path, 2_000_000_000)
    assert os.stat(path).st_mtime == 2_000_000_000


def test_set_flags_rewrites_size_record_and_keeps_file_valid(tmp_path):
    from fulmar.queue import layout
    layout.create(str(tmp_path))
    w = qfile.QueueWriter.create(str(tmp_path))
    w.set_arrival(1.0)
    w.set_sender("a@b")
    w.add_recipient(qfile.Recipient("c@d"))
    w.write_content(b"Subject: x\r\n\r\nbody\r\n")
    path = w.commit()
    assert qfile.read_envelope(path).flags == 0
    assert qfile.set_flags(path, qfile.FLAG_DELAY_WARNED) == qfile.FLAG_DELAY_WARNED
    env = qfile.verify(path)
    assert env.flags == qfile.FLAG_DELAY_WARNED and env.recipients[0].address == "c@d"
    assert qfile.set_flags(path, qfile.FLAG_DELAY_WARNED) == qfile.FLAG_DELAY_WARNED


def test_small_file_content_comes_from_the_envelope_read(queue_dir):
    # One read got the whole file: the content is served from it, so a
    # delivery agent does not open the file a second time.
    _, path = write_message(queue_dir)
    env = qfile.read_envelope(path)
    assert env.data is not None and len(env.data) == os.path.getsize(path)
    assert env.mode & 0o777 == 0o700
    os.unlink(path)
    assert b"".join(qfile.iter_content(path, env)) == BODY


def test_content_from_the_envelope_read_is_crc_checked(queue_dir):
    _, path = write_message(queue_dir)
    env = qfile.read_envelope(path)
    data = bytearray(env.data)
    at = data.index(b"hello")
    data[at] ^= 0x20
    env.data = bytes(data)
    with pytest.raises(CorruptQueueFile):
        b"".join(qfile.iter_content(path, env))


def test_large_file_content_is_read_from_the_file(queue_dir):
    content = b"Subject: big\r\n\r\n" + b"x" * (qfile.ENVELOPE_READ + 10)
    _, path = write_message(queue_dir, content=content)
    env = qfile.read_envelope(path)
    assert env.data is None
    assert b"".join(qfile.iter_content(path, env)) == content


def test_content_envelope_reads_only_the_content(queue_dir):
    # What a delivery agent does with the offsets from qmgr's request.
    _, path = write_message(queue_dir)
    env = qfile.read_envelope(path)
    light = qfile.content_envelope(path, env.content_offset, env.content_size)
    assert light.data == env.data and light.file_size == env.file_size
    assert b"".join(qfile.iter_content(path, light)) == BODY
    big = b"Subject: big\r\n\r\n" + b"y" * (qfile.ENVELOPE_READ + 10)
    _, path2 = write_message(queue_dir, content=big)
    env2 = qfile.read_envelope(path2)
    light2 = qfile.content_envelope(path2, env2.content_offset, env2.content_size)
    assert light2.data is None
    assert b"".join(qfile.iter_content(path2, light2)) == big


def test_content_envelope_of_bytes_qmgr_passed(queue_dir):
    # A small file qmgr has just read comes in the request: same envelope,
    # no file opened; wrong offsets or damaged bytes never yield content.
    _, path = write_message(queue_dir)
    env = qfile.read_envelope(path)
    light = qfile.content_envelope_of("/nonexistent/" + env.queue_id, env.data,
                                      env.content_offset, env.content_size)
    assert light.data == env.data and light.file_size == env.file_size
    assert b"".join(qfile.iter_content(path, light)) == BODY
    with pytest.raises(CorruptQueueFile):
        qfile.content_envelope_of(path, env.data, env.content_offset, env.file_size)
    damaged = bytearray(env.data)
    damaged[env.content_offset + 20] ^= 1
    with pytest.raises(CorruptQueueFile):
        b"".join(qfile.iter_content(path, qfile.content_envelope_of(
            path, bytes(damaged), env.content_offset, env.content_size)))


def test_content_envelope_with_wrong_offsets_never_yields_content(queue_dir):
    _, path = write_message(queue_dir)
    env = qfile.read_envelope(path)
    with pytest.raises(CorruptQueueFile):
        qfile.content_envelope(path, env.content_offset, env.file_size)     # past the end
    with pytest.raises(CorruptQueueFile):
        qfile.content_envelope(path, 0, env.content_size)                    # inside the size record
    for off in (env.content_offset - 1, env.content_offset + 1):
        with pytest.raises(CorruptQueueFile):       # refused here, or by a CRC
            b"".join(qfile.iter_content(path, qfile.content_envelope(path, off, env.content_size)))
