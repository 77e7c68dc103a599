"""smtpd daemon entry point: `python -I -m smtpd -c DIR -s SERVICE -t inet`.

prepare() builds the TLS context (smtpd.tls) while the process is still
root, so that key files need not be readable by mail_owner.
serve() starts one asyncio server per inherited listening socket, reports
ready, and on SIGTERM stops accepting, lets in-flight sessions finish for
at most $smtpd_timeout (then answers 421 and closes them), and returns.
"""

from fulmar.version import require_python

require_python()

import asyncio  # noqa: E402

from fulmar import daemon  # noqa: E402
from smtpd.session import Service  # noqa: E402


def prepare(cfg):
    from fulmar import log
    from smtpd.tls import ServerTls

    def warn(level, fmt, *args):
        getattr(log, level)(fmt, *args)
    return ServerTls.from_config(cfg, warn)


async def serve(ctx: daemon.Context) -> None:
    svc = Service(ctx.cfg, ctx.service_path("cleanup"), tls=getattr(ctx, "prepared", None))
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(svc.protocol_factory, sock=sock) for sock in ctx.listeners]
    ctx.ready()
    await ctx.stopping.wait()
    for server in servers:
        server.close()
    await svc.drain(svc.timeout)
    for server in servers:
        try:
            async with asyncio.timeout(1.0):
                await server.wait_closed()
        except TimeoutError:
            pass


if __name__ == "__main__":
    daemon.main("smtpd", serve, prepare=prepare)
