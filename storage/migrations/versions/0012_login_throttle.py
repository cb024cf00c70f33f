"""Login attempts counted per user name and per client address, shared by every process

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-15 12:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Empty: failures counted in the audit trail before this revision start afresh.
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.Column("not_before", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_login_throttle_last", "login_throttle", ["last"])


def downgrade() -> None:
    op.drop_index("ix_login_throttle_last", table_name="login_throttle")
    op.drop_table("login_throttle")
