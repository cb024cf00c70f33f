"""TLS for the DICOM and web ports (PS3.15 BCP 195), and development certificates.

The contexts follow the BCP 195 non-downgrading profile: TLS 1.2 or newer,
forward-secret AEAD cipher suites only. A client certificate is reduced to a
`CertificateIdentity` (subject common name and SHA-256 of the DER), which
`access.AccessPolicy` compares with the [[remote_ae]] entries that name it.
The node's own associations check the peer's certificate and its host name,
so a study goes only to the machine the entry names. `make_ca` /
`make_certificate` write a development CA and certificates signed by it
(``dicomnode tls``); a hospital deployment uses certificates from its own PKI
in the same files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dicomnode.config import Config, RemoteAE

log = logging.getLogger(__name__)

# BCP 195 (RFC 9325) recommended TLS 1.2 suites; TLS 1.3 suites are all AEAD.
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM"
# Names every development certificate answers to unless asked not to, so the
# node, the demo and the tests can call each other on this machine.
LOOPBACK = ("localhost", "127.0.0.1")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_host_name(text: str) -> bool:
    """A DNS name a certificate can carry (a device's CN may be a label like "Echo 1")."""
    return 0 < len(text) <= 253 and all(_LABEL.fullmatch(p) for p in text.split("."))


def names_of(path: str | Path) -> list[str]:
    """The subject alternative names of the first certificate in a PEM file."""
    leaf = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in names]


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


class _ReportingSocket(ssl.SSLSocket):
    """Keeps why a handshake failed on its context and logs it: pynetdicom
    only reports "unable to connect", and its logger is quieted."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__
            context = self.context
            if isinstance(context, ClientContext):  # always: its sslsocket_class
                context.failure = f"TLS to {context.peer}: {reason}"
                log.warning("%s", context.failure)
            raise


class ClientContext(ssl.SSLContext):
    """A client context for one association; ``failure`` says why its
    handshake failed ("" when it did not)."""

    sslsocket_class = _ReportingSocket
    peer = "peer"  # how the log names the other end
    failure = ""


def client_context(config: Config) -> ClientContext:
    """For the node's own associations: its certificate shown; the peer's
    chain checked against tls_ca_certificates (else the system's CAs) and its
    host name against the certificate (DNS names, IP addresses against IP
    SANs), so a study goes only to the machine the entry names."""
    context = ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.load_cert_chain(config.tls_certificate, config.tls_private_key)
    if config.tls_ca_certificates:
        context.load_verify_locations(config.tls_ca_certificates)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def tls_args(config: Config, remote: RemoteAE) -> tuple[ClientContext, str] | None:
    """pynetdicom's ``tls_args`` for an association to ``remote``: the host
    name to check is the one the entry calls it by."""
    if not remote.tls:
        return None
    context = client_context(config)
    context.peer = f"{remote.ae_title} at {remote.host}"
    return context, remote.host


def tls_failure(args: tuple[ssl.SSLContext, str] | None) -> str:
    """Why the handshake of an association opened with ``args`` failed ("" if
    it did not, or there was no TLS)."""
    return str(getattr(args[0], "failure", "")) if args else ""


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


def make_certificate(
    folder: Path, common_name: str, hosts: list[str], days: int = 825, *, loopback: bool = True
) -> Path:
    """A certificate for a server or client, signed by the CA in ``folder``.

    Written as ``<common_name>.crt`` / ``.key``. Its subject alternative names
    (what the node's host-name check compares with a remote's ``host``) are
    the common name when it is a host name, ``hosts`` (IP addresses or DNS
    names) and, unless ``loopback`` is False, localhost and 127.0.0.1.
    """
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{folder / 'ca.key'}: not a key that signs with SHA-256 (EC or RSA)")
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    wanted = [common_name] if _is_host_name(common_name) else []
    wanted += [*hosts, *(LOOPBACK if loopback else ())]
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip() for h in wanted if h.strip()):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if not names:
        raise ValueError(f"{common_name!r} is not a host name: give --host")
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
        .sign(ca_key, hashes.SHA256())
    )
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in common_name)
    return _save(folder, stem, key, cert)
