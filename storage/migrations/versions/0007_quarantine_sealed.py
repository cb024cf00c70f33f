"""Held instances encrypted at rest: which rows are sealed, and their SOP class

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 12:00:01.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Rows held before this revision point at plaintext blobs (sealed false):
    # the node encrypts them at its next start (`Archive.seal_plaintext_held`),
    # which needs the key, so not here.
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sopclassuid", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("sealed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_column("sealed")
        batch_op.drop_column("sopclassuid")
