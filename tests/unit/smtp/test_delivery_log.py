"""Delivery line golden strings (Postfix log_adhoc.c / format_tv.c)."""

import re

import pytest
from hypothesis import given, strategies as st

from fulmar.smtp.delivery_log import DeliveryTimes, format_delivery, format_tv

# pflogsumm's delivery regex (POSTFIX_SURFACE.md §8).
PFLOGSUMM = re.compile(r"to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=([^,]+), (?:conn_use=[^,]+, )?"
                       r"delay=([^,]+), (?:delays=[^,]+, )?(?:dsn=[^,]+, )?status=(\S+)(.*)$")


@pytest.mark.parametrize("secs,text", [
    (0, "0"), (0.0001, "0"), (0.004, "0"), (0.005, "0.01"), (0.02, "0.02"), (0.123, "0.12"),
    (0.31, "0.31"), (0.996, "1"), (1.2, "1.2"), (1.25, "1.3"), (9.94, "9.9"), (12.4, "12"),
    (30, "30"), (30.7, "31"), (3600.2, "3600"), (-1, "0"),
])
def test_format_tv(secs, text):
    assert format_tv(secs) == text


def test_sent_line():
    t0 = 1000.0
    line = format_delivery("4Xk2Lm1Qz7z9vRs", recipient="bob@example.net", relay="mx.example.net[198.51.100.7]:25",
                           times=DeliveryTimes(t0, t0 + 0.1, t0 + 0.11, t0 + 0.71), dsn="2.0.0", status="sent",
                           reason="250 2.0.0 Ok: queued as ABC", now=t0 + 1.21)
    assert line == ("4Xk2Lm1Qz7z9vRs: to=<bob@example.net>, relay=mx.example.net[198.51.100.7]:25, "
                    "delay=1.2, delays=0.1/0.01/0.6/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as ABC)")
    m = PFLOGSUMM.search(line)
    assert m.groups()[:4] == ("bob@example.net", "mx.example.net[198.51.100.7]:25", "1.2", "sent")


def test_deferred_relay_none_and_orig_to_and_conn_use():
    t0 = 1000.0
    line = format_delivery("Q", recipient="x@example.net", orig_recipient="alias@example.net", relay="none",
                           times=DeliveryTimes(t0, t0 + 0.1, t0 + 0.1, None), dsn="4.4.1", status="deferred",
                           reason="connect to mx.example.net[198.51.100.7]:25: Connection timed out",
                           now=t0 + 30.1, conn_use=2)
    assert line == ("Q: to=<x@example.net>, orig_to=<alias@example.net>, relay=none, conn_use=2, delay=30, "
                    "delays=0.1/0/0/30, dsn=4.4.1, status=deferred "
                    "(connect to mx.example.net[198.51.100.7]:25: Connection timed out)")
    m = PFLOGSUMM.search(line)
    assert m.group(1) == "x@example.net" and m.group(2) == "none" and m.group(4) == "deferred"


def test_orig_to_same_as_recipient_is_omitted():
    line = format_delivery("Q", recipient="A@x", orig_recipient="a@X", relay="local", times=DeliveryTimes(0.0),
                           dsn="2.0.0", status="sent", reason="delivered to mailbox", now=0.0)
    assert "orig_to" not in line and "conn_use" not in line
    assert "delay=0, delays=0/0/0/0," in line


@given(st.floats(0, 1e6, allow_nan=False), st.floats(0, 10), st.floats(0, 10), st.floats(0, 100),
       st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="<>,"), min_size=1),
       st.sampled_from(["sent", "deferred", "bounced"]))
def test_pflogsumm_always_parses(t0, a, b, c, rcpt, status):
    times = DeliveryTimes(t0, t0 + a, t0 + a + b, t0 + a + b + c)
    line = format_delivery("Q", recipient=rcpt, relay="h[1.2.3.4]:25", times=times, dsn="2.0.0",
                           status=status, reason="x (y)", now=t0 + a + b + c + 1)
    m = PFLOGSUMM.search(line)
    assert m and m.group(1) == rcpt and m.group(4) == status
    assert re.fullmatch(r"\d+(\.\d+)?", m.group(3))
