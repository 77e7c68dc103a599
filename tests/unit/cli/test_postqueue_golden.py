"""mailq / postqueue -p / -j against output captured from a real Postfix.

See tests/golden/postqueue/README.md for how the golden files were made and
for the normalization (queue IDs -> Q1.., arrival time -> DATE).
"""

import io
import json
import os
import re
import stat
from pathlib import Path

import pytest

from bounce import logfile
from fulmar.queue import layout, qfile, showq
from fulmar.queue.showq import Entry, ShowRecipient
from fulmar.smtp.dsn import RecipientStatus

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "postqueue"
QID_RE = re.compile(r"\b[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+\b")
DATE_RE = re.compile(r"(?m)^(\S+ +\d+ )(.{19})( )")

REFUSED = "connect to 127.0.0.1[127.0.0.1]:9: Connection refused"
GREY = ("Service unavailable; the remote greylisting policy asks us to come back "
        "much later, try again")

# The logical queue of the golden capture, in Postfix's listing order.
QUEUE = [
    ("deferred", 266, False, "alice@example.test",
     [("bob@dead.example", REFUSED), ("carol@dead.example", REFUSED)]),
    ("deferred", 3308, True, "a.very.long.sender.address.for.testing@sub.domain.example.test",
     [("erin@dead.example", REFUSED)]),
    ("deferred", 265, False, "quoted@pf.example.test",
     [('odd user@slow.example', GREY)]),
    ("deferred", 251, False, "",
     [("ken@dead.example", REFUSED), ("henry@slow.example", GREY),
      ("ivan@slow.example", GREY), ("judy@mixed.example", "short reason")]),
    ("hold", 262, True, "held@example.test", [("gina@dead.example", REFUSED)]),
]


def normalize(text: str) -> str:
    ids: dict[str, str] = {}
    text = QID_RE.sub(lambda m: ids.setdefault(m.group(0), "Q%d" % (len(ids) + 1)), text)
    return DATE_RE.sub(lambda m: m.group(1) + "DATE" + m.group(3), text)


def normalize_json(line: str) -> dict:
    obj = json.loads(line)
    obj["queue_id"] = "Q"
    obj["arrival_time"] = 0
    return obj


def entries_from_table():
    out = []
    for i, (queue, size, expired, sender, rcpts) in enumerate(QUEUE):
        out.append(Entry(queue, "4jcccT2ZHlzJB2%d" % i, 1795933593, size, expired,
                         showq.show_address(sender, "MAILER-DAEMON"),
                         [ShowRecipient(showq.show_address(a, "MAILER-DAEMON"), r) for a, r in rcpts]))
    return out


def test_golden_text_from_entries():
    out = io.StringIO()
    showq.write_mailq(entries_from_table(), out)
    golden = (GOLDEN / "mailq.txt").read_text()
    assert normalize(out.getvalue()) == normalize(golden)


def test_golden_json_from_entries():
    out = io.StringIO()
    showq.write_json(entries_from_table(), out)
    mine = [normalize_json(l) for l in out.getvalue().splitlines()]
    golden = [normalize_json(l) for l in (GOLDEN / "postqueue-j.jsonl").read_text().splitlines()]
    assert mine == golden
    assert out.getvalue().endswith("}\n")


def test_empty_queue(tmp_path):
    layout.create(str(tmp_path))
    out = io.StringIO()
    showq.write_mailq(showq.scan_queue(str(tmp_path)), out)
    assert out.getvalue() == "Mail queue is empty\n"
    out = io.StringIO()
    showq.write_json(showq.scan_queue(str(tmp_path)), out)
    assert out.getvalue() == ""


def _make_queue(queue_dir: str):
    layout.reset_hashing()
    layout.create(queue_dir)
    for queue, size, expired, sender, rcpts in QUEUE:
        w = qfile.QueueWriter.create(queue_dir, queue_name=queue)
        w.set_sender(sender)
        for a, _ in rcpts:
            w.add_recipient(qfile.Recipient(a))
        w.write_content(b"x" * size)
        path = w.commit()
        if expired:
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | showq.FORCE_EXPIRE_BIT)
        logfile.append(queue_dir, logfile.LOG_DEFER, w.queue_id,
                       [RecipientStatus(a, status="4.0.0", action="delayed", reason=r)
                        for a, r in rcpts])


def _blocks(text: str) -> list[str]:
    return sorted(normalize(b) for b in text.split("\n\n"))


def test_golden_text_from_real_queue(tmp_path):
    """The same queue made of Fulmar queue files and defer logs."""
    _make_queue(str(tmp_path))
    out = io.StringIO()
    count, _ = showq.write_mailq(showq.scan_queue(str(tmp_path)), out)
    assert count == len(QUEUE)
    golden = (GOLDEN / "mailq.txt").read_text()
    # Directory order differs between file systems: compare message blocks
    # (the header is glued to the first block; strip it from both).
    head = golden.split("\n", 1)[0] + "\n"
    mine = out.getvalue()
    assert mine.startswith(head)
    # Q-numbering depends on order: normalize each block on its own.
    assert sorted(normalize(b) for b in mine[len(head):].split("\n\n")) == \
        sorted(normalize(b) for b in golden[len(head):].split("\n\n"))


def test_real_queue_json_matches(tmp_path):
    _make_queue(str(tmp_path))
    out = io.StringIO()
    showq.write_json(showq.scan_queue(str(tmp_path), want_bounce=True), out)
    mine = sorted(json.dumps(normalize_json(l), sort_keys=True) for l in out.getvalue().splitlines())
    golden = sorted(json.dumps(normalize_json(l), sort_keys=True)
                    for l in (GOLDEN / "postqueue-j.jsonl").read_text().splitlines())
    assert mine == golden


def test_reason_unavailable_and_long_reason():
    e = Entry("active", "4jcccT2ZHlzJB24", 0, 10, False, "a@b",
              [ShowRecipient("x@y", "why"), ShowRecipient("z@y", "")])
    text = showq.format_message(e)
    lines = text.splitlines()
    assert lines[0].startswith("4jcccT2ZHlzJB24*  ")
    assert lines[1] == " " * 73 + "(why)"
    assert lines[3] == " " * 58 + "(reason unavailable)"
    assert lines[4] == " " * 47 + "z@y"


def test_unprintable_sender_and_null_sender():
    assert showq.show_address("", "MAILER-DAEMON") == "MAILER-DAEMON"
    assert showq.show_address("a\x01b@x", "M") == '"a?b"@x'


class _FlushLog(io.StringIO):
    """Records, at each flush, how many message blocks had been written."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def flush(self):
        self.seen.append(self.getvalue().count("\n\n"))


def _streamed(writer, queue_dir, out):
    """Run writer over the queue; returns, per message read, out.seen then."""
    before = []

    def entries():
        for e in showq.scan_queue(queue_dir):
            before.append(list(out.seen))
            yield e

    writer(entries(), out)
    return before


@pytest.mark.parametrize("writer", [showq.write_mailq, showq.write_json])
def test_listing_streams_the_first_message(tmp_path, writer):
    """The first message is written out before the second one is read."""
    _make_queue(str(tmp_path))
    out = _FlushLog()
    before = _streamed(writer, str(tmp_path), out)
    assert before[0] == [] and len(before[1]) == 1
    assert out.getvalue()            # the end is flushed too
    assert out.seen[-1] == out.getvalue().count("\n\n")


@pytest.mark.parametrize("writer", [showq.write_mailq, showq.write_json])
def test_listing_flushes_by_time_not_per_message(tmp_path, monkeypatch, writer):
    """A fast listing is not flushed per message (a write(2) each); a slow
    one (every message later than FLUSH_INTERVAL) still is."""
    _make_queue(str(tmp_path))
    clock = [1000.0]
    monkeypatch.setattr(showq.time, "monotonic", lambda: clock[0])
    out = _FlushLog()
    _streamed(writer, str(tmp_path), out)
    assert len(out.seen) <= 2        # the first message, and the end
    slow = _FlushLog()

    def tick():
        clock[0] += showq.FLUSH_INTERVAL
        return clock[0]

    monkeypatch.setattr(showq.time, "monotonic", tick)
    _streamed(writer, str(tmp_path), slow)
    assert len(slow.seen) >= len(QUEUE)


def test_long_defer_log_is_read_whole(tmp_path, monkeypatch):
    """A defer log longer than one read gives every recipient's reason."""
    monkeypatch.setattr(showq, "LOG_READ", 64)
    _make_queue(str(tmp_path))
    text = io.StringIO()
    showq.write_mailq(showq.scan_queue(str(tmp_path)), text)
    assert text.getvalue().count(GREY) == 2
    assert "judy@mixed.example" in text.getvalue() and "(short reason)" in text.getvalue()
