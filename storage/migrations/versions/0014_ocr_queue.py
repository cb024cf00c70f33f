"""Instances held until OCR has read them (deferred verification)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 08:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "ocr_queue",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sopinstanceuid", sa.String(length=64), nullable=False),
        sa.Column("cleaned", sa.Boolean(), nullable=False),
        sa.Column("rectangles", sa.Text(), server_default="[]", nullable=False),
        sa.Column("identity", sa.LargeBinary(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("copies", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("sopinstanceuid"),
    )


def downgrade() -> None:
    op.drop_table("ocr_queue")
