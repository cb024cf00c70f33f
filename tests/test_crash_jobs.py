"""The forwarding queue and export jobs survive SIGKILL: `dicomnode serve`
killed at random moments while it forwards and while it exports, restarted,
and in the end every queued instance has reached its destination and the
export is whole (issue #9)."""

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

from dicomnode.config import Config, RemoteAE, RouteRule, to_toml
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.jobs.export import Cohort
from dicomnode.jobs.forwarding import Forwarder
from dicomnode.node import open_archive
from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance
from storage.forwarding import DONE, PENDING
from storage.keys import Level
from storage.query import Query
from tests.conftest import REMOTES, free_port, incoming, make_config
from tests.postgres import LocalPostgres
from tests.test_crash import _serve
from tests.test_forwarding import Destination

pytestmark = pytest.mark.slow
KILLS = 20


def _fill(config: Config, count: int) -> list[str]:
    """Store ``count`` angio frames (the routes queue them); their stored UIDs."""
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
        rows = archive.index.find(Query(level=Level.IMAGE, keys={"SOPInstanceUID": ""}))
        return [row["SOPInstanceUID"] for row in rows]
    finally:
        archive.close()


def _environment(config: Config, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "dicomnode.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    return {**os.environ, "DICOMNODE_CONFIG": str(path), "DICOMNODE_LOG_LEVEL": "ERROR"}


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
        try:  # the next life of the node: one pass sends what is left
            result = Forwarder(config, archive).run_once()
            assert result["waiting"] == 0
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
    from viewer import create_app

    config = make_config(tmp_path, dimse_port=free_port(), http_port=free_port())
    stored = _fill(config, 150)
    archive = open_archive(config)
    dead = subprocess.Popen(["true"])
    dead.wait()
    archive.index.exports.add(
        "feedfacecafebeef", "zarina", asdict(Cohort()), False, f"{socket.gethostname()}-{dead.pid}"
    )
    archive.close()
    staging = config.data_dir / "exports" / ".feedfacecafebeef.zip.staging"
    cut_short: list[bool] = []
    _kill_at_random(
        _environment(config, tmp_path), 5, 0.6, 7, lambda: cut_short.append(staging.exists())
    )
    assert any(cut_short)  # some kills fell while the export was being written
    archive = open_archive(config)
    try:
        app = create_app(config, archive, b"k" * 32)
        running = app.extensions["export_jobs"].get("feedfacecafebeef")
        if running is not None:  # else a killed life finished it already
            assert running.finished.wait(120)
        row = archive.index.exports.get("feedfacecafebeef")
        assert (row["state"], row["message"]) == ("done", "")
    finally:
        archive.close()
    folder = config.data_dir / "exports"
    assert sorted(p.name for p in folder.iterdir()) == ["feedfacecafebeef.zip"]
    with zipfile.ZipFile(folder / "feedfacecafebeef.zip") as package:
        assert package.testzip() is None
        names = package.namelist()
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
