"""Consultation reports, the queue rows that carry them, case notes, e-mails told

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 13:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "case_reports",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("history_pk", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=True),
        sa.Column("language", sa.String(length=8), server_default="en", nullable=False),
        sa.Column("destination", sa.String(length=16), nullable=True),
        sa.Column("content", sa.Text(), server_default="{}", nullable=False),
        sa.Column("pdf_uid", sa.String(length=64), nullable=True),
        sa.Column("uids", sa.Text(), server_default="[]", nullable=False),
        sa.Column("study_uid", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.pk"]),
        sa.ForeignKeyConstraint(["history_pk"], ["case_history.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("history_pk"),
    )
    op.create_index("ix_case_reports_case_pk", "case_reports", ["case_pk"])
    op.create_table(
        "case_notes",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.pk"]),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_case_notes_case_pk", "case_notes", ["case_pk"])
    with op.batch_alter_table("forward_queue") as batch:
        batch.add_column(sa.Column("report_pk", sa.Integer(), nullable=True))
    with op.batch_alter_table("case_history") as batch:
        batch.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
    # Nobody is told by e-mail of what happened before the upgrade.
    op.execute("UPDATE case_history SET notified_at = at")
    # Decisions (and requests for imaging) made before reports existed are
    # never sent by an upgrade.
    op.execute(
        "INSERT INTO case_reports (case_pk, history_pk, created_at, state, language, content, uids)"
        " SELECT case_pk, pk, at, 'predates', 'en', '{}', '[]' FROM case_history"
        " WHERE status IN ('more-imaging', 'accepted', 'surgery', 'declined')"
    )


def downgrade() -> None:
    with op.batch_alter_table("case_history") as batch:
        batch.drop_column("notified_at")
    with op.batch_alter_table("forward_queue") as batch:
        batch.drop_column("report_pk")
    op.drop_index("ix_case_notes_case_pk", table_name="case_notes")
    op.drop_table("case_notes")
    op.drop_index("ix_case_reports_case_pk", table_name="case_reports")
    op.drop_table("case_reports")
