"""What a certificate is matched on, read from DER (a handshake) or PEM (a file).

Kept apart from `dicomnode.net.tls` (contexts, development CA) so that the
configuration can check the certificate bindings it names without importing
the network layer, which reads the configuration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertificateIdentity:
    """What a certificate is matched on: the subject's common name ("" when
    there is none, or more than one) and the SHA-256 of its DER, lower-case hex
    (``openssl x509 -noout -fingerprint -sha256`` without the colons)."""

    subject: str
    fingerprint: str

    def describe(self) -> str:
        return f"certificate {self.subject or '(no CN)'} (SHA-256 {self.fingerprint})"


def identity_of(der: bytes) -> CertificateIdentity:
    """The identity of a DER certificate, as the TLS handshake delivered it."""
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(names[0].value) if len(names) == 1 else ""
    return CertificateIdentity(subject, hashlib.sha256(der).hexdigest())


def identity_of_file(path: str | Path) -> CertificateIdentity:
    """The identity of the first (leaf) certificate in a PEM file.

    Raises OSError or ValueError when the file cannot be read as PEM."""
    leaf = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
    return identity_of(leaf.public_bytes(serialization.Encoding.DER))
