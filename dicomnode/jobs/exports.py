"""Research export jobs: submitted by the web, run by a node process's runner.

A job is a row in the index (`storage.exports`). The web adds it
(``submit``: queued) and reads it; `ExportWork` on the node's `Runner`
claims it, runs `dicomnode.jobs.export.export` into ``<data_dir>/exports``
(this host's work folder), then stores the package in the node's blob store
(`BlobStore.put_package`: the shared folder or the object store), so the web
of any process serves it; it reports progress and honours a cancel through
the row's lease. A job whose process died is claimed again and run from the
start (nothing of it was released) by the restart or another node process; a
stopping node gives its job back to the queue. Packages are kept for
``export_keep_hours`` (`prune`); a run's leftovers are swept (`sweep`).
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from dicomnode.config import Config
from dicomnode.jobs.export import (
    Cohort,
    EmptyCohort,
    ExportBlocked,
    ExportCancelled,
    export,
    left_out_summary,
)
from dicomnode.jobs.runner import Runner, Stop, Ticket
from storage.archive import Archive
from storage.exports import CANCEL_MESSAGE, CANCELLED, LEASE, UNFINISHED, Verdict
from storage.private import private_dir

log = logging.getLogger(__name__)
# Exports run one after another in a process (`dicomnode.jobs.export` holds
# one instance decoded at a time): a runner claims no more than it can run,
# so the rest stay queued for another process.
SLOTS = 1
POLL_SECONDS = 1.0  # how soon a submitted job starts, a cancel is seen, progress shows
FAILED = "the export failed; see the node's log"
# What a run writes in the work folder: <id>.zip, <id>.zip.part, .<id>.zip.staging
_WORK_FILE = re.compile(r"\.?([0-9a-f]{8,64})\.zip(?:\.part|\.staging)?")


def work_folder(config: Config) -> Path:
    """Where this process writes a package before storing it, absolute:
    ``data_dir`` as shipped is relative to where the node started, and the
    process may change directory. Local to the host; nothing stays in it."""
    return (config.data_dir / "exports").resolve()


def prune(archive: Archive, keep_hours: float) -> None:
    """Delete stored packages older than ``keep_hours``, their jobs expired
    (the age of a package is all that expires a job)."""
    oldest = time.time() - keep_hours * 3600
    for name, modified in list(archive.blobs.packages()):
        if modified < oldest:
            archive.blobs.delete_package(name)
            archive.index.exports.expire(name.removesuffix(".zip"))


def sweep(folder: Path, archive: Archive, keep_hours: float) -> Path:
    """The work folder (0700: packages hold children's images), with what
    runs that ended left in it deleted: a ``.part`` or ``.staging`` of a
    crash, a done job's package not yet stored (stored first). What belongs to a job still queued or
    running (here or on a process sharing the folder) is kept: that job's
    next run, or its current one, owns it."""
    private_dir(folder)
    for path in folder.iterdir():
        job_id = _WORK_FILE.fullmatch(path.name)
        if job_id is None:
            continue
        row = archive.index.exports.get(job_id.group(1))
        done = row is not None and row["state"] == "done"
        if done and path.name.endswith(".zip") and path.is_file() and not path.is_symlink():
            _store_left_package(archive, path, keep_hours)
        if row is None or row["state"] not in UNFINISHED:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return folder


def _store_left_package(archive: Archive, path: Path, keep_hours: float) -> None:
    """A done job's package still in the work folder (written before packages
    went to the blob store, or a crash between storing and removing it):
    stored, unless past its hours, so its download keeps working."""
    try:
        if path.stat().st_mtime >= time.time() - keep_hours * 3600:
            with path.open("rb") as package:
                archive.blobs.put_package(path.name, package)
    except OSError as exc:  # then it is deleted: the job expires at its download
        log.warning("export package %s not stored: %s", path.name, type(exc).__name__)


def submit(archive: Archive, owner: str, cohort: Cohort, linkable: bool) -> dict[str, Any]:
    """Queue a job (its row); a node process's runner will run it."""
    return archive.index.exports.add(secrets.token_hex(8), owner, asdict(cohort), linkable)


@dataclass
class ExportWork:
    """Research exports as leased work for `Runner.leased`."""

    config: Config
    archive: Archive
    folder: Path
    lease: timedelta = LEASE
    name: str = "exports"

    def claim(self, owner: str, limit: int) -> list[Ticket]:
        rows = self.archive.index.exports.claim(owner, limit, self.lease)
        return [Ticket(row["id"], row) for row in rows]

    def renew(self, ticket: Ticket, owner: str) -> Stop | None:
        verdict = self.archive.index.exports.renew(
            ticket.key, owner, self.lease, ticket.done, ticket.total
        )
        return {Verdict.GO: None, Verdict.CANCEL: Stop.CANCEL, Verdict.LOST: Stop.LOST}[verdict]

    def run(self, ticket: Ticket, owner: str) -> None:
        jobs, row = self.archive.index.exports, ticket.row
        if row["cancel_requested"]:  # asked while its last process was dying
            jobs.finish(ticket.key, owner, CANCELLED, CANCEL_MESSAGE)
            return
        log.info("export %s started by %s", ticket.key, owner)
        state, message = "done", ""
        keep = self.config.export_keep_hours
        work = sweep(self.folder, self.archive, keep) / f"{ticket.key}.zip"
        try:
            prune(self.archive, keep)
            result = export(
                self.config,
                self.archive,
                Cohort(**row["cohort"]),
                work,
                progress=False,
                actor=row["owner"],
                source="web",
                on_instance=ticket.progress,
                cancel=ticket.halt,
                linkable=row["linkable"],
            )
            if result.left_out:
                message = left_out_summary(result.left_out)
            # Stored where every process can serve it before the job says done.
            with work.open("rb") as package:
                self.archive.blobs.put_package(work.name, package)
        except ExportCancelled as exc:
            if ticket.why is Stop.SHUTDOWN:
                jobs.release(ticket.key, owner)  # the next runner starts it anew
                return
            state, message = CANCELLED, str(exc)
        except (EmptyCohort, ExportBlocked) as exc:
            state, message = "failed", str(exc)
        except Exception as exc:  # the message must not carry data values
            state, message = "failed", FAILED
            log.error("export %s failed: %s", ticket.key, type(exc).__name__)
        finally:
            if ticket.why is not Stop.LOST:  # else the files are its new runner's
                work.unlink(missing_ok=True)
                work.with_name(f"{work.name}.part").unlink(missing_ok=True)
        # Recorded unless the job was taken over meanwhile (then it is not ours).
        jobs.finish(ticket.key, owner, state, message, ticket.done, ticket.total)


def install(runner: Runner, config: Config, archive: Archive) -> ExportWork:
    """Run this archive's export jobs on ``runner`` (called by the node)."""
    folder = sweep(work_folder(config), archive, config.export_keep_hours)
    work = ExportWork(config, archive, folder)
    runner.leased(work, slots=SLOTS, poll=POLL_SECONDS)
    return work
