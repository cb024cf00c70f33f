"""DICOM attribute matching (PS3.4 C.2.2.2) translated to SQL conditions.

The one translation shared by C-FIND and QIDO-RS. Supported: universal
(empty or ``*``), single value, wildcard ``*``/``?``, list of UIDs (and of
values for coded strings such as ModalitiesInStudy), range for DA/TM/DT with
open ends, and case-insensitive person names in any script. A list holds
at most MAX_LIST_VALUES values.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table, and_, or_, true

from storage.keys import Attribute
from storage.schema import INTEGER_VRS, folded_column
from storage.values import ValueFormatError, normalise_date, normalise_time

# The most values one key's list may hold (``\\``-separated, QIDO commas and
# repeated parameters included), as many as a retrieve's UID list
# (dicomnode.dimse.retrieve.MAX_UIDS). Exact values go to SQL as one IN list,
# wildcard ones as OR chains of at most _CHAIN terms each: SQLite's
# parser nests an expression at most 1000 deep (SQLITE_MAX_EXPR_DEPTH), and
# binds 32766 parameters in its default build, PostgreSQL 65535 -- the 26
# list-capable keys all at the bound stay under both. A longer list is a
# QueryError (QIDO 400, C-FIND A900), never an SQL error.
MAX_LIST_VALUES = 1000
_CHAIN = 100
WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "DS"}


class QueryError(ValueError):
    """A query key cannot be matched as asked (bad range, bad number, ...)."""


def check_list(keyword: str, value: str) -> None:
    """QueryError if ``value`` lists more than MAX_LIST_VALUES values (the
    message names the key, never the values: a PatientID is one)."""
    if value.count("\\") >= MAX_LIST_VALUES:
        raise QueryError(f"{keyword}: more than {MAX_LIST_VALUES} values in a list")


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _text_condition(column, value: str) -> ColumnElement:
    if _has_wildcard(value):
        return column.like(_like_pattern(value), escape="\\")
    return column == value


def _list_condition(column, values: list[str], wildcards: bool) -> ColumnElement:
    """A list as one IN of its exact values and short parenthesised OR
    chains of its wildcard ones (see MAX_LIST_VALUES for why)."""
    patterns = [v for v in values if wildcards and _has_wildcard(v)]
    exact = [v for v in values if not (wildcards and _has_wildcard(v))]
    parts: list[ColumnElement] = [column.in_(exact)] if exact else []
    for start in range(0, len(patterns), _CHAIN):
        chain = [_text_condition(column, v) for v in patterns[start : start + _CHAIN]]
        # "(... OR ...) IS true": a bare group would be flattened into one chain.
        parts.append(or_(*chain).is_(true()))
    return or_(*parts)


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
    check_list(attribute.keyword, value)
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
        if len(values) > 1:
            return _list_condition(column, values, vr in WILDCARD_VRS)
        return _text_condition(column, value)
    except (ValueFormatError, ValueError) as exc:
        raise QueryError(f"{attribute.keyword}: {exc}") from None
