"""The `dicomnode` command as an operator runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomnode.ops.samples import PATIENTS, UID_ROOT, save, small_instance, xa_instance
from tests.conftest import dcmtk

DICOMNODE = [sys.executable, "-m", "dicomnode.cli"]


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DICOMNODE_DATA_DIR": str(tmp_path / "var"),
        "DICOMNODE_MIN_FREE_DISK_MB": "0",
        "DICOMNODE_KEY_DIR": str(tmp_path / "secrets"),
        **env,
    }
    return subprocess.run(
        [*DICOMNODE, *args], env=environment, capture_output=True, text=True, timeout=300
    )


def folder_of_instances(root: Path) -> Path:
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    for number in range(5):
        ds = small_instance(
            PATIENTS[0], study_uid=study, series_uid=series, instance_number=number + 1
        )
        save(ds, root / "nested" / "deeper" / f"im{number}")  # no extension, as PACS exports
    save(xa_instance(PATIENTS[2], frames=3, rows=64, cols=64), root / "xa.dcm")
    (root / "notes.txt").write_text("not DICOM")
    (root / "nested" / "truncated.dcm").write_bytes((root / "xa.dcm").read_bytes()[:-100])
    return root


@pytest.mark.slow
def test_import_folder_recursively_with_summary(tmp_path: Path) -> None:
    source = folder_of_instances(tmp_path / "in")
    result = run(tmp_path, "import", "--issuer", "NCC Bishkek", str(source))
    assert result.returncode == 3, result.stderr  # some files were refused
    assert result.stdout.strip().splitlines()[-1] == (
        "6 stored, 0 replaced, 0 duplicates, 0 quarantined, 2 rejected"
    )
    assert "notes.txt: not a DICOM file" in result.stderr
    assert "truncated.dcm: 0xC001" in result.stderr
    # The same file from the same hospital again (from another, it would be
    # another child's instance, kept apart: tests/test_study_conflict.py).
    again = run(
        tmp_path, "import", "--no-progress", "--issuer", "NCC Bishkek", str(source / "xa.dcm")
    )
    assert again.returncode == 0
    assert "0 stored, 0 replaced, 1 duplicates, 0 quarantined, 0 rejected" in again.stdout
    stats = json.loads(run(tmp_path, "stats", "--json").stdout)
    assert (stats["patients"], stats["studies"], stats["instances"]) == (2, 2, 6)
    assert stats["modalities"] == {"US": 5, "XA": 1}


@pytest.mark.slow
def test_reidentify_prints_the_original_and_refuses_unknowns(tmp_path: Path) -> None:
    source = folder_of_instances(tmp_path / "in")
    imported = run(tmp_path, "import", "--issuer", "NCC Bishkek", str(source / "xa.dcm"))
    assert imported.returncode == 0, imported.stderr
    listing = json.loads(run(tmp_path, "stats", "--json").stdout)
    assert listing["patients"] == 1
    study = dcmread(next((tmp_path / "var" / "blobs").rglob("*.dcm"))).StudyInstanceUID
    result = run(tmp_path, "reidentify", str(study))
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    assert json.loads(line)["patient_name"] == PATIENTS[2].name
    unknown = run(tmp_path, "reidentify", "CHD-0000-0000")
    assert unknown.returncode == 3
    assert unknown.stderr.strip().splitlines()[-1].startswith("dicomnode reidentify: no study")


@pytest.mark.slow
def test_an_issuer_typed_with_extra_spaces_is_the_same_hospital(tmp_path: Path) -> None:
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    for number, issuer in enumerate(
        ("National Centre of Cardiology, Bishkek", "National Centre of Cardiology, Bishkek ")
    ):
        path = tmp_path / "in" / f"im{number}.dcm"
        save(
            small_instance(
                PATIENTS[0], study_uid=study, series_uid=series, instance_number=1 + number
            ),
            path,
        )
        imported = run(tmp_path, "import", "--no-progress", "--issuer", issuer, str(path))
        assert imported.returncode == 0, imported.stderr
    stats = json.loads(run(tmp_path, "stats", "--json").stdout)
    assert (stats["patients"], stats["instances"]) == (1, 2)  # one child, one pseudonym
    blank = run(tmp_path, "import", "--issuer", "  ", str(tmp_path / "in"))
    assert blank.returncode == 2 and "the hospital's name is needed" in blank.stderr


@pytest.mark.slow
def test_import_of_a_missing_path_is_one_line(tmp_path: Path) -> None:
    result = run(tmp_path, "import", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"dicomnode import: {tmp_path / 'nowhere'} does not exist"


@pytest.mark.slow
def test_help_reads_well() -> None:
    result = subprocess.run([*DICOMNODE, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("serve", "import", "stats", "config", "demo"):
        assert command in result.stdout


@pytest.mark.slow
@pytest.mark.peers
def test_serve_answers_dcmtk_and_http_then_stops_on_sigterm(tmp_path: Path) -> None:
    import socket
    import urllib.request

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    environment = {
        **os.environ,
        "DICOMNODE_DATA_DIR": str(tmp_path / "var"),
        "DICOMNODE_DIMSE_PORT": str(ports[0]),
        "DICOMNODE_HTTP_PORT": str(ports[1]),
        "DICOMNODE_MIN_FREE_DISK_MB": "0",
        "DICOMNODE_KEY_DIR": str(tmp_path / "secrets"),
    }
    config_file = tmp_path / "node.toml"
    config_file.write_text(
        '[[remote_ae]]\nae_title = "OSH_ECHO"\nhost = "127.0.0.1"\nport = 104\n',
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [*DICOMNODE, "-c", str(config_file), "serve"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()  # printed once both services listen
        assert f"DICOM port {ports[0]}" in banner, banner
        # Secure by default: a calling AE title not in the table is refused.
        stranger = dcmtk("echoscu", "-aec", "CHDNODE", "127.0.0.1", str(ports[0]))
        assert "Calling AE Title Not Recognized" in stranger.stderr
        echo = dcmtk("echoscu", "-aet", "OSH_ECHO", "-aec", "CHDNODE", "127.0.0.1", str(ports[0]))
        assert echo.returncode == 0, echo.stderr
        path = save(xa_instance(PATIENTS[1], frames=2, rows=32, cols=32), tmp_path / "x.dcm")
        sent = dcmtk(
            "dcmsend", "-aet", "OSH_ECHO", "-aec", "CHDNODE", "127.0.0.1", str(ports[0]), path
        )
        assert sent.returncode == 0, sent.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}/healthz") as response:
            assert json.load(response)["status"] == "ok"  # the rest needs a login
        stats = run(tmp_path, "stats", "--json")
        assert json.loads(stats.stdout)["instances"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert PATIENTS[1].name not in stderr and PATIENTS[1].patient_id not in stderr


def test_demo_user_is_created_once_with_a_shown_password(
    config, capsys: pytest.CaptureFixture
) -> None:
    from werkzeug.security import check_password_hash

    from dicomnode.cli.main import _demo_user
    from dicomnode.node import open_archive

    _demo_user(config)
    line = capsys.readouterr().out.strip()
    assert line.startswith("web login: demo / ")
    password = line.split(" / ")[1].split()[0]
    _demo_user(config)
    assert capsys.readouterr().out == ""  # not again, not a second account
    archive = open_archive(config)
    (user,) = archive.index.accounts.list()
    assert user.role == "admin" and check_password_hash(user.password_hash, password)
    archive.close()


@pytest.mark.slow
def test_send_to_an_unknown_ae_is_one_line(tmp_path: Path) -> None:
    source = folder_of_instances(tmp_path / "in")
    assert run(tmp_path, "import", "--no-progress", str(source / "xa.dcm")).returncode == 0
    study = dcmread(next((tmp_path / "var" / "blobs").rglob("*.dcm"))).StudyInstanceUID
    result = run(tmp_path, "send", str(study), "NOBODY")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == (
        "dicomnode send: NOBODY is not a known remote AE"
    )
    assert run(tmp_path, "queue").returncode == 0


@pytest.mark.slow
def test_export_command_filters_by_hospital_and_refuses_what_it_cannot_do(
    tmp_path: Path,
) -> None:
    assert (
        run(
            tmp_path,
            "import",
            "--no-progress",
            "--issuer",
            "NCC Bishkek",
            str(folder_of_instances(tmp_path / "in")),
        ).returncode
        == 3  # the folder holds one truncated file on purpose
    )
    shown = run(tmp_path, "export", "--preview", "--modality", "XA")
    assert shown.stdout.startswith("patients 1, studies 1, series 1, instances 1, ")
    assert run(tmp_path, "export").returncode == 2
    out = tmp_path / "cohort.zip"
    done = run(tmp_path, "export", "--no-progress", "--hospital", "NCC Bishkek", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 studies, 6 instances")
    angio = run(tmp_path, "export", "--modality", "XA", "--out", str(tmp_path / "xa.zip"))
    assert angio.stdout.startswith("1 studies, 1 instances"), angio.stderr
    dicomdir = tmp_path / "x" / "DICOMDIR"

    zipfile.ZipFile(out).extractall(tmp_path / "x")
    assert dcmtk("dcmdump", dicomdir).returncode == 0
    again = run(tmp_path, "export", "--out", str(out))
    assert (again.returncode, again.stderr.strip()) == (
        2,
        f"dicomnode export: {out} exists; not overwriting it",
    )
    none = run(tmp_path, "export", "--hospital", "Nowhere", "--out", str(tmp_path / "n.zip"))
    assert none.returncode == 3 and "no study matches" in none.stderr
    assert not (tmp_path / "n.zip").exists()


@pytest.mark.slow
def test_export_streams_a_cohort_larger_than_its_memory_growth(tmp_path: Path) -> None:
    """~95 MB of angio runs exported while the process grows far less than that."""
    from pydicom.uid import ExplicitVRLittleEndian

    study = generate_uid(UID_ROOT)
    for number in range(12):
        ds = xa_instance(
            PATIENTS[3],
            frames=30,
            transfer_syntax=ExplicitVRLittleEndian,
            study_uid=study,
            instance_number=number + 1,
            seed=number,
        )
        save(ds, tmp_path / "in" / f"xa{number}.dcm")
    assert run(tmp_path, "import", "--no-progress", str(tmp_path / "in")).returncode == 0
    cohort = sum(p.stat().st_size for p in (tmp_path / "in").iterdir())
    assert cohort > 90e6

    def peak_rss(*args: str) -> int:
        environment = {
            **os.environ,
            "DICOMNODE_DATA_DIR": str(tmp_path / "var"),
            "DICOMNODE_MIN_FREE_DISK_MB": "0",
            "DICOMNODE_KEY_DIR": str(tmp_path / "secrets"),
            # Tesseract's models are a fixed cost (loaded once per OCR worker
            # and language, ~150 MB, more as rereads need more models) that
            # does not grow with the cohort; this measures what would.
            "DICOMNODE_OCR": "false",
        }
        process = subprocess.Popen([*DICOMNODE, *args], env=environment, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        assert status == 0
        return usage.ru_maxrss * 1024

    baseline = peak_rss("export", "--preview")
    exported = peak_rss("export", "--no-progress", "--out", str(tmp_path / "big.zip"))
    assert (tmp_path / "big.zip").stat().st_size > cohort * 0.9
    assert exported - baseline < cohort / 2, (exported - baseline) / 1e6


def _user_command(tmp_path: Path, *args: str, stdin: str | None) -> subprocess.CompletedProcess:
    """``dicomnode user`` without a terminal (a script, cron, `docker exec`
    without -t): a new session has no controlling terminal to fall back on."""
    environment = {
        **os.environ,
        "DICOMNODE_DATA_DIR": str(tmp_path / "var"),
        "DICOMNODE_KEY_DIR": str(tmp_path / "secrets"),
    }
    return subprocess.run(
        [*DICOMNODE, "user", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


def _stored_hash(tmp_path: Path, name: str) -> str | None:
    from dataclasses import replace

    from dicomnode.config import Config
    from dicomnode.node import open_archive

    archive = open_archive(replace(Config(), data_dir=tmp_path / "var", key_dir=tmp_path / "s"))
    try:
        user = archive.index.accounts.get(name)
        return user.password_hash if user else None
    finally:
        archive.close()


@pytest.mark.slow
def test_user_add_without_a_terminal_says_how_instead_of_a_traceback(tmp_path: Path) -> None:
    for stdin in (None, "a piped password nobody asked for\n"):
        result = _user_command(tmp_path, "add", "zarina", "--role", "researcher", stdin=stdin)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == (
            "dicomnode user add: no terminal to ask for the password; "
            "pipe it in with --password-stdin"
        )
        assert "Traceback" not in result.stderr and "nobody asked" not in result.stderr
    assert _stored_hash(tmp_path, "zarina") is None  # nothing half-done


@pytest.mark.slow
def test_user_add_reads_a_piped_password_and_never_shows_it(tmp_path: Path) -> None:
    from werkzeug.security import check_password_hash

    secret = "tulip marble 7 quartz"
    added = _user_command(
        tmp_path, "add", "zarina", "--role", "researcher", "--password-stdin", stdin=secret + "\n"
    )
    assert added.returncode == 0, added.stderr
    assert secret not in added.stdout + added.stderr
    assert check_password_hash(_stored_hash(tmp_path, "zarina") or "", secret)
    # A password piped from Windows (CRLF) is the password without the line end.
    crlf = _user_command(tmp_path, "passwd", "zarina", "--password-stdin", stdin=secret + "2\r\n")
    assert crlf.returncode == 0, crlf.stderr
    assert check_password_hash(_stored_hash(tmp_path, "zarina") or "", secret + "2")


def _user_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stdin: str, *args: str
) -> int:
    """``dicomnode user`` in this process, standard input a pipe holding ``stdin``."""
    import io

    from dicomnode.cli.main import main

    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "var"}"\nkey_dir = "{tmp_path / "secrets"}"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["-c", str(config), "user", *args])


@pytest.mark.parametrize(
    ("stdin", "action", "why"),
    [
        ("", "add", "no terminal to ask for the password; pipe it in with --password-stdin"),
        ("", "passwd", "no terminal to ask for the password; pipe it in with --password-stdin"),
        ("", "add", "--password-stdin: no password on standard input"),
        ("\n", "add", "--password-stdin: no password on standard input"),
        (
            "first line\nsecond line\n",
            "add",
            "--password-stdin: standard input holds more than one line",
        ),
        ("x" * 5000, "passwd", "--password-stdin: more than 1024 characters"),
    ],
)
def test_a_password_that_cannot_be_read_is_a_usage_error_before_anything_opens(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    stdin: str,
    action: str,
    why: str,
) -> None:
    flag = ["--password-stdin"] if why.startswith("--password-stdin") else []
    assert _user_in_process(tmp_path, monkeypatch, stdin, action, "li", *flag) == 2
    assert capsys.readouterr().err.strip() == f"dicomnode user {action}: {why}"
    assert not (tmp_path / "var").exists()  # refused before the archive was opened


def test_a_weak_piped_password_is_refused_without_repeating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert _user_in_process(tmp_path, monkeypatch, "zq9\n", "add", "li", "--password-stdin") == 3
    err = capsys.readouterr().err
    assert "at least 12 characters" in err and "zq9" not in err
    assert _stored_hash(tmp_path, "li") is None
