"""STOW-RS bodies read as a stream: each part becomes an instance to ingest
as soon as it has arrived, in memory when small, in the encrypted spool
when large, and never more than the instance limit.

The answer lists each SOP instance once, under the UIDs the node stored it
under (`viewer.dicomweb.stowrs`); what is read here of a part's own header
(`announced`, `sent_header`) serves to tell what de-identification changed
(`changes`) and which study it will land in (`predicted_study`), and is
never echoed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import IO, Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dicomnode.ingest.importer import dataset_offset
from dicomnode.ingest.pipeline import HEADER_LIMIT_MB, Incoming, Ingestor, child_key, read_header
from dicomnode.status import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS
from viewer.multipart import parts

# A part's File Meta Information is read from its first bytes (real ones are
# well under a kilobyte).
META_HEAD = 64 << 10
# What the answer's UIDs are read from, at most (inflated, for deflated data).
HEADER_READ = 1 << 20
MAX_PARTS = 10_000


class PartSink:
    """One part: the file meta split off, the data set kept in memory up to
    ``threshold`` bytes and in the spool beyond, nothing beyond ``limit``."""

    def __init__(self, spool: Any, threshold: int, limit: int) -> None:
        self._spool, self._threshold, self._limit = spool, threshold, limit
        self._head = bytearray()
        self._memory = bytearray()
        self._spooled: Any = None
        self.syntax = ""
        self.size = 0
        self.problem = ""  # why this part cannot be an instance
        self.status = SUCCESS  # and the failure status that says so

    def write(self, data: bytes) -> None:
        if self.problem:
            return
        self.size += len(data)
        if self.size > self._limit:
            why = f"larger than the instance limit of {self._limit >> 20} MiB"
            self._drop(why, OUT_OF_RESOURCES)
        elif not self.syntax:
            self._head += data
            if len(self._head) >= META_HEAD:
                self._split()
        else:
            self._keep(data)

    def _split(self) -> None:
        head, self._head = bytes(self._head), bytearray()
        try:
            offset, self.syntax = dataset_offset(head)
        except Exception:
            self._drop("not a DICOM Part 10 file", CANNOT_UNDERSTAND)
            return
        self._keep(head[offset:])

    def _keep(self, data: bytes) -> None:
        if self._spooled is not None:
            self._spooled.write(data)
            return
        self._memory += data
        if self._spool is not None and len(self._memory) > self._threshold:
            self._spooled = self._spool.open()
            self._spooled.write(self._memory)
            self._memory = bytearray()

    def _drop(self, why: str, status: int) -> None:
        self.problem, self.status = why, status
        self._head = self._memory = bytearray()
        if self._spooled is not None:
            self._spooled.close()
            self._spooled = None

    def finish(self) -> None:
        """The part is complete: split a small one's meta now."""
        if not self.problem and not self.syntax:
            self._split()

    @property
    def data(self) -> Any:
        """The encoded data set: bytes, or the spool file holding it."""
        return self._spooled if self._spooled is not None else bytes(self._memory)

    def close(self) -> None:
        if self._spooled is not None:
            self._spooled.close()


@dataclass(frozen=True)
class Announced:
    """The UIDs a part's own header gives (either may be missing)."""

    sop_class: str | None
    sop_instance: str | None


def announced(data: Any, syntax: str) -> Announced:
    """SOP Class and Instance UID as the sender wrote them, read from at most
    the first megabyte of the data set."""
    try:
        ts = UID(syntax)
        head = data[:HEADER_READ] if isinstance(data, bytes) else data.read_at(0, HEADER_READ)
        if ts.is_deflated:
            head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(head, HEADER_READ)
        ds = read_dataset(
            BytesIO(head),
            ts.is_implicit_VR,
            ts.is_little_endian,
            stop_when=lambda tag, vr, length: tag > 0x00080018,
        )
        return Announced(ds.get("SOPClassUID"), ds.get("SOPInstanceUID"))
    except Exception:
        return Announced(None, None)


def stream_parts(
    body: IO[bytes], boundary: bytes, spool: Any, threshold: int, limit: int
) -> Iterator[PartSink]:
    """Each complete part of the body, closed (its spool file removed) once
    the caller has moved on to the next."""
    for sink in parts(body, boundary, lambda _: PartSink(spool, threshold, limit), MAX_PARTS):
        try:
            sink.finish()
            yield sink
        finally:
            sink.close()


def sent_header(data: Any, syntax: str, limit: int) -> Dataset | None:
    """The part's data set as sent, all but its Pixel Data (at most
    ``HEADER_LIMIT_MB`` of header), or None when it cannot be read (the
    ingest then says why)."""
    try:
        ts = UID(syntax)
        if ts.is_deflated and not isinstance(data, bytes):  # spooled: inflate the head only
            bound = HEADER_LIMIT_MB << 20
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            head = inflater.decompress(data.read_at(0, bound), bound)
            return read_dataset(
                BytesIO(head), ts.is_implicit_VR, ts.is_little_endian, stop_when=_at_pixels
            )
        header, _ = read_header(data, syntax, limit=limit)
        return header
    except Exception:
        return None


def _at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag >= PIXEL_DATA


def predicted_study(ingestor: Ingestor, header: Dataset, issuer: str) -> str:
    """The node's study UID this instance would be stored under, decided as
    the de-identification decides it (`Deidentifier._claim`) but without
    claiming anything: the keyed UID of the sender's study, or, when
    another child holds that one, the UID of this child's own (scoped)
    copy. The ingest checks the outcome again before it stores."""
    issuer = ingestor.issuer_for(header, Incoming(b"", "", issuer=issuer))
    key, _ = child_key(header)
    secret = ingestor.deidentify.secret
    original = str(header.StudyInstanceUID)
    plain = secret.uid(original)
    holders = {who for study, who, _ in ingestor.archive.index.linkage_for(plain) if study == plain}
    if not holders or secret.pseudonym(issuer, key) in holders:
        return plain
    return secret.uid(original, (issuer, key))


PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})
# Clean Pixel Data Option (PS3.15 Table CID 7050): the node blanked text in the pixels.
_CLEAN_PIXELS = "113101"


@dataclass(frozen=True)
class Changes:
    """What storing changed, by tag only: never a value."""

    replaced: tuple[BaseTag, ...] = ()
    removed: tuple[BaseTag, ...] = ()
    added: tuple[BaseTag, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.replaced or self.removed or self.added)


def changes(sent: Dataset, stored: Dataset) -> Changes:
    """Top-level data elements replaced, removed or added between the data
    set as sent and as stored (a sequence changed anywhere inside counts as
    its own tag); Pixel Data when the node cleaned the pixels."""
    replaced: list[BaseTag] = []
    removed: list[BaseTag] = []
    added: list[BaseTag] = []
    for tag in sorted(set(sent.keys()) | set(stored.keys())):
        if tag.group == 0x0002 or tag in _PIXEL_TAGS:
            continue
        if tag not in stored:
            removed.append(tag)
        elif tag not in sent:
            added.append(tag)
        elif not _same(sent, stored, tag):
            replaced.append(tag)
    if _cleaned(stored) and not _cleaned(sent):
        replaced.append(BaseTag(PIXEL_DATA))
    return Changes(tuple(replaced), tuple(removed), tuple(added))


def _same(sent: Dataset, stored: Dataset, tag: BaseTag) -> bool:
    try:
        a, b = sent[tag], stored[tag]
        return bool(a.value == b.value) or (a.VR != "SQ" and str(a.value) == str(b.value))
    except Exception:  # a value pydicom cannot decode or compare: changed, to be safe
        return False


def _cleaned(ds: Dataset) -> bool:
    codes = ds.get("DeidentificationMethodCodeSequence") or []
    return any(str(item.get("CodeValue", "")) == _CLEAN_PIXELS for item in codes)
