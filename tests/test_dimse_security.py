"""The DIMSE port against strangers, wrong addresses, forbidden services,
greedy peers, junk, idle sockets, and over TLS with DCMTK."""

from __future__ import annotations

import gc
import os
import resource
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (
    Verification,
    XRayAngiographicImageStorage,
)

from dicomnode.config import Config, RemoteAE
from dicomnode.net.tls import make_ca, make_certificate
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, save, xa_instance
from tests.conftest import dcmtk, make_config

HOME = RemoteAE("OSH_CATH", "127.0.0.1", 104, "Osh Regional Hospital", services=("echo", "store"))
ELSEWHERE = RemoteAE("NUKUS_ECHO", "127.0.0.1", 104, "Nukus", networks=("10.77.0.0/16",))
FIND_ONLY = RemoteAE("KHUJAND_PACS", "127.0.0.1", 104, "Khujand", services=("echo", "find"))
GET_ONLY = RemoteAE("ALMATY_VIEW", "127.0.0.1", 104, "Almaty", services=("get",))
ONE_AT_A_TIME = RemoteAE("TASHKENT", "127.0.0.1", 104, "Tashkent", max_associations=1)
QUOTA = RemoteAE("TURKESTAN", "127.0.0.1", 104, "Turkestan", quota_mb=1)
TABLE = (HOME, ELSEWHERE, FIND_ONLY, GET_ONLY, ONE_AT_A_TIME, QUOTA)


def secured(tmp_path: Path, **overrides: object) -> Config:
    values: dict[str, object] = {"require_known_ae": True, "remote_aes": TABLE}
    values.update(overrides)
    return make_config(tmp_path, **values)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with Node(secured(tmp_path), web=False) as running:
        yield running


def echo(port: int, calling: str, called: str = "CHDNODE") -> str:
    result = dcmtk("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port))
    return "ok" if result.returncode == 0 else result.stderr


def associate(port: int, calling: str, *contexts: str):
    ae = AE(ae_title=calling)
    for context in contexts or (Verification,):
        ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title="CHDNODE")


def test_known_ae_from_its_network_only(node: Node) -> None:
    port = node.dicom.port
    assert echo(port, "OSH_CATH") == "ok"
    assert "Calling AE Title Not Recognized" in echo(port, "STRANGER")
    assert "Calling AE Title Not Recognized" in echo(port, "NUKUS_ECHO")  # wrong address
    assert "Called AE Title Not Recognized" in echo(port, "OSH_CATH", called="OTHERPACS")
    audit = node.archive.index.audit.rows()
    rejected = [(r["user"], r["detail"]) for r in audit if r["event"] == "association-rejected"]
    assert ("STRANGER", "calling AE title is not known") in rejected
    assert ("NUKUS_ECHO", "address not allowed for this AE title") in rejected
    assert node.archive.index.audit.verify().ok


def test_services_are_granted_per_ae(node: Node, tmp_path: Path) -> None:
    port = node.dicom.port
    ds = xa_instance(
        PATIENTS[0], frames=2, rows=32, cols=32, transfer_syntax=ExplicitVRLittleEndian
    )
    path = save(ds, tmp_path / "xa.dcm")
    refused = dcmtk("dcmsend", "-aet", "KHUJAND_PACS", "-aec", "CHDNODE", "127.0.0.1", port, path)
    # No storage context for a find-only peer (dcmsend exits 0 on that).
    assert "No Acceptable Presentation Contexts" in refused.stderr
    query = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
    found = dcmtk("findscu", "-aet", "KHUJAND_PACS", "-aec", "CHDNODE", "127.0.0.1", port, *query)
    assert found.returncode == 0, found.stderr
    not_found = dcmtk("findscu", "-aet", "OSH_CATH", "-aec", "CHDNODE", "127.0.0.1", port, *query)
    assert not_found.returncode != 0  # store-and-echo peer: C-FIND context rejected
    # A C-GET peer has storage contexts (it receives on them) but may not store.
    assoc = associate(port, "ALMATY_VIEW", XRayAngiographicImageStorage)
    assert assoc.is_established
    from pydicom import dcmread

    status = assoc.send_c_store(dcmread(path))
    assoc.release()
    assert status.Status == 0x0124
    assert node.archive.index.stats()["instances"] == 0


def test_limits_per_ae_count_associations_not_sockets(node: Node) -> None:
    first = associate(node.dicom.port, "TASHKENT")
    assert first.is_established
    second = associate(node.dicom.port, "TASHKENT")
    assert second.is_rejected
    assert (second.acceptor.primitive.result, second.acceptor.primitive.diagnostic) == (2, 2)
    first.release()
    third = associate(node.dicom.port, "TASHKENT")
    assert third.is_established
    third.release()


@pytest.mark.slow
def test_quota_refuses_with_out_of_resources(node: Node, tmp_path: Path) -> None:
    from pydicom import dcmread

    assoc = associate(node.dicom.port, "TURKESTAN", XRayAngiographicImageStorage)
    statuses = []
    for n in range(3):  # 3 x 640 kB against 1 MB
        ds = xa_instance(
            PATIENTS[2],
            frames=10,
            rows=256,
            cols=256,
            seed=n,
            transfer_syntax=ExplicitVRLittleEndian,
        )
        statuses.append(assoc.send_c_store(dcmread(save(ds, tmp_path / f"{n}.dcm"))).Status)
    assoc.release()
    assert statuses[0] == 0 and statuses[-1] == 0xA700


def _idle_connections(port: int, count: int) -> list[socket.socket]:
    # From as many addresses (127.0.1.x): one address's unassociated
    # connections are capped (max_pending_per_address).
    return [
        socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.1.{n % 250 + 1}", 0))
        for n in range(count)
    ]


def until(condition: Callable[[], bool], seconds: float = 30) -> bool:
    """Poll a condition of the server (not a fixed sleep) until it holds."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _held(connections: list[socket.socket]) -> bool:
    """Whether the server still holds every one of these (none closed)."""
    for connection in connections:
        connection.setblocking(False)
        try:
            if connection.recv(1) == b"":
                return False
        except BlockingIOError:
            pass  # open, nothing sent: held
        finally:
            connection.setblocking(True)
    return True


def test_fifty_idle_connections_do_not_block_a_real_one(tmp_path: Path) -> None:
    # A request deadline far off: the idle ones are cut by nothing but the test.
    with Node(secured(tmp_path, association_request_seconds=600), web=False) as node:
        idle = _idle_connections(node.dicom.port, 50)
        # Once the server holds all fifty (accepted, waiting for a request).
        assert until(lambda: len(node.dicom._server.ae.active_associations) >= 50)
        try:
            # The echo succeeds while all fifty are still held (none let go
            # to make room): they do not block it, however long it took.
            assert echo(node.dicom.port, "OSH_CATH") == "ok"
            assert _held(idle) and len(node.dicom._server.ae.active_associations) >= 50
        finally:
            for connection in idle:
                connection.close()


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.slow
def test_huge_pdus_junk_and_half_open_connections(node: Node) -> None:
    port = node.dicom.port
    for pdu_type in (0x01, 0x04):  # an association request and a P-DATA of 4 GiB
        with socket.create_connection(("127.0.0.1", port), timeout=10) as peer:
            peer.sendall(struct.pack(">BBL", pdu_type, 0, 0xFFFFFFFF) + b"\0" * 4096)
            answer = peer.recv(10)
            assert answer[:1] == b"\x07"  # A-ABORT, nothing buffered
            assert peer.recv(10) == b""  # and the connection is closed

    def junk(count: int) -> None:
        for n in range(count):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as peer:
                peer.sendall(os.urandom(1 + n % 97) if n % 3 else b"\x01\x00\x00")

    junk(200)  # warm-up: thread stacks and allocator arenas reach their size
    gc.collect()
    before, threads = _rss_mb(), threading.active_count()
    junk(1000)
    # During a flood, connections past max_connections are closed at once;
    # once the junk is handled, a real peer gets in.
    server = node.dicom._server
    assert until(lambda: len(server.ae.active_associations) < node.config.max_connections // 2)
    # The junk's own connections from this address must have ended too, or
    # the per-address limit on unassociated connections refuses the echo.
    assert until(lambda: server.connections.pending("127.0.0.1") == 0)
    assert echo(port, "OSH_CATH") == "ok"
    gc.collect()  # as pynetdicom's accept loop does every 60 connections
    grown = _rss_mb() - before
    assert grown < 40, f"memory grew by {grown:.0f} MB over 1,000 junk connections"
    # Junk connections' threads wind down by themselves.
    assert until(lambda: threading.active_count() <= threads + 4), threading.active_count()


def test_an_instance_over_the_size_limit_is_aborted_as_it_arrives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = secured(tmp_path, max_instance_mb=1)
    big = save(xa_instance(PATIENTS[3], frames=40, rows=256, cols=256), tmp_path / "big.dcm")
    small = save(xa_instance(PATIENTS[3], frames=2, rows=64, cols=64), tmp_path / "small.dcm")
    with Node(config, web=False) as node:
        port = node.dicom.port
        dcmtk("dcmsend", "-aet", "OSH_CATH", "-aec", "CHDNODE", "127.0.0.1", port, big)
        assert "instance larger than 1 MiB" in caplog.text
        assert node.archive.index.stats()["instances"] == 0
        again = dcmtk("dcmsend", "-aet", "OSH_CATH", "-aec", "CHDNODE", "127.0.0.1", port, small)
        assert again.returncode == 0, again.stderr
        assert node.archive.index.stats()["instances"] == 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder)
    make_certificate(folder, "chdnode.test", ["127.0.0.1", "localhost"])
    make_certificate(folder, "cath1.osh.test", [])
    rogue = folder / "rogue"
    make_ca(rogue)
    make_certificate(rogue, "cath1.osh.test", [])
    return folder


def tls_config(tmp_path: Path, pki: Path) -> Config:
    home = RemoteAE(
        "OSH_CATH", "127.0.0.1", 104, "Osh", tls_subject="cath1.osh.test",
        move_destinations=("OSH_CATH", "TLS_PACS"),  # the TLS destination of the move test
    )  # fmt: skip
    return secured(
        tmp_path,
        remote_aes=(home, FIND_ONLY),
        dimse_tls=True,
        tls_certificate=str(pki / "chdnode.test.crt"),
        tls_private_key=str(pki / "chdnode.test.key"),
        tls_ca_certificates=str(pki / "ca.crt"),
    )


def tls_send(port: int, calling: str, key: Path, cert: Path, ca: Path, path: Path) -> str:
    result = dcmtk(
        "storescu", "+tls", key, cert, "+cf", ca, "-aet", calling, "-aec", "CHDNODE",
        "127.0.0.1", port, path,
    )  # fmt: skip
    return "ok" if result.returncode == 0 else result.stderr


@pytest.mark.slow
def test_mutual_tls_with_dcmtk(tmp_path: Path, pki: Path) -> None:
    ds = xa_instance(
        PATIENTS[4], frames=2, rows=32, cols=32, transfer_syntax=ExplicitVRLittleEndian
    )
    path = save(ds, tmp_path / "xa.dcm")
    key, cert, ca = pki / "cath1.osh.test.key", pki / "cath1.osh.test.crt", pki / "ca.crt"
    with Node(tls_config(tmp_path, pki), web=False) as node:
        port = node.dicom.port
        assert tls_send(port, "OSH_CATH", key, cert, ca, path) == "ok"
        # A certificate from another CA, the right certificate for another AE
        # title, and plain TCP: all refused, and nothing more stored.
        rogue = pki / "rogue"
        assert tls_send(port, "OSH_CATH", rogue / "cath1.osh.test.key",
                        rogue / "cath1.osh.test.crt", ca, path) != "ok"  # fmt: skip
        assert "Not Recognized" in tls_send(port, "KHUJAND_PACS", key, cert, ca, path)
        assert echo(port, "OSH_CATH") != "ok"
        found = dcmtk(
            "findscu", "+tls", key, cert, "+cf", ca, "-aet", "OSH_CATH", "-aec", "CHDNODE",
            "127.0.0.1", port, "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
        )  # fmt: skip
        assert found.returncode == 0, found.stderr  # OSH_CATH here may use every service
        assert node.archive.index.stats()["instances"] == 1
        # Each refusal is audited as its connection ends, which may be after
        # the refused client has given up: wait for the records.
        rejected = lambda: [  # noqa: E731
            r["event"] for r in node.archive.index.audit.rows()
        ].count("association-rejected")
        assert until(lambda: rejected() >= 3), rejected()


@pytest.mark.slow
def test_idle_tls_connections_do_not_block_the_handshake_of_others(
    tmp_path: Path, pki: Path
) -> None:
    client = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    client.check_hostname = False
    client.load_cert_chain(pki / "cath1.osh.test.crt", pki / "cath1.osh.test.key")
    config = replace(tls_config(tmp_path, pki), association_request_seconds=600)
    with Node(config, web=False) as node:
        threads = threading.active_count()
        idle = _idle_connections(node.dicom.port, 50)  # TCP open, no ClientHello
        # Once each sits in its own thread, waiting in its handshake.
        assert until(lambda: threading.active_count() >= threads + 50)
        try:
            raw = socket.create_connection(("127.0.0.1", node.dicom.port), timeout=60)
            with client.wrap_socket(raw) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
            # ...while all fifty still wait in theirs: they did not block it.
            assert _held(idle) and threading.active_count() >= threads + 50
        finally:
            for connection in idle:
                connection.close()


@pytest.mark.slow
def test_https_with_idle_connections_beside_it(tmp_path: Path, pki: Path) -> None:
    import http.client

    config = replace(tls_config(tmp_path, pki), http_tls=True, http_header_seconds=600)
    client = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with Node(config, web=True) as node:
        idle = _idle_connections(node.http_port, 50)
        try:
            https = http.client.HTTPSConnection(
                "127.0.0.1", node.http_port, context=client, timeout=60
            )
            https.request("GET", "/healthz")
            answer = https.getresponse()
            assert answer.status == 200 and answer.getheader("Strict-Transport-Security")
            assert _held(idle)  # answered while all fifty idle ones were held
        finally:
            for connection in idle:
                connection.close()
        plain = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=5)
        with pytest.raises((OSError, http.client.HTTPException)):
            plain.request("GET", "/healthz")
            assert plain.getresponse().status != 200


@pytest.mark.slow
def test_the_node_forwards_and_moves_over_tls_to_dcmtk(tmp_path: Path, pki: Path) -> None:
    from pydicom.dataset import Dataset

    from dicomnode.jobs.forwarding import Forwarder
    from tests.conftest import DCMTK_ENV, listening, on_free_ports

    received = tmp_path / "received"
    received.mkdir()
    make_certificate(pki, "pacs.test", ["127.0.0.1"])

    def start(port: int) -> tuple[subprocess.Popen, int]:
        storescp = subprocess.Popen(
            ["storescp", "+tls", pki / "pacs.test.key", pki / "pacs.test.crt",
             "+cf", pki / "ca.crt",
             "+xa", "+uf", "-aet", "TLS_PACS", "-od", received, str(port)],
            env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        listening(storescp, port)  # storescp cannot bind port 0: again if its port was taken
        return storescp, port

    storescp, port = on_free_ports(start)
    pacs = RemoteAE("TLS_PACS", "127.0.0.1", port, "Research PACS", tls=True)
    config = replace(
        tls_config(tmp_path, pki), remote_aes=(*tls_config(tmp_path, pki).remote_aes, pacs)
    )
    try:
        with Node(config, web=False) as node:
            ds = xa_instance(PATIENTS[1], frames=2, rows=32, cols=32)
            from tests.conftest import incoming

            assert node.ingestor.ingest(incoming(ds, calling_ae="OSH_CATH")).status == 0
            (study,) = {r["StudyInstanceUID"] for r in _studies(node)}
            forwarder = Forwarder(config, node.archive)
            assert forwarder.enqueue_study(study, "TLS_PACS") == 1
            assert forwarder.run_once() == {"sent": 1, "waiting": 0}
            # C-MOVE by a (TLS) client to the TLS destination.
            client = AE(ae_title="OSH_CATH")
            client.add_requested_context("1.2.840.10008.5.1.4.1.2.2.2")
            context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            context.check_hostname = False
            context.load_cert_chain(pki / "cath1.osh.test.crt", pki / "cath1.osh.test.key")
            assoc = client.associate(
                "127.0.0.1", node.dicom.port, ae_title="CHDNODE", tls_args=(context, None)
            )
            assert assoc.is_established
            query = Dataset()
            query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study
            statuses = [
                s.Status
                for s, _ in assoc.send_c_move(query, "TLS_PACS", "1.2.840.10008.5.1.4.1.2.2.2")
                if s
            ]
            assoc.release()
            assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    finally:
        storescp.terminate()
        storescp.communicate(timeout=10)
    assert len(list(received.iterdir())) == 2  # forwarded once, then moved once


def _studies(node: Node) -> list[dict]:
    from storage.keys import Level
    from storage.query import Query

    return list(node.archive.index.find(Query(Level.STUDY, {"StudyInstanceUID": ""})))


@pytest.mark.slow
def test_a_connection_that_never_asks_is_closed(tmp_path: Path) -> None:
    # association_request_seconds is 10 s in service.
    # network_timeout (60 s) is longer than the test waits: the close is the
    # request deadline's.
    with Node(secured(tmp_path, association_request_seconds=0.5), web=False) as node:
        assert node.config.network_timeout > 30
        with socket.create_connection(("127.0.0.1", node.dicom.port), timeout=30) as silent:
            assert silent.recv(16) == b""  # closed by the node, not by the test's timeout
        assert echo(node.dicom.port, "OSH_CATH") == "ok"  # and a real peer keeps the full timeout
