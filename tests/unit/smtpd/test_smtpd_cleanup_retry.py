"""smtpd.session.CleanupTransaction.open: a broken cleanup channel is retried.

After `postfix reload` (or a cleanup crash) smtpd's pooled channels lead to
a cleanup process that has exited; nothing was queued through them, so the
open is retried on fresh connections instead of answering 451.  A timeout
is not retried (it would double the wait).
"""
from __future__ import annotations

import pytest

from fulmar.ipc import channel
from smtpd.session import CLEANUP_OPEN_RETRIES, CleanupError, CleanupTransaction


class FakeChannel:
    def __init__(self, error=None, pending=False):
        self.error = error
        self.closed = False
        self.pending = pending          # a frame cleanup sent unasked ("bye")

    def next_id(self):
        return 1

    async def request(self, attrs, schema, timeout=None):
        if self.error is not None:
            raise self.error
        return {"id": 1, "status": "ok", "queue_id": "4jcdQID"}

    def abort(self):
        self.closed = True


class FakePool:
    timeout = 5.0

    def __init__(self, channels, idle=True):
        self.channels = list(channels)
        self.fresh: list[bool] = []
        self.has_idle = idle
        self.released = []

    async def acquire(self, fresh=False):
        self.fresh.append(fresh)
        return self.channels.pop(0), None     # no reserved queue ID

    def release(self, ch, healthy, reserved=None):
        self.released.append((ch, healthy))


async def test_broken_pooled_channel_is_retried_fresh():
    pool = FakePool([FakeChannel(channel.ChannelClosed("connection closed by peer")),
                     FakeChannel(channel.ChannelError("connection lost: [Errno 32] Broken pipe")),
                     FakeChannel()])
    assert await CleanupTransaction(pool).open({}) == "4jcdQID"
    assert pool.fresh == [False, True, True]
    assert [healthy for _, healthy in pool.released] == [False, False]


async def test_retries_are_bounded():
    errors = [FakeChannel(channel.ChannelClosed("closed")) for _ in range(CLEANUP_OPEN_RETRIES + 1)]
    pool = FakePool(errors + [FakeChannel()], idle=False)
    with pytest.raises(CleanupError):
        await CleanupTransaction(pool).open({})
    assert pool.fresh == [True] * (CLEANUP_OPEN_RETRIES + 1)


async def test_timeout_is_not_retried():
    pool = FakePool([FakeChannel(channel.ChannelTimeout("timeout")), FakeChannel()])
    with pytest.raises(CleanupError):
        await CleanupTransaction(pool).open({})
    assert pool.fresh == [False]


async def test_pool_keeps_a_reservation_with_its_channel_for_a_while(monkeypatch):
    from smtpd import session
    pool = session.CleanupPool("/nonexistent", 5.0)
    ch = FakeChannel()
    pool.release(ch, True, "4jcdRESERVED")
    assert await pool.acquire() == (ch, "4jcdRESERVED")
    pool.release(ch, True, "4jcdRESERVED")
    later = session.time.monotonic() + session.CLEANUP_RESERVATION_MAX_AGE + 1
    monkeypatch.setattr(session.time, "monotonic", lambda: later)
    assert await pool.acquire() == (ch, None)       # too old: a plain open


async def test_pool_drops_a_channel_on_which_cleanup_said_bye():
    from smtpd import session
    pool = session.CleanupPool("/nonexistent", 5.0)
    good, bye = FakeChannel(), FakeChannel(pending=True)
    pool.release(good, True, "4jcdRESERVED")
    pool.release(bye, True, "4jcdOTHER")
    assert await pool.acquire() == (good, "4jcdRESERVED")
    assert bye.closed
