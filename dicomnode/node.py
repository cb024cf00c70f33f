"""Wiring: one archive, one ingestor, the DIMSE server, the background jobs and
the web app (the composition root: the one place in dicomnode/ that imports viewer/)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from dicomnode import UID_ROOT
from dicomnode.config import Config
from dicomnode.consult.making import Maker
from dicomnode.consult.notices import Notices
from dicomnode.deid.secret import load_or_create_key
from dicomnode.dimse.server import DicomServer
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.jobs import exports
from dicomnode.jobs.forwarding import Forwarder
from dicomnode.jobs.runner import Runner
from dicomnode.jobs.verifying import Verifier, workers
from dicomnode.media.spool import Spool
from dicomnode.web.server import WebServer
from storage.archive import Archive, DuplicatePolicy
from storage.blobs import open_stores
from storage.index import sqlite_file
from storage.private import installation, private_dir, tighten

log = logging.getLogger(__name__)
WEB_KEY = "web.key"  # signs the session cookies
AUDIT_KEY = "audit.key"  # keys the audit trail's hash chain
QUARANTINE_KEY = "quarantine.key"  # encrypts held instances (`storage.archive`)
# Seconds between deferred-OCR passes (a pass reads until nothing waits).
VERIFY_INTERVAL = 0.5
# How often stored studies open or join referral cases (seconds).
CASES_INTERVAL = 2.0
# How often case moves are told by e-mail (seconds; a relay that fails waits this long).
NOTICE_INTERVAL = 30.0


def open_archive(config: Config) -> Archive:
    """The archive every command and the node use. The data folder is made
    private (0700), and what an older version left readable by others (data
    and key folders, the index) is tightened first, with one log line."""
    private_dir(config.data_dir)
    tighten(installation(config.data_dir, config.key_dir, sqlite_file(config.effective_index_url)))
    archive = Archive(
        config.data_dir,
        config.effective_index_url,
        DuplicatePolicy(config.duplicates),
        load_or_create_key(config.key_dir / AUDIT_KEY, config.data_dir),
        open_stores(config.blob_url, config.data_dir, config.s3_endpoint_url),
        load_or_create_key(config.key_dir / QUARANTINE_KEY, config.data_dir),
    )
    archive.index.cases.own_uid_root = UID_ROOT + "."  # the node's reports: not new imaging
    return archive


class Node:
    """Everything ``dicomnode serve`` runs, startable and stoppable from tests."""

    def __init__(self, config: Config, *, web: bool = True, first: bool = True) -> None:
        self.config = config
        self.archive = open_archive(config)
        # Large instances wait here, encrypted, while they are de-identified
        # (`dicomnode.media.spool`); what a dead process left is wiped now.
        self.spool = Spool(config.spool_dir)
        self.ingestor = Ingestor(config, self.archive, self.spool)
        self.dicom = DicomServer(config, self.ingestor)
        self.forwarder = Forwarder(config, self.archive)
        # Background work (`dicomnode.jobs.runner`): forwarding passes, and
        # the export jobs the web queues (this process's and any a dead one left).
        self.runner = Runner()
        self.runner.every(
            "forward", config.forward_interval_seconds, lambda: self.forwarder.run_once()
        )
        self.runner.on_stop(self.forwarder.stop)  # a pass ends between two instances
        # Deferred OCR: instances answered and held until read (any process's).
        threads = workers(config.ocr_workers, config.receiving_processes)
        self.verifier = Verifier(self.ingestor, threads)
        self.runner.every("ocr", VERIFY_INTERVAL, self.verifier.run_once)
        # A study stored opens or joins its child's referral case.
        self.runner.every("cases", CASES_INTERVAL, self.archive.index.cases.drain)
        # Each decision's consultation report, made and queued for its hospital.
        self.reports = Maker(config, self.archive, self.ingestor)
        self.runner.every("reports", CASES_INTERVAL, self.reports.run_once)
        # Each move of a case told by e-mail to its hospital (smtp_relay), no identity.
        self.runner.every("notices", NOTICE_INTERVAL, Notices(config, self.archive.index).run_once)
        self.runner.on_stop(self.verifier.stop)  # reading ends; the rest goes back
        exports.install(self.runner, config, self.archive)
        self._web_enabled = web
        # The first of several receiving processes (`cli.receivers`) audits
        # the start and repairs the archive; the others only serve.
        self._first = first
        self._web: Any = None

    def _audit_start(self) -> None:
        """A start, and a configuration that differs from the last start's."""
        from dicomnode import __version__
        from dicomnode.config import to_toml
        from storage.audit import AuditFilter

        trail = self.archive.index.audit
        digest = hashlib.sha256(to_toml(self.config).encode("utf-8")).hexdigest()
        last = trail.rows(AuditFilter(event="config-change"), limit=1)
        if not last or last[0]["object"] != digest:
            detail = "first start" if not last else f"was {last[0]['object'][:16]}"
            trail.record("config-change", user="dicomnode", obj=digest, detail=detail)
        trail.record("node-start", user="dicomnode", detail=f"version {__version__}")

    def _reconcile(self) -> None:
        """What a crash left: orphan blobs set aside, missing ones reported;
        held blobs an older version wrote in plaintext encrypted."""
        from dicomnode.ops.check import reconcile

        sealed, failed = self.archive.seal_plaintext_held()
        if sealed or failed:
            log.warning("held instances at start-up: %d encrypted, %d not", sealed, len(failed))
            self.archive.index.audit.record(
                "archive-check",
                user="dicomnode",
                detail=f"{sealed} held instances encrypted at rest, {len(failed)} could not be "
                "(dicomnode check)",
                outcome=4 if failed else 0,
            )
        report = reconcile(self.archive, repair=True)
        if not report.clean:
            log.warning("archive at start-up: %s", report.summary())
            self.archive.index.audit.record(
                "archive-check",
                user="dicomnode",
                detail=report.summary() + " (orphans moved to lost+found)",
                outcome=4 if report.missing else 0,
            )

    def start(self) -> Node:
        if self._first:
            self._audit_start()
            self._reconcile()
        self.dicom.start()
        self.runner.start()
        if self._web_enabled:
            from viewer import create_app

            key = load_or_create_key(self.config.key_dir / WEB_KEY, self.config.data_dir)
            app = create_app(self.config, self.archive, key, self.ingestor)
            # http_threads, for parallel frame requests of the cine viewports.
            self._web = WebServer(app, self.config, threads=self.config.http_threads)
            self._web.start()
            log.info(
                "web app on %s://%s:%d", self._web.scheme, self.config.http_host, self.http_port
            )
        return self

    @property
    def http_port(self) -> int | None:
        return self._web.port if self._web else None

    def stop(self) -> None:
        self.runner.stop()  # first: a stopped job gives its row back while the index is open
        self.dicom.stop()
        if self._web is not None:
            self._web.stop()
            self._web = None
        self.archive.close()
        self.spool.close()

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
