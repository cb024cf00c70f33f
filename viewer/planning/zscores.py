"""Z-scores of cardiac dimensions for the child's body surface area: how far
a measured diameter lies from healthy children of the same size, which
volume load (an LV dilated by a duct or a VSD, an RV by an ASD) and the
vessels a device sits beside (the LPA and the aortic isthmus beside a duct
occluder) are read against.

Reference: Pettersen MD, Du W, Skeens ME, Humes RA. Regression equations
for calculation of z scores of cardiac structures in a large cohort of
healthy infants, children, and adolescents: an echocardiographic study.
J Am Soc Echocardiogr 2008;21(8):922-34 (PMID 18406572): 782 children,
BSA up to about 2 m². For each structure

    mean = b0 + b1·BSA + b2·BSA² + b3·BSA³      (ln of the dimension in cm)
    z    = (ln(dimension in cm) − mean) / √MSE

The coefficients below are as transcribed from the paper's table by
D. Dyar's parameterz calculator (MIT licence; repository
atilarec/parameterz, Michigan/Michigan01.js, and its description
CardiacStructuresZScores.md, which agree); the paper's own table could not
be read here, so they are checked only against that transcription and
against known newborn and adult sizes (tests/test_zscores.py). A BSA
outside the cohort's (under 0.1 or over 2.0 m²) gives no z-score, nor does
an unknown BSA: no z-score is better than a wrong one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SOURCE = "Pettersen et al., J Am Soc Echocardiogr 2008;21:922-34"
BSA_RANGE = (0.1, 2.0)  # m²: the cohort's, about


@dataclass(frozen=True)
class Structure:
    label: str  # English, for t(); the SR's meaning
    b0: float
    b1: float
    b2: float
    b3: float
    mse: float


# The structures closure planning reads (of the paper's 21), by key.
STRUCTURES = {
    "RVD": Structure("RV end-diastolic dimension (M-mode)", -0.317, 1.85, -1.274, 0.335, 0.058),
    "LVIDd": Structure("LV end-diastolic dimension", 0.105, 2.859, -2.119, 0.552, 0.01),
    "LVIDs": Structure("LV end-systolic dimension", -0.371, 2.833, -2.081, 0.538, 0.016),
    "AV": Structure("Aortic valve annulus", -0.874, 2.708, -1.841, 0.452, 0.01),
    "TRANSVERSE": Structure("Transverse aortic arch", -0.79, 3.02, -2.484, 0.712, 0.023),
    "ISTHMUS": Structure("Aortic isthmus", -1.072, 2.539, -1.627, 0.368, 0.027),
    "MPA": Structure("Main pulmonary artery", -0.707, 2.746, -1.807, 0.424, 0.024),
    "RPA": Structure("Right pulmonary artery", -1.36, 3.394, -2.508, 0.66, 0.027),
    "LPA": Structure("Left pulmonary artery", -1.348, 2.884, -1.954, 0.466, 0.028),
    "LA": Structure("Left atrial dimension (M-mode)", -0.208, 2.164, -1.597, 0.429, 0.02),
}


@dataclass(frozen=True)
class ZScore:
    structure: str
    label: str  # the structure, in English
    z: float
    mean_mm: float
    low_mm: float  # mean − 2 SD
    high_mm: float  # mean + 2 SD
    bsa_m2: float
    source: str = SOURCE


def zscore(structure: str, mm: float, bsa_m2: float | None) -> ZScore | None:
    """The z-score of ``mm`` for ``structure`` at ``bsa_m2``; None when the
    BSA is unknown or outside the reference cohort's. KeyError for a
    structure the table does not have, ValueError for a dimension that is
    not a positive number."""
    found = STRUCTURES[structure]
    if not (math.isfinite(mm) and mm > 0):
        raise ValueError("a z-score needs a positive dimension")
    if bsa_m2 is None or not BSA_RANGE[0] <= bsa_m2 <= BSA_RANGE[1]:
        return None
    mean = found.b0 + found.b1 * bsa_m2 + found.b2 * bsa_m2**2 + found.b3 * bsa_m2**3
    sd = math.sqrt(found.mse)
    z = (math.log(mm / 10) - mean) / sd
    return ZScore(
        structure,
        found.label,
        round(z, 2),
        round(math.exp(mean) * 10, 1),
        round(math.exp(mean - 2 * sd) * 10, 1),
        round(math.exp(mean + 2 * sd) * 10, 1),
        bsa_m2,
    )
