"""smtp_client.deliver in-process against a tiny asyncio SMTP server on 127.0.0.1."""

import asyncio
import os
import socket
from types import SimpleNamespace

import pytest

from fulmar import dns as fdns
from smtp_client import deliver as D


class FakeQfile:
    def __init__(self, content_blocks, attrs=None):
        self.blocks = content_blocks
        self.attrs = attrs or {}

    def read_envelope(self, path):
        return SimpleNamespace(sender="s@example.com", attrs=self.attrs,
                               content_size=sum(map(len, self.blocks)))

    def iter_content(self, path, env):
        yield from self.blocks


class FakeResolver:
    def __init__(self, mx=None, addrs=None):
        self.mx, self.addrs = mx or {}, addrs or {}

    async def resolve_mx(self, domain):
        v = self.mx[domain]
        if isinstance(v, Exception):
            raise v
        return v

    async def resolve_addresses(self, host, families, preference="any", randomize=False):
        return self.addrs.get(host) or [host]


class Log:
    def __init__(self):
        self.lines = []

    def info(self, fmt, *a):
        self.lines.append(fmt % a)

    warning = error = info


class Sink:
    """Scripted SMTP server: rcpt replies by address, records messages."""

    def __init__(self, rcpt_replies=None, greeting=b"220 sink ESMTP\r\n"):
        self.rcpt_replies = rcpt_replies or {}
        self.greeting = greeting
        self.connections = 0
        self.messages = []
        self.commands = []

    async def handle(self, reader, writer):
        self.connections += 1
        writer.write(self.greeting)
        if not self.greeting.startswith(b"220"):
            writer.close()
            return
        while line := await reader.readline():
            cmd = line.decode().strip()
            self.commands.append(cmd)
            up = cmd.upper()
            if up.startswith("EHLO"):
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME\r\n")
            elif up.startswith("RCPT"):
                addr = cmd.split("<", 1)[1].split(">", 1)[0]
                writer.write(self.rcpt_replies.get(addr, b"250 2.1.5 Ok\r\n"))
            elif up == "DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                data = bytearray()
                while (ln := await reader.readline()) != b".\r\n":
                    if not ln:          # the client gave up mid-message
                        writer.close()
                        return
                    data += ln
                self.messages.append(bytes(data))
                writer.write(b"250 2.0.0 Ok: queued as SINK1\r\n")
            elif up == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def sink():
    s = Sink()
    server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    s.port = server.sockets[0].getsockname()[1]
    yield s
    server.close()


def make_agent(resolver=None, blocks=(b"Subject: t\r\n\r\n.dot\r\nend\r\n",), **kw):
    settings = D.Settings(myhostname="me.example.com", helo_name="me.example.com", tls_level="none",
                          randomize_addresses=False, **kw)
    log = Log()
    agent = D.Agent(settings, resolver or FakeResolver(), "/q", logger=log, qfile=FakeQfile(list(blocks)))
    return agent, log


def request(nexthop, *rcpts):
    return {"request": "deliver", "id": 1, "queue_name": "active", "queue_id": "QID1", "path": "active/QID1",
            "transport": "smtp", "nexthop": nexthop, "sender": "s@example.com", "arrival_time": 1.0,
            "qmgr_time": 1.0, "dsn_envid": "", "dsn_ret": 0, "smtputf8": 0,
            "recipients": [{"address": r, "orig_address": "", "dsn_orcpt": "", "dsn_notify": 0, "offset": 100 + i}
                           for i, r in enumerate(rcpts)]}


async def test_delivery_and_reuse(sink):
    sink.rcpt_replies = {"bad@x": b"550 5.1.1 <bad@x>: Recipient address rejected\r\n"}
    agent, log = make_agent()
    res = await agent.deliver(request(f"[127.0.0.1]:{sink.port}", "a@x", "bad@x"))
    relay = f"127.0.0.1[127.0.0.1]:{sink.port}"
    assert res[0] == {"offset": 100, "status": "sent", "dsn": "2.0.0",
                      "reason": "250 2.0.0 Ok: queued as SINK1", "relay": relay}
    assert res[1]["status"] == "bounced" and res[1]["dsn"] == "5.1.1"
    assert res[1]["reason"] == ("host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <bad@x>: Recipient address "
                                "rejected (in reply to RCPT TO command)")
    assert sink.messages == [b"Subject: t\r\n\r\n..dot\r\nend\r\n"]
    assert log.lines[0].startswith(f"QID1: to=<a@x>, relay={relay}, delay=")
    assert "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as SINK1)" in log.lines[0]
    # The same next hop again: the cached connection is used.
    res = await agent.deliver(request(f"[127.0.0.1]:{sink.port}", "c@x"))
    assert res[0]["status"] == "sent"
    assert sink.connections == 1 and len(sink.messages) == 2
    assert ", conn_use=2, " in log.lines[-1]
    assert "MAIL FROM:<s@example.com> SIZE=25" in sink.commands
    await agent.shutdown()
    assert sink.commands[-1] == "QUIT"


async def test_no_reuse_when_cache_disabled(sink):
    agent, log = make_agent(cache_time_limit=0)
    for _ in range(2):
        res = await agent.deliver(request(f"[127.0.0.1]:{sink.port}", "a@x"))
        assert res[0]["status"] == "sent"
    await agent.shutdown()
    assert sink.connections == 2


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_connection_refused():
    port = free_port()
    agent, log = make_agent()
    res = await agent.deliver(request(f"[127.0.0.1]:{port}", "a@x"))
    assert res[0]["status"] == "deferred" and res[0]["dsn"] == "4.4.1" and res[0]["relay"] == "none"
    assert res[0]["reason"] == f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"
    assert ", relay=none, " in log.lines[0]


async def test_mx_fallback_to_second_host(sink):
    dead = free_port()
    resolver = FakeResolver(
        mx={"example.org": fdns.MxResult("example.org", [(10, "mx1.example.org"), (20, "mx2.example.org")])},
        addrs={"mx1.example.org": ["127.0.0.1"], "mx2.example.org": ["127.0.0.1"]})
    agent, log = make_agent(resolver)
    # Both MX hosts resolve to 127.0.0.1; give them different ports through a
    # per-host port map by patching the targets.
    orig = agent._targets

    async def targets(dest):
        ts = await orig(dest)
        ts[0].port, ts[1].port = dead, sink.port
        return ts
    agent._targets = targets
    res = await agent.deliver(request("example.org", "a@x"))
    assert res[0]["status"] == "sent" and res[0]["relay"] == f"mx2.example.org[127.0.0.1]:{sink.port}"
    await agent.shutdown()


async def test_null_mx_bounces():
    resolver = FakeResolver(mx={"example.org": fdns.MxResult("example.org", null_mx=True)})
    agent, log = make_agent(resolver)
    res = await agent.deliver(request("example.org", "a@example.org"))
    assert res[0] == {"offset": 100, "status": "bounced", "dsn": "5.1.10", "relay": "none",
                      "reason": "Domain example.org does not accept mail (nullMX)"}


async def test_dns_failure_classes():
    resolver = FakeResolver(mx={
        "temp.org": fdns.DnsError(True, "4.4.3", "Host or domain name not found. Name service error for "
                                  "name=temp.org type=MX: Host not found, try again"),
        "gone.org": fdns.DnsError(False, "5.1.2", "x")})
    agent, _ = make_agent(resolver)
    assert (await agent.deliver(request("temp.org", "a@x")))[0]["status"] == "deferred"
    assert (await agent.deliver(request("gone.org", "a@x")))[0]["status"] == "bounced"


async def test_mx_loop_to_myself():
    resolver = FakeResolver(mx={"example.org": fdns.MxResult("example.org", [(10, "me.example.com")])},
                            addrs={"me.example.com": ["192.0.2.1"]})
    agent, _ = make_agent(resolver)
    res = await agent.deliver(request("example.org", "a@x"))
    assert res[0]["dsn"] == "5.4.6" and res[0]["reason"] == "mail for example.org loops back to myself"


async def test_greeting_4xx_defers():
    s = Sink(greeting=b"421 4.3.2 busy\r\n")
    server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent, _ = make_agent()
    res = await agent.deliver(request(f"[127.0.0.1]:{port}", "a@x"))
    server.close()
    assert res[0]["status"] == "deferred"
    assert res[0]["reason"] == "host 127.0.0.1[127.0.0.1] refused to talk to me: 421 4.3.2 busy"


def test_parse_nexthop():
    P = D.parse_nexthop
    assert P("[mx.example.org]:2525", 25) == D.Destination("mx.example.org", 2525, False)
    assert P("[mx.example.org]", 25) == D.Destination("mx.example.org", 25, False)
    assert P("[ipv6:2001:db8::1]:26", 25) == D.Destination("2001:db8::1", 26, False)
    assert P("example.org:587", 25) == D.Destination("example.org", 587, True)
    assert P("example.org", 25) == D.Destination("example.org", 25, True)
    assert P("inet:lmtp.example:24", 24, lmtp=True) == D.Destination("lmtp.example", 24, False)
    assert P("unix:/run/lmtp", 24, lmtp=True).unix_path == "/run/lmtp"


async def test_content_and_end_of_data_leave_in_one_write(sink, monkeypatch):
    # Every block of a small message and the end of data go out in one
    # write (one send()), not one per block plus one for the dot.
    writes = []
    real_write = asyncio.StreamWriter.write

    def spy(self, data):
        writes.append(bytes(data))
        return real_write(self, data)

    monkeypatch.setattr(asyncio.StreamWriter, "write", spy)
    agent, log = make_agent(blocks=(b"Subject: t\r\n\r\n", b"first\r\n", b"second\r\n"))
    res = await agent.deliver(request(f"[127.0.0.1]:{sink.port}", "a@x"))
    assert res[0]["status"] == "sent"
    content = [w for w in writes if b"first" in w or b"second" in w]
    assert len(content) == 1, content
    assert content[0].startswith(b"Subject: t\r\n\r\nfirst\r\nsecond\r\n.\r\n")
    assert sink.messages == [b"Subject: t\r\n\r\nfirst\r\nsecond\r\n"]
    await agent.shutdown()


async def test_offsets_from_qmgr_spare_the_envelope_read(sink, tmp_path, monkeypatch):
    # qmgr passes content_offset/content_size: the agent reads only the
    # content (one pread of a small file), never the envelope again.
    from fulmar.queue import layout, qfile
    qdir = str(tmp_path / "q")
    layout.create(qdir)
    w = qfile.QueueWriter.create(qdir)
    w.set_arrival(1.0)
    w.set_sender("s@example.com")
    w.add_recipient(qfile.Recipient("a@x"))
    w.write_content(b"Subject: real\r\n\r\n.leading dot\r\n")
    path = w.commit()
    env = qfile.read_envelope(path)

    def no_envelope(p):
        raise AssertionError("envelope read again")

    monkeypatch.setattr(qfile, "read_envelope", no_envelope)
    settings = D.Settings(myhostname="me.example.com", helo_name="me.example.com", tls_level="none",
                          randomize_addresses=False)
    agent = D.Agent(settings, FakeResolver(), qdir, logger=Log())
    req = dict(request(f"[127.0.0.1]:{sink.port}", "a@x"), path=os.path.relpath(path, qdir),
               content_offset=env.content_offset, content_size=env.content_size, body_type="")
    res = await agent.deliver(req)
    assert res[0]["status"] == "sent", res
    assert sink.messages == [b"Subject: real\r\n\r\n..leading dot\r\n"]
    # Offsets that do not match the file: deferred, nothing sent.
    bad = dict(req, content_offset=env.content_offset + 3)
    res = await agent.deliver(bad)
    assert res[0]["status"] == "deferred" and len(sink.messages) == 1
    # With the file's bytes in the request (qmgr's wakeup path), the file
    # is not opened at all.
    monkeypatch.setattr(qfile, "content_envelope", lambda *a: no_envelope(None))
    res = await agent.deliver(dict(req, content=env.data.decode("latin-1")))
    assert res[0]["status"] == "sent", res
    assert sink.messages[-1] == b"Subject: real\r\n\r\n..leading dot\r\n"
    # Bytes that are not the file's (not latin-1 text, or damaged) are a
    # queue file error: deferred, nothing sent.
    for content in ("\u20ac" + env.data.decode("latin-1")[1:],
                    env.data.decode("latin-1").replace("leading", "leadinG")):
        res = await agent.deliver(dict(req, content=content))
        assert res[0]["status"] == "deferred" and len(sink.messages) == 2, res
    await agent.shutdown()
