"""A web account sees its hospitals' patients: the scope of each account

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 12:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # NULL for every existing account: each keeps seeing every hospital's
    # patients, as before, so the upgrade locks nobody out. An administrator
    # narrows them (`dicomnode user sees NAME --sees ISSUERS`); new accounts
    # with a hospital see only its patients unless told otherwise.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sees", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("sees")
