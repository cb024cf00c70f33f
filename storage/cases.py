"""Referral cases: one per pseudonymous child and referring hospital.

A partner hospital refers a child; every study that arrives for that child
(by issuer and pseudonymous Patient ID, never a name) opens the child's
case or joins it. The change feed does this (`Cases.route`, a consumer like
forwarding), so a case exists once its first study is stored, whatever the
door, and a crash opens none twice. The centre's cardiologists move a case
through `STATUSES`; each change is a history row and an audit record in one
transaction, and a status that asks for something (what imaging is
missing, the planned device and an indicative date, the reason to decline)
is refused without it. New imaging on a case waiting for it moves the case
back to received; on a decided case it is flagged, the decision kept.

A case is named by its reference (``C-XXXX-XXXX``, random): what a list, a
message or an e-mail may carry instead of any identity.
"""

from __future__ import annotations

import json
import re
import secrets
import statistics
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    exists,
    false,
    func,
    select,
)
from sqlalchemy.engine import Connection, Engine

from storage.audit import AuditTrail
from storage.changes import REPLACED, STORED, Change, ChangeFeed
from storage.plans import plans
from storage.rows import insert_for, serialise, utc
from storage.schema import TEXT_LENGTH, metadata, patients, studies

RECEIVED = "received"
UNDER_REVIEW = "under-review"
MORE_IMAGING = "more-imaging"
ACCEPTED = "accepted"
SURGERY = "surgery"
DECLINED = "declined"
# Each status and the details it needs (required) or takes (optional).
STATUSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    RECEIVED: ((), ()),
    UNDER_REVIEW: ((), ("note",)),
    MORE_IMAGING: (("missing",), ("note",)),
    ACCEPTED: (("device", "date"), ("note",)),
    SURGERY: ((), ("note",)),
    DECLINED: (("reason",), ("note",)),
}
# What each status is called (English; the viewer translates): also the
# detail of its audit record, so the trail reads as the pages do.
TITLES = {
    RECEIVED: "Referral received",
    UNDER_REVIEW: "Under review",
    MORE_IMAGING: "More imaging needed",
    ACCEPTED: "Accepted for transcatheter closure",
    SURGERY: "Referred for surgery",
    DECLINED: "Declined",
}
DECIDED = frozenset({ACCEPTED, SURGERY, DECLINED})
# Every detail some status reads, in the order forms ask for them.
FIELDS = ("missing", "device", "date", "reason", "note")
# The feed consumer's name (its cursor) and the audit events of a change and a note.
CONSUMER = "cases"
EVENT = "case-status"
NOTE_EVENT = "case-note"
NOTE_MOST = 2000  # characters of one note
# Who moves a case when imaging arrives.
NODE_USER = "dicomnode"
DETAIL_MOST = 500  # characters of one detail

cases = Table(
    "cases",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("ref", String(16), nullable=False, unique=True),
    Column("issuer", String(TEXT_LENGTH), nullable=False),  # the referring hospital
    Column("pseudonym", String(TEXT_LENGTH), nullable=False),  # Patient ID in the archive
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=False, default="{}", server_default="{}"),  # JSON
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(64), nullable=False),
    # Studies arrived after the decision (the decision stands until changed).
    Column("new_imaging", Boolean, nullable=False, default=False, server_default=false()),
    UniqueConstraint("issuer", "pseudonym", name="uq_cases_child"),
)
case_studies = Table(
    "case_studies",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("case_pk", ForeignKey(cases.c.pk), nullable=False, index=True),
    Column("study_uid", String(64), nullable=False, unique=True),
    Column("added_at", DateTime(timezone=True), nullable=False),
)
case_history = Table(
    "case_history",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("case_pk", ForeignKey(cases.c.pk), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("user", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=False, default="{}", server_default="{}"),
    # When the hospital was told of it by e-mail (or there was no one to
    # tell): `dicomnode.consult.notices` claims the rows still NULL.
    Column("notified_at", DateTime(timezone=True)),
)
case_notes = Table(
    "case_notes",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("case_pk", ForeignKey(cases.c.pk), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("user", String(64), nullable=False),
    Column("text", Text, nullable=False),
)


class CaseError(ValueError):
    """A change the case refuses: English text with {placeholders} and their
    values apart, so a page can say it in the user's language."""

    def __init__(self, text: str, **values: Any) -> None:
        super().__init__(text.format(**values))
        self.text, self.values = text, values


class UnknownCase(CaseError):
    """No such case (or none the asker may see)."""


@dataclass(frozen=True)
class Case:
    ref: str
    issuer: str
    pseudonym: str
    status: str
    detail: dict[str, str]
    opened_at: datetime
    updated_at: datetime
    updated_by: str
    new_imaging: bool
    study_count: int = 0
    studies: tuple[str, ...] = ()  # the study UIDs, oldest first (`Cases.get`)
    history: tuple[dict[str, Any], ...] = field(default=())
    notes: tuple[dict[str, Any], ...] = field(default=())  # oldest first


def new_ref() -> str:
    """``C-`` and eight letters or digits in two groups (no 0/O, 1/I)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    chars = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"C-{chars[:4]}-{chars[4:]}"


def known(status: str) -> str:
    """``status``, or CaseError if it is none of `STATUSES`."""
    if status not in STATUSES:
        raise CaseError(
            "unknown status {status}; one of: {known}",
            status=status[:40],
            known=", ".join(STATUSES),
        )
    return status


def checked_note(text: str) -> str:
    """A note as kept: invisible characters out, lines kept; CaseError if
    empty or too long."""
    lines = [" ".join(visible(line).split()) for line in str(text).splitlines()]
    note = "\n".join(lines).strip()
    if not note:
        raise CaseError("the note is empty")
    if len(note) > NOTE_MOST:
        raise CaseError("{field} is longer than {most} characters", field="note", most=NOTE_MOST)
    return note


def checked_detail(status: str, given: Mapping[str, str]) -> dict[str, str]:
    """The details ``status`` keeps, trimmed; CaseError names what is missing,
    unknown, too long or not a date."""
    required, optional = STATUSES[known(status)]
    unknown = sorted(set(given) - set(required) - set(optional))
    if unknown:
        raise CaseError("{status} takes no {field}", status=status, field=", ".join(unknown))
    out = {}
    for name in (*required, *optional):
        # Control and bidirectional-override characters out (a typed ESC or
        # U+202E would reach a terminal or reorder a page), spaces collapsed.
        value = " ".join(visible(str(given.get(name) or "")).split())
        if not value:
            if name in required:
                raise CaseError("{status}: fill in {field}", status=status, field=name)
            continue
        if len(value) > DETAIL_MOST:
            raise CaseError(
                "{field} is longer than {most} characters", field=name, most=DETAIL_MOST
            )
        if name == "date":
            value = _day(value)
        out[name] = value
    return out


# Characters that show nothing, or blank, yet split what a reader sees as
# one word or number: formats (zero-width, joiners, direction marks, tags,
# the soft hyphen), controls, separators, private and unassigned ones, and
# the blank-looking letters and marks used as fillers.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_FILLERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\uffa0")


def visible(text: str) -> str:
    """``text`` with every character that shows nothing (or a blank) made a
    space: what is checked for identity is then what a person will read."""
    return "".join(
        " " if ch in _FILLERS or unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch
        for ch in text
    )


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# An indicative date of a procedure: not before the node existed, not
# further ahead than any waiting list.
EARLIEST, YEARS_AHEAD = date(2020, 1, 1), 5


def _day(text: str) -> str:
    try:
        day = date.fromisoformat(text) if _DAY.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None:
        raise CaseError("the date must be a day (year-month-day)")
    latest = date.today().replace(year=date.today().year + YEARS_AHEAD, day=1)
    if not EARLIEST <= day <= latest:
        raise CaseError(
            "the date must be between {first} and {last}",
            first=EARLIEST.isoformat(),
            last=latest.isoformat(),
        )
    return day.isoformat()


class Cases:
    def __init__(
        self, engine: Engine, lock: threading.Lock, feed: ChangeFeed, audit: AuditTrail
    ) -> None:
        self.engine, self._lock, self._feed, self._audit = engine, lock, feed, audit
        # UIDs the node makes itself start so (`dicomnode.node.open_archive`
        # says): its reports are not new imaging.
        self.own_uid_root = ""

    # -- the feed consumer ------------------------------------------------------------
    def drain(self) -> int:
        """Open or join cases for what was stored since the last pass; how many changes."""
        return self._feed.drain(CONSUMER, self.route)

    def route(self, conn: Connection, changes: Iterable[Change]) -> None:
        """In the feed's transaction: a new study opens or joins its child's
        case; any new instance of a hospital (a study the case holds sent
        again with the view that was asked for) is new imaging for it. The
        node's own instances (its plan reports) are not."""
        seen: set[str] = set()
        for change in changes:
            if change.kind not in (STORED, REPLACED) or change.study_uid in seen:
                continue
            if self.own_uid_root and change.sop_instance_uid.startswith(self.own_uid_root):
                continue
            seen.add(change.study_uid)
            now = utc(change.at)
            pk = conn.execute(
                select(case_studies.c.case_pk).where(case_studies.c.study_uid == change.study_uid)
            ).scalar_one_or_none()
            if pk is None:
                pk = self._join(conn, change, now)
            if pk is not None:
                self._arrived(conn, pk, now)

    def _join(self, conn: Connection, change: Change, now: datetime) -> int | None:
        """The case a new study joins (opened for it if the child has none)."""
        child = conn.execute(
            select(patients.c.issuerofpatientid, patients.c.patientid)
            .join(studies, studies.c.patient_pk == patients.c.pk)
            .where(studies.c.studyinstanceuid == change.study_uid)
        ).first()
        if child is None or not child[1]:  # gone since, or nobody to file it under
            return None
        issuer, pseudonym = str(child[0] or ""), str(child[1])
        opened = conn.execute(
            insert_for(conn, cases)
            .values(
                ref=new_ref(),
                issuer=issuer,
                pseudonym=pseudonym,
                status=RECEIVED,
                detail="{}",
                opened_at=now,
                updated_at=now,
                updated_by=NODE_USER,
                new_imaging=False,
            )
            .on_conflict_do_nothing()
        )
        row = conn.execute(
            select(cases.c.pk, cases.c.ref).where(
                cases.c.issuer == issuer, cases.c.pseudonym == pseudonym
            )
        ).one()
        conn.execute(
            case_studies.insert().values(case_pk=row.pk, study_uid=change.study_uid, added_at=now)
        )
        if opened.rowcount == 1:  # its first history row
            self._move(conn, row.pk, row.ref, RECEIVED, {}, NODE_USER, now)
            return None
        return int(row.pk)

    def _arrived(self, conn: Connection, pk: int, now: datetime) -> None:
        """New imaging for a case: a case waiting for it goes back to
        received; a decided one is flagged, its decision kept. Read under
        the case's lock, so a decision another process is committing is
        the one this sees, never undone by it."""
        ref = conn.execute(select(cases.c.ref).where(cases.c.pk == pk)).scalar_one()
        serialise(conn, f"case {ref}")
        row = conn.execute(select(cases).where(cases.c.pk == pk)).one()
        if row.status == MORE_IMAGING:  # what was asked for may have come: look again
            self._move(conn, pk, ref, RECEIVED, {}, NODE_USER, now)
        elif row.status in DECIDED and not row.new_imaging:
            conn.execute(cases.update().where(cases.c.pk == pk).values(new_imaging=True))

    # -- a cardiologist's decisions --------------------------------------------------
    def set_status(
        self,
        ref: str,
        status: str,
        detail: Mapping[str, str],
        *,
        user: str,
        role: str = "",
        source: str = "",
        issuers: Iterable[str] | None = None,
    ) -> Case:
        """Move a case (one ``issuers`` covers, None: any) to ``status``;
        its history row and audit record in the same transaction."""
        kept = checked_detail(status, detail)
        now = datetime.now(UTC)
        with self._lock, self.engine.begin() as conn:
            row = self._row(conn, ref, issuers, lock=True)
            self._move(conn, row.pk, row.ref, status, kept, user, now, role=role, source=source)
        return self.get(ref, issuers)

    def _move(
        self,
        conn: Connection,
        pk: int,
        ref: str,
        status: str,
        detail: dict[str, str],
        user: str,
        at: datetime,
        *,
        role: str = "",
        source: str = "",
    ) -> None:
        values: dict[str, Any] = {
            "status": status,
            "detail": json.dumps(detail, ensure_ascii=False, sort_keys=True),
            "updated_at": at,
            "updated_by": user[:64],
        }
        if status in DECIDED:
            values["new_imaging"] = False  # this decision saw what had come
        conn.execute(cases.update().where(cases.c.pk == pk).values(**values))
        conn.execute(
            case_history.insert().values(
                case_pk=pk, at=at, user=user[:64], status=status, detail=values["detail"]
            )
        )
        # The details stay in the case's history (free text a person typed).
        self._audit.append(
            conn, EVENT, user=user, role=role, source=source, obj=ref, detail=TITLES[status]
        )

    def add_note(
        self,
        ref: str,
        text: str,
        *,
        user: str,
        role: str = "",
        source: str = "",
        issuers: Iterable[str] | None = None,
    ) -> Case:
        """A note on a case (one ``issuers`` covers): a partner hospital's
        word to the centre, or the centre's; with its audit record."""
        note = checked_note(text)
        with self._lock, self.engine.begin() as conn:
            row = self._row(conn, ref, issuers, lock=True)
            conn.execute(
                case_notes.insert().values(
                    case_pk=row.pk, at=datetime.now(UTC), user=user[:64], text=note
                )
            )
            self._audit.append(
                conn, NOTE_EVENT, user=user, role=role, source=source, obj=ref, detail="note added"
            )
        return self.get(ref, issuers)

    # -- telling the hospitals -------------------------------------------------------
    def untold(self, limit: int = 50) -> list[dict[str, Any]]:
        """Moves no one has been told of yet, oldest first, with their case."""
        query = (
            select(
                case_history.c.pk,
                case_history.c.status,
                case_history.c.at,
                cases.c.ref,
                cases.c.issuer,
            )
            .join(cases, cases.c.pk == case_history.c.case_pk)
            .where(case_history.c.notified_at.is_(None))
            .order_by(case_history.c.pk)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query).all()]

    def claim_telling(self, pk: int, undo: bool = False) -> bool:
        """Take a move to tell (True: this process tells it); ``undo``:
        give it back when the telling failed."""
        with self._lock, self.engine.begin() as conn:
            if undo:
                conn.execute(
                    case_history.update().where(case_history.c.pk == pk).values(notified_at=None)
                )
                return True
            return bool(
                conn.execute(
                    case_history.update()
                    .where(case_history.c.pk == pk, case_history.c.notified_at.is_(None))
                    .values(notified_at=datetime.now(UTC))
                ).rowcount
            )

    def changed_since(
        self, since: datetime, issuers: Iterable[str] | None, user: str
    ) -> list[tuple[Case, bool]]:
        """The cases ``issuers`` covers that moved, or got a note from someone
        other than ``user``, after ``since``, each with whether a note came:
        what a login tells first."""
        noted = select(case_notes.c.case_pk).where(
            case_notes.c.at > since, case_notes.c.user != user
        )
        moved = select(case_history.c.case_pk).where(
            case_history.c.at > since, case_history.c.user != user
        )
        query = select(cases, cases.c.pk.in_(noted).label("noted")).where(
            cases.c.pk.in_(noted) | cases.c.pk.in_(moved)
        )
        if issuers is not None:
            query = query.where(cases.c.issuer.in_(list(issuers)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(cases.c.updated_at.desc()).limit(50)).all()
        return [(_case(r, (), ()), bool(r.noted)) for r in rows]

    # -- reading ------------------------------------------------------------------------
    @staticmethod
    def _row(conn: Connection, ref: str, issuers: Iterable[str] | None, lock: bool = False) -> Any:
        if lock:
            serialise(conn, f"case {ref}")
        query = select(cases).where(cases.c.ref == ref)
        if issuers is not None:
            query = query.where(cases.c.issuer.in_(list(issuers)))
        row = conn.execute(query).first()
        if row is None:
            raise UnknownCase("no such case")
        return row

    def get(self, ref: str, issuers: Iterable[str] | None = None) -> Case:
        """A case with its studies and history (UnknownCase if none ``issuers`` covers)."""
        with self.engine.connect() as conn:
            row = self._row(conn, ref, issuers)
            uids = conn.execute(
                select(case_studies.c.study_uid)
                .where(case_studies.c.case_pk == row.pk)
                .order_by(case_studies.c.added_at, case_studies.c.pk)
            ).scalars()
            history = conn.execute(
                select(case_history)
                .where(case_history.c.case_pk == row.pk)
                .order_by(case_history.c.pk)
            ).all()
            notes = conn.execute(
                select(case_notes.c.at, case_notes.c.user, case_notes.c.text)
                .where(case_notes.c.case_pk == row.pk)
                .order_by(case_notes.c.pk)
            ).all()
            found = _case(row, tuple(uids), tuple(_event(h) for h in history))
            return replace(
                found, notes=tuple({"at": utc(n.at), "user": n.user, "text": n.text} for n in notes)
            )

    def hospitals(self, issuers: Iterable[str] | None = None) -> list[str]:
        """The hospitals with a case (of those ``issuers`` covers), by name."""
        query = select(cases.c.issuer).distinct().order_by(cases.c.issuer)
        if issuers is not None:
            query = query.where(cases.c.issuer.in_(list(issuers)))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def throughput(self, issuers: Iterable[str] | None = None) -> Throughput:
        """The service's figures over every case ``issuers`` covers (None: all)."""
        query = select(cases)
        if issuers is not None:
            query = query.where(cases.c.issuer.in_(list(issuers)))
        first = (
            select(case_history.c.case_pk, func.min(case_history.c.at))
            .where(
                case_history.c.status.in_(sorted(DECIDED)),
                case_history.c.case_pk.in_(query.with_only_columns(cases.c.pk)),
            )
            .group_by(case_history.c.case_pk)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            decided = {int(pk): at for pk, at in conn.execute(first).all()}
        return throughput_of(rows, decided)

    def for_study(self, study_uid: str, issuers: Iterable[str] | None = None) -> Case | None:
        """The case a study belongs to, if any (and ``issuers`` covers it)."""
        with self.engine.connect() as conn:
            ref = conn.execute(
                select(cases.c.ref)
                .join(case_studies, case_studies.c.case_pk == cases.c.pk)
                .where(case_studies.c.study_uid == study_uid)
            ).scalar_one_or_none()
        if ref is None:
            return None
        try:
            return self.get(ref, issuers)
        except UnknownCase:
            return None

    def listing(
        self,
        *,
        issuers: Iterable[str] | None = None,
        hospital: str | None = None,
        status: str | None = None,
        defect: str | None = None,
        opened_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Case]:
        """Cases, oldest referral first, filtered as the case list asks:
        by hospital (issuer), status, a defect some plan of theirs names (its
        family: "ASD" finds "secundum ASD"),
        and referrals opened before a time (how long they wait)."""
        query = select(cases).order_by(cases.c.opened_at, cases.c.pk).limit(limit)
        if issuers is not None:
            query = query.where(cases.c.issuer.in_(list(issuers)))
        if hospital:
            query = query.where(cases.c.issuer == hospital)
        if status:
            query = query.where(cases.c.status == known(status))
        if opened_before is not None:
            query = query.where(cases.c.opened_at < opened_before)
        if defect:
            query = query.where(
                exists().where(
                    case_studies.c.case_pk == cases.c.pk,
                    plans.c.study_uid == case_studies.c.study_uid,
                    # "ASD" is the family: the worksheet's "secundum ASD" is one.
                    func.lower(plans.c.defect).contains(defect.strip().lower(), autoescape=True),
                )
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            counts: dict[int, int] = dict(
                conn.execute(
                    select(case_studies.c.case_pk, func.count())
                    .where(case_studies.c.case_pk.in_([r.pk for r in rows]))
                    .group_by(case_studies.c.case_pk)
                ).all()
            )
        return [_case(r, (), (), int(counts.get(r.pk, 0))) for r in rows]


@dataclass(frozen=True)
class Throughput:
    """What a regional health commission asks of the service, per hospital:
    referrals by month (when the case opened), days from referral to the
    first decision (median, and how many were decided), and cases by the
    decision they have now."""

    referrals: dict[str, dict[str, int]]  # hospital -> "YYYY-MM" -> cases opened
    decided: dict[str, int]  # hospital -> cases with a decision in their history
    median_days: dict[str, float]  # hospital -> median days to the first decision
    decisions: dict[str, dict[str, int]]  # hospital -> decided status now -> cases
    months: tuple[str, ...]  # every month with a referral, oldest first


def throughput_of(rows: Iterable[Any], first_decided: Mapping[int, datetime]) -> Throughput:
    """``rows`` of `cases`; ``first_decided`` by case pk, when it was first decided."""
    referrals: dict[str, dict[str, int]] = {}
    waits: dict[str, list[float]] = {}
    decisions: dict[str, dict[str, int]] = {}
    for row in rows:
        opened = utc(row.opened_at)
        month = f"{opened:%Y-%m}"
        counts = referrals.setdefault(row.issuer, {})
        counts[month] = counts.get(month, 0) + 1
        if row.pk in first_decided:
            days = (utc(first_decided[row.pk]) - opened).total_seconds() / 86400
            waits.setdefault(row.issuer, []).append(max(0.0, days))
        if row.status in DECIDED:
            by = decisions.setdefault(row.issuer, {})
            by[row.status] = by.get(row.status, 0) + 1
    return Throughput(
        referrals=referrals,
        decided={h: len(w) for h, w in waits.items()},
        median_days={h: statistics.median(w) for h, w in waits.items()},
        decisions=decisions,
        months=tuple(sorted({m for counts in referrals.values() for m in counts})),
    )


def _event(row: Any) -> dict[str, Any]:
    return {
        "at": utc(row.at),
        "user": row.user,
        "status": row.status,
        "detail": json.loads(row.detail or "{}"),
    }


def _case(
    row: Any, studies_: tuple[str, ...], history: tuple[dict[str, Any], ...], count: int = -1
) -> Case:
    return Case(
        ref=row.ref,
        issuer=row.issuer,
        pseudonym=row.pseudonym,
        status=row.status,
        detail=json.loads(row.detail or "{}"),
        opened_at=utc(row.opened_at),
        updated_at=utc(row.updated_at),
        updated_by=row.updated_by,
        new_imaging=bool(row.new_imaging),
        study_count=len(studies_) if count < 0 else count,
        studies=studies_,
        history=history,
    )
