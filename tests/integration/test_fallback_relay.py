"""smtp_fallback_relay end to end (issue 3): a real Fulmar, knotd and a sink.

Each test serves its own zone: `mx` points at an address nothing listens on
(connection refused) and `relay` at the fallback sink; the instance has
smtp_fallback_relay = [relay.<zone>].
"""
from __future__ import annotations

import itertools
import os
import re

from support.mail import make_message, submit

TIMEOUT = 30
FAST = {"default_worker_processes": "1"}
_zones = itertools.count(1)


def fallback_setup(dns_server, alloc, smtp_sink, fulmar_instance):
    zone = f"fb{next(_zones)}-{os.getpid()}.test"
    dead, fb = alloc.host(), alloc.host()
    port = alloc.port(dead, fb)
    dns_server.add_zone(zone, f"@ MX 10 mx\nmx A {dead}\nrelay A {fb}\n")
    sink = smtp_sink(host=fb, port=port)
    inst = fulmar_instance("a", main_cf={**FAST, "smtp_tcp_port": str(port),
                                         "smtp_fallback_relay": f"[relay.{zone}]"})
    relay = rf"relay\.{re.escape(zone)}\[{re.escape(fb)}\]:{port}"
    return zone, sink, inst, relay


def sent_line(qid: str, rcpt: str, relay: str) -> str:
    return (rf"postfix/smtp\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, relay={relay}, "
            rf"(?:conn_use=\d+, )?delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, "
            rf"status=sent \(250 2\.0\.0 Ok: queued as \w+\)$")


def test_refusing_mx_delivered_via_fallback(dns_server, alloc, smtp_sink, fulmar_instance):
    zone, sink, inst, relay = fallback_setup(dns_server, alloc, smtp_sink, fulmar_instance)
    rcpt = f"rcpt@{zone}"
    data = make_message("fallback1", "sender@a.test", [rcpt])
    qid = submit(inst.smtp_addr, "sender@a.test", [rcpt], data)
    (m,) = sink.wait_for(1, timeout=TIMEOUT)
    assert m.rcpt_tos == [rcpt] and b"X-Test-Token: fallback1\r\n" in m.data
    inst.wait_log(sent_line(qid, rcpt, relay), timeout=TIMEOUT)
    inst.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: removed$")
    assert "status=deferred" not in inst.log_text()


def test_nxdomain_delivered_via_fallback_not_bounced(dns_server, alloc, smtp_sink, fulmar_instance):
    zone, sink, inst, relay = fallback_setup(dns_server, alloc, smtp_sink, fulmar_instance)
    rcpt = f"rcpt@nosuch.{zone}"          # NXDOMAIN from the zone's own server
    qid = submit(inst.smtp_addr, "sender@a.test", [rcpt], make_message("fallback2", "sender@a.test", [rcpt]))
    (m,) = sink.wait_for(1, timeout=TIMEOUT)
    assert m.rcpt_tos == [rcpt]
    inst.wait_log(sent_line(qid, rcpt, relay), timeout=TIMEOUT)
    inst.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: removed$")
    text = inst.log_text()
    assert "status=bounced" not in text and "sender non-delivery notification" not in text
