"""PS3.15 Table E.1-1 as data: which action applies to which attribute.

The table ships with the package (a copy of the standard's own extraction,
``confidentiality_profile_attributes.json``); this module reads it and does
not restate it. Options change the action of the rows that have a column for
them; tags with ``X`` digits (``(50XX,XXXX)``) are masks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib.resources import files

TABLE_FILE = "confidentiality_profile_attributes.json"


class Option(Enum):
    """Profile options (PS3.15 E.3), with their table column and CID 7050 code."""

    CLEAN_PIXEL_DATA = (None, "113101", "Clean Pixel Data Option")
    CLEAN_GRAPHICS = ("cleanGraphOpt", "113103", "Clean Graphics Option")
    CLEAN_STRUCTURED_CONTENT = ("cleanStructContOpt", "113104", "Clean Structured Content Option")
    CLEAN_DESCRIPTORS = ("cleanDescOpt", "113105", "Clean Descriptors Option")
    RETAIN_FULL_DATES = (
        "rtnLongFullDatesOpt",
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    )
    RETAIN_MODIFIED_DATES = (
        "rtnLongModifDatesOpt",
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    )
    RETAIN_PATIENT_CHARACTERISTICS = (
        "rtnPatCharsOpt",
        "113108",
        "Retain Patient Characteristics Option",
    )
    RETAIN_DEVICE_IDENTITY = ("rtnDevIdOpt", "113109", "Retain Device Identity Option")
    RETAIN_UIDS = ("rtnUIDsOpt", "113110", "Retain UIDs Option")
    RETAIN_SAFE_PRIVATE = ("rtnSafePrivOpt", "113111", "Retain Safe Private Option")
    RETAIN_INSTITUTION_IDENTITY = (
        "rtnInstIdOpt",
        "113112",
        "Retain Institution Identity Option",
    )
    # The node's own, with no DICOM code: by default time zone offsets go
    # (with dates and DT values) and ages over 89 become 090Y.
    RETAIN_TIMEZONE = (None, None, "Retain time zone offsets")
    RETAIN_AGES_OVER_89 = (None, None, "Retain ages over 89 years")

    @property
    def column(self) -> str | None:
        return self.value[0]

    @property
    def code(self) -> str | None:
        return self.value[1]

    @property
    def meaning(self) -> str:
        return self.value[2]


def parse_options(value: str | Iterable[str]) -> frozenset[Option]:
    """``"RETAIN_MODIFIED_DATES, CLEAN_DESCRIPTORS"`` (or a list of names, any
    case) -> options; ValueError names an unknown or refused one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in items):
        raise ValueError("option names are strings")
    names = [n.strip().upper() for n in items if n.strip()]
    unknown = [n for n in names if n not in Option.__members__]
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; known: {', '.join(Option.__members__)}")
    return check_options(frozenset(Option[n] for n in names))


def check_options(options: frozenset[Option]) -> frozenset[Option]:
    """``options`` if the node can apply them together, else ValueError."""
    if {Option.RETAIN_FULL_DATES, Option.RETAIN_MODIFIED_DATES} <= options:
        raise ValueError("RETAIN_FULL_DATES and RETAIN_MODIFIED_DATES exclude each other")
    if Option.RETAIN_UIDS in options:
        raise ValueError("RETAIN_UIDS is not offered: original UIDs link back to the sender")
    if Option.CLEAN_PIXEL_DATA in options:
        # Its code tells a reader the pixels were cleaned and verified: the
        # pipeline adds it to the images where that is true, and only there.
        raise ValueError("CLEAN_PIXEL_DATA is not set: the node records it per verified image")
    return options


BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")


@dataclass(frozen=True)
class Rule:
    name: str
    basic: str
    by_option: dict[str, str]


@dataclass(frozen=True)
class _Mask:
    value: int
    care: int  # bits that must match
    rule: Rule


def _parse_tag(text: str) -> tuple[int, int]:
    """``(50XX,XXXX)`` -> (0x50000000, 0xFF000000): value and mask of fixed bits."""
    digits = text.strip("()").replace(",", "")
    value = int(digits.upper().replace("X", "0"), 16)
    care = int("".join("0" if c in "xX" else "F" for c in digits), 16)
    return value, care


PRIVATE_ROW = "(GGGG,EEEE) WHERE GGGG IS ODD"


@cache
def load_table() -> tuple[dict[int, Rule], tuple[_Mask, ...]]:
    """Exact tags and masked ranges. The private-attributes row is not a tag:
    the walker handles private elements itself (removed unless allow-listed)."""
    rows = json.loads(files("dicomnode.deid").joinpath(TABLE_FILE).read_text(encoding="utf-8"))
    exact: dict[int, Rule] = {}
    masks: list[_Mask] = []
    columns = {o.column for o in Option if o.column}
    for row in rows:
        rule = Rule(
            name=row["name"],
            basic=row["basicProfile"],
            by_option={k: v for k, v in row.items() if k in columns},
        )
        if row["tag"] == PRIVATE_ROW:
            continue
        value, care = _parse_tag(row["tag"])
        if care == 0xFFFFFFFF:
            exact[value] = rule
        else:
            masks.append(_Mask(value, care, rule))
    return exact, tuple(masks)


class Profile:
    """The action for each tag under the Basic Profile and a set of options."""

    def __init__(self, options: frozenset[Option]) -> None:
        self.options = options
        self._columns = [o.column for o in Option if o in options and o.column]
        self._cache: dict[int, str | None] = {}

    def rule(self, tag: int) -> Rule | None:
        exact, masks = load_table()
        if tag in exact:
            return exact[tag]
        for mask in masks:
            if tag & mask.care == mask.value:
                return mask.rule
        return None

    def action(self, tag: int) -> str | None:
        """The table's action code for ``tag`` (None: not listed, keep)."""
        if tag not in self._cache:
            self._cache[tag] = self._resolve(self.rule(tag))
        return self._cache[tag]

    def _resolve(self, rule: Rule | None) -> str | None:
        if rule is None:
            return None
        chosen = [rule.by_option[c] for c in self._columns if c in rule.by_option]
        if not chosen:
            return rule.basic
        # Two enabled options on one row: keeping wins over cleaning.
        return "K" if "K" in chosen else chosen[0]
