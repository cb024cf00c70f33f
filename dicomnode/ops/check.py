"""Archive integrity: blobs against the index, at start-up and on demand.

A blob is written (fsync, rename) before its index row commits, so a crash in
between leaves a blob no row points to. No Success was sent for it (the
sender re-sends), so `reconcile` moves such orphans to ``lost+found`` and
reports them; only orphans older than a grace period, because with shared
storage another node process may be between its rename and its commit right
now. `verify` reads every blob (``dicomnode check``): size and SHA-256 as
indexed (for a held instance, of its encrypted blob: what is on disk), whole
structure, and the SOP Instance UID its key was made from (a held blob is
decrypted for these). A held blob still in plaintext (written by a version
before they were encrypted) is listed; the next start encrypts it.

A replacement (``duplicates = "replace"``) is written under a key of its own
and the blob it supersedes deleted after its commit: a crash in between
leaves that old blob as an orphan, set aside like any other; a row whose
blob went while the check ran is looked up again (replaced, not missing).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import NamedTuple

from pydicom import dcmread
from pydicom.uid import UID
from sqlalchemy import select, true

from dicomnode.ingest.importer import split_file
from dicomnode.media.integrity import StructureError, check_structure
from storage.archive import Archive, HeldBlobError, is_sealed
from storage.blobs import BlobStore
from storage.schema import instances, quarantine

log = logging.getLogger(__name__)
ORPHAN_GRACE_SECONDS = 600


@dataclass
class CheckReport:
    checked: int = 0
    orphans: list[str] = field(default_factory=list)  # blob keys no row points to
    missing: list[str] = field(default_factory=list)  # SOP Instance UIDs without blob
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (SOP UID, why)
    # Held instances whose blob is still plaintext (encrypted at the next start).
    plaintext: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.missing or self.damaged)

    def summary(self) -> str:
        line = (
            f"{self.checked} instances checked, {len(self.missing)} missing, "
            f"{len(self.damaged)} damaged, {len(self.orphans)} orphan files"
        )
        if self.plaintext:
            line += f", {len(self.plaintext)} held in plaintext (encrypted at the next start)"
        return line


class _Row(NamedTuple):
    store: BlobStore
    uid: str
    key: str
    size: int
    sha256: str | None  # None for instances stored before digests were kept
    sealed: bool = True  # a held row's blob is encrypted (false: held before 0007)


def _rows(archive: Archive) -> Iterator[_Row]:
    """Every indexed or held instance, with where its blob is and what it must hash to."""
    with archive.index.engine.connect() as conn:
        for table, store in ((instances, archive.blobs), (quarantine, archive.held)):
            c = table.c
            sealed = c.sealed if table is quarantine else true()
            query = select(c.sopinstanceuid, c.blob_key, c.size, c.sha256, sealed)
            for uid, key, size, sha256, is_sealed_row in conn.execute(query):
                yield _Row(store, uid, key, size, sha256, bool(is_sealed_row))


def reconcile(archive: Archive, *, repair: bool, now: float | None = None) -> CheckReport:
    """Compare the stores' listings with index rows (no blob is read): one
    listing per store, not a lookup per instance, so object stores are cheap."""
    # Rows before listings: a blob is always written before its row.
    return _compare(archive, list(_rows(archive)), repair, now)


def _compare(archive: Archive, rows: list[_Row], repair: bool, now: float | None) -> CheckReport:
    report = CheckReport(checked=len(rows))
    stores = (archive.blobs, archive.held)
    listed = {store: dict(store.listing()) for store in stores}
    named: dict[BlobStore, set[str]] = {store: set() for store in stores}
    for row in rows:
        named[row.store].add(row.key)
        if row.key not in listed[row.store]:
            if (moved := _replaced(archive, row)) is None:
                report.missing.append(row.uid)
            else:
                named[row.store].add(moved)
    cutoff = (now or time.time()) - ORPHAN_GRACE_SECONDS
    for store in stores:
        for key, modified in listed[store].items():
            if key in named[store] or modified > cutoff:
                continue
            report.orphans.append(key)
            if repair:
                store.set_aside(key)
    return report


def _replaced(archive: Archive, row: _Row) -> str | None:
    """The key an instance's row names now, if a replacement committed since
    ``row`` was read and its blob is there; else None."""
    if row.store is not archive.blobs:
        return None
    now = archive.index.instance_blob(row.uid)
    return now if now not in (None, row.key) and row.store.exists(now) else None


def _problem(archive: Archive, data: bytes, row: _Row) -> str | None:
    if len(data) != row.size:
        return f"{len(data)} bytes, {row.size} indexed"
    if row.sha256 is not None and hashlib.sha256(data).hexdigest() != row.sha256:
        return "content differs from what was stored (SHA-256)"
    if row.store is archive.held:
        try:
            data = archive.open_held(row.uid, data, row.sealed)
        except HeldBlobError as exc:
            return str(exc)
    try:
        dataset, syntax = split_file(data)
        ts = UID(syntax)
        check_structure(dataset, implicit=ts.is_implicit_VR, little=ts.is_little_endian)
        header = dcmread(BytesIO(data), stop_before_pixels=True)
    except StructureError as exc:
        return f"truncated or malformed: {exc}"
    except Exception as exc:  # whatever pydicom raises on a damaged file
        return f"unreadable ({type(exc).__name__})"
    if header.get("SOPInstanceUID") != row.uid:
        return "holds another instance"
    return None


def verify(archive: Archive, on_progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Read every blob; missing, damaged and orphan files are reported, not changed."""
    rows = list(_rows(archive))
    report = _compare(archive, rows, repair=False, now=None)
    missing = set(report.missing)
    for done, row in enumerate(rows, 1):
        if row.uid not in missing:
            _verify_one(archive, row, report)
        if on_progress is not None:
            on_progress(done, len(rows))
    return report


def _verify_one(archive: Archive, row: _Row, report: CheckReport) -> None:
    try:
        data = row.store.read(row.key)
    except FileNotFoundError:  # replaced since the listing, or gone
        if _replaced(archive, row) is None:
            report.missing.append(row.uid)
        return
    if why := _problem(archive, data, row):
        report.damaged.append((row.uid, why))
    elif row.store is archive.held and not is_sealed(data):
        report.plaintext.append(row.uid)
