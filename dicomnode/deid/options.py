"""What one sender's data gets, resolved once from the configuration.

The options are `Option` enums parsed once (`parse_options`), never names
tested as text; a `DeidPolicy` joins them with the node's safe private
attributes and the sender's blank rectangles, and the walker and the
pipeline read its answers. This module knows nothing of the configuration
file: `dicomnode.config` builds the policies (`SenderPolicies`, `DeidSetup`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dicomnode.deid.profile import Option, check_options, parse_options

# The node's default options on top of the Basic Profile (what closure
# planning needs: dates, age, weight, readable descriptors): the one place.
DEFAULT_OPTIONS = frozenset(
    {Option.RETAIN_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS}
)
METHOD_TEXT = "CHD node: PS3.15 Basic Profile, keyed pseudonyms"

Rectangle = tuple[int, int, int, int]
# A private attribute known to be safe: (group, private creator, element byte).
SafePrivate = tuple[int, str, int]

__all__ = [
    "DEFAULT_OPTIONS",
    "DeidPolicy",
    "DeidSetup",
    "SenderPolicies",
    "format_options",
    "format_safe_private",
    "parse_options",
    "parse_rectangles",
    "parse_safe_private",
]


def format_options(options: Iterable[Option]) -> str:
    """The options as the configuration spells them, in the standard's order."""
    chosen = set(options)
    return ",".join(o.name for o in Option if o in chosen)


def parse_safe_private(text: str) -> frozenset[SafePrivate]:
    """``"0009:ACME ECHO 1.0:01; 0019:GEMS_ACQU_01:2A"`` -> allow-list entries."""
    entries = set()
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        try:
            group, creator, element = (p.strip() for p in item.split(":"))
            entry = (int(group, 16), creator, int(element, 16))
        except ValueError:
            raise ValueError(f"safe_private entry {item!r} is not GGGG:CREATOR:EE") from None
        if entry[0] % 2 == 0 or not 0 <= entry[2] <= 0xFF or not creator:
            raise ValueError(f"safe_private entry {item!r} is not a private attribute")
        entries.add(entry)
    return frozenset(entries)


def format_safe_private(entries: Iterable[SafePrivate]) -> str:
    return "; ".join(f"{g:04X}:{c}:{e:02X}" for g, c, e in sorted(entries))


def parse_rectangles(value: object) -> tuple[Rectangle, ...]:
    """``[[x0, y0, x1, y1], ...]`` (inclusive) -> rectangles; ValueError says why."""
    shape = "a list of [x0, y0, x1, y1] lists of whole numbers"
    if not isinstance(value, list | tuple):
        raise ValueError(shape)
    rectangles = []
    for box in value:
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise ValueError(shape)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
            raise ValueError(shape)
        x0, y0, x1, y1 = box
        if min(box) < 0 or x0 > x1 or y0 > y1:
            raise ValueError("each is [x0, y0, x1, y1] with 0 <= x0 <= x1, 0 <= y0 <= y1")
        rectangles.append((x0, y0, x1, y1))
    return tuple(rectangles)


@dataclass(frozen=True)
class DeidPolicy:
    """One sender's de-identification: options, safe private attributes,
    rectangles blanked on every frame. Checked when made, so a policy in
    hand is one the node can apply."""

    options: frozenset[Option] = DEFAULT_OPTIONS
    method_text: str = METHOD_TEXT
    # Kept (text cleaned) only under the Retain Safe Private option.
    safe_private: frozenset[SafePrivate] = frozenset()
    blank_rectangles: tuple[Rectangle, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", frozenset(self.options))
        check_options(self.options)

    def __contains__(self, option: Option) -> bool:
        return option in self.options

    @property
    def shifts_dates(self) -> bool:
        """Dates move by the patient's offset (Retain Modified Dates)."""
        return Option.RETAIN_MODIFIED_DATES in self and Option.RETAIN_FULL_DATES not in self

    @property
    def keeps_full_dates(self) -> bool:
        return Option.RETAIN_FULL_DATES in self

    @property
    def keeps_characteristics(self) -> bool:
        return Option.RETAIN_PATIENT_CHARACTERISTICS in self

    @property
    def keeps_institution(self) -> bool:
        return Option.RETAIN_INSTITUTION_IDENTITY in self

    @property
    def keeps_timezone(self) -> bool:
        return Option.RETAIN_TIMEZONE in self

    @property
    def keeps_ages_over_89(self) -> bool:
        return Option.RETAIN_AGES_OVER_89 in self

    @property
    def cleans_descriptors(self) -> bool:
        return Option.CLEAN_DESCRIPTORS in self

    @property
    def kept_private(self) -> frozenset[SafePrivate]:
        """The private attributes kept: the allow-list, under its option only."""
        return self.safe_private if Option.RETAIN_SAFE_PRIVATE in self else frozenset()


@dataclass(frozen=True)
class SenderPolicies:
    """The node's policy and each known sender's own, by AE title."""

    default: DeidPolicy = DeidPolicy()
    senders: tuple[tuple[str, DeidPolicy], ...] = ()

    def of(self, calling_ae: str | None) -> DeidPolicy:
        title = (calling_ae or "").strip()
        return next((p for ae, p in self.senders if ae == title), self.default)


@dataclass(frozen=True)
class DeidSetup:
    """What the de-identification step needs of the node's configuration:
    where its keys are, each sender's policy, the OCR check, the inflation
    limit. Field names match the configuration's (`OcrSettings.of` reads them)."""

    key_dir: Path
    data_dir: Path
    policies: SenderPolicies
    ocr: bool
    ocr_frames: int
    ocr_budget_seconds: float
    ocr_deferred: bool
    max_instance_mb: int
