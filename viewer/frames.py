"""Frames for the browser: the stored JPEG as is, anything else decoded once.

A JPEG baseline frame is sent exactly as stored (no decode, no encode).
Other syntaxes are decoded with pydicom (pylibjpeg, openjpeg, RLE plugins)
and sent as PNG, 8 bits per sample: grey images are windowed on the server
with the instance's first Window Center/Width (else the full range), and the
browser's window/level then works on those 8 bits (documented limitation for
>8-bit XA). Colour is converted once by pydicom (YBR to RGB); the browser
never converts again. URLs are immutable (instance UIDs are never reused).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from io import BytesIO
from typing import Any

import numpy as np
from flask import Blueprint, Response, abort, current_app, jsonify, request
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGBaseline8Bit

from viewer.presentation import patient_fields

bp = Blueprint("frames", __name__, url_prefix="/api/instances")
DEFAULT_FPS = 30.0


def frame_times_ms(ds: Dataset) -> list[float]:
    """Display time of each frame, by the standard's order of precedence:
    Frame Time Vector (variable timing), Frame Time, Cine Rate, Recommended
    Display Frame Rate; 30 frames/s when none is given."""
    frames = int(ds.get("NumberOfFrames") or 1)
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


class FrameCache:
    """Browser-ready frames of recently opened instances (bounded, thread-safe)."""

    def __init__(self, max_instances: int = 8) -> None:
        self._items: OrderedDict[str, list[tuple[bytes, str]]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_instances = max_instances

    def get(self, uid: str, build: Any) -> list[tuple[bytes, str]]:
        with self._lock:
            if uid in self._items:
                self._items.move_to_end(uid)
                return self._items[uid]
        frames = build()
        with self._lock:
            self._items[uid] = frames
            while len(self._items) > self.max_instances:
                self._items.popitem(last=False)
        return frames


def _to_8bit(ds: Dataset, array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c = float(
            center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center
        )
        w = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
        low, high = c - w / 2, c + w / 2
    else:
        low, high = float(array.min()), float(array.max()) or 1.0
    scaled = (array.astype(np.float32) - low) / max(high - low, 1e-6) * 255
    return np.clip(scaled, 0, 255).astype(np.uint8)


def browser_frames(ds: Dataset) -> list[tuple[bytes, str]]:
    """(bytes, MIME type) of every frame, ready for an <img>."""
    frames = int(ds.get("NumberOfFrames") or 1)
    if ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit:
        return [
            (bytes(f), "image/jpeg") for f in generate_frames(ds.PixelData, number_of_frames=frames)
        ]
    array = ds.pixel_array
    if frames == 1:
        array = array[np.newaxis]
    if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, ds)
    out = []
    for frame in array:
        image = _to_8bit(ds, frame)
        if str(ds.PhotometricInterpretation) == "MONOCHROME1":
            image = 255 - image
        buffer = BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        out.append((buffer.getvalue(), "image/png"))
    return out


def _instance(uid: str) -> Dataset:
    data = current_app.extensions["archive"].read(uid)
    if data is None:
        abort(404, description="no such instance")
    ds = dcmread(BytesIO(data))
    if "PixelData" not in ds:
        abort(404, description="this instance has no image (a report, a waveform)")
    return ds


def _cache() -> FrameCache:
    return current_app.extensions.setdefault("frame_cache", FrameCache())


@bp.get("/<uid>/meta")
def meta(uid: str) -> Any:
    ds = _instance(uid)
    times = frame_times_ms(ds)
    return jsonify(
        uid=uid,
        frames=len(times),
        frame_times_ms=times,
        fps=round(1000.0 / (sum(times) / len(times)), 2),
        rows=int(ds.get("Rows", 0)),
        columns=int(ds.get("Columns", 0)),
        photometric=str(ds.get("PhotometricInterpretation", "")),
        grey=str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME"),
        modality=str(ds.get("Modality", "")),
        **patient_fields(ds),
        view=str(ds.get("SeriesDescription", "")),
    )


@bp.get("/<uid>/thumbnail")
def thumbnail(uid: str) -> Response:
    """The first frame, small: decoding one frame, never the whole clip."""
    ds = _instance(uid)
    if ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit:
        data = bytes(next(generate_frames(ds.PixelData, number_of_frames=1)))
        image = Image.open(BytesIO(data)).convert("RGB")
    else:
        ds.pixel_array_options(index=0)
        array = ds.pixel_array
        if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = apply_color_lut(array, ds)
        image = Image.fromarray(_to_8bit(ds, array))
    image.thumbnail((192, 192))
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    response = Response(buffer.getvalue(), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


@bp.get("/<uid>/frames/<int:number>")
def frame(uid: str, number: int) -> Response:
    etag = f'"{uid}-{number}"'
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304)
    frames = _cache().get(uid, lambda: browser_frames(_instance(uid)))
    if not 1 <= number <= len(frames):
        abort(404, description=f"frames are numbered 1 to {len(frames)}")
    data, mime = frames[number - 1]
    response = Response(data, mimetype=mime)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response
