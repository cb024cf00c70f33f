"""Nothing acknowledged is lost: `dicomnode serve` killed with SIGKILL at
random moments while a sender stores, restarted, sent to again (issue #9),
on SQLite with files and on PostgreSQL with an S3-compatible store."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import UltrasoundImageStorage

from dicomnode.deid.secret import Secret, load_or_create_key
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.jobs.verifying import Verifier
from dicomnode.node import open_archive
from dicomnode.ops.check import ORPHAN_GRACE_SECONDS, reconcile, verify
from dicomnode.ops.samples import PATIENTS, UID_ROOT
from tests.conftest import free_port, make_config
from tests.postgres import LocalPostgres
from tests.s3server import CREDENTIALS, LocalS3
from tests.test_cli import DICOMNODE
from tests.test_ingest import instance

KILLS = 20
INSTANCES = 150


def _datasets() -> list:
    studies = [generate_uid(UID_ROOT) for _ in range(5)]
    out = []
    for n in range(INSTANCES):
        ds = instance(PATIENTS[n % 5 % 3], StudyInstanceUID=studies[n % 5], InstanceNumber=n + 1)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.append(ds)
    return out


def _serve(env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [*DICOMNODE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    banner = process.stdout.readline()  # printed once both services listen
    assert "DICOM port" in banner, banner
    return process


def _associate(port: int, killed: bool = True):
    ae = AE(ae_title="OSH_CATH")
    # pynetdicom's SCU misses the abort of a killed peer and waits out its
    # DIMSE timeout (30 s by default) for a response that cannot come: 2 s
    # in a round that kills the node. A round that does not waits as a
    # hospital's sender would: a loaded machine answers late, not never.
    ae.dimse_timeout = 2 if killed else 300
    ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHDNODE")
    if assoc.is_established:  # else each message waits ~40 ms for a delayed ACK
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def _send(assoc, datasets: list, acknowledged: set[str]) -> None:
    """Store until done or the node dies; remember what was answered Success."""
    for ds in datasets:
        if not assoc.is_established:
            return
        status = assoc.send_c_store(ds)
        if status and status.Status == 0x0000:
            acknowledged.add(str(ds.SOPInstanceUID))
    if assoc.is_established:
        assoc.release()


@pytest.mark.slow
@pytest.mark.parametrize("archive_kind", ["SQLite and files", "PostgreSQL and S3"])
def test_nothing_acknowledged_is_lost_across_twenty_sigkills(
    tmp_path: Path,
    archive_kind: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared: dict[str, str] = {}
    if archive_kind == "PostgreSQL and S3":
        s3: LocalS3 = request.getfixturevalue("s3")
        postgres: LocalPostgres = request.getfixturevalue("postgres")
        shared = {
            **CREDENTIALS,
            "DICOMNODE_INDEX_URL": postgres.database(),
            "DICOMNODE_BLOB_URL": f"s3://{s3.bucket('crash-' + uuid.uuid4().hex[:8])}/archive",
            "DICOMNODE_S3_ENDPOINT_URL": s3.endpoint,
        }
        for name, value in CREDENTIALS.items():
            monkeypatch.setenv(name, value)
    config = make_config(
        tmp_path,
        dimse_port=free_port(),
        index_url=shared.get("DICOMNODE_INDEX_URL", ""),
        blob_url=shared.get("DICOMNODE_BLOB_URL", ""),
        s3_endpoint_url=shared.get("DICOMNODE_S3_ENDPOINT_URL", ""),
    )
    env = {
        **os.environ,
        **shared,
        "DICOMNODE_CONFIG": os.devnull,
        "DICOMNODE_DATA_DIR": str(config.data_dir),
        "DICOMNODE_KEY_DIR": str(config.key_dir),
        "DICOMNODE_DIMSE_PORT": str(config.dimse_port),
        "DICOMNODE_HTTP_PORT": str(free_port()),
        "DICOMNODE_MIN_FREE_DISK_MB": "0",
        "DICOMNODE_REQUIRE_KNOWN_AE": "false",
        "DICOMNODE_LOG_LEVEL": "ERROR",
    }
    datasets, acknowledged, chance = _datasets(), set(), random.Random(20261126)
    # Twenty killed rounds, then unharmed ones until every instance was
    # acknowledged once (on a loaded machine one unharmed association can
    # still be cut); what is checked is that nothing acknowledged is lost.
    for round_ in range(KILLS + 3):
        if round_ > KILLS and len(acknowledged) == INSTANCES:
            break
        process = _serve(env)
        # Unacknowledged first, then re-sends of the rest (duplicates count too).
        order = sorted(datasets, key=lambda ds: str(ds.SOPInstanceUID) in acknowledged)
        assoc = _associate(config.dimse_port, killed=round_ < KILLS)
        killer = None
        if round_ < KILLS:  # fault injection at a random moment, not a wait
            killer = threading.Timer(chance.uniform(0.1, 1.2), process.send_signal, [9])
            killer.start()
        _send(assoc, order, acknowledged)
        if killer is not None:
            killer.join()
        else:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -9)
    assert len(acknowledged) == INSTANCES  # the unharmed rounds got them all

    archive = open_archive(config)
    try:
        # Acknowledged before OCR read them, some still wait (held, durable):
        # a node's verifier reads them, here as at the next start.
        verifier = Verifier(Ingestor(config, archive), 2)
        try:
            verifier.run_once()
        finally:
            verifier.stop()
        assert archive.index.ocr_queue.waiting() == 0
        secret = Secret(load_or_create_key(config.key_dir / "deid.key", config.data_dir))
        stored = {secret.uid(uid) for uid in acknowledged}
        missing = [uid for uid in stored if archive.index.instance_blob(uid) is None]
        assert missing == [], f"{len(missing)} acknowledged instances lost"
        assert archive.index.stats()["instances"] == INSTANCES  # no duplicates either
        report = verify(archive)
        assert report.missing == [] and report.damaged == [], report.summary()
        # Files of killed writes that no row names are orphans, set aside at a start.
        later = reconcile(archive, repair=True, now=10**10 + ORPHAN_GRACE_SECONDS)
        assert later.missing == [] and verify(archive).clean
        assert list(config.data_dir.rglob("*.part")) == []
    finally:
        archive.close()
