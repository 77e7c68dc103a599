"""Loopback addresses and ports for integration tests.

Every test "host" gets its own address in 127.0.0.0/8 so that two peers can
listen on the same port number (Fulmar's SMTP client connects to one port,
``smtp_tcp_port``, on every MX host), and so that tests running at the same
time -- in other xdist workers or in other pytest sessions on the machine --
never meet.

Interface:
    alloc = Allocator()            # one per process (see ALLOCATOR)
    alloc.host() -> "127.x.y.z"    # a fresh address, never handed out twice
    alloc.port(*hosts) -> int      # a TCP+UDP port free on every given host
    wait_tcp(host, port, timeout)  # until something accepts, else TimeoutError
    wait_bound(host, port, timeout)  # until something listens (no connection made)

How uniqueness holds without a shared registry: an address is *claimed* by
binding a UDP socket to (address, CLAIM_PORT) and keeping it open for the
life of the process.  CLAIM_PORT is above Linux's ephemeral range, so the
kernel never hands it out by itself; a second process that wants the same
address gets EADDRINUSE and moves on.  The start octet is derived from the
PID only to make such collisions rare, not to make them impossible.

Ports come from the kernel (bind to port 0) and are checked on every host
the caller names, for TCP and UDP (knot listens on both).

Failure: ``host()`` raises RuntimeError when no address can be claimed
after trying the whole 127.16.0.0 - 127.254.255.254 space once.
"""
from __future__ import annotations

import os
import socket
import threading
import time

# Above net.ipv4.ip_local_port_range's default top (60999): never auto-assigned.
CLAIM_PORT = 61999
FIRST_OCTET = 16          # 127.0.x.x .. 127.15.x.x are left to humans and recipes
LAST_OCTET = 254


class Allocator:
    def __init__(self, seed: int | None = None) -> None:
        seed = os.getpid() if seed is None else seed
        span = LAST_OCTET - FIRST_OCTET + 1
        self._start = (seed % span) * 65536
        self._next = 0
        self._span = span * 65536
        self._claims: list[socket.socket] = []
        self._lock = threading.Lock()

    def _addr(self, n: int) -> str | None:
        n = (self._start + n) % self._span
        x, rest = divmod(n, 65536)
        y, z = divmod(rest, 256)
        if z in (0, 255):     # keep clear of network/broadcast-looking addresses
            return None
        return f"127.{FIRST_OCTET + x}.{y}.{z}"

    def host(self) -> str:
        with self._lock:
            while self._next < self._span:
                addr = self._addr(self._next)
                self._next += 1
                if addr is None:
                    continue
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.bind((addr, CLAIM_PORT))
                except OSError:
                    s.close()
                    continue
                self._claims.append(s)
                return addr
        raise RuntimeError("no free loopback address left to claim")

    def port(self, *hosts: str) -> int:
        hosts = hosts or ("127.0.0.1",)
        for _ in range(200):
            with socket.socket() as s:
                s.bind((hosts[0], 0))
                port = s.getsockname()[1]
            if all(port_is_free(h, port) for h in hosts):
                return port
        raise RuntimeError(f"no port free on all of {hosts}")


def port_is_free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def wait_tcp(host: str, port: int, timeout: float = 10.0, alive=None) -> None:
    """Wait until (host, port) accepts a TCP connection.

    ``alive`` is an optional callable; when it returns False the wait stops
    early (the server process died) with RuntimeError.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"server for {host}:{port} exited before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")
        time.sleep(0.05)


def wait_bound(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until someone listens on TCP (host, port), without connecting
    (a probe connection would show up in the server's log)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")
        time.sleep(0.05)


# One allocator per process: xdist workers are separate processes.
ALLOCATOR = Allocator()
