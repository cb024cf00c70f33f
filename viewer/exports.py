"""Research export in the web app: preview, a background job, download.

Jobs are rows in the index, claimed by the process that runs them (a lease,
renewed with the progress): a job whose process stopped is run again (from
the start, with a fresh key: nothing of it was released) by the next
process that starts or, with several node processes, by whichever notices
the lapsed lease first. Status and cancel work from any process. Finished packages are kept under
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

from dicomnode.jobs.export import (
    Cohort,
    EmptyCohort,
    ExportBlocked,
    ExportCancelled,
    export,
    left_out_summary,
    preview,
)
from storage.leases import process_name
from storage.private import private_dir
from viewer.scope import issuers

bp = Blueprint("exports", __name__)
PROGRESS_SECONDS = 1.0


@dataclass
class Running:
    """A job this process runs: what its request handlers can signal."""

    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


def public(row: dict[str, Any]) -> dict[str, Any]:
    """What the owner sees of a job (its row in the index)."""
    names = ("id", "owner", "cohort", "linkable", "state", "done", "total", "message")
    out: dict[str, Any] = {name: row[name] for name in names}
    done, total = row["done"], row["total"]
    out["percent"] = 100 if row["state"] == "done" else (round(100 * done / total) if total else 0)
    return out


def install(app: Flask) -> None:
    """Jobs run by this process; take over the ones a stopped process left.

    The packages' folder is made absolute now: ``data_dir`` as shipped is
    relative to where the node started, and Flask's ``send_file`` would read
    a relative path against the package folder instead."""
    app.extensions["export_folder"] = (app.config["NODE_CONFIG"].data_dir / "exports").resolve()
    app.extensions["export_jobs"] = {}
    app.extensions["export_runner"] = process_name()
    take_over(app)


def take_over(app: Flask) -> int:
    """Run the jobs whose process died (an earlier life of this node
    included); called at start and then periodically by the node."""
    rows = app.extensions["archive"].index.exports.claim_abandoned(app.extensions["export_runner"])
    for row in rows:
        _launch(app, row)
    return len(rows)


def _jobs() -> dict[str, Running]:
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
    sees = issuers()  # the account's hospitals: a cohort never reaches past them
    return Cohort(
        **text,
        age_from=number("age_from"),
        age_to=number("age_to"),
        issuers=None if sees is None else sorted(sees),
    )


def _folder(app: Flask) -> Path:
    """Where packages are kept; ones older than ``export_keep_hours`` are
    deleted on the way (a package is not meant to live on the node)."""
    config = app.config["NODE_CONFIG"]
    folder: Path = app.extensions["export_folder"]
    private_dir(folder)  # 0700: the packages hold children's images
    oldest = time.time() - config.export_keep_hours * 3600
    for package in folder.glob("*.zip"):
        if package.stat().st_mtime < oldest:
            package.unlink(missing_ok=True)
    return folder


def _launch(app: Flask, row: dict[str, Any]) -> None:
    config, archive = app.config["NODE_CONFIG"], app.extensions["archive"]
    jobs, runner = archive.index.exports, app.extensions["export_runner"]
    job_id = row["id"]
    target = _folder(app) / f"{job_id}.zip"
    running = app.extensions["export_jobs"][job_id] = Running()
    last_report = [0.0]

    def step(done: int, total: int) -> None:
        # Progress and the lease go to the index at most once a second; a
        # cancel asked through another process comes back the same way.
        if time.monotonic() - last_report[0] < PROGRESS_SECONDS and done < total:
            return
        last_report[0] = time.monotonic()
        if not jobs.progress(job_id, runner, done, total):
            running.cancel.set()

    def run() -> None:
        state, message = "done", ""
        try:
            result = export(
                config,
                archive,
                Cohort(**row["cohort"]),
                target,
                progress=False,
                actor=row["owner"],
                source="web",
                on_instance=step,
                cancel=running.cancel,
                linkable=row["linkable"],
            )
            if result.left_out:
                message = left_out_summary(result.left_out)
        except ExportCancelled as exc:
            state, message = "cancelled", str(exc)
        except (EmptyCohort, ExportBlocked) as exc:
            state, message = "failed", str(exc)
        except Exception as exc:  # the message must not carry data values
            state, message = "failed", "the export failed; see the node's log"
            app.logger.error("export %s failed: %s", job_id, type(exc).__name__)
        finally:
            jobs.finish(job_id, runner, state, message)
            running.finished.set()

    threading.Thread(target=run, name=f"export-{job_id}", daemon=True).start()


@bp.get("/exports")
def page() -> Any:
    index = current_app.extensions["archive"].index
    mine = [public(row) for row in index.exports.all(owner=g.user.username)]
    return render_template("exports.html", user=g.user, jobs=mine)


@bp.get("/api/exports/preview")
def show_preview() -> Any:
    counts = preview(current_app.extensions["archive"], _cohort(request.args))
    return jsonify(asdict(counts))


@bp.post("/api/exports")
def start() -> Any:
    values = request.get_json(silent=True) or request.form
    if not hasattr(values, "get"):
        abort(400, description="send the cohort as a JSON object or a form")
    cohort = _cohort(values)
    linkable = bool(values.get("linkable"))
    if linkable and g.user.role != "admin":
        abort(403, description="only an admin may make an export linkable to others")
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    row = app.extensions["archive"].index.exports.add(
        secrets.token_hex(8),
        g.user.username,
        asdict(cohort),
        linkable,
        runner=app.extensions["export_runner"],
    )
    _launch(app, row)
    return jsonify(public(row)), 202


def _job(job_id: str) -> dict[str, Any]:
    row = current_app.extensions["archive"].index.exports.get(job_id)
    if row is None or (row["owner"] != g.user.username and g.user.role != "admin"):
        abort(404, description="no such export")
    return row


@bp.get("/api/exports/<job_id>")
def status(job_id: str) -> Any:
    return jsonify(public(_job(job_id)))


@bp.post("/api/exports/<job_id>/cancel")
def cancel(job_id: str) -> Any:
    row = _job(job_id)
    current_app.extensions["archive"].index.exports.request_cancel(row["id"])
    running = _jobs().get(row["id"])
    if running is not None:  # else the process running it learns from the row
        running.cancel.set()
    return jsonify(public(row))


@bp.get("/api/exports/<job_id>/download")
def download(job_id: str) -> Any:
    row = _job(job_id)
    if row["state"] != "done":
        abort(409, description=f"the export is {row['state']}, not ready")
    package = _folder(current_app) / f"{row['id']}.zip"  # type: ignore[arg-type]
    if not package.exists():
        current_app.extensions["archive"].index.exports.expire(row["id"])
        abort(410, description="the export has expired; run it again")
    return send_file(
        package,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"chd-cohort-{row['id']}.zip",
    )
