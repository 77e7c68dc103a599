"""The error and retry delivery agents (Postfix error(8)).

NAME
    error -- bounce or defer every recipient with the next hop as reason

    XXX lives in local/ only because a new top-level package needs a
    pyproject.toml change; master maps the `error` command here.

SYNOPSIS
    python -I -m local.error -c CONFIG_DIR -s error|retry -t unix   (started by master)

DESCRIPTION
    Serves the `delivery` protocol (docs/internals.md).  The next hop is
    the reason text, as Postfix's `error:5.1.1 User unknown` transport
    values and fulmar.resolve's routes give it; a leading "X.Y.Z " is the
    enhanced status code.  Running as the `retry` service (master.cf
    `retry unix ... error`) every recipient is deferred (default 4.3.0),
    otherwise bounced (default 5.0.0), as error(8) decides by its service
    name.  Logs `to=<...>, relay=none, ..., status=bounced (reason)`.
"""

from __future__ import annotations

import asyncio
import re
import time

from fulmar import log
from fulmar.ipc import channel as ipc
from fulmar.ipc.frames import KIND_ATTR
from fulmar.smtp import delivery_log

PROTOCOL = "delivery"
_DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\s+")


def outcome(nexthop: str, retry: bool) -> tuple[str, str, str]:
    """(status, dsn, reason) for one recipient."""
    text = nexthop.strip()
    m = _DSN_RE.match(text)
    dsn = "4.3.0" if retry else "5.0.0"
    if m:
        dsn = "%s.%s.%s" % m.groups()
        text = text[m.end():]
        if retry and dsn[0] == "5":
            dsn = "4" + dsn[1:]
        elif not retry and dsn[0] == "4":
            dsn = "5" + dsn[1:]
    return ("deferred" if retry else "bounced"), dsn, text or "delivery failed"


async def serve(ctx) -> None:
    retry = ctx.service == "retry"

    async def handle(ch) -> None:
        try:
            while True:
                frame = await ch.recv(timeout=None)
                if frame is None or frame.kind != KIND_ATTR:
                    break
                req = frame.attrs
                handoff = time.time()
                status, dsn, reason = outcome(str(req.get("nexthop", "")), retry)
                results = []
                for r in req.get("recipients") or []:
                    log.info("%s", delivery_log.format_delivery(
                        req.get("queue_id", ""), recipient=r.get("address", ""),
                        orig_recipient=r.get("orig_address", ""), relay="none",
                        times=delivery_log.DeliveryTimes(
                            arrival=req.get("arrival_time", handoff), active=req.get("qmgr_time"),
                            handoff=handoff),
                        dsn=dsn, status=status, reason=reason, now=time.time()))
                    results.append({"offset": r.get("offset"), "status": status, "dsn": dsn,
                                    "reason": reason, "relay": "none"})
                await ch.send_attr({"id": req.get("id"), "results": results})
        except (ipc.ChannelError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            await ch.close()

    servers = [await ipc.serve(sock, protocol=PROTOCOL, handler=handle) for sock in ctx.listeners]
    ctx.ready()
    ctx.exit_when_idle(servers)
    await ctx.stopping.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    from fulmar import daemon
    daemon.main("error", serve, background=True)
