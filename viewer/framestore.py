"""Where an instance's frames are in its stored blob, and how they travel.

The layout (``Layout``) is worked out once per instance from the header and
the fragment item headers alone, so that any frame can later be read at its
offset in the blob without reading (or decoding) the whole file: a 2000-frame
run costs one frame's memory per request. Blobs whose frames cannot be read
at an offset (deflated, big endian, object stores) keep Pixel Data's value
in memory instead. Layouts are cached per application while the blob is the
one the index names (its SHA-256) and its file is unchanged, since a
replaced duplicate must be read again; ``Layout.version`` names that content
so that what browsers cached of an older one is never used for it.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any, BinaryIO

import numpy as np
from flask import current_app
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from sqlalchemy import select

from dicomnode.media.elements import kept_deferred
from storage.schema import instances
from viewer import services
from viewer.framecache import FrameCache

FRAME_BYTES = 64 << 20  # the largest frame shown (a 4096 x 4096 RGB frame is 48 MiB)
LAYOUT_BYTES = 64 << 20  # layouts (headers, in-memory pixel data) kept by the server
# The most frames the viewer handles in one instance: ten minutes at 30/s.
# Beyond it /meta, timing and the browser's bookkeeping grow without purpose
# (a 1x1 image claiming a million frames is an attack, not a run).
MAX_FRAMES = 20_000
MAX_ITEMS = 4 * MAX_FRAMES  # fragment items read to find where frames start
PIXEL_DATA = 0x7FE00010
ITEM, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


class FrameError(Exception):
    """An instance whose frames cannot be shown: answered with ``status``."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Layout:
    """Where an instance's frames are, and how they reach the browser."""

    uid: str
    header: Dataset  # everything but Pixel Data
    frames: int
    delivery: str  # "raw", "jpeg" or "image"
    passthrough: bool  # raw frames are the stored bytes
    raw: dict[str, Any]  # the layout of one /raw frame
    path: str | None  # the blob's file, else ``pixels`` holds Pixel Data's value
    pixels: bytes | None
    base: int  # where Pixel Data's value starts in ``path`` (0 in ``pixels``)
    frame_bytes: int  # native: stored bytes per frame
    fragments: tuple[tuple[tuple[int, int], ...], ...]  # encapsulated: (offset, length)
    stamp: tuple[int, ...] = ()  # inode, size and mtime of ``path`` when it was read
    digest: str = ""  # the blob's SHA-256 as the index gives it
    version: str = ""  # names this content (digest and file): URL token and ETag

    @property
    def syntax(self) -> Any:
        return self.header.file_meta.TransferSyntaxUID

    def open(self) -> BinaryIO:
        return open(self.path, "rb") if self.path else BytesIO(self.pixels or b"")

    def stored(self, index: int, source: BinaryIO) -> bytes:
        """The stored bytes of frame ``index`` (0-based): all its fragments."""
        if not self.syntax.is_encapsulated:
            source.seek(self.base + index * self.frame_bytes)
            return _read(source, self.frame_bytes)
        parts = []
        for offset, length in self.fragments[index]:
            source.seek(self.base + offset)
            parts.append(_read(source, length))
        return b"".join(parts)


def _read(source: BinaryIO, length: int) -> bytes:
    data = source.read(length)
    if len(data) != length:
        raise FrameError("the stored pixel data ends before its last frame")
    return data


def number(ds: Dataset, keyword: str, default: float) -> float:
    """A numeric attribute as a careless sender may give it (empty, several
    values, text): its first value, else ``default``, never an exception."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    if hasattr(value, "__len__") and not isinstance(value, str):
        value = value[0] if len(value) else default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def raw_format(ds: Dataset) -> tuple[dict[str, Any], bool] | None:
    """What one /raw frame holds, and whether that is the stored bytes; None
    when it cannot carry the image (then PNG)."""
    samples = int(ds.get("SamplesPerPixel") or 1)
    allocated = int(ds.get("BitsAllocated") or 8)
    stored = int(ds.get("BitsStored") or allocated)
    high = int(ds.get("HighBit") if ds.get("HighBit") is not None else stored - 1)
    photometric = str(ds.get("PhotometricInterpretation", ""))
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if not rows or not columns:
        raise FrameError("the image has no rows or columns")
    if allocated not in (8, 16, 32):
        raise FrameError(f"{allocated}-bit pixels cannot be shown", 415)
    if rows * columns * samples * allocated // 8 > FRAME_BYTES:
        raise FrameError(f"frames larger than {FRAME_BYTES >> 20} MB are not shown", 413)
    native = ds.file_meta.TransferSyntaxUID in (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
    grey = photometric.startswith("MONOCHROME") and samples == 1
    if grey and allocated <= 16 and 0 < stored <= allocated and stored - 1 <= high < allocated:
        bits = 8 if allocated <= 8 else 16
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        passthrough = native and allocated == bits
        if not passthrough:  # pydicom's values: masked, signed, at bit 0
            high = stored - 1
        planar = 0
    elif (samples == 3 or photometric == "PALETTE COLOR") and allocated <= 16:
        passthrough = native and photometric == "RGB" and samples == 3 and allocated == 8
        # pydicom's arrays are interleaved; the stored planes go as they are.
        planar = int(ds.get("PlanarConfiguration") or 0) if passthrough else 0
        bits, stored, high, signed, samples = 8, 8, 7, False, 3
    else:
        return None
    size = rows * columns * samples * bits // 8
    if size > FRAME_BYTES:
        raise FrameError(f"frames larger than {FRAME_BYTES >> 20} MB are not shown", 413)
    fmt = {"bytes": size, "samples": samples, "bits": bits, "stored": stored}
    fmt |= {"high": high, "signed": signed, "planar": planar}
    return fmt, passthrough


def _parse(uid: str, source: BinaryIO, path: str | None) -> Layout:
    try:
        ds = dcmread(source, defer_size=1024)
        element = kept_deferred(ds, PIXEL_DATA) if PIXEL_DATA in ds else None
        if element is not None:
            del ds[PIXEL_DATA]
            for _ in ds:  # every value read now, while the blob is open
                pass
    except Exception as exc:  # pydicom's errors on damaged data are of many kinds
        raise FrameError(f"the stored instance cannot be read ({type(exc).__name__})") from exc
    if element is None:
        raise FrameError("this instance has no image (a report, a waveform)", 404)
    syntax = ds.file_meta.TransferSyntaxUID
    pixels = None
    offsets = path is not None and not syntax.is_deflated and syntax.is_little_endian
    if offsets and isinstance(element, RawDataElement):  # unread: it says where it is
        base, length = int(element.value_tell), int(element.length)
    else:
        # Frames cannot be read at an offset in the blob: Pixel Data's value.
        source.seek(0)
        pixels = bytes(dcmread(source).PixelData)
        base, length = 0, len(pixels)
        path = None
    blob = source if pixels is None else BytesIO(pixels)  # fragments are found in it
    try:
        return _arrange(uid, ds, blob, path, pixels, base, length)
    except FrameError:
        raise
    except Exception as exc:  # a header that makes no sense
        raise FrameError("the image's pixel attributes cannot be read") from exc


def _arrange(
    uid: str,
    ds: Dataset,
    blob: BinaryIO,
    path: str | None,
    pixels: bytes | None,
    base: int,
    length: int,
) -> Layout:
    syntax = ds.file_meta.TransferSyntaxUID
    declared = max(int(min(number(ds, "NumberOfFrames", 1), 1e12)), 1)
    if syntax.is_encapsulated and declared > MAX_FRAMES:  # every frame is there, or none shows
        raise _too_many(declared)
    fmt = raw_format(ds)
    delivery = "raw" if fmt else "image"
    if syntax == JPEGBaseline8Bit and ds.get("PhotometricInterpretation") != "MONOCHROME1":
        delivery = "jpeg"
    fragments: tuple = ()
    frame_bytes = 0
    if syntax.is_encapsulated:
        fragments = _frame_fragments(ds, blob, base, declared)
        frames = len(fragments)
    else:
        frame_bytes = _stored_frame_bytes(ds)
        frames = min(declared, length // frame_bytes)
        if frames < 1:
            raise FrameError("the stored pixel data is shorter than one frame")
        if frames > MAX_FRAMES:
            raise _too_many(frames)
    raw, passthrough = fmt if fmt else ({}, False)
    return Layout(
        uid, ds, frames, delivery, passthrough, raw, path, pixels, base, frame_bytes, fragments
    )


def _too_many(frames: int) -> FrameError:
    return FrameError(f"this image has {frames} frames; the viewer shows at most {MAX_FRAMES}", 413)


def _stored_frame_bytes(ds: Dataset) -> int:
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    if str(ds.get("PhotometricInterpretation")) == "YBR_FULL_422":
        pixels = pixels * 2 // 3  # two chroma samples shared by two pixels
    return pixels * int(ds.BitsAllocated) // 8


def _frame_fragments(
    ds: Dataset, blob: BinaryIO, base: int, frames: int
) -> tuple[tuple[tuple[int, int], ...], ...]:
    """(offset, length) of the fragments of each frame, from the item headers
    alone (no fragment is read whole)."""
    blob.seek(base)
    table: list[int] = []
    items: list[tuple[int, int]] = []
    while True:
        head = blob.read(8)
        if len(head) < 8:
            break
        group, element, length = struct.unpack("<HHL", head)
        if (group, element) == SEQUENCE_END:
            break
        if (group, element) != ITEM or length == 0xFFFFFFFF:
            raise FrameError("the stored pixel data is not a valid fragment sequence")
        if not table and not items and length % 4 == 0:  # the Basic Offset Table
            table = list(struct.unpack(f"<{length // 4}L", _read(blob, length))) or [-1]
            continue
        items.append((blob.tell() - base, length))
        if len(items) > MAX_ITEMS:
            raise FrameError("the stored pixel data is split into too many fragments", 413)
        blob.seek(length, 1)
    if not items:
        raise FrameError("the stored pixel data holds no frame")
    if frames == 1:
        return (tuple(items),)
    if len(items) == frames:
        return tuple((item,) for item in items)
    extended = ds.get("ExtendedOffsetTable")
    offsets = list(np.frombuffer(extended, "<u8")) if extended else table
    if len(offsets) == frames and offsets != [-1]:
        first = items[0][0] - 8  # offsets count from the first fragment's item tag
        starts = [first + int(o) for o in offsets]
        grouped: list[list[tuple[int, int]]] = [[] for _ in starts]
        for item in items:
            grouped[sum(1 for s in starts if s <= item[0] - 8) - 1].append(item)
        if all(grouped):
            return tuple(tuple(g) for g in grouped)
    # No usable table: a JPEG-family frame ends with the EOI marker.
    out: list[tuple[tuple[int, int], ...]] = []
    current: list[tuple[int, int]] = []
    for offset, length in items:
        current.append((offset, length))
        blob.seek(base + offset + max(length - 3, 0))
        if b"\xff\xd9" in blob.read(min(length, 3)):
            out.append(tuple(current))
            current = []
    if current or len(out) != frames:
        raise FrameError("where each frame starts cannot be told from the stored data")
    return tuple(out)


def _layouts() -> FrameCache:
    return current_app.extensions.setdefault("frame_layouts", FrameCache(LAYOUT_BYTES))


def _stamp(status: os.stat_result) -> tuple[int, ...]:
    """The file's identity: a blob rewritten (in place or renamed over) differs."""
    return status.st_ino, status.st_size, status.st_mtime_ns


def _indexed(uid: str) -> tuple[str, str] | None:
    """The instance's blob key and SHA-256 as the index holds them now."""
    index = services.archive().index
    query = select(instances.c.blob_key, instances.c.sha256)
    with index.engine.connect() as conn:
        row = conn.execute(query.where(instances.c.sopinstanceuid == uid)).first()
    return None if row is None else (str(row[0]), str(row[1] or ""))


def _version(digest: str, stamp: tuple[int, ...]) -> str:
    return hashlib.sha256(f"{digest}|{stamp}".encode()).hexdigest()[:20]


def layout(uid: str) -> Layout:
    """The instance's layout (cached while the index names the same blob and
    its file is unchanged: a replaced duplicate is read again); FrameError
    with the reason and status."""
    archive = services.archive()
    indexed = _indexed(uid)
    if indexed is None:
        raise FrameError("no such instance", 404)
    key, digest = indexed

    def build() -> tuple[Layout, int]:
        path_of = getattr(archive.blobs, "path", None)
        if path_of is not None:
            path = str(path_of(key))
            with open(path, "rb") as source:
                stamp = _stamp(os.fstat(source.fileno()))
                found = _parse(uid, source, path)
        else:  # an object store: the whole blob, once
            found, stamp = _parse(uid, BytesIO(archive.blobs.read(key)), None), ()
        found = replace(found, stamp=stamp, digest=digest, version=_version(digest, stamp))
        return found, 64 * 1024 + len(found.pixels or b"")

    # Keyed by the blob as well: a replacement (even with the same bytes)
    # lives under a new key, and the old file is gone.
    entry = (uid, key)
    try:
        found = _layouts().get(entry, build)
        if found.digest != digest or (found.path and _stamp(os.stat(found.path)) != found.stamp):
            _layouts().drop(entry)
            found = _layouts().get(entry, build)
        return found
    except OSError as exc:
        raise FrameError("the instance's file cannot be read", 404) from exc
