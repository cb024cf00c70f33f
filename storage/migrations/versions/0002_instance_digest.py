"""Instance digest: SHA-256 of each blob, for dicomnode check

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 03:04:21.291380

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))

    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_column("sha256")

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("sha256")
