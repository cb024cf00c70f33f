"""Indexes on the matching keys asked without a UID

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 04:07:21.826885

"""

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index("ix_instances_sending_ae", ["sending_ae"], unique=False)

    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patients_name_folded",
            ["patientname_folded"],
            unique=False,
            postgresql_ops={"patientname_folded": "varchar_pattern_ops"},
        )
        batch_op.create_index("ix_patients_patientid", ["patientid"], unique=False)

    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index("ix_series_modality", ["modality"], unique=False)

    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.create_index("ix_studies_accessionnumber", ["accessionnumber"], unique=False)
        batch_op.create_index("ix_studies_studydate", ["studydate"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index("ix_studies_studydate")
        batch_op.drop_index("ix_studies_accessionnumber")

    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index("ix_series_modality")

    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index("ix_patients_patientid")
        batch_op.drop_index(
            "ix_patients_name_folded", postgresql_ops={"patientname_folded": "varchar_pattern_ops"}
        )

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index("ix_instances_sending_ae")
