"""Open DIMSE connections, those still owing their A-ASSOCIATE-RQ, and the
deadline by which they must have sent it.

A socket timeout restarts with every byte, so a peer trickling its request
(or its TLS handshake) a byte at a time would hold a thread for ever; here
every connection gets one absolute deadline from accept, enforced by one
watchdog thread that shuts the socket down, which wakes whatever is blocked
on it (handshake, ``recv``) whatever it is. Unassociated connections are
counted per source address (an IPv6 /64, which one host commonly holds
whole) so that one host cannot take every slot.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import socket
import threading
import time
from collections import Counter
from enum import Enum

TOO_MANY = "too many connections"


class Stage(Enum):
    PENDING = "pending"  # accepted, A-ASSOCIATE-RQ not yet complete
    ARRIVED = "arrived"  # the whole request is in: no deadline any more
    EXPIRED = "expired"  # the deadline passed first


class Connection:
    """One accepted connection, from accept until it closes."""

    __slots__ = ("address", "counted", "deadline", "key", "open", "socket", "stage")

    def __init__(self, sock: socket.socket, address: str, deadline: float) -> None:
        self.socket = sock
        self.address = address
        self.key = source_key(address)
        self.deadline = deadline
        self.stage = Stage.PENDING
        self.counted = True  # in its address's count of unassociated connections
        self.open = True

    @property
    def expired(self) -> bool:
        return self.stage is Stage.EXPIRED

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


class ConnectionTable:
    """Counts and deadlines of the server's connections; every method is
    idempotent so that each exit path may call it without double counting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._open: dict[socket.socket, Connection] = {}
        self._pending: Counter[str] = Counter()
        self._due: list[tuple[float, int, Connection]] = []
        self._order = itertools.count()
        self._stopped = False
        self._watchdog = threading.Thread(
            target=self._watch, daemon=True, name="dimse-request-deadlines"
        )
        self._watchdog.start()

    @property
    def open(self) -> int:
        """Connections accepted and not yet closed (associated or not)."""
        with self._lock:
            return len(self._open)

    def pending(self, address: str) -> int:
        """Connections from ``address`` (its /64 for IPv6) not yet associated."""
        with self._lock:
            return self._pending.get(source_key(address), 0)

    def admit(
        self,
        sock: socket.socket,
        address: str,
        seconds: float,
        per_address: int,
        total: int,
    ) -> tuple[Connection | None, str]:
        """Register a new connection, or say why it must be closed at once
        (`TOO_MANY`, or the address's cap)."""
        with self._lock:
            if len(self._open) >= total:
                return None, TOO_MANY
            if self._pending[source_key(address)] >= per_address:
                return None, f"{per_address} connections from this address not yet associated"
            entry = Connection(sock, address, time.monotonic() + seconds)
            self._open[sock] = entry
            self._pending[entry.key] += 1
            heapq.heappush(self._due, (entry.deadline, next(self._order), entry))
            self._wake.notify()
            return entry, ""

    def of(self, sock: socket.socket) -> Connection | None:
        with self._lock:
            return self._open.get(sock)

    def arrived(self, entry: Connection) -> bool:
        """The whole A-ASSOCIATE-RQ is in; False if the deadline came first."""
        with self._lock:
            if entry.stage is Stage.PENDING:
                entry.stage = Stage.ARRIVED
            return entry.stage is Stage.ARRIVED

    def associated(self, entry: Connection) -> None:
        """Negotiation is over: the connection no longer counts as pending."""
        with self._lock:
            self._uncount(entry)

    def end(self, entry: Connection) -> tuple[bool, bool]:
        """The connection is closed: (first time told, ended past its deadline
        without a complete request). The first caller records the refusal, if
        any, then calls `forget`, so that a settled table means a finished record."""
        with self._lock:
            if not entry.open:
                return False, entry.expired
            entry.open = False
            if entry.stage is Stage.PENDING and time.monotonic() >= entry.deadline:
                entry.stage = Stage.EXPIRED
            return True, entry.expired

    def forget(self, entry: Connection) -> None:
        """Drop an ended connection from the counts."""
        with self._lock:
            self._open.pop(entry.socket, None)
            self._uncount(entry)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.notify()

    def _uncount(self, entry: Connection) -> None:
        if entry.counted:
            entry.counted = False
            self._pending[entry.key] -= 1
            if self._pending[entry.key] <= 0:
                del self._pending[entry.key]

    def _watch(self) -> None:
        with self._lock:
            while not self._stopped:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    _, _, entry = heapq.heappop(self._due)
                    if entry.open and entry.stage is Stage.PENDING:
                        entry.stage = Stage.EXPIRED
                        _shut(entry.socket)
                self._wake.wait(self._due[0][0] - now if self._due else None)


def source_key(address: str) -> str:
    """What the per-address cap counts: the address, an IPv6 one by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _shut(sock: socket.socket) -> None:
    """Shut both directions down: a thread blocked in ``recv`` or in the TLS
    handshake on this socket returns at once (closing it would not wake it).
    The plain socket's method, so a TLS socket keeps its state for the thread
    that owns it."""
    with contextlib.suppress(OSError):  # already closed by its own thread
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
