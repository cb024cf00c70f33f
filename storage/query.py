"""Hierarchical queries over the index: one row per matching record of a level.

Each level's table is joined to its parents, so a study matches once however
many instances it holds (hierarchical de-duplication comes from the shape of
the query, not from post-filtering).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Select,
    exists,
    false,
    func,
    select,
)

from storage.keys import ATTRIBUTES, COMPUTED, Attribute, Level
from storage.matching import QueryError, check_list, condition
from storage.schema import PARENT_FK, TABLES, instances, patients, series, studies

__all__ = ["Query", "QueryError", "run_query"]


@dataclass
class Query:
    """A query at ``level``: ``keys`` maps keyword to match value ('' = return only)."""

    level: Level
    keys: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    offset: int = 0
    # Order by this stored attribute (else by arrival), newest/highest first if descending.
    sort: str | None = None
    descending: bool = False
    # Whose patients the asker may see: hospitals (IssuerOfPatientID as the
    # index keeps it), None for all. Applied to every level through the
    # patient every record is joined to, so no caller can forget a level.
    issuers: frozenset[str] | None = None


def _levels_up_to(level: Level) -> list[Level]:
    return [lv for lv in Level if lv.depth <= level.depth]


def _joined(level: Level, top: Level = Level.PATIENT) -> FromClause:
    """FROM clause: the level's table joined to each parent up to ``top``."""
    source: FromClause = TABLES[level]
    for child in reversed([lv for lv in Level if top.depth < lv.depth <= level.depth]):
        parent = list(Level)[child.depth - 1]
        source = source.join(
            TABLES[parent], TABLES[child].c[PARENT_FK[child]] == TABLES[parent].c.pk
        )
    return source


def _count(level: Level, below: Level) -> ColumnElement:
    """Correlated count of records of level ``below`` under the current record."""
    chain = [lv for lv in Level if level.depth < lv.depth <= below.depth]
    stmt = select(func.count()).select_from(_joined(below, top=chain[0]))
    stmt = stmt.where(TABLES[chain[0]].c[PARENT_FK[chain[0]]] == TABLES[level].c.pk)
    return stmt.correlate(TABLES[level]).scalar_subquery()


_COUNTS: dict[str, tuple[Level, Level]] = {
    "NumberOfPatientRelatedStudies": (Level.PATIENT, Level.STUDY),
    "NumberOfPatientRelatedSeries": (Level.PATIENT, Level.SERIES),
    "NumberOfPatientRelatedInstances": (Level.PATIENT, Level.IMAGE),
    "NumberOfStudyRelatedSeries": (Level.STUDY, Level.SERIES),
    "NumberOfStudyRelatedInstances": (Level.STUDY, Level.IMAGE),
    "NumberOfSeriesRelatedInstances": (Level.SERIES, Level.IMAGE),
}


def _study_contains(attribute: Attribute, value: str) -> ColumnElement | None:
    """Study-level matching on ModalitiesInStudy / SOPClassesInStudy."""
    table = series if attribute.level is Level.SERIES else instances
    cond = condition(table, attribute, value)
    if cond is None:
        return None
    inner = select(series.c.pk).where(series.c.study_pk == studies.c.pk)
    if table is instances:
        inner = select(instances.c.pk).join(series, instances.c.series_pk == series.c.pk)
        inner = inner.where(series.c.study_pk == studies.c.pk)
    return exists(inner.where(cond).correlate(studies))


_IN_STUDY = {"ModalitiesInStudy": "Modality", "SOPClassesInStudy": "SOPClassUID"}


def _study_instances(column: ColumnElement) -> Select:
    return (
        select(column)
        .select_from(instances.join(series, instances.c.series_pk == series.c.pk))
        .where(series.c.study_pk == studies.c.pk)
        .correlate(studies)
    )


# Not DICOM keys: what the web study list shows beside them.
STUDY_EXTRAS = {
    "LastReceived": lambda: _study_instances(func.max(instances.c.received_at)).scalar_subquery(),
    "FirstInstanceUID": lambda: (
        _study_instances(instances.c.sopinstanceuid)
        .order_by(instances.c.pk)
        .limit(1)
        .scalar_subquery()
    ),
}


def _visible(issuers: frozenset[str]) -> ColumnElement:
    """Patients of these hospitals only; of none, nothing (not everything)."""
    if not issuers:
        return false()
    return patients.c.issuerofpatientid.in_(sorted(issuers))


def build(query: Query) -> Select:
    level = query.level
    table = TABLES[level]
    levels = _levels_up_to(level)
    columns: list[Any] = [table.c.pk.label("_pk")]
    conditions: list[ColumnElement] = []
    for keyword, value in query.keys.items():
        attribute = ATTRIBUTES.get(keyword)
        if attribute is not None and attribute.level in levels:
            columns.append(TABLES[attribute.level].c[attribute.column].label(keyword))
            cond = condition(TABLES[attribute.level], attribute, value or "")
        elif keyword in _IN_STUDY and level is Level.STUDY:
            check_list(keyword, value or "")
            cond = _study_contains(ATTRIBUTES[_IN_STUDY[keyword]], value or "")
        elif keyword in _COUNTS and COMPUTED[keyword] is level:
            columns.append(_count(*_COUNTS[keyword]).label(keyword))
            cond = None
        elif keyword in STUDY_EXTRAS and level is Level.STUDY:
            columns.append(STUDY_EXTRAS[keyword]().label(keyword))
            cond = None
        else:
            continue  # keys of lower levels or unknown ones: returned empty
        if cond is not None:
            conditions.append(cond)
    if query.issuers is not None:
        conditions.append(_visible(query.issuers))
    order = [table.c.pk.desc() if query.descending else table.c.pk]
    sort = ATTRIBUTES.get(query.sort or "")
    if sort is not None and sort.level.depth <= level.depth:
        column = TABLES[sort.level].c[sort.column]
        order.insert(0, column.desc() if query.descending else column)
    stmt = select(*columns).select_from(_joined(level)).where(*conditions).order_by(*order)
    if query.limit:
        stmt = stmt.limit(query.limit)
    if query.offset:
        stmt = stmt.offset(query.offset)
    return stmt


def _in_study_values(conn: Connection, keyword: str, study_pks: list[int]) -> dict[int, list]:
    column = series.c.modality if keyword == "ModalitiesInStudy" else instances.c.sopclassuid
    stmt = select(series.c.study_pk, column).distinct().where(series.c.study_pk.in_(study_pks))
    if keyword == "SOPClassesInStudy":
        stmt = stmt.select_from(instances.join(series, instances.c.series_pk == series.c.pk))
    found: dict[int, list] = defaultdict(list)
    for study_pk, value in conn.execute(stmt.order_by(column)):
        if value:
            found[study_pk].append(value)
    return found


def run_query(conn: Connection, query: Query, batch: int = 500) -> Iterator[dict[str, Any]]:
    """Rows as ``{keyword: value}`` for the requested keys, in index order."""
    stmt = build(query)
    in_study = [k for k in _IN_STUDY if k in query.keys and query.level is Level.STUDY]
    result = conn.execute(stmt)
    while rows := result.fetchmany(batch):
        extra = {k: _in_study_values(conn, k, [r._pk for r in rows]) for k in in_study}
        for row in rows:
            values = dict(row._mapping)
            pk = values.pop("_pk")
            for keyword in in_study:
                values[keyword] = extra[keyword].get(pk, [])
            yield values
