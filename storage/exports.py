"""Research export jobs, kept in the index so a restart can pick them up."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, String, Table, Text, select, update
from sqlalchemy.engine import Engine

from storage.schema import metadata

exports = Table(
    "exports",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("cohort", Text, nullable=False),  # JSON of the filters
    Column("linkable", Boolean, nullable=False),
    Column("state", String(16), nullable=False),  # running, done, failed, cancelled
    Column("message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class ExportJobs:
    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock

    def add(self, job_id: str, owner: str, cohort: dict[str, Any], linkable: bool) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                exports.insert().values(
                    id=job_id,
                    owner=owner,
                    cohort=json.dumps(cohort),
                    linkable=linkable,
                    state="running",
                    message="",
                    created_at=datetime.now(UTC),
                )
            )

    def finish(self, job_id: str, state: str, message: str = "") -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                update(exports).where(exports.c.id == job_id).values(state=state, message=message)
            )

    def all(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(exports).order_by(exports.c.created_at.desc())).all()
        return [{**dict(r._mapping), "cohort": json.loads(r.cohort)} for r in rows]
