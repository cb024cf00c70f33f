"""The change feed: what follows a store is read from the index, not done by the door.

`Index.add` writes one ``changes`` row (kind, instance, study, series,
issuer, modality) in the transaction that indexes the instance, so a
committed instance always has its change and a rolled-back one never has.
Consumers (forwarding, `dicomnode.jobs.forwarding`) read the feed in id
order, each from its own cursor in ``change_cursors``, and apply their effect
and move the cursor in one transaction: a crash loses nothing and applies
nothing twice.

Ids must become visible in order, or a consumer could move past a change
still being committed. SQLite has one writer at a time; on PostgreSQL a
writer takes a transaction lock (`FEED_LOCK`) just before inserting its
change row, the transaction's last statement, and holds it until commit.
A consumer claims its cursor row (``SELECT … FOR UPDATE SKIP LOCKED``), so
of several node processes one applies each batch and the others pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from storage.keys import Level
from storage.record import InstanceRecord
from storage.rows import insert_for, serialise
from storage.schema import change_cursors, changes

STORED, REPLACED = "stored", "replaced"
# Changes one consumer transaction applies at most.
BATCH = 500
# The lock that orders writers of the feed (PostgreSQL).
FEED_LOCK = "change feed"


@dataclass(frozen=True)
class Change:
    id: int
    kind: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    issuer: str
    modality: str | None
    at: datetime


def record_change(conn: Connection, kind: str, record: InstanceRecord) -> None:
    """Add the change of ``record`` in the store's transaction: call it last,
    right before the commit (it holds the feed's lock until then)."""
    serialise(conn, FEED_LOCK)
    patient, series_ = record.columns[Level.PATIENT], record.columns[Level.SERIES]
    conn.execute(
        changes.insert().values(
            kind=kind,
            sop_instance_uid=record.sop_instance_uid,
            study_uid=record.columns[Level.STUDY]["studyinstanceuid"],
            series_uid=series_["seriesinstanceuid"],
            issuer=patient["issuerofpatientid"],
            modality=series_["modality"],
            at=datetime.now(UTC),
        )
    )


Apply = Callable[[Connection, list[Change]], object]


class ChangeFeed:
    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock

    def consume(self, consumer: str, apply: Apply, batch: int = BATCH) -> int:
        """Apply the next changes after ``consumer``'s cursor (at most
        ``batch``) and move the cursor, in one transaction; how many. 0 also
        when another process holds the cursor now (it is applying them)."""
        for attempt in range(3):
            try:
                with self._lock, self.engine.begin() as conn:
                    return self._consume(conn, consumer, apply, batch)
            except OperationalError:  # a lost connection, a deadlock: once more
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def drain(self, consumer: str, apply: Apply, batch: int = BATCH, rounds: int = 20) -> int:
        """`consume` until the feed is caught up (or ``rounds`` batches); how many."""
        total = 0
        for _ in range(rounds):
            done = self.consume(consumer, apply, batch)
            total += done
            if done < batch:
                break
        return total

    @staticmethod
    def _consume(conn: Connection, consumer: str, apply: Apply, batch: int) -> int:
        now = datetime.now(UTC)
        # A write first: SQLite takes its write lock here, not on the update.
        conn.execute(
            insert_for(conn, change_cursors)
            .values(consumer=consumer, last_id=0, updated_at=now)
            .on_conflict_do_nothing()
        )
        last = conn.execute(
            select(change_cursors.c.last_id)
            .where(change_cursors.c.consumer == consumer)
            .with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if last is None:  # another process is consuming for this consumer
            return 0
        rows = conn.execute(
            select(changes).where(changes.c.id > last).order_by(changes.c.id).limit(batch)
        ).all()
        if not rows:
            return 0
        found = [Change(**row._mapping) for row in rows]
        apply(conn, found)
        conn.execute(
            change_cursors.update()
            .where(change_cursors.c.consumer == consumer)
            .values(last_id=found[-1].id, updated_at=now)
        )
        return len(found)

    def position(self, consumer: str) -> int:
        """The last change id ``consumer`` applied (0: none yet)."""
        with self.engine.connect() as conn:
            last = conn.execute(
                select(change_cursors.c.last_id).where(change_cursors.c.consumer == consumer)
            ).scalar_one_or_none()
        return last or 0

    def latest(self) -> int:
        """The newest change id (0: none)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(changes.c.id), 0))).scalar_one()

    def since(self, after: int = 0, limit: int = BATCH) -> list[Change]:
        """Changes after id ``after``, oldest first (tests, the admin)."""
        query = select(changes).where(changes.c.id > after).order_by(changes.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [Change(**row._mapping) for row in conn.execute(query)]
