"""Research export jobs, kept in the index so a restart can pick them up.

The process running a job holds a lease on its row (`storage.leases`) and
renews it with the progress; a job whose process died is taken over by
another once the lease lapses. A cancel is a flag on the row, so it reaches
the job from whichever process the request landed on.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    false,
    select,
    update,
)
from sqlalchemy.engine import Engine

from storage.leases import RELEASED, claim, lease_columns, renew
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
    Column("done", Integer, nullable=False, server_default="0"),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    *lease_columns(),
)
LEASE = timedelta(minutes=2)
RUNNING = "running"


class ExportJobs:
    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock

    def add(
        self, job_id: str, owner: str, cohort: dict[str, Any], linkable: bool, runner: str
    ) -> dict[str, Any]:
        """A new job, claimed by ``runner`` (the process that starts it)."""
        now = datetime.now(UTC)
        with self._lock, self.engine.begin() as conn:
            row = conn.execute(
                exports.insert()
                .values(
                    id=job_id,
                    owner=owner,
                    cohort=json.dumps(cohort),
                    linkable=linkable,
                    state=RUNNING,
                    message="",
                    created_at=now,
                    claimed_by=runner,
                    claimed_until=now + LEASE,
                )
                .returning(*exports.c)
            ).one()
        return _decoded(dict(row._mapping))

    def claim_abandoned(self, runner: str) -> list[dict[str, Any]]:
        """Running jobs whose process stopped renewing: now ``runner``'s."""
        with self._lock, self.engine.begin() as conn:
            rows = claim(
                conn, exports, exports.c.state == RUNNING, owner=runner, lease=LEASE, limit=10
            )
        return [_decoded(row) for row in rows]

    def progress(self, job_id: str, runner: str, done: int, total: int) -> bool:
        """Record progress and renew the lease; False if the job is to stop
        (cancelled, or taken over after this process lost its lease)."""
        with self._lock, self.engine.begin() as conn:
            row = renew(conn, exports, job_id, owner=runner, lease=LEASE, done=done, total=total)
        return row is not None and not row["cancel_requested"]

    def request_cancel(self, job_id: str) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                update(exports)
                .where((exports.c.id == job_id) & (exports.c.state == RUNNING))
                .values(cancel_requested=True)
            )

    def finish(self, job_id: str, runner: str, state: str, message: str = "") -> None:
        """The outcome, unless another process has taken the job over meanwhile."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                update(exports)
                .where((exports.c.id == job_id) & (exports.c.claimed_by == runner))
                .values(state=state, message=message, **RELEASED)
            )

    def expire(self, job_id: str) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(update(exports).where(exports.c.id == job_id).values(state="expired"))

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(exports).where(exports.c.id == job_id)).first()
        return None if row is None else _decoded(dict(row._mapping))

    def all(self, owner: str | None = None) -> list[dict[str, Any]]:
        query = select(exports).order_by(exports.c.created_at.desc())
        if owner is not None:
            query = query.where(exports.c.owner == owner)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_decoded(dict(r._mapping)) for r in rows]


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "cohort": json.loads(row["cohort"])}
