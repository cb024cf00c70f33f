"""DICOM attribute matching (PS3.4 C.2.2.2) translated to SQL conditions.

The one translation shared by C-FIND and QIDO-RS. Supported: universal
(empty or ``*``), single value, wildcard ``*``/``?``, list of UIDs (and of
values for coded strings such as ModalitiesInStudy), range for DA/TM/DT with
open ends, and case-insensitive person names in any script.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table, and_, or_

from storage.keys import Attribute
from storage.schema import INTEGER_VRS, folded_column
from storage.values import ValueFormatError, normalise_date, normalise_time

WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "DS"}


class QueryError(ValueError):
    """A query key cannot be matched as asked (bad range, bad number, ...)."""


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _text_condition(column, value: str) -> ColumnElement:
    if _has_wildcard(value):
        return column.like(_like_pattern(value), escape="\\")
    return column == value


def _range(column, low: str | None, high: str | None) -> ColumnElement:
    parts = []
    if low:
        parts.append(column >= low)
    if high:
        parts.append(column <= high)
    return and_(*parts)


def _date_condition(column, value: str) -> ColumnElement:
    low, sep, high = value.partition("-")
    if not sep:
        return column == normalise_date(low)
    if not low and not high:
        raise QueryError("a date range needs at least one end")
    return _range(column, low and normalise_date(low), high and normalise_date(high))


def _time_condition(column, value: str) -> ColumnElement:
    low, sep, high = value.partition("-")
    if not sep:
        high = low
    if not low and not high:
        raise QueryError("a time range needs at least one end")
    return _range(column, low and normalise_time(low), high and normalise_time(high, upper=True))


def condition(table: Table, attribute: Attribute, value: str) -> ColumnElement | None:
    """The SQL condition for one query key, or None for universal matching."""
    value = value.strip()
    if value in ("", "*"):
        return None
    column = table.c[attribute.column]
    vr = attribute.vr
    try:
        if vr == "UI":
            uids = [uid.strip() for uid in value.split("\\") if uid.strip()]
            return column.in_(uids) if len(uids) > 1 else column == uids[0]
        if vr in INTEGER_VRS:
            return column == int(value)
        if vr == "DA":
            return _date_condition(column, value)
        if vr == "TM":
            return _time_condition(column, value)
        if vr == "PN":
            folded = table.c[folded_column(attribute)]
            return _text_condition(folded, value.casefold())
        values = value.split("\\")
        if vr not in WILDCARD_VRS and any(_has_wildcard(v) for v in values):
            return or_(*(column == v for v in values))
        if len(values) > 1:
            return or_(*(_text_condition(column, v) for v in values))
        return _text_condition(column, value)
    except (ValueFormatError, ValueError) as exc:
        raise QueryError(f"{attribute.keyword}: {exc}") from None
