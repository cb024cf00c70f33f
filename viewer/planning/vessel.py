"""Vessel diameters on an angiogram: a profile along a drawn line, and the
edges of a catheter (or any contrast-filled tube) across one.

Contrast-filled vessels and catheters are darker than their surroundings
on the picture as shown (MONOCHROME1 already inverted). Across a tube the
intensity dips; its edges are where the dip crosses half-way between its
floor and the background either side (full width at half depth, the edge
criterion of quantitative angiography's simplest form), found between
samples by linear interpolation on a profile sampled every quarter pixel
(bilinear). Along a drawn line (the duct from aorta to pulmonary artery),
a profile across it every pixel gives the diameter station by station and
the narrowest point; each diameter is then measured as a length between
its two edges, so it takes the image's or the user's calibration and names
its scale as every length does. A station where the dip is not found (no
tube, a bifurcation, the dip not deep enough above the noise) is skipped;
too few stations, and the profile is refused saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from viewer.planning.calibration import Point

STEP = 0.25  # px between samples across
HALF_ACROSS = 20.0  # px either side of the line searched for the edges
MOST_STATIONS = 400
SHORTEST_SHARE = 0.75  # of the drawn crossing: cos 40 degrees, less a margin
LEAST_DEPTH = 12.0  # grey levels (of 255) a dip must reach below the background


class NoEdges(ValueError):
    """No tube across the line: the reason."""


@dataclass(frozen=True)
class Station:
    along_px: float  # from the line's first point
    edges: tuple[Point, Point]
    width_px: float


def _sample(pixels: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples (edge pixels repeated outside the image)."""
    rows, columns = pixels.shape
    xs = np.clip(xs - 0.5, 0, columns - 1)  # pixel i's centre is at i + 0.5
    ys = np.clip(ys - 0.5, 0, rows - 1)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    x1, y1 = np.minimum(x0 + 1, columns - 1), np.minimum(y0 + 1, rows - 1)
    fx, fy = xs - x0, ys - y0
    top = pixels[y0, x0] * (1 - fx) + pixels[y0, x1] * fx
    bottom = pixels[y1, x0] * (1 - fx) + pixels[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def edges_across(pixels: np.ndarray, a: Point, b: Point) -> tuple[Point, Point]:
    """The edges of the dark tube that the segment a-b crosses (its darkest
    point, the dip around it at half depth); NoEdges when there is none."""
    length = math.dist(a, b)
    if length < 2:
        raise NoEdges("draw the line across the tube, past both its edges")
    count = int(length / STEP) + 1
    t = np.linspace(0.0, 1.0, count)
    xs, ys = a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t
    values = _sample(pixels, xs, ys)
    floor_at = int(np.argmin(values))
    outer = max(2, count // 8)
    background = min(float(np.median(values[:outer])), float(np.median(values[-outer:])))
    floor = float(values[floor_at])
    if background - floor < LEAST_DEPTH:
        raise NoEdges("no dark tube across the line (not enough contrast)")
    half = (floor + background) / 2
    left = _crossing(values, floor_at, -1, half)
    right = _crossing(values, floor_at, 1, half)
    if left is None or right is None:
        raise NoEdges("the tube's edges lie beyond the line: draw it past both")

    def at(index: float) -> Point:
        f = index / (count - 1)
        return (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f)

    return at(left), at(right)


def _crossing(values: np.ndarray, start: int, direction: int, level: float) -> float | None:
    """Where ``values`` first rises through ``level`` from ``start`` on, in
    (fractional) sample indices; None if it never does."""
    i = start
    while 0 <= i + direction < len(values):
        j = i + direction
        if values[j] >= level:
            span = values[j] - values[i]
            f = (level - values[i]) / span if span else 0.0
            return i + direction * f
        i = j
    return None


def profile(pixels: np.ndarray, a: Point, b: Point, half: float = HALF_ACROSS) -> list[Station]:
    """The tube's diameter every pixel along a-b (drawn along it)."""
    length = math.dist(a, b)
    if length < 3:
        raise NoEdges("draw the line along the vessel, at least three pixels long")
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    nx, ny = -uy, ux  # across
    stations = []
    count = min(MOST_STATIONS, int(length) + 1)
    for along in np.linspace(0.0, length, count):
        cx, cy = a[0] + ux * along, a[1] + uy * along
        try:
            e1, e2 = edges_across(
                pixels, (cx - nx * half, cy - ny * half), (cx + nx * half, cy + ny * half)
            )
        except NoEdges:
            continue
        stations.append(Station(float(along), (e1, e2), math.dist(e1, e2)))
    if len(stations) < max(3, count // 3):
        raise NoEdges("no vessel along most of the line: draw it along the contrast-filled vessel")
    return stations


def snapped(pixels: np.ndarray, a: Point, b: Point) -> tuple[Point, Point]:
    """The edges of the tube a-b was drawn across, on the line through the
    tube's centre at right angles to it: of the lines through the centre
    within 40 degrees of the drawn one, the one that crosses it shortest (a
    line across a tube at a slant measures it too wide), searched coarse
    then fine. A crossing shorter than the drawn one's at 40 degrees
    (cos 40 = 0.77) is noise, not the tube, and is passed over."""
    e1, e2 = edges_across(pixels, a, b)
    drawn = math.dist(e1, e2)
    centre = ((e1[0] + e2[0]) / 2, (e1[1] + e2[1]) / 2)
    reach = max(math.dist(a, b) / 2, drawn)
    best = (drawn, math.atan2(b[1] - a[1], b[0] - a[0]), e1, e2)
    for span, step in ((40, 4), (4, 1)):
        heading = best[1]
        for degrees in range(-span, span + 1, step):
            angle = heading + math.radians(degrees)
            dx, dy = math.cos(angle) * reach, math.sin(angle) * reach
            try:
                f1, f2 = edges_across(
                    pixels, (centre[0] - dx, centre[1] - dy), (centre[0] + dx, centre[1] + dy)
                )
            except NoEdges:
                continue
            width = math.dist(f1, f2)
            if SHORTEST_SHARE * drawn <= width < best[0]:
                best = (width, angle, f1, f2)
    return best[2], best[3]
