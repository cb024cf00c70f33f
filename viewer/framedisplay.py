"""How frames are shown: timing, rescale and VOI window from the header, and
frames as browser images.

The cine player windows /raw frames itself (static/clip.js); these images
are for what cannot: print, thumbnails, DICOMweb /rendered, and instances
/raw cannot carry (more than 16 bits). JPEG baseline goes as stored, so the
browser's decoder converts YBR to RGB once; everything else becomes PNG,
deeper grey windowed to 8 bits the way the sender's first window says.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from viewer.framedecode import frame_array, reference
from viewer.framestore import FrameError, Layout, number

log = logging.getLogger(__name__)
DEFAULT_FPS = 30.0
THUMBNAIL_PIXELS = (192, 192)
JPEG_START = b"\xff\xd8\xff"  # SOI, then the next marker


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


def timing(ds: Dataset, frames: int) -> dict[str, Any]:
    """Timing as /meta gives it: ``frame_time_ms`` (the mean), and
    ``frame_times_ms`` one per frame only when they differ (frames are
    bounded by ``framestore.MAX_FRAMES``), else None."""
    times = frame_times_ms(ds, frames)
    mean = sum(times) / len(times)
    varied = any(t != times[0] for t in times)
    return {"frame_time_ms": mean, "frame_times_ms": times if varied else None}


def rescale(ds: Dataset) -> dict[str, float]:
    """Modality LUT as slope and intercept (identity when not given)."""
    return {"slope": number(ds, "RescaleSlope", 1), "intercept": number(ds, "RescaleIntercept", 0)}


def window(ds: Dataset) -> dict[str, float] | None:
    """The first VOI window the sender gave (in rescaled units), if any."""
    width = number(ds, "WindowWidth", 0)
    if width <= 0 or ds.get("WindowCenter") in (None, ""):
        return None
    return {"center": number(ds, "WindowCenter", 0), "width": width}


def image_8bit(found: Layout, array: np.ndarray) -> np.ndarray:
    """A frame for an <img>: colour as RGB; grey 8-bit as stored, deeper grey
    windowed to 8 bits (the first window, else the frame's range);
    MONOCHROME1 inverted."""
    if array.ndim == 3:
        return np.ascontiguousarray(np.clip(array, 0, 255), dtype=np.uint8)
    ds = found.header
    if found.raw.get("bits") != 8 or found.raw.get("signed"):
        modality = rescale(ds)
        scaled = array.astype(np.float64) * modality["slope"] + modality["intercept"]
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


def stored_jpeg(found: Layout, index: int) -> bytes:
    """Frame ``index`` of a JPEG baseline instance as stored, if it is a JPEG
    image at all (a junk item, fragments grouped wrongly, are not): never
    other bytes labelled image/jpeg."""
    with found.open() as blob:
        data = found.stored(index, blob)
    if not data.startswith(JPEG_START):
        raise FrameError(f"frame {index + 1} is not a JPEG image")
    return data


def browser_image(found: Layout, index: int) -> tuple[bytes, str]:
    """Frame ``index`` (0-based) for an <img>: JPEG as stored, else PNG."""
    if found.delivery == "jpeg":
        return stored_jpeg(found, index), "image/jpeg"
    pixels = image_8bit(found, frame_array(found, index))
    png = _encoded(found, index, lambda: _save(Image.fromarray(pixels), "PNG", compress_level=1))
    return png, "image/png"


def grey_frame(found: Layout, index: int) -> np.ndarray:
    """Frame ``index`` as the browser shows it, in grey (float): what a
    cardiologist sees is what an image measurement reads."""
    if found.delivery == "jpeg":
        image = Image.open(BytesIO(stored_jpeg(found, index))).convert("L")
        return np.asarray(image, dtype=np.float64)
    pixels = image_8bit(found, frame_array(found, index)).astype(np.float64)
    return pixels.mean(axis=2) if pixels.ndim == 3 else pixels


def thumbnail_jpeg(found: Layout) -> bytes:
    """The first frame, small, as JPEG: one frame decoded and not kept (a
    study page of many runs must not fill the frame cache), never the clip."""
    if found.delivery == "jpeg":
        data = stored_jpeg(found, 0)
        image = _encoded(found, 0, lambda: Image.open(BytesIO(data)).convert("RGB"))
    else:
        image = Image.fromarray(image_8bit(found, frame_array(found, 0, cached=False)))
    image.thumbnail(THUMBNAIL_PIXELS)
    return _save(image, "JPEG", quality=85)


def _save(image: Image.Image, kind: str, **options: Any) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


def _encoded(found: Layout, index: int, work: Any) -> Any:
    """``work`` (Pillow reading or writing a frame), its failure a FrameError;
    Pillow's text is never logged (it may quote the data)."""
    try:
        return work()
    except Exception as exc:  # Pillow's errors on damaged images are of many kinds
        log.warning(
            "frame %d of %s not shown (%s)", index + 1, reference(found.uid), type(exc).__name__
        )
        raise FrameError(f"frame {index + 1} cannot be decoded") from exc
