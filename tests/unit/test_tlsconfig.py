"""fulmar.tlsconfig: server contexts from Postfix parameters, SNI selection."""

import base64
import ssl
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from support import certs  # noqa: E402

from fulmar import tables, tlsconfig  # noqa: E402


class Cfg:
    def __init__(self, **values):
        self.values = values

    def get(self, name):
        return self.values.get(name)     # None: the parameter's default


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = certs.TestCA.create()
    default = ca.issue(d, "mx.example.test")
    other = ca.issue(d, "other.example.test")
    both = d / "other.all.pem"
    both.write_bytes(other.key_path.read_bytes() + other.chain_path.read_bytes())
    return ca, default, other, both


def test_server_context_from_chain_files_and_errors(pki, tmp_path):
    ca, default, _other, both = pki
    ctx = tlsconfig.server_context(Cfg(smtpd_tls_chain_files=[str(both)], smtpd_tls_protocols=">=TLSv1.2"))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.verify_mode == ssl.CERT_NONE
    ctx = tlsconfig.server_context(Cfg(smtpd_tls_cert_file=str(default.chain_path),
                                       smtpd_tls_key_file=str(default.key_path)), mandatory=True)
    with pytest.raises(tlsconfig.TlsConfigError, match="no certificate configured"):
        tlsconfig.server_context(Cfg())
    with pytest.raises(tlsconfig.TlsConfigError, match="No such file"):
        tlsconfig.server_context(Cfg(smtpd_tls_cert_file=str(tmp_path / "missing.pem")))
    with pytest.raises(tlsconfig.TlsConfigError, match="unknown cipher grade"):
        tlsconfig.server_context(Cfg(smtpd_tls_chain_files=[str(both)], smtpd_tls_ciphers="super"))


class _Table:
    name = "test:sni"

    def __init__(self, data, retry=False):
        self.data, self.retry = data, retry

    def lookup(self, key):
        if self.retry:
            return tables.Result(tables.RETRY)
        v = self.data.get(key)
        return tables.Result(tables.FOUND, v) if v else tables.NOT_FOUND


def test_sni_selector_files_blobs_and_retry(pki):
    _ca, _default, other, both = pki
    made = []

    def make(certs_):
        made.append(certs_)
        return tlsconfig.server_context(Cfg(), certificates=certs_)
    blob = base64.b64encode(both.read_bytes()).decode()
    sel = tlsconfig.SniSelector(_Table({"other.example.test": str(both), ".blob.test": blob}), make)
    assert isinstance(sel.context_for("Other.Example.Test"), ssl.SSLContext)
    assert made[-1] == [(str(both), None, "tls_server_sni_maps")]
    assert isinstance(sel.context_for("x.blob.test"), ssl.SSLContext)
    assert sel.context_for("unknown.test") is None
    n = len(made)
    sel.context_for("other.example.test")          # cached
    assert len(made) == n
    with pytest.raises(LookupError):
        tlsconfig.SniSelector(_Table({}, retry=True), make).context_for("a.test")


def test_sni_handshake_switches_certificate(pki):
    ca, default, _other, both = pki
    ctx = tlsconfig.server_context(Cfg(smtpd_tls_cert_file=str(default.chain_path),
                                       smtpd_tls_key_file=str(default.key_path)))
    sel = tlsconfig.SniSelector(_Table({"other.example.test": str(both)}),
                                lambda c: tlsconfig.server_context(Cfg(), certificates=c))
    sel.install(ctx)
    client = ca.client_context()
    for name in ("other.example.test", "mx.example.test"):
        cin, cout, sin, sout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        c = client.wrap_bio(cin, cout, server_hostname=name)
        s = ctx.wrap_bio(sin, sout, server_side=True)
        for _ in range(10):
            for obj in (c, s):
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            sin.write(cout.read())
            cin.write(sout.read())
        assert c.getpeercert()["subjectAltName"][0] == ("DNS", name)   # verified against the name
