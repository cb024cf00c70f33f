"""Dates as devices write them: read where unambiguous, written back as DICOM."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicomnode.deid.header import HeaderDeidentifier
from dicomnode.deid.secret import Secret
from dicomnode.deid.values import shift_date, shift_datetime
from dicomnode.ops.samples import PATIENTS
from tests.conftest import round_trip
from tests.test_deid_header import KEY, planted


@pytest.mark.parametrize(
    "written",
    [
        "20240315",
        "2024.03.15",  # ACR-NEMA, and what some devices still write
        "2024-03-15",
        "2024/03/15",
        "15.03.2024",  # as written in Kyrgyzstan, Tajikistan, Kazakhstan
        "15/03/2024",  # day first: 15 cannot be a month
        "03/15/2024",  # month first: 15 cannot be a month
        "5.3.2024",
        " 2024-3-15 ",
    ],
)
def test_separated_dates_are_shifted_and_written_as_dicom(written: str) -> None:
    expected = "20240305" if written.strip() != "5.3.2024" else "20240224"
    assert shift_date(written, -10) == expected


@pytest.mark.parametrize("written", ["03/04/2024", "03-04-2024", "2024-13-01", "15.03.24", "x"])
def test_dates_that_need_a_guess_are_not_read(written: str) -> None:
    with pytest.raises(ValueError):
        shift_date(written, -10)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("20240315101500.5+0600", "20240305101500.5+0600"),
        ("2024", "2023"),
        ("2024-03-15T10:15:00", "20240305101500"),
        ("2024-03-15T10:15:00+06:00", "20240305101500+0600"),
        ("2024-03-15T10:15:00Z", "20240305101500+0000"),
        ("2024-03-15T10:15:00.250-03:30", "20240305101500.250-0330"),
        ("2024-03-15 10:15", "202403051015"),
        ("15.03.2024 10:15:30", "20240305101530"),
        ("2024-03-15", "20240305"),
    ],
)
def test_iso_datetimes_keep_their_precision(written: str, expected: str) -> None:
    assert shift_datetime(written, -10) == expected


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom, on the values as sent
def test_separated_dates_in_a_header_are_shifted_not_dummied() -> None:
    deid = HeaderDeidentifier(Secret(KEY))
    ds: Dataset = round_trip(planted(PATIENTS[0]))
    ds.StudyDate = "15.03.2024"
    ds.SeriesDate = "2024-03-15"
    ds.AcquisitionDateTime = "2024-03-15T10:15:00+06:00"
    deid.apply(ds, deid.subject(ds, "NCC Bishkek", PATIENTS[0].patient_id))
    offset = Secret(KEY).date_offset_days("NCC Bishkek", PATIENTS[0].patient_id)
    assert ds.StudyDate == ds.SeriesDate == shift_date("20240315", offset) != "19000101"
    # Full precision, in DICOM's form, and the offset from UTC still goes.
    assert ds.AcquisitionDateTime == shift_date("20240315", offset) + "101500"
