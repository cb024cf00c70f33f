"""TLS for the DICOM and web ports (PS3.15 BCP 195), and development certificates.

The contexts follow the BCP 195 non-downgrading profile: TLS 1.2 or newer,
forward-secret AEAD cipher suites only. `make_ca` / `make_certificate` write a
development CA and certificates signed by it (``dicomnode tls``); a hospital
deployment uses certificates from its own PKI in the same files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dicomnode.config import Config, RemoteAE

# BCP 195 (RFC 9325) recommended TLS 1.2 suites; TLS 1.3 suites are all AEAD.
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM"


def _context(purpose: ssl.Purpose, config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.load_cert_chain(config.tls_certificate, config.tls_private_key)
    return context


def server_context(config: Config, *, client_certificates: bool = True) -> ssl.SSLContext:
    """Context of a listening port; with a CA bundle, clients must show a certificate."""
    context = _context(ssl.Purpose.CLIENT_AUTH, config)
    if client_certificates and config.tls_ca_certificates:
        context.load_verify_locations(config.tls_ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(config: Config) -> ssl.SSLContext:
    """For the node's own associations: its certificate shown, the peer's
    chain checked against tls_ca_certificates (peers are named by AE title
    and address, so the host name is not matched)."""
    context = _context(ssl.Purpose.SERVER_AUTH, config)
    context.check_hostname = False
    if config.tls_ca_certificates:
        context.load_verify_locations(config.tls_ca_certificates)
    return context


def tls_args(config: Config, remote: RemoteAE) -> tuple[ssl.SSLContext, str | None] | None:
    """pynetdicom's ``tls_args`` for an association to ``remote``."""
    return (client_context(config), None) if remote.tls else None


def subject_name(certificate: dict | None) -> str:
    """The common name in a peer certificate as `SSLSocket.getpeercert` gives it."""
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CHD exchange node (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _save(folder: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Path:
    _write_private(
        folder / f"{stem}.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    path = folder / f"{stem}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_ca(folder: Path, days: int = 3650) -> Path:
    """A self-signed development CA: ``ca.crt`` and ``ca.key`` (0600) in folder."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("CHD node development CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _save(folder, "ca", key, cert)


def make_certificate(folder: Path, common_name: str, hosts: list[str], days: int = 825) -> Path:
    """A certificate for a server or client, signed by the CA in ``folder``.

    Written as ``<common_name>.crt`` / ``.key``; ``hosts`` become its subject
    alternative names (IP addresses or DNS names).
    """
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts or [common_name]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in common_name)
    return _save(folder, stem, key, cert)
