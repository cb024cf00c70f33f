"""Files and folders only the node's user can open.

The index holds password hashes and sealed identities, the keys open them,
held instances and exports are children's images: all are created 0600 in
0700 folders with the mode given explicitly, so a service manager's umask
of 022 does not make them readable by every local account. What an older
version created with looser modes is tightened at start (`tighten`), with
one log line saying so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """For a command's run: anything created without an explicit mode (by
    a library, a tool the node runs) is private too. The umask is the
    process's: the old one is put back after (a test may run a command in
    its own process)."""
    before = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(before)


def private_dir(path: Path) -> Path:
    """``path`` as a folder, it and every parent it had to create 0700
    (``mkdir -p`` would leave the parents to the umask). An existing folder
    is left as it is: `tighten` is for those."""
    path = Path(path)
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:  # another process made it meanwhile
            continue
        os.chmod(folder, FOLDER_MODE)
    return path


def private_subdir(path: Path) -> bool:
    """One folder below an existing one, 0700; False if it already existed.
    For the blob store's fan-out, where the parent is known to exist."""
    try:
        os.mkdir(path, FOLDER_MODE)
    except FileExistsError:
        return False
    os.chmod(path, FOLDER_MODE)
    return True


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """A descriptor of ``path`` opened with ``flags``, the file 0600 whether
    it is new or was there (O_NOFOLLOW: a planted link is not written through)."""
    descriptor = os.open(path, flags | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def write_private(path: Path, data: bytes) -> None:
    with os.fdopen(open_private(path), "wb") as handle:
        handle.write(data)


def create_private(path: Path) -> None:
    """An empty 0600 file at ``path`` unless one is there: SQLite then gives
    its journal, WAL and shared-memory files the same mode."""
    with contextlib.suppress(FileExistsError):
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))


def tighten(paths: Iterable[Path]) -> list[Path]:
    """Take group and other permissions off ``paths`` that exist (not
    following links); one warning for all that changed. A path the node may
    not change is named in a warning and left: the node still starts."""
    changed: list[Path] = []
    for path in paths:
        try:
            found = os.lstat(path)
            if stat.S_ISLNK(found.st_mode) or not found.st_mode & 0o077:
                continue
            os.chmod(path, stat.S_IMODE(found.st_mode) & ~0o077)
            changed.append(Path(path))
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not make %s private: %s", path, exc.strerror or type(exc).__name__)
    if changed:
        log.warning(
            "tightened %d paths other users could read (now 0700 folders, 0600 files): %s",
            len(changed),
            ", ".join(str(p) for p in changed[:10]) + (" …" if len(changed) > 10 else ""),
        )
    return changed


# What the node makes directly in its data folder (the SQLite index and its
# journals are named by the index URL) and in its key folder.
DATA_ENTRIES = frozenset({"blobs", "quarantine", "exports", "packages", "lost+found", ".tmp"})
# The node's key files (`dicomnode.node`, `deid.pipeline`, `jobs.export`
# name them where they are made); backups copy these.
KEY_FILES = frozenset(
    f"{name}.key" for name in ("deid", "linkage", "audit", "web", "quarantine", "export")
)


def installation(data_dir: Path, key_dir: Path, index_file: Path | None) -> list[Path]:
    """What start-up tightens: what the node made in the data and key
    folders (index, blob and quarantine folders, exports; key files), and an
    SQLite index elsewhere with its journal files. A folder itself only when
    everything in it is the node's: pointed at a shared folder (the working
    directory, "/" under a service manager) the node must not take its and
    its neighbours' permissions away. Not every blob: the folders above them
    close them off, and there may be millions."""
    data_dir, key_dir = Path(data_dir).resolve(), Path(key_dir).resolve()  # a link's target
    index_files: list[Path] = []
    if index_file is not None:
        # Not resolved: a link named as the index is left alone (lstat).
        index_file = Path(index_file).absolute()
        index_files = [Path(f"{index_file}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]
    paths: list[Path] = []
    for folder, ours in (
        (data_dir, lambda p: p.name in DATA_ENTRIES or p in index_files),
        (key_dir, lambda p: p.name in KEY_FILES and p.is_file()),
    ):
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            entries = []
        others = [p for p in entries if not ours(p)]
        if others:
            log.warning(
                "%s is not the node's alone (%d entries it did not make): left as it is",
                folder,
                len(others),
            )
        else:
            paths.append(folder)
        paths += [p for p in entries if ours(p)]
    paths += index_files
    return list(dict.fromkeys(paths))
