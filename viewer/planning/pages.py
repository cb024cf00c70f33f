"""The printable summary of a study's plans: every plan's latest version (or
one version asked for), standing on its own: measurements with their scale
source and calibration, the worksheet, the Krichenko type, the note, the
sizing aid with its rules, sources and warnings, the signature, and the key
images with their calipers drawn over them.

Also the template helpers the plan pages share: the worksheet forms for the
page to draw, and the SR series' label in the user's language.
"""

from __future__ import annotations

import re
from io import BytesIO
from typing import Any

from flask import Blueprint, abort, g, render_template, request
from pydicom import dcmread

from storage.keys import Level
from storage.query import Query
from viewer import services
from viewer.i18n import gettext
from viewer.planning import defects, worksheet
from viewer.planning.report import calibration_facts
from viewer.studies import STUDY_KEYS, thumbnails

bp = Blueprint("planning_pages", __name__)
LABEL = re.compile(r"^Closure plan \((?P<defect>[^)]+)\)(?P<rest>.*)$")


@bp.app_template_global()
def plan_forms() -> dict[str, Any]:
    """Every defect's form (fields, choices, rims), for the page to draw."""
    return worksheet.as_json()


@bp.app_template_global()
def plan_defect(name: str) -> defects.Defect | None:
    """A defect's catalogue entry (its fields, rims and choices), for the
    print page to label a plan's values; None for a defect it no longer has."""
    return defects.table().defect(name)


@bp.app_template_filter()
def report_label(description: str | None) -> str:
    """An SR series' description as the study page shows it: the node's own
    plan reports ("Closure plan (PDA) #2") in the user's language, anything
    else as sent."""
    found = LABEL.match(description or "")
    if not found:
        return description or ""
    label = gettext("Closure plan ({defect})", defect=gettext(found["defect"]))
    return label + found["rest"]


def _key_images(content: dict[str, Any]) -> list[dict[str, Any]]:
    """Each measured frame once, with the shapes drawn on it (image pixel
    coordinates: the print page draws them in an SVG of the image's size)."""
    frames: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for n, m in enumerate(content.get("measurements") or [], 1):
        shape = {"kind": m["kind"], "points": m["points"], "label": str(n)}
        frames.setdefault((m["uid"], int(m["frame"])), []).append(shape)
    for c in content.get("calibrations") or []:
        scope = c.get("scope") or {}
        if scope.get("uid"):
            shape = {"kind": "calibration", "points": c["points"], "label": f"C{c['id']}"}
            frames.setdefault((scope["uid"], int(scope.get("frame", 0))), []).append(shape)
    for s in content.get("slots") or []:  # typed in against an image (older plans)
        if s.get("instance_uid") and s.get("measurement") is None:
            frames.setdefault((s["instance_uid"], int(s.get("frame") or 1) - 1), [])
    archive = services.archive()
    sizes: dict[str, tuple[int, int] | None] = {}  # each image's header read once, not per frame
    images = []
    for (uid, frame), shapes in frames.items():
        if uid not in sizes:
            data = archive.read(uid)
            ds = dcmread(BytesIO(data), stop_before_pixels=True) if data is not None else None
            sizes[uid] = (int(ds.get("Columns") or 0), int(ds.get("Rows") or 0)) if ds else None
        if sizes[uid] is None:
            continue
        width, height = sizes[uid]  # type: ignore[misc]
        if width and height:
            images.append(
                {"uid": uid, "frame": frame + 1, "width": width, "height": height, "shapes": shapes}
            )
    return images


def image_labels(index: Any, study_uid: str) -> dict[str, dict[str, Any]]:
    """What tells a study's images apart on paper, by instance: modality,
    series description (as stored, de-identified), series number, and the
    run within its series as the study page counts them ("run 2 of 4"), or
    the instance number of a single-frame image."""
    keys = (
        *("SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber", "NumberOfFrames"),
        *("Modality", "SeriesDescription", "SeriesNumber"),
    )
    query = {**dict.fromkeys(keys, ""), "StudyInstanceUID": study_uid}
    rows = {r["SOPInstanceUID"]: r for r in index.find(Query(Level.IMAGE, query))}
    labels: dict[str, dict[str, Any]] = {}
    for entry in thumbnails(list(rows.values())):
        for uid in entry["instances"]:
            row = rows[uid]
            labels[uid] = {
                "modality": row.get("Modality") or "",
                "description": row.get("SeriesDescription") or "",
                "series": row.get("SeriesNumber"),
                "run": entry["run"],
                "runs": entry["runs"],
                "instance": row.get("InstanceNumber"),
            }
    return labels


def _shown(row: dict[str, Any], versions: list[dict[str, Any]]) -> dict[str, Any]:
    content = row["content"]
    calibrations = {c["id"]: c for c in content.get("calibrations") or [] if "id" in c}
    legacy = content.get("calibration")
    return {
        **row,
        "versions": [v for v in versions if v["plan"] == row["plan"]],
        "key_images": _key_images(content),
        "calibrations": {k: calibration_facts(c) for k, c in calibrations.items()},
        "legacy_calibration": calibration_facts(legacy) if legacy else None,
    }


def _whole(name: str) -> int | None:
    given = request.args.get(name)
    if given is None:
        return None
    if not given.isdigit() or not 1 <= int(given) <= 1_000_000:
        abort(400, description="plan and version: whole numbers from 1")
    return int(given)


@bp.get("/studies/<uid>/plan/print")
def print_plan(uid: str) -> Any:
    """Every plan's latest version; ``?plan=N`` one plan, ``&version=V`` one
    of its older versions."""
    index = services.archive().index
    keys = dict.fromkeys(STUDY_KEYS, "")
    found = list(index.find(Query(Level.STUDY, {**keys, "StudyInstanceUID": uid})))
    if not found:
        abort(404, description="no such study")
    study = found[0]
    plan, version = _whole("plan"), _whole("version")
    versions = index.plans.versions(uid)
    if plan is not None:
        mine = [v for v in versions if v["plan"] == plan]
        chosen = [v for v in mine if v["version"] == version] if version else mine[-1:]
    else:
        chosen = index.plans.latest(uid)
    if not chosen:
        abort(404, description="no plan saved for this study")
    shown = [_shown(row, versions) for row in chosen]
    return render_template(
        "plan_print.html",
        plans=shown,
        plan=shown[0],
        study=study,
        images=image_labels(index, uid),
        user=g.user,
    )
