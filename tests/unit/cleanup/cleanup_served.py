"""A CleanupService serving on a Unix socket, for the cleanup tests."""
from __future__ import annotations

import contextlib

from fulmar.ipc import channel
from cleanup import service as S


@contextlib.asynccontextmanager
async def served(daemon_context, tmp_path):
    """A CleanupService serving on a socket: (svc, qdir, path); the
    server and the commit threads are shut down however the test ends."""
    ctx, qdir = daemon_context("cleanup", "myhostname = mx.example.com\n")
    svc = S.CleanupService(ctx)
    path = str(tmp_path / "cleanup.sock")
    server = await channel.serve(path, S.PROTOCOL, svc.handle)
    try:
        yield svc, qdir, path
    finally:
        server.close()
        svc.syncer.close()
