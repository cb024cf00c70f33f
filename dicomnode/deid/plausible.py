"""Where a patient value stops being data and is a device's placeholder.

Devices write placeholders where they know nothing (birth date 1900-01-01 or
0000-00-00, weight 0) or a value in the wrong unit (grams, centimetres).
Kept as data, a placeholder becomes a 124-year-old (090Y after the cap) or a
0 kg child in the archive, the plan SRs and research exports, and a device
could be sized from it. One set of bounds, read by the de-identification
(which empties such values) and by the viewer (which shows them as unknown).
"""

from __future__ import annotations

import math
from datetime import date

FIRST_YEAR = 1901  # before it, a birth or study date is a placeholder
MAX_AGE_YEARS = 89  # shown ages: 090Y is the safe-harbour cap, not an age
LIFESPAN_YEARS = 120  # a sent age beyond it was computed from a placeholder
WEIGHT_KG = (0.2, 300.0)  # an extremely premature baby .. a heavy adult
HEIGHT_M = (0.2, 2.5)


def real_date(day: date) -> bool:
    """Whether a birth or study date can be a real one (not 1900-01-01)."""
    return day.year >= FIRST_YEAR


def in_bounds(value: object, bounds: tuple[float, float]) -> bool:
    """Whether ``value`` reads as a finite number within ``bounds``."""
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and bounds[0] <= number <= bounds[1]
