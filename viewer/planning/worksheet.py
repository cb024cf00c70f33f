"""The worksheet of each defect: its fields, their local codes and meanings.

The server's own catalogue: what a browser sends as a meaning never reaches
a report or a stored plan (it could name anyone), and the page draws its
forms from ``as_json()`` (one source for both). A value no measurement can
have (not finite, negative, zero where zero is meaningless, over 100 mm) is
refused here, before it reaches a sizing rule or a report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Nothing measured on these forms (a defect, a duct, a septum, a distance)
# comes near 100 mm in a child or an adult: a larger value is a slip
# (centimetres typed as millimetres, an extra digit), not a measurement.
MAX_MM = 100.0
MEANING_MAX = 64  # Code Meaning is LO in the SR: 64 characters at most


@dataclass(frozen=True)
class Field:
    """One field of a form: a number of mm, or a choice among coded values."""

    code: str  # local code, e.g. "PDA-NARROWEST"
    meaning: str  # English, translated by the page; the SR's Code Meaning
    kind: str = "mm"  # "mm" or "choice"
    # A distance or a rim may be 0 mm (absent); a diameter or a length may not.
    zero_allowed: bool = False
    choices: tuple[tuple[str, str], ...] = ()  # (value, English label)

    @property
    def unit(self) -> str:
        return "mm" if self.kind == "mm" else ""


def _distance(code: str, meaning: str) -> Field:
    return Field(code, meaning, zero_allowed=True)


# Krichenko et al., Am J Cardiol 1989;63:877-880: the angiographic types.
KRICHENKO = (
    ("A", "conical"),
    ("B", "window"),
    ("C", "tubular"),
    ("D", "complex"),
    ("E", "elongated"),
)
KRICHENKO_TYPES = tuple(value for value, _ in KRICHENKO)

FORMS: dict[str, tuple[Field, ...]] = {
    "secundum ASD": (
        Field("ASD-MAX-DIAMETER", "ASD maximal diameter (view 1)"),
        Field("ASD-MAX-DIAMETER-2", "ASD maximal diameter (view 2)"),
        Field("ASD-SEPTAL-LENGTH", "Total septal length"),
        Field("ASD-STRETCHED", "Stretched (balloon) diameter"),
    ),
    "PDA": (
        Field("PDA-NARROWEST", "Narrowest (pulmonary end) diameter"),
        Field("PDA-AMPULLA", "Aortic ampulla diameter"),
        Field("PDA-LENGTH", "Duct length"),
        Field("PDA-KRICHENKO", "Krichenko type", kind="choice", choices=KRICHENKO),
    ),
    "perimembranous VSD": (
        Field("VSD-LV-DIAMETER", "LV-side diameter"),
        Field("VSD-RV-DIAMETER", "RV-side diameter"),
        _distance("VSD-AORTIC-DISTANCE", "Distance to the aortic valve"),
        _distance("VSD-TRICUSPID-DISTANCE", "Distance to the tricuspid valve"),
    ),
    "muscular VSD": (
        Field("VSD-ED-DIAMETER", "Defect diameter at end-diastole"),
        Field("VSD-LV-DIAMETER", "LV-side diameter"),
        Field("VSD-RV-DIAMETER", "RV-side diameter"),
        _distance("VSD-VALVE-DISTANCE", "Distance to the nearest valve"),
        _distance("VSD-APEX-RIM", "Rim to the apex or moderator band"),
    ),
}
# The septal rims (ASD only), each a slot RIM-<NAME>; a VSD's distances are
# fields of its own form.
RIMS = ("aortic", "SVC", "IVC", "posterior", "AV-valve")
RIMS_OF: dict[str, tuple[str, ...]] = {defect: () for defect in FORMS} | {"secundum ASD": RIMS}

# The measurement slots of each form as (code, meaning): what routes and the
# SR use (a choice is not a measurement and travels apart).
WORKSHEET: dict[str, tuple[tuple[str, str], ...]] = {
    defect: tuple((f.code, f.meaning) for f in fields if f.kind == "mm")
    for defect, fields in FORMS.items()
}
_RIM_FIELDS = {f"RIM-{rim.upper()}": _distance(f"RIM-{rim.upper()}", f"{rim} rim") for rim in RIMS}
FIELDS: dict[str, Field] = {
    **{f.code: f for fields in FORMS.values() for f in fields if f.kind == "mm"},
    **_RIM_FIELDS,
}
CATALOGUE: dict[str, str] = {code: f.meaning for code, f in FIELDS.items()}


class UnknownSlot(ValueError):
    """A slot the worksheet does not have. The message names the ones it has,
    never the one given (free text from a browser: it may name anyone)."""


class InvalidValue(ValueError):
    """A value no measurement can have. ``text`` (English, {placeholders})
    and ``values`` let the page translate it; str() is the English."""

    def __init__(self, text: str, **values: str | float) -> None:
        self.text, self.values = text, values
        super().__init__(text.format(**values))


def checked_mm(code: str, value: Any) -> float:
    """``value`` as mm for slot ``code``, or InvalidValue saying why not."""
    meaning = CATALOGUE[code]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValue("{field}: a number of mm is needed", field=meaning)
    try:
        mm = float(value)
    except OverflowError:  # an integer too large for a float
        raise InvalidValue("{field}: not a finite number", field=meaning) from None
    if not math.isfinite(mm):
        raise InvalidValue("{field}: not a finite number", field=meaning)
    if mm < 0 or (mm == 0 and not FIELDS[code].zero_allowed):
        text = "{field}: 0 mm or more" if FIELDS[code].zero_allowed else "{field}: more than 0 mm"
        raise InvalidValue(text, field=meaning)
    if mm > MAX_MM:
        raise InvalidValue(
            "{field}: over {limit} mm is not a measurement", field=meaning, limit=MAX_MM
        )
    return mm


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
        if self.code not in CATALOGUE:
            raise UnknownSlot("not a slot of any worksheet")
        object.__setattr__(self, "value_mm", checked_mm(self.code, self.value_mm))
        object.__setattr__(self, "meaning", CATALOGUE[self.code])


def _known(defect: str) -> None:
    if defect not in FORMS:
        raise UnknownSlot(f"no such worksheet; the worksheets are {', '.join(FORMS)}")


def worksheet_slot(
    defect: str,
    code: str,
    value_mm: float,
    instance_uid: str | None = None,
    frame: int | None = None,
) -> Slot:
    """A slot of ``defect``'s worksheet; UnknownSlot for any other code,
    InvalidValue for a value no measurement can have."""
    _known(defect)
    codes = [known for known, _ in WORKSHEET[defect]]
    if code not in codes:
        raise UnknownSlot(f"the {defect} worksheet has only {', '.join(codes)}")
    return Slot(code, value_mm, instance_uid, frame)


def rim_slot(rim: str, value_mm: float, defect: str | None = None) -> Slot:
    """The slot of one septal rim; UnknownSlot for a rim the worksheet of
    ``defect`` (of any defect when None) lacks."""
    if defect is not None:
        _known(defect)
    names = RIMS if defect is None else RIMS_OF[defect]
    if not names:
        raise UnknownSlot(f"the {defect} worksheet has no rims")
    if rim not in names:
        raise UnknownSlot(f"the worksheet's rims are {', '.join(names)}")
    return Slot(f"RIM-{rim.upper()}", value_mm)


def _field_json(f: Field) -> dict[str, Any]:
    described: dict[str, Any] = {
        "code": f.code,
        "meaning": f.meaning,
        "kind": f.kind,
        "unit": f.unit,
    }
    if f.kind == "mm":
        described |= {"zero_allowed": f.zero_allowed, "max": MAX_MM}
    else:
        described["choices"] = [{"value": v, "label": label} for v, label in f.choices]
    return described


def as_json() -> dict[str, Any]:
    """Every defect's form for the page: {defect: {"fields": [...], "rims":
    [...]}}, in display order. Meanings and labels are English for t()."""
    return {
        defect: {
            "fields": [_field_json(f) for f in fields],
            "rims": [
                {"name": rim} | _field_json(_RIM_FIELDS[f"RIM-{rim.upper()}"])
                for rim in RIMS_OF[defect]
            ],
        }
        for defect, fields in FORMS.items()
    }
