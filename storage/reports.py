"""Consultation reports: the centre's answer to a decided case, and where it stands.

Every decision on a case (`storage.cases.DECIDED`), and every request for
more imaging (the hospital's answer is new images), gets one report row: what
the report says (the decision, its details, the signed plans; pseudonymous,
as everything the index keeps), the language it is written in, the
hospital's AE it goes to, and the instances that carry it (the stored,
de-identified PDF and the signed plan SRs). Those instances are queued in
the forwarding queue with the report's key, which tells the sender to put
the hospital's own identity back as it sends (`dicomnode.consult.sending`).
A report that cannot go (no AE for the hospital) is kept with the reason,
for the case page and `dicomnode case send` once it is mended.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.engine import Connection, Engine

from storage.cases import DECIDED, MORE_IMAGING, case_history, cases
from storage.forwarding import DONE, enqueue_in, forward_queue
from storage.schema import TEXT_LENGTH, metadata

# A report's states: queued (its instances are in the forwarding queue);
# unsent (no destination, the reason kept); predates (a decision made before
# reports were made: never sent, so an upgrade sends nothing unasked).
QUEUED, UNSENT, PREDATES = "queued", "unsent", "predates"
# The moves that send the hospital a report: the decisions, and what the
# centre asks of it (the missing imaging).
REPORTED = DECIDED | {MORE_IMAGING}

case_reports = Table(
    "case_reports",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("case_pk", ForeignKey(cases.c.pk), nullable=False, index=True),
    # The decision it answers: one report each.
    Column("history_pk", ForeignKey(case_history.c.pk), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(256)),
    Column("language", String(8), nullable=False, default="en", server_default="en"),
    Column("destination", String(16)),
    Column("content", Text, nullable=False, default="{}", server_default="{}"),  # JSON
    Column("pdf_uid", String(64)),
    Column("uids", Text, nullable=False, default="[]", server_default="[]"),  # JSON list
    Column("study_uid", String(TEXT_LENGTH)),  # where the stored PDF is filed
)


@dataclass(frozen=True)
class Decision:
    """A decided history row that has no report yet (`Reports.waiting`)."""

    history_pk: int
    case_pk: int
    ref: str
    issuer: str
    pseudonym: str
    status: str
    detail: dict[str, str]
    at: datetime
    user: str


@dataclass(frozen=True)
class Sent:
    """One instance of a report and where its sending stands."""

    uid: str
    state: str  # pending, done, or "" (never queued)
    attempts: int
    last_error: str
    done_at: datetime | None


@dataclass(frozen=True)
class Report:
    pk: int
    case_pk: int
    history_pk: int
    created_at: datetime
    state: str
    reason: str
    language: str
    destination: str
    content: dict[str, Any]
    pdf_uid: str
    uids: tuple[str, ...]
    study_uid: str
    sent: tuple[Sent, ...] = ()

    @property
    def delivered(self) -> bool:
        """Every instance of it reached the hospital."""
        return bool(self.sent) and all(s.state == DONE for s in self.sent)


def _report(row: Any, sent: tuple[Sent, ...] = ()) -> Report:
    return Report(
        pk=row.pk,
        case_pk=row.case_pk,
        history_pk=row.history_pk,
        created_at=row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC),
        state=row.state,
        reason=row.reason or "",
        language=row.language,
        destination=row.destination or "",
        content=json.loads(row.content or "{}"),
        pdf_uid=row.pdf_uid or "",
        uids=tuple(json.loads(row.uids or "[]")),
        study_uid=row.study_uid or "",
        sent=sent,
    )


class Reports:
    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine, self._lock = engine, lock

    def waiting(self, limit: int = 20) -> list[Decision]:
        """Decisions with no report yet, oldest first."""
        made = select(case_reports.c.history_pk)
        query = (
            select(case_history, cases.c.ref, cases.c.issuer, cases.c.pseudonym)
            .join(cases, cases.c.pk == case_history.c.case_pk)
            .where(case_history.c.status.in_(sorted(REPORTED)), case_history.c.pk.not_in(made))
            .order_by(case_history.c.pk)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            Decision(
                history_pk=r.pk,
                case_pk=r.case_pk,
                ref=r.ref,
                issuer=r.issuer,
                pseudonym=r.pseudonym,
                status=r.status,
                detail=json.loads(r.detail or "{}"),
                at=r.at.replace(tzinfo=r.at.tzinfo or UTC),
                user=r.user,
            )
            for r in rows
        ]

    def record_in(
        self,
        conn: Connection,
        decision: Decision,
        *,
        content: dict[str, Any],
        language: str,
        destination: str | None,
        pdf_uid: str | None,
        uids: list[str],
        study_uid: str | None,
        reason: str = "",
    ) -> int:
        """The report of ``decision`` in the caller's transaction (the stored
        PDF's), its instances queued for ``destination``; None: kept unsent
        with ``reason``. An IntegrityError if another process made it first."""
        pk = conn.execute(
            case_reports.insert()
            .values(
                case_pk=decision.case_pk,
                history_pk=decision.history_pk,
                created_at=datetime.now(UTC),
                state=QUEUED if destination else UNSENT,
                reason=reason[:256] or None,
                language=language,
                destination=destination,
                content=json.dumps(content, ensure_ascii=False, sort_keys=True),
                pdf_uid=pdf_uid,
                uids=json.dumps(uids),
                study_uid=study_uid,
            )
            .returning(case_reports.c.pk)
        ).scalar_one()
        if destination:
            enqueue_in(conn, uids, destination, report=pk)
        return int(pk)

    def record(self, decision: Decision, **values: Any) -> int:
        """`record_in` in a transaction of its own (a report with no stored PDF)."""
        with self._lock, self.engine.begin() as conn:
            return self.record_in(conn, decision, **values)

    def send(self, pk: int, destination: str) -> int:
        """Queue an unsent (or undelivered) report for ``destination`` now,
        the instances that have not arrived; how many were queued."""
        with self._lock, self.engine.begin() as conn:
            row = conn.execute(select(case_reports).where(case_reports.c.pk == pk)).one()
            if row.state == PREDATES:
                return 0
            arrived = {s.uid for s in _sent(conn, row) if s.state == DONE}
            uids = [uid for uid in json.loads(row.uids or "[]") if uid not in arrived]
            conn.execute(
                case_reports.update()
                .where(case_reports.c.pk == pk)
                .values(state=QUEUED, reason=None, destination=destination)
            )
            return enqueue_in(conn, uids, destination, report=pk)

    def unsent(self, pk: int, reason: str) -> None:
        """Keep a report unsent, saying why (no AE for the hospital)."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                case_reports.update()
                .where(case_reports.c.pk == pk)
                .values(state=UNSENT, reason=reason[:256])
            )

    def get(self, pk: int) -> Report | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(case_reports).where(case_reports.c.pk == pk)).first()
            return None if row is None else _report(row, _sent(conn, row))

    def of_case(self, ref: str) -> list[Report]:
        """A case's reports, newest first, with where each instance stands."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(case_reports)
                .join(cases, cases.c.pk == case_reports.c.case_pk)
                .where(cases.c.ref == ref)
                .order_by(case_reports.c.pk.desc())
            ).all()
            return [_report(r, _sent(conn, r)) for r in rows if r.state != PREDATES]


def _sent(conn: Connection, row: Any) -> tuple[Sent, ...]:
    """Each instance's newest queue row for this report."""
    found: dict[str, Sent] = {}
    for q in conn.execute(
        select(forward_queue)
        .where(forward_queue.c.report_pk == row.pk)
        .order_by(forward_queue.c.pk)
    ).all():
        found[q.sop_instance_uid] = Sent(
            uid=q.sop_instance_uid,
            state=q.state,
            attempts=q.attempts,
            last_error=q.last_error or "",
            done_at=q.done_at,
        )
    uids = json.loads(row.uids or "[]")
    return tuple(found.get(uid, Sent(uid, "", 0, "", None)) for uid in uids)
