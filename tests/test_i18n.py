"""Every string of the interface is translated; languages switch per user.

The catalogue tests fail while a string has no Russian or Chinese entry: the
templates' ``_()``, the scripts' ``t()``, what the server sends for the page
to translate (worksheet meanings, sizing rules and warnings, scale sources,
error messages, quarantine reasons, audit events). Helpers working in
parallel put their new strings in ``.i18n/<area>.json``; the catalogues are
complete again once those are merged (see docs/architecture.md,
"Languages as data").
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom.config
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydicom.dataset import Dataset

from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops.samples import PATIENTS, ultrasound_region, xa_instance
from storage.accounts import ROLES
from tests.conftest import incoming
from tests.test_viewer import client, log_in  # noqa: F401  (fixture and helper)
from viewer import i18n, presentation
from viewer.planning import calibration, sizing, worksheet

ROOT = Path(__file__).resolve().parent.parent
VIEWER = ROOT / "viewer"
LANGUAGES = ("ru", "zh")
SAMPLE = "7"  # what an f-string's expression becomes in a sample message
_PLACEHOLDER = re.compile(r"\{\w+\}")
CITATION = re.compile(r"et al\.|\b(19|20)\d\d;\d|NCT\d")  # authors, journal volume, trial


def catalogue(language: str) -> dict[str, str]:
    return json.loads((VIEWER / "translations" / f"{language}.json").read_text("utf-8"))


def _walk(value: Any, keys: set[str]) -> Iterator[str]:
    """Strings under ``keys`` anywhere in a JSON-like value."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in keys and isinstance(item, str):
                yield item
            yield from _walk(item, keys)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item, keys)


def worksheet_strings() -> set[str]:
    """Field meanings, rim names and choice labels the page draws its forms from."""
    forms = worksheet.as_json()
    strings = set(forms) | set(_walk(forms, {"meaning", "name", "label"}))
    for choices in _walk_choices(forms):
        strings |= {label for _, label in choices}
    return strings


def _walk_choices(value: Any) -> Iterator[list]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "choices" and isinstance(item, list | tuple):
                yield [
                    (c.get("value"), c.get("label") or c.get("meaning") or "")
                    if isinstance(c, dict)
                    else c
                    if isinstance(c, list | tuple)
                    else ("", c)
                    for c in item
                ]
            else:
                yield from _walk_choices(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk_choices(item)


def _sources(source: str) -> set[str]:
    """A rule's source as the page translates it, unless it is citations
    alone (authors, a journal or a trial stay as published)."""
    parts = [p.strip() for p in source.split("; ")]
    return set() if all(CITATION.search(p) for p in parts) else {source}


def proposals() -> Iterator[Any]:
    """What the sizing aid proposes over a grid of worksheet values, rims,
    Krichenko types and weights: every rule, basis, warning and note it has."""
    for defect, form in worksheet.as_json().items():
        codes = [f["code"] for f in form["fields"] if f.get("kind", "mm") == "mm"]
        rims = [r["name"] for r in form.get("rims", [])]
        types = [None, *worksheet.KRICHENKO_TYPES] if defect == "PDA" else [None]
        for mm, rim, kind, kg in itertools.product(
            (None, 1.5, 4.0, 9.0, 16.0, 30.0, 60.0), (None, 0.0, 3.0, 7.0), types, (None, 3.0, 20.0)
        ):
            values = {} if mm is None else dict.fromkeys(codes, mm)
            if mm is not None and "ASD-STRETCHED" in values:
                values["ASD-STRETCHED"] = mm + 1
            if mm is not None and "ASD-SEPTAL-LENGTH" in values:
                values["ASD-SEPTAL-LENGTH"] = 40.0
            rims_mm = {} if rim is None else dict.fromkeys(rims, rim)
            try:
                proposal = sizing.propose(defect, values, rims_mm, kind, weight_kg=kg)
            except ValueError:
                continue
            if proposal is not None:
                yield proposal


def sizing_strings() -> set[str]:
    strings: set[str] = set()
    for proposal in proposals():
        for rule in [proposal.rule, *proposal.rules]:
            strings.add(rule.says)
            strings |= _sources(rule.source)
        for message in [proposal.basis, *proposal.warnings, *getattr(proposal, "notes", [])]:
            strings.add(message.text)
    return strings


def interface_strings() -> set[str]:
    strings: set[str] = set()
    for template in (VIEWER / "templates").glob("*.html"):
        text = template.read_text("utf-8")
        for double, single in re.findall(r"""\b_\(\s*"([^"]+)"|\b_\(\s*'([^']+)'""", text):
            strings.add(double or single)
    for script in (VIEWER / "static").glob("*.js"):
        text = script.read_text("utf-8")
        for double, single in re.findall(r"""\bt\(\s*"([^"]+)"|\bt\(\s*'([^']+)'""", text):
            strings.add(double or single)
    strings |= set(ROLES) | worksheet_strings()
    strings |= {"length", "angle", "ellipse", "Wrong user name or password."}
    strings |= {"pending", "done", "running", "failed", "cancelled", "expired"}  # job states
    strings |= set(presentation.AUDIT_EVENTS.values()) | set(presentation.OUTCOMES.values())
    strings |= set(presentation.SEXES.values()) | {"mm", "mm²", "px", "px²", "kg", "fps"}
    strings |= python_gettext_strings()
    return strings


def python_gettext_strings() -> set[str]:
    """Literal texts the server translates itself (``_()`` / ``gettext()``)."""
    strings = set()
    for path in VIEWER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("_", "gettext")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                strings.add(node.args[0].value)
    return strings


def _sample(node: ast.expr) -> str | None:
    """A message as the user would read it: literal text, each {expression}
    of an f-string replaced by a sample value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else SAMPLE for part in node.values
        )
    return None


def server_messages() -> dict[str, str]:
    """Error messages the viewer answers with (sample -> where): abort
    descriptions, ``refuse`` texts, and the ValueErrors the planning code
    turns into 400 answers. DICOMweb's answers are for programs, not people."""
    found = {}
    for path in VIEWER.rglob("*.py"):
        if "dicomweb" in path.parts:
            continue
        planning = path.parent.name == "planning"
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            texts: list[ast.expr] = []
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name == "abort":
                    texts += [k.value for k in node.keywords if k.arg == "description"]
                elif name == "refuse" and len(node.args) > 1:
                    texts.append(node.args[1])
            elif planning and isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                texts += node.exc.args[:1]
            for text in texts:
                sample = _sample(text)
                if sample and re.search(r"[A-Za-z]{2}", _PLACEHOLDER.sub("", sample)):
                    found[sample] = f"{path.relative_to(ROOT)}:{text.lineno}"
    return found


def calibration_texts() -> set[str]:
    """Every scale source, and every reason a value stays in pixels, that the
    calibration code gives, found by measuring on made-up headers."""
    settings = pydicom.config.settings
    mode = settings.writing_validation_mode
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        cases = []
        for units, delta in ((3, 0.05), (4, 0.05), (3, 0.0)):
            us = Dataset()
            us.Modality = "US"
            region = ultrasound_region(20, 40, 619, 459)
            region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = units
            region.PhysicalDeltaX = region.PhysicalDeltaY = delta
            us.SequenceOfUltrasoundRegions = [region, ultrasound_region(620, 0, 639, 479)]
            cases += [(us, (100, 100), (200, 100)), (us, (100, 100), (630, 100))]
            cases += [(us, (1, 1), (5, 1))]
        for extra in (
            {"PixelSpacing": [0.2, 0.2]},
            {"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.2},
            {
                "ImagerPixelSpacing": [0.2, 0.2],
                "DistanceSourceToDetector": 1000,
                "DistanceSourceToPatient": 800,
            },
            {"ImagerPixelSpacing": [0.2, 0.2]},
            {},
        ):
            xa = Dataset()
            xa.Modality = "XA"
            for keyword, value in extra.items():
                setattr(xa, keyword, value)
            cases.append((xa, (10, 10), (50, 10)))
    finally:
        settings.writing_validation_mode = mode
    texts = {calibration.length(ds, p1, p2).source for ds, p1, p2 in cases}
    if hasattr(calibration, "parse_user"):  # the user's calibrations, by label
        for known in ({"french": 6}, {"mm": 12.5}):
            scope = {"kind": "frame", "uid": "1.2.3", "frame": 0}
            given = {"id": 1, "points": [[0, 0], [30, 0]], "scope": scope, **known}
            texts.add(calibration.parse_user(given).label)
    return texts


def quarantine_reasons() -> set[str]:
    """What the quarantine page shows as reasons, as the code writes them."""
    from dicomnode.deid.pipeline import document_reason
    from dicomnode.deid.pixels import keep_mask

    us = xa_instance(PATIENTS[0], frames=1, rows=16, cols=16)
    us.Modality = "US"
    xa = xa_instance(PATIENTS[0], frames=1, rows=16, cols=16)
    document = Dataset()
    document.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    document.MIMETypeOfEncapsulatedDocument = "application/pdf"
    reasons = {keep_mask(us, ()), keep_mask(xa, ()), document_reason(document)}
    reasons |= {
        "pixels not decodable (ValueError)",
        "pixels could not be read for verification (ValueError)",
        "OCR found identity text (date, name) in frame 2",
        "OCR found identity text (name) in frame 1, and text inside an area the node blanked",
        "OCR found text inside an area the node blanked (frame 3)",
    }
    assert all(isinstance(r, str) for r in reasons), reasons
    return reasons


@pytest.fixture(scope="module")
def app() -> Flask:
    app = Flask(__name__)
    app.secret_key = b"k" * 32
    i18n.install(app)
    return app


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_interface_string_is_translated(language: str) -> None:
    strings, translated = interface_strings(), catalogue(language)
    assert len(strings) > 100
    missing = sorted(s for s in strings if not translated.get(s, "").strip())
    assert missing == [], f"untranslated in {language}: {missing}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_sizing_rule_and_warning_is_translated(language: str) -> None:
    translated = catalogue(language)
    missing = sorted(s for s in sizing_strings() if not translated.get(s, "").strip())
    assert missing == [], f"untranslated in {language}: {missing}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_placeholders_match_and_nothing_is_left_english(language: str) -> None:
    for english, text in catalogue(language).items():
        placeholders = set(re.findall(r"\{\w+\}", english))
        assert placeholders == set(re.findall(r"\{\w+\}", text)), (language, english)
        if CITATION.search(english):
            continue  # a citation stays as published
        words = re.sub(r"\{\w+\}", "", english)
        if language == "zh" and re.search(r"[a-z]{4}", words):
            # Latin left in a Chinese entry is a name, a code or an untranslated word.
            assert re.search(r"[\u4e00-\u9fff]", text), english
        if language == "ru" and re.search(r"[a-z]{4}", words):
            assert re.search(r"[а-яё]", text.lower()), english


@pytest.mark.parametrize("language", LANGUAGES)
def test_server_messages_reach_the_user_translated(app: Flask, language: str) -> None:
    texts = {
        **server_messages(),
        **dict.fromkeys(calibration_texts(), "viewer/planning/calibration.py"),
        **dict.fromkeys(quarantine_reasons(), "dicomnode/deid"),
    }
    with app.test_request_context(headers={"Accept-Language": language}):
        # A template ("{what}: a number", sent with its values) is an entry
        # of its own; a finished sentence is translated as the page reads it.
        missing = sorted(
            f"{where}: {text}"
            for text, where in texts.items()
            if not catalogue(language).get(text) and i18n.translate(text) == text
        )
    assert missing == [], f"untranslated in {language}:\n" + "\n".join(missing)


def test_medical_terms_keep_catheter_and_duct_apart() -> None:
    """A catheter is not the arterial duct: on the PDA form the two must not
    share a word (Chinese 导管 alone is a catheter, 动脉导管 the ductus)."""
    zh, ru = catalogue("zh"), catalogue("ru")
    assert zh["Catheter"] == "导管" and "катетер" in ru["Catheter"].lower()
    duct_terms = [m for m in worksheet_strings() if re.search(r"\b[Dd]uct", m)]
    assert duct_terms, "the PDA form names the duct"
    for english in duct_terms:
        assert "动脉导管" in zh[english] or "导管" not in zh[english], (english, zh[english])
        assert "катетер" not in ru[english].lower(), (english, ru[english])
        assert "проток" in ru[english].lower(), (english, ru[english])


def test_russian_numbers_use_a_decimal_comma_everywhere() -> None:
    """No Russian entry writes a decimal point inside a number."""
    for english, text in catalogue("ru").items():
        assert not re.search(r"\d\.\d", text), (english, text)


def test_templates_hold_no_bare_text() -> None:
    for template in (VIEWER / "templates").glob("*.html"):
        text = template.read_text("utf-8")
        text = re.sub(r"<script.*?</script>|<style.*?</style>", "", text, flags=re.S)
        text = re.sub(r"\{% block body_attrs %\}.*?\{% endblock %\}", "", text, flags=re.S)
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "", text, flags=re.S)
        text = re.sub(r"<[^>]+>|&\w+;", " ", text)
        words = [w for w in re.findall(r"[^\W\d_]{2,}", text) if w not in {"F"}]
        assert words == [], f"{template.name}: untranslated text {words[:5]}"


@pytest.mark.slow
def test_language_switches_per_user(client: FlaskClient, ingestor: Ingestor) -> None:  # noqa: F811
    assert (
        ingestor.ingest(incoming(xa_instance(PATIENTS[0], frames=2, rows=32, cols=32))).status == 0
    )
    log_in(client)
    assert "Pseudonym" in client.get("/").get_data(as_text=True)
    assert client.post("/language", data={"language": "ru"}).status_code == 400  # CSRF
    client.post("/language", data={"language": "ru", "csrf_token": "token"})
    page = client.get("/").get_data(as_text=True)
    assert "Псевдоним" in page and "14,5" in page and 'lang="ru"' in page
    assert client.application.extensions["archive"].index.accounts.get("amina").language == "ru"
    client.post("/language", data={"language": "zh", "csrf_token": "token"})
    assert "化名" in client.get("/").get_data(as_text=True)
    assert (
        client.post("/language", data={"language": "xx", "csrf_token": "token"}).status_code == 400
    )


def test_error_messages_come_in_the_users_language(client: FlaskClient) -> None:  # noqa: F811
    log_in(client)
    client.post("/language", data={"language": "ru", "csrf_token": "token"})
    answer = client.get("/studies/1.2.3")
    assert answer.status_code == 404
    assert answer.get_json()["message"] == "нет такого исследования"
    answer = client.post("/language", data={"language": "xx", "csrf_token": "token"})
    assert answer.get_json()["message"] == "неизвестный язык"


def test_patient_values_on_the_study_list_read_as_unknown(
    client: FlaskClient,  # noqa: F811
    ingestor: Ingestor,
) -> None:
    """Placeholders a device writes are unknown on the page, never data."""
    ds = xa_instance(PATIENTS[1], frames=2, rows=32, cols=32)
    ds.PatientWeight, ds.PatientAge = "0", "122Y"
    assert ingestor.ingest(incoming(ds)).status == 0
    log_in(client)
    client.post("/language", data={"language": "ru", "csrf_token": "token"})
    page = client.get("/").get_data(as_text=True)
    # What the page shows, not the catalogue it carries for its scripts.
    page = re.sub(r'<script type="application/json".*?</script>', "", page, flags=re.S)
    page = re.sub(r"[\d.]{12,}", "", page)  # UIDs and keyed pseudonyms may hold "122"
    assert "122" not in page and "0,0" not in page and "0.0" not in page
    assert "жен." in page  # PATIENTS[1] is a girl, in words
