"""The SQL index: patients, studies, series and instances, and queries on them."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, event, exists, func, literal, select, union_all
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from storage.accounts import Accounts
from storage.audit import AuditTrail
from storage.blobs import BlobRef
from storage.cases import Cases
from storage.changes import REPLACED, STORED, ChangeFeed, record_change
from storage.exports import ExportJobs
from storage.forwarding import ForwardQueue
from storage.keys import Level
from storage.migrate import upgrade
from storage.plans import Plans
from storage.private import create_private
from storage.query import Query, run_query
from storage.record import InstanceRecord
from storage.reports import Reports
from storage.rows import get_or_create, insert_for, reading, serialise, upsert_patient
from storage.schema import (
    instances,
    linkage,
    patients,
    quarantine,
    series,
    studies,
    uid_owners,
)
from storage.throttle import LoginThrottle
from storage.verifying import OcrQueue, OcrWait, done_in, enqueue_in, ocr_queue

# A transaction that lost a race to another process is run again this often.
_ATTEMPTS = 4
T = TypeVar("T")
# The sealed original identity of a study: (study UID, pseudonym, sealed).
LinkageRow = tuple[str, str, bytes]
# More rows a caller writes in a store's transaction (an audit record, a plan
# version), told the outcome: committed with the instance, or rolled back
# with it by what they raise.
AlsoWrite = Callable[[Connection, "StoreOutcome"], None]
# A re-sent instance: counted, whatever else happens to it.
_ONE_MORE_COPY = {instances.c.copies_received: instances.c.copies_received + 1}


class ClaimLost(Exception):
    """A UID looked at as free was claimed for another patient before the
    store's transaction could claim it: nothing is written; the caller
    de-identifies again, claiming first (`Index.claim_uids`)."""


def claim_in(conn: Connection, pseudonym: str, claims: dict[str, str]) -> None:
    """Claim ``claims`` (UID -> level) for ``pseudonym`` in the caller's
    transaction (a store's); `ClaimLost` if another patient holds one."""
    if not claims:
        return
    rows = [{"uid": u, "pseudonym": pseudonym, "level": lv} for u, lv in sorted(claims.items())]
    conn.execute(insert_for(conn, uid_owners).values(rows).on_conflict_do_nothing())
    taken = conn.execute(
        select(uid_owners.c.uid).where(
            uid_owners.c.uid.in_(sorted(claims)), uid_owners.c.pseudonym != pseudonym
        )
    ).first()
    if taken is not None:
        raise ClaimLost(pseudonym)


def add_copies_in(conn: Connection, sop_instance_uid: str, copies: int) -> None:
    """Count copies received before the instance was stored (while it
    waited for OCR), in the store's transaction."""
    if copies:
        conn.execute(
            instances.update()
            .where(instances.c.sopinstanceuid == sop_instance_uid)
            .values(copies_received=instances.c.copies_received + copies)
        )


class ForeignParent(ValueError):
    """The study or series an instance names is another patient's: it is not
    stored there (claims keep this from happening; this is the last guard)."""


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"


def _owner(record: InstanceRecord) -> tuple[str, str]:
    """(issuer, patient key): who the patient of ``record`` is to the index."""
    patient = record.columns[Level.PATIENT]
    return patient["issuerofpatientid"], patient["patient_key"]


def _patient_of(conn: Connection, table: Any, pk: int) -> tuple[str, str]:
    """(issuer, patient key) of the patient of a study, series or instance row."""
    joined = patients.join(studies, studies.c.patient_pk == patients.c.pk)
    if table is not studies:
        joined = joined.join(series, series.c.study_pk == studies.c.pk)
    if table is instances:
        joined = joined.join(instances, instances.c.series_pk == series.c.pk)
    query = select(patients.c.issuerofpatientid, patients.c.patient_key).select_from(joined)
    issuer, key = conn.execute(query.where(table.c.pk == pk)).one()
    return issuer, key


def _outcome(existing: int | None, replace: bool) -> StoreOutcome:
    """What storing an instance will be, told whether one is indexed."""
    if existing is None:
        return StoreOutcome.STORED
    return StoreOutcome.REPLACED if replace else StoreOutcome.DUPLICATE


def _keep_linkage(conn: Connection, row: LinkageRow) -> None:
    """The study's sealed identity, unless it has one (the first is kept).
    Looked for first: the common case (the study has it) takes no lock, so
    processes storing one study do not wait for each other's commits."""
    study_uid, pseudonym, sealed = row
    known = select(linkage.c.study_uid).where(linkage.c.study_uid == study_uid)
    if conn.execute(known).first() is not None:
        return
    values = {
        "study_uid": study_uid,
        "pseudonym": pseudonym,
        "sealed": sealed,
        "created_at": datetime.now(UTC),
    }
    conn.execute(insert_for(conn, linkage).values(**values).on_conflict_do_nothing())


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (C-FIND, the viewer) run beside the writer; FULL syncs
    # the WAL on every commit, so an acknowledged instance survives power loss.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # DICOM matching is case-sensitive except for PN (which uses folded columns).
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.close()


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite index (None: PostgreSQL or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_index_engine(url: str) -> Engine:
    """SQLite (WAL, synchronous) or PostgreSQL through psycopg 3.

    Parameters of a failed statement are names and IDs: ``hide_parameters``
    keeps them out of exception messages, which end up in logs. A new SQLite
    file is made 0600 before SQLite opens it, and SQLite gives its WAL,
    shared-memory and journal files the database's mode: the password
    hashes and sealed identities in it are the node user's alone.
    """
    if (database := sqlite_file(url)) is not None and database.parent.is_dir():
        create_private(database)
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        # Every association and web request may hold a connection briefly.
        # No pre-ping (a round trip per checkout, 10% of a small store): after
        # a database restart the first statement fails, SQLAlchemy drops the
        # whole pool, and writes are retried (`Index._transaction`).
        return create_engine(parsed, hide_parameters=True, pool_size=10, max_overflow=40)
    engine = create_engine(parsed, hide_parameters=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Index:
    """Records what the blob store holds; the blob is written first, then indexed."""

    def __init__(self, url: str, audit_key: bytes = b"") -> None:
        self.engine = create_index_engine(url)
        upgrade(self.engine)
        # SQLite has one writer at a time: taking turns in the process avoids
        # waiting on its file lock. PostgreSQL takes concurrent stores (rows
        # created ON CONFLICT, a lock per instance), so their blob fsyncs
        # overlap; only the last step, change row to commit, takes turns
        # across processes (the change feed's lock: ids visible in order).
        self._write_lock = threading.Lock()
        self._store_lock: Any = (
            contextlib.nullcontext()
            if self.engine.dialect.name == "postgresql"
            else self._write_lock
        )
        self.accounts = Accounts(self.engine, self._write_lock)
        self.plans = Plans(self.engine, self._write_lock)
        self.exports = ExportJobs(self.engine, self._write_lock)
        self.forwarding = ForwardQueue(self.engine, self._write_lock)
        self.changes = ChangeFeed(self.engine, self._write_lock)
        self.ocr_queue = OcrQueue(self.engine, self._write_lock)
        self.audit = AuditTrail(self.engine, self._write_lock, audit_key)
        self.cases = Cases(self.engine, self._write_lock, self.changes, self.audit)
        self.reports = Reports(self.engine, self._write_lock)
        self.throttle = LoginThrottle(self.engine, self._write_lock)
        # (issuer, patient, series UID) -> pk of series already indexed: the
        # common case (the next instance of a series) then costs one lookup
        # and one insert, and never files another patient's instance there.
        self._series_cache: dict[tuple[str, str, str], int] = {}

    def close(self) -> None:
        self.engine.dispose()

    def instance_blob(self, sop_instance_uid: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(instances.c.blob_key).where(instances.c.sopinstanceuid == sop_instance_uid)
            ).scalar_one_or_none()

    def _bytes(self, *conditions: Any) -> int:
        """Bytes indexed under each condition, added up (no blob is read)."""
        total = select(func.coalesce(func.sum(instances.c.size), 0))
        with self.engine.connect() as conn:
            return sum(int(conn.execute(total.where(c)).scalar_one()) for c in conditions)

    def total_size(self, sop_instance_uids: list[str]) -> int:
        """Bytes stored for these instances (500 UIDs per statement)."""
        uid = instances.c.sopinstanceuid
        chunks = range(0, len(sop_instance_uids), 500)
        return self._bytes(*(uid.in_(sop_instance_uids[i : i + 500]) for i in chunks))

    def bytes_from(self, sending_ae: str) -> int:
        """Bytes stored from one calling AE (for its quota)."""
        return self._bytes(instances.c.sending_ae == sending_ae)

    def add(
        self,
        record: InstanceRecord,
        blob: BlobRef,
        *,
        replace: bool,
        write_blob: Callable[[], None],
        linkage_row: LinkageRow | None = None,
        also: AlsoWrite | None = None,
        replacement: Callable[[], BlobRef] | None = None,
        after: Callable[[Connection], None] | None = None,
    ) -> tuple[StoreOutcome, str | None, str | None]:
        """Index one instance, creating its patient, study and series as needed;
        the outcome, the key of a held blob it supersedes and the key of the
        blob a replacement supersedes (both to delete after the commit).

        A replacement (``replace``) is written by ``replacement``, under a
        key of its own beside the live blob (never over it), and the row
        moves to that key in the commit: a failure or a crash before the
        commit leaves the stored version whole and indexed, and the blob it
        wrote is an orphan (`dicomnode.ops.check` sets it aside).

        One transaction writes the instance row, the study's sealed identity
        (``linkage_row``, unless the study has one), the change feed's row
        (`storage.changes`) and drops a held copy's quarantine row: all or
        nothing. A kept-first duplicate adds no change (it was fed when first
        stored). ``write_blob`` is called inside the transaction, after the
        duplicate check and before the insert: a kept-first duplicate writes
        nothing, and no index row ever points at a blob that is not yet
        durable. Another process storing the same instance waits for this one
        (a lock on the SOP Instance UID), then finds it and counts a
        duplicate; a conflict on a parent row (a stale cached series, a
        deadlock) is retried. A study or series of another patient raises
        `ForeignParent`, nothing written. ``also`` writes more rows in
        the transaction, before the blob; ``after``, once the instance's row
        is written (whatever the outcome).
        """
        cached = (*_owner(record), record.columns[Level.SERIES]["seriesinstanceuid"])
        if replace and replacement is None:
            raise ValueError("a replace writes its blob beside the live one: give replacement")
        outcome, series_pk, held, superseded = self._transaction(
            lambda conn: self._finished(
                conn,
                self._add(
                    conn, record, cached, blob, replace, write_blob, linkage_row, also, replacement
                ),
                after,
            ),
            on_retry=lambda: self._series_cache.pop(cached, None),
        )
        # Only once committed: a rolled-back series must not be remembered.
        if series_pk is not None:
            if len(self._series_cache) > 10_000:
                self._series_cache.clear()
            self._series_cache[cached] = series_pk
        return outcome, held, superseded

    def _transaction(
        self, work: Callable[[Connection], T], on_retry: Callable[[], object] = lambda: None
    ) -> T:
        """``work`` in one store transaction, run again when it lost a race to
        another process (a unique conflict, a deadlock) or its connection
        (a database restart: the pool then drops every old connection)."""
        for attempt in range(_ATTEMPTS):
            try:
                with self._store_lock, self.engine.begin() as conn:
                    return work(conn)
            except (IntegrityError, OperationalError):
                on_retry()
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _finished(conn: Connection, result: T, after: Callable[[Connection], None] | None) -> T:
        if after is not None:
            after(conn)
        return result

    def _add(
        self,
        conn: Connection,
        record: InstanceRecord,
        cached: tuple[str, str, str],
        blob: BlobRef,
        replace: bool,
        write_blob: Callable[[], None],
        linkage_row: LinkageRow | None,
        also: AlsoWrite | None = None,
        replacement: Callable[[], BlobRef] | None = None,
    ) -> tuple[StoreOutcome, int | None, str | None, str | None]:
        uid = record.sop_instance_uid
        serialise(conn, uid)
        found = conn.execute(
            select(instances.c.pk, instances.c.blob_key).where(instances.c.sopinstanceuid == uid)
        ).first()
        existing, live_key = (None, None) if found is None else tuple(found)
        held = conn.execute(
            quarantine.delete()
            .where(quarantine.c.sopinstanceuid == uid)
            .returning(quarantine.c.blob_key)
        ).scalar_one_or_none()
        if also is not None:
            also(conn, _outcome(existing, replace))
        if held is not None:
            done_in(conn, uid)  # stored: whatever waited for OCR of the held copy
        if existing is not None:
            if _patient_of(conn, instances, existing) != _owner(record):
                raise ForeignParent("the SOP Instance UID is another patient's instance")
            conn.execute(
                instances.update().where(instances.c.pk == existing).values(_ONE_MORE_COPY)
            )
            if not replace:
                return StoreOutcome.DUPLICATE, None, held, None
        series_pk = self._series_cache.get(cached)
        if series_pk is None:
            series_pk = self._add_parents(conn, record)
        if existing is None:
            write_blob()
        elif replacement is not None:  # checked by `add`
            blob = replacement()
        if linkage_row is not None:
            _keep_linkage(conn, linkage_row)
        row = {
            **record.columns[Level.IMAGE],
            "series_pk": series_pk,
            "blob_key": blob.key,
            "size": blob.size,
            "sha256": blob.sha256,
            "sending_ae": record.sending_ae,
            "received_at": record.received_at,
        }
        if existing is None:
            conn.execute(instances.insert().values(**row))
            record_change(conn, STORED, record)
            return StoreOutcome.STORED, series_pk, held, None
        conn.execute(instances.update().where(instances.c.pk == existing).values(**row))
        record_change(conn, REPLACED, record)
        superseded = live_key if live_key != blob.key else None
        return StoreOutcome.REPLACED, series_pk, held, superseded

    def _add_parents(self, conn: Connection, record: InstanceRecord) -> int:
        """Patient (demographics refreshed), study and series of a series not
        seen yet; a study or series of another patient is refused."""
        patient = upsert_patient(conn, record.columns[Level.PATIENT])
        study = get_or_create(conn, Level.STUDY, record.columns[Level.STUDY], patient)
        if _patient_of(conn, studies, study) != _owner(record):
            raise ForeignParent("the Study Instance UID is another patient's study")
        series_pk = get_or_create(conn, Level.SERIES, record.columns[Level.SERIES], study)
        if _patient_of(conn, series, series_pk) != _owner(record):
            raise ForeignParent("the Series Instance UID is another patient's series")
        return series_pk

    def note_duplicate(self, sop_instance_uid: str, pseudonym: str) -> bool:
        """Count one more copy of an indexed instance of this patient; False
        if it is not indexed, or is another patient's. Nearly every instance
        is new: one read says so (stored, waiting for OCR, or neither)
        without taking the writer's turn."""
        stored = select(literal("stored")).where(instances.c.sopinstanceuid == sop_instance_uid)
        waiting = select(literal("waiting")).where(ocr_queue.c.sopinstanceuid == sop_instance_uid)
        known = reading(self.engine, lambda conn: conn.execute(union_all(stored, waiting)).first())
        if known is None:
            return False
        if known[0] == "waiting":
            return self.ocr_queue.count_copy(sop_instance_uid, pseudonym)
        statement = (
            instances.update()
            .where(
                instances.c.sopinstanceuid == sop_instance_uid,
                exists().where(
                    uid_owners.c.uid == sop_instance_uid, uid_owners.c.pseudonym == pseudonym
                ),
            )
            .values(_ONE_MORE_COPY)
        )
        return self._transaction(lambda conn: conn.execute(statement).rowcount > 0)

    def uid_owners(self, uids: Iterable[str]) -> dict[str, str]:
        """Who holds which of ``uids`` (UID -> pseudonym), read only."""
        wanted = sorted(set(uids))

        def owners(conn: Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(wanted), 500):
                found |= dict(
                    conn.execute(
                        select(uid_owners.c.uid, uid_owners.c.pseudonym).where(
                            uid_owners.c.uid.in_(wanted[start : start + 500])
                        )
                    ).all()
                )
            return found

        return reading(self.engine, owners)

    def claim_uids(
        self,
        pseudonym: str,
        claims: dict[str, str],
        others: Iterable[str],
        linkage_row: tuple[str, bytes] | None = None,
    ) -> dict[str, str]:
        """Claim ``claims`` (UID -> level) for the patient ``pseudonym``, and
        return those and ``others`` that another patient holds, with its
        pseudonym.

        The study's sealed identity is written by the store (`add`,
        `add_quarantined`), with the instance: an instance never stored
        leaves none behind. ``linkage_row`` (study UID, sealed) is for a
        caller that stores nothing: kept, the first of the study, only when
        no UID is taken.

        One transaction, so of two processes bringing one UID for two
        patients at once one wins (PostgreSQL makes the second INSERT wait
        for the first to commit) and the other is told.
        """
        rows = [{"uid": u, "pseudonym": pseudonym, "level": lv} for u, lv in sorted(claims.items())]
        asked = sorted({*claims, *others})

        def work(conn: Connection) -> dict[str, str]:
            conn.execute(insert_for(conn, uid_owners).values(rows).on_conflict_do_nothing())
            taken = conn.execute(
                select(uid_owners.c.uid, uid_owners.c.pseudonym).where(
                    uid_owners.c.uid.in_(asked), uid_owners.c.pseudonym != pseudonym
                )
            )
            found = {uid: owner for uid, owner in taken}
            if not found and linkage_row is not None:
                _keep_linkage(conn, (linkage_row[0], pseudonym, linkage_row[1]))
            return found

        return self._transaction(work)

    def linkage_for(self, value: str) -> list[tuple[str, str, bytes]]:
        """(study UID, pseudonym, sealed) for a pseudonym or a study UID."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(linkage.c.study_uid, linkage.c.pseudonym, linkage.c.sealed).where(
                    (linkage.c.pseudonym == value) | (linkage.c.study_uid == value)
                )
            ).all()
        return [tuple(row) for row in rows]

    def add_quarantined(
        self,
        record: InstanceRecord,
        blob: BlobRef,
        reason: str,
        write_blob: Callable[[], None],
        linkage_row: LinkageRow | None = None,
        also: Callable[[Connection], None] | None = None,
        ocr: OcrWait | None = None,
    ) -> None:
        """Hold an instance: its quarantine row, the study's sealed identity
        (``linkage_row``) and ``also``'s rows (an audit record, written
        before the blob) in one transaction, after ``write_blob``. A held
        copy it replaces no longer waits for OCR (a verifier that read it
        then stores nothing); ``ocr``, this one does."""
        image, series_ = record.columns[Level.IMAGE], record.columns[Level.SERIES]
        row = {
            "sopinstanceuid": image["sopinstanceuid"],
            "studyinstanceuid": record.columns[Level.STUDY]["studyinstanceuid"],
            "pseudonym": record.columns[Level.PATIENT]["patientid"] or "",
            "issuer": record.columns[Level.PATIENT]["issuerofpatientid"],
            "modality": series_["modality"],
            "sopclassuid": image["sopclassuid"],
            "reason": reason[:256],
            "blob_key": blob.key,
            "sending_ae": record.sending_ae,
            "received_at": record.received_at,
            "sealed": True,  # `Archive.quarantine` writes encrypted blobs only
        }

        def hold(conn: Connection) -> None:
            serialise(conn, row["sopinstanceuid"])
            conn.execute(
                quarantine.delete().where(quarantine.c.sopinstanceuid == row["sopinstanceuid"])
            )
            if also is not None:
                also(conn)
            done_in(conn, row["sopinstanceuid"])
            if ocr is not None:
                enqueue_in(conn, row["sopinstanceuid"], ocr)
            write_blob()  # a stream's size and digest are known from here on
            conn.execute(quarantine.insert().values(**row, size=blob.size, sha256=blob.sha256))
            if linkage_row is not None:
                _keep_linkage(conn, linkage_row)

        self._transaction(hold)

    def quarantined_blob(self, sop_instance_uid: str) -> str | None:
        found = self.held_blob(sop_instance_uid)
        return None if found is None else found[0]

    def held_blob(self, sop_instance_uid: str) -> tuple[str, bool, str | None] | None:
        """A held instance's blob key, whether its row says it is sealed, and
        the SHA-256 of the blob as written (None on rows from before digests)."""
        c = quarantine.c
        with self.engine.connect() as conn:
            found = conn.execute(
                select(c.blob_key, c.sealed, c.sha256).where(c.sopinstanceuid == sop_instance_uid)
            ).first()
        return None if found is None else (str(found[0]), bool(found[1]), found[2])

    def remove_quarantined(self, sop_instance_uid: str) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(quarantine.delete().where(quarantine.c.sopinstanceuid == sop_instance_uid))
            done_in(conn, sop_instance_uid)

    def keep_held(
        self, sop_instance_uid: str, reason: str, also: Callable[[Connection], None]
    ) -> bool:
        """A held instance stays held, now for ``reason`` (OCR's finding),
        no longer waiting for OCR, with ``also``'s rows (its audit record) in
        the same transaction; False if it is not held any more."""

        def keep(conn: Connection) -> bool:
            serialise(conn, sop_instance_uid)
            also(conn)
            held = conn.execute(
                quarantine.update()
                .where(quarantine.c.sopinstanceuid == sop_instance_uid)
                .values(reason=reason[:256])
            ).rowcount
            done_in(conn, sop_instance_uid)
            return bool(held)

        return self._transaction(keep)

    def quarantined(self, sop_instance_uid: str | None = None) -> list[dict[str, Any]]:
        """Held instances (oldest first), or the one with this SOP Instance UID."""
        query = select(quarantine).order_by(quarantine.c.pk)
        if sop_instance_uid is not None:
            query = query.where(quarantine.c.sopinstanceuid == sop_instance_uid)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def unsealed_quarantined(self) -> list[str]:
        """SOP Instance UIDs of rows held before held blobs were encrypted."""
        with self.engine.connect() as conn:
            query = select(quarantine.c.sopinstanceuid).where(quarantine.c.sealed.is_(False))
            return list(conn.execute(query).scalars())

    def reseal_quarantined(
        self,
        sop_instance_uid: str,
        reseal: Callable[[dict[str, Any]], tuple[BlobRef, str | None]],
    ) -> bool:
        """Record that a held row's blob is now encrypted: ``reseal`` (given
        the row) encrypts it and returns the new blob and the SOP class.

        The row is claimed by an UPDATE before ``reseal`` runs, so of node
        processes starting together one seals each blob and the others find
        it done (False). A start that stopped between the blob and the commit
        leaves a sealed blob under an unsealed row, which ``reseal`` accepts.
        """
        this = quarantine.c.sopinstanceuid == sop_instance_uid

        def work(conn: Connection) -> bool:
            claim = quarantine.update().where(this, quarantine.c.sealed.is_(False))
            if conn.execute(claim.values(sealed=False)).rowcount == 0:
                return False
            row = dict(conn.execute(select(quarantine).where(this)).one()._mapping)
            blob, sop_class = reseal(row)
            conn.execute(
                quarantine.update()
                .where(this)
                .values(
                    size=blob.size,
                    sha256=blob.sha256,
                    sealed=True,
                    sopclassuid=row["sopclassuid"] or sop_class,
                )
            )
            return True

        return self._transaction(work)

    def find(self, query: Query) -> Iterator[dict[str, Any]]:
        """Stream matching rows; the connection stays open while they are consumed."""
        with self.engine.connect() as conn:
            yield from run_query(conn, query)

    def stats(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            counts: dict[str, Any] = {
                name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in (
                    ("patients", patients),
                    ("studies", studies),
                    ("series", series),
                    ("instances", instances),
                )
            }
            size, copies = conn.execute(
                select(
                    func.coalesce(func.sum(instances.c.size), 0),
                    func.coalesce(func.sum(instances.c.copies_received), 0),
                )
            ).one()
            counts["bytes"] = int(size)
            counts["duplicates_received"] = int(copies) - counts["instances"]
            counts["modalities"] = dict(
                conn.execute(
                    select(series.c.modality, func.count(instances.c.pk))
                    .join(instances, instances.c.series_pk == series.c.pk)
                    .group_by(series.c.modality)
                ).all()
            )
            counts["sending_aes"] = {
                ae or "(import)": n
                for ae, n in conn.execute(
                    select(instances.c.sending_ae, func.count()).group_by(instances.c.sending_ae)
                )
            }
            counts["held"] = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
            counts["awaiting_ocr"] = conn.execute(
                select(func.count()).select_from(ocr_queue)
            ).scalar_one()
        return counts
