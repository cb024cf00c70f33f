"""Every store goes through the Ingestor: a quarantine release and the node's
own SR get its checks (free space, a UID of another patient, a failed
write) and its answers, and the audit record of a decision or a hold is
written in the store's transaction, never after it."""

from __future__ import annotations

import dataclasses
import errno
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

import dicomnode.config
import storage.audit
from dicomnode.config import Config
from dicomnode.deid.options import DeidPolicy, SenderPolicies
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.ingest.validate import OUT_OF_RESOURCES
from dicomnode.ops.admin import release_quarantined
from dicomnode.ops.samples import PATIENTS, xa_instance
from storage.archive import Archive
from storage.record import record_from_dataset
from tests.conftest import incoming
from tests.test_ingest import instance
from tests.test_quarantine import hold

# More free space than any test machine has: every store is refused.
NO_ROOM = 1 << 40


def _full(ingestor: Ingestor) -> None:
    ingestor.config = dataclasses.replace(ingestor.config, min_free_disk_mb=NO_ROOM)


def _audited(archive: Archive, event: str) -> list[str]:
    return [r["object"] for r in archive.index.audit.rows() if r["event"] == event]


def _crash_on_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever writes an audit record fails there (a crash at that point)."""

    def crash(*_: object) -> str:
        raise RuntimeError("crashed while auditing")

    monkeypatch.setattr(storage.audit, "_digest", crash)


# --- quarantine release ------------------------------------------------------


def test_release_on_a_nearly_full_disk_is_refused_and_stays_held(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    uid = hold(ingestor)
    full = dataclasses.replace(config, min_free_disk_mb=NO_ROOM)
    (outcome,) = release_quarantined(full, archive, [uid], reviewed=True)
    assert not outcome.done and "out of resources" in outcome.note
    assert archive.read(uid) is None and archive.index.quarantined(uid)
    assert _audited(archive, "quarantine-release") == []


def test_a_release_into_another_patients_study_is_reported_and_the_rest_released(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    """Another patient's instance took the held one's study UID meanwhile
    (an index not yet migrated): that one is named and stays held, the
    next one is released, and nothing escapes as a traceback."""
    taken, free = hold(ingestor, PATIENTS[0]), hold(ingestor, PATIENTS[1])
    other = dcmread(BytesIO(archive.read_held(taken) or b""))
    other.PatientID = "CHD-OTHER-CHILD"
    other.SOPInstanceUID = other.SOPInstanceUID + ".9"
    other.SeriesInstanceUID = other.SeriesInstanceUID + ".9"
    data = BytesIO()
    other.save_as(data, enforce_file_format=True)
    syntax = str(other.file_meta.TransferSyntaxUID)
    record = record_from_dataset(other, issuer="NCC Bishkek", transfer_syntax=syntax)
    archive.store(record, data.getvalue())

    first, second = release_quarantined(config, archive, [taken, free], reviewed=True)
    assert (first.uid, first.done) == (taken, False) and "another patient" in first.note
    assert (second.uid, second.done) == (free, True)
    assert archive.index.quarantined(taken) and archive.read(taken) is None
    assert archive.read(free) is not None
    assert _audited(archive, "quarantine-release") == [free]


def test_no_reviewed_release_without_its_audit_record(
    config: Config, ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash where the decision is recorded: the instance is not released
    (still held, not stored), rather than stored with nobody's review."""
    uid = hold(ingestor)
    _crash_on_audit(monkeypatch)
    try:
        outcomes = release_quarantined(config, archive, [uid], reviewed=True)
    except RuntimeError:
        outcomes = []
    assert not any(o.done for o in outcomes)
    monkeypatch.undo()
    assert archive.read(uid) is None and archive.index.quarantined(uid)
    assert archive.index.stats()["instances"] == 0
    (outcome,) = release_quarantined(config, archive, [uid], reviewed=True)
    assert outcome.done and _audited(archive, "quarantine-release") == [uid]


def test_release_cleans_by_the_senders_resolved_policy(
    config: Config, ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rectangles are the sender's de-identification policy's, as the
    ingest resolves it, not a second reading of the remote AE table."""
    ds = instance()
    del ds.SequenceOfUltrasoundRegions
    result = ingestor.ingest(incoming(ds, calling_ae="DUSHANBE_ECHO"))
    assert result.outcome is Outcome.QUARANTINED
    resolved = dicomnode.config.deid_policies(config)
    ruled = SenderPolicies(
        resolved.default,
        tuple(
            (ae, dataclasses.replace(p, blank_rectangles=((0, 0, 63, 7),)))
            if ae == "DUSHANBE_ECHO"
            else (ae, p)
            for ae, p in resolved.senders
        ),
    )
    assert isinstance(ruled.of("DUSHANBE_ECHO"), DeidPolicy)
    monkeypatch.setattr(dicomnode.config, "deid_policies", lambda _config: ruled)
    (released,) = release_quarantined(config, archive)
    assert released.done and released.note == "pixels cleaned by a rule"
    stored = dcmread(BytesIO(archive.read(released.uid) or b""))
    assert not stored.pixel_array[:8].any() and stored.BurnedInAnnotation == "NO"


# --- the quarantine hold's audit record --------------------------------------


def test_no_hold_without_its_audit_record(
    ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = instance()
    del ds.SequenceOfUltrasoundRegions
    _crash_on_audit(monkeypatch)
    result = ingestor.ingest(incoming(ds))
    monkeypatch.undo()
    assert result.outcome is Outcome.REJECTED, result
    assert archive.index.quarantined() == [] and list(archive.held.listing()) == []
    # Sent again, it is held, with its record.
    assert ingestor.ingest(incoming(ds)).outcome is Outcome.QUARANTINED
    (row,) = archive.index.quarantined()
    assert _audited(archive, "quarantine-hold") == [row["sopinstanceuid"]]


def test_no_instance_kept_apart_without_its_security_alert(
    ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second child brings the first one's study UID: kept apart, and the
    alert that says so commits with it, or neither does."""
    study = generate_uid()
    first = xa_instance(PATIENTS[0], frames=2, rows=16, cols=16, study_uid=study)
    second = xa_instance(PATIENTS[1], frames=2, rows=16, cols=16, study_uid=study)
    assert ingestor.ingest(incoming(first, calling_ae="BISHKEK_CATH")).outcome is Outcome.STORED
    _crash_on_audit(monkeypatch)
    crashed = ingestor.ingest(incoming(second, calling_ae="BISHKEK_CATH"))
    monkeypatch.undo()
    assert crashed.outcome is Outcome.REJECTED, crashed
    assert archive.index.stats()["instances"] == 1
    assert _audited(archive, "uid-conflict") == []
    kept = ingestor.ingest(incoming(second, calling_ae="BISHKEK_CATH"))
    assert kept.outcome is Outcome.STORED and kept.comment.startswith("study UID")
    assert len(_audited(archive, "uid-conflict")) == 1
    assert archive.index.stats()["instances"] == 2


# --- the node's own SR ---------------------------------------------------------


def _report(ingestor: Ingestor, archive: Archive):
    from viewer.planning.report import measurement_report, observer_name
    from viewer.planning.worksheet import Slot

    result = ingestor.ingest(incoming(instance()))
    assert result.outcome is Outcome.STORED and result.dataset is not None
    image = str(result.dataset.SOPInstanceUID)
    clip = dcmread(BytesIO(archive.read(image) or b""), stop_before_pixels=True)
    return measurement_report(
        [clip],
        [Slot("ASD-MAX-DIAMETER", 14.2, image, 1)],
        defect="secundum ASD",
        observer=observer_name("cardiologist"),
    )


def test_the_nodes_own_report_on_a_nearly_full_disk_is_refused(
    ingestor: Ingestor, archive: Archive
) -> None:
    sr = _report(ingestor, archive)
    _full(ingestor)
    result = ingestor.ingest_own(sr, issuer="NCC Bishkek")
    assert (result.outcome, result.status) == (Outcome.REJECTED, OUT_OF_RESOURCES)
    assert archive.read(str(sr.SOPInstanceUID)) is None


def test_the_nodes_own_report_that_cannot_be_written_is_refused_whole(
    ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    sr = _report(ingestor, archive)
    before = archive.index.stats()["instances"]
    blobs = sorted(key for key, _ in archive.blobs.listing())

    def no_space(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive.blobs, "put", no_space)
    monkeypatch.setattr(archive.blobs, "put_stream", no_space)
    result = ingestor.ingest_own(sr, issuer="NCC Bishkek")
    assert (result.outcome, result.status) == (Outcome.REJECTED, OUT_OF_RESOURCES)
    assert "out of resources" in result.comment
    monkeypatch.undo()
    assert archive.index.stats()["instances"] == before
    assert archive.read(str(sr.SOPInstanceUID)) is None
    assert sorted(key for key, _ in archive.blobs.listing()) == blobs


def test_a_recheck_that_fails_is_named_and_the_rest_released(
    config: Config, ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pixels the re-check cannot take (a decoder error) stop neither the
    command nor the next instance."""
    import dicomnode.ops.admin as admin

    broken, fine = hold(ingestor, PATIENTS[0]), hold(ingestor, PATIENTS[1])
    real = admin.clean_and_verify

    def flaky(ds, *args, **kwargs):
        if str(ds.SOPInstanceUID) == broken:
            raise ValueError("no decoder for these pixels")
        return real(ds, *args, **kwargs)

    monkeypatch.setattr(admin, "clean_and_verify", flaky)
    first, second = release_quarantined(config, archive, [broken, fine])
    assert (first.uid, first.done) == (broken, False) and "ValueError" in first.note
    assert second.uid == fine and second.note.startswith("still held")
