"""Device sizing aids: candidate sizes from stated rules, each citing its source.

Decision support for the interventional cardiologist, never an order: the
rules and the device catalogues are data that a centre can change, and every
proposal carries the rule and the measurement it was computed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    defect: str
    says: str
    source: str


@dataclass(frozen=True)
class Proposal:
    sizes: list[str]
    rule: Rule
    basis: str
    warnings: list[str] = field(default_factory=list)


PDA_RULE = Rule(
    "PDA",
    "duct occluder whose smaller (pulmonary) end is at least 2 mm over the narrowest "
    "ductal diameter",
    "Amplatzer Duct Occluder instructions for use (device sizing)",
)
PM_VSD_RULE = Rule(
    "perimembranous VSD",
    "occluder waist 1-2 mm over the largest VSD diameter",
    "manufacturer guidance for membranous VSD occluders; Holzer et al., "
    "Catheter Cardiovasc Interv 2006",
)
ASD_RULE = Rule(
    "secundum ASD",
    "septal occluder waist equal to the stretched (balloon) diameter; without balloon "
    "sizing, the largest echo diameter plus a margin",
    "Amplatzer Septal Occluder instructions for use; margin: centre setting",
)
RIM_THRESHOLD_MM = 5.0

# (aortic end, pulmonary end) in mm, as the sizes are named.
DUCT_OCCLUDERS = ((5, 4), (6, 4), (8, 6), (10, 8), (12, 10), (14, 12), (16, 14))
VSD_WAISTS = tuple(range(4, 19))
ASD_WAISTS = (*range(4, 21), *range(22, 41, 2))


def pda(narrowest_mm: float, devices: tuple = DUCT_OCCLUDERS) -> Proposal:
    fitting = [d for d in devices if d[1] >= narrowest_mm + 2]
    warnings = [] if fitting else ["no catalogued duct occluder is large enough"]
    sizes = [f"{a}/{p}" for a, p in fitting[:2]]
    return Proposal(sizes, PDA_RULE, f"narrowest diameter {narrowest_mm:.1f} mm", warnings)


def perimembranous_vsd(largest_mm: float, waists: tuple = VSD_WAISTS) -> Proposal:
    sizes = [f"{w} mm" for w in waists if largest_mm + 1 <= w <= largest_mm + 2]
    warnings = [] if sizes else ["no catalogued waist 1-2 mm over the defect"]
    return Proposal(sizes, PM_VSD_RULE, f"largest diameter {largest_mm:.1f} mm", warnings)


def secundum_asd(
    largest_echo_mm: float,
    stretched_mm: float | None = None,
    margin_mm: float = 2.0,
    waists: tuple = ASD_WAISTS,
    rims_mm: dict[str, float] | None = None,
) -> Proposal:
    if stretched_mm is not None:
        target, basis = stretched_mm, f"stretched diameter {stretched_mm:.1f} mm"
    else:
        target = largest_echo_mm + margin_mm
        basis = f"largest echo diameter {largest_echo_mm:.1f} mm + {margin_mm:.1f} mm margin"
    fitting = [w for w in waists if w >= target]
    warnings = [] if fitting else ["no catalogued septal occluder is large enough"]
    warnings += [f"deficient {name} rim" for name in deficient_rims(rims_mm or {})]
    return Proposal([f"{w} mm" for w in fitting[:2]], ASD_RULE, basis, warnings)


def deficient_rims(rims_mm: dict[str, float], threshold: float = RIM_THRESHOLD_MM) -> list[str]:
    """Rims under the threshold (5 mm), which the worksheet flags."""
    return [name for name, value in rims_mm.items() if value < threshold]


def propose(
    defect: str,
    values: dict[str, float],
    rims: dict[str, float],
    krichenko: str | None = None,
) -> Proposal | None:
    """The sizing aid for a defect's worksheet values (slot code -> mm), rims
    (name -> mm) and, for a duct, its Krichenko type; None when too little
    was measured."""
    if defect == "PDA" and "PDA-NARROWEST" in values:
        return pda(values["PDA-NARROWEST"])
    if defect == "perimembranous VSD" and "VSD-LV-DIAMETER" in values:
        largest = max(values.get("VSD-LV-DIAMETER", 0), values.get("VSD-RV-DIAMETER", 0))
        return perimembranous_vsd(largest)
    if defect == "secundum ASD" and "ASD-MAX-DIAMETER" in values:
        return secundum_asd(
            values["ASD-MAX-DIAMETER"], stretched_mm=values.get("ASD-STRETCHED"), rims_mm=rims
        )
    return None
