"""Finds identity values anywhere in a data set: the check behind every promise.

Walks every element at every depth, the file meta included; compares text
case-insensitively after decoding, and searches byte values (OB, UN, private
blobs) for the value encoded in each character set a partner might use.
Used by the tests now and by research export later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

ENCODINGS = ("utf-8", "latin-1", "cp1251", "iso8859_5", "gb18030", "utf-16-le")
# Image bulk data: burned-in text is a pixel matter, and short byte patterns
# would match compressed pixels by chance.
BULK = {0x7FE00010, 0x7FE00008, 0x7FE00009}


@dataclass(frozen=True)
class Finding:
    path: str  # e.g. "(0040,0275)[0]>(0008,1110)[0]>(0010,0010)"
    needle: str


def encoded_forms(needle: str) -> set[bytes]:
    """The needle as bytes in every character set a partner might use."""
    out = set()
    for encoding in ENCODINGS:
        for variant in {needle, needle.upper(), needle.lower()}:
            try:
                out.add(variant.encode(encoding))
            except UnicodeEncodeError:
                continue
    return {b for b in out if len(b) >= 4}


# Value representations that hold binary numbers, not text.
BINARY_NUMBERS = frozenset({"US", "UL", "SS", "SL", "SV", "UV", "FL", "FD"})
LONG_NUMBER = 6


def _texts(value: object) -> Iterator[str]:
    if isinstance(value, MultiValue | list | tuple):
        for item in value:
            yield from _texts(item)
    elif value is not None and not isinstance(value, bytes | bytearray):
        yield str(value)


def _word(needle: str) -> re.Pattern[str]:
    """``needle`` with no letter or digit either side ("MARY" not in "PRIMARY")."""
    return re.compile(rf"(?<![^\W_]){re.escape(needle)}(?![^\W_])", re.IGNORECASE)


def _prepare(needles: Iterable[str], words: Iterable[str]) -> tuple[list[str], dict]:
    wanted = [n for n in {n.strip() for n in needles} if len(n) >= 3]
    patterns = {w: _word(w) for w in {w.strip() for w in words} if len(w) >= 3}
    return wanted, patterns


def _in_text(text: str, wanted: list[str], patterns: dict[str, re.Pattern[str]]) -> list[str]:
    folded = text.casefold()
    hits = [n for n in wanted if n.casefold() in folded]
    return hits + [w for w, pattern in patterns.items() if pattern.search(text)]


def scan_text(text: str, needles: Iterable[str], words: Iterable[str] = ()) -> list[Finding]:
    """`scan` for a plain text (a manifest, a README)."""
    return [Finding("text", hit) for hit in _in_text(text, *_prepare(needles, words))]


def scan(ds: Dataset, needles: Iterable[str], words: Iterable[str] = ()) -> list[Finding]:
    """Every place where one of ``needles`` (length >= 3) occurs, or one of
    ``words`` occurs as a whole word (short name parts and IDs, which as
    substrings would match inside ordinary words and numbers)."""
    wanted, patterns = _prepare(needles, words)
    raw = {n: encoded_forms(n) for n in wanted}
    found: list[Finding] = []
    datasets = [ds, *([ds.file_meta] if getattr(ds, "file_meta", None) else [])]

    def walk(current: Dataset, prefix: str) -> None:
        current.decode()
        for element in current:
            path = f"{prefix}{element.tag}"
            if element.VR == "SQ":
                for index, item in enumerate(element.value or []):
                    walk(item, f"{path}[{index}]>")
                continue
            value = element.value
            if int(element.tag) in BULK or element.tag.element == 0:
                continue  # group lengths are computed by the writer, never data
            if element.VR in BINARY_NUMBERS:
                # A count or size equal to a short ID ("204") is coincidence;
                # an ID hidden as a number is long.
                long = [n for n in wanted if len(n) >= LONG_NUMBER]
                short = {w: p for w, p in patterns.items() if len(w) >= LONG_NUMBER}
                for text in _texts(value):
                    found.extend(Finding(path, hit) for hit in _in_text(text, long, short))
                continue
            if isinstance(value, bytes | bytearray):
                found.extend(Finding(path, n) for n in wanted if any(b in value for b in raw[n]))
                text = value.decode("latin-1")
                found.extend(Finding(path, w) for w, p in patterns.items() if p.search(text))
                continue
            for text in _texts(value):
                found.extend(Finding(path, hit) for hit in _in_text(text, wanted, patterns))

    for dataset in datasets:
        walk(dataset, "")
    return found
