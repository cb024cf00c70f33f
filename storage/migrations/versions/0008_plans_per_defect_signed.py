"""Several plans per study, each versioned; a version can be signed

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plans saved before this revision (one plan per study) become plan 1 of
    # their study, versions and content as they were, unsigned.
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plan", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("signed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("signed_sr_uid", sa.String(length=64), nullable=True))
        batch_op.drop_constraint("uq_plans_study_version", type_="unique")
        batch_op.create_unique_constraint(
            "uq_plans_study_plan_version", ["study_uid", "plan", "version"]
        )


def downgrade() -> None:
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_constraint("uq_plans_study_plan_version", type_="unique")
        batch_op.create_unique_constraint("uq_plans_study_version", ["study_uid", "version"])
        batch_op.drop_column("signed_sr_uid")
        batch_op.drop_column("signed_at")
        batch_op.drop_column("signed_by")
        batch_op.drop_column("plan")
