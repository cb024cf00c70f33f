"""Replacement values by VR: dummies (action D), shifted dates (C), cleaned text."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from pydicom.valuerep import MAX_VALUE_LEN

from dicomnode.deid.plausible import LIFESPAN_YEARS, real_date

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
# Strict DICOM forms (PS3.5 6.2): YYYYMMDD; YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX].
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")
_STRICT_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")
# What devices and hand-typed fields write instead, read only where unambiguous:
# year first with one separator (2024.03.15, the ACR-NEMA form; 2024-03-15;
# 2024/03/15), day first with dots (15.03.2024, as the partners' countries
# write it), and day or month first with a slash or dash only when the
# numbers say which is which (a part over 12, or both the same).
_YEAR_FIRST = re.compile(r"(\d{4})([-./])(\d{1,2})\2(\d{1,2})")
_DAY_FIRST = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
_YEAR_LAST = re.compile(r"(\d{1,2})([/-])(\d{1,2})\2(\d{4})")
# ISO 8601 date-time: a date as above, "T" or a space, hh[:mm[:ss[.f]]], a zone.
_ISO_DT = re.compile(r"([\d./-]+)(?:(?:T|\s+)(.+))?")
_ISO_TIME = re.compile(
    r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d{1,6})\d*)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?"
)


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


def parse_date(value: str) -> date:
    """A date written as DICOM does (YYYYMMDD) or in a common form whose
    reading is unambiguous; raises ValueError otherwise (never a guess
    whether 03/04 is March or April)."""
    text = value.strip()
    if len(text) == 8 and text.isdigit():
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    if match := _YEAR_FIRST.fullmatch(text):
        return date(int(match[1]), int(match[3]), int(match[4]))
    if match := _DAY_FIRST.fullmatch(text):
        return date(int(match[3]), int(match[2]), int(match[1]))
    if match := _YEAR_LAST.fullmatch(text):
        first, second, year = int(match[1]), int(match[3]), int(match[4])
        if first > 12 or first == second:
            return date(year, second, first)  # 15/03/2024: day first
        if second > 12:
            return date(year, first, second)  # 03/15/2024: month first
    raise ValueError("not a date in a form read without guessing")


def shift_date(value: str, days: int) -> str:
    """A DA value moved by ``days``, written as ``YYYYMMDD`` whatever form it
    came in (see `parse_date`); raises ValueError if not a date."""
    return (parse_date(value) + timedelta(days=days)).strftime("%Y%m%d")


def _zone(text: str | None) -> str:
    """An ISO zone (Z, +06, +06:00, -0330) as DICOM's &ZZXX."""
    if not text:
        return ""
    if text == "Z":
        return "+0000"
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 14 or minutes > 59:
        raise ValueError("not an offset from UTC")
    return f"{text[0]}{hours:02d}{minutes:02d}"


def _iso_datetime(text: str, days: int) -> str:
    """An ISO 8601 (or separated-date) date-time as a DICOM DT with its date
    moved, at the precision it was written with."""
    match = _ISO_DT.fullmatch(text)
    if not match:
        raise ValueError("not a DT value")
    moved = shift_date(match[1], days)
    if match[2] is None:
        return moved
    parts = _ISO_TIME.fullmatch(match[2].strip())
    if not parts:
        raise ValueError("not a time")
    hours, minutes, seconds, fraction, zone = parts.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        raise ValueError("not a time")
    clock = hours + (minutes or "") + (seconds or "") + (f".{fraction}" if fraction else "")
    return moved + clock + _zone(zone)


def shift_datetime(value: str, days: int) -> str:
    """A DT value with its date part moved; time and offset are kept.

    A DT of year precision only (``YYYY``) or year-month is shifted as the
    first day of that period and written back at the same precision. A value
    in ISO 8601 form (``2024-03-15T10:15:00+06:00``) or with a separated
    date is written back in DICOM's form (``20240315101500+0600``) at the
    precision it had, rather than cut down to its year.
    """
    text = value.strip()
    if not _STRICT_DT.fullmatch(text):
        # Not DICOM's form: ISO 8601 or nothing. Text after a date
        # ("20190314 ZHANIBEKOVA") is never carried along.
        return _iso_datetime(text, days)
    match = _DT.match(text)
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


def lived_age(value: str) -> str:
    """An AS value, or "" for one no one has lived to (124Y: computed by a
    device from a 1900-01-01 placeholder, not a patient's age)."""
    text = value.strip()
    if len(text) == 4 and text[:3].isdigit() and text[3] == "Y" and int(text[:3]) > LIFESPAN_YEARS:
        return ""
    return text


def age_string(birth: str, on: str) -> str | None:
    """The AS value for a child born ``birth`` seen ``on`` (both YYYYMMDD):
    days under a month, months under two years, else years. None when either
    date is a placeholder (before 1901, 00000000) or birth follows the study:
    an age derived from them would be stored as the child's."""
    if not (len(birth) == len(on) == 8 and birth.isdigit() and on.isdigit()):
        return None
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
        seen = date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    except ValueError:
        return None
    days = (seen - born).days
    if days < 0 or not (real_date(born) and real_date(seen)):
        return None
    months = (seen.year - born.year) * 12 + seen.month - born.month - (seen.day < born.day)
    if months < 1:
        return f"{days:03d}D"
    if months < 24:
        return f"{months:03d}M"
    return f"{min(months // 12, 999):03d}Y"


# PS3.5 6.2 TM: HH[MM[SS[.F{1,6}]]]; and the ACR-NEMA HH:MM[:SS[.F]] that
# pydicom still reads (a device's, or a hand-typed, value).
_TIME = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_COLON_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")


def normal_time(value: str) -> str:
    """A TM value in DICOM's form at the precision it was written with;
    raises ValueError for anything else (text, a name, an ID: a sender can
    write anything there, and a time is kept by the profile)."""
    text = value.strip(" ")
    match = _TIME.fullmatch(text) or _COLON_TIME.fullmatch(text)
    if not match:
        raise ValueError("not a time")
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        raise ValueError("not a time")
    return hours + (minutes or "") + (seconds or "") + (f".{fraction}" if fraction else "")


def well_formed(vr: str, value: str, days: int = 0) -> str:
    """A DA, DT or TM value in DICOM's form (read as `parse_date`,
    `shift_datetime` and `normal_time` read them), a date moved by ``days``,
    or the VR's dummy when it is not one: whatever else a sender wrote there
    (a name, an ID, a birth date, control characters) must not be kept with
    the date or time."""
    if not value.strip(" "):
        return ""
    try:
        return _NORMAL[vr](value, days)
    except ValueError:
        return dummy(vr)


_NORMAL = {
    "DA": shift_date,
    "DT": shift_datetime,
    "TM": lambda value, _days: normal_time(value),
}
STRICT_VRS = frozenset(_NORMAL)
