"""Measuring API: lengths, angles and areas, calibrated when the image or
the user's calibration allows, each with the source of its scale."""

from __future__ import annotations

from dataclasses import asdict
from io import BytesIO
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from pydicom import dcmread
from pydicom.dataset import Dataset

from viewer.planning import calibration as cal

bp = Blueprint("measure", __name__, url_prefix="/api")


def header(uid: str) -> Dataset:
    data = current_app.extensions["archive"].read(uid)
    if data is None:
        abort(404, description="no such instance")
    return dcmread(BytesIO(data), stop_before_pixels=True)


def _points(body: dict, count: int) -> list[tuple[float, float]]:
    try:
        points = [(float(x), float(y)) for x, y in body["points"]]
    except (KeyError, TypeError, ValueError):
        abort(400, description="points: a list of [x, y] pairs")
    if len(points) != count:
        abort(400, description=f"this measurement needs {count} points")
    return points


def user_calibration(body: dict) -> cal.Calibration | None:
    given = body.get("calibration")
    if not given:
        return None
    try:
        p1, p2 = (tuple(map(float, p)) for p in given["points"])
        if "french" in given:
            return cal.manual(
                p1,
                p2,
                cal.french_mm(float(given["french"])),
                f"catheter {float(given['french']):g}F",
            )
        return cal.manual(p1, p2, float(given["mm"]), f"known length {float(given['mm']):g} mm")
    except (KeyError, TypeError, ValueError) as exc:
        abort(400, description=f"calibration: {exc}")


@bp.post("/instances/<uid>/measure")
def measure(uid: str) -> Any:
    """Length, angle or ellipse area, calibrated when the image allows."""
    body = request.get_json(silent=True) or {}
    ds, user = header(uid), user_calibration(body)
    kind = body.get("kind")
    if kind == "length":
        result = cal.length(ds, *_points(body, 2), user=user)
        return jsonify(asdict(result))
    if kind == "angle":
        vertex, a, b = _points(body, 3)
        scale = cal.for_image(ds, vertex, a, b, user=user)
        value = cal.angle_degrees(
            vertex, a, b, scale if isinstance(scale, cal.Calibration) else None
        )
        return jsonify(value=value, unit="°", source="angle")
    if kind == "ellipse":
        (cx, cy), (ex, ey) = _points(body, 2)  # centre and a corner of the bounding box
        result = cal.ellipse_area(ds, (cx, cy), abs(ex - cx), abs(ey - cy), user=user)
        return jsonify(asdict(result))
    abort(400, description="kind: length, angle or ellipse")


def saved_measurements(given: Any) -> list[dict[str, Any]]:
    kept = []
    for item in (given or [])[:200] if isinstance(given, list) else []:
        try:
            kept.append(
                {
                    "uid": str(item["uid"]),
                    "frame": int(item["frame"]),
                    "kind": str(item["kind"]),
                    "points": [[float(x), float(y)] for x, y in item["points"]][:3],
                    "value": float(item["value"]),
                    "unit": str(item["unit"])[:8],
                    "source": str(item["source"])[:200],
                }
            )
        except (KeyError, TypeError, ValueError):
            abort(400, description="measurements: uid, frame, kind, points, value, unit, source")
    return kept


def saved_calibrations(body: dict) -> list[dict[str, Any]]:
    """The user's calibrations a plan keeps (validated; each measurement names
    the one it used by ``calibration_id``)."""
    given = body.get("calibrations")
    return [dict(c) for c in given[:50] if isinstance(c, dict)] if isinstance(given, list) else []
