"""The hospital's identity put back into a report's instance as it is sent.

The forwarder calls `Reidentifier` for a queue row that belongs to a report
(`storage.reports`). Every check is made before anything is opened: the
destination is an AE of the hospital that referred the child, the instance
is one of that report's, of that child, in one of the case's studies. Then
the study's sealed linkage record is opened with the linkage key, in
memory, and a copy of the instance names the child as the hospital does:
the PDF is rendered again with that name, the SR's patient and study
modules carry it. Nothing of it is written anywhere; the audit trail keeps
that it was re-identified and for whom, never the identity.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicomnode.config import Config
from dicomnode.consult.document import ENCAPSULATED_PDF, reidentified, set_pdf
from dicomnode.consult.identity import Unavailable, open_case
from dicomnode.consult.keyimages import key_images
from dicomnode.consult.pdf import Patient, ReportFontError, render
from dicomnode.deid.linkage import OriginalIdentity
from storage.archive import Archive
from storage.cases import UnknownCase
from storage.reports import Report

REIDENTIFY_EVENT = "reidentify"
SENT_EVENT = "case-report-sent"
NODE_USER = "dicomnode"


def hospital_pdf(archive: Archive, report: Report, identity: OriginalIdentity) -> bytes:
    """The report's PDF naming the child as the hospital does, its key images
    drawn again from the archive (Unavailable when a font is missing)."""
    patient = Patient(
        patient_id=identity.patient_id,
        name=" ".join(identity.patient_name.replace("^", " ").split()),
        birth_date=identity.birth_date,
        accession=identity.accession_number,
    )
    try:
        images = key_images(archive, report.content)
        return render(report.content, patient, hospital_copy=True, images=images)
    except ReportFontError as exc:
        raise Unavailable(str(exc)) from None


class Reidentifier:
    def __init__(self, config: Config, archive: Archive) -> None:
        self.config, self.archive = config, archive

    def __call__(self, ds: Dataset, report_pk: int, destination: str) -> tuple[Dataset, str]:
        """A copy of ``ds`` for ``destination``, and the case's reference."""
        index = self.archive.index
        report = index.reports.get(report_pk)
        if report is None:
            raise Unavailable("its report is gone")
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid not in report.uids:
            raise Unavailable("the instance is not one of its report's")
        ref = str(report.content.get("ref", ""))
        try:
            case = index.cases.get(ref)
        except UnknownCase:
            raise Unavailable("its case is gone") from None
        remote = self.config.remote(destination)
        if remote is None or remote.issuer != case.issuer:
            raise Unavailable(
                "the destination is not an AE of the hospital that referred the child"
            )
        if str(ds.get("PatientID", "")) != case.pseudonym:
            raise Unavailable("the instance is not of the case's child")
        if str(ds.SOPClassUID) == ENCAPSULATED_PDF and uid != report.pdf_uid:
            raise Unavailable("the PDF is not its report's")
        linked = open_case(self.config, index, case)
        identity = linked.by_study.get(str(ds.get("StudyInstanceUID", "")))
        if identity is None:
            raise Unavailable("the report's study has no linkage record")
        index.audit.record(
            REIDENTIFY_EVENT,
            user=NODE_USER,
            source=destination,
            obj=ref,
            detail=f"consultation report {uid} for {case.issuer}",
        )
        copy = reidentified(ds, identity, linked.studies)
        if str(ds.SOPClassUID) == ENCAPSULATED_PDF:
            set_pdf(copy, hospital_pdf(self.archive, report, identity))
        return copy, ref

    def sent(self, ref: str, uid: str, destination: str) -> None:
        """The hospital's AE took it: the audit record of the sending."""
        self.archive.index.audit.record(
            SENT_EVENT,
            user=NODE_USER,
            source=destination,
            obj=ref,
            detail=f"consultation report {uid} sent to {destination}",
        )
