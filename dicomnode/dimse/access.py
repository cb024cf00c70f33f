"""Who may associate, from where, for what, and how many at once.

The policy is consulted once per A-ASSOCIATE-RQ, before any presentation
context is negotiated. It answers with the PS3.8 rejection triple or with the
services the caller may use; established associations are counted per AE and
in all (connections still waiting for their request do not count, so idle
sockets cannot lock real senders out).

Under mutual TLS a client certificate proves exactly the entries that name
it, by subject common name and/or SHA-256 fingerprint (both must match when
both are given); an entry naming neither is proved by no certificate, and the
node's own certificate proves nothing (copied off the node, it would
otherwise open every door).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from functools import lru_cache

from dicomnode.certificates import CertificateIdentity, identity_of, identity_of_file
from dicomnode.config import SERVICES, Config, RemoteAE

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 Table 9-21.
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


@dataclass(frozen=True)
class Decision:
    """Accept with these services (reject is None), or reject with a reason."""

    reject: tuple[int, int, int] | None
    why: str = ""
    remote: RemoteAE | None = None
    services: frozenset[str] = frozenset()


@lru_cache(maxsize=256)
def _resolve(host: str) -> tuple[str, ...]:
    try:
        return tuple({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except OSError:
        return ()


def address_allowed(remote: RemoteAE, address: str) -> bool:
    """Is ``address`` among the entry's networks (or ``host``'s addresses)?"""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    allowed = remote.networks or _resolve(remote.host)
    return any(ip in ipaddress.ip_network(n, strict=False) for n in allowed)


class AccessPolicy:
    """The known-AE table applied to association requests, with live counts."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.mutual_tls = bool(config.dimse_tls and config.tls_ca_certificates)
        self.own = _own_identity(config) if self.mutual_tls else None
        self._lock = threading.Lock()
        self._open: dict[int, str] = {}  # id(association) -> calling AE

    def decide(
        self, calling: str, called: str, address: str, certificate: bytes | None = None
    ) -> Decision:
        """``certificate`` is the client's (DER) under mutual TLS, else None."""
        config = self.config
        calling = calling.strip()
        if config.check_called_ae and called.strip() != config.ae_title:
            return Decision(CALLED_AE_NOT_RECOGNISED, "called AE title is not this node's")
        peer = _identity(certificate)
        if self.mutual_tls and (why := self._certificate_refused(peer)):
            return Decision(CALLING_AE_NOT_RECOGNISED, why)
        remote = config.remote(calling)
        if remote is None:
            if config.require_known_ae or self.mutual_tls:
                return Decision(CALLING_AE_NOT_RECOGNISED, "calling AE title is not known")
            return Decision(None, remote=None, services=frozenset(SERVICES))
        if not address_allowed(remote, address):
            return Decision(CALLING_AE_NOT_RECOGNISED, "address not allowed for this AE title")
        if peer is not None and (why := certificate_mismatch(remote, peer)):
            return Decision(CALLING_AE_NOT_RECOGNISED, why)
        return Decision(None, remote=remote, services=frozenset(remote.services))

    def _certificate_refused(self, peer: CertificateIdentity | None) -> str:
        """Why no entry at all may be proved by this certificate ("" if one may)."""
        if peer is None:
            return "no client certificate"
        own = self.own
        if own is None:
            return "the node's own certificate (tls_certificate) cannot be read"
        if peer.fingerprint == own.fingerprint or (own.subject and peer.subject == own.subject):
            return f"{peer.describe()} is the node's own certificate, never a client's"
        return ""

    def admit(self, assoc_id: int, calling: str, remote: RemoteAE | None) -> bool:
        """Count an association about to be accepted; False when over a limit."""
        limit = (remote.max_associations if remote else 0) or self.config.max_associations_per_ae
        with self._lock:
            if len(self._open) >= self.config.max_associations:
                return False
            if sum(1 for ae in self._open.values() if ae == calling) >= limit:
                return False
            self._open[assoc_id] = calling
        return True

    def release(self, assoc_id: int) -> None:
        with self._lock:
            self._open.pop(assoc_id, None)

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)


def certificate_mismatch(remote: RemoteAE, peer: CertificateIdentity) -> str:
    """Why ``peer`` does not prove ``remote`` ("" when it does)."""
    if not (remote.tls_subject or remote.tls_fingerprint):
        return "this AE title names no certificate (tls_subject / tls_fingerprint)"
    if remote.tls_subject and peer.subject != remote.tls_subject:
        return f"{peer.describe()}: subject is not this AE title's"
    if remote.tls_fingerprint and peer.fingerprint != remote.tls_fingerprint:
        return f"{peer.describe()}: fingerprint is not this AE title's"
    return ""


def _identity(certificate: bytes | None) -> CertificateIdentity | None:
    """None for no certificate, or one OpenSSL accepted but X.509 parsing does
    not (refused as no certificate rather than failing the connection)."""
    try:
        return identity_of(certificate) if certificate else None
    except ValueError:
        return None


def _own_identity(config: Config) -> CertificateIdentity | None:
    """The node's own certificate; None (every client refused) when it cannot
    be read, since the port cannot speak TLS without it anyway."""
    try:
        return identity_of_file(config.tls_certificate)
    except (OSError, ValueError, IndexError):
        return None
