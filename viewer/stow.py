"""STOW-RS bodies read as a stream: each part becomes an instance to ingest
as soon as it has arrived, in memory when small, in the encrypted spool
when large, and never more than the instance limit.

The answer lists each SOP instance once, under the UIDs the sender gave
(read from the part's own header, a bounded read).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import IO, Any

from pydicom.filereader import read_dataset
from pydicom.uid import UID

from dicomnode.importer import dataset_offset
from dicomnode.validate import CANNOT_UNDERSTAND, OUT_OF_RESOURCES
from viewer.multipart import parts

# A part's File Meta Information is read from its first bytes (real ones are
# well under a kilobyte).
META_HEAD = 64 << 10
# What the answer's UIDs are read from, at most (inflated, for deflated data).
HEADER_READ = 1 << 20
MAX_PARTS = 10_000
_WANTED = [0x00080016, 0x00080018]  # SOP Class UID, SOP Instance UID


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
        self.status = 0  # and the failure status that says so

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
