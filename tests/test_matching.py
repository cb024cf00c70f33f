"""PS3.4 C.2.2.2 matching, one rule at a time, on SQLite and on PostgreSQL.

Records go into the index directly (not through the ingest, which would
replace the names with pseudonyms): matching is a storage matter, and names
in four scripts are what it must get right.
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.config import Config
from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance
from storage.archive import Archive
from storage.index import StoreOutcome
from storage.keys import Level
from storage.query import Query, QueryError
from storage.record import record_from_dataset
from tests.conftest import round_trip

STUDIES = [
    # patient, study date, study time, modality, accession
    (PATIENTS[0], "20250110", "081500", "US", "ACC_1"),
    (PATIENTS[0], "20260305", "143000.25", "XA", "ACC%2"),
    (PATIENTS[1], "20260612", "1030", "US", "ACC_3"),
    (PATIENTS[2], "20261001", "235959", "US", "acc_4"),
    (PATIENTS[3], "20261102", "000000", "XA", "ACC_5"),
    (PATIENTS[4], "20261103", "120000", "US", "ACC_6"),
]


def index_directly(archive: Archive, ds: Dataset) -> None:
    record = record_from_dataset(
        ds, issuer="NCC Bishkek", transfer_syntax=ExplicitVRLittleEndian, sending_ae="ECHO"
    )
    assert archive.store(record, b"test") is StoreOutcome.STORED


@pytest.fixture
def config(any_index_config: Config) -> Config:
    return any_index_config


@pytest.fixture
def loaded(archive: Archive) -> dict[str, str]:
    """Six studies; the first has two series of three instances each."""
    uids = {}
    for number, (patient, date, time, modality, accession) in enumerate(STUDIES):
        study = generate_uid(UID_ROOT)
        uids[accession] = study
        for series_index in range(2 if number == 0 else 1):
            series = generate_uid(UID_ROOT)
            for instance in range(3 if number == 0 else 1):
                ds = small_instance(
                    patient, study_uid=study, series_uid=series, instance_number=instance + 1
                )
                ds.StudyDate, ds.StudyTime, ds.AccessionNumber = date, time, accession
                ds.Modality = "XA" if (number == 0 and series_index == 1) else modality
                index_directly(archive, round_trip(ds))
    return uids


def find(archive: Archive, level: Level, **keys: str) -> list[dict]:
    return list(archive.index.find(Query(level=level, keys=keys)))


def accessions(archive: Archive, **keys: str) -> set[str]:
    rows = find(archive, Level.STUDY, **{"AccessionNumber": "", **keys})
    return {row["AccessionNumber"] for row in rows}


ALL = {s[4] for s in STUDIES}


def test_universal_and_hierarchical_deduplication(archive: Archive, loaded: dict) -> None:
    rows = find(archive, Level.STUDY, StudyInstanceUID="", PatientName="")
    # Study 1 holds 6 instances in 2 series, yet matches once.
    assert len(rows) == len(STUDIES)
    assert accessions(archive, PatientName="*") == ALL


def test_single_value_is_exact_and_case_sensitive(archive: Archive, loaded: dict) -> None:
    assert accessions(archive, AccessionNumber="ACC_3") == {"ACC_3"}
    assert accessions(archive, AccessionNumber="ACC_4") == set()
    assert accessions(archive, AccessionNumber="acc_4") == {"acc_4"}


def test_wildcards_and_sql_metacharacters(archive: Archive, loaded: dict) -> None:
    assert accessions(archive, AccessionNumber="ACC*") == ALL - {"acc_4"}
    assert accessions(archive, AccessionNumber="ACC?2") == {"ACC%2"}
    # SQL's own wildcards are literals in DICOM.
    assert accessions(archive, AccessionNumber="ACC%2") == {"ACC%2"}
    assert accessions(archive, AccessionNumber="ACC_*") == {"ACC_1", "ACC_3", "ACC_5", "ACC_6"}


def test_uid_list(archive: Archive, loaded: dict) -> None:
    wanted = f"{loaded['ACC_1']}\\{loaded['ACC_5']}\\1.2.3.999"
    assert accessions(archive, StudyInstanceUID=wanted) == {"ACC_1", "ACC_5"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20260305", {"ACC%2"}),
        ("20260101-20261001", {"ACC%2", "ACC_3", "acc_4"}),
        ("20261001-", {"acc_4", "ACC_5", "ACC_6"}),
        ("-20251231", {"ACC_1"}),
    ],
)
def test_date_ranges(archive: Archive, loaded: dict, value: str, expected: set) -> None:
    assert accessions(archive, StudyDate=value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1030", {"ACC_3"}),  # a stored "1030" means 10:30:00
        ("1430", {"ACC%2"}),  # 14:30 spans 14:30:00 to 14:30:59.999999
        ("120000-", {"ACC%2", "acc_4", "ACC_6"}),
        ("-0815", {"ACC_1", "ACC_5"}),
        ("143000.3-2359", {"acc_4"}),
    ],
)
def test_time_ranges(archive: Archive, loaded: dict, value: str, expected: set) -> None:
    assert accessions(archive, StudyTime=value) == expected


def test_person_names_match_case_insensitively_in_any_script(
    archive: Archive, loaded: dict
) -> None:
    assert accessions(archive, PatientName="иванов*") == {"ACC_1", "ACC%2"}
    assert accessions(archive, PatientName="РАҲИМОВА^ФАРАНГИС") == {"ACC_3"}
    assert accessions(archive, PatientName="王^小明") == {"acc_4"}
    assert accessions(archive, PatientName="nazarov^*") == {"ACC_5"}
    assert accessions(archive, PatientName="Петрова?Айгерим") == {"ACC_6"}


def test_modalities_in_study_and_counts(archive: Archive, loaded: dict) -> None:
    rows = find(
        archive,
        Level.STUDY,
        AccessionNumber="",
        ModalitiesInStudy="XA",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
    )
    by_accession = {row["AccessionNumber"]: row for row in rows}
    assert set(by_accession) == {"ACC_1", "ACC%2", "ACC_5"}
    first = by_accession["ACC_1"]
    assert first["ModalitiesInStudy"] == ["US", "XA"]
    assert (first["NumberOfStudyRelatedSeries"], first["NumberOfStudyRelatedInstances"]) == (2, 6)
    assert accessions(archive, ModalitiesInStudy="XA\\MR") == {"ACC_1", "ACC%2", "ACC_5"}


def test_patient_level_counts_and_levels_below(archive: Archive, loaded: dict) -> None:
    rows = find(
        archive,
        Level.PATIENT,
        PatientID=PATIENTS[0].patient_id,
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedSeries="",
        NumberOfPatientRelatedInstances="",
        IssuerOfPatientID="",
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["NumberOfPatientRelatedStudies"], row["NumberOfPatientRelatedSeries"]) == (2, 3)
    assert row["NumberOfPatientRelatedInstances"] == 7
    assert row["IssuerOfPatientID"] == "NCC Bishkek"
    series = find(
        archive,
        Level.SERIES,
        StudyInstanceUID=loaded["ACC_1"],
        Modality="XA",
        NumberOfSeriesRelatedInstances="",
    )
    assert [s["NumberOfSeriesRelatedInstances"] for s in series] == [3]
    images = find(archive, Level.IMAGE, StudyInstanceUID=loaded["ACC_1"], InstanceNumber="2")
    assert len(images) == 2


def test_limit_and_offset(archive: Archive, loaded: dict) -> None:
    query = Query(level=Level.STUDY, keys={"AccessionNumber": ""}, limit=2, offset=1)
    assert len(list(archive.index.find(query))) == 2


@pytest.mark.parametrize(
    "keys",
    [{"StudyDate": "2026-13-01"}, {"StudyDate": "-"}, {"StudyTime": "25x"}, {"SeriesNumber": "x"}],
)
def test_malformed_keys_raise_query_error(archive: Archive, loaded: dict, keys: dict) -> None:
    level = Level.SERIES if "SeriesNumber" in keys else Level.STUDY
    with pytest.raises(QueryError):
        find(archive, level, **keys)


def test_an_overlong_value_is_indexed_cut_short_on_every_back_end(archive: Archive) -> None:
    """A malformed sender's 3,000-character description: the file keeps it,
    the index keeps its first 1,024 characters (PostgreSQL enforces that)."""
    ds = small_instance(
        PATIENTS[0],
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        instance_number=1,
    )
    ds.StudyDescription = "Ж" * 3000
    index_directly(archive, round_trip(ds))
    (row,) = find(archive, Level.STUDY, StudyDescription="")
    assert row["StudyDescription"] == "Ж" * 1024
