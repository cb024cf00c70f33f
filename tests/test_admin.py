"""Re-identification with the key only, quarantine and its release, audit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.config import Config
from dicomnode.deid.linkage import LinkageError
from dicomnode.deid.secret import KeyFileError
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.node import open_archive
from dicomnode.ops.admin import AdminError, reidentify, release_quarantined
from dicomnode.ops.samples import PATIENTS, xa_instance
from storage.archive import Archive
from tests.conftest import REMOTES, incoming
from tests.test_ingest import instance


def test_reidentify_by_pseudonym_or_study_with_the_key(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    patient = PATIENTS[1]
    ds = instance(patient, AccessionNumber="ACC-77")
    assert ingestor.ingest(incoming(ds, calling_ae="DUSHANBE_ECHO")).outcome is Outcome.STORED
    pseudonym = ingestor.deidentify.secret.pseudonym("RCC Dushanbe", patient.patient_id)
    (found,) = reidentify(config, archive, pseudonym)
    assert (found["patient_name"], found["patient_id"]) == (patient.name, patient.patient_id)
    assert (found["issuer"], found["sending_ae"]) == ("RCC Dushanbe", "DUSHANBE_ECHO")
    assert found["accession_number"] == "ACC-77"
    assert found["study_instance_uid"] == ds.StudyInstanceUID
    (by_study,) = reidentify(config, archive, found["study_uid"])
    assert by_study == found
    actions = [(a["event"], a["object"]) for a in reversed(archive.index.audit.rows())]
    assert actions == [("reidentify", pseudonym), ("reidentify", found["study_uid"])]
    with pytest.raises(AdminError, match="no study or pseudonym"):
        reidentify(config, archive, "CHD-0000-0000")


def test_without_the_linkage_key_nobody_reidentifies(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    patient = PATIENTS[0]
    assert ingestor.ingest(incoming(instance(patient))).outcome is Outcome.STORED
    pseudonym = ingestor.deidentify.secret.pseudonym("NCC Bishkek", patient.patient_id)
    key = config.key_dir / "linkage.key"
    key.rename(config.key_dir / "elsewhere.key")
    with pytest.raises(AdminError, match="linkage key"):
        reidentify(config, archive, pseudonym)
    key.write_text("00" * 32 + "\n")
    key.chmod(0o600)
    with pytest.raises(LinkageError):
        reidentify(config, archive, pseudonym)
    # The archive itself holds no identity: names only in the sealed records.
    for path in config.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in (patient.name.split("^")[0], patient.patient_id):
                for encoding in ("utf-8", "utf-16-le", "cp1251"):
                    assert value.encode(encoding) not in data, (path.name, value)


def test_keys_are_private_and_outside_the_data_directory(
    config: Config, ingestor: Ingestor, archive: Archive
) -> None:
    for name in ("deid.key", "linkage.key"):
        assert (config.key_dir / name).stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeyFileError, match="inside the data directory"):
        Ingestor(replace(config, key_dir=config.data_dir / "keys"), archive)
    (config.key_dir / "deid.key").chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        Ingestor(config, archive)


def test_quarantine_then_release_by_a_rule(tmp_path: Path, config: Config) -> None:
    archive = open_archive(config)
    ds = instance()
    del ds.SequenceOfUltrasoundRegions
    result = Ingestor(config, archive).ingest(incoming(ds, calling_ae="DUSHANBE_ECHO"))
    assert result.outcome is Outcome.QUARANTINED
    (kept,) = release_quarantined(config, archive)  # still no rule
    assert not kept.done and "still held: untrusted or no ultrasound regions" in kept.note
    ruled = replace(
        config,
        remote_aes=tuple(
            replace(r, blank_rectangles=((0, 0, 63, 7),)) if r.ae_title == "DUSHANBE_ECHO" else r
            for r in REMOTES
        ),
    )
    (released,) = release_quarantined(ruled, archive)
    assert released.done and released.note == "pixels cleaned by a rule"
    assert archive.index.quarantined() == [] and list(archive.held.listing()) == []
    assert archive.index.stats()["instances"] == 1
    (path,) = archive.blobs.root.rglob("*.dcm")
    stored = dcmread(path)
    assert not stored.pixel_array[:8].any() and stored.BurnedInAnnotation == "NO"
    events = [a["event"] for a in archive.index.audit.rows()]
    assert events == ["quarantine-release", "quarantine-hold"]
    archive.close()


def test_sender_rectangles_blank_an_angio_banner(tmp_path: Path, config: Config) -> None:
    ruled = replace(
        config,
        remote_aes=tuple(
            replace(r, blank_rectangles=((0, 0, 63, 5),)) if r.ae_title == "BISHKEK_CATH" else r
            for r in REMOTES
        ),
    )
    archive = open_archive(ruled)
    ingestor = Ingestor(ruled, archive)
    marked = xa_instance(PATIENTS[0], frames=2, rows=64, cols=64)
    marked.BurnedInAnnotation = "YES"
    assert ingestor.ingest(incoming(marked, calling_ae="BISHKEK_CATH")).outcome is Outcome.STORED
    (path,) = archive.blobs.root.rglob("*.dcm")
    assert not dcmread(path).pixel_array[:, :6].any()
    other = xa_instance(PATIENTS[1], frames=2, rows=64, cols=64)
    other.BurnedInAnnotation = "YES"
    held = ingestor.ingest(incoming(other, calling_ae="BISHKEK_ECHO"))
    assert held.outcome is Outcome.QUARANTINED
    assert "no blanking rule" in archive.index.quarantined()[0]["reason"]
    archive.close()
