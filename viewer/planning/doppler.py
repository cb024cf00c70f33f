"""Spectral Doppler and M-mode measurements, in the units the image declares.

An echo machine describes each region of the picture in the Sequence of
Ultrasound Regions (PS3.3 C.8.5.5): where it lies, what it shows (a PW or
CW spectral Doppler, an M-mode), the physical units of each axis, the
reference pixel and the physical value there, and the physical size of one
pixel. The region under the points decides the tool's units, as on a
vendor's echo station, and the value is read through that region alone:
- a spectral Doppler region (time in seconds across, velocity in cm/s up
  and down): a velocity at a point and its peak gradient by the simplified
  Bernoulli equation (4v², v in m/s); a time interval and the rate it
  makes; a traced envelope's velocity-time integral, peak and mean velocity
  and mean gradient (4v² averaged over the trace, not 4 times the mean
  velocity squared);
- an M-mode region (time across, depth in cm down): a distance, a time and
  their slope.

Every result names its region and units as its scale source. Points in no
region, across two regions, or in a region without those units measure
nothing, and say why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pydicom.dataset import Dataset

from viewer.planning.calibration import Point

# PS3.3 C.8.5.5.1.2 Region Data Type, C.8.5.5.1.1 Region Spatial Format,
# C.8.5.5.1.15 Physical Units.
PW, CW = 3, 4
SPECTRAL = {PW: "PW spectral Doppler", CW: "CW spectral Doppler"}
M_MODE_FORMAT = 2
CM, SECONDS, CM_PER_S = 3, 4, 7
MOST_TRACE = 2000  # points of one traced envelope
MMHG_PER_M2_S2 = 4.0  # the simplified Bernoulli equation
# What an echo machine's scales can be: a pixel of 10 µs to 1 s; of at most
# 50 cm/s (a 500-pixel strip spans 250 m/s) or 1 cm of depth; no blood in a
# heart flows faster than 10 m/s (a severe stenosis: 5 to 7).
SECONDS_PER_PIXEL = (1e-5, 1.0)
CM_S_PER_PIXEL = 50.0
CM_PER_PIXEL = 1.0
MOST_CM_S = 1000.0
SHORTEST_CYCLE_S = 0.15  # 400/min: a shorter interval is no cardiac cycle


class NotMeasurable(ValueError):
    """The points are in no region that gives these units: the reason."""


@dataclass(frozen=True)
class Region:
    """One ultrasound region's axes: physical value at a pixel, and its name."""

    index: int
    name: str
    x0: float  # pixel column of the reference, in image pixels
    y0: float
    value_x0: float  # physical value at the reference pixel
    value_y0: float
    delta_x: float  # physical units per pixel
    delta_y: float
    box: tuple[int, int, int, int]  # min x, min y, max x, max y

    def baseline(self) -> float:
        """The image row of zero velocity (or depth)."""
        return self.y0 - self.value_y0 / self.delta_y

    def at(self, point: Point) -> tuple[float, float]:
        """(time in s, velocity in cm/s or depth in cm) at an image point."""
        x, y = point
        return (
            self.value_x0 + (x - self.x0) * self.delta_x,
            self.value_y0 + (y - self.y0) * self.delta_y,
        )


def _inside(region: Dataset, point: Point) -> bool:
    x, y = point
    return int(region.RegionLocationMinX0) <= x <= int(region.RegionLocationMaxX1) and int(
        region.RegionLocationMinY0
    ) <= y <= int(region.RegionLocationMaxY1)


def _kind(found: Dataset, want: str) -> bool:
    if want == "spectral":
        return int(found.get("RegionDataType") or 0) in SPECTRAL
    return int(found.get("RegionSpatialFormat") or 0) == M_MODE_FORMAT


def _area(found: Dataset) -> int:
    return (int(found.RegionLocationMaxX1) - int(found.RegionLocationMinX0)) * (
        int(found.RegionLocationMaxY1) - int(found.RegionLocationMinY0)
    )


def region(ds: Dataset, points: list[Point], want: str, baseline: bool = True) -> Region:
    """The region holding every point, if it is a ``want`` ("spectral" or
    "m-mode") region with the units that needs; NotMeasurable else. Where
    regions overlap, the one of that kind is taken (a Doppler strip inside a
    picture-wide region); two of that kind that disagree on the scale are
    refused. ``baseline``: the velocity or depth at the reference pixel must
    be given (a velocity needs it; a time interval does not)."""
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    holding = [n for n, r in enumerate(regions) if all(_inside(r, p) for p in points)]
    if not holding:
        if any(any(_inside(r, p) for r in regions) for p in points):
            raise NotMeasurable("the points lie in different ultrasound regions")
        raise NotMeasurable("no ultrasound region holds the points")
    wanted = [n for n in holding if _kind(regions[n], want)]
    if not wanted:
        smallest = min(holding, key=lambda n: _area(regions[n]))
        wanted = [smallest]
    found = [_read(regions[n], n, want, baseline) for n in wanted]
    scales = {(f.x0, f.y0, f.value_x0, f.value_y0, f.delta_x, f.delta_y) for f in found}
    if len(scales) > 1:
        raise NotMeasurable("two regions of that kind overlap here with different scales")
    return found[0]


def _read(found: Dataset, index: int, want: str, baseline: bool) -> Region:
    units = (found.get("PhysicalUnitsXDirection"), found.get("PhysicalUnitsYDirection"))
    kind = int(found.get("RegionDataType") or 0)
    if want == "spectral":
        if kind not in SPECTRAL:
            raise NotMeasurable("the region is not a spectral Doppler region")
        if units != (SECONDS, CM_PER_S):
            raise NotMeasurable("the Doppler region's units are not seconds and cm/s")
        name = f"{SPECTRAL[kind]} region {index + 1} (s, cm/s)"
    else:
        if int(found.get("RegionSpatialFormat") or 0) != M_MODE_FORMAT:
            raise NotMeasurable("the region is not an M-mode region")
        if units != (SECONDS, CM):
            raise NotMeasurable("the M-mode region's units are not seconds and cm")
        name = f"M-mode region {index + 1} (s, cm)"
    if (
        baseline
        and want == "spectral"
        and (
            found.get("ReferencePixelY0") is None
            or found.get("ReferencePixelPhysicalValueY") is None
        )
    ):
        # Type 3 in the standard; without it zero velocity is nowhere.
        raise NotMeasurable("the Doppler region does not say where its baseline is")
    try:
        delta_x, delta_y = float(found.PhysicalDeltaX), float(found.PhysicalDeltaY)
        reference = (
            float(found.get("ReferencePixelX0") or 0),
            float(found.get("ReferencePixelY0") or 0),
            float(found.get("ReferencePixelPhysicalValueX") or 0.0),
            float(found.get("ReferencePixelPhysicalValueY") or 0.0),
        )
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise NotMeasurable("the region does not say its physical scale") from None
    if not all(math.isfinite(v) for v in (delta_x, delta_y, *reference)) or 0 in (
        delta_x,
        delta_y,
    ):
        raise NotMeasurable("the region does not say its physical scale")
    if not (
        SECONDS_PER_PIXEL[0] <= abs(delta_x) <= SECONDS_PER_PIXEL[1]
        and abs(delta_y) <= (CM_S_PER_PIXEL if want == "spectral" else CM_PER_PIXEL)
        and abs(reference[3]) <= MOST_CM_S
    ):
        raise NotMeasurable("the region's scale is beyond any echo machine's")
    return Region(
        index=index,
        name=name,
        # The reference pixel is given relative to the region's corner.
        x0=int(found.RegionLocationMinX0) + reference[0],
        y0=int(found.RegionLocationMinY0) + reference[1],
        value_x0=reference[2],
        value_y0=reference[3],
        delta_x=delta_x,
        delta_y=delta_y,
        box=(
            int(found.RegionLocationMinX0),
            int(found.RegionLocationMinY0),
            int(found.RegionLocationMaxX1),
            int(found.RegionLocationMaxY1),
        ),
    )


def gradient_mmhg(velocity_cm_s: float) -> float:
    """The simplified Bernoulli pressure gradient, 4v² (v in m/s)."""
    return MMHG_PER_M2_S2 * (velocity_cm_s / 100) ** 2


def _plausible(velocity_cm_s: float) -> None:
    if not abs(velocity_cm_s) <= MOST_CM_S:
        raise NotMeasurable("beyond any blood flow (over 10 m/s): check the region's scale")


def velocity(ds: Dataset, point: Point) -> dict[str, Any]:
    """A velocity at a point (toward the probe above the baseline, away
    below, by the sign the region gives) and its peak gradient."""
    found = region(ds, [point], "spectral")
    _, value = found.at(point)
    _plausible(value)
    return {
        "value": round(value / 100, 3),
        "unit": "m/s",
        "gradient": round(gradient_mmhg(value), 1),
        "source": found.name,
    }


def interval(ds: Dataset, a: Point, b: Point) -> dict[str, Any]:
    """The time between two points of a Doppler or M-mode trace, and the
    rate it makes if it is one cardiac cycle."""
    try:
        found = region(ds, [a, b], "spectral", baseline=False)
    except NotMeasurable:
        found = region(ds, [a, b], "m-mode")
    seconds = abs(found.at(b)[0] - found.at(a)[0])
    if seconds <= 0:
        raise NotMeasurable("the two points are at the same time")
    return {
        "value": round(seconds * 1000, 1),
        "unit": "ms",
        # A rate only for what could be one cardiac cycle.
        "rate": round(60 / seconds, 1) if seconds >= SHORTEST_CYCLE_S else None,
        "source": found.name,
    }


def m_mode(ds: Dataset, a: Point, b: Point) -> dict[str, Any]:
    """Depth distance, time and slope between two points of an M-mode trace."""
    found = region(ds, [a, b], "m-mode")
    (t1, d1), (t2, d2) = found.at(a), found.at(b)
    distance_mm, seconds = abs(d2 - d1) * 10, abs(t2 - t1)
    return {
        "value": round(distance_mm, 2),
        "unit": "mm",
        "time_ms": round(seconds * 1000, 1),
        "slope": round(distance_mm / seconds, 1) if seconds > 0 else None,  # mm/s
        "source": found.name,
    }


def vti(ds: Dataset, trace: list[Point]) -> dict[str, Any]:
    """A traced envelope: its velocity-time integral (cm), peak and mean
    velocity, and the mean gradient (4v² averaged over time). The trace is
    taken in time order; points at one time add nothing."""
    if len(trace) < 3:
        raise NotMeasurable("a trace needs at least three points")
    found = region(ds, trace, "spectral")
    samples = [found.at(p) for p in trace]
    if samples[0][0] > samples[-1][0]:
        samples.reverse()  # traced right to left
    step = abs(found.delta_x)  # a hand may waver back by a pixel, no more
    if any(t2 < t1 - step for (t1, _), (t2, _) in pairwise(samples)):
        raise NotMeasurable("the trace goes back in time: trace the envelope from one end")
    samples.sort()
    duration = samples[-1][0] - samples[0][0]
    if duration <= 0:
        raise NotMeasurable("the trace spans no time")
    wobble = 1.5 * abs(found.delta_y)  # a pixel either side of the baseline at the ends
    if min(v for _, v in samples) < -wobble and max(v for _, v in samples) > wobble:
        raise NotMeasurable("the trace crosses the baseline: trace one direction of flow")
    for _, v in samples:
        _plausible(v)
    integral = squared = 0.0
    for (t1, v1), (t2, v2) in pairwise(samples):
        dt = t2 - t1
        integral += dt * (abs(v1) + abs(v2)) / 2  # cm/s x s: cm
        squared += dt * (gradient_mmhg(v1) + gradient_mmhg(v2)) / 2
    peak = max(abs(v) for _, v in samples)
    return {
        "value": round(integral, 2),
        "unit": "cm",
        "peak_velocity": round(peak / 100, 3),  # m/s
        "mean_velocity": round(integral / duration / 100, 3),
        "peak_gradient": round(gradient_mmhg(peak), 1),
        "mean_gradient": round(squared / duration, 1),
        "duration_ms": round(duration * 1000, 1),
        "source": found.name,
    }
