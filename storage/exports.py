"""Research export jobs, kept in the index so that none is lost.

The web adds a job as a row (``queued``); a node process's runner
(`dicomnode.jobs.exports`) claims it, holding a lease on the row
(`storage.leases`) that it renews while the job runs, and records the
outcome. A job whose process died is claimed again by another (or by the
restart) once the lease lapses. A cancel is a flag on the row, so it reaches
the job from whichever process the request landed on; a job still queued is
cancelled at once.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    case,
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
    Column(
        "state", String(16), nullable=False
    ),  # queued, running, done, failed, cancelled, expired
    Column("message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    *lease_columns(),
)
LEASE = timedelta(minutes=2)
QUEUED, RUNNING, CANCELLED = "queued", "running", "cancelled"
UNFINISHED = (QUEUED, RUNNING)
CANCEL_MESSAGE = "export cancelled; nothing written"


class Verdict(Enum):
    """What a renewal tells the process running a job."""

    GO = "go"
    CANCEL = "cancel"  # someone asked to stop it
    LOST = "lost"  # another process holds it now (or it is no longer running)


class ExportJobs:
    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock

    def add(
        self, job_id: str, owner: str, cohort: dict[str, Any], linkable: bool
    ) -> dict[str, Any]:
        """A new job, queued for whichever runner claims it first."""
        with self._lock, self.engine.begin() as conn:
            row = conn.execute(
                exports.insert()
                .values(
                    id=job_id,
                    owner=owner,
                    cohort=json.dumps(cohort),
                    linkable=linkable,
                    state=QUEUED,
                    message="",
                    created_at=datetime.now(UTC),
                )
                .returning(*exports.c)
            ).one()
        return _decoded(dict(row._mapping))

    def claim(self, runner: str, limit: int, lease: timedelta = LEASE) -> list[dict[str, Any]]:
        """Up to ``limit`` jobs, oldest first, now ``runner``'s: queued ones and
        running ones whose process stopped renewing. Each runs from the start."""
        ready = exports.c.state.in_(UNFINISHED)
        with self.engine.connect() as conn:  # most polls find nothing: no write then
            if conn.execute(select(exports.c.id).where(ready).limit(1)).first() is None:
                return []
        with self._lock, self.engine.begin() as conn:
            rows = claim(
                conn,
                exports,
                ready,
                owner=runner,
                lease=lease,
                limit=limit,
                order=exports.c.created_at,
                state=RUNNING,
                done=0,
                total=0,
            )
        return [_decoded(row) for row in rows]

    def renew(
        self,
        job_id: str,
        runner: str,
        lease: timedelta = LEASE,
        done: int | None = None,
        total: int | None = None,
    ) -> Verdict:
        """Extend ``runner``'s lease (recording progress, if given): whether to go on."""
        progress = {} if done is None or total is None else {"done": done, "total": total}
        with self._lock, self.engine.begin() as conn:
            row = renew(conn, exports, job_id, owner=runner, lease=lease, **progress)
        if row is None or row["state"] != RUNNING:
            return Verdict.LOST
        return Verdict.CANCEL if row["cancel_requested"] else Verdict.GO

    def progress(self, job_id: str, runner: str, done: int, total: int) -> bool:
        """Record progress and renew the lease; False if the job is to stop
        (cancelled, or taken over after this process lost its lease)."""
        return self.renew(job_id, runner, done=done, total=total) is Verdict.GO

    def request_cancel(self, job_id: str) -> None:
        """A queued job is cancelled now; a running one is flagged for its runner."""
        with self._lock, self.engine.begin() as conn:
            # One statement: a runner claiming the row at the same moment
            # either sees it cancelled or has made it running (then flagged).
            conn.execute(
                update(exports)
                .where((exports.c.id == job_id) & exports.c.state.in_(UNFINISHED))
                .values(
                    cancel_requested=True,
                    state=case((exports.c.state == QUEUED, CANCELLED), else_=exports.c.state),
                    message=case(
                        (exports.c.state == QUEUED, CANCEL_MESSAGE), else_=exports.c.message
                    ),
                )
            )

    def finish(
        self,
        job_id: str,
        runner: str,
        state: str,
        message: str = "",
        done: int | None = None,
        total: int | None = None,
    ) -> None:
        """The outcome (and the last progress, if given), unless another
        process has taken the job over meanwhile."""
        progress = {} if done is None or total is None else {"done": done, "total": total}
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                update(exports)
                .where((exports.c.id == job_id) & (exports.c.claimed_by == runner))
                .values(state=state, message=message, **progress, **RELEASED)
            )

    def release(self, job_id: str, runner: str) -> None:
        """Back to the queue (its runner stops): the next runner starts it anew."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                update(exports)
                .where(
                    (exports.c.id == job_id)
                    & (exports.c.claimed_by == runner)
                    & (exports.c.state == RUNNING)
                )
                .values(state=QUEUED, done=0, total=0, **RELEASED)
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
