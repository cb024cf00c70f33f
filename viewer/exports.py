"""Research export in the web app: preview, a background job, download.

Jobs live in this process (a restart forgets unfinished ones; the CLI is the
tool for long unattended exports). Finished packages are kept under
``data_dir/exports`` and only their owner or an admin may download them.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, g, jsonify, render_template, request, send_file

from dicomnode.export import Cohort, EmptyCohort, ExportBlocked, ExportCancelled, export, preview
from viewer.auth import role_required

bp = Blueprint("exports", __name__)
RESEARCH_ROLES = ("researcher", "admin")


@dataclass
class Job:
    id: str
    owner: str
    cohort: dict[str, Any]
    state: str = "running"  # running, done, failed, cancelled, expired
    done: int = 0
    total: int = 0
    message: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def public(self) -> dict[str, Any]:
        names = ("id", "owner", "cohort", "state", "done", "total", "message")
        out: dict[str, Any] = {name: getattr(self, name) for name in names}
        out["percent"] = round(100 * self.done / self.total) if self.total else 0
        return out


_jobs: dict[str, Job] = {}


def _cohort(values: Any) -> Cohort:
    def number(name: str) -> float | None:
        text = (values.get(name) or "").strip()
        try:
            return float(text) if text else None
        except ValueError:
            abort(400, description=f"{name}: not a number of years")

    text = {
        name: (values.get(name) or "").strip()
        for name in ("modality", "hospital", "sex", "date_from", "date_to", "defect", "device")
    }
    for name in ("date_from", "date_to"):
        if text[name] and not (len(text[name]) == 8 and text[name].isdigit()):
            abort(400, description=f"{name}: a date as YYYYMMDD")
    return Cohort(**text, age_from=number("age_from"), age_to=number("age_to"))


def _folder() -> Path:
    """Where packages are kept; ones older than ``export_keep_hours`` are
    deleted on the way (a package is not meant to live on the node)."""
    config = current_app.config["NODE_CONFIG"]
    folder = config.data_dir / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    oldest = time.time() - config.export_keep_hours * 3600
    for package in folder.glob("*.zip"):
        if package.stat().st_mtime < oldest:
            package.unlink(missing_ok=True)
    return folder


@bp.get("/exports")
@role_required(*RESEARCH_ROLES)
def page() -> Any:
    mine = [j.public() for j in _jobs.values() if j.owner == g.user.username]
    return render_template("exports.html", user=g.user, jobs=mine)


@bp.get("/api/exports/preview")
@role_required(*RESEARCH_ROLES)
def show_preview() -> Any:
    counts = preview(current_app.extensions["archive"], _cohort(request.args))
    return jsonify(asdict(counts))


@bp.post("/api/exports")
@role_required(*RESEARCH_ROLES)
def start() -> Any:
    values = request.get_json(silent=True) or request.form
    cohort = _cohort(values)
    linkable = bool(values.get("linkable"))
    if linkable and g.user.role != "admin":
        abort(403, description="only an admin may make an export linkable to others")
    job = Job(secrets.token_hex(8), g.user.username, asdict(cohort))
    _jobs[job.id] = job
    config, archive = current_app.config["NODE_CONFIG"], current_app.extensions["archive"]
    target = _folder() / f"{job.id}.zip"

    def run() -> None:
        def step(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            export(
                config,
                archive,
                cohort,
                target,
                progress=False,
                actor=job.owner,
                on_instance=step,
                cancel=job.cancel,
                linkable=linkable,
            )
            job.state = "done"
        except ExportCancelled as exc:
            job.state, job.message = "cancelled", str(exc)
        except (EmptyCohort, ExportBlocked) as exc:
            job.state, job.message = "failed", str(exc)
        except Exception as exc:  # the message must not carry data values
            job.state, job.message = "failed", "the export failed; see the node's log"
            current_app.logger.error("export %s failed: %s", job.id, type(exc).__name__)
        finally:
            job.finished.set()

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    threading.Thread(target=lambda: _in_context(app, run), daemon=True).start()
    return jsonify(job.public()), 202


def _in_context(app: Any, run: Any) -> None:
    with app.app_context():
        run()


def _job(job_id: str) -> Job:
    job = _jobs.get(job_id)
    if job is None or (job.owner != g.user.username and g.user.role != "admin"):
        abort(404, description="no such export")
    return job


@bp.get("/api/exports/<job_id>")
@role_required(*RESEARCH_ROLES)
def status(job_id: str) -> Any:
    return jsonify(_job(job_id).public())


@bp.post("/api/exports/<job_id>/cancel")
@role_required(*RESEARCH_ROLES)
def cancel(job_id: str) -> Any:
    job = _job(job_id)
    job.cancel.set()
    return jsonify(job.public())


@bp.get("/api/exports/<job_id>/download")
@role_required(*RESEARCH_ROLES)
def download(job_id: str) -> Any:
    job = _job(job_id)
    if job.state != "done":
        abort(409, description=f"the export is {job.state}, not ready")
    package = _folder() / f"{job.id}.zip"
    if not package.exists():
        job.state = "expired"
        abort(410, description="the export has expired; run it again")
    return send_file(
        package,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"chd-cohort-{job.id}.zip",
    )
