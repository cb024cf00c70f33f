"""Research export jobs: submitted by the web, run by a node process's runner.

A job is a row in the index (`storage.exports`). The web adds it
(``submit``: queued) and reads it; `ExportWork` on the node's `Runner`
claims it, runs `dicomnode.jobs.export.export` into ``<data_dir>/exports``,
reports progress and honours a cancel through the row's lease. A job whose
process died is claimed again and run from the start (nothing of it was
released) by the restart or another node process; a stopping node gives its
job back to the queue. Packages are kept for ``export_keep_hours``.
"""

from __future__ import annotations

import logging
import secrets
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
from storage.exports import CANCEL_MESSAGE, CANCELLED, LEASE, Verdict
from storage.private import private_dir

log = logging.getLogger(__name__)
# Exports run one after another in a process (`dicomnode.jobs.export` holds
# one instance decoded at a time): a runner claims no more than it can run,
# so the rest stay queued for another process.
SLOTS = 1
POLL_SECONDS = 1.0  # how soon a submitted job starts, a cancel is seen, progress shows
FAILED = "the export failed; see the node's log"


def package_folder(config: Config) -> Path:
    """Where packages are written, absolute: ``data_dir`` as shipped is
    relative to where the node started, and the process may change directory."""
    return (config.data_dir / "exports").resolve()


def prune(folder: Path, keep_hours: float) -> Path:
    """The packages' folder (0700: they hold children's images), with
    packages older than ``keep_hours`` deleted (none is meant to live here)."""
    private_dir(folder)
    oldest = time.time() - keep_hours * 3600
    for package in folder.glob("*.zip"):
        if package.stat().st_mtime < oldest:
            package.unlink(missing_ok=True)
    return folder


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
        try:
            result = export(
                self.config,
                self.archive,
                Cohort(**row["cohort"]),
                prune(self.folder, self.config.export_keep_hours) / f"{ticket.key}.zip",
                progress=False,
                actor=row["owner"],
                source="web",
                on_instance=ticket.progress,
                cancel=ticket.halt,
                linkable=row["linkable"],
            )
            if result.left_out:
                message = left_out_summary(result.left_out)
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
        # Recorded unless the job was taken over meanwhile (then it is not ours).
        jobs.finish(ticket.key, owner, state, message, ticket.done, ticket.total)


def install(runner: Runner, config: Config, archive: Archive) -> ExportWork:
    """Run this archive's export jobs on ``runner`` (called by the node)."""
    work = ExportWork(config, archive, package_folder(config))
    runner.leased(work, slots=SLOTS, poll=POLL_SECONDS)
    return work
