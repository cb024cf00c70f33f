"""The keyed HMAC behind every pseudonym, remapped UID and date offset.

With the key, re-sends and follow-up studies of a child land under the same
pseudonym and the same new UIDs; without it nobody can recompute them from a
guessed PatientID (no dictionary attack). The key lives in a file outside the
data directory, created once with mode 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from storage.private import private_dir

# Crockford's base32: no I, L, O, U, so a pseudonym reads back unambiguously.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MAX_SHIFT_DAYS = 3650


class KeyFileError(RuntimeError):
    """The key file is unusable; the message says why."""


def _encode(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, 32)
        chars.append(_ALPHABET[index])
    return "".join(chars)


def _create_key(path: Path) -> None:
    """Write a new key whole, then link it into place: of node processes
    starting together on one key folder, one key wins and all read it."""
    private_dir(path.parent)
    descriptor, draft = tempfile.mkstemp(dir=path.parent, prefix=".new-key-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        os.unlink(draft)


def load_or_create_key(path: Path, data_dir: Path, *, create: bool = True) -> bytes:
    """Read the key, creating it (0600) on first start. Refuse a key inside the
    data directory (a copy of the archive must not carry its own key) and a key
    file others can read."""
    path, data_dir = Path(path).resolve(), Path(data_dir).resolve()
    if path.is_relative_to(data_dir):
        raise KeyFileError(f"key file {path} is inside the data directory {data_dir}")
    if not path.exists() and not create:
        raise KeyFileError(f"no key file at {path}")
    if not path.exists():
        _create_key(path)
    if path.stat().st_mode & 0o077:
        raise KeyFileError(f"key file {path} is readable by others (chmod 600 it)")
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except ValueError:
        raise KeyFileError(f"key file {path} does not hold a hex key") from None
    if len(key) < 32:
        raise KeyFileError(f"key file {path} holds fewer than 256 bits")
    return key


class Secret:
    """Deterministic, keyed derivations; each purpose has its own domain."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, purpose: str, *parts: str) -> bytes:
        message = "\x00".join((purpose, *parts)).encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def pseudonym(self, issuer: str, patient_id: str) -> str:
        """A readable patient pseudonym such as ``CHD-7Q4K-2M9X``."""
        code = _encode(self.digest("patient", issuer, patient_id), 8)
        return f"CHD-{code[:4]}-{code[4:]}"

    def token(self, purpose: str, *parts: str, length: int = 12) -> str:
        """A short code for accession numbers, study IDs and the like."""
        return _encode(self.digest(purpose, *parts), length)

    def uid(self, original: str, scope: tuple[str, ...] = ()) -> str:
        """The same new ``2.25.`` UID for the same original UID, every time;
        within a ``scope`` (issuer, patient key), one of that patient's own:
        what its instance gets where another patient already holds the UID."""
        parts = ("patient-uid", *scope, original) if scope else ("uid", original)
        digest = bytearray(self.digest(*parts)[:16])
        digest[6] = (digest[6] & 0x0F) | 0x80  # UUID version 8 (custom)
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
        return f"2.25.{int.from_bytes(digest, 'big')}"

    def date_offset_days(self, issuer: str, patient_id: str) -> int:
        """Days every date of this patient moves back: 1 to 3650, never 0."""
        number = int.from_bytes(self.digest("dates", issuer, patient_id)[:8], "big")
        return -(1 + number % _MAX_SHIFT_DAYS)
