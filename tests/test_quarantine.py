"""Held instances encrypted at rest (quarantine.key), legacy plaintext ones
sealed at start-up, and the administrator's tools: list, show, release
(re-checked or reviewed), refuse."""

from __future__ import annotations

import getpass
import hashlib
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.node import Node, open_archive
from dicomnode.ops.admin import (
    AdminError,
    refuse_quarantined,
    release_quarantined,
    show_quarantined,
)
from dicomnode.ops.check import verify
from dicomnode.ops.samples import PATIENTS
from storage.archive import HELD_FORMAT, Archive, HeldBlobError, is_sealed
from storage.schema import quarantine
from tests.conftest import incoming
from tests.test_cli import run
from tests.test_ingest import instance


def hold(ingestor: Ingestor, patient=PATIENTS[0], calling_ae: str = "BISHKEK_ECHO") -> str:
    """Quarantine an ultrasound clip without regions; its (new) SOP Instance UID."""
    before = {row["sopinstanceuid"] for row in ingestor.archive.index.quarantined()}
    ds = instance(patient)
    del ds.SequenceOfUltrasoundRegions
    assert ingestor.ingest(incoming(ds, calling_ae=calling_ae)).outcome is Outcome.QUARANTINED
    (uid,) = {row["sopinstanceuid"] for row in ingestor.archive.index.quarantined()} - before
    return uid


def on_disk(archive: Archive, uid: str) -> bytes:
    (row,) = archive.index.quarantined(uid)
    return archive.held.read(row["blob_key"])


def make_legacy(archive: Archive, uid: str) -> bytes:
    """What an older version left: the held blob in plaintext, its row
    describing that plaintext, unsealed, without a SOP class."""
    plain = archive.read_held(uid)
    assert plain is not None
    (row,) = archive.index.quarantined(uid)
    archive.held.put(row["blob_key"], plain)
    with archive.index.engine.begin() as conn:
        conn.execute(
            quarantine.update()
            .where(quarantine.c.sopinstanceuid == uid)
            .values(
                size=len(plain),
                sha256=hashlib.sha256(plain).hexdigest(),
                sealed=False,
                sopclassuid=None,
            )
        )
    return plain


def test_a_held_instance_is_encrypted_on_disk_and_indexed_as_written(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    uid = hold(ingestor)
    blob = on_disk(archive, uid)
    (row,) = archive.index.quarantined(uid)
    assert blob.startswith(HELD_FORMAT) and b"DICM" not in blob
    # Size and digest are those of what is on disk (check verifies it without the key).
    assert (row["size"], row["sha256"]) == (len(blob), hashlib.sha256(blob).hexdigest())
    assert row["sealed"] and row["sopclassuid"] == "1.2.840.10008.5.1.4.1.1.6.1"
    plain = archive.read_held(uid)
    assert plain is not None and plain[128:132] == b"DICM"
    ds = dcmread(BytesIO(plain))
    assert ds.SOPInstanceUID == uid
    for value in (uid, str(ds.PatientID), str(ds.StudyInstanceUID)):
        assert value.encode() not in blob
    assert len(blob) == len(plain) + len(HELD_FORMAT) + 12 + 16
    key = config.key_dir / "quarantine.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert verify(archive).clean


def test_a_blob_does_not_open_as_another_instance_nor_with_another_key(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    first, second = hold(ingestor, PATIENTS[0]), hold(ingestor, PATIENTS[1])
    blob = on_disk(archive, first)
    with pytest.raises(HeldBlobError, match="does not open"):
        archive.open_held(second, blob)  # the UID is bound in
    # Swapped on disk, the row even made to agree with the bytes: still refused.
    (row,) = archive.index.quarantined(second)
    archive.held.put(row["blob_key"], blob)
    with archive.index.engine.begin() as conn:
        conn.execute(
            quarantine.update()
            .where(quarantine.c.sopinstanceuid == second)
            .values(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
        )
    report = verify(archive)
    assert report.damaged == [(second, report.damaged[0][1])]
    assert "does not open with quarantine.key" in report.damaged[0][1]
    other = Archive(
        config.data_dir,
        config.effective_index_url,
        config.duplicates,
        stores=(archive.blobs, archive.held),
        quarantine_key=b"\x01" * 32,
    )
    try:
        with pytest.raises(HeldBlobError):
            other.read_held(first)
    finally:
        other.close()


def test_without_a_key_nothing_is_held_in_plaintext(tmp_path: Path, config: Config) -> None:
    archive = Archive(tmp_path / "d", f"sqlite:///{tmp_path}/d.sqlite", config.duplicates)
    try:
        ds = instance()
        del ds.SequenceOfUltrasoundRegions
        result = Ingestor(config, archive).ingest(incoming(ds))
        assert result.outcome is Outcome.REJECTED  # not acknowledged: the sender keeps it
        assert archive.index.quarantined() == [] and list(archive.held.listing()) == []
    finally:
        archive.close()


@pytest.mark.slow
def test_plaintext_held_blobs_of_an_older_version_are_encrypted_at_start(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    legacy, interrupted = hold(ingestor, PATIENTS[0]), hold(ingestor, PATIENTS[1])
    plain = make_legacy(archive, legacy)
    # A start that sealed this one and stopped before its row was updated.
    sealed_before = on_disk(archive, interrupted)
    make_legacy(archive, interrupted)
    (row,) = archive.index.quarantined(interrupted)
    archive.held.put(row["blob_key"], sealed_before)
    assert not is_sealed(on_disk(archive, legacy))
    assert archive.read_held(legacy) == plain  # readable meanwhile (release, show)
    report = verify(archive)  # check changes nothing, and says so
    assert report.plaintext == [legacy] and len(report.damaged) == 1
    assert "1 held in plaintext (encrypted at the next start)" in report.summary()
    archive.close()

    with Node(config, web=False) as node:
        held = node.archive
        for uid in (legacy, interrupted):
            blob = on_disk(held, uid)
            (row,) = held.index.quarantined(uid)
            assert is_sealed(blob) and row["sealed"]
            assert (row["size"], row["sha256"]) == (len(blob), hashlib.sha256(blob).hexdigest())
            assert row["sopclassuid"] == "1.2.840.10008.5.1.4.1.1.6.1"  # filled in
        assert held.read_held(legacy) == plain
        assert on_disk(held, interrupted) == sealed_before
        assert verify(held).clean and verify(held).plaintext == []
        (record,) = [r for r in held.index.audit.rows() if r["event"] == "archive-check"]
        assert record["detail"].startswith("2 held instances encrypted at rest, 0 could not")
        assert held.seal_plaintext_held() == (0, [])  # the next start: nothing to do


@pytest.mark.slow
def test_processes_starting_together_seal_each_legacy_blob_once(
    any_index_config: Config,
) -> None:
    """Two node processes (two archives on one index and one storage) start
    at once: the row claim lets one seal each blob; both agree with the disk."""
    config = any_index_config
    first, second = open_archive(config), open_archive(config)
    try:
        ingestor = Ingestor(config, first)
        uids = [hold(ingestor, PATIENTS[n % 3]) for n in range(8)]
        for uid in uids:
            make_legacy(first, uid)
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda a: a.seal_plaintext_held(), (first, second)))
        assert sum(sealed for sealed, _ in results) == 8 and [f for _, f in results] == [[], []]
        report = verify(first)
        assert report.clean and report.plaintext == [] and report.checked == 8
    finally:
        first.close()
        second.close()


def test_a_damaged_legacy_blob_is_left_for_check_not_sealed(
    ingestor: Ingestor, archive: Archive
) -> None:
    uid = hold(ingestor)
    plain = make_legacy(archive, uid)
    (row,) = archive.index.quarantined(uid)
    flipped = bytearray(plain)
    flipped[-10] ^= 1
    archive.held.put(row["blob_key"], bytes(flipped))
    assert archive.seal_plaintext_held() == (0, [uid])
    assert on_disk(archive, uid) == bytes(flipped)  # not laundered into a valid seal
    assert not archive.index.quarantined(uid)[0]["sealed"]


def test_show_writes_the_decrypted_instance_privately_and_is_audited(
    tmp_path: Path, ingestor: Ingestor, archive: Archive
) -> None:
    uid = hold(ingestor)
    out = tmp_path / "review.dcm"
    size = show_quarantined(archive, uid, out)
    assert out.read_bytes() == archive.read_held(uid) and size == out.stat().st_size
    assert out.stat().st_mode & 0o777 == 0o600
    with pytest.raises(AdminError, match="exists"):
        show_quarantined(archive, uid, out)
    with pytest.raises(AdminError, match="not held"):
        show_quarantined(archive, "2.25.1", tmp_path / "other.dcm")
    (record,) = [r for r in archive.index.audit.rows() if r["event"] == "quarantine-show"]
    assert record["object"] == uid and str(out) in record["detail"]
    assert (record["user"], record["source"]) == (getpass.getuser(), "cli")


def test_reviewed_release_stores_as_held_and_refuse_deletes(
    ingestor: Ingestor, archive: Archive, config: Config
) -> None:
    kept, refused = hold(ingestor, PATIENTS[0]), hold(ingestor, PATIENTS[1])
    held = archive.read_held(kept)
    with pytest.raises(AdminError, match="named"):
        release_quarantined(config, archive, reviewed=True)
    (outcome, unknown) = release_quarantined(config, archive, [kept, "2.25.9"], reviewed=True)
    assert (outcome.uid, outcome.done) == (kept, True) and not unknown.done
    assert archive.read(kept) == held  # byte for byte as it was held
    assert archive.index.stats()["instances"] == 1
    with pytest.raises(AdminError, match="why"):
        refuse_quarantined(archive, [refused], "  ")
    (gone,) = refuse_quarantined(archive, [refused], "a referral letter, not an image")
    assert gone.done and archive.index.quarantined() == []
    assert list(archive.held.listing()) == []
    decisions = {
        r["object"]: r["detail"]
        for r in archive.index.audit.rows()
        if r["event"] in ("quarantine-release", "quarantine-refuse")
    }
    assert decisions[kept] == f"reviewed by {getpass.getuser()}, stored as held"
    assert decisions[refused] == "refused, deleted: a referral letter, not an image"


@pytest.mark.slow
def test_quarantine_commands(tmp_path: Path, config: Config) -> None:
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    first, second, third = (hold(ingestor, p, "DUSHANBE_ECHO") for p in PATIENTS[:3])
    archive.close()

    listing = run(tmp_path, "quarantine", "list")
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 3
    for line in listing.stdout.splitlines():
        assert "DUSHANBE_ECHO" in line and "Ultrasound Image Storage" in line
        assert "no ultrasound region" in line
    for patient in PATIENTS[:3]:
        assert patient.patient_id not in listing.stdout
        assert patient.name.split("^")[0] not in listing.stdout

    out = tmp_path / "review" / "first.dcm"
    out.parent.mkdir()
    shown = run(tmp_path, "quarantine", "show", first, "--out", str(out))
    assert shown.returncode == 0 and shown.stdout.startswith(f"shown {first}: ")
    assert dcmread(out).SOPInstanceUID == first and out.stat().st_mode & 0o777 == 0o600
    assert run(tmp_path, "quarantine", "show", first, "--out", str(out)).returncode == 2
    assert run(tmp_path, "quarantine", "show", first).returncode == 2
    missing = run(tmp_path, "quarantine", "show", "2.25.7", "--out", str(tmp_path / "x.dcm"))
    assert missing.returncode == 3 and "not held" in missing.stderr

    # Re-checked: still no rule, so nothing moves; named, that is a failure.
    recheck = run(tmp_path, "quarantine", "release")
    assert recheck.returncode == 0 and recheck.stdout.count("not released") == 3
    assert run(tmp_path, "quarantine", "release", first).returncode == 3
    assert run(tmp_path, "quarantine", "release", "--reviewed").returncode == 2

    released = run(tmp_path, "quarantine", "release", "--reviewed", first)
    assert released.returncode == 0, released.stderr
    assert released.stdout.splitlines() == [
        f"released {first}: reviewed by {getpass.getuser()}, stored as held",
        "1 released, 0 not",
    ]
    assert run(tmp_path, "quarantine", "refuse", second).returncode == 2  # no --why
    refused = run(tmp_path, "quarantine", "refuse", second, "2.25.7", "--why", "not needed")
    assert refused.returncode == 3  # one of them was not held
    assert refused.stdout.splitlines() == [
        f"refused {second}: deleted (not needed)",
        "not refused 2.25.7: not held",
        "1 refused, 1 not",
    ]
    left = run(tmp_path, "quarantine", "list").stdout.splitlines()
    assert len(left) == 1 and third in left[0]
    archive = open_archive(config)
    try:
        assert archive.index.stats()["instances"] == 1 and archive.read(first) is not None
        assert verify(archive).clean
    finally:
        archive.close()
