"""Structural check of an encoded dataset before anything is stored.

pydicom reads a truncated stream without complaint (a short last value, a
missing delimiter), so the node walks the element structure itself: every
defined length must fit and every undefined length must reach its delimiter.
Only sequences and encapsulated pixel data are descended into; other values
are skipped by length, so the walk costs microseconds, not a decode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_ITEM = 0xFFFEE000
_DELIMITERS = {0xFFFEE00D, 0xFFFEE0DD}
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
PIXEL_DATA = 0x7FE00010
TRAILING_PADDING = 0xFFFCFFFC


class StructureError(ValueError):
    """The stream is truncated or its element lengths are inconsistent."""


@dataclass
class Layout:
    """Where the top-level Pixel Data is, for callers that keep it as sent."""

    pixel_length: int | None = None  # native (defined-length) Pixel Data only
    pixel_offset: int | None = None  # where its element starts
    pixel_end: int | None = None  # where it ends
    pixels_last: bool = True  # nothing but trailing padding follows it


class _Walker:
    def __init__(self, buffer: bytes, implicit: bool, little: bool) -> None:
        self.buffer = buffer
        self.implicit = implicit
        self.prefix = "<" if little else ">"
        self.layout = Layout()

    def _unpack(self, fmt: str, pos: int, prefix: str | None = None) -> int:
        return struct.unpack_from((prefix or self.prefix) + fmt, self.buffer, pos)[0]

    def walk(self, pos: int, end: int, *, nested: bool, implicit: bool, prefix: str) -> int:
        """Walk elements from ``pos``; a nested walk must end at a delimiter."""
        while pos < end:
            if pos + 8 > end:
                raise StructureError("stream ends inside an element header")
            group = self._unpack("H", pos, prefix)
            element = self._unpack("H", pos + 2, prefix)
            tag = group << 16 | element
            if not nested:
                if tag == PIXEL_DATA:
                    self.layout.pixel_offset = pos
                elif self.layout.pixel_offset is not None and tag != TRAILING_PADDING:
                    self.layout.pixels_last = False
            if tag in _DELIMITERS:
                if nested:
                    return pos + 8
                raise StructureError("delimiter outside a sequence")
            if tag == _ITEM or implicit:
                length, header, vr = self._unpack("L", pos + 4, prefix), 8, b""
            else:
                vr = self.buffer[pos + 4 : pos + 6]
                if vr in _LONG_VRS:
                    if pos + 12 > end:
                        raise StructureError("stream ends inside an element header")
                    length, header = self._unpack("L", pos + 8, prefix), 12
                else:
                    length, header = self._unpack("H", pos + 6, prefix), 8
            pos += header
            if length == _UNDEFINED:
                # CP-246: an undefined-length UN holds implicit VR little endian.
                inner_implicit, inner_prefix = (True, "<") if vr == b"UN" else (implicit, prefix)
                pos = self.walk(pos, end, nested=True, implicit=inner_implicit, prefix=inner_prefix)
                if tag == PIXEL_DATA and not nested:
                    self.layout.pixel_end = pos
                continue
            if pos + length > end:
                raise StructureError("a value is longer than the stream that holds it")
            pos += length
            if tag == PIXEL_DATA and not nested:
                self.layout.pixel_length = length
                self.layout.pixel_end = pos
        if nested:
            raise StructureError("stream ends before a sequence delimiter")
        return pos


def check_structure(buffer: bytes, *, implicit: bool, little: bool) -> Layout:
    """Raise StructureError if ``buffer`` is not a whole dataset.

    The layout says how long native Pixel Data is (to compare with what the
    image attributes promise) and where the element starts.
    """
    walker = _Walker(buffer, implicit, little)
    walker.walk(0, len(buffer), nested=False, implicit=implicit, prefix=walker.prefix)
    return walker.layout
