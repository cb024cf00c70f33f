"""Making the report of each decision and queueing it for the hospital's AE.

A pass of the node's runner (`Maker.run_once`, as the cases feed): every
decided history row without a report gets one. What the report says is
read from the case and the signed plans of its studies (their stored SRs:
the measured values as signed), kept with the report row (pseudonymous),
rendered to the centre's PDF copy, and stored in the case's newest study
in one transaction with the report row and its forwarding rows: a crash
leaves no report half made, and a report made is sent, retried until the
hospital's AE takes it. Nothing here needs the linkage key: the identity is
put back only by the sender (`sending`).
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from dicomnode.config import Config, RemoteAE
from dicomnode.consult.document import REPORT_ROOT, encapsulated_pdf
from dicomnode.consult.keyimages import key_images
from dicomnode.consult.pdf import Patient, ReportFontError, render
from dicomnode.consult.words import say
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.status import SUCCESS
from storage.archive import Archive
from storage.index import StoreOutcome
from storage.keys import Level
from storage.query import Query
from storage.reports import Decision

log = logging.getLogger(__name__)
MOST_VALUES = 40  # measured values, texts and drawings of one plan in the report
# UCUM codes as a reader writes the unit.
UCUM_SHOWN = {
    "mm[Hg]": "mmHg",
    "mm2": "mm²",
    "m2": "m²",
    "deg": "°",
    "{pixels}": "px",
    "{pixels}2": "px²",
}
TWO_DECIMALS = {"m/s", "m²"}  # 0.05 m/s is 1 mmHg at 2.5 m/s; a BSA in hundredths
# What the report keeps of a drawn measurement: where, what shape, what it read.
DRAWN_FIELDS = ("uid", "frame", "kind", "points", "value", "short", "unit")


def destination(config: Config, issuer: str) -> tuple[RemoteAE | None, str]:
    """The AE of hospital ``issuer`` that receives its reports, or None and why."""
    theirs = [r for r in config.remote_aes if r.issuer == issuer]
    marked = [r for r in theirs if r.receives_reports]
    if len(marked) == 1 or len(theirs) == 1:
        return (marked or theirs)[0], ""
    if not theirs:
        return None, "no [[remote_ae]] of this hospital to send the report to"
    return None, "several [[remote_ae]] of this hospital: mark one receives_reports = true"


class Maker:
    def __init__(self, config: Config, archive: Archive, ingestor: Ingestor) -> None:
        self.config, self.archive, self.ingestor = config, archive, ingestor

    def run_once(self) -> int:
        """Make the report of every decision that has none; how many were made."""
        made = 0
        for decision in self.archive.index.reports.waiting():
            try:
                made += self.make(decision)
            except ReportFontError as exc:  # every report would fail alike: stop here
                log.error("consultation reports wait: %s", exc)
                break
        return made

    def make(self, decision: Decision) -> int:
        case = self.archive.index.cases.get(decision.ref)
        remote, why = destination(self.config, decision.issuer)
        language = remote.language if remote else "en"
        content = self.content_of(decision, case.studies, language)
        reports = self.archive.index.reports
        study = self._header(case.studies[-1]) if case.studies else None
        if study is None:  # nothing stored to file it in (all deleted since)
            try:
                reports.record(
                    decision,
                    content=content,
                    language=language,
                    destination=None,
                    pdf_uid=None,
                    uids=[],
                    study_uid=None,
                    reason="the case holds no stored study",
                )
            except IntegrityError:
                return 0
            return 1
        uid = generate_uid(REPORT_ROOT)
        images = key_images(self.archive, content)
        pdf = render(content, Patient(decision.pseudonym), hospital_copy=False, images=images)
        ds = encapsulated_pdf(study, pdf, title=say(language, "title"), at=decision.at, uid=uid)
        uids = [uid, *(p["sr_uid"] for p in content["plans"])]
        target = remote.ae_title if remote else None

        def also(conn: Connection, _: StoreOutcome) -> None:
            reports.record_in(
                conn,
                decision,
                content=content,
                language=language,
                destination=target,
                pdf_uid=uid,
                uids=uids,
                study_uid=str(study.StudyInstanceUID),
                reason=why,
            )

        try:
            outcome = self.ingestor.ingest_own(ds, decision.issuer, also)
        except IntegrityError:  # another process made it meanwhile
            return 0
        if outcome.status != SUCCESS:
            log.warning(
                "case %s: the report could not be stored (0x%04X)", decision.ref, outcome.status
            )
            return 0
        return 1

    def content_of(self, decision: Decision, studies: tuple[str, ...], language: str) -> dict:
        """What the report says, pseudonymous (kept with its row)."""
        return {
            "ref": decision.ref,
            "issuer": decision.issuer,
            "ae": self.config.ae_title,
            "language": language,
            "status": decision.status,
            "detail": decision.detail,
            "user": decision.user,
            "at": decision.at.isoformat(),
            "studies": [s for uid in studies if (s := self._study(uid))],
            "plans": [p for uid in studies for p in self._plans(uid)],
        }

    def _study(self, uid: str) -> dict[str, str] | None:
        rows = list(
            self.archive.index.find(
                Query(
                    level=Level.STUDY,
                    keys={
                        "StudyInstanceUID": uid,
                        "StudyDate": "",
                        "ModalitiesInStudy": "",
                        "StudyDescription": "",
                    },
                )
            )
        )
        if not rows:
            return None
        row = rows[0]
        modalities = row.get("ModalitiesInStudy") or ""
        if isinstance(modalities, list | tuple):
            modalities = ", ".join(m for m in modalities if m not in ("SR", "DOC"))
        return {
            "date": str(row.get("StudyDate") or ""),
            "modalities": str(modalities),
            "description": str(row.get("StudyDescription") or ""),
        }

    def _plans(self, study_uid: str) -> list[dict[str, Any]]:
        """The newest signed version of each plan of the study, as signed."""
        signed: dict[int, dict[str, Any]] = {}
        for row in self.archive.index.plans.versions(study_uid):
            if row.get("signed_sr_uid"):
                signed[int(row["plan"])] = row
        out = []
        for plan, row in sorted(signed.items()):
            sr = self._read(str(row["signed_sr_uid"]))
            values, texts = _items(sr) if sr is not None else ([], [])
            out.append(
                {
                    "defect": row["defect"],
                    "plan": plan,
                    "version": row["version"],
                    "user": row["signed_by"],
                    "day": str(row["signed_at"])[:10],
                    "sr_uid": row["signed_sr_uid"],
                    "values": values[:MOST_VALUES],
                    "texts": texts[:MOST_VALUES],
                    "drawn": [
                        {key: m.get(key) for key in DRAWN_FIELDS}
                        for m in (row["content"].get("measurements") or [])[:MOST_VALUES]
                        if isinstance(m, dict)
                    ],
                }
            )
        return [p for p in out if self.archive.index.instance_blob(p["sr_uid"])]

    def _read(self, uid: str) -> Dataset | None:
        try:
            data = self.archive.read(uid)
        except OSError:
            return None
        return dcmread(BytesIO(data)) if data else None

    def _header(self, study_uid: str) -> Dataset | None:
        """A header of one stored instance of the study (its patient and study modules)."""
        for row in self.archive.index.find(
            Query(level=Level.IMAGE, keys={"StudyInstanceUID": study_uid, "SOPInstanceUID": ""})
        ):
            ds = self._read(str(row["SOPInstanceUID"]))
            if ds is not None:
                return ds
        return None


def _items(sr: Dataset) -> tuple[list[list[str]], list[list[str]]]:
    """The SR's measured values (meaning, value, unit) and texts (meaning, text)."""
    values: list[list[str]] = []
    texts: list[list[str]] = []

    def walk(items: Any) -> None:
        for item in items or []:
            name = (
                item.ConceptNameCodeSequence[0].CodeMeaning
                if "ConceptNameCodeSequence" in item
                else ""
            )
            kind = item.get("ValueType", "")
            if kind == "NUM" and "MeasuredValueSequence" in item and item.MeasuredValueSequence:
                measured = item.MeasuredValueSequence[0]
                unit = (
                    measured.MeasurementUnitsCodeSequence[0].CodeValue
                    if "MeasurementUnitsCodeSequence" in measured
                    else ""
                )
                shown = UCUM_SHOWN.get(str(unit), str(unit))
                values.append([str(name), _number(measured.NumericValue, shown), shown])
            elif kind == "TEXT":
                texts.append([str(name), str(item.get("TextValue", ""))])
            walk(item.get("ContentSequence"))

    walk(sr.get("ContentSequence"))
    return values, texts


def _number(value: object, unit: str) -> str:
    """A measured value as the viewer shows it: one decimal (19.97 mm is
    20.0), two where a tenth is too coarse (`TWO_DECIMALS`)."""
    try:
        return f"{float(str(value)):.{2 if unit in TWO_DECIMALS else 1}f}"
    except ValueError:
        return str(value)
