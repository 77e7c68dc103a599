"""The mail path end to end (issue 3): routing, retries, DSNs, relay control.

Every test starts a real Fulmar (`postfix -c DIR start`) that resolves
through the session's knotd and delivers to in-process SMTP sinks listening
on the MX hosts' own loopback addresses.  All sinks of one test share one
port, which the instance uses as smtp_tcp_port.
"""
from __future__ import annotations

import os
import re
import smtplib
import time


from support.mail import dsn_fields, make_message, parse, submit, wait_pids, wait_until

TIMEOUT = 30
# One process per service: half the start-up CPU of the default (one per CPU).
FAST = {"default_worker_processes": "1"}


def delivery_re(qid: str, rcpt: str, relay: str, dsn: str, status: str) -> str:
    """Postfix's delivery line (log_adhoc.c field order) as a regex."""
    return (rf"postfix/\S+\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, (?:orig_to=<[^>]*>, )?"
            rf"relay={relay}, (?:conn_use=\d+, )?delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, "
            rf"dsn={dsn}, status={status} \((.*)\)$")


def relay_setup(dns_server, alloc, smtp_sink, fulmar_instance, sink_hosts: list[str],
                main_cf: dict | None = None, sink_options: dict | None = None):
    """Sinks on the named standard hosts (one shared port) and an instance using it."""
    h = dns_server.hosts
    addrs = [h[n] for n in sink_hosts]
    port = alloc.port(*addrs, *h.values())
    sinks = {n: smtp_sink(host=h[n], port=port, **(sink_options or {}).get(n, {}))
             for n in sink_hosts}
    inst = fulmar_instance("a", main_cf={"smtp_tcp_port": str(port), **FAST,
                                                **(main_cf or {})})
    return inst, sinks, port


def test_two_mx_first_refuses(dns_server, alloc, smtp_sink, fulmar_instance):
    inst, sinks, port = relay_setup(dns_server, alloc, smtp_sink, fulmar_instance,
                                    ["live.twomx.test"])
    live = dns_server.hosts["live.twomx.test"]
    data = make_message("twomx1", "sender@a.test", ["rcpt@twomx.test"])
    qid = submit(inst.smtp_addr, "sender@a.test", ["rcpt@twomx.test"], data)
    (m,) = sinks["live.twomx.test"].wait_for(1, timeout=TIMEOUT)
    assert m.rcpt_tos == ["rcpt@twomx.test"] and m.mail_from == "sender@a.test"
    assert m.data.endswith(data.split(b"\r\n\r\n", 1)[1])
    assert b"X-Test-Token: twomx1\r\n" in m.data
    (line,) = inst.wait_log(delivery_re(qid, "rcpt@twomx.test",
                                        rf"live\.twomx\.test\[{re.escape(live)}\]:{port}",
                                        r"2\.0\.0", "sent"), timeout=TIMEOUT)
    assert "250 2.0.0 Ok: queued as sink1" in line.group(1)
    inst.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: removed$")
    assert "status=deferred" not in inst.log_text()
    # Delivery runs delivery_process_nice (10) below master; smtpd and
    # cleanup keep master's priority (docs/deviations.md).
    base = os.getpriority(os.PRIO_PROCESS, inst.master_pid())
    for package, step in (("smtpd", 0), ("cleanup", 0), ("qmgr", 10), ("smtp_client", 10)):
        for pid in wait_pids(inst, package):
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, base + step), package


def test_no_mx_uses_a_record(dns_server, alloc, smtp_sink, fulmar_instance):
    inst, sinks, port = relay_setup(dns_server, alloc, smtp_sink, fulmar_instance,
                                    ["nomx.test"])
    addr = dns_server.hosts["nomx.test"]
    data = make_message("nomx1", "sender@a.test", ["rcpt@nomx.test"])
    qid = submit(inst.smtp_addr, "sender@a.test", ["rcpt@nomx.test"], data)
    (m,) = sinks["nomx.test"].wait_for(1, timeout=TIMEOUT)
    assert m.rcpt_tos == ["rcpt@nomx.test"]
    inst.wait_log(delivery_re(qid, "rcpt@nomx.test", rf"nomx\.test\[{re.escape(addr)}\]:{port}",
                              r"2\.0\.0", "sent"), timeout=TIMEOUT)
    inst.wait_log(rf"{qid}: removed$")


def test_null_mx_bounces_at_once_with_dsn(dns_server, alloc, smtp_sink, fulmar_instance):
    # The A record of nullmx.test must never be used: a sink there counts connections.
    inst, sinks, port = relay_setup(dns_server, alloc, smtp_sink, fulmar_instance,
                                    ["mx1.example.test", "nullmx.test"])
    data = make_message("nullmx1", "sender@example.test", ["rcpt@nullmx.test"])
    t0 = time.monotonic()
    qid = submit(inst.smtp_addr, "sender@example.test", ["rcpt@nullmx.test"], data)
    (line,) = inst.wait_log(delivery_re(qid, "rcpt@nullmx.test", "none", r"5\.1\.10",
                                        "bounced"), timeout=TIMEOUT)
    # Postfix's text (smtp_addr.c)
    assert line.group(1) == "Domain nullmx.test does not accept mail (nullMX)"
    (dsn,) = sinks["mx1.example.test"].wait_for(1, timeout=TIMEOUT)
    assert time.monotonic() - t0 < 15          # at once, not after retries
    assert dsn.mail_from == "" and dsn.rcpt_tos == ["sender@example.test"]
    msg = parse(dsn.data)
    per_msg, rcpts = dsn_fields(msg)
    assert per_msg["reporting-mta"] == "dns; a.test"
    assert len(rcpts) == 1
    r = rcpts[0]
    assert r["final-recipient"] == "rfc822; rcpt@nullmx.test"
    assert r["action"] == "failed"
    assert r["status"] == "5.1.10"
    assert "does not accept mail (nullMX)" in r.get("diagnostic-code", "")
    # The original message comes back (RET not given: full message).
    assert b"X-Test-Token: nullmx1" in dsn.data
    inst.wait_log(rf"{qid}: sender non-delivery notification: \w+")
    inst.wait_log(rf"{qid}: removed$")
    assert sinks["nullmx.test"].connections == 0


def test_4xx_deferred_then_delivered(dns_server, alloc, smtp_sink, fulmar_instance):
    inst, sinks, port = relay_setup(
        dns_server, alloc, smtp_sink, fulmar_instance, ["nomx.test"],
        main_cf={"minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
                 "queue_run_delay": "1s"},
        sink_options={"nomx.test": {"rules": {"later@nomx.test": "451 4.3.0 try later"}}})
    sink = sinks["nomx.test"]
    data = make_message("defer1", "sender@a.test", ["later@nomx.test"])
    qid = submit(inst.smtp_addr, "sender@a.test", ["later@nomx.test"], data)
    (line,) = inst.wait_log(delivery_re(qid, "later@nomx.test", r"nomx\.test\[[\d.]+\]:\d+",
                                        r"4\.3\.0", "deferred"), timeout=TIMEOUT)
    assert "said: 451 4.3.0 try later (in reply to RCPT TO command)" in line.group(1)
    wait_until(lambda: qid in inst.queue_files("deferred"), 10, "the file in deferred/")
    assert not sink.messages
    # postqueue -p shows the delay reason while it waits
    q = inst.command("postqueue", "-p")
    assert qid in q.stdout and "try later" in q.stdout, q.stdout
    del sink.rules["later@nomx.test"]
    (m,) = sink.wait_for(1, timeout=TIMEOUT)
    assert m.rcpt_tos == ["later@nomx.test"] and b"X-Test-Token: defer1" in m.data
    inst.wait_log(delivery_re(qid, "later@nomx.test", r"nomx\.test\[[\d.]+\]:\d+",
                              r"2\.0\.0", "sent"), timeout=TIMEOUT)
    inst.wait_log(rf"{qid}: removed$")
    wait_until(lambda: not inst.queue_files("deferred") and not inst.queue_files("defer"),
               10, "deferred/ and defer/ empty")
    assert len(sink.messages) == 1


def test_dead_destination_revived_by_postqueue_f(dns_server, alloc, smtp_sink, fulmar_instance):
    """A next hop that refuses connections is marked dead: the messages
    behind the first are deferred without a connection.  Once it listens
    again, `postqueue -f` revives it (at the initial concurrency window,
    as Postfix) and delivers every message exactly once, long before
    minimal_backoff_time would have (docs/performance.md, item 47)."""
    inst, _, port = relay_setup(
        dns_server, alloc, smtp_sink, fulmar_instance, [],
        main_cf={"minimal_backoff_time": "300s", "maximal_backoff_time": "600s",
                 "queue_run_delay": "300s"})
    count = 12
    tokens = [f"dead{i}" for i in range(count)]
    qids = [submit(inst.smtp_addr, "sender@a.test", [f"r{i}@nomx.test"],
                   make_message(token, "sender@a.test", [f"r{i}@nomx.test"]))
            for i, token in enumerate(tokens)]
    wait_until(lambda: len(inst.queue_files("deferred")) == count, TIMEOUT, "all in deferred/")
    inst.wait_log(r": to=<r\d+@nomx\.test>, .*status=deferred "
                  r"\(delivery temporarily suspended: ", timeout=TIMEOUT)
    sink = smtp_sink(host=dns_server.hosts["nomx.test"], port=port)
    assert not sink.messages
    r = inst.command("postqueue", "-f")
    assert r.returncode == 0, r.stderr
    got = sink.wait_for(count, timeout=TIMEOUT)
    for qid in qids:
        inst.wait_log(rf"{qid}: removed$", timeout=TIMEOUT)
    wait_until(lambda: not inst.queue_files("deferred") and not inst.queue_files("active"),
               10, "the queue empty")
    tokens_got = sorted(parse(m.data)["X-Test-Token"] for m in sink.messages)
    assert len(got) == count and tokens_got == sorted(tokens)


def test_5xx_for_one_of_three_recipients(dns_server, alloc, smtp_sink, fulmar_instance):
    # Recipients at example.test (mx1); the sender's domain is nomx.test, whose
    # host gets the DSN.
    inst, sinks, port = relay_setup(
        dns_server, alloc, smtp_sink, fulmar_instance, ["mx1.example.test", "nomx.test"],
        sink_options={"mx1.example.test": {"rules": {"b@example.test": "550 5.1.1 <b@example.test>: no such user"}}})
    mx1, home = sinks["mx1.example.test"], sinks["nomx.test"]
    rcpts = ["a@example.test", "b@example.test", "c@example.test"]
    data = make_message("three1", "sender@nomx.test", rcpts)
    with smtplib.SMTP(*inst.smtp_addr, timeout=TIMEOUT) as c:
        c.ehlo("client.test")
        assert c.mail("sender@nomx.test", ["RET=HDRS", "ENVID=env-three1"])[0] == 250
        for r in rcpts:
            code, _ = c.rcpt(r, ["NOTIFY=FAILURE", f"ORCPT=rfc822;orig-{r}"])
            assert code == 250
        code, resp = c.data(data)
        assert code == 250
    qid = resp.decode().rsplit(" ", 1)[1]
    (m,) = mx1.wait_for(1, timeout=TIMEOUT)
    assert sorted(m.rcpt_tos) == ["a@example.test", "c@example.test"]
    # DSN parameters are passed on to a peer that supports DSN
    assert m.mail_options.get("RET") == "HDRS" and m.mail_options.get("ENVID") == "env-three1"
    assert m.rcpt_options["a@example.test"].get("ORCPT", "").lower() == \
        "rfc822;orig-a@example.test"
    for r in ("a@example.test", "c@example.test"):
        inst.wait_log(delivery_re(qid, r, r"mx1\.example\.test\[[\d.]+\]:\d+", r"2\.0\.0",
                                  "sent"), timeout=TIMEOUT)
    (bline,) = inst.wait_log(delivery_re(qid, "b@example.test",
                                         r"mx1\.example\.test\[[\d.]+\]:\d+", r"5\.1\.1",
                                         "bounced"), timeout=TIMEOUT)
    assert ("host mx1.example.test[" in bline.group(1)
            and "said: 550 5.1.1 <b@example.test>: no such user (in reply to RCPT TO command)"
            in bline.group(1))
    (dsn,) = home.wait_for(1, timeout=TIMEOUT)
    inst.wait_log(rf"{qid}: sender non-delivery notification: (\w+)")
    inst.wait_log(rf"{qid}: removed$")
    assert dsn.mail_from == "" and dsn.rcpt_tos == ["sender@nomx.test"]
    msg = parse(dsn.data)
    assert msg["From"] and "MAILER-DAEMON" in msg["From"]
    assert msg["To"] and "sender@nomx.test" in msg["To"]
    assert msg["Auto-Submitted"] == "auto-replied"
    per_msg, per_rcpt = dsn_fields(msg)
    assert per_msg["reporting-mta"] == "dns; a.test"
    assert per_msg["original-envelope-id"] == "env-three1"
    assert per_msg.get("x-postfix-queue-id") == qid
    assert "arrival-date" in per_msg
    assert len(per_rcpt) == 1, per_rcpt
    r = per_rcpt[0]
    assert r["final-recipient"] == "rfc822; b@example.test"
    assert r["original-recipient"].replace("; ", ";") == "rfc822;orig-b@example.test"
    assert r["action"] == "failed"
    assert r["status"] == "5.1.1"
    assert r["remote-mta"] == "dns; mx1.example.test"
    assert r["diagnostic-code"] == "smtp; 550 5.1.1 <b@example.test>: no such user"
    # RET=HDRS: the third part is the headers only
    third = msg.get_payload()[2]
    assert third.get_content_type() == "text/rfc822-headers"
    assert b"X-Test-Token: three1" in dsn.data and b"body of three1" not in dsn.data
    # exactly one DSN, and nothing else arrives later
    time.sleep(1.5)
    assert len(home.messages) == 1 and len(mx1.messages) == 1


def test_lifetime_expiry_returns_mail(dns_server, alloc, smtp_sink, fulmar_instance):
    inst, sinks, port = relay_setup(
        dns_server, alloc, smtp_sink, fulmar_instance, ["nomx.test", "mx1.example.test"],
        main_cf={"maximal_queue_lifetime": "3s", "minimal_backoff_time": "1s",
                 "maximal_backoff_time": "1s", "queue_run_delay": "1s"},
        sink_options={"nomx.test": {"rules": {"slow@nomx.test": "452 4.2.2 mailbox full"}}})
    data = make_message("expire1", "sender@example.test", ["slow@nomx.test"])
    qid = submit(inst.smtp_addr, "sender@example.test", ["slow@nomx.test"], data)
    inst.wait_log(delivery_re(qid, "slow@nomx.test", r"nomx\.test\[[\d.]+\]:\d+", r"4\.2\.2",
                              "deferred"), timeout=TIMEOUT)
    inst.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<sender@example\.test>, "
                  rf"status=expired, returned to sender$", timeout=TIMEOUT)
    (dsn,) = sinks["mx1.example.test"].wait_for(1, timeout=TIMEOUT)
    inst.wait_log(rf"{qid}: removed$")
    assert dsn.mail_from == "" and dsn.rcpt_tos == ["sender@example.test"]
    per_msg, (r,) = dsn_fields(parse(dsn.data))
    assert r["final-recipient"] == "rfc822; slow@nomx.test"
    assert r["action"] == "failed"
    assert r["status"] == "4.2.2"
    assert r["diagnostic-code"] == "smtp; 452 4.2.2 mailbox full"
    assert not sinks["nomx.test"].messages
    wait_until(lambda: not any(inst.queue_files(q) for q in
                               ("deferred", "active", "incoming", "defer", "bounce")),
               10, "empty queues")


def test_relay_denied_outside_mynetworks(dns_server, alloc, smtp_sink, fulmar_instance):
    inside, outside = alloc.host(), alloc.host()
    # The usual production setting (the built-in default ends with
    # defer_unauth_destination, which answers 454 4.7.1).
    inst, sinks, port = relay_setup(
        dns_server, alloc, smtp_sink, fulmar_instance, ["nomx.test"],
        main_cf={"mynetworks": f"{inside}/32",
                 "smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, "
                                             "reject_unauth_destination"})
    with smtplib.SMTP(*inst.smtp_addr, timeout=TIMEOUT, source_address=(outside, 0)) as c:
        c.ehlo("outside.test")
        assert c.mail("spammer@outside.test")[0] == 250
        code, resp = c.rcpt("victim@nomx.test")
        assert (code, resp) == (554, b"5.7.1 <victim@nomx.test>: Relay access denied")
        assert c.docmd("DATA") == (554, b"5.5.1 Error: no valid recipients")
    inst.wait_log(rf"postfix/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[{re.escape(outside)}\]: "
                  rf"554 5\.7\.1 <victim@nomx\.test>: Relay access denied; "
                  rf"from=<spammer@outside\.test> to=<victim@nomx\.test> proto=ESMTP "
                  rf"helo=<outside\.test>")
    # the same relay from inside mynetworks is accepted
    qid = submit(inst.smtp_addr, "ok@inside.test", ["victim@nomx.test"],
                 make_message("inside1", "ok@inside.test", ["victim@nomx.test"]),
                 source_address=(inside, 0))
    (m,) = sinks["nomx.test"].wait_for(1, timeout=TIMEOUT)
    assert b"X-Test-Token: inside1" in m.data
    inst.wait_log(rf"{qid}: removed$")
    text = inst.log_text()
    # exactly one message entered the queue
    assert len(re.findall(r"postfix/cleanup\[\d+\]: \w+: message-id=", text)) == 1
    assert len(re.findall(r"\(queue active\)", text)) == 1


def test_delay_warning_sent_once(dns_server, alloc, smtp_sink, fulmar_instance):
    # Recipient at nomx.test keeps answering 4xx; the sender's domain
    # (example.test, mx1) gets the delay notice, once.
    inst, sinks, port = relay_setup(
        dns_server, alloc, smtp_sink, fulmar_instance, ["nomx.test", "mx1.example.test"],
        main_cf={"minimal_backoff_time": "1s", "maximal_backoff_time": "1s",
                 "queue_run_delay": "1s", "delay_warning_time": "2s"},
        sink_options={"nomx.test": {"rules": {"slow@nomx.test": "451 4.3.0 try later"}}})
    home = sinks["mx1.example.test"]
    data = make_message("warn1", "sender@example.test", ["slow@nomx.test"])
    qid = submit(inst.smtp_addr, "sender@example.test", ["slow@nomx.test"], data)
    inst.wait_log(rf"{qid}: sender delay notification: \w+", timeout=TIMEOUT)
    (notice,) = home.wait_for(1, timeout=TIMEOUT)
    assert notice.mail_from == "" and notice.rcpt_tos == ["sender@example.test"]
    msg = parse(notice.data)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    _, rcpts = dsn_fields(msg)
    assert [(f["action"], f["final-recipient"]) for f in rcpts] == [
        ("delayed", "rfc822; slow@nomx.test")], rcpts
    # more attempts happen after the notice, but no second notice
    attempts = len(inst.wait_log(delivery_re(qid, "slow@nomx.test", r"\S+", r"4\.3\.0", "deferred")))
    inst.wait_log(delivery_re(qid, "slow@nomx.test", r"\S+", r"4\.3\.0", "deferred"),
                  timeout=TIMEOUT, count=attempts + 2)
    assert len(re.findall(r"sender delay notification", inst.log_text())) == 1
    assert len(home.messages) == 1
    assert qid in inst.queue_files("deferred") or qid in inst.queue_files("active")
