"""Pixel data of a spooled instance, cleaned a batch of frames at a time.

An instance too large for memory waits in the spool (`dicomnode.media.spool`);
its header is read and de-identified as any other's, and its pixel data is
read from there a few megabytes at a time: native frames by their offset,
encapsulated frames by their fragments' offsets. Each batch is a small data
set of its own that `pixels.clean` treats exactly as it treats a whole one
(stray bits cleared, areas blanked, frames re-encoded), so the rules are the
same whatever the size; what it writes goes to a spool file of its own, and
OCR reads its sampled frames back from there.
"""

from __future__ import annotations

import copy
import math
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID, JPEGBaseline8Bit

from dicomnode.deid.pixels import (
    PixelOutcome,
    clean,
    clear_stray_bits,
    excess_bytes,
    has_stray_bits,
    keep_mask,
    needs_cleaning,
    stray_bit_mask,
)
from dicomnode.media.integrity import Layout
from dicomnode.media.pixeldata import expected_native_pixel_bytes
from dicomnode.media.spool import CHUNK, Part, Spool, SpoolFile

BATCH_BYTES = 8 << 20  # frames cleaned together, at most (one frame whatever its size)
# A frame larger than this (decoded) is not read: its instance is held for
# review instead (`clean_spooled`). Real frames are well below: 4096 x 4096
# RGB at 16 bits is 96 MiB.
MAX_FRAME_BYTES = 256 << 20
MAX_FRAGMENTS = 1 << 20  # beyond, an encapsulated stream is not indexed (16 MiB of offsets)
ITEM, DELIMITER = 0xE000, 0xE0DD
_ITEM_HEADER = struct.Struct("<HHL")
_SEQUENCE_END = _ITEM_HEADER.pack(0xFFFE, DELIMITER, 0)
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
# What a batch's data set carries besides its pixels: all the cleaning rules,
# the decoders and the encoders read (Image Pixel module, palettes, lossy
# compression history in group 0028; class, modality, regions).
_CARRIED = {
    Tag("SOPClassUID"),
    Tag("Modality"),
    Tag("ImageType"),
    Tag("DerivationDescription"),
    Tag("SequenceOfUltrasoundRegions"),
}
_FRAMES = Tag("NumberOfFrames")
_PIXEL_DATA = Tag("PixelData")


class PixelsUnreadable(ValueError):
    """The spooled pixel data cannot be split into its frames."""


def element_header(vr: str, length: int, syntax: UID) -> bytes:
    """The Pixel Data element header (little endian: nothing is re-encoded
    big endian)."""
    if syntax.is_implicit_VR:
        return struct.pack("<HHL", 0x7FE0, 0x0010, length)
    return struct.pack("<HH2sHL", 0x7FE0, 0x0010, vr.encode("ascii"), 0, length)


@dataclass
class Geometry:
    rows: int
    columns: int
    samples: int
    bits: int
    frames: int

    @classmethod
    def of(cls, ds: Dataset) -> Geometry | None:
        try:
            geometry = cls(
                int(ds.Rows),
                int(ds.Columns),
                int(ds.get("SamplesPerPixel") or 1),
                int(ds.BitsAllocated),
                int(ds.get("NumberOfFrames") or 1),
            )
        except (AttributeError, TypeError, ValueError):
            return None
        return geometry if min(geometry.rows, geometry.columns, geometry.bits) > 0 else None

    @property
    def frame_bits(self) -> int:
        return self.rows * self.columns * self.samples * self.bits

    def aligned(self, unit_bytes: int = 1) -> int:
        """Fewest frames that fill whole ``unit_bytes`` units (1-bit images,
        8-bit samples in big-endian words)."""
        unit = 8 * unit_bytes
        return unit // math.gcd(self.frame_bits, unit)

    def batch(self, unit_bytes: int = 1) -> int:
        """Frames per batch: about BATCH_BYTES, a multiple of `aligned`."""
        step = self.aligned(unit_bytes)
        fit = max(1, (BATCH_BYTES * 8) // max(1, self.frame_bits * step))
        return fit * step


class NativeFrames:
    """Native frames of a spool file from ``start``: by offset (bit offset
    for 1-bit images)."""

    def __init__(self, spooled: SpoolFile, start: int, frame_bits: int) -> None:
        self.spooled, self.start, self.frame_bits = spooled, start, frame_bits

    def read(self, first: int, count: int) -> bytes:
        begin, end = first * self.frame_bits, (first + count) * self.frame_bits
        raw = self.spooled.read_at(self.start + begin // 8, -(-end // 8) - begin // 8)
        if begin % 8 == 0 and end % 8 == 0:
            return raw
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
        return np.packbits(bits[begin % 8 : begin % 8 + end - begin], bitorder="little").tobytes()


class EncapsulatedFrames:
    """Frames of encapsulated pixel data in a spool file, found from the item
    headers alone, as pydicom's ``generate_fragmented_frames`` finds them
    (Extended Offset Table, else Basic Offset Table, else one fragment per
    frame or every fragment for one frame, else JPEG end markers)."""

    def __init__(
        self,
        spooled: SpoolFile,
        start: int,
        frames: int,
        extended: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.spooled = spooled
        self.offsets, self.lengths = array("q"), array("q")  # fragment values
        self.first = array("q")  # first fragment of each frame, then the end
        view = spooled.view()
        tag_group, tag_element, length = _ITEM_HEADER.unpack(view[start : start + 8])
        if (tag_group, tag_element) != (0xFFFE, ITEM) or length > 8 * frames + 8:
            raise PixelsUnreadable("no basic offset table")
        table = view[start + 8 : start + 8 + length]
        basic = list(struct.unpack(f"<{length // 4}L", table[: length // 4 * 4]))
        position = self.fragments_start = start + 8 + length
        while True:
            header = view[position : position + 8]
            if len(header) < 8:
                raise PixelsUnreadable("encapsulated pixel data ends without a delimiter")
            tag_group, tag_element, length = _ITEM_HEADER.unpack(header)
            if (tag_group, tag_element) == (0xFFFE, DELIMITER):
                break
            if (tag_group, tag_element) != (0xFFFE, ITEM) or len(self.offsets) >= MAX_FRAGMENTS:
                raise PixelsUnreadable("encapsulated pixel data holds more than fragments")
            self.offsets.append(position + 8)
            self.lengths.append(length)
            position += 8 + length
        self.end = position
        self._index(frames, basic, extended)

    def _index(self, frames: int, basic: list[int], extended: tuple[bytes, bytes] | None) -> None:
        count = len(self.offsets)
        if extended and extended[0] and extended[1]:
            # One fragment per frame, at the offsets the table gives.
            starts = struct.unpack(f"<{len(extended[0]) // 8}Q", extended[0])
            lengths = struct.unpack(f"<{len(extended[1]) // 8}Q", extended[1])
            self.offsets, self.lengths = array("q"), array("q")
            for offset, length in zip(starts, lengths, strict=False):
                self.offsets.append(self.fragments_start + offset + 8)
                self.lengths.append(length)
            self.first = array("q", range(len(self.offsets) + 1))
            return
        if basic:
            first, current, offset = [0], 0, 0
            for index in range(count):
                if current < len(basic) - 1 and offset >= basic[current + 1]:
                    first.append(index)
                    current += 1
                offset += self.lengths[index] + 8
            self.first = array("q", [*first, count])
            return
        if count == 1 or frames == 1:
            self.first = array("q", [0, count])
        elif count == frames:
            self.first = array("q", range(count + 1))
        elif count > frames:  # a frame ends with a JPEG end-of-image marker
            first = [0]
            for index in range(count):
                tail = self._fragment_tail(index)
                if b"\xff\xd9" in tail and index + 1 < count:
                    first.append(index + 1)
            self.first = array("q", [*first, count])
        else:
            raise PixelsUnreadable("fewer fragments than frames")

    def _fragment_tail(self, index: int) -> bytes:
        length = self.lengths[index]
        return self.spooled.read_at(self.offsets[index] + max(0, length - 10), min(10, length))

    @property
    def count(self) -> int:
        return len(self.first) - 1

    def fragments(self, index: int) -> list[bytes]:
        if not 0 <= index < self.count:
            raise PixelsUnreadable(f"no frame {index + 1} in the encapsulated pixel data")
        return [
            self.spooled.read_at(self.offsets[i], self.lengths[i])
            for i in range(self.first[index], self.first[index + 1])
        ]

    def frame(self, index: int) -> bytes:
        return b"".join(self.fragments(index))


class SpooledPixels:
    """The top-level Pixel Data element of a spooled data set."""

    def __init__(self, body: SpoolFile, layout: Layout, syntax: UID) -> None:
        if layout.pixel_offset is None or layout.pixel_end is None:
            raise ValueError("no Pixel Data")
        self.body, self.syntax = body, syntax
        self.start, self.end = layout.pixel_offset, layout.pixel_end
        order = "<" if syntax.is_little_endian else ">"
        head = body.read_at(self.start, 12)
        if syntax.is_implicit_VR:
            self.vr = ""
            (length,) = struct.unpack(order + "L", head[4:8])
            self.value_start = self.start + 8
        else:
            self.vr = head[4:6].decode("ascii", "replace")
            if self.vr in _LONG_VRS:
                (length,) = struct.unpack(order + "L", head[8:12])
                self.value_start = self.start + 12
            else:
                (length,) = struct.unpack(order + "H", head[6:8])
                self.value_start = self.start + 8
        self.length: int | None = None if length == 0xFFFFFFFF else length

    @property
    def encapsulated(self) -> bool:
        return self.length is None

    def native_vr(self, ds: Dataset) -> str:
        if self.vr:
            return self.vr
        return "OW" if int(ds.get("BitsAllocated") or 8) > 8 else "OB"

    def as_sent(self, ds: Dataset, syntax: UID) -> list[Part]:
        """The element as pydicom writes it again in ``syntax`` (little
        endian), its value unchanged: a new header, an odd value padded."""
        if self.length is None:
            return [
                element_header(self.vr or "OB", 0xFFFFFFFF, syntax),
                (self.body, self.value_start, self.end - 8),
                _SEQUENCE_END,
            ]
        pad = b"\x00" * (self.length % 2)
        end = self.value_start + self.length
        header = element_header(self.native_vr(ds), self.length + len(pad), syntax)
        return [header, (self.body, self.value_start, end), pad]

    def stray_bits(self, ds: Dataset) -> bool:
        """Whether native little-endian pixels carry bits above BitsStored,
        looked for a chunk at a time."""
        if self.length is None or not stray_bit_mask(ds):
            return False
        size = max(1, int(ds.BitsAllocated) // 8)
        step = CHUNK - CHUNK % size
        end = self.value_start + self.length
        for start in range(self.value_start, end, step):
            if has_stray_bits(ds, self.body.read_at(start, min(step, end - start)), self.syntax):
                return True
        return False


def image_attributes(ds: Dataset) -> Dataset:
    """A copy of what a batch's data set needs besides its pixels."""
    out = Dataset()
    for tag in list(ds.keys()):
        if (tag.group == 0x0028 or tag in _CARRIED) and tag != _FRAMES:
            out.add(copy.deepcopy(ds[tag]))
    out.file_meta = FileMetaDataset()
    return out


def batch_dataset(
    attributes: Dataset, syntax: UID, count: int, multi: bool, *, native: bytes, vr: str
) -> Dataset:
    """A data set of ``count`` frames for `pixels.clean` and the decoders."""
    ds = copy.deepcopy(attributes)
    ds.file_meta.TransferSyntaxUID = syntax
    if multi or count > 1:
        ds.NumberOfFrames = count
    ds.PixelData = native
    ds["PixelData"].VR = vr
    if syntax.is_compressed:
        ds["PixelData"].is_undefined_length = True
    return ds


def _sync(ds: Dataset, before: Dataset, after: Dataset) -> None:
    """Carry what cleaning changed in a batch's attributes over to ``ds``."""
    for tag in set(before.keys()) | set(after.keys()):
        if tag in (_FRAMES, _PIXEL_DATA) or tag.group == 0x7FE0:
            continue
        if tag not in after:
            if tag in ds:
                del ds[tag]
        elif tag not in before or before[tag] != after[tag]:
            ds[tag] = copy.deepcopy(after[tag])


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in (value if isinstance(value, MultiValue | list) else [value])]


@dataclass
class Cleaned:
    """The Pixel Data element as it will be stored, and how it came about."""

    outcome: PixelOutcome
    element: list[Part]
    # Frame i of what will be stored, as a one-frame data set (for OCR).
    frame: Callable[[int], Dataset]
    owns: list[SpoolFile] = field(default_factory=list)


class _Writer:
    """Frames written to a spool file as they are cleaned, with where each is."""

    def __init__(self, spool: Spool) -> None:
        self.out = spool.open()
        self.item_sizes: list[int] = []  # per frame, encapsulated
        self.fragments: list[list[tuple[int, int]]] = []
        self.encoded = 0  # JPEG bytes before item padding (compression ratio)

    def items(self, frame: tuple[bytes, ...]) -> None:
        where, size = [], 0
        for fragment in frame:
            self.out.write(_ITEM_HEADER.pack(0xFFFE, ITEM, len(fragment)))
            where.append((self.out.size, len(fragment)))
            self.out.write(fragment)
            size += 8 + len(fragment)
            self.encoded += len(fragment) - (1 if fragment.endswith(b"\x00") else 0)
        self.item_sizes.append(size)
        self.fragments.append(where)

    def encapsulated(self, syntax: UID) -> list[Part]:
        offsets = [0]
        for size in self.item_sizes[:-1]:
            offsets.append(offsets[-1] + size)
        table = b"" if offsets[-1] > 0xFFFFFFFF else struct.pack(f"<{len(offsets)}L", *offsets)
        return [
            element_header("OB", 0xFFFFFFFF, syntax),
            _ITEM_HEADER.pack(0xFFFE, ITEM, len(table)) + table,
            self.out,
            _SEQUENCE_END,
        ]


def clean_spooled(
    ds: Dataset,
    pixels: SpooledPixels,
    syntax: UID,
    rectangles: tuple[tuple[int, int, int, int], ...],
    spool: Spool,
) -> Cleaned:
    """`pixels.clean` for a spooled instance: ``ds`` is its header (little
    endian already when the pixels are big endian: they are swapped batch by
    batch), changed as `clean` would change a whole data set."""
    attributes = image_attributes(ds)
    geometry = Geometry.of(ds)
    multi = "NumberOfFrames" in ds
    if geometry is not None and geometry.frame_bits // 8 > MAX_FRAME_BYTES:
        reason = f"frames over {MAX_FRAME_BYTES >> 20} MiB: not read in bounded memory"
        return _unchanged(ds, pixels, syntax, PixelOutcome(False, syntax, reason))
    rule = needs_cleaning(ds) or bool(rectangles)
    mask = keep_mask(ds, rectangles) if rule else None
    blank = mask is not None and not isinstance(mask, str)
    held = mask if isinstance(mask, str) else None
    if pixels.encapsulated and not blank:
        return _unchanged(ds, pixels, syntax, PixelOutcome(False, syntax, held))
    swap = not pixels.syntax.is_little_endian and pixel_word_size(ds, pixels.native_vr(ds)) > 1
    length = pixels.length or 0
    if not (blank or swap or excess_bytes(ds, length, syntax) or pixels.stray_bits(ds)):
        return _unchanged(ds, pixels, syntax, PixelOutcome(False, syntax, held))
    if geometry is None:  # as `clean` fails on such a data set in memory
        raise ValueError("image attributes incomplete: pixels not located")
    if pixels.encapsulated:
        return _encapsulated(ds, pixels, geometry, syntax, rectangles, spool, attributes, multi)
    if blank:
        try:
            return _native(ds, pixels, geometry, syntax, rectangles, spool, None)
        except PixelsUnreadable as exc:  # as `clean` does: held, bits cleared all the same
            held = str(exc)
    return _native(ds, pixels, geometry, syntax, None, spool, held)


def stored_frames(ds: Dataset, pixels: SpooledPixels, syntax: UID) -> Callable[[int], Dataset]:
    """Frame i of a spooled element as it is (a held clip that deferred OCR
    reads), as a one-frame data set."""
    return _unchanged(ds, pixels, syntax, PixelOutcome(False, syntax, None)).frame


def _unchanged(ds: Dataset, pixels: SpooledPixels, syntax: UID, outcome: PixelOutcome) -> Cleaned:
    """The element as sent (``ds`` unchanged), its frames read from there."""
    attributes = image_attributes(ds)
    geometry = Geometry.of(ds) or Geometry(0, 0, 1, 8, 1)
    multi = "NumberOfFrames" in ds
    if pixels.encapsulated:
        extended = _extended_offsets(attributes)
        frames: EncapsulatedFrames | None = None

        def encapsulated(index: int) -> Dataset:
            nonlocal frames
            if frames is None:
                frames = EncapsulatedFrames(
                    pixels.body, pixels.value_start, geometry.frames, extended
                )
            one = encapsulate([frames.frame(index)])
            return batch_dataset(attributes, syntax, 1, multi, native=one, vr="OB")

        return Cleaned(outcome, pixels.as_sent(ds, syntax), encapsulated)
    native = NativeFrames(pixels.body, pixels.value_start, geometry.frame_bits)
    vr = pixels.native_vr(attributes)
    return Cleaned(
        outcome,
        pixels.as_sent(ds, syntax),
        lambda index: batch_dataset(
            attributes, syntax, 1, multi, native=native.read(index, 1), vr=vr
        ),
    )


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    table, lengths = ds.get("ExtendedOffsetTable"), ds.get("ExtendedOffsetTableLengths")
    return (bytes(table), bytes(lengths)) if table and lengths else None


def swap_words(data: bytes, size: int) -> bytes:
    """``data`` read as big-endian words of ``size`` bytes, written little
    endian (a trailing partial word as it was)."""
    if size < 2:
        return data
    whole = len(data) - len(data) % size
    swapped = np.frombuffer(data, dtype=f">u{size}", count=whole // size).astype(f"<u{size}")
    return swapped.tobytes() + data[whole:]


def pixel_word_size(ds: Dataset, vr: str) -> int:
    """How Pixel Data's bytes are grouped in big endian: by sample above 8
    bits; 8-bit samples in OW words (pydicom's ``be_swap_ow``)."""
    bits = int(ds.get("BitsAllocated") or 0)
    if bits in (16, 32, 64):
        return bits // 8
    return 2 if vr == "OW" and bits == 8 else 1


def _native(
    ds: Dataset,
    pixels: SpooledPixels,
    geometry: Geometry,
    syntax: UID,
    rectangles: tuple[tuple[int, int, int, int], ...] | None,
    spool: Spool,
    held: str | None,
) -> Cleaned:
    """Native pixels: swapped from big endian, cut to their frames, stray
    bits cleared and (``rectangles`` not None) blanked, a batch at a time."""
    before = image_attributes(ds)
    multi = "NumberOfFrames" in ds
    vr = pixels.native_vr(ds)
    word = 1 if pixels.syntax.is_little_endian else pixel_word_size(ds, vr)
    source = NativeFrames(pixels.body, pixels.value_start, geometry.frame_bits)
    expected = expected_native_pixel_bytes(ds) or 0
    length = pixels.length or 0
    writer = _Writer(spool)
    outcome = PixelOutcome(False, syntax, held)
    after: Dataset | None = None
    # What follows the frames: dropped when longer than a pad byte, else kept
    # as `clean` keeps it (swapped with the last frame's words, stray bits
    # cleared) unless the frames are re-encoded.
    excess = excess_bytes(ds, length, syntax)
    rest = b"" if excess else pixels.body.read_at(pixels.value_start + expected, length - expected)
    try:
        step = geometry.batch(word)
        for first in range(0, geometry.frames, step):
            count = min(step, geometry.frames - first)
            data = source.read(first, count)
            if word > 1:
                last = first + count == geometry.frames
                data = swap_words(data + rest, word) if last else swap_words(data, word)
                if last and rest:
                    data, rest = data[: -len(rest)], data[-len(rest) :]
            batch = batch_dataset(before, syntax, count, multi, native=data, vr=vr)
            if rectangles is not None:
                outcome = clean(batch, syntax, rectangles)
                if outcome.quarantine:  # cannot be: native pixels decode (kept for safety)
                    raise PixelsUnreadable(outcome.quarantine)
            else:
                clear_stray_bits(batch, syntax)
            writer.out.write(batch.PixelData[: expected_native_pixel_bytes(batch) or 0])
            if after is None:
                after = batch
        if outcome.reencoded:
            rest = b""
        elif rest:
            tail = batch_dataset(before, syntax, 1, multi, native=rest, vr=vr)
            clear_stray_bits(tail, syntax)
            rest = bytes(tail.PixelData)
        if (writer.out.size + len(rest)) % 2:
            rest += b"\x00"
        writer.out.write(rest)
    except BaseException:
        writer.out.close()
        raise
    if after is not None:
        _sync(ds, before, after)
    vr = str(after["PixelData"].VR) if after is not None and not syntax.is_implicit_VR else vr
    element: list[Part] = [element_header(vr or "OB", writer.out.size, syntax), writer.out]
    stored = Geometry.of(ds) or geometry
    frames = NativeFrames(writer.out, 0, stored.frame_bits)
    attributes = image_attributes(ds)
    return Cleaned(
        outcome,
        element,
        lambda index: batch_dataset(
            attributes, syntax, 1, multi, native=frames.read(index, 1), vr=vr or "OB"
        ),
        [writer.out],
    )


def _encapsulated(
    ds: Dataset,
    pixels: SpooledPixels,
    geometry: Geometry,
    syntax: UID,
    rectangles: tuple[tuple[int, int, int, int], ...],
    spool: Spool,
    before: Dataset,
    multi: bool,
) -> Cleaned:
    """Compressed pixels decoded, blanked and re-encoded a batch at a time;
    the original kept (and the instance held) when a frame does not decode."""
    try:
        source = EncapsulatedFrames(
            pixels.body, pixels.value_start, geometry.frames, _extended_offsets(ds)
        )
    except PixelsUnreadable as exc:
        reason = f"pixels not decodable ({type(exc).__name__})"
        return _unchanged(ds, pixels, syntax, PixelOutcome(False, syntax, reason))
    writer = _Writer(spool)
    after: Dataset | None = None
    outcome = PixelOutcome(False, syntax)
    try:
        step = max(1, geometry.batch())
        for first in range(0, geometry.frames, step):
            count = min(step, geometry.frames - first)
            frames = [source.frame(i) for i in range(first, first + count)]
            batch = batch_dataset(before, syntax, count, multi, native=encapsulate(frames), vr="OB")
            outcome = clean(batch, syntax, rectangles)
            if outcome.quarantine:
                raise PixelsUnreadable(outcome.quarantine)
            target = outcome.transfer_syntax
            if target.is_compressed:
                for pieces in generate_fragmented_frames(batch.PixelData, number_of_frames=count):
                    writer.items(pieces)
            else:
                writer.out.write(batch.PixelData[: expected_native_pixel_bytes(batch) or 0])
            if after is None:
                after = batch
    except PixelsUnreadable as exc:
        writer.out.close()
        reason = str(exc) if str(exc).startswith("pixels") else "pixels not decodable"
        return _unchanged(ds, pixels, syntax, PixelOutcome(False, syntax, reason))
    except BaseException:
        writer.out.close()
        raise
    assert after is not None
    _sync(ds, before, after)
    target = outcome.transfer_syntax
    if target == JPEGBaseline8Bit and syntax == JPEGBaseline8Bit and writer.encoded:
        # The ratio of the whole clip, as one re-encoding of it would say.
        samples = 3 if int(ds.get("SamplesPerPixel") or 1) == 3 else 1
        original = geometry.frames * geometry.rows * geometry.columns * samples
        ratios = _values(before.get("LossyImageCompressionRatio"))
        ds.LossyImageCompressionRatio = [*ratios, f"{original / writer.encoded:.2f}"]
    attributes = image_attributes(ds)
    if target.is_compressed:
        element = writer.encapsulated(target)

        def frame(index: int) -> Dataset:
            where = writer.fragments[index]
            data = [writer.out.read_at(offset, length) for offset, length in where]
            one = encapsulate([b"".join(data)])
            return batch_dataset(attributes, target, 1, multi, native=one, vr="OB")
    else:
        if writer.out.size % 2:
            writer.out.write(b"\x00")
        vr = str(after["PixelData"].VR)
        element = [element_header(vr, writer.out.size, target), writer.out]
        stored = Geometry.of(ds) or geometry
        native = NativeFrames(writer.out, 0, stored.frame_bits)

        def frame(index: int) -> Dataset:
            return batch_dataset(attributes, target, 1, multi, native=native.read(index, 1), vr=vr)

    return Cleaned(outcome, element, frame, [writer.out])
