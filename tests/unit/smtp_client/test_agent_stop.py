"""smtp_client.deliver.Agent: a graceful stop answers or never starts.

On reload or stop, idle channels from qmgr are closed at once (qmgr retries
on a fresh connection, to the new generation); a delivery in progress is
finished and answered, and then its channel is closed.  Before this, the
agent exited with deliveries in flight: qmgr deferred them with "unknown
mail transport error" and delivered them a second time.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from fulmar.ipc import channel
from smtp_client import deliver as D


class FakeChannel:
    """Frames from a queue; abort()/close() end recv() like a closed socket."""

    def __init__(self):
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.sent: list[dict] = []
        self.closed = False

    async def recv(self, timeout=None):
        item = await self.inbox.get()
        if item is None:
            raise channel.ChannelClosed("connection closed")
        return SimpleNamespace(kind="A", attrs=item)

    async def send_attr(self, attrs):
        assert not self.closed, "reply on a closed channel"
        self.sent.append(attrs)

    def abort(self):
        self.closed = True
        self.inbox.put_nowait(None)

    async def close(self):
        self.abort()


def make_agent():
    settings = D.Settings(myhostname="me.example.com", helo_name="me.example.com",
                          tls_level="none", randomize_addresses=False)
    return D.Agent(settings, resolver=None, queue_dir="/q", qfile=SimpleNamespace())


async def test_stop_closes_idle_and_finishes_busy_channels():
    agent = make_agent()
    release = asyncio.Event()

    async def deliver(req):
        await release.wait()
        return [{"offset": 1, "status": "sent", "dsn": "2.0.0", "reason": "ok", "relay": "x"}]

    agent.deliver = deliver
    idle, busy = FakeChannel(), FakeChannel()
    handlers = [asyncio.create_task(agent.handle_channel(ch)) for ch in (idle, busy)]
    busy.inbox.put_nowait({"request": "deliver", "id": 7, "recipients": [{"offset": 1}]})
    for _ in range(5):
        await asyncio.sleep(0)
    agent.stop()
    assert idle.closed and not busy.closed         # the delivery goes on
    waiter = asyncio.create_task(agent.wait_idle())
    await asyncio.sleep(0)
    assert not waiter.done()
    release.set()
    await asyncio.wait_for(waiter, 5)
    await asyncio.gather(*handlers)
    assert busy.sent == [{"id": 7, "results": [{"offset": 1, "status": "sent", "dsn": "2.0.0",
                                                  "reason": "ok", "relay": "x"}]}]
    assert busy.closed and idle.sent == []


async def test_request_read_after_stop_closed_its_channel_is_not_delivered():
    # The request was already received when stop() closed the idle channel:
    # qmgr gets no reply and sends it again elsewhere, so it must not be
    # delivered here as well (a reload during a stream delivered a message
    # twice this way).
    agent = make_agent()
    delivered = []

    async def deliver(req):
        delivered.append(req["id"])
        return []

    agent.deliver = deliver
    ch = FakeChannel()
    ch.inbox.put_nowait({"request": "deliver", "id": 9, "recipients": []})
    ch.closed = True                      # what stop()'s abort() left behind
    await asyncio.wait_for(agent.handle_channel(ch), 5)
    assert delivered == [] and ch.sent == []
