"""Archive integrity: blobs against the index, at start-up and on demand.

A blob is written (fsync, rename) before its index row commits, so a crash in
between leaves a blob no row points to. No Success was sent for it (the
sender re-sends), so `reconcile` moves such orphans to ``lost+found/`` and
reports them; only orphans older than a grace period, because with shared
storage another node process may be between its rename and its commit right
now. `verify` reads every blob (``dicomnode check``): size as indexed, whole
structure, and the SOP Instance UID its key was made from.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID
from sqlalchemy import select

from dicomnode.importer import split_file
from dicomnode.integrity import StructureError, check_structure
from storage.archive import Archive
from storage.blobs import BlobStore
from storage.schema import instances, quarantine

log = logging.getLogger(__name__)
ORPHAN_GRACE_SECONDS = 600
LOST_AND_FOUND = "lost+found"


@dataclass
class CheckReport:
    checked: int = 0
    orphans: list[str] = field(default_factory=list)  # blob keys no row points to
    missing: list[str] = field(default_factory=list)  # SOP Instance UIDs without blob
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (SOP UID, why)

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.missing or self.damaged)

    def summary(self) -> str:
        return (
            f"{self.checked} instances checked, {len(self.missing)} missing, "
            f"{len(self.damaged)} damaged, {len(self.orphans)} orphan files"
        )


def _rows(archive: Archive) -> Iterator[tuple[BlobStore, str, str, int]]:
    """(store, SOP Instance UID, blob key, size) of every indexed or held instance."""
    with archive.index.engine.connect() as conn:
        for table, store in ((instances, archive.blobs), (quarantine, archive.held)):
            query = select(table.c.sopinstanceuid, table.c.blob_key, table.c.size)
            for uid, key, size in conn.execute(query):
                yield store, uid, key, size


def _files(store: BlobStore) -> Iterator[str]:
    for path in store.root.glob("??/??/*.dcm"):
        yield path.relative_to(store.root).as_posix()


def reconcile(archive: Archive, *, repair: bool, now: float | None = None) -> CheckReport:
    """Compare file names with index rows (no blob is read)."""
    report = CheckReport()
    known: dict[Path, set[str]] = {archive.blobs.root: set(), archive.held.root: set()}
    for store, uid, key, _size in _rows(archive):
        report.checked += 1
        known[store.root].add(key)
        if not store.exists(key):
            report.missing.append(uid)
    cutoff = (now or time.time()) - ORPHAN_GRACE_SECONDS
    for store in (archive.blobs, archive.held):
        for key in _files(store):
            if key in known[store.root] or store.path(key).stat().st_mtime > cutoff:
                continue
            report.orphans.append(key)
            if repair:
                target = archive.data_dir / LOST_AND_FOUND / Path(key).name
                target.parent.mkdir(exist_ok=True)
                os.replace(store.path(key), target)
    return report


def _problem(data: bytes, uid: str, size: int) -> str | None:
    if len(data) != size:
        return f"{len(data)} bytes, {size} indexed"
    try:
        dataset, syntax = split_file(data)
        ts = UID(syntax)
        check_structure(dataset, implicit=ts.is_implicit_VR, little=ts.is_little_endian)
        header = dcmread(BytesIO(data), stop_before_pixels=True)
    except StructureError as exc:
        return f"truncated or malformed: {exc}"
    except Exception as exc:  # whatever pydicom raises on a damaged file
        return f"unreadable ({type(exc).__name__})"
    if header.get("SOPInstanceUID") != uid:
        return "holds another instance"
    return None


def verify(archive: Archive, on_progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Read every blob; missing, damaged and orphan files are reported, not changed."""
    report = reconcile(archive, repair=False)
    missing = set(report.missing)
    total, report.checked = report.checked, 0
    for store, uid, key, size in _rows(archive):
        report.checked += 1
        if uid not in missing:
            why = _problem(store.read(key), uid, size)
            if why:
                report.damaged.append((uid, why))
        if on_progress is not None:
            on_progress(report.checked, total)
    return report
