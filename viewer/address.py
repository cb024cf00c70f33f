"""The client's address: the one answer the audit trail, the login throttle
and every other part of the web app use; and the node's own, as the client
reached it (`public_root`, for the URLs DICOMweb answers with).

Behind a reverse proxy every request comes from the proxy, so the address
that matters is in X-Forwarded-For, which each proxy extends with the
address it saw. Anyone can send that header, so it is believed only when
the direct peer is one of `Config.trusted_proxies`, and then read from the
right: the rightmost address that is not itself a trusted proxy is the
client (entries left of it were written by the client and prove nothing).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from flask import request

from dicomnode.config import Network
from viewer import services

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> Address | None:
    """An address as a proxy writes it: bare, ``[v6]``, ``[v6]:port`` or
    ``v4:port``; IPv4 mapped into IPv6 as IPv4. None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)


def client_from(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address given the direct ``peer``, the X-Forwarded-For
    header values (in order) and the trusted proxies."""
    hop = _parse(peer)
    if hop is None or not _trusted(hop, trusted):
        return str(hop) if hop is not None else peer
    entries = [e for value in forwarded_for for e in value.split(",")]
    for entry in reversed(entries):
        found = _parse(entry)
        if found is None:
            break  # not what a proxy writes: the hop that handed it over is the client
        hop = found
        if not _trusted(hop, trusted):
            break
    return str(hop)


def client_address() -> str:
    """The address of the client of the current request (see the module)."""
    config = services.config()
    peer = request.remote_addr or ""
    trusted = config.trusted_proxies  # parsed into networks at load
    if not trusted:
        return peer
    return client_from(peer, request.headers.getlist("X-Forwarded-For"), trusted)


_DEFAULT_PORTS = {"http": "80", "https": "443"}
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def public_root() -> str:
    """The node's URL as its clients reach it. Behind one of
    `Config.trusted_proxies`: the scheme and host the proxy forwarded
    (X-Forwarded-Proto / -Host), else its Host; anyone else's X-Forwarded-*
    headers are ignored. A direct client whose Host header lacks the port it
    connected to (dicomweb-client drops it) gets the port added: the URIs
    must reach this server."""
    config = services.config()
    trusted = config.trusted_proxies
    try:
        peer = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        peer = None
    if peer is not None and trusted and any(peer in network for network in trusted):
        scheme = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        scheme = scheme if scheme in ("http", "https") else request.scheme
        host = host if _HOST.fullmatch(host) else request.host
        return f"{scheme}://{host}{request.script_root}/"
    host, scheme = request.host, request.scheme
    port = str(request.environ.get("SERVER_PORT") or "")
    if not re.search(r":[0-9]+$", host) and port not in ("", _DEFAULT_PORTS.get(scheme, "")):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{request.script_root}/"
