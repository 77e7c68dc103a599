"""Channels from qmgr to delivery agents, one pool per transport.

NAME
    qmgr.transport -- send `deliver` requests to `private/<transport>`

DESCRIPTION
    Each connection carries one request at a time (the agent process serves
    many connections at once), so the number of open connections to a
    transport is the number of deliveries in flight. Idle connections are
    kept for reuse; a broken one is dropped and its request answered with
    TransportUnavailable, which qmgr turns into a deferral
    ("unknown mail transport error"), as Postfix does when an agent dies.
"""

from __future__ import annotations

import asyncio
import itertools
import os

from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import KIND_ATTR

PROTOCOL = "delivery"


class TransportUnavailable(Exception):
    """The agent could not be reached or died; the text is the defer reason."""


class TransportPool:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.idle: dict[str, list] = {}
        self.ids = itertools.count(1)
        self.connect_timeout = ctx.cfg.get("ipc_timeout")

    async def _get(self, transport: str, fresh: bool = False):
        pool = self.idle.setdefault(transport, [])
        while pool and not fresh:
            ch = pool.pop()
            if not ch.closed:
                return ch
        path = self.ctx.service_path(transport)
        if not os.path.exists(path):
            raise TransportUnavailable("mail transport unavailable")
        try:
            return await ipc.connect(path, protocol=PROTOCOL, timeout=self.connect_timeout)
        except (OSError, ipc.ChannelError, asyncio.TimeoutError):
            raise TransportUnavailable("mail transport unavailable") from None

    async def request(self, transport: str, request: dict) -> list:
        # An idle channel may lead to an agent that has since exited (reload,
        # stop, crash).  An agent that stops gracefully closes its idle
        # channels without starting what it had not read, so a pooled
        # channel that closes before the reply is retried once on a fresh
        # connection.  (After a kill -9 the job may have been under way: it
        # is then delivered again, as it would be after a deferral.)
        retry = bool(self.idle.get(transport))
        while True:
            ch = await self._get(transport, fresh=not retry)
            req_id = next(self.ids)
            frame = None
            try:
                await ch.send_attr(dict(request, id=req_id))
                frame = await ch.recv(timeout=None)
                if frame is None or frame.kind != KIND_ATTR or frame.attrs.get("id") != req_id:
                    raise ipc.ChannelError("bad reply from delivery agent")
                results = frame.attrs.get("results")
                if not isinstance(results, list):
                    raise ipc.ChannelError("reply without results")
            except (OSError, ipc.ChannelError, asyncio.TimeoutError) as exc:
                await _close(ch)
                if retry and frame is None and not isinstance(
                        exc, (ipc.ChannelTimeout, asyncio.TimeoutError)):
                    retry = False
                    continue
                raise TransportUnavailable("unknown mail transport error") from None
            self.idle.setdefault(transport, []).append(ch)
            return results

    async def close(self) -> None:
        for pool in self.idle.values():
            for ch in pool:
                await _close(ch)
        self.idle.clear()


async def _close(ch) -> None:
    try:
        await ch.close()
    except Exception:
        pass
