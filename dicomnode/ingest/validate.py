"""What an instance must carry before the node accepts it.

Every failure is a `Rejection` (`dicomnode.status`) with a DICOM status and
a short comment that never quotes a value of the dataset (comments reach
logs and peers).
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from dicomnode.media.pixeldata import expected_native_pixel_bytes
from dicomnode.media.sopclasses import refusal
from dicomnode.status import (
    BAD_UID,
    CANNOT_UNDERSTAND,
    HELD_FOR_REVIEW,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    PIXEL_DATA_SHORT,
    PROCESSING_FAILURE,
    UNKNOWN_SOP_CLASS,
    UNREADABLE,
    Rejection,
)
from dicomnode.status import DATA_SET_DOES_NOT_MATCH as MISMATCH

# The status codes and `Rejection` live in `dicomnode.status` and
# `expected_native_pixel_bytes` in `dicomnode.media.pixeldata`; re-exported
# here for the modules that still import them from validate.
DATASET_MISMATCH = MISMATCH
__all__ = [
    "BAD_UID",
    "CANNOT_UNDERSTAND",
    "DATASET_MISMATCH",
    "HELD_FOR_REVIEW",
    "NOT_AUTHORIZED",
    "OUT_OF_RESOURCES",
    "PIXEL_DATA_SHORT",
    "PROCESSING_FAILURE",
    "UNKNOWN_SOP_CLASS",
    "UNREADABLE",
    "Rejection",
    "expected_native_pixel_bytes",
    "is_valid_uid",
    "require_uids",
    "status_dataset",
    "validate",
]

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def status_dataset(status: int, comment: str) -> Dataset:
    """A DIMSE status with an Error Comment (LO: at most 64 characters)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(UID_PATTERN.fullmatch(value))


def require_uids(ds: Dataset) -> None:
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = ds.get(keyword)
        if value is None or str(value).strip() == "":
            raise Rejection(BAD_UID, f"{keyword} is missing")
        if not is_valid_uid(str(value).rstrip("\x00 ")):
            raise Rejection(BAD_UID, f"{keyword} is not a well-formed UID")


def validate(
    ds: Dataset,
    *,
    expected_sop_class: str | None = None,
    expected_sop_instance: str | None = None,
    unknown_sop_class_accepted: bool = False,
) -> None:
    """Raise Rejection if the node must not store ``ds``."""
    require_uids(ds)
    if why := refusal(str(ds.SOPClassUID), unknown_sop_class_accepted):
        raise Rejection(UNKNOWN_SOP_CLASS, why)
    if expected_sop_class and str(ds.SOPClassUID) != expected_sop_class:
        raise Rejection(MISMATCH, "SOP Class UID differs from the C-STORE request")
    if expected_sop_instance and str(ds.SOPInstanceUID) != expected_sop_instance:
        raise Rejection(MISMATCH, "SOP Instance UID differs from the C-STORE request")
