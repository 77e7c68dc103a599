"""Header address rewriting in cleanup (issue 5), end to end.

Mail submitted with sendmail (pickup → cleanup, rewrite context "local")
goes through a real Fulmar to a sink via relayhost; the sink sees From:
and To: rewritten by canonical_maps and From: masqueraded by
masquerade_domains, with every other byte of the headers and the body as
submitted.
"""
from __future__ import annotations

FAST = {"default_worker_processes": "1"}
TIMEOUT = 60


def _instance(fulmar_instance, smtp_sink):
    sink = smtp_sink()
    inst = fulmar_instance(main_cf={
        **FAST, "relayhost": f"[{sink.host}]:{sink.port}", "smtp_dns_support_level": "disabled",
        "canonical_maps": "inline:{alice@a.test=alice.smith@a.test, bob@b.test=robert@b.test}",
        "masquerade_domains": "a.test"})
    return inst, sink


def _headers(m) -> bytes:
    return m.data.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def test_canonical_maps_rewrite_from_and_to(fulmar_instance, smtp_sink):
    inst, sink = _instance(fulmar_instance, smtp_sink)
    msg = (b'From: "Alice A." <alice@a.test>\nTo: Bob <bob@b.test>,\n\tcarol@c.test (Carol)\n'
           b"Subject: from alice@a.test to bob@b.test\nX-Keep: <bob@b.test>\n\n"
           b"To: bob@b.test in the body\n")
    r = inst.command("sendmail", "-i", "-f", "alice@a.test", "bob@b.test", input=msg)
    assert r.returncode == 0, r.stderr
    (m,) = sink.wait_for(1, timeout=TIMEOUT)
    assert m.mail_from == "alice.smith@a.test" and m.rcpt_tos == ["robert@b.test"]
    head = _headers(m)
    assert b'\r\nFrom: "Alice A." <alice.smith@a.test>\r\n' in head
    assert b"\r\nTo: Bob <robert@b.test>,\r\n\tcarol@c.test (Carol)\r\n" in head
    assert b"\r\nSubject: from alice@a.test to bob@b.test\r\n" in head
    assert b"\r\nX-Keep: <bob@b.test>\r\n" in head
    assert m.data.endswith(b"\r\n\r\nTo: bob@b.test in the body\r\n")


def test_masquerade_domains_on_from(fulmar_instance, smtp_sink):
    inst, sink = _instance(fulmar_instance, smtp_sink)
    msg = (b"From: Build Robot <ops@build.host.a.test>\nTo: dev@d.test\n"
           b"Cc: list@lists.a.test\nSubject: masq\n\nbody\n")
    r = inst.command("sendmail", "-i", "-f", "ops@build.host.a.test", "dev@d.test", input=msg)
    assert r.returncode == 0, r.stderr
    (m,) = sink.wait_for(1, timeout=TIMEOUT)
    assert m.mail_from == "ops@a.test"           # envelope_sender is a masquerade class too
    head = _headers(m)
    assert b"\r\nFrom: Build Robot <ops@a.test>\r\n" in head
    assert b"\r\nCc: list@a.test\r\n" in head   # header_recipient (default masquerade_classes)
    assert b"\r\nTo: dev@d.test\r\n" in head
