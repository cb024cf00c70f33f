"""Backup and restore of the index and the key files (not the blobs).

The SQLite index is copied with SQLite's online backup (consistent while the
node runs), a PostgreSQL index with pg_dump (`dicomnode.pgdump`); keys are
copied with their 0600 mode into ``keys/``; a manifest
holds a SHA-256 of every file, checked before anything is restored. Index and
keys can be written apart (``parts``): together they can re-identify
patients, so they are meant to be stored in different places. Blobs are
files written once: copy them with rsync or a filesystem snapshot (held ones
are encrypted and open only with ``quarantine.key``, which is among the keys).
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

from dicomnode import __version__, pgdump
from dicomnode.config import Config

KEY_FILES = (
    "deid.key",
    "linkage.key",
    "audit.key",
    "web.key",
    "export.key",
    "quarantine.key",
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
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: list[Path] = []
    if "index" in parts and _is_postgres(config):
        try:
            pgdump.dump(config.effective_index_url, out / INDEX_PG)
        except pgdump.DumpError as exc:
            raise BackupError(str(exc)) from None
        written.append(out / INDEX_PG)
    elif "index" in parts:
        source = _sqlite_path(config)
        if not source.exists():
            raise BackupError(f"no index at {source}")
        with sqlite3.connect(source) as live, sqlite3.connect(out / INDEX) as copy:
            live.backup(copy)
        written.append(out / INDEX)
    if "keys" in parts:
        folder = out / "keys"
        folder.mkdir(mode=0o700)
        for name in KEY_FILES:
            if (config.key_dir / name).exists():
                shutil.copy2(config.key_dir / name, folder / name)
                os.chmod(folder / name, 0o600)
                written.append(folder / name)
    manifest = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__,
        "files": {p.relative_to(out).as_posix(): _sha256(p) for p in written},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
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
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if name == INDEX:
            for suffix in ("-wal", "-shm"):  # a stale log would be replayed onto the copy
                Path(str(target) + suffix).unlink(missing_ok=True)
        shutil.copy2(source / name, target)
        if name != INDEX:
            os.chmod(target, 0o600)
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
