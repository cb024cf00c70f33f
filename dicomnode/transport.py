"""A hardened pynetdicom association server.

Stock pynetdicom, as used here, has three gaps for a node on foreign
networks, closed by the subclasses below:

- the TLS handshake runs in the accept loop, so one silent TCP connection
  blocks every other association: here the socket is wrapped without a
  handshake and the handshake runs in the connection's own thread, under the
  network timeout;
- a PDU is read in full whatever length its header declares: here a PDU
  longer than the node negotiated, or data of one instance beyond
  ``max_instance_mb``, is answered with an A-ABORT and never buffered;
- calling AE, source address, per-service permissions and per-AE limits are
  decided by `access.AccessPolicy` before presentation contexts are negotiated.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicomnode.access import LOCAL_LIMIT_EXCEEDED, AccessPolicy
from dicomnode.tls import subject_name

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
# Largest non-data PDU accepted (an A-ASSOCIATE-RQ with 128 contexts of 24
# transfer syntaxes each stays well below).
MAX_CONTROL_PDU = 1 << 20
# Seconds a new connection may take to send its A-ASSOCIATE-RQ (a real peer
# sends it at once; idle sockets should not hold a thread for the whole
# network timeout).
REQUEST_TIMEOUT = 10.0
# A-ABORT from the service provider, reason "invalid PDU parameter value".
A_ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])


class GuardedSocket(AssociationSocket):
    """Checks each PDU header before the body is read, and sums instance data."""

    @classmethod
    def guard(cls, plain: AssociationSocket, limits: tuple[int, int]) -> GuardedSocket:
        """Turn pynetdicom's socket into a guarded one in place (a new socket
        object would announce the connection to the state machine twice)."""
        plain.__class__ = cls
        guarded: GuardedSocket = plain  # type: ignore[assignment]
        guarded.setup_guard(limits)
        return guarded

    def setup_guard(self, limits: tuple[int, int]) -> None:
        self.max_pdu, self.max_instance = limits
        self._header = True
        self._type = 0
        self._refused = False
        self._instance_bytes = 0

    def recv(self, nr_bytes: int) -> bytearray:
        if self._refused:
            return bytearray()  # the DUL sees a short PDU: transport closed
        data = super().recv(nr_bytes)
        if len(data) < nr_bytes:
            self._wake_acceptor()
        if self._header:
            if len(data) == 6:
                self._type, _, length = struct.unpack(">BBL", data)
                limit = self.max_pdu if self._type == P_DATA_TF else MAX_CONTROL_PDU
                if length > limit:
                    self._refuse(f"PDU of {length} bytes declared, over {limit}")
                self._header = False
            return data
        self._header = True
        if self._type == P_DATA_TF and not self._count_instance_data(data):
            self._refuse(f"instance larger than {self.max_instance >> 20} MiB")
            return bytearray()
        return data

    def _count_instance_data(self, body: bytearray) -> bool:
        """Sum data-set fragments of the current message (PS3.8 E.2)."""
        offset = 0
        while offset + 6 <= len(body):
            (item_length,) = struct.unpack_from(">L", body, offset)
            control = body[offset + 5]
            if not control & 0x01:  # a data set fragment, not a command
                self._instance_bytes += item_length - 2
                if self._instance_bytes > self.max_instance:
                    return False
                if control & 0x02:  # last fragment
                    self._instance_bytes = 0
            offset += 4 + item_length
        return True

    def _wake_acceptor(self) -> None:
        """The peer is gone: if it never associated, stop waiting for its
        A-ASSOCIATE-RQ now (pynetdicom would hold the thread for the whole
        ACSE timeout, so junk connections would pile up)."""
        if not self._assoc.is_established:
            self._assoc.dul.to_user_queue.put(None)

    def _refuse(self, why: str) -> None:
        self._refused = True
        self._wake_acceptor()
        peer = self._assoc.requestor
        log.warning("aborting association from %s at %s: %s", peer.ae_title, peer.address, why)
        try:
            if self.socket is not None:
                self.socket.sendall(A_ABORT_INVALID_PARAMETER)
        except OSError:
            pass


class GuardedACSE(ACSE):
    """Applies the access policy to an A-ASSOCIATE-RQ before negotiating it."""

    def _negotiate_as_acceptor(self) -> None:
        server: NodeAssociationServer = self.assoc._server  # type: ignore[assignment]
        request = self.requestor.primitive
        calling = request.calling_ae_title.strip()
        self.requestor.ae_title = calling
        address = self.assoc.requestor.address
        raw = self.assoc.dul.socket.socket
        certificate = raw.getpeercert() if isinstance(raw, ssl.SSLSocket) else None
        subject = subject_name(certificate) if certificate else None
        decision = server.policy.decide(calling, request.called_ae_title, address, subject)
        reject, why = decision.reject, decision.why
        if reject is None and not server.policy.admit(id(self.assoc), calling, decision.remote):
            reject, why = LOCAL_LIMIT_EXCEEDED, "association limit reached"
        self.assoc.acse_timeout = self.assoc.ae.acse_timeout  # back from REQUEST_TIMEOUT
        if reject is not None:
            server.refuse(calling, address, why)
            self.send_reject(*reject)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        self.assoc.node_services = decision.services  # type: ignore[attr-defined]
        self.acceptor.supported_contexts = [
            cx
            for cx in self.acceptor.supported_contexts
            if server.services_of(cx.abstract_syntax) & decision.services
        ]
        super()._negotiate_as_acceptor()


class GuardedRequestHandler(RequestHandler):
    """One connection: timeout, TLS handshake here (not in the accept loop)."""

    def handle(self) -> None:
        server: NodeAssociationServer = self.server  # type: ignore[assignment]
        connection: socket.socket = self.request  # type: ignore[assignment]
        connection.settimeout(server.ae.network_timeout)
        if isinstance(connection, ssl.SSLSocket):
            try:
                connection.do_handshake()
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                server.refuse("", str(self.client_address[0]), f"TLS handshake: {reason}")
                server.shutdown_request(connection)
                return
        super().handle()

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        server: NodeAssociationServer = self.server  # type: ignore[assignment]
        GuardedSocket.guard(assoc.dul.socket, server.limits)
        assoc.acse = GuardedACSE(assoc)
        assoc.acse_timeout = min(REQUEST_TIMEOUT, server.ae.acse_timeout or REQUEST_TIMEOUT)
        return assoc


class SharedContexts(list):
    """The server's supported contexts, handed to each association by reference.

    pynetdicom deep-copies all ~180 contexts for every connection (15 ms of
    CPU under the GIL: junk connections became a cheap way to load the node)
    although negotiation only reads them; the access policy then narrows a
    copy of the list, never the contexts themselves."""

    def __deepcopy__(self, memo: dict) -> list:
        return list(self)


class NodeAssociationServer(ThreadedAssociationServer):
    """Accept loop that only accepts; everything slow happens per connection."""

    # Listen backlog: socketserver's 5 makes a burst of connections wait a
    # whole second for SYN retransmission while the accept loop catches up.
    request_queue_size = 128
    policy: AccessPolicy
    limits: tuple[int, int]  # largest P-DATA PDU, largest instance (bytes)
    max_connections: int
    services_of: Callable[[str], frozenset[str]]
    on_reject: Callable[[str, str, str], None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)

    def refuse(self, calling: str, address: str, why: str) -> None:
        """One log line and one audit record for every refused peer."""
        log.warning("association from %s at %s refused: %s", calling or "-", address, why)
        self.on_reject(calling, address, why)

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Beyond max_connections, close new connections at once."""
        if len(self.ae.active_associations) >= self.max_connections:
            log.warning("connection from %s refused: too many connections", client_address[0])
            return False
        return True
