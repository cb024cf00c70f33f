"""Research export: instances the DICOMDIR needs more of are filled or left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.jobs.export import Cohort, ExportBlocked, export
from dicomnode.ops.samples import PATIENTS, UID_ROOT, base_dataset
from storage.archive import Archive
from storage.keys import Level
from storage.query import Query
from tests.conftest import incoming
from tests.test_export import unpack
from tests.test_ingest import instance

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def report(study_uid: str, **attrs: object) -> Dataset:
    """A Comprehensive SR as a reporting system sends it, without content date/time."""
    ds = base_dataset(
        PATIENTS[0],
        COMPREHENSIVE_SR,
        study_uid=study_uid,
        series_uid=generate_uid(UID_ROOT),
        modality="SR",
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    del ds.ContentDate, ds.ContentTime
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [code("18745-0", "LN", "Cardiac catheterization report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.PerformedProcedureCodeSequence = []
    finding = Dataset()
    finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
    finding.ConceptNameCodeSequence = [code("121071", "DCM", "Finding")]
    finding.TextValue = "Secundum ASD, left-to-right shunt"
    ds.ContentSequence = [finding]
    for keyword, value in attrs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def ecg(study_uid: str) -> Dataset:
    """A 12-lead ECG without content date/time."""
    ds = base_dataset(
        PATIENTS[0],
        TWELVE_LEAD_ECG,
        study_uid=study_uid,
        series_uid=generate_uid(UID_ROOT),
        modality="ECG",
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    del ds.ContentDate, ds.ContentTime
    del ds.PatientOrientation, ds.Laterality
    ds.AcquisitionDateTime = "20261103093600"
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = 1
    group.NumberOfWaveformSamples = 4
    group.SamplingFrequency = "500"
    channel = Dataset()
    channel.ChannelSourceSequence = [code("5.6.3-9-1", "SCPECG", "Lead I (Einthoven)")]
    channel.WaveformBitsStored = 16
    group.ChannelDefinitionSequence = [channel]
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = np.array([0, 5, -3, 2], dtype="<i2").tobytes()
    ds.WaveformSequence = [group]
    return ds


@pytest.fixture
def study_uid() -> str:
    return generate_uid(UID_ROOT)


def store(ingestor: Ingestor, *datasets: Dataset) -> None:
    for ds in datasets:
        result = ingestor.ingest(incoming(ds, calling_ae="BISHKEK_ECHO"))
        assert result.outcome is Outcome.STORED, result.comment


def test_report_and_waveform_without_content_date_enter_the_dicomdir(
    config: Config, ingestor: Ingestor, archive: Archive, tmp_path: Path, study_uid: str
) -> None:
    echo = instance(PATIENTS[0], StudyInstanceUID=study_uid)
    store(ingestor, echo, report(study_uid), ecg(study_uid))
    result = export(config, archive, Cohort(), tmp_path / "out.zip", progress=False)
    assert (result.instances, result.left_out) == (3, [])
    unpack(tmp_path / "out.zip", tmp_path / "x")
    loaded = [item.load() for item in FileSet(dcmread(tmp_path / "x" / "DICOMDIR"))]
    by_modality = {str(ds.Modality): ds for ds in loaded}
    assert set(by_modality) == {"US", "SR", "ECG"}
    for modality in ("SR", "ECG"):
        ds = by_modality[modality]
        # Derived from the series date and time, as shifted at ingest.
        assert (ds.ContentDate, ds.ContentTime) == (ds.SeriesDate, ds.SeriesTime)


def test_what_cannot_enter_the_dicomdir_is_left_out_or_refused_when_strict(
    config: Config, ingestor: Ingestor, archive: Archive, tmp_path: Path, study_uid: str
) -> None:
    echo = instance(PATIENTS[0], StudyInstanceUID=study_uid)
    store(ingestor, echo, report(study_uid, CompletionFlag=None))
    result = export(config, archive, Cohort(), tmp_path / "out.zip", progress=False)
    assert result.instances == 1
    ((uid, reason),) = result.left_out
    (stored_report,) = archive.index.find(
        Query(level=Level.IMAGE, keys={"SOPInstanceUID": "", "SOPClassUID": COMPREHENSIVE_SR})
    )
    assert uid == stored_report["SOPInstanceUID"]  # listed to the requester
    assert "cannot enter the DICOMDIR" in reason and "Completion Flag" in reason
    files = unpack(tmp_path / "out.zip", tmp_path / "x")
    assert "1 instances were left out" in files["README.txt"].decode()
    assert len(FileSet(dcmread(tmp_path / "x" / "DICOMDIR"))) == 1
    with pytest.raises(ExportBlocked, match="cannot enter the DICOMDIR"):
        export(config, archive, Cohort(), tmp_path / "strict.zip", progress=False, strict=True)
    assert not (tmp_path / "strict.zip").exists()


def test_exported_file_meta_names_no_station(
    config: Config, ingestor: Ingestor, archive: Archive, tmp_path: Path, study_uid: str
) -> None:
    store(ingestor, instance(PATIENTS[0], StudyInstanceUID=study_uid))
    (blob,) = archive.blobs.root.rglob("*.dcm")
    stored = dcmread(blob)
    assert stored.file_meta.SourceApplicationEntityTitle == "BISHKEK_ECHO"
    # Meta elements another writer (a PACS before the node) may have left.
    stored.file_meta.SendingApplicationEntityTitle = "BISHKEK_PACS"
    stored.file_meta.ReceivingApplicationEntityTitle = "BISHKEK_ROUTER"
    stored.file_meta.SourcePresentationAddress = "dicom://echo-3.ncc-bishkek.kg:104"
    stored.file_meta.PrivateInformationCreatorUID = "1.2.643.5.1.13.3.167"
    stored.file_meta.PrivateInformation = b"BISHKEK_ECHO"
    stored.save_as(blob, enforce_file_format=True)
    result = export(config, archive, Cohort(), tmp_path / "out.zip", progress=False)
    assert result.instances == 1
    files = unpack(tmp_path / "out.zip", tmp_path / "x")
    assert b"BISHKEK" not in b"".join(files.values())
    assert b"ncc-bishkek" not in b"".join(files.values())
    (item,) = FileSet(dcmread(tmp_path / "x" / "DICOMDIR"))
    meta = item.load().file_meta
    assert {element.keyword for element in meta} <= {
        "FileMetaInformationGroupLength",
        "FileMetaInformationVersion",
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ImplementationVersionName",
    }
