"""TCP_NODELAY on every association the node opens (C-MOVE sub-operations,
forwarding): small DIMSE messages must not wait for Nagle and a delayed ACK
(~40 ms each); the node's outgoing sockets get what its accepted ones have."""

from __future__ import annotations

import socket

from pynetdicom import evt
from pynetdicom.events import EventHandlerType


def _no_delay(event: evt.Event) -> None:
    transport = event.assoc.dul.socket
    sock = transport.socket if transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NO_DELAY: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, _no_delay)]
