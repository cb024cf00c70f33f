"""Patient values as a cardiologist reads them: placeholders and implausible
values as unknown, ages in years and months, numbers, dates and times in the
user's language; English sentences from the server translated by pattern."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pydicom.config
import pytest
from flask import Flask
from pydicom.dataset import Dataset

from storage.audit import EVENTS
from tests import test_i18n
from viewer import i18n, presentation
from viewer.presentation import (
    age_text,
    dicom_date,
    patient,
    patient_fields,
    sex_text,
    timestamp,
    weight_kg,
)


@pytest.fixture(autouse=True)
def senders_values() -> Iterator[None]:
    """Broken values are the point here: pydicom need not warn about them."""
    settings = pydicom.config.settings
    modes = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = modes


app = test_i18n.app  # the fixture: a Flask app with the catalogues installed


@pytest.fixture
def en(app: Flask) -> Iterator[None]:
    with app.test_request_context(headers={"Accept-Language": "en"}):
        yield


@pytest.fixture
def ru(app: Flask) -> Iterator[None]:
    with app.test_request_context(headers={"Accept-Language": "ru"}):
        yield


@pytest.fixture
def zh(app: Flask) -> Iterator[None]:
    with app.test_request_context(headers={"Accept-Language": "zh-CN,zh;q=0.9"}):
        yield


def values(**kw: object) -> Dataset:
    ds = Dataset()
    for key, value in kw.items():
        setattr(ds, key, value)
    return ds


# --- ages ------------------------------------------------------------------


@pytest.mark.parametrize(
    "age, shown",
    [
        ("007Y", "7 y"),
        ("018M", "1 y 6 mo"),
        ("011M", "11 mo"),
        ("010W", "10 wk"),
        ("005D", "5 d"),
        ("000D", "0 d"),
        ("000Y", "under 1 y"),
        ("024M", "2 y"),
        ("400D", "1 y 1 mo"),  # legal AS, read in months
        ("040W", "9 mo"),
        ("030Y", "30 y"),  # adults with congenital heart disease are patients too
        ("089Y", "89 y"),
    ],
)
def test_age_strings_read_in_years_and_months(en: None, age: str, shown: str) -> None:
    assert age_text(values(PatientAge=age)) == shown


@pytest.mark.parametrize(
    "age",
    [
        "122Y",  # birth date 1900-01-01 at the sending device
        "090Y",  # the safe-harbour cap: a placeholder birth date at a children's centre
        "999Y",
        "1300M",
        "",
        "   ",
        "7Y",  # not an AS value
        "007",
        "-07Y",
        "007X",
        "ABCY",
        "007Y; DROP TABLE",
    ],
)
def test_placeholder_or_broken_ages_are_unknown(en: None, age: str) -> None:
    assert age_text(values(PatientAge=age)) is None


@pytest.mark.parametrize(
    "birth, study, shown",
    [
        ("20190314", "20260629", "7 y 3 mo"),
        ("20190314", "20190314", "0 d"),
        ("20190314", "20190401", "18 d"),
        ("20190131", "20190228", "28 d"),  # not a whole month yet
        ("20190131", "20190301", "1 mo"),
        ("20180229", "20190301", "1 y"),  # a date that does not exist is no age
        ("20160229", "20170228", "11 mo"),
        ("20160229", "20170301", "1 y"),
        ("20010101", "20260101", "25 y"),
    ],
)
def test_age_from_birth_and_study_dates(en: None, birth: str, study: str, shown: str) -> None:
    ds = values(PatientBirthDate=birth, StudyDate=study)
    if birth == "20180229":
        assert age_text(ds) is None
        return
    assert age_text(ds) == shown


def test_dates_win_over_the_age_string_they_refine(en: None) -> None:
    ds = values(PatientBirthDate="20190314", StudyDate="20260629", PatientAge="007Y")
    assert age_text(ds) == "7 y 3 mo"


@pytest.mark.parametrize(
    "birth, study",
    [
        ("19000101", "20220601"),  # the classic placeholder: 122 years
        ("18950412", "20170905"),  # the placeholder after the node's date shift
        ("00000000", "20220601"),
        ("20300101", "20220601"),  # born after the study
        ("2019", "20220601"),
        ("20191399", "20220601"),
        ("20190314", ""),
    ],
)
def test_placeholder_birth_dates_give_no_age(en: None, birth: str, study: str) -> None:
    ds = values(PatientBirthDate=birth, StudyDate=study)
    assert age_text(ds) is None


def test_placeholder_birth_date_falls_back_to_a_plausible_age_string(en: None) -> None:
    ds = values(PatientBirthDate="19000101", StudyDate="20220601", PatientAge="006Y")
    assert age_text(ds) == "6 y"


def test_no_age_from_a_birth_date_alone(en: None) -> None:
    """The age that matters is the age at the study, not today's."""
    past = (date.today() - timedelta(days=400)).strftime("%Y%m%d")
    assert age_text(values(PatientBirthDate=past)) is None
    assert age_text(values(PatientBirthDate=past, PatientAge="013M")) == "1 y 1 mo"


def test_a_birth_date_in_the_future_is_no_age(en: None) -> None:
    future = (date.today() + timedelta(days=40)).strftime("%Y%m%d")
    later = (date.today() + timedelta(days=400)).strftime("%Y%m%d")
    assert age_text(values(PatientBirthDate=future, StudyDate=later)) is None


def test_ages_in_russian_and_chinese(ru: None) -> None:
    ds = values(PatientBirthDate="20190314", StudyDate="20260629")
    assert age_text(ds) == "7 л 3 мес"
    assert age_text(values(PatientAge="005D")) == "5 дн"


def test_ages_in_chinese(zh: None) -> None:
    assert age_text(values(PatientBirthDate="20190314", StudyDate="20260629")) == "7岁3个月"
    assert age_text(values(PatientAge="010W")) == "10周"


# --- weight, height, sex -----------------------------------------------------


@pytest.mark.parametrize(
    "weight, kg",
    [
        ("14.5", 14.5),
        ("3.2", 3.2),
        ("0.6", 0.6),  # an extremely premature baby
        ("120", 120.0),
        ("0", None),
        ("0.0", None),
        ("-4", None),
        ("301", None),
        ("3200", None),  # grams written as kilograms
        ("NaN", None),
        ("inf", None),
        ("", None),
        ("heavy", None),
    ],
)
def test_weights(weight: str, kg: float | None) -> None:
    assert weight_kg({"PatientWeight": weight}) == kg


def test_weight_from_a_dataset_with_a_ds_value() -> None:
    assert weight_kg(values(PatientWeight="14.5")) == 14.5
    assert weight_kg(values(PatientWeight=None)) is None
    assert weight_kg(Dataset()) is None


@pytest.mark.parametrize(
    "size, cm",
    [("1.2", "120 cm"), ("0.52", "52 cm"), ("0", None), ("120", None), ("-1", None)],
)
def test_heights(en: None, size: str, cm: str | None) -> None:
    assert patient(values(PatientSize=size)).height == cm


@pytest.mark.parametrize(
    "code, en_text, ru_text, zh_text",
    [
        ("M", "male", "муж.", "男"),
        ("F", "female", "жен.", "女"),
        ("O", "other sex", "другой пол", "其他性别"),
        (" f ", "female", "жен.", "女"),
        ("", None, None, None),
        ("X", None, None, None),
        ("MALE", None, None, None),
    ],
)
def test_sex_in_words(
    app: Flask, code: str, en_text: str | None, ru_text: str | None, zh_text: str | None
) -> None:
    for language, expected in (("en", en_text), ("ru", ru_text), ("zh", zh_text)):
        with app.test_request_context(headers={"Accept-Language": language}):
            assert sex_text(values(PatientSex=code)) == expected


# --- the patient line and the viewport overlay ---------------------------------


def test_the_issue_example_placeholders_read_as_unknown(en: None) -> None:
    ds = values(
        PatientID="CHD-ABCD-EFGH",
        PatientSex="",
        PatientBirthDate="19000101",
        StudyDate="20220601",
        PatientAge="122Y",
        PatientWeight="0",
    )
    view = patient(ds)
    assert (view.sex, view.age, view.weight) == (None, None, None)
    assert view.line == "sex unknown · age unknown · weight unknown"
    fields = patient_fields(ds)
    shown = [fields[key] for key in ("sex", "age", "weight", "patient")]
    assert not any("122" in text or "0.0" in text for text in shown), shown
    assert fields["age_raw"] == "122Y"  # the value as sent, for whoever needs it
    assert fields["weight"] == "" and fields["weight_kg"] is None
    assert fields["pseudonym"] == "CHD-ABCD-EFGH"


def test_the_patient_line_in_russian_uses_a_decimal_comma(ru: None) -> None:
    ds = values(PatientSex="F", PatientAge="018M", PatientWeight="14.5")
    assert patient(ds).line == "жен. · 1 л 6 мес · 14,5 кг"
    fields = patient_fields(ds)
    assert (fields["sex"], fields["age"], fields["weight"]) == ("жен.", "1 л 6 мес", "14,5")
    assert (fields["sex_code"], fields["age_raw"], fields["weight_kg"]) == ("F", "018M", 14.5)


def test_the_patient_line_in_chinese(zh: None) -> None:
    ds = values(PatientSex="M", PatientAge="007Y", PatientWeight="21")
    assert patient(ds).line == "男 · 7岁 · 21.0 千克"
    assert patient(values()).line == "性别不详 · 年龄不详 · 体重不详"


def test_patient_values_from_an_index_row(en: None) -> None:
    row = {"PatientSex": "M", "PatientAge": "007Y", "PatientWeight": "14.5", "PatientID": "X"}
    view = patient(row)
    assert (view.sex, view.age, view.weight) == ("male", "7 y", "14.5 kg")


# --- numbers, dates, times -------------------------------------------------------


def test_numbers_in_the_locale(app: Flask) -> None:
    for language, expected in (("en", "1,234.5"), ("ru", "1\u00a0234,5"), ("zh", "1,234.5")):
        with app.test_request_context(headers={"Accept-Language": language}):
            assert presentation.number(1234.5).replace("\u202f", "\u00a0") == expected
            assert presentation.number(float("nan")) == ""
            assert presentation.number("inf") == ""
            assert presentation.number(None) == ""
            assert presentation.number("abc") == ""


@pytest.mark.parametrize("bad", ["20231345", "2023", "19000101", "00000000", "abcdefgh", ""])
def test_broken_or_placeholder_dates_show_nothing(en: None, bad: str) -> None:
    assert dicom_date(bad) == ""


def test_dates_in_each_language(app: Flask) -> None:
    shown = {}
    for language in ("en", "ru", "zh"):
        with app.test_request_context(headers={"Accept-Language": language}):
            shown[language] = dicom_date("20210213")
    assert shown == {"en": "Feb 13, 2021", "ru": "13 февр. 2021\u202fг.", "zh": "2021年2月13日"}


def test_timestamps_drop_microseconds_and_take_the_node_zone(
    en: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Bishkek")  # UTC+6, no daylight saving
    time.tzset()
    try:
        naive_utc = datetime(2026, 12, 6, 19, 27, 41, 690107)  # SQLite gives these
        assert timestamp(naive_utc) == "12/7/26, 1:27\u202fAM"
        assert timestamp(naive_utc.replace(tzinfo=UTC), "medium") == "Dec 7, 2026, 1:27:41\u202fAM"
        assert timestamp("2026-12-06T19:27:41.690107Z", "medium") == "Dec 7, 2026, 1:27:41\u202fAM"
        assert timestamp("2026-12-06T19:27:41.690107+00:00", "medium").endswith("1:27:41\u202fAM")
        assert timestamp("2026-12-06 19:27:41.690107", "medium").endswith("1:27:41\u202fAM")
        assert presentation.zone_name() == "UTC+06:00"
        for broken in ("", None, "yesterday", "2026-13-45T00:00:00Z"):
            assert timestamp(broken) == ""
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_timestamps_in_russian(ru: None) -> None:
    when = datetime(2026, 12, 6, 19, 27, 41, 690107, tzinfo=UTC)
    text = timestamp(when, "medium")
    assert ".690107" not in text and "690" not in text
    assert "дек" in text


# --- translation of English sentences from the server ------------------------------


def test_server_sentences_are_translated_by_pattern(ru: None) -> None:
    assert i18n.translate("ultrasound region 2 (cm)") == "ультразвуковая область 2 (см)"
    assert i18n.translate("catheter 6F") == "катетер 6F"
    assert i18n.translate("known length 12.5 mm") == "известная длина 12,5 мм"
    text = i18n.translate(
        "Imager Pixel Spacing / 1.2 (Estimated Radiographic Magnification Factor), at isocentre"
    )
    assert text == (
        "шаг пикселей детектора / 1,2 (расчётный коэффициент рентгенографического увеличения), "
        "в изоцентре"
    )
    assert i18n.translate("this measurement needs 3 points") == "для этого измерения нужно точек: 3"
    # Unknown text passes through unchanged (a value of the data, a name).
    assert i18n.translate("CHD-ABCD-EFGH") == "CHD-ABCD-EFGH"
    assert i18n.translate("") == "" and i18n.translate(None) == ""


def test_a_long_crafted_message_is_not_matched_at_length(
    ru: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Error texts can quote what a client sent: pattern matching must not
    become a way to keep the server busy, so a text longer than a sentence
    is not matched at all (the patterns are never tried: a count, not a clock)."""
    tried: list[str] = []
    patterns = i18n._patterns
    monkeypatch.setattr(i18n, "_patterns", lambda lang: tried.append(lang) or patterns(lang))
    crafted = "Imager Pixel Spacing / " + " (x), at isocentre / " * 20_000 + "!"
    assert i18n.translate(crafted) == crafted
    assert tried == []
    # A sentence of ordinary length is matched by pattern (the spy sees it).
    assert i18n.translate("this measurement needs 3 points") == "для этого измерения нужно точек: 3"
    assert tried and set(tried) == {"ru"}


def test_quarantine_reasons_are_translated(zh: None) -> None:
    assert i18n.translate("burned-in annotation and no blanking rule for this sender") == (
        "含烧录注释，且该发送方没有遮盖规则"
    )
    assert i18n.translate("OCR found identity text (date, name) in frame 3") == (
        "OCR 在第 3 帧发现身份文字（日期, 姓名）"
    )
    assert i18n.translate("pixels not decodable (ValueError)") == "像素无法解码（ValueError）"


def test_messages_with_values_format_numbers_in_the_locale(ru: None) -> None:
    message = {"text": "known length {mm} mm", "values": {"mm": 12.5}}
    assert i18n.message(message) == "известная длина 12,5 мм"
    assert i18n.message("catheter 6F") == "катетер 6F"
    assert i18n.message(None) == ""
    assert i18n.message({"text": 5}) == ""  # not a message: nothing rather than a 500


def test_every_audit_event_has_a_name_in_each_language(app: Flask) -> None:
    for language in ("ru", "zh"):
        with app.test_request_context(headers={"Accept-Language": language}):
            for event in EVENTS:
                name = presentation.audit_event(event)
                assert name and name != event and not name.isascii(), (language, event)
            assert presentation.audit_event("made-up") == "made-up"
            assert presentation.outcome(0) != "0" and presentation.outcome(8) != "8"
