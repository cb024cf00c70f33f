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
SEARCH_SPAN = 60  # degrees either side of the drawn line
LARGEST_SLANT = 56  # degrees: a best line at the search's edge may lie beyond it
AGREE_SHIFT, AGREE_SHARE = 3.0, 0.08  # px along the tube; the widths' largest disagreement
SHORTEST_SHARE = 0.5  # of the drawn crossing: shorter is noise (a slant of 60 degrees gives a half)
LEAST_DEPTH = 12.0  # grey levels (of 255) a dip must reach below the background
NOISE_TIMES = 4.0  # ... and this many times the background's noise
SNAP_CONTRAST = 8.0  # a calibration scales every length: its catheter must stand out more
CENTRAL = 0.3  # of a profile's cross-line: the vessel's dip is sought near the drawn line
NEIGHBOURS = 9  # stations a station is compared with
WIDTH_SPREAD = (
    0.35  # a station this much wider or narrower than its neighbours' median is not of the vessel
)
LEAST_SHIFT = 2.0  # px the vessel's centre may move from its neighbours' (and half a width)


class NoEdges(ValueError):
    """No tube across the line: the reason."""


@dataclass(frozen=True)
class Station:
    along_px: float  # from the line's first point
    edges: tuple[Point, Point]
    width_px: float
    offset_px: float = 0.0  # the vessel's centre, across from the line


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


def edges_across(
    pixels: np.ndarray, a: Point, b: Point, central: float = 1.0, contrast: float = NOISE_TIMES
) -> tuple[Point, Point]:
    """The edges of the dark tube that the segment a-b crosses (its darkest
    point within the ``central`` share of the segment, the dip around it at
    half depth); NoEdges when there is none."""
    length = math.dist(a, b)
    if length < 2:
        raise NoEdges("draw the line across the tube, past both its edges")
    count = int(length / STEP) + 1
    t = np.linspace(0.0, 1.0, count)
    xs, ys = a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t
    values = _sample(pixels, xs, ys)
    margin = int(count * (1 - central) / 2)
    floor_at = margin + int(np.argmin(values[margin : count - margin]))
    outer = max(2, count // 8)
    # The brighter side's: the other may end on a branch or a vessel beside it.
    background = max(float(np.median(values[:outer])), float(np.median(values[-outer:])))
    floor = float(values[floor_at])
    noise = min(float(np.std(values[:outer])), float(np.std(values[-outer:])))
    # Whether the dip stands out: its depth over the half pixel around the
    # darkest sample (one noisy sample would make it look deeper).
    depth = background - float(np.mean(values[max(0, floor_at - 2) : floor_at + 3]))
    if depth < max(LEAST_DEPTH, contrast * noise):
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
                pixels,
                (cx - nx * half, cy - ny * half),
                (cx + nx * half, cy + ny * half),
                central=CENTRAL,
            )
        except NoEdges:
            continue
        offset = ((e1[0] + e2[0]) / 2 - cx) * nx + ((e1[1] + e2[1]) / 2 - cy) * ny
        stations.append(Station(float(along), (e1, e2), math.dist(e1, e2), offset))
    stations = _of_one_vessel(stations)
    if len(stations) < max(3, count // 3):
        raise NoEdges(
            "no single vessel along most of the line: draw it along the contrast-filled "
            "vessel, away from branches and other vessels beside it"
        )
    return stations


def _of_one_vessel(stations: list[Station]) -> list[Station]:
    """The stations that agree with their neighbours: where the centre jumps
    (onto a branch, a catheter, a vessel beside it) or the width does (noise
    taken for an edge, a catheter crossing), a station is not the vessel's."""
    if len(stations) < 3:
        return stations
    widths = np.array([s.width_px for s in stations])
    offsets = np.array([s.offset_px for s in stations])
    count = min(NEIGHBOURS, len(stations))
    kept = []
    for i, station in enumerate(stations):
        first = min(max(0, i - count // 2), len(stations) - count)
        width = float(np.median(widths[first : first + count]))
        offset = float(np.median(offsets[first : first + count]))
        if abs(station.width_px - width) > WIDTH_SPREAD * width:
            continue
        if abs(station.offset_px - offset) > max(LEAST_SHIFT, width / 2):
            continue
        kept.append(station)
    return kept


def narrowest(stations: list[Station]) -> Station:
    """The station where the vessel is narrowest, by the median of each
    station and its neighbours (one station does not make a narrowing);
    its own edges and width are what is reported."""
    widths = np.array([s.width_px for s in stations])
    half = 2
    smooth = [float(np.median(widths[max(0, i - half) : i + half + 1])) for i in range(len(widths))]
    return stations[int(np.argmin(smooth))]


def snapped(pixels: np.ndarray, a: Point, b: Point) -> tuple[Point, Point]:
    """The edges of the tube a-b was drawn across, on the line through the
    tube's centre at right angles to it: of the lines through the centre
    within 60 degrees of the drawn one, the one that crosses it shortest (a
    line across a tube at a slant measures it too wide), searched coarse
    then fine. A crossing shorter than half the drawn one is noise, not the
    tube, and is passed over; a best line at the search's edge (the drawn
    one over about 55 degrees off) is refused, and so is a width that three
    crossings 3 pixels apart do not agree on (a faint catheter)."""
    e1, e2 = edges_across(pixels, a, b, contrast=SNAP_CONTRAST)
    drawn = math.dist(e1, e2)
    centre = ((e1[0] + e2[0]) / 2, (e1[1] + e2[1]) / 2)
    reach = max(math.dist(a, b) / 2, drawn)
    best = (drawn, math.atan2(b[1] - a[1], b[0] - a[0]), e1, e2)
    for span, step in ((SEARCH_SPAN, 4), (4, 1)):
        heading = best[1]
        for degrees in range(-span, span + 1, step):
            angle = heading + math.radians(degrees)
            dx, dy = math.cos(angle) * reach, math.sin(angle) * reach
            try:
                f1, f2 = edges_across(
                    pixels,
                    (centre[0] - dx, centre[1] - dy),
                    (centre[0] + dx, centre[1] + dy),
                    contrast=SNAP_CONTRAST,
                )
            except NoEdges:
                continue
            width = math.dist(f1, f2)
            if SHORTEST_SHARE * drawn <= width < best[0]:
                best = (width, angle, f1, f2)
    _agreeing(pixels, centre, best[1], reach, best[0])
    if abs(_turn(best[1], math.atan2(b[1] - a[1], b[0] - a[0]))) > math.radians(LARGEST_SLANT):
        raise NoEdges("the line is far off square to the catheter: draw it straight across")
    return best[2], best[3]


def _agreeing(pixels: np.ndarray, centre: Point, angle: float, reach: float, width: float) -> None:
    """The same crossing a few pixels either way along the tube must give the
    same width (a catheter's is constant): edges read from noise do not."""
    along = (-math.sin(angle), math.cos(angle))
    dx, dy = math.cos(angle) * reach, math.sin(angle) * reach
    for shift in (-AGREE_SHIFT, AGREE_SHIFT):
        cx, cy = centre[0] + along[0] * shift, centre[1] + along[1] * shift
        try:
            f1, f2 = edges_across(pixels, (cx - dx, cy - dy), (cx + dx, cy + dy))
        except NoEdges:
            raise NoEdges(
                "the catheter's edges are not clear here: calibrate where it is sharp"
            ) from None
        if abs(math.dist(f1, f2) - width) > AGREE_SHARE * width:
            raise NoEdges("the catheter's edges are not clear here: calibrate where it is sharp")


def _turn(angle: float, heading: float) -> float:
    """The angle between two headings of a line, -pi/2 to pi/2."""
    return (angle - heading + math.pi / 2) % math.pi - math.pi / 2
