"""What an instance must carry before the node accepts it.

Every failure is a `Rejection` with a DICOM status and a short comment that
never quotes a value of the dataset (comments reach logs and peers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicomnode.media.sopclasses import refusal

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# Status codes (PS3.4 B.2.3 and GG.4): A7xx out of resources, A9xx data set
# does not match SOP class, Cxxx cannot understand.
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
UNREADABLE = 0xC001
BAD_UID = 0xC002
UNKNOWN_SOP_CLASS = 0xC004
PIXEL_DATA_SHORT = 0xC005
PROCESSING_FAILURE = 0x0110
NOT_AUTHORIZED = 0x0124  # PS3.7 C.4.2 Refused: Not Authorized
# Warning, Coercion of Data Elements (PS3.4 B.2.3): stored, but held in
# quarantine for review instead of among the clean images.
HELD_FOR_REVIEW = 0xB000


@dataclass
class Rejection(Exception):
    status: int
    comment: str

    def __str__(self) -> str:
        return f"0x{self.status:04X} {self.comment}"


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
        raise Rejection(DATASET_MISMATCH, "SOP Class UID differs from the C-STORE request")
    if expected_sop_instance and str(ds.SOPInstanceUID) != expected_sop_instance:
        raise Rejection(DATASET_MISMATCH, "SOP Instance UID differs from the C-STORE request")


def expected_native_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes native Pixel Data must hold, from the image attributes (None if unknown)."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if bits == 1:
        return (rows * columns * frames + 7) // 8
    return rows * columns * samples * (bits // 8) * frames
