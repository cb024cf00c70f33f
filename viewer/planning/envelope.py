"""A suggested spectral Doppler envelope between two clicked times.

Echo stations offer an automatic trace the user corrects; so does the
viewer. Between the two clicks (the start and end of one beat), on the
side of the baseline the clicks are on, each pixel column's envelope is the
outermost pixel of the spectrum: brighter than the threshold that best
splits the pixels of the band's inner part in two (Otsu's), with the two
pixels inward of it bright too (isolated speckle is passed over), and
reached from the baseline without crossing a dark gap (an ECG trace, scale
ticks or a label drawn beyond the spectrum are not taken for it, nor is
such a thing alone in a column past the beat). A median over five columns
takes out what is left; columns with no spectrum are skipped. A
spectrum that reaches the region's edge (aliased, or clipped by the
scale) gets no suggestion: its envelope is not in the picture. The points
come back for the user to check and drag (the VTI is measured from
whatever points they keep, never from this suggestion unseen), at most
`MOST_POINTS` of them.
"""

from __future__ import annotations

import math

import numpy as np

from viewer.planning.calibration import Point
from viewer.planning.doppler import NotMeasurable, Region

MOST_POINTS = 150  # few enough to drag one by one
RUN = 3  # bright pixels in a row, outward from the baseline, that make spectrum
SMOOTH = 5  # columns in the median
GAP, GAP_SHARE = 4, 0.04  # dark pixels (at least, or of the band) that end the spectrum
INNER = 0.8  # of the band, from the baseline out, that sets the threshold
HOLLOW = 0.75  # the most of a column, from the baseline out, a spectral window may leave dark


def otsu(values: np.ndarray) -> float:
    """The threshold that best separates ``values`` into two classes."""
    counts, edges = np.histogram(values, bins=64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    total = weight[-1]
    mean = np.cumsum(counts * centres)
    between = (mean[-1] * weight - mean * total) ** 2 / np.maximum(weight * (total - weight), 1)
    return float(centres[int(np.argmax(between[:-1]))])


def _edge(column: np.ndarray, gap: int) -> int | None:
    """The outermost spectrum pixel of a column (index outward from the
    baseline): from the first spectrum pixel out, up to the first run of
    ``gap`` dark pixels; what lies beyond (an ECG trace, scale ticks, a
    label) is not spectrum."""
    lit = np.flatnonzero(column)
    if len(lit) == 0:
        return None
    jumps = np.flatnonzero(np.diff(lit) > gap)
    edge = int(lit[jumps[0]] if len(jumps) else lit[-1])
    if lit[0] > max(gap, HOLLOW * edge):
        return None  # a thin thing far out (past the beat: a label, a trace), not a spectrum
    return edge


def suggest(pixels: np.ndarray, region: Region, start: Point, end: Point) -> list[Point]:
    """The envelope's image points from ``start`` to ``end`` (their times),
    on the clicks' side of the baseline; NotMeasurable when there is none."""
    x_min, y_min, x_max, y_max = region.box
    rows, columns = pixels.shape
    baseline = region.baseline()
    left = max(x_min, math.ceil(min(start[0], end[0])))
    right = min(x_max, columns - 1, math.floor(max(start[0], end[0])))
    if right - left < 2:
        raise NotMeasurable("the two clicks are less than three columns apart")
    side = (start[1] + end[1]) / 2 - baseline
    base = min(max(round(baseline), y_min), y_max, rows - 1)
    if side < 0:  # above the baseline: outward is up
        band = pixels[max(y_min, 0) : base + 1, left : right + 1][::-1]
    else:
        band = pixels[base : min(y_max, rows - 1) + 1, left : right + 1]
    if band.shape[0] <= RUN or float(band.max()) == float(band.min()):
        raise NotMeasurable("no spectrum between the clicks")
    # The threshold from the band's inner part: overlays machines draw at
    # the region's far edge (an ECG trace, labels) are a third, brighter
    # class that would raise it into the spectrum.
    bright = band > otsu(band[: max(RUN + 2, round(INNER * band.shape[0]))])
    solid = bright.copy()
    for step in range(1, RUN):  # bright, and the pixels inward of it too
        solid[step:] &= bright[:-step]
    solid[: RUN - 1] = False
    gap = max(GAP, round(GAP_SHARE * band.shape[0]))
    kept = []
    for c in range(band.shape[1]):
        depth = _edge(solid[:, c], gap)
        if depth is not None:
            kept.append((left + c, depth))
    if len(kept) < 3:
        raise NotMeasurable("no spectrum between the clicks")
    if max(d for _, d in kept) >= band.shape[0] - 1 - RUN:
        raise NotMeasurable(
            "the spectrum reaches the edge of the region (aliased or clipped): "
            "trace it by hand, or record with a higher velocity scale"
        )
    depths = np.array([d for _, d in kept], dtype=float)
    half = SMOOTH // 2
    padded = np.pad(depths, half, mode="edge")
    smooth = np.median(np.lib.stride_tricks.sliding_window_view(padded, SMOOTH), axis=1)
    step = max(1, math.ceil(len(kept) / MOST_POINTS))
    chosen = sorted({*range(0, len(kept), step), len(kept) - 1})
    sign = -1 if side < 0 else 1
    return [(float(kept[i][0]), float(base + sign * smooth[i])) for i in chosen]
