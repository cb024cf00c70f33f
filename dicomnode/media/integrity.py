"""Structural check of an encoded dataset before anything is stored.

pydicom reads a truncated stream without complaint (a short last value, a
missing delimiter), so the node walks the element structure itself: every
defined length must fit and every undefined length must reach its delimiter.
Only sequences and encapsulated pixel data are descended into; other values
are skipped by length, so the walk costs microseconds, not a decode.

Nesting is bounded: pydicom parses sequences recursively, and a 10 kB
instance of 500 nested defined-length sequences took it minutes and
gigabytes before failing; deeper than MAX_NESTING levels is refused here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

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


class Buffer(Protocol):
    """Bytes, or a spool file's window: a length and slices."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> bytes: ...


MAX_NESTING = 64  # sequence levels; real instances use fewer than ten


class StructureError(ValueError):
    """The stream is truncated or its element lengths are inconsistent."""


class NestingError(StructureError):
    """Sequences nested deeper than MAX_NESTING."""


@dataclass
class Layout:
    """Where the top-level Pixel Data is, for callers that keep it as sent."""

    pixel_length: int | None = None  # native (defined-length) Pixel Data only
    pixel_offset: int | None = None  # where its element starts
    pixel_end: int | None = None  # where it ends
    pixels_last: bool = True  # nothing but trailing padding follows it


class _Walker:
    def __init__(self, buffer: Buffer, implicit: bool, little: bool) -> None:
        self.buffer = buffer
        self.implicit = implicit
        self.prefix = "<" if little else ">"
        self.layout = Layout()

    def _unpack(self, fmt: str, pos: int, prefix: str | None = None) -> int:
        # A slice, not unpack_from: the buffer may be a spool file's window.
        fmt = (prefix or self.prefix) + fmt
        return struct.unpack(fmt, self.buffer[pos : pos + struct.calcsize(fmt)])[0]

    def _items(self, pos: int, end: int, depth: int, implicit: bool, prefix: str) -> None:
        """The items of a defined-length sequence value, each walked in turn."""
        if depth > 2 * MAX_NESTING:
            raise NestingError(f"sequences nested deeper than {MAX_NESTING} levels")
        while pos < end:
            if pos + 8 > end or self._unpack("L", pos, prefix) != 0xE000FFFE:
                raise StructureError("a sequence holds something other than items")
            length = self._unpack("L", pos + 4, prefix)
            pos += 8
            if length == _UNDEFINED:
                pos = self.walk(
                    pos, end, nested=True, implicit=implicit, prefix=prefix, depth=depth
                )
                continue
            if pos + length > end:
                raise StructureError("an item is longer than its sequence")
            self.walk(
                pos, pos + length, nested=False, implicit=implicit, prefix=prefix, depth=depth,
                inner=True,
            )  # fmt: skip
            pos += length

    def walk(
        self,
        pos: int,
        end: int,
        *,
        nested: bool,
        implicit: bool,
        prefix: str,
        depth: int = 0,
        inner: bool = False,
    ) -> int:
        """Walk elements from ``pos``; a nested walk must end at a delimiter.
        ``inner`` marks the content of a defined-length item (not the top level)."""
        # Depth counts walks: each sequence level is two (the sequence, its item).
        if depth > 2 * MAX_NESTING:
            raise NestingError(f"sequences nested deeper than {MAX_NESTING} levels")
        top = not nested and not inner
        while pos < end:
            if pos + 8 > end:
                raise StructureError("stream ends inside an element header")
            group = self._unpack("H", pos, prefix)
            element = self._unpack("H", pos + 2, prefix)
            tag = group << 16 | element
            if top:
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
                pos = self.walk(
                    pos, end, nested=True, implicit=inner_implicit, prefix=inner_prefix,
                    depth=depth + 1,
                )  # fmt: skip
                if tag == PIXEL_DATA and top:
                    self.layout.pixel_end = pos
                continue
            if pos + length > end:
                raise StructureError("a value is longer than the stream that holds it")
            if tag != PIXEL_DATA and length >= 8 and self._unpack("L", pos, prefix) == 0xE000FFFE:
                self._sequence(pos, pos + length, vr, depth, implicit, prefix)
            pos += length
            if tag == PIXEL_DATA and top:
                self.layout.pixel_length = length
                self.layout.pixel_end = pos
        if nested:
            raise StructureError("stream ends before a sequence delimiter")
        return pos

    def _sequence(
        self, pos: int, end: int, vr: bytes, depth: int, implicit: bool, prefix: str
    ) -> None:
        """A defined-length value that starts with an item: an SQ (explicit VR),
        or likely one (implicit VR, UN). Only an explicit SQ must be well formed;
        for the others the depth alone is enforced."""
        try:
            self._items(pos, end, depth + 2, implicit, prefix)
        except NestingError:
            raise
        except StructureError:
            if vr == b"SQ":
                raise


def check_structure(buffer: Buffer, *, implicit: bool, little: bool) -> Layout:
    """Raise StructureError if ``buffer`` is not a whole dataset.

    The layout says how long native Pixel Data is (to compare with what the
    image attributes promise) and where the element starts.
    """
    walker = _Walker(buffer, implicit, little)
    walker.walk(0, len(buffer), nested=False, implicit=implicit, prefix=walker.prefix)
    return walker.layout
