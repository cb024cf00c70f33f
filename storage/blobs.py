"""Filesystem blob store: atomic, durable writes at paths derived from UIDs.

A path is the SHA-256 of the SOP Instance UID fanned out over two directory
levels, so no UID (however crafted) and no identity ever becomes part of a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from storage.leases import dead_here, process_name

STALE_TEMP_SECONDS = 86_400
_KEY = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.dcm$")


@dataclass(frozen=True)
class BlobRef:
    """Where an instance is stored, and what the index keeps to verify it."""

    key: str
    size: int
    sha256: str

    @classmethod
    def of(cls, key: str, data: bytes) -> BlobRef:
        return cls(key, len(data), hashlib.sha256(data).hexdigest())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_dead_writers(tmp: Path) -> None:
    """Leftovers of a crash mid-write were never acknowledged: drop them.

    A folder of a process of this host that is gone, or of any host once a
    day old (no write takes that long).
    """
    host = socket.gethostname()
    for folder in tmp.iterdir():
        if not folder.is_dir():  # a part file of the layout before folders per process
            folder.unlink()
        elif folder.name.rpartition("-")[0] == host:
            if dead_here(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        elif time.time() - folder.stat().st_mtime > STALE_TEMP_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)


class BlobStore:
    """Files under ``root``; a write is visible whole or not at all."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Each process writes its temp files in a folder of its own: several
        # node processes (and hosts) may share the store.
        self._tmp = self.root / ".tmp" / process_name()
        self._tmp.mkdir(parents=True, mode=0o700, exist_ok=True)
        _drop_dead_writers(self._tmp.parent)
        self._known_dirs: set[Path] = set()

    @staticmethod
    def key_for(sop_instance_uid: str) -> str:
        """The relative path of an instance: ``ab/cd/<sha256>.dcm``."""
        digest = hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()
        return f"{digest[:2]}/{digest[2:4]}/{digest}.dcm"

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError("not a blob key: a key could otherwise escape the store")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` durably: temp file, fsync, rename, fsync dir.

        Returns only once the file and its directory entry are on stable
        storage, so a caller may acknowledge the data after it.
        """
        final = self.path(key)
        self._makedirs(final.parent)
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        except FileNotFoundError:  # removed by hand, or by another host's sweep
            self._tmp.mkdir(parents=True, mode=0o700, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

    def _makedirs(self, directory: Path) -> None:
        """Create the fan-out directories, making each new entry durable too."""
        if directory in self._known_dirs:
            return
        missing = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)
            _fsync_dir(new.parent)
        self._known_dirs.add(directory)

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)
