"""Identity the header never mentions: names by context and form, and
identifiers, dates, phones and addresses by their shape.

The descriptor cleaner (`identity.py`) finds every name the instance holds
in its attributes, however written. Free text also names people who appear
nowhere else: "mother Kadyrova Gulnara", "sedated by Dr. Kydyralieva",
"operator Imanaliev". Those are found here by two rules, for the partners'
languages:

- a word that says a person follows (a title, a kinship or staff word, in
  English, Russian or Chinese), then up to three capitalised words or
  initials, or two or three Han characters;
- a capitalised word with the form of a Central Asian or Slavic surname or
  patronymic (-ov/-ova, -ev/-eva, -uulu, -kyzy, -zoda, -ovich, -ovna, ...).

- a patronymic word (uulu, kyzy, ogly, ...) joins the names either side;
  a capitalised word followed by initials ("Ким В.С.") is a name.

Clinical abbreviations (ASD, VSD, PDA ...) are all capitals and short, and
are never taken for names; nor is a lower-case word.

`find_identifiers` finds what identifies by its shape alone, whoever it
belongs to: a full date (the header's dates are shifted, so a true date in
text gives the shift away), a phone number, a run of six or more digits (a
record, passport or personal number), and a street address.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicomnode.deid.identity import IdentityMatcher

_CONTEXT = (
    r"dr|doctor|prof|professor|mr|mrs|ms|miss|sir|mother|father|mom|mum|mommy|dad|daddy|"
    r"parents?|sister|brother|sibling|son|daughter|grand(?:mother|father|ma|pa)|granny|"
    r"aunt|uncle|wife|husband|guardian|operator|sonographer|technician|nurse|physician|"
    r"surgeon|cardiologist|consultant|resident|owner|child|baby|infant|boy|girl|"
    r"(?:referred|reported|read|signed|performed|assisted|operated|seen)\s+by|"
    # Russian, declined: мама, мамы, маме, мамой; отец, отца, отцом; ...
    r"врач[аеуом]*|доктор[аеуом]*|др|проф|мат[ьери]+ю?|мам[аыеуой]*|отец|отц[аеуом]+|"
    r"пап[аыеуой]*|сестр[аыеуой]*|брат[аеуом]*|бабушк[аиеуой]*|дедушк[аиеуой]*|"
    r"т[её]т[яиеуюй]*|дяд[яиеуюй]*|сын[аеуом]*|доч[ьерию]+|опекун[аеуом]*|"
    r"оператор[аеуом]*|медсестр[аыеуой]*|хирург[аеуом]*|кардиолог[аеуом]*|"
    r"ассистировал[аи]?|оперировал[аи]?|пациент[аеуом]*|пациентк[аиеуой]*|"
    r"реб[её]н(?:ок|ка|ку|ком)|мальчик[аеуом]*|девочк[аиеуой]*|больн(?:ой|ая|ого|ую)|"
    # Kyrgyz and Kazakh: mother, father, elder sister and brother, grandmother, child
    r"апа(?:сы)?|ана(?:сы)?|ата(?:сы)?|эже(?:си)?|әке(?:сі)?|ага(?:сы)?|аке(?:си)?|"
    r"чоң\s+апа(?:сы)?|әже(?:сі)?|бала(?:сы)?"
)
_FILLER = r"(?:\s+(?:of|with|is|the|named|-|–|:)\b)*"
_WORD = r"(?:[A-ZА-ЯЁӘҒҚҢӨҰҮҺІҲҶӢӮ][\w'’-]+|(?:[A-ZА-ЯЁ]\.){1,3})"
_CONTEXTUAL = re.compile(
    rf"(?<![\w])(?:{_CONTEXT})(?![\w])\.?:?{_FILLER}\s*((?:{_WORD}[,;:.)]?(?:\s+|$)){{1,3}})",
    re.IGNORECASE,
)
# IGNORECASE above lets the context word be any case; the captured words are
# checked for capitals separately (re applies the flag to the whole pattern).
_CAPITALISED = re.compile(rf"^{_WORD}$")
_HAN_CONTEXT = re.compile(
    r"(?:患者|患儿|病人|病儿|医生|医师|大夫|母亲|父亲|妈妈|爸爸|家属|家长|爷爷|奶奶|外婆|外公|"
    r"姐姐|哥哥|操作者|术者|签名)[:：]?\s*([\u4e00-\u9fff]{2,3})"
)
# Letters written one by one ("Z H U M A B E K O V", "Z.H.U.M.A.B.E.K.O.V."):
# read again with the gaps closed, by whoever knows the names.
SPACED = re.compile(r"(?<![\w])(?:\w[ .\-]){3,}\w(?![\w])")
_SURNAME = re.compile(
    r"(?<![\w])[A-ZА-ЯЁӘҒҚҢӨҰҮҺІҲҶӢӮ][\w'’-]*?"
    r"(?i:ov|ova|ev|eva|yov|yova|ёв|ёва|ов|ова|ев|ева|uulu|kyzy|уулу|кызы|zoda|zade|зода|заде|"
    r"ovich|evich|ovna|evna|ovych|ович|евич|овна|евна|ична|shvili|швили|yan|ян|enko|енко|"
    r"bekov|bekova|baev|baeva|баев|баева|беков|бекова)(?![\w])"
)
_ACRONYM = re.compile(r"^[A-ZА-ЯЁ]{1,4}$")
_INITIALS = re.compile(r"^(?:[A-ZА-ЯЁ]\.){1,3}$")
# Capitalised words of cardiology that are not people here: eponyms of
# procedures, syndromes and classifications (Krichenko type), the authors the
# sizing rules cite, devices and their makers, words of a report that
# initials may follow ("Type A.", "Echo N."). Short common surnames the rules
# also cite (Zhu, Lloyd) stay names: no rule here takes them for one in a
# citation, and a relative may bear them.
_NOT_NAMES = frozenset(
    """doppler amplatzer fontan glenn blalock taussig norwood rastelli ross konno
    eisenmenger ebstein fallot holter valsalva mustard senning jatene sano damus
    kawashima williams marfan down turner noonan digeorge kawasaki gore cardioform
    occlutech figulla lifetech cera konar piccolo medtronic philips siemens vivid
    epiq acuson toshiba canon mindray esaote samsung hitachi aloka abbott
    доплер допплер фонтен фалло эбштейн холтер
    echo study view image series scan exam report type grade class stage phase
    lead level zone segment figure fig note see эхо исследование тип класс стадия
    krichenko криченко thanopoulos holzer butera silvestry kijima abadir amedro
    """.split()  # noqa: SIM905
)
_NAME_RUN = re.compile(rf"(?:\s+{_WORD}){{1,2}}")


def _is_name_word(word: str) -> bool:
    word = word.strip(",;:)'’-")
    if not word or word.rstrip(".").casefold() in _NOT_NAMES:
        return False
    if any(ch.isdigit() for ch in word):  # a view label (A4C, А4С: Cyrillic), not a name
        return False
    if _INITIALS.match(word):
        return True
    if not _CAPITALISED.match(word):
        return False
    return not _ACRONYM.match(word.rstrip(".")) or (len(word) == 2 and word.endswith("."))


def _extend(text: str, end: int) -> int:
    """A surname's given name or initials after it belong to the name too."""
    run = _NAME_RUN.match(text, end)
    if not run:
        return end
    for word in re.finditer(r"\S+", run.group()):
        if not _is_name_word(word.group()):
            break
        end = run.start() + word.end()
    return end


def find_names(text: str) -> Iterator[tuple[int, int]]:
    """Spans of ``text`` that are person names by context or by form."""
    position = 0
    while match := _CONTEXTUAL.search(text, position):
        # IGNORECASE lets the pattern take lower-case words too: the names are
        # the capitalised words up to the first that is not, and the search
        # goes on from there ("мама Жылдыз, папа Эрмек").
        start = end = match.start(1)
        for word in re.finditer(r"\S+", match.group(1)):
            if not _is_name_word(word.group()):
                break
            end = start + word.start() + len(word.group().rstrip(",;:)"))
        if end > start:
            yield start, end
        position = max(end, match.start(1), match.start() + 1)
    for match in _HAN_CONTEXT.finditer(text):
        yield match.start(1), match.end(1)
    for match in _SURNAME.finditer(text):
        surname = match.group()
        if len(surname) >= 5 and surname.casefold() not in _NOT_NAMES:
            yield match.start(), _extend(text, match.end())
    for match in _PATRONYMIC.finditer(text):
        yield match.start(), match.end()
    for match in _WITH_INITIALS.finditer(text):
        if match.group(1).casefold() not in _NOT_NAMES and not _ACRONYM.match(match.group(1)):
            yield match.start(), match.end()


_PATRONYMIC = re.compile(
    rf"(?:{_WORD}\s+)?(?i:uulu|kyzy|ogly|oglu|qizi|gizi|уулу|кызы|оглы|қызы|угли|кизи)"
    rf"(?:\s+{_WORD})?"
)
_WITH_INITIALS = re.compile(r"(?<![\w])([A-ZА-ЯЁ][\w'’-]{1,})\s+(?:[A-ZА-ЯЁ]\.\s?){1,3}")

# Identifiers by shape. A date: day, month and a 4-digit year (or 2-digit with
# dots) in any order and separator, or a month name; times are not dates.
_MONTHS = (
    r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|"
    r"янв|фев|мар|апр|ма[йя]|июн|июл|авг|сен|окт|ноя|дек"
)
_DATE = re.compile(
    r"(?<![\d.])(?:"
    r"\d{4}[./-]\d{1,2}[./-]\d{1,2}"  # 2024-03-15, 2024.03.15
    r"|\d{1,2}[./-]\d{1,2}[./-]\d{4}"  # 15.03.2024, 03/15/2024
    r"|\d{1,2}\.\d{1,2}\.\d{2}"  # 15.03.24
    r"|(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"  # 20240315
    rf"|\d{{1,2}}\s*(?i:{_MONTHS})\w*\.?\s*\d{{2,4}}"  # 15 Mar 2024, 15 марта 2024
    r"|\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日"  # 2024年3月15日
    r")(?![\d.]\d)"
)
# A phone: + or a leading 0/8 and at least 9 digits in groups.
_PHONE = re.compile(r"(?<![\w+])(?:\+|\b0|\b8)[\d\s().-]{8,}\d(?!\w)")
# Six or more digits in a row, or spaced out one by one ("2 0 1 9 0 8 0 2").
_DIGITS = re.compile(r"(?<![\d.,])\d{6,}(?![\d.,]\d)|(?<!\d)(?:\d\s){5,}\d(?!\d)")
# A PubMed number cites a paper, not a record: "(PMID 21087774)".
_CITED = re.compile(r"\bPMID:?\s*$")
_ADDRESS = re.compile(
    r"(?i:\b(?:ул|улица|пр|просп|проспект|мкр|микрорайон|пер|переулок|д|дом|кв|г|город|"
    r"street|st|avenue|ave|road|rd|apt|house)\.?)\s+[\w.'’-]+(?:[\s,]+[\d]+[\w/-]*)*"
)


def _digit_count(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def find_identifiers(text: str, *, numbers: bool = True) -> Iterator[tuple[int, int, str]]:
    """Spans and kinds (date, phone, id, place) identifying by their shape.
    ``numbers=False`` leaves out bare digit runs (OCR reads scales and noise)."""
    for match in _DATE.finditer(text):
        yield match.start(), match.end(), "date"
    for match in _PHONE.finditer(text):
        if _digit_count(match.group()) >= 9:
            yield match.start(), match.end(), "phone"
    if numbers:
        for match in _DIGITS.finditer(text):
            if not _CITED.search(text, 0, match.start()):
                yield match.start(), match.end(), "id"
        for match in _ADDRESS.finditer(text):
            if _digit_count(match.group()) or len(match.group()) > 8:
                yield match.start(), match.end(), "place"


def identifying(
    text: str, identity: IdentityMatcher, own_words: Callable[[str], bool] = lambda _: False
) -> set[str]:
    """The kinds of identity in free text a person typed (a plan's note, a
    case's note or detail), found as the descriptor cleaner finds them: the
    child's sealed identity however written, people named by context or by
    the form of their name (but for ``own_words``, the node's own terms),
    and dates, phones, long numbers and addresses by their shape."""
    kinds = {hit.kind for hit in identity.find(text)}
    if any(not own_words(text[start:end]) for start, end in find_names(text)):
        kinds.add("name")
    if any(identity.find(re.sub(r"[ .\-]", "", run.group())) for run in SPACED.finditer(text)):
        kinds.add("name")
    return kinds | {kind for _, _, kind in find_identifiers(text)}
