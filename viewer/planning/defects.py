"""The closure-planning catalogue: every defect type, its fields and its sizing rules.

One table, read by the worksheet (validation of what a browser sends), the
page (its forms, as JSON), the print template, the sizing aid (the rules'
texts and sources) and the SR (codes, meanings and units). A new defect type
is one ``Defect`` entry here (plus the translations of its English texts);
a sizing algorithm of its own, if any, is a function in ``sizing.SIZERS``
named by ``Defect.sizing``. The table is checked when it is built
(``Catalogue``), so a slip in an entry stops the import instead of reaching a
report. Every text is English: the page translates it, the SR keeps it.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field

# Nothing measured on these forms (a defect, a duct, a septum, a distance)
# comes near 100 mm in a child or an adult: a larger value is a slip
# (centimetres typed as millimetres, an extra digit), not a measurement.
MAX_MM = 100.0
MEANING_MAX = 64  # Code Meaning is LO in the SR: 64 characters at most
CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,63}$")  # a local code (99CHDNODE)
KEY = re.compile(r"^[a-z][a-z_]{0,31}$")
RIM_NAME = re.compile(r"^[A-Za-z][A-Za-z-]{0,31}$")
# What a plan body already carries: a choice's key may not be one of these
# (it travels beside them), nor an id of the page it becomes.
RESERVED_KEYS = frozenset(
    {
        "defect",
        "plan",
        "based_on",
        "slots",
        "rims",
        "note",
        "measurements",
        "calibrations",
        "calibration",
        "proposal",
        "deficient_rims",
        "plans",
    }
)
# Units a field may have, as the SR codes them (UCUM).
UNITS: dict[str, tuple[str, str, str]] = {"mm": ("mm", "UCUM", "millimeter")}
KINDS = ("mm", "choice")


class CatalogueError(ValueError):
    """An entry of the table that cannot be right (found when it is built)."""


def wrong(where: str, what: str) -> CatalogueError:
    """The error for a table entry, in English for whoever edits the table (called
    with keywords: not a message a user reads)."""
    return CatalogueError(f"{where}: {what}")


@dataclass(frozen=True)
class Choice:
    """One coded value of a choice field, e.g. Krichenko type B."""

    value: str  # what the page sends and the plan keeps, e.g. "B"
    label: str  # English, e.g. "window"
    report_code: str  # the SR's code for it, e.g. "KRICHENKO-B"
    report_label: str  # its Code Meaning, e.g. "Krichenko type B"


@dataclass(frozen=True)
class Field:
    """One field of a form: a number of mm within bounds, or a choice."""

    code: str  # local code, e.g. "PDA-NARROWEST": the SR's concept name
    label: str  # English, translated by the page; the SR's Code Meaning
    kind: str = "mm"  # "mm" or "choice"
    unit: str = "mm"  # a key of UNITS; "" for a choice
    # A distance or a rim may be 0 mm (absent); a diameter or a length may not.
    zero_allowed: bool = False
    maximum: float = MAX_MM
    choices: tuple[Choice, ...] = ()
    key: str = ""  # a choice: its name in the plan body and the stored plan
    report_code: str = ""  # a choice: the SR's concept name (default: code)
    report_label: str = ""  # a choice: its Code Meaning (default: label)

    @property
    def meaning(self) -> str:
        return self.label

    def choice(self, value: object) -> Choice | None:
        return next((c for c in self.choices if c.value == value), None)


def mm(code: str, label: str, maximum: float = MAX_MM) -> Field:
    """A diameter or a length: more than 0 mm."""
    return Field(code, label, maximum=maximum)


def distance(code: str, label: str, maximum: float = MAX_MM) -> Field:
    """A distance or a rim: 0 mm (absent) or more."""
    return Field(code, label, zero_allowed=True, maximum=maximum)


def rim_field(name: str) -> Field:
    """The field of one septal rim: slot RIM-<NAME>, a distance."""
    return distance(f"RIM-{name.upper()}", f"{name} rim")


@dataclass(frozen=True)
class Rule:
    """A sizing rule as the table states it: English text whose
    {placeholders} the sizing aid fills from ``values`` (each a Centre
    attribute, ``attribute[i]`` for one of a pair, or a fact of the device
    catalogues, see ``sizing.FACTS``), and the source it cites."""

    key: str
    says: str
    source: str
    values: tuple[tuple[str, str], ...] = ()


def rule(key: str, says: str, source: str, **values: str) -> Rule:
    return Rule(key, says, source, tuple(values.items()))


@dataclass(frozen=True)
class Defect:
    """A defect type: its form (fields, rims), its rules, and the sizing
    function (a key of ``sizing.SIZERS``) that applies them; without one,
    the rules are listed for reference and no size is proposed."""

    name: str  # English, e.g. "PDA"; the SR series says "Closure plan (PDA) #1"
    fields: tuple[Field, ...]
    rims: tuple[str, ...] = ()  # septal rims, each a slot RIM-<NAME>
    rules: tuple[Rule, ...] = ()
    sizing: str | None = None

    @property
    def measured(self) -> tuple[Field, ...]:
        """The fields in mm (what travels as slots)."""
        return tuple(f for f in self.fields if f.kind == "mm")

    @property
    def choices(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.kind == "choice")

    @property
    def rim_fields(self) -> dict[str, Field]:
        return {name: rim_field(name) for name in self.rims}

    def slot(self, code: str) -> Field | None:
        """The mm field or rim of this worksheet with ``code``."""
        found = next((f for f in self.measured if f.code == code), None)
        return found or next((f for f in self.rim_fields.values() if f.code == code), None)

    def rule(self, key: str) -> Rule:
        return next(r for r in self.rules if r.key == key)


# --- Sources (the literature and labelling the rules cite) -------------------

ASO_IFU = "Amplatzer Septal Occluder instructions for use"
ASE_2015 = "Silvestry et al., J Am Soc Echocardiogr 2015;28:910-58 (ASE/SCAI guideline)"
ADO_IFU = "Amplatzer Duct Occluder instructions for use"
KRICHENKO_1989 = "Krichenko et al., Am J Cardiol 1989;63:877-80"
ADO_WEIGHT = f"{ADO_IFU}; Abadir et al., Arch Cardiovasc Dis 2009;102:533-40"
# US approval "for children weighing >6 kg and older than 6 months of age", as
# stated in the abstract of PMID 21232725 (its authors were not in the copy read).
ADO_AGE = f"{ADO_IFU} (US approval); JACC Cardiovasc Interv 2010;3:1295-9 (PMID 21232725)"
THANOPOULOS_2003 = "Thanopoulos et al., Heart 2003;89:918-22"
PM_SERIES = (
    "Holzer et al., Catheter Cardiovasc Interv 2006;68:620-8; "
    "Butera et al., J Am Coll Cardiol 2007;50:1189-95"
)
ZHU_2013 = "Zhu et al., Thorac Cardiovasc Surg 2013;61:300-6"
MUSCULAR_IFU = "Amplatzer Muscular VSD Occluder instructions for use"
MUSCULAR_PAS = "Amplatzer Muscular VSD Occluder post-approval study, NCT00647387"
CENTRE_SETTING = "threshold: centre setting"

# Krichenko et al., Am J Cardiol 1989;63:877-880: the angiographic types.
KRICHENKO = tuple(
    Choice(value, label, f"KRICHENKO-{value}", f"Krichenko type {value}")
    for value, label in (
        ("A", "conical"),
        ("B", "window"),
        ("C", "tubular"),
        ("D", "complex"),
        ("E", "elongated"),
    )
)

# --- The table ---------------------------------------------------------------

DEFECTS: tuple[Defect, ...] = (
    Defect(
        "secundum ASD",
        (
            mm("ASD-MAX-DIAMETER", "ASD maximal diameter (view 1)"),
            mm("ASD-MAX-DIAMETER-2", "ASD maximal diameter (view 2)"),
            mm("ASD-SEPTAL-LENGTH", "Total septal length"),
            mm("ASD-STRETCHED", "Stretched (balloon) diameter"),
        ),
        rims=("aortic", "SVC", "IVC", "posterior", "AV-valve"),
        rules=(
            rule(
                "balloon",
                "septal occluder waist equal to the balloon-stretched (stop-flow) diameter",
                ASO_IFU,
            ),
            rule(
                "echo",
                "without balloon sizing: the largest echo diameter over all views plus {margin} mm",
                f"{ASO_IFU}; margin: centre setting",
                margin="asd_margin_mm",
            ),
            rule(
                "left disc",
                "the left disc (waist + 12, 14 or 16 mm by size) must not be longer than "
                "the total septal length",
                f"{ASO_IFU} (disc diameters); {ASE_2015}",
            ),
            rule(
                "rims",
                "rims of {threshold} mm or more hold a septal occluder; a deficient aortic rim "
                "alone is acceptable, deficient IVC or posterior rims weigh against device closure",
                f"{ASE_2015}; Amedro et al., J Thorac Dis 2017 (inferior-posterior rims); "
                "Kijima et al., J Am Soc Echocardiogr 2016 (several deficient rims)",
                threshold="rim_mm",
            ),
        ),
        sizing="secundum ASD",
    ),
    Defect(
        "PDA",
        (
            mm("PDA-NARROWEST", "Narrowest (pulmonary end) diameter"),
            mm("PDA-AMPULLA", "Aortic ampulla diameter"),
            mm("PDA-LENGTH", "Duct length"),
            Field(
                "PDA-KRICHENKO",
                "Krichenko type",
                kind="choice",
                unit="",
                choices=KRICHENKO,
                key="krichenko",
                report_code="KRICHENKO-TYPE",
                report_label="Krichenko angiographic type",
            ),
        ),
        rules=(
            rule(
                "pulmonary end",
                "duct occluder whose smaller (pulmonary) end is at least {margin} mm over the "
                "narrowest ductal diameter",
                f"{ADO_IFU} (device sizing)",
                margin="duct_margin_mm",
            ),
            rule(
                "ampulla",
                "the ampulla must take the device's aortic end; the retention skirt "
                "({low}-{high} mm wider, by size) rests on the aortic side",
                f"{ADO_IFU} (device dimensions)",
                low="skirt_over_min_mm",
                high="skirt_over_max_mm",
            ),
            rule(
                "length",
                "a device longer than the duct protrudes into the pulmonary artery or the aorta",
                f"{ADO_IFU} (device lengths)",
            ),
            rule(
                "krichenko",
                "the Krichenko type (A conical, B window, C tubular, D complex, E elongated) "
                "decides whether a conical duct occluder suits the duct",
                KRICHENKO_1989,
            ),
            rule(
                "small duct",
                "ducts of {small} mm or less at the narrowest point: coils or a low-profile plug",
                "Lloyd et al., Circulation 1993;88:1412-20 (coils); Amplatzer Duct Occluder II "
                "Additional Sizes (ducts under 4 mm); " + CENTRE_SETTING,
                small="small_duct_mm",
            ),
            rule(
                "weight",
                "the duct occluder is labelled for {minimum} kg or more",
                ADO_WEIGHT,
                minimum="duct_occluder_kg",
            ),
            rule(
                "age",
                "the duct occluder is labelled for children of {minimum} months or more",
                ADO_AGE,
                minimum="duct_occluder_months",
            ),
        ),
        sizing="PDA",
    ),
    Defect(
        "perimembranous VSD",
        (
            mm("VSD-LV-DIAMETER", "LV-side diameter"),
            mm("VSD-RV-DIAMETER", "RV-side diameter"),
            distance("VSD-AORTIC-DISTANCE", "Distance to the aortic valve"),
            distance("VSD-TRICUSPID-DISTANCE", "Distance to the tricuspid valve"),
        ),
        rules=(
            rule(
                "waist",
                "occluder waist {low}-{high} mm over the LV-side diameter",
                f"{THANOPOULOS_2003}; {PM_SERIES}",
                low="vsd_oversize_mm[0]",
                high="vsd_oversize_mm[1]",
            ),
            rule(
                "subaortic",
                "a subaortic rim under {threshold} mm: the left disc may reach the aortic valve",
                f"{ZHU_2013} (subaortic rim); {CENTRE_SETTING}",
                threshold="subaortic_rim_mm",
            ),
            rule(
                "tricuspid",
                "the right disc reaches {threshold} mm beyond the waist: a nearer tricuspid valve "
                "may be caught",
                f"{THANOPOULOS_2003} (device geometry); {CENTRE_SETTING}",
                threshold="tricuspid_mm",
            ),
        ),
        sizing="perimembranous VSD",
    ),
    Defect(
        "muscular VSD",
        (
            mm("VSD-ED-DIAMETER", "Defect diameter at end-diastole"),
            mm("VSD-LV-DIAMETER", "LV-side diameter"),
            mm("VSD-RV-DIAMETER", "RV-side diameter"),
            distance("VSD-VALVE-DISTANCE", "Distance to the nearest valve"),
            distance("VSD-APEX-RIM", "Rim to the apex or moderator band"),
        ),
        rules=(
            rule(
                "waist",
                "occluder waist {low}-{high} mm over the defect diameter at end-diastole",
                f"{MUSCULAR_IFU}; Holzer et al., J Am Coll Cardiol 2004;43:1257-63",
                low="vsd_oversize_mm[0]",
                high="vsd_oversize_mm[1]",
            ),
            rule(
                "valve",
                "a defect nearer than {threshold} mm to a semilunar or atrioventricular valve "
                "is not for this device",
                f"{MUSCULAR_PAS} (exclusion criteria)",
                threshold="valve_distance_mm",
            ),
            rule(
                "apex",
                "the discs reach {threshold} mm beyond the waist: a shorter rim to the apex or "
                "moderator band may keep a disc from opening",
                f"{MUSCULAR_IFU} (disc diameters); {CENTRE_SETTING}",
                threshold="apex_rim_mm",
            ),
            rule(
                "weight",
                "the muscular VSD occluder is labelled for {minimum} kg or more",
                f"{MUSCULAR_PAS} (exclusion criteria)",
                minimum="muscular_occluder_kg",
            ),
        ),
        sizing="muscular VSD",
    ),
)


# --- The checked catalogue ------------------------------------------------------


def _text(text: object, what: str) -> None:
    if not isinstance(text, str) or not text or text.strip() != text:
        raise wrong(where=what, what="a text without surrounding spaces")
    if len(text) > MEANING_MAX:
        raise wrong(where=what, what=f"at most {MEANING_MAX} characters (a Code Meaning)")


def _check_field(f: Field, where: str) -> None:
    where = f"{where}, field {f.code!r}"
    if not isinstance(f.code, str) or not CODE.match(f.code):
        raise wrong(where=where, what="a code of capitals, digits and hyphens")
    _text(f.label, f"{where} label")
    if f.kind not in KINDS:
        raise wrong(where=where, what=f"kind one of {', '.join(KINDS)}")
    if f.kind == "mm":
        if f.unit not in UNITS:
            raise wrong(where=where, what=f"unit one of {', '.join(UNITS)}")
        if f.choices or f.key:
            raise wrong(where=where, what="a measurement has no choices")
        top = f.maximum
        if isinstance(top, bool) or not isinstance(top, int | float) or not math.isfinite(top):
            raise wrong(where=where, what="a finite maximum")
        if not 0 < top <= MAX_MM:
            raise wrong(where=where, what=f"a maximum over 0 and at most {MAX_MM} mm")
        return
    if f.unit:
        raise wrong(where=where, what="a choice has no unit")
    if not KEY.match(f.key or "") or f.key in RESERVED_KEYS:
        raise wrong(where=where, what="a key of small letters, not one the plan already uses")
    if not f.choices or len({c.value for c in f.choices}) != len(f.choices):
        raise wrong(where=where, what="choices, each value once")
    if not CODE.match(f.report_code or f.code):
        raise wrong(where=where, what="a report code of capitals, digits and hyphens")
    _text(f.report_label or f.label, f"{where} report label")
    for c in f.choices:
        if not isinstance(c.value, str) or not c.value or not CODE.match(c.report_code):
            raise wrong(where=where, what="each choice a value and a report code")
        _text(c.label, f"{where} choice label")
        _text(c.report_label, f"{where} choice report label")


def _check_rule(r: Rule, where: str) -> None:
    where = f"{where}, rule {r.key!r}"
    if not isinstance(r.key, str) or not r.key:
        raise wrong(where=where, what="a key")
    if not isinstance(r.says, str) or not r.says.strip() or not isinstance(r.source, str):
        raise wrong(where=where, what="what it says and its source")
    if not r.source.strip():
        raise wrong(where=where, what="a source (a rule cites where it comes from)")
    placeholders = {name for _, name, _, _ in string.Formatter().parse(r.says) if name}
    if placeholders != {name for name, _ in r.values}:
        raise wrong(where=where, what="a value for each placeholder and no other")


def _check(defects: tuple[Defect, ...]) -> None:
    names = [d.name for d in defects]
    if not defects or len(set(names)) != len(names):
        raise wrong(where="defects", what="at least one, each name once")
    by_code: dict[str, Field] = {}
    keys: dict[str, Field] = {}
    for d in defects:
        _text(d.name, "defect name")
        if "(" in d.name or ")" in d.name:  # the SR series label puts it in brackets
            raise wrong(where=f"defect {d.name!r}", what="a name without brackets")
        if not d.fields or (d.sizing is not None and not isinstance(d.sizing, str)):
            raise wrong(where=f"defect {d.name!r}", what="fields, and a sizing key or None")
        where = f"defect {d.name!r}"
        if len(set(d.rims)) != len(d.rims) or not all(RIM_NAME.match(r) for r in d.rims):
            raise wrong(where=where, what="rims named in letters and hyphens, each once")
        fields = [*d.fields, *d.rim_fields.values()]
        codes = [f.code for f in fields]
        if len(set(codes)) != len(codes):
            raise wrong(where=where, what="each code once")
        for f in fields:
            _check_field(f, where)
            # A code shared by two forms (the VSDs' diameters) means one thing.
            if by_code.setdefault(f.code, f) != f:
                raise wrong(where=f"{where}, field {f.code!r}", what="differs on another form")
            if f.key and keys.setdefault(f.key, f) != f:
                raise wrong(where=f"{where}, field {f.code!r}", what="key of another choice")
        rule_keys = [r.key for r in d.rules]
        if len(set(rule_keys)) != len(rule_keys):
            raise wrong(where=where, what="each rule key once")
        for r in d.rules:
            _check_rule(r, where)


@dataclass(frozen=True)
class Catalogue:
    """The checked table, with its look-ups. ``adding`` makes a larger one
    (a test's, or a centre's); building one checks every entry."""

    defects: tuple[Defect, ...]
    _by_name: dict[str, Defect] = field(init=False, repr=False, compare=False)
    _by_code: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(self.defects)
        object.__setattr__(self, "_by_name", {d.name: d for d in self.defects})
        codes = {f.code: f for d in self.defects for f in (*d.fields, *d.rim_fields.values())}
        object.__setattr__(self, "_by_code", codes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def defect(self, name: object) -> Defect | None:
        return self._by_name.get(name) if isinstance(name, str) else None

    def field_of(self, code: object) -> Field | None:
        """The field (of any form, rims included) with ``code``."""
        return self._by_code.get(code) if isinstance(code, str) else None

    @property
    def choice_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.key for d in self.defects for f in d.choices))

    def adding(self, *defects: Defect) -> Catalogue:
        return Catalogue((*self.defects, *defects))


TABLE = Catalogue(DEFECTS)


def table() -> Catalogue:
    """The catalogue in force (read at each use, never copied)."""
    return TABLE
