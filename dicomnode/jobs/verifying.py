"""Deferred OCR (``ocr_deferred``): read held instances after they were answered.

The ingest holds an image OCR must read and answers the sender at once
(`dicomnode.ingest.pipeline`); this pass, in every node process, claims
waiting rows (`storage.verifying`) and reads each instance in a worker
thread (Tesseract runs outside the GIL, so ``ocr_workers`` threads use as
many cores while the DIMSE threads go on). The reading is the ingest's own
(`dicomnode.deid.verify.check`, with the identity values of the header as
received and the mask of what a rule blanked); then, in one transaction,
the instance is stored as any instance is (change row, forwarding) or kept
held with OCR's finding and its audit record. Until then it is held like
any held instance: encrypted, invisible to queries, viewer and export.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import replace
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from sqlalchemy import Connection

from dicomnode.deid.identity import IdentityMatcher
from dicomnode.deid.pipeline import AWAITING_OCR, encode_plain, mark_verified
from dicomnode.deid.pixels import keep_mask
from dicomnode.deid.stream import SpooledPixels, stored_frames
from dicomnode.deid.verify import check
from dicomnode.ingest.importer import dataset_offset
from dicomnode.ingest.pipeline import (
    HOLD_EVENT,
    IN_MEMORY_SHARE,
    Ingestor,
    header_limit,
    read_header,
)
from dicomnode.media.spool import Pieces, SpoolFile
from dicomnode.status import Rejection
from storage.archive import HeldBlobError
from storage.index import StoreOutcome, add_copies_in
from storage.leases import process_name
from storage.verifying import BATCH, LEASE, claimed_in

log = logging.getLogger(__name__)
# A reading that fails (an error, not a finding) this often keeps the
# instance held, saying so, instead of coming back for ever.
MOST_ATTEMPTS = 3


# Bytes of a held file read before its file meta is parsed: the node's own
# meta is a few hundred bytes, and a longer one is not the node's.
_HEAD = 1 << 16


def _dataset_offset(head: bytes | bytearray) -> tuple[int, str]:
    try:
        return dataset_offset(bytes(head))
    except Exception as exc:  # pydicom raises many kinds on a meta it cannot read
        why = f"held copy without a readable file meta ({type(exc).__name__})"
        raise HeldBlobError(why) from None


def _unreadable(exc: Exception) -> str:
    return f"held copy unreadable for OCR ({type(exc).__name__})"


class NotWaiting(Exception):
    """The row is no longer this process's (an administrator decided, a
    re-send replaced it, the lease passed on): nothing is stored."""


def workers(configured: int, processes: int = 1) -> int:
    """``ocr_workers`` as threads: 0 is the cores less one for the network,
    shared among the node's receiving ``processes``, at least one each."""
    return configured or max(1, ((os.cpu_count() or 1) - 1) // processes)


class ByteBudget:
    """Bytes of held instances the worker threads may have in memory at
    once (each is read whole, decrypted and decoded: several times its size)."""

    def __init__(self, total: int) -> None:
        self.total = self.left = total
        self._cond = threading.Condition()

    def take(self, size: int) -> int:
        """Wait until ``size`` (at most the total) is free; what was taken."""
        size = min(size, self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.left >= size)
            self.left -= size
        return size

    def give(self, size: int) -> None:
        with self._cond:
            self.left += size
            self._cond.notify_all()


class Verifier:
    """The pass `dicomnode.jobs.runner` calls every few seconds."""

    def __init__(self, ingestor: Ingestor, threads: int) -> None:
        self.ingestor = ingestor
        self.archive = ingestor.archive
        self.owner = process_name()
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ocr")
        self._stopping = threading.Event()
        # An in-memory instance is at most a quarter of the spool threshold.
        self._budget = ByteBudget(max(1, ingestor.threshold))
        self._header_limit = header_limit(ingestor.config)

    def stop(self) -> None:
        """Finish the instances being read; give the rest back to the queue."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run_once(self) -> int:
        """Verify waiting instances until none wait (or a stop); how many."""
        done = 0
        queue = self.archive.index.ocr_queue
        while not self._stopping.is_set():
            rows = queue.claim(self.owner, max(BATCH, 2 * self.threads))
            if not rows:
                break
            read = self._read_all(rows, time.monotonic())
            unread = [row["pk"] for row in rows if row["pk"] not in read]
            if unread:
                queue.release(unread, self.owner)
            done += len(read)
        return done

    def _read_all(self, rows: list[dict[str, Any]], claimed: float) -> set[int]:
        """Verify ``rows`` (claimed at ``claimed``, monotonic) in the worker
        threads; the keys of those read (a stop leaves the rest unread)."""

        def one(row: dict[str, Any]) -> int | None:
            if self._stopping.is_set():
                return None
            # A batch read within half its lease needs no renewal (a write each).
            late = time.monotonic() - claimed > LEASE.total_seconds() / 2
            if late and not self.archive.index.ocr_queue.renew(row["pk"], self.owner):
                return int(row["pk"])  # the lease passed on: another reads it
            self.verify(row)
            return int(row["pk"])

        try:
            futures = [self._pool.submit(one, row) for row in rows]
        except RuntimeError:  # the pool shut down under a stop
            return set()
        read = set()
        for future in futures:
            try:
                pk = future.result()
            except CancelledError:
                continue
            if pk is not None:
                read.add(pk)
        return read

    def verify(self, row: dict[str, Any]) -> None:
        """Read one held instance; store it or keep it held. Errors are
        logged by type only (a text might quote what OCR read); one that
        comes back every time keeps the instance held after a few tries."""
        uid = str(row["sopinstanceuid"])
        reference = self.ingestor.deidentify.reference(uid)
        try:
            self._verify(row, uid, reference)
        except NotWaiting:
            log.info("OCR of %s ended elsewhere", reference)
        except Exception as exc:  # the index unreachable, a header the store refuses
            log.error("OCR of %s failed: %s", reference, type(exc).__name__)
            self._failed(row, uid, reference, type(exc).__name__)

    def _failed(self, row: dict[str, Any], uid: str, reference: str, why: str) -> None:
        try:
            attempts = self.archive.index.ocr_queue.failed(row["pk"], self.owner)
            if attempts >= MOST_ATTEMPTS:
                self._keep(uid, f"OCR verification failed {attempts} times ({why})", reference)
        except Exception as exc:  # the index still out of reach: the lease lapses back
            log.error("OCR of %s not recorded as failed: %s", reference, type(exc).__name__)

    def _verify(self, row: dict[str, Any], uid: str, reference: str) -> None:
        held_rows = self.archive.index.quarantined(uid)
        if not held_rows or held_rows[0]["reason"] != AWAITING_OCR:
            self._keep(uid, None, reference)  # decided elsewhere: only the row goes
            return
        held = held_rows[0]
        spooled = int(held["size"] or 0) > self._budget.total // IN_MEMORY_SHARE
        # A clip read from the spool holds its header and a frame or two.
        taken = self._budget.take(self._budget.total // 4 if spooled else int(held["size"] or 0))
        try:
            if spooled:
                self._verify_spooled(row, held, uid, reference)
                return
            try:
                part10 = self.archive.read_held(uid)
                if part10 is None:
                    raise HeldBlobError("not held")
                ds = dcmread(BytesIO(part10))
                values = json.loads(self.archive.open_for_hold(uid, row["identity"]))
            except (HeldBlobError, OSError, ValueError) as exc:
                self._keep(uid, _unreadable(exc), reference)
                return
            reason = self._read(ds, row, values)
            if reason is not None:
                self._keep(uid, reason, reference)
                return
            cleaned = bool(row["cleaned"])
            self._store(ds, held, cleaned, None if cleaned else part10, reference)
        finally:
            self._budget.give(taken)

    def _verify_spooled(
        self, row: dict[str, Any], held: dict[str, Any], uid: str, reference: str
    ) -> None:
        """`_verify` for a held clip too large to read whole: decrypted into
        this process's spool (encrypted there, nameless), its header decoded,
        its frames read one at a time as OCR samples them."""
        with self.ingestor.spool.open() as body:
            try:
                meta, syntax = self._decrypt_into(uid, body)
                header, layout = read_header(body, syntax, header_limit=self._header_limit)
                header.file_meta = FileMetaDataset()
                header.file_meta.TransferSyntaxUID = syntax
                values = json.loads(self.archive.open_for_hold(uid, row["identity"]))
                frames = None
                if layout.pixel_offset is not None:
                    pixels = SpooledPixels(body, layout, syntax)
                    frames = stored_frames(header, pixels, syntax)
            except (HeldBlobError, OSError, ValueError, Rejection) as exc:
                self._keep(uid, _unreadable(exc), reference)
                return
            reason = self._read(header, row, values, frames)
            if reason is not None:
                self._keep(uid, reason, reference)
                return
            if row["cleaned"]:  # the header says so now: encoded again, the rest as held
                start = body.size if layout.pixel_offset is None else layout.pixel_offset
                rest = Pieces([(body, start, body.size)])
                self._store(header, held, True, rest, reference)
            else:
                self._store(header, held, False, Pieces([meta, (body, 0, body.size)]), reference)

    def _decrypt_into(self, uid: str, body: SpoolFile) -> tuple[bytes, UID]:
        """The held Part 10 file's preamble and file meta, and its transfer
        syntax; its data set written to ``body``. The bytes are trusted only
        once the last chunk has passed AES-GCM's tag check."""
        chunks = self.archive.read_held_chunks(uid)
        if chunks is None:
            raise HeldBlobError("not held")
        head, offset, syntax = bytearray(), None, ""
        for chunk in chunks:
            if offset is not None:
                body.write(chunk)
                continue
            head += chunk
            if len(head) >= _HEAD:
                offset, syntax = _dataset_offset(head[:_HEAD])
                body.write(head[offset:])
        if offset is None:  # a file shorter than that
            offset, syntax = _dataset_offset(head)
            body.write(head[offset:])
        return bytes(head[:offset]), UID(syntax)

    def _read(
        self,
        ds: Dataset,
        row: dict[str, Any],
        values: list[list[str]],
        frames: Callable[[int], Dataset] | None = None,
    ) -> str | None:
        """What the ingest would have said: OCR's finding, or None."""
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        blanked = None
        if row["cleaned"]:  # the rules as applied, on the same header: the same mask
            rectangles = tuple(tuple(r) for r in json.loads(row["rectangles"] or "[]"))
            mask = keep_mask(ds, rectangles)
            if isinstance(mask, str):
                return f"blanked areas cannot be made again ({mask})"
            blanked = ~mask
        matcher = IdentityMatcher.from_values((str(kind), str(value)) for kind, value in values)
        settings = replace(self.ingestor.deidentify.ocr, deferred=False)
        # Read even if this node now runs with ocr = false: it was held to be read.
        return check(
            ds,
            syntax,
            blanked=blanked,
            matcher=matcher,
            settings=settings,
            frames=frames,
            always=True,
        )

    def _store(
        self,
        ds: Dataset,
        held: dict[str, Any],
        cleaned: bool,
        stored: bytes | Pieces | None,
        reference: str,
    ) -> None:
        """The one store, as any held instance's: the held row and the
        queue row end in its transaction, which fails if the row is no
        longer this process's (then nothing is stored). ``stored``: the
        held file as it is; or, ``cleaned`` and spooled, what follows the
        header from Pixel Data on."""
        uid = str(held["sopinstanceuid"])
        copies = 0

        def mine(conn: Connection, _: StoreOutcome) -> None:
            nonlocal copies
            found = claimed_in(conn, uid, self.owner)
            if found is None:
                raise NotWaiting(uid)
            copies = found

        part10 = stored
        if cleaned:  # only pixels cleaned and verified say so
            mark_verified(ds)
            if isinstance(stored, Pieces):  # the new header before the element as held
                syntax = UID(ds.file_meta.TransferSyntaxUID)
                encoded = Pieces([encode_plain(ds, syntax), stored])
                part10 = self.ingestor.file_for(ds, encoded, syntax, held["sending_ae"])
        outcome = self.ingestor.store_held(
            held,
            ds,
            part10=part10,
            also=mine,
            after=lambda conn: add_copies_in(conn, uid, copies),  # re-sent while it waited
        )
        log.debug("verified %s: %s", reference, outcome.value)

    def _keep(self, uid: str, reason: str | None, reference: str) -> None:
        """Keep the instance held for ``reason`` (audited), or with None only
        end its wait (it is no longer waiting for OCR)."""

        def audited(conn: Connection) -> None:
            if claimed_in(conn, uid, self.owner) is None:
                raise NotWaiting(uid)
            if reason is not None:
                self.archive.index.audit.append(
                    conn, HOLD_EVENT, user="dicomnode", source="OCR", obj=uid, detail=reason
                )

        if reason is None:
            self.archive.index.ocr_queue.drop(uid, self.owner)
            return
        if self.archive.index.keep_held(uid, reason, audited):
            log.warning("quarantined %s: %s", reference, reason)
