"""Real clients, a real Fulmar peer and a real log analyzer (issue 3).

swaks as the submitting client; a second Fulmar instance as the receiving
MX (it relays on through its relayhost and delivers locally); Debian's
pflogsumm reading the maillog of an instance that saw a known mix of
received, delivered, deferred, bounced and rejected mail.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from support.mail import dsn_fields, make_message, parse, submit, wait_until

TIMEOUT = 30
FAST = {"default_worker_processes": "1"}
_zones = itertools.count(1)


def test_swaks_client(dns_server, alloc, smtp_sink, fulmar_instance):
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks not installed; .ci/run installs it")
    host = dns_server.hosts["nomx.test"]
    port = alloc.port(host)
    sink = smtp_sink(host=host, port=port)
    inst = fulmar_instance("a", main_cf={"smtp_tcp_port": str(port), **FAST})
    r = subprocess.run([swaks, "--server", f"{inst.host}:{inst.smtp_port}", "--pipeline",
                        "--ehlo", "swaks.client.test",
                        "--from", "sender@client.test", "--to", "rcpt@nomx.test",
                        "--header", "Subject: via swaks", "--header", "X-Test-Token: swaks1",
                        "--body", "hello from swaks"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"<-\s+250 2\.0\.0 Ok: queued as (\w+)", r.stdout)
    assert m, r.stdout
    qid = m.group(1)
    # the server advertised what swaks pipelined against
    assert re.search(r"<-\s+250-PIPELINING", r.stdout), r.stdout
    (msg,) = sink.wait_for(1, timeout=TIMEOUT)
    assert (msg.mail_from, msg.rcpt_tos) == ("sender@client.test", ["rcpt@nomx.test"])
    assert b"X-Test-Token: swaks1\r\n" in msg.data and b"hello from swaks" in msg.data
    # cleanup's Received: header names the client's HELO and our queue ID
    assert re.search(rb"Received: from swaks\.client\.test \(unknown \[127\.0\.0\.1\]\)\r\n"
                     rb"\tby a\.test \(Postfix\) with ESMTP id " + qid.encode(), msg.data), \
        msg.data[:400]
    inst.wait_log(rf"postfix/smtpd\[\d+\]: {qid}: client=unknown\[127\.0\.0\.1\]$")
    inst.wait_log(rf"postfix/smtp\[\d+\]: {qid}: to=<rcpt@nomx\.test>, relay=nomx\.test\[[\d.]+\]:{port}, "
                  rf"(?:conn_use=\d+, )?delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent \(250 ")
    inst.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: removed$")
    inst.wait_log(r"postfix/smtpd\[\d+\]: disconnect from unknown\[127\.0\.0\.1\] ehlo=1 mail=1 "
                  r"rcpt=1 data=1 quit=1 commands=5$")


def test_second_fulmar_as_receiving_peer(dns_server, alloc, smtp_sink, fulmar_instance):
    n = next(_zones)
    relay_dom, local_dom = f"peer{n}-{os.getpid()}.test", f"peerlocal{n}-{os.getpid()}.test"
    host_b, host_sink = alloc.host(), alloc.host()
    port = alloc.port(host_b, host_sink)
    for zone in (relay_dom, local_dom):
        dns_server.add_zone(zone, f"@ MX 10 mx\nmx A {host_b}\n")
    sink = smtp_sink(host=host_sink, port=port)
    b = fulmar_instance("b", host=host_b, smtp_port=port, main_cf={
        **FAST, "relay_domains": relay_dom, "mydestination": f"$myhostname, {local_dom}",
        "relayhost": f"[{host_sink}]:{port}"})
    a = fulmar_instance("a", main_cf={**FAST, "smtp_tcp_port": str(port)})
    local_user = b.mail_owner                       # a user that exists on this machine
    rcpts = [f"far@{relay_dom}", f"{local_user}@{local_dom}"]
    data = make_message("peer1", "sender@client.test", rcpts, body=b"through two MTAs\r\n")
    qid_a = submit(a.smtp_addr, "sender@client.test", rcpts, data)
    # A -> B over SMTP, found by B's MX record
    (la,) = a.wait_log(rf"postfix/smtp\[\d+\]: {qid_a}: to=<far@{re.escape(relay_dom)}>, "
                       rf"relay=mx\.{re.escape(relay_dom)}\[{re.escape(host_b)}\]:{port}, "
                       rf"(?:conn_use=\d+, )?delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, "
                       rf"status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)", timeout=TIMEOUT)
    qid_b = la.group(1)
    a.wait_log(rf"{qid_a}: removed$")
    # B got it from A and relayed it on through its relayhost
    b.wait_log(rf"postfix/smtpd\[\d+\]: {qid_b}: client=\S+\[127\.0\.0\.1\]$")
    # (relay_domains mail goes through the relay transport, whose master.cf
    # entry sets syslog_name=postfix/$service_name)
    b.wait_log(rf"postfix/relay/smtp\[\d+\]: {qid_b}: to=<far@{re.escape(relay_dom)}>, "
               rf"relay={re.escape(host_sink)}\[{re.escape(host_sink)}\]:{port}, .*status=sent ",
               timeout=TIMEOUT)
    (m,) = sink.wait_for(1, timeout=TIMEOUT)
    assert m.rcpt_tos == [f"far@{relay_dom}"] and m.mail_from == "sender@client.test"
    assert m.data.endswith(b"\r\n\r\nthrough two MTAs\r\n")
    received = re.findall(rb"^Received: from .*\r\n\t.* with E?SMTP id (\w+)", m.data, re.M)
    assert [x.decode() for x in received] == [qid_b, qid_a], m.data[:600]
    # the local recipient's domain is another next hop: its own transaction
    (ll,) = a.wait_log(rf"postfix/smtp\[\d+\]: {qid_a}: to=<{local_user}@{re.escape(local_dom)}>, "
                       rf"relay=mx\.{re.escape(local_dom)}\[{re.escape(host_b)}\]:{port}, "
                       rf".*status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)", timeout=TIMEOUT)
    qid_local = ll.group(1)
    # B delivered it to the mbox
    b.wait_log(rf"postfix/local\[\d+\]: {qid_local}: to=<{local_user}@{re.escape(local_dom)}>, "
               rf"relay=local, .*status=sent \(delivered to mailbox\)", timeout=TIMEOUT)
    mbox = b.mail_dir / local_user
    wait_until(lambda: mbox.exists() and b"through two MTAs" in mbox.read_bytes(), 10,
               "the local mailbox")
    text = mbox.read_bytes()
    assert text.startswith(b"From sender@client.test ") and b"X-Test-Token: peer1\n" in text
    b.wait_log(rf"{qid_b}: removed$")
    b.wait_log(rf"{qid_local}: removed$")
    # two jobs (one per next hop) end the one message once
    time.sleep(0.5)
    assert a.log_text().count(f"{qid_a}: removed") == 1, a.log_text()
    assert "warning" not in a.log_text().replace("warning: service discard", "")


def test_pflogsumm_counts_a_known_mix(dns_server, alloc, smtp_sink, fulmar_instance, pflogsumm):
    h = dns_server.hosts
    inside, outside = alloc.host(), alloc.host()
    port = alloc.port(h["nomx.test"], h["mx1.example.test"])
    sink = smtp_sink(host=h["nomx.test"], port=port,
                     rules={"later@nomx.test": "451 4.3.0 try again later",
                            "bad@nomx.test": "550 5.1.1 no such user"})
    home = smtp_sink(host=h["mx1.example.test"], port=port)
    inst = fulmar_instance("a", main_cf={
        **FAST, "smtp_tcp_port": str(port), "mynetworks": f"{inside}/32",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        # one deferral only: no retry before the test ends
        "minimal_backoff_time": "300s", "maximal_backoff_time": "600s"})
    sender = "sender@example.test"
    qids = {}
    for token, rcpt in (("ok1", "ok1@nomx.test"), ("ok2", "ok2@nomx.test"),
                        ("later", "later@nomx.test"), ("bad", "bad@nomx.test")):
        qids[token] = submit(inst.smtp_addr, sender, [rcpt], make_message(token, sender, [rcpt]),
                             source_address=(inside, 0))
    with smtplib.SMTP(*inst.smtp_addr, timeout=TIMEOUT, source_address=(outside, 0)) as c:
        c.ehlo("outside.test")
        c.mail("spam@outside.test")
        assert c.rcpt("victim@nomx.test")[0] == 554
    sink.wait_for(2, timeout=TIMEOUT)
    (dsn,) = home.wait_for(1, timeout=TIMEOUT)
    assert dsn_fields(parse(dsn.data))[1][0]["final-recipient"] == "rfc822; bad@nomx.test"
    for token in ("ok1", "ok2", "bad"):
        inst.wait_log(rf"{qids[token]}: removed$")
    inst.wait_log(rf"{qids['later']}: to=<later@nomx\.test>, .*status=deferred ")
    wait_until(lambda: qids["later"] in inst.queue_files("deferred"), 10, "the deferred file")
    inst.wait_log(r"sender non-delivery notification: (\w+)")
    inst.wait_log(r"postfix/qmgr\[\d+\]: \w+: from=<>, .*\n(?:.*\n)*.*to=<sender@example\.test>, "
                  r".*status=sent ")
    c = pflogsumm.summarize(inst.maillog)
    # received: the four smtpd "client=" lines (the DSN is made locally);
    # delivered: ok1, ok2 and the DSN; bounced: bad; deferred: later;
    # rejected: the relay attempt.
    assert (c.received, c.delivered, c.deferred, c.deferrals, c.bounced, c.rejected) == \
        (4, 3, 1, 1, 1, 1), c.report
    assert "Relay access denied" in c.report
    assert "no such user" in c.report and "try again later" in c.report
