"""Key images for the report: the frames a signed plan measured, calipers drawn.

The frames are the centre's stored images (de-identified, their burned-in
text verified), so the same pictures go into both copies of the report.
Each is decoded alone (`pydicom.pixels.pixel_array` with the frame index),
scaled to the page, and the measurement drawn over it as the viewer drew it:
a length as its line, an angle as its two arms, an ellipse or a traced area
as its outline, a long and short axis as two lines, with the measurement's
number. A frame that cannot be read is left out of
the report, never a reason to hold the answer back.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydicom.pixels import pixel_array

from storage.archive import Archive

log = logging.getLogger(__name__)
MOST_IMAGES = 6  # per report
WIDTH = 480  # pixels of a key image as drawn into the PDF
LARGEST_MB = 512  # instances larger than this are not read for a key image
CALIPER = (255, 220, 0)


@dataclass(frozen=True)
class KeyImage:
    values: str  # "1: 8.0 mm; 2: 12.5 mm": the numbers drawn and what each measured
    frame: int  # 1-based, as a person counts
    png: bytes


def drawn_of(content: dict[str, Any]) -> list[dict[str, Any]]:
    """The measurements a report's plans drew on images, in order, numbered."""
    out: list[dict[str, Any]] = []
    for plan in content.get("plans") or []:
        for drawn in plan.get("drawn") or []:
            if isinstance(drawn, dict) and drawn.get("uid") and drawn.get("points"):
                out.append(drawn)
    return out


def key_images(archive: Archive, content: dict[str, Any]) -> list[KeyImage]:
    """One picture per measured frame (at most `MOST_IMAGES`), calipers drawn."""
    by_frame: dict[tuple[str, int], list[tuple[int, dict[str, Any]]]] = {}
    for number, drawn in enumerate(drawn_of(content), 1):
        by_frame.setdefault((str(drawn["uid"]), int(drawn.get("frame") or 0)), []).append(
            (number, drawn)
        )
    out = []
    for (uid, frame), marks in list(by_frame.items())[:MOST_IMAGES]:
        try:
            picture = _frame(archive, uid, frame)
        except Exception as exc:
            log.warning("a key image is left out of a report (%s)", type(exc).__name__)
            continue
        if picture is None:
            continue
        scale = WIDTH / picture.width
        picture = picture.resize((WIDTH, max(1, round(picture.height * scale))))
        pen = ImageDraw.Draw(picture)
        for number, drawn in marks:
            _draw(pen, drawn, scale, number)
        values = "; ".join(f"{n}: {_value(d)}" for n, d in marks)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        out.append(KeyImage(values, frame + 1, buffer.getvalue()))
    return out


def _frame(archive: Archive, uid: str, frame: int) -> Image.Image | None:
    if archive.index.instance_blob(uid) is None:
        return None
    if archive.index.total_size([uid]) > LARGEST_MB << 20:
        return None
    data = archive.read(uid)
    if data is None:
        return None
    array = pixel_array(io.BytesIO(data), index=frame, raw=False)
    if array.ndim == 3 and array.shape[-1] == 3:
        return Image.fromarray(_bytes(array), "RGB")
    gray = _bytes(array.astype(np.float64))
    return Image.fromarray(gray, "L").convert("RGB")


def _bytes(array: np.ndarray) -> np.ndarray:
    """8 bits a pixel: the frame's own range stretched (no window to trust)."""
    if array.dtype == np.uint8:
        return array
    low, high = np.percentile(array, (0.5, 99.5))
    span = max(float(high - low), 1e-6)
    return (np.clip((array - low) / span, 0, 1) * 255).astype(np.uint8)


def _value(drawn: dict[str, Any]) -> str:
    """A measurement's value as the viewer shows it: a long and short axis both."""
    text = f"{float(drawn.get('value') or 0):.1f}"
    if drawn.get("kind") == "bidirectional" and drawn.get("short") is not None:
        text += f" × {float(drawn['short']):.1f}"
    return f"{text} {drawn.get('unit') or ''}".rstrip()


def _draw(pen: ImageDraw.ImageDraw, drawn: dict[str, Any], scale: float, number: int) -> None:
    points = [(float(x) * scale, float(y) * scale) for x, y in drawn["points"]]
    if drawn.get("kind") == "ellipse" and len(points) == 2:
        (cx, cy), (ex, ey) = points
        rx, ry = abs(ex - cx), abs(ey - cy)
        pen.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=CALIPER, width=2)
    elif len(points) == 1:  # a Doppler velocity: a point
        (x, y) = points[0]
        pen.ellipse((x - 5, y - 5, x + 5, y + 5), outline=CALIPER, width=2)
    elif drawn.get("kind") == "angle" and len(points) == 3:  # the vertex first: its two arms
        pen.line([points[1], points[0], points[2]], fill=CALIPER, width=2)
    elif drawn.get("kind") == "area":
        pen.polygon(points, outline=CALIPER, width=2)
    elif drawn.get("kind") == "bidirectional" and len(points) == 4:
        pen.line(points[:2], fill=CALIPER, width=2)
        pen.line(points[2:], fill=CALIPER, width=2)
    else:
        pen.line(points, fill=CALIPER, width=2)
        for x, y in (points[0], points[-1]):
            pen.ellipse((x - 3, y - 3, x + 3, y + 3), outline=CALIPER, width=2)
    x, y = points[0]
    pen.text((x + 5, y + 5), str(number), fill=CALIPER)
