"""Where instance files live: the interface, and what all stores share.

A key is the SHA-256 of the SOP Instance UID fanned out over two levels
(``ab/cd/<sha256>.dcm``), so no UID (however crafted) and no identity ever
becomes part of a path or an object name. Implementations: files on a local
or network filesystem (`storage.fileblobs`), objects in an S3-compatible
store (`storage.s3blobs`); `open_stores` picks one from a URL.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.dcm$")
LOST_AND_FOUND = "lost+found"


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError("not a blob key: a key could otherwise escape the store")
    return key


class Stream(Protocol):
    """Bytes too large to hold at once (a spooled instance): their length,
    and their chunks in order, readable more than once."""

    def __len__(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class BlobRef:
    """Where an instance is stored, and what the index keeps to verify it."""

    key: str
    size: int
    sha256: str

    @classmethod
    def of(cls, key: str, data: bytes) -> BlobRef:
        return cls(key, len(data), hashlib.sha256(data).hexdigest())


class BlobStore(ABC):
    """Whole-or-nothing, durable blobs by key."""

    location: str  # for messages: a folder or an s3:// URL (never a UID)

    @staticmethod
    def key_for(sop_instance_uid: str) -> str:
        """The key of an instance: ``ab/cd/<sha256>.dcm``."""
        digest = hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()
        return f"{digest[:2]}/{digest[2:4]}/{digest}.dcm"

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` durably; returns only once it would survive a crash."""

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> BlobRef:
        """`put` for bytes that arrive in chunks, their size and SHA-256
        computed on the way. Stores that can should write as they come
        (this default holds them all first)."""
        data = b"".join(chunks)
        self.put(key, data)
        return BlobRef.of(key, data)

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def listing(self) -> Iterator[tuple[str, float]]:
        """Every stored key with its modification time (epoch seconds)."""

    @abstractmethod
    def problem(self) -> str | None:
        """Why this store cannot be written now (for health checks), or None."""

    @abstractmethod
    def set_aside(self, key: str) -> None:
        """Move a blob no index row names to ``lost+found`` (kept, not deleted)."""


def open_stores(url: str, data_dir: Path, endpoint_url: str = "") -> tuple[BlobStore, BlobStore]:
    """The stores of instances and of quarantined instances.

    ``url`` empty: folders ``blobs/`` and ``quarantine/`` in ``data_dir``;
    ``s3://bucket/prefix``: those prefixes in the bucket (``endpoint_url``
    for an S3-compatible service other than AWS).
    """
    if not url:
        from storage.fileblobs import FileBlobStore

        return FileBlobStore(data_dir / "blobs"), FileBlobStore(data_dir / "quarantine")
    if url.startswith("s3://"):
        from storage.s3blobs import S3BlobStore

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        return (
            S3BlobStore(bucket, f"{prefix}/blobs".lstrip("/"), endpoint_url),
            S3BlobStore(bucket, f"{prefix}/quarantine".lstrip("/"), endpoint_url),
        )
    raise ValueError("blob_url: empty (the data directory) or s3://bucket/prefix")
