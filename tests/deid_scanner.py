"""An auditor's needle scanner, independent of the node's own de-identification code.

A *needle* is an identity string a test case planted (a name, an ID, a UID the
node must remap, a phone number...). The scanner looks for needles in text and
in bytes, in these forms:

- exact, case-insensitively (Unicode case folding, so Cyrillic capitals too);
- without separators ("Ivanov Alibek" is found in "IVANOV_ALIBEK" and
  "IvanovAlibek", "+996 555 12-34-56" in "996555123456");
- transliteration-insensitively (a skeleton: Cyrillic, Kazakh and Tajik letters
  to Latin, diacritics dropped, zh/j, kh/h, sh/s, ü/ue/u... folded together;
  Chinese characters to pinyin when pypinyin is installed), so "Жолдошев"
  is found in "ZHOLDOSHEV" and "Jol'doshev", "Weiß" in "WEISS";
- in bytes: every common encoding of those forms (UTF-8, Latin-1, ISO 8859-5,
  cp1251, GB18030, Shift-JIS, EUC-JP, ISO 2022 JIS, UTF-16).

It also extracts text where a plain byte search cannot see it: every element
of a DICOM data set at any depth (file meta included, private and unknown tags
decoded), PDF strings and Flate streams, HTML entities, JSON escapes.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID

try:  # optional: Chinese characters compared with their pinyin spelling
    from pypinyin import lazy_pinyin
except ImportError:  # pragma: no cover - depends on the environment
    lazy_pinyin = None

NAMEISH = frozenset(
    {"name", "relative", "staff", "institution", "station", "address", "issuer-text", "free-text"}
)
# Kinds whose needles are compared exactly only (a UID without its dots is
# just digits; a date without separators as well).
EXACT_ONLY = frozenset({"uid", "uid-class", "age"})
ENCODINGS = (
    "utf-8",
    "latin-1",
    "iso8859_5",
    "cp1251",
    "gb18030",
    "shift_jis",
    "euc_jp",
    "utf-16-le",
    "utf-16-be",
)

_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
    "з": "z", "и": "i", "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "sch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya", "ә": "a", "ғ": "g", "қ": "k", "ң": "n", "ө": "o", "ұ": "u", "ү": "u",
    "һ": "h", "і": "i", "ӣ": "i", "ӯ": "u", "ҳ": "h", "ҷ": "j", "ї": "i", "є": "e",
    "ў": "u", "ђ": "dj", "ј": "j", "љ": "lj", "њ": "nj", "ћ": "c", "џ": "dz",
}  # fmt: skip
_TRANSLIT = str.maketrans({**_CYRILLIC, "ß": "ss", "ø": "o", "æ": "ae", "œ": "oe", "ł": "l"})
_DIGRAPHS = (
    ("dzh", "j"), ("zh", "j"), ("dj", "j"), ("kh", "h"), ("sch", "s"), ("sh", "s"),
    ("ch", "c"), ("ts", "c"), ("tz", "c"), ("yu", "u"), ("iu", "u"), ("ya", "a"),
    ("ia", "a"), ("yo", "o"), ("ye", "e"), ("ue", "u"), ("oe", "o"), ("ae", "a"),
    ("q", "k"), ("y", "i"), ("w", "v"), ("x", "ks"),
)  # fmt: skip
_NON_WORD = re.compile(r"[\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_REPEATS = re.compile(r"(.)\1+")


def compact(text: str) -> str:
    """Case-folded, without spaces, punctuation or underscores."""
    return _NON_WORD.sub("", text.casefold())


def skeleton(text: str) -> str:
    """A spelling-insensitive key: transliterated, unaccented, digraphs folded."""
    folded = text.casefold()
    if lazy_pinyin is not None and _CJK.search(folded):
        folded = "".join(lazy_pinyin(folded))
    folded = folded.translate(_TRANSLIT)
    folded = "".join(
        c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c)
    )
    folded = _NON_WORD.sub("", folded)
    for old, new in _DIGRAPHS:
        folded = folded.replace(old, new)
    return _REPEATS.sub(r"\1", folded)


@dataclass(frozen=True)
class Needle:
    case: str
    kind: str
    text: str


@dataclass(frozen=True)
class Hit:
    needle: Needle
    how: str  # exact / compact / skeleton / bytes
    where: str = ""


def _iso2022(text: str) -> bytes | None:
    try:
        encoded = text.encode("iso2022_jp")
    except UnicodeError:
        return None
    return encoded[:-3] if encoded.endswith(b"\x1b(B") else encoded


def byte_forms(needle: Needle) -> set[bytes]:
    """Every byte string the needle's text may take in a file (ASCII lower-cased)."""
    texts = {needle.text}
    if needle.kind not in EXACT_ONLY:
        texts |= {needle.text.upper(), needle.text.lower(), needle.text.title()}
        squeezed = re.sub(r"[\s_\-.^,/()]+", "", needle.text)
        if len(squeezed) >= 5:
            texts |= {squeezed, squeezed.upper(), squeezed.lower()}
    forms: set[bytes] = set()
    encodings = ("utf-8",) if needle.kind in EXACT_ONLY else ENCODINGS
    for text in texts:
        for encoding in encodings:
            try:
                encoded = text.encode(encoding)
            except UnicodeError:
                continue
            forms.add(encoded.lower() if text.isascii() else encoded)
        if needle.kind not in EXACT_ONLY and not text.isascii():
            iso = _iso2022(text)
            if iso:
                forms.add(iso)
    return forms


class NeedleSet:
    """Needles with their search forms, for text and for bytes."""

    def __init__(self, needles: Iterable[Needle]) -> None:
        self.needles = list(dict.fromkeys(needles))
        self._exact = [(n, n.text.casefold()) for n in self.needles]
        self._compact = [
            (n, c)
            for n in self.needles
            if n.kind not in EXACT_ONLY and len(c := compact(n.text)) >= 5
        ]
        self._skeleton = [
            (n, s)
            for n in self.needles
            if (n.kind in NAMEISH or n.kind.startswith("name")) and len(s := skeleton(n.text)) >= 6
        ]
        self._bytes: list[tuple[Needle, bytes, bool]] = []
        for n in self.needles:
            for form in byte_forms(n):
                if len(form) >= 4:
                    self._bytes.append((n, form, form.isascii() and form == form.lower()))

    def scan_texts(self, chunks: list[str], where: list[str] | None = None) -> list[Hit]:
        """Needles in any of ``chunks``; ``where[i]`` names chunk i in the hits."""
        if not chunks:
            return []
        hits: list[Hit] = []
        folded = [c.casefold() for c in chunks]
        found: set[Needle] = set()
        for forms, label, texts in (
            (self._exact, "exact", folded),
            (self._compact, "no separators", [compact(c) for c in chunks] if self._compact else []),
            (
                self._skeleton,
                "transliterated",
                [skeleton(c) for c in chunks] if self._skeleton else [],
            ),
        ):
            joined = "\x1f".join(texts)
            for needle, form in forms:
                if form in joined and (label == "exact" or needle not in found):
                    found.add(needle)
                    hits += [
                        Hit(needle, label, where[i] if where else "")
                        for i, c in enumerate(texts)
                        if form in c
                    ][:3]
        return hits

    def scan_bytes(self, data: bytes, where: str = "", *, min_length: int = 4) -> list[Hit]:
        lowered = data.lower()
        found: dict[Needle, Hit] = {}
        for needle, form, ascii_lower in self._bytes:
            if needle in found or len(form) < min_length:
                continue
            if form in (lowered if ascii_lower else data):
                found[needle] = Hit(needle, "bytes", where)
        return list(found.values())


# ---- text out of containers ----------------------------------------------


def pdf_texts(data: bytes) -> list[str]:
    """Strings of a PDF: literal and hex strings, Flate streams inflated."""
    out: list[str] = []
    bodies = [data]
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            bodies.append(zlib.decompress(match.group(1)))
        except zlib.error:
            continue
    for body in bodies:
        out.append(body.decode("latin-1"))
        for literal in re.finditer(rb"\(((?:[^()\\]|\\.)*)\)", body, re.S):
            raw = re.sub(rb"\\(.)", rb"\1", literal.group(1))
            out.append(_pdf_string(raw))
        for hexa in re.finditer(rb"<([0-9A-Fa-f\s]{4,})>", body):
            try:
                out.append(_pdf_string(bytes.fromhex(hexa.group(1).decode())))
            except ValueError:
                continue
    return out


def _pdf_string(raw: bytes) -> str:
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", "replace")
    return raw.decode("latin-1")


def decoded_bytes(value: bytes) -> list[str]:
    """An opaque value read as text in the encodings a sender might use."""
    if value[:5] == b"%PDF-":
        return pdf_texts(value)
    texts = [value.decode("utf-8", "replace")]
    for encoding in ("latin-1", "gb18030", "cp1251", "iso2022_jp", "utf-16-le"):
        try:
            texts.append(value.decode(encoding))
        except UnicodeError:
            continue
    return texts


def html_text(page: str) -> str:
    return html.unescape(page)


def json_strings(text: str) -> list[str]:
    """The raw JSON and every string value in it (escapes decoded)."""
    out = [text]
    try:
        document = json.loads(text)
    except ValueError:
        return out

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for key, value in node.items():
                yield str(key)
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    out.extend(walk(document))
    return out


# ---- DICOM data sets --------------------------------------------------------


def _path(parent: str, element: Any, index: int | None = None) -> str:
    name = element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})"
    step = f"{parent}>{name}" if parent else name
    return f"{step}[{index}]" if index is not None else step


def dataset_chunks(ds: Dataset, parent: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) for every value at every depth, opaque values decoded."""
    for tag in list(ds.keys()):
        tag = Tag(tag)
        try:
            element = ds[tag]
            vr = element.VR
            value = element.value
        except Exception as exc:  # a value pydicom cannot decode: its raw bytes, as text
            raw = ds.get_item(tag)
            value = getattr(raw, "value", b"") or b""
            name = f"({tag.group:04X},{tag.element:04X})"
            where = f"{parent}>{name}" if parent else name
            yield where, f"<undecodable {type(exc).__name__}>"
            if isinstance(value, bytes):
                for text in decoded_bytes(value):
                    yield where, text
            continue
        if vr == "SQ":
            for index, item in enumerate(value or []):
                yield from dataset_chunks(item, _path(parent, element, index))
            continue
        if tag in (0x7FE00010, 0x7FE00008, 0x7FE00009) or (
            tag.group & 0xFF00 == 0x6000 and tag.element == 0x3000
        ):
            continue  # pixels are checked as pixels
        path = _path(parent, element)
        if value is None or value == "":
            continue
        if isinstance(value, bytes | bytearray):
            for text in decoded_bytes(bytes(value)):
                yield path, text
        elif isinstance(value, MultiValue | list | tuple):
            yield path, "\\".join(str(v) for v in value)
        else:
            yield path, str(value)


def dataset_and_meta_chunks(ds: Dataset) -> list[tuple[str, str]]:
    chunks = list(dataset_chunks(ds))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        chunks += [(f"FileMeta>{p}", t) for p, t in dataset_chunks(meta)]
    return chunks


def scan_dataset(needles: NeedleSet, ds: Dataset, prefix: str = "") -> list[Hit]:
    chunks = dataset_and_meta_chunks(ds)
    return needles.scan_texts(
        [text for _, text in chunks], [f"{prefix}{path}" for path, _ in chunks]
    )


def header_bytes(data: bytes, start: int = 132) -> bytes:
    """An encoded data set's bytes before its Pixel Data (all of it if none)."""
    at = data.find(b"\xe0\x7f\x10\x00", start)
    return data if at < 0 else data[:at]


def scan_dataset_bytes(needles: NeedleSet, data: bytes, where: str, start: int = 0) -> list[Hit]:
    """Every form before Pixel Data; after it (image bytes, where short forms
    turn up by chance) forms of 6 bytes and more."""
    hits = needles.scan_bytes(header_bytes(data, start), where)
    seen = {h.needle for h in hits}
    return hits + [h for h in needles.scan_bytes(data, where, min_length=6) if h.needle not in seen]


def scan_dicom_bytes(needles: NeedleSet, data: bytes, where: str) -> list[Hit]:
    """A Part 10 file: raw bytes (see `scan_dataset_bytes`) and parsed values."""
    hits = scan_dataset_bytes(needles, data, where, start=132)
    try:
        ds = dcmread(BytesIO(data), force=True)
        return hits + scan_dataset(needles, ds, f"{where}:")
    except Exception:  # not parseable: the byte scan above is what there is
        return hits


# ---- pixels -------------------------------------------------------------------


def luma(frame: np.ndarray, photometric: str) -> np.ndarray:
    """Brightness of one frame (rows, cols[, 3]) as float."""
    frame = np.asarray(frame, dtype=np.float64)
    if frame.ndim == 2:
        return frame
    if photometric.startswith("YBR"):
        return frame[..., 0]
    return 0.299 * frame[..., 0] + 0.587 * frame[..., 1] + 0.114 * frame[..., 2]


def native_frames(ds: Dataset, *, raw_bits: bool = False) -> list[np.ndarray]:
    """Native (uncompressed, little endian) frames as stored, without masking."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames") or 1)
    dtype = np.uint8 if int(ds.BitsAllocated) == 8 else np.dtype("<u2")
    data = np.frombuffer(ds.PixelData, dtype=dtype, count=rows * cols * samples * frames)
    if samples == 1:
        return list(data.reshape(frames, rows, cols))
    if int(ds.get("PlanarConfiguration", 0)) == 1:
        return list(data.reshape(frames, samples, rows, cols).transpose(0, 2, 3, 1))
    return list(data.reshape(frames, rows, cols, samples))


def frame_lumas(ds: Dataset) -> tuple[list[np.ndarray], bool]:
    """Every frame's brightness, and whether the stored syntax is lossy."""
    from PIL import Image

    syntax = UID(ds.file_meta.TransferSyntaxUID)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if not syntax.is_compressed:
        return [luma(f, photometric) for f in native_frames(ds)], False
    frames = int(ds.get("NumberOfFrames") or 1)
    if syntax in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"):
        out = [
            np.asarray(Image.open(BytesIO(fragment)).convert("L"), dtype=np.float64)
            for fragment in generate_frames(ds.PixelData, number_of_frames=frames)
        ]
        return out, True
    array = ds.pixel_array  # pydicom converts YBR to RGB
    if frames == 1:
        array = array[np.newaxis]
    lossy = str(ds.get("LossyImageCompression", "00")) == "01" or syntax in (
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.203",
    )
    return [luma(f, "RGB" if f.ndim == 3 else photometric) for f in array], lossy


@dataclass
class PixelVerdict:
    visible: float  # share of the text's pixels still bright
    frame: int


@dataclass
class Coverage:
    """What one scan looked at, so that an empty scan cannot pass silently."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, place: str, n: int = 1) -> None:
        self.counts[place] = self.counts.get(place, 0) + n
