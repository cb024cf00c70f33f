"""Closure plans: every save is a new version, none is overwritten."""

from __future__ import annotations

import json
import threading
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
    func,
    select,
)
from sqlalchemy.engine import Engine

from storage.rows import serialise
from storage.schema import metadata

plans = Table(
    "plans",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("study_uid", String(64), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("defect", String(64), nullable=False),
    Column("content", Text, nullable=False),  # JSON: slots, rims, proposal, note
    Column("author", String(64), nullable=False),
    Column("sr_uid", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("study_uid", "version", name="uq_plans_study_version"),
)


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
    ) -> int:
        with self._lock, self.engine.begin() as conn:
            serialise(conn, "plan:" + study_uid)  # two saves at once get two versions
            latest = conn.execute(
                select(func.max(plans.c.version)).where(plans.c.study_uid == study_uid)
            ).scalar_one_or_none()
            version = (latest or 0) + 1
            conn.execute(
                plans.insert().values(
                    study_uid=study_uid,
                    version=version,
                    defect=defect,
                    content=json.dumps(content, ensure_ascii=False),
                    author=author,
                    sr_uid=sr_uid,
                    created_at=datetime.now(UTC),
                )
            )
        return version

    def versions(self, study_uid: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(plans).where(plans.c.study_uid == study_uid).order_by(plans.c.version)
            ).all()
        return [
            {
                **dict(r._mapping),
                "content": json.loads(r.content),
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ]
