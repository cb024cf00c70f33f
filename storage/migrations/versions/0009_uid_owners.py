"""Each Study, Series and SOP Instance UID belongs to one patient

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

# What the archive already holds claims its UIDs: stored studies, series and
# instances for their patient, then held instances and sealed identities (a
# study only held so far). The first claim of a UID stands.
_PATIENT = "JOIN patients p ON p.pk = s.patient_pk"
_WHO = "COALESCE(p.patientid, p.patient_key)"  # the pseudonym
_CLAIMS = (
    f"SELECT s.studyinstanceuid, {_WHO}, 'study' FROM studies s {_PATIENT}",
    f"SELECT se.seriesinstanceuid, {_WHO}, 'series' FROM series se "
    f"JOIN studies s ON s.pk = se.study_pk {_PATIENT}",
    f"SELECT i.sopinstanceuid, {_WHO}, 'instance' FROM instances i "
    f"JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk {_PATIENT}",
    "SELECT q.sopinstanceuid, q.pseudonym, 'instance' FROM quarantine q",
    "SELECT q.studyinstanceuid, q.pseudonym, 'study' FROM quarantine q",
    "SELECT l.study_uid, l.pseudonym, 'study' FROM linkage l",
)


def upgrade() -> None:
    op.create_table(
        "uid_owners",
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("uid"),
    )
    for claims in _CLAIMS:
        # "WHERE true": SQLite's parser needs a WHERE before ON CONFLICT here.
        op.execute(
            f"INSERT INTO uid_owners (uid, pseudonym, level) {claims} "
            "WHERE true ON CONFLICT DO NOTHING"
        )


def downgrade() -> None:
    op.drop_table("uid_owners")
