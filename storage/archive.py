"""One place decides what is stored: blob first, durably, then the index."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from storage.blobs import BlobRef, BlobStore, open_stores
from storage.index import Index, StoreOutcome
from storage.record import InstanceRecord


class DuplicatePolicy(StrEnum):
    KEEP_FIRST = "keep-first"
    REPLACE = "replace"


class Archive:
    """Blob store plus index. ``store`` returns only once both are durable."""

    def __init__(
        self,
        data_dir: Path,
        index_url: str,
        duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
        audit_key: bytes = b"",
        stores: tuple[BlobStore, BlobStore] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.blobs, self.held = stores or open_stores("", self.data_dir)
        self.index = Index(index_url, audit_key)
        self.duplicates = DuplicatePolicy(duplicates)

    def close(self) -> None:
        self.index.close()

    def store(self, record: InstanceRecord, data: bytes) -> StoreOutcome:
        blob = BlobRef.of(self.blobs.key_for(record.sop_instance_uid), data)
        return self.index.add(
            record,
            blob,
            replace=self.duplicates is DuplicatePolicy.REPLACE,
            write_blob=lambda: self.blobs.put(blob.key, data),
        )

    def quarantine(self, record: InstanceRecord, data: bytes, reason: str) -> None:
        """Hold an instance apart: not in the index tables queries and export read."""
        blob = BlobRef.of(self.held.key_for(record.sop_instance_uid), data)
        self.index.add_quarantined(
            record, blob, reason, write_blob=lambda: self.held.put(blob.key, data)
        )

    def forget_quarantined(self, sop_instance_uid: str) -> None:
        """A clean copy arrived (a re-send with regions, say): drop the held one."""
        key = self.index.quarantined_blob(sop_instance_uid)
        if key is not None:
            self.index.remove_quarantined(sop_instance_uid)
            self.held.delete(key)

    def problems(self) -> dict[str, str]:
        """What keeps this process from storing now, by part (``index``,
        ``blobs``, ``quarantine``): a load balancer's health check takes the
        process out of rotation while there is any."""
        found = {
            part: problem
            for part, store in (("blobs", self.blobs), ("quarantine", self.held))
            if (problem := store.problem())
        }
        try:
            with self.index.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            found["index"] = f"unreachable ({type(exc).__name__})"
        return found

    def read(self, sop_instance_uid: str) -> bytes | None:
        key = self.index.instance_blob(sop_instance_uid)
        return None if key is None else self.blobs.read(key)
