"""One version number per study plan

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 03:32:49.015657

"""

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_plans_study_version", ["study_uid", "version"])


def downgrade() -> None:
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_constraint("uq_plans_study_version", type_="unique")
