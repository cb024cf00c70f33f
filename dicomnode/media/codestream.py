"""The size a compressed frame claims in its own codestream, checked before
any decoder sees it.

The node bounds decoding by the header's Rows × Columns × frames (the ingest,
`transcode.check_size`), but a JPEG 2000 or JPEG decoder allocates what its
codestream says: a 5 KB file whose header says 64 × 64 and whose codestream
says 16384 × 16384 made the node hold 2 GiB while checking it. A frame whose
codestream names another size than its header, or names none, is refused
(ValueError: quarantined at the ingest, 422 or a failed sub-operation when
sent), never decoded.
"""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    HTJ2K,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

# High-Throughput JPEG 2000 has the same codestream header (SIZ).
J2K = frozenset(JPEG2000TransferSyntaxes) | {HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL}
JPEG = frozenset(JPEGTransferSyntaxes) | frozenset(JPEGLSTransferSyntaxes)
# Where a codestream's size must be found: a JP2 wrapper or a JPEG's APP
# segments come first, but never this much.
SEARCH_BYTES = 1 << 16
_SIZ = b"\xff\x4f\xff\x51"  # J2K: start of codestream, then the image and tile size
# JPEG start-of-frame markers (ITU T.81 B.1.1.3; JPEG-LS SOF55 = FFF7): every
# SOFn except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length


def declared(frame: bytes, syntax: str) -> tuple[int, int] | None:
    """(rows, columns) the frame's codestream declares; None for a syntax
    whose decoder takes the size from the header (native, RLE, deflate)."""
    if syntax in J2K:
        at = frame.find(_SIZ, 0, SEARCH_BYTES)
        if at < 0 or len(frame) < at + 24:
            raise ValueError("no JPEG 2000 image size (SIZ) in the frame")
        xsiz, ysiz, x0, y0 = struct.unpack_from(">IIII", frame, at + 8)
        return max(ysiz - y0, 0), max(xsiz - x0, 0)
    if syntax in JPEG:
        return _jpeg_size(frame)
    return None


def _jpeg_size(frame: bytes) -> tuple[int, int]:
    """The start-of-frame's size, found by walking the marker segments."""
    at = frame.find(b"\xff\xd8", 0, 16)
    if at < 0:
        raise ValueError("no JPEG start of image in the frame")
    at += 2
    end = min(len(frame), SEARCH_BYTES)
    while at + 4 <= end:
        if frame[at] != 0xFF:
            raise ValueError("a JPEG marker was expected")
        marker = frame[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        (length,) = struct.unpack_from(">H", frame, at + 2)
        if marker in _SOF:
            if at + 9 > len(frame):
                break
            rows, columns = struct.unpack_from(">HH", frame, at + 5)
            if rows == 0:  # the height comes later (DNL): nothing to check it by
                raise ValueError("a JPEG frame without its height in the start of frame")
            return rows, columns
        if marker == 0xDA:  # start of scan before any start of frame
            break
        at += 2 + length
    raise ValueError("no JPEG start of frame in the frame")


def check_frame(frame: bytes, syntax: str, rows: int, columns: int) -> None:
    """ValueError unless the frame's codestream declares the header's size."""
    size = declared(frame, syntax)
    if size is not None and size != (rows, columns):
        raise ValueError(
            f"the frame's codestream says {size[0]} x {size[1]}, "
            f"its header {rows} x {columns}: not decoded"
        )


def check_dataset(ds: Dataset, syntax: str | UID | None = None) -> None:
    """`check_frame` for every frame of an encapsulated data set (cheap: a
    few bytes of each frame are read)."""
    syntax = str(syntax or ds.file_meta.TransferSyntaxUID)
    if syntax not in J2K | JPEG or "PixelData" not in ds:
        return
    rows, columns = int(ds.Rows), int(ds.Columns)
    count = int(ds.get("NumberOfFrames") or 1)
    for frame in generate_frames(ds.PixelData, number_of_frames=count):
        check_frame(frame, syntax, rows, columns)
