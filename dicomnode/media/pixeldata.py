"""How many bytes native (uncompressed) Pixel Data must hold.

Encoding arithmetic, read by validation (a short Pixel Data is refused) and
by de-identification (pixels are blanked frame by frame), so it lives below
both.
"""

from __future__ import annotations

from pydicom.dataset import Dataset


def expected_native_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes native Pixel Data must hold, from the image attributes (None if unknown)."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if bits == 1:
        return (rows * columns * frames + 7) // 8
    return rows * columns * samples * (bits // 8) * frames
