"""Forwarding: sending what the node holds on to other AEs, without losing any.

Every instance to forward is a row in the persisted queue first. What a
route forwards gets there through the change feed (`storage.changes`): a
pass (`run_once`) first moves the new changes into the queue, the routes
they match (`config.routes`), and the feed cursor ``forwarding`` in one
transaction, so a stored instance is queued once, whatever crashes when.
Then it opens one association per destination, sends what is due in its
stored syntax, or decoded to an uncompressed one when that is all the
destination takes (`retrieve_syntax`, as C-GET and C-MOVE do), and marks
each row done, or schedules a retry with back-off, and its reason, when the
destination is down, refuses, or cannot take the instance in any syntax the
node can make. A restart loses nothing: the queue
is in the index database. Each pass claims its rows, so node processes
sharing the index never send the same row at once; the rows of a process
that died are taken by another when its lease runs out (so an instance may
reach its destination twice after a crash, never not at all). A sender
renews its claim on the rest of its batch before each instance and sends
only rows still its own; a stop (`Forwarder.stop`, reached from
`Runner.stop`) ends a pass between two instances and gives the unsent rows
back.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime, timedelta
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pynetdicom import AE
from pynetdicom.association import Association
from sqlalchemy import Connection

from dicomnode import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicomnode.config import Config
from dicomnode.consult.identity import Unavailable
from dicomnode.consult.sending import Reidentifier
from dicomnode.media.transcode import TooLarge, TranscodeError
from dicomnode.net.nodelay import NO_DELAY
from dicomnode.net.retrieve_syntax import (
    UNDECODABLE,
    accepted_syntaxes,
    contexts_for,
    decoded,
    plan,
    unsent,
)
from dicomnode.net.tls import tls_args, tls_failure
from dicomnode.status import NO_STATUS, SUCCESS, is_warning
from storage.archive import Archive
from storage.changes import Change
from storage.forwarding import enqueue_in
from storage.keys import Level
from storage.leases import process_name
from storage.query import Query

log = logging.getLogger(__name__)
# The change feed consumer's name (its cursor in ``change_cursors``).
CONSUMER = "forwarding"
FIRST_RETRY = timedelta(seconds=30)
LAST_RETRY = timedelta(hours=1)


class ForwardError(ValueError):
    """The request to forward cannot be queued; the message says why."""


def backoff(attempts: int) -> timedelta:
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LAST_RETRY)


class Forwarder:
    def __init__(self, config: Config, archive: Archive) -> None:
        self.config = config
        self.archive = archive
        self.queue = archive.index.forwarding
        self.owner = process_name()
        self._stop = threading.Event()
        # A consultation report's rows go out re-identified for their hospital.
        self.reidentify = Reidentifier(config, archive)

    def stop(self) -> None:
        """End the pass running now after its current instance (the rest of
        its rows go back to the queue); no pass starts after this."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def enqueue_study(self, study_uid: str, destination: str) -> int:
        if self.config.remote(destination) is None:
            raise ForwardError(f"{destination} is not a known remote AE")
        rows = self.archive.index.find(
            Query(level=Level.IMAGE, keys={"StudyInstanceUID": study_uid, "SOPInstanceUID": ""})
        )
        uids = [r["SOPInstanceUID"] for r in rows]
        if not uids:
            raise ForwardError("no stored instance of that study")
        return self.queue.enqueue(uids, destination)

    def route(self, conn: Connection, changes: list[Change]) -> None:
        """The forwarding consumer of the change feed: queue each change for
        every route it matches, in the feed's transaction (`ChangeFeed.consume`)."""
        by_destination: dict[str, list[str]] = defaultdict(list)
        for change in changes:
            for rule in self.config.routes:
                if rule.matches(change.issuer, change.modality):
                    by_destination[rule.destination].append(change.sop_instance_uid)
        for destination, uids in by_destination.items():
            enqueue_in(conn, uids, destination)

    def drain(self) -> int:
        """Move what the feed holds past this consumer's cursor into the queue; how many."""
        return self.archive.index.changes.drain(CONSUMER, self.route)

    def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """Queue what the change feed brought (`drain`), then send what is
        due; returns how many went out and how many wait again (rows given
        back at a stop, or taken over by another process, count as waiting)."""
        if self.stopping:
            return {"sent": 0, "waiting": 0}
        self.drain()
        by_destination: dict[str, list[dict]] = defaultdict(list)
        for job in self.queue.claim(self.owner, now):
            by_destination[job["destination"]].append(job)
        sent = waiting = 0
        for destination, jobs in by_destination.items():
            ok = 0 if self._given_back(jobs) else self._send(destination, jobs)
            sent, waiting = sent + ok, waiting + len(jobs) - ok
        return {"sent": sent, "waiting": waiting}

    def _send(self, destination: str, jobs: list[dict]) -> int:
        remote = self.config.remote(destination)
        kinds = [self._kind(j["sop_instance_uid"]) for j in jobs]
        instances = [k for k in kinds if k]
        if remote is None or not instances:
            self._retry_all(jobs, "destination no longer configured")
            return 0
        ae = AE(ae_title=self.config.ae_title)
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.acse_timeout = self.config.acse_timeout
        ae.dimse_timeout = self.config.dimse_timeout
        ae.network_timeout = self.config.network_timeout
        tls = tls_args(self.config, remote)
        assoc = ae.associate(
            remote.host,
            remote.port,
            contexts_for(instances),
            ae_title=remote.ae_title,
            tls_args=tls,
            evt_handlers=NO_DELAY,
        )
        if not assoc.is_established:
            why = tls_failure(tls) or "association refused or destination unreachable"
            self._retry_all(jobs, why)
            return 0
        sent = 0
        try:
            for n, (job, kind) in enumerate(zip(jobs, kinds, strict=True)):
                if self._given_back(jobs[n:]):
                    break
                # The rest of the batch stays ours while a slow destination
                # takes its time; a row another process took is not sent.
                if job["pk"] in self.queue.renew((j["pk"] for j in jobs[n:]), self.owner):
                    sent += self._send_one(assoc, job, kind)
                else:
                    log.warning("forwarding to %s: a row passed to another process", destination)
        finally:
            assoc.release()
        return sent

    def _given_back(self, jobs: list[dict]) -> bool:
        """At a stop: give ``jobs`` back to the queue unsent (True)."""
        if not self.stopping:
            return False
        self.queue.release((j["pk"] for j in jobs), self.owner)
        return True

    def _kind(self, uid: str) -> dict[str, str]:
        rows = list(
            self.archive.index.find(
                Query(
                    level=Level.IMAGE,
                    keys={
                        "SOPInstanceUID": uid,
                        "SOPClassUID": "",
                        "AvailableTransferSyntaxUID": "",
                    },
                )
            )
        )
        return rows[0] if rows else {}

    def _send_one(self, assoc: Association, job: dict, kind: dict[str, str]) -> int:
        """One instance, as stored or decoded for the destination; done only
        when the destination answered success or warning, else kept for a
        later pass with the reason (syntax names, never a value of the data)."""
        if not kind:  # its row is gone
            self._retry_all([job], "no longer stored")
            return 0
        stored = kind["AvailableTransferSyntaxUID"]
        accepted = accepted_syntaxes(assoc.accepted_contexts, kind["SOPClassUID"])
        how = plan(stored, accepted)
        if not how.send:
            self._retry_all([job], f"{how.reason} ({unsent(stored, accepted)})")
            return 0
        # By UID: a replacement may have committed since its row was read.
        # A stored file that cannot be read waits alone, with the reason
        # (`dicomnode check` names it): the rest of the batch goes on.
        try:
            data = self.archive.read(job["sop_instance_uid"])
        except OSError as exc:
            self._retry_all([job], f"stored file cannot be read ({type(exc).__name__})")
            return 0
        if data is None:
            self._retry_all([job], "no longer stored")
            return 0
        try:
            ds: Dataset = dcmread(BytesIO(data))
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            self._retry_all([job], f"stored file damaged ({type(exc).__name__})")
            return 0
        case = ""
        if job.get("report_pk") is not None:
            try:
                ds, case = self.reidentify(ds, int(job["report_pk"]), job["destination"])
            except Unavailable as exc:
                self._retry_all([job], str(exc))
                return 0
        if how.decode:
            try:
                ds = decoded(ds, self.config.transcode_max_mb << 20)
            except TooLarge as exc:  # waits: a larger transcode_max_mb, or another route
                self._retry_all([job], str(exc))
                return 0
            except TranscodeError as exc:
                self._retry_all([job], f"{UNDECODABLE} ({exc})")
                return 0
        try:
            status = assoc.send_c_store(ds)
            code = int(status.Status) if "Status" in status else NO_STATUS
        except (RuntimeError, ValueError) as exc:
            code, detail = NO_STATUS, type(exc).__name__
        else:
            detail = f"status 0x{code:04X}"
        if code == SUCCESS or is_warning(code):
            if self.queue.done(job["pk"], owner=self.owner) and case:
                self.reidentify.sent(case, job["sop_instance_uid"], job["destination"])
            return 1
        self._retry_all([job], detail)
        return 0

    def _retry_all(self, jobs: list[dict], reason: str) -> None:
        for job in jobs:
            attempts = job["attempts"] + 1
            self.queue.retry(job["pk"], attempts, reason, backoff(attempts), owner=self.owner)
        log.warning("forwarding to %s: %d waiting (%s)", jobs[0]["destination"], len(jobs), reason)
