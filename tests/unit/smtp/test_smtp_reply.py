from hypothesis import given, strategies as st

from fulmar.smtp import reply as R
from fulmar.smtp.reply import Reply


def test_single_and_multiline():
    assert Reply(250, "2.1.0", "Ok").to_bytes() == b"250 2.1.0 Ok\r\n"
    assert Reply(250, "", "a\nb\nc").to_bytes() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(550, "5.7.1", "x\ny").to_bytes() == b"550-5.7.1 x\r\n550 5.7.1 y\r\n"


def test_wire_form_is_made_once_per_reply():
    # The constants are sent in every session: encoded once, not per send.
    assert R.MAIL_OK.to_bytes() is R.MAIL_OK.to_bytes()
    r = Reply(250, "2.1.0", "Ok")
    assert r == R.MAIL_OK and hash(r) == hash(R.MAIL_OK) and repr(r) == repr(R.MAIL_OK)


def test_postfix_texts():
    assert str(R.relay_denied("x@y")) == "554 5.7.1 <x@y>: Relay access denied"
    assert str(R.too_many_errors("h")) == "421 4.7.0 h Error: too many errors"
    assert str(R.timeout("h")) == "421 4.4.2 h Error: timeout exceeded"
    assert str(R.queued_as("Q")) == "250 2.0.0 Ok: queued as Q"


def test_parse():
    assert Reply.parse("450 4.7.1 try later") == Reply(450, "4.7.1", "try later")
    assert Reply.parse("550 no way") == Reply(550, "", "no way")
    assert Reply.parse("hello") is None
    assert Reply.parse("550 4.1.1 x").enhanced == "5.1.1"


@given(st.text())
def test_text_cannot_inject_lines(text):
    wire = Reply(250, "2.0.0", text).to_bytes()
    lines = wire.split(b"\r\n")[:-1]
    assert all(line.startswith((b"250-", b"250 ")) for line in lines)
    assert wire.endswith(b"\r\n") and b"\r" not in wire.replace(b"\r\n", b"")
