"""qmgr.transport: a pooled channel to an agent that has exited is retried.

After `postfix reload` the delivery agents of the old generation close
their idle channels; a request that meets such a channel (closed before
any reply) goes once more over a fresh connection instead of deferring the
mail with "unknown mail transport error".
"""
from __future__ import annotations

import pytest

from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import KIND_ATTR
from qmgr import transport


class Frame:
    kind = KIND_ATTR

    def __init__(self, attrs):
        self.attrs = attrs


class FakeChannel:
    def __init__(self, fail=None):
        self.fail = fail
        self.closed = False
        self.sent = []

    async def send_attr(self, attrs):
        self.sent.append(attrs)

    async def recv(self, timeout=None):
        if self.fail is not None:
            raise self.fail
        return Frame({"id": self.sent[-1]["id"], "results": [{"offset": 1, "status": "sent"}]})

    async def close(self):
        self.closed = True


class Cfg:
    def get(self, name):
        return 5


class Ctx:
    cfg = Cfg()

    def service_path(self, name):
        return __file__          # exists


@pytest.fixture
def pool(monkeypatch):
    fresh = []

    async def connect(path, protocol, timeout):
        ch = fresh.pop(0)
        connected.append(ch)
        return ch

    connected: list = []
    monkeypatch.setattr(transport.ipc, "connect", connect)
    p = transport.TransportPool(Ctx())
    p.fresh, p.connected = fresh, connected
    return p


async def test_closed_pooled_channel_is_retried_on_a_fresh_one(pool):
    stale = FakeChannel(ipc.ChannelClosed("connection closed by peer"))
    pool.idle["smtp"] = [stale]
    pool.fresh.append(FakeChannel())
    results = await pool.request("smtp", {"request": "deliver"})
    assert results == [{"offset": 1, "status": "sent"}]
    assert stale.closed and len(pool.connected) == 1
    assert pool.idle["smtp"] == pool.connected        # the good one is kept


async def test_fresh_channel_failure_is_not_retried(pool):
    pool.fresh += [FakeChannel(ipc.ChannelClosed("closed")), FakeChannel()]
    with pytest.raises(transport.TransportUnavailable, match="unknown mail transport error"):
        await pool.request("smtp", {"request": "deliver"})
    assert len(pool.connected) == 1


async def test_bad_reply_is_not_retried(pool):
    class Bad(FakeChannel):
        async def recv(self, timeout=None):
            return Frame({"id": -1, "results": []})
    pool.idle["smtp"] = [Bad()]
    pool.fresh.append(FakeChannel())
    with pytest.raises(transport.TransportUnavailable):
        await pool.request("smtp", {"request": "deliver"})
    assert not pool.connected
