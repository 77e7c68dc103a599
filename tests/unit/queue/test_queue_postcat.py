"""postcat on files written by QueueWriter: Postfix's section layout."""

import io
import os
import sys
import time

import pytest

from fulmar.cli import postcat
from fulmar.queue import layout, qfile
from fulmar.queue.qfile import QueueWriter, Recipient

ARRIVAL = 1_795_860_000
CREATED = 1_795_860_001
CONTENT = (b"Received: from mail.example.org\r\n"
           b"Subject: hello\r\n"
           b"\tfolded\r\n"
           b"\r\n"
           b"first body line\r\n"
           b"Not-A-Header: body text\r\n")


def asc(t):
    return time.asctime(time.localtime(t))


@pytest.fixture(autouse=True)
def _defaults():
    layout.reset_hashing()
    yield
    layout.reset_hashing()


@pytest.fixture
def queue(tmp_path):
    d = str(tmp_path / "spool")
    layout.create(d)
    w = QueueWriter.create(d)
    w.set_arrival(ARRIVAL)
    w.add_attr("create_time", str(CREATED))
    w.add_attr("client_name", "mail.example.org")
    w.set_sender("a@example.org")
    w.add_recipient(Recipient("b@example.net", "B@example.net", "rfc822;B@example.net", 6))
    w.add_recipient(Recipient("c@example.net"))
    # A line cut by a write boundary must still print as one line.
    w.write_content(CONTENT[:40])
    w.write_content(CONTENT[40:])
    w.end_content()
    w.add_recipient(Recipient("x@example.com"))
    path = w.commit()
    env = qfile.read_envelope(path)
    qfile.mark_done(path, [env.recipients[1].offset])
    return d, w.queue_id, path


def run(argv, capsys, stdin=None):
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        status = postcat.main(argv)
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_full_output(queue, capsys):
    _, _, path = queue
    status, lines, err = run([path], capsys)
    assert status == 0 and err == ""
    env = qfile.read_envelope(path)
    size = "%15d %15d %15d %15d %15d" % (len(CONTENT), env.content_offset, 3, 0, len(CONTENT))
    assert lines == [
        f"*** ENVELOPE RECORDS {path} ***",
        f"message_size: {size}",
        f"message_arrival_time: {asc(ARRIVAL)}",
        f"create_time: {asc(CREATED)}",
        "named_attribute: client_name=mail.example.org",
        "sender: a@example.org",
        "dsn_original_recipient: rfc822;B@example.net",
        "dsn_notify_flags: 6",
        "original_recipient: B@example.net",
        "recipient: b@example.net",
        "done_recipient: c@example.net",
        f"*** MESSAGE CONTENTS {path} ***",
        "Received: from mail.example.org",
        "Subject: hello",
        "\tfolded",
        "",
        "first body line",
        "Not-A-Header: body text",
        f"*** HEADER EXTRACTED {path} ***",
        "recipient: x@example.com",
        f"*** MESSAGE FILE END {path} ***",
    ]


def test_fulmars_own_records_only_with_v(queue, capsys):
    """The version record and the queue ID attribute (qfile.ATTR_QUEUE_ID)
    are Fulmar's bookkeeping: Postfix's layout above, -v shows them."""
    _, q, path = queue
    _, lines, _ = run(["-v", path], capsys)
    assert f"named_attribute: queue_id={q}" in lines
    assert lines.index(f"named_attribute: queue_id={q}") < lines.index("sender: a@example.org")


def test_sections(queue, capsys):
    _, _, path = queue
    _, lines, _ = run(["-h", path], capsys)
    assert lines == ["Received: from mail.example.org", "Subject: hello", "\tfolded"]
    _, lines, _ = run(["-b", path], capsys)
    assert lines == ["", "first body line", "Not-A-Header: body text"]
    _, lines, _ = run(["-bh", path], capsys)
    assert len(lines) == 6 and not any(line.startswith("***") for line in lines)
    _, lines, _ = run(["-e", path], capsys)
    assert lines[0].startswith("*** ENVELOPE RECORDS")
    assert f"*** MESSAGE CONTENTS {path} ***" in lines
    assert "Subject: hello" not in lines
    assert lines[-2:] == ["recipient: x@example.com", f"*** MESSAGE FILE END {path} ***"]


def test_offsets_and_decimal_types(queue, capsys):
    _, _, path = queue
    env = qfile.read_envelope(path)
    _, lines, _ = run(["-o", "-d", "-e", path], capsys)
    assert lines[1].startswith("        0  67 message_size:")
    done = [line for line in lines if "done_recipient" in line][0]
    assert done == "%9d %3d done_recipient: c@example.net" % (env.recipients[1].offset, ord("D"))


def test_queue_search(queue, capsys, monkeypatch):
    d, q, path = queue
    monkeypatch.setattr(postcat, "_queue_setup", lambda config_dir: d)
    qfile.move(d, q, "incoming", "deferred")
    status, lines, _ = run(["-q", q], capsys)
    label = os.path.join("deferred", layout.queue_subdir("deferred", q).split("/", 1)[1], q)
    assert status == 0
    assert lines[0] == f"*** ENVELOPE RECORDS {label} ***"
    assert lines[-1] == f"*** MESSAGE FILE END {label} ***"


def test_queue_search_missing_and_bad_ids(queue, capsys, monkeypatch):
    d, _, _ = queue
    monkeypatch.setattr(postcat, "_queue_setup", lambda config_dir: d)
    status, lines, err = run(["-q", "XXX"], capsys)
    assert status == 1 and lines == []
    assert err == "postcat: fatal: open queue file XXX: No such file or directory\n"
    status, _, err = run(["-q", "../../etc/passwd"], capsys)
    assert status == 1
    assert err == "postcat: fatal: bad mail queue ID: ../../etc/passwd\n"


def test_stdin(queue, capsys):
    _, _, path = queue
    with open(path, "rb") as f:
        data = f.read()
    status, lines, _ = run([], capsys, stdin=data)
    assert status == 0
    assert lines[0] == "*** ENVELOPE RECORDS stdin ***"
    assert lines[-1] == "*** MESSAGE FILE END stdin ***"


def test_not_a_queue_file(tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.write_bytes(b"From: nobody\n\nhello\n")
    status, lines, err = run([str(junk)], capsys)
    assert status == 0 and lines == []
    assert err == f"postcat: warning: {junk}: input is not a valid queue file\n"


def test_damaged_file(queue, tmp_path, capsys):
    _, _, path = queue
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-30] ^= 0xFF
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    status, lines, err = run([str(bad)], capsys)
    assert status == 1
    assert lines[0].startswith("*** ENVELOPE RECORDS")
    assert err.endswith("postcat: fatal: record read error\n")


def test_missing_file_and_usage(tmp_path, capsys):
    status, _, err = run([str(tmp_path / "nope")], capsys)
    assert status == 1
    assert err == f"postcat: fatal: open {tmp_path / 'nope'}: No such file or directory\n"
    status, _, err = run(["-Z"], capsys)
    assert status == 1 and err.startswith("postcat: fatal: usage: postcat")
