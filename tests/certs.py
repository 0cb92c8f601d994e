"""Throwaway certificates for TLS tests: a CA, server and client certificates, an unrelated CA.

Everything is generated with ``cryptography`` (EC P-256 keys, valid for a day) into a
folder that other users can read, because mosquitto started as root drops to its own
user before it reads the certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, in PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class TestPki:
    """The files of one test PKI; ``other_ca`` signed nothing here."""

    __test__ = False  # not a test class, despite its name

    folder: Path
    ca: Issued
    server: Issued
    client: Issued
    other_ca: Issued

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server-side context with the server certificate (for the simulated NVR)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server.cert, self.server.key)
        if require_client_cert:
            context.load_verify_locations(cafile=self.ca.cert)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self, *, with_client_cert: bool = False) -> ssl.SSLContext:
        """A client-side context trusting the CA (for subscribers in tests)."""
        context = ssl.create_default_context(cafile=self.ca.cert)
        if with_client_cert:
            context.load_cert_chain(self.client.cert, self.client.key)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nvr-bridge tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path in (cert_path, key_path):
        path.chmod(0o644)
    return Issued(cert_path, key_path)


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _ca(subject: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(subject, _name(subject), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    subject: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(folder: Path) -> TestPki:
    """Generate the CA, a server cert for 127.0.0.1 and localhost, a client cert, another CA."""
    ca = _ca("nvr-bridge test CA")
    other = _ca("an unrelated CA")
    server = _leaf(
        "127.0.0.1",
        ca,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client = _leaf("nvr-bridge", ca, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return TestPki(
        folder=folder,
        ca=_write(folder, "ca", *ca),
        server=_write(folder, "server", *server),
        client=_write(folder, "client", *client),
        other_ca=_write(folder, "other-ca", *other),
    )


@contextmanager
def readable_folder() -> Iterator[Path]:
    """A temporary folder every user may read (pytest's tmp_path has 0700 parents)."""
    folder = Path(tempfile.mkdtemp(prefix="nvr-bridge-tls-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
