"""Instance files in an S3-compatible object store, over HTTP to a local
server (moto's standalone server, started by the session): the store's
contract, the whole node on it, and a store that is down (issue #9)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.node import open_archive
from dicomnode.ops.admin import refuse_quarantined, release_quarantined
from dicomnode.ops.check import ORPHAN_GRACE_SECONDS, reconcile, verify
from dicomnode.ops.samples import PATIENTS
from storage.archive import is_sealed
from storage.blobs import BlobStore, open_stores
from storage.fileblobs import FileBlobStore
from storage.schema import quarantine
from tests.conftest import incoming, make_config, refusing_port
from tests.s3server import CREDENTIALS, LocalS3
from tests.test_ingest import instance


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def _s3_config(tmp_path: Path, s3: LocalS3, **overrides: object) -> Config:
    bucket = s3.bucket("chd-" + uuid.uuid4().hex[:12])
    return make_config(
        tmp_path, blob_url=f"s3://{bucket}/archive", s3_endpoint_url=s3.endpoint, **overrides
    )


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "file":
        yield FileBlobStore(tmp_path / "blobs")
    else:
        server: LocalS3 = request.getfixturevalue("s3")
        yield _s3_stores(tmp_path, server)[0]


def _s3_stores(tmp_path: Path, server: LocalS3) -> tuple[BlobStore, BlobStore]:
    config = _s3_config(tmp_path, server)
    return open_stores(config.blob_url, tmp_path, config.s3_endpoint_url)


@pytest.mark.slow
def test_every_store_keeps_the_same_contract(store: BlobStore) -> None:
    key, other = store.key_for("2.25.1"), store.key_for("2.25.2")
    assert not store.exists(key)
    store.put(key, b"first")
    store.put(key, b"second")  # a replace is whole too
    store.put(other, b"other")
    assert store.read(key) == b"second" and store.exists(key)
    assert sorted(k for k, _ in store.listing()) == sorted([key, other])
    store.set_aside(other)  # an orphan: kept in lost+found, out of the store
    assert [k for k, _ in store.listing()] == [key]
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.read(key)
    with pytest.raises(ValueError, match="escape"):
        store.put("../../outside.dcm", b"x")


@pytest.mark.slow
def test_the_node_on_an_object_store_stores_checks_and_repairs(tmp_path: Path, s3: LocalS3) -> None:
    config = _s3_config(tmp_path, s3)
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        for n in range(6):
            ds = instance(PATIENTS[n % 3], InstanceNumber=n + 1)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            assert ingestor.ingest(incoming(ds)).status == 0
        assert not (config.data_dir / "blobs").exists()  # nothing went to local disk
        report = verify(archive)
        assert report.clean and report.checked == 6
        # A blob whose row never committed (a crash between the two): set aside.
        orphan = archive.blobs.key_for("2.25.999")
        archive.blobs.put(orphan, b"never acknowledged")
        assert reconcile(archive, repair=True).orphans == []  # young: maybe mid-store
        later = reconcile(archive, repair=True, now=10**10 + ORPHAN_GRACE_SECONDS)
        assert later.orphans == [orphan] and not archive.blobs.exists(orphan)
        assert verify(archive).clean
    finally:
        archive.close()


@pytest.mark.slow
def test_held_instances_are_encrypted_in_the_object_store_too(tmp_path: Path, s3: LocalS3) -> None:
    config = _s3_config(tmp_path, s3)
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        for n in range(2):
            ds = instance(PATIENTS[n], InstanceNumber=n + 1)
            del ds.SequenceOfUltrasoundRegions
            assert ingestor.ingest(incoming(ds)).outcome is Outcome.QUARANTINED
        assert not (config.data_dir / "quarantine").exists()
        first, second = (row["sopinstanceuid"] for row in archive.index.quarantined())
        (row,) = archive.index.quarantined(first)
        blob = archive.held.read(row["blob_key"])
        assert is_sealed(blob) and row["sha256"] == hashlib.sha256(blob).hexdigest()
        plain = archive.read_held(first)
        assert plain is not None and plain[128:132] == b"DICM"
        assert verify(archive).clean
        # A plaintext object of an older version: sealed as at a start.
        archive.held.put(row["blob_key"], plain)
        with archive.index.engine.begin() as conn:
            conn.execute(
                quarantine.update()
                .where(quarantine.c.sopinstanceuid == first)
                .values(size=len(plain), sha256=hashlib.sha256(plain).hexdigest(), sealed=False)
            )
        assert verify(archive).plaintext == [first]
        assert archive.seal_plaintext_held() == (1, [])
        assert is_sealed(archive.held.read(row["blob_key"])) and archive.read_held(first) == plain
        assert verify(archive).clean and verify(archive).plaintext == []
        (released,) = release_quarantined(config, archive, [first], reviewed=True)
        (refused,) = refuse_quarantined(archive, [second], "test")
        assert released.done and refused.done and archive.read(first) == plain
        assert list(archive.held.listing()) == [] and verify(archive).clean
    finally:
        archive.close()


def test_an_unreachable_object_store_refuses_the_instance_and_indexes_nothing(
    tmp_path: Path,
) -> None:
    with refusing_port() as port:
        nowhere = f"http://127.0.0.1:{port}"  # nothing listens there
        config = make_config(tmp_path, blob_url="s3://chd/archive", s3_endpoint_url=nowhere)
        archive = open_archive(config)
        try:
            ds = instance(PATIENTS[0])
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            result = Ingestor(config, archive).ingest(incoming(ds))
            assert result.status == 0xA700 and "could not write" in result.comment
            assert archive.index.stats()["instances"] == 0
        finally:
            archive.close()
