"""The forwarding queue and export jobs survive SIGKILL: `dicomnode serve`
killed at random moments while it forwards and while it exports, restarted,
and in the end every queued instance has reached its destination and the
export is whole (issue #9); killed while it stores instances a route
forwards, every acknowledged one is queued once and reaches the peer
(issue #18: the change feed)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicomnode.config import Config, RemoteAE, RouteRule, to_toml
from dicomnode.deid.secret import Secret, load_or_create_key
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.jobs.export import Cohort
from dicomnode.jobs.forwarding import CONSUMER, Forwarder
from dicomnode.node import open_archive
from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance
from storage.archive import Archive
from storage.forwarding import DONE, PENDING, forward_queue
from storage.keys import Level
from storage.query import Query
from tests.conftest import REMOTES, free_port, incoming, make_config
from tests.postgres import LocalPostgres
from tests.test_crash import _associate, _datasets, _send, _serve
from tests.test_forwarding import Destination

pytestmark = pytest.mark.slow
KILLS = 20


def _fill(config: Config, count: int) -> list[str]:
    """Store ``count`` angio frames and queue them (the forwarder's first
    step, draining the change feed, done here); their stored UIDs."""
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        # One child per study (another child's instance would be kept apart).
        studies = [generate_uid(UID_ROOT) for _ in range(3)]
        for n in range(count):
            xa = xa_instance(
                PATIENTS[n % 3],
                frames=2,
                rows=32,
                cols=32,
                study_uid=studies[n % 3],
                seed=n,
                instance_number=n + 1,
            )
            assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
        Forwarder(config, archive).drain()
        rows = archive.index.find(Query(level=Level.IMAGE, keys={"SOPInstanceUID": ""}))
        return [row["SOPInstanceUID"] for row in rows]
    finally:
        archive.close()


def _environment(config: Config, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "dicomnode.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    return {**os.environ, "DICOMNODE_CONFIG": str(path), "DICOMNODE_LOG_LEVEL": "ERROR"}


def _forward_until_done(config: Config, archive: Archive, patience: float = 300) -> None:
    """The next life of the node: forwarding passes until the feed is read
    and nothing waits (a condition with a deadline, not a count of passes:
    a pass claims one batch, and a loaded machine is slow)."""
    forwarder, deadline = Forwarder(config, archive), time.monotonic() + patience
    changes = archive.index.changes
    while True:
        forwarder.run_once()
        pending = archive.index.forwarding.counts().get(("RESEARCH", PENDING), 0)
        if not pending and changes.position(CONSUMER) == changes.latest():
            return
        assert time.monotonic() < deadline, f"{pending} still waiting to be forwarded"
        time.sleep(0.1)


def _kill_at_random(
    env: dict[str, str], rounds: int, latest: float, seed: int, after: Callable[[], None]
) -> None:
    chance = random.Random(seed)
    for _ in range(rounds):
        process = _serve(env)
        killer = threading.Timer(chance.uniform(0.02, latest), process.send_signal, [9])
        killer.start()
        killer.join()
        assert process.wait(timeout=60) == -9
        after()


def test_forwarding_loses_nothing_across_twenty_sigkills(tmp_path: Path) -> None:
    port = free_port()
    destination = Destination(port)
    config = make_config(
        tmp_path,
        dimse_port=free_port(),
        http_port=free_port(),
        remote_aes=(*REMOTES, RemoteAE("RESEARCH", "127.0.0.1", port, "research archive")),
        routes=(RouteRule("RESEARCH"),),
        forward_interval_seconds=0.05,
    )
    try:
        stored = _fill(config, 800)
        progress: list[int] = []
        _kill_at_random(
            _environment(config, tmp_path),
            KILLS,
            0.5,
            20261126,
            lambda: progress.append(len(destination.received)),
        )
        # The kills fell on passes that were sending (else this proves nothing).
        assert progress[0] > 0 and len(set(progress)) > KILLS // 2
        archive = open_archive(config)
        try:  # the next life of the node sends what is left
            _forward_until_done(config, archive)
            counts = archive.index.forwarding.counts()
        finally:
            archive.close()
        duplicates = len(destination.received) - len(set(destination.received))
        print(
            f"forwarding: {len(stored)} queued, sent per life {progress}, {duplicates} sent twice"
        )
        assert set(stored) <= set(destination.received)
        assert counts == {("RESEARCH", DONE): len(stored)}
        assert ("RESEARCH", PENDING) not in counts
    finally:
        destination.server.shutdown()


def test_an_export_killed_five_times_finishes_whole(tmp_path: Path) -> None:
    from tests.test_jobs import export_runner, finished

    config = make_config(tmp_path, dimse_port=free_port(), http_port=free_port())
    stored = _fill(config, 150)
    archive = open_archive(config)
    dead = subprocess.Popen(["true"])
    dead.wait()
    archive.index.exports.add("feedfacecafebeef", "zarina", asdict(Cohort()), False)
    assert archive.index.exports.claim(f"{socket.gethostname()}-{dead.pid}", 1)
    archive.close()
    staging = config.data_dir / "exports" / ".feedfacecafebeef.zip.staging"
    cut_short: list[bool] = []
    _kill_at_random(
        _environment(config, tmp_path), 5, 0.6, 7, lambda: cut_short.append(staging.exists())
    )
    assert any(cut_short)  # some kills fell while the export was being written
    archive = open_archive(config)
    try:  # the next life of the node (unless a killed life finished it already)
        with export_runner(config, archive):
            row = finished(archive, "feedfacecafebeef")
        assert (row["state"], row["message"]) == ("done", "")
        # The work folder holds nothing of the killed lives; the package is
        # in the blob store, whole.
        folder = config.data_dir / "exports"
        assert not folder.exists() or list(folder.iterdir()) == []
        source, size = archive.blobs.open_package("feedfacecafebeef.zip")
        with source, zipfile.ZipFile(source) as package:
            assert package.testzip() is None
            names = package.namelist()
        assert size > 0
    finally:
        archive.close()
    assert "DICOMDIR" in names
    assert sum(1 for n in names if n.startswith("DICOM/") or ("/" in n and n != "DICOMDIR")) >= len(
        stored
    )


def test_a_forwarding_process_killed_leaves_its_rows_to_the_other(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    """Two `serve` processes on one PostgreSQL share the forwarding queue;
    one is killed mid-send; the other sends what it had claimed."""
    port = free_port()
    destination = Destination(port)
    config = make_config(
        tmp_path,
        index_url=postgres.database(),
        remote_aes=(*REMOTES, RemoteAE("RESEARCH", "127.0.0.1", port, "research archive")),
        routes=(RouteRule("RESEARCH"),),
        forward_interval_seconds=0.05,
    )
    try:
        stored = _fill(config, 400)
        env = _environment(config, tmp_path)
        processes = [
            _serve(
                {
                    **env,
                    "DICOMNODE_DIMSE_PORT": str(free_port()),
                    "DICOMNODE_HTTP_PORT": str(free_port()),
                }
            )
            for _ in range(2)
        ]
        killer = threading.Timer(0.3, processes[0].send_signal, [9])
        killer.start()
        killer.join()
        assert processes[0].wait(timeout=60) == -9
        assert len(set(destination.received)) < len(stored)  # A died with work left
        archive = open_archive(config)
        try:  # the survivor alone finishes the queue (a condition, with a deadline)
            deadline = time.monotonic() + 120
            while archive.index.forwarding.counts().get(("RESEARCH", PENDING)):
                assert time.monotonic() < deadline, "the survivor did not finish the queue"
                time.sleep(0.1)
        finally:
            archive.close()
            processes[1].terminate()
            processes[1].wait(timeout=60)
        assert set(stored) <= set(destination.received)
        assert len(destination.received) - len(stored) < 50  # re-sent: only what A held
    finally:
        destination.server.shutdown()


def test_instances_stored_while_killed_are_each_forwarded(tmp_path: Path) -> None:
    """`serve` killed at random moments while a sender stores instances a
    route forwards, between store and forward included: every acknowledged
    instance is queued exactly once (the change feed and its cursor move
    together) and reaches a real peer; re-sends of what was acknowledged
    before a kill are duplicates, never queued again."""
    port = free_port()
    destination = Destination(port)
    config = make_config(
        tmp_path,
        dimse_port=free_port(),
        http_port=free_port(),
        remote_aes=(*REMOTES, RemoteAE("RESEARCH", "127.0.0.1", port, "research archive")),
        routes=(RouteRule("RESEARCH"),),
        # Passes far enough apart that kills fall between stores and their queueing.
        forward_interval_seconds=0.4,
    )
    env = _environment(config, tmp_path)
    datasets, acknowledged, chance = _datasets() + _datasets(), set(), random.Random(20261207)
    unqueued: list[int] = []  # changes stored but not yet queued when a life died
    try:
        for round_ in range(KILLS + 3):
            if round_ > KILLS and len(acknowledged) == len(datasets):
                break
            process = _serve(env)
            # Unacknowledged first, then re-sends of the rest.
            order = sorted(datasets, key=lambda ds: str(ds.SOPInstanceUID) in acknowledged)
            assoc = _associate(config.dimse_port, killed=round_ < KILLS)
            killer = None
            if round_ < KILLS:
                killer = threading.Timer(chance.uniform(0.1, 1.2), process.send_signal, [9])
                killer.start()
            _send(assoc, order, acknowledged)
            if killer is not None:
                killer.join()
            else:
                process.terminate()
            assert process.wait(timeout=60) in (0, -9)
            if killer is not None:
                archive = open_archive(config)
                feed = archive.index.changes
                unqueued.append(feed.latest() - feed.position(CONSUMER))
                archive.close()
        assert len(acknowledged) == len(datasets)  # the unharmed rounds got them all
        # Some kills fell between a store's commit and its queueing.
        assert any(unqueued), unqueued

        archive = open_archive(config)
        try:
            _forward_until_done(config, archive)
            secret = Secret(load_or_create_key(config.key_dir / "deid.key", config.data_dir))
            stored = {secret.uid(uid) for uid in acknowledged}
            with archive.index.engine.connect() as conn:
                rows = conn.execute(
                    select(forward_queue.c.sop_instance_uid, forward_queue.c.state)
                ).all()
            changes = archive.index.changes.since(limit=10 * len(datasets))
        finally:
            archive.close()
        queued = [uid for uid, _ in rows]
        assert sorted(queued) == sorted(set(queued))  # none queued twice
        assert stored <= set(queued) and {state for _, state in rows} == {DONE}
        assert sorted(c.sop_instance_uid for c in changes) == sorted(queued)  # one change each
        assert stored <= set(destination.received)
        print(
            f"stored and forwarded: {len(stored)} acknowledged, {len(queued)} queued, "
            f"{len(destination.received) - len(set(destination.received))} sent twice, "
            f"stored but not queued at each kill {unqueued}"
        )
    finally:
        destination.server.shutdown()
