"""Planning API: sizing proposals, saved plans + SR."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import Blueprint, abort, current_app, g, jsonify, request

from storage.keys import Level
from storage.query import Query
from viewer.auth import audit
from viewer.planning import sizing
from viewer.planning.measure import header, saved_measurements, user_calibration
from viewer.planning.report import measurement_report, observer_name
from viewer.planning.worksheet import WORKSHEET, Slot, UnknownSlot, rim_slot, worksheet_slot

bp = Blueprint("planning", __name__, url_prefix="/api")
DEFECTS = frozenset(WORKSHEET)


def _archive() -> Any:
    return current_app.extensions["archive"]


def _krichenko(defect: str, value: Any) -> str | None:
    """Krichenko angiographic type of a duct (A-E), PDA only."""
    if defect != "PDA" or not value:
        return None
    if value not in ("A", "B", "C", "D", "E"):
        abort(400, description="krichenko: one of A, B, C, D, E")
    return value


def _slots(defect: str, body: dict) -> tuple[list[Slot], dict[str, float]]:
    """The worksheet values sent, each taking its meaning from the server's
    catalogue (what the browser sends as a meaning is ignored). An unknown
    slot or rim is refused with 400 rather than left out: a plan saved
    without a value the cardiologist entered (and a device proposed without
    it) would differ from what they saw, and the page never sends one."""
    try:
        slots = [
            worksheet_slot(
                defect,
                str(s["code"]),
                float(s["value_mm"]),
                s.get("instance_uid"),
                s.get("frame"),
            )
            for s in body.get("slots", [])
        ]
        rims = {str(k): float(v) for k, v in (body.get("rims") or {}).items()}
        for name, value in rims.items():
            rim_slot(name, value)
    except UnknownSlot as exc:
        abort(400, description=f"slots: {exc}")
    except (KeyError, TypeError, ValueError, AttributeError):
        abort(400, description="slots: a list of {code, value_mm[, instance_uid, frame]}")
    return slots, rims


@bp.get("/studies/<uid>/plans")
def plans(uid: str) -> Any:
    return jsonify(_archive().index.plans.versions(uid))


@bp.post("/studies/<uid>/plans")
def save_plan(uid: str) -> Any:
    """Save a new version and write it as an SR series of the study."""
    body = request.get_json(silent=True) or {}
    defect = body.get("defect")
    if defect not in DEFECTS:
        abort(400, description=f"defect: one of {', '.join(sorted(DEFECTS))}")
    slots, rims = _slots(defect, body)
    archive = _archive()
    images = list(
        archive.index.find(
            Query(
                Level.IMAGE,
                {
                    "StudyInstanceUID": uid,
                    "SOPInstanceUID": "",
                    "Modality": "",
                    "IssuerOfPatientID": "",
                },
            )
        )
    )
    if not images:
        abort(404, description="no such study")
    measured = {s.instance_uid for s in slots if s.instance_uid}
    chosen = [i for i in images if i["SOPInstanceUID"] in measured]
    # An SR needs evidence: the measured images, else the study's first image.
    chosen = chosen or [i for i in images if i["Modality"] != "SR"][:1] or images[:1]
    evidence = [header(i["SOPInstanceUID"]) for i in chosen]
    rim_slots = [rim_slot(name, value) for name, value in rims.items()]
    # Named by role: who saved it is in the plan row and the audit trail.
    observer = observer_name(g.user.role)
    sr = measurement_report(evidence, slots + rim_slots, defect=defect, observer=observer)
    stored = current_app.extensions["ingestor"].ingest_own(sr, images[0]["IssuerOfPatientID"])
    if stored.status != 0:
        abort(500, description=f"the report could not be stored ({stored.comment})")
    suggestion = sizing.propose(defect, {s.code: s.value_mm for s in slots}, rims)
    content = {
        "slots": [asdict(s) for s in slots],
        "rims": rims,
        "deficient_rims": sizing.deficient_rims(rims),
        "note": str(body.get("note", ""))[:4000],
        "krichenko": _krichenko(defect, body.get("krichenko")),
        # The user's catheter calibration travels with the plan it was used in.
        "calibration": body.get("calibration") if user_calibration(body) else None,
        # The drawn lines, so reopening the study shows them on their frames again.
        "measurements": saved_measurements(body.get("measurements")),
        "proposal": asdict(suggestion) if suggestion else None,
    }
    version = archive.index.plans.add(uid, defect, content, g.user.username, str(sr.SOPInstanceUID))
    audit("plan-save", g.user.username, obj=uid, detail=f"{defect} version {version}")
    return jsonify(version=version, sr_uid=str(sr.SOPInstanceUID), **content), 201
