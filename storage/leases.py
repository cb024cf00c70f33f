"""Jobs claimed by one node process at a time, for a while (a lease).

Forwarding rows and export jobs carry ``claimed_by`` and ``claimed_until``.
A process claims free rows in one UPDATE whose candidates are chosen with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite has one writer at a time),
so two processes never take the same row. A process that dies holds its rows
only until the lease runs out (or, on its own host, until the next claim
sees it gone); then another takes them. Work is therefore
done at least once and, while its process lives, by one process only.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, DateTime, String, Table, select, update

# (pid, token): a random token per process, made again in a forked child.
_TOKEN: tuple[int, str] = (0, "")


def process_name() -> str:
    """This process among all node processes of an archive: ``host-pid.token``.

    The random token tells apart processes that share a host name and a pid
    (containers, each with its own pid namespace): without it, after a
    take-over the first holder's renewals would still match its rows. The
    pid is kept for `dead_here` only.
    """
    global _TOKEN
    pid = os.getpid()
    if _TOKEN[0] != pid:
        _TOKEN = (pid, secrets.token_hex(6))
    return f"{socket.gethostname()}-{pid}.{_TOKEN[1]}"


def _host_and_pid(name: str) -> tuple[str, str]:
    """(host, pid) of a `process_name`, or of ``host-pid`` (older versions)."""
    host, _, rest = name.rpartition("-")
    return host, rest.partition(".")[0]


def of_this_host(name: str) -> bool:
    """A `process_name` of a process on this host (which can be asked)."""
    host, pid = _host_and_pid(name)
    return host == socket.gethostname() and pid.isdigit()


def dead_here(name: str) -> bool:
    """A process of this host (by its `process_name`) that no longer runs.

    Another host's processes cannot be asked: for them, leases lapse. (Nor
    can a process of another pid namespace under the same host name: give
    such containers host names of their own.)
    """
    if not of_this_host(name):
        return False
    try:
        os.kill(int(_host_and_pid(name)[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lease_columns() -> list[Column]:
    return [
        Column("claimed_by", String(128)),
        Column("claimed_until", DateTime(timezone=True)),
    ]


def _key(table: Table) -> Any:
    return table.primary_key.columns.values()[0]


def _free(conn: Connection, table: Table, ready: Any, now: datetime) -> Any:
    """Never claimed, lease lapsed, or claimed by a process of this host that died."""
    until, holder = table.c.claimed_until, table.c.claimed_by
    holders = conn.execute(select(holder).distinct().where(ready & (until >= now))).scalars()
    dead = [name for name in holders if name and dead_here(name)]
    return until.is_(None) | (until < now) | holder.in_(dead)


def claim(
    conn: Connection,
    table: Table,
    ready: Any,
    *,
    owner: str,
    lease: timedelta,
    limit: int,
    now: datetime | None = None,
    order: Any = None,
    **values: Any,
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` rows that are ``ready`` and not claimed by a live
    lease, oldest by ``order`` (the key if None) first, setting ``values`` too."""
    if limit <= 0:
        return []
    now = now or datetime.now(UTC)
    key = _key(table)
    free = _free(conn, table, ready, now)
    candidates = (
        select(key)
        .where(ready & free)
        .order_by(key if order is None else order, key)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(table)
        .where(key.in_(candidates.scalar_subquery()) & ready & free)
        .values(claimed_by=owner, claimed_until=now + lease, **values)
        .returning(*table.c)
    )
    return [dict(row._mapping) for row in conn.execute(statement)]


def renew(
    conn: Connection, table: Table, key: Any, *, owner: str, lease: timedelta, **values: Any
) -> dict[str, Any] | None:
    """Extend this owner's lease (and set ``values``); None if it is not ours any more."""
    statement = (
        update(table)
        .where((_key(table) == key) & (table.c.claimed_by == owner))
        .values(claimed_until=datetime.now(UTC) + lease, **values)
        .returning(*table.c)
    )
    row = conn.execute(statement).first()
    return None if row is None else dict(row._mapping)


RELEASED = {"claimed_by": None, "claimed_until": None}


def release(conn: Connection, table: Table, keys: Iterable[Any], owner: str) -> None:
    """Give ``owner``'s claimed rows back, as they were (a stop)."""
    wanted, key = list(keys), _key(table)
    for start in range(0, len(wanted), 500):
        conn.execute(
            update(table)
            .where(key.in_(wanted[start : start + 500]) & (table.c.claimed_by == owner))
            .values(**RELEASED)
        )
