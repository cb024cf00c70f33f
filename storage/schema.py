"""SQL tables of the index, generated from the attribute table in `keys`.

SQLAlchemy Core keeps the statements portable: SQLite (WAL) by default,
PostgreSQL when several node processes share one index.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    false,
)
from sqlalchemy import (
    Index as SqlIndex,
)

from storage.keys import UNIQUE_KEY, Attribute, Level, attributes_at

INTEGER_VRS = {"IS", "US", "UL", "SS", "SL"}
# Longest indexed text (PostgreSQL enforces it; the stored file keeps the
# whole value): far above any VR's limit, reached only by malformed senders.
TEXT_LENGTH = 1024

metadata = MetaData()


def folded_column(attribute: Attribute) -> str:
    """Name of the case-folded copy kept for PN matching (SQL lower() is ASCII-only)."""
    return attribute.column + "_folded"


def _columns(level: Level) -> list[Column]:
    columns: list[Column] = []
    for attribute in attributes_at(level):
        if attribute.vr in INTEGER_VRS:
            columns.append(Column(attribute.column, Integer))
            continue
        nullable = attribute.vr != "UI" or attribute.level is Level.IMAGE
        columns.append(Column(attribute.column, String(TEXT_LENGTH), nullable=nullable))
        if attribute.vr == "PN":
            columns.append(Column(folded_column(attribute), String(TEXT_LENGTH)))
    return columns


# Foreign key of each table to its parent level.
PARENT_FK: dict[Level, str] = {
    Level.STUDY: "patient_pk",
    Level.SERIES: "study_pk",
    Level.IMAGE: "series_pk",
}

patients = Table(
    "patients",
    metadata,
    Column("pk", Integer, primary_key=True),
    # Who the patient is for the archive: PatientID, or for an instance sent
    # without one (it is Type 2) a key of its study, so that such patients are
    # never merged with each other.
    Column("patient_key", String(TEXT_LENGTH), nullable=False),
    *_columns(Level.PATIENT),
    UniqueConstraint("issuerofpatientid", "patient_key", name="uq_patient_issuer_key"),
)


def _child_table(name: str, level: Level, parent: Table, *extra: Column) -> Table:
    """A level below the patient: its parent key, its attributes, its unique UID."""
    unique = UNIQUE_KEY[level].lower()
    return Table(
        name,
        metadata,
        Column("pk", Integer, primary_key=True),
        Column(PARENT_FK[level], ForeignKey(parent.c.pk), nullable=False, index=True),
        *_columns(level),
        *extra,
        UniqueConstraint(unique, name=f"uq_{name}_uid"),
    )


studies = _child_table("studies", Level.STUDY, patients)
series = _child_table("series", Level.SERIES, studies)
instances = _child_table(
    "instances",
    Level.IMAGE,
    series,
    Column("blob_key", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    # SHA-256 of the blob as written (`dicomnode check` compares); NULL for
    # instances stored before revision 0002.
    Column("sha256", String(64)),
    Column("sending_ae", String(16)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # How many times this SOP Instance UID arrived (re-sends are common).
    Column("copies_received", Integer, nullable=False, default=1),
)

# The original identity of each study, sealed by the node (opaque bytes here):
# apart from the index tables, readable only with the linkage key.
linkage = Table(
    "linkage",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("pseudonym", String(64), nullable=False, index=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Which patient (pseudonym) each Study, Series and SOP Instance UID received
# instances are kept under belongs to: claimed by the first instance to bring
# it (INSERT … ON CONFLICT DO NOTHING, so of processes racing one wins), held
# or stored alike. Another patient's instance carrying the same UID is kept
# apart under UIDs of its own (`dicomnode.deid.pipeline`), so one study, series
# or instance never holds two children.
uid_owners = Table(
    "uid_owners",
    metadata,
    Column("uid", String(64), primary_key=True),
    Column("pseudonym", String(64), nullable=False),
    Column("level", String(8), nullable=False),  # study, series or instance
)

# Instances held back (e.g. burned-in text no rule can clean): stored apart,
# invisible to queries, the viewer and export, listed for the administrator.
# Their blobs are encrypted (`storage.archive`); size and sha256 are those of
# the encrypted blob, what is on disk.
quarantine = Table(
    "quarantine",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("sopinstanceuid", String(64), nullable=False, unique=True),
    Column("studyinstanceuid", String(64), nullable=False),
    Column("pseudonym", String(64), nullable=False),
    Column("issuer", String(TEXT_LENGTH), nullable=False),
    Column("modality", String(16)),
    Column("reason", String(256), nullable=False),
    Column("blob_key", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64)),
    Column("sending_ae", String(16)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # For the administrator's list (revision 0007; NULL until a row held
    # before it is sealed at a start).
    Column("sopclassuid", String(64)),
    # The blob is encrypted; false only for rows held before revision 0007,
    # whose plaintext blobs the next start encrypts.
    Column("sealed", Boolean, nullable=False, default=True, server_default=false()),
)

# The change feed (`storage.changes`): one row per instance stored or
# replaced, written in the store's own transaction; ids grow in commit order.
# AUTOINCREMENT on SQLite: an id is never used twice, even after pruning.
changes = Table(
    "changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # "stored" or "replaced"
    Column("sop_instance_uid", String(64), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    # The sending hospital as the index keys the patient, and the series'
    # modality: what forwarding routes match on.
    Column("issuer", String(TEXT_LENGTH), nullable=False),
    Column("modality", String(16)),
    Column("at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,
)

# How far each consumer of the feed got: the last change id it applied, moved
# in the transaction that applies the effect.
change_cursors = Table(
    "change_cursors",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("last_id", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

TABLES: dict[Level, Table] = {
    Level.PATIENT: patients,
    Level.STUDY: studies,
    Level.SERIES: series,
    Level.IMAGE: instances,
}

# The matching keys asked without a UID (name, ID, date, accession, modality)
# and the quota sum per sender: indexed, so queries stay fast well past
# 100,000 instances. PostgreSQL needs the pattern operator class for a
# prefix LIKE on the folded name under a non-C collation.
SqlIndex(
    "ix_patients_name_folded",
    patients.c.patientname_folded,
    postgresql_ops={"patientname_folded": "varchar_pattern_ops"},
)
SqlIndex("ix_patients_patientid", patients.c.patientid)
SqlIndex("ix_studies_studydate", studies.c.studydate)
SqlIndex("ix_studies_accessionnumber", studies.c.accessionnumber)
SqlIndex("ix_series_modality", series.c.modality)
SqlIndex("ix_instances_sending_ae", instances.c.sending_ae)
