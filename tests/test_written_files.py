"""What the node writes passes dicom3tools' dciodvfy with no new error."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming, Ingestor, Outcome
from dicomnode.ops.samples import PATIENTS, sample_file, save, small_instance
from storage.archive import Archive

pytestmark = pytest.mark.peers

SAMPLES = [
    "color3d_jpeg_baseline.dcm",
    "ultrasounds/GREYSCALE_IMAGE.dcm",
    "examples_ybr_color.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
]


def errors(path: Path) -> set[str]:
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy is not installed: run `make peers`")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    # The same error about a remapped UID must compare equal: UIDs are masked.
    return {
        re.sub(r"\d+(\.\d+){2,}", "<uid>", re.sub(r"\s+", " ", line))
        for line in lines
        if line.startswith("Error")
    }


@pytest.mark.parametrize("name", SAMPLES)
def test_stored_file_has_no_error_the_input_lacked(
    ingestor: Ingestor, archive: Archive, tmp_path: Path, name: str
) -> None:
    source = sample_file(name)
    sample = dcmread(source)
    if not (sample.get("PatientID") or sample.get("PatientName")):
        # Nothing tells its child from another: the node holds such an
        # instance (tests/test_study_conflict.py); give this one an ID.
        sample.PatientID = "SAMPLE-1"
        source = tmp_path / name
        sample.save_as(source, enforce_file_format=True)
    data, syntax = split_file(source.read_bytes())
    result = ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO"))
    assert result.outcome is Outcome.STORED, result
    (stored,) = list(archive.blobs.root.rglob("*.dcm"))
    assert errors(stored) <= errors(source)


def test_synthetic_data_is_valid(xa_files: dict[str, Path], tmp_path: Path) -> None:
    small = small_instance(PATIENTS[1], study_uid="1.2.3", series_uid="1.2.3.4", instance_number=1)
    files = {**xa_files, "small": save(small, tmp_path / "small.dcm")}
    for name, path in files.items():
        assert errors(path) == set(), name  # the fixtures themselves are sound
