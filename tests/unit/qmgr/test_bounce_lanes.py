"""qmgr.bounce_client: one message's requests in order, different
messages' requests in parallel (their fsyncs overlap in the bounce daemon)."""
from __future__ import annotations

import asyncio

from fulmar.ipc import channel
from qmgr import bounce_client as B


def _client(daemon_context):
    ctx, _qdir = daemon_context("qmgr")
    return B.BounceClient(ctx), ctx.service_path("bounce")


def _ids_in_distinct_lanes(client, n):
    ids, lanes = [], set()
    for i in range(1000):
        qid = "4Xk2Lm1Qz7z9v%02d" % i
        lane = id(client.lane(qid))
        if lane not in lanes:
            lanes.add(lane)
            ids.append(qid)
        if len(ids) == n:
            return ids
    raise AssertionError("not enough lanes")


async def test_messages_in_parallel_one_message_in_order(daemon_context):
    client, path = _client(daemon_context)
    a, b = _ids_in_distinct_lanes(client, 2)
    seen = []                       # (connection number, queue_id, n)
    both_waiting = asyncio.Event()
    waiting = set()
    conns = iter(range(100))

    async def handler(ch):
        me = next(conns)
        while True:
            attrs = await ch.recv_attr()
            seen.append((me, attrs["queue_id"], attrs["n"]))
            waiting.add(attrs["queue_id"])
            if len(waiting) >= 2:
                both_waiting.set()
            # Nothing is answered until requests for both messages are in:
            # a client that sends one request at a time never gets here.
            await asyncio.wait_for(both_waiting.wait(), 5)
            await ch.send_attr({"id": attrs["id"], "status": "ok"})

    server = await channel.serve(path, B.PROTOCOL, handler)
    try:
        results = await asyncio.gather(*(client.append("defer", qid, {"n": n})
                                         for n in range(3) for qid in (a, b)))
        assert all(results)
        for qid in (a, b):
            mine = [(c, n) for c, q, n in seen if q == qid]
            assert [n for _, n in mine] == [0, 1, 2]          # in order
            assert len({c for c, _ in mine}) == 1               # on one channel
        assert len({c for c, _, _ in seen}) == 2
    finally:
        await client.close()
        server.close()


async def test_waiting_counts_the_requests_not_answered_yet(daemon_context):
    # qmgr stops taking new mail while this is high (manager.BOUNCE_BACKLOG).
    client, path = _client(daemon_context)
    ids = _ids_in_distinct_lanes(client, 3)
    answer = asyncio.Event()
    arrived = []

    async def handler(ch):
        while True:
            attrs = await ch.recv_attr()
            arrived.append(attrs["queue_id"])
            await answer.wait()
            await ch.send_attr({"id": attrs["id"], "status": "ok"})

    server = await channel.serve(path, B.PROTOCOL, handler)
    try:
        calls = asyncio.gather(*(client.append("defer", qid, {}) for qid in ids),
                               client.append("defer", ids[0], {}))
        for _ in range(200):
            if len(arrived) == 3:
                break
            await asyncio.sleep(0.01)
        assert client.waiting == 4          # three on the wire, one behind its lane's lock
        answer.set()
        assert all(await calls)
        assert client.waiting == 0
    finally:
        server.close()
        await client.close()
