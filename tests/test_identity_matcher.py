"""IdentityMatcher: identity found however partners write it, clinical text left alone.

Adversarial first: every spelling generator below is a way a partner site (or a
tired typist) has written a child's name, ID, date or phone. The false-positive
suite pairs each descriptor with a real hit so that it cannot pass on a stub.
"""

from __future__ import annotations

import itertools
import logging
import random

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomnode.deid.identity import MARK, Hit, IdentityMatcher


def names(*values: str) -> IdentityMatcher:
    return IdentityMatcher.from_values([("name", v) for v in values])


def found(matcher: IdentityMatcher, text: str, kind: str = "name") -> bool:
    return any(h.kind == kind for h in matcher.find(text))


# -- the interface ----------------------------------------------------------------------------


def test_mark_fits_a_short_string_and_hits_carry_no_value() -> None:
    assert 0 < len(MARK) <= 16 and not any(c.isalnum() for c in MARK)
    hits = names("Ivanov^Alibek").find("Echo IVANOV ALIBEK")
    assert hits == [Hit("name", 5, 18)]
    assert set(Hit.__dataclass_fields__) == {"kind", "start", "end"}


def test_empty_matcher_is_false_and_changes_nothing() -> None:
    empty = IdentityMatcher.from_values([("name", ""), ("id", " "), ("phone", "12")])
    assert not empty
    assert empty.find("Ivanov 12345") == []
    assert empty.clean("  spaced   text ") == "  spaced   text "
    full = IdentityMatcher.from_values([("name", "Ivanov")])
    assert full and full.clean("Ivanov") == MARK


def test_unknown_kind_is_refused_without_the_value() -> None:
    with pytest.raises(ValueError) as info:
        IdentityMatcher.from_values([("nickname", "Ivanov")])
    assert "Ivanov" not in str(info.value)


def test_clean_merges_adjacent_hits_and_joins_nothing() -> None:
    m = IdentityMatcher.from_values([("name", "Ivanov^Alibek"), ("date", "20220802")])
    assert m.clean("LV ok IVANOV^ALIBEK^^^ 02.08.2022, RV ok") == f"LV ok {MARK}, RV ok"
    assert m.clean("Ivanov, Alibek") == MARK
    assert m.clean("Pre-op Ivanov  echo") == f"Pre-op {MARK} echo"
    cleaned = m.clean("AlibekEcho Ivanov")
    assert "Alibek" not in cleaned and "Ivanov" not in cleaned and "Echo" in cleaned
    once = m.clean("Ivanov Alibek 2022-08-02 follow-up")
    assert m.clean(once) == once == f"{MARK} follow-up"


@pytest.mark.parametrize("seed", range(4))
def test_clean_is_idempotent_and_leaves_no_part_behind(seed: int) -> None:
    m = IdentityMatcher.from_values(
        [
            ("name", "Ivanov^Alibek=Иванов^Алибек"),
            ("name", "Wang^Xiaoming=王^小明"),
            ("name", "Li^Ming"),
            ("id", "KG-0012345"),
            ("date", "20220802"),
            ("phone", "+996555123456"),
        ]
    )
    pieces = ["Ivanov", "алибек", "ИВАНОВ", "小明", "Li", "Ming", "0012345", "02.08.2022"]
    pieces += ["555123456", "ASD", "12 mm", "Qp/Qs 1.8", "_", "-", "^", ",", "2022", "08"]
    identity = {"Ivanov", "алибек", "ИВАНОВ", "小明", "Li", "Ming", "0012345", "555123456"}
    rnd = random.Random(seed)
    for _ in range(300):
        text = " ".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 8)))
        cleaned = m.clean(text)
        assert m.clean(cleaned) == cleaned, text
        assert not identity & set(cleaned.split()), text
        assert "02.08.2022" not in cleaned


def test_script_change_is_a_word_boundary() -> None:
    m = names("Li^Ming")
    assert m.clean("Mingалибек") == f"{MARK}алибек"
    assert m.clean("ЛиMing") == MARK


def test_units_after_numbers_are_not_short_names() -> None:
    assert names("Wu^Na").clean("PVR 2 WU, Dr WU") == f"PVR 2 WU, Dr {MARK}"
    assert names("Luo^Yu").clean("100 IU/kg; YU") == f"100 IU/kg; {MARK}"
    assert names("Li^Ming").clean("bed 08 Li") == f"bed 08 {MARK}"


def test_clean_leaves_text_without_identity_byte_for_byte() -> None:
    m = names("Ivanov^Alibek")
    text = "  ASD  closure\t 12 mm "
    assert m.clean(text) is text
    assert m.clean(text + "Ivanov") == f"ASD closure 12 mm {MARK}"


def test_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    m = IdentityMatcher.from_values([("name", "Ivanov^Alibek"), ("phone", "+996555123456")])
    assert m.clean("Ivanov 0555 123 456") == MARK
    assert not caplog.records


# -- names: spelling generators ---------------------------------------------------------------


def _joined_forms(family: str, given: str) -> list[str]:
    """Every way partners join two parts: case, separators, order, camelCase."""
    out = []
    for a, b in ((family, given), (given, family)):
        for sep in (" ", "_", "^", "-", ", ", "", "  "):
            out += [a + sep + b, (a + sep + b).upper(), (a + sep + b).lower()]
        out.append(a[0].upper() + a[1:].lower() + b[0].upper() + b[1:].lower())
    return out


@pytest.mark.parametrize("form", _joined_forms("Ivanov", "Alibek"))
@pytest.mark.parametrize("context", ["{}", "Echo {} post-op", "pt:{};LV ok", "({})"])
def test_joined_names_are_found_and_removed_whole(form: str, context: str) -> None:
    m = names("IVANOV^ALIBEK")
    cleaned = m.clean(context.format(form))
    assert cleaned == context.format(MARK).strip()


@pytest.mark.parametrize("form", _joined_forms("Li", "Ming"))
def test_short_chinese_parts_joined_are_found(form: str) -> None:
    m = names("Li^Ming")
    assert m.clean(f"TTE {form} ok") == f"TTE {MARK} ok"


@pytest.mark.parametrize(
    "text",
    [
        "A. Ivanov",
        "Ivanov A.",
        "Ivanov A.S.",
        "А. Иванов",
        "Иванов А.С.",
        "Dr A.S. Ivanov",
        "A Ivanov",
        "Ivanov A S",
        "S. Ivanov",
        "ИВАНОВ",
        "ivanov",
        "Иванова",  # the mother, or the genitive: the family name is identity
        "Ивановой",
        "Ivanova",
        "ИвановАлибек",
        "АЛИБЕК",
        "Alibek-Ivanov",
    ],
)
def test_surname_with_initials_declensions_and_scripts(text: str) -> None:
    m = names("Ivanov^Alibek^Serikovich")
    cleaned = m.clean(text)
    assert "ivanov" not in cleaned.lower() and "иванов" not in cleaned.lower()
    assert "alibek" not in cleaned.lower() and "алибек" not in cleaned.lower()
    assert not any(c.isalpha() for c in cleaned.replace("Dr", ""))


def test_initials_of_someone_else_stay() -> None:
    m = names("Ivanov^Alibek^Serikovich")
    assert m.clean("B. Ivanov") == f"B. {MARK}"
    assert m.clean("Ivanov, Echo") == f"{MARK}, Echo"
    assert m.clean("в Иванов") == f"в {MARK}"  # a lower-case preposition is no initial
    assert names("Smith^John").clean("J. Smith, Smith J") == MARK


@pytest.mark.parametrize(
    "text",
    ["Vodkina", "VODKINA", "Petrova", "Petrova-Vodkina", "PetrovaVodkina", "Водкина", "Водкиной"],
)
def test_each_half_of_a_double_surname(text: str) -> None:
    m = names("Petrova-Vodkina^Anna")
    assert m.clean(f"Ref: {text}, echo") == f"Ref: {MARK}, echo"


TRANSLITERATIONS = [
    ["Юлия", "Yulia", "Yuliya", "Iuliia", "Julija", "Yuliia"],
    ["Жанна", "Zhanna", "Janna"],
    ["Хасанов", "Khasanov", "Hasanov", "Xasanov", "Ҳасанов", "Hassanov"],
    ["Цой", "Tsoy", "Tsoi", "Coj"],
    ["Щукин", "Shchukin", "Shukin", "Schukin"],
    ["Ҷӯраев", "Juraev", "Dzhuraev", "Djuraev", "Джураев", "Jurayev"],
    ["Әлиев", "Aliev", "Aliyev", "Алиев", "Əliyev"],
    ["Нұрлан", "Nurlan", "Нурлан"],
    ["Наталья", "Natalya", "Natalia", "Natalja", "Nataliya"],
    ["Пётр", "Pyotr", "Petr", "Piotr", "Петр"],
    ["Александр", "Aleksandr", "Alexandr"],
    ["Ксения", "Kseniya", "Ksenia", "Xenia"],
    ["Ғафуров", "Ghafurov", "Gafurov", "G'afurov", "Гафуров"],
    ["Қодиров", "Qodirov", "Kodirov", "Кодиров"],
    ["Жаңабек", "Zhanabek", "Zhangabek", "Жанабек"],
    ["Ильин", "Ilyin", "Il'in", "Iljin"],
    ["Андреев", "Andreev", "Andreyev"],
    ["Сергей", "Sergey", "Sergei", "Sergej"],
    ["Дмитрий", "Dmitriy", "Dmitry", "Dmitrii", "Dmitrij"],
    ["Ерлан", "Yerlan", "Erlan"],
    ["Үсөнбаев", "Usonbaev", "Ussonbaev", "Усонбаев"],
    ["Шукурова", "Shukurova", "Şukurova", "Šukurova"],
    ["Чолпон", "Cholpon", "Čolpon", "Tscholpon"],
    ["Чернышёва", "Chernysheva", "Chernyshova", "Tchernysheva"],
    ["Соловьёв", "Solovyov", "Solovev", "Solov'ev", "Solovjov", "Соловьев"],
    ["Фёдоров", "Fyodorov", "Fedorov", "Fjodorov"],
    ["Евгений", "Evgeny", "Yevgeniy", "Evgenii", "Jevgenij", "Yevgeny"],
    ["Алексей", "Aleksei", "Alexey", "Aleksey", "Alexei"],
    ["Сейтқали", "Seitkali", "Seytkali", "Seitqali"],
    ["Айгерим", "Aigerim", "Aygerim", "Ajgerim"],
    ["Раҳмонов", "Rahmonov", "Rakhmonov", "Рахмонов", "Raxmonov"],
    ["Ғуломов", "Gulomov", "Ghulomov", "G'ulomov", "Гуломов"],
    ["Жұмабаев", "Zhumabaev", "Jumabayev", "Dzhumabaev", "Жумабаев"],
    ["Маджидов", "Madzhidov", "Majidov", "Madjidov"],
    ["Анжела", "Anzhela", "Angela"],
    ["Weißhäupl", "WEISSHAEUPL", "Weisshaupl", "Weißhaeupl"],
    ["Jürgen", "JUERGEN", "Jurgen"],
]


def _pairs() -> list[tuple[str, str]]:
    return [
        (a, b)
        for group in TRANSLITERATIONS
        for a, b in itertools.permutations(group, 2)
        if a.casefold() != b.casefold()
    ]


@pytest.mark.parametrize(("stored", "written"), _pairs())
def test_transliteration_systems_meet(stored: str, written: str) -> None:
    m = names(f"{stored}^Test")
    assert m.clean(f"Эхо {written} после") == f"Эхо {MARK} после"
    assert m.clean(f"echo {written.upper()}, LV") == f"echo {MARK}, LV"


CHINESE_FORMS = [
    "Wang Xiaoming",
    "WANG^XIAOMING",
    "wangxiaoming",
    "WangXiaoming",
    "Xiaoming Wang",
    "XIAOMING",
    "xiao ming",
    "Xiao-Ming",
    "王小明",
    "王 小明",
    "小明",
    "Ван Сяомин",
    "ВАН СЯОМИН",
    "Сяомин",
]


@pytest.mark.parametrize("pn", ["Wang^Xiaoming=王^小明", "王^小明", "王小明", "=王^小明"])
@pytest.mark.parametrize("form", CHINESE_FORMS)
def test_chinese_name_in_pinyin_characters_and_russian(pn: str, form: str) -> None:
    m = names(pn)
    assert m.clean(f"TTE {form} 术后") == f"TTE {MARK} 术后"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("患者王小明超声", f"患者{MARK}超声"),
        ("王小明心脏超声", f"{MARK}心脏超声"),
        ("患儿小明术后复查", f"患儿{MARK}术后复查"),
        ("患者：王 小明", f"患者：{MARK}"),
        ("王大明", "王大明"),  # another child of the family: one character is no match
        ("王", "王"),
        ("明", "明"),
    ],
)
def test_han_names_inside_running_text(text: str, expected: str) -> None:
    m = names("Wang^Xiaoming=王^小明")
    assert m.clean(text) == expected
    assert m.clean(f"{text}; Wang Xiaoming") == f"{expected}; {MARK}"


@pytest.mark.parametrize("pn", ["Ouyang^Xiu=欧阳^修", "欧阳修"])
def test_compound_surname(pn: str) -> None:
    m = names(pn)
    assert m.clean("患者欧阳修") == f"患者{MARK}"
    assert m.clean("欧阳 echo") == f"{MARK} echo"


@pytest.mark.parametrize(
    ("pn", "text"),
    [
        ("张^伟", "Чжан Вэй"),
        ("张^伟", "ZHANGWEI"),
        ("吕^小红", "Lyu Xiaohong"),
        ("吕^小红", "Сяохун"),
        ("Liu^Yang", "Лю Ян"),
        ("Du^Wei", "DU"),  # a particle elsewhere (du Bois), a family name alone
        ("Le^Anh", "Le Anh"),
        ("Li^Xiaoying", "Xiao Ying"),
        ("Li^Xiaoying", "Сяоин"),
    ],
)
def test_more_chinese_and_vietnamese_spellings(pn: str, text: str) -> None:
    assert names(pn).clean(f"echo {text} ok") == f"echo {MARK} ok"


def test_latin_written_chinese_name_in_han_text() -> None:
    m = names("Wang^Xiaoming")
    assert m.clean("患者王小明超声") == f"患者{MARK}超声"
    # Two characters in pinyin are too often ordinary words: 房间 (fáng jiān) is
    # "room" and the start of 房间隔缺损 (ASD); 方健 is no match without characters.
    fang = names("Fang^Jian")
    assert fang.clean("房间隔缺损封堵术") == "房间隔缺损封堵术"
    assert fang.clean("Fang Jian") == MARK


JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


@pytest.mark.parametrize(
    "text",
    [
        "山田太郎",
        "山田 太郎",
        "山田",
        "太郎",
        "やまだ たろう",
        "ヤマダ タロウ",
        "ﾔﾏﾀﾞ ﾀﾛｳ",
        "YAMADA TARO",
        "Yamada Tarō",
        "yamada_tarou",
        "TarouYamada",
    ],
)
def test_japanese_components_of_every_group(text: str) -> None:
    assert names(JAPANESE).clean(f"心エコー {text} 術後") == f"心エコー {MARK} 術後"


def test_japanese_name_in_running_kana_text() -> None:
    m = names(JAPANESE)
    assert m.clean("患者山田太郎さん") == f"患者{MARK}さん"
    assert m.clean("患者やまだたろうさん") == f"患者{MARK}さん"
    assert m.clean("山") == "山"


# -- false positives --------------------------------------------------------------------------

DESCRIPTORS = [
    "ASD closure Amplatzer 12 mm",
    "perimembranous VSD, Qp/Qs 1.8",
    "apical 4ch",
    "PDA coil",
    "subcostal view",
    "Mark",
    "Normal LV function",
    "Lipid profile normal",
    "anomalies of the aortic arch",
    "mammary artery graft",
    "Color Doppler, Nyquist 0.64 m/s",
    "TAPSE 14 mm, LVEF 62%",
    "Stress echo 5 min, max HR 160",
    "An ASD was closed; a PFO is open",
    "Aortic arch: no coarctation",
    "125 kV 10 mA, 7.5 fps",
    "Balloon atrial septostomy (Rashkind)",
    "Tetralogy of Fallot, s/p BT shunt",
    "Ebstein anomaly, tricuspid valve",
    "Marker catheter 5F",
    "Landmark: carina",
    "Дефект межпредсердной перегородки, окклюдер 14 мм",
    "Открытый артериальный проток, спираль",
    "ДМЖП, сброс слева направо, Qp/Qs 1,8",
    "Есть ли остаточный сброс? Нет",
    "Функция ЛЖ в норме, ФВ 64%",
    "房间隔缺损封堵术",
    "室间隔缺损，左向右分流",
    "动脉导管未闭 弹簧圈封堵",
    "法洛四联症 术后复查",
    "心エコー 術後",
]
REALISTIC = [
    ("Ali Nurlanov", "Nurlanov^Ali"),
    ("Li Ming", "Li^Ming=李^明"),
    ("Ma Xiaoling", "Ma^Xiaoling=马^小玲"),
    ("Tsoy Yulia", "Tsoy^Yulia"),
    ("Wang Xiaoming", "Wang^Xiaoming=王^小明"),
    ("An Na", "An^Na=安^娜"),
    ("Fang Jian", "Fang^Jian"),
]


@pytest.mark.parametrize(("written", "pn"), REALISTIC)
@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_clinical_text_survives_and_the_name_does_not(
    descriptor: str, written: str, pn: str
) -> None:
    m = IdentityMatcher.from_values(
        [
            ("name", pn),
            ("id", "KG-0042"),
            ("id", "ACC7781"),
            ("date", "20190304"),
            ("date", "20220802"),
            ("phone", "+996 555 123 456"),
            ("place", "Republican Children's Clinical Hospital"),
            ("place", "ECHO-01"),
        ]
    )
    assert m.clean(descriptor) == descriptor
    assert m.clean(f"{descriptor} / {written}") == f"{descriptor} / {MARK}"


def test_a_patient_called_mark() -> None:
    """'Mark' the word cannot be told from Mark the child; its longer relatives can."""
    m = names("Mark^Ivanov")
    assert m.clean("Mark") == MARK
    assert m.clean("Mark's echo") == f"{MARK}'s echo"
    for text in ("Marker catheter", "Landmark", "marked dilatation", "Trademark"):
        assert m.clean(text) == text
    assert names("Li^Ming").clean("Mark") == "Mark"


@pytest.mark.parametrize(
    ("pn", "inside"),
    [
        ("Ali^Nurlanov", ["anomalies", "Alignment", "normal", "Salina"]),
        ("Li^Ming", ["Lipid", "Limb", "mild", "ЛЖ", "ЛЖ+ПЖ"]),
        ("Ma^Xiaoling", ["mammary", "Max", "Magnet", "125 mA", "gamma"]),
        ("Oh^Minsu", ["ohm", "Ohio", "John"]),
        ("Tsoy^Yulia", ["Cox", "coil", "co-arctation", "CO 3.2 l/min", "Co", "Yule"]),
        ("Wu^Na", ["PVR 2 WU", "2WU", "wound"]),
        ("Luo^Yu", ["Heparin 100 IU/kg", "youth", "Yule"]),
    ],
)
def test_short_parts_never_inside_ordinary_words(pn: str, inside: list[str]) -> None:
    m = names(pn)
    short = pn.split("^")[0]
    for word in inside:
        assert m.clean(f"{word} noted") == f"{word} noted", word
    assert m.clean(f"{short} noted") == f"{MARK} noted"
    assert m.clean(f"{short.upper()}, noted") == f"{MARK}, noted"


def test_function_words_only_when_written_as_a_name() -> None:
    m = names("An^Na=安^娜")
    assert m.clean("an ASD") == "an ASD"
    assert m.clean("Pt AN, echo") == f"Pt {MARK}, echo"
    assert m.clean("An Na") == MARK


# -- IDs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "12345",
        "MRN12345-2",
        "mrn 12345",
        "ID: 12-345",
        "0012345",
        "KG-0012345",
        "kg0012345",
        "KG 0012345",
        "kg_0012345/2",
        "#12345.",
    ],
)
def test_ids_as_substrings_case_and_separators_ignored(text: str) -> None:
    m = IdentityMatcher.from_values([("id", "12345"), ("id", "KG-0012345")])
    assert found(m, text, "id")
    assert "345" not in m.clean(text) and "2" not in m.clean(text).rstrip("2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123 45", False),  # across a space, a short ID is two numbers
        ("12 mm, 345 ms", False),
        ("1234", False),
        ("123456", False),  # a longer number is another number
        ("9912345", False),
        ("0012345", True),  # zero-padded
        ("12345.6", True),
        ("AB-7", True),
        ("ab7", True),
        ("AB7 seen", True),
        ("XAB7", False),
        ("AB77", False),
        ("lab 7", False),
    ],
)
def test_short_ids_only_as_whole_tokens(text: str, expected: bool) -> None:
    m = IdentityMatcher.from_values([("id", "12345"), ("id", "AB7")])
    assert found(m, text, "id") is expected
    assert found(m, f"{text}; AB 7", "id") is expected
    assert found(m, f"{text}; ab-7", "id")


# -- dates ------------------------------------------------------------------------------------


def _date_forms(y: int, m: int, d: int) -> list[str]:
    months_en = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov"]
    months_ru = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа"]
    out = []
    for yy in (f"{y}", f"{y % 100:02d}"):
        for dd, mm in ((f"{d}", f"{m}"), (f"{d:02d}", f"{m:02d}")):
            for sep in (".", "/", "-", " ", ". "):
                out.append(f"{dd}{sep}{mm}{sep}{yy}")  # DMY
                out.append(f"{mm}{sep}{dd}{sep}{yy}")  # MDY
                out.append(f"{yy}{sep}{mm}{sep}{dd}")  # YMD
        out += [f"{d} {months_en[m - 1]} {yy}", f"{d}-{months_en[m - 1].upper()}-{yy}"]
        out.append(f"{d} {months_ru[m - 1]} {yy}")
    out += [
        f"{y}{m:02d}{d:02d}",
        f"{d:02d}{m:02d}{y}",
        f"{y % 100:02d}{m:02d}{d:02d}",
        f"{y}年{m}月{d}日",
        f"{y}年{m:02d}月{d:02d}日",
        f"August {d}, {y}",
        f"Aug {d}th {y}",
        f"{d} авг. {y} г.",
        f"{d} August {y}",
        f"{y} Aug {d}",
        f"{d}nd of August {y}",
        f"{d}.VIII.{y}",
        f"{d} VIII {y}",
        f"{y} ж. {d} тамыз",
        f"{y} жылғы {d} тамыз",
        f"{d}-го августа {y}",
        f"{y}/{m}/{d}",
    ]
    return out


@pytest.mark.parametrize("form", _date_forms(2022, 8, 2))
def test_dates_in_any_order_separator_and_language(form: str) -> None:
    m = IdentityMatcher.from_values([("date", "20220802")])
    assert m.clean(f"Echo {form} ok").replace(" г.", "") == f"Echo {MARK} ok", form


@pytest.mark.parametrize(
    "text",
    [
        "3.8.2022",
        "2022-08-03",
        "2.8",  # no year: a measurement, not a date
        "Qp/Qs 1.8",
        "12 mm",
        "2 Aug",
        "v2.8.22.1",
        "28.02.2022",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "3 авг 2022",
    ],
)
def test_other_dates_and_numbers_stay(text: str) -> None:
    m = IdentityMatcher.from_values([("date", "20220802")])
    assert m.clean(text) == text
    assert m.clean(f"{text} 02.08.2022") == f"{text} {MARK}"


def test_datetime_values_found_with_their_time() -> None:
    m = IdentityMatcher.from_values([("date", "20220802093015.123")])
    assert m.clean("acq 20220802093015") == f"acq {MARK}"
    assert m.clean("acq 02/08/2022") == f"acq {MARK}"


# -- phones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "+996 555 123 456",
        "+996555123456",
        "996-555-123-456",
        "0555 123 456",
        "(0555) 12-34-56",
        "555123456",
        "555.123.456",
        "тел. 8 (555) 123 456",
        "tel:00996555123456",
    ],
)
def test_phone_by_digits(text: str) -> None:
    m = IdentityMatcher.from_values([("phone", "+996 (555) 123-456")])
    cleaned = m.clean(f"call {text} today")
    assert not any(ch.isdigit() for ch in cleaned), cleaned
    assert "call" in cleaned and "today" in cleaned


@pytest.mark.parametrize("text", ["555 123", "123 456", "12 14 16 18 mm", "LVEF 55%, HR 123"])
def test_other_numbers_are_not_the_phone(text: str) -> None:
    m = IdentityMatcher.from_values([("phone", "+996 (555) 123-456")])
    assert m.clean(text) == text
    assert m.clean(f"{text}; tel. 0555123456") == f"{text}; tel. {MARK}"


# -- places -----------------------------------------------------------------------------------


def test_institution_station_and_address() -> None:
    m = IdentityMatcher.from_values(
        [
            ("place", "Национальный центр кардиологии и терапии им. М. Миррахимова"),
            ("place", "ECHO-BSK-01"),
            ("place", "Bishkek, ul. Togolok Moldo 3"),
            ("place", "首都医科大学附属北京安贞医院"),
        ]
    )
    for text in (
        "ECHO-BSK-01",
        "echo bsk 01",
        "Echo_BSK_01",
        "Миррахимова",
        "Mirrakhimov",
        "Бишкеке",
        "Bishkek",
        "Togolok Moldo",
        "首都医科大学附属北京安贞医院",
    ):
        assert m.clean(f"see {text}") == f"see {MARK}", text
    assert m.clean("转自北京安贞医院") == f"转自{MARK}医院"
    assert m.clean("安贞医院") == f"{MARK}医院"
    for text in (
        "echo",
        "ECHO LV",
        "центр",
        "кардиологии",
        "Cardiology center",
        "national",
        "医院",
        "BSK",
        "ECHO-BSK-02",
        "Hospital",
    ):
        assert m.clean(text) == text, text


# -- from_dataset -----------------------------------------------------------------------------


def _received() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = JAPANESE
    ds.PatientID = "KG-0012345"
    ds.IssuerOfPatientID = "RCHC-KG"
    ds.PatientBirthDate = "20190304"
    ds.StudyDate = "20220802"
    ds.AcquisitionDateTime = "20220802093015.123"
    ds.AccessionNumber = "ACC998877"
    ds.ReferringPhysicianName = "Хасанов^Рустам"
    ds.OperatorsName = ["Tsoy^Yulia", "Nurlanov^Ali"]
    ds.PhysiciansOfRecord = "Ҷӯраев^Фаррух"
    ds.NameOfPhysiciansReadingStudy = "Wang^Wei=王^伟"
    ds.PerformingPhysicianName = "Petrova-Vodkina^Anna"
    ds.ResponsiblePerson = "Ivanova^Zhanna"
    ds.PatientTelephoneNumbers = "+996 555 123 456"
    ds.InstitutionName = "Republican Children's Clinical Hospital"
    ds.InstitutionAddress = "Dushanbe, Rudaki 45"
    ds.InstitutionalDepartmentName = "Кардиохирургия Сомони"
    ds.StationName = "ECHO-BSK-01"
    other = Dataset()
    other.PatientID = "OTHER-777"
    other.IssuerOfPatientID = "OSH"
    ds.OtherPatientIDsSequence = Sequence([other])
    step = Dataset()
    step.ScheduledPerformingPhysicianName = "Shchukin^Oleg"
    step.ScheduledProcedureStepStartDate = "20220801"
    step.ScheduledStationName = "CATH-DYU-2"
    request = Dataset()
    request.RequestedProcedureID = "RP-5544"
    request.ScheduledProcedureStepSequence = Sequence([step])
    ds.RequestAttributesSequence = Sequence([request])
    return ds


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("山田", "name"),
        ("YAMADA", "name"),
        ("Khasanov R.", "name"),
        ("Цой", "name"),
        ("Nurlanov", "name"),
        ("Juraev", "name"),
        ("王伟", "name"),
        ("Vodkina", "name"),
        ("Жанна Иванова", "name"),
        ("Щукин", "name"),  # a sequence inside a sequence
        ("kg0012345", "id"),
        ("rchc-kg", "id"),
        ("other777", "id"),
        ("OSH", "id"),
        ("ACC998877", "id"),
        ("RP5544", "id"),
        ("04.03.2019", "date"),
        ("01/08/2022", "date"),
        ("2.8.22", "date"),
        ("20220802093015", "date"),
        ("0555 123 456", "phone"),
        ("ECHO-BSK-01", "place"),
        ("CATH-DYU-2", "place"),
        ("Dushanbe", "place"),
        ("Рудаки", "place"),
        ("Somoni", "place"),
        ("Душанбе", "place"),
    ],
)
def test_from_dataset_collects_every_depth(text: str, kind: str) -> None:
    m = IdentityMatcher.from_dataset(_received())
    assert [h.kind for h in m.find(f"x {text} y")] == [kind]
    assert m.clean(f"x {text} y") == f"x {MARK} y"


def test_from_dataset_extra_and_generic_words() -> None:
    m = IdentityMatcher.from_dataset(_received(), extra=[("place", "Orzu Medical Center")])
    assert m.clean("from Orzu") == f"from {MARK}"
    assert m.clean("Clinical Hospital, Children's cardiology") == (
        "Clinical Hospital, Children's cardiology"
    )
    assert m.clean("3 авг 2022") == "3 авг 2022"  # not one of the data set's dates


def test_from_dataset_reads_values_not_objects_with_datetime_conversion() -> None:
    from pydicom import config

    ds = _received()
    old = config.datetime_conversion
    config.datetime_conversion = True
    try:
        ds.PatientBirthDate = "20190304"
        m = IdentityMatcher.from_dataset(ds)
    finally:
        config.datetime_conversion = old
    assert m.clean("DOB 4 Mar 2019") == f"DOB {MARK}"


def test_the_archives_own_pseudonym_and_observer_are_no_ones_name() -> None:
    ds = Dataset()
    ds.PatientName = ds.PatientID = "CHD-C9EV-S9A9"
    ds.ContentSequence = Sequence([Dataset()])
    ds.ContentSequence[0].PersonName = "Cardiologist^CHD node"
    ds.ContentSequence[0].VerifyingObserverName = "Amina"  # a person: stays a name
    plain = IdentityMatcher.from_dataset(ds)
    assert found(plain, "CHD imaging exchange node")  # the parts, taken for names
    own = IdentityMatcher.from_dataset(ds, handles={"CHD-C9EV-S9A9"}, own={"Cardiologist^CHD node"})
    assert not own.find("CHD imaging exchange node; Cardiologist; 99CHDNODE")
    assert found(own, "see CHD-C9EV-S9A9", "id") and found(own, "signed: Amina")
