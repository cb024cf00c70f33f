"""From pixels to millimetres, always with the source of the scale.

A value is calibrated only when the image says how: an ultrasound region
with equal physical units on both axes that holds both ends of the line; an
XA image's Pixel Spacing, or Imager Pixel Spacing brought to the isocentre
by the magnification; or the user's own calibration on a catheter of known
French size or on any known length. Otherwise the value stays in pixels and
says why.

A user calibration is an object with a scope: it was drawn on one image and
applies to the images of that image's series with the same geometry (size,
spacings, magnification: a series may hold runs at other zooms), or only to
the frame it was drawn on (ultrasound, where each instance has its own
regions). It never applies elsewhere, so a catheter calibrated on one run
cannot silently rescale a measurement on another. A line too short to click
accurately, or giving no image's scale, does not calibrate; a measurement
through points that coincide measures nothing and is refused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomnode.ingest.validate import is_valid_uid

Point = tuple[float, float]  # (x = column, y = row), in image pixels
CM = 3  # PhysicalUnitsX/YDirection code for centimetres (PS3.3 C.8.5.5.1.15)
FRENCH = (1.0, 34.0)  # catheter and sheath sizes that exist
KNOWN_MM = (0.1, 1000.0)
COORDINATE = 1e5  # beyond any image's size: a point past it is not a click
MAX_ID = 9999
SCOPES = ("series", "frame")
MIN_CALIBRATION_PX = 5.0  # a shorter line gives a scale off by a fifth per pixel of error
SCALE = (0.005, 5.0)  # mm per pixel: from a 2.5 mm field to a 2.5 m one on 512 pixels
MIN_PX = 1.0  # a line, an arm or an ellipse's width below one image pixel measures nothing


TOO_SHORT = (
    f"calibration: the line is too short to calibrate on "
    f"(at least {MIN_CALIBRATION_PX:g} image pixels)"
)
IMPLAUSIBLE = (
    f"calibration: the line and the known length give an implausible scale "
    f"({SCALE[0]:g} to {SCALE[1]:g} mm per pixel): check both"
)


@dataclass(frozen=True)
class Calibration:
    mm_per_px_x: float
    mm_per_px_y: float
    source: str


@dataclass(frozen=True)
class Length:
    value: float
    unit: str  # "mm" or "px"
    source: str  # where the scale came from, or why there is none


def _in_region(region: Dataset, point: Point) -> bool:
    x, y = point
    return int(region.RegionLocationMinX0) <= x <= int(region.RegionLocationMaxX1) and int(
        region.RegionLocationMinY0
    ) <= y <= int(region.RegionLocationMaxY1)


def ultrasound(ds: Dataset, *points: Point) -> Calibration | str:
    """The region holding every point, if it is spatial and in cm on both axes;
    else the reason no calibration applies."""
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    for index, region in enumerate(regions):
        if not all(_in_region(region, p) for p in points):
            continue
        units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
        if units != (CM, CM):
            return "the region's physical units are not centimetres on both axes"
        try:
            dx, dy = float(region.PhysicalDeltaX), float(region.PhysicalDeltaY)
        except (TypeError, ValueError, AttributeError):
            return "the region's physical delta cannot be read"
        if dx <= 0 or dy <= 0:
            return "the region has no positive physical delta"
        low, high = ECHO_CM_PER_PX
        if not all(math.isfinite(v) and low <= v <= high for v in (dx, dy)):
            return IMPLAUSIBLE_REGION
        return Calibration(dx * 10, dy * 10, f"ultrasound region {index + 1} (cm)")
    if any(any(_in_region(r, p) for r in regions) for p in points):
        return "the ends lie in different ultrasound regions"
    return "no ultrasound region holds the measurement"


def xray(ds: Dataset) -> Calibration | str:
    """Pixel Spacing if present (already in the patient), else Imager Pixel
    Spacing at the isocentre: divided by the Estimated Radiographic
    Magnification Factor, or by SID/SOD. A spacing or a geometry no X-ray
    system has (0, negative, a metre a pixel, the patient beyond the
    detector) gives no scale: the measurement stays in pixels, saying why,
    rather than a wrong number in mm."""
    try:
        return _xray(ds)
    except (TypeError, ValueError, IndexError, OverflowError):
        return "the image's pixel spacing cannot be read"


def _xray(ds: Dataset) -> Calibration | str:
    if spacing := ds.get("PixelSpacing"):
        row, column = float(spacing[0]), float(spacing[1])
        if not _plausible_spacing(row, column):
            return IMPLAUSIBLE_SPACING
        return Calibration(column, row, "Pixel Spacing")
    imager = ds.get("ImagerPixelSpacing")
    if not imager:
        return "neither Pixel Spacing nor Imager Pixel Spacing"
    row, column = float(imager[0]), float(imager[1])
    if not _plausible_spacing(row, column):
        return IMPLAUSIBLE_SPACING
    if magnification := ds.get("EstimatedRadiographicMagnificationFactor"):
        factor, how = float(magnification), "Estimated Radiographic Magnification Factor"
    elif ds.get("DistanceSourceToDetector") and ds.get("DistanceSourceToPatient"):
        factor = float(ds.DistanceSourceToDetector) / float(ds.DistanceSourceToPatient)
        how = "source-detector / source-patient distances"
    else:
        return Calibration(column, row, "Imager Pixel Spacing, at the detector (not corrected)")
    if not (math.isfinite(factor) and MAGNIFICATION[0] <= factor <= MAGNIFICATION[1]):
        return IMPLAUSIBLE_MAGNIFICATION
    return Calibration(
        column / factor, row / factor, f"Imager Pixel Spacing / {factor:.3g} ({how}), at isocentre"
    )


def square_pixels(ds: Dataset) -> bool:
    """Whether the image's own header makes its pixels square (within 1 %):
    every ultrasound region's deltas, the X-ray pixel spacings, the pixel
    aspect ratio. A calibration line gives one scale for both directions,
    which only square pixels have."""
    pairs: list[tuple[Any, Any]] = [
        (r.get("PhysicalDeltaX"), r.get("PhysicalDeltaY"))
        for r in ds.get("SequenceOfUltrasoundRegions") or []
    ]
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            pairs.append((value[0], value[1]))
    for a, b in pairs:
        try:
            a, b = abs(float(a)), abs(float(b))
        except (TypeError, ValueError):
            return False
        if not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > 0.01 * max(a, b):
            return False
    return True


def _plausible_spacing(row: float, column: float) -> bool:
    return all(math.isfinite(v) and SPACING_MM[0] <= v <= SPACING_MM[1] for v in (row, column))


IMPLAUSIBLE_SPACING = "the header's pixel spacing is no image's: calibrate on a catheter"
# An echo pixel: from 1 µm (a high-frequency probe zoomed far in) to 1 cm.
ECHO_CM_PER_PX = (1e-4, 1.0)
IMPLAUSIBLE_REGION = "the region's physical delta is no probe's"
IMPLAUSIBLE_MAGNIFICATION = (
    "the header's magnification is no X-ray system's: calibrate on a catheter"
)
# A pixel of an X-ray image: 0.01 to 5 mm; geometric magnification at the
# isocentre: from 1 (the patient on the detector) to 4.
SPACING_MM = (0.01, 5.0)
MAGNIFICATION = (1.0, 4.0)


def french_mm(french: float) -> float:
    """Outer diameter of a catheter: 1 Fr = 1/3 mm."""
    return french / 3.0


def manual(p1: Point, p2: Point, known_mm: float, what: str) -> Calibration:
    """The user's calibration: a line of known length (isotropic pixels).
    Refused when too short to click accurately, or when the scale it gives
    is no image's (a slip of the mouse or of the keyboard)."""
    pixels = math.dist(p1, p2)
    if not (math.isfinite(pixels) and known_mm > 0 and math.isfinite(known_mm)):
        raise ValueError("calibration: the line has no length")
    if pixels < MIN_CALIBRATION_PX:
        raise ValueError(TOO_SHORT)
    scale = known_mm / pixels
    if not SCALE[0] <= scale <= SCALE[1]:
        raise ValueError(IMPLAUSIBLE)
    return Calibration(scale, scale, what)


def number(value: Any, low: float, high: float, what: str) -> float:
    """A finite number within bounds (JSON booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what}: a number")
    try:
        result = float(value)
    except (ValueError, OverflowError):  # "x", or an integer of 400 digits
        raise ValueError(f"{what}: a number") from None  # the value is not quoted
    if not (math.isfinite(result) and low <= result <= high):
        raise ValueError(f"{what}: from {low:g} to {high:g}")
    return result


def point(value: Any) -> Point:
    """An [x, y] pair of image coordinates."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("points: [x, y] pairs")
    x, y = value
    for name, given in (("x", x), ("y", y)):
        if isinstance(given, str):
            raise ValueError(f"{name}: a number")  # a number, not text that parses as one
    return number(x, -COORDINATE, COORDINATE, "x"), number(y, -COORDINATE, COORDINATE, "y")


def whole(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what}: a whole number from {low} to {high}")
    return value


@dataclass(frozen=True)
class Scope:
    """Where a user calibration applies: the series of the image it was drawn
    on, or only that image's frame."""

    kind: str  # "series" or "frame"
    uid: str  # the instance it was drawn on
    frame: int  # the frame it was drawn on (0-based)
    series: str | None = None  # the series, for kind "series"


@dataclass(frozen=True)
class UserCalibration:
    """A line the user drew over a catheter of known French size or over a
    known length; ``id`` names it in every measurement that used it."""

    id: int
    points: tuple[Point, Point]
    scope: Scope
    french: float | None = None
    mm: float | None = None  # the known length, when not a catheter

    @property
    def known_mm(self) -> float:
        return french_mm(self.french) if self.french is not None else float(self.mm or 0)

    @property
    def label(self) -> str:
        what = (
            f"catheter {self.french:g}F"
            if self.french is not None
            else f"known length {self.mm:g} mm"
        )
        return f"{what} (calibration {self.id})"

    def calibration(self) -> Calibration:
        return manual(*self.points, self.known_mm, self.label)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["points"] = [list(p) for p in self.points]
        return {k: v for k, v in out.items() if v is not None}


def parse_user(given: Any) -> UserCalibration:
    """A user calibration object from JSON, checked (ValueError says what is
    wrong, never quoting a value)."""
    if not isinstance(given, dict):
        raise ValueError("calibration: an object with id, points, french or mm, scope")
    ident = whole(given.get("id"), 1, MAX_ID, "calibration id")
    points = given.get("points")
    if not isinstance(points, list) or len(points) != 2:
        raise ValueError("calibration points: two [x, y] pairs")
    p1, p2 = point(points[0]), point(points[1])
    if ("french" in given) == ("mm" in given):
        raise ValueError("calibration: either french (a catheter) or mm (a known length)")
    french = number(given["french"], *FRENCH, "french") if "french" in given else None
    mm = number(given["mm"], *KNOWN_MM, "mm") if "mm" in given else None
    scope = given.get("scope")
    if not isinstance(scope, dict) or scope.get("kind") not in SCOPES:
        raise ValueError("calibration scope: kind series or frame, uid, frame")
    if not is_valid_uid(scope.get("uid")):
        raise ValueError("calibration scope: uid is not a UID")
    series = scope.get("series")
    if scope["kind"] == "series" and not is_valid_uid(series):
        raise ValueError("calibration scope: series is not a UID")
    found = Scope(
        scope["kind"],
        scope["uid"],
        whole(scope.get("frame", 0), 0, 100_000, "calibration frame"),
        series if scope["kind"] == "series" else None,
    )
    user = UserCalibration(ident, (p1, p2), found, french, mm)
    user.calibration()  # its ValueError says why the line cannot calibrate
    return user


def geometry(ds: Dataset) -> tuple[Any, ...]:
    """What an image's scale depends on: its size, its spacings, its
    magnification and distances, its ultrasound regions. Two images with
    equal geometry share a calibration; one drawn on a run at another
    spacing or magnification would misstate every length."""

    def numbers(value: Any) -> tuple[Any, ...] | None:
        if value is None or value == "":
            return None
        values = value if isinstance(value, MultiValue | list | tuple) else [value]
        try:
            return tuple(round(float(v), 6) for v in values)
        except (TypeError, ValueError):
            return tuple(str(v) for v in values)

    regions = tuple(
        tuple(numbers(region.get(k)) for k in REGION_KEYWORDS)
        for region in ds.get("SequenceOfUltrasoundRegions") or []
    )
    return (*(numbers(ds.get(k)) for k in GEOMETRY_KEYWORDS), regions)


GEOMETRY_KEYWORDS = (
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "EstimatedRadiographicMagnificationFactor",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
)
REGION_KEYWORDS = (
    "RegionLocationMinX0",
    "RegionLocationMinY0",
    "RegionLocationMaxX1",
    "RegionLocationMaxY1",
    "PhysicalUnitsXDirection",
    "PhysicalUnitsYDirection",
    "PhysicalDeltaX",
    "PhysicalDeltaY",
)


def degenerate(kind: str, points: list[Point]) -> str | None:
    """Why a measurement through ``points`` measures nothing (a double
    click, a vertex on an arm's end, a flat ellipse), else None."""
    if kind == "length" and math.dist(*points) < MIN_PX:
        return "length: the two ends are less than one image pixel apart"
    if kind == "angle" and min(math.dist(points[0], p) for p in points[1:]) < MIN_PX:
        return "angle: an arm is shorter than one image pixel (the vertex is on its end)"
    if kind == "ellipse":
        (cx, cy), (x, y) = points
        if 2 * min(abs(x - cx), abs(y - cy)) < MIN_PX:
            return "ellipse: less than one image pixel wide or high"
    return None


def for_image(ds: Dataset, *points: Point, user: Calibration | None = None) -> Calibration | str:
    """The calibration a measurement on ``ds`` uses: the user's if given,
    else what the modality's attributes provide."""
    if user is not None:
        return user
    if str(ds.get("Modality", "")).upper() == "US" or "SequenceOfUltrasoundRegions" in ds:
        return ultrasound(ds, *points)
    return xray(ds)


def length(ds: Dataset, p1: Point, p2: Point, user: Calibration | None = None) -> Length:
    calibration = for_image(ds, p1, p2, user=user)
    if isinstance(calibration, str):
        return Length(math.dist(p1, p2), "px", calibration)
    dx = (p2[0] - p1[0]) * calibration.mm_per_px_x
    dy = (p2[1] - p1[1]) * calibration.mm_per_px_y
    return Length(math.hypot(dx, dy), "mm", calibration.source)


def angle_degrees(
    vertex: Point, a: Point, b: Point, calibration: Calibration | None = None
) -> float:
    """The angle at ``vertex`` (in physical space when pixels are not square)."""
    sx = calibration.mm_per_px_x if calibration else 1.0
    sy = calibration.mm_per_px_y if calibration else 1.0
    ax, ay = (a[0] - vertex[0]) * sx, (a[1] - vertex[1]) * sy
    bx, by = (b[0] - vertex[0]) * sx, (b[1] - vertex[1]) * sy
    return math.degrees(abs(math.atan2(ax * by - ay * bx, ax * bx + ay * by)))


def ellipse_area(
    ds: Dataset,
    centre: Point,
    semi_x_px: float,
    semi_y_px: float,
    user: Calibration | None = None,
) -> Length:
    """Area of an axis-aligned ellipse, in mm² when calibrated."""
    cx, cy = centre
    corners = ((cx - semi_x_px, cy - semi_y_px), (cx + semi_x_px, cy + semi_y_px))
    calibration = for_image(ds, *corners, user=user)
    if isinstance(calibration, str):
        return Length(math.pi * semi_x_px * semi_y_px, "px²", calibration)
    area = math.pi * semi_x_px * calibration.mm_per_px_x * semi_y_px * calibration.mm_per_px_y
    return Length(area, "mm²", calibration.source)
