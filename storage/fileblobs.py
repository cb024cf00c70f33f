"""Blobs as files: atomic, durable writes (temp file, fsync, rename, fsync
directory) under a local or network filesystem shared by node processes.
Files are 0600 (``mkstemp``) in 0700 folders (`storage.private`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from storage.blobs import LOST_AND_FOUND, BlobRef, BlobStore, check_key, read_ahead
from storage.leases import dead_here, of_this_host, process_name
from storage.private import private_dir, private_subdir

STALE_TEMP_SECONDS = 86_400


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
    for folder in tmp.iterdir():
        # Another process starting now may sweep the same entries first.
        with contextlib.suppress(FileNotFoundError):
            if not folder.is_dir():  # a part file of the layout before folders per process
                folder.unlink()
            elif of_this_host(folder.name):
                if dead_here(folder.name):
                    shutil.rmtree(folder, ignore_errors=True)
            elif time.time() - folder.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)


class FileBlobStore(BlobStore):
    """Files under ``root``; a write is visible whole or not at all. Orphans
    set aside go to ``aside`` (``lost+found`` beside the store)."""

    def __init__(self, root: Path, aside: Path | None = None) -> None:
        self.root = Path(root)
        self.aside = aside or self.root.parent / LOST_AND_FOUND
        self.location = str(self.root)
        # Each process writes its temp files in a folder of its own: several
        # node processes (and hosts) may share the store.
        self._tmp = private_dir(self.root / ".tmp" / process_name())
        _drop_dead_writers(self._tmp.parent)
        self._known_dirs: set[Path] = set()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` durably: temp file, fsync, rename, fsync dir.

        Returns only once the file and its directory entry are on stable
        storage, so a caller may acknowledge the data after it.
        """
        self.put_stream(key, [data])

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> BlobRef:
        """`put`, written chunk by chunk as they come (a spooled instance
        never sits in memory whole); size and SHA-256 computed on the way."""
        final = self.path(key)
        self._makedirs(final.parent)
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        except FileNotFoundError:  # removed by hand, or by another host's sweep
            private_dir(self._tmp)
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        digest, size = hashlib.sha256(), 0

        def write(handle: BinaryIO) -> None:
            nonlocal size
            for chunk in read_ahead(chunks):
                digest.update(chunk)
                size += len(chunk)
                handle.write(chunk)

        _renamed_into_place(fd, tmp_name, final, write)
        return BlobRef(key, size, digest.hexdigest())

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
            private_subdir(new)
            _fsync_dir(new.parent)
        self._known_dirs.add(directory)

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def open_file(self, key: str) -> BinaryIO | None:
        try:
            return self.path(key).open("rb")
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def problem(self) -> str | None:
        # An unmounted network filesystem leaves an empty or missing folder.
        if not self._tmp.parent.is_dir() or not os.access(self.root, os.W_OK):
            return f"blob folder {self.root} is missing or not writable"
        return None

    def listing(self) -> Iterator[tuple[str, float]]:
        for path in self.root.glob("??/??/*.dcm"):
            yield path.relative_to(self.root).as_posix(), path.stat().st_mtime

    def set_aside(self, key: str) -> None:
        private_dir(self.aside)
        os.replace(self.path(key), self.aside / Path(key).name)

    def _package_dir(self) -> Path:
        """``packages`` beside the store (``data_dir/packages``): on the same
        shared filesystem as the instances, outside their key space."""
        return self.root.parent / "packages"

    def put_package(self, name: str, source: BinaryIO) -> None:
        """Copied in chunks to a 0600 temp file in the packages' folder, then
        renamed into place (fsynced): seen whole or not at all."""
        folder = private_dir(self._package_dir())
        final = folder / self.check_package(name)
        for stale in folder.glob(".*.part"):  # a crash mid-copy, a day ago
            with contextlib.suppress(FileNotFoundError):
                if time.time() - stale.stat().st_mtime > STALE_TEMP_SECONDS:
                    stale.unlink()
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        _renamed_into_place(
            fd, tmp_name, final, lambda handle: shutil.copyfileobj(source, handle, 1 << 20)
        )

    def open_package(self, name: str) -> tuple[BinaryIO, int]:
        handle = (self._package_dir() / self.check_package(name)).open("rb")
        return handle, os.fstat(handle.fileno()).st_size

    def delete_package(self, name: str) -> None:
        (self._package_dir() / self.check_package(name)).unlink(missing_ok=True)

    def packages(self) -> Iterator[tuple[str, float]]:
        for path in self._package_dir().glob("*.zip"):
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                yield path.name, path.stat().st_mtime


def _renamed_into_place(
    fd: int, tmp_name: str, final: Path, write: Callable[[BinaryIO], None]
) -> None:
    """Durably: ``write`` into the temp file, fsync, rename over ``final``,
    fsync its folder; the temp file gone on any failure. A reader sees the
    old file or the new one whole, and the caller may acknowledge after."""
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)
