"""The worksheet of each defect, read from the catalogue (``defects``): what
a slot, a rim or a choice may be, and the forms the page draws.

What a browser sends as a meaning never reaches a report or a stored plan
(it could name anyone): a slot takes its meaning from the table. A value no
measurement can have (not a number, not finite, negative, zero where zero is
meaningless, over the field's maximum) is refused here, before it reaches a
sizing rule or a report. Every look-up goes to ``defects.table()`` at the
time of use, so a defect added to the table is known everywhere at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from viewer.planning.defects import (
    KRICHENKO,
    MAX_MM,
    MEANING_MAX,
    Defect,
    Field,
    rim_field,
    table,
)

__all__ = [
    "KRICHENKO_TYPES",
    "MAX_MM",
    "MEANING_MAX",
    "InvalidValue",
    "Slot",
    "UnknownSlot",
    "as_json",
    "checked_choice",
    "checked_mm",
    "defect_of",
    "rim_slot",
    "worksheet_slot",
]

KRICHENKO_TYPES = tuple(c.value for c in KRICHENKO)


class UnknownSlot(ValueError):
    """A slot the worksheet does not have. The message names the ones it has,
    never the one given (free text from a browser: it may name anyone)."""


class InvalidValue(ValueError):
    """A value no measurement can have. ``text`` (English, {placeholders})
    and ``values`` let the page translate it; str() is the English."""

    def __init__(self, text: str, **values: str | float) -> None:
        self.text, self.values = text, values
        super().__init__(text.format(**values))


def defect_of(name: object) -> Defect:
    """The table's entry for ``name``, or UnknownSlot naming the ones it has."""
    found = table().defect(name)
    if found is None:
        raise UnknownSlot(f"no such worksheet; the worksheets are {', '.join(table().names)}")
    return found


def _field(code: str) -> Field:
    found = table().field_of(code)
    if found is None or found.kind != "mm":
        raise UnknownSlot("not a slot of any worksheet")
    return found


def checked_mm(code: str, value: Any) -> float:
    """``value`` as mm for slot ``code``, or InvalidValue saying why not."""
    f = _field(code)
    meaning = f.label
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue("{field}: a number of mm is needed", field=meaning)
    try:
        mm = float(value)
    except OverflowError:  # an integer too large for a float
        raise InvalidValue("{field}: not a finite number", field=meaning) from None
    if not math.isfinite(mm):
        raise InvalidValue("{field}: not a finite number", field=meaning)
    if mm < 0 or (mm == 0 and not f.zero_allowed):
        text = "{field}: 0 mm or more" if f.zero_allowed else "{field}: more than 0 mm"
        raise InvalidValue(text, field=meaning)
    if mm > f.maximum:
        raise InvalidValue(
            "{field}: over {limit} mm is not a measurement", field=meaning, limit=f.maximum
        )
    return mm


def checked_choice(defect: str, key: str, value: Any) -> str | None:
    """The value of the choice ``key`` (e.g. "krichenko") on ``defect``'s
    worksheet: None when not given; UnknownSlot for a choice the worksheet
    lacks, InvalidValue for a value it does not offer."""
    entry = defect_of(defect)
    f = next((c for c in entry.choices if c.key == key), None)
    if f is None:
        if value in (None, ""):
            return None
        raise UnknownSlot(f"the {entry.name} worksheet has no {key}")
    if value in (None, ""):
        return None
    if f.choice(value) is None:
        values = ", ".join(c.value for c in f.choices)
        raise InvalidValue("{field}: one of {values}", field=f.label, values=values)
    return str(value)


@dataclass(frozen=True)
class Slot:
    """One worksheet value: what it is, how much, and where it was measured.
    The meaning is the catalogue's, never given."""

    code: str  # e.g. "ASD-MAX-DIAMETER"
    value_mm: float
    instance_uid: str | None = None
    frame: int | None = None
    meaning: str = field(init=False)  # e.g. "ASD maximal diameter (view 1)"

    def __post_init__(self) -> None:
        f = _field(self.code)
        object.__setattr__(self, "value_mm", checked_mm(self.code, self.value_mm))
        object.__setattr__(self, "meaning", f.label)


def worksheet_slot(
    defect: str,
    code: str,
    value_mm: float,
    instance_uid: str | None = None,
    frame: int | None = None,
) -> Slot:
    """A slot of ``defect``'s worksheet; UnknownSlot for any other code,
    InvalidValue for a value no measurement can have."""
    entry = defect_of(defect)
    codes = [f.code for f in entry.measured]
    if code not in codes:
        raise UnknownSlot(f"the {entry.name} worksheet has only {', '.join(codes)}")
    return Slot(code, value_mm, instance_uid, frame)


def rim_slot(rim: str, value_mm: float, defect: str | None = None) -> Slot:
    """The slot of one septal rim; UnknownSlot for a rim the worksheet of
    ``defect`` (of any defect when None) lacks."""
    if defect is None:
        names = tuple(dict.fromkeys(r for d in table().defects for r in d.rims))
    else:
        entry = defect_of(defect)
        names = entry.rims
        if not names:
            raise UnknownSlot(f"the {entry.name} worksheet has no rims")
    if rim not in names:
        raise UnknownSlot(f"the worksheet's rims are {', '.join(names)}")
    return Slot(rim_field(rim).code, value_mm)


def _field_json(f: Field) -> dict[str, Any]:
    described: dict[str, Any] = {
        "code": f.code,
        "meaning": f.label,
        "kind": f.kind,
        "unit": f.unit,
    }
    if f.kind == "mm":
        described |= {"zero_allowed": f.zero_allowed, "max": f.maximum}
    else:
        described["key"] = f.key
        described["choices"] = [{"value": c.value, "label": c.label} for c in f.choices]
    return described


def as_json() -> dict[str, Any]:
    """Every defect's form for the page: {defect: {"fields": [...], "rims":
    [...]}}, in display order. Meanings and labels are English for t()."""
    return {
        d.name: {
            "fields": [_field_json(f) for f in d.fields],
            "rims": [{"name": name} | _field_json(f) for name, f in d.rim_fields.items()],
        }
        for d in table().defects
    }
