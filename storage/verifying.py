"""Instances held until OCR has read them (``ocr_deferred``).

With deferred verification an instance that OCR must read is held
(encrypted, invisible, as any held instance) and answered at once; a row
here says it waits for the verifier (`dicomnode.jobs.verifying`), with what
OCR must look for: the identity values of the header as received, sealed
with the quarantine key, bound to the instance (never in plaintext), and
whether a rule blanked areas (then the blanked mask is recomputed and text
inside it counts). The row is written in the hold's own transaction and
removed in the transaction that stores the instance or keeps it held with
OCR's finding, so a crash in between leaves it waiting, not lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    exists,
    func,
    select,
)

from storage.leases import claim, lease_columns, release
from storage.rows import reading
from storage.schema import metadata, quarantine

ocr_queue = Table(
    "ocr_queue",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("sopinstanceuid", String(64), nullable=False, unique=True),
    Column("cleaned", Boolean, nullable=False),
    # The sender's blank_rectangles as applied (JSON), for the blanked mask.
    Column("rectangles", Text, nullable=False, default="[]", server_default="[]"),
    Column("identity", LargeBinary, nullable=False),  # sealed JSON of (kind, value) pairs
    Column("queued_at", DateTime(timezone=True), nullable=False),
    # Copies re-sent while it waited (kept first): counted once it is stored.
    Column("copies", Integer, nullable=False, default=0, server_default="0"),
    # Readings that failed (an error, not a finding): kept held after a few.
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    *lease_columns(),
)
# A verifier claims this many at a time (or twice its threads); a dead
# process's claim lapses after the lease, far more than a batch's reading.
BATCH = 16
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class OcrWait:
    """What the verifier needs of a held instance: whether a rule blanked
    areas and the sender's rectangles then applied (the blanked mask is
    made again from them and the header's regions), and the identity values
    of the header as received, sealed."""

    cleaned: bool
    rectangles: tuple[tuple[int, int, int, int], ...]
    identity: bytes


def enqueue_in(conn: Connection, sop_instance_uid: str, wait: OcrWait) -> None:
    """Mark a held instance as waiting for OCR, in the hold's transaction
    (a re-send replaces the row with its own)."""
    conn.execute(ocr_queue.delete().where(ocr_queue.c.sopinstanceuid == sop_instance_uid))
    conn.execute(
        ocr_queue.insert().values(
            sopinstanceuid=sop_instance_uid,
            cleaned=wait.cleaned,
            rectangles=json.dumps([list(r) for r in wait.rectangles]),
            identity=wait.identity,
            queued_at=datetime.now(UTC),
        )
    )


def claimed_in(conn: Connection, sop_instance_uid: str, owner: str) -> int | None:
    """The copies re-sent meanwhile if ``owner`` still holds the instance's
    row, else None (in the caller's transaction: what it stores or keeps
    held is then its own to decide)."""
    return conn.execute(
        select(ocr_queue.c.copies)
        .where((ocr_queue.c.sopinstanceuid == sop_instance_uid) & (ocr_queue.c.claimed_by == owner))
        .with_for_update()  # a copy counted meanwhile waits for this commit, then finds none
    ).scalar_one_or_none()


class AlreadyWaiting(Exception):
    """A copy of the instance waits for OCR already (raised in a hold's
    transaction, which then writes nothing)."""


def waiting_in(conn: Connection, sop_instance_uid: str) -> bool:
    """Whether the instance waits for OCR (in the caller's transaction)."""
    return (
        conn.execute(
            select(ocr_queue.c.pk).where(ocr_queue.c.sopinstanceuid == sop_instance_uid)
        ).first()
        is not None
    )


def done_in(conn: Connection, sop_instance_uid: str) -> None:
    """The instance is verified (stored or kept held): no longer waiting."""
    conn.execute(ocr_queue.delete().where(ocr_queue.c.sopinstanceuid == sop_instance_uid))


class OcrQueue:
    """The queue as the verifier and the administrator's tools see it."""

    def __init__(self, engine: Any, lock: Any) -> None:
        self.engine = engine
        self._lock = lock

    def claim(self, owner: str, limit: int = BATCH) -> list[dict[str, Any]]:
        """Waiting rows, oldest first, now ``owner``'s for the lease."""
        with self._lock, self.engine.begin() as conn:
            return claim(
                conn, ocr_queue, ocr_queue.c.pk.isnot(None), owner=owner, lease=LEASE, limit=limit
            )

    def renew(self, pk: int, owner: str) -> bool:
        """Extend ``owner``'s lease on one row before reading it; False if
        the row is no longer its own (the lease lapsed, another took it)."""
        with self._lock, self.engine.begin() as conn:
            return bool(
                conn.execute(
                    ocr_queue.update()
                    .where((ocr_queue.c.pk == pk) & (ocr_queue.c.claimed_by == owner))
                    .values(claimed_until=datetime.now(UTC) + LEASE)
                ).rowcount
            )

    def failed(self, pk: int, owner: str) -> int:
        """A reading of ``owner``'s failed: counted (the row stays claimed
        until its lease lapses, then a later pass tries again); how many
        readings failed so far."""
        with self._lock, self.engine.begin() as conn:
            return int(
                conn.execute(
                    ocr_queue.update()
                    .where((ocr_queue.c.pk == pk) & (ocr_queue.c.claimed_by == owner))
                    .values(attempts=ocr_queue.c.attempts + 1)
                    .returning(ocr_queue.c.attempts)
                ).scalar_one_or_none()
                or 0
            )

    def drop(self, sop_instance_uid: str, owner: str) -> None:
        """End ``owner``'s row of an instance no longer held for OCR."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                ocr_queue.delete().where(
                    (ocr_queue.c.sopinstanceuid == sop_instance_uid)
                    & (ocr_queue.c.claimed_by == owner)
                )
            )

    def release(self, pks: Iterable[int], owner: str) -> None:
        """Give ``owner``'s unverified rows back (a stop)."""
        with self._lock, self.engine.begin() as conn:
            release(conn, ocr_queue, pks, owner)

    def count_copy(self, sop_instance_uid: str, pseudonym: str) -> bool:
        """A re-sent copy of an instance of this patient waiting for OCR:
        counted, not de-identified again (the first copy is kept); False if
        none waits (any more) for this patient."""
        ours = exists().where(
            (quarantine.c.sopinstanceuid == sop_instance_uid)
            & (quarantine.c.pseudonym == pseudonym)
        )
        counted = (
            ocr_queue.update()
            .where((ocr_queue.c.sopinstanceuid == sop_instance_uid) & ours)
            .values(copies=ocr_queue.c.copies + 1)
        )
        return bool(reading(self.engine, lambda conn: conn.execute(counted).rowcount, self._lock))

    def waiting(self) -> int:
        """How many instances wait for OCR (`dicomnode status`, the benchmark)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ocr_queue)).scalar_one())
