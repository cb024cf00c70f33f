"""Normalised forms of DICOM values, shared by indexing and matching.

Dates and times are compared as strings, so both the stored values and the
bounds of a query are brought to one fixed-width form here.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_DATE = re.compile(r"^\d{8}$")


class ValueFormatError(ValueError):
    """A value does not have the form its VR requires."""


def normalise_date(value: str) -> str:
    """``YYYYMMDD``; the ACR-NEMA form ``YYYY.MM.DD`` is accepted too."""
    text = value.strip().replace(".", "") if len(value.strip()) == 10 else value.strip()
    if not _DATE.match(text):
        raise ValueFormatError(f"not a DICOM date: {value!r}")
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise ValueFormatError(f"not a calendar date: {value!r}") from None
    return text


def normalise_time(value: str, *, upper: bool = False) -> str:
    """``HHMMSS[.ffffff]``; missing parts are the earliest (or, as an upper bound,
    the latest) instant the value can mean, so ``1530`` spans 15:30:00-15:30:59.999999."""
    match = _TIME.match(value.strip().replace(":", ""))
    if not match:
        raise ValueFormatError(f"not a DICOM time: {value!r}")
    hours, minutes, seconds, fraction = match.groups()
    fill = "59" if upper else "00"
    text = hours + (minutes or fill) + (seconds or fill)
    if fraction:
        text += fraction.ljust(7, "9" if upper else "0")
    elif upper:
        text += ".999999"
    return text


def stored_time(value: str) -> str:
    """The indexed form of a TM value: padded, fraction kept as sent."""
    match = _TIME.match(value.strip().replace(":", ""))
    if not match:
        raise ValueFormatError(f"not a DICOM time: {value!r}")
    hours, minutes, seconds, fraction = match.groups()
    return hours + (minutes or "00") + (seconds or "00") + (fraction or "")


def normalise_issuer(issuer: str) -> str:
    """One hospital, one issuer string, however it was typed: Unicode NFC,
    no leading or trailing space, inner whitespace runs as one space.
    Patients are keyed (and pseudonyms made) by the issuer, so
    "NCC Bishkek " and "NCC  Bishkek" must not be two hospitals."""
    return " ".join(unicodedata.normalize("NFC", issuer).split())
