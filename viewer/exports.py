"""Research export in the web app: preview, a background job, download.

Jobs are rows in the index: one still running when the server stopped is run
again (from the start, with a fresh key: nothing of it was released) when
the app starts. Progress lives in memory. Finished packages are kept under
``data_dir/exports`` for ``export_keep_hours``; only their owner or an admin
may download them.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    jsonify,
    render_template,
    request,
    send_file,
)

from dicomnode.export import Cohort, EmptyCohort, ExportBlocked, ExportCancelled, export, preview

bp = Blueprint("exports", __name__)


@dataclass
class Job:
    id: str
    owner: str
    cohort: dict[str, Any]
    linkable: bool = False
    state: str = "running"  # running, done, failed, cancelled, expired
    done: int = 0
    total: int = 0
    message: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def public(self) -> dict[str, Any]:
        names = ("id", "owner", "cohort", "linkable", "state", "done", "total", "message")
        out: dict[str, Any] = {name: getattr(self, name) for name in names}
        out["percent"] = (
            100
            if self.state == "done"
            else (round(100 * self.done / self.total) if self.total else 0)
        )
        return out


def install(app: Flask) -> None:
    """Load the jobs of this archive and run again the ones a stop interrupted."""
    jobs: dict[str, Job] = {}
    app.extensions["export_jobs"] = jobs
    for row in app.extensions["archive"].index.exports.all():
        job = Job(row["id"], row["owner"], row["cohort"], row["linkable"], row["state"])
        job.message = row["message"]
        jobs[job.id] = job
        if job.state == "running":
            _launch(app, job)
        else:
            job.finished.set()


def _jobs() -> dict[str, Job]:
    return current_app.extensions["export_jobs"]


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
    return Cohort(**text, age_from=number("age_from"), age_to=number("age_to"))


def _folder(app: Flask) -> Path:
    """Where packages are kept; ones older than ``export_keep_hours`` are
    deleted on the way (a package is not meant to live on the node)."""
    config = app.config["NODE_CONFIG"]
    folder = config.data_dir / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    oldest = time.time() - config.export_keep_hours * 3600
    for package in folder.glob("*.zip"):
        if package.stat().st_mtime < oldest:
            package.unlink(missing_ok=True)
    return folder


def _launch(app: Flask, job: Job) -> None:
    config, archive = app.config["NODE_CONFIG"], app.extensions["archive"]
    target = _folder(app) / f"{job.id}.zip"

    def step(done: int, total: int) -> None:
        job.done, job.total = done, total

    def run() -> None:
        try:
            export(
                config,
                archive,
                Cohort(**job.cohort),
                target,
                progress=False,
                actor=job.owner,
                source="web",
                on_instance=step,
                cancel=job.cancel,
                linkable=job.linkable,
            )
            job.state = "done"
        except ExportCancelled as exc:
            job.state, job.message = "cancelled", str(exc)
        except (EmptyCohort, ExportBlocked) as exc:
            job.state, job.message = "failed", str(exc)
        except Exception as exc:  # the message must not carry data values
            job.state, job.message = "failed", "the export failed; see the node's log"
            app.logger.error("export %s failed: %s", job.id, type(exc).__name__)
        finally:
            archive.index.exports.finish(job.id, job.state, job.message)
            job.finished.set()

    threading.Thread(target=run, name=f"export-{job.id}", daemon=True).start()


@bp.get("/exports")
def page() -> Any:
    mine = [j.public() for j in _jobs().values() if j.owner == g.user.username]
    return render_template("exports.html", user=g.user, jobs=mine)


@bp.get("/api/exports/preview")
def show_preview() -> Any:
    counts = preview(current_app.extensions["archive"], _cohort(request.args))
    return jsonify(asdict(counts))


@bp.post("/api/exports")
def start() -> Any:
    values = request.get_json(silent=True) or request.form
    cohort = _cohort(values)
    linkable = bool(values.get("linkable"))
    if linkable and g.user.role != "admin":
        abort(403, description="only an admin may make an export linkable to others")
    job = Job(secrets.token_hex(8), g.user.username, asdict(cohort), linkable)
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    app.extensions["archive"].index.exports.add(job.id, job.owner, job.cohort, linkable)
    _jobs()[job.id] = job
    _launch(app, job)
    return jsonify(job.public()), 202


def _job(job_id: str) -> Job:
    job = _jobs().get(job_id)
    if job is None or (job.owner != g.user.username and g.user.role != "admin"):
        abort(404, description="no such export")
    return job


@bp.get("/api/exports/<job_id>")
def status(job_id: str) -> Any:
    return jsonify(_job(job_id).public())


@bp.post("/api/exports/<job_id>/cancel")
def cancel(job_id: str) -> Any:
    job = _job(job_id)
    job.cancel.set()
    return jsonify(job.public())


@bp.get("/api/exports/<job_id>/download")
def download(job_id: str) -> Any:
    job = _job(job_id)
    if job.state != "done":
        abort(409, description=f"the export is {job.state}, not ready")
    package = _folder(current_app) / f"{job.id}.zip"  # type: ignore[arg-type]
    if not package.exists():
        job.state = "expired"
        abort(410, description="the export has expired; run it again")
    return send_file(
        package,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"chd-cohort-{job.id}.zip",
    )
