"""A programmable SMTP peer for integration tests.

The sink runs in-process: its asyncio loop lives in a background thread, so
a test changes its behaviour by assigning attributes and reads what it got
from plain lists, with no control protocol in between.

    sink = SmtpSink("127.20.0.5", 2525, outdir, rules={"bad@x.test": "550 5.1.1 no such user"})
    sink.start()
    sink.rules["later@x.test"] = "451 4.3.0 try later"   # reply to RCPT TO for that address
    sink.mail_rules["<>"] = "550 5.7.1 no bounces"         # reply to MAIL FROM ("<>" = null sender)
    sink.greeting = "421 4.3.2 busy"    # answered instead of 220, then the connection is closed
    sink.data_reply = "452 4.3.1 full"  # instead of "250 2.0.0 Ok: queued as sinkN"
    sink.refuse()                       # close the listener: connections are refused
    sink.accept()                       # listen again on the same address and port
    msgs = sink.wait_for(2, timeout=10) # -> list[Message]; AssertionError on timeout
    sink.messages, sink.connections, sink.transcript
    sink.stop()

Protocol: ESMTP with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN,
ENHANCEDSTATUSCODES, CHUNKING (BDAT) when ``chunking=True``, STARTTLS when
given ``tls`` (an ``ssl.SSLContext``).  Commands are read from one buffer,
so pipelined commands are answered in order exactly as a real server does.
Only <CR><LF>.<CR><LF> ends DATA; the content is dot-unstuffed and kept
byte for byte (``Message.data``) together with the bytes as they arrived
(``Message.raw``, still dot-stuffed, without the final ".").

Each accepted message is also written to OUTDIR/N.eml (data) and
OUTDIR/N.json (envelope), N counting from 1.

Rules match addresses case-insensitively; the reply text is sent as given
(one line).  A rule whose reply starts with 2 accepts the recipient.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SIZE_LIMIT = 64 * 1024 * 1024   # above the largest test message (20 MB)
LINE_LIMIT = 64 * 1024                  # a command line longer than this is refused
READ_CHUNK = 256 * 1024
TRANSCRIPT_LIMIT = 10000                # lines kept in memory


@dataclass
class Message:
    index: int
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    raw: bytes
    mail_options: dict[str, str | None] = field(default_factory=dict)
    rcpt_options: dict[str, dict[str, str | None]] = field(default_factory=dict)
    helo: str = ""
    esmtp: bool = True
    peer: tuple[str, int] | None = None
    tls: bool = False


class _Conn:
    """One SMTP session: a byte buffer and the transaction state."""

    def __init__(self, sink: "SmtpSink", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.sink, self.reader, self.writer = sink, reader, writer
        self.buf = bytearray()
        self.helo = ""
        self.esmtp = False
        self.tls = False
        self.peer = writer.get_extra_info("peername")
        self.reset()

    def reset(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: dict[str, str | None] = {}
        self.rcpts: list[str] = []
        self.rcpt_options: dict[str, dict[str, str | None]] = {}
        self.chunks = bytearray()

    async def _fill(self) -> bool:
        data = await self.reader.read(READ_CHUNK)
        if not data:
            return False
        self.buf += data
        return True

    async def readline(self) -> bytes | None:
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            start = len(self.buf)
            if len(self.buf) > LINE_LIMIT or not await self._fill():
                return None

    async def read_data(self) -> bytes | None:
        """Bytes up to <CRLF>.<CRLF>; the CRLF before the dot belongs to the content."""
        # The data begins just after DATA's CRLF, so a leading ".\r\n" ends it too.
        self.buf[0:0] = b"\r\n"
        start = 0
        while True:
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                raw = bytes(self.buf[2 : i + 2])
                del self.buf[: i + 5]
                return raw
            start = max(0, len(self.buf) - 4)
            if not await self._fill():
                return None

    async def read_exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not await self._fill():
                return None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def reply(self, text: str) -> None:
        self.sink._note(self.peer, "S", text)
        self.writer.write(text.encode("utf-8", "surrogateescape") + b"\r\n")

    async def run(self) -> None:
        s = self.sink
        greeting = s.greeting or f"220 {s.hostname} ESMTP sink"
        self.reply(greeting)
        await self.writer.drain()
        if not greeting.startswith("2"):
            return
        while True:
            # Flush replies only when no more pipelined input is buffered.
            if b"\n" not in self.buf:
                await self.writer.drain()
            line = await self.readline()
            if line is None:
                return
            text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            s._note(self.peer, "C", text)
            verb, _, arg = text.partition(" ")
            handler = getattr(self, "do_" + verb.upper(), None)
            if handler is None:
                self.reply("502 5.5.2 Error: command not recognized")
                continue
            if await handler(arg) is False:
                await self.writer.drain()
                return

    # -- commands -----------------------------------------------------

    async def do_EHLO(self, arg: str) -> None:
        s = self.sink
        self.helo, self.esmtp = arg.strip(), True
        self.reset()
        ext = ["PIPELINING", f"SIZE {s.size_limit}", "ENHANCEDSTATUSCODES",
               "8BITMIME", "DSN", "SMTPUTF8"]
        if s.chunking:
            ext.append("CHUNKING")
        if s.tls is not None and not self.tls:
            ext.append("STARTTLS")
        lines = [s.hostname, *ext]
        for j, ln in enumerate(lines):
            self.reply(("250 " if j == len(lines) - 1 else "250-") + ln)

    async def do_HELO(self, arg: str) -> None:
        self.helo, self.esmtp = arg.strip(), False
        self.reset()
        self.reply(f"250 {self.sink.hostname}")

    async def do_STARTTLS(self, arg: str) -> None:
        if self.sink.tls is None or self.tls:
            self.reply("502 5.5.1 Error: command not implemented")
            return
        self.reply("220 2.0.0 Ready to start TLS")
        await self.writer.drain()
        self.buf.clear()          # RFC 3207: nothing pipelined after STARTTLS survives
        await self.writer.start_tls(self.sink.tls)
        self.tls, self.helo, self.esmtp = True, "", False
        self.reset()

    async def do_MAIL(self, arg: str) -> None:
        if not self.helo:
            self.reply("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.mail_from is not None:
            self.reply("503 5.5.1 Error: nested MAIL command")
            return
        addr, params = _parse_path(arg, "FROM:")
        if addr is None:
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        size = params.get("SIZE")
        if size is not None and size.isdigit() and int(size) > self.sink.size_limit:
            self.reply("552 5.3.4 Message size exceeds fixed limit")
            return
        rule = self.sink.mail_rules.get(addr.lower() or "<>")
        if rule and not rule.startswith("2"):
            self.reply(rule)
            return
        self.mail_from, self.mail_options = addr, params
        self.reply(rule or "250 2.1.0 Ok")

    async def do_RCPT(self, arg: str) -> None:
        if self.mail_from is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        addr, params = _parse_path(arg, "TO:")
        if not addr:
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        rule = self.sink.rules.get(addr.lower())
        if rule and not rule.startswith("2"):
            self.reply(rule)
            return
        self.rcpts.append(addr)
        self.rcpt_options[addr] = params
        self.reply(rule or "250 2.1.5 Ok")

    async def do_DATA(self, arg: str) -> bool | None:
        if not self.rcpts:
            self.reply("554 5.5.1 Error: no valid recipients" if self.mail_from is not None
                       else "503 5.5.1 Error: need RCPT command")
            return None
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        await self.writer.drain()
        raw = await self.read_data()
        if raw is None:
            return False
        self._finish(raw, _unstuff(raw))
        return None

    async def do_BDAT(self, arg: str) -> bool | None:
        parts = arg.split()
        if not self.sink.chunking or not parts or not parts[0].isdigit() \
                or (len(parts) > 1 and parts[1].upper() != "LAST"):
            self.reply("501 5.5.4 Syntax: BDAT count [LAST]")
            return None
        chunk = await self.read_exact(int(parts[0]))
        if chunk is None:
            return False
        if not self.rcpts:
            self.reply("554 5.5.1 Error: no valid recipients")
            return None
        self.chunks += chunk
        if len(parts) > 1:
            data = bytes(self.chunks)
            self._finish(data, data)
        else:
            self.reply(f"250 2.0.0 Ok: {len(chunk)} bytes")
        return None

    def _finish(self, raw: bytes, data: bytes) -> None:
        reply = self.sink.data_reply
        if reply and not reply.startswith("2"):
            self.reply(reply)
        else:
            n = self.sink._store(self, raw, data)
            self.reply(reply or f"250 2.0.0 Ok: queued as sink{n}")
        self.reset()

    async def do_RSET(self, arg: str) -> None:
        self.reset()
        self.reply("250 2.0.0 Ok")

    async def do_NOOP(self, arg: str) -> None:
        self.reply("250 2.0.0 Ok")

    async def do_VRFY(self, arg: str) -> None:
        self.reply("252 2.0.0 Send some mail, I'll try my best")

    async def do_QUIT(self, arg: str) -> bool:
        self.reply("221 2.0.0 Bye")
        return False


def _parse_path(arg: str, keyword: str) -> tuple[str | None, dict[str, str | None]]:
    """'FROM:<a@b> SIZE=10 BODY=8BITMIME' -> ('a@b', {'SIZE': '10', 'BODY': '8BITMIME'})."""
    if not arg[: len(keyword)].upper() == keyword:
        return None, {}
    rest = arg[len(keyword):].lstrip()
    if not rest.startswith("<") or ">" not in rest:
        return None, {}
    end = rest.index(">")
    addr, tail = rest[1:end], rest[end + 1:]
    params: dict[str, str | None] = {}
    for p in tail.split():
        k, eq, v = p.partition("=")
        params[k.upper()] = v if eq else None
    return addr, params


def _unstuff(raw: bytes) -> bytes:
    """RFC 5321 4.5.2: drop the first '.' of every line that starts with one."""
    data = (b"\r\n" + raw).replace(b"\r\n.", b"\r\n")
    return data[2:]


class SmtpSink:
    def __init__(self, host: str, port: int, outdir: str | Path | None = None, *,
                 hostname: str = "sink.test", rules: dict[str, str] | None = None,
                 mail_rules: dict[str, str] | None = None, greeting: str | None = None,
                 data_reply: str | None = None, chunking: bool = False,
                 tls: ssl.SSLContext | None = None,
                 size_limit: int = DEFAULT_SIZE_LIMIT) -> None:
        self.host, self.port, self.hostname = host, port, hostname
        self.outdir = Path(outdir) if outdir is not None else None
        self.rules = {k.lower(): v for k, v in (rules or {}).items()}
        self.mail_rules = {k.lower(): v for k, v in (mail_rules or {}).items()}
        self.greeting, self.data_reply = greeting, data_reply
        self.chunking, self.tls, self.size_limit = chunking, tls, size_limit
        self.messages: list[Message] = []
        self.connections = 0
        self.transcript: list[str] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    # -- life cycle (called from the test's thread) --------------------

    def start(self) -> "SmtpSink":
        if self.outdir is not None:
            self.outdir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"sink-{self.host}:{self.port}", daemon=True)
        self._thread.start()
        self.accept()
        return self

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def accept(self) -> None:
        """(Re)open the listener."""
        async def listen():
            if self._server is None:
                self._server = await asyncio.start_server(
                    self._serve, self.host, self.port, reuse_address=True,
                    limit=LINE_LIMIT)
        self._call(listen())

    def refuse(self, drop: bool = True) -> None:
        """Close the listener (new connections are refused); with ``drop``
        also cut the sessions in progress."""
        async def close():
            if self._server is not None:
                self._server.close()
                self._server = None
            if drop:
                for w in list(self._writers):
                    w.transport.abort()
        self._call(close())

    def stop(self) -> None:
        if self._loop is None:
            return
        self.refuse(drop=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "SmtpSink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- results --------------------------------------------------------

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(
                    f"sink {self.host}:{self.port} got {len(self.messages)} of {count} "
                    f"messages in {timeout}s; last lines:\n" + "\n".join(self.transcript[-30:]))
            return list(self.messages)

    # -- inside the loop thread -------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = _Conn(self, reader, writer)
        try:
            await conn.run()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as e:
            self._note(conn.peer, "!", repr(e))
        finally:
            self._writers.discard(writer)
            writer.close()

    def _note(self, peer, direction: str, text: str) -> None:
        if len(self.transcript) < TRANSCRIPT_LIMIT:
            self.transcript.append(f"{peer[0] if peer else '?'} {direction}: {text[:200]}")

    def _store(self, conn: _Conn, raw: bytes, data: bytes) -> int:
        with self._cond:
            n = len(self.messages) + 1
            msg = Message(index=n, mail_from=conn.mail_from or "", rcpt_tos=list(conn.rcpts),
                          data=data, raw=raw, mail_options=dict(conn.mail_options),
                          rcpt_options=dict(conn.rcpt_options), helo=conn.helo,
                          esmtp=conn.esmtp, peer=conn.peer, tls=conn.tls)
            if self.outdir is not None:
                (self.outdir / f"{n}.eml").write_bytes(data)
                env = {k: v for k, v in msg.__dict__.items() if k not in ("data", "raw")}
                (self.outdir / f"{n}.json").write_text(json.dumps(env, indent=1))
            self.messages.append(msg)
            self._cond.notify_all()
            return n
