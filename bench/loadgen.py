"""bench/loadgen.py: the bench's own asyncio load tools (what smtp-source/smtp-sink lack).

Interface
    latency_run(smtpd_port, sink_port, count, timeout, tag, sink) -> list[(total, accepted)]
        a timestamping sink on sink_port and a client that submits `count`
        messages one at a time to smtpd_port, each waiting for the previous
        one to arrive at the sink; per message, seconds from submission to
        arrival and from submission to the 250 that accepts it.
        Submission starts when the client connects; arrival is the end of
        DATA at the sink (before its 250).  sink is where the sink runs:
        PROCESS (default) in a process of its own, LOOP on the client's
        event loop (below).
    Arrivals().expect(key) -> future; .arrived(key, when)
        the futures a client waits on, one per message key.
    await SinkProcess.start(port, arrivals) -> sink; await sink.close()
        the sink in a child process (`python3 loadgen.py sink PORT`): it
        writes "KEY TIME" per arrival to its stdout, read here on the
        running loop; closing its stdin ends it.  LoopSink: the same on
        the running loop.
    SessionHolder().open(port, count, timeout) -> held
        opens `count` SMTP sessions (CONNECT_BATCH at a time), reads each
        banner and sends EHLO, then leaves them idle; held is how many got a
        220 banner and a 250 EHLO reply.  .close() closes them all.

The sink speaks just enough SMTP for Postfix's and Fulmar's smtp clients
(EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT).  Arrival and submission
are both time.monotonic(), one clock for every process on the machine.

Why the sink has a process of its own: a destination is another machine.
On the client's event loop, the sink's work for a delivery that comes
while the client waits for its 250 or QUIT reply (an MTA that delivers
sooner, over a kept connection, hits that) runs ahead of the client's own
reads (a prototype in session 11 measured Fulmar's end of DATA +125-158
us over Postfix's that way, +73-88 with the sink apart; in `make bench`
the ratio moved by less than the noise: docs/performance.md, item 46).
`make bench` reports both for now ("latency p50" and "latency p50, sink
in client loop"), so the change shows next to earlier sessions' numbers.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable

CONNECT_BATCH = 200        # sessions opened at once (stays under the listen backlog)
PROCESS, LOOP = "process", "loop"       # where latency_run's sink runs
SINK_START_TIMEOUT = 10.0  # seconds for the sink process to report that it listens


class _Sink(asyncio.Protocol):
    def __init__(self, arrived: Callable[[str, float], None], live: set | None = None):
        self.arrived = arrived      # called with (X-Bench-Id, time) per message
        self.live = live            # open connections, closed at the end of a run
        self.buf = b""
        self.in_data = False
        self.body: list[bytes] = []

    def connection_made(self, transport):
        self.t = transport
        if self.live is not None:
            self.live.add(transport)
        transport.write(b"220 sink.bench.test ESMTP\r\n")

    def connection_lost(self, exc):
        if self.live is not None:
            self.live.discard(self.t)

    def data_received(self, data: bytes):
        self.buf += data
        while True:
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                now = time.monotonic()
                message, self.buf = self.buf[:end], self.buf[end + 5:]
                self.in_data = False
                self._arrived(message, now)
                self.t.write(b"250 2.0.0 Ok: queued\r\n")
                continue
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                return
            line, self.buf = self.buf[:nl], self.buf[nl + 2:]
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.t.write(b"250-sink.bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                self.in_data = True
                # the message body may start in the same read
                self.buf = b"\r\n" + self.buf
                self.t.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                self.t.write(b"221 2.0.0 Bye\r\n")
                self.t.close()
                return
            else:
                self.t.write(b"250 2.0.0 Ok\r\n")

    def _arrived(self, message: bytes, now: float):
        marker = message.find(b"X-Bench-Id: ")
        if marker < 0:
            return
        self.arrived(message[marker + 12:message.find(b"\r\n", marker)].decode(), now)


class Arrivals:
    """The futures that clients wait on, one per message key."""

    def __init__(self):
        self.waiters: dict[str, asyncio.Future] = {}

    def expect(self, key: str) -> asyncio.Future:
        fut = self.waiters[key] = asyncio.get_running_loop().create_future()
        return fut

    def arrived(self, key: str, when: float) -> None:
        fut = self.waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(when)


class SinkProcess:
    """A _Sink in a child process; its arrivals reach `arrivals` here."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.Task):
        self.proc = proc
        self.reader = reader

    @classmethod
    async def start(cls, port: int, arrivals: Arrivals) -> "SinkProcess":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "sink", str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), SINK_START_TIMEOUT)
        except asyncio.TimeoutError:
            ready = b""
        if ready != b"ready\n":
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise ConnectionError("sink process on port %d did not start" % port)
        return cls(proc, asyncio.get_running_loop().create_task(cls._read(proc, arrivals)))

    @staticmethod
    async def _read(proc: asyncio.subprocess.Process, arrivals: Arrivals) -> None:
        while line := await proc.stdout.readline():
            key, when = line.split()
            arrivals.arrived(key.decode(), float(when))

    async def close(self) -> None:
        # EOF on its stdin ends the child; it closes the connections an MTA
        # keeps for reuse, as the LOOP sink does at the end of a run.
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()


async def _sink_main(port: int) -> None:
    """The child's side of SinkProcess: serve until stdin reaches EOF."""
    loop = asyncio.get_running_loop()

    def arrived(key: str, when: float) -> None:
        os.write(1, b"%s %r\n" % (key.encode(), when))

    server = await loop.create_server(lambda: _Sink(arrived), "127.0.0.1", port,
                                      reuse_address=True)
    done = loop.create_future()

    def stdin_readable() -> None:
        if not os.read(0, 4096) and not done.done():
            done.set_result(None)

    loop.add_reader(0, stdin_readable)
    os.write(1, b"ready\n")
    await done
    server.close()


async def _expect(reader: asyncio.StreamReader, code: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise ConnectionError("unexpected reply %r" % line)
            return line


async def _submit(port: int, key: str) -> tuple[float, float]:
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _expect(reader, b"220")
        writer.write(b"EHLO client.bench.test\r\n")
        await _expect(reader, b"250")
        writer.write(b"MAIL FROM:<bench@bench.test>\r\n")
        await _expect(reader, b"250")
        writer.write(b"RCPT TO:<sink@remote.test>\r\n")
        await _expect(reader, b"250")
        writer.write(b"DATA\r\n")
        await _expect(reader, b"354")
        body = (b"From: bench@bench.test\r\nTo: sink@remote.test\r\nSubject: latency\r\n"
                b"X-Bench-Id: " + key.encode() + b"\r\n\r\n" + b"x" * 72 + b"\r\n") * 1
        body += (b"y" * 78 + b"\r\n") * 12
        writer.write(body + b".\r\n")
        await _expect(reader, b"250")
        t250 = time.monotonic()
        writer.write(b"QUIT\r\n")
        await reader.readline()
    finally:
        writer.close()
    return t0, t250


async def timed_message(smtpd_port: int, key: str, arrivals: Arrivals,
                        timeout: float) -> tuple[float, float]:
    """Submit one message and wait for it at a sink reporting to arrivals:
    (submission -> arrival, submission -> the 250 after DATA), seconds."""
    fut = arrivals.expect(key)
    t0, t250 = await _submit(smtpd_port, key)
    arrived = await asyncio.wait_for(fut, timeout)
    return arrived - t0, t250 - t0


class LoopSink:
    """A _Sink on the running loop, the client's (LOOP); SinkProcess's interface."""

    def __init__(self, server: asyncio.AbstractServer, live: set):
        self.server = server
        self.live = live

    @classmethod
    async def start(cls, port: int, arrivals: Arrivals) -> "LoopSink":
        live: set = set()
        server = await asyncio.get_running_loop().create_server(
            lambda: _Sink(arrivals.arrived, live), "127.0.0.1", port, reuse_address=True)
        return cls(server, live)

    async def close(self) -> None:
        self.server.close()
        # A connection the MTA keeps for reuse (Fulmar's smtp client does,
        # for smtp_connection_cache_time_limit) is closed here rather than
        # waited for: the next run starts at once, on a fresh connection.
        for transport in list(self.live):
            transport.close()
        await self.server.wait_closed()


async def _latency(smtpd_port: int, sink_port: int, count: int, timeout: float,
                   tag: str, sink: str) -> list[tuple[float, float]]:
    arrivals = Arrivals()
    opened = await (SinkProcess if sink == PROCESS else LoopSink).start(sink_port, arrivals)
    try:
        return [await timed_message(smtpd_port, "%s-%d" % (tag, n), arrivals, timeout)
                for n in range(count)]
    finally:
        await opened.close()


def latency_run(smtpd_port: int, sink_port: int, count: int, timeout: float = 30.0,
                tag: str = "lat", sink: str = PROCESS) -> list[tuple[float, float]]:
    if sink not in (PROCESS, LOOP):
        raise ValueError("sink must be %r or %r" % (PROCESS, LOOP))
    return asyncio.run(_latency(smtpd_port, sink_port, count, timeout, tag, sink))


async def _open_one(port: int, timeout: float):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        await asyncio.wait_for(_expect(reader, b"220"), timeout)
        writer.write(b"EHLO idle.bench.test\r\n")
        await asyncio.wait_for(_expect(reader, b"250"), timeout)
        return writer, True
    except (OSError, ConnectionError, asyncio.TimeoutError):
        return writer, False


class SessionHolder:
    """Keeps an event loop (in the calling thread) and the idle sessions on it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.writers: list[asyncio.StreamWriter] = []

    def open(self, port: int, count: int, timeout: float) -> int:
        async def go():
            held = 0
            for start in range(0, count, CONNECT_BATCH):
                batch = min(CONNECT_BATCH, count - start)
                results = await asyncio.gather(*(_open_one(port, timeout) for _ in range(batch)))
                for r in results:
                    if r is None:
                        continue
                    self.writers.append(r[0])
                    held += r[1]
            return held
        return self.loop.run_until_complete(go())

    def close(self) -> None:
        async def go():
            for w in self.writers:
                w.close()
            await asyncio.sleep(0.2)
        self.loop.run_until_complete(go())
        self.writers.clear()
        self.loop.close()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "sink":
        sys.exit("usage: loadgen.py sink PORT")
    try:
        asyncio.run(_sink_main(int(sys.argv[2])))
    except OSError as exc:
        sys.exit("loadgen.py sink: %s" % exc)
