"""The forwarding queue: what must reach another AE, kept until it did.

Rows are claimed (`storage.leases`) so that of several node processes one
sends each instance.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, DateTime, Integer, String, Table, func, select
from sqlalchemy.engine import Engine

from storage.leases import RELEASED, claim, lease_columns
from storage.schema import metadata

PENDING, DONE = "pending", "done"

forward_queue = Table(
    "forward_queue",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("destination", String(16), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", String(256)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True)),
    *lease_columns(),
)
# A pass sends at most this many rows per claim; a dead process's claim
# lapses after the lease (long enough for a batch to a slow destination).
BATCH = 200
LEASE = timedelta(minutes=10)


def enqueue_in(conn: Connection, sop_instance_uids: list[str], destination: str) -> int:
    """`ForwardQueue.enqueue` in the caller's transaction (the change feed's
    consumer moves its cursor in the same one); how many were added."""
    now = datetime.now(UTC)
    wanted = list(dict.fromkeys(sop_instance_uids))
    waiting: set[str] = set()
    for start in range(0, len(wanted), 500):
        waiting |= set(
            conn.execute(
                select(forward_queue.c.sop_instance_uid).where(
                    (forward_queue.c.destination == destination)
                    & (forward_queue.c.state == PENDING)
                    & forward_queue.c.sop_instance_uid.in_(wanted[start : start + 500])
                )
            ).scalars()
        )
    rows = [
        {
            "sop_instance_uid": uid,
            "destination": destination,
            "state": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for uid in wanted
        if uid not in waiting
    ]
    if rows:
        conn.execute(forward_queue.insert(), rows)
    return len(rows)


class ForwardQueue:
    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock

    def enqueue(self, sop_instance_uids: list[str], destination: str) -> int:
        """Add what is not already waiting for this destination; how many were added."""
        with self._lock, self.engine.begin() as conn:
            return enqueue_in(conn, sop_instance_uids, destination)

    def claim(self, owner: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """Due rows, now claimed by ``owner`` (no other process sends them)."""
        now = now or datetime.now(UTC)
        ready = (forward_queue.c.state == PENDING) & (forward_queue.c.next_attempt_at <= now)
        with self._lock, self.engine.begin() as conn:
            return claim(conn, forward_queue, ready, owner=owner, lease=LEASE, limit=BATCH, now=now)

    def due_or_later(self, limit: int = 200) -> list[dict[str, Any]]:
        """Pending jobs, soonest first (for the admin page)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(forward_queue)
                .where(forward_queue.c.state == PENDING)
                .order_by(forward_queue.c.next_attempt_at)
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def done(self, pk: int) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                forward_queue.update()
                .where(forward_queue.c.pk == pk)
                .values(state=DONE, done_at=datetime.now(UTC), last_error=None, **RELEASED)
            )

    def retry(self, pk: int, attempts: int, error: str, delay: timedelta) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                forward_queue.update()
                .where(forward_queue.c.pk == pk)
                .values(
                    attempts=attempts,
                    last_error=error[:256],
                    next_attempt_at=datetime.now(UTC) + delay,
                    **RELEASED,
                )
            )

    def counts(self) -> dict[tuple[str, str], int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(forward_queue.c.destination, forward_queue.c.state, func.count()).group_by(
                    forward_queue.c.destination, forward_queue.c.state
                )
            ).all()
        return {(destination, state): n for destination, state, n in rows}
