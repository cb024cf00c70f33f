"""Stored instances and frames in another transfer syntax (PS3.5 §10, Annex A).

A peer may accept only some transfer syntaxes: a DICOMweb client names them
in Accept, a DIMSE peer in its presentation contexts. What the node can
make of a stored instance, with the libraries it has:

- uncompressed: every syntax pydicom decodes (pylibjpeg's handlers: JPEG
  baseline, extended and lossless, JPEG-LS, JPEG 2000, RLE) decompressed to
  Explicit or Implicit VR Little Endian, or Deflated Explicit VR Little
  Endian (``decompressed``: the one decoder for WADO-RS, C-GET, C-MOVE and
  forwarding);
- lossless recompression where an encoder is installed: RLE Lossless
  (pydicom), JPEG 2000 lossless (pylibjpeg-openjpeg), JPEG-LS lossless
  (pyjpegls, when present);
- never a lossy encoding of a whole instance: a lossy syntax is sent only as
  stored. Single frames can be made JPEG baseline (``encode_frame``) when a
  client asks for exactly that.

The SOP Instance UID is kept: the content is the same instance, only its
encoding differs (PS3.5 §10; lossy stored data stays marked lossy).
Errors name syntaxes and exception kinds only: codec messages can quote
the data set's values.
Nothing here knows of Flask or the archive: bytes in, bytes out.

A whole instance decoded in memory is bounded: its decoded size, worked out
from the header before anything is decoded (``decoded_size``), must be at
most the limit given (``transcode_max_mb``), else ``TooLarge``; and one such
transcode runs at a time per process (``_WHOLE``), so a few kilobytes of
constant JPEG 2000 frames claiming gigabytes cannot multiply. Whole instances
to Explicit VR Little Endian need neither: WADO-RS streams them frame by
frame (``stream_header``, ``decoded_frame``).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from copy import copy, deepcopy
from io import BytesIO
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.encoders import (
    JPEG2000LosslessEncoder,
    JPEGLSLosslessEncoder,
    RLELosslessEncoder,
)
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    MPEGTransferSyntaxes,
)

from dicomnode.media.codestream import check_dataset, check_frame

# The uncompressed little endian syntaxes every DICOM application takes
# (PS3.5 §10.1), the one that keeps VRs first: proposals list them so.
UNCOMPRESSED_PREFERRED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
UNCOMPRESSED = frozenset(UNCOMPRESSED_PREFERRED)
NATIVE = UNCOMPRESSED | {DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian}
# Syntaxes that may be lossy: sent as stored only, never made from other data,
# and what a client that names no transfer syntax gets (PS3.18 §8.7.3). Video
# (MPEG-2, MPEG-4, HEVC) is lossy too, and the node has no decoder for it: an
# echo clip stored as video must still reach a viewer that asks by default.
LOSSY = frozenset(
    {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000, HTJ2K}
    | set(MPEGTransferSyntaxes)
)
# Syntaxes whose pixel data are always lossy, with the method's name for
# Lossy Image Compression Method (0028,2114) (PS3.3 C.7.6.1.1.5.1).
ALWAYS_LOSSY = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1"}
# Colour models decoded data are no longer in: subsampled (422/420) ones are
# decoded to full resolution, so they become RGB; the JPEG 2000 colour
# transforms (YBR_ICT, YBR_RCT) are undone by the decoder, which says RGB.
DECODED_AS_RGB = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420"})
# What uncompressed pixel data may say they are in (PS3.3 C.7.6.3.1.2).
NATIVE_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"})
_ENCODERS = {e.UID: e for e in (RLELosslessEncoder, JPEG2000LosslessEncoder, JPEGLSLosslessEncoder)}
JPEG_QUALITY = 90  # a JPEG baseline frame made from other data, when asked for one
# One whole-instance transcode at a time: each may hold 3-4 times its
# decoded size (decoded frames, joined value, written file).
_WHOLE = threading.Semaphore(1)
_NO_NATIVE = {"ExtendedOffsetTable", "ExtendedOffsetTableLengths"}  # encapsulated only


class TranscodeError(ValueError):
    """The instance or frame cannot be decoded or made in the asked syntax
    (the text names no value of the data set)."""


class CannotEncode(TranscodeError):
    """The data decodes, but this syntax cannot hold it or has no encoder here."""


class TooLarge(TranscodeError):
    """The instance decodes to more than the node transcodes whole."""


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    if hasattr(value, "__len__") and not isinstance(value, str):
        value = value[0] if len(value) else None
    try:
        return max(int(value), 0) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def frame_size(ds: Dataset) -> int:
    """Bytes of one decoded frame, from the header (whole bytes per sample)."""
    allocated = _int(ds, "BitsAllocated", 8)
    samples = _int(ds, "SamplesPerPixel", 1)
    return _int(ds, "Rows", 0) * _int(ds, "Columns", 0) * samples * ((allocated + 7) // 8)


def decoded_size(ds: Dataset) -> int:
    """What the pixel data decode to (Rows x Columns x Frames x Samples x
    bytes per sample), from the header alone: the decoders size their output
    by these attributes, whatever the compressed data hold."""
    if "PixelData" not in ds and "Rows" not in ds:
        return 0
    return frame_size(ds) * max(_int(ds, "NumberOfFrames", 1), 1)


def check_size(ds: Dataset, limit: int | None) -> None:
    """TooLarge when ``ds`` decodes to more than ``limit`` bytes (None: no limit)."""
    size = decoded_size(ds)
    if limit is not None and size > limit:
        raise TooLarge(
            f"the instance decodes to {-(-size >> 20)} MiB, more than the "
            f"{limit >> 20} MiB this node transcodes whole"
        )


@contextmanager
def whole_instance() -> Iterator[None]:
    """The process's one slot for a whole-instance transcode (waits for it)."""
    with _WHOLE:
        yield


def lossless_encoders() -> frozenset[UID]:
    """Compressed syntaxes whose encoder is installed here."""
    return frozenset(uid for uid, e in _ENCODERS.items() if e.is_available)


def instance_targets() -> frozenset[UID]:
    """Every syntax a whole instance can be made in (from a decodable one)."""
    return UNCOMPRESSED | {DeflatedExplicitVRLittleEndian} | lossless_encoders()


def frame_targets() -> frozenset[UID]:
    """Every syntax one frame can be made in: native bytes (as Explicit VR
    Little Endian holds them), the lossless encoders, and JPEG baseline."""
    return frozenset({ExplicitVRLittleEndian, JPEGBaseline8Bit}) | lossless_encoders()


def decodable(stored: str) -> bool:
    """Whether pydicom here can decode pixel data stored in ``stored``."""
    uid = UID(stored)
    if uid in NATIVE:
        return True
    if not uid.is_transfer_syntax or not uid.is_compressed:
        return False
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


def can_make(stored: str, target: str, *, frame: bool = False) -> bool:
    """Whether data stored in ``stored`` can be sent in ``target``."""
    if target == stored:
        return True
    if not frame and stored == ExplicitVRBigEndian:
        return False  # `decompressed` does not swap bytes (the node stores none with pixels)
    targets = frame_targets() if frame else instance_targets()
    return UID(target) in targets and decodable(stored)


def decompressed(ds: Dataset, limit: int | None) -> Dataset:
    """``ds`` (in memory, never the archive's file; changed and returned)
    with its pixel data decoded, in Explicit VR Little Endian; TranscodeError
    if it cannot be.

    Same SOP Instance UID: the pixels are those any receiver of the stored
    syntax decodes. Subsampled colour (JPEG's YBR_FULL_422) becomes RGB and
    JPEG 2000's colour transforms are undone (RGB); YBR_FULL stays YBR_FULL
    (no rounding through another colour space); colour is interleaved
    (Planar Configuration 0). Lossy history is kept: Lossy Image Compression
    "01" stays, and is set, with the method and ratio, when a lossy syntax
    was all that said so.

    Compressed data decoding to more than ``limit`` bytes (the caller's
    ``transcode_max_mb``; None: unbounded) raise TooLarge
    before anything is decoded; one instance is decoded at a time."""
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if stored == ExplicitVRBigEndian:  # pydicom writes it back only as big endian
        raise TranscodeError(f"{stored.name} data are not converted here")
    if "PixelData" not in ds or stored in UNCOMPRESSED | {DeflatedExplicitVRLittleEndian}:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the values are read already
        return ds
    if not decodable(stored):
        raise TranscodeError(f"{stored.name}: no decoder here")
    check_size(ds, limit)
    if limit is None:
        return _decoded(ds, stored)
    with whole_instance():
        return _decoded(ds, stored)


def _decoded(ds: Dataset, stored: UID) -> Dataset:
    compressed_size = len(ds.PixelData)
    as_rgb = str(ds.get("PhotometricInterpretation", "")).strip() in DECODED_AS_RGB
    try:
        check_dataset(ds, stored)  # the codestreams' sizes, before a decoder allocates them
        ds.decompress(as_rgb=as_rgb, generate_instance_uid=False)
    except Exception as exc:  # no decoder for the syntax, or corrupt data
        raise TranscodeError(f"{stored.name}: {type(exc).__name__}") from None
    return _described(ds, stored, len(ds.PixelData), compressed_size)


def _described(ds: Dataset, stored: UID, decoded: int, compressed_size: int) -> Dataset:
    """``ds``'s attributes as decoded data have them (the lossy history kept)."""
    for keyword in _NO_NATIVE & set(ds.dir()):
        delattr(ds, keyword)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in NATIVE_PHOTOMETRIC:
        raise TranscodeError(f"{stored.name}: decoded colour model not one native data can have")
    if int(ds.get("SamplesPerPixel") or 1) > 1:
        ds.PlanarConfiguration = 0  # decoders yield (rows, columns, samples)
    if stored in ALWAYS_LOSSY and ds.get("LossyImageCompression") != "01":
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = ALWAYS_LOSSY[stored]
            ratio = decoded / max(compressed_size, 1)
            ds.LossyImageCompressionRatio = f"{ratio:.2f}"[:16]
    return ds


def transcode(source: BinaryIO | bytes, target: str, limit: int | None) -> bytes:
    """The stored PS3.10 file ``source`` (seekable) as a PS3.10 file in
    ``target`` (which ``can_make`` allows); the SOP Instance UID kept.
    TooLarge, from the header alone, when it decodes to more than ``limit``
    bytes; one such transcode at a time (decoding, encoding and writing)."""
    uid = UID(target)
    stream = BytesIO(source) if isinstance(source, bytes) else source
    try:
        start = stream.tell()
        header = dcmread(stream, stop_before_pixels=True)
        if header.file_meta.TransferSyntaxUID == uid:
            limit = None  # sent as it is: nothing decoded
        check_size(header, limit)
        stream.seek(start)
        with whole_instance():
            data = _transcoded(stream, uid)
    except TooLarge:
        raise
    except TranscodeError as exc:
        raise TranscodeError(f"cannot be made in {uid.name} ({exc})") from exc
    except Exception as exc:  # pydicom's and the codecs' errors are of many kinds
        raise TranscodeError(f"cannot be made in {uid.name} ({type(exc).__name__})") from exc
    return data


def _transcoded(stream: BinaryIO, uid: UID) -> bytes:
    ds = dcmread(stream)
    if ds.file_meta.TransferSyntaxUID != uid:
        decompressed(ds, limit=None)  # checked, and in the slot, already
        if uid in _ENCODERS and "PixelData" in ds:
            ds.compress(uid, generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = uid
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    del ds
    return buffer.getvalue()


# --- a whole instance in Explicit VR Little Endian, frame by frame -------------


def decoded_frame(header: Dataset, data: bytes) -> tuple[bytes, Dataset]:
    """One stored frame decoded exactly as ``decompressed`` decodes the whole
    (same colour handling), as Explicit VR Little Endian holds it, with the
    single-frame data set whose attributes describe it."""
    single = frame_dataset(header, data)
    # Decoding sets attributes in place: on copies, never the (cached) header's.
    single = Dataset({tag: copy(element) for tag, element in single.items()})
    single.file_meta = deepcopy(header.file_meta)
    stored = UID(single.file_meta.TransferSyntaxUID)
    if stored.is_compressed:
        decompressed(single, limit=None)  # one frame: its own size
    data, size = single.PixelData, frame_size(header)
    del single.PixelData  # the caller keeps the attributes, not a second frame
    return (data if len(data) == size else data[:size]), single


def stream_header(
    header: Dataset, first: Dataset | None, frames: int, compressed_size: int
) -> bytes:
    """The Explicit VR Little Endian file ``decompressed`` would write, up to
    and including the Pixel Data element's tag and length: ``header`` (no
    Pixel Data; elements after it are left out) with the attributes decoding
    changes, taken from ``first`` (``decoded_frame``'s data set of frame 1;
    None for native data). The frames and, when odd, a pad byte follow."""
    ds = Dataset({tag: copy(e) for tag, e in header.items() if tag < 0x7FE00010})
    ds.file_meta = deepcopy(header.file_meta)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    length = frames * frame_size(header)
    if first is not None and stored.is_compressed:
        for keyword in ("PhotometricInterpretation", "PlanarConfiguration"):
            if keyword in first:
                setattr(ds, keyword, first[keyword].value)
        _described(ds, stored, length + length % 2, compressed_size)
    else:
        for keyword in _NO_NATIVE & set(ds.dir()):
            delattr(ds, keyword)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    vr = b"OB" if _int(header, "BitsAllocated", 8) <= 8 else b"OW"
    element = struct.pack("<HH2s2xI", 0x7FE0, 0x0010, vr, length + length % 2)
    return buffer.getvalue() + element


def frame_dataset(header: Dataset, data: bytes) -> Dataset:
    """One stored frame (its bytes, as the stored syntax holds them) as a
    data set of its own, for pydicom to decode; ``header`` is not changed."""
    skip = {"NumberOfFrames", "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "PixelData"}
    # By tag: an element of a header read by dcmread may still be raw (no keyword).
    single = Dataset({tag: e for tag, e in header.items() if keyword_for_tag(tag) not in skip})
    single.file_meta = header.file_meta
    single.NumberOfFrames = 1
    syntax = header.file_meta.TransferSyntaxUID
    if syntax.is_encapsulated:
        single.PixelData = encapsulate([data])
        single["PixelData"].VR = "OB"
    else:
        single.PixelData = data
        single["PixelData"].VR = "OW" if int(single.BitsAllocated) > 8 else "OB"
    return single


def decode_frame(header: Dataset, data: bytes) -> tuple[np.ndarray, Dataset]:
    """A stored frame as pixel values (YBR colour as RGB; palette indices
    kept), with the pixel attributes that describe them."""
    single = frame_dataset(header, data)
    try:
        syntax = header.file_meta.TransferSyntaxUID
        if syntax.is_encapsulated:  # its codestream's size, before a decoder allocates it
            check_frame(data, syntax, int(single.Rows), int(single.Columns))
        array = single.pixel_array  # YBR converted to RGB, values masked and signed
    except Exception as exc:
        raise TranscodeError(f"the frame cannot be decoded ({type(exc).__name__})") from exc
    described = Dataset()
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored"):
        setattr(described, keyword, int(single.get(keyword) or (1 if keyword[0] == "S" else 8)))
    described.PixelRepresentation = int(single.get("PixelRepresentation") or 0)
    photometric = str(single.get("PhotometricInterpretation", "MONOCHROME2"))
    if described.SamplesPerPixel == 3 and photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom converts YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT
    described.PhotometricInterpretation = photometric
    return array, described


def native_bytes(array: np.ndarray, described: Dataset) -> bytes:
    """Decoded values as an Explicit VR Little Endian frame holds them:
    little endian, BitsAllocated wide, colour interleaved (PlanarConfiguration 0)."""
    allocated = int(described.BitsAllocated)
    signed = int(described.PixelRepresentation) == 1
    kinds = {8: "u1", 16: "u2", 32: "u4"}
    if allocated not in kinds:
        raise CannotEncode(f"{allocated}-bit pixels cannot be sent uncompressed frame by frame")
    dtype = np.dtype(("<i" if signed else "<u") + kinds[allocated][1])
    return np.ascontiguousarray(array.astype(dtype, copy=False)).tobytes()


def encode_frame(array: np.ndarray, described: Dataset, target: str, **options: Any) -> bytes:
    """A decoded frame (``decode_frame``) in ``target``: native bytes,
    a lossless encoder's codestream, or JPEG baseline made by Pillow
    (8-bit grey or RGB only: deeper data would lose values silently)."""
    uid = UID(target)
    if uid in UNCOMPRESSED:
        return native_bytes(array, described)
    if uid == JPEGBaseline8Bit:
        return _jpeg(array, described, int(options.get("quality", JPEG_QUALITY)))
    encoder = _ENCODERS.get(uid)
    if encoder is None or not encoder.is_available:
        raise CannotEncode(f"no encoder for {uid.name} here")
    samples = int(described.SamplesPerPixel)
    # The image's description, which pydicom's encoders take as **kwargs.
    kwargs: dict[str, Any] = {
        "rows": int(described.Rows),
        "columns": int(described.Columns),
        "samples_per_pixel": samples,
        "bits_allocated": int(described.BitsAllocated),
        "bits_stored": int(described.BitsStored),
        "pixel_representation": int(described.PixelRepresentation),
        "photometric_interpretation": str(described.PhotometricInterpretation),
        "number_of_frames": 1,
        "planar_configuration": 0,
    }
    try:
        return bytes(encoder.encode(np.ascontiguousarray(array), **kwargs))
    except Exception as exc:
        raise CannotEncode(f"cannot be encoded as {uid.name} ({type(exc).__name__})") from exc


def _jpeg(array: np.ndarray, described: Dataset, quality: int) -> bytes:
    photometric = str(described.PhotometricInterpretation)
    if int(described.BitsStored) > 8 or photometric not in ("MONOCHROME2", "RGB"):
        raise CannotEncode("JPEG baseline holds 8-bit MONOCHROME2 or RGB frames only")
    image = Image.fromarray(np.ascontiguousarray(array.astype(np.uint8, copy=False)))
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=max(1, min(quality, 100)))
    return buffer.getvalue()
