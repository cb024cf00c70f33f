"""The consultation report laid out as a PDF, in the hospital's language.

The same content renders the centre's copy (the child named by pseudonym)
and, at the moment of sending, the hospital's copy (named as the hospital
knows the child): the layout, the fonts and the document's dates are the
same, so the two differ only in who is named. Text is real text (fonts
embedded, subset), so the hospital's system can search and read it. The
page itself (fpdf2) is `layout`, imported only when a report is drawn: every
node process and command imports this module, few draw a report.
"""

from __future__ import annotations

import io
import json
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from dicomnode.consult.keyimages import KeyImage
from dicomnode.consult.words import STATUSES, say

# Debian's fonts-dejavu-core and fonts-wqy-zenhei (`make install`): DejaVu
# for Latin and Cyrillic, WenQuanYi Zen Hei for Chinese; each falls back to
# the other for a character it lacks (a Cyrillic name in a Chinese report).
FONT_DIRS = (Path("/usr/share/fonts/truetype"),)
LATIN = ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf")
CHINESE = "wqy/wqy-zenhei.ttc"
MOST_LINES = 400  # of any one text: a report is a few pages
# SR texts that say how the report was made, not what it found: left out.
BOOKKEEPING = frozenset(
    {"Tracking Identifier", "Algorithm Name", "Algorithm Version", "Algorithm Parameters"}
)
# fpdf2 names the characters a font lacks, and fontTools what it subsets:
# in a report those are the child's name, which no log may carry.
for _talkative in ("fpdf", "fontTools"):
    logging.getLogger(_talkative).setLevel(logging.CRITICAL + 1)


class ReportFontError(RuntimeError):
    """A font the report needs is not installed."""


@dataclass(frozen=True)
class Patient:
    """Who the report names: the hospital's identity, or the pseudonym alone."""

    patient_id: str
    name: str = ""
    birth_date: str = ""
    accession: str = ""


def font_path(relative: str) -> str:
    for folder in FONT_DIRS:
        if (folder / relative).is_file():
            return str(folder / relative)
    raise ReportFontError(f"font {relative} is not installed (make install adds it)")


def _day(value: str) -> str:
    """A DICOM DA or an ISO time as YYYY-MM-DD; anything else as given."""
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value[:10]


@cache
def _cmap(relative: str) -> frozenset[int]:
    """The characters one font of the report can draw."""
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    with TTFont(font_path(relative), fontNumber=0, lazy=True) as font:
        return frozenset(font.getBestCmap())


def _needs_chinese(text: str, language: str) -> bool:
    """Whether the Chinese font is loaded: a Chinese report, or text with a
    character DejaVu lacks and it has (parsing it takes a second, DejaVu a
    few milliseconds, so a Russian report of Cyrillic text does without)."""
    if language == "zh":
        return True
    latin = _cmap(LATIN[0])
    return any(ord(ch) not in latin for ch in text if not ch.isspace())


def check_drawable(patient: Patient, chinese: bool) -> None:
    """ReportFontError when a character of the patient's name or numbers is
    in no font the report loads (drawn, it would silently vanish: 王 𠀾明
    read as 王 明), or is written right to left (drawn unshaped and
    reversed): a name must be the name."""
    text = "".join((patient.name, patient.patient_id, patient.accession, patient.birth_date))
    drawable = _cmap(LATIN[0]) | (_cmap(CHINESE) if chinese else frozenset())
    if any(ord(ch) not in drawable for ch in text if not ch.isspace()):
        raise ReportFontError("a character of the patient's name is in no font of the report")
    if any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in text):
        raise ReportFontError("a character of the patient's name is written right to left")


def render(
    content: dict[str, Any],
    patient: Patient,
    hospital_copy: bool,
    images: Sequence[KeyImage] = (),
) -> bytes:
    """The report of ``content`` (`making.content_of`) naming ``patient``,
    with its key ``images``; ``hospital_copy``: the one re-identified for
    the referring hospital."""
    language = str(content.get("language") or "en")
    chinese = _needs_chinese(json.dumps([content, asdict(patient)], ensure_ascii=False), language)
    check_drawable(patient, chinese)
    from dicomnode.consult.layout import Page  # fpdf2: imported when a report is drawn

    pdf = Page(language, chinese)
    at = datetime.fromisoformat(str(content["at"])).astimezone(UTC)
    pdf.set_creation_date(at)  # the decision's time: both copies alike
    pdf.set_title(say(language, "title"))
    pdf.set_producer("dicomnode")
    pdf.add_page()
    pdf.text_line(say(language, "title"), size=16, bold=True, gap=2)
    pdf.text_line(say(language, "from", ae=content.get("ae", "")), size=9, gap=4)
    pdf.field(say(language, "patient"), patient.name)
    pdf.field(say(language, "patient_id"), patient.patient_id)
    pdf.field(say(language, "birth_date"), _day(patient.birth_date))
    pdf.field(say(language, "accession"), patient.accession)
    pdf.field(say(language, "hospital"), str(content.get("issuer", "")))
    pdf.field(say(language, "case"), str(content.get("ref", "")))
    pdf.heading(say(language, "studies"))
    for study in content.get("studies") or []:
        # The centre's dates are shifted: the hospital's copy prints none.
        day = "" if hospital_copy else _day(str(study.get("date") or ""))
        parts = [day, study.get("modalities"), study.get("description")]
        pdf.text_line(" · ".join(str(p) for p in parts if p))
    pdf.heading(say(language, "decision"))
    status = str(content.get("status", ""))
    pdf.text_line(
        say(language, status) if status in STATUSES else status,
        size=12,
        bold=True,
    )
    for name, value in (content.get("detail") or {}).items():
        pdf.field(say(language, name) if name in _DETAILS else name, str(value))
    pdf.text_line(
        say(language, "decided", user=content.get("user", ""), day=_day(str(content["at"])))
    )
    pdf.heading(say(language, "plans"))
    plans = content.get("plans") or []
    if not plans:
        pdf.text_line(say(language, "no_plans"))
    for plan in plans:
        pdf.text_line(
            say(
                language,
                "plan",
                defect=plan.get("defect", ""),
                plan=plan.get("plan", ""),
                version=plan.get("version", ""),
                user=plan.get("user", ""),
                day=_day(str(plan.get("day", ""))),
            ),
            bold=True,
        )
        for meaning, value, unit in plan.get("values") or []:
            pdf.text_line(f"{meaning}: {value} {unit}".rstrip(), size=9, gap=0, indent=6)
        for meaning, text in plan.get("texts") or []:
            if meaning not in BOOKKEEPING:
                pdf.text_line(f"{meaning}: {text}", size=9, gap=0.5, indent=6)
        pdf.ln(2)
    for n, image in enumerate(images):
        if pdf.get_y() > pdf.h - 110:  # the picture and its caption (and heading) on one page
            pdf.add_page()
        if n == 0:
            pdf.heading(say(language, "key_images"))
        pdf.image(io.BytesIO(image.png), w=110)
        pdf.text_line(f"{image.values} ({say(language, 'frame', n=image.frame)})", size=8, gap=3)
    pdf.ln(4)
    pdf.text_line(say(language, "support"), size=8)
    copy = (
        say(language, "reidentified", hospital=content.get("issuer", ""))
        if hospital_copy
        else say(language, "pseudonymous")
    )
    pdf.text_line(copy, size=8)
    return bytes(pdf.output())


_DETAILS = ("missing", "device", "date", "reason", "note")
