"""smtp_fallback_relay in smtp_client.deliver, against in-process SMTP servers on 127.0.0.1."""

import asyncio
import socket
from types import SimpleNamespace

import pytest

from fulmar import dns as fdns
from smtp_client import deliver as D


class FakeQfile:
    blocks = [b"Subject: t\r\n\r\nbody\r\n"]

    def read_envelope(self, path):
        return SimpleNamespace(sender="s@example.com", attrs={}, content_size=sum(map(len, self.blocks)))

    def iter_content(self, path, env):
        yield from self.blocks


class FakeResolver:
    """MX answers by domain (an Exception is raised); every host is 127.0.0.1."""

    def __init__(self, mx=None, addrs=None):
        self.mx, self.addrs = mx or {}, addrs or {}
        self.asked = []

    async def resolve_mx(self, domain):
        self.asked.append(("MX", domain))
        v = self.mx.get(domain) or fdns.MxResult(domain, [(0, domain)], implicit=True)
        if isinstance(v, Exception):
            raise v
        return v

    async def resolve_addresses(self, host, families, preference="any", randomize=False):
        self.asked.append(("A", host))
        v = self.addrs.get(host, ["127.0.0.1"])
        if isinstance(v, Exception):
            raise v
        return v


class Log:
    def __init__(self):
        self.lines = []

    def info(self, fmt, *a):
        self.lines.append(fmt % a)

    def warning(self, fmt, *a):
        self.lines.append("warning: " + fmt % a)

    error = info


class Sink:
    def __init__(self, rcpt_reply=b"250 2.1.5 Ok\r\n"):
        self.rcpt_reply = rcpt_reply
        self.connections = 0
        self.messages = []

    async def handle(self, reader, writer):
        self.connections += 1
        writer.write(b"220 sink ESMTP\r\n")
        while line := await reader.readline():
            up = line.decode().strip().upper()
            if up.startswith("EHLO"):
                writer.write(b"250-sink\r\n250 PIPELINING\r\n")
            elif up.startswith("RCPT"):
                writer.write(self.rcpt_reply)
            elif up == "DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                data = bytearray()
                while (ln := await reader.readline()) != b".\r\n":
                    data += ln
                self.messages.append(bytes(data))
                writer.write(b"250 2.0.0 Ok: queued as FB1\r\n")
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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_agent(resolver, fallback, **kw):
    settings = D.Settings(myhostname="me.example.com", helo_name="me.example.com", tls_level="none",
                          randomize_addresses=False, fallback_relay=list(fallback), **kw)
    log = Log()
    return D.Agent(settings, resolver, "/q", logger=log, qfile=FakeQfile()), log


def request(nexthop, *rcpts):
    return {"request": "deliver", "id": 1, "queue_name": "active", "queue_id": "QID1", "path": "active/QID1",
            "transport": "smtp", "nexthop": nexthop, "sender": "s@example.com", "arrival_time": 1.0,
            "qmgr_time": 1.0, "recipients": [{"address": r, "offset": 100 + i} for i, r in enumerate(rcpts)]}


NXDOMAIN = fdns.DnsError(False, "5.1.2", "Host or domain name not found. Name service error for "
                         "name=gone.test type=MX: Host not found")


def test_sites_order_and_duplicates():
    agent, _ = make_agent(FakeResolver(), ["[fb1.test]", "fb2.test:2525", "[FB1.test]", "example.org"])
    assert agent.sites("example.org") == ["example.org", "[fb1.test]", "fb2.test:2525"]
    lmtp, _ = make_agent(FakeResolver(), [], prefix="lmtp")
    assert lmtp.sites("unix:/x") == ["unix:/x"]


def test_settings_from_config(tmp_path):
    from fulmar import config
    (tmp_path / "main.cf").write_text("myhostname = me.example.com\nrelayhost = [r.test]\n"
                                      "fallback_relay = [fb.test]:2525, fb2.test\n")
    cfg = config.load(str(tmp_path))
    s = D.Settings.from_config(cfg, "smtp")
    assert s.fallback_relay == ["[fb.test]:2525", "fb2.test"] and s.relayhost == "[r.test]"
    assert D.Settings.from_config(cfg, "lmtp").fallback_relay == []


async def test_refused_mx_then_fallback(sink):
    dead = free_port()
    agent, log = make_agent(FakeResolver(), [f"[fallback.test]:{sink.port}"])
    res = await agent.deliver(request(f"example.org:{dead}", "a@example.org", "b@example.org"))
    relay = f"fallback.test[127.0.0.1]:{sink.port}"
    assert [r["status"] for r in res] == ["sent", "sent"]
    assert res[0]["relay"] == relay and res[0]["reason"] == "250 2.0.0 Ok: queued as FB1"
    assert f"to=<a@example.org>, relay={relay}, " in log.lines[0]
    assert len(sink.messages) == 1
    await agent.shutdown()


async def test_nxdomain_goes_to_fallback_not_bounced(sink):
    resolver = FakeResolver(mx={"gone.test": NXDOMAIN})
    agent, log = make_agent(resolver, [f"[fallback.test]:{sink.port}"])
    res = await agent.deliver(request("gone.test", "a@gone.test"))
    assert res[0]["status"] == "sent" and res[0]["relay"].startswith("fallback.test[")
    await agent.shutdown()


async def test_without_fallback_nxdomain_bounces():
    agent, _ = make_agent(FakeResolver(mx={"gone.test": NXDOMAIN}), [])
    res = await agent.deliver(request("gone.test", "a@gone.test"))
    assert res[0]["status"] == "bounced" and res[0]["dsn"] == "5.1.2"


async def test_soft_rcpt_reply_retried_at_fallback(sink):
    soft = Sink(rcpt_reply=b"450 4.2.0 greylisted\r\n")
    server = await asyncio.start_server(soft.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent, _ = make_agent(FakeResolver(), [f"[fallback.test]:{sink.port}"])
    res = await agent.deliver(request(f"[primary.test]:{port}", "a@x"))
    server.close()
    assert res[0]["status"] == "sent" and res[0]["relay"].startswith("fallback.test[")
    assert soft.connections == 1 and len(sink.messages) == 1
    await agent.shutdown()


async def test_hard_rcpt_reply_is_final(sink):
    hard = Sink(rcpt_reply=b"550 5.1.1 no such user\r\n")
    server = await asyncio.start_server(hard.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent, _ = make_agent(FakeResolver(), [f"[fallback.test]:{sink.port}"])
    res = await agent.deliver(request(f"[primary.test]:{port}", "a@x"))
    server.close()
    assert res[0]["status"] == "bounced" and sink.connections == 0
    await agent.shutdown()


async def test_all_down_defers_with_last_error():
    dead1, dead2 = free_port(), free_port()
    agent, _ = make_agent(FakeResolver(), [f"[fallback.test]:{dead2}"])
    res = await agent.deliver(request(f"[primary.test]:{dead1}", "a@x"))
    assert res[0]["status"] == "deferred" and res[0]["dsn"] == "4.4.1" and res[0]["relay"] == "none"
    assert res[0]["reason"] == f"connect to fallback.test[127.0.0.1]:{dead2}: Connection refused"


async def test_fallback_not_found_is_a_config_problem():
    resolver = FakeResolver(mx={"gone.test": NXDOMAIN},
                            addrs={"nofb.test": fdns.DnsError(False, "5.4.4", "no fallback host")})
    agent, log = make_agent(resolver, ["[nofb.test]"])
    res = await agent.deliver(request("gone.test", "a@gone.test"))
    assert res[0]["status"] == "deferred" and res[0]["dsn"] == "4.3.5"
    assert res[0]["reason"] == "no fallback host"
    assert "warning: smtp_fallback_relay configuration problem" in log.lines


async def test_relayhost_not_found_is_a_config_problem():
    resolver = FakeResolver(addrs={"relay.test": fdns.DnsError(False, "5.4.4", "no relay host")})
    agent, log = make_agent(resolver, [], relayhost="[relay.test]")
    res = await agent.deliver(request("[relay.test]", "a@x"))
    assert res[0]["dsn"] == "4.3.5" and "warning: relayhost configuration problem" in log.lines


async def test_no_fallback_when_mail_loops(sink):
    resolver = FakeResolver(mx={"example.org": fdns.MxResult("example.org", [(10, "me.example.com")])},
                            addrs={"me.example.com": ["192.0.2.1"]})
    agent, _ = make_agent(resolver, [f"[fallback.test]:{sink.port}"])
    res = await agent.deliver(request("example.org", "a@x"))
    assert res[0]["dsn"] == "5.4.6" and sink.connections == 0


async def test_no_fallback_when_we_are_mx_host(sink):
    dead = free_port()
    resolver = FakeResolver(
        mx={"example.org": fdns.MxResult("example.org", [(10, "mx1.example.org"), (20, "me.example.com")])},
        addrs={"me.example.com": ["192.0.2.1"]})
    agent, _ = make_agent(resolver, [f"[fallback.test]:{sink.port}"])
    res = await agent.deliver(request(f"example.org:{dead}", "a@x"))
    assert res[0]["status"] == "deferred" and res[0]["dsn"] == "4.4.1"
    assert sink.connections == 0


async def test_no_fallback_for_null_mx(sink):
    resolver = FakeResolver(mx={"example.org": fdns.MxResult("example.org", null_mx=True)})
    agent, _ = make_agent(resolver, [f"[fallback.test]:{sink.port}"])
    res = await agent.deliver(request("example.org", "a@x"))
    assert res[0]["dsn"] == "5.1.10" and sink.connections == 0


async def test_fallback_connection_is_reused(sink):
    dead = free_port()
    agent, log = make_agent(FakeResolver(), [f"[fallback.test]:{sink.port}"])
    for _ in range(2):
        res = await agent.deliver(request(f"[primary.test]:{dead}", "a@x"))
        assert res[0]["status"] == "sent"
    assert sink.connections == 1 and ", conn_use=2, " in log.lines[-1]
    await agent.shutdown()


# -- smtp_generic_maps on headers (content streaming path) -----------------------

async def test_generic_maps_rewrite_headers_not_body(sink, tmp_path):
    from fulmar import config
    from smtp_client.generic import GenericMaps
    (tmp_path / "main.cf").write_text(
        "myhostname = me.example.com\nalias_maps =\n"
        "smtp_generic_maps = inline:{alice@inside.test=alice@public.example, bob@inside.test=b@public.example}\n")
    agent, _ = make_agent(FakeResolver(), [])
    agent.generic = GenericMaps.from_config(config.load(str(tmp_path)), "smtp")

    class Q(FakeQfile):
        blocks = [b"From: Alice <alice@inside.test>\r\nTo: bob@inside.test,", b"\r\n carol@c.test\r\n",
                  b"Subject: alice@inside.test\r\n\r\nFrom: alice@inside.test\r\n"]
    agent.qfile = Q()
    res = await agent.deliver(request(f"[127.0.0.1]:{sink.port}", "bob@inside.test"))
    assert res[0]["status"] == "sent"
    assert sink.messages == [b"From: Alice <alice@public.example>\r\nTo: b@public.example,\r\n carol@c.test\r\n"
                             b"Subject: alice@inside.test\r\n\r\nFrom: alice@inside.test\r\n"]
    await agent.shutdown()
