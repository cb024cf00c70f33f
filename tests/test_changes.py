"""One store for every door, and the change feed it writes in the same
transaction: what follows a store (forwarding) is read from the feed, so
nothing stored is lost to a crash or a failure after the commit, and nothing
is forwarded twice (issue #18)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicomnode.config import Config, RemoteAE, RouteRule
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import KEPT_APART, Incoming, Ingestor, Outcome
from dicomnode.jobs.forwarding import CONSUMER, Forwarder
from dicomnode.node import open_archive
from dicomnode.ops.admin import release_quarantined
from dicomnode.ops.samples import PATIENTS, UID_ROOT, sample_file, xa_instance
from storage.archive import Archive, DuplicatePolicy
from storage.forwarding import forward_queue
from storage.keys import Level
from storage.query import Query
from storage.schema import changes, linkage
from tests.conftest import REMOTES, free_port, incoming, make_config
from tests.postgres import LocalPostgres
from tests.test_forwarding import Destination
from tests.test_quarantine import hold


class Killed(BaseException):
    """The process dies here: nothing after this line runs (not an Exception,
    so no handler of the node's catches it)."""


def routed(config: Config, port: int, **route: str) -> Config:
    """``config`` forwarding what ``route`` matches to a research archive on ``port``."""
    return replace(
        config,
        remote_aes=(*REMOTES, RemoteAE("RESEARCH", "127.0.0.1", port, "research archive")),
        routes=(RouteRule("RESEARCH", **route),),
    )


def angio(patient=PATIENTS[0], seed: int = 0, study: str | None = None):
    return xa_instance(
        patient, frames=2, rows=16, cols=16, seed=seed, study_uid=study or generate_uid(UID_ROOT)
    )


def stored_uids(archive: Archive, **keys: str) -> list[str]:
    rows = archive.index.find(Query(level=Level.IMAGE, keys={"SOPInstanceUID": "", **keys}))
    return [row["SOPInstanceUID"] for row in rows]


def queued(archive: Archive) -> Counter[str]:
    """Forwarding rows per SOP Instance UID, whatever their state."""
    with archive.index.engine.connect() as conn:
        return Counter(conn.execute(select(forward_queue.c.sop_instance_uid)).scalars())


def count(archive: Archive, table) -> int:
    with archive.index.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture
def destination() -> Destination:
    peer = Destination(free_port())
    yield peer
    peer.server.shutdown()


@pytest.fixture
def node(tmp_path: Path, destination: Destination):
    config = routed(make_config(tmp_path), destination.server.server_address[1])
    archive = open_archive(config)
    yield config, archive, Ingestor(config, archive)
    archive.close()


def test_a_queue_that_fails_does_not_fail_a_stored_instance(node, monkeypatch) -> None:
    """Queueing raises: the instance is stored, so its answer is Success;
    the forward waits in the feed (the cursor did not move) and is queued
    once queueing works again."""
    config, archive, ingestor = node

    def broken(*_: object, **__: object) -> int:
        raise RuntimeError("forwarding queue unreachable")

    monkeypatch.setattr("storage.forwarding.ForwardQueue.enqueue", broken)
    monkeypatch.setattr("dicomnode.jobs.forwarding.enqueue_in", broken)
    result = ingestor.ingest(incoming(angio(), calling_ae="BISHKEK_CATH"))
    assert (result.outcome, result.status) == (Outcome.STORED, 0x0000)
    (uid,) = stored_uids(archive)
    with pytest.raises(RuntimeError):
        Forwarder(config, archive).drain()
    assert archive.index.changes.position(CONSUMER) == 0 and queued(archive) == {}
    monkeypatch.undo()
    assert Forwarder(config, archive).drain() == 1
    assert queued(archive) == {uid: 1}


def test_a_failing_audit_after_the_store_does_not_fail_it(node, monkeypatch) -> None:
    """What follows the commit (the audit record of an instance kept apart)
    cannot turn a stored instance into a failure."""
    _, archive, ingestor = node
    study = generate_uid(UID_ROOT)
    assert (
        ingestor.ingest(incoming(angio(PATIENTS[0], 1, study), calling_ae="BISHKEK_CATH")).status
        == 0
    )

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("audit trail unreachable")

    monkeypatch.setattr(archive.index.audit, "record", broken)
    # Another child under the same study UID: kept apart, and audited as such.
    other = ingestor.ingest(incoming(angio(PATIENTS[1], 2, study), calling_ae="BISHKEK_CATH"))
    assert (other.outcome, other.status) == (Outcome.STORED, KEPT_APART)  # a warning
    assert len(stored_uids(archive)) == 2


def test_killed_between_the_commit_and_the_queue_nothing_is_lost(
    node, destination: Destination, monkeypatch
) -> None:
    """The process dies right after the store committed (before anything
    queued it): the next life forwards it, once."""
    config, archive, ingestor = node

    def killed(*_: object, **__: object) -> int:
        raise Killed

    monkeypatch.setattr("storage.forwarding.ForwardQueue.enqueue", killed)
    # The door never answered: whatever it did, the store committed.
    with contextlib.suppress(Killed):
        ingestor.ingest(incoming(angio(), calling_ae="BISHKEK_CATH"))
    monkeypatch.undo()
    (uid,) = stored_uids(archive)
    archive.close()

    archive = open_archive(config)  # the next life
    try:
        assert Forwarder(config, archive).run_once() == {"sent": 1, "waiting": 0}
        assert Forwarder(config, archive).run_once() == {"sent": 0, "waiting": 0}
    finally:
        archive.close()
    assert destination.received == [uid]


def test_a_consumer_killed_mid_batch_applies_it_once_later(node, monkeypatch) -> None:
    """Killed while queueing a batch: neither the rows nor the cursor move;
    the next pass queues the whole batch, each change once."""
    config, archive, ingestor = node
    for seed in range(3):
        assert ingestor.ingest(incoming(angio(seed=seed), calling_ae="BISHKEK_CATH")).status == 0

    def killed(*_: object, **__: object) -> int:
        raise Killed

    monkeypatch.setattr("dicomnode.jobs.forwarding.enqueue_in", killed)
    with pytest.raises(Killed):
        Forwarder(config, archive).drain()
    monkeypatch.undo()
    assert queued(archive) == {} and archive.index.changes.position(CONSUMER) == 0
    assert Forwarder(config, archive).drain() == 3
    assert sorted(queued(archive).items()) == sorted((uid, 1) for uid in stored_uids(archive))


def test_a_resent_duplicate_is_forwarded_once(node, destination: Destination) -> None:
    config, archive, ingestor = node
    xa = angio()
    assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).outcome is Outcome.STORED
    forwarder = Forwarder(config, archive)
    assert forwarder.run_once()["sent"] == 1
    for _ in range(2):  # re-sent after it was forwarded, and again
        assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).outcome is Outcome.DUPLICATE
    assert forwarder.run_once() == {"sent": 0, "waiting": 0}
    assert destination.received == stored_uids(archive)
    assert archive.index.changes.latest() == 1  # a duplicate is no change


def test_a_released_held_instance_is_forwarded(tmp_path: Path, destination: Destination) -> None:
    config = routed(make_config(tmp_path), destination.server.server_address[1])
    archive = open_archive(config)
    try:
        uid = hold(Ingestor(config, archive))
        assert archive.index.changes.latest() == 0  # held: not stored, nothing to forward
        forwarder = Forwarder(config, archive)
        assert forwarder.run_once() == {"sent": 0, "waiting": 0}
        (released,) = release_quarantined(config, archive, [uid], reviewed=True)
        assert released.done and archive.index.quarantined() == []
        assert list(archive.held.listing()) == []  # its held copy went with the store
        assert forwarder.run_once() == {"sent": 1, "waiting": 0}
    finally:
        archive.close()
    assert destination.received == [uid]


@pytest.mark.slow
def test_a_plan_report_the_node_made_is_forwarded(tmp_path: Path, destination: Destination) -> None:
    """`Ingestor.ingest_own` (a plan's SR) goes through the same store and
    feed: a route for SR forwards the report and nothing else."""
    from viewer.planning.report import measurement_report, observer_name
    from viewer.planning.worksheet import Slot

    config = routed(make_config(tmp_path), destination.server.server_address[1], modalities="SR")
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        data, syntax = split_file(sample_file("color3d_jpeg_baseline.dcm").read_bytes())
        assert ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
        (image,) = stored_uids(archive)
        clip = dcmread(BytesIO(archive.read(image)), stop_before_pixels=True)
        sr = measurement_report(
            [clip],
            [Slot("ASD-MAX-DIAMETER", 14.2, image, 1)],
            defect="secundum ASD",
            observer=observer_name("cardiologist"),
        )
        assert ingestor.ingest_own(sr, issuer="NCC Bishkek").outcome is Outcome.STORED
        assert Forwarder(config, archive).run_once() == {"sent": 1, "waiting": 0}
    finally:
        archive.close()
    assert destination.received == [str(sr.SOPInstanceUID)]


def test_a_store_that_fails_leaves_no_identity_and_no_change(node, monkeypatch) -> None:
    """The blob cannot be written: nothing of the instance stays behind,
    neither its study's sealed identity nor a change to forward."""
    _, archive, ingestor = node

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive.blobs, "put", full)
    result = ingestor.ingest(incoming(angio(), calling_ae="BISHKEK_CATH"))
    assert result.outcome is Outcome.REJECTED
    assert count(archive, linkage) == 0
    assert count(archive, changes) == 0
    monkeypatch.undo()
    assert ingestor.ingest(incoming(angio(), calling_ae="BISHKEK_CATH")).status == 0
    assert count(archive, linkage) == 1 and count(archive, changes) == 1


def test_a_held_instance_keeps_its_sealed_identity(node) -> None:
    _, archive, ingestor = node
    uid = hold(ingestor)
    (row,) = archive.index.quarantined(uid)
    ((study, pseudonym, _),) = archive.index.linkage_for(row["studyinstanceuid"])
    assert (study, pseudonym) == (row["studyinstanceuid"], row["pseudonym"])


def test_the_change_says_what_routes_match_on(tmp_path: Path) -> None:
    config = make_config(tmp_path, duplicates=DuplicatePolicy.REPLACE)
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        xa = angio()
        assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).outcome is Outcome.STORED
        assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).outcome is Outcome.REPLACED
        first, second = archive.index.changes.since()
        (row,) = archive.index.find(
            Query(
                level=Level.IMAGE,
                keys={"SOPInstanceUID": "", "StudyInstanceUID": "", "SeriesInstanceUID": ""},
            )
        )
    finally:
        archive.close()
    assert (first.kind, second.kind) == ("stored", "replaced") and first.id < second.id
    assert (first.sop_instance_uid, first.study_uid, first.series_uid) == (
        row["SOPInstanceUID"],
        row["StudyInstanceUID"],
        row["SeriesInstanceUID"],
    )
    assert (first.issuer, first.modality) == ("NCC Bishkek", "XA")


def test_processes_storing_and_draining_at_once_queue_each_change_once(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    """Two archives (two node processes) on one PostgreSQL index: two stores
    and two forwarders at once. Every instance stored is queued exactly
    once: no cursor passes a change still being committed, no two apply one
    batch."""
    config = routed(make_config(tmp_path, index_url=postgres.database()), free_port())
    archives = [open_archive(config), open_archive(config)]
    storing = [True, True]
    errors: list[BaseException] = []

    def store(n: int) -> None:
        try:
            ingestor = Ingestor(config, archives[n])
            study = generate_uid(UID_ROOT)
            for seed in range(15):
                xa = angio(PATIENTS[n], 100 * n + seed, study)
                assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
        except BaseException as exc:
            errors.append(exc)
        finally:
            storing[n] = False

    def drain(n: int) -> None:
        try:
            forwarder = Forwarder(config, archives[n % 2])
            while any(storing):
                forwarder.drain()
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=drain, args=(n,)) for n in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert errors == []
        Forwarder(config, archives[0]).drain()
        stored = stored_uids(archives[0])
        assert len(stored) == 30
        assert queued(archives[0]) == dict.fromkeys(stored, 1)
        assert archives[0].index.changes.position(CONSUMER) == archives[0].index.changes.latest()
    finally:
        for archive in archives:
            archive.close()
