"""Measuring API: lengths, angles and areas, calibrated when the image or
the user's calibration allows, each with the source of its scale.

The browser picks the user calibration that applies (by its scope) and sends
it with the points; the server checks that the scope really covers the
measured image (same series through the index and the same geometry as the
image it was drawn on, or the same instance and frame) and refuses it
otherwise, so a calibration can never rescale an image it was not drawn for:
a run of the series at another spacing or magnification needs its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from io import BytesIO
from typing import Any

from flask import Blueprint, abort, jsonify, request
from pydicom import dcmread
from pydicom.dataset import Dataset

from storage.keys import Level
from storage.query import Query
from viewer import services
from viewer.frames import shown_grey
from viewer.planning import calibration as cal
from viewer.planning import doppler, shapes
from viewer.planning.envelope import suggest
from viewer.planning.vessel import NoEdges, narrowest, profile, snapped

bp = Blueprint("measure", __name__, url_prefix="/api")
MAX_CALIBRATIONS = 20  # per plan: a few catheters and known lengths
MAX_MEASUREMENTS = 200
# Points each kind takes; 0: an outline, as many as traced (3 to shapes.MOST_OUTLINE).
NEEDED = {"length": 2, "angle": 3, "ellipse": 2, "bidirectional": 4, "area": 0}
# Read through the ultrasound region under the points (`doppler`): no user
# calibration applies. A trace takes any number of points, three at least.
REGION_KINDS = {"velocity": 1, "interval": 2, "m-mode": 2, "vti": 0}
# What a plan keeps and its SR codes (`report`).
SAVED_KINDS = frozenset(NEEDED) | frozenset(REGION_KINDS)
SAVED_FIELDS = ("uid", "frame", "kind", "points", "value", "unit", "source", "calibration_id")
# The cardiac phase of the measured frame, as the cardiologist tagged it.
PHASES = (None, "ED", "ES")


def header(uid: str) -> Dataset:
    data = services.archive().read(uid)
    if data is None:
        abort(404, description="no such instance")
    return dcmread(BytesIO(data), stop_before_pixels=True)


def _points(body: dict, count: int, ds: Dataset) -> list[cal.Point]:
    given = body.get("points")
    try:
        if not isinstance(given, list):
            raise ValueError
        points = [cal.point(p) for p in given]
    except (TypeError, ValueError):
        abort(400, description="points: a list of [x, y] pairs")
    if len(points) != count:
        abort(400, description=f"this measurement needs {count} points")
    columns, rows = int(ds.get("Columns") or 0), int(ds.get("Rows") or 0)
    if not all(0 <= x <= columns and 0 <= y <= rows for x, y in points):
        abort(400, description="the points lie outside the image")
    return points


def _frame(body: dict, ds: Dataset) -> int:
    """The measured frame (0-based); 0 when not given (a single image)."""
    frames = int(ds.get("NumberOfFrames") or 1)
    try:
        return cal.whole(body.get("frame", 0), 0, frames - 1, "frame")
    except ValueError as exc:
        abort(400, description=str(exc))


def json_body() -> Any:
    """The request's JSON, or None when it is not JSON: malformed, or nested
    deeper than the parser recurses (a RecursionError, not a ValueError,
    which ``silent`` does not catch)."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None


def geometry_key(ds: Dataset) -> str:
    """A short fingerprint of the image's geometry, for the page to tell
    which images a series calibration applies to."""
    text = json.dumps(cal.geometry(ds), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _series_of(uid: str) -> str | None:
    query = Query(Level.IMAGE, {"SOPInstanceUID": uid, "SeriesInstanceUID": ""}, limit=1)
    rows = list(services.archive().index.find(query))
    return str(rows[0]["SeriesInstanceUID"]) if rows else None


def applied_calibration(
    given: Any, uid: str, ds: Dataset, frame: int
) -> cal.UserCalibration | None:
    """The user calibration sent with a measurement, if its scope covers this
    instance and frame; 400 when it does not (or is malformed)."""
    if not given:
        return None
    try:
        user = cal.parse_user(given)
    except ValueError as exc:
        abort(400, description=str(exc))
    if not cal.square_pixels(ds):
        abort(400, description=NOT_SQUARE)
    scope = user.scope
    if scope.kind == "frame":
        if scope.uid != uid or scope.frame != frame:
            abort(
                400,
                description="calibration: drawn on another image or frame; it does not apply here",
            )
        return user
    series = str(ds.get("SeriesInstanceUID", ""))
    if scope.series != series or _series_of(scope.uid) != series:
        abort(400, description="calibration: drawn on another series; it does not apply here")
    if scope.uid != uid and cal.geometry(header(scope.uid)) != cal.geometry(ds):
        abort(400, description=OTHER_GEOMETRY)
    return user


NOT_SQUARE = (
    "calibration: this image's pixels are not square, so a line cannot give one scale "
    "for both directions: its own scale applies"
)
OTHER_GEOMETRY = (
    "calibration: drawn on a run of another geometry (size, pixel spacing or magnification); "
    "it does not apply here: calibrate on this run"
)


@bp.get("/instances/<uid>/geometry")
def geometry(uid: str) -> Any:
    """The image's geometry fingerprint: a series calibration is offered on
    the images whose fingerprint equals that of the one it was drawn on."""
    return jsonify(geometry=geometry_key(header(uid)))


@bp.post("/instances/<uid>/measure")
def measure(uid: str) -> Any:
    """Length, angle, ellipse or traced area, long and short axis, calibrated
    when the image allows; on a
    spectral Doppler or M-mode region, what that region measures."""
    body = json_body()
    if not isinstance(body, dict):
        abort(400, description="a JSON object: kind, points, frame, calibration")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in SAVED_KINDS:
        abort(
            400,
            description="kind: length, angle, ellipse, area, bidirectional, velocity, "
            "interval, m-mode or vti",
        )
    ds = header(uid)
    if "Rows" not in ds:
        abort(400, description="this instance has no image to measure")
    frame = _frame(body, ds)
    if kind in REGION_KINDS:
        points = _points(body, point_count(kind, body.get("points")), ds)
        return jsonify(**compute(ds, kind, points, None), calibration_id=None)
    points = _points(body, point_count(kind, body.get("points")), ds)
    applied = applied_calibration(body.get("calibration"), uid, ds, frame)
    used = applied.id if applied and kind != "angle" else None  # an angle needs no scale
    return jsonify(**compute(ds, kind, points, applied), calibration_id=used)


@bp.post("/instances/<uid>/envelope")
def envelope(uid: str) -> Any:
    """A suggested envelope between two clicks (the start and end of a beat)
    on a spectral Doppler region, with the VTI its points give: the browser
    shows it for the user to correct, and measures what they keep."""
    _, ds, frame, (start, end) = _line(uid)
    kind = "vti"  # what the suggestion is for, as a refusal names it
    try:
        region = doppler.region(ds, [start, end], "spectral")
        trace = suggest(shown_grey(uid, frame), region, start, end)
        found = doppler.vti(ds, trace)
    except doppler.NotMeasurable as exc:
        abort(400, description=f"{kind}: {exc}")
    return jsonify(**found, points=[list(p) for p in trace], calibration_id=None)


@bp.post("/instances/<uid>/edges")
def edges(uid: str) -> Any:
    """The edges of the catheter (or vessel) a line was drawn across, on
    the line at right angles to it: what a calibration line snaps to."""
    _, _, frame, (a, b) = _line(uid)
    try:
        found = snapped(shown_grey(uid, frame), a, b)
    except NoEdges as exc:
        abort(400, description=str(exc))
    return jsonify(points=[list(p) for p in found])


@bp.post("/instances/<uid>/profile")
def vessel_profile(uid: str) -> Any:
    """A vessel's diameter along a line drawn down it, every pixel, each
    measured as a length between its edges (the calibration sent, else the
    image's scale), and the narrowest."""
    body, ds, frame, (a, b) = _line(uid)
    applied = applied_calibration(body.get("calibration"), uid, ds, frame)
    try:
        stations = profile(shown_grey(uid, frame), a, b)
    except NoEdges as exc:
        abort(400, description=str(exc))
    measured = []
    for station in stations:
        found = compute(ds, "length", list(station.edges), applied)
        measured.append(
            {
                "along_px": round(station.along_px, 2),
                **found,
                "points": [list(p) for p in station.edges],
            }
        )
    least = stations.index(narrowest(stations))
    return jsonify(
        stations=measured,
        narrowest=measured[least],
        calibration_id=applied.id if applied else None,
    )


def _line(uid: str) -> tuple[dict[str, Any], Dataset, int, list[cal.Point]]:
    """The body, image, frame and two points of a line request."""
    body = json_body()
    if not isinstance(body, dict):
        abort(400, description="a JSON object: points, frame")
    ds = header(uid)
    if "Rows" not in ds:
        abort(400, description="this instance has no image to measure")
    return body, ds, _frame(body, ds), _points(body, 2, ds)


def point_count(kind: str, given: Any) -> int:
    """How many points a ``kind`` takes: a trace or an outline as many as it
    has (3 to `doppler.MOST_TRACE` or `shapes.MOST_OUTLINE`, else 400), the
    others their fixed number."""
    count = NEEDED.get(kind) or REGION_KINDS.get(kind)
    if count:
        return count
    most = doppler.MOST_TRACE if kind == "vti" else shapes.MOST_OUTLINE
    if not isinstance(given, list) or not 3 <= len(given) <= most:
        if kind == "vti":
            abort(400, description=f"vti: a trace of 3 to {most} points")
        abort(400, description=f"area: an outline of 3 to {most} points")
    return len(given)


def _in_region(ds: Dataset, kind: str, points: list[cal.Point]) -> dict[str, Any]:
    """A Doppler or M-mode measurement, read through its region (400 with
    the reason when the points are in no region that measures it)."""
    try:
        if kind == "velocity":
            return doppler.velocity(ds, points[0])
        if kind == "interval":
            return doppler.interval(ds, *points)
        if kind == "m-mode":
            return doppler.m_mode(ds, *points)
        return doppler.vti(ds, points)
    except doppler.NotMeasurable as exc:
        abort(400, description=f"{kind}: {exc}")


def compute(
    ds: Dataset, kind: str, points: list[cal.Point], applied: cal.UserCalibration | None
) -> dict[str, Any]:
    """Value, unit and scale source of a ``kind`` measurement through
    ``points`` on the image ``ds``, with the user calibration ``applied``
    (its scope already checked). The measure endpoint and a saved plan both
    use it, so a plan can only state what the endpoint would have measured.
    A Doppler or M-mode kind is read through its ultrasound region, never a
    user calibration."""
    if kind in REGION_KINDS:
        return _in_region(ds, kind, points)
    if reason := (shapes.outline_fault(points) if kind == "area" else cal.degenerate(kind, points)):
        abort(400, description=reason)
    user = applied.calibration() if applied else None
    if kind == "area":
        return asdict(shapes.area(ds, points, user=user))
    if kind == "bidirectional":
        try:
            return shapes.axes(ds, points, user=user)
        except ValueError as exc:
            abort(400, description=str(exc))
    if kind == "angle":
        vertex, a, b = points
        scale = cal.for_image(ds, vertex, a, b, user=user)
        used = scale if isinstance(scale, cal.Calibration) else None
        return {"value": cal.angle_degrees(vertex, a, b, used), "unit": "°", "source": "angle"}
    (x1, y1), (x2, y2) = points  # the ends, or an ellipse's centre and a corner of its box
    if kind == "length":
        return asdict(cal.length(ds, (x1, y1), (x2, y2), user=user))
    return asdict(cal.ellipse_area(ds, (x1, y1), abs(x2 - x1), abs(y2 - y1), user=user))


def saved_measurements(
    given: Any, calibrations: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The drawn measurements a plan keeps, each naming the calibration it
    used (``calibration_id``, or None); with ``calibrations``, that id must
    be one of them."""
    known = {c["id"] for c in calibrations} if calibrations is not None else None
    kept = []
    for item in (given or [])[:MAX_MEASUREMENTS] if isinstance(given, list) else []:
        if isinstance(item, dict) and (
            not isinstance(item.get("kind"), str) or item["kind"] not in SAVED_KINDS
        ):
            abort(
                400,
                description="measurements: kind: length, angle, ellipse, area, "
                "bidirectional, velocity, interval, m-mode or vti",
            )
        try:
            used = item.get("calibration_id")
            if used is not None:
                used = cal.whole(used, 1, cal.MAX_ID, "calibration_id")
            kept.append(
                {
                    "uid": str(item["uid"]),
                    "frame": cal.whole(item["frame"], 0, 100_000, "frame"),
                    "kind": str(item["kind"]),
                    "points": [list(cal.point(p)) for p in item["points"][: doppler.MOST_TRACE]],
                    "value": cal.number(item["value"], -1e9, 1e9, "value"),
                    "unit": str(item["unit"])[:8],
                    "source": str(item["source"])[:200],
                    "calibration_id": used,
                    "phase": _phase(item.get("phase")),
                    # Free text, checked for identity with the note (`routes`).
                    "label": item.get("label"),
                    # What it measures, for a z-score (`zscores`); checked in `routes`.
                    "structure": item.get("structure"),
                }
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            abort(400, description=f"measurements: {', '.join(SAVED_FIELDS)}")
        if known is not None and used is not None and used not in known:
            abort(400, description="measurements: a calibration_id names no saved calibration")
    return kept


def _phase(given: Any) -> str | None:
    if given not in PHASES:
        abort(400, description="measurements: phase is ED, ES or null")
    return str(given) if given else None


def saved_calibrations(body: dict) -> list[dict[str, Any]]:
    """The user's calibrations a plan keeps, validated like those a
    measurement uses (each measurement names the one it used by
    ``calibration_id``); 400 rather than a plan silently missing one."""
    given = body.get("calibrations")
    if given is None:
        return []
    if not isinstance(given, list) or len(given) > MAX_CALIBRATIONS:
        abort(400, description=f"calibrations: a list of at most {MAX_CALIBRATIONS}")
    try:
        kept = [cal.parse_user(c) for c in given]
    except ValueError as exc:
        abort(400, description=str(exc))
    if len({c.id for c in kept}) != len(kept):
        abort(400, description="calibrations: each id once")
    return [c.as_dict() for c in kept]
