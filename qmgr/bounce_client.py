"""qmgr's client for the bounce daemon (`private/bounce`).

NAME
    qmgr.bounce_client -- append to defer/bounce logs, flush DSNs

DESCRIPTION
    LANES channels; all requests for one message go through the same one,
    one at a time under its lock, so that they reach the bounce daemon in
    the order qmgr made them (a defer log removed at activation is never
    removed after the new reasons were appended). Different messages use
    different lanes, so their appends (each an fsync in the bounce daemon)
    overlap: with one channel, deferring 100,000 messages to a dead
    destination ran at the speed of one fsync after another.
    Every method returns True on success and False when the bounce daemon
    could not do it; qmgr then keeps the recipient or message in the
    queue, so a failure here delays mail but never loses it.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib

from fulmar import log
from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import KIND_ATTR

PROTOCOL = "bounce"


LANES = 4


class _Lane:
    __slots__ = ("ch", "lock")

    def __init__(self) -> None:
        self.ch = None
        self.lock = asyncio.Lock()

    async def close(self) -> None:
        if self.ch is not None:
            try:
                await self.ch.close()
            except Exception:
                pass
            self.ch = None


class BounceClient:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.lanes = [_Lane() for _ in range(LANES)]
        self.ids = itertools.count(1)
        self.timeout = ctx.cfg.get("ipc_timeout")
        self.waiting = 0            # calls not answered yet (qmgr's backlog check)

    def lane(self, queue_id: str) -> _Lane:
        """The lane of a message: the same for all its requests."""
        return self.lanes[zlib.crc32(queue_id.encode("ascii", "replace")) % LANES]

    async def _call(self, request: dict) -> dict | None:
        self.waiting += 1
        try:
            return await self._call_lane(request)
        finally:
            self.waiting -= 1

    async def _call_lane(self, request: dict) -> dict | None:
        lane = self.lane(str(request.get("queue_id", "")))
        async with lane.lock:
            for _attempt in (1, 2):
                try:
                    if lane.ch is None:
                        lane.ch = await ipc.connect(self.ctx.service_path("bounce"),
                                                    protocol=PROTOCOL, timeout=self.timeout)
                    req_id = next(self.ids)
                    await lane.ch.send_attr(dict(request, id=req_id))
                    frame = await lane.ch.recv(timeout=self.timeout)
                    if frame is None or frame.kind != KIND_ATTR or frame.attrs.get("id") != req_id:
                        raise ipc.ChannelError("bad reply from bounce service")
                    return frame.attrs
                except (OSError, ipc.ChannelError, asyncio.TimeoutError) as exc:
                    await lane.close()
                    error = exc
            log.warning("%s: bounce service: %s", request.get("queue_id", "qmgr"), error or "timeout")
            return None

    async def append(self, which: str, queue_id: str, entry: dict) -> bool:
        reply = await self._call(dict(entry, request="append", log=which, queue_id=queue_id))
        return bool(reply) and reply.get("status") == "ok"

    async def flush(self, queue_id: str, queue_name: str, path: str, sender: str) -> bool:
        """Turn bounce/QID into a non-delivery notice (queued through cleanup)."""
        reply = await self._call({"request": "flush", "queue_id": queue_id, "sender": sender,
                                  "queue_name": queue_name, "path": path})
        return bool(reply) and reply.get("status") == "ok"

    async def warn(self, queue_id: str, queue_name: str, path: str, sender: str) -> bool:
        """Turn defer/QID into a delay notice (delay_warning_time)."""
        reply = await self._call({"request": "warn", "queue_id": queue_id, "sender": sender,
                                  "queue_name": queue_name, "path": path})
        return bool(reply) and reply.get("status") == "ok"

    async def success(self, queue_id: str, queue_name: str, path: str, sender: str) -> bool:
        """Turn trace/QID into a delivery report for NOTIFY=SUCCESS recipients."""
        reply = await self._call({"request": "success", "queue_id": queue_id, "sender": sender,
                                  "queue_name": queue_name, "path": path})
        return bool(reply) and reply.get("status") == "ok"

    async def remove(self, queue_id: str, which: str | None = None) -> bool:
        """Delete one log (bounce, defer, trace) of a message, or all three."""
        request = {"request": "remove", "queue_id": queue_id}
        if which:
            request["log"] = which
        reply = await self._call(request)
        return bool(reply) and reply.get("status") == "ok"

    async def close(self) -> None:
        for lane in self.lanes:
            await lane.close()
