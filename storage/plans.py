"""Closure plans: several per study (one per defect, or numbered), every save
a new version of its plan, none overwritten; a version once signed is read
only (signing is the one change a row ever sees, made once)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    false,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from storage.rows import serialise
from storage.schema import metadata

NEW = "new"  # as ``plan``: start another plan even when one for the defect exists
# As ``based_on``: whatever version is latest. For the node's own tooling (`add`),
# never a request: an editor always says which version it opened.
LATEST = "latest"

plans = Table(
    "plans",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("study_uid", String(64), nullable=False, index=True),
    # Numbered within the study from 1 (revision 0008: older rows are plan 1).
    Column("plan", Integer, nullable=False, server_default="1"),
    Column("version", Integer, nullable=False),
    Column("defect", String(64), nullable=False),
    Column("content", Text, nullable=False),  # JSON: slots, rims, measurements, proposal, note
    Column("author", String(64), nullable=False),
    Column("sr_uid", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("signed_by", String(64)),
    Column("signed_at", DateTime(timezone=True)),
    Column("signed_sr_uid", String(64)),
    UniqueConstraint("study_uid", "plan", "version", name="uq_plans_study_plan_version"),
)


class PlanError(Exception):
    """English text with {placeholders} and their values, so the page can
    show it in the user's language."""

    def __init__(self, text: str, **values: Any) -> None:
        super().__init__(text.format(**values))
        self.text, self.values = text, values


class PlanConflict(PlanError):
    """A save or a signature the plan's state refuses (answered 409)."""


class UnknownPlan(PlanError):
    """No such plan or version in the study."""


@dataclass(frozen=True)
class Draft:
    """The plan and version a save will make (`Plans.draft`)."""

    plan: int
    version: int


@dataclass(frozen=True)
class Saved:
    pk: int
    plan: int
    version: int
    created_at: datetime


def _row(r: Any) -> dict[str, Any]:
    out = dict(r._mapping)
    out["content"] = json.loads(r.content)
    for key in ("created_at", "signed_at"):
        out[key] = out[key].isoformat() if out[key] else None
    return out


class Plans:
    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock

    def add(
        self,
        study_uid: str,
        defect: str,
        content: dict[str, Any],
        author: str,
        sr_uid: str | None,
        plan: int | str | None = None,
    ) -> int:
        """A new version (its number) of the plan ``save`` chooses, on top of
        whatever version is latest (the node's own tooling, not an editor)."""
        saved = self.save(study_uid, defect, content, author, sr_uid, plan=plan, based_on=LATEST)
        return saved.version

    def save(
        self,
        study_uid: str,
        defect: str,
        content: dict[str, Any],
        author: str,
        sr_uid: str | None,
        *,
        plan: int | str | None = None,
        based_on: int | str | None = None,
    ) -> Saved:
        """A new version of ``plan``: a number (it must exist), NEW, or None
        for the study's latest plan of ``defect`` (a new plan when it has
        none). ``based_on`` is the version the editor opened, required for
        a plan that exists: a newer one saved meanwhile (or a save that does
        not say what it continues) is a conflict, not something to supersede
        unseen."""
        with self._lock, self.engine.begin() as conn:
            return self.save_in(
                conn, study_uid, defect, content, author, sr_uid, plan=plan, based_on=based_on
            )

    def draft(
        self,
        study_uid: str,
        defect: str,
        *,
        plan: int | str | None = None,
        based_on: int | str | None = None,
    ) -> Draft:
        """The plan and version a `save` would make now, refused as it would
        be: what its report names before anything is written."""
        with self.engine.connect() as conn:
            number, version = _next(conn, study_uid, defect, plan, based_on)
        return Draft(number, version)

    def save_in(
        self,
        conn: Connection,
        study_uid: str,
        defect: str,
        content: dict[str, Any],
        author: str,
        sr_uid: str | None,
        *,
        plan: int | str | None = None,
        based_on: int | str | None = None,
        expect: Draft | None = None,
    ) -> Saved:
        """`save` in the caller's transaction (the store of the version's
        report: one commit, no version without its report nor the other way
        round; the caller holds the index's write lock). ``expect``: the
        `draft` the report was made for; another save that came first since
        is a conflict."""
        text = json.dumps(content, ensure_ascii=False, allow_nan=False)
        _take_turn(conn, study_uid)  # two saves at once: two versions
        number, version = _next(conn, study_uid, defect, plan, based_on)
        if expect is not None and (number, version) != (expect.plan, expect.version):
            raise PlanConflict(
                "plan {plan} was saved by someone else meanwhile: reopen it", plan=expect.plan
            )
        now = datetime.now(UTC)
        pk = conn.execute(
            plans.insert()
            .values(
                study_uid=study_uid,
                plan=number,
                version=version,
                defect=defect,
                content=text,
                author=author,
                sr_uid=sr_uid,
                created_at=now,
            )
            .returning(plans.c.pk)
        ).scalar_one()
        return Saved(pk, number, version, now)

    def discard(self, saved: Saved) -> None:
        """Take back a version whose report could not be stored (the one
        delete there is: of a row just made, never signed)."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(delete(plans).where(plans.c.pk == saved.pk, plans.c.signed_at.is_(None)))

    def versions(self, study_uid: str) -> list[dict[str, Any]]:
        """Every version of every plan of the study, by plan then version."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(plans)
                .where(plans.c.study_uid == study_uid)
                .order_by(plans.c.plan, plans.c.version)
            ).all()
        return [_row(r) for r in rows]

    def latest(self, study_uid: str) -> list[dict[str, Any]]:
        """The latest version of each plan of the study, by plan."""
        with self.engine.connect() as conn:
            rows = _latest_versions(conn, study_uid)
        return [_row(rows[n]) for n in sorted(rows)]

    def get(self, study_uid: str, plan: int, version: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(plans).where(_version(study_uid, plan, version))).first()
        return _row(row) if row else None

    def claim_signature(self, study_uid: str, plan: int, version: int, user: str) -> dict:
        """Mark the version signed by ``user`` (once: a second signature, or
        two at once, is a PlanConflict; so is signing a version a later one
        supersedes, since the signature would vouch for what is no longer
        the plan); the row as signed."""
        now = datetime.now(UTC)
        with self._lock, self.engine.begin() as conn:
            _take_turn(conn, study_uid)  # a save and a signature at once: one after the other
            newest = _latest_versions(conn, study_uid).get(plan)
            if newest is not None and newest.version > version:
                raise PlanConflict(
                    "version {version} of plan {plan} is superseded by version {latest}: "
                    "only the latest version can be signed",
                    plan=plan,
                    version=version,
                    latest=newest.version,
                )
            claimed = conn.execute(
                update(plans)
                .where(_version(study_uid, plan, version), plans.c.signed_at.is_(None))
                .values(signed_by=user, signed_at=now)
            ).rowcount
            row = conn.execute(select(plans).where(_version(study_uid, plan, version))).first()
        if row is None:
            raise UnknownPlan(
                "the study has no version {version} of plan {plan}", plan=plan, version=version
            )
        if not claimed:
            raise PlanConflict(
                "version {version} of plan {plan} is already signed: "
                "save a new version to change it",
                plan=plan,
                version=version,
            )
        return _row(row)

    def finish_signature(self, study_uid: str, plan: int, version: int, sr_uid: str) -> None:
        """Record the signed report of a version just claimed."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                update(plans)
                .where(_version(study_uid, plan, version), plans.c.signed_sr_uid.is_(None))
                .values(signed_sr_uid=sr_uid)
            )

    def release_signature(self, study_uid: str, plan: int, version: int) -> None:
        """Undo a claim whose signed report could not be stored."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                update(plans)
                .where(_version(study_uid, plan, version), plans.c.signed_sr_uid.is_(None))
                .values(signed_by=None, signed_at=None)
            )


def _next(
    conn: Connection,
    study_uid: str,
    defect: str,
    plan: int | str | None,
    based_on: int | str | None,
) -> tuple[int, int]:
    """(plan, version) of the next save of ``plan`` (see `Plans.save`), or
    the conflict that refuses it."""
    latest = _latest_versions(conn, study_uid)
    if plan is None:
        mine = [n for n, row in latest.items() if row.defect == defect]
        plan = max(mine) if mine else NEW
    if plan == NEW:
        return max(latest, default=0) + 1, 1
    assert isinstance(plan, int)
    current = latest.get(plan)
    if current is None:
        raise UnknownPlan("the study has no plan {plan}", plan=plan)
    if current.defect != defect:
        raise PlanConflict(
            "plan {plan} is for {defect}: start a new plan for another defect",
            plan=plan,
            defect=current.defect,
        )
    if based_on is None:
        raise PlanConflict(
            "plan {plan} already has version {version}: save from the version "
            "you opened (based_on)",
            plan=plan,
            version=current.version,
        )
    if based_on not in (current.version, LATEST):
        raise PlanConflict(
            "plan {plan} has a newer version ({version}) than the one opened ({opened}): reopen it",
            plan=plan,
            version=current.version,
            opened=based_on,
        )
    return plan, current.version + 1


def _take_turn(conn: Connection, study_uid: str) -> None:
    """Serialise the saves of a study's plans across node processes before
    anything is read: PostgreSQL by an advisory lock; SQLite by taking its
    one writer's lock with a write that changes nothing, so a second process
    waits instead of reading the number the first is about to use."""
    serialise(conn, "plan:" + study_uid)
    if conn.dialect.name == "sqlite":
        conn.execute(update(plans).where(false()).values(version=plans.c.version))


def _version(study_uid: str, plan: int, version: int) -> Any:
    return and_(plans.c.study_uid == study_uid, plans.c.plan == plan, plans.c.version == version)


def _latest_versions(conn: Connection, study_uid: str) -> dict[int, Any]:
    """Plan number -> its latest row."""
    newest = (
        select(plans.c.plan, func.max(plans.c.version).label("version"))
        .where(plans.c.study_uid == study_uid)
        .group_by(plans.c.plan)
        .subquery()
    )
    rows = conn.execute(
        select(plans)
        .join(
            newest,
            and_(plans.c.plan == newest.c.plan, plans.c.version == newest.c.version),
        )
        .where(plans.c.study_uid == study_uid)
    ).all()
    return {r.plan: r for r in rows}
