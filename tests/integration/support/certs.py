"""Test certificates: a throwaway CA and server certificates it signs.

    ca = TestCA.create("Fulmar Test CA")
    cert = ca.issue(outdir, "mx1.example.test", names=["mx2.example.test"],
                    ips=["127.20.0.5"])
    cert.cert_path, cert.key_path, cert.chain_path (leaf + CA), ca.cert_path (after ca.write(dir))
    cert.server_context() -> ssl.SSLContext    # for a test TLS server
    ca.client_context() -> ssl.SSLContext      # verifies against this CA only
    cert.spki_sha256() -> hex                  # for TLSA "3 1 1" records

The extensions are the ones Python 3.13's default VERIFY_X509_STRICT
requires: the CA has basicConstraints CA:TRUE (critical), keyUsage
keyCertSign/cRLSign (critical) and a subjectKeyIdentifier; the leaf has
basicConstraints CA:FALSE, keyUsage digitalSignature (+keyEncipherment for
RSA), extendedKeyUsage serverAuth/clientAuth, subjectAltName, and
authority/subject key identifiers.  Keys are ECDSA P-256 (fast to make).
Nothing here touches the network.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 30
BACKDATE = datetime.timedelta(hours=1)    # tolerate clocks a little behind


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class IssuedCert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path
    chain_path: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.chain_path), str(self.key_path))
        return ctx

    def spki_sha256(self) -> str:
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(spki).hexdigest()


class TestCA:
    __test__ = False     # not a pytest test class despite the name

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert, self.key = cert, key
        self.cert_path: Path | None = None

    @classmethod
    def create(cls, common_name: str = "Fulmar Test CA") -> "TestCA":
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    def write(self, outdir: str | Path) -> Path:
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = outdir / "ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path = outdir / "ca.key"
        key_path.write_bytes(_pem_key(self.key))
        key_path.chmod(0o600)
        return self.cert_path

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.pem().decode())
        # Python 3.13 sets this by default; set it here so 3.12 checks the same.
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        return ctx

    def issue(self, outdir: str | Path, common_name: str, names: list[str] = (),
              ips: list[str] = (), basename: str | None = None) -> IssuedCert:
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = [x509.DNSName(n) for n in dict.fromkeys([common_name, *names])]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        base = basename or common_name
        cert_path, key_path, chain_path = (outdir / f"{base}.pem", outdir / f"{base}.key",
                                           outdir / f"{base}.chain.pem")
        leaf = cert.public_bytes(serialization.Encoding.PEM)
        cert_path.write_bytes(leaf)
        chain_path.write_bytes(leaf + self.pem())
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return IssuedCert(cert, key, cert_path, key_path, chain_path)
