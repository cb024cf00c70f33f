"""Backup and restore of the index and the key files (not the blobs).

The SQLite index is copied with SQLite's online backup (consistent while the
node runs), a PostgreSQL index with pg_dump (`dicomnode.ops.pgdump`); keys are
copied into ``keys/``; every file written is 0600 in 0700 folders, whatever
the umask (restored ones too); a manifest holds a SHA-256 of every file,
checked before anything is restored. Index and keys can be written apart
(``parts``): together they can re-identify patients, so they are meant to be
stored in different places. Blobs are files written once: copy them with
rsync or a filesystem snapshot (held ones are encrypted and open only with
``quarantine.key``, which is among the keys).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from dicomnode import __version__
from dicomnode.config import Config
from dicomnode.ops import pgdump
from storage.private import (
    KEY_FILES,
    create_private,
    open_private,
    private_dir,
    tighten,
    write_private,
)

MANIFEST = "MANIFEST.json"
INDEX = "index.sqlite"
INDEX_PG = "index.pgdump"


class BackupError(RuntimeError):
    """The backup or restore cannot be done; the message says why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_private(source: Path, target: Path) -> None:
    """``source``'s bytes into ``target``, 0600 from its first byte (a copy
    then chmod would leave it readable by others for a moment)."""
    with source.open("rb") as reading, os.fdopen(open_private(target), "wb") as writing:
        shutil.copyfileobj(reading, writing, 1 << 20)


def _is_postgres(config: Config) -> bool:
    return make_url(config.effective_index_url).get_backend_name() == "postgresql"


def _sqlite_path(config: Config) -> Path:
    url = config.effective_index_url
    if not url.startswith("sqlite:///"):
        raise BackupError("the index is neither SQLite nor PostgreSQL: use the database's tools")
    return Path(url.removeprefix("sqlite:///"))


def backup(config: Config, out: Path, parts: tuple[str, ...] = ("index", "keys")) -> list[str]:
    """Write the chosen parts into the new folder ``out``; returns the files written."""
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} exists and is not empty")
    private_dir(out)
    tighten([out])  # an empty folder made beforehand
    written: list[Path] = []
    if "index" in parts and _is_postgres(config):
        create_private(out / INDEX_PG)  # pg_dump keeps the mode of a file it truncates
        try:
            pgdump.dump(config.effective_index_url, out / INDEX_PG)
        except pgdump.DumpError as exc:
            raise BackupError(str(exc)) from None
        written.append(out / INDEX_PG)
    elif "index" in parts:
        source = _sqlite_path(config)
        if not source.exists():
            raise BackupError(f"no index at {source}")
        create_private(out / INDEX)  # SQLite would make it by the umask
        with sqlite3.connect(source) as live, sqlite3.connect(out / INDEX) as copy:
            live.backup(copy)
        written.append(out / INDEX)
    if "keys" in parts:
        folder = out / "keys"
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)
        for name in sorted(KEY_FILES):
            if (config.key_dir / name).exists():
                _copy_private(config.key_dir / name, folder / name)
                written.append(folder / name)
    manifest = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__,
        "files": {p.relative_to(out).as_posix(): _sha256(p) for p in written},
    }
    write_private(out / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
    return sorted(manifest["files"])


def restore(config: Config, source: Path, *, force: bool = False) -> list[str]:
    """Put a backup's index and keys back; refuses to overwrite unless ``force``."""
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BackupError(f"{source} holds no readable {MANIFEST}") from None
    files: dict[str, str] = manifest.get("files", {})
    for name, digest in files.items():
        path = source / name
        if ".." in Path(name).parts or not path.is_file() or _sha256(path) != digest:
            raise BackupError(f"{name} is missing or differs from the manifest: nothing restored")
    targets = {
        name: (_sqlite_path(config) if name == INDEX else config.key_dir / Path(name).name)
        for name in files
        if name != INDEX_PG
    }
    for name, target in targets.items():
        if target.exists() and not force and _sha256(target) != files[name]:
            raise BackupError(f"{target} exists and differs (use --force to replace it)")
    if INDEX_PG in files:  # after the key checks: all or nothing of what can be refused
        _restore_postgres(config, source / INDEX_PG, force)
    for name, target in targets.items():
        private_dir(target.parent)
        if name == INDEX:
            for suffix in ("-wal", "-shm"):  # a stale log would be replayed onto the copy
                Path(str(target) + suffix).unlink(missing_ok=True)
        _copy_private(source / name, target.resolve())  # 0600, the index too
    return sorted(files)


def _restore_postgres(config: Config, dump: Path, force: bool) -> None:
    """Into the configured database; one that holds instances only with ``force``."""
    if not _is_postgres(config):
        raise BackupError("the backup holds a PostgreSQL index; index_url is not PostgreSQL")
    url = config.effective_index_url
    try:
        if pgdump.holds_instances(url) and not force:
            raise BackupError("the PostgreSQL index holds instances (use --force to replace it)")
        pgdump.restore(url, dump)
    except pgdump.DumpError as exc:
        raise BackupError(str(exc)) from None
