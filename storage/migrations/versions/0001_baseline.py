"""Baseline: the index as created before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# The audit trail is append-only in the database itself, not only in the code.
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
    for verb in ("UPDATE", "DELETE")
]
POSTGRES_TRIGGERS = [
    "CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'the audit trail is append-only'; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=256), nullable=False),
        sa.Column("detail", sa.String(length=2048), nullable=False),
        sa.Column("prev", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_event"), ["event"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_user"), ["user"], unique=False)

    op.create_table(
        "exports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("cohort", sa.Text(), nullable=False),
        sa.Column("linkable", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "forward_queue",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("forward_queue", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_forward_queue_destination"), ["destination"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_forward_queue_state"), ["state"], unique=False)

    op.create_table(
        "linkage",
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("study_uid"),
    )
    with op.batch_alter_table("linkage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_linkage_pseudonym"), ["pseudonym"], unique=False)

    op.create_table(
        "patients",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_key", sa.String(length=1024), nullable=False),
        sa.Column("patientid", sa.String(length=1024), nullable=True),
        sa.Column("issuerofpatientid", sa.String(length=1024), nullable=True),
        sa.Column("patientname", sa.String(length=1024), nullable=True),
        sa.Column("patientname_folded", sa.String(length=1024), nullable=True),
        sa.Column("patientbirthdate", sa.String(length=1024), nullable=True),
        sa.Column("patientsex", sa.String(length=1024), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("issuerofpatientid", "patient_key", name="uq_patient_issuer_key"),
    )
    op.create_table(
        "plans",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("defect", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("sr_uid", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plans_study_uid"), ["study_uid"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sopinstanceuid", sa.String(length=64), nullable=False),
        sa.Column("studyinstanceuid", sa.String(length=64), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=1024), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("blob_key", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sending_ae", sa.String(length=16), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("sopinstanceuid"),
    )
    op.create_table(
        "users",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "studies",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("studyinstanceuid", sa.String(length=1024), nullable=False),
        sa.Column("studydate", sa.String(length=1024), nullable=True),
        sa.Column("studytime", sa.String(length=1024), nullable=True),
        sa.Column("accessionnumber", sa.String(length=1024), nullable=True),
        sa.Column("studyid", sa.String(length=1024), nullable=True),
        sa.Column("studydescription", sa.String(length=1024), nullable=True),
        sa.Column("referringphysicianname", sa.String(length=1024), nullable=True),
        sa.Column("referringphysicianname_folded", sa.String(length=1024), nullable=True),
        sa.Column("patientage", sa.String(length=1024), nullable=True),
        sa.Column("patientsize", sa.String(length=1024), nullable=True),
        sa.Column("patientweight", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.pk"],
        ),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("studyinstanceuid", name="uq_studies_uid"),
    )
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studies_patient_pk"), ["patient_pk"], unique=False)

    op.create_table(
        "series",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("seriesinstanceuid", sa.String(length=1024), nullable=False),
        sa.Column("modality", sa.String(length=1024), nullable=True),
        sa.Column("seriesnumber", sa.Integer(), nullable=True),
        sa.Column("seriesdescription", sa.String(length=1024), nullable=True),
        sa.Column("seriesdate", sa.String(length=1024), nullable=True),
        sa.Column("seriestime", sa.String(length=1024), nullable=True),
        sa.Column("bodypartexamined", sa.String(length=1024), nullable=True),
        sa.Column("manufacturer", sa.String(length=1024), nullable=True),
        sa.Column("manufacturermodelname", sa.String(length=1024), nullable=True),
        sa.Column("stationname", sa.String(length=1024), nullable=True),
        sa.Column("institutionname", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["studies.pk"],
        ),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("seriesinstanceuid", name="uq_series_uid"),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_series_study_pk"), ["study_pk"], unique=False)

    op.create_table(
        "instances",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("sopinstanceuid", sa.String(length=1024), nullable=True),
        sa.Column("sopclassuid", sa.String(length=1024), nullable=True),
        sa.Column("instancenumber", sa.Integer(), nullable=True),
        sa.Column("numberofframes", sa.Integer(), nullable=True),
        sa.Column("contentdate", sa.String(length=1024), nullable=True),
        sa.Column("contenttime", sa.String(length=1024), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column("availabletransfersyntaxuid", sa.String(length=1024), nullable=True),
        sa.Column("blob_key", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sending_ae", sa.String(length=16), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("copies_received", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_pk"],
            ["series.pk"],
        ),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("sopinstanceuid", name="uq_instances_uid"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_series_pk"), ["series_pk"], unique=False)

    triggers = POSTGRES_TRIGGERS if op.get_bind().dialect.name == "postgresql" else SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only() CASCADE")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_series_pk"))

    op.drop_table("instances")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_study_pk"))

    op.drop_table("series")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studies_patient_pk"))

    op.drop_table("studies")
    op.drop_table("users")
    op.drop_table("quarantine")
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plans_study_uid"))

    op.drop_table("plans")
    op.drop_table("patients")
    with op.batch_alter_table("linkage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_linkage_pseudonym"))

    op.drop_table("linkage")
    with op.batch_alter_table("forward_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_forward_queue_state"))
        batch_op.drop_index(batch_op.f("ix_forward_queue_destination"))

    op.drop_table("forward_queue")
    op.drop_table("exports")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_user"))
        batch_op.drop_index(batch_op.f("ix_audit_log_event"))
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))

    op.drop_table("audit_log")
    op.drop_table("audit_head")
