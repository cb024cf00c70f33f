"""Coded values checked against their VR before a research manifest names them.

Age, sex and modality in the index are what the sender's device wrote (or
what an older version indexed unchecked): a sender controls them. A
manifest is read by people and spreadsheets, so it carries a value only in
the form the standard allows (PS3.5 6.2) and otherwise an empty cell, never
the sender's text.
"""

from __future__ import annotations

import math
import re
from typing import Any

from dicomnode.deid.plausible import in_bounds
from dicomnode.deid.values import lived_age

# ASCII digits only: ``\d`` would also take other scripts' digits.
_AGE = re.compile(r"[0-9]{3}[DWMY]")
_CODE = re.compile(r"[A-Z0-9_ ]{1,16}")  # CS: upper case, digits, space, underscore
_DECIMAL = re.compile(r"[0-9]{1,4}(\.[0-9]{1,6})?")
SEXES = frozenset({"M", "F", "O"})


def _text(value: Any) -> str:
    """The value without DICOM padding (spaces, a NUL); nothing else removed."""
    return "" if value is None else str(value).strip(" \x00")


def age(value: Any) -> str:
    """An AS value (``nnnD``, ``nnnW``, ``nnnM``, ``nnnY``) someone can have
    lived, else ""."""
    text = _text(value)
    return lived_age(text) if _AGE.fullmatch(text) else ""


def sex(value: Any) -> str:
    """``M``, ``F`` or ``O`` (PS3.3 C.7.1.1 Patient's Sex), else ""."""
    text = _text(value)
    return text if text in SEXES else ""


def codes(values: Any) -> str:
    """The valid CS codes of a multi-valued attribute (ModalitiesInStudy),
    comma-separated; invalid ones are left out."""
    if isinstance(values, str):
        values = values.split("\\")
    found = [_text(v).strip() for v in values or ()]
    return ",".join(code for code in found if _CODE.fullmatch(code))


def number(value: Any, bounds: tuple[float, float]) -> Any:
    """A plausible number: a plain decimal as written, any other spelling
    Python reads ("+12", "1_2", "1e1") as the number it is, else ""."""
    if not in_bounds(value, bounds):
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if _DECIMAL.fullmatch(text):
        return text
    parsed = float(text)
    return parsed if math.isfinite(parsed) else ""
