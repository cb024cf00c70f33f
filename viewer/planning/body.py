"""Body surface area, the size device sizing and defect severity in
children are read against.

Haycock's height-weight formula, validated in infants, children and adults
(Haycock GB, Schwartz GJ, Wisotsky DH. Geometric method for measuring body
surface area: a height-weight formula validated in infants, children, and
adults. J Pediatr 1978;93(1):62-66):

    BSA (m²) = 0.024265 × weight (kg)^0.5378 × height (cm)^0.3964

Only from a weight and a height the header gives within the plausible
bounds the de-identification keeps (`dicomnode.deid.plausible`), never
guessed from age: no BSA is better than a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMULA = "Haycock 1978"
# Body-mass index no child (nor adult) has: each value plausible alone, the
# pair is not (250 kg and 0.45 m is a weight in the wrong unit).
BMI = (8.0, 60.0)


@dataclass(frozen=True)
class BodySize:
    weight_kg: float
    height_cm: float
    bsa_m2: float
    formula: str = FORMULA


def haycock_m2(weight_kg: float, height_cm: float) -> float:
    """Body surface area in m² by Haycock's formula."""
    if weight_kg <= 0 or height_cm <= 0:
        raise ValueError("weight and height must be positive")
    return 0.024265 * weight_kg**0.5378 * height_cm**0.3964


def body_size(weight_kg: float | None, height_m: float | None) -> BodySize | None:
    """The child's size when both are known and go together, BSA to two
    decimals; else None."""
    if weight_kg is None or height_m is None:
        return None
    if not BMI[0] <= weight_kg / height_m**2 <= BMI[1]:
        return None  # one of them in another unit (grams, centimetres), or swapped
    height_cm = height_m * 100
    return BodySize(weight_kg, round(height_cm, 1), round(haycock_m2(weight_kg, height_cm), 2))
