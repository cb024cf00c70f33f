"""Placeholders are not clinical data: no 090Y child of 0 kg is stored or exported."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.config import Config
from dicomnode.deid.header import DeidSettings, HeaderDeidentifier
from dicomnode.deid.profile import Option
from dicomnode.deid.secret import Secret
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.jobs.export import Cohort, _manifest_row, export
from dicomnode.ops.samples import PATIENTS
from storage.archive import Archive
from tests.conftest import incoming, round_trip
from tests.test_deid_header import KEY, planted
from tests.test_ingest import instance, stored_files


def deidentified(**attrs: object):
    ds = round_trip(planted(PATIENTS[0]))
    for keyword, value in attrs.items():
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)
    deid = HeaderDeidentifier(Secret(KEY))
    deid.apply(ds, deid.subject(ds, "NCC Bishkek", PATIENTS[0].patient_id))
    return round_trip(ds)


@pytest.mark.parametrize(
    ("birth", "study"),
    [
        ("19000101", "20240315"),  # the usual placeholder: would be 124Y, then 090Y
        ("18991231", "20240315"),
        ("00000000", "20240315"),
        ("19001231", "20240315"),
        ("20250101", "20240315"),  # born after the study: a typing error
        ("20190314", "19000101"),  # the study date is the placeholder
        ("19000101", "19000101"),  # both: would be 000D, a newborn
        ("2019031", "20240315"),
    ],
)
def test_no_age_is_derived_from_a_placeholder_date(birth: str, study: str) -> None:
    out = deidentified(PatientBirthDate=birth, StudyDate=study, PatientAge=None)
    assert not str(out.get("PatientAge") or "")
    assert not out.get("PatientBirthDate")


@pytest.mark.parametrize(
    ("birth", "study", "age"),
    [("19010101", "19900101", "089Y"), ("20240301", "20240315", "014D")],
)
def test_real_dates_still_give_the_age(birth: str, study: str, age: str) -> None:
    out = deidentified(PatientBirthDate=birth, StudyDate=study, PatientAge=None)
    assert out.PatientAge == age


@pytest.mark.parametrize(("sent", "stored"), [("124Y", ""), ("121Y", ""), ("120Y", "090Y")])
def test_a_sent_age_no_one_lives_to_is_emptied_not_capped(sent: str, stored: str) -> None:
    out = deidentified(PatientAge=sent, PatientBirthDate="19000101")
    assert str(out.get("PatientAge") or "") == stored


def test_an_impossible_sent_age_gives_way_to_a_real_birth_date() -> None:
    out = deidentified(PatientAge="124Y", PatientBirthDate="20190314", StudyDate="20240315")
    assert out.PatientAge == "005Y"


def test_a_sent_impossible_age_goes_even_when_old_ages_are_retained() -> None:
    ds = round_trip(planted(PATIENTS[0]))
    ds.PatientAge, ds.PatientBirthDate = "124Y", ""
    options = DeidSettings().options | {Option.RETAIN_AGES_OVER_89}
    deid = HeaderDeidentifier(Secret(KEY), DeidSettings(options=options))
    deid.apply(ds, deid.subject(ds, "NCC Bishkek", PATIENTS[0].patient_id))
    assert not str(ds.get("PatientAge") or "")


@pytest.mark.parametrize(
    ("weight", "kept"),
    [
        ("0", False),
        ("0.0", False),
        ("-3", False),
        ("0.1", False),
        ("14500", False),  # grams
        ("301", False),
        ("0.2", True),
        ("300", True),
        ("14.5", True),
    ],
)
def test_implausible_weights_are_emptied(weight: str, kept: bool) -> None:
    out = deidentified(PatientWeight=weight)
    assert "PatientWeight" in out  # Type 2: present, empty when unknown
    assert (out.PatientWeight == float(weight)) if kept else out.PatientWeight in (None, "")


@pytest.mark.parametrize(
    ("size", "kept"),
    [("0", False), ("96", False), ("0.19", False), ("2.6", False), ("0.96", True), ("2.5", True)],
)
def test_implausible_heights_are_emptied(size: str, kept: bool) -> None:
    out = deidentified(PatientSize=size)
    assert "PatientSize" in out
    assert (out.PatientSize == float(size)) if kept else out.PatientSize in (None, "")


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom, on the values as sent
@pytest.mark.parametrize("weight", ["NaN", "inf", "-inf"])
def test_weights_that_are_not_numbers_are_emptied(weight: str) -> None:
    out = deidentified(PatientWeight=weight)
    assert out.PatientWeight in (None, "")


def test_a_placeholder_child_is_neither_stored_nor_exported_as_a_90_year_old_of_0_kg(
    config: Config, ingestor: Ingestor, archive: Archive, tmp_path: Path
) -> None:
    sent = instance(PATIENTS[0], PatientBirthDate="19000101", PatientWeight="0", PatientSize=0)
    assert ingestor.ingest(incoming(sent, calling_ae="BISHKEK_ECHO")).outcome is Outcome.STORED
    (stored,) = [dcmread(p) for p in stored_files(archive)]
    assert not stored.get("PatientAge") and stored.PatientWeight in (None, "")
    assert stored.PatientSize in (None, "")
    out = tmp_path / "cohort.zip"
    export(config, archive, Cohort(), out, progress=False)
    with zipfile.ZipFile(out) as package:
        (row,) = csv.DictReader(io.StringIO(package.read("manifest.csv").decode()))
        names = [n for n in package.namelist() if n.endswith(".dcm") or "/" in n]
        exported = [dcmread(io.BytesIO(package.read(n))) for n in names if n != "DICOMDIR"]
    assert (row["age"], row["weight_kg"], row["height_m"]) == ("", "", "")
    assert exported and all(
        not ds.get("PatientAge") and ds.get("PatientWeight") in (None, "") for ds in exported
    )


def test_placeholders_an_older_archive_indexed_stay_out_of_the_manifest(archive: Archive) -> None:
    study = {"StudyInstanceUID": "1.2.3", "PatientID": "P", "PatientAge": "124Y"}
    row = _manifest_row(archive, {**study, "PatientWeight": 0.0, "PatientSize": 96}, {"P": "Q"})
    assert (row["age"], row["weight_kg"], row["height_m"]) == ("", "", "")
    row = _manifest_row(archive, {**study, "PatientWeight": 14.5, "PatientSize": 0.96}, {})
    assert (row["weight_kg"], row["height_m"]) == (14.5, 0.96)
