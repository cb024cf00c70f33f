"""Many node processes, one archive: migrations on both back ends, and
concurrent stores of the same instances from several processes on one
PostgreSQL index and one storage path (issue #9)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.node import open_archive
from dicomnode.ops.check import verify
from dicomnode.ops.samples import PATIENTS, UID_ROOT
from storage.blobs import open_stores
from storage.index import Index
from storage.migrate import _config, current
from storage.schema import instances, metadata, patients
from tests.conftest import DCMTK_ENV, incoming, make_config, refusing_port, served
from tests.postgres import LocalPostgres
from tests.s3server import CREDENTIALS, LocalS3
from tests.test_cli import DICOMNODE
from tests.test_ingest import instance
from tests.test_jobs import wait_for


def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(None)).get_current_head()


def test_migrations_make_the_schema_the_code_declares(any_index_config: Config) -> None:
    archive = open_archive(any_index_config)
    try:
        assert current(archive.index.engine) == _head()
        with archive.index.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert differences == []
        # Opening again (a second process starting) migrates nothing and fails nothing.
        open_archive(any_index_config).close()
    finally:
        archive.close()


def test_an_index_from_before_migrations_is_stamped_then_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # the schema of that time, as create_all made it
        command.upgrade(_config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            insert(patients).values(issuerofpatientid="NCC Bishkek", patient_key="CHD-1", pk=7)
        )
    engine.dispose()
    index = Index(url)
    try:
        assert current(index.engine) == _head()
        with index.engine.connect() as conn:
            assert conn.execute(select(patients.c.pk)).scalars().all() == [7]
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        index.close()


def test_the_audit_trail_is_append_only_in_postgresql_too(postgres: LocalPostgres) -> None:
    index = Index(postgres.database(), b"k" * 32)
    try:
        index.audit.record("login", user="admin", source="127.0.0.1")
        for statement in ("UPDATE audit_log SET outcome = 8", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"), index.engine.begin() as conn:
                conn.execute(text(statement))
        assert index.audit.verify().ok
    finally:
        index.close()


def _studies(size: int) -> list:
    """Two patients' studies of three series each, ``size`` instances in all."""
    studies = [generate_uid(UID_ROOT) for _ in range(2)]
    series = [[generate_uid(UID_ROOT) for _ in range(3)] for _ in range(2)]
    out = []
    for n in range(size):
        ds = instance(
            PATIENTS[n % 2],
            StudyInstanceUID=studies[n % 2],
            SeriesInstanceUID=series[n % 2][n % 3],
            InstanceNumber=n + 1,
        )
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.append(ds)
    return out


@pytest.mark.slow
def test_two_processes_storing_the_same_instances_at_once_agree(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    """Two archives (as two node processes have: own engine, own writer lock)
    on one PostgreSQL and one data folder; two threads each store the same
    study in different orders. No failure, no duplicate row, every copy counted."""
    config = make_config(tmp_path, index_url=postgres.database())
    datasets = _studies(40)
    archives = [open_archive(config), open_archive(config)]
    failures: list[int] = []

    def send(archive, seed: int) -> None:
        ingestor = Ingestor(config, archive)
        order = random.Random(seed).sample(datasets, len(datasets))
        for ds in order:
            result = ingestor.ingest(incoming(ds))
            if result.status != 0:
                failures.append(result.status)

    threads = [threading.Thread(target=send, args=(archives[n % 2], n)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        stats = archives[0].index.stats()
        assert (stats["patients"], stats["studies"], stats["series"]) == (2, 2, 6)
        assert stats["instances"] == 40 and stats["duplicates_received"] == 3 * 40
        with archives[0].index.engine.connect() as conn:
            copies = conn.execute(select(func.min(instances.c.copies_received))).scalar_one()
        assert copies == 4
        assert verify(archives[0]).clean
    finally:
        for archive in archives:
            archive.close()


def serve_env(tmp_path: Path, index_url: str, log_level: str = "ERROR") -> dict[str, str]:
    """The environment of a `dicomnode serve` on ``index_url``, any calling AE."""
    return {
        **DCMTK_ENV,
        "DICOMNODE_CONFIG": os.devnull,
        "DICOMNODE_INDEX_URL": index_url,
        "DICOMNODE_DATA_DIR": str(tmp_path / "var"),
        "DICOMNODE_KEY_DIR": str(tmp_path / "secrets"),
        "DICOMNODE_MIN_FREE_DISK_MB": "0",
        "DICOMNODE_REQUIRE_KNOWN_AE": "false",
        "DICOMNODE_LOG_LEVEL": log_level,
    }


def settled(env: dict[str, str]) -> None:
    """Wait until deferred OCR has read every instance the nodes answered."""

    def waiting() -> int:
        stats = subprocess.run(
            [*DICOMNODE, "stats", "--json"], env=env, capture_output=True, text=True, check=True
        )
        return int(json.loads(stats.stdout)["awaiting_ocr"])

    wait_for(lambda: waiting() == 0, what="deferred OCR")


def _serve(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*DICOMNODE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.parametrize("storage", ["shared folder", "object store"])
def test_two_serve_processes_share_one_postgresql_and_one_storage(
    tmp_path: Path,
    postgres: LocalPostgres,
    storage: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two `dicomnode serve` started at the same moment (migrations and key
    creation race), then two dcmsend to each, all sending the same studies."""
    folder = tmp_path / "study"
    folder.mkdir()
    for n, ds in enumerate(_studies(60)):
        ds.save_as(folder / f"{n:03d}.dcm", enforce_file_format=True)
    shared = serve_env(tmp_path, postgres.database())
    if storage == "object store":
        s3: LocalS3 = request.getfixturevalue("s3")
        bucket = s3.bucket("chd-" + uuid.uuid4().hex[:12])
        shared |= CREDENTIALS
        shared["DICOMNODE_BLOB_URL"] = f"s3://{bucket}/archive"
        shared["DICOMNODE_S3_ENDPOINT_URL"] = s3.endpoint
    nodes = [
        _serve({**shared, "DICOMNODE_DIMSE_PORT": "0", "DICOMNODE_HTTP_PORT": "0"})
        for _ in range(2)
    ]
    try:
        ports = []
        for process in nodes:  # the banner is printed once both services listen
            banner = process.stdout.readline()
            assert "DICOM port" in banner, process.stderr.read()
            ports.append(served(banner)[0])
        senders = [
            subprocess.Popen(
                [
                    "dcmsend",
                    "-aec",
                    "CHDNODE",
                    "127.0.0.1",
                    str(port),
                    str(folder),
                    "--scan-directories",
                ],
                env=DCMTK_ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for port in ports * 2
        ]
        for sender in senders:
            _, errors = sender.communicate(timeout=300)
            assert sender.returncode == 0, errors
        settled(shared)  # answered first, read by OCR after: until none waits
    finally:
        for process in nodes:
            process.terminate()
            process.wait(timeout=60)
    config = make_config(
        tmp_path,
        index_url=shared["DICOMNODE_INDEX_URL"],
        blob_url=shared.get("DICOMNODE_BLOB_URL", ""),
        s3_endpoint_url=shared.get("DICOMNODE_S3_ENDPOINT_URL", ""),
    )
    for name, value in CREDENTIALS.items():  # for this process's own look at the store
        monkeypatch.setenv(name, value)
    archive = open_archive(config)
    try:
        stats = archive.index.stats()
        assert (stats["patients"], stats["studies"], stats["series"]) == (2, 2, 6)
        assert stats["instances"] == 60 and stats["duplicates_received"] == 3 * 60
        assert verify(archive).clean
        # Both processes wrote the audit trail at once: one unbroken chain.
        assert archive.index.audit.verify().ok
        starts = [r for r in archive.index.audit.rows() if r["event"] == "node-start"]
        assert len(starts) == 2
        assert len(list((tmp_path / "secrets").glob("deid.key"))) == 1
        assert list((tmp_path / "secrets").glob(".new-key-*")) == []
    finally:
        archive.close()


@pytest.mark.slow
def test_forwarding_rows_are_claimed_by_one_process_each(any_index_config: Config) -> None:
    """Four claimers on two archives (as two processes) take 500 due rows:
    each row once, none left behind."""
    config = any_index_config
    archives = [open_archive(config), open_archive(config)]
    archives[0].index.forwarding.enqueue([f"2.25.{n}" for n in range(500)], "PACS")
    taken: list[list[int]] = [[] for _ in range(4)]

    def drain(n: int) -> None:
        queue = archives[n % 2].index.forwarding
        while rows := queue.claim(f"host{n}-{n}"):
            taken[n].extend(row["pk"] for row in rows)

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [pk for claimed in taken for pk in claimed]
        assert len(every) == 500 and len(set(every)) == 500
        assert archives[1].index.forwarding.claim("late-1") == []  # all held by live leases
    finally:
        for archive in archives:
            archive.close()


def _lapse(archive, table: str) -> None:
    with archive.index.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {table} SET claimed_until = :past"),
            {"past": datetime(2000, 1, 1, tzinfo=UTC)},
        )


@pytest.mark.slow
def test_a_lapsed_claim_passes_to_another_process(any_index_config: Config) -> None:
    archive = open_archive(any_index_config)
    try:
        queue, jobs = archive.index.forwarding, archive.index.exports
        queue.enqueue(["2.25.1"], "PACS")
        assert len(queue.claim("pacs-a-1")) == 1 and queue.claim("pacs-b-2") == []
        jobs.add("job1", "zarina", {}, False)
        assert [row["id"] for row in jobs.claim("pacs-a-1", 1)] == ["job1"]
        assert jobs.claim("pacs-b-2", 1) == []
        assert jobs.progress("job1", "pacs-a-1", 1, 10)
        _lapse(archive, "forward_queue")
        _lapse(archive, "exports")  # pacs-a stopped renewing: its host went away
        assert [row["sop_instance_uid"] for row in queue.claim("pacs-b-2")] == ["2.25.1"]
        assert [row["id"] for row in jobs.claim("pacs-b-2", 1)] == ["job1"]
        # The first runner, if it comes back, has lost the job: it stops, and
        # its outcome does not overwrite the new runner's.
        assert not jobs.progress("job1", "pacs-a-1", 2, 10)
        jobs.finish("job1", "pacs-a-1", "failed", "late")
        assert jobs.get("job1")["state"] == "running"
        jobs.request_cancel("job1")  # asked through any process
        assert not jobs.progress("job1", "pacs-b-2", 3, 10)
        jobs.finish("job1", "pacs-b-2", "cancelled")
        assert jobs.get("job1")["state"] == "cancelled"
    finally:
        archive.close()


@pytest.mark.slow
def test_plans_saved_at_once_from_two_processes_get_distinct_versions(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    config = make_config(tmp_path, index_url=postgres.database())
    archives = [open_archive(config), open_archive(config)]
    versions: list[int] = []

    def save(n: int) -> None:
        plans = archives[n % 2].index.plans
        for _ in range(10):
            versions.append(plans.add("2.25.7", "ASD", {"note": n}, f"doctor{n}", None))

    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(versions) == list(range(1, 41))
    finally:
        for archive in archives:
            archive.close()


@pytest.mark.slow
def test_stores_go_on_when_postgresql_restarts(tmp_path: Path) -> None:
    """The pool's connections die with the server: the next store is retried
    on a new connection instead of failing (no pre-ping round trip)."""
    server = LocalPostgres().start()
    try:
        config = make_config(tmp_path, index_url=server.database())
        archive = open_archive(config)
        try:
            ingestor = Ingestor(config, archive)
            first, second = _studies(2)
            assert ingestor.ingest(incoming(first)).status == 0
            server.restart()
            assert ingestor.ingest(incoming(second)).status == 0
            assert archive.index.stats()["instances"] == 2
        finally:
            archive.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_health_check_fails_while_the_index_or_the_store_is_out_of_reach(
    tmp_path: Path, s3: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load balancer polls /healthz: 503 naming the part (never a path or
    a URL) while PostgreSQL is down or the object store cannot be reached."""
    from viewer import create_app

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    server = LocalPostgres().start()
    bucket = s3.bucket("chd-" + uuid.uuid4().hex[:12])
    config = make_config(
        tmp_path,
        index_url=server.database(),
        blob_url=f"s3://{bucket}/archive",
        s3_endpoint_url=s3.endpoint,
    )
    archive = open_archive(config)
    try:
        client = create_app(config, archive, b"k" * 32).test_client()
        assert client.get("/healthz").status_code == 200
        server.stop()
        down = client.get("/healthz")
        assert down.status_code == 503 and down.get_json()["unavailable"] == ["index"]
        assert "127.0.0.1" not in down.get_data(as_text=True)
        with refusing_port() as port:
            nowhere = replace(config, s3_endpoint_url=f"http://127.0.0.1:{port}")
            cut_off = open_stores(nowhere.blob_url, tmp_path, nowhere.s3_endpoint_url)
            assert cut_off[0].problem() is not None and archive.blobs.problem() is None
    finally:
        archive.close()
        server.stop()


def test_several_receivers_need_postgresql_and_share_the_caps(tmp_path: Path) -> None:
    from dicomnode.cli.receivers import shared
    from dicomnode.config import ConfigError, validate

    with pytest.raises(ConfigError, match="need a PostgreSQL"):
        validate(make_config(tmp_path, receivers=2))
    with pytest.raises(ConfigError, match="receivers"):
        validate(make_config(tmp_path, receivers=-1))
    assert make_config(tmp_path).receiving_processes == 1  # SQLite: one
    cores = os.cpu_count() or 1
    pg = make_config(tmp_path, index_url="postgresql://x@localhost/db")
    assert pg.receiving_processes == min(cores, 4)
    three = shared(make_config(tmp_path, index_url="postgresql://x@localhost/db", receivers=3))
    assert (three.max_connections, three.max_associations) == (67, 6)  # of 200 and 16
    assert three.max_pending_per_address == 3  # of 8
    assert shared(make_config(tmp_path)).max_connections == 200


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in text:
            found.append(int(status.parent.name))
    return found


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on TCP `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    try:
        held = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:
        return False
    return any(f"socket:[{inode}]" in held for inode in inodes)


@pytest.mark.slow
@pytest.mark.peers
def test_receivers_share_the_port_and_die_with_the_first(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    """`serve` with receivers = 2: associations land on both processes,
    every instance is stored once, and a SIGKILL of the first process takes
    the other with it (no orphan keeps the port)."""
    folder = tmp_path / "study"
    folder.mkdir()
    for n, ds in enumerate(_studies(24)):
        ds.save_as(folder / f"{n:03d}.dcm", enforce_file_format=True)
    env = {
        **serve_env(tmp_path, postgres.database(), log_level="INFO"),
        "DICOMNODE_RECEIVERS": "2",
        "DICOMNODE_DIMSE_PORT": "0",
        "DICOMNODE_HTTP_PORT": "0",
    }
    first = _serve(env)
    try:
        banner = first.stdout.readline()
        assert "2 receiving processes" in banner, banner
        port = served(banner)[0]
        (receiver,) = wait_for(lambda: _children(first.pid), what="the receiver")
        # The kernel hands connections only to sockets already listening.
        wait_for(lambda: _listens(receiver, port), what="the receiver listening")
        # One association per file: the kernel spreads them over both.
        for path in sorted(folder.iterdir()):
            sent = subprocess.run(
                ["dcmsend", "-aec", "CHDNODE", "127.0.0.1", str(port), str(path)],
                env=DCMTK_ENV,
                capture_output=True,
                text=True,
            )
            assert sent.returncode == 0, sent.stderr
        settled(env)
        first.kill()  # SIGKILL: no chance to stop the receiver itself
        first.wait(timeout=60)
        wait_for(lambda: not Path(f"/proc/{receiver}").exists(), what="the receiver's end")
        log = first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    handled = set(re.findall(r"dicomnode\.dimse\.server\[(\d+)\]: association from", log))
    assert handled == {str(first.pid), str(receiver)}, log[-3000:]
    config = make_config(tmp_path, index_url=env["DICOMNODE_INDEX_URL"])
    archive = open_archive(config)
    try:
        assert archive.index.stats()["instances"] == 24
    finally:
        archive.close()


def test_a_receiver_whose_serve_has_ended_does_not_start(tmp_path: Path) -> None:
    """A receiver started by a `serve` that died before the receiver could
    ask to die with it (the parent-death signal) ends at once, serving
    nothing, instead of living on as an orphan on the shared port."""
    sqlite = f"sqlite:///{tmp_path / 'index.sqlite'}"
    env = {**serve_env(tmp_path, sqlite), "DICOMNODE_DIMSE_PORT": "0", "DICOMNODE_HTTP_PORT": "0"}
    gone = subprocess.run(
        [*DICOMNODE, "serve", "--receiver", "1"],  # pid 1 is not its parent
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gone.returncode != 0
    assert "the serve that started this receiver has ended" in gone.stderr
    assert not (tmp_path / "var").exists() or not list((tmp_path / "var").rglob("*.dcm"))
