"""The forwarding queue: what must reach another AE, kept until it did.

Rows are claimed (`storage.leases`) so that of several node processes one
sends each instance. The sender renews its claim before each instance
(`renew`), and finishes or reschedules a row only while it is still its own
(`done`, `retry`): a sender whose lease lapsed and passed to another process
sends nothing more of it and changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, DateTime, Integer, String, Table, func, select
from sqlalchemy.engine import Engine

from storage.leases import RELEASED, claim, lease_columns, release
from storage.schema import metadata

log = logging.getLogger(__name__)
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
    # A consultation report's instance (`storage.reports`): sent with the
    # hospital's own identity put back; None: sent as stored.
    Column("report_pk", Integer),
    *lease_columns(),
)
# A pass sends at most this many rows per claim; a dead process's claim
# lapses after the lease (renewed before each instance: long enough for one
# send to a slow destination, dimse_timeout at most).
BATCH = 200
LEASE = timedelta(minutes=10)


def enqueue_in(
    conn: Connection, sop_instance_uids: list[str], destination: str, *, report: int | None = None
) -> int:
    """`ForwardQueue.enqueue` in the caller's transaction (the change feed's
    consumer moves its cursor in the same one); how many were added.

    An instance already waiting for this destination is added once: only a
    row no process has claimed counts as waiting. A claimed row may be on
    its way now with the version read before this change (a ``replaced``
    instance): the new row sends the version stored now. A report's row
    (``report``) and a route's row for the same instance are two sends."""
    now = datetime.now(UTC)
    wanted = list(dict.fromkeys(sop_instance_uids))
    waiting: set[str] = set()
    for start in range(0, len(wanted), 500):
        waiting |= set(
            conn.execute(
                select(forward_queue.c.sop_instance_uid).where(
                    (forward_queue.c.destination == destination)
                    & (forward_queue.c.state == PENDING)
                    & forward_queue.c.claimed_by.is_(None)
                    & (
                        forward_queue.c.report_pk.is_(None)
                        if report is None
                        else forward_queue.c.report_pk == report
                    )
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
            "report_pk": report,
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

    def renew(self, pks: Iterable[int], owner: str) -> set[int]:
        """Extend ``owner``'s claim on these rows; the ones still its own
        (a row whose lease lapsed and that another process claimed is not)."""
        wanted, mine = list(pks), set()
        until = datetime.now(UTC) + LEASE
        with self._lock, self.engine.begin() as conn:
            for start in range(0, len(wanted), 500):
                mine |= set(
                    conn.execute(
                        forward_queue.update()
                        .where(
                            forward_queue.c.pk.in_(wanted[start : start + 500])
                            & (forward_queue.c.claimed_by == owner)
                            & (forward_queue.c.state == PENDING)
                        )
                        .values(claimed_until=until)
                        .returning(forward_queue.c.pk)
                    ).scalars()
                )
        return mine

    def release(self, pks: Iterable[int], owner: str) -> None:
        """Give ``owner``'s unsent rows back, due as they were (a stop)."""
        with self._lock, self.engine.begin() as conn:
            release(conn, forward_queue, pks, owner)

    def done(self, pk: int, *, owner: str) -> bool:
        """The row was sent; False (logged, nothing changed) if ``owner`` no longer holds it."""
        return self._update(pk, owner, state=DONE, done_at=datetime.now(UTC), last_error=None)

    def retry(self, pk: int, attempts: int, error: str, delay: timedelta, *, owner: str) -> bool:
        """Try again after ``delay``; False (logged, nothing changed) if not ``owner``'s."""
        return self._update(
            pk,
            owner,
            attempts=attempts,
            last_error=error[:256],
            next_attempt_at=datetime.now(UTC) + delay,
        )

    def _update(self, pk: int, owner: str, **values: Any) -> bool:
        with self._lock, self.engine.begin() as conn:
            changed = conn.execute(
                forward_queue.update()
                .where((forward_queue.c.pk == pk) & (forward_queue.c.claimed_by == owner))
                .values(**values, **RELEASED)
            ).rowcount
        if not changed:
            log.warning("forwarding row %d is no longer this process's: left as it is", pk)
        return bool(changed)

    def counts(self) -> dict[tuple[str, str], int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(forward_queue.c.destination, forward_queue.c.state, func.count()).group_by(
                    forward_queue.c.destination, forward_queue.c.state
                )
            ).all()
        return {(destination, state): n for destination, state, n in rows}
