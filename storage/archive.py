"""One place decides what is stored: blob first, durably, then the index."""

from __future__ import annotations

import threading
from enum import StrEnum
from pathlib import Path

from storage.blobs import BlobStore
from storage.index import Added, Index
from storage.record import InstanceRecord


class DuplicatePolicy(StrEnum):
    KEEP_FIRST = "keep-first"
    REPLACE = "replace"


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"


class Archive:
    """Blob store plus index. ``store`` returns only once both are durable."""

    def __init__(
        self,
        data_dir: Path,
        index_url: str,
        duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.blobs = BlobStore(self.data_dir / "blobs")
        self.index = Index(index_url)
        self.duplicates = DuplicatePolicy(duplicates)
        # Check-then-write of one SOP Instance UID must not interleave with another's.
        self._lock = threading.Lock()

    def close(self) -> None:
        self.index.close()

    def store(self, record: InstanceRecord, data: bytes) -> StoreOutcome:
        sop_uid = record.sop_instance_uid
        key = self.blobs.key_for(sop_uid)
        with self._lock:
            exists = self.index.instance_blob(sop_uid) is not None
            if exists and self.duplicates is DuplicatePolicy.KEEP_FIRST:
                return StoreOutcome.DUPLICATE
            self.blobs.put(key, data)
            added = self.index.add(record, key, len(data), replace=exists)
        return {
            Added.NEW: StoreOutcome.STORED,
            Added.REPLACED: StoreOutcome.REPLACED,
            Added.DUPLICATE: StoreOutcome.DUPLICATE,
        }[added]

    def read(self, sop_instance_uid: str) -> bytes | None:
        key = self.index.instance_blob(sop_instance_uid)
        return None if key is None else self.blobs.read(key)
