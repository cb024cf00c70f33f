"""The audit trail: what is recorded, that it verifies, and that tampering shows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DatabaseError

from dicomnode.config import Config
from dicomnode.node import Node
from storage.archive import Archive
from storage.audit import EVENTS, AuditFilter, AuditTrail
from tests.test_cli import run


def fill(trail: AuditTrail) -> None:
    trail.record("login", user="aigerim", role="cardiologist", source="10.1.1.5")
    trail.record("study-view", user="aigerim", role="cardiologist", obj="2.25.123")
    trail.record("login", user="zarina", source="10.1.1.9", outcome=4, detail="wrong password")
    trail.record("export", user="zarina", obj='{"modality": "XA"}', detail="=HYPERLINK(1)")


def database(config: Config) -> sqlite3.Connection:
    return sqlite3.connect(config.data_dir / "index.sqlite")


def test_records_chain_and_filter(archive: Archive) -> None:
    trail = archive.index.audit
    fill(trail)
    assert trail.verify().ok and trail.verify().records == 4
    assert [r["event"] for r in trail.rows(AuditFilter(user="zarina"))] == ["export", "login"]
    assert [r["detail"] for r in trail.rows(AuditFilter(failures_only=True))] == ["wrong password"]
    today = trail.rows()[0]["at"][:10]
    assert trail.count(AuditFilter(date_from=today, date_to=today)) == 4
    assert trail.count(AuditFilter(date_to="2000-01-01")) == 0
    lines = list(trail.csv())
    assert lines[0].startswith("Sequence,EventDateTime,EventID,EventIDMeaning")
    assert ",110114,User Authentication,login,E,0,aigerim,cardiologist,10.1.1.5," in lines[1]
    assert "'=HYPERLINK(1)" in lines[4]  # no formula reaches a spreadsheet
    with pytest.raises(ValueError, match="unknown audit event"):
        trail.record("coffee", user="x")


def test_the_database_refuses_updates_and_deletes(archive: Archive) -> None:
    fill(archive.index.audit)
    engine = archive.index.engine
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET user = 'nobody'")
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log")


@pytest.mark.parametrize(
    ("tamper", "first_bad", "why"),
    [
        ("UPDATE audit_log SET user = 'nobody' WHERE seq = 2", 2, "altered"),
        ("DELETE FROM audit_log WHERE seq = 2", 2, "missing"),
        ("DELETE FROM audit_log WHERE seq = 4", 4, "removed"),
        ("UPDATE audit_log SET outcome = 0 WHERE seq = 3", 3, "altered"),
    ],
)
def test_tampering_is_detected(
    config: Config, archive: Archive, tamper: str, first_bad: int, why: str
) -> None:
    fill(archive.index.audit)
    with database(config) as db:  # someone with the database file, not the key
        db.execute("DROP TRIGGER audit_log_no_update")
        db.execute("DROP TRIGGER audit_log_no_delete")
        db.execute(tamper)
    result = archive.index.audit.verify()
    assert not result.ok and result.first_bad == first_bad and why in result.why
    assert run(config.data_dir.parent, "audit", "verify").returncode == 5


def test_a_rewritten_chain_needs_the_key(config: Config, archive: Archive) -> None:
    fill(archive.index.audit)
    forger = AuditTrail(archive.index.engine, archive.index._write_lock, b"guessed key")
    assert not forger.verify().ok  # digests are keyed: recomputing them needs audit.key


@pytest.mark.slow
def test_node_start_and_config_changes_are_recorded(tmp_path: Path, config: Config) -> None:
    with Node(config, web=False):
        pass
    with Node(config, web=False):
        pass
    changed = Config(**{**config.__dict__, "max_find_results": 500})
    with Node(changed, web=False) as node:
        events = [r["event"] for r in reversed(node.archive.index.audit.rows())]
    assert events == ["config-change", "node-start", "node-start", "config-change", "node-start"]
    listing = run(tmp_path, "audit", "list", "--event", "config-change")
    assert listing.returncode == 0 and listing.stdout.count("config-change") == 2
    assert run(tmp_path, "audit", "verify").stdout.startswith("audit trail intact")
    assert set(EVENTS) >= {r for r in events}


@pytest.mark.slow
def test_tls_helpers_write_a_ca_and_certificates(tmp_path: Path) -> None:
    assert run(tmp_path, "tls", "cert", "x", "--dir", str(tmp_path / "pki")).returncode == 2
    assert run(tmp_path, "tls", "ca", "--dir", str(tmp_path / "pki")).returncode == 0
    made = run(
        tmp_path, "tls", "cert", "node.test", "--host", "127.0.0.1", "--dir", str(tmp_path / "pki")
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "pki" / "node.test.key").stat().st_mode & 0o077 == 0
    check = __import__("subprocess").run(
        [
            "openssl",
            "verify",
            "-CAfile",
            tmp_path / "pki" / "ca.crt",
            tmp_path / "pki" / "node.test.crt",
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def _write_records(url: str, key: bytes, who: str, count: int, start: Any) -> None:
    from storage.index import Index

    index = Index(url, audit_key=key)
    start.wait()  # both processes open, then both write at once
    try:
        for n in range(count):
            index.audit.record("login", user=f"{who}-{n}")
    finally:
        index.engine.dispose()


@pytest.mark.slow
def test_two_processes_writing_at_once_keep_one_unbroken_chain(any_index_config: Config) -> None:
    """A CLI command auditing while the node serves: both processes write
    records at the same moment (the very first one included) and the chain
    stays one line, every record kept, none failing."""
    import multiprocessing

    from storage.index import Index

    any_index_config.data_dir.mkdir(parents=True, exist_ok=True)
    url, key = any_index_config.effective_index_url, b"k" * 32
    Index(url, audit_key=key).engine.dispose()  # the schema, before the race
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [
        context.Process(target=_write_records, args=(url, key, who, 150, start)) for who in "ab"
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    index = Index(url, audit_key=key)
    try:
        assert index.audit.count() == 300
        assert index.audit.verify().ok
    finally:
        index.engine.dispose()
