"""bench/loadgen.py's latency run against a fake relay that keeps its
connection to the sink for reuse, as Fulmar's smtp client does, with the
sink on the client's loop and in a process of its own.

The relay runs on its own event loop in a thread (latency_run runs its
own); everything is on 127.0.0.1.
"""

import asyncio
import socket
import threading

import pytest

from bench_modules import load

loadgen = load("loadgen")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CachingRelay:
    """Accepts one message per connection and relays it to the sink on one
    connection it keeps open afterwards; records how those connections ended."""

    def __init__(self, sink_port: int):
        self.sink_port = sink_port
        self.cached = None                  # (reader, writer) to the sink
        self.sink_connections = 0
        self.closed_by_sink = 0
        self.loop = None
        self.stopping = None
        self.ready = threading.Event()
        self.port = 0

    async def _relay(self, body: bytes) -> None:
        if self.cached is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.sink_port)
            self.sink_connections += 1
            await loadgen._expect(reader, b"220")
            writer.write(b"EHLO relay.test\r\n")
            await loadgen._expect(reader, b"250")
            self.cached = (reader, writer)
            asyncio.get_running_loop().create_task(self._watch(reader))
        reader, writer = self.cached
        writer.write(b"MAIL FROM:<a@test>\r\nRCPT TO:<b@test>\r\nDATA\r\n")
        for code in (b"250", b"250", b"354"):
            await loadgen._expect(reader, code)
        writer.write(body + b".\r\n")
        await loadgen._expect(reader, b"250")

    async def _watch(self, reader) -> None:
        # The relay never closes the cached connection itself; only an EOF
        # from the sink ends it here.
        while not reader.at_eof():
            await asyncio.sleep(0.01)
        self.closed_by_sink += 1
        self.cached = None

    async def _client(self, reader, writer) -> None:
        writer.write(b"220 relay.test ESMTP\r\n")
        body = b""
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go\r\n")
                while not body.endswith(b"\r\n.\r\n"):
                    body += await reader.read(65536)
                await self._relay(body[:-3])
                body = b""
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        await self.stopping.wait()
        server.close()

    def start(self) -> None:
        # asyncio.run cancels what is left (the watcher) when _main returns.
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(5)


def _latency_run(*args, **kw):
    """latency_run in a thread: a run that never returns (it waited for a
    connection the relay keeps) fails the test instead of hanging it."""
    out = []
    t = threading.Thread(target=lambda: out.append(loadgen.latency_run(*args, **kw)), daemon=True)
    t.start()
    t.join(30)
    assert out, "latency_run did not return: it waits for the relay's cached connection"
    return out[0]


def _ask(relay, fn):
    return asyncio.run_coroutine_threadsafe(fn(), relay.loop).result(5)


@pytest.mark.parametrize("sink", [loadgen.PROCESS, loadgen.LOOP])
def test_a_run_closes_the_connection_the_relay_keeps_and_the_next_run_gets_a_fresh_one(sink):
    sink_port = _free_port()
    relay = CachingRelay(sink_port)
    relay.start()
    try:
        first = _latency_run(relay.port, sink_port, 3, timeout=5, tag="one", sink=sink)
        assert len(first) == 3
        assert all(total > 0 and accepted > 0 for total, accepted in first)

        async def state():
            for _ in range(200):
                if relay.closed_by_sink:
                    break
                await asyncio.sleep(0.01)
            return relay.sink_connections, relay.closed_by_sink

        # All three messages went over one connection, and the sink ended it
        # when the run was over (the relay would have kept it).
        assert _ask(relay, state) == (1, 1)
        second = _latency_run(relay.port, sink_port, 2, timeout=5, tag="two", sink=sink)
        assert len(second) == 2
        assert _ask(relay, state)[0] == 2
    finally:
        relay.stop()


def test_the_process_sink_reports_arrivals_on_the_clients_clock():
    """The arrival the sink process reports (its own time.monotonic) and
    the 250 the client saw are counted from the same submission start."""
    sink_port = _free_port()
    relay = CachingRelay(sink_port)
    relay.start()
    try:
        samples = _latency_run(relay.port, sink_port, 4, timeout=5, tag="clock",
                               sink=loadgen.PROCESS)
    finally:
        relay.stop()
    # CachingRelay relays before its 250, so the arrival precedes the 250;
    # a sink on another clock (time.time, say) would be off by far more.
    for total, accepted in samples:
        assert 0 < total <= accepted < 5


def test_a_sink_process_that_cannot_listen_is_an_error_not_a_hang():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def go():
            await loadgen.SinkProcess.start(port, loadgen.Arrivals())

        with pytest.raises(ConnectionError):
            asyncio.run(go())


def test_an_unknown_sink_mode_is_refused():
    with pytest.raises(ValueError):
        loadgen.latency_run(1, 2, 1, sink="elsewhere")
