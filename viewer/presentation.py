"""How patient values read on screen: placeholders and implausible values as
unknown, ages in years and months, numbers, dates and times in the user's
language and the node's time zone.

Devices write placeholders where they know nothing (birth date 1900-01-01,
weight 0); shown as data they read as a 122-year-old or a 0 kg child, and a
device could be sized from them. Here such a value is unknown (None), and
the templates say so. A centre for congenital heart disease also sees adults,
so ages up to 89 years are plausible; 90 and over (the safe-harbour cap the
de-identification writes for them) are not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from babel.dates import format_date, format_datetime, get_timezone_gmt

from dicomnode.deid.plausible import FIRST_YEAR, HEIGHT_M, MAX_AGE_YEARS, WEIGHT_KG
from storage.rows import utc
from viewer.i18n import gettext as _
from viewer.i18n import language, number
from viewer.planning.body import body_size

DAYS_PER_MONTH = 365.25 / 12
_AS = re.compile(r"(\d{3})([DWMY])")
SEXES = {"M": "male", "F": "female", "O": "other sex"}
# Audit event codes (storage.audit.EVENTS) as read by an administrator.
AUDIT_EVENTS = {
    "node-start": "node started",
    "config-change": "configuration changed",
    "archive-check": "archive checked",
    "association": "DICOM association",
    "association-rejected": "association rejected",
    "login": "log in",
    "logout": "log out",
    "access-denied": "access denied",
    "study-view": "study viewed",
    "plan-save": "plan saved",
    "plan-sign": "plan signed",
    "case-status": "referral case status",
    "case-note": "note on a referral case",
    "case-report-sent": "consultation report sent",
    "export": "export",
    "reidentify": "re-identification",
    "quarantine-hold": "held in quarantine",
    "quarantine-release": "released from quarantine",
    "quarantine-show": "quarantined instance shown",
    "quarantine-refuse": "quarantined instance refused",
    "uid-conflict": "UID conflict between patients",
    "stow": "Instances stored over DICOMweb",
    "user-change": "user account changed",
    "audit-read": "audit trail read",
}
OUTCOMES = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}


def _get(values: Any, keyword: str) -> str:
    """A value of a Dataset or of an index row, as stripped text."""
    value = values.get(keyword) if isinstance(values, Mapping) or hasattr(values, "get") else None
    return "" if value is None else str(value).strip()


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# --- numbers, dates, times ----------------------------------------------------


def parse_da(value: Any) -> date | None:
    """A DICOM DA (YYYYMMDD, or the old YYYY.MM.DD) as a date; None for
    placeholders (before 1901) and what is not a date."""
    text = str(value or "").strip().replace(".", "").replace("-", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return day if day.year >= FIRST_YEAR else None


def dicom_date(value: Any) -> str:
    day = parse_da(value)
    return format_date(day, "medium", locale=language()) if day else ""


def zone_name() -> str:
    """The node's offset from UTC, as shown next to times (UTC+06:00)."""
    now = datetime.now().astimezone()
    offset = get_timezone_gmt(now, "long", locale="en")
    return "UTC" if offset in ("GMT", "GMT+00:00") else offset.replace("GMT", "UTC")


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value.strip():
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return utc(when)


def timestamp(value: Any, form: str = "short") -> str:
    """A stored instant (datetime, ISO text; naive means UTC) in the node's
    time zone and the user's language, to the second at most."""
    when = _instant(value)
    if when is None:
        return ""
    local = when.astimezone()  # the node's zone at that instant (summer time too)
    return format_datetime(local.replace(microsecond=0), form, locale=language())


# --- patient values -----------------------------------------------------------


@dataclass(frozen=True)
class Age:
    """An age to the precision known: days, weeks, months, or years only."""

    days: int | None = None
    weeks: int | None = None
    months: int | None = None  # total months
    years: int | None = None  # years only (an AS in years)

    def plausible(self) -> bool:
        years = self.years
        if years is None and self.months is not None:
            years = self.months // 12
        return years is None or years <= MAX_AGE_YEARS


def _months_between(born: date, seen: date) -> int:
    return (seen.year - born.year) * 12 + seen.month - born.month - (seen.day < born.day)


def age_from_dates(birth: Any, on: Any) -> Age | None:
    """The age at a study from the birth and study dates (the node shifts
    both by the same days, so their difference is true)."""
    born, seen = parse_da(birth), parse_da(on)
    if born is None or seen is None or born > seen or born > date.today():
        return None
    months = _months_between(born, seen)
    return Age(days=(seen - born).days) if months < 1 else Age(months=months)


def age_from_string(value: Any) -> Age | None:
    """PS3.5 AS: nnnD, nnnW, nnnM or nnnY."""
    match = _AS.fullmatch(str(value or "").strip())
    if not match:
        return None
    count, unit = int(match[1]), match[2]
    if unit == "Y":
        return Age(years=count)
    if unit == "M":
        return Age(months=count)
    if unit == "W":  # infants are counted in weeks for their first quarter
        return Age(weeks=count) if count < 13 else Age(months=int(count * 7 / DAYS_PER_MONTH))
    return Age(days=count) if count < 31 else Age(months=int(count / DAYS_PER_MONTH))


def age(values: Any) -> Age | None:
    """The age at the study: from the dates when both are there and
    plausible (months known), else the Patient's Age attribute."""
    for found in (
        age_from_dates(_get(values, "PatientBirthDate"), _get(values, "StudyDate")),
        age_from_string(_get(values, "PatientAge")),
    ):
        if found is not None and found.plausible():
            return found
    return None


def format_age(value: Age) -> str:
    if value.years is not None:
        return _("{years} y", years=value.years) if value.years else _("under 1 y")
    if value.weeks is not None:
        return _("{weeks} wk", weeks=value.weeks)
    if value.days is not None:
        return _("{days} d", days=value.days)
    years, months = divmod(value.months or 0, 12)
    if not years:
        return _("{months} mo", months=months)
    if not months:
        return _("{years} y", years=years)
    return _("{years} y {months} mo", years=years, months=months)


def age_text(values: Any) -> str | None:
    found = age(values)
    return format_age(found) if found else None


def weight_kg(values: Any) -> float | None:
    weight = _float(_get(values, "PatientWeight"))
    return weight if weight is not None and WEIGHT_KG[0] <= weight <= WEIGHT_KG[1] else None


def height_m(values: Any) -> float | None:
    height = _float(_get(values, "PatientSize"))
    return height if height is not None and HEIGHT_M[0] <= height <= HEIGHT_M[1] else None


def sex_text(values: Any) -> str | None:
    english = SEXES.get(_get(values, "PatientSex").upper())
    return _(english) if english else None


@dataclass(frozen=True)
class PatientView:
    """Display-ready patient values; None where unknown."""

    sex: str | None
    age: str | None
    weight: str | None  # with its unit
    height: str | None
    bsa: str | None = None  # "BSA 0.62 m² (Haycock)", from weight and height only

    @property
    def line(self) -> str:
        """Sex, age and weight on one line, each unknown said so."""
        return " · ".join(
            (
                self.sex or _("sex unknown"),
                self.age or _("age unknown"),
                self.weight or _("weight unknown"),
            )
        )


def patient(values: Any) -> PatientView:
    weight, height = weight_kg(values), height_m(values)
    size = body_size(weight, height)
    return PatientView(
        sex=sex_text(values),
        age=age_text(values),
        weight=_("{kg} kg", kg=number(weight)) if weight is not None else None,
        height=_("{cm} cm", cm=number(height * 100, 0)) if height is not None else None,
        bsa=_("BSA {m2} m² (Haycock)", m2=number(size.bsa_m2, 2)) if size else None,
    )


def patient_fields(ds: Any) -> dict[str, Any]:
    """The patient values the viewport overlay shows, ready to read (sex and
    age "?" when unknown, weight a number without unit or ""), with the raw
    values under their own keys."""
    view, weight = patient(ds), weight_kg(ds)
    return {
        "pseudonym": _get(ds, "PatientID"),
        "sex": view.sex or "?",
        "age": view.age or "?",
        "weight": number(weight) if weight is not None else "",
        "patient": view.line,
        "sex_code": _get(ds, "PatientSex"),
        "age_raw": _get(ds, "PatientAge"),
        "weight_kg": weight,
    }


# --- audit trail ------------------------------------------------------------------


def audit_event(code: str) -> str:
    english = AUDIT_EVENTS.get(code)
    return _(english) if english else code


def outcome(code: Any) -> str:
    english = OUTCOMES.get(int(code)) if str(code).isdigit() else None
    return _(english) if english else str(code)


def install(app: Any) -> None:
    app.jinja_env.globals.update(
        number=number,
        dicom_date=dicom_date,
        timestamp=timestamp,
        zone_name=zone_name,
        patient=patient,
        sex_text=sex_text,
        age_text=age_text,
        weight_kg=weight_kg,
        audit_event=audit_event,
        outcome=outcome,
    )
