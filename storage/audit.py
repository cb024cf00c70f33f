"""The audit trail: append-only, hash-chained, shaped after IHE ATNA (RFC 3881).

Each record carries the keyed digest (HMAC-SHA256 with ``audit.key``) of its
own fields and of the previous record's digest, so changing, removing or
reordering a row breaks the chain from there on; a one-row head table holds
the last sequence number and digest, so cutting the tail is detected too.
The head row is read and written in the same transaction as the insert (row
locked on PostgreSQL), which serialises writers across processes. Database
triggers (made by the baseline migration) refuse UPDATE and DELETE on the
trail.

Records name users, AE titles, addresses, pseudonyms and new UIDs: never an
original identity (the node does not hold one outside the sealed linkage).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Integer, String, Table, func, select
from sqlalchemy.engine import Connection, Engine

from storage.rows import insert_for
from storage.schema import metadata
from storage.textsafe import csv_row

# Event type -> (DICOM EventID code in DCM, meaning, EventActionCode), PS3.15 A.5.
EVENTS: dict[str, tuple[str, str, str]] = {
    "node-start": ("110100", "Application Activity", "E"),
    "config-change": ("110100", "Application Activity", "U"),
    "archive-check": ("110100", "Application Activity", "E"),
    "association": ("110104", "DICOM Instances Transferred", "E"),
    "association-rejected": ("110113", "Security Alert", "E"),
    "stow": ("110104", "DICOM Instances Transferred", "C"),
    "login": ("110114", "User Authentication", "E"),
    "logout": ("110114", "User Authentication", "E"),
    "access-denied": ("110113", "Security Alert", "E"),
    "study-view": ("110103", "DICOM Instances Accessed", "R"),
    "plan-save": ("110110", "Patient Record", "U"),
    "plan-sign": ("110110", "Patient Record", "U"),
    # A referral case opened or moved (`storage.cases`): created by the node, updated by people.
    "case-status": ("110110", "Patient Record", "U"),
    "case-note": ("110110", "Patient Record", "U"),
    "export": ("110106", "Export", "R"),
    "reidentify": ("110110", "Patient Record", "R"),
    # A consultation report re-identified and sent to its hospital (`dicomnode.consult`).
    "case-report-sent": ("110106", "Export", "R"),
    "quarantine-hold": ("110103", "DICOM Instances Accessed", "C"),
    "quarantine-release": ("110103", "DICOM Instances Accessed", "U"),
    "quarantine-show": ("110106", "Export", "R"),
    "quarantine-refuse": ("110103", "DICOM Instances Accessed", "D"),
    # An instance bringing a study, series or SOP Instance UID another patient
    # holds (a broken UID generator, a re-used template, or an attempt to
    # write into another child's study): kept apart, for an administrator.
    "uid-conflict": ("110113", "Security Alert", "C"),
    "user-change": ("110113", "Security Alert", "U"),
    "audit-read": ("110101", "Audit Log Used", "R"),
}
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = 0, 4, 8
FIELDS = ("seq", "at", "event", "outcome", "user", "role", "source", "object", "detail")

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(32), nullable=False, index=True),  # ISO 8601 UTC: sorts as text
    Column("event", String(32), nullable=False, index=True),
    Column("outcome", Integer, nullable=False),
    Column("user", String(128), nullable=False, index=True),
    Column("role", String(32), nullable=False),
    Column("source", String(64), nullable=False),
    Column("object", String(256), nullable=False),
    Column("detail", String(2048), nullable=False),
    Column("prev", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
)
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
)

GENESIS = "0" * 64


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    first_bad: int | None = None
    why: str = ""


@dataclass(frozen=True)
class AuditFilter:
    """Exact user/event/source, outcome, an inclusive date range (YYYY-MM-DD)."""

    user: str = ""
    event: str = ""
    source: str = ""
    failures_only: bool = False
    date_from: str = ""
    date_to: str = ""
    since: str = ""  # an ISO 8601 UTC instant

    def where(self) -> list[Any]:
        c = audit_log.c
        clauses: list[Any] = []
        for column, value in ((c.user, self.user), (c.event, self.event), (c.source, self.source)):
            if value:
                clauses.append(column == value)
        if self.failures_only:
            clauses.append(c.outcome != SUCCESS)
        if self.date_from:
            clauses.append(c.at >= self.date_from)
        if self.date_to:
            clauses.append(c.at < self.date_to + "T99")  # the whole last day
        if self.since:
            clauses.append(c.at >= self.since)
        return clauses


def _digest(key: bytes, prev: str, row: dict[str, Any]) -> str:
    canonical = json.dumps([prev, *(row[f] for f in FIELDS)], ensure_ascii=False)
    return hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


class AuditTrail:
    """Append records, read them with filters, verify the chain."""

    def __init__(self, engine: Engine, lock: threading.Lock, key: bytes = b"") -> None:
        self.engine = engine
        self._lock = lock
        self.key = key

    def record(
        self,
        kind: str,
        *,
        user: str,
        role: str = "",
        source: str = "",
        obj: str = "",
        detail: str = "",
        outcome: int = SUCCESS,
    ) -> None:
        """Append one record in a transaction of its own."""
        with self._lock, self.engine.begin() as conn:
            self.append(
                conn,
                kind,
                user=user,
                role=role,
                source=source,
                obj=obj,
                detail=detail,
                outcome=outcome,
            )

    def append(
        self,
        conn: Connection,
        kind: str,
        *,
        user: str,
        role: str = "",
        source: str = "",
        obj: str = "",
        detail: str = "",
        outcome: int = SUCCESS,
    ) -> None:
        """Append one record in the caller's transaction (a store's, so the
        record and what it records commit together or not at all). The
        caller holds the index's write lock where `record` would take it."""
        if kind not in EVENTS:
            raise ValueError(f"unknown audit event {kind!r}")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        row = {
            "at": now,
            "event": kind,
            "outcome": outcome,
            "user": user[:128],
            "role": role[:32],
            "source": source[:64],
            "object": obj[:256],
            "detail": detail[:2048],
        }
        # A write comes first: on SQLite it takes the one writer's lock
        # before the head is read (a read first would let two processes
        # chain onto the same head), and on PostgreSQL the head row then
        # exists for FOR UPDATE to lock, even for the very first record.
        start = insert_for(conn, audit_head).values(id=1, seq=0, digest=GENESIS)
        conn.execute(start.on_conflict_do_nothing(index_elements=["id"]))
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.digest)
            .where(audit_head.c.id == 1)
            .with_for_update()
        ).one()
        seq, prev = head[0] + 1, head[1]
        row["seq"] = seq
        digest = _digest(self.key, prev, row)
        conn.execute(audit_log.insert().values(**row, prev=prev, digest=digest))
        conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=seq, digest=digest))

    def rows(
        self, where: AuditFilter | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Newest first."""
        query = select(audit_log).where(*(where or AuditFilter()).where())
        query = query.order_by(audit_log.c.seq.desc()).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def count(self, where: AuditFilter | None = None) -> int:
        query = select(func.count()).select_from(audit_log)
        with self.engine.connect() as conn:
            return int(conn.execute(query.where(*(where or AuditFilter()).where())).scalar_one())

    def verify(self) -> Verification:
        """Walk the chain from the first record; the first break is reported."""
        prev, expected = GENESIS, 1
        with self.engine.connect() as conn:
            head = conn.execute(select(audit_head.c.seq, audit_head.c.digest)).first()
            rows = conn.execute(select(audit_log).order_by(audit_log.c.seq))
            for row in rows:
                values = dict(row._mapping)
                if values["seq"] != expected:
                    return Verification(False, expected - 1, expected, "a record is missing")
                if values["prev"] != prev or _digest(self.key, prev, values) != values["digest"]:
                    return Verification(False, expected - 1, values["seq"], "a record was altered")
                prev, expected = values["digest"], expected + 1
        count = expected - 1
        if (head is None and count) or (head is not None and tuple(head) != (count, prev)):
            return Verification(False, count, count + 1, "records after the last were removed")
        return Verification(True, count)

    def csv(self, where: AuditFilter | None = None) -> Iterator[str]:
        """CSV in RFC 3881 terms: one line per record, oldest first. Users,
        AE titles and addresses are whatever was typed or sent: every cell
        goes through `csv_cell`, so none is a formula in a spreadsheet."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            [
                "Sequence",
                "EventDateTime",
                "EventID",
                "EventIDMeaning",
                "EventTypeCode",
                "EventActionCode",
                "EventOutcomeIndicator",
                "UserID",
                "RoleIDCode",
                "NetworkAccessPointID",
                "ParticipantObjectID",
                "Detail",
                "Digest",
            ]
        )
        yield buffer.getvalue()
        for row in reversed(self.rows(where)):
            buffer.seek(0)
            buffer.truncate()
            code, meaning, action = EVENTS.get(row["event"], ("", "", ""))
            writer.writerow(
                csv_row(
                    [
                        row["seq"],
                        row["at"],
                        code,
                        meaning,
                        row["event"],
                        action,
                        row["outcome"],
                        row["user"],
                        row["role"],
                        row["source"],
                        row["object"],
                        row["detail"],
                        row["digest"],
                    ]
                )
            )
            yield buffer.getvalue()
