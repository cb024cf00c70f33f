"""A sender's text in a library's warning: it must not forge a log line, and
the log must not carry it at all (a warning quotes the value it could not
read). Real processes, as an operator runs the node: warnings printed
straight to standard error are what the attack used."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomnode.ops.samples import PATIENTS, UID_ROOT, save, small_instance

DICOMNODE = [sys.executable, "-m", "dicomnode.cli"]
FORGED = (
    "2026-12-07 02:40:00,000 INFO dicomnode.dimse.server: FORGED RECORD child ZHANIBEKOVA AIGERIM"
)
CHARSETS = [
    f"X\n{FORGED}\x1b[31m",
    f"X\r{FORGED}",
    f"ISO_IR 100\\X\n{FORGED}",
    "ZHANIBEKOVA AIGERIM 778899123",
]
NEEDLES = ("ZHANIBEKOVA", "AIGERIM", "778899123", "FORGED")
RECORD = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} [A-Z]+ \S+: ")


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DICOMNODE_DATA_DIR": str(tmp_path / "var"),
        "DICOMNODE_MIN_FREE_DISK_MB": "0",
        "DICOMNODE_KEY_DIR": str(tmp_path / "secrets"),
        "DICOMNODE_LOG_LEVEL": "DEBUG",
        "PYTHONWARNINGS": "always",  # every warning, not the first per place
    }


def assert_clean(log: str) -> None:
    assert "\x1b" not in log and "\r" not in log
    for needle in NEEDLES:
        assert needle.casefold() not in log.casefold(), log
    for line in log.splitlines():
        assert not line.startswith("2026-12-07 02:40:00,000"), line


@pytest.mark.slow
@pytest.mark.parametrize("charset", CHARSETS, ids=range(len(CHARSETS)))
def test_forged_character_set_in_an_import(tmp_path: Path, charset: str) -> None:
    ds = small_instance(
        PATIENTS[0],
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        instance_number=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom, on writing the sender's charset
        ds.SpecificCharacterSet = charset
        ds.StudyDescription = "Echo"
        save(ds, tmp_path / "in" / "forged.dcm")
    result = subprocess.run(
        [*DICOMNODE, "import", "--issuer", "NCC Bishkek", str(tmp_path / "in")],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,  # as an operator runs it: the installed package
        timeout=300,
    )
    assert_clean(result.stderr + result.stdout)
    # The warning is in the log, as a record of its own and without its text.
    assert re.search(RECORD.pattern + r"UserWarning at \S+:\d+ \(text withheld", result.stderr), (
        result.stderr
    )


SCRIPT = """
import logging, sys, warnings
from dicomnode import logs
logs.setup("DEBUG")
warnings.simplefilter("always")
forged = sys.argv[1]
warnings.warn(f"Unknown encoding '{forged}' - using default encoding instead")
from pydicom.dataset import Dataset
ds = Dataset()
ds.SpecificCharacterSet = forged
ds.PatientName = b"ZHANIBEKOVA^AIGERIM"
ds.decode()
logging.getLogger("pydicom").critical("Invalid value %r", forged)
logging.getLogger("pydicom.pixels.utils").critical("value %s", forged)
warnings.warn(forged, DeprecationWarning)
print("done", file=sys.stderr)
"""


@pytest.mark.parametrize("charset", CHARSETS, ids=range(len(CHARSETS)))
def test_warnings_and_pydicom_records_are_withheld(tmp_path: Path, charset: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, charset],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,  # as an operator runs it: the installed package
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert_clean(result.stderr)
    lines = result.stderr.splitlines()
    assert lines[-1] == "done"
    # Each warning and record is one line of the node's format.
    assert all(RECORD.match(line) for line in lines[:-1]), lines
    assert sum("UserWarning at" in line for line in lines) >= 2
    assert any("DeprecationWarning at" in line for line in lines)
    assert sum("pydicom" in line and "withheld" in line for line in lines) >= 2
