"""The report as DICOM: an Encapsulated PDF in the child's study, and the
identity put back into a copy for the hospital that referred the child.

The stored instance is made from the study's own header (patient and study
modules as the centre holds them: pseudonymous), so it files into the
study and is found with it. `reidentified` changes a copy in memory only:
the hospital's name, ID, birth date and accession, and its own Study
Instance UID wherever the centre's stands, so the report files into the
study the hospital sent.
"""

from __future__ import annotations

from copy import deepcopy
from datetime import UTC, datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from dicomnode import IMPLEMENTATION_CLASS_UID, UID_ROOT
from dicomnode.deid.linkage import OriginalIdentity

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
REPORT_ROOT = UID_ROOT + ".7."
SERIES_NUMBER = 990
# The study's own attributes the report takes from an instance of it.
FROM_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
)
TYPE2 = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
# What `reidentified` takes out: the centre's statement that it removed
# identity, and the de-identifier's mark on the equipment that made it.
CENTRE_ONLY = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "ContributingEquipmentSequence",
)
# Study attributes the centre holds changed (dates shifted, IDs and people
# removed): left empty in the hospital's copy, which files into a study
# whose own values the hospital has (Type 2: present, empty).
STUDY_CHANGED = ("StudyDate", "StudyTime", "StudyID", "ReferringPhysicianName")


def encapsulated_pdf(study: Dataset, pdf: bytes, *, title: str, at: datetime, uid: str) -> Dataset:
    """An Encapsulated PDF instance of ``study`` (a header of one of its
    instances) carrying ``pdf``; ``uid`` its SOP Instance UID."""
    ds = Dataset()
    for keyword in FROM_STUDY:
        if keyword in study:
            setattr(ds, keyword, deepcopy(study[keyword].value))
    for keyword in TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    when = at.astimezone(UTC)
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = uid
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid(
        REPORT_ROOT, entropy_srcs=[str(study.StudyInstanceUID), "reports"]
    )
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "Consultation reports"
    ds.InstanceNumber = 1
    ds.Manufacturer = "dicomnode"
    ds.ConversionType = "SYN"
    ds.ContentDate = ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # a report names the patient in its text
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.SpecificCharacterSet = "ISO_IR 192"
    set_pdf(ds, pdf)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(ENCAPSULATED_PDF)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    return ds


def set_pdf(ds: Dataset, pdf: bytes) -> None:
    """The document, padded to an even length as DICOM wants (PS3.3 C.24.2.1)."""
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")


def reidentified(ds: Dataset, identity: OriginalIdentity, studies: dict[str, str]) -> Dataset:
    """A copy of ``ds`` naming the child as the hospital does; ``studies``
    maps the centre's Study Instance UIDs to the hospital's (each one the
    report or its references name)."""
    copy = deepcopy(ds)
    copy.PatientName = identity.patient_name
    copy.PatientID = identity.patient_id
    copy.PatientBirthDate = identity.birth_date
    copy.AccessionNumber = identity.accession_number
    if identity.own_issuer:
        copy.IssuerOfPatientID = identity.own_issuer
    elif "IssuerOfPatientID" in copy:
        del copy.IssuerOfPatientID
    for keyword in CENTRE_ONLY:
        if keyword in copy:
            delattr(copy, keyword)
    for keyword in STUDY_CHANGED:
        setattr(copy, keyword, "")
    copy.SpecificCharacterSet = "ISO_IR 192"  # the name may be in any script

    def swap(dataset: Dataset, element: object) -> None:
        if getattr(element, "keyword", "") == "StudyInstanceUID":
            value = str(element.value)  # type: ignore[attr-defined]
            if value in studies:
                element.value = studies[value]  # type: ignore[attr-defined]

    copy.walk(swap)
    return copy


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code
