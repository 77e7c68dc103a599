"""STARTTLS and AUTH in smtpd.protocol (sans-IO), smtpd.sasl, smtpd.login_maps."""

import base64

import pytest
from hypothesis import given, settings, strategies as st

from fulmar.smtp.reply import Reply
from smtpd import login_maps, protocol as P, sasl
from smtpd.dovecot_auth import auth_request, parse_handshake, parse_reply
from smtpd_support import Driver

SECRET = "s3cret-Pa55"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PLAIN_OK = b64(b"\0alice\0" + SECRET.encode())


def checker(e):
    if isinstance(e, P.Authenticate):
        c = e.credentials
        return sasl.AUTH_OK if (c.username, c.password) == ("alice", SECRET) else \
            sasl.auth_failed("authentication failure")
    return None


def tls_session(**kw):
    base = dict(starttls_available=True, auth_enabled=True, auth_mechanisms=("PLAIN", "LOGIN"),
                auth_mechanisms_without_tls=())
    base.update(kw)
    d = Driver(decide=checker, **base)
    d.replies()
    return d


def handshake(d):
    """What the shell does after the 220: the handshake, then reset_after_tls()."""
    d.p.reset_after_tls()
    d.send(b"")


# --- STARTTLS ---------------------------------------------------------------

def test_starttls_discards_pipelined_plaintext_cve_2011_0411():
    d = tls_session(forbid_unauth_pipelining=False)
    d.send(b"EHLO c\r\n")
    assert "250-STARTTLS" in d.replies()
    d.send(b"STARTTLS\r\nMAIL FROM:<injected@x>\r\n")
    assert d.replies() == ["220 2.0.0 Ready to start TLS"]
    d.send(b"RCPT TO:<more@x>\r\n")           # before the handshake: ignored
    assert d.replies() == [] and not d.of(P.MailFrom)
    handshake(d)
    assert not d.of(P.MailFrom) and d.p.helo_name is None and d.p.tls_active
    d.send(b"RCPT TO:<x@y>\r\n")
    assert d.replies() == ["503 5.5.1 Error: need MAIL command"]
    d.send(b"EHLO c\r\n")
    r = d.replies()
    assert "250-STARTTLS" not in r and "250-AUTH PLAIN LOGIN" in r
    d.send(b"STARTTLS\r\n")
    assert d.replies() == ["554 5.5.1 Error: TLS already active"]
    assert "starttls=1/2" in d.p.command_stats()


def test_starttls_with_pipelining_forbidden_disconnects():
    d = tls_session()
    d.send(b"EHLO c\r\n")
    d.replies()
    d.send(b"STARTTLS\r\nMAIL FROM:<x@y>\r\n")
    assert d.replies() == ["554 5.5.0 Error: SMTP protocol synchronization"]
    assert d.p.closing


def test_starttls_refusals():
    d = tls_session(starttls_available=False)
    d.send(b"STARTTLS\r\n")
    assert d.replies() == ["502 5.5.1 Error: command not implemented"]
    d = tls_session()
    d.send(b"STARTTLS now\r\n")
    assert d.replies() == ["501 5.5.4 Syntax: STARTTLS"]
    d = Driver(decide=lambda e: Reply(454, "4.7.0", "TLS not available due to local problem")
               if isinstance(e, P.StartTls) else None, starttls_available=True)
    d.replies()
    d.send(b"STARTTLS\r\n")
    assert d.replies() == ["454 4.7.0 TLS not available due to local problem"]


def test_encrypt_level_requires_starttls_before_mail():
    d = tls_session(tls_required=True)
    d.send(b"EHLO c\r\n")
    d.send(b"MAIL FROM:<a@b>\r\n")
    assert d.replies()[-1] == "530 5.7.0 Must issue a STARTTLS command first"


def test_wrapper_mode_starts_with_tls_and_offers_no_starttls():
    d = tls_session(tls_wrapper=True, starttls_available=False)
    d.send(b"EHLO c\r\n")
    r = d.replies()
    assert "250-STARTTLS" not in r and "250-AUTH PLAIN LOGIN" in r


# --- AUTH ---------------------------------------------------------------------

def authed(**kw):
    d = tls_session(**kw)
    d.send(b"EHLO c\r\n")
    d.send(b"STARTTLS\r\n")
    d.replies()
    handshake(d)
    d.send(b"EHLO c\r\n")
    d.replies()
    return d


def test_auth_not_enabled_and_before_tls():
    d = tls_session(auth_enabled=False)
    d.send(b"EHLO c\r\n")
    assert not [x for x in d.replies() if "AUTH" in x]
    d.send(b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n")
    assert d.replies() == ["503 5.5.1 Error: authentication not enabled"]
    d = tls_session()
    d.send(b"EHLO c\r\n")
    assert not [x for x in d.replies() if "AUTH" in x]
    d.send(b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n")
    assert d.replies() == ["538 5.7.11 Encryption required for requested authentication mechanism"]
    assert not d.of(P.Authenticate)


def test_auth_plain_success_then_twice():
    d = authed()
    d.send(b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n")
    assert d.replies() == ["235 2.7.0 Authentication successful"]
    assert (d.p.sasl_username, d.p.sasl_method) == ("alice", "PLAIN")
    d.send(b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n")
    assert d.replies() == ["503 5.5.1 Error: already authenticated"]
    assert "auth=1/2" in d.p.command_stats()


def test_auth_plain_empty_initial_response_and_challenge():
    d = authed()
    d.send(b"AUTH PLAIN\r\n")
    assert d.replies() == ["334 "]     # Postfix: "334 %s" with an empty challenge
    d.send(PLAIN_OK.encode() + b"\r\n")
    assert d.replies() == ["235 2.7.0 Authentication successful"]


def test_auth_wrong_password_and_cancel_and_garbage():
    d = authed()
    d.send(b"AUTH PLAIN " + b64(b"\0alice\0wrong").encode() + b"\r\n")
    assert d.replies() == ["535 5.7.8 Error: authentication failed: authentication failure"]
    d.send(b"AUTH LOGIN\r\n")
    assert d.replies() == ["334 VXNlcm5hbWU6"]
    d.send(b"*\r\n")
    assert d.replies() == ["501 5.7.0 Authentication aborted"]
    ab = d.of(P.AuthAborted)
    assert ab and ab[-1].reply is sasl.AUTH_ABORTED
    d.send(b"AUTH LOGIN\r\n")
    d.send(b"%%%\r\n")
    assert d.replies() == ["334 VXNlcm5hbWU6", "501 5.5.2 Cannot decode response"]
    d.send(b"AUTH CRAM-MD5\r\n")
    assert d.replies() == ["504 5.5.4 Unrecognized authentication type"]
    d.send(b"AUTH\r\n")
    assert d.replies() == ["501 5.5.4 Syntax: AUTH mechanism"]
    assert d.p.sasl_username is None


def test_auth_login_exchange():
    d = authed()
    d.send(b"AUTH LOGIN " + b64(b"alice").encode() + b"\r\n")
    assert d.replies() == ["334 UGFzc3dvcmQ6"]
    d.send(b64(SECRET.encode()).encode() + b"\r\n")
    assert d.replies() == ["235 2.7.0 Authentication successful"]
    assert d.p.sasl_method == "LOGIN"


def test_auth_too_weak_in_transaction_line_too_long():
    d = authed(auth_mechanisms=("LOGIN",))
    d.send(b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n")
    assert d.replies() == ["534 5.7.9 Authentication mechanism is too weak"]
    d.send(b"MAIL FROM:<a@b>\r\n")
    d.replies()
    d.send(b"AUTH LOGIN\r\n")
    assert d.replies() == ["503 5.5.1 Error: MAIL transaction in progress"]
    d = authed(sasl_response_limit=20)
    d.send(b"AUTH LOGIN\r\n")
    d.send(b"A" * 40 + b"\r\n")
    assert d.replies() == ["334 VXNlcm5hbWU6", "500 5.5.6 Authentication exchange line is too long"]


def test_auth_without_tls_when_allowed():
    d = tls_session(auth_mechanisms_without_tls=("PLAIN",))
    d.send(b"EHLO c\r\n")
    assert "250-AUTH PLAIN" in d.replies()
    d.send(b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n")
    assert d.replies() == ["235 2.7.0 Authentication successful"]


def test_auth_hidden_for_exception_networks():
    d = tls_session(auth_mechanisms_without_tls=("PLAIN",), auth_hidden=True)
    d.send(b"EHLO c\r\n")
    assert not [x for x in d.replies() if "AUTH" in x]


def test_pipelined_auth_never_exposes_the_password():
    d = authed()
    d.send(b"AUTH LOGIN\r\n" + b64(b"alice").encode() + b"\r\n" + b64(SECRET.encode()).encode() + b"\r\n")
    ev = d.of(P.ImproperPipelining)
    assert ev and ev[0].pending == b""
    assert SECRET not in repr(d.events) and b64(SECRET.encode()) not in repr(d.events)


def test_credentials_repr_hides_password():
    c = sasl.Credentials("PLAIN", "alice", SECRET)
    assert SECRET not in repr(c) and SECRET not in str(P.Authenticate(c))


def test_starttls_resets_login():
    d = tls_session(auth_mechanisms_without_tls=("PLAIN",))
    d.send(b"EHLO c\r\n")
    d.send(b"AUTH PLAIN " + PLAIN_OK.encode() + b"\r\n")
    d.replies()
    assert d.p.sasl_username == "alice"
    d.send(b"STARTTLS\r\n")
    handshake(d)
    assert d.p.sasl_username is None


# --- the exchange as a parser ---------------------------------------------------

@settings(deadline=None)
@given(st.text(max_size=200))
def test_exchange_never_raises(line):
    for mech in ("PLAIN", "LOGIN"):
        ex = sasl.ServerExchange(mech, None)
        ex.start()
        step = ex.respond(line)
        assert isinstance(step, (sasl.Challenge, sasl.Failed, sasl.Credentials))
        if isinstance(step, sasl.Challenge):
            ex.respond(line)


@settings(deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\0\r\n", blacklist_categories=("Cs",)),
               min_size=1, max_size=40),
       st.text(alphabet=st.characters(blacklist_characters="\0\r\n", blacklist_categories=("Cs",)),
               max_size=40))
def test_plain_round_trip(user, pw):
    raw = b64(b"\0" + user.encode() + b"\0" + pw.encode())
    step = sasl.ServerExchange("PLAIN", raw).start()
    assert isinstance(step, sasl.Credentials) and (step.username, step.password) == (user, pw)


def test_plain_authzid_must_be_the_user():
    step = sasl.ServerExchange("PLAIN", b64(b"bob\0alice\0x")).start()
    assert isinstance(step, sasl.Failed)
    step = sasl.ServerExchange("PLAIN", b64(b"alice\0alice\0x")).start()
    assert isinstance(step, sasl.Credentials)


def test_allowed_mechanisms():
    assert sasl.allowed_mechanisms(["noanonymous"]) == ("PLAIN", "LOGIN")
    assert sasl.allowed_mechanisms(["noplaintext", "noanonymous"]) == ()


# --- hashes, password file, brake -------------------------------------------------

def test_scrypt_hash_round_trip():
    h = sasl.hash_password(SECRET, log_n=4)
    assert h.startswith("$scrypt$ln=4,r=8,p=1$") and SECRET not in h
    assert sasl.verify_password(SECRET, h)
    assert not sasl.verify_password("wrong", h)
    assert sasl.hash_password(SECRET, log_n=4) != h     # salted


def test_pbkdf2_and_bad_hashes():
    import hashlib
    salt = b"0123456789abcdef"
    dk = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 20000)
    stored = f"$pbkdf2-sha256$20000${sasl._b64(salt)}${sasl._b64(dk)}"
    assert sasl.verify_password("pw", stored) and not sasl.verify_password("px", stored)
    weak = f"$pbkdf2-sha256$10${sasl._b64(salt)}${sasl._b64(dk)}"
    for bad in ("pw", "{PLAIN}pw", "", "$scrypt$garbage", weak, "$scrypt$ln=40,r=8,p=1$AA$AA"):
        assert not sasl.verify_password("pw", bad)


async def test_password_file_backend(tmp_path):
    f = tmp_path / "smtpd.passwd"
    f.write_text(f"# users\nalice:{sasl.hash_password(SECRET, log_n=4)}\n")
    be = sasl.PasswordFile(str(f))
    ok = await be.authenticate(sasl.Credentials("PLAIN", "alice", SECRET), sasl.ClientInfo("192.0.2.1"))
    bad = await be.authenticate(sasl.Credentials("PLAIN", "alice", "nope"), sasl.ClientInfo("192.0.2.1"))
    nouser = await be.authenticate(sasl.Credentials("PLAIN", "bob", SECRET), sasl.ClientInfo("192.0.2.1"))
    assert (ok.status, bad.status, nouser.status) == (sasl.OK, sasl.FAIL, sasl.FAIL)
    missing = await sasl.PasswordFile(str(tmp_path / "none")).authenticate(
        sasl.Credentials("PLAIN", "alice", SECRET), sasl.ClientInfo("192.0.2.1"))
    assert missing.status == sasl.TEMP


def test_auth_brake():
    now = [0.0]
    b = sasl.AuthBrake(2, 60, clock=lambda: now[0])
    assert b.allow("a") and b.allow("a") and not b.allow("a") and b.allow("b")
    now[0] = 61
    assert b.allow("a")
    assert all(sasl.AuthBrake(0, 60).allow("a") for _ in range(100))


# --- Dovecot protocol -------------------------------------------------------------

def test_dovecot_protocol_lines():
    mechs = parse_handshake(["VERSION\t1\t2", "MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext",
                             "SPID\t1", "CUID\t2", "COOKIE\tab"])
    assert mechs == {"PLAIN", "LOGIN"}
    with pytest.raises(ValueError):
        parse_handshake(["VERSION\t2\t0"])
    line = auth_request(7, sasl.Credentials("PLAIN", "alice", "pw"),
                        sasl.ClientInfo("192.0.2.1", 4000, "192.0.2.2", 25, tls=True), "smtp")
    fields = line.decode().rstrip("\n").split("\t")
    assert fields[:5] == ["AUTH", "7", "PLAIN", "service=smtp", "nologin"]
    assert "secured" in fields and "rip=192.0.2.1" in fields
    assert fields[-1] == "resp=" + b64(b"\0alice\0pw")
    assert parse_reply("OK\t7\tuser=alice") == ("OK", 7, {"user": "alice"})
    assert parse_reply("FAIL\t3\treason=bad\x01tthing\ttemp") == ("FAIL", 3, {"reason": "bad\tthing", "temp": ""})
    with pytest.raises(ValueError):
        parse_reply("HELLO")


# --- smtpd_sender_login_maps --------------------------------------------------------

class _Table:
    name = "inline:test"

    def __init__(self, data, retry=False):
        self.data, self.retry = data, retry

    def lookup(self, key):
        from fulmar import tables
        if self.retry:
            return tables.Result(tables.RETRY)
        v = self.data.get(key)
        return tables.Result(tables.FOUND, v) if v is not None else tables.NOT_FOUND


class _Policy:
    class s:
        class cfg:
            @staticmethod
            def get(name):
                return ["inline:test"]

    class mydestination:
        @staticmethod
        def match(domain):
            return domain == "example.com"

    def __init__(self, table):
        self.table = table

    def _table(self, spec):
        return self.table


class _Client:
    def __init__(self, user=None):
        self.sasl_username = user


class _Path:
    def __init__(self, address):
        self.address = address


async def test_sender_login_mismatch():
    pol = _Policy(_Table({"alice@example.com": "alice, admin", "@shared.example": "bob"}))
    chk = login_maps.check
    assert (await chk(pol, "reject_sender_login_mismatch", _Client("alice"), _Path("alice@example.com")))[0] == "dunno"
    v, r = await chk(pol, "reject_sender_login_mismatch", _Client("bob"), _Path("alice@example.com"))
    assert v == "reject" and str(r) == "553 5.7.1 <alice@example.com>: Sender address rejected: not owned by user bob"
    v, r = await chk(pol, "reject_sender_login_mismatch", _Client(None), _Path("alice@example.com"))
    assert str(r) == "553 5.7.1 <alice@example.com>: Sender address rejected: not logged in"
    assert (await chk(pol, "reject_authenticated_sender_login_mismatch", _Client(None),
                      _Path("alice@example.com")))[0] == "dunno"
    assert (await chk(pol, "reject_authenticated_sender_login_mismatch", _Client("alice"),
                      _Path("other@example.net")))[0] == "reject"
    assert (await chk(pol, "reject_known_sender_login_mismatch", _Client("alice"),
                      _Path("other@example.net")))[0] == "dunno"
    assert (await chk(pol, "reject_sender_login_mismatch", _Client("bob"), _Path("x@shared.example")))[0] == "dunno"
    assert (await chk(pol, "reject_sender_login_mismatch", _Client("bob"), _Path("")))[0] == "dunno"
    v, r = await chk(_Policy(_Table({}, retry=True)), "reject_sender_login_mismatch", _Client("a"), _Path("a@b"))
    assert r.code == 451
