"""Stores and forwarding that stay whole when a commit fails, a process
crashes, a lease lapses or two containers share a host name."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt
from sqlalchemy import select

from dicomnode.config import Config, to_toml
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.jobs.forwarding import Forwarder
from dicomnode.node import Node, open_archive
from dicomnode.ops.check import _compare, reconcile, verify
from dicomnode.ops.check import _rows as _rows_of
from dicomnode.ops.samples import PATIENTS, UID_ROOT
from dicomnode.status import PROCESSING_FAILURE, SUCCESS
from storage.archive import Archive
from storage.forwarding import PENDING, forward_queue
from storage.keys import Level
from storage.leases import dead_here, of_this_host, process_name
from storage.query import Query
from tests.conftest import free_port, incoming, make_config
from tests.test_changes import angio, routed, stored_uids
from tests.test_forwarding import Destination
from tests.test_ingest import instance


class Killed(BaseException):
    """The process dies here (no handler of the node's catches it)."""


LATER = 10**10  # `reconcile`'s clock: long after every grace period


def _versions(seed: int):
    """Two versions of one instance: same UIDs, other content."""
    first = instance(PATIENTS[0], InstanceNumber=1)
    first.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    second = copy.deepcopy(first)
    second.InstanceNumber = 2 + seed
    return first, second


def _replacing(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> tuple[Archive, Config]:
    overrides: dict[str, object] = {"duplicates": "replace"}
    if kind == "s3":
        from tests.test_s3 import _s3_config

        config = _s3_config(tmp_path, request.getfixturevalue("s3"), **overrides)
    else:
        config = make_config(tmp_path, **overrides)
    return open_archive(config), config


@pytest.fixture(params=["file", "s3"])
def replacing(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if request.param == "s3":
        from tests.s3server import CREDENTIALS

        for name, value in CREDENTIALS.items():
            monkeypatch.setenv(name, value)
    archive, config = _replacing(tmp_path, request.param, request)
    yield archive, Ingestor(config, archive)
    archive.close()


def _blob_keys(archive: Archive) -> list[str]:
    return sorted(key for key, _ in archive.blobs.listing())


@pytest.mark.parametrize("failure", [RuntimeError, Killed])
def test_a_replace_that_does_not_commit_keeps_the_stored_version(
    replacing, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    """The change row fails (an error: 0110 to the sender; a crash: no
    answer): the index still holds the first version, and so does the store."""
    archive, ingestor = replacing
    first, second = _versions(0)
    assert ingestor.ingest(incoming(first)).status == SUCCESS
    (uid,) = stored_uids(archive)
    before = archive.read(uid)

    def broken(*_: object, **__: object) -> None:
        raise failure("change feed unreachable")

    monkeypatch.setattr("storage.index.record_change", broken)
    if failure is Killed:
        with pytest.raises(Killed):
            ingestor.ingest(incoming(second))
    else:
        assert ingestor.ingest(incoming(second)).status == PROCESSING_FAILURE
    monkeypatch.undo()
    assert archive.read(uid) == before
    assert verify(archive).clean
    # The replacement never acknowledged: an orphan, set aside once old.
    report = reconcile(archive, repair=True, now=LATER)
    assert len(report.orphans) <= 1 and not report.missing
    assert archive.read(uid) == before and verify(archive).clean


def test_a_committed_replace_is_read_by_uid_and_leaves_one_blob(replacing) -> None:
    archive, ingestor = replacing
    first, second = _versions(0)
    third = copy.deepcopy(second)
    third.InstanceNumber = 9
    assert ingestor.ingest(incoming(first)).status == SUCCESS
    (uid,) = stored_uids(archive)
    versions = [archive.read(uid)]
    for later in (second, third):
        assert ingestor.ingest(incoming(later)).status == SUCCESS
        versions.append(archive.read(uid))
        assert versions[-1] != versions[-2]
        assert len(_blob_keys(archive)) == 1  # the superseded blob is gone
    assert verify(archive).clean
    assert reconcile(archive, repair=True, now=LATER).clean


class _Chunks:
    """A `storage.blobs.Stream` of bytes held in memory, in small chunks."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def chunks(self):
        return (self.data[i : i + 1000] for i in range(0, len(self.data), 1000))


def test_a_streamed_replacement_that_does_not_commit_keeps_the_stored_version(
    replacing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large instance (written from the spool a chunk at a time) too."""
    archive, ingestor = replacing
    first, second = _versions(0)
    calls: list[tuple] = []
    store = archive.store
    monkeypatch.setattr(archive, "store", lambda *a, **k: calls.append(a) or store(*a, **k))
    assert ingestor.ingest(incoming(first)).status == SUCCESS
    assert ingestor.ingest(incoming(second)).status == SUCCESS
    (uid,) = stored_uids(archive)
    (record_1, data_1), (record_2, data_2) = [c[:2] for c in calls]
    assert archive.store(record_1, _Chunks(data_1)).value == "replaced"
    assert archive.read(uid) == data_1 and len(_blob_keys(archive)) == 1

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("change feed unreachable")

    monkeypatch.setattr("storage.index.record_change", broken)
    with pytest.raises(RuntimeError):
        archive.store(record_2, _Chunks(data_2))
    assert archive.read(uid) == data_1 and verify(archive).clean


def test_a_crash_after_the_replace_committed_leaves_an_orphan_check_sets_aside(
    replacing, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, ingestor = replacing
    first, second = _versions(0)
    assert ingestor.ingest(incoming(first)).status == SUCCESS
    (uid,) = stored_uids(archive)
    old_keys = _blob_keys(archive)

    def dies(*_: object) -> None:
        raise Killed

    monkeypatch.setattr(archive.blobs, "delete", dies)
    with pytest.raises(Killed):
        ingestor.ingest(incoming(second))
    monkeypatch.undo()
    replaced = archive.read(uid)
    assert verify(archive).damaged == [] and not verify(archive).missing
    report = reconcile(archive, repair=True, now=LATER)
    assert report.orphans == old_keys and not report.missing
    assert archive.read(uid) == replaced and verify(archive).clean


def test_a_check_running_while_an_instance_is_replaced_reports_nothing_missing(
    replacing,
) -> None:
    archive, ingestor = replacing
    first, second = _versions(0)
    assert ingestor.ingest(incoming(first)).status == SUCCESS
    rows = list(_rows_of(archive))  # the check read the rows, then the store ran
    assert ingestor.ingest(incoming(second)).status == SUCCESS
    report = _compare(archive, rows, repair=True, now=LATER)
    assert report.missing == [] and report.orphans == []
    assert verify(archive).clean


# Forwarding ----------------------------------------------------------------


@pytest.fixture
def forwarding(tmp_path: Path):
    destination = Destination(free_port())
    config = routed(make_config(tmp_path), destination.server.server_address[1])
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    study = generate_uid(UID_ROOT)
    for seed in range(3):
        assert ingestor.ingest(incoming(angio(PATIENTS[0], seed, study))).status == SUCCESS
    try:
        yield config, archive, destination, study
    finally:
        destination.server.shutdown()
        archive.close()


def _rows(archive: Archive) -> list[dict]:
    with archive.index.engine.connect() as conn:
        query = select(forward_queue).order_by(forward_queue.c.pk)
        return [dict(r._mapping) for r in conn.execute(query)]


def _lapse_every_lease(archive: Archive) -> None:
    with archive.index.engine.begin() as conn:
        conn.execute(
            forward_queue.update().values(claimed_until=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_a_replacement_arriving_while_its_instance_is_sent_is_queued(forwarding) -> None:
    _, archive, _, _ = forwarding
    queue = archive.index.forwarding
    uid = stored_uids(archive)[0]
    assert queue.enqueue([uid], "RESEARCH") == 1
    assert queue.enqueue([uid], "RESEARCH") == 0  # waiting, not claimed: once
    assert [r["sop_instance_uid"] for r in queue.claim("sender-1-a")] == [uid]
    # Being sent now (the old version): the replacement must follow it.
    assert queue.enqueue([uid], "RESEARCH") == 1
    assert queue.enqueue([uid], "RESEARCH") == 0


def _on_store(destination: Destination, before) -> None:
    """Call ``before(event)`` as each instance arrives, before it is kept."""
    destination.server.unbind(evt.EVT_C_STORE, destination.store)

    def handler(event: evt.Event) -> int:
        before(event)
        return destination.store(event)

    destination.server.bind(evt.EVT_C_STORE, handler)


def test_a_sender_whose_lease_lapsed_stops_and_leaves_the_rows_to_their_new_owner(
    forwarding,
) -> None:
    config, archive, destination, _ = forwarding
    forwarder = Forwarder(config, archive)
    forwarder.drain()
    taken: list[list[dict]] = []

    def slow(_event: evt.Event) -> None:  # the first send outlives the lease
        if not taken:
            _lapse_every_lease(archive)
            taken.append(archive.index.forwarding.claim("other-7.b"))

    _on_store(destination, slow)
    forwarder.run_once()
    assert len(destination.received) == 1  # nothing the other process holds
    assert len(taken[0]) == 3
    rows = _rows(archive)
    assert [(r["state"], r["claimed_by"]) for r in rows] == [(PENDING, "other-7.b")] * 3


def test_a_sender_renews_its_batch_so_no_other_process_takes_it(forwarding) -> None:
    config, archive, destination, _ = forwarding
    forwarder = Forwarder(config, archive)
    forwarder.drain()
    stolen: list[list[dict]] = []

    def slow(_event: evt.Event) -> None:
        if len(destination.received) == 0:
            _lapse_every_lease(archive)  # slow: the batch's lease ran out meanwhile
        elif len(destination.received) == 1:
            stolen.append(archive.index.forwarding.claim("other-7.b"))

    _on_store(destination, slow)
    assert forwarder.run_once() == {"sent": 3, "waiting": 0}
    assert stolen == [[]]
    assert len(destination.received) == len(set(destination.received)) == 3
    assert archive.index.forwarding.counts() == {("RESEARCH", "done"): 3}


def test_a_stale_owner_neither_finishes_nor_retries_another_owners_row(forwarding) -> None:
    _, archive, _, _ = forwarding
    queue = archive.index.forwarding
    uid = stored_uids(archive)[0]
    queue.enqueue([uid], "RESEARCH")
    (mine,) = queue.claim("first-1-a")
    _lapse_every_lease(archive)
    (theirs,) = queue.claim("second-1-b")
    queue.done(mine["pk"], owner="first-1-a")
    queue.retry(mine["pk"], 1, "late", timedelta(seconds=30), owner="first-1-a")
    (row,) = _rows(archive)
    assert (row["state"], row["claimed_by"], row["attempts"]) == (PENDING, "second-1-b", 0)
    queue.done(theirs["pk"], owner="second-1-b")
    assert _rows(archive)[0]["state"] == "done"


def test_a_stop_between_instances_gives_the_unsent_rows_back(forwarding) -> None:
    config, archive, destination, _ = forwarding
    forwarder = Forwarder(config, archive)
    forwarder.drain()
    _on_store(destination, lambda _event: forwarder.stop())
    assert forwarder.run_once() == {"sent": 1, "waiting": 2}
    assert len(destination.received) == 1
    rows = _rows(archive)
    assert sorted(r["state"] for r in rows) == ["done", PENDING, PENDING]
    unsent = [r for r in rows if r["state"] == PENDING]
    assert all(r["claimed_by"] is None and r["attempts"] == 0 for r in unsent)


def test_the_runner_stop_reaches_the_forwarder(tmp_path: Path) -> None:
    node = Node(make_config(tmp_path), web=False)
    try:
        assert not node.forwarder.stopping
        node.runner.stop()
        assert node.forwarder.stopping
    finally:
        node.archive.close()
        node.spool.close()


# Process names ---------------------------------------------------------------

_NAME_WITH_PID_1 = (
    "import os; os.getpid = lambda: 1; "
    "from storage.leases import process_name; print(process_name())"
)


def test_two_processes_with_one_host_name_and_pid_have_two_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Containers sharing a host name, each with its own pid namespace."""
    first, second = _name_with_pid_1(), _name_with_pid_1()
    assert first != second and first.startswith(f"{socket.gethostname()}-1")


def _name_with_pid_1() -> str:
    return subprocess.run(
        [sys.executable, "-c", _NAME_WITH_PID_1],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    ).stdout.strip()


def test_names_still_say_whether_a_process_of_this_host_died() -> None:
    me, host = process_name(), socket.gethostname()
    assert me.startswith(f"{host}-{os.getpid()}") and me != f"{host}-{os.getpid()}"
    assert of_this_host(me) and not dead_here(me)
    assert of_this_host(f"{host}-{os.getpid()}")  # the form older versions wrote
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert dead_here(f"{host}-{gone}")
    assert dead_here(me.replace(f"-{os.getpid()}", f"-{gone}", 1))
    assert not of_this_host(f"x{host}-{gone}.abc") and not dead_here(f"x{host}-{gone}.abc")
    assert not dead_here(f"{host}-{gone}.not-hex!") and not dead_here("")


def test_a_lease_taken_over_is_not_renewed_by_its_first_holder(forwarding) -> None:
    """After a take-over, the original's renewal fails: its name is its own."""
    _, archive, _, _ = forwarding
    queue = archive.index.forwarding
    queue.enqueue(stored_uids(archive)[:1], "RESEARCH")
    first, second = _name_with_pid_1(), _name_with_pid_1()
    (row,) = queue.claim(first)
    _lapse_every_lease(archive)
    assert queue.claim(second)
    assert queue.renew([row["pk"]], first) == set()


# `dicomnode send` ----------------------------------------------------------


@pytest.mark.slow
def test_send_queues_the_study_and_leaves_sending_to_the_node(tmp_path: Path) -> None:
    from tests.test_cli import run

    destination = Destination(free_port())
    port = destination.server.server_address[1]
    config = routed(make_config(tmp_path), port)
    archive = open_archive(config)
    study = generate_uid(UID_ROOT)
    try:
        ingestor = Ingestor(config, archive)
        for seed in range(2):
            assert ingestor.ingest(incoming(angio(PATIENTS[0], seed, study))).status == SUCCESS
        (row,) = archive.index.find(Query(level=Level.STUDY, keys={"StudyInstanceUID": ""}))
        study = row["StudyInstanceUID"]  # de-identified: the archive's own UID
    finally:
        archive.close()
    config_file = tmp_path / "node.toml"
    config_file.write_text(to_toml(config))
    try:
        result = run(tmp_path, "--config", str(config_file), "send", study, "RESEARCH")
        assert result.returncode == 0, result.stderr
        assert "2 queued" in result.stdout and "sent" not in result.stdout
        archive = open_archive(config)
        try:
            rows = _rows(archive)
            assert [(r["state"], r["claimed_by"]) for r in rows] == [(PENDING, None)] * 2
            assert archive.index.changes.position("forwarding") == 0
        finally:
            archive.close()
        assert destination.received == []
    finally:
        destination.server.shutdown()


@pytest.mark.parametrize("harm", ["damaged", "missing"])
def test_a_stored_file_that_cannot_be_read_waits_alone(forwarding, harm: str) -> None:
    """One damaged or missing blob must not hold back the rest of its batch
    (nor other destinations): it waits with the reason, the others go."""
    config, archive, destination, _ = forwarding
    forwarder = Forwarder(config, archive)
    forwarder.drain()
    first = _rows(archive)[0]["sop_instance_uid"]
    path = archive.blobs.path(archive.index.instance_blob(first))
    if harm == "damaged":
        path.write_bytes(b"\0" * 300)
    else:
        path.unlink()
    forwarder.run_once()
    rows = {r["sop_instance_uid"]: r for r in _rows(archive)}
    assert len(destination.received) == 2
    assert rows[first]["state"] == PENDING and rows[first]["attempts"] == 1
    assert rows[first]["last_error"] and first not in rows[first]["last_error"]
    assert rows[first]["claimed_by"] is None
