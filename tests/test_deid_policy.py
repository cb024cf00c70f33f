"""Beyond Table E.1-1: every standard attribute, at every depth, by generator.

The cases are generated from pydicom's data dictionary rather than listed by
hand, so an attribute nobody here thought of gets planted identity too.
"""

from __future__ import annotations

import json
from importlib.resources import files
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.datadict import DicomDictionary, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from dicomnode.deid import policy
from dicomnode.deid.codes import LOCAL_MEANING, is_well_known_uid, standard_meaning
from dicomnode.deid.header import HeaderDeidentifier
from dicomnode.deid.profile import Option, Profile
from dicomnode.deid.scanner import scan
from dicomnode.deid.secret import Secret
from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance
from tests.conftest import round_trip

KEY = bytes(range(32))
NAME = "Nurlanova^Aigerim"
NEEDLE = "Nurlanova"
ORIGINAL_UID = "1.2.826.0.1.3680043.10.999.4242424242"
_VALUES = {
    "AE": "NURLANOVA",
    "DA": "20190314",
    "DT": "20190314101500+0600",
    "TM": "101500",
    "LO": f"{NEEDLE} Aigerim",
    "LT": f"Seen with {NEEDLE} Aigerim",
    "PN": NAME,
    "SH": NEEDLE,
    "ST": f"{NEEDLE} Aigerim",
    "UC": f"{NEEDLE} Aigerim",
    "UR": f"http://pacs.example/wado?patient={NEEDLE}",
    "UT": f"{NEEDLE} Aigerim",
}


def _risky_public_attributes() -> list[tuple[int, str]]:
    """Every public attribute that Table E.1-1 does not list, of a VR that can
    carry identity, and that the retained table does not name as safe."""
    table = Profile(frozenset())
    found = []
    for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items():
        if not keyword or tag >> 16 in (0x0000, 0x0002, 0x0004, 0xFFFE) or tag >> 16 & 1:
            continue
        if tag >> 16 & 0xFF00 in (0x5000, 0x6000) or tag == 0x7FE00010:
            continue
        if table.rule(tag) is not None or tag in policy.retained():
            continue
        if vr in _VALUES:
            found.append((tag, vr))
    return found


def _deid() -> HeaderDeidentifier:
    return HeaderDeidentifier(Secret(KEY))


def _base() -> Dataset:
    ds = small_instance(
        PATIENTS[0],
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        instance_number=1,
    )
    ds.PatientName = NAME
    return ds


def _plant(ds: Dataset, attributes: list[tuple[int, str]]) -> None:
    for tag, vr in attributes:
        ds.add_new(tag, vr, _VALUES[vr])


def test_the_generator_covers_many_attributes() -> None:
    attributes = _risky_public_attributes()
    assert len(attributes) > 400
    keywords = {keyword_for_tag(t) for t, _ in attributes}
    assert {"RetrieveURL", "RetrieveURI", "HL7InstanceIdentifier", "ChannelSource"} - keywords == {
        "ChannelSource"  # a sequence: walked, not planted
    }
    # Free text a clinician reads is cleaned instead (its own test below).
    assert not {"TextValue", "FrameLabel", "DocumentTitle", "UnformattedTextValue"} & keywords


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_no_unlisted_attribute_keeps_identity_at_any_depth(depth: int) -> None:
    ds = _base()
    holder = Dataset()
    _plant(holder, _risky_public_attributes())
    if depth == 0:
        target = ds
        for element in holder:
            ds.add(element)
    else:
        # Inside sequences the profile keeps (Referenced Image, Content), as deep as asked.
        target = holder
        for _ in range(depth):
            outer = Dataset()
            outer.ReferencedImageSequence = Sequence([target])
            target = outer
        ds.ContentSequence = Sequence([target])
    ds = round_trip(ds)
    assert len(scan(ds, [NEEDLE])) > 300, "the scanner must see what was planted"
    _deid().apply(ds, _deid().subject(ds, "NCC Bishkek", "P1"))
    out = round_trip(ds)
    assert scan(out, [NEEDLE, "20190314", "+0600"]) == []


def test_free_text_clinicians_read_is_cleaned_not_dropped() -> None:
    ds = _base()
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = f"Patient {NEEDLE} Aigerim: ASD 12 mm, rim deficient"
    label = Dataset()
    label.UnformattedTextValue = f"{NEEDLE.upper()} LA view"
    ds.ContentSequence = Sequence([item])
    ds.GraphicAnnotationSequence = Sequence([Dataset()])
    ds.GraphicAnnotationSequence[0].TextObjectSequence = Sequence([label])
    ds = round_trip(ds)
    _deid().apply(ds, _deid().subject(ds, "NCC Bishkek", "P1"))
    out = round_trip(ds)
    text = out.ContentSequence[0].TextValue
    assert NEEDLE not in text and "ASD 12 mm, rim deficient" in text
    assert (
        out.GraphicAnnotationSequence[0]
        .TextObjectSequence[0]
        .UnformattedTextValue.endswith("LA view")
    )
    assert scan(out, [NEEDLE]) == []


def test_every_uid_the_standard_does_not_define_is_remapped_wherever_it_stands() -> None:
    ds = _base()
    ds.OriginalSpecializedSOPClassUID = ORIGINAL_UID
    ds.add_new(0x00280305, "UI", ORIGINAL_UID)  # an UI the table does not name, if known
    deep = Dataset()
    deep.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    deep.ReferencedSOPInstanceUID = ORIGINAL_UID
    deep.ContextUID = "1.2.840.10008.6.1.1"
    ds.SourceImageSequence = Sequence([Dataset()])
    ds.SourceImageSequence[0].ReferencedImageSequence = Sequence([deep])
    ds = round_trip(ds)
    _deid().apply(ds, _deid().subject(ds, "NCC Bishkek", "P1"))
    out = round_trip(ds)
    assert scan(out, [ORIGINAL_UID]) == []
    kept = out.SourceImageSequence[0].ReferencedImageSequence[0]
    assert kept.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"
    assert kept.ContextUID == "1.2.840.10008.6.1.1"
    assert kept.ReferencedSOPInstanceUID == Secret(KEY).uid(ORIGINAL_UID)


def test_code_meanings_come_from_the_standard_never_the_sender() -> None:
    ds = _base()
    standard, local = Dataset(), Dataset()
    standard.CodeValue, standard.CodingSchemeDesignator = "8867-4", "LN"
    standard.CodeMeaning = f"Heart rate of {NEEDLE}"
    local.CodeValue, local.CodingSchemeDesignator = "ECHO-7", "99HOSP"
    local.CodeMeaning = f"Echo by Dr {NEEDLE}"
    ds.ProcedureCodeSequence = Sequence([standard])
    ds.AnatomicRegionSequence = Sequence([local])
    ds = round_trip(ds)
    _deid().apply(ds, _deid().subject(ds, "NCC Bishkek", "P1"))
    out = round_trip(ds)
    regions = out.get("AnatomicRegionSequence") or [local]
    assert regions[0].CodeValue == "ECHO-7"
    assert regions[0].CodeMeaning == LOCAL_MEANING
    procedures = out.get("ProcedureCodeSequence") or []
    assert all(p.CodeMeaning == "Heart rate" for p in procedures)
    assert scan(out, [NEEDLE]) == []


@pytest.mark.parametrize(
    ("sent", "stored"), [("095Y", "090Y"), ("090Y", "090Y"), ("089Y", "089Y"), ("007Y", "007Y")]
)
def test_ages_over_89_become_090y(sent: str, stored: str) -> None:
    ds = _base()
    ds.PatientAge = sent
    _deid().apply(ds, _deid().subject(ds, "NCC Bishkek", "P1"))
    assert ds.PatientAge == stored


def test_an_option_retains_old_ages_and_time_zones() -> None:
    from dicomnode.deid.header import DeidSettings

    options = DeidSettings().options | {Option.RETAIN_AGES_OVER_89, Option.RETAIN_TIMEZONE}
    deid = HeaderDeidentifier(Secret(KEY), DeidSettings(options=options))
    ds = _base()
    ds.PatientAge = "095Y"
    ds.TimezoneOffsetFromUTC = "+0600"
    ds.AcquisitionDateTime = "20190314101500+0600"
    deid.apply(ds, deid.subject(ds, "NCC Bishkek", "P1"))
    assert ds.PatientAge == "095Y"
    assert ds.TimezoneOffsetFromUTC == "+0600"
    assert ds.AcquisitionDateTime.endswith("+0600")
    codes = {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
    assert None not in codes and "113103" in codes and "113104" in codes


def test_time_zones_go_by_default() -> None:
    ds = _base()
    ds.TimezoneOffsetFromUTC = "+0600"
    ds.AcquisitionDateTime = "20190314101500+0600"
    _deid().apply(ds, _deid().subject(ds, "NCC Bishkek", "P1"))
    assert "TimezoneOffsetFromUTC" not in ds
    assert "+" not in str(ds.AcquisitionDateTime)


def test_retained_table_is_well_formed() -> None:
    rows = json.loads(files("dicomnode.deid").joinpath(policy.RETAINED_FILE).read_text("utf-8"))
    table = Profile(frozenset())
    for row in rows:
        tag = int(row["tag"].strip("()").replace(",", ""), 16)
        assert keyword_for_tag(tag) == row["keyword"], row
        assert row["action"] in (policy.KEEP, policy.CLEAN, policy.MEANING)
        assert row["why"], row
        # The profile table is the floor: nothing here overrides it.
        assert table.rule(tag) is None, row["keyword"]


def test_code_tables_and_registry() -> None:
    assert standard_meaning("DCM", "113100") == "Basic Application Confidentiality Profile"
    assert standard_meaning("UCUM", "mm") == "mm"
    assert standard_meaning("99HOSP", "X") is None
    assert is_well_known_uid("1.2.840.10008.1.2.4.50")
    assert not is_well_known_uid(ORIGINAL_UID)


# -- what an outside attacker found (each case as they sent it) -------------


def _implicit(ds: Dataset) -> Dataset:
    """``ds`` written in implicit VR and read back: VRs from the dictionary."""
    buffer = BytesIO()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue()))


def _applied(ds: Dataset) -> Dataset:
    deid = _deid()
    ds = round_trip(ds)
    deid.apply(ds, deid.subject(ds, "NCC Bishkek", "P1"))
    return round_trip(ds)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Отец Бакыт уулу Нурлан на приёме", "Нурлан"),
        ("Асан кызы Айпери, сестра", "Айпери"),
        ("оперировал Ким В.С.", "Ким"),
        ("mother Kubanova Saadat", "Saadat"),
        ("мама Жылдыз, папа Эрмек пришли", "Эрмек"),
        ("мама Жылдыз, папа Эрмек пришли", "Жылдыз"),
        ("Со слов отца Бакыт Уметалиев", "Бакыт"),
        ("анасы Жылдыз келди", "Жылдыз"),
        ("ассистировал Кузнец Олег", "Олег"),
        ("家长：张丽 陪同", "张丽"),
        ("患儿李娜 三岁", "李娜"),
        ("call +7 701 234 56 78 after", "234 56"),
        ("живёт: г. Ош, ул. Ленина 48-12", "Ленина"),
        ("ИБ 108008, PIN 21208201900123", "108008"),
        ("operated 17.01.2023 in Bishkek", "17.01.2023"),
        ("born 2 0 1 9 0 8 0 2", "2 0 1 9"),
    ],
)
def test_names_and_identifiers_the_header_never_mentions(text: str, gone: str) -> None:
    ds = _base()
    item = Dataset()
    item.ValueType, item.TextValue = "TEXT", f"{text}; ASD 12 mm"
    ds.ContentSequence = Sequence([item])
    out = _applied(ds)
    kept = out.ContentSequence[0].TextValue
    assert gone not in kept and "ASD 12 mm" in kept


@pytest.mark.parametrize(
    "written", ["N U R L A N O V A", "N.U.R.L.A.N.O.V.A.", "N-U-R-L-A-N-O-V-A"]
)
def test_a_name_spelled_out_letter_by_letter_is_found(written: str) -> None:
    ds = _base()
    ds.StudyDescription = f"Echo {written} ASD"
    out = _applied(ds)
    text = str(out.StudyDescription)
    assert text.startswith("Echo ***") and text.endswith(" ASD") and "U" not in text


@pytest.mark.parametrize(
    ("charset", "encoding"), [("ISO_IR 100", "cp1251"), ("ISO_IR 100", "utf-8"), ("", "utf-8")]
)
def test_a_wrong_character_set_does_not_smuggle_a_name(charset: str, encoding: str) -> None:
    ds = _base()
    ds.PatientName = "Turdubaev^Azat"
    ds.SpecificCharacterSet = charset
    ds.add_new(0x00081030, "LO", "Эхо Турдубаев Азат".encode(encoding))  # StudyDescription
    out = _applied(ds)
    text = str(out.get("StudyDescription", ""))
    assert "Турдубаев" not in text
    assert not any(
        other and "Турдубаев" in other
        for other in (
            text.encode("latin-1", "ignore").decode(e, "ignore") for e in ("utf-8", "cp1251")
        )
    )


def test_code_strings_numbers_and_unknown_tags_carry_no_identity() -> None:
    ds = _base()
    ds.PatientName, ds.PatientID = "Mamytov^Adilet", "KG-7104004"
    ds.BodyPartExamined = "MAMYTOV ADILET"
    ds.Modality = "SR"  # a short code stays a code, whatever the initials
    ds.add_new(0x00109999, "CS", "MAMYTOV ADILET")  # a public tag no standard defines
    ds.SeriesNumber = "7104004"  # the ID's digits where a number belongs
    ds.EthnicGroup = "Kyrgyz Mamytov"
    ds.add_new(0x00101030, "LO", "Toktogulov")  # PatientWeight that is not a number,
    ds = _implicit(ds)  # read back as a DS, as a careless sender's implicit VR arrives
    out = _applied(ds)
    assert out.BodyPartExamined == "LABEL" and out.Modality == "SR"
    assert 0x00109999 not in out and "SeriesNumber" not in out
    assert out.get("PatientWeight") in (None, "")  # emptied: not a weight (Type 2)
    assert scan(out, ["Mamytov", "7104004", "Toktogulov"]) == []


def test_dates_that_are_not_the_childs_do_not_give_the_shift_away() -> None:
    ds = _base()
    ds.DateOfManufacture = ds.DateOfLastCalibration = "20190802"
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "121071", "DCM"
    item.ContextGroupVersion = "20190802"  # the birth date, where a version belongs
    item.ContextIdentifier = "7000"
    ds.ProcedureCodeSequence = Sequence([item])
    out = _applied(ds)
    assert "DateOfManufacture" not in out and "DateOfLastCalibration" not in out
    assert "ContextGroupVersion" not in out.ProcedureCodeSequence[0]
    assert scan(out, ["20190802"]) == []


def test_a_document_smuggled_into_an_image_goes() -> None:
    ds = _base()
    ds.EncapsulatedDocument = b"%PDF-1.4 ZHAPAROV TILEK KG-7301004"
    out = _applied(ds)
    assert "EncapsulatedDocument" not in out


def _coded(value: str, scheme: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, "x"
    return item


def test_the_standards_codes_stay_and_a_record_number_in_a_code_goes() -> None:
    ds = _base()
    ds.PatientID = "000101"
    codes = [
        _coded("121049", "DCM"),  # a concept, with the shape of a record number
        _coded("C0034375", "UMLS"),  # a concept of a known scheme, not in pydicom's table
        _coded("000101", "UMLS"),  # the child's ID put where a code belongs
        _coded("4820571", "99LOCAL"),  # a long number in a local scheme
        _coded("KRICHENKO-TYPE", "99CHDNODE"),
    ]
    ds.ConceptNameCodeSequence = Sequence(codes)
    _deid().apply(ds, _deid().subject(ds, "NCC Bishkek", "000101"))
    values = [str(item.CodeValue) for item in ds.ConceptNameCodeSequence]
    assert values == ["121049", "C0034375", "***", "***", "KRICHENKO-TYPE"]
    assert ds.ConceptNameCodeSequence[0].CodeMeaning == standard_meaning("DCM", "121049")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("the Krichenko type (A conical) (Krichenko et al., Am J Cardiol 1989)", None),
        ("Криченко тип B", None),
        ("Thanopoulos et al., Heart 2003; Kijima et al. 2016; Abadir et al. 2009", None),
        ("JACC Cardiovasc Interv 2010;3:1295-9 (PMID 21232725)", None),
        ("ЭхоКГ Петров Иван А4С", "ЭхоКГ *** А4С"),  # Cyrillic А and С
        ("Petrova Aigul A2C PLAX", "*** A2C PLAX"),
        ("мама Кадырова А4С", "мама *** А4С"),
        ("Echo Ivanenko, record 4820571", "Echo ***, record ***"),  # -enko stays a surname
        ("Nurlanova PMID 000101", "*** PMID ***"),  # the child's ID stays found
    ],
)
def test_cited_authors_and_view_labels_are_not_names(sent: str, kept: str | None) -> None:
    ds = _base()
    ds.PatientID = "000101"
    deid = _deid()
    subject = deid.subject(ds, "NCC Bishkek", "000101")
    assert deid.clean_text(sent, subject) == (kept or sent)
