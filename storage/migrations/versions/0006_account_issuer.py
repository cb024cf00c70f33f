"""A web account belongs to a hospital: its issuer, for STOW-RS uploads

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Existing accounts get none: an administrator sets each one's hospital
    # (`dicomnode user issuer`); until then the account may view but not store.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issuer", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("issuer")
