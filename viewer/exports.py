"""Research export in the web app: preview, submit a job, follow it, download.

The web only adds and reads jobs (rows in the index, `storage.exports`): a
node process's runner runs them (`dicomnode.jobs.exports`), so a job
submitted here survives this process, and status and cancel work from any
process. Finished packages are in the node's blob store (a shared folder or
the object store), so any process serves the download, streamed; they are
kept for ``export_keep_hours`` and only their owner or an admin may
download them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import Blueprint, abort, g, jsonify, render_template, request, send_file

from dicomnode.jobs.export import Cohort, preview
from dicomnode.jobs.exports import prune, submit
from viewer import services
from viewer.scope import issuers

bp = Blueprint("exports", __name__)
CHECKBOX = "1"  # what the page's "linkable" checkbox sends when ticked


def public(row: dict[str, Any]) -> dict[str, Any]:
    """What the owner sees of a job (its row in the index)."""
    names = ("id", "owner", "cohort", "linkable", "state", "done", "total", "message")
    out: dict[str, Any] = {name: row[name] for name in names}
    done, total = row["done"], row["total"]
    out["percent"] = 100 if row["state"] == "done" else (round(100 * done / total) if total else 0)
    return out


def _linkable(values: Any) -> bool:
    """Strictly: JSON true or false, or the form's checkbox; absent is false.
    A loose reading would take the string "false" for true, and a linkable
    export carries the standing export key."""
    if "linkable" not in values:
        return False
    value = values.get("linkable")
    if value is True or value is False:
        return value
    if value == CHECKBOX:
        return True
    abort(400, description='linkable: true or false (or the checkbox\'s "1")')


def _cohort(values: Any) -> Cohort:
    def number(name: str) -> float | None:
        text = str(values.get(name) or "").strip()
        try:
            return float(text) if text else None
        except ValueError:
            abort(400, description=f"{name}: not a number of years")

    text = {
        name: str(values.get(name) or "").strip()
        for name in ("modality", "hospital", "sex", "date_from", "date_to", "defect", "device")
    }
    for name in ("date_from", "date_to"):
        if text[name] and not (len(text[name]) == 8 and text[name].isdigit()):
            abort(400, description=f"{name}: a date as YYYYMMDD")
    sees = issuers()  # the account's hospitals: a cohort never reaches past them
    return Cohort(
        **text,
        age_from=number("age_from"),
        age_to=number("age_to"),
        issuers=None if sees is None else sorted(sees),
    )


@bp.get("/exports")
def page() -> Any:
    mine = [public(row) for row in services.archive().index.exports.all(owner=g.user.username)]
    return render_template("exports.html", user=g.user, jobs=mine)


@bp.get("/api/exports/preview")
def show_preview() -> Any:
    counts = preview(services.archive(), _cohort(request.args))
    return jsonify(asdict(counts))


@bp.post("/api/exports")
def start() -> Any:
    values = request.get_json(silent=True) or request.form
    if not hasattr(values, "get"):
        abort(400, description="send the cohort as a JSON object or a form")
    linkable = _linkable(values)
    cohort = _cohort(values)
    if linkable and g.user.role != "admin":
        abort(403, description="only an admin may make an export linkable to others")
    row = submit(services.archive(), g.user.username, cohort, linkable)
    return jsonify(public(row)), 202


def _job(job_id: str) -> dict[str, Any]:
    row = services.archive().index.exports.get(job_id)
    if row is None or (row["owner"] != g.user.username and g.user.role != "admin"):
        abort(404, description="no such export")
    return row


@bp.get("/api/exports/<job_id>")
def status(job_id: str) -> Any:
    return jsonify(public(_job(job_id)))


@bp.post("/api/exports/<job_id>/cancel")
def cancel(job_id: str) -> Any:
    """Queued: cancelled now; running: its runner stops it at its next renewal."""
    jobs = services.archive().index.exports
    jobs.request_cancel(_job(job_id)["id"])
    return jsonify(public(_job(job_id)))


@bp.get("/api/exports/<job_id>/download")
def download(job_id: str) -> Any:
    """Streamed from the blob store. A package gone past its hours answers
    410 (the job expired); a store out of reach 503, the job left done."""
    row = _job(job_id)
    archive = services.archive()
    if row["state"] == "expired":
        abort(410, description="the export has expired; run it again")
    if row["state"] != "done":
        abort(409, description=f"the export is {row['state']}, not ready")
    try:
        prune(archive, services.config().export_keep_hours)
        package, size = archive.blobs.open_package(f"{row['id']}.zip")
    except FileNotFoundError:
        archive.index.exports.expire(row["id"])
        abort(410, description="the export has expired; run it again")
    except OSError:
        abort(503, description="the export's storage is out of reach; try again later")
    answer = send_file(
        package,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"chd-cohort-{row['id']}.zip",
    )
    answer.content_length = size
    return answer
