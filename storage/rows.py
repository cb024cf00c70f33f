"""Race-free row creation for several node processes on one index.

Two processes receiving the same study at once both try to create its
patient, study and series: ``INSERT … ON CONFLICT DO NOTHING`` (PostgreSQL
and SQLite both have it) lets the second wait for the first and then find
its row, instead of failing on the unique constraint.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from storage.keys import UNIQUE_KEY, Level
from storage.schema import PARENT_FK, TABLES, patients

T = TypeVar("T")
READ_ATTEMPTS = 3


def reading(engine: Engine, work: Callable[[Connection], T], lock: Any = None) -> T:
    """``work`` on a connection of its own (in a transaction, under
    ``lock``, when a lock is given: a write), run again when the connection
    was lost (a database restart: the pool then drops its old connections),
    as stores are: a step on the ingest's path must not fail a store."""
    for attempt in range(READ_ATTEMPTS):
        try:
            if lock is None:
                with engine.connect() as conn:
                    return work(conn)
            with lock, engine.begin() as conn:
                return work(conn)
        except OperationalError:
            if attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def insert_for(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def serialise(conn: Connection, key: str) -> None:
    """Serialise transactions on ``key`` (a SOP Instance UID, a study's plan)
    across processes until this transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: its one
    writer's lock, taken now (``BEGIN IMMEDIATE``): pysqlite begins a
    transaction only at the first write, so a check made before it ("is this
    instance stored?") could be stale by the time another process writes.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
    elif conn.dialect.name == "sqlite":
        driver = conn.connection.driver_connection
        if driver is not None and not driver.in_transaction:  # a write would hold it already
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def upsert_patient(conn: Connection, values: dict[str, Any]) -> int:
    """The patient's pk; its demographics follow the latest instance that has them."""
    changes = {k: v for k, v in values.items() if v is not None}
    statement = insert_for(conn, patients).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["issuerofpatientid", "patient_key"], set_=changes
    ).returning(patients.c.pk)
    return conn.execute(statement).scalar_one()


def get_or_create(conn: Connection, level: Level, values: dict[str, Any], parent: int) -> int:
    """The pk of a study or series, inserting it unless it exists."""
    table = TABLES[level]
    uid_column = UNIQUE_KEY[level].lower()
    uid = table.c[uid_column] == values[uid_column]
    pk = conn.execute(select(table.c.pk).where(uid)).scalar_one_or_none()
    if pk is not None:
        return pk
    row = {**values, PARENT_FK[level]: parent}
    conn.execute(insert_for(conn, table).values(**row).on_conflict_do_nothing())
    return conn.execute(select(table.c.pk).where(uid)).scalar_one()


def utc(moment: datetime) -> datetime:
    """A time read back from the index: SQLite keeps no zone, and the index
    stores UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
