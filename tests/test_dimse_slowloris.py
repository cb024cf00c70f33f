"""DICOM slowloris: connections that trickle their A-ASSOCIATE-RQ (or TLS
handshake) a byte at a time must not hold the DIMSE port.

The attackers connect from 127.0.0.2, the legitimate peer from 127.0.0.1;
the node gives every connection ``association_request_seconds`` in all to
deliver its request and holds at most ``max_pending_per_address`` unassociated
connections per address. Waits are for conditions (a generous ceiling, never
a timing assertion)."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomnode.config import Config, RemoteAE
from dicomnode.net.connections import ConnectionTable, source_key
from dicomnode.net.tls import make_ca, make_certificate
from dicomnode.node import Node
from tests.conftest import make_config

ATTACKER = "127.0.0.2"
DEADLINE = 2.0  # association_request_seconds in these tests
TRICKLE = 0.5  # seconds between an attacker's bytes
PATIENCE = 40.0  # generous ceiling on waiting for a condition
DEADLINE_DETAIL = "A-ASSOCIATE-RQ"  # what the refusal for the deadline says


def until(condition: Callable[[], bool], seconds: float = PATIENCE) -> bool:
    """Poll a condition (not a fixed sleep) until it holds or time runs out."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def association_request(calling: str = "SLOWLORIS", called: str = "CHDNODE") -> bytes:
    """A well-formed A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing Verification."""
    context = _item(0x30, Verification.encode()) + _item(0x40, b"1.2.840.10008.1.2")
    body = (
        struct.pack(">HH", 1, 0)
        + called.encode().ljust(16)
        + calling.encode().ljust(16)
        + bytes(32)
        + _item(0x10, b"1.2.840.10008.3.1.1.1")
        + _item(0x20, bytes([1, 0, 0, 0]) + context)
        + _item(0x50, _item(0x51, struct.pack(">L", 16384)))
    )
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def attacker_connection(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(ATTACKER, 0))


def closed_by_peer(connection: socket.socket) -> bool:
    """True once the node has closed the connection (EOF or reset)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(4096) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False  # a TLS record with no data in it (a session ticket)
    except OSError:
        return True


class Trickler:
    """Sends each connection's bytes one at a time, TRICKLE seconds apart,
    until the node closes it; records which connections were closed."""

    def __init__(self, connections: list[socket.socket], payload: bytes, head: int = 0) -> None:
        self.connections = connections
        self.payload = payload
        self.closed: set[int] = set()
        self._sent = [head] * len(connections)
        self._stop = threading.Event()
        for connection in connections:
            if head:
                connection.sendall(payload[:head])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for n, connection in enumerate(self.connections):
                if n in self.closed:
                    continue
                if closed_by_peer(connection):
                    self.closed.add(n)
                    continue
                if self._sent[n] < len(self.payload):
                    try:
                        connection.send(self.payload[self._sent[n] : self._sent[n] + 1])
                        self._sent[n] += 1
                    except OSError:
                        self.closed.add(n)
            self._stop.wait(TRICKLE)

    def all_closed(self) -> bool:
        return len(self.closed) == len(self.connections)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.connections:
            connection.close()


def echo_from(port: int, address: str = "127.0.0.1") -> bool:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHDNODE", bind_address=(address, 0))
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def connections(node: Node):
    return node.dicom._server.connections


def settled(node: Node) -> bool:
    """No connection open or pending any more."""
    table = connections(node)
    return table.open == 0 and table.pending(ATTACKER) == 0 and table.pending("127.0.0.1") == 0


def deadline_refusals(node: Node) -> list[dict]:
    rows = node.archive.index.audit.rows()
    return [
        r
        for r in rows
        if r["event"] == "association-rejected" and DEADLINE_DETAIL in (r["detail"] or "")
    ]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    # A small max_connections so that today's behaviour (every unassociated
    # socket counted against it) shows with a few dozen attackers; a long
    # network timeout so that only the new deadline can close a trickler.
    config = make_config(
        tmp_path, association_request_seconds=DEADLINE, max_connections=20, network_timeout=300
    )
    with Node(config, web=False) as running:
        yield running


@pytest.mark.slow
def test_tricklers_are_closed_at_the_deadline_and_a_real_echo_gets_in(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    port = node.dicom.port
    cap = node.config.max_pending_per_address
    attackers = [attacker_connection(port) for _ in range(40)]  # twice max_connections
    trickler = Trickler(attackers, association_request())
    try:
        # The node holds at most `cap` of them; the rest it closed at once.
        assert until(lambda: len(trickler.closed) >= 40 - cap)
        assert connections(node).pending(ATTACKER) <= cap
        assert echo_from(port)  # the legitimate peer is not crowded out
        # However slowly bytes come, the held ones are closed after the deadline.
        assert until(trickler.all_closed), f"{40 - len(trickler.closed)} tricklers still open"
        assert until(lambda: settled(node))
    finally:
        trickler.stop()
    # One audit record and one log line per connection closed at the deadline.
    refused = deadline_refusals(node)
    assert 1 <= len(refused) <= cap
    assert all(r["source"] == ATTACKER for r in refused)
    lines = [r for r in caplog.records if DEADLINE_DETAIL in r.getMessage()]
    assert len(lines) == len(refused)
    # After the attack, the attacker's address associates normally.
    assert echo_from(port, ATTACKER)
    assert until(lambda: settled(node))


def test_beyond_the_cap_an_address_is_closed_at_once(tmp_path: Path) -> None:
    # A long deadline: the held tricklers are certainly still open while the
    # one beyond the cap is turned away.
    config = make_config(tmp_path, association_request_seconds=120, network_timeout=300)
    with Node(config, web=False) as node:
        port = node.dicom.port
        cap = node.config.max_pending_per_address
        held = Trickler([attacker_connection(port) for _ in range(cap)], association_request())
        try:
            assert until(lambda: connections(node).pending(ATTACKER) == cap)
            extra = Trickler([attacker_connection(port)], association_request())
            try:
                assert until(extra.all_closed)
                assert not held.closed  # the held ones were not what ended it
                assert connections(node).pending(ATTACKER) == cap
                assert echo_from(port)  # other addresses are not affected
            finally:
                extra.stop()
        finally:
            held.stop()  # the attackers leave
        assert until(lambda: settled(node))
        assert echo_from(port, ATTACKER)
        assert until(lambda: settled(node))


@pytest.mark.slow
def test_a_declared_length_with_a_trickled_body_is_closed(node: Node) -> None:
    request = association_request()
    port = node.dicom.port
    # Header and the fixed fields at once, then the variable items a byte at a time.
    trickler = Trickler([attacker_connection(port) for _ in range(3)], request, head=40)
    try:
        assert until(lambda: connections(node).pending(ATTACKER) == 3)
        assert echo_from(port)
        assert until(trickler.all_closed)
        assert until(lambda: settled(node))
    finally:
        trickler.stop()
    assert len(deadline_refusals(node)) == 3


def test_a_peer_that_goes_away_is_not_counted(node: Node) -> None:
    port = node.dicom.port
    for _ in range(3):  # more than the cap, in turns: each one leaves
        batch = [attacker_connection(port) for _ in range(node.config.max_pending_per_address)]
        for connection in batch:
            connection.sendall(association_request()[:10])
        assert until(lambda: connections(node).pending(ATTACKER) > 0)
        for connection in batch:
            connection.close()
        assert until(lambda: settled(node))
    assert deadline_refusals(node) == []  # a peer that leaves is not refused
    assert echo_from(port, ATTACKER)


def test_every_way_a_connection_ends_returns_the_counts_to_zero(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = node.dicom.port
    request = association_request()

    def exchange(payload: bytes, answer: int) -> None:
        """Send, read the node's answer (a PDU type), leave as PS3.8 expects."""
        with attacker_connection(port) as peer:
            peer.sendall(payload)
            assert peer.recv(1) == bytes([answer])
        assert until(lambda: settled(node)), payload[:8]

    exchange(association_request(called="OTHERNODE"), 0x03)  # rejected by the policy
    exchange(bytes([0x09, 0, 0, 0, 0, 0]), 0x07)  # not a PDU type: A-ABORT
    exchange(struct.pack(">BBL", 0x01, 0, 0xFFFFFF00), 0x07)  # oversized
    exchange(struct.pack(">BBL", 0x04, 0, 4) + bytes(4), 0x07)  # data before association
    # Established, then released by the peer, and aborted by the peer.
    assert echo_from(port, ATTACKER)
    assert until(lambda: settled(node))
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHDNODE", bind_address=(ATTACKER, 0))
    assert assoc.is_established and connections(node).pending(ATTACKER) == 0
    assoc.abort()
    assert until(lambda: settled(node))

    # A failure inside negotiation neither holds the connection nor its count.
    def broken(*_args: object) -> None:
        raise RuntimeError("policy failed")

    monkeypatch.setattr(node.dicom._server.policy, "decide", broken)
    with attacker_connection(port) as peer:
        peer.sendall(request)
        assert until(lambda: closed_by_peer(peer))
    assert until(lambda: settled(node))
    assert deadline_refusals(node) == []  # none of these was a slow request


# --- over TLS -------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder)
    make_certificate(folder, "chdnode.test", ["127.0.0.1", "localhost"])
    make_certificate(folder, "scu.test", [])
    return folder


def tls_node_config(tmp_path: Path, pki: Path) -> Config:
    # Under mutual TLS every entry names its certificate; the echo SCU's does.
    scu = RemoteAE("ECHOSCU", "127.0.0.1", 104, "Test", tls_subject="scu.test")
    return make_config(
        tmp_path,
        remote_aes=(scu,),
        association_request_seconds=DEADLINE,
        network_timeout=300,
        dimse_tls=True,
        tls_certificate=str(pki / "chdnode.test.crt"),
        tls_private_key=str(pki / "chdnode.test.key"),
        tls_ca_certificates=str(pki / "ca.crt"),
    )


def client_context(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(pki / "scu.test.crt", pki / "scu.test.key")
    return context


def client_hello(pki: Path) -> bytes:
    """The first flight of a real TLS client, to be trickled."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def tls_echo(port: int, pki: Path) -> bool:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="CHDNODE", tls_args=(client_context(pki), None)
    )
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


@pytest.mark.slow
def test_tls_silent_and_trickled_handshakes_are_closed_at_the_deadline(
    tmp_path: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Node(tls_node_config(tmp_path, pki), web=False) as node:
        port = node.dicom.port
        silent = [attacker_connection(port) for _ in range(2)]  # TCP only, no ClientHello
        hello = client_hello(pki)
        trickled = Trickler([attacker_connection(port) for _ in range(2)], hello)
        watcher = Trickler(silent, b"")  # sends nothing, notices the close
        try:
            assert until(lambda: connections(node).pending(ATTACKER) == 4)
            assert tls_echo(port, pki)
            assert until(watcher.all_closed)
            assert until(trickled.all_closed)
            assert until(lambda: settled(node))
        finally:
            trickled.stop()
            watcher.stop()
        refused = deadline_refusals(node)
        assert len(refused) == 4  # one each, not also a "TLS handshake" refusal
        handshake = [r for r in node.archive.index.audit.rows() if "TLS handshake" in r["detail"]]
        assert handshake == []
        assert len([r for r in caplog.records if DEADLINE_DETAIL in r.getMessage()]) == 4
        assert tls_echo(port, pki)


@pytest.mark.slow
def test_tls_request_trickled_after_the_handshake_is_closed(tmp_path: Path, pki: Path) -> None:
    with Node(tls_node_config(tmp_path, pki), web=False) as node:
        port = node.dicom.port
        tls = client_context(pki).wrap_socket(attacker_connection(port))
        tls.setblocking(False)
        trickler = Trickler([tls], association_request())
        try:
            assert until(lambda: connections(node).pending(ATTACKER) == 1)
            assert tls_echo(port, pki)
            assert until(trickler.all_closed)
            assert until(lambda: settled(node))
        finally:
            trickler.stop()
        assert len(deadline_refusals(node)) == 1


def test_an_ipv6_host_is_capped_by_its_64() -> None:
    # One host commonly holds a whole /64: a fresh address per connection
    # must not get round the cap.
    table = ConnectionTable()
    try:
        sockets = [socket.socket() for _ in range(3)]
        admitted = [
            table.admit(s, f"2001:db8:1:2::{n + 1}", 60, 2, 100)[0] for n, s in enumerate(sockets)
        ]
        assert admitted[0] and admitted[1] and admitted[2] is None
        assert table.pending("2001:db8:1:2::ffff") == 2
        assert table.pending("2001:db8:1:3::1") == 0
        assert source_key("::ffff:127.0.0.2") == ATTACKER
        for entry in admitted[:2]:
            assert entry is not None
            assert table.end(entry) == (True, False)
            assert table.end(entry) == (False, False)  # said once
            table.forget(entry)
            table.forget(entry)
        assert table.open == 0 and table.pending("2001:db8:1:2::1") == 0
    finally:
        table.stop()
        for s in sockets:
            s.close()


@pytest.mark.parametrize("declared", [64 << 20, (1 << 32) - 1])
def test_a_declared_length_costs_nothing_until_it_is_sent(declared: int) -> None:
    """A PDU body is read into one buffer, but one grown a slice at a time:
    a peer declaring gigabytes (max_pdu_size = 0 lets it) and sending ten
    bytes makes the node allocate about a slice, not the declared length;
    what does arrive is read whole and in order."""
    import socket
    import threading
    import tracemalloc

    from dicomnode.dimse.transport import READ_FIRST, GuardedSocket

    near, far = socket.socketpair()
    reader = GuardedSocket.__new__(GuardedSocket)
    reader.socket = far
    threading.Thread(target=lambda: (near.sendall(b"0123456789"), near.close())).start()
    tracemalloc.start()
    try:
        got = reader._read(declared)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        far.close()
    assert bytes(got) == b"0123456789"
    assert peak < 2 * READ_FIRST + (1 << 20), peak
    whole = bytes(range(256)) * 40_000  # 10 MB: several pieces, joined once
    near, far = socket.socketpair()
    reader.socket = far
    threading.Thread(target=lambda: (near.sendall(whole), near.close())).start()
    assert bytes(reader._read(len(whole))) == whole
    far.close()


def test_an_incoming_association_waits_for_work_and_gives_its_sockets_back(
    node: Node,
) -> None:
    """The network loop of an incoming association waits on its socket and
    a wake-up pair (`dimse.waking`): a response handed to it wakes it at
    once, and when associations end their wake-up pairs are closed (no
    descriptor left behind, however many come and go)."""
    import os

    from pynetdicom.association import Association

    from dicomnode.dimse.waking import WakingDUL

    probe = Association(AE(), "requestor")
    WakingDUL.install(probe.dul)
    assert isinstance(probe.dul, WakingDUL)
    probe.dul.to_provider_queue.put("a primitive to send")
    assert select.select([probe.dul._wake[0]], [], [], 0)[0]  # woken, no wait
    probe.dul.close_wake()

    def descriptors() -> int:
        """Open sockets (wake-up pairs are sockets): files the node's other
        threads open meanwhile (an index connection, a log) are not counted."""
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed while listed
                count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        return count

    def echo_rounds() -> None:
        ae = AE(ae_title="BISHKEK_ECHO")
        ae.add_requested_context(Verification)
        for _ in range(12):
            assoc = ae.associate("127.0.0.1", node.dicom.port, ae_title="CHDNODE")
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0
            assoc.release()

    echo_rounds()  # warm: pools, loggers and the like open what they keep
    settled = descriptors()
    echo_rounds()
    deadline = time.monotonic() + 60
    while descriptors() > settled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert descriptors() <= settled
