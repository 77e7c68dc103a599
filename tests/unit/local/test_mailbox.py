"""local.mailbox: mbox format, From_ quoting, size limit, lock."""

import os

import pytest

from local.mailbox import MailboxFull, deliver_mbox, from_line, mbox_body


def test_mbox_body_quotes_from_and_ends_with_blank_line():
    body = mbox_body([b"Subject: x\r\n\r\nFrom here\r\n", b"From there\r\nend"])
    assert body == b"Subject: x\n\n>From here\n>From there\nend\n\n"


def test_deliver_appends_and_respects_limit(tmp_path):
    box = str(tmp_path / "bob")
    head = from_line("a@b", 0) + b"Return-Path: <a@b>\n"
    deliver_mbox(box, head, b"x\n\n", size_limit=0)
    deliver_mbox(box, head, b"y\n\n", size_limit=0)
    data = open(box, "rb").read()
    assert data.count(b"\nReturn-Path: <a@b>\n") == 2 and data.startswith(b"From a@b  ")
    assert not os.path.exists(box + ".lock")
    with pytest.raises(MailboxFull):
        deliver_mbox(box, head, b"z" * 100, size_limit=len(data) + 10)
    assert open(box, "rb").read() == data
