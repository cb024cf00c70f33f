"""Frames for the browser: read from the stored bytes, pixels kept as stored.

How an instance's frames travel is decided once per instance (``Layout``)
and told in /meta (``delivery``):

- ``raw``: /raw/A-B sends frames A to B in one response, each in the layout
  /meta describes (``raw``). Uncompressed little-endian grey (8 or 16 bits)
  and 8-bit RGB are the stored bytes themselves, read at their offset in the
  blob (no decode, no copy of the file); the browser masks, sign-extends,
  rescales, windows and inverts (static/clip.js), so grey XA keeps its depth
  for window/level. Other syntaxes and colour models (RLE, JPEG lossless,
  JPEG-LS, JPEG 2000, YBR, palette, MONOCHROME1 JPEG) are decoded by pydicom
  one frame at a time from that frame's bytes only, into the same layout
  (grey keeps its depth; colour becomes 8-bit RGB); decoded frames are
  cached (bounded in bytes) and concurrent requests share one decode.
- ``jpeg``: JPEG baseline frames go as stored to an <img> (/frames/N), so
  the browser's decoder converts YBR to RGB once.
- ``image``: what ``raw`` cannot carry (more than 16 bits) goes as PNG.

/frames/N is one frame as a browser image (JPEG as stored, else PNG, grey
windowed to 8 bits) for print, thumbnails and DICOMweb /rendered. URLs are
immutable (instance UIDs are never reused).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any, BinaryIO

import numpy as np
from flask import Blueprint, Response, abort, current_app, jsonify, request
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from viewer.presentation import patient_fields

bp = Blueprint("frames", __name__, url_prefix="/api/instances")
log = logging.getLogger(__name__)
DEFAULT_FPS = 30.0
CACHE_BYTES = 256 << 20  # decoded frames kept by the server
REQUEST_BYTES = 24 << 20  # most bytes one /raw request sends
FRAME_BYTES = 64 << 20  # the largest frame shown (a 4096 x 4096 RGB frame is 48 MiB)
PIXEL_DATA = 0x7FE00010
ITEM, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
IMMUTABLE = "private, max-age=31536000, immutable"


def frame_times_ms(ds: Dataset, frames: int | None = None) -> list[float]:
    """Display time of each frame, by the standard's order of precedence:
    Frame Time Vector (variable timing), Frame Time, Cine Rate, Recommended
    Display Frame Rate; 30 frames/s when none is given. ``frames``: the
    frames the pixel data holds (NumberOfFrames, as sent, may lie)."""
    frames = frames or int(ds.get("NumberOfFrames") or 1)
    vector = ds.get("FrameTimeVector")
    if vector and len(vector) >= frames:
        # Value i is the time from frame i-1 to frame i (the first is 0), so a
        # frame is shown for the next value; the last keeps the one before.
        times = [float(v) for v in vector[1:frames]]
        times = [*times, times[-1]] if times else [1000.0 / DEFAULT_FPS]
        if all(t > 0 for t in times):
            return times
    if (value := ds.get("FrameTime")) and float(value) > 0:
        return [float(value)] * frames
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        if (value := ds.get(keyword)) and float(value) > 0:
            return [1000.0 / float(value)] * frames
    return [1000.0 / DEFAULT_FPS] * frames


class FrameError(Exception):
    """An instance whose frames cannot be shown: answered with ``status``."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class FrameCache:
    """Values built by key, bounded in bytes (LRU), one build per key at a time:
    a request arriving while a key is being built waits for that build."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.builds = 0  # how many builds ran (tests: concurrent requests decode once)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._building: dict[Hashable, _Pending] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], tuple[Any, int]]) -> Any:
        """The value of ``key``; ``build`` returns (value, size in bytes)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            pending = self._building.get(key)
            owner = pending is None
            if owner:
                pending = self._building[key] = _Pending()
        assert pending is not None
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.value
        try:
            value, size = build()
        except BaseException as exc:
            with self._lock:
                del self._building[key]
            pending.error = exc
            pending.done.set()
            raise
        with self._lock:
            del self._building[key]
            self.builds += 1
            if size <= self.max_bytes:  # a value larger than the whole cache is not kept
                self._items[key] = (value, size)
                self.size += size
                while self.size > self.max_bytes:
                    self.size -= self._items.popitem(last=False)[1][1]
        pending.value = value
        pending.done.set()
        return value

    def drop(self, key: Hashable) -> None:
        with self._lock:
            if key in self._items:
                self.size -= self._items.pop(key)[1]


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


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
    stamp: tuple[int, int] = (0, 0)  # size and mtime of ``path`` when it was read

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


def _number(ds: Dataset, keyword: str, default: float) -> float:
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
        element = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
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
    if path is None or syntax.is_deflated or not syntax.is_little_endian:
        # Frames cannot be read at an offset in the blob: Pixel Data's value.
        source.seek(0)
        pixels = bytes(dcmread(source).PixelData)
        base, length = 0, len(pixels)
        path = None
    else:
        base, length = int(element.value_tell), int(element.length)
    try:
        return _arrange(uid, ds, path, pixels, base, length)
    except FrameError:
        raise
    except Exception as exc:  # a header that makes no sense
        raise FrameError("the image's pixel attributes cannot be read") from exc


def _arrange(
    uid: str, ds: Dataset, path: str | None, pixels: bytes | None, base: int, length: int
) -> Layout:
    syntax = ds.file_meta.TransferSyntaxUID
    declared = max(int(_number(ds, "NumberOfFrames", 1)), 1)
    fmt = raw_format(ds)
    delivery = "raw" if fmt else "image"
    if syntax == JPEGBaseline8Bit and ds.get("PhotometricInterpretation") != "MONOCHROME1":
        delivery = "jpeg"
    fragments: tuple = ()
    frame_bytes = 0
    if syntax.is_encapsulated:
        with open(path, "rb") if path else BytesIO(pixels or b"") as blob:
            fragments = _frame_fragments(ds, blob, base, declared)
        frames = len(fragments)
    else:
        frame_bytes = _stored_frame_bytes(ds)
        frames = min(declared, length // frame_bytes)
        if frames < 1:
            raise FrameError("the stored pixel data is shorter than one frame")
    raw, passthrough = fmt if fmt else ({}, False)
    return Layout(
        uid, ds, frames, delivery, passthrough, raw, path, pixels, base, frame_bytes, fragments
    )


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
    return current_app.extensions.setdefault("frame_layouts", FrameCache(64 << 20))


def _cache() -> FrameCache:
    return current_app.extensions.setdefault("frame_cache", FrameCache())


def _stamp(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


def layout(uid: str) -> Layout:
    """The instance's layout (cached while its file is unchanged: a replaced
    duplicate is read again), or an HTTP error with the reason."""
    archive = current_app.extensions["archive"]

    def build() -> tuple[Layout, int]:
        key = archive.index.instance_blob(uid)
        if key is None:
            raise FrameError("no such instance", 404)
        path_of = getattr(archive.blobs, "path", None)
        if path_of is not None:
            path = str(path_of(key))
            with open(path, "rb") as source:
                found = replace(_parse(uid, source, path), stamp=_stamp(path))
        else:  # an object store: the whole blob, once
            found = _parse(uid, BytesIO(archive.blobs.read(key)), None)
        return found, 64 * 1024 + len(found.pixels or b"")

    try:
        found = _layouts().get(uid, build)
        if found.path and _stamp(found.path) != found.stamp:
            _layouts().drop(uid)
            found = _layouts().get(uid, build)
        return found
    except FrameError as exc:
        abort(exc.status, description=str(exc))
    except OSError:
        abort(404, description="the instance's file cannot be read")


def _reference(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:12]


def decode(found: Layout, index: int) -> np.ndarray:
    """Frame ``index`` decoded by pydicom from its own bytes: grey values
    masked and signed, colour as RGB (YBR converted, palette applied)."""
    # A data set of its own (the shared header is never written to).
    skip = {"NumberOfFrames", "ExtendedOffsetTable", "ExtendedOffsetTableLengths"}
    single = Dataset({tag: e for tag, e in found.header.items() if e.keyword not in skip})
    single.file_meta = found.header.file_meta
    single.NumberOfFrames = 1
    with found.open() as blob:
        data = found.stored(index, blob)
    if found.syntax.is_encapsulated:
        single.PixelData = encapsulate([data])
        single["PixelData"].VR = "OB"
    else:
        single.PixelData = data
        single["PixelData"].VR = "OW" if int(single.BitsAllocated) > 8 else "OB"
    try:
        array = single.pixel_array
        if str(single.PhotometricInterpretation) == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = apply_color_lut(array, single)
    except Exception as exc:
        log.warning("frame %d of %s not decoded: %s", index + 1, _reference(found.uid), exc)
        raise FrameError(f"frame {index + 1} cannot be decoded") from exc
    return array


def _to_raw(found: Layout, array: np.ndarray) -> bytes:
    """A decoded frame in the layout /meta announced for /raw."""
    fmt = found.raw
    if fmt["samples"] == 3:
        if array.ndim != 3 or array.shape[2] != 3:
            raise FrameError("a colour frame decoded without three samples")
        if array.dtype != np.uint8:
            depth = 16 if array.max(initial=0) > 255 else 8
            array = (array.astype(np.uint32) >> (depth - 8)).astype(np.uint8)
    else:
        dtype = {(8, False): "u1", (8, True): "i1", (16, False): "<u2", (16, True): "<i2"}
        array = array.astype(np.dtype(dtype[fmt["bits"], fmt["signed"]]), copy=False)
    data = np.ascontiguousarray(array).tobytes()
    if len(data) != fmt["bytes"]:
        raise FrameError("a frame decoded to another size than its header says")
    return data


def raw_frame(found: Layout, index: int) -> bytes:
    """Frame ``index`` (0-based) as /raw sends it."""
    if found.passthrough:
        with found.open() as blob:
            return found.stored(index, blob)
    key = (found.uid, found.stamp, index)
    return _cache().get(key, lambda: _sized(_to_raw(found, decode(found, index))))


def _sized(data: bytes) -> tuple[bytes, int]:
    return data, len(data)


def values(fmt: dict[str, Any], rows: int, columns: int, data: bytes) -> np.ndarray:
    """A /raw frame (``fmt`` as /meta gives it) as numbers, the way clip.js
    reads it: grey (rows, columns) stored values (masked, signed, shifted
    down from HighBit), colour (rows, columns, 3) RGB."""
    if fmt["samples"] == 3:
        array = np.frombuffer(data, np.uint8)
        if fmt["planar"]:
            return array.reshape(3, rows, columns).transpose(1, 2, 0)
        return array.reshape(rows, columns, 3)
    array = np.frombuffer(data, np.uint8 if fmt["bits"] == 8 else "<u2").astype(np.int32)
    array = (array >> (fmt["high"] + 1 - fmt["stored"])) & ((1 << fmt["stored"]) - 1)
    if fmt["signed"]:
        array = np.where(array >= 1 << (fmt["stored"] - 1), array - (1 << fmt["stored"]), array)
    return array.reshape(rows, columns)


def _values(found: Layout, data: bytes) -> np.ndarray:
    return values(found.raw, int(found.header.Rows), int(found.header.Columns), data)


def window(ds: Dataset) -> dict[str, float] | None:
    """The first VOI window the sender gave (in rescaled units), if any."""
    width = _number(ds, "WindowWidth", 0)
    if width <= 0 or ds.get("WindowCenter") in (None, ""):
        return None
    return {"center": _number(ds, "WindowCenter", 0), "width": width}


def image_8bit(found: Layout, array: np.ndarray) -> np.ndarray:
    """A frame for an <img>: colour as RGB; grey 8-bit as stored, deeper grey
    windowed to 8 bits (the first window, else the frame's range);
    MONOCHROME1 inverted."""
    if array.ndim == 3:
        return np.ascontiguousarray(np.clip(array, 0, 255), dtype=np.uint8)
    ds = found.header
    if found.raw.get("bits") != 8 or found.raw.get("signed"):
        slope, intercept = _number(ds, "RescaleSlope", 1), _number(ds, "RescaleIntercept", 0)
        scaled = array.astype(np.float64) * slope + intercept
        given = window(ds)
        if given:
            low = given["center"] - given["width"] / 2
            high = given["center"] + given["width"] / 2
        else:
            low, high = float(scaled.min()), float(scaled.max())
        array = np.clip((scaled - low) / max(high - low, 1e-6) * 255, 0, 255)
    image = array.astype(np.uint8)
    if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1":
        image = 255 - image
    return image


def frame_array(found: Layout, index: int, cached: bool = True) -> np.ndarray:
    """Frame ``index`` as numbers (see ``values``); ``cached`` False decodes
    without keeping the result (a thumbnail)."""
    if not found.raw:  # more than 16 bits: only ever rendered
        return decode(found, index)
    if cached or found.passthrough:
        return _values(found, raw_frame(found, index))
    return _values(found, _to_raw(found, decode(found, index)))


def _image(found: Layout, index: int) -> tuple[bytes, str]:
    if found.delivery == "jpeg":
        with found.open() as blob:
            return found.stored(index, blob), "image/jpeg"
    buffer = BytesIO()
    Image.fromarray(image_8bit(found, frame_array(found, index))).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue(), "image/png"


def _guarded(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except FrameError as exc:
        abort(exc.status, description=str(exc))


def per_request(found: Layout) -> int:
    """How many frames one /raw request may ask for."""
    return max(1, REQUEST_BYTES // max(found.raw.get("bytes", 1), 1))


@bp.get("/<uid>/meta")
def meta(uid: str) -> Any:
    found = layout(uid)
    ds = found.header
    times = frame_times_ms(ds, found.frames)
    return jsonify(
        uid=uid,
        frames=found.frames,
        frame_times_ms=times,
        fps=round(1000.0 / (sum(times) / len(times)), 2),
        rows=int(ds.get("Rows", 0)),
        columns=int(ds.get("Columns", 0)),
        photometric=str(ds.get("PhotometricInterpretation", "")),
        grey=str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME"),
        modality=str(ds.get("Modality", "")),
        **patient_fields(ds),
        view=str(ds.get("SeriesDescription", "")),
        delivery=found.delivery,
        raw=found.raw or None,
        per_request=per_request(found),
        rescale={
            "slope": _number(ds, "RescaleSlope", 1),
            "intercept": _number(ds, "RescaleIntercept", 0),
        },
        window=window(ds),
        voi_function=str(ds.get("VOILUTFunction") or "LINEAR").upper(),
    )


@bp.get("/<uid>/thumbnail")
def thumbnail(uid: str) -> Response:
    """The first frame, small: decoding one frame (not kept), never the clip."""
    found = layout(uid)
    if found.delivery == "jpeg":
        with found.open() as blob:
            data = _guarded(lambda: found.stored(0, blob))
        image = Image.open(BytesIO(data)).convert("RGB")
    else:
        array = _guarded(lambda: frame_array(found, 0, cached=False))
        image = Image.fromarray(image_8bit(found, array))
    image.thumbnail((192, 192))
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    response = Response(buffer.getvalue(), mimetype="image/jpeg")
    response.headers["Cache-Control"] = IMMUTABLE
    return response


def _etag(*parts: object) -> str:
    return '"' + "-".join(str(p) for p in parts) + '"'


def _not_modified(etag: str) -> bool:
    return request.headers.get("If-None-Match") == etag


@bp.get("/<uid>/frames/<int:number>")
def frame(uid: str, number: int) -> Response:
    etag = _etag(uid, number)
    if _not_modified(etag):
        return Response(status=304)
    found = layout(uid)
    if not 1 <= number <= found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    data, mime = _guarded(lambda: _image(found, number - 1))
    response = Response(data, mimetype=mime)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = IMMUTABLE
    return response


@bp.get("/<uid>/raw/<int:first>-<int:last>")
def raw(uid: str, first: int, last: int) -> Response:
    """Frames ``first`` to ``last`` (from 1) in the layout /meta gives under
    ``raw``, one after another; at most ``per_request`` frames at once."""
    etag = _etag(uid, "raw", first, last)
    if _not_modified(etag):
        return Response(status=304)
    found = layout(uid)
    if found.delivery == "image" or not found.raw:
        abort(415, description="this image is sent as PNG frames (/frames/N), not raw")
    if not 1 <= first <= last <= found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    if last - first + 1 > per_request(found):
        abort(400, description=f"ask for at most {per_request(found)} frames at once")
    indices = range(first - 1, last)
    if found.passthrough:
        body: Iterator[bytes] | list[bytes] = _stream(found, indices)
    else:  # decoded before answering, so a frame that fails is a clear error
        body = [_guarded(lambda i=i: raw_frame(found, i)) for i in indices]
    response = Response(body, mimetype="application/octet-stream", direct_passthrough=True)
    response.headers["Content-Length"] = str(len(indices) * found.raw["bytes"])
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = IMMUTABLE
    return response


def _stream(found: Layout, indices: range) -> Iterator[bytes]:
    """Stored frames read one at a time: memory stays one frame per request."""
    with found.open() as blob:
        for index in indices:
            yield found.stored(index, blob)
