"""master.cf parsing."""

import pathlib

import pytest
from hypothesis import given, settings, strategies as st

from fulmar.config import ConfigError
from fulmar.config.mastercf import parse_master_cf, parse_master_cf_text

CONF = pathlib.Path(__file__).resolve().parents[3] / "conf"


def one(text):
    [svc] = parse_master_cf_text(text, "m.cf")
    return svc


def test_stock_master_cf():
    services = {s.key: s for s in parse_master_cf(str(CONF / "master.cf"))}
    for key in ("smtp/inet", "submission/inet", "submissions/inet", "pickup/unix",
                "cleanup/unix", "qmgr/unix", "bounce/unix", "defer/unix", "trace/unix",
                "smtp/unix", "relay/unix", "local/unix", "virtual/unix", "lmtp/unix",
                "showq/unix", "error/unix", "retry/unix", "discard/unix", "postlog/unix-dgram"):
        assert key in services, key
    smtp = services["smtp/inet"]
    assert (smtp.port, smtp.host, smtp.private, smtp.chroot, smtp.command) == ("25", None, False, False, "smtpd")
    sub = services["submission/inet"]
    assert sub.port == "587"
    assert sub.overrides["syslog_name"] == "postfix/submission"
    assert sub.overrides["smtpd_tls_security_level"] == "encrypt"
    assert sub.overrides["smtpd_sasl_auth_enable"] == "yes"
    assert sub.overrides["smtpd_relay_restrictions"] == "permit_sasl_authenticated,reject"
    subs = services["submissions/inet"]
    assert subs.port == "465" and subs.overrides["smtpd_tls_wrappermode"] == "yes"
    qmgr = services["qmgr/unix"]
    assert (qmgr.wakeup, qmgr.maxproc, qmgr.private) == ("300", 1, False)
    assert services["tlsmgr/unix"].wakeup == "1000?"
    assert services["relay/unix"].overrides == {"syslog_name": "postfix/$service_name"}


def test_dash_defaults():
    svc = one("x unix - - - - - smtp\n")
    assert (svc.private, svc.unpriv, svc.chroot, svc.wakeup, svc.maxproc) == (True, True, False, "0", None)
    assert svc.fields == ("x", "unix", "-", "-", "-", "-", "-", "smtp")


@pytest.mark.parametrize("name, host, port", [
    ("[::1]:2525", "::1", "2525"), ("127.0.0.2:2525", "127.0.0.2", "2525"),
    ("2525", None, "2525"), ("smtp", None, "25"), ("submission", None, "587"),
    ("submissions", None, "465"), ("*:2525", None, "2525"),
    ("localhost:smtp", "localhost", "25"), ("[2001:db8::1]:587", "2001:db8::1", "587"),
])
def test_inet_names(name, host, port):
    svc = one(f"{name} inet n - n - - smtpd\n")
    assert (svc.host, svc.port, svc.name) == (host, port, name)


def test_continuation_comments_and_options():
    svc = one("# head\nsmtp inet n - n - 4 smtpd -v\n  -o smtpd_tls_security_level=may\n"
              "# inner comment\n\n  -o { smtpd_banner = $myhostname says hi }\n"
              "  -osyslog_name=postfix/x\n")
    assert svc.lineno == 2 and svc.maxproc == 4
    assert svc.args == ["-v"]
    assert svc.overrides == {"smtpd_tls_security_level": "may",
                             "smtpd_banner": "$myhostname says hi",
                             "syslog_name": "postfix/x"}


def test_pipe_arguments_kept():
    svc = one("maildrop unix - n n - - pipe\n  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}\n")
    assert svc.args == ["flags=DRXhu", "user=vmail", "argv=/usr/bin/maildrop", "-d", "${recipient}"]


@pytest.mark.parametrize("text, message", [
    ("smtp inet n - n - -\n", "m.cf:1: bad field count"),
    ("smtp tcp n - n - - smtpd\n", "m.cf:1: bad transport type: tcp"),
    ("smtp inet x - n - - smtpd\n", "m.cf:1: bad private field: \"x\""),
    ("smtp inet n - n soon - smtpd\n", "m.cf:1: bad wakeup time"),
    ("smtp inet n - n - many smtpd\n", "m.cf:1: bad process count"),
    ("nosuchport inet n - n - - smtpd\n", "m.cf:1: unknown service: nosuchport/tcp"),
    ("[::1 inet n - n - - smtpd\n", "m.cf:1: bad inet service name"),
    ("\u00b2 inet n - n - - smtpd\n", "m.cf:1: unknown service"),
    ("a\0b inet n - n - - smtpd\n", "m.cf:1: unknown service"),
    ("x unix - - n - \u00b2 smtp\n", "m.cf:1: bad process count"),
    ("99999 inet n - n - - smtpd\n", "m.cf:1: bad port number"),
    ("x unix - - n - - smtp -o\n", "m.cf:1: -o without name=value"),
    ("x unix - - n - - smtp -o novalue\n", "m.cf:1: bad -o option"),
    ("x unix - - n - - smtp -o { a = b\n", "m.cf:1: unbalanced"),
    ("x unix - - n - - smtp\n#\nx unix - - n - - smtp\n", "m.cf:3: duplicate service name"),
])
def test_errors(text, message):
    with pytest.raises(ConfigError) as e:
        parse_master_cf_text(text, "m.cf")
    assert str(e.value).startswith(message)


def test_same_name_different_type_is_fine():
    assert len(parse_master_cf_text("smtp inet n - n - - smtpd\nsmtp unix - - n - - smtp\n")) == 2


@settings(max_examples=300)
@given(st.text())
def test_parser_never_raises_anything_but_config_error(text):
    try:
        parse_master_cf_text(text, "m.cf")
    except ConfigError:
        pass


FIELD = st.sampled_from(["-", "y", "n", "0", "1", "60?", "x", "", "[::1]:25", "smtp", "inet",
                         "unix", "fifo", "pass", "-o", "a=b", "{ a = b }", "{", "}", "\u00b2"])


@settings(max_examples=300)
@given(st.lists(st.lists(FIELD, min_size=1, max_size=12), max_size=5))
def test_structured_lines_never_raise_anything_but_config_error(rows):
    text = "".join(" ".join(r) + "\n" for r in rows)
    try:
        for svc in parse_master_cf_text(text, "m.cf"):
            assert svc.type in ("inet", "unix", "unix-dgram", "fifo", "pass")
    except ConfigError:
        pass
