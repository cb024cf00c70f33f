"""What the index keeps of one instance, taken from its decoded header."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from storage.keys import ATTRIBUTES, Level
from storage.schema import INTEGER_VRS, TEXT_LENGTH, folded_column
from storage.values import ValueFormatError, normalise_date, stored_time

log = logging.getLogger(__name__)


@dataclass
class InstanceRecord:
    """Index columns by level, plus where and how the instance arrived."""

    columns: dict[Level, dict[str, Any]]
    sending_ae: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def sop_instance_uid(self) -> str:
        return self.columns[Level.IMAGE]["sopinstanceuid"]


def index_value(vr: str, raw: Any) -> Any:
    """The Python value stored for an element's value (text already decoded)."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, MultiValue | list):
        if vr in INTEGER_VRS:
            raw = raw[0] if raw else None
            return None if raw is None else int(raw)
        return "\\".join(str(v) for v in raw)[:TEXT_LENGTH] or None
    if vr in INTEGER_VRS:
        return int(raw)
    text = str(raw).strip()
    if not text:
        return None
    if vr == "DA":
        return normalise_date(text)
    if vr == "TM":
        return stored_time(text)
    return text[:TEXT_LENGTH]


# What a device writes when it has no PatientID: the same value for every
# child it sees, so it must not make them one patient.
PLACEHOLDER_IDS = frozenset(
    {
        *("NA", "NONE", "NULL", "NIL", "NOID", "TEST", "UNKNOWN", "UNK"),
        *("ANONYMOUS", "ANON", "ANONYMIZED", "ANONYMISED"),
    }
)
_NOT_ALNUM = re.compile(r"[\W_]+")


def is_placeholder_id(patient_id: str) -> bool:
    """A PatientID that names no one: empty, only punctuation ("-", "?"),
    only zeros ("0", "00000"), or a word such as N/A, UNKNOWN, ANONYMOUS,
    NONE, NULL, TEST (case and punctuation ignored)."""
    folded = _NOT_ALNUM.sub("", patient_id).upper()
    return not folded or not folded.strip("0") or folded in PLACEHOLDER_IDS


def patient_key(patient_id: str | None, study_uid: str) -> str:
    """PatientID, or a per-study key when the instance has none or only a
    placeholder (two children sent as "0" or "UNKNOWN" are never merged)."""
    if patient_id and not is_placeholder_id(patient_id):
        return patient_id
    return f"\\study:{study_uid}"


def record_from_dataset(
    ds: Dataset, *, issuer: str, transfer_syntax: str, sending_ae: str | None = None
) -> InstanceRecord:
    """Read the indexed attributes of ``ds``.

    ``issuer`` is who assigned the PatientID (see `dicomnode.ingest.pipeline`): it is
    stored as IssuerOfPatientID because patients are keyed by (issuer, ID).
    A malformed optional value is indexed as empty rather than refusing data.
    """
    columns: dict[Level, dict[str, Any]] = {level: {} for level in Level}
    for attribute in ATTRIBUTES.values():
        element = ds.get(attribute.tag)
        try:
            value = None if element is None else index_value(attribute.vr, element.value)
        except (ValueFormatError, ValueError, TypeError):
            log.warning("unindexable value of %s ignored", attribute.keyword)
            value = None
        columns[attribute.level][attribute.column] = value
        if attribute.vr == "PN":
            columns[attribute.level][folded_column(attribute)] = value.casefold() if value else None
    columns[Level.PATIENT]["issuerofpatientid"] = issuer
    columns[Level.PATIENT]["patient_key"] = patient_key(
        columns[Level.PATIENT]["patientid"], columns[Level.STUDY]["studyinstanceuid"]
    )
    columns[Level.IMAGE]["availabletransfersyntaxuid"] = transfer_syntax
    return InstanceRecord(columns=columns, sending_ae=sending_ae)
