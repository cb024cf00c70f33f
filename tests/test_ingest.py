"""The ingest pipeline on its own: what is stored, what is refused and why."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from dicomnode import IMPLEMENTATION_CLASS_UID
from dicomnode.config import Config, RemoteAE
from dicomnode.deid.linkage import LinkageCipher
from dicomnode.ingest.importer import import_paths, split_file
from dicomnode.ingest.pipeline import Incoming, Ingestor, Outcome, read_header
from dicomnode.ingest.validate import Rejection
from dicomnode.ops.samples import (
    PATIENTS,
    UID_ROOT,
    sample_file,
    save,
    small_instance,
    xa_instance,
)
from storage.archive import Archive, DuplicatePolicy
from storage.keys import Level
from storage.query import Query
from tests.conftest import incoming


def instance(patient=PATIENTS[0], **attrs: object):
    ds = small_instance(
        patient,
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        instance_number=1,
    )
    for keyword, value in attrs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def stored_files(archive: Archive) -> list[Path]:
    return sorted(p for p in archive.blobs.root.rglob("*.dcm"))


@pytest.mark.slow
def test_angio_stored_deidentified_with_pixels_untouched(
    ingestor: Ingestor, archive: Archive, xa_files: dict[str, Path]
) -> None:
    sent = dcmread(xa_files["jpeg-sv1"])
    data, syntax = split_file(xa_files["jpeg-sv1"].read_bytes())
    result = ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_CATH"))
    assert (result.outcome, result.status) == (Outcome.STORED, 0)
    (path,) = stored_files(archive)
    stored = dcmread(path)
    assert stored.PixelData == sent.PixelData  # bit for bit: no rule touches XA pixels
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert stored.file_meta.SourceApplicationEntityTitle == "BISHKEK_CATH"
    assert str(stored.PatientID).startswith("CHD-") and stored.PatientID == stored.PatientName
    assert stored.SOPInstanceUID != sent.SOPInstanceUID
    assert stored.file_meta.MediaStorageSOPInstanceUID == stored.SOPInstanceUID
    assert path.name == f"{archive.blobs.key_for(str(stored.SOPInstanceUID)).split('/')[-1]}"


def test_ultrasound_banner_is_blacked_out(ingestor: Ingestor, archive: Archive) -> None:
    ds = instance()
    assert ds.pixel_array[:8].any()  # the banner rows carry "text"
    assert ingestor.ingest(incoming(ds)).outcome is Outcome.STORED
    (path,) = stored_files(archive)
    stored = dcmread(path)
    assert not stored.pixel_array[:8].any()
    assert (stored.pixel_array[8:] == ds.pixel_array[8:]).all()
    assert stored.BurnedInAnnotation == "NO"
    codes = {item.CodeValue for item in stored.DeidentificationMethodCodeSequence}
    assert "113101" in codes  # Clean Pixel Data


def test_ultrasound_without_regions_is_quarantined(ingestor: Ingestor, archive: Archive) -> None:
    ds = instance()
    del ds.SequenceOfUltrasoundRegions
    result = ingestor.ingest(incoming(ds))
    # Acknowledged (nothing is lost) with a warning that says why.
    assert (result.outcome, result.status) == (Outcome.QUARANTINED, 0xB000)
    assert "regions" in result.comment
    assert stored_files(archive) == []
    assert archive.index.stats()["instances"] == 0  # invisible to queries
    (held,) = archive.index.quarantined()
    assert "regions" in held["reason"] and held["pseudonym"].startswith("CHD-")
    assert archive.held.exists(held["blob_key"])
    # The sender fixes its export and sends the clip again, with regions.
    ds.SequenceOfUltrasoundRegions = small_instance(
        PATIENTS[0], study_uid="1.2", series_uid="1.3", instance_number=1
    ).SequenceOfUltrasoundRegions
    assert ingestor.ingest(incoming(ds)).outcome is Outcome.STORED
    assert archive.index.quarantined() == [] and not archive.held.exists(held["blob_key"])


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_duplicates_follow_the_policy(tmp_path: Path, config: Config, policy) -> None:
    archive = Archive(tmp_path / "d", f"sqlite:///{tmp_path}/d.sqlite", policy)
    ingestor = Ingestor(config, archive)
    ds = instance()
    first = ingestor.ingest(incoming(ds))
    ds.SeriesDescription = "resent with a correction"
    again = ingestor.ingest(incoming(ds))
    expected = Outcome.DUPLICATE if policy is DuplicatePolicy.KEEP_FIRST else Outcome.REPLACED
    assert (first.outcome, again.outcome, again.status) == (Outcome.STORED, expected, 0)
    (path,) = stored_files(archive)
    kept = dcmread(path).get("SeriesDescription")
    assert (kept == "resent with a correction") is (policy is DuplicatePolicy.REPLACE)
    stats = archive.index.stats()
    assert (stats["instances"], stats["duplicates_received"]) == (1, 1)
    archive.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("attrs", "status"),
    [
        ({"SOPInstanceUID": "../../../../etc/x"}, 0xC002),
        ({"SOPInstanceUID": "1.2.3/../../x"}, 0xC002),
        ({"StudyInstanceUID": "1.2." + "3" * 70}, 0xC002),
        ({"SOPInstanceUID": None}, 0xC002),
        ({"SeriesInstanceUID": ""}, 0xC002),
        ({"SOPClassUID": "1.2.3.4.5"}, 0xC004),
        ({"PixelData": b"\x00" * 100}, 0xC005),
    ],
)
def test_bad_instances_are_refused_and_nothing_is_written(
    tmp_path: Path, ingestor: Ingestor, archive: Archive, attrs: dict, status: int
) -> None:
    result = ingestor.ingest(incoming(instance(**attrs)))
    assert (result.outcome, result.status) == (Outcome.REJECTED, status)
    assert result.comment and len(result.comment) <= 64
    assert stored_files(archive) == []
    assert archive.index.stats()["instances"] == 0
    outside = [
        p for p in tmp_path.rglob("*") if p.is_file() and not {"var", "secrets"} & set(p.parts)
    ]
    assert outside == []


def test_sop_uids_must_match_the_request(ingestor: Ingestor) -> None:
    ds = instance()
    item = incoming(ds, expected_sop_instance="1.2.3", expected_sop_class=str(ds.SOPClassUID))
    assert ingestor.ingest(item).status == 0xA900
    item = incoming(ds, expected_sop_class="1.2.840.10008.5.1.4.1.1.12.1")
    assert ingestor.ingest(item).status == 0xA900


TRUNCATABLE = [
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "emri_small_big_endian.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "examples_ybr_color.dcm",
    "image_dfl.dcm",
    "OBXXXX1A_rle.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
]


@pytest.mark.parametrize("name", TRUNCATABLE)
def test_truncated_streams_are_refused(ingestor: Ingestor, archive: Archive, name: str) -> None:
    data, syntax = split_file(sample_file(name).read_bytes())
    read_header(data, syntax)  # whole: fine
    # A deflated stream here ends in 8 bytes of padding the inflater never needs.
    tail = 20 if name == "image_dfl.dcm" else 0
    for cut in (len(data) - 1 - tail, len(data) - 6 - tail, len(data) * 2 // 3):
        result = ingestor.ingest(Incoming(data=data[:cut], transfer_syntax=syntax))
        assert (result.outcome, result.status) == (Outcome.REJECTED, 0xC001), cut
    assert stored_files(archive) == []


def test_garbage_is_refused(ingestor: Ingestor) -> None:
    for data in (b"", b"\x00" * 3, b"not dicom at all, clearly" * 10):
        result = ingestor.ingest(Incoming(data=data, transfer_syntax="1.2.840.10008.1.2.1"))
        assert result.outcome is Outcome.REJECTED
    with pytest.raises(Rejection, match="unknown transfer syntax"):
        read_header(b"", "1.2.3")


def linkage_cipher_for(ingestor: Ingestor) -> LinkageCipher:
    return ingestor.deidentify.cipher


def issuers(archive: Archive) -> dict[str, str]:
    rows = archive.index.find(
        Query(level=Level.PATIENT, keys={"IssuerOfPatientID": "", "PatientID": ""})
    )
    return {r["IssuerOfPatientID"]: r["PatientID"] for r in rows}


def test_patients_are_keyed_by_issuer_and_id(ingestor: Ingestor, archive: Archive) -> None:
    same_id = PATIENTS[0]
    for ae in ("BISHKEK_ECHO", "BISHKEK_CATH", "DUSHANBE_ECHO", "STRANGER"):
        assert ingestor.ingest(incoming(instance(same_id), calling_ae=ae)).status == 0
    for own in ("MRN-NCC", "NCC RADIOLOGY"):
        ds = instance(same_id, IssuerOfPatientID=own)
        assert ingestor.ingest(incoming(ds, calling_ae="BISHKEK_ECHO")).status == 0
    # Two devices of one hospital: one child, whatever issuer the instance
    # itself names (sealed, never shown). Two hospitals: two children.
    found = issuers(archive)
    assert sorted(found) == ["AE:STRANGER", "NCC Bishkek", "RCC Dushanbe"]
    assert len(set(found.values())) == 3  # three pseudonyms
    assert archive.index.stats()["patients"] == 3
    sealed = [
        linkage_cipher_for(ingestor).open(blob, pseudonym, study)
        for study, pseudonym, blob in archive.index.linkage_for(found["NCC Bishkek"])
    ]
    assert {"MRN-NCC", "NCC RADIOLOGY"} <= {identity.own_issuer for identity in sealed}


def test_instances_without_patient_id_are_never_merged(
    ingestor: Ingestor, archive: Archive
) -> None:
    for _ in range(2):
        assert ingestor.ingest(incoming(instance(PatientID=""))).status == 0
    assert archive.index.stats()["patients"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "placeholder",
    ["0", "00000", "-", "N/A", "na", "UNKNOWN", "Anonymous", "NONE", "?", "null", " TEST "],
)
def test_placeholder_patient_ids_are_never_merged(
    ingestor: Ingestor, archive: Archive, placeholder: str
) -> None:
    # Two children a device sent under the same stand-in for "no ID".
    for child in PATIENTS[:2]:
        result = ingestor.ingest(incoming(instance(child, PatientID=placeholder)))
        assert result.status == 0
    pseudonyms = {
        row["PatientID"]
        for row in archive.index.find(Query(level=Level.PATIENT, keys={"PatientID": ""}))
    }
    assert len(pseudonyms) == 2
    assert archive.index.stats()["patients"] == 2


def test_one_hospital_is_one_issuer_however_it_is_typed(
    tmp_path: Path, config: Config, archive: Archive
) -> None:
    hospital = "National Centre of Cardiology, Bishkek"
    typed = replace(
        config,
        remote_aes=(
            RemoteAE("NCC_ECHO", "127.0.0.1", 104, " National  Centre of Cardiology, Bishkek"),
        ),
    )
    ingestor = Ingestor(typed, archive)
    assert ingestor.ingest(incoming(instance(), calling_ae="NCC_ECHO")).status == 0
    typed_at_import = (
        f"{hospital} ",  # the attacker's trailing space
        f"{hospital}\u00a0",
        "National Centre  of Cardiology,\tBishkek",
    )
    for number, issuer in enumerate(typed_at_import):
        folder = tmp_path / f"import{number}"
        save(instance(), folder / "im.dcm")
        summary = import_paths(ingestor, [folder], issuer=issuer, progress=False)
        assert summary.counts["stored"] == 1
    assert list(issuers(archive)) == [hospital]  # one hospital, one child
    assert archive.index.stats()["patients"] == 1


def test_out_of_disk_is_out_of_resources(tmp_path: Path, config: Config, archive: Archive) -> None:
    full = Ingestor(replace(config, min_free_disk_mb=10**12), archive)
    result = full.ingest(incoming(instance()))
    assert (result.outcome, result.status) == (Outcome.REJECTED, 0xA700)
    assert stored_files(archive) == []


def test_logs_carry_no_identity(ingestor: Ingestor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    patient = PATIENTS[1]
    ds = instance(patient)
    ingestor.ingest(incoming(ds))
    ingestor.ingest(incoming(instance(patient, SOPClassUID="1.2.3.4")))
    # Malformed values make pydicom warn, quoting the value: that must not reach a log.
    ingestor.ingest(incoming(instance(patient, PatientBirthDate=patient.patient_id)))
    ingestor.ingest(incoming(ds))
    text = caplog.text
    assert "rejected" in text  # the rejection was logged ...
    for value in (patient.name, patient.patient_id, patient.birth_date, str(ds.SOPInstanceUID)):
        assert value not in text  # ... without who it was about


def big_endian(ds: Dataset) -> Incoming:
    """``ds`` as a sender holding Explicit VR Big Endian sends it."""
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    return incoming(ds)


def test_big_endian_ultrasound_is_cleaned_and_stored_little_endian(
    ingestor: Ingestor, archive: Archive
) -> None:
    ds = instance()
    sent = ds.pixel_array.copy()
    result = ingestor.ingest(big_endian(ds))
    assert (result.outcome, result.status) == (Outcome.STORED, 0)
    (path,) = stored_files(archive)
    stored = dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not stored.pixel_array[:8].any()  # the banner is blanked
    assert (stored.pixel_array[8:] == sent[8:]).all()  # the image is the same
    assert stored.BurnedInAnnotation == "NO"


def test_big_endian_16_bit_angio_keeps_its_values(ingestor: Ingestor, archive: Archive) -> None:
    ds = xa_instance(frames=2, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian)
    values = np.frombuffer(ds.PixelData, dtype=np.uint8).astype(np.uint16) * 13
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    # pydicom writes OW bytes as given: the sender's are big endian.
    ds.PixelData = (values | 0x8000).astype(">u2").tobytes()  # a mark above BitsStored
    ds["PixelData"].VR = "OW"
    result = ingestor.ingest(big_endian(ds))
    assert (result.outcome, result.status) == (Outcome.STORED, 0), result.comment
    (path,) = stored_files(archive)
    stored = dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (stored.pixel_array.ravel() == values).all()  # values kept, the mark cleared
