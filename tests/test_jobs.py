"""Background jobs (`dicomnode.jobs.runner`) and research export jobs on them
(`dicomnode.jobs.exports`): the web only queues and reads; runners, in this
process or others, claim, run once, give back, take over."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dicomnode.config import Config, to_toml
from dicomnode.jobs import exports as export_jobs
from dicomnode.jobs.export import Cohort
from dicomnode.jobs.exports import ExportWork, submit, work_folder
from dicomnode.jobs.runner import Runner, Stop, Ticket
from dicomnode.node import open_archive
from storage.archive import Archive
from storage.exports import UNFINISHED
from tests.conftest import make_config
from tests.postgres import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 120.0, what: str = "") -> Any:
    """Poll ``condition`` until it is true; its value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what or condition}"
        time.sleep(0.05)
    return value


def finished(archive: Archive, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """The job's row once it has an outcome (done, failed, cancelled)."""

    def outcome() -> dict[str, Any] | None:
        row = archive.index.exports.get(job_id)
        return row if row is not None and row["state"] not in UNFINISHED else None

    return wait_for(outcome, timeout, f"export {job_id} to finish")


@contextmanager
def export_runner(
    config: Config, archive: Archive, owner: str | None = None, poll: float = 0.1, **work: Any
) -> Iterator[Runner]:
    """Export jobs run as the node runs them, for the length of the block."""
    runner = Runner(owner)
    runner.leased(
        ExportWork(config, archive, work_folder(config), **work),
        slots=export_jobs.SLOTS,
        poll=poll,
    )
    runner.start()
    try:
        yield runner
    finally:
        assert runner.stop() == []


def exported(archive: Archive, job_id: str) -> int:
    """How many times the job's package was released (its audit events)."""
    rows = archive.index.audit.rows(limit=10_000)
    return sum(1 for r in rows if r["event"] == "export" and r["detail"].endswith(f"{job_id}.zip"))


@pytest.fixture
def cohort_archive(config: Config, archive: Archive) -> Archive:
    """An echo and an angio run of two children: a cohort of two instances."""
    _fill(config, archive)
    return archive


@pytest.fixture
def slow_reads(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Exports that read each instance slowly until the event is set."""
    import dicomnode.jobs.export as exporting

    fast, real = threading.Event(), exporting.dcmread

    def slow(*args: Any, **kwargs: Any) -> Any:
        fast.wait(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(exporting, "dcmread", slow)
    return fast


# --- the lifecycle, on work kept in memory -----------------------------------------


@dataclass
class Board:
    """Leased work in memory: what a table of jobs would hold."""

    keys: list[str]
    name: str = "board"
    verdicts: dict[str, Stop] = field(default_factory=dict)
    runs: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Stop | None] = field(default_factory=dict)
    inside: int = 0
    most: int = 0
    gate: threading.Event = field(default_factory=threading.Event)
    honour: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, owner: str, limit: int) -> list[Ticket]:
        with self.lock:
            taken, self.keys = self.keys[:limit], self.keys[limit:]
        return [Ticket(key, {}) for key in taken]

    def renew(self, ticket: Ticket, owner: str) -> Stop | None:
        return self.verdicts.get(ticket.key)

    def run(self, ticket: Ticket, owner: str) -> None:
        with self.lock:
            self.runs[ticket.key] += 1
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            while not self.gate.is_set():
                if self.honour and ticket.halt.wait(0.01):
                    break
                time.sleep(0.01)
        finally:
            with self.lock:
                self.inside -= 1
                self.outcomes[ticket.key] = ticket.why


def test_a_failing_pass_does_not_end_its_loop_and_stop_joins_it() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the index is away")

    runner = Runner("here-1")
    runner.every("flaky", 0.01, step)
    runner.every("hourly", 3600, lambda: None)  # stop does not wait out its hour
    runner.start()
    wait_for(lambda: len(calls) >= 3, what="passes after a failed one")
    assert runner.stop() == []


def test_never_more_jobs_at_once_than_slots_and_each_runs_once() -> None:
    board = Board([f"job{n}" for n in range(12)])
    runner = Runner("here-1")
    runner.leased(board, slots=3, poll=0.01)
    runner.start()
    wait_for(lambda: board.inside == 3, what="three jobs running")
    board.gate.set()
    wait_for(lambda: sum(board.runs.values()) == 12 and board.inside == 0, what="all jobs")
    assert runner.stop() == []
    assert board.most == 3 and set(board.runs.values()) == {1}


def test_a_renewal_stops_a_job_and_says_why() -> None:
    board = Board(["cancelled", "lost"])
    runner = Runner("here-1")
    runner.leased(board, slots=2, poll=0.01)
    runner.start()
    wait_for(lambda: board.inside == 2, what="both jobs running")
    board.verdicts.update(cancelled=Stop.CANCEL, lost=Stop.LOST)
    wait_for(lambda: len(board.outcomes) == 2, what="both jobs stopped")
    assert board.outcomes == {"cancelled": Stop.CANCEL, "lost": Stop.LOST}
    assert runner.stop() == []


def test_stop_asks_jobs_to_give_back_and_is_bounded_when_one_will_not() -> None:
    polite, stubborn = Board(["polite"]), Board(["stubborn"], name="stubborn", honour=False)
    runner = Runner("here-1")
    runner.leased(polite, slots=1, poll=0.01)
    runner.leased(stubborn, slots=1, poll=0.01)
    runner.start()
    wait_for(lambda: polite.inside == stubborn.inside == 1, what="both jobs running")
    try:
        assert runner.stop(timeout=0.5) == ["stubborn-stubborn"]
        assert polite.outcomes == {"polite": Stop.SHUTDOWN}
        assert polite.keys == [] and runner.running() == ["stubborn"]
    finally:
        stubborn.gate.set()


@pytest.mark.slow
def test_dicomnode_imports_the_web_only_in_the_composition_root() -> None:
    """The one arrow from dicomnode/ up to viewer/: node.py's create_app."""
    found = []
    for path in sorted((ROOT / "dicomnode").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "viewer":
                names = [alias.name for alias in node.names]
                found.append((path.relative_to(ROOT).as_posix(), node.module, names))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "viewer":
                        found.append((path.relative_to(ROOT).as_posix(), alias.name, []))
    assert found == [("dicomnode/node.py", "viewer", ["create_app"])]


# --- export jobs ------------------------------------------------------------------


def _web(config: Config, archive: Archive) -> Any:
    from werkzeug.security import generate_password_hash

    from tests.test_viewer import PASSWORD, as_user
    from viewer import create_app

    archive.index.accounts.add("zarina", generate_password_hash(PASSWORD), "researcher")
    client = create_app(config, archive, b"k" * 32).test_client()
    as_user(client, "zarina")
    return client


def _start(client: Any, **cohort: str) -> str:
    started = client.post("/api/exports", json=cohort, headers={"X-CSRF-Token": "token"})
    assert started.status_code == 202, started.get_data(as_text=True)
    return started.get_json()["id"]


def test_the_web_only_queues_a_job_and_starts_no_thread(
    config: Config, cohort_archive: Archive
) -> None:
    client = _web(config, cohort_archive)
    before = {t.ident for t in threading.enumerate()}
    job_id = _start(client)
    assert {t.ident for t in threading.enumerate()} - before == set()
    assert client.get(f"/api/exports/{job_id}").get_json()["state"] == "queued"
    row = cohort_archive.index.exports.get(job_id)
    assert (row["claimed_by"], row["claimed_until"]) == (None, None)
    download = client.get(f"/api/exports/{job_id}/download")
    assert download.status_code == 409


def test_a_job_queued_while_no_runner_runs_is_run_when_one_starts(
    config: Config, cohort_archive: Archive
) -> None:
    client = _web(config, cohort_archive)
    job_id = _start(client)
    time.sleep(0.3)  # nobody runs it meanwhile
    assert cohort_archive.index.exports.get(job_id)["state"] == "queued"
    with export_runner(config, cohort_archive):
        row = finished(cohort_archive, job_id)
    assert (row["state"], row["total"], row["claimed_by"]) == ("done", 2, None)
    assert client.get(f"/api/exports/{job_id}/download").status_code == 200
    assert exported(cohort_archive, job_id) == 1


def test_a_job_done_between_two_renewals_still_shows_its_progress(
    config: Config, cohort_archive: Archive
) -> None:
    job_id = submit(cohort_archive, "zarina", Cohort(), False)["id"]
    with export_runner(config, cohort_archive, poll=3600):  # claimed at once, never renewed
        row = finished(cohort_archive, job_id)
    assert (row["state"], row["done"], row["total"]) == ("done", 2, 2)


@pytest.mark.slow
def test_a_queued_job_cancelled_is_never_run(config: Config, cohort_archive: Archive) -> None:
    client = _web(config, cohort_archive)
    first = _start(client)
    cancelled = client.post(f"/api/exports/{first}/cancel", headers={"X-CSRF-Token": "token"})
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    second = _start(client)
    with export_runner(config, cohort_archive):
        assert finished(cohort_archive, second)["state"] == "done"
    row = cohort_archive.index.exports.get(first)
    assert (row["state"], row["claimed_by"]) == ("cancelled", None)
    assert exported(cohort_archive, first) == 0
    assert [name for name, _ in cohort_archive.blobs.packages()] == [f"{second}.zip"]
    again = client.post(f"/api/exports/{second}/cancel", headers={"X-CSRF-Token": "token"})
    assert again.get_json()["state"] == "done"  # a cancel comes too late for a finished job


@pytest.mark.slow
def test_a_running_job_cancelled_through_the_web_stops_with_nothing_written(
    config: Config, cohort_archive: Archive, slow_reads: threading.Event
) -> None:
    client = _web(config, cohort_archive)
    job_id = _start(client)
    with export_runner(config, cohort_archive):
        wait_for(lambda: client.get(f"/api/exports/{job_id}").get_json()["state"] == "running")
        client.post(f"/api/exports/{job_id}/cancel", headers={"X-CSRF-Token": "token"})
        row = finished(cohort_archive, job_id)
    assert (row["state"], row["message"]) == ("cancelled", "export cancelled; nothing written")
    assert exported(cohort_archive, job_id) == 0
    assert list(work_folder(config).iterdir()) == []
    assert list(cohort_archive.blobs.packages()) == []


def test_a_stopping_runner_gives_its_job_back_and_the_next_finishes_it(
    config: Config, cohort_archive: Archive, slow_reads: threading.Event
) -> None:
    job_id = submit(cohort_archive, "zarina", Cohort(), False)["id"]
    with export_runner(config, cohort_archive, owner="here-1"):
        wait_for(lambda: cohort_archive.index.exports.get(job_id)["state"] == "running")
    row = cohort_archive.index.exports.get(job_id)
    assert (row["state"], row["claimed_by"], row["cancel_requested"]) == ("queued", None, False)
    slow_reads.set()
    with export_runner(config, cohort_archive, owner="here-2"):
        assert finished(cohort_archive, job_id)["state"] == "done"
    assert exported(cohort_archive, job_id) == 1


def test_a_job_asked_to_stop_while_its_process_died_ends_cancelled(
    config: Config, cohort_archive: Archive
) -> None:
    jobs = cohort_archive.index.exports
    job_id = submit(cohort_archive, "zarina", Cohort(), False)["id"]
    assert [r["id"] for r in jobs.claim("elsewhere-1", 1, timedelta(seconds=-1))] == [job_id]
    jobs.request_cancel(job_id)  # its runner is gone and its lease already lapsed
    with export_runner(config, cohort_archive):
        row = finished(cohort_archive, job_id)
    assert (row["state"], exported(cohort_archive, job_id)) == ("cancelled", 0)


# A runner in a process of its own, as a node process runs it: its owner name,
# lease and read speed set from the environment.
RUNNER = """
import os, sys, threading, time, logging
from datetime import timedelta
import dicomnode.jobs.export as exporting
from dicomnode.config import load
from dicomnode.jobs.exports import ExportWork, work_folder
from dicomnode.jobs.runner import Runner
from dicomnode.node import open_archive

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
real, pause = exporting.dcmread, float(os.environ["READ_SECONDS"])
exporting.dcmread = lambda *a, **k: time.sleep(pause) or real(*a, **k)
config = load()
archive = open_archive(config)
lease = timedelta(seconds=float(os.environ["LEASE_SECONDS"]))
runner = Runner(os.environ.get("OWNER") or None)
runner.leased(ExportWork(config, archive, work_folder(config), lease=lease), slots=1, poll=0.1)
runner.start()
print("ready", flush=True)
threading.Event().wait()
"""


def _runner_process(
    config: Config, tmp_path: Path, read_seconds: float, lease_seconds: float, owner: str = ""
) -> subprocess.Popen[str]:
    path = tmp_path / "dicomnode.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    env = {
        **os.environ,
        "DICOMNODE_CONFIG": str(path),
        "READ_SECONDS": str(read_seconds),
        "LEASE_SECONDS": str(lease_seconds),
        "OWNER": owner,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


@pytest.mark.slow
def test_a_runner_killed_mid_job_is_taken_over_after_its_lease_and_finishes_once(
    config: Config, cohort_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On another host (so no one can see it died): its lease must lapse first."""
    jobs = cohort_archive.index.exports
    job_id = submit(cohort_archive, "zarina", Cohort(), False)["id"]
    elsewhere = _runner_process(config, tmp_path, 1.5, 3, owner="elsewhere-1")
    try:
        wait_for(lambda: jobs.get(job_id)["done"] >= 1, what="the job half done")
    finally:
        elsewhere.kill()
        elsewhere.communicate(timeout=60)
    dead = jobs.get(job_id)
    assert (dead["state"], dead["claimed_by"]) == ("running", "elsewhere-1")
    taken: list[datetime] = []  # when each claim of it holds from
    real_claim = jobs.claim

    def claim(runner: str, limit: int, lease: timedelta) -> list[dict[str, Any]]:
        rows = real_claim(runner, limit, lease)
        taken.extend(_aware(row["claimed_until"]) - lease for row in rows)
        return rows

    monkeypatch.setattr(jobs, "claim", claim)
    with export_runner(config, cohort_archive):
        row = finished(cohort_archive, job_id)
    assert (row["state"], row["total"]) == ("done", 2)
    assert len(taken) == 1 and taken[0] > _aware(dead["claimed_until"])
    assert exported(cohort_archive, job_id) == 1
    assert [p.name for p in work_folder(config).iterdir()] == []  # stored, then removed
    assert [name for name, _ in cohort_archive.blobs.packages()] == [f"{job_id}.zip"]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@pytest.mark.slow
def test_two_processes_sharing_postgresql_never_run_a_job_twice(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    config = make_config(tmp_path, index_url=postgres.database())
    archive = open_archive(config)
    try:
        _fill(config, archive)
        ids = [submit(archive, "zarina", Cohort(), False)["id"] for _ in range(6)]
        processes = [_runner_process(config, tmp_path, 0.05, 120) for _ in range(2)]
        try:
            rows = [finished(archive, job_id, timeout=300) for job_id in ids]
        finally:
            logs = []
            for process in processes:
                process.terminate()
                logs.append(process.communicate(timeout=60)[1])
        assert {row["state"] for row in rows} == {"done"}
        started = Counter(
            line.split()[1] for log in logs for line in log.splitlines() if " started by " in line
        )
        assert started == dict.fromkeys(ids, 1)
        assert [exported(archive, job_id) for job_id in ids] == [1] * 6
    finally:
        archive.close()


def _fill(config: Config, archive: Archive) -> None:
    """The cohort of `tests.test_export.cohort_archive`, in ``archive``."""
    from dicomnode.ingest.pipeline import Ingestor, Outcome
    from dicomnode.ops.samples import PATIENTS, xa_instance
    from tests.conftest import incoming
    from tests.test_ingest import instance

    ingestor = Ingestor(config, archive)
    echo = instance(PATIENTS[0], AccessionNumber="ACC-31", PatientAge="004Y")
    angio = xa_instance(PATIENTS[1], frames=4, rows=64, cols=64)
    for ds, sender in ((echo, "BISHKEK_ECHO"), (angio, "DUSHANBE_ECHO")):
        assert ingestor.ingest(incoming(ds, calling_ae=sender)).outcome is Outcome.STORED


def test_two_runners_racing_on_postgresql_claim_each_job_once(
    tmp_path: Path, postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many small jobs, two archives (two connection pools) and two owners, as
    two processes; the export itself stubbed: only the claims are at stake."""
    config = make_config(tmp_path, index_url=postgres.database())
    archives = [open_archive(config), open_archive(config)]
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def fake_export(*args: Any, **kwargs: Any) -> Any:
        with lock:
            runs[args[3].stem] += 1
        time.sleep(0.01)
        args[3].write_bytes(b"PK")
        return type("Result", (), {"left_out": []})()

    monkeypatch.setattr(export_jobs, "export", fake_export)
    try:
        ids = [submit(archives[0], "zarina", Cohort(), False)["id"] for _ in range(40)]
        runners = [Runner(f"pacs-{n}-{n}") for n in range(2)]
        for runner, archive in zip(runners, archives, strict=True):
            runner.leased(ExportWork(config, archive, work_folder(config)), slots=3, poll=0.01)
            runner.start()
        try:
            rows = [finished(archives[1], job_id) for job_id in ids]
        finally:
            assert all(runner.stop() == [] for runner in runners)
        assert {row["state"] for row in rows} == {"done"}
        assert runs == dict.fromkeys(ids, 1)
    finally:
        for archive in archives:
            archive.close()


def test_the_node_runs_queued_exports_and_stops_promptly(
    config: Config, cohort_archive: Archive
) -> None:
    from dicomnode.node import Node

    job_id = submit(cohort_archive, "zarina", Cohort(), False)["id"]
    node = Node(replace(config, http_host="127.0.0.1"), web=False).start()
    try:
        row = finished(node.archive, job_id)
    finally:
        node.stop()
    assert row["state"] == "done"
    assert not [t.name for t in threading.enumerate() if t.name in ("forward", "exports")]


def test_asdict_of_a_cohort_round_trips_through_a_job(cohort_archive: Archive) -> None:
    cohort = Cohort(modality="XA", age_from=1.0, issuers=["BISHKEK"])
    row = submit(cohort_archive, "zarina", cohort, True)
    assert Cohort(**cohort_archive.index.exports.get(row["id"])["cohort"]) == cohort
    assert asdict(cohort) == row["cohort"] and row["linkable"] is True
