"""Referral cases: one per pseudonymous child and referring hospital

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 11:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=16), nullable=False),
        sa.Column("issuer", sa.String(length=1024), nullable=False),
        sa.Column("pseudonym", sa.String(length=1024), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), server_default="{}", nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("new_imaging", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("ref"),
        sa.UniqueConstraint("issuer", "pseudonym", name="uq_cases_child"),
    )
    op.create_table(
        "case_studies",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("study_uid"),
    )
    op.create_index("ix_case_studies_case_pk", "case_studies", ["case_pk"])
    op.create_table(
        "case_history",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), server_default="{}", nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.pk"]),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_case_history_case_pk", "case_history", ["case_pk"])


def downgrade() -> None:
    op.drop_index("ix_case_history_case_pk", table_name="case_history")
    op.drop_table("case_history")
    op.drop_index("ix_case_studies_case_pk", table_name="case_studies")
    op.drop_table("case_studies")
    op.drop_table("cases")
