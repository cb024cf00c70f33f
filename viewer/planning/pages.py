"""The printable one-page summary of a study's latest plan."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, g, render_template

from storage.keys import Level
from storage.query import Query
from viewer.studies import STUDY_KEYS

bp = Blueprint("planning_pages", __name__)


@bp.get("/studies/<uid>/plan/print")
def print_plan(uid: str) -> Any:
    index = current_app.extensions["archive"].index
    versions = index.plans.versions(uid)
    if not versions:
        abort(404, description="no plan saved for this study")
    keys = dict.fromkeys(STUDY_KEYS, "")
    (study,) = list(index.find(Query(Level.STUDY, {**keys, "StudyInstanceUID": uid}))) or [None]
    plan = versions[-1]
    frames = {
        (s["instance_uid"], s["frame"])
        for s in plan["content"]["slots"]
        if s.get("instance_uid") and s.get("frame")
    }
    return render_template(
        "plan_print.html", plan=plan, study=study, key_frames=sorted(frames), user=g.user
    )
