"""Who may associate, from where, for what, and how many at once.

The policy is consulted once per A-ASSOCIATE-RQ, before any presentation
context is negotiated. It answers with the PS3.8 rejection triple or with the
services the caller may use; established associations are counted per AE and
in all (connections still waiting for their request do not count, so idle
sockets cannot lock real senders out).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from functools import lru_cache

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
        return tuple({info[4][0] for info in socket.getaddrinfo(host, None)})
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
        self._lock = threading.Lock()
        self._open: dict[int, str] = {}  # id(association) -> calling AE

    def decide(
        self, calling: str, called: str, address: str, tls_subject: str | None = None
    ) -> Decision:
        """``tls_subject`` is the client certificate's CN under mutual TLS, else None."""
        config = self.config
        calling = calling.strip()
        if config.check_called_ae and called.strip() != config.ae_title:
            return Decision(CALLED_AE_NOT_RECOGNISED, "called AE title is not this node's")
        remote = config.remote(calling)
        if remote is None:
            if config.require_known_ae or tls_subject is not None:
                return Decision(CALLING_AE_NOT_RECOGNISED, "calling AE title is not known")
            return Decision(None, remote=None, services=frozenset(SERVICES))
        if not address_allowed(remote, address):
            return Decision(CALLING_AE_NOT_RECOGNISED, "address not allowed for this AE title")
        if tls_subject is not None and not self._certificate_fits(remote, tls_subject):
            return Decision(CALLING_AE_NOT_RECOGNISED, "certificate is not this AE title's")
        return Decision(None, remote=remote, services=frozenset(remote.services))

    def _certificate_fits(self, remote: RemoteAE, subject: str) -> bool:
        """A certificate named by some entry's tls_subject proves that entry
        only; one no entry names may stand for entries that name none."""
        if remote.tls_subject:
            return subject == remote.tls_subject
        return all(r.tls_subject != subject for r in self.config.remote_aes)

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
