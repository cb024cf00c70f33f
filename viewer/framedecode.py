"""Frames as /raw sends them, and as numbers.

Uncompressed grey (8 or 16 bits) and 8-bit RGB frames are the stored bytes.
Every other syntax and colour model (RLE, JPEG lossless, JPEG-LS, JPEG 2000,
YBR, palette) is decoded by pydicom one frame at a time, from that frame's
bytes only (never the clip), into the same layout: grey keeps its depth for
window/level, colour becomes 8-bit RGB. Decoded frames are kept in a cache
bounded in bytes, and concurrent requests for a frame share one decode.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
from flask import current_app

from dicomnode.media.codestream import check_frame
from dicomnode.media.transcode import frame_dataset
from viewer.framecache import FrameCache
from viewer.framestore import FrameError, Layout

log = logging.getLogger(__name__)


def _cache() -> FrameCache:
    return current_app.extensions.setdefault("frame_cache", FrameCache())


def reference(uid: str) -> str:
    """An instance named in the log without its UID (UIDs can be traced)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:12]


def decode(found: Layout, index: int) -> np.ndarray:
    """Frame ``index`` decoded by pydicom from its own bytes: grey values
    masked and signed, colour as RGB (YBR converted, palette applied)."""
    with found.open() as blob:
        data = found.stored(index, blob)
    single = frame_dataset(found.header, data)  # the shared header is never written to
    try:
        if found.syntax.is_encapsulated:  # its codestream's size, before a decoder allocates it
            check_frame(data, found.syntax, int(single.Rows), int(single.Columns))
        array = single.pixel_array
        if str(single.PhotometricInterpretation) == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = apply_color_lut(array, single)
    except Exception as exc:  # the text may quote the data set's values: never logged
        log.warning(
            "frame %d of %s not decoded (%s)", index + 1, reference(found.uid), type(exc).__name__
        )
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
    key = (found.uid, found.version, index)
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


def frame_array(found: Layout, index: int, cached: bool = True) -> np.ndarray:
    """Frame ``index`` as numbers (see ``values``); ``cached`` False decodes
    without keeping the result (a thumbnail)."""
    if not found.raw:  # more than 16 bits: only ever rendered
        return decode(found, index)
    if cached or found.passthrough:
        return _values(found, raw_frame(found, index))
    return _values(found, _to_raw(found, decode(found, index)))
