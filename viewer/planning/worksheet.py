"""The worksheet of each defect: its slots, their local codes and meanings.

The server's own catalogue: what a browser sends as a meaning never reaches
a report or a stored plan (it could name anyone). The page draws its forms
from this catalogue (one source for both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The worksheet of each defect: its slots' local codes and what they mean.
# The server's own catalogue, so what a browser sends as a meaning never
# reaches a report or a stored plan (it could name anyone); planning.js
# draws the same worksheet (tests/test_planning.py keeps the two equal).
WORKSHEET: dict[str, tuple[tuple[str, str], ...]] = {
    "secundum ASD": (
        ("ASD-MAX-DIAMETER", "ASD maximal diameter (view 1)"),
        ("ASD-MAX-DIAMETER-2", "ASD maximal diameter (view 2)"),
        ("ASD-SEPTAL-LENGTH", "Total septal length"),
        ("ASD-STRETCHED", "Stretched (balloon) diameter"),
    ),
    "PDA": (
        ("PDA-NARROWEST", "Narrowest (pulmonary end) diameter"),
        ("PDA-AMPULLA", "Aortic ampulla diameter"),
        ("PDA-LENGTH", "Duct length"),
    ),
    "perimembranous VSD": (
        ("VSD-LV-DIAMETER", "LV-side diameter"),
        ("VSD-RV-DIAMETER", "RV-side diameter"),
        ("VSD-AORTIC-DISTANCE", "Distance to the aortic valve"),
    ),
    "muscular VSD": (
        ("VSD-LV-DIAMETER", "LV-side diameter"),
        ("VSD-RV-DIAMETER", "RV-side diameter"),
    ),
}
# The septal rims the worksheet asks for (ASD), each a slot RIM-<NAME>.
RIMS = ("aortic", "SVC", "IVC", "posterior", "AV-valve")
CATALOGUE: dict[str, str] = {
    **{code: meaning for slots in WORKSHEET.values() for code, meaning in slots},
    **{f"RIM-{rim.upper()}": f"{rim} rim" for rim in RIMS},
}


class UnknownSlot(ValueError):
    """A slot the worksheet does not have. The message names the ones it has,
    never the one given (free text from a browser: it may name anyone)."""


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
        object.__setattr__(self, "meaning", CATALOGUE[self.code])


def worksheet_slot(
    defect: str,
    code: str,
    value_mm: float,
    instance_uid: str | None = None,
    frame: int | None = None,
) -> Slot:
    """A slot of ``defect``'s worksheet; UnknownSlot for any other code."""
    codes = [known for known, _ in WORKSHEET.get(defect, ())]
    if code not in codes:
        raise UnknownSlot(f"the {defect} worksheet has only {', '.join(codes)}")
    return Slot(code, value_mm, instance_uid, frame)


def rim_slot(rim: str, value_mm: float) -> Slot:
    """The slot of one septal rim; UnknownSlot for a rim the worksheet lacks."""
    if rim not in RIMS:
        raise UnknownSlot(f"the worksheet's rims are {', '.join(RIMS)}")
    return Slot(f"RIM-{rim.upper()}", value_mm)
