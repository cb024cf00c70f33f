"""Replacement values by VR: dummies (action D), shifted dates (C), cleaned text."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from pydicom.valuerep import MAX_VALUE_LEN

DUMMY_TEXT = "ANONYMIZED"
_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_NUMBERS = {"US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0}
_FIXED = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000D",
    "IS": "0",
    "DS": "0",
    "UR": "",
    "AT": 0,
}
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")


def dummy(vr: str) -> Any:
    """A non-empty value of the VR that says nothing about anyone (action D)."""
    if vr in _FIXED:
        return _FIXED[vr]
    if vr in _NUMBERS:
        return _NUMBERS[vr]
    if vr in _BINARY:
        return b"\x00\x00"
    if vr == "SQ":
        return []
    return DUMMY_TEXT[: MAX_VALUE_LEN.get(vr, 64)]


def shift_date(value: str, days: int) -> str:
    """``YYYYMMDD`` moved by ``days``; raises ValueError if not a date."""
    text = value.strip()
    if len(text) != 8 or not text.isdigit():
        raise ValueError("not a DA value")
    moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days=days)
    return moved.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """A DT value with its date part moved; time and offset are kept as sent.

    A DT of year precision only (``YYYY``) or year-month is shifted as the
    first day of that period and written back at the same precision.
    """
    match = _DT.match(value.strip())
    if not match:
        raise ValueError("not a DT value")
    year, month, day, rest = match.groups()
    full = shift_date(f"{year}{month or '01'}{day or '01'}", days)
    precision = 4 + (2 if month else 0) + (2 if day else 0)
    return full[:precision] + (rest if day else "")


_OFFSET = re.compile(r"[+-]\d{4}$")


def strip_offset(value: str) -> str:
    """A DT value without its ``&ZZXX`` offset from UTC (a time zone locates)."""
    return _OFFSET.sub("", value.strip())


def cap_age(value: str) -> str:
    """An AS value, with ages over 89 years written as 090Y (safe harbour)."""
    text = value.strip()
    if len(text) == 4 and text[:3].isdigit() and text[3] == "Y" and int(text[:3]) > 89:
        return "090Y"
    return text


def age_string(birth: str, on: str) -> str | None:
    """The AS value for a child born ``birth`` seen ``on`` (both YYYYMMDD):
    days under a month, months under two years, else years."""
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
        seen = date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    except (ValueError, IndexError):
        return None
    days = (seen - born).days
    if days < 0:
        return None
    months = (seen.year - born.year) * 12 + seen.month - born.month - (seen.day < born.day)
    if months < 1:
        return f"{days:03d}D"
    if months < 24:
        return f"{months:03d}M"
    return f"{min(months // 12, 999):03d}Y"
