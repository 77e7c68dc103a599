"""fulmar.ipc.channel over real Unix sockets in a temporary directory.

Every test runs on both event loops Fulmar uses (asyncio's and uvloop's).
Timeouts here are tenths of seconds: the behaviour under test is a timeout.
"""

import asyncio
import io
import os
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from fulmar import log
from fulmar.ipc import channel, frames, schema
from fulmar.ipc.channel import ChannelClosed, ChannelError, ChannelTimeout

try:
    import uvloop
except ImportError:         # pragma: no cover
    uvloop = None

SHORT = 0.2


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    if request.param == "uvloop" and uvloop is None:
        pytest.skip("uvloop not installed")
    factory = (uvloop.new_event_loop if request.param == "uvloop"
               else asyncio.new_event_loop)

    def runner(coro_fn, *args):
        return asyncio.run(asyncio.wait_for(coro_fn(*args), 20),
                           loop_factory=factory)
    return runner


@pytest.fixture
def logged():
    stream = io.StringIO()
    log.setup(None, "test", stream=stream)
    yield stream
    log.cli_setup("fulmar")


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "sock")


async def echo_handler(ch):
    """Reply to each request with its id; acknowledge record streams."""
    count = 0
    while True:
        frame = await ch.recv()
        if frame.kind == "A":
            if frame.attrs.get("request") == "check":
                schema.check_request("qmgr", frame.attrs)
            if frame.attrs.get("request") == "crash":
                raise RuntimeError("handler bug")
            await ch.send_attr({"id": frame.attrs.get("id"), "status": "ok",
                                "count": count})
            count = 0
        else:
            count += len(frame.data)


def test_hello_and_round_trips(run, path):
    async def main():
        server = await channel.serve(path, "qmgr", echo_handler)
        ch = await channel.connect(path, "qmgr", timeout=5)
        for _ in range(3):
            rid = ch.next_id()
            reply = await ch.request({"request": "flush", "id": rid},
                                     "qmgr.flush_reply")
            assert reply["id"] == rid
        await ch.send_record(b"B", b"x" * 1000)
        await ch.send_record(b"B", b"y" * 65536)
        reply = await ch.request({"request": "flush", "id": 9})
        assert reply["count"] == 1000 + 65536
        await ch.close()
        assert ch.closed
        server.close()
        await server.wait_closed()
        assert server.active == 0
    run(main)


def test_push_writes_at_once_and_flush_soon_otherwise(run, path):
    async def main():
        server = await channel.serve(path, "qmgr", echo_handler)
        ch = await channel.connect(path, "qmgr", timeout=5)
        await ch.send_attr({"request": "flush", "id": 1})
        assert ch._wbuf                 # queued for the next loop turn
        ch.push()
        # Handed to the kernel before this task yields.
        assert not ch._wbuf and ch._transport.get_write_buffer_size() == 0
        assert (await ch.recv_attr())["id"] == 1
        await ch.close()
        with pytest.raises(ChannelClosed):
            ch.push()
        server.close()
        await server.wait_closed()
    run(main)


def test_held_records_wait_for_the_next_frame(run, path):
    # hold=True: no end-of-iteration write; the records go out with the
    # next frame sent without hold (here the request), in one write.
    async def main():
        server = await channel.serve(path, "qmgr", echo_handler)
        ch = await channel.connect(path, "qmgr", timeout=5)
        await ch.send_attr({"request": "open"}, hold=True)     # attribute frames too
        await ch.send_record(b"S", b"a@b.test", hold=True)
        await ch.send_record(b"R", b"c@d.test", hold=True)
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(ch._wbuf) == 3       # still here after several loop turns
        await ch.send_attr({"request": "flush", "id": 1})
        for _ in range(5):
            await asyncio.sleep(0)
        assert not ch._wbuf             # written with the attribute frame
        assert (await ch.recv_attr())["id"] is None            # the held "open"
        reply = await ch.recv_attr()
        assert reply["id"] == 1 and reply["count"] == len(b"a@b.testc@d.test")
        await ch.close()
        server.close()
        await server.wait_closed()
    run(main)


def test_hello_protocol_mismatch(run, path):
    async def main():
        server = await channel.serve(path, "qmgr", echo_handler)
        with pytest.raises(ChannelError, match="protocol 'qmgr', expected "
                                               "'cleanup'"):
            await channel.connect(path, "cleanup", timeout=5)
        server.abort()
        await server.wait_closed()
    run(main)


def test_hello_version_mismatch_and_missing_hello(run, path):
    async def main():
        hellos = [frames.encode_attr({"protocol": "qmgr", "version": 2}),
                  frames.encode_attr({"protocol": "qmgr"}),
                  frames.encode_record(b"B", b"")]

        async def raw(reader, writer):
            writer.write(hellos.pop(0))
            await writer.drain()
            await reader.read()
            writer.close()
        server = await asyncio.start_unix_server(raw, path)
        with pytest.raises(ChannelError, match="unsupported qmgr protocol "
                                               "version 2"):
            await channel.connect(path, "qmgr", timeout=5)
        with pytest.raises(ChannelError, match='missing attribute "version"'):
            await channel.connect(path, "qmgr", timeout=5)
        with pytest.raises(ChannelError, match="expected an attribute"):
            await channel.connect(path, "qmgr", timeout=5)
        server.close()
    run(main)


def test_connect_failures(run, path, tmp_path):
    async def main():
        with pytest.raises(ChannelError, match="connect to .*: No such file"):
            await channel.connect(path, "qmgr", timeout=5)

        # A server that accepts but never says hello.
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        try:
            with pytest.raises(ChannelTimeout):
                await channel.connect(path, "qmgr", timeout=SHORT)
        finally:
            listener.close()
    run(main)


def raw_connect(path):
    """A blocking client: read the hello, return the socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


async def read_hello(sock):
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    dec = frames.FrameDecoder()
    got = []
    while not got:
        data = await loop.sock_recv(sock, 4096)
        assert data
        got = dec.feed(data)
    return got[0]


def test_oversized_frame_closes_only_that_connection(run, path, logged):
    async def main():
        loop = asyncio.get_running_loop()
        server = await channel.serve(path, "qmgr", echo_handler,
                                     log_name="public/qmgr")
        good = await channel.connect(path, "qmgr", timeout=5)
        bad = raw_connect(path)
        hello = await read_hello(bad)
        assert hello.attrs == {"protocol": "qmgr", "version": 1}
        # Only the header: the server must refuse before any payload.
        await loop.sock_sendall(bad, struct.pack(
            ">BI", ord("R"), frames.MAX_RECORD_PAYLOAD + 1))
        assert await loop.sock_recv(bad, 100) == b""     # closed by server
        bad.close()
        # The other client, and new clients, are still served.
        reply = await good.request({"request": "flush", "id": 1})
        assert reply["status"] == "ok"
        again = await channel.connect(path, "qmgr", timeout=5)
        assert (await again.request({"request": "flush", "id": 2}))["id"] == 2
        await again.close()
        await good.close()
        server.close()
        await server.wait_closed()
    run(main)
    lines = logged.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == ("postfix/test[%d]: warning: public/qmgr (pid %d): "
                        "record frame too large: %d bytes (limit %d)"
                        % (os.getpid(), os.getpid(),
                           frames.MAX_RECORD_PAYLOAD + 1,
                           frames.MAX_RECORD_PAYLOAD))


def test_garbage_and_bad_json_close_with_warning(run, path, logged):
    async def main():
        loop = asyncio.get_running_loop()
        server = await channel.serve(path, "qmgr", echo_handler)
        for junk in (b"GET / HTTP/1.0\r\n\r\n",
                     b"A\x00\x00\x00\x02[]",
                     b"A\x00\x00\x00\x09{\"a"):
            sock = raw_connect(path)
            await read_hello(sock)
            await loop.sock_sendall(sock, junk)
            if junk.endswith(b'"a'):
                sock.shutdown(socket.SHUT_WR)       # EOF inside a frame
            assert await loop.sock_recv(sock, 100) == b""
            sock.close()
        ch = await channel.connect(path, "qmgr", timeout=5)
        assert (await ch.request({"request": "flush", "id": 1}))["id"] == 1
        await ch.close()
        server.close()
        await server.wait_closed()
    run(main)
    text = logged.getvalue()
    assert "warning: qmgr (pid %d): unknown frame kind 0x47" % os.getpid() \
        in text
    assert "not a JSON object" in text
    assert "unexpected end of input inside a frame" in text
    assert text.count("\n") == 3


def test_schema_error_and_handler_bug_are_logged_and_survived(run, path,
                                                               logged):
    async def main():
        server = await channel.serve(path, "qmgr", echo_handler)
        ch = await channel.connect(path, "qmgr", timeout=5)
        await ch.send_attr({"request": "check", "id": 1})   # not a qmgr req.
        with pytest.raises(ChannelClosed):
            await ch.recv()
        ch = await channel.connect(path, "qmgr", timeout=5)
        await ch.send_attr({"request": "crash", "id": 1})
        with pytest.raises(ChannelError):
            await ch.recv()
        ch = await channel.connect(path, "qmgr", timeout=5)
        assert (await ch.request({"request": "flush", "id": 5}))["id"] == 5
        await ch.close()
        server.close()
        await server.wait_closed()
    run(main)
    text = logged.getvalue()
    assert 'warning: qmgr (pid %d): qmgr: unknown request "check"' \
        % os.getpid() in text
    assert "error: qmgr (pid %d): unexpected RuntimeError in qmgr handler: " \
        "handler bug (" % os.getpid() in text


def test_recv_timeouts(run, path, logged):
    async def main():
        async def silent(ch):
            await ch.recv()         # the server's own timeout applies
        server = await channel.serve(path, "qmgr", silent, timeout=SHORT)
        ch = await channel.connect(path, "qmgr", timeout=5)
        with pytest.raises(ChannelTimeout, match="timeout after"):
            await ch.recv(timeout=SHORT / 4)    # client gives up first
        # ... and the channel is still usable; then the server times out
        # and closes the connection.
        with pytest.raises(ChannelClosed):
            await ch.recv(timeout=5)
        await ch.close()
        server.close()
        await server.wait_closed()
    run(main)
    assert "warning: qmgr (pid %d): timeout after 0.2 seconds" % os.getpid() \
        in logged.getvalue()


def test_burst_of_records_is_batched(run, path):
    async def main():
        server = await channel.serve(path, "qmgr", echo_handler)
        ch = await channel.connect(path, "qmgr", timeout=5)
        writes = []

        class CountingTransport:
            def __init__(self, real):
                self.real = real

            def write(self, data):
                writes.append(len(data))
                self.real.write(data)

            def __getattr__(self, name):
                return getattr(self.real, name)
        ch._transport = CountingTransport(ch._transport)
        for _ in range(200):
            await ch.send_record(b"B", b"z" * 100)
        assert writes == []                     # nothing yet: buffered
        reply = await ch.request({"request": "flush", "id": 1})
        assert reply["count"] == 200 * 100
        assert len(writes) == 1
        # Large records go out in batches of about WRITE_BATCH bytes.
        writes.clear()
        for _ in range(64):
            await ch.send_record(b"B", b"q" * 65536)
        reply = await ch.request({"request": "flush", "id": 2})
        assert reply["count"] == 64 * 65536
        assert len(writes) <= 64 * 65536 // channel.WRITE_BATCH + 2
        await ch.close()
        server.close()
        await server.wait_closed()
    run(main)


def test_flow_control_with_a_slow_reader(run, path):
    async def main():
        received = []
        go = asyncio.Event()

        async def slow(ch):
            await go.wait()
            while True:
                frame = await ch.recv()
                if frame.kind == "A":
                    await ch.send_attr({"id": frame.attrs["id"]})
                    return
                received.append(frame.data[:1])
        server = await channel.serve(path, "qmgr", slow)
        ch = await channel.connect(path, "qmgr", timeout=5)

        async def send():
            for i in range(300):
                await ch.send_record(b"B", bytes([i % 256]) * 65536)
            await ch.flush()
        sender = asyncio.create_task(send())
        await asyncio.sleep(SHORT)
        assert not sender.done()        # held back by the socket's limit
        go.set()
        await sender
        reply = await ch.request({"request": "end", "id": 1})
        assert reply["id"] == 1
        assert received == [bytes([i % 256]) for i in range(300)]
        await ch.close()
        server.close()
        await server.wait_closed()
    run(main)


def test_peer_close_and_partial_frame(run, path):
    async def main():
        async def closer(ch):
            frame = await ch.recv()
            if frame.attrs.get("partial"):
                ch._transport.write(b"A\x00\x00\x00\x09{")
            # returning closes the connection
        server = await channel.serve(path, "qmgr", closer)
        ch = await channel.connect(path, "qmgr", timeout=5)
        await ch.send_attr({"id": 1})
        with pytest.raises(ChannelClosed):
            await ch.recv()
        with pytest.raises(ChannelClosed):      # and stays so
            await ch.recv()
        with pytest.raises(ChannelClosed):
            await ch.send_attr({"id": 2})
        ch = await channel.connect(path, "qmgr", timeout=5)
        await ch.send_attr({"partial": True})
        with pytest.raises(ChannelError, match="inside a frame") as info:
            await ch.recv()
        assert not isinstance(info.value, ChannelClosed)
        await ch.close()
        server.close()
        await server.wait_closed()
    run(main)


def test_serve_on_an_inherited_listening_socket(run, path):
    async def main():
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        listener.setblocking(False)
        server = await channel.serve(listener, "cleanup", echo_handler,
                                     log_name="private/cleanup")
        ch = await channel.connect(path, "cleanup", timeout=5)
        assert (await ch.request({"id": 4}))["id"] == 4
        await ch.close()
        server.close()
        await server.wait_closed()
    run(main)


def test_request_id_mismatch_and_record_instead_of_attr(run, path):
    async def main():
        async def wrong(ch):
            await ch.recv()
            await ch.send_attr({"id": 99})
            await ch.recv()
            await ch.send_record(b"B", b"")
            await ch.recv()
        server = await channel.serve(path, "qmgr", wrong)
        ch = await channel.connect(path, "qmgr", timeout=5)
        with pytest.raises(ChannelError, match="does not match"):
            await ch.request({"id": 1})
        with pytest.raises(ChannelError, match="expected an attribute"):
            await ch.request({"id": 2})
        await ch.close()
        server.abort()
        await server.wait_closed()
    run(main)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8))
def test_random_bytes_never_crash_the_server(tmp_path_factory, inputs):
    path = str(tmp_path_factory.mktemp("fuzz") / "sock")
    stream = io.StringIO()
    log.setup(None, "fuzz", stream=stream)

    async def main():
        loop = asyncio.get_running_loop()
        server = await channel.serve(path, "qmgr", echo_handler,
                                     timeout=SHORT)
        for data in inputs:
            sock = raw_connect(path)
            await read_hello(sock)
            await loop.sock_sendall(sock, data)
            sock.shutdown(socket.SHUT_WR)
            while await loop.sock_recv(sock, 65536):
                pass                        # replies, then the close
            sock.close()
        ch = await channel.connect(path, "qmgr", timeout=5)
        assert (await ch.request({"request": "flush", "id": 1}))["id"] == 1
        await ch.close()
        server.close()
        await server.wait_closed()
    try:
        asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        log.cli_setup("fulmar")
    # Whatever was logged is a warning, never an error or a traceback.
    for line in stream.getvalue().splitlines():
        assert line.startswith("postfix/fuzz[%d]: warning: " % os.getpid())
