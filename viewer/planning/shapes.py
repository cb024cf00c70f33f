"""A traced area and a pair of axes: what a cardiologist draws over a
defect seen en face (its outline, or its long and short axis) or a duct's
ampulla, measured with the scale `calibration` finds for all their points.

An outline is closed by the edge from its last point to its first. One
that crosses itself (a figure-eight, a hurried hand's overshoot past its
start) has no single inside: the shoelace would subtract one loop from the
other, so it is refused rather than given a wrong area. Two axes must cross
each other at about a right angle in the body (on pixels that are not
square, not on the screen); the longer is the long axis, whichever was
drawn first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from viewer.planning import calibration as cal

MOST_OUTLINE = 500  # points of an outline: the browser keeps one per 2 screen pixels
SQUARE_DEG = 15.0  # how far from a right angle two axes may meet
CROSSES = "area: the outline crosses itself: trace it again without crossing"
NOTHING_INSIDE = "area: the outline encloses less than one image pixel"


def _distinct(outline: list[cal.Point]) -> np.ndarray:
    """The outline without repeated points (a slow drag gives many) and
    without a last point on its first (a closed trace)."""
    p = np.asarray(outline, dtype=float).reshape(-1, 2)
    if len(p) > 1:
        p = p[np.r_[True, np.any(np.diff(p, axis=0) != 0, axis=1)]]
    if len(p) > 1 and np.all(p[0] == p[-1]):
        p = p[:-1]
    return p


def _turn(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The sign of the turn p → q → r (0 when in line)."""
    return np.sign(
        (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1])
        - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])
    )


def _crosses_itself(p: np.ndarray) -> bool:
    """Whether two edges of the closed outline that are not neighbours
    meet: cross, touch (loops meeting at a point) or overlap (an outline
    traced twice, or two loops pressed along the image's edge)."""
    n = len(p)
    a, b = p[:, None], np.roll(p, -1, axis=0)[:, None]
    c, d = p[None, :], np.roll(p, -1, axis=0)[None, :]
    t1, t2, t3, t4 = _turn(a, b, c), _turn(a, b, d), _turn(c, d, a), _turn(c, d, b)
    # In line, all four: they meet only where their extents overlap.
    in_line = (t1 == 0) & (t2 == 0) & (t3 == 0) & (t4 == 0)
    extents = np.ones_like(in_line)
    for axis in (0, 1):
        low = np.maximum(
            np.minimum(a[..., axis], b[..., axis]), np.minimum(c[..., axis], d[..., axis])
        )
        high = np.minimum(
            np.maximum(a[..., axis], b[..., axis]), np.maximum(c[..., axis], d[..., axis])
        )
        extents &= low <= high
    crossing = (t1 * t2 <= 0) & (t3 * t4 <= 0) & (~in_line | extents)
    i, j = np.triu_indices(n, k=2)
    apart = ~((i == 0) & (j == n - 1))  # the closing edge meets the first at the start
    return bool(np.any(crossing[i, j] & apart))


def _shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def outline_fault(outline: list[cal.Point]) -> str | None:
    """Why an outline measures no area, else None."""
    p = _distinct(outline)
    if len(p) < 3:
        return "area: an outline needs at least three points"
    if _crosses_itself(p):
        return CROSSES
    if _shoelace(p) < cal.MIN_PX:
        return NOTHING_INSIDE
    return None


def area(ds: Dataset, outline: list[cal.Point], user: cal.Calibration | None = None) -> cal.Length:
    """The area inside an outline (checked by `outline_fault`), in mm² when
    one scale holds all its points, else in pixels² saying why."""
    px = _shoelace(_distinct(outline))
    scale = cal.for_image(ds, *outline, user=user)
    if isinstance(scale, str):
        return cal.Length(px, "px²", scale)
    return cal.Length(px * scale.mm_per_px_x * scale.mm_per_px_y, "mm²", scale.source)


def axes(
    ds: Dataset, points: list[cal.Point], user: cal.Calibration | None = None
) -> dict[str, Any]:
    """The long and short axis of two crossing lines (a, b) and (c, d):
    value (the long), short, unit and scale source. ValueError saying why
    when they are no such pair."""
    a, b, c, d = points
    if min(math.dist(a, b), math.dist(c, d)) < cal.MIN_PX:
        raise ValueError("bidirectional: an axis is shorter than one image pixel")
    ends = np.asarray([a, b, c, d], dtype=float)
    if not (  # each axis's ends either side of the other: a cross, not an L or a T
        _turn(ends[0], ends[1], ends[2]) * _turn(ends[0], ends[1], ends[3]) < 0
        and _turn(ends[2], ends[3], ends[0]) * _turn(ends[2], ends[3], ends[1]) < 0
    ):
        raise ValueError("bidirectional: the second axis must cross the first")
    scale = cal.for_image(ds, a, b, c, d, user=user)
    sx, sy = (
        (scale.mm_per_px_x, scale.mm_per_px_y) if isinstance(scale, cal.Calibration) else (1, 1)
    )
    u = ((b[0] - a[0]) * sx, (b[1] - a[1]) * sy)
    v = ((d[0] - c[0]) * sx, (d[1] - c[1]) * sy)
    lengths = sorted((math.hypot(*u), math.hypot(*v)), reverse=True)
    if not all(math.isfinite(x) and x > 0 for x in lengths):
        raise ValueError("bidirectional: the image's scale gives these axes no length")
    meet = math.degrees(
        math.acos(min(1.0, abs(u[0] * v[0] + u[1] * v[1]) / (lengths[0] * lengths[1])))
    )
    if meet < 90 - SQUARE_DEG:
        raise ValueError("bidirectional: the axes must meet at about a right angle (75 to 105°)")
    unit, source = ("mm", scale.source) if isinstance(scale, cal.Calibration) else ("px", scale)
    return {"value": lengths[0], "short": lengths[1], "unit": unit, "source": source}
