"""Device sizing aids: candidate sizes from published rules, each citing its source.

Decision support for the interventional cardiologist, never an order. The
rules' texts and sources are the catalogue's (``defects``: each function here
applies the rules of its defect by key, and a rule added to the table is
listed with the others); their thresholds (``Centre``) and the device
catalogues below are data a centre can change; docs/planning-rules.md says
where each figure comes from and which are a centre's choice. Every proposal carries the rules
it applied, the measurement it was computed from and its warnings, as
English text with {placeholders} and the numbers apart (floats, mm or kg),
so the page translates the text and formats the numbers in the reader's
locale. String values are catalogue terms or device sizes: the page passes
them through t() too.

Every measurement, rim and weight is rounded to 0.1 (mm or kg) before any
rule sees it: the precision the worksheet shows and the SR stores, so the
number printed in a basis or a warning is the number the rule used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from viewer.planning import defects
from viewer.planning.defects import Defect
from viewer.planning.worksheet import (
    Slot,
    checked_choice,
    checked_mm,
    defect_of,
    rim_slot,
    worksheet_slot,
)

EPS = 1e-9  # measurements are floats: 6.4 + 1 must still reach a 7.4 mm bound
PRECISION = 1  # decimals of mm and kg the rules work on (what is shown and stored)


@dataclass(frozen=True)
class Message:
    """English text with {placeholders}, and the values that fill them."""

    text: str
    values: dict[str, str | float] = field(default_factory=dict)

    def english(self) -> str:
        """The text filled in English (numbers to 0.1), for logs and tests."""
        shown = {k: f"{v:.1f}" if isinstance(v, float) else v for k, v in self.values.items()}
        return self.text.format(**shown)


def _m(text: str, **values: str | float) -> Message:
    return Message(text, {k: v if isinstance(v, str) else float(v) for k, v in values.items()})


@dataclass(frozen=True)
class Rule:
    defect: str
    says: str  # English with {placeholders} filled from values
    source: str
    values: dict[str, str | float] = field(default_factory=dict)


def _rule(defect: str, says: str, source: str, **values: str | float) -> Rule:
    return Rule(defect, says, source, _m(says, **values).values)


@dataclass(frozen=True)
class Proposal:
    sizes: list[str]
    rule: Rule  # the rule the sizes come from
    rules: list[Rule]  # every rule applied, the sizing rule first
    basis: Message  # the measurement the sizes were computed from
    warnings: list[Message] = field(default_factory=list)  # against a size or the device
    notes: list[Message] = field(default_factory=list)  # what is unchecked, or advice


@dataclass(frozen=True)
class Centre:
    """Thresholds a centre may set; the defaults are the published figures
    (or, where marked, a centre's choice) given in docs/planning-rules.md."""

    asd_margin_mm: float = 2.0  # centre's choice: echo diameter + margin, no balloon
    rim_mm: float = 5.0  # a rim under 5 mm is deficient (Kijima et al. 2016; ASE 2015)
    duct_margin_mm: float = 2.0  # ADO IFU: pulmonary end >= narrowest + 2 mm
    small_duct_mm: float = 2.0  # centre's choice within the 2-3 mm of the literature
    window_length_mm: float = 3.0  # centre's choice: a longer type B duct is doubtful
    duct_occluder_kg: float = 6.0  # ADO: not recommended (off-label) under 6 kg
    duct_occluder_months: float = 6.0  # ADO: approved (US) from 6 months of age
    # VSD occluders: 1-2 mm over; with no catalogued waist in that band, the
    # smallest waist at least 1 mm over (and the next), with a note.
    vsd_oversize_mm: tuple[float, float] = (1.0, 2.0)
    subaortic_rim_mm: float = 2.0  # centre's choice: Zhu 2013 sets < 2 mm apart
    tricuspid_mm: float = 2.0  # pmVSD right disc 4 mm over the waist (2 mm a side)
    valve_distance_mm: float = 4.0  # muscular VSD occluder: 4 mm from any valve
    apex_rim_mm: float = 4.0  # muscular VSD discs (6-18 mm) 4 mm a side; the 4 mm: 2.5
    muscular_occluder_kg: float = 5.2  # muscular VSD occluder: 5.2 kg or more


CENTRE = Centre()
RIM_THRESHOLD_MM = CENTRE.rim_mm


# --- Device catalogues (data: edit for what the centre stocks) -------------


@dataclass(frozen=True)
class SeptalOccluder:
    waist: float
    left_disc: float

    @property
    def size(self) -> str:
        return f"{self.waist:g} mm"


def _over(size: float, table: tuple[tuple[float, float], ...]) -> float:
    """What a (up to size, mm over) table adds to a size; past its end, the last."""
    return next((more for upto, more in table if size <= upto), table[-1][1])


# Amplatzer Septal Occluder, waists 4-38 mm (models 9-ASD-004 to -038): the
# left atrial disc is 12 mm over the waist up to 10 mm, 14 mm up to 32 mm,
# 16 mm above (the right atrial disc: 8 mm, then 10 mm). A 40 mm size sold in
# some markets is not in the table checked: add it here from its IFU if stocked.
LEFT_DISC_OVER_WAIST = ((10, 12.0), (32, 14.0), (38, 16.0))


def _septal(waist: float) -> SeptalOccluder:
    return SeptalOccluder(waist, waist + _over(waist, LEFT_DISC_OVER_WAIST))


SEPTAL_OCCLUDERS = tuple(_septal(w) for w in (*range(4, 21), *range(22, 39, 2)))


@dataclass(frozen=True)
class DuctOccluder:
    aortic: float  # aortic end, inside the retention skirt
    pulmonary: float  # pulmonary (smaller) end
    length: float

    @property
    def size(self) -> str:
        return f"{self.aortic:g}/{self.pulmonary:g}"

    @property
    def skirt(self) -> float:
        return self.aortic + _over(self.aortic, SKIRT_OVER_AORTIC_END)


# Retention skirt diameter over the aortic end, by aortic end: 5/4 9 mm, 6/4
# 10, 8/6 12 (4 mm over, 2 a side); 10/8 16, 12/10 18 (6 mm over, 3 a side).
# 14/12 and 16/14 are taken as 6 mm over: not in the table checked.
SKIRT_OVER_AORTIC_END = ((8, 4.0), (16, 6.0))
# Amplatzer Duct Occluder: (aortic end, pulmonary end, length) in mm; the
# 14/12 and 16/14 lengths (8 mm) are not in the table checked.
DUCT_OCCLUDERS = tuple(
    DuctOccluder(*d)
    for d in ((5, 4, 5), (6, 4, 7), (8, 6, 7), (10, 8, 8), (12, 10, 8), (14, 12, 8), (16, 14, 8))
)
PM_VSD_WAISTS = tuple(range(4, 19))  # membranous VSD occluder waists, mm
MUSCULAR_VSD_WAISTS = tuple(range(4, 19, 2))  # muscular VSD occluder waists, mm


# Facts of the device catalogues a rule of the table may cite by name.
FACTS: dict[str, float] = {
    "skirt_over_min_mm": min(more for _, more in SKIRT_OVER_AORTIC_END),
    "skirt_over_max_mm": max(more for _, more in SKIRT_OVER_AORTIC_END),
}


def _value(spec: str, centre: Centre) -> float:
    """A rule's value: a Centre attribute (``name[i]`` for one of a pair) or
    a catalogue fact."""
    if spec in FACTS:
        return FACTS[spec]
    name, _, index = spec.partition("[")
    found = getattr(centre, name)
    return float(found[int(index.rstrip("]"))] if index else found)


def applied(defect: str, key: str, centre: Centre) -> Rule:
    """The table's rule ``key`` of ``defect``, its values from ``centre``."""
    stated = defect_of(defect).rule(key)
    values = {name: _value(spec, centre) for name, spec in stated.values}
    return _rule(defect, stated.says, stated.source, **values)


def _rules(defect: str, main: Rule, centre: Centre, instead: tuple[str, ...] = ()) -> list[Rule]:
    """The rule the sizes come from, then every other rule of the defect in
    the table's order (but those ``instead`` of the main one)."""
    others = [
        applied(defect, r.key, centre)
        for r in defect_of(defect).rules
        if r.key not in instead and (r.says, r.source) != (main.says, main.source)
    ]
    return [main, *others]


# --- Secundum ASD ------------------------------------------------------------

ASD, PDA, PM_VSD, MUSCULAR_VSD = "secundum ASD", "PDA", "perimembranous VSD", "muscular VSD"

ASD_VIEWS = ("ASD-MAX-DIAMETER", "ASD-MAX-DIAMETER-2")
RIM_WARNINGS = {
    "IVC": "Deficient IVC rim ({rim} mm, under {threshold} mm): weighs against "
    "device closure (embolisation)",
    "posterior": "Deficient posterior rim ({rim} mm, under {threshold} mm): weighs "
    "against device closure (embolisation)",
    "SVC": "Deficient SVC rim ({rim} mm, under {threshold} mm): check that the "
    "device leaves the superior vena cava free",
    "AV-valve": "Deficient AV-valve rim ({rim} mm, under {threshold} mm): the discs "
    "may touch the atrioventricular valves",
}
AORTIC_RIM_NOTE = (
    "Deficient aortic rim ({rim} mm, under {threshold} mm): common and acceptable "
    "for a septal occluder; avoid oversizing (erosion)"
)


def secundum_asd(
    values: dict[str, float],
    rims: dict[str, float],
    centre: Centre = CENTRE,
    devices: tuple[SeptalOccluder, ...] = SEPTAL_OCCLUDERS,
) -> Proposal:
    """Waist = stop-flow (balloon-stretched) diameter when given, else the
    largest echo diameter over all views plus a margin; the left disc must
    fit the total septal length; rims weighed one by one."""
    warnings: list[Message] = []
    notes: list[Message] = []
    views = [values[code] for code in ASD_VIEWS if code in values]
    largest = max(views) if views else None
    stretched = values.get("ASD-STRETCHED")
    septal = values.get("ASD-SEPTAL-LENGTH")
    balloon = applied(ASD, "balloon", centre)
    echo = applied(ASD, "echo", centre)
    target: float | None = None
    if stretched is not None:
        main, target = balloon, stretched
        basis = _m("balloon-stretched diameter {stretched} mm", stretched=stretched)
        if largest is not None and stretched < largest:
            warnings.append(
                _m(
                    "Balloon-stretched diameter {stretched} mm is smaller than the echo "
                    "diameter {largest} mm: implausible, check both",
                    stretched=stretched,
                    largest=largest,
                )
            )
    elif largest is not None:
        main, target = echo, largest + centre.asd_margin_mm
        basis = _m(
            "largest echo diameter over all views {largest} mm + {margin} mm margin",
            largest=largest,
            margin=centre.asd_margin_mm,
        )
    else:
        main, basis = echo, _m("nothing measured to size from")
        warnings.append(
            _m(
                "Measure the ASD diameter in every view, or the balloon-stretched "
                "diameter, to size a device"
            )
        )
    sizes: list[str] = []
    if target is not None:
        fitting = [d for d in devices if d.waist >= target - EPS][:2]
        if not fitting:
            warnings.append(_m("No catalogued septal occluder reaches {target} mm", target=target))
        if septal is not None:
            over = [d for d in fitting if d.left_disc > septal + EPS]
            if over:
                warnings.append(
                    _m(
                        "From {size} up, the left disc ({disc} mm) is longer than the "
                        "total septal length ({septal} mm)",
                        size=over[0].size,
                        disc=over[0].left_disc,
                        septal=septal,
                    )
                )
            fitting = [d for d in fitting if d.left_disc <= septal + EPS]
        sizes = [d.size for d in fitting]
    measured = [v for v in (largest, stretched) if v is not None]
    defect_mm = max(measured) if measured else None
    if septal is None:
        notes.append(_m("Total septal length not measured: the fit of the left disc is unchecked"))
    elif defect_mm is not None and septal <= defect_mm:
        warnings.append(
            _m(
                "Total septal length {septal} mm is not longer than the defect "
                "({defect} mm): check both",
                septal=septal,
                defect=defect_mm,
            )
        )
    rim_warnings, rim_notes = _asd_rims(rims, centre.rim_mm)
    rules = _rules(ASD, main, centre, instead=("balloon", "echo"))
    return Proposal(sizes, main, rules, basis, warnings + rim_warnings, notes + rim_notes)


def _asd_rims(rims: dict[str, float], threshold: float) -> tuple[list[Message], list[Message]]:
    """A deficient aortic rim alone is noted; any other deficient rim, or
    several, is a warning."""
    if not rims:
        return [], [_m("Rims not measured: their adequacy is unchecked")]
    deficient = [name for name in defect_of(ASD).rims if name in rims and rims[name] < threshold]
    warnings = [
        _m(RIM_WARNINGS[name], rim=rims[name], threshold=threshold)
        for name in deficient
        if name != "aortic"
    ]
    notes = [
        _m(AORTIC_RIM_NOTE, rim=rims[name], threshold=threshold)
        for name in deficient
        if name == "aortic"
    ]
    if len(deficient) > 1:
        warnings.append(_m("More than one deficient rim: device closure succeeds less often"))
    return warnings, notes


def deficient_rims(rims_mm: dict[str, float], threshold: float = RIM_THRESHOLD_MM) -> list[str]:
    """Rims under the threshold (5 mm), which the worksheet flags; rounded to
    0.1 mm as the proposal rounds them, so both flag the same rims."""
    return [name for name, value in rims_mm.items() if round(value, PRECISION) < threshold]


# --- PDA -----------------------------------------------------------------------

KRICHENKO_WARNINGS = {
    "B": "Krichenko type B (window): a short duct, narrowest at the aortic end; a "
    "conical duct occluder may protrude or not hold; consider another device or surgery",
    "C": "Krichenko type C (tubular, no constriction): nothing narrows to hold a conical "
    "duct occluder; consider another device",
    "D": "Krichenko type D (complex, several constrictions): size on the narrowest and "
    "check that the device seats across it",
}


def pda(
    values: dict[str, float],
    krichenko: str | None = None,
    weight_kg: float | None = None,
    centre: Centre = CENTRE,
    devices: tuple[DuctOccluder, ...] = DUCT_OCCLUDERS,
    age_years: float | None = None,
) -> Proposal:
    """Pulmonary end >= narrowest + 2 mm; the aortic end must fit the
    ampulla; the device length against the duct's; the Krichenko type; the
    child's weight and age against the device's labelling."""
    warnings: list[Message] = []
    notes: list[Message] = []
    narrowest = values.get("PDA-NARROWEST")
    ampulla = values.get("PDA-AMPULLA")
    length = values.get("PDA-LENGTH")
    main = applied(PDA, "pulmonary end", centre)
    sizes: list[str] = []
    if narrowest is None:
        basis = _m("nothing measured to size from")
        warnings.append(
            _m("Measure the narrowest (pulmonary end) diameter of the duct to size a device")
        )
    else:
        basis = _m("narrowest diameter {narrowest} mm", narrowest=narrowest)
        target = narrowest + centre.duct_margin_mm
        fitting = [d for d in devices if d.pulmonary >= target - EPS][:2]
        if not fitting:
            warnings.append(
                _m("No catalogued duct occluder has a pulmonary end of {target} mm", target=target)
            )
        if ampulla is not None:
            if ampulla < narrowest:
                warnings.append(
                    _m(
                        "Ampulla {ampulla} mm is narrower than the narrowest diameter "
                        "{narrowest} mm: check both",
                        ampulla=ampulla,
                        narrowest=narrowest,
                    )
                )
            wide = [d for d in fitting if d.aortic > ampulla + EPS]
            if wide:
                warnings.append(
                    _m(
                        "From {size} up, the aortic end is wider than the ampulla ({ampulla} mm)",
                        size=wide[0].size,
                        ampulla=ampulla,
                    )
                )
            fitting = [d for d in fitting if d.aortic <= ampulla + EPS]
        sizes = [d.size for d in fitting]
        for d in fitting:
            if length is not None and d.length > length + EPS:
                warnings.append(
                    _m(
                        "The {size} device is {device} mm long, the duct {length} mm: it may "
                        "protrude into the pulmonary artery or the aorta",
                        size=d.size,
                        device=d.length,
                        length=length,
                    )
                )
        if narrowest <= centre.small_duct_mm:
            notes.append(
                _m(
                    "Narrowest diameter {narrowest} mm ({small} mm or less): coils or a "
                    "low-profile plug are usual for so small a duct",
                    narrowest=narrowest,
                    small=centre.small_duct_mm,
                )
            )
    if ampulla is None:
        notes.append(_m("Ampulla not measured: the fit of the aortic end is unchecked"))
    shape_warnings, shape_notes = _krichenko_messages(krichenko, length, centre)
    warnings += shape_warnings
    notes += shape_notes
    if length is None and krichenko != "E":
        notes.append(_m("Duct length not measured: the device length is unchecked"))
    if krichenko is None:
        notes.append(_m("Krichenko type not given: the shape of the duct is unchecked"))
    rules = _rules(PDA, main, centre)
    if weight_kg is None:
        notes.append(_weight_unchecked(centre.duct_occluder_kg))
    elif weight_kg < centre.duct_occluder_kg:
        warnings.append(
            _m(
                "Weight {weight} kg: the duct occluder is off-label under {minimum} kg",
                weight=weight_kg,
                minimum=centre.duct_occluder_kg,
            )
        )
    if age_years is None:
        notes.append(
            _m(
                "Age unknown: the {limit} months limit was not checked",
                limit=centre.duct_occluder_months,
            )
        )
    else:
        months = round(age_years * 12, PRECISION)
        if months < centre.duct_occluder_months:
            warnings.append(
                _m(
                    "Age {age} months: the duct occluder is labelled for {minimum} months or more",
                    age=months,
                    minimum=centre.duct_occluder_months,
                )
            )
    return Proposal(sizes, main, rules, basis, warnings, notes)


def _weight_unchecked(limit: float) -> Message:
    """The note for a weight limit no known weight could be checked against."""
    return _m("Weight unknown: the {limit} kg limit was not checked", limit=limit)


def _krichenko_messages(
    kind: str | None, length: float | None, centre: Centre
) -> tuple[list[Message], list[Message]]:
    """Warnings and notes on the duct's shape (types B, C, D and E)."""
    warnings = [_m(KRICHENKO_WARNINGS[kind])] if kind in KRICHENKO_WARNINGS else []
    notes: list[Message] = []
    if kind == "B" and length is not None and length > centre.window_length_mm:
        warnings.append(
            _m(
                "Krichenko type B is a short window, but the duct measures {length} mm: "
                "check the type or the length",
                length=length,
            )
        )
    if kind == "E":
        notes.append(
            _m(
                "Krichenko type E (elongated): a long conical duct, narrowest far from the "
                "aorta; compare the device length with the duct length"
            )
        )
        if length is None:
            warnings.append(_m("Krichenko type E: measure the duct length"))
    return warnings, notes


# --- VSDs -------------------------------------------------------------------------


def _waists(
    diameter: float,
    waists: tuple[float, ...],
    centre: Centre,
    warnings: list[Message],
    notes: list[Message],
) -> list[str]:
    """The smallest catalogued waist at least 1 mm over ``diameter`` and the
    next one. The published rule says 1-2 mm over, but a catalogue in 2 mm
    steps has no waist in that band for about half of all diameters, and such
    a defect is still closed: a waist more than 2 mm over gets a note saying
    by how much. A warning when no waist is large enough (a size outside the
    catalogue is never proposed)."""
    low, high = centre.vsd_oversize_mm
    fitting = [w for w in sorted(waists) if w >= diameter + low - EPS][:2]
    if not fitting:
        warnings.append(
            _m(
                "No catalogued occluder waist is {low} mm or more over {diameter} mm",
                low=low,
                diameter=diameter,
            )
        )
    for waist in fitting:
        if waist > diameter + high + EPS:
            notes.append(
                _m(
                    "The {size} waist is {over} mm over the defect ({diameter} mm), more "
                    "than the {low}-{high} mm of the rule",
                    size=f"{waist:g} mm",
                    over=round(waist - diameter, PRECISION),
                    diameter=diameter,
                    low=low,
                    high=high,
                )
            )
    return [f"{w:g} mm" for w in fitting]


def _distance(
    distance: float | None,
    threshold: float,
    too_near: str,
    unmeasured: str,
    warnings: list[Message],
    unchecked: list[Message],
) -> None:
    """A distance from the defect to a valve or rim: ``too_near`` (with
    {distance} and {threshold}) warns when it is under ``threshold``;
    ``unmeasured`` goes to ``unchecked`` (notes, or warnings where the
    distance decides whether a device can be used at all)."""
    if distance is None:
        unchecked.append(_m(unmeasured))
    elif distance < threshold:
        warnings.append(_m(too_near, distance=distance, threshold=threshold))


def perimembranous_vsd(
    values: dict[str, float],
    centre: Centre = CENTRE,
    waists: tuple[int, ...] = PM_VSD_WAISTS,
) -> Proposal:
    """Waist 1-2 mm over the LV-side diameter (else the next catalogued
    waist, with a note); the aortic valve distance
    decides whether a device is advised at all; the tricuspid distance."""
    warnings: list[Message] = []
    notes: list[Message] = []
    lv = values.get("VSD-LV-DIAMETER")
    aortic = values.get("VSD-AORTIC-DISTANCE")
    tricuspid = values.get("VSD-TRICUSPID-DISTANCE")
    main = applied(PM_VSD, "waist", centre)
    sizes: list[str] = []
    if lv is None:
        basis = _m("nothing measured to size from")
        warnings.append(_m("Measure the LV-side diameter of the defect to size a device"))
    else:
        basis = _m("LV-side diameter {lv} mm", lv=lv)
        sizes = _waists(lv, waists, centre, warnings, notes)
    _distance(
        aortic,
        centre.subaortic_rim_mm,
        "Subaortic rim {distance} mm (under {threshold} mm): the left disc may reach "
        "the aortic valve; device closure is not advised",
        "Distance to the aortic valve not measured: it decides whether a device can be used",
        warnings,
        warnings,
    )
    _distance(
        tricuspid,
        centre.tricuspid_mm,
        "Tricuspid valve {distance} mm from the defect (under {threshold} mm): the "
        "right disc may catch the septal leaflet",
        "Distance to the tricuspid valve not measured: it is unchecked",
        warnings,
        notes,
    )
    notes.append(_m("Complete heart block is the main risk of perimembranous device closure"))
    rules = _rules(PM_VSD, main, centre)
    return Proposal(sizes, main, rules, basis, warnings, notes)


def muscular_vsd(
    values: dict[str, float],
    weight_kg: float | None = None,
    centre: Centre = CENTRE,
    waists: tuple[int, ...] = MUSCULAR_VSD_WAISTS,
) -> Proposal:
    """Waist 1-2 mm over the diameter at end-diastole (else the next
    catalogued waist, with a note); 4 mm from any valve; the discs need room
    towards the apex and moderator band; the child's weight."""
    warnings: list[Message] = []
    notes: list[Message] = []
    diastolic = values.get("VSD-ED-DIAMETER")
    valve = values.get("VSD-VALVE-DISTANCE")
    apex = values.get("VSD-APEX-RIM")
    main = applied(MUSCULAR_VSD, "waist", centre)
    sizes: list[str] = []
    if diastolic is None:
        basis = _m("nothing measured to size from")
        warnings.append(
            _m("Measure the defect diameter at end-diastole to size a muscular VSD occluder")
        )
    else:
        basis = _m("diameter at end-diastole {diameter} mm", diameter=diastolic)
        sizes = _waists(diastolic, waists, centre, warnings, notes)
    _distance(
        valve,
        centre.valve_distance_mm,
        "Defect {distance} mm from a valve (under {threshold} mm): not for a muscular VSD occluder",
        "Distance to the nearest valve not measured: it is unchecked",
        warnings,
        notes,
    )
    _distance(
        apex,
        centre.apex_rim_mm,
        "Rim to the apex or moderator band {distance} mm (under {threshold} mm): a "
        "disc may not open fully",
        "Rim to the apex or moderator band not measured: it is unchecked",
        warnings,
        notes,
    )
    rules = _rules(MUSCULAR_VSD, main, centre)
    if weight_kg is None:
        notes.append(_weight_unchecked(centre.muscular_occluder_kg))
    elif weight_kg < centre.muscular_occluder_kg:
        warnings.append(
            _m(
                "Weight {weight} kg: the muscular VSD occluder is labelled for "
                "{minimum} kg or more",
                weight=weight_kg,
                minimum=centre.muscular_occluder_kg,
            )
        )
    return Proposal(sizes, main, rules, basis, warnings, notes)


# --- Entry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What a sizing function is given: the checked worksheet values (code ->
    mm), rims (name -> mm) and choices (key -> value), the child's weight and
    age when known, and the centre's thresholds."""

    values: dict[str, float]
    rims: dict[str, float]
    choices: dict[str, str | None]
    weight_kg: float | None
    age_years: float | None
    centre: Centre


# The sizing function of each ``Defect.sizing`` key of the table.
SIZERS: dict[str, Callable[[Measured], Proposal]] = {
    ASD: lambda m: secundum_asd(m.values, m.rims, m.centre),
    PDA: lambda m: pda(
        m.values, m.choices.get("krichenko"), m.weight_kg, m.centre, age_years=m.age_years
    ),
    PM_VSD: lambda m: perimembranous_vsd(m.values, m.centre),
    MUSCULAR_VSD: lambda m: muscular_vsd(m.values, m.weight_kg, m.centre),
}


def _check_table(catalogue: defects.Catalogue) -> None:
    """Every sizing key of the table has its function, and every rule value
    names a Centre attribute or a catalogue fact (a slip stops the import)."""
    for d in catalogue.defects:
        if d.sizing is not None and d.sizing not in SIZERS:
            raise defects.wrong(where=f"defect {d.name!r}", what=f"no sizing function {d.sizing!r}")
        for r in d.rules:
            for _, spec in r.values:
                try:
                    _value(spec, CENTRE)
                except (AttributeError, IndexError, TypeError, ValueError):
                    where = f"defect {d.name!r}, rule {r.key!r}"
                    raise defects.wrong(where=where, what=f"no value {spec!r}") from None


_check_table(defects.table())


def _checked(
    defect: Defect, values: dict[str, float], rims: dict[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """The values as the worksheet accepts them, rounded to 0.1 mm;
    UnknownSlot or InvalidValue (both ValueError, messages naming no input)
    for anything else, including a diameter that rounds to 0 mm."""
    name = defect.name
    slots = {code: _rounded(worksheet_slot(name, code, mm)) for code, mm in values.items()}
    rim_mm = {rim: _rounded(rim_slot(rim, mm, name)) for rim, mm in rims.items()}
    return slots, rim_mm


def _rounded(slot: Slot) -> float:
    """The slot's value to 0.1 mm, checked again (0.04 mm is no diameter)."""
    return checked_mm(slot.code, round(slot.value_mm, PRECISION))


def _choices(defect: Defect, given: dict[str, str | None]) -> dict[str, str | None]:
    """Every choice of the defect's worksheet (None when not given); a
    choice of another worksheet, or a value not offered, is a ValueError."""
    for key, value in given.items():
        checked_choice(defect.name, key, value)
    return {f.key: checked_choice(defect.name, f.key, given.get(f.key)) for f in defect.choices}


def _weight(weight_kg: float | None) -> float | None:
    """A weight from the header: a placeholder (0, absent, absurd) is unknown."""
    if weight_kg is None or isinstance(weight_kg, bool):
        return None
    try:
        kg = float(weight_kg)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(kg):
        return None
    kg = round(kg, PRECISION)
    return kg if 0 < kg < 500 else None


def _age(age_years: float | None) -> float | None:
    """An age in years (from PatientAge): anything not a plausible age is
    unknown, never an error. 0 is a newborn's age, not a placeholder."""
    if age_years is None or isinstance(age_years, bool):
        return None
    try:
        years = float(age_years)
    except (TypeError, ValueError):
        return None
    return years if math.isfinite(years) and 0 <= years < 150 else None


def _for_reference(defect: Defect, centre: Centre) -> Proposal | None:
    """A defect the table gives rules but no sizing function: its rules,
    for reference, and no size."""
    rules = [applied(defect.name, r.key, centre) for r in defect.rules]
    if not rules:
        return None
    basis = _m("no sizing aid for this defect: its rules are listed for reference")
    return Proposal([], rules[0], rules, basis)


def propose(
    defect: str,
    values: dict[str, float],
    rims: dict[str, float],
    krichenko: str | None = None,
    *,
    weight_kg: float | None = None,
    age_years: float | None = None,
    centre: Centre = CENTRE,
    choices: dict[str, str | None] | None = None,
) -> Proposal | None:
    """The sizing aid for a defect's worksheet values (slot code -> mm), rims
    (name -> mm), choices (key -> value; ``krichenko`` is the duct's
    Krichenko type), and the child's weight and age (years, from PatientAge)
    when known; a device limit they could not be checked against is a note.
    ValueError (UnknownSlot, InvalidValue) for what no worksheet has or no
    measurement can be; a Proposal for every defect with a sizing function,
    without sizes and saying what to measure when the driving measurement
    is missing; for a defect without one, its rules for reference (None
    when it has none)."""
    entry = defect_of(defect)
    values, rims = _checked(entry, values, rims)
    given = dict(choices or {})
    if krichenko not in (None, ""):
        given["krichenko"] = krichenko
    chosen = _choices(entry, given)
    if entry.sizing is None:
        return _for_reference(entry, centre)
    measured = Measured(values, rims, chosen, _weight(weight_kg), _age(age_years), centre)
    return SIZERS[entry.sizing](measured)
