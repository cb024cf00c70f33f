"""One place decides what is stored: blob first, durably, then the index.

Held (quarantined) instances may carry identity in their pixels or in an
encapsulated document, so they are written only encrypted: AES-256-GCM under
``quarantine.key``, a random nonce per blob, the SOP Instance UID bound in
as associated data (a held blob copied over another one does not open).
A held blob is ``HELD_FORMAT`` (8 bytes) + nonce (12) + ciphertext and tag
(16); the index records the size and SHA-256 of those bytes, what is on
disk, so ``dicomnode check`` verifies them without the key.

A large instance arrives as a `Stream` (chunks read from the spool) and is
written, or sealed and written, a chunk at a time.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from io import BytesIO
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from storage.blobs import BlobRef, BlobStore, Stream, open_stores
from storage.index import AlsoWrite, Index, LinkageRow, StoreOutcome
from storage.record import InstanceRecord
from storage.verifying import OcrWait

log = logging.getLogger(__name__)

# Marker and version of a sealed held blob. A plaintext one (written before
# held blobs were encrypted) is a Part 10 file: "DICM" at offset 128.
HELD_FORMAT = b"CHDHELD1"
_NONCE = 12
_TAG = 16
_NOT_SEALED = "not sealed where its row says it must be (put there without the key?)"
_NOT_AS_HELD = "content differs from what was held (SHA-256)"
_DOES_NOT_OPEN = "does not open with quarantine.key (damaged, another instance's, or another key)"
_PART10_MAGIC = slice(128, 132)


class DuplicatePolicy(StrEnum):
    KEEP_FIRST = "keep-first"
    REPLACE = "replace"


class HeldBlobError(ValueError):
    """A held blob does not open: damaged, another instance's, or another key."""


def is_sealed(blob: bytes) -> bool:
    """Whether a held blob is in the encrypted format (else a legacy plaintext)."""
    return blob.startswith(HELD_FORMAT)


class HeldCipher:
    """AES-256-GCM for held instances, bound to their SOP Instance UID."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the quarantine key needs 256 bits")
        self._key = key[:32]
        self._aead = AESGCM(self._key)

    @staticmethod
    def _bound(sop_instance_uid: str) -> bytes:
        # The format marker too: a later format cannot be read as this one.
        return HELD_FORMAT + b"\x00" + sop_instance_uid.encode("ascii")

    def seal(self, sop_instance_uid: str, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return HELD_FORMAT + nonce + self._aead.encrypt(nonce, plain, self._bound(sop_instance_uid))

    def seal_chunks(
        self, sop_instance_uid: str, chunks: Iterable[bytes], nonce: bytes
    ) -> Iterator[bytes]:
        """`seal` a chunk at a time: the same bytes ``seal`` writes with this
        nonce (AES-GCM's tag, 16 bytes, last)."""
        encryptor = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(self._bound(sop_instance_uid))
        yield HELD_FORMAT + nonce
        for chunk in chunks:
            yield encryptor.update(chunk)
        yield encryptor.finalize() + encryptor.tag

    def open_chunks(self, sop_instance_uid: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """`open` a chunk at a time. The tag is checked only after the last
        chunk: a caller trusts nothing it was given until the iteration
        ends without HeldBlobError."""
        stream, pending = iter(chunks), b""
        start = len(HELD_FORMAT) + _NONCE
        for chunk in stream:
            pending += chunk
            if len(pending) >= start:
                break
        if not is_sealed(pending) or len(pending) < start:
            raise HeldBlobError("not a sealed held blob")
        nonce, pending = pending[len(HELD_FORMAT) : start], pending[start:]
        decryptor = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).decryptor()
        decryptor.authenticate_additional_data(self._bound(sop_instance_uid))
        for chunk in itertools.chain([b""], stream):  # what followed the nonce first
            pending += chunk
            if len(pending) > _TAG:  # the last 16 bytes may be the tag
                yield decryptor.update(pending[:-_TAG])
                pending = pending[-_TAG:]
        if len(pending) < _TAG:
            raise HeldBlobError("a sealed held blob cut short")
        try:
            yield decryptor.finalize_with_tag(pending)
        except InvalidTag:
            raise HeldBlobError(_DOES_NOT_OPEN) from None

    def open(self, sop_instance_uid: str, blob: bytes) -> bytes:
        if not is_sealed(blob):
            raise HeldBlobError("not a sealed held blob")
        start = len(HELD_FORMAT)
        nonce, sealed = blob[start : start + _NONCE], blob[start + _NONCE :]
        try:
            return self._aead.decrypt(nonce, sealed, self._bound(sop_instance_uid))
        except InvalidTag:
            raise HeldBlobError(_DOES_NOT_OPEN) from None


class Archive:
    """Blob store plus index. ``store`` returns only once both are durable."""

    def __init__(
        self,
        data_dir: Path,
        index_url: str,
        duplicates: DuplicatePolicy,  # the configuration's `duplicates`, its one default
        audit_key: bytes = b"",
        stores: tuple[BlobStore, BlobStore] | None = None,
        quarantine_key: bytes | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.blobs, self.held = stores or open_stores("", self.data_dir)
        self.index = Index(index_url, audit_key)
        self.duplicates = DuplicatePolicy(duplicates)
        # Without a key nothing can be held: an instance to quarantine then
        # fails (and is not acknowledged) rather than being written in plaintext.
        self._held_cipher = HeldCipher(quarantine_key) if quarantine_key else None

    def close(self) -> None:
        self.index.close()

    def store(
        self,
        record: InstanceRecord,
        data: bytes | Stream,
        linkage_row: LinkageRow | None = None,
        also: AlsoWrite | None = None,
        after: Callable[[Connection], None] | None = None,
    ) -> StoreOutcome:
        """The one store, whatever the door (DIMSE, STOW-RS, import, the
        node's own SRs, a released held instance): the blob written and
        synced, then one transaction for the instance row, the study's
        sealed identity (``linkage_row``), the change feed's row (what
        forwarding reads: `storage.changes`), the end of a held copy and
        ``also``'s rows (an audit record, a plan version: `Index.add`).
        Once it returns the instance is stored, whatever follows.

        A replacement is written under a versioned key of its own (one per
        call: a retried transaction rewrites the same one) and the live
        blob is deleted only after the commit (`Index.add`)."""
        uid = record.sop_instance_uid
        again = self.blobs.key_for(uid, self.blobs.new_version())
        if isinstance(data, bytes):
            blob = BlobRef.of(self.blobs.key_for(uid), data)

            def replacement() -> BlobRef:
                self.blobs.put(again, data)
                return BlobRef(again, blob.size, blob.sha256)

            outcome, held, superseded = self.index.add(
                record,
                blob,
                replace=self.duplicates is DuplicatePolicy.REPLACE,
                write_blob=lambda: self.blobs.put(blob.key, data),
                linkage_row=linkage_row,
                also=also,
                replacement=replacement,
                after=after,
            )
        else:
            outcome, held, superseded = self._store_stream(
                record, data, linkage_row, also, again, after
            )
        if held is not None:
            self._drop_held_blob(uid, held)
        if superseded is not None:
            self._drop_superseded(uid, superseded)
        return outcome

    def _store_stream(
        self,
        record: InstanceRecord,
        data: Stream,
        linkage_row: LinkageRow | None,
        also: AlsoWrite | None = None,
        again: str = "",
        after: Callable[[Connection], None] | None = None,
    ) -> tuple[StoreOutcome, str | None, str | None]:
        """`store` for a stream: written as it is read, its size and digest
        known once written (`Index.add` writes the blob before the row); a
        replacement goes to ``again``."""
        written = _Written(self.blobs.key_for(record.sop_instance_uid))

        def write() -> None:
            ref = self.blobs.put_stream(written.key, data.chunks())
            written.size, written.sha256 = ref.size, ref.sha256

        return self.index.add(
            record,
            written,  # type: ignore[arg-type]
            replace=self.duplicates is DuplicatePolicy.REPLACE,
            write_blob=write,
            linkage_row=linkage_row,
            also=also,
            replacement=lambda: self.blobs.put_stream(again, data.chunks()),
            after=after,
        )

    def _drop_superseded(self, sop_instance_uid: str, key: str) -> None:
        """The blob a committed replacement superseded: a blob left behind
        (an error, a crash) is an orphan `dicomnode check` sets aside."""
        try:
            self.blobs.delete(key)
        except OSError as exc:
            log.warning("replaced blob of %s not deleted: %s", _reference(sop_instance_uid), exc)

    def _drop_held_blob(self, sop_instance_uid: str, key: str) -> None:
        """The held copy of an instance now stored (its row went with the
        store): a blob left behind is an orphan `dicomnode check` sets aside."""
        try:
            self.held.delete(key)
        except OSError as exc:
            log.warning("held copy of %s not deleted: %s", _reference(sop_instance_uid), exc)

    def _cipher(self) -> HeldCipher:
        if self._held_cipher is None:
            raise RuntimeError("no quarantine key: held instances are only stored encrypted")
        return self._held_cipher

    def quarantine(
        self,
        record: InstanceRecord,
        data: bytes | Stream,
        reason: str,
        linkage_row: LinkageRow | None = None,
        also: Callable[[Connection], None] | None = None,
        ocr: OcrWait | None = None,
    ) -> None:
        """Hold an instance apart, encrypted: not in the index tables queries
        and export read (nor in the change feed until it is released). The
        index records the sealed blob's size and digest, and the study's
        sealed identity (and ``also``'s rows) in the same transaction;
        ``ocr``, the instance waits for deferred OCR (`storage.verifying`)."""
        if not isinstance(data, bytes):
            self._quarantine_stream(record, data, reason, linkage_row, also, ocr)
            return
        sealed = self._cipher().seal(record.sop_instance_uid, data)
        blob = BlobRef.of(self.held.key_for(record.sop_instance_uid), sealed)
        self.index.add_quarantined(
            record,
            blob,
            reason,
            write_blob=lambda: self.held.put(blob.key, sealed),
            linkage_row=linkage_row,
            also=also,
            ocr=ocr,
        )

    def _quarantine_stream(
        self,
        record: InstanceRecord,
        data: Stream,
        reason: str,
        linkage_row: LinkageRow | None,
        also: Callable[[Connection], None] | None = None,
        ocr: OcrWait | None = None,
    ) -> None:
        """Sealed as it is written, its size and digest known once written
        (`Index.add_quarantined` writes the blob before the row); one nonce
        per call, so a retried transaction writes the same bytes again."""
        uid, cipher, nonce = record.sop_instance_uid, self._cipher(), os.urandom(_NONCE)
        written = _Written(self.held.key_for(uid))

        def write() -> None:
            ref = self.held.put_stream(written.key, cipher.seal_chunks(uid, data.chunks(), nonce))
            written.size, written.sha256 = ref.size, ref.sha256

        self.index.add_quarantined(
            record,
            written,  # type: ignore[arg-type]
            reason,
            write_blob=write,
            linkage_row=linkage_row,
            also=also,
            ocr=ocr,
        )

    def seal_for_hold(self, sop_instance_uid: str, plain: bytes) -> bytes:
        """What goes with a held instance (deferred OCR's identity values),
        encrypted with the quarantine key and bound to that instance."""
        return self._cipher().seal(f"ocr:{sop_instance_uid}", plain)

    def open_for_hold(self, sop_instance_uid: str, sealed: bytes) -> bytes:
        """`seal_for_hold`'s plaintext; raises if it is not this instance's."""
        return self._cipher().open(f"ocr:{sop_instance_uid}", sealed)

    def open_held(self, sop_instance_uid: str, blob: bytes, sealed: bool = True) -> bytes:
        """The Part 10 file in a held blob: decrypted; a plaintext only where
        its row says it was held before blobs were sealed (``sealed`` False,
        until the next start seals it). A plaintext where a sealed blob
        should be is a file put there by someone without the key: refused."""
        if is_sealed(blob):
            return self._cipher().open(sop_instance_uid, blob)
        if not sealed and blob[_PART10_MAGIC] == b"DICM":
            return blob
        raise HeldBlobError(_NOT_SEALED)

    def read_held(self, sop_instance_uid: str) -> bytes | None:
        """The decrypted Part 10 file of a held instance; None if it is not held."""
        chunks = self.read_held_chunks(sop_instance_uid)
        return None if chunks is None else b"".join(chunks)

    def read_held_chunks(self, sop_instance_uid: str) -> Iterator[bytes] | None:
        """`read_held` a chunk at a time (see `HeldCipher.open_chunks`: trust
        the bytes only once the iteration has ended); None if not held. The
        blob must hash to what its row recorded, and be sealed unless its row
        is from before held blobs were."""
        found = self.index.held_blob(sop_instance_uid)
        if found is None:
            return None
        key, sealed, sha256 = found
        chunks = _as_held(self.held.read_chunks(key), sha256)
        first = next(chunks, b"")
        if is_sealed(first):
            return self._cipher().open_chunks(sop_instance_uid, itertools.chain([first], chunks))
        if not sealed and first[_PART10_MAGIC] == b"DICM":  # legacy, until the next start
            return itertools.chain([first], chunks)
        raise HeldBlobError(_NOT_SEALED)

    def forget_quarantined(self, sop_instance_uid: str) -> None:
        """A clean copy arrived (a re-send with regions, say), or the
        administrator refused the held one: drop it."""
        key = self.index.quarantined_blob(sop_instance_uid)
        if key is not None:
            self.index.remove_quarantined(sop_instance_uid)
            self.held.delete(key)

    def seal_plaintext_held(self) -> tuple[int, list[str]]:
        """Encrypt in place the held blobs an older version wrote in plaintext
        (run at start-up). Returns how many were sealed, and the UIDs that
        could not be (missing or damaged: ``dicomnode check`` says more)."""
        sealed, failed = 0, []
        for uid in self.index.unsealed_quarantined():
            try:
                if self.index.reseal_quarantined(uid, self._reseal):
                    sealed += 1
            except (OSError, HeldBlobError) as exc:
                log.warning("held instance %s not sealed: %s", _reference(uid), exc)
                failed.append(uid)
        return sealed, failed

    def _reseal(self, row: dict[str, Any]) -> tuple[BlobRef, str | None]:
        """Seal one legacy blob; called with its row claimed (`Index.reseal_quarantined`)."""
        uid, key = row["sopinstanceuid"], row["blob_key"]
        blob = self.held.read(key)
        # Already sealed when an earlier start stopped before updating the
        # row: either way it must hold exactly the plaintext the row describes.
        plain = self.open_held(uid, blob, sealed=False)
        if row["sha256"] and hashlib.sha256(plain).hexdigest() != row["sha256"]:
            raise HeldBlobError(_NOT_AS_HELD)
        if not is_sealed(blob):
            blob = self._cipher().seal(uid, plain)
            self.held.put(key, blob)
        return BlobRef.of(key, blob), _sop_class(plain)

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
        """The stored file; looked up again once if it was replaced (and
        its superseded blob deleted) between the lookup and the read."""
        for attempt in range(2):
            key = self.index.instance_blob(sop_instance_uid)
            if key is None:
                return None
            try:
                return self.blobs.read(key)
            except FileNotFoundError:
                if attempt or self.index.instance_blob(sop_instance_uid) == key:
                    raise
        raise AssertionError("unreachable")


def _as_held(chunks: Iterator[bytes], sha256: str | None) -> Iterator[bytes]:
    """``chunks``, raising at their end unless they hash to what the row
    recorded when the blob was written (an older copy put back, say: it
    would still open with the key)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
    if sha256 and digest.hexdigest() != sha256:
        raise HeldBlobError(_NOT_AS_HELD)


@dataclass
class _Written:
    """A blob reference whose size and digest are known once it is written."""

    key: str
    size: int = -1
    sha256: str = ""


def _reference(sop_instance_uid: str) -> str:
    """How logs name an instance: never the UID itself."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:12]


def _sop_class(part10: bytes) -> str | None:
    """The SOP Class UID of a Part 10 file (for rows held before it was kept)."""
    from pydicom import dcmread

    try:
        header = dcmread(BytesIO(part10), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # a damaged file: the row just lacks the class
        return None
    value = header.get("SOPClassUID")
    return str(value) if value else None
