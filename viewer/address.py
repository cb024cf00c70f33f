"""The client's address: the one answer the audit trail, the login throttle
and every other part of the web app use.

Behind a reverse proxy every request comes from the proxy, so the address
that matters is in X-Forwarded-For, which each proxy extends with the
address it saw. Anyone can send that header, so it is believed only when
the direct peer is one of `Config.trusted_proxies`, and then read from the
right: the rightmost address that is not itself a trusted proxy is the
client (entries left of it were written by the client and prove nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import cache

from flask import current_app, request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@cache
def trusted_networks(setting: str) -> tuple[Network, ...]:
    """`Config.trusted_proxies` parsed (validated when the config was loaded)."""
    return tuple(
        ipaddress.ip_network(p.strip(), strict=False) for p in setting.split(",") if p.strip()
    )


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
    config = current_app.config["NODE_CONFIG"]
    peer = request.remote_addr or ""
    trusted = trusted_networks(config.trusted_proxies)
    if not trusted:
        return peer
    return client_from(peer, request.headers.getlist("X-Forwarded-For"), trusted)
