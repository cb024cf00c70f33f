"""The one ingest pipeline: every instance, whatever door it came through.

    check structure -> read header -> validate -> DE-IDENTIFY -> store (blob, index)

C-STORE, ``dicomnode import`` and STOW-RS all build an `Incoming` and call
`Ingestor.ingest`; the node's own SRs (`Ingestor.ingest_own`) and held
instances an administrator releases (`Ingestor.release`) take the same
store, with the same checks (room on the disk, a UID of another patient, a
write that fails) and answers. The result carries the DICOM status to
answer with; Success is returned only after the archive made blob and index
durable, and is about that store alone: its audit records go in its own
transaction, what follows a store (forwarding) reads the change feed the
store wrote there too (`storage.changes`), and nothing done after the
commit turns a stored instance into a failure.

A door hands over the data set in memory, or (above the spool threshold) in
a spool file: then only its header is decoded and its pixel data streams
from the spool to the archive, so memory does not grow with the instance.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from io import BytesIO
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from sqlalchemy import Connection

from dicomnode.config import Config, deid_setup
from dicomnode.deid.pipeline import (
    AWAITING_OCR,
    Deidentified,
    Deidentifier,
    encode,
    original_identity,
)
from dicomnode.deid.plausible import real_date
from dicomnode.deid.values import parse_date
from dicomnode.ingest.validate import (
    HELD_FOR_REVIEW,
    OUT_OF_RESOURCES,
    PIXEL_DATA_SHORT,
    PROCESSING_FAILURE,
    UNREADABLE,
    Rejection,
    expected_native_pixel_bytes,
    validate,
)
from dicomnode.logs import quiet_libraries
from dicomnode.media.deflate import inflate
from dicomnode.media.filemeta import file_meta
from dicomnode.media.integrity import Layout, StructureError, check_structure
from dicomnode.media.spool import Pieces, Spool, SpoolFile
from dicomnode.status import DIFFERENT_STUDY, SUCCESS
from storage.archive import Archive, DuplicatePolicy
from storage.audit import MINOR_FAILURE
from storage.index import AlsoWrite, ClaimLost, ForeignParent, LinkageRow, StoreOutcome, claim_in
from storage.keys import Level
from storage.record import InstanceRecord, is_placeholder_id, record_from_dataset
from storage.rows import utc
from storage.values import normalise_issuer
from storage.verifying import AlreadyWaiting, OcrWait, waiting_in

log = logging.getLogger(__name__)
# The audit event of an instance held (at the ingest, or by deferred OCR).
HOLD_EVENT = "quarantine-hold"


@dataclass(frozen=True)
class Incoming:
    """An encoded dataset (no file meta) and what is known of where it came from."""

    # In memory, or in a spool file (`Ingestor.spool`) for a large one: the
    # door keeps ownership and closes it after `Ingestor.ingest`.
    data: bytes | SpoolFile
    transfer_syntax: str
    calling_ae: str | None = None
    # Who assigned the PatientIDs, when the door knows better than the AE table
    # (``dicomnode import --issuer``).
    issuer: str | None = None
    # Where it came from when no AE called (e.g. "STOW-RS amina"), for the
    # audit trail; else the calling AE, else "import".
    source: str | None = None
    expected_sop_class: str | None = None
    expected_sop_instance: str | None = None
    # STOW-RS ``POST /studies/{study}``: the node's (de-identified) study the
    # instance must land in; refused (DIFFERENT_STUDY) before it is stored.
    study: str | None = None
    # OCR before the answer even with ``ocr_deferred``: a door whose answer
    # names where to retrieve the instance (STOW-RS) must not name one that
    # is not there yet, and can say it was held.
    read_now: bool = False


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"
    # Acknowledged and kept, but apart: pixels no rule could clean.
    QUARANTINED = "quarantined"
    # Acknowledged and held, encrypted, until deferred OCR has read it
    # (`dicomnode.jobs.verifying`): then stored, or kept held.
    VERIFYING = "verifying"
    REJECTED = "rejected"


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    status: int
    comment: str = ""
    # A keyed tag of the SOP Instance UID: lets logs correlate events
    # without writing the UID (or anything else of the dataset) into them.
    reference: str = ""
    # The de-identified header as stored or held: the UIDs STOW-RS answers
    # with, and what de-identification changed.
    dataset: Dataset | None = None


# Warning, Coercion of Data Elements (PS3.4 B.2.3), as for a held instance:
# stored, but under UIDs of its own, since another patient holds its study,
# series or SOP Instance UID. The comment names the highest level (at most
# 64 characters, no value quoted).
KEPT_APART = HELD_FOR_REVIEW
APART_COMMENTS = {
    "study": "study UID is another patient's: stored as a study of its own",
    "series": "series UID is another patient's: stored as a series of its own",
    "instance": "SOP Instance UID is another patient's: stored under a new UID",
}


def _apart_comment(apart: dict[str, str]) -> str:
    return next(APART_COMMENTS[level] for level in APART_COMMENTS if level in apart)


# Why an instance is held when nothing in it tells one child from another.
NO_IDENTITY = "no patient identity to tell children apart"

# What devices and hand-typed fields write for a patient nobody named, beyond
# storage's placeholder words (case, spaces and punctuation ignored).
_NO_ONE = frozenset(
    {
        *("PID", "ID", "MRN", "PATID", "PATIENTID", "NOPID", "NOID", "PATIENT", "NEWPATIENT"),
        *("NAME", "NONAME", "NOBODY", "DEFAULT", "TEMP", "TMP", "DUMMY", "EMPTY", "BLANK"),
        *("MISSING", "NOTGIVEN", "NOTAVAILABLE", "UNKNOWNPATIENT", "JOHNDOE", "JANEDOE"),
        *("DOEJOHN", "DOEJANE", "НЕИЗВЕСТНО", "НЕИЗВЕСТЕН", "АНОНИМ", "ПАЦИЕНТ", "НЕТ"),
        *("未知", "匿名", "无", "患者", "病人"),
    }
)
_NOT_ALNUM = re.compile(r"[\W_]+")
_COUNTING = ("0123456789", "1234567890")


def names_no_one(value: str, shortest: int = 3) -> bool:
    """A PatientID or name that cannot tell two children apart: storage's
    placeholders (empty, zeros, UNKNOWN, N/A), a word such as PID or NONAME,
    fewer than ``shortest`` characters after leading zeros ("X", "1", "007"),
    one character repeated ("9999", "XXX") or counting ("123", "123456")."""
    folded = _NOT_ALNUM.sub("", value).upper()
    return (
        is_placeholder_id(value)
        or folded in _NO_ONE
        or len(folded.lstrip("0")) < shortest
        or len(set(folded)) == 1
        or any(count.startswith(folded) for count in _COUNTING)
    )


def _placeholder_word(word: str) -> bool:
    return is_placeholder_id(word) or _NOT_ALNUM.sub("", word).upper() in _NO_ONE


def _name(ds: Dataset) -> str:
    """The patient's name folded for comparison: its first non-empty
    component group, letters and digits only, case folded, so one child's
    name keys alike whether sent as "Ivanov^Alisher" or "IVANOV ALISHER";
    "" for a placeholder, whole or word by word ("Anonymized^Patient")."""
    groups = str(ds.get("PatientName") or "").split("=")
    text = next((g for g in groups if _NOT_ALNUM.sub("", g)), "")
    words = [w for w in _NOT_ALNUM.split(text) if w]
    if names_no_one(text, shortest=2) or all(_placeholder_word(w) for w in words):
        return ""
    return _NOT_ALNUM.sub("", text).casefold()


def _birth_date(ds: Dataset) -> str:
    """The birth date as YYYY-MM-DD when it can be a real one, else ""."""
    try:
        day = parse_date(str(ds.get("PatientBirthDate") or ""))
    except ValueError:
        return ""
    return day.isoformat() if real_date(day) and day <= date.today() else ""


def child_key(ds: Dataset) -> tuple[str, str | None]:
    """What tells this child apart from every other child of its hospital,
    and why to hold the instance when nothing does.

    The PatientID when it names someone. Without one, a device writes the
    same empty value or placeholder for every child, so the ID would merge
    them: the child is then keyed, within this study, on its name, birth
    date and sex (the same child re-sent, by any device, stays one patient;
    two children of one study UID differ). Never across studies: without an
    ID, two children of one name and birth date would be one. With no name
    either, nothing tells children apart: the instance is a patient of its
    own and is held in quarantine."""
    patient_id = str(ds.get("PatientID") or "").strip()
    if not names_no_one(patient_id):
        return patient_id, None
    sex = str(ds.get("PatientSex") or "").strip().upper()
    sex = sex if sex in ("M", "F", "O") else ""
    if name := _name(ds):
        return f"\\study:{ds.StudyInstanceUID}|{name}|{_birth_date(ds)}|{sex}", None
    return f"\\instance:{ds.SOPInstanceUID}", NO_IDENTITY


def _stop_at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag >= 0x7FE00010


# Largest instance (MiB) when no configuration says (`read_header` called
# alone): the configuration's own default.
DEFAULT_LIMIT_MB = Config.max_instance_mb
# The audit event of a held instance released (`Ingestor.release`).
RELEASE_EVENT = "quarantine-release"
# A data set in memory whose encoded or decoded pixels exceed this share of the
# spool threshold is de-identified from the spool (`Ingestor._in_memory`).
IN_MEMORY_SHARE = 4
# What of a spooled data set is decoded into memory, at least (MiB): all but
# its Pixel Data. Real headers, per-frame functional groups included, are a
# few megabytes.
HEADER_LIMIT_MB = 64


def header_limit(config: Config) -> int:
    return max(config.spool_threshold_mb, HEADER_LIMIT_MB) << 20


def read_header(
    data: bytes | SpoolFile,
    transfer_syntax: str,
    *,
    inflated: bool = False,
    limit: int = DEFAULT_LIMIT_MB << 20,
    header_limit: int = HEADER_LIMIT_MB << 20,
) -> tuple[Dataset, Layout]:
    """Check structure and decode everything before Pixel Data.

    Deflated data is inflated here (in memory, up to ``limit``) unless the
    caller did (``inflated``). From a spool file, the structure is walked
    through a window and the header read only when all but the Pixel Data
    fits in ``header_limit``."""
    ts = UID(transfer_syntax)
    if not ts.is_transfer_syntax:
        raise Rejection(UNREADABLE, "unknown transfer syntax")
    if ts.is_deflated and not inflated:
        if isinstance(data, SpoolFile):
            raise ValueError("a spooled deflated data set is inflated by the caller")
        data = inflate(data, limit=limit)
    source: BinaryIO
    try:
        if isinstance(data, SpoolFile):
            layout = check_structure(
                data.view(), implicit=ts.is_implicit_VR, little=ts.is_little_endian
            )
            _bounded(layout, data.size, header_limit)
            source = data.reader()
        else:
            layout = check_structure(data, implicit=ts.is_implicit_VR, little=ts.is_little_endian)
            source = BytesIO(data)
        ds = read_dataset(source, ts.is_implicit_VR, ts.is_little_endian, stop_when=_stop_at_pixels)
    except Rejection:
        raise
    except StructureError as exc:
        raise Rejection(UNREADABLE, f"truncated or malformed: {exc}") from None
    except Exception as exc:  # pydicom raises many types on garbage
        raise Rejection(UNREADABLE, f"cannot decode dataset ({type(exc).__name__})") from None
    return ds, layout


def _bounded(layout: Layout, size: int, limit: int) -> None:
    """Refuse a spooled data set whose header (all but Pixel Data) would not
    fit in memory: the one part that is decoded whole."""
    if layout.pixel_offset is None or layout.pixel_end is None:
        header = size
    else:
        header = layout.pixel_offset + size - layout.pixel_end
    if header > limit:
        raise Rejection(OUT_OF_RESOURCES, f"data set beyond its Pixel Data over {limit >> 20} MiB")


def inspect(
    incoming: Incoming,
    body: bytes | SpoolFile | None = None,
    header_limit: int = HEADER_LIMIT_MB << 20,
    unknown_sop_class_accepted: bool = False,
) -> tuple[Dataset, Layout]:
    """Everything the node checks before it stores: raise Rejection, or the
    header and where the pixel data lies. ``body``: the data set inflated
    (deflated data), else ``incoming.data``."""
    ds, layout = read_header(
        incoming.data if body is None else body,
        incoming.transfer_syntax,
        inflated=body is not None,
        header_limit=header_limit,
    )
    validate(
        ds,
        expected_sop_class=incoming.expected_sop_class,
        expected_sop_instance=incoming.expected_sop_instance,
        unknown_sop_class_accepted=unknown_sop_class_accepted,
    )
    expected = expected_native_pixel_bytes(ds) or 0
    if layout.pixel_length is not None and layout.pixel_length < expected:
        raise Rejection(PIXEL_DATA_SHORT, "Pixel Data shorter than Rows x Columns x frames")
    return ds, layout


def file_bytes(
    ds: Dataset, data: bytes | Pieces, transfer_syntax: str, calling_ae: str | None
) -> bytes | Pieces:
    """Preamble, the node's own file meta and the dataset exactly as encoded."""
    meta = file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), transfer_syntax, calling_ae)
    if isinstance(data, Pieces):
        return Pieces([meta, data])
    return meta + data


class Ingestor:
    """Validates, de-identifies and stores instances into one archive."""

    def __init__(self, config: Config, archive: Archive, spool: Spool | None = None) -> None:
        self.config = config
        self.archive = archive
        self.deidentify = Deidentifier(deid_setup(config), archive.index)
        self._spool = spool
        self._spool_lock = threading.Lock()
        quiet_libraries()

    @property
    def spool(self) -> Spool:
        """This process's spool: where doors put large data sets
        (``spool.open()``), and where the ingest inflates and cleans them."""
        with self._spool_lock:
            if self._spool is None:
                self._spool = Spool(self.config.spool_dir)
            return self._spool

    @property
    def threshold(self) -> int:
        """Data sets larger than this many bytes go to the spool."""
        return self.config.spool_threshold_mb << 20

    def _in_memory(self, header: Dataset, size: int) -> bool:
        """Whether a data set in memory is de-identified there. Decoded whole,
        it costs several times its size (copies, re-encoding), and compressed
        pixels cost their decoded size: beyond a quarter of the threshold,
        either way, it goes the spool's way, a batch of frames at a time."""
        share = self.threshold // IN_MEMORY_SHARE
        return size <= share and (expected_native_pixel_bytes(header) or 0) <= share

    def issuer_for(self, ds: Dataset, incoming: Incoming) -> str:
        """Who assigned this PatientID: always the sending hospital as the node
        knows it (the calling AE's configured issuer, the importer's, the web
        account's), so one child from one hospital is one patient whichever
        door and whichever device sent it (normalised here too, whatever
        the door did, since the pseudonym is keyed by it). The instance's own
        IssuerOfPatientID is the sender's word: it is sealed in the linkage,
        never shown, and splits nobody."""
        if issuer := normalise_issuer(incoming.issuer or ""):
            return issuer
        remote = self.config.remote(incoming.calling_ae)
        if remote is not None:
            return normalise_issuer(remote.issuer)
        return normalise_issuer(f"AE:{(incoming.calling_ae or 'UNKNOWN').strip()}")

    def ingest_own(self, ds: Dataset, issuer: str, also: AlsoWrite | None = None) -> IngestResult:
        """Store an instance the node made itself (a plan's SR): it is
        de-identified by construction, so its UIDs and references are not
        remapped again; everything else is the same path. ``also`` writes
        more rows in the store's transaction (the plan version the report
        is of); what it raises, other than a refusal, reaches the caller."""
        syntax = str(ds.file_meta.TransferSyntaxUID)
        reference = self.deidentify.reference(str(ds.get("SOPInstanceUID", "")))
        try:
            validate(ds)
            if not str(ds.get("PatientID", "")).startswith("CHD-"):
                raise Rejection(PROCESSING_FAILURE, "not made from de-identified data")
            ds.PatientIdentityRemoved = "YES"
            record = record_from_dataset(ds, issuer=issuer, transfer_syntax=syntax)
            encoded = self.file_for(ds, encode(ds, UID(syntax)), syntax, None)
            # The one store: its change row routes it like any other instance.
            stored = self.archive.store(record, encoded, also=also)
        except (Rejection, ForeignParent, OSError) as exc:
            return _refused(exc, reference)
        return IngestResult(Outcome(stored.value), SUCCESS, "", reference, ds)

    def release(
        self,
        held: dict[str, Any],
        ds: Dataset,
        *,
        user: str,
        decision: str,
        part10: bytes | None = None,
        source: str = "cli",
    ) -> IngestResult:
        """Store a held instance an administrator released (its quarantine
        row ``held``): ``ds`` as re-cleaned, or ``part10``, the held file
        byte for byte as reviewed. The same store as any instance (room
        checked, the held row ended, a change to forward), and the audit
        record of who decided what (``decision``) in its transaction: no
        instance released without it. Refusals are answered, not raised."""
        uid = str(held["sopinstanceuid"])
        reference = self.deidentify.reference(uid)

        def audited(conn: Connection, _: StoreOutcome) -> None:
            self.archive.index.audit.append(
                conn, RELEASE_EVENT, user=user, source=source, obj=uid, detail=decision
            )

        try:
            stored = self.store_held(held, ds, part10=part10, also=audited)
        except Exception as exc:
            return _refused(exc, reference)
        log.info("released %s: %s", reference, stored.value)
        return IngestResult(Outcome(stored.value), SUCCESS, decision, reference, ds)

    def store_held(
        self,
        held: dict[str, Any],
        ds: Dataset,
        *,
        part10: bytes | Pieces | None = None,
        also: AlsoWrite | None = None,
        after: Callable[[Connection], None] | None = None,
    ) -> StoreOutcome:
        """The one store for a held instance (its quarantine row ``held``):
        ``ds`` encoded again, or ``part10`` (in memory, or pieces of a spool
        file: a clip deferred OCR read) as stored; received when it was
        received; the held row and blob end with the store. Raises what the
        store raises."""
        syntax = str(ds.file_meta.TransferSyntaxUID)
        sending_ae = held["sending_ae"]
        record = replace(
            record_from_dataset(
                ds, issuer=held["issuer"], transfer_syntax=syntax, sending_ae=sending_ae
            ),
            received_at=utc(held["received_at"]),
        )
        if part10 is None:
            encoded = self.file_for(ds, encode(ds, UID(syntax)), syntax, sending_ae)
        else:
            self._check_space(len(part10))
            encoded = part10
        return self.archive.store(record, encoded, also=also, after=after)

    def file_for(
        self, ds: Dataset, data: bytes | Pieces, syntax: str, calling_ae: str | None
    ) -> bytes | Pieces:
        """The Part 10 file every door stores (`file_bytes`), once there is
        room for it on the archive's disk."""
        encoded = file_bytes(ds, data, syntax, calling_ae)
        self._check_space(len(encoded))
        return encoded

    def _await_ocr(
        self,
        record: InstanceRecord,
        encoded: bytes | Pieces,
        clean: Deidentified,
        sealed: LinkageRow,
        incoming: Incoming,
        claimed: Callable[[Connection], None],
    ) -> bool:
        """Hold an instance until deferred OCR has read it: held as any
        held instance (encrypted, invisible), and queued for the verifier in
        the hold's transaction with what OCR must look for, sealed. False:
        a copy already waits (it came in meanwhile) and is kept first, this
        one counted as a re-send."""
        assert clean.awaiting is not None
        uid, apart = record.sop_instance_uid, clean.apart
        source = (incoming.source or incoming.calling_ae or "import").strip()
        values = json.dumps(clean.awaiting.identity).encode()
        wait = OcrWait(
            clean.awaiting.cleaned,
            self.deidentify.policy_for(incoming.calling_ae).blank_rectangles,
            self.archive.seal_for_hold(uid, values),
        )
        keep_first = self.archive.duplicates is DuplicatePolicy.KEEP_FIRST

        def queued(conn: Connection) -> None:
            if keep_first and waiting_in(conn, uid):
                raise AlreadyWaiting(uid)  # the hold's transaction rolls back whole
            claimed(conn)
            if apart:
                self._audit_apart(conn, record, apart, source)

        pseudonym = record.columns[Level.PATIENT]["patientid"] or ""
        for _ in range(3):  # the waiting copy may be stored between two looks
            try:
                self.archive.quarantine(
                    record, encoded, AWAITING_OCR, sealed, also=queued, ocr=wait
                )
            except AlreadyWaiting:
                if self.archive.index.note_duplicate(uid, pseudonym):
                    return False
                continue
            return True
        raise RuntimeError("a waiting copy neither stored nor waiting")

    def _known_duplicate(self, original_uid: str, pseudonym: str) -> bool:
        """A re-send kept as first stored: acknowledge it without de-identifying
        it all over again (the new UID is a keyed function of the original),
        if the instance stored under that UID is this patient's."""
        if self.archive.duplicates is not DuplicatePolicy.KEEP_FIRST:
            return False
        new_uid = self.deidentify.secret.uid(original_uid)
        return self.archive.index.note_duplicate(new_uid, pseudonym)

    def _audit_apart(
        self, conn: Connection, record: InstanceRecord, apart: dict[str, str], source: str
    ) -> None:
        """Who held the UIDs and whose instance was kept apart: pseudonyms and
        the archive's UIDs only (in the store's or the hold's transaction)."""
        levels = [level for level in APART_COMMENTS if level in apart]
        holders = ", ".join(sorted(set(apart.values())))
        patient = record.columns[Level.PATIENT]["patientid"]
        study = record.columns[Level.STUDY]["studyinstanceuid"]
        self.archive.index.audit.append(
            conn,
            "uid-conflict",
            user="dicomnode",
            source=source,
            obj=study,
            detail=f"{'/'.join(levels)} UID already held for {holders}: an instance of "
            f"{patient} kept apart under UIDs of its own (study {study})",
            outcome=MINOR_FAILURE,
        )

    def _check_space(self, size: int) -> None:
        free = shutil.disk_usage(self.archive.data_dir).free
        if free - size < self.config.min_free_disk_mb * 1024 * 1024:
            raise Rejection(OUT_OF_RESOURCES, "out of resources: archive disk nearly full")

    def _inflated(self, incoming: Incoming) -> bytes | SpoolFile:
        """The data set, inflated when deflated: never past the instance limit,
        in the spool beyond the threshold."""
        if not UID(incoming.transfer_syntax).is_deflated:
            return incoming.data
        return inflate(
            incoming.data,
            limit=self.config.max_instance_mb << 20,
            spool=self.spool,
            threshold=self.threshold,
        )

    def ingest(self, incoming: Incoming) -> IngestResult:
        """Check, de-identify and store one instance; its status."""
        scratch: list[SpoolFile | Pieces] = []  # what this ingest spooled itself
        try:
            try:
                return self._ingest(incoming, scratch, optimistic=True)
            except ClaimLost:  # a UID seen free was claimed meanwhile: claim first
                return self._ingest(incoming, scratch, optimistic=False)
        finally:
            for spooled in scratch:
                spooled.close()

    def _ingest(
        self, incoming: Incoming, scratch: list[SpoolFile | Pieces], optimistic: bool
    ) -> IngestResult:
        """One try. ``optimistic``: the instance's new UIDs are claimed in
        the store's transaction when nobody held them a moment before; one
        claimed meanwhile raises `ClaimLost` (nothing written) and the caller
        tries again claiming first."""
        reference = ""
        try:
            body = self._inflated(incoming)
            if body is not incoming.data and isinstance(body, SpoolFile):
                scratch.append(body)
            original, layout = inspect(
                incoming, body, header_limit(self.config), self.config.unknown_sop_class_accepted
            )
            if isinstance(body, bytes) and not self._in_memory(original, len(body)):
                copy = self.spool.open()
                scratch.append(copy)
                copy.write(body)
                body = copy
            reference = self.deidentify.reference(str(original.SOPInstanceUID))
            issuer = self.issuer_for(original, incoming)
            key, hold = child_key(original)
            pseudonym = self.deidentify.secret.pseudonym(issuer, key)
            if self._known_duplicate(str(original.SOPInstanceUID), pseudonym):
                log.debug("duplicate %s from %s", reference, incoming.calling_ae or "import")
                return IngestResult(Outcome.DUPLICATE, SUCCESS, "", reference)
            # Read before de-identification rewrites the header in place;
            # sealed and written with the instance, in the store's transaction.
            identity = original_identity(original, issuer, incoming.calling_ae)

            # ---- De-identification: nothing above has written anything, and
            # only what this step returns is stored below. ------------------
            clean: Deidentified = self.deidentify(
                body,
                incoming.transfer_syntax,
                issuer=issuer,
                patient_key=key,
                calling_ae=incoming.calling_ae,
                header=original,
                layout=layout,
                inflated=True,
                spool=self.spool if isinstance(body, SpoolFile) else None,
                optimistic=optimistic,
                defer_ocr=not incoming.read_now,
            )
            if isinstance(clean.data, Pieces):
                scratch.append(clean.data)
            # ------------------------------------------------------------------
            if incoming.study is not None and clean.dataset.StudyInstanceUID != incoming.study:
                raise Rejection(DIFFERENT_STUDY, "not of the study the request names")
            if hold:  # nobody to file it under: held, whatever its pixels
                waits = clean.quarantine in (None, AWAITING_OCR)  # read on release
                why = hold if waits else f"{hold}; {clean.quarantine}"
                clean = replace(clean, quarantine=why, awaiting=None)

            record = record_from_dataset(
                clean.dataset,
                issuer=issuer,
                transfer_syntax=clean.transfer_syntax,
                sending_ae=(incoming.calling_ae or "").strip() or None,
            )
            encoded = self.file_for(
                clean.dataset, clean.data, clean.transfer_syntax, incoming.calling_ae
            )
            source = (incoming.source or incoming.calling_ae or "import").strip()
            status, comment = (
                (KEPT_APART, _apart_comment(clean.apart)) if clean.apart else (SUCCESS, "")
            )
            study = str(clean.dataset.StudyInstanceUID)
            sealed: LinkageRow = (
                study,
                pseudonym,
                self.deidentify.cipher.seal(identity, pseudonym, study),
            )
            apart = clean.apart
            claims = clean.claims

            def claimed(conn: Connection) -> None:
                claim_in(conn, pseudonym, claims)  # ClaimLost: rolled back, tried again

            if clean.awaiting is not None and clean.quarantine == AWAITING_OCR:
                if not self._await_ocr(record, encoded, clean, sealed, incoming, claimed):
                    return IngestResult(Outcome.DUPLICATE, SUCCESS, "", reference)
                log.debug("verifying %s from %s", reference, incoming.calling_ae or "import")
                # Answered as stored: the verifier stores it, unless OCR finds identity.
                return IngestResult(Outcome.VERIFYING, status, comment, reference, clean.dataset)
            if clean.quarantine:
                why = clean.quarantine

                def held(conn: Connection) -> None:
                    claimed(conn)
                    # Audited in the hold's transaction: no hold without its record.
                    self.archive.index.audit.append(
                        conn,
                        HOLD_EVENT,
                        user="dicomnode",
                        source=source,
                        obj=record.sop_instance_uid,
                        detail=why,
                    )
                    if apart:
                        self._audit_apart(conn, record, apart, source)

                self.archive.quarantine(record, encoded, why, sealed, also=held)
                log.warning("quarantined %s: %s", reference, why)
                outcome = Outcome.QUARANTINED
                log.debug("%s %s from %s", outcome, reference, incoming.calling_ae or "import")
                # Acknowledged (nothing is lost) with a warning that says why.
                return IngestResult(
                    outcome, HELD_FOR_REVIEW, clean.quarantine, reference, clean.dataset
                )

            def kept_apart(conn: Connection, stored: StoreOutcome) -> None:
                # In the store's transaction; a re-sent copy was audited when first stored.
                claimed(conn)
                if apart and stored is not StoreOutcome.DUPLICATE:
                    self._audit_apart(conn, record, apart, source)

            # The one store (a held copy of it, if any, goes with it);
            # forwarding follows from its change row, not from here.
            also = kept_apart if apart or claims else None
            outcome = Outcome(self.archive.store(record, encoded, sealed, also).value)
            if apart:
                log.warning("kept apart %s: %s", reference, comment)
        except ClaimLost:
            raise
        except Exception as exc:
            return _refused(exc, reference)
        log.debug("%s %s from %s", outcome, reference, incoming.calling_ae or "import")
        return IngestResult(outcome, status, comment, reference, clean.dataset)


def _refused(exc: Exception, reference: str) -> IngestResult:
    """What a failed store answers, whatever the door: a refusal as it
    says; a UID of another patient's study (an index written by an older
    version, not yet migrated: refused rather than merged); a write that
    failed (a full disk) as out of resources, nothing half-stored (the
    index commits only after the blob); anything else a processing failure.
    The exception's text may quote dataset values: logs name its type."""
    if isinstance(exc, Rejection):
        log.warning("rejected %s: %s", reference or "-", exc)
        return IngestResult(Outcome.REJECTED, exc.status, exc.comment, reference)
    if isinstance(exc, ForeignParent):
        log.error("refused %s: %s", reference or "-", exc)
        return IngestResult(
            Outcome.REJECTED, PROCESSING_FAILURE, "UID of another patient's study", reference
        )
    if isinstance(exc, OSError):
        log.error("storage failed for %s: %s", reference or "-", type(exc).__name__)
        return IngestResult(
            Outcome.REJECTED, OUT_OF_RESOURCES, "out of resources: could not write", reference
        )
    log.error("ingest failed for %s: %s", reference or "-", type(exc).__name__)
    return IngestResult(Outcome.REJECTED, PROCESSING_FAILURE, "processing failure", reference)
