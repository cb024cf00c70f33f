"""Identity in free text however it is written: names, IDs, dates, phones, places.

Exact-token removal misses what partners really write: IVANOV_ALIBEK,
IvanovAlibek, one half of Petrova-Vodkina, Юлия typed as Iuliia, 王小明 as
wangxiaoming or Ван Сяомин, 2.8.22 for 20220802, a phone without its country
code, the reading physician or the station. So the identity and the text are
brought to one comparable form and compared there.

* Text is cut into chunks (letter/digit runs), chunks into sub-words (script
  changes, camelCase, every Han character, every kana syllable), sub-words into
  a phonetic *skeleton*: NFKC, case folding, ``anyascii`` (Cyrillic of every
  partner language, kana, the rest), then rules that merge romanisation systems
  (kh/h/x, zh/j/dzh/dj/y, ts/c, sh/sch/shch, q/k, w/v, glides, ё as o/e,
  doubled letters). Han characters stay themselves. Each skeleton character
  keeps the span of the original characters, so hits are spans of the text as
  received.
* Identity values become needles in the same skeleton, each with the boundary
  rule that keeps clinicians' words: name parts under 4 skeleton letters only as
  whole sub-words (or at the outer end of a concatenation of the person's
  parts), function words (an, ли) and units (WU, IU) excepted; 4-5 letters as
  whole words, case endings allowed (Иванова, Юлии); longer ones anywhere.
  Chinese names also as pinyin (``pypinyin``) and Palladius Cyrillic; Latin
  pinyin in Han text only over three characters or more. Dates and phones are
  found by pattern and compared by value.
* Each value's needles are cached (a study repeats its names); the needles
  with no shorter needle inside them are *anchors*, and text whose skeleton
  holds no anchor (nearly all text) never builds the span map.

Measured with ``time.process_time`` on the shared 2-core development machine
(Python 3.11, warm caches), identity of a full echo header (patient in three PN
groups, six staff names, five IDs, three dates and a date-time, a phone,
institution, address, department, two stations): ``find`` 19 µs on a 64-character
descriptor without identity (11 µs at 29 characters), 35-50 µs on one with
three hits (``clean`` 45-65 µs: it checks its own result once more); ~100 µs when
every word of the text is new to the cache; building the matcher 0.2-0.4 ms.
Values never go into logs or exceptions and ``Hit`` carries no text; the caches
hold words and values in process memory only.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache, lru_cache
from typing import NamedTuple

from anyascii import anyascii
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

MARK = "***"
KINDS = frozenset({"name", "id", "date", "phone", "place"})

# -- needle rules -----------------------------------------------------------------------------

LEFT = 1  # must start at a boundary
RIGHT = 2  # must end at a boundary
WHOLE = 4  # no boundary inside (one sub-word: "mA" is not "Ma")
HARD = 8  # LEFT/RIGHT boundaries must be chunk edges (tokens, not camelCase)
ENDINGS = 16  # a Russian/transliterated case ending may follow (Иванова, Юлии)
EXTEND = 32  # extend to the end of the word when <= 3 letters remain
STOP = 64  # a function word ("an", "ли"): ignored when written in lower case
NOCROSS = 128  # may not cross whitespace or , ; : between chunks (IDs)
NEEDEND = 256  # a short stem: only with an ending (Марии), never bare
SENTENCE = 512  # STOP, and also in Title case where a sentence starts ("An ASD was closed")
DIGITS = 1024  # a short number: not inside a longer one (ID 12345 is not in 123456)
UNIT = 2048  # spelled like a unit (Wu ~ WU, Yu ~ IU): not right after a number
_STRICT = LEFT | RIGHT | WHOLE | HARD | STOP | NOCROSS | NEEDEND | SENTENCE | DIGITS | UNIT

# -- characters -------------------------------------------------------------------------------

_MARKS = "\u0300-\u036f\u0483-\u0489\u3099\u309a"
# Apostrophes join a word (D'yakov, Jo'raev) except an English possessive (Mark's).
_CHUNK = re.compile(rf"[^\W_](?:[^\W_]|[{_MARKS}]|['’ʼʹ‘](?=[^\W_])(?![sS](?![^\W_])))*")
_CHUNK_PLAIN = re.compile(r"[^\W_]+")  # the same chunks when the text has no marks or apostrophes
_SPECIAL = re.compile(rf"[{_MARKS}'’ʼʹ‘]")
_WEAK_GAP = "-./_^=·'’ʼ"  # separators inside one token (IDs may span them)
_APOS = frozenset("'’ʼʹ‘")
_SMALL_Y = frozenset("ゃゅょャュョ")
_SOKUON = frozenset("っッ")
# Letters anyascii flattens to a sound they do not have in these languages.
_PREMAP = str.maketrans(
    {
        "ž": "zh",
        "š": "sh",
        "č": "ch",
        "ŝ": "shch",
        "ş": "sh",
        "ç": "ch",
        "ğ": "gh",
        "ə": "a",
        "ǰ": "j",
        "ć": "ch",
        "đ": "dj",
        "ś": "sh",
        "ź": "zh",
        "ż": "zh",
        "ң": "n",
        "ӊ": "n",
    }
)
_TOKENS = re.compile(r"shch|tsch|sch|tch|dzh|zh|dj|kh|ch|sh|ts|tz|gh|ph|ck|o'|.", re.DOTALL)
_TOKEN_MAP = {
    "shch": "S",
    "tsch": "C",
    "sch": "S",
    "tch": "C",
    "dzh": "Z",
    "zh": "Z",
    "dj": "Z",
    "kh": "h",
    "ch": "C",
    "sh": "S",
    "ts": "c",
    "tz": "c",
    "gh": "g",
    "ph": "f",
    "ck": "k",
    "o'": "u",
    "x": "h",
    "q": "k",
    "w": "v",
    "y": "J",
    "j": "J",
    "'": "",
}
# J: y/j (й, or ж/дж in Latin spellings); Z: zh/dzh/dj. Both vanish between vowels
# (Aliyev ~ Aliev, Madzhidov ~ Majidov) and become j at the start of a word.
_VOWELS = frozenset("aeiouJZ")
_GLIDES = frozenset("iJZ")


def _is_han(ch: str) -> bool:
    """A CJK ideograph (or 々〆〇): matched as itself, never transliterated."""
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x3134F
        or 0x3005 <= o <= 0x3007
    )


def _is_syllabic(ch: str) -> bool:
    """Kana or Hangul: romanised, every character a syllable boundary."""
    o = ord(ch)
    return 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xAC00 <= o <= 0xD7AF


_HAN_RUN = re.compile(
    r"[\u3005-\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+"
)

# -- skeletons --------------------------------------------------------------------------------


class _Chunk(NamedTuple):
    skel: str
    starts: tuple[int, ...]  # original index (within the chunk) per skeleton character
    ends: tuple[int, ...]
    soft: tuple[int, ...]  # skeleton positions inside the chunk where a sub-word starts


Piece = tuple[str, int, int]  # character, original start, original end


def _skeleton(units: list[Piece]) -> list[Piece]:
    """One sub-word's letters reduced to a form shared by its romanisations."""
    ascii_ = "".join(u[0] for u in units)
    owner = [k for k, u in enumerate(units) for _ in u[0]]
    toks: list[Piece] = []
    for m in _TOKENS.finditer(ascii_):
        a, b = owner[m.start()], owner[m.end() - 1]
        c = _TOKEN_MAP.get(m.group(), m.group())
        if c:
            toks.append((c, units[a][1], units[b][2]))
    # ё after a sibilant is written o or e: Чернышёва ~ Chernyshova ~ Chernysheva.
    for k in range(1, len(toks)):
        if toks[k][0] == "o" and toks[k - 1][0] in "SCZ":
            toks[k] = ("e", toks[k][1], toks[k][2])
    # Kazakh ң is written n or ng: Жаңабек ~ Zhanabek ~ Zhangabek (ng before a vowel).
    for k in range(len(toks) - 2, 0, -1):
        if toks[k][0] == "g" and toks[k - 1][0] == "n" and toks[k + 1][0] in "aeiou":
            toks[k - 1 : k + 1] = [("n", toks[k - 1][1], toks[k][2])]
    out: list[Piece] = []
    i, n = 0, len(toks)
    while i < n:
        if toks[i][0] not in _VOWELS:
            out.append(toks[i])
            i += 1
            continue
        j = i
        while j < n and toks[j][0] in _VOWELS:
            j += 1
        run = toks[i:j]
        first = run[0][0]
        if (
            i == 0
            and len(run) > 1
            and (
                first == "Z"
                or (first == "J" and run[1][0] != "e")
                or (first == "i" and run[1][0] in "aou")
            )
        ):
            out.append(("j", run[0][1], run[0][2]))
            run = run[1:]
        out.extend(_vowel_run(run))
        i = j
    merged: list[Piece] = []
    for c, s, e in out:
        if merged and merged[-1][0] == c:
            merged[-1] = (c, merged[-1][1], e)
        else:
            merged.append((c, s, e))
    return merged


def _vowel_run(run: list[Piece]) -> list[Piece]:
    """Glides out (ия/ia/iya/ija → a), ё written as yo/io → e, Japanese ou → o,
    German ae/oe/ue → a/o/u (Weißhäupl ~ WEISSHAEUPL)."""
    if not run:
        return []
    if all(t[0] in _GLIDES for t in run):
        consonant = all(t[0] == "Z" for t in run)  # ЛЖ is not Li
        return [("j" if consonant else "i", run[0][1], run[-1][2])]
    folded: list[Piece] = []
    for c, s, e in run:
        if folded and folded[-1][0] == "o" and c == "u":
            folded[-1] = ("o", folded[-1][1], e)
        else:
            folded.append((c, s, e))
    run = folded
    pieces: list[Piece] = []
    k = 0
    while k < len(run):
        c, s, e = run[k]
        if c in "iJ" and k + 1 < len(run) and run[k + 1][0] == "o":
            pieces.append(("e", s, run[k + 1][2]))
            k += 2
        else:
            pieces.append((c, s, e))
            k += 1
    kept: list[Piece] = []
    pending = -1
    for c, s, e in pieces:
        if c in _GLIDES:
            if kept:
                kept[-1] = (kept[-1][0], kept[-1][1], e)
            elif pending < 0:
                pending = s
            continue
        if kept and kept[-1][0] in "aou" and c == "e":
            kept[-1] = (kept[-1][0], kept[-1][1], e)  # German ä ö ü written ae oe ue
            continue
        kept.append((c, pending if pending >= 0 else s, e))
        pending = -1
    return kept


_ALPHABETIC = ("letter", "cyr")


def _ascii(folded: str) -> str:
    """One case-folded character's Latin letters (apostrophes kept for o' = ў)."""
    return "".join(
        c for c in anyascii(folded.translate(_PREMAP)).lower() if c.isalpha() or c == "'"
    )


@lru_cache(maxsize=1 << 16)
def _chunk(word: str) -> _Chunk:
    """The skeleton of one chunk of text, with spans and sub-word starts."""
    units: list[tuple[str, str, int, int, bool]] = []  # class, text, start, end, upper
    i, n = 0, len(word)
    while i < n:
        j = i + 1
        while j < n and (unicodedata.combining(word[j]) or word[j] in "\uff9e\uff9f"):
            j += 1
        raw = word[i:j]
        if raw[0] in _APOS:
            # O'Brien is O + Brien; Uzbek Jo'raev keeps o' (= u).
            units.append(("apos", "" if word[j : j + 1].isupper() else "'", i, j, False))
            i = j
            continue
        folded = unicodedata.normalize("NFKC", raw).casefold()
        head = folded[:1]
        if head and _is_han(head):
            units.append(("han", folded, i, j, False))
        elif head.isdigit():
            digits = "".join(str(unicodedata.decimal(c, 0)) for c in folded if c.isdigit())
            units.append(("digit", digits, i, j, False))
        elif head and _is_syllabic(head):
            text = "" if head in _SOKUON else _ascii(folded)
            if head in _SMALL_Y and units and units[-1][0] == "syl" and len(units[-1][1]) > 1:
                last = units[-1]
                if last[1].endswith("i"):  # き+ょ is kyo, not kiyo
                    units[-1] = (last[0], last[1][:-1], last[2], last[3], False)
            units.append(("syl", text, i, j, False))
        else:
            script = "cyr" if "\u0400" <= head <= "\u052f" else "letter"
            units.append((script, _ascii(folded), i, j, raw[0].isupper()))
        i = j
    groups: list[list[tuple[str, str, int, int, bool]]] = []
    for k, u in enumerate(units):
        prev = units[k - 1] if k else None
        new = prev is None or u[0] == "han"
        if prev is not None and not new:
            pc, uc = prev[0], u[0]
            if "apos" not in (pc, uc) and pc != uc:
                new = True  # script change: Latin/Cyrillic, letters/digits, kana
            elif uc in _ALPHABETIC and u[4] and (pc in _ALPHABETIC or not prev[1]):
                # camelCase: IvanovAlibek, IVANOVAlibek
                nxt = units[k + 1] if k + 1 < len(units) else None
                lower_next = nxt is not None and nxt[0] == uc and not nxt[4] and nxt[1]
                new = not prev[4] or bool(lower_next)
        if new:
            groups.append([u])
        else:
            groups[-1].append(u)
    skel: list[Piece] = []
    soft: list[int] = []
    for g in groups:
        if skel:
            soft.append(len(skel))
        cls = g[0][0]
        if cls in ("han", "digit"):
            skel.extend((c, u[2], u[3]) for u in g for c in u[1])
            continue
        pieces = _skeleton([(u[1], u[2], u[3]) for u in g if u[1]])
        if cls == "syl":
            base = len(skel)
            starts = {u[2] for u in g}
            for p in range(1, len(pieces)):
                if pieces[p][1] in starts and pieces[p][1] >= pieces[p - 1][2]:
                    soft.append(base + p)
        skel.extend(pieces)
    return _Chunk(
        "".join(p[0] for p in skel),
        tuple(p[1] for p in skel),
        tuple(p[2] for p in skel),
        tuple(sorted(s for s in set(soft) if 0 < s < len(skel))),
    )


def skeleton(text: str) -> str:
    """The comparable form of ``text`` (separators gone); exposed for tests and export."""
    return "".join(_chunk(m.group()).skel for m in _CHUNK.finditer(text))


# -- words that are never identity on their own -----------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    """Word lists kept as one readable string."""
    return tuple(text.split())


_TITLES = frozenset(_words("dr mr mrs ms miss md phd jr sr prof doc"))
# Dropped from a family name of several words (van der Berg, Nurlan uly), kept alone (Du, Le).
_PARTICLES = frozenset(
    _words(
        "van von der den de la le del della da di du al el bin ibn binti bint ben uly ulu kyzy "
        "kizi qizi gizi ogly oglu ugli ogli zade"
    )
)
# Words that are also short names (An, He, Na, Li): never a name in lower case, nor
# in Title case where a sentence starts (except ли, which never starts one).
_SENTENCE_WORDS = _words(
    "a an and as at be by do go he if in is it me my no of on or so to up us we the for not but "
    "you all are was his her she him has had can "
    "и в во на по до за из от не но да же то у с со к ко о об а я он она они мы вы ты их его "
    "ее без для при над под про"
)
_FUNCTION_WORDS = (*_SENTENCE_WORDS, *_words("ли mm cm ml kg min max sec bpm hz db ms"))
_UNITS = _words("wu iu u ma mo yo yr kv ms hz gy bq ml mm cm kg mg ед ме мл мг")
_PLACE_GENERIC = _words(
    "hospital clinic clinical center centre medical medicine national republic republican "
    "regional region city state federal municipal central general university institute research "
    "scientific science children childrens child pediatric paediatric cardiology cardiac cardio "
    "heart cardiovascular surgery surgical department dept division unit ward street avenue road "
    "district province oblast village building house floor room office memorial saint named after "
    "academician academy branch imaging radiology ultrasound echo echocardiography angiography "
    "cath catheterization laboratory station console workstation main north south east west first "
    "second third number health care healthcare maternity perinatal neonatal foundation private "
    "public company group diagnostic therapy treatment intensive emergency ministry "
    "больница больницы клиника клиник клиническ центр медицинск национальн республиканск "
    "областн региональн городск государственн федеральн научн исследовательск институт "
    "университет академи детск педиатр кардиолог кардиохирург сердечн сердц хирург отделени "
    "кафедр улица проспект переулок корпус квартира район область город село микрорайон имени "
    "академика филиал лаборатори эхокардиограф ангиограф перинатальн родильн материнств "
    "здравоохранени министерств фонд частн общество центральн главн первый второй кабинет "
    "диагностическ лечебн реанимаци аурухана емхана орталық ұлттық республикалық облыстық "
    "қалалық балалар жүрек хирургия ауруханасы ооруканасы борбору улуттук балдар бемористон "
    "маркази миллӣ ҷумҳуриявӣ кӯдакон шаҳри кӯчаи ноҳияи вилояти"
)
_PLACE_SHORT = frozenset(_words("ул пр пер д кв г им мкр обл st rd ave no bldg"))
_HAN_GENERIC_WORDS = _words(
    "附属医院 医院 医科 大学 附属 中心 人民 儿童 妇幼 保健院 保健 心脏 心血管 中医 "
    "第一 第二 第三 研究所 研究院 医学院 医学 分院 病院 国立 県立 市立 循環器 "
    "センター クリニック 省 市 区 县 路 号 街 科"
)
_HAN_GENERIC = re.compile("|".join(sorted(_HAN_GENERIC_WORDS, key=len, reverse=True)))
# Family names read otherwise than the character's default (曾 is Zeng, not Ceng).
_SURNAME_READINGS = {
    char: readings.split("/")
    for char, readings in (
        pair.split(":")
        for pair in _words(
            "曾:zeng 单:shan 解:xie 查:zha 区:ou 仇:qiu 朴:piao 乐:yue/le 尉:yu/wei 缪:miao "
            "翟:zhai/di 覃:qin/tan 盖:ge/gai 种:chong 冼:xian 秘:bi 长:chang/zhang 万:wan/mo "
            "沈:shen 石:shi 陆:lu 贾:jia 华:hua 宁:ning 纪:ji 那:na 召:shao 柏:bai 都:du 车:che"
        )
    )
}
_COMPOUND_SURNAMES = frozenset(
    _words("欧阳 司马 诸葛 上官 东方 慕容 皇甫 令狐 公孙 夏侯 尉迟 长孙 宇文 司徒 端木 歐陽 司馬")
)


@lru_cache(maxsize=1)
def _generic_place_skeletons() -> tuple[frozenset[str], tuple[str, ...]]:
    """Skeletons of words that name no particular place (hospital, центр, улица)."""
    # Stems compared without their last vowels: отделени- covers отделение (otdelene).
    stripped = {skeleton(w).rstrip("aeiouj") for w in _PLACE_GENERIC}
    stems = tuple(sorted(s for s in stripped if len(s) >= 4))
    exact = frozenset({skeleton(w) for w in _PLACE_GENERIC} | {skeleton(w) for w in _PLACE_SHORT})
    return exact, stems


@lru_cache(maxsize=1)
def _stop_skeletons() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Skeletons of function words (all; those that may start a sentence) and of units."""
    return (
        frozenset(skeleton(w) for w in _FUNCTION_WORDS),
        frozenset(skeleton(w) for w in _SENTENCE_WORDS),
        frozenset(skeleton(w) for w in _UNITS),
    )


# -- dates and phones -------------------------------------------------------------------------

# Month names and abbreviations (English, Russian, Kazakh, Tajik stems) and Roman
# numerals (2.VIII.2022).
_MONTHS = {
    form: number
    for number, forms in enumerate(
        (
            "january jan январь января янв қаңтар январ i",
            "february feb февраль февраля фев февр ақпан феврал ii",
            "march mar март марта мар наурыз iii",
            "april apr апрель апреля апр сәуір апрел iv",
            "may май мая мамыр v",
            "june jun июнь июня июн маусым vi",
            "july jul июль июля июл шілде vii",
            "august aug август августа авг тамыз viii",
            "september sep sept сентябрь сентября сен сент қыркүйек сентябр ix",
            "october oct октябрь октября окт қазан октябр x",
            "november nov ноябрь ноября ноя нояб қараша ноябр xi",
            "december dec декабрь декабря дек желтоқсан декабр xii",
        ),
        start=1,
    )
    for form in forms.split()
}
_MONTH = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))
_SEP = r"(?:\s*[./\-]\s*|\s+)"
# Digits in text are first cut into clusters (fast); only clusters long enough to
# be a date or phone are parsed, and month names only when the text has one.
_CLUSTER = re.compile(r"\d[\d\s().\-/年月]*\d")
_DATES_NUM = re.compile(
    r"(?<![\d.])(?P<a>\d{1,4})(?P<s>\s*[./\-]\s*|\s+)(?P<b>\d{1,2})(?P=s)(?P<c>\d{1,4})(?!\d|\.\d)"
    r"|(?<!\d)(?P<run>\d{8}|\d{6})(?!\d)"
    r"|(?<!\d)(?P<y>\d{2}|\d{4})\s*年\s*(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})(?:\s*[日号])?"
)
_DATES_MONTH = re.compile(
    rf"(?<![\d.])(?P<d1>\d{{1,2}})(?:st|nd|rd|th|-?го|-?е)?(?:\s+of)?{_SEP}?(?<![^\W\d_])"
    rf"(?P<m1>{_MONTH})\.?"
    rf"(?![^\W\d_]),?{_SEP}?(?P<y1>\d{{4}}|\d{{2}})(?!\d)"
    rf"|(?<![^\W\d_])(?P<m2>{_MONTH})\.?(?![^\W\d_]){_SEP}?(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?,?"
    rf"{_SEP}(?P<y2>\d{{4}}|\d{{2}})(?!\d)"
    rf"|(?<!\d)(?P<y3>\d{{4}}){_SEP}?(?P<m3>{_MONTH})\.?(?![^\W\d_]){_SEP}?"
    rf"(?P<d3>\d{{1,2}})(?!\d)"
    # Kazakh: 2022 жылғы 2 тамыз, 2022 ж. 2 тамыз
    rf"|(?<!\d)(?P<y4>\d{{4}})\s*(?:жылғы|жыл|ж\.|г\.)?\s*(?P<d4>\d{{1,2}})\s*"
    rf"(?<![^\W\d_])(?P<m4>{_MONTH})(?![^\W\d_])",
    re.IGNORECASE,
)
_LETTERS = re.compile(r"[^\W\d_]+")
_MONTH_WORDS = frozenset(_MONTHS)


def _ymd_options(a: str, b: str, c: str) -> Iterator[tuple[int, int, int]]:
    """(year, month, day) readings of three numbers in any order partners use."""
    x, y, z = int(a), int(b), int(c)
    if len(a) == 4:
        yield x, y, z
        return
    if len(c) in (2, 4):
        yield z, y, x
        yield z, x, y
    if len(a) == 2 and len(c) <= 2:
        yield x, y, z


def _date_key(value: str) -> tuple[int, int, int] | None:
    """(year, month, day) of a DA/DT value, or None for a partial or invalid one."""
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) < 8:
        return None
    try:
        parsed = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None
    return parsed.year, parsed.month, parsed.day


# -- the matcher ------------------------------------------------------------------------------

_ID_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "AccessionNumber",
        "MedicalRecordLocator",
        "StudyID",
        "AdmissionID",
        "ServiceEpisodeID",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "ClinicalTrialSubjectID",
        "ClinicalTrialSubjectReadingID",
        "DeviceSerialNumber",
    }
)
_PLACE_KEYWORDS = frozenset(
    {
        "PatientAddress",
        "RegionOfResidence",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "StationAETitle",
        "ScheduledStationName",
        "ScheduledStationAETitle",
        "PerformedStationName",
        "PerformedStationAETitle",
        "PerformedLocation",
        "ScheduledProcedureStepLocation",
        "RequestedProcedureLocation",
        "ScheduledStudyLocation",
        "ScheduledStudyLocationAETitle",
        "CurrentPatientLocation",
        "PatientInstitutionResidence",
        "ScheduledPatientInstitutionResidence",
        "ReferringPhysicianAddress",
        "PersonAddress",
        "ResponsibleOrganization",
        "OrderEntererLocation",
        "AssignedLocation",
    }
)
_NAME_SPLIT = re.compile(r"[\s\-,.;/()]+")


@dataclass(frozen=True)
class Hit:
    """Where identity was found: a kind and a span of the original text, never the value."""

    kind: str  # "name", "id", "date", "phone", "place"
    start: int
    end: int


class _Needle(NamedTuple):
    kind: str
    flags: int
    initials: frozenset[str]  # first skeleton letters of the person's parts ("A. Ivanov")
    letters: int  # fewest letters the text must spell it with (Tsoy is not "CO")


class _Stream(NamedTuple):
    skel: str
    starts: list[int]
    ends: list[int]
    bounds: list[int]  # sorted skeleton positions that are boundaries
    strength: dict[int, int]  # position -> 0 sub-word, 1 weak separator, 2 strong / edge


class _Builder:
    """Needles for one identity value; cached per value (a study repeats its names)."""

    def __init__(self) -> None:
        self._needles: dict[str, _Needle] = {}
        self._pinyin: dict[str, None] = {}  # Latin-written names to look for in Han text

    def _put(
        self,
        needle: str,
        kind: str,
        flags: int,
        initials: frozenset[str] = frozenset(),
        letters: int = 0,
    ) -> None:
        """Adds a needle; the same needle from two sources keeps the looser rule."""
        if needle:
            new = _Needle(kind, flags, initials, letters)
            self._needles[needle] = _merge_rule(self._needles.get(needle), new)

    def _add_part(self, skel: str, kind: str, initials: frozenset[str], raw: str = "") -> None:
        """A name part (or place word) with the boundary rule its length allows, and its stem."""
        n = len(skel)
        if n < 2 or skel.isdigit():
            return
        letters = 0
        if n <= 3:
            stop, sentence, units = _stop_skeletons()
            flags = LEFT | RIGHT | WHOLE | (UNIT if skel in units else 0)
            flags |= (STOP if skel in stop else 0) | (SENTENCE if skel in sentence else 0)
            letters = min(3, sum(ch.isalpha() for ch in raw))
        elif n <= 5:
            flags = LEFT | RIGHT | ENDINGS
        else:
            flags = EXTEND
        self._put(skel, kind, flags, initials, letters)
        # Petrova ~ Petrov, Kovalskaya ~ Kovalsky, Мария ~ Марии: the stem with an ending.
        if n >= 4 and skel[-1] in "aei":
            stem = skel[:-1]
            if len(stem) >= 6:
                self._put(stem, kind, EXTEND, initials)
            else:
                self._put(stem, kind, LEFT | RIGHT | ENDINGS | (NEEDEND if n < 5 else 0), initials)

    def _add_name(self, value: str) -> None:
        """A PN value: every group (alphabetic, ideographic, phonetic), every component."""
        kana = any(_is_syllabic(ch) for ch in value)
        people: list[tuple[list[str], list[str]]] = []  # (Latin-ish parts, Han components)
        for group in value.split("="):
            comps = group.split("^")[:3]
            if "^" not in group:
                comps = [group]
            latin: list[str] = []
            han: list[str] = []
            for comp in comps:
                comp = comp.strip()
                if not comp:
                    continue
                if all(_is_han(ch) or ch.isspace() for ch in comp):
                    han.append("".join(comp.split()))
                    continue
                words = [w for w in _NAME_SPLIT.split(comp) if _fold(w) not in _TITLES]
                kept = [w for w in words if _fold(w) not in _PARTICLES]
                latin.extend(kept or words)
            if len(han) == 1 and len(comps) == 1 and len(han[0]) >= 3:
                whole = han[0]
                cut = 2 if whole[:2] in _COMPOUND_SURNAMES or len(whole) == 4 else 1
                han = [whole[:cut], whole[cut:]]
            people.append((latin, han))
        for latin, han in people:
            if han:
                self._add_han(han, romanise=not kana)
            latin = [w for w in latin if w]
            if latin:
                self._add_latin(latin)
                words = ["".join(c for c in _fold(w) if c.isalpha()) for w in latin]
                if 2 <= len(words) <= 4:
                    for order in (words, words[1:] + words[:1]):
                        joined = "".join(order)
                        if len(joined) >= 6:
                            self._pinyin[joined] = None

    def _add_han(self, comps: list[str], romanise: bool) -> None:
        """Han components: as characters (never one alone) and, for Chinese, as pinyin."""
        whole = "".join(comps)
        for needle in {whole, "".join(reversed(comps)), *comps}:
            if len(needle) >= 2:
                self._put(needle, "name", 0)
        if len(comps) == 2 and len(comps[1]) == 3:
            self._put(comps[1][1:], "name", 0)
        if not romanise:
            return
        from pypinyin import lazy_pinyin

        options = [""]
        for char in comps[0]:
            readings = _SURNAME_READINGS.get(char) or lazy_pinyin(char, v_to_u=True)
            options = [o + r for o in options for r in readings][:4]
        parts = [*options]
        for comp in comps[1:]:
            syllables = lazy_pinyin(comp, v_to_u=True)
            parts.extend(["".join(syllables), " ".join(syllables)])
        self._add_latin(
            [anyascii(p) for p in parts], pairs_from=[options[0], *parts[len(options) :]]
        )

    def _add_latin(self, parts: list[str], pairs_from: list[str] | None = None) -> None:
        """Name parts in any romanisation, and their concatenations in either order."""
        initials = frozenset(
            i for p in parts if (s := skeleton(p)) for i in (s[0], skeleton(p[0])[:1])
        )
        for part in parts:
            folded = _fold(part)
            if not folded:
                continue
            for skel in {skeleton(v) for v in _variants(part)}:
                self._add_part(skel, "name", initials, part)
            # Chinese names in Russian text (Palladius); one short syllable alone
            # (Мин, Ван) is too often a word, so those only in concatenations.
            cyr = _palladius(folded)
            if cyr is not None and len(skeleton(cyr)) >= 4:
                self._add_part(skeleton(cyr), "name", initials)
        primary: dict[str, str] = {}  # skeleton -> raw, for concatenations
        palladius: dict[str, str] = {}
        for part in pairs_from if pairs_from is not None else parts:
            if len(skel := skeleton(part)) < 2:
                continue
            folded = _fold(part)
            primary.setdefault(skel, part)
            if (cyr := _palladius(folded)) is not None:
                palladius.setdefault(skeleton(cyr), cyr)
        self._add_pairs(primary, initials)
        self._add_pairs(palladius, initials)

    def _add_pairs(self, parts: dict[str, str], initials: frozenset[str]) -> None:
        """IvanovAlibek, ALIBEK_IVANOV, liming: two parts written as one word."""
        for a, a_raw in parts.items():
            for b, b_raw in parts.items():
                if a == b:
                    continue
                flags = (LEFT if len(a) < 4 else 0) | (RIGHT if len(b) < 4 else 0)
                flags = flags or EXTEND
                self._put(a + b, "name", flags, initials)
                joined = skeleton("".join(ch for ch in (a_raw + b_raw).lower() if ch.isalnum()))
                if len(joined) >= 4:
                    self._put(joined, "name", flags, initials)

    def _add_id(self, value: str, kind: str) -> None:
        """An ID inside other text (MRN12345-2), separators ignored; short ones as tokens."""
        skel = skeleton(value)
        if len(skel) < 2:
            return
        short = len(skel) < 8
        if len(skel) <= 3:
            self._put(skel, kind, LEFT | RIGHT | HARD | NOCROSS)
        else:
            self._put(skel, kind, (NOCROSS | (DIGITS if skel.isdigit() else 0)) if short else 0)
        # MRN-0012345 is also written 0012345: a long digit run is identity on its own.
        for run in re.findall(r"\d{5,}", skel):
            for digits in {run, run.lstrip("0")}:
                if digits != skel and len(digits) >= 5:
                    self._put(digits, kind, NOCROSS | (DIGITS if len(digits) < 8 else 0))

    def _add_place(self, value: str) -> None:
        """The whole value as a token, and its words that name this place and no other."""
        exact, stems = _generic_place_skeletons()
        words = [skeleton(w) for w in re.findall(r"[^\W\d_]+(?:['’][^\W\d_]+)*", value)]
        generic = all(w in exact or (len(w) >= 4 and w.startswith(stems)) for w in words)
        whole = skeleton(value)
        if len(whole) >= 3 and not generic:  # not "CATH LAB", "Children's Hospital"
            self._put(whole, "place", LEFT | RIGHT | HARD)
        for run in _HAN_RUN.findall(value):
            for segment in _HAN_GENERIC.split(run):
                # 北京安贞 is also written 安贞: its two ends as well.
                for piece in {segment, segment[:2], segment[-2:], segment[-3:]}:
                    if len(piece) >= 2 and len(segment) >= 2:
                        self._put(piece, "place", 0)
            if len(run) >= 2:
                self._put(run, "place", 0)
        for word in re.findall(r"[^\W\d_]+(?:['’][^\W\d_]+)*", value):
            if _HAN_RUN.search(word) or sum(ch.isalpha() for ch in word) < 4:
                continue
            skel = skeleton(word)
            if len(skel) < 3 or skel in exact or skel.startswith(stems):
                continue
            self._put(skel, "place", LEFT | RIGHT | ENDINGS)
            if len(skel) >= 5 and skel.endswith("a"):
                self._put(skel[:-1], "place", LEFT | RIGHT | ENDINGS)


@lru_cache(maxsize=4096)
def _entries(kind: str, value: str) -> tuple[tuple[tuple[str, _Needle], ...], tuple[str, ...]]:
    """The needles (and pinyin forms) of one identity value."""
    builder = _Builder()
    if kind == "name":
        builder._add_name(value)
    elif kind == "place":
        builder._add_place(value)
    else:
        builder._add_id(value, kind)
    return tuple(builder._needles.items()), tuple(builder._pinyin)


def _merge_rule(old: _Needle | None, new: _Needle) -> _Needle:
    """The same needle from two sources keeps the looser rule."""
    if old is None:
        return new
    flags = (old.flags & new.flags & _STRICT) | ((old.flags | new.flags) & ~_STRICT)
    return _Needle(old.kind, flags, old.initials | new.initials, min(old.letters, new.letters))


class IdentityMatcher:
    """Finds one instance's identity in free text, whatever script or format it is in."""

    def __init__(self, values: Iterable[tuple[str, str]]) -> None:
        self._needles: dict[str, _Needle] = {}
        self._pinyin: dict[str, None] = {}  # Latin-written names to look for in Han text
        self._dates: set[tuple[int, int, int]] = set()
        self._dates_yy: set[tuple[int, int, int]] = set()
        self._phones: set[str] = set()
        # The pairs it was made of: what a later reader (deferred OCR) needs
        # to make the same matcher again, sealed meanwhile.
        kept: list[tuple[str, str]] = []
        for kind, value in values:
            if kind not in KINDS:
                raise ValueError("unknown identity kind")
            if not value or not str(value).strip():
                continue
            value = str(value)
            kept.append((kind, value))
            if kind == "date":
                self._add_date(value)
            elif kind == "phone":
                digits = "".join(ch for ch in value if ch.isdigit())
                if len(digits) >= 6:
                    self._phones.add(digits)
            else:
                self._include(_entries(kind, value))
        # Anchors: the fewest needles such that every needle contains one. Text
        # without an anchor has no needle; with one, only that anchor's needles run.
        anchors: dict[str, list[str]] = {}
        for needle in sorted(self._needles, key=len):
            for anchor in [a for a in anchors if a in needle] or [needle]:
                anchors.setdefault(anchor, []).append(needle)
        self._anchors = {a: tuple(reversed(ns)) for a, ns in anchors.items()}
        self._anchor_order = tuple(self._anchors)
        self.values: tuple[tuple[str, str], ...] = tuple(dict.fromkeys(kept))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_values(cls, values: Iterable[tuple[str, str]]) -> IdentityMatcher:
        """A matcher for (kind, value) pairs: research export, configuration, tests."""
        return cls(values)

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        extra: Iterable[tuple[str, str]] = (),
        handles: Iterable[str] = (),
        own: Iterable[str] = (),
    ) -> IdentityMatcher:
        """Collects identity from ``ds`` as received, at every depth, plus ``extra`` pairs.

        Every PN value (all groups and components), ID-like, telephone and place
        attributes, and every DA/DT value (true dates identify once the header's
        dates are shifted). ``handles`` are values the archive wrote itself (a
        pseudonym, also its Patient's Name): found whole as identifiers, never
        cut into name parts ("CHD" of CHD-C9EV-S9A9 is no one's name). ``own``
        values name the node, not a person (its report observer), and are left out.
        """
        whole, skipped = {h for h in handles if h}, set(own)
        pairs = [
            ("id" if value in whole else kind, value)
            for kind, value in _collect(ds)
            if value not in skipped
        ]
        return _made(tuple([*pairs, *extra])) if cls is IdentityMatcher else cls([*pairs, *extra])

    def _add_date(self, value: str) -> None:
        """A DA/DT value, found later by value in any written form."""
        key = _date_key(value)
        if key is None:
            return
        self._dates.add(key)
        self._dates_yy.add((key[0] % 100, key[1], key[2]))
        digits = "".join(ch for ch in value if ch.isdigit())
        if len(digits) >= 12:
            self._include(_entries("date", digits[:14]))

    def _include(self, entries: tuple[tuple[tuple[str, _Needle], ...], tuple[str, ...]]) -> None:
        """Merges one value's (cached) needles into this matcher's."""
        needles, pinyin = entries
        for needle, rule in needles:
            self._needles[needle] = _merge_rule(self._needles.get(needle), rule)
        self._pinyin.update(dict.fromkeys(pinyin))

    # -- matching -----------------------------------------------------------------------------

    def __bool__(self) -> bool:
        """Whether there is anything to look for (callers skip the work otherwise)."""
        return bool(self._needles or self._dates or self._phones)

    def find(self, text: str) -> list[Hit]:
        """Every place in ``text`` where this identity appears, in order of start."""
        if not text or not self:
            return []
        hits: list[Hit] = []
        if self._needles:
            words = _CHUNK if _SPECIAL.search(text) else _CHUNK_PLAIN
            skel = "".join([_chunk(w).skel for w in words.findall(text)])
            found = [a for a in self._anchor_order if a in skel]
            if found:
                chunks = [(m.start(), m.end(), _chunk(m.group())) for m in words.finditer(text)]
                stream = self._stream(text, chunks, skel)
                needles = {n: None for a in found for n in self._anchors[a]}
                hits.extend(self._needle_hits(text, stream, needles))
            if self._pinyin and _HAN_RUN.search(text):
                hits.extend(self._pinyin_hits(text))
        if self._dates or self._phones:
            clusters = list(_CLUSTER.finditer(text))
            if clusters and self._dates:
                hits.extend(self._date_hits(text, clusters))
            if clusters and self._phones:
                hits.extend(self._phone_hits(text, clusters))
        return _merge(hits, same_kind=True, text=text)

    def clean(self, text: str) -> str:
        """``text`` with every hit replaced by one MARK; text without identity is unchanged."""
        cleaned = self._clean_once(text)
        # A removal can turn its neighbour into a word of its own (IDLi → ***Li): repeat
        # until nothing changes, so cleaning cleaned text changes nothing.
        for _ in range(3):
            if cleaned is text or (again := self._clean_once(cleaned)) == cleaned:
                break
            cleaned = again
        return cleaned

    def _clean_once(self, text: str) -> str:
        """One pass: hits (merged when only separators lie between) replaced by MARK."""
        return mark(text, self.find(text))

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _stream(text: str, chunks: list[tuple[int, int, _Chunk]], skel: str) -> _Stream:
        """The span map and boundaries of ``skel``, built only when an anchor matched."""
        starts = [o + s for o, _, c in chunks for s in c.starts]
        ends = [o + e for o, _, c in chunks for e in c.ends]
        strength: dict[int, int] = {}
        base = prev_end = 0
        for offset, chunk_end, chunk in chunks:
            if base not in strength or strength[base] < 2:
                gap = text[prev_end:offset]
                strength[base] = 2 if not base or gap.strip(_WEAK_GAP) else 1
            for s in chunk.soft:
                strength[base + s] = 0
            base += len(chunk.skel)
            prev_end = chunk_end
        strength[base] = 2
        return _Stream(skel, starts, ends, sorted(strength), strength)

    def _needle_hits(self, text: str, st: _Stream, needles: Iterable[str]) -> Iterator[Hit]:
        """Occurrences of the needles whose anchor is in the text, kept if their rule holds."""
        skel = st.skel
        for needle in needles:
            rule = self._needles[needle]
            flags = rule.flags
            i = skel.find(needle)
            while i >= 0:
                e = i + len(needle)
                span = self._check(text, st, i, e, flags)
                if span is not None:
                    s, e2 = span
                    start, end = st.starts[s], st.ends[e2 - 1]
                    if rule.letters and sum(c.isalpha() for c in text[start:end]) < rule.letters:
                        i = skel.find(needle, i + 1)
                        continue
                    if rule.kind == "name" and rule.initials:
                        start, end = _initials(text, start, end, rule.initials)
                    yield Hit(rule.kind, start, end)
                i = skel.find(needle, i + 1)

    @staticmethod
    def _check(text: str, st: _Stream, i: int, e: int, flags: int) -> tuple[int, int] | None:
        """The skeleton span to remove for an occurrence at [i, e), or None if it is a word."""
        strength, bounds = st.strength, st.bounds
        need = 1 if flags & HARD else 0
        if flags & LEFT and strength.get(i, -1) < need:
            return None
        inside = bounds[bisect_right(bounds, i) : bisect_left(bounds, e)]
        if flags & WHOLE and inside:
            return None  # "mA" is not Ma
        if flags & UNIT and _AFTER_NUMBER.search(text, max(0, st.starts[i] - 2), st.starts[i]):
            return None  # "2 WU", "100 IU" are units, not Wu or Yu
        if flags & NOCROSS and any(strength[b] == 2 for b in inside):
            return None
        skel = st.skel
        if flags & DIGITS and (
            (i not in strength and skel[i - 1] in "123456789")
            or (e not in strength and skel[e].isdigit())
        ):
            return None
        if flags & STOP:  # "an", "he", "ли": a name only in capitals or mid-sentence Title case
            start = st.starts[i]
            original = text[start : st.ends[e - 1]]
            if original == original.lower():
                return None
            before = text[max(0, start - 40) : start].rstrip()
            title = original[1:] == original[1:].lower()
            if flags & SENTENCE and title and (not before or before[-1] in ".!?;:"):
                return None
        if strength.get(e, -1) >= need:
            return None if flags & NEEDEND else (i, e)
        nxt = bounds[bisect_right(bounds, e)]
        if flags & ENDINGS:
            rest = text[st.ends[e - 1] : st.ends[nxt - 1]].casefold()
            if rest in _ENDINGS:
                return i, nxt
        if flags & RIGHT:
            return None
        if flags & EXTEND and nxt - e <= 3 and not inside:
            return i, nxt  # an ending of the same word; never into the next word ("Ivanov ASD")
        # Across a boundary a needle must also end at one: "ivanova" is not IVANOV_A(LIBEK).
        return None if inside else (i, e)

    def _pinyin_hits(self, text: str) -> Iterator[Hit]:
        """Latin-written names in Han text, of three characters at least (房间 is a word)."""
        for run in _HAN_RUN.finditer(text):
            chars = run.group()
            if len(chars) < 3:
                continue
            joined, starts = _pinyin_of(chars)
            for needle in self._pinyin:
                i = joined.find(needle)
                while i >= 0:
                    a, b = starts.get(i), starts.get(i + len(needle))
                    if a is not None and b is not None and b - a >= 3:
                        yield Hit("name", run.start() + a, run.start() + b)
                    i = joined.find(needle, i + 1)

    def _date_hits(self, text: str, clusters: list[re.Match[str]]) -> Iterator[Hit]:
        """Written dates that read as one of the collected dates in some order."""
        matches: list[re.Match[str]] = []
        for cluster in clusters:
            if cluster.end() - cluster.start() >= 6:
                matches.extend(_DATES_NUM.finditer(text, cluster.start(), cluster.end() + 2))
        if not _MONTH_WORDS.isdisjoint(_LETTERS.findall(text.casefold())):
            matches.extend(_DATES_MONTH.finditer(text))
        for m in matches:
            g = m.groupdict()
            options: Iterable[tuple[int, int, int]]
            if g.get("a") is not None:
                options = _ymd_options(g["a"], g["b"], g["c"])
            elif g.get("run") is not None:
                run = g["run"]
                if len(run) == 8:
                    options = [
                        (int(run[:4]), int(run[4:6]), int(run[6:])),
                        (int(run[4:]), int(run[2:4]), int(run[:2])),
                        (int(run[4:]), int(run[:2]), int(run[2:4])),
                    ]
                else:
                    options = _ymd_options(run[:2], run[2:4], run[4:])
            elif g.get("y") is not None:
                options = [(int(g["y"]), int(g["m"]), int(g["d"]))]
            else:
                k = next(k for k in "1234" if g[f"m{k}"] is not None)
                month = _MONTHS[g[f"m{k}"].casefold()]
                options = [(int(g[f"y{k}"]), month, int(g[f"d{k}"]))]
            for y, mo, d in options:
                if (y, mo, d) in self._dates or (y < 100 and (y, mo, d) in self._dates_yy):
                    yield Hit("date", m.start(), m.end())
                    break

    def _phone_hits(self, text: str, clusters: list[re.Match[str]]) -> Iterator[Hit]:
        """Digit groups that end like a collected phone number."""
        for m in clusters:
            digits = "".join(ch for ch in m.group() if ch.isdigit())
            if len(digits) < 6:
                continue
            for phone in self._phones:
                # The last 7-9 digits: with or without country code, trunk 0 or 8.
                k = min(len(digits), len(phone), 9)
                if (
                    digits == phone
                    or (k >= 7 and digits[-k:] == phone[-k:])
                    or (len(phone) >= 7 and phone[-9:] in digits)
                ):
                    start = m.start()
                    while start and text[start - 1] in "+(":
                        start -= 1
                    end = m.end() + (text[m.end() : m.end() + 1] == ")")
                    yield Hit("phone", start, end)
                    break


_ENDINGS = frozenset(
    _words(
        "а я у ю е и ы ой ей ою ею ом ем ым им ого его ому ему ых их ов ев ам ям ах ях ова ева "
        "ину ина ине иной ия ии ию ией ье ья ьи ью ьей a u oy oi oj om ym im"
    )
)
_AFTER_NUMBER = re.compile(r"\d\s?$")
_INITIAL_BEFORE = re.compile(r"(?<![^\W\d_])([^\W\d_])(?:\.\s*|\s+)$")
_INITIAL_AFTER = re.compile(r"\s*([^\W\d_])(?:\.|(?![^\W\d_]))")


def _initials(text: str, start: int, end: int, initials: frozenset[str]) -> tuple[int, int]:
    """A surname's hit widened over adjacent initials of the same person ("A. Ivanov")."""

    def same(letter: str) -> bool:
        return letter.isupper() and skeleton(letter)[:1] in initials

    for _ in range(2):
        before = _INITIAL_BEFORE.search(text, max(0, start - 8), start)
        if not before or not same(before.group(1)):
            break
        start = before.start()
    for _ in range(2):
        after = _INITIAL_AFTER.match(text, end)
        if not after or not same(after.group(1)):
            break
        end = after.end()
    return start, end


_PY_INITIALS = _words("zh ch sh b p m f d t n l g k h j q x r z c s")
_PY_FINALS = dict(
    zip(
        _words(
            "a o e ai ei ao ou an en ang eng ong er i ia iao ie iu ian in iang ing iong u ua uo "
            "uai ui uan un uang ü üe v ve"
        ),
        _words(
            "а о э ай эй ао оу ань энь ан эн ун эр и я яо е ю янь инь ян ин юн у уа о уай уй "
            "уань унь уан юй юэ юй юэ"
        ),
        strict=True,
    )
)
_PY_ZERO = dict(
    zip(
        _words(
            "a o e ai ei ao ou an en ang eng er yi ya yao ye you yan yin yang ying yong yu yue "
            "yuan yun wu wa wo wai wei wan wen wang weng"
        ),
        _words(
            "а о э ай эй ао оу ань энь ан эн эр и я яо е ю янь инь ян ин юн юй юэ юань юнь у ва "
            "во вай вэй вань вэнь ван вэн"
        ),
        strict=True,
    )
)
_PY_CYR_INITIALS = dict(
    zip(_PY_INITIALS, _words("чж ч ш б п м ф д т н л г к х цз ц с ж цз ц с"), strict=True)
)
_PY_UMLAUT = {"u": "юй", "ue": "юэ", "uan": "юань", "un": "юнь"}


def _palladius_syllable(syl: str) -> str | None:
    """One pinyin syllable in the Palladius Cyrillic system (王小明 = Ван Сяомин)."""
    if syl in _PY_ZERO:
        return _PY_ZERO[syl]
    for initial in _PY_INITIALS:
        if syl.startswith(initial) and len(syl) > len(initial):
            final = syl[len(initial) :]
            if initial in ("j", "q", "x"):
                if final in _PY_UMLAUT:
                    return _PY_CYR_INITIALS[initial] + _PY_UMLAUT[final]
                if not final.startswith("i"):
                    return None
            if final == "i" and initial in ("z", "c", "s"):
                return _PY_CYR_INITIALS[initial] + "ы"
            if syl == "hui":
                return "хуэй"
            if final in _PY_FINALS:
                return _PY_CYR_INITIALS[initial] + _PY_FINALS[final]
            return None
    return None


@lru_cache(maxsize=4096)
def _pinyin_syllables(word: str) -> tuple[str, ...] | None:
    """A pinyin word cut into 1-4 syllables (xiaoying = xiao ying), or None if not pinyin."""
    word = word.lower()
    if not 1 < len(word) <= 24 or not word.isalpha():
        return None

    @cache
    def parse(at: int) -> tuple[str, ...] | None:
        if at == len(word):
            return ()
        for end in range(min(len(word), at + 6), at, -1):
            if _palladius_syllable(word[at:end]) is not None and (rest := parse(end)) is not None:
                return (word[at:end], *rest)
        return None

    syllables = parse(0)
    return syllables if syllables and len(syllables) <= 4 else None


def _palladius(word: str) -> str | None:
    """A pinyin word (xiaoming) in Cyrillic (сяомин), or None if it is not pinyin."""
    syllables = _pinyin_syllables(word)
    if syllables is None:
        return None
    return "".join(_palladius_syllable(syllable) or "" for syllable in syllables)


def _fold(word: str) -> str:
    """Lower-case ASCII for comparing words with the lists above."""
    return anyascii(word).lower()


@lru_cache(maxsize=1024)
def _pinyin_of(chars: str) -> tuple[str, dict[int, int]]:
    """Han characters as joined pinyin, and which character starts at each offset."""
    from pypinyin import lazy_pinyin

    joined = ""
    starts: dict[int, int] = {}
    syllables = lazy_pinyin(chars, v_to_u=True)
    if len(syllables) != len(chars):
        return "", {}
    for k, syl in enumerate(syllables):
        starts[len(joined)] = k
        joined += anyascii(syl)
    starts[len(joined)] = len(chars)
    return joined, starts


def _variants(part: str) -> set[str]:
    """Spellings of one name part that a skeleton alone does not join (x/ks, ng/n, ң)."""
    out = {part}
    if "ң" in part.casefold():
        out.add(part.replace("ң", "ng").replace("Ң", "NG"))
    low = anyascii(part.casefold().translate(_PREMAP)).lower()
    if "x" in low:
        out.add(low.replace("x", "ks"))
    if "ks" in low:
        out.add(low.replace("ks", "x"))
    if (syllables := _pinyin_syllables(low)) is not None and len(syllables) > 1:
        out.add(" ".join(syllables))  # Xiaoying is also written Xiao Ying
    for v in list(out):
        folded = anyascii(v.casefold()).lower()
        if "ng" in folded and len(skeleton(n := folded.replace("ng", "n"))) >= 5:
            out.add(n)
    return out


def mark(text: str, hits: Sequence[Hit]) -> str:
    """``text`` with ``hits`` replaced by MARK, hits that overlap or lie only
    separators apart as one; text without hits is returned as it is."""
    merged = _merge(hits, same_kind=False, text=text)
    if not merged:
        return text
    out: list[str] = []
    pos = 0
    for hit in merged:
        start, end = hit.start, hit.end
        while end < len(text) and text[end] in "^=":
            end += 1
        out.append(text[pos:start])
        out.append(MARK)
        pos = end
    out.append(text[pos:])
    return re.sub(r"[ \t]{2,}", " ", "".join(out)).strip()


def _merge(hits: Sequence[Hit], same_kind: bool, text: str) -> list[Hit]:
    """Overlapping hits as one; for cleaning also hits only separators apart."""
    out: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
        if out:
            last = out[-1]
            gap = text[last.end : hit.start] if hit.start > last.end else ""
            joins = hit.start <= last.end or (
                not same_kind and all(ch.isspace() or ch in "^=_-.,/" for ch in gap)
            )
            if joins and (not same_kind or last.kind == hit.kind):
                out[-1] = Hit(last.kind, last.start, max(last.end, hit.end))
                continue
        out.append(hit)
    return out


@lru_cache(maxsize=256)
def _made(values: tuple[tuple[str, str], ...]) -> IdentityMatcher:
    """One matcher per set of values: a study's instances carry the same
    identity, and a matcher never changes once made (so threads share it)."""
    return IdentityMatcher(values)


def _values(value: object) -> Iterator[object]:
    """The non-empty values of an element, multi-valued or not."""
    if isinstance(value, MultiValue | list | tuple):
        for item in value:
            yield from _values(item)
    elif value is not None and value != "":
        yield value


def _collect(ds: Dataset) -> list[tuple[str, str]]:
    """(kind, value) pairs of everything identifying in ``ds``, at every depth."""
    out: list[tuple[str, str]] = []
    for elem in ds.iterall():
        vr, keyword = elem.VR, elem.keyword
        if vr == "SQ" or elem.tag.is_private:
            continue
        if vr == "PN":
            out.extend(("name", str(v)) for v in _values(elem.value))
        elif vr in ("DA", "DT"):
            for v in _values(elem.value):
                if isinstance(v, date):  # datetime_conversion on: datetime or date objects
                    v = v.strftime("%Y%m%d%H%M%S" if isinstance(v, datetime) else "%Y%m%d")
                out.append(("date", str(v)))
        elif "Telephone" in keyword:
            out.extend(("phone", str(v)) for v in _values(elem.value))
        elif keyword in _ID_KEYWORDS:
            out.extend(("id", str(v)) for v in _values(elem.value))
        elif keyword in _PLACE_KEYWORDS:
            out.extend(("place", str(v)) for v in _values(elem.value))
    return out
