"""Where instance files live: the interface, and what all stores share.

A key is the SHA-256 of the SOP Instance UID fanned out over two levels
(``ab/cd/<sha256>.dcm``), so no UID (however crafted) and no identity ever
becomes part of a path or an object name. Implementations: files on a local
or network filesystem (`storage.fileblobs`), objects in an S3-compatible
store (`storage.s3blobs`); `open_stores` picks one from a URL. A
replacement (``duplicates = "replace"``) is written under a versioned key
beside the live blob, never over it: the index row moves to it in its
commit, and the superseded blob is deleted after.
"""

from __future__ import annotations

import hashlib
import queue
import re
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

# An instance's key; a replacement's carries a version (`BlobStore.key_for`).
_KEY = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}(\.[0-9a-f]{16})?\.dcm$")
LOST_AND_FOUND = "lost+found"
# What `BlobStore.read_chunks` yields at a time.
CHUNK = 1 << 20


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError("not a blob key: a key could otherwise escape the store")
    return key


class Stream(Protocol):
    """Bytes too large to hold at once (a spooled instance): their length,
    and their chunks in order, readable more than once."""

    def __len__(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


def read_ahead(chunks: Iterable[bytes], depth: int = 2) -> Iterator[bytes]:
    """``chunks``, made in a thread of their own a few ahead of the caller:
    decrypting a spool file and sealing a held copy overlap hashing and
    writing (OpenSSL and hashlib release the GIL), on two cores nearly
    halving a large write. A list (bytes in memory) is passed through."""
    if isinstance(chunks, list | tuple):
        yield from chunks
        return
    made: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                made.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put((True, chunk)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the caller, raised there
            put((False, exc))

    threading.Thread(target=produce, name="read-ahead", daemon=True).start()
    try:
        while True:
            more, value = made.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()


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
    def key_for(sop_instance_uid: str, version: str = "") -> str:
        """The key of an instance: ``ab/cd/<sha256>.dcm``; of a replacement,
        ``ab/cd/<sha256>.<version>.dcm`` (`new_version`), written beside the
        live blob so the index row moves to it in its commit. Readers take
        the key from the index row (``blob_key``), never from the UID."""
        digest = hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()
        suffix = f".{version}" if version else ""
        return check_key(f"{digest[:2]}/{digest[2:4]}/{digest}{suffix}.dcm")

    @staticmethod
    def new_version() -> str:
        """A version for `key_for`: random, so no two replacements share a key."""
        return secrets.token_hex(8)

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

    def read_chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes]:
        """The blob a chunk at a time, for one too large to read whole (a
        held clip deferred OCR decrypts into the spool)."""
        opened = self.open_file(key)
        if opened is None:
            raise FileNotFoundError("blob not found")
        with opened:
            while chunk := opened.read(size):
                yield chunk

    def open_file(self, key: str) -> BinaryIO | None:
        """The blob as an open local file, for sending it without a copy in
        memory; None where blobs are not local files (object storage) or
        this one is gone."""
        return None

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

    # Research export packages: ZIPs kept beside the instances (never under an
    # instance key, never in `listing`), so any node process serves them.

    @staticmethod
    def check_package(name: str) -> str:
        """A package's name is a job's id and ``.zip``: nothing else reaches a path."""
        if not re.fullmatch(r"[0-9a-f]{8,64}\.zip", name):
            raise ValueError("not a package name: a name could otherwise escape the store")
        return name

    @abstractmethod
    def put_package(self, name: str, source: BinaryIO) -> None:
        """Store the package read from ``source`` whole or not at all, streamed
        (a package may be gigabytes), private to the node's account."""

    @abstractmethod
    def open_package(self, name: str) -> tuple[BinaryIO, int]:
        """The package to stream out (the caller closes it) and its size;
        FileNotFoundError if it is not there, OSError if the store is out of reach."""

    @abstractmethod
    def delete_package(self, name: str) -> None: ...

    @abstractmethod
    def packages(self) -> Iterator[tuple[str, float]]:
        """Every stored package's name with its modification time (epoch seconds)."""


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
