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
  decided by `access.AccessPolicy` before presentation contexts are negotiated;
- a socket timeout restarts with every byte, so a peer trickling its
  A-ASSOCIATE-RQ or TLS handshake held a thread for ever, and unassociated
  sockets counted against ``max_connections``: here each connection has one
  deadline from accept to its whole request, and each source address a cap on
  its unassociated connections (`connections.ConnectionTable`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.transport import (
    AssociationServer,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from dicomnode.dimse.access import LOCAL_LIMIT_EXCEEDED, AccessPolicy
from dicomnode.dimse.stored import SendsStoredFiles
from dicomnode.dimse.waking import WakingDUL
from dicomnode.net.connections import TOO_MANY, Connection, ConnectionTable

log = logging.getLogger(__name__)

A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04
# Buffers a PDU body is read into: the first holds a P-DATA PDU of the
# default max_pdu_size (256 kB) whole, the next double up to a slice each.
READ_FIRST = 256 << 10
READ_SLICE = 16 << 20
# Largest non-data PDU accepted (an A-ASSOCIATE-RQ with 128 contexts of 24
# transfer syntaxes each stays well below).
MAX_CONTROL_PDU = 1 << 20
# A-ABORT from the service provider, reason "invalid PDU parameter value".
A_ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])


def node_server(server: AssociationServer | None) -> NodeAssociationServer:
    """The node's own server, which pynetdicom hands on typed as its base
    class (every guarded connection is one of its)."""
    if not isinstance(server, NodeAssociationServer):
        raise TypeError(f"not a NodeAssociationServer: {type(server).__name__}")
    return server


def raw_socket(assoc: Association) -> socket.socket | None:
    """The association's TCP (or TLS) socket, None before connect or after close."""
    transport = assoc.dul.socket
    return transport.socket if transport is not None else None


class GuardedSocket(AssociationSocket):
    """Checks each PDU header before the body is read, and sums instance data."""

    @classmethod
    def guard(
        cls, plain: AssociationSocket, limits: tuple[int, int], arrived: Callable[[], bool]
    ) -> GuardedSocket:
        """Turn pynetdicom's socket into a guarded one in place (a new socket
        object would announce the connection to the state machine twice).
        ``arrived`` is told when the whole A-ASSOCIATE-RQ is in (False: too late)."""
        plain.__class__ = cls
        assert isinstance(plain, cls)  # now it is
        plain.setup_guard(limits, arrived)
        return plain

    def setup_guard(self, limits: tuple[int, int], arrived: Callable[[], bool]) -> None:
        self.max_pdu, self.max_instance = limits
        self._arrived = arrived
        self._header = True
        self._type = 0
        self._refused = False
        self._instance_bytes = 0

    def recv(self, nr_bytes: int) -> bytearray:
        if self._refused:
            return bytearray()  # the DUL sees a short PDU: transport closed
        try:
            data = self._read(nr_bytes)
        except OSError:
            self._wake_acceptor()
            raise
        if len(data) < nr_bytes:
            self._wake_acceptor()
        if self._header:
            if len(data) == 6:
                self._type, _, length = struct.unpack(">BBL", data)
                # One P-DATA PDU carries fragments of one message at most.
                data_limit = min(self.max_pdu, self.max_instance + MAX_CONTROL_PDU)
                limit = data_limit if self._type == P_DATA_TF else MAX_CONTROL_PDU
                if length > limit:
                    self._refuse(f"PDU of {length} bytes declared, over {limit}")
                self._header = False
            return data
        self._header = True
        if self._type == A_ASSOCIATE_RQ and len(data) == nr_bytes and not self._arrived():
            self._refused = True  # the deadline came first: the request is dropped
            self._wake_acceptor()
            return bytearray()
        if self._type == P_DATA_TF and not self._count_instance_data(data):
            self._refuse(f"instance larger than {self.max_instance >> 20} MiB")
            return bytearray()
        return data

    def _read(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` read straight into buffers (pynetdicom reads 4 kB at
        a time and copies each piece onto the last), short if the peer
        closes. The first buffer holds a PDU of the default size whole; the
        next ones double, up to a slice each, allocated as data arrives:
        a declared length costs about what was sent, and a huge one is
        joined once at the end (no copy per piece)."""
        raw = self.socket
        assert raw is not None  # recv is only called on an open connection
        pieces: list[bytearray] = []
        got, step = 0, READ_FIRST
        while got < nr_bytes:
            piece = bytearray(min(nr_bytes - got, step))
            step = min(step * 2, READ_SLICE)
            filled = 0
            with memoryview(piece) as view:
                while filled < len(piece):
                    read = raw.recv_into(view[filled:])
                    if not read:
                        break
                    filled += read
            if filled < len(piece):
                del piece[filled:]
                pieces.append(piece)
                break
            pieces.append(piece)
            got += filled
        if len(pieces) == 1:
            return pieces[0]
        return bytearray().join(pieces)

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

    def close(self) -> None:
        """The DUL closes the transport itself after aborting a peer that sent
        something other than a request: stop waiting for one too."""
        super().close()
        self._wake_acceptor()

    def _wake_acceptor(self) -> None:
        """The peer is gone: if it never associated, stop waiting for its
        A-ASSOCIATE-RQ now (pynetdicom would hold the thread for the whole
        ACSE timeout, so junk connections would pile up)."""
        assoc = self._assoc
        if not assoc.is_established and assoc.requestor.primitive is None:
            assoc.dul.to_user_queue.put(cast(Any, None))  # wakes its get

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

    def negotiate_association(self) -> None:
        """Accepted or rejected, the connection stops counting as pending."""
        try:
            super().negotiate_association()
        finally:
            connection = getattr(self.assoc, "connection", None)
            if self.assoc.is_acceptor and connection is not None:
                node_server(self.assoc._server).connections.associated(connection)

    def _negotiate_as_acceptor(self) -> None:
        server = node_server(self.assoc._server)
        request = self.requestor.primitive
        assert request is not None, "negotiated once the A-ASSOCIATE-RQ is in"
        calling = request.calling_ae_title.strip()
        self.requestor.ae_title = calling
        address = self.assoc.requestor.address
        raw = raw_socket(self.assoc)
        certificate = raw.getpeercert(binary_form=True) if isinstance(raw, ssl.SSLSocket) else None
        decision = server.policy.decide(calling, request.called_ae_title, address, certificate)
        reject, why = decision.reject, decision.why
        if reject is None and not server.policy.admit(id(self.assoc), calling, decision.remote):
            reject, why = LOCAL_LIMIT_EXCEEDED, "association limit reached"
        self.assoc.acse_timeout = self.assoc.ae.acse_timeout  # back from the request deadline
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
            if cx.abstract_syntax is not None
            and server.services_of(cx.abstract_syntax) & decision.services
        ]
        super()._negotiate_as_acceptor()


class GuardedAssociation(SendsStoredFiles):
    """An acceptor that reports its connection's end, however it ends."""

    connection: Connection

    @classmethod
    def guard(cls, plain: Association, entry: Connection) -> GuardedAssociation:
        """Turn pynetdicom's association into a guarded one in place (as
        for the socket: the request handler has already wired it up)."""
        plain.__class__ = cls
        assert isinstance(plain, cls)  # now it is
        plain.connection = entry
        WakingDUL.install(plain.dul)  # its network loop waits for work, no 1 ms polls
        return plain

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            # pynetdicom would leave the DUL thread and the socket behind: a
            # failure here must not hold the connection (or its count) for ever.
            # The exception's type only: its text might quote what was received.
            log.error("association from %s failed: %s", self.connection.address, type(exc).__name__)
            self.dul.kill_dul()
            raw = raw_socket(self)
            if raw is not None:
                node_server(self._server).shutdown_request(raw)
        finally:
            if isinstance(self.dul, WakingDUL):
                self.dul.close_wake()
            node_server(self._server).ended(self.connection)


class GuardedRequestHandler(RequestHandler):
    """One connection: timeout, TLS handshake here (not in the accept loop)."""

    def handle(self) -> None:
        server = node_server(self.server)
        connection: socket.socket = self.request
        entry = server.connections.of(connection)
        if entry is None:  # not admitted (cannot happen): never serve it
            server.shutdown_request(connection)
            return
        self.connection = entry
        connection.settimeout(server.ae.network_timeout)
        if isinstance(connection, ssl.SSLSocket):
            try:
                connection.do_handshake()
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                server.shutdown_request(connection)  # refused here if past the deadline
                if not entry.expired:
                    server.refuse("", entry.address, f"TLS handshake: {reason}")
                return
        super().handle()

    def _create_association(self) -> GuardedAssociation:
        server = node_server(self.server)
        entry = self.connection
        assoc = GuardedAssociation.guard(super()._create_association(), entry)
        assert assoc.dul.socket is not None, "set by the base class"
        GuardedSocket.guard(
            assoc.dul.socket, server.limits, lambda: server.connections.arrived(entry)
        )
        assoc.acse = GuardedACSE(assoc)
        # pynetdicom waits this long for the request; the watchdog closes the
        # socket at the same deadline should bytes still be trickling in.
        assoc.acse_timeout = max(entry.remaining(), 0.01)
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

    # Several processes of one node listen on one port (``receivers``).
    share_port = False

    # Listen backlog: socketserver's 5 makes a burst of connections wait a
    # whole second for SYN retransmission while the accept loop catches up.
    request_queue_size = 128
    policy: AccessPolicy
    limits: tuple[int, int]  # largest P-DATA PDU, largest instance (bytes)
    services_of: Callable[[str], frozenset[str]]
    on_reject: Callable[[str, str, str], None]
    # Told of each proposed storage class refused (association, UID, why).
    on_class_refused: Callable[[Any, str, str], None]
    # Set from the configuration by the caller (`dimse.server`), before serving.
    max_connections: int
    max_pending_per_address: int
    association_request_seconds: float
    unknown_sop_class_accepted: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before binding: a failed bind calls server_close, which stops it.
        self.connections = ConnectionTable()
        self._refusing: set[str] = set()  # refusal already logged (per address, "*")
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)

    def server_bind(self) -> None:
        if self.share_port:  # the kernel spreads connections over the processes
            assert self.socket is not None
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def refuse(self, calling: str, address: str, why: str) -> None:
        """One log line and one audit record for every refused peer."""
        log.warning("association from %s at %s refused: %s", calling or "-", address, why)
        self.on_reject(calling, address, why)

    @property
    def listening(self) -> socket.socket:
        """The bound socket (pynetdicom types it optional: None only before binding)."""
        assert self.socket is not None, "bound in __init__"
        return self.socket

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = self.listening.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Close a new connection at once (no thread) beyond max_connections
        or beyond the address's unassociated connections; else start its deadline."""
        address = str(client_address[0])
        entry, why = self.connections.admit(
            request,
            address,
            self.association_request_seconds,
            self.max_pending_per_address,
            self.max_connections,
        )
        key = "*" if why is TOO_MANY else address
        if entry is None:
            # Logged once per episode: a flood must not become a flood of log lines.
            if key not in self._refusing:
                if len(self._refusing) > 4096:  # addresses that never came back
                    self._refusing.clear()
                self._refusing.add(key)
                log.warning("connections from %s refused: %s", address, why)
            return False
        self._refusing.discard(address)
        self._refusing.discard("*")
        return True

    def close_request(self, request: Any) -> None:
        """Every way a connection is closed through the server ends its entry."""
        entry = self.connections.of(request)
        super().close_request(request)
        if entry is not None:
            self.ended(entry)

    def ended(self, entry: Connection) -> None:
        """The connection is gone; refused (once) if its request never came in time."""
        first, expired = self.connections.end(entry)
        if not first:
            return
        try:
            if expired:
                seconds = self.association_request_seconds
                self.refuse("", entry.address, f"no complete A-ASSOCIATE-RQ within {seconds:g} s")
        finally:
            self.connections.forget(entry)

    def server_close(self) -> None:
        super().server_close()
        self.connections.stop()


class SharedPortServer(NodeAssociationServer):
    """`NodeAssociationServer` on a port the node's other receiving processes share."""

    share_port = True
