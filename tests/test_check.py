"""Archive integrity: orphans from a crash set aside at start, damage found by
`dicomnode check` (issue #9, first part)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.node import Node, open_archive
from dicomnode.ops.check import ORPHAN_GRACE_SECONDS, reconcile, verify
from dicomnode.ops.samples import PATIENTS
from storage.archive import Archive
from storage.blobs import LOST_AND_FOUND
from tests.conftest import incoming, make_config
from tests.postgres import LocalPostgres
from tests.test_cli import run
from tests.test_ingest import instance


def _store(ingestor: Ingestor, n: int) -> list[str]:
    keys = []
    for i in range(n):
        result = ingestor.ingest(incoming(instance(PATIENTS[i % 3])))
        assert result.outcome is Outcome.STORED
    for path in ingestor.archive.blobs.root.glob("??/??/*.dcm"):
        keys.append(path.relative_to(ingestor.archive.blobs.root).as_posix())
    return keys


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_clean_archive_checks_clean(ingestor: Ingestor, archive: Archive) -> None:
    _store(ingestor, 3)
    report = verify(archive)
    assert report.clean and report.checked == 3
    assert report.summary() == "3 instances checked, 0 missing, 0 damaged, 0 orphan files"


def test_orphans_of_a_crash_are_set_aside_at_start_only_when_old(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    # A crash between the blob's rename and the index commit: a file no row names.
    orphan = archive.blobs.path(archive.blobs.key_for("2.25.1234"))
    archive.blobs.put(archive.blobs.key_for("2.25.1234"), b"DICM?")
    fresh = reconcile(archive, repair=True)
    assert fresh.clean and orphan.exists()  # another process may be about to commit it
    _age(orphan, ORPHAN_GRACE_SECONDS + 5)
    archive.close()
    with Node(config, web=False) as node:
        assert not orphan.exists()
        assert (config.data_dir / LOST_AND_FOUND / orphan.name).exists()
        (record,) = [r for r in node.archive.index.audit.rows() if r["event"] == "archive-check"]
        assert "1 orphan files" in record["detail"]
        assert reconcile(node.archive, repair=True).clean


@pytest.mark.slow
def test_check_finds_missing_truncated_swapped_and_flipped_blobs(
    tmp_path: Path, ingestor: Ingestor, archive: Archive
) -> None:
    keys = _store(ingestor, 5)
    paths = [archive.blobs.path(k) for k in keys]
    paths[0].unlink()  # missing
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 100])  # truncated
    paths[3].write_bytes(paths[2].read_bytes())  # another instance's bytes
    flipped = bytearray(paths[4].read_bytes())
    flipped[-10] ^= 0x01  # one bit of pixel data: same size, still parses
    paths[4].write_bytes(bytes(flipped))
    report = verify(archive)
    assert len(report.missing) == 1 and report.checked == 5
    reasons = sorted(why for _, why in report.damaged)
    assert len(reasons) == 3
    # Truncated: size differs; swapped: size or content; flipped: content only.
    assert all("indexed" in why or "SHA-256" in why for why in reasons)
    assert any("SHA-256" in why for why in reasons)
    archive.close()
    result = run(tmp_path, "check", "--no-progress")
    assert result.returncode == 6
    assert "1 missing, 3 damaged" in result.stdout
    assert result.stdout.count("damaged: 2.25.") == 3


@pytest.mark.slow
def test_backup_and_restore_bring_back_index_keys_and_the_audit_chain(
    tmp_path: Path, config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    import shutil

    from dicomnode.ops.admin import reidentify

    ds = instance(PATIENTS[2])
    assert ingestor.ingest(incoming(ds, calling_ae="DUSHANBE_ECHO")).outcome is Outcome.STORED
    pseudonym = ingestor.deidentify.secret.pseudonym("RCC Dushanbe", PATIENTS[2].patient_id)
    held = instance(PATIENTS[1])
    del held.SequenceOfUltrasoundRegions
    assert ingestor.ingest(incoming(held)).outcome is Outcome.QUARANTINED
    (held_row,) = archive.index.quarantined()
    held_file = archive.read_held(held_row["sopinstanceuid"])
    stats = archive.index.stats()
    # Taken while the archive is open (SQLite online backup of the WAL database).
    assert run(tmp_path, "backup", "--out", str(tmp_path / "b1")).returncode == 0
    assert run(tmp_path, "backup", "--out", str(tmp_path / "b1")).returncode == 2  # not empty
    keys_only = run(tmp_path, "backup", "--only", "keys", "--out", str(tmp_path / "b2"))
    assert "index.sqlite" not in keys_only.stdout and "keys/linkage.key" in keys_only.stdout
    assert "keys/quarantine.key" in keys_only.stdout  # held blobs open with it alone
    assert (tmp_path / "b1" / "keys" / "linkage.key").stat().st_mode & 0o077 == 0

    # Disaster: index and keys gone (the blobs survive on their own disks).
    archive.close()
    (config.data_dir / "index.sqlite").unlink()
    shutil.rmtree(config.key_dir)
    assert run(tmp_path, "restore", str(tmp_path / "b1")).returncode == 0
    restored = Node(config, web=False).archive
    try:
        assert restored.index.stats() == stats
        assert restored.index.audit.verify().ok  # audit.key came back with the index
        (found,) = reidentify(config, restored, pseudonym)
        assert found["patient_id"] == PATIENTS[2].patient_id
        # quarantine.key came back too: the held instance still opens.
        assert restored.read_held(held_row["sopinstanceuid"]) == held_file
    finally:
        restored.close()

    # A damaged backup restores nothing; a differing target needs --force.
    (tmp_path / "b2" / "keys" / "deid.key").write_text("00" * 32 + "\n")
    damaged = run(tmp_path, "restore", str(tmp_path / "b2"))
    assert damaged.returncode == 2 and "differs from the manifest" in damaged.stderr


@pytest.mark.slow
def test_a_postgresql_index_is_backed_up_with_pg_dump_and_restored(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    """Index and keys out while the node's archive is open; a new, empty
    database restored from it; a database holding instances only with --force."""
    config = make_config(tmp_path, index_url=postgres.database())
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    for n in range(3):
        assert ingestor.ingest(incoming(instance(PATIENTS[n]))).outcome is Outcome.STORED
    stats = archive.index.stats()
    url = {"DICOMNODE_INDEX_URL": config.index_url}
    made = run(tmp_path, "backup", "--out", str(tmp_path / "b"), **url)
    assert made.returncode == 0 and "index.pgdump" in made.stdout, made.stderr
    archive.close()

    refused = run(tmp_path, "restore", str(tmp_path / "b"), **url)
    assert refused.returncode == 2 and "--force" in refused.stderr
    fresh = {"DICOMNODE_INDEX_URL": postgres.database()}
    assert run(tmp_path, "restore", str(tmp_path / "b"), **fresh).returncode == 0
    restored = open_archive(replace(config, index_url=fresh["DICOMNODE_INDEX_URL"]))
    try:
        assert restored.index.stats() == stats
        assert restored.index.audit.verify().ok
        assert verify(restored).clean  # the same blobs, found through the restored rows
    finally:
        restored.close()
