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
from dicomnode.consult.pdf import Patient, ReportFontError, render
from dicomnode.deid.linkage import LinkageCipher, LinkageError, OriginalIdentity
from dicomnode.deid.pipeline import LINKAGE_KEY
from dicomnode.deid.secret import load_or_create_key
from storage.archive import Archive
from storage.cases import UnknownCase

REIDENTIFY_EVENT = "reidentify"
SENT_EVENT = "case-report-sent"
NODE_USER = "dicomnode"


class NotSendable(RuntimeError):
    """This instance is not sent (yet): the reason, naming no identity."""


class Reidentifier:
    def __init__(self, config: Config, archive: Archive) -> None:
        self.config, self.archive = config, archive

    def _cipher(self) -> LinkageCipher:
        """Read each time: a key put back (or taken away) counts at once."""
        try:
            key = load_or_create_key(
                self.config.key_dir / LINKAGE_KEY, self.config.data_dir, create=False
            )
        except RuntimeError:
            raise NotSendable(
                "the linkage key is not available: not re-identified, not sent"
            ) from None
        return LinkageCipher(key)

    def __call__(self, ds: Dataset, report_pk: int, destination: str) -> tuple[Dataset, str]:
        """A copy of ``ds`` for ``destination``, and the case's reference."""
        index = self.archive.index
        report = index.reports.get(report_pk)
        if report is None:
            raise NotSendable("its report is gone")
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid not in report.uids:
            raise NotSendable("the instance is not one of its report's")
        ref = str(report.content.get("ref", ""))
        try:
            case = index.cases.get(ref)
        except UnknownCase:
            raise NotSendable("its case is gone") from None
        remote = self.config.remote(destination)
        if remote is None or remote.issuer != case.issuer:
            raise NotSendable(
                "the destination is not an AE of the hospital that referred the child"
            )
        if str(ds.get("PatientID", "")) != case.pseudonym:
            raise NotSendable("the instance is not of the case's child")
        cipher = self._cipher()
        studies: dict[str, str] = {}
        identity: OriginalIdentity | None = None
        own = str(ds.get("StudyInstanceUID", ""))
        for study_uid in case.studies:
            for linked_uid, pseudonym, sealed in index.linkage_for(study_uid):
                if linked_uid != study_uid or pseudonym != case.pseudonym:
                    continue
                try:
                    opened = cipher.open(sealed, pseudonym, study_uid)
                except LinkageError:
                    raise NotSendable("a linkage record does not open with this key") from None
                if opened.issuer != case.issuer:
                    raise NotSendable("a linkage record names another hospital")
                studies[study_uid] = opened.study_instance_uid
                if study_uid == own:
                    identity = opened
        if identity is None:
            raise NotSendable("the report's study has no linkage record")
        index.audit.record(
            REIDENTIFY_EVENT,
            user=NODE_USER,
            source=destination,
            obj=ref,
            detail=f"consultation report {uid} for {case.issuer}",
        )
        copy = reidentified(ds, identity, studies)
        if str(ds.SOPClassUID) == ENCAPSULATED_PDF:
            if uid != report.pdf_uid:
                raise NotSendable("the PDF is not its report's")
            patient = Patient(
                patient_id=identity.patient_id,
                name=identity.patient_name.replace("^", " ").strip(),
                birth_date=identity.birth_date,
                accession=identity.accession_number,
            )
            try:
                set_pdf(copy, render(report.content, patient, hospital_copy=True))
            except ReportFontError as exc:
                raise NotSendable(str(exc)) from None
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
