"""Login throttling shared by every node process through the index.

An attempt is reserved here, in one transaction, BEFORE its password is
checked: the counter rows it touches are locked (PostgreSQL: row locks taken
in key order; SQLite: the database's one writer), so however many guesses
arrive at once, no more than the free attempts pass before the first wait is
due. A reservation counts as a failure until the caller says it succeeded.

There is no lock-out anyone could trigger: after ``Backoff.free`` failures
of a key (a user name, a client address) each further attempt must wait a
delay that doubles per failure, up to ``Backoff.longest``. An attacker can
slow an account, never shut its owner out for long; a correct password after
the wait logs in. Failures further apart than ``Backoff.window`` start afresh.

Keys are stored as SHA-256 digests: the table names no user and no address
(someone who types a password into the user-name field leaves no trace here).
Times are Unix milliseconds.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, String, Table, select
from sqlalchemy.engine import Connection, Engine, Row

from storage.rows import insert_for
from storage.schema import metadata

login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(64), primary_key=True),  # SHA-256 of kind and value
    Column("failures", Integer, nullable=False),
    Column("last", BigInteger, nullable=False, index=True),  # the latest reservation
    Column("not_before", BigInteger, nullable=False),  # no attempt before this time
)
# Rows idle for longer than their window are deleted at most this often per
# process (seconds): the table holds the keys guessed lately, not all of them.
SWEEP_SECONDS = 300


@dataclass(frozen=True)
class Backoff:
    """How long a key waits: ``free`` attempts without a wait, then
    ``first`` seconds, doubling per failure up to ``longest``."""

    free: int
    first: float = 2.0
    longest: float = 60.0
    window: float = 900.0

    def delay(self, failures: int) -> float:
        """Seconds the next attempt waits after ``failures`` counted ones."""
        if failures < self.free:
            return 0.0
        return min(self.longest, self.first * 2.0 ** min(failures - self.free, 32))


@dataclass(frozen=True)
class Key:
    """What attempts are counted by: ("user", name) or ("address", ip)."""

    kind: str
    value: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.value}".encode("utf-8", "replace")).hexdigest()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def retry_after(wait_ms: int) -> int:
    """Whole seconds for a Retry-After header: rounded up, at least 1."""
    return max(1, math.ceil(wait_ms / 1000))


class LoginThrottle:
    """Counters per key in the index; every method is one short transaction."""

    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock
        self._swept = 0.0

    def waiting(self, keys: Sequence[Key], now: float) -> int:
        """Milliseconds before any attempt under ``keys`` may be made (0:
        now). Reads only: for a request that needs no password check."""
        digests = [k.digest for k in keys]
        query = select(login_throttle.c.not_before).where(login_throttle.c.key.in_(digests))
        with self.engine.connect() as conn:
            due = conn.execute(query).scalars().all()
        return max([0, *(d - _ms(now) for d in due)])

    def reserve(self, keys: Sequence[Key], backoff: Backoff, now: float) -> int:
        """Count one attempt under every key, or none: 0 when the attempt
        may go ahead (its password may be checked), else the milliseconds to
        wait (nothing counted: an early retry does not lengthen the wait)."""
        self._sweep(backoff, now)
        at = _ms(now)
        digests = sorted({k.digest for k in keys})
        with self._lock, self.engine.begin() as conn:
            rows = self._locked(conn, digests)
            wait = max([0, *(row.not_before - at for row in rows)])
            if wait > 0:
                return wait
            for row in rows:
                stale = at - row.last > _ms(backoff.window)
                failures = (0 if stale else row.failures) + 1
                conn.execute(
                    login_throttle.update()
                    .where(login_throttle.c.key == row.key)
                    .values(
                        failures=failures,
                        last=at,
                        not_before=at + _ms(backoff.delay(failures)),
                    )
                )
        return 0

    def succeeded(self, cleared: Key, given_back: Sequence[Key], backoff: Backoff) -> None:
        """A reserved attempt had the right password: ``cleared`` (the
        account) starts afresh; ``given_back`` (the address) loses the one
        failure the reservation counted, so users behind one address who
        log in correctly never slow each other."""
        digests = sorted({cleared.digest, *(k.digest for k in given_back)})
        with self._lock, self.engine.begin() as conn:
            for row in self._locked(conn, digests):
                if row.key == cleared.digest:
                    failures, not_before = 0, 0
                else:
                    failures = max(0, row.failures - 1)
                    not_before = min(row.not_before, row.last + _ms(backoff.delay(failures)))
                conn.execute(
                    login_throttle.update()
                    .where(login_throttle.c.key == row.key)
                    .values(failures=failures, not_before=not_before)
                )

    @staticmethod
    def _locked(conn: Connection, digests: list[str]) -> list[Row[Any]]:
        """The rows of ``digests``, created if new, locked until the
        transaction ends. The INSERT comes first: on SQLite it takes the
        write lock before anything is read, so no other connection's
        reservation can interleave; on PostgreSQL the rows are locked in key
        order (no deadlock between two attempts sharing keys). A row a sweep
        deleted in between is made again."""
        query = (
            select(login_throttle)
            .where(login_throttle.c.key.in_(digests))
            .order_by(login_throttle.c.key)
            .with_for_update()
        )
        rows: list[Row[Any]] = []
        for _ in range(3):
            fresh = [{"key": d, "failures": 0, "last": 0, "not_before": 0} for d in digests]
            conn.execute(insert_for(conn, login_throttle).values(fresh).on_conflict_do_nothing())
            rows = list(conn.execute(query).all())
            if len(rows) == len(digests):
                break
        return rows

    def _sweep(self, backoff: Backoff, now: float) -> None:
        """Delete rows idle past their window (rows others hold are skipped:
        the sweep never waits for, nor deadlocks with, a reservation)."""
        if time.monotonic() - self._swept < SWEEP_SECONDS and self._swept:
            return
        self._swept = time.monotonic()
        old = _ms(now) - _ms(max(backoff.window, backoff.longest))
        idle = (
            select(login_throttle.c.key)
            .where(login_throttle.c.last < old, login_throttle.c.not_before < _ms(now))
            .with_for_update(skip_locked=True)
        )
        with self._lock, self.engine.begin() as conn:
            conn.execute(login_throttle.delete().where(login_throttle.c.key.in_(idle)))
