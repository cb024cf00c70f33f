"""Values a sender writes where a date or a time belongs: a name, an ID, a
birth date, control characters. DA, DT and TM are kept (shifted or not) by
the profile, so a value that is not a date or a time must not ride along:
it is replaced, at every depth, in standard and allow-listed private
elements, one value of a backslash list at a time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from dicomnode.deid.header import DeidSettings, HeaderDeidentifier, parse_safe_private
from dicomnode.deid.profile import Option
from dicomnode.deid.secret import Secret
from dicomnode.deid.values import normal_time, shift_date, shift_datetime
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.ops.samples import PATIENTS
from storage.archive import Archive
from tests.conftest import incoming, round_trip
from tests.test_deid_header import KEY, planted

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom, as sent

# PS3.5 6.2, as the node writes them (the offset from UTC is removed from DT).
STRICT = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"),
}
NEEDLES = ("ZHANIBEKOVA", "AIGERIM", "778899123", "14.03.2019", "Zhanibekova", "FORGED")
# The attacker's values and their relatives: text, an ID, a birth date,
# trailing text after a valid value, control characters, an escape sequence.
BAD_TIMES = [
    "ZHANIBEKOVA",
    "AIGERIM 778899123",
    "Zhanibekova A",
    "DOB 14.03.2019",
    "101500 ZHANIBEKOVA",
    "1015\nFORGED ZHANIBEKOVA",
    "101500\x1b[31mZHANIBEKOVA",
    "10:15 ZHANIBEKOVA",
    "778899123",
    "256100",
]
BAD_DATES = [
    "20190314 ZHANIBEKOVA",
    "ZHANIBEKOVA",
    "2019.03.14 AIGERIM",
    "20190314\x1b[31mZHANIBEKOVA",
    "20190314\nFORGED",
    "DOB 14.03.2019",
]
BAD = {"TM": BAD_TIMES, "DA": BAD_DATES, "DT": [*BAD_DATES, "20190314101500 ZHANIBEKOVA"]}
OPTIONS = {
    "default": DeidSettings().options,
    "full-dates": frozenset({Option.RETAIN_FULL_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS}),
}


def date_time_keywords() -> dict[str, str]:
    """Every current standard attribute whose VR is DA, DT or TM."""
    return {
        keyword: vr
        for tag, (vr, _vm, _name, retired, keyword) in DicomDictionary.items()
        if vr in STRICT and not retired and keyword
    }


def elements(ds: Dataset, depth: int = 0) -> Iterator[tuple[int, DataElement]]:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                yield from elements(item, depth + 1)
        else:
            yield depth, element


def values(element: DataElement) -> list[str]:
    value = element.value
    if value in (None, ""):
        return []
    return [str(v) for v in (value if isinstance(value, MultiValue | list) else [value])]


def assert_well_formed(ds: Dataset) -> None:
    for _, element in elements(ds):
        if element.VR in STRICT:
            for value in values(element):
                assert STRICT[element.VR].fullmatch(value), (element.keyword, value)
    text = str(ds)
    for needle in NEEDLES:
        assert needle.casefold() not in text.casefold()
    assert "\x1b" not in text


def deidentified(ds: Dataset, options: frozenset[Option] = OPTIONS["default"]) -> Dataset:
    deid = HeaderDeidentifier(Secret(KEY), DeidSettings(options=options))
    ds = round_trip(ds)
    deid.apply(ds, deid.subject(ds, "NCC Bishkek", PATIENTS[0].patient_id))
    return round_trip(ds)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_the_attackers_times_do_not_survive(options: frozenset[Option]) -> None:
    ds = planted(PATIENTS[0])
    ds.StudyTime = "ZHANIBEKOVA"
    ds.SeriesTime = "AIGERIM 778899123"
    ds.AcquisitionTime = "Zhanibekova A"
    ds.ContentTime = "DOB 14.03.2019"
    out = deidentified(ds, options)
    assert_well_formed(out)
    for keyword in ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime"):
        assert keyword not in out or STRICT["TM"].fullmatch(str(out[keyword].value or "0000"))


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("index", range(len(BAD_DATES)))
def test_every_date_and_time_attribute_at_every_depth(
    options: frozenset[Option], index: int
) -> None:
    """Every DA, DT and TM the dictionary knows, at the top, one and two items deep."""
    ds = planted(PATIENTS[0])
    inner, middle = Dataset(), Dataset()
    for keyword, vr in date_time_keywords().items():
        bad = BAD[vr][index % len(BAD[vr])]
        for target in (ds, inner, middle):
            setattr(target, keyword, bad)
    middle.ReferencedStudySequence = Sequence([inner])
    ds.ReferencedStudySequence = Sequence([middle])
    out = deidentified(ds, options)
    assert_well_formed(out)
    # Not a pass by removal: times and dates are kept at every depth.
    kept = {(depth, element.VR) for depth, element in elements(out) if element.VR in STRICT}
    assert {(0, "TM"), (1, "TM"), (2, "TM"), (0, "DA"), (2, "DA")} <= kept


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_one_bad_value_in_a_backslash_list(options: frozenset[Option]) -> None:
    ds = planted(PATIENTS[0])
    ds.StudyTime = ["101500", "ZHANIBEKOVA", "1016"]
    ds.StudyDate = ["20240315", "20190314 ZHANIBEKOVA"]
    ds.AcquisitionDateTime = ["20240315101500", "20190314 ZHANIBEKOVA"]
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds.ReferencedStudySequence[0].StudyTime = ["AIGERIM", "10:15:30"]
    out = deidentified(ds, options)
    assert_well_formed(out)
    # The good values stay where they were (the value multiplicity too).
    assert list(out.StudyTime) == ["101500", "000000", "1016"]
    assert list(out.ReferencedStudySequence[0].StudyTime)[1] == "101530"


def test_well_formed_times_keep_their_value() -> None:
    ds = planted(PATIENTS[0])
    ds.StudyTime = "101530.123456"
    ds.SeriesTime = "10:15:30"  # ACR-NEMA, which pydicom still reads
    ds.AcquisitionTime = "1015 "
    ds.ContentTime = "07"
    out = deidentified(ds)
    assert out.StudyTime == "101530.123456"
    assert out.SeriesTime == "101530"
    assert out.AcquisitionTime == "1015"
    assert out.ContentTime == "07"


def test_safe_private_dates_and_times_are_checked() -> None:
    options = DeidSettings().options | {Option.RETAIN_SAFE_PRIVATE}
    allow = parse_safe_private(";".join(f"0009:ACME ECHO 1.0:0{n}" for n in (3, 4, 5)))
    deid = HeaderDeidentifier(Secret(KEY), DeidSettings(options=options, safe_private=allow))
    ds = planted(PATIENTS[0])
    block = ds.private_block(0x0009, "ACME ECHO 1.0")
    block.add_new(0x03, "TM", "ZHANIBEKOVA")
    block.add_new(0x04, "DA", "20190314 ZHANIBEKOVA")
    block.add_new(0x05, "DT", ["20240315101500", "AIGERIM 778899123"])
    ds = round_trip(ds)
    deid.apply(ds, deid.subject(ds, "NCC Bishkek", PATIENTS[0].patient_id))
    out = round_trip(ds)
    assert [e.tag for e in out if e.tag.is_private] == [
        0x00090010,
        0x00091003,
        0x00091004,
        0x00091005,
    ]
    assert_well_formed(out)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_a_standard_time_sent_with_another_vr(options: frozenset[Option]) -> None:
    """Explicit VR lets a sender call StudyTime a long string."""
    ds = planted(PATIENTS[0])
    ds.add(DataElement(0x00080030, "LO", "ZHANIBEKOVA AIGERIM"))
    ds.add(DataElement(0x00080020, "LO", "20190314 ZHANIBEKOVA"))
    out = deidentified(ds, options)
    assert_well_formed(out)
    assert out["StudyTime"].VR == "TM" and out["StudyDate"].VR == "DA"


@pytest.mark.parametrize("written", ["20190314 ZHANIBEKOVA", "2019ZHANIBEKOVA", "201903 X"])
def test_dates_with_trailing_text_are_not_read(written: str) -> None:
    with pytest.raises(ValueError):
        shift_datetime(written, -10)
    with pytest.raises(ValueError):
        shift_date(written, -10)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("07", "07"),
        ("0715", "0715"),
        ("071530", "071530"),
        ("071530.5", "071530.5"),
        ("071530.123456", "071530.123456"),
        (" 071530 ", "071530"),
        ("07:15", "0715"),
        ("07:15:30", "071530"),
        ("07:15:30.25", "071530.25"),
        ("235960", "235960"),  # a leap second
    ],
)
def test_times_are_read_and_normalised(written: str, expected: str) -> None:
    assert normal_time(written) == expected


@pytest.mark.parametrize(
    "written",
    [
        *BAD_TIMES,
        "",
        "7",
        "24",
        "0760",
        "071561",
        "071530.1234567",
        "07:1530",
        "0715:30",
        "+071530",
    ],
)
def test_what_is_not_a_time_is_not_read(written: str) -> None:
    with pytest.raises(ValueError):
        normal_time(written)


def test_stored_file_has_no_planted_time(ingestor: Ingestor, archive: Archive) -> None:
    """The repro end to end: what C-STORE and STOW-RS hand the pipeline."""
    from tests.test_ingest import instance

    ds = instance(
        StudyTime="ZHANIBEKOVA",
        SeriesTime="AIGERIM 778899123",
        AcquisitionTime="Zhanibekova A",
        ContentTime="DOB 14.03.2019",
    )
    assert ingestor.ingest(incoming(ds)).outcome is Outcome.STORED
    (path,) = sorted(Path(archive.blobs.root).rglob("*.dcm"))
    raw = path.read_bytes()
    for needle in NEEDLES:
        assert needle.encode() not in raw
    assert_well_formed(dcmread(path))


@pytest.mark.parametrize(
    "bad",
    ["DOB 14.03.2019", "778899123", "HFS\x1b[31mZHANIBEKOVA", "HFS\nFORGED", "14/03/2019"],
)
def test_code_strings_that_are_not_codes(bad: str) -> None:
    """A CS is upper-case letters, digits, space and underscore: a date, a
    record number or a control character in one is a sender's text."""
    ds = planted(PATIENTS[0])
    ds.PatientPosition = bad
    ds.BodyPartExamined = bad
    ds.ImageType = ["ORIGINAL", "PRIMARY", bad]
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds.ReferencedStudySequence[0].Laterality = bad
    out = deidentified(ds)
    assert_well_formed(out)
    for needle in ("778899123", "14.03.2019", "14/03/2019"):
        assert needle not in str(out)
    assert out.ImageType[0] != bad  # replaced, not kept


def test_code_strings_that_are_codes_stay() -> None:
    ds = planted(PATIENTS[0])
    ds.PatientPosition = "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "INVASIVE_ANGIO", "SINGLE PLANE"]
    out = deidentified(ds)
    assert out.PatientPosition == "HFS"
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY", "INVASIVE_ANGIO", "SINGLE PLANE"]
