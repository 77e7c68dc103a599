"""smtp_client: STARTTLS discard, AUTH, TLS policy parsing and certificate names."""

import base64
import ssl

import pytest
from hypothesis import given, settings, strategies as st

from fulmar import tlsconfig
from smtp_client import protocol as P
from smtp_client import tls_policy as TP

PEER = "mx.example.org[192.0.2.7]:25"


def client(**kw):
    c = P.Client(peer=PEER, helo_name="me.example.com", myhostname="me.example.com", **kw)
    c.receive(b"220 mx.example.org ESMTP\r\n")
    assert c.pull() == b"EHLO me.example.com\r\n"
    return c


def test_replies_after_starttls_220_are_discarded():
    c = client(tls="encrypt")
    c.receive(b"250-mx.example.org\r\n250 STARTTLS\r\n")
    assert c.pull() == b"STARTTLS\r\n"
    evs = c.receive(b"220 2.0.0 Ready\r\n250 2.1.0 injected\r\n")
    assert [type(e) for e in evs] == [P.StartTLS] and not c.closed
    assert c.receive(b"250 2.1.5 injected too\r\n") == []
    c.tls_established()
    assert c.pull() == b"EHLO me.example.com\r\n"
    evs = c.receive(b"250-mx.example.org\r\n250 PIPELINING\r\n")
    assert [type(e) for e in evs] == [P.Ready]


def test_encrypt_without_starttls_defers():
    c = client(tls="encrypt")
    evs = c.receive(b"250 mx.example.org\r\n")
    f = evs[-1].failure
    assert f.dsn == "4.7.4" and f.reason == f"TLS is required, but was not offered by host {PEER}"


def test_auth_plain_after_tls():
    creds = P.ClientSasl("alice", "pw", mechanisms=(), tls_mechanisms=("PLAIN", "LOGIN"))
    c = client(tls="encrypt", sasl=creds)
    c.receive(b"250-mx\r\n250-STARTTLS\r\n250 AUTH LOGIN PLAIN\r\n")
    assert c.pull() == b"STARTTLS\r\n"
    c.receive(b"220 go\r\n")
    c.tls_established()
    c.pull()
    c.receive(b"250-mx\r\n250 AUTH LOGIN PLAIN\r\n")
    assert c.pull() == b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw") + b"\r\n"
    evs = c.receive(b"235 2.7.0 Authentication successful\r\n")
    assert [type(e) for e in evs] == [P.Ready] and c.authenticated
    assert "pw" not in repr(creds)


def test_auth_login_and_failure_is_soft():
    c = client(sasl=P.ClientSasl("alice", "pw", mechanisms=("LOGIN",)))
    c.receive(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n")
    assert c.pull() == b"AUTH LOGIN\r\n"
    c.receive(b"334 VXNlcm5hbWU6\r\n")
    assert c.pull() == base64.b64encode(b"alice") + b"\r\n"
    c.receive(b"334 UGFzc3dvcmQ6\r\n")
    assert c.pull() == base64.b64encode(b"pw") + b"\r\n"
    evs = c.receive(b"535 5.7.8 Error: authentication failed: authentication failure\r\n")
    f = evs[-1].failure
    assert f.dsn == "4.7.8" and f.temporary
    assert f.reason == (f"SASL authentication failed; server {PEER} said: 535 5.7.8 Error: "
                        "authentication failed: authentication failure")


def test_auth_no_mechanism_and_no_auth_offered():
    c = client(sasl=P.ClientSasl("alice", "pw", mechanisms=()))
    evs = c.receive(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n")
    assert evs[-1].failure.reason == (f"SASL authentication failed; cannot authenticate to server "
                                      f"{PEER}: no mechanism available")
    c = client(sasl=P.ClientSasl("alice", "pw"))
    evs = c.receive(b"250 mx\r\n")
    assert [type(e) for e in evs] == [P.Ready]


# --- policy -----------------------------------------------------------------------

def test_parse_policy():
    p = TP.parse_policy("secure match=example.com:.example.com protocols=>=TLSv1.2")
    assert (p.level, p.match, p.protocols) == ("secure", ("example.com", ".example.com"), ">=TLSv1.2")
    assert TP.parse_policy("dane").level == "may" and TP.parse_policy("dane-only").level == "encrypt"
    for bad in ("", "bogus", "verify match"):
        with pytest.raises(ValueError):
            TP.parse_policy(bad)


def test_policy_keys():
    assert TP.policy_keys("mail.example.com") == ["mail.example.com", ".example.com", ".com"]
    assert TP.policy_keys("[relay.example]:587") == ["[relay.example]:587", "[relay.example]"]


def _cert(*names, cn=None):
    c = {"subjectAltName": tuple(("DNS", n) for n in names)}
    if cn:
        c["subject"] = ((("commonName", cn),),)
    return c


def test_cert_matches():
    assert TP.cert_matches(_cert("mx1.example.com"), ["mx1.example.com"])
    assert not TP.cert_matches(_cert("mx1.example.com"), ["mx2.example.com"])
    assert TP.cert_matches(_cert("*.example.com"), ["mx1.example.com"])
    assert not TP.cert_matches(_cert("*.example.com"), ["a.b.example.com"])
    assert not TP.cert_matches(_cert("*.example.com"), ["example.com"])
    assert TP.cert_matches(_cert("mx.example.com"), [".example.com"])
    assert TP.cert_matches(_cert("*.example.com"), [".example.com"])
    assert not TP.cert_matches(_cert("example.com"), [".example.com"])
    assert not TP.cert_matches(_cert("evilexample.com"), [".example.com"])
    assert TP.cert_matches(_cert(cn="mx.example.com"), ["mx.example.com"])
    assert not TP.cert_matches({}, ["x"]) and not TP.cert_matches(None, ["x"])


def test_trust_labels():
    assert TP.trust_label(True, True, True) == "Verified"
    assert TP.trust_label(True, False, True) == "Trusted"
    assert TP.trust_label(False, False, True) == "Untrusted"
    assert TP.trust_label(False, False, False) == "Anonymous"


# --- tlsconfig ----------------------------------------------------------------------

@pytest.mark.parametrize("text,lo,hi", [
    (">=TLSv1", ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_3),
    (">=TLSv1.2", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
    ("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
    ("TLSv1.2", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
    (">= TLSv1.2 <=TLSv1.2", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
    ("", ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_3),
])
def test_parse_protocols(text, lo, hi):
    assert tlsconfig.parse_protocols(text) == (lo, hi)


def test_parse_protocols_errors():
    for bad in ("TLSv9", ">=TLSv1.3 <=TLSv1.2", "SSLv3"):
        with pytest.raises(tlsconfig.TlsConfigError):
            tlsconfig.parse_protocols(bad)


@settings(deadline=None)
@given(st.text(max_size=60))
def test_parse_protocols_never_crashes(text):
    try:
        lo, hi = tlsconfig.parse_protocols(text)
        assert lo <= hi
    except tlsconfig.TlsConfigError:
        pass


def test_sni_keys():
    assert tlsconfig.sni_keys("Mail.Example.COM.") == ["mail.example.com", ".example.com", ".com"]
