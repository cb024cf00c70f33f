"""Every string of the interface is translated; languages switch per user."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dicomnode.ingest import Ingestor
from dicomnode.samples import PATIENTS, xa_instance
from storage.accounts import ROLES
from tests.conftest import incoming
from tests.test_viewer import client, log_in  # noqa: F401  (fixture and helper)
from viewer.planning.routes import DEFECTS

VIEWER = Path(__file__).resolve().parent.parent / "viewer"
LANGUAGES = ("ru", "zh")


def catalogue(language: str) -> dict[str, str]:
    return json.loads((VIEWER / "translations" / f"{language}.json").read_text("utf-8"))


def interface_strings() -> set[str]:
    strings: set[str] = set()
    for template in (VIEWER / "templates").glob("*.html"):
        text = template.read_text("utf-8")
        for double, single in re.findall(r"""_\(\s*"([^"]+)"|_\(\s*'([^']+)'""", text):
            strings.add(double or single)
    scripts = "".join(p.read_text("utf-8") for p in (VIEWER / "static").glob("*.js"))
    strings |= set(re.findall(r'\bt\("([^"]+)"', scripts))
    # Values the templates and scripts translate through a variable.
    planning = (VIEWER / "static" / "planning.js").read_text("utf-8")
    strings |= set(re.findall(r'\["[A-Z0-9-]+", "([^"]+)"\]', planning))  # worksheet slots
    strings |= set(re.findall(r'"([^"]+)"', re.search(r"const RIMS = \[(.*?)\];", planning)[1]))
    strings |= set(ROLES) | DEFECTS | {"length", "angle", "ellipse", "Wrong user name or password."}
    strings |= {"pending", "done"}  # forwarding states
    return strings


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_interface_string_is_translated(language: str) -> None:
    strings, translated = interface_strings(), catalogue(language)
    assert len(strings) > 100
    missing = sorted(s for s in strings if not translated.get(s, "").strip())
    assert missing == [], f"untranslated in {language}: {missing}"
    for english, text in translated.items():
        placeholders = set(re.findall(r"\{\w+\}", english))
        assert placeholders == set(re.findall(r"\{\w+\}", text)), (language, english)


def test_templates_hold_no_bare_text() -> None:
    for template in (VIEWER / "templates").glob("*.html"):
        text = template.read_text("utf-8")
        text = re.sub(r"<script.*?</script>|<style.*?</style>", "", text, flags=re.S)
        text = re.sub(r"\{% block body_attrs %\}.*?\{% endblock %\}", "", text, flags=re.S)
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "", text, flags=re.S)
        text = re.sub(r"<[^>]+>|&\w+;", " ", text)
        words = [w for w in re.findall(r"[^\W\d_]{2,}", text) if w not in {"F"}]
        assert words == [], f"{template.name}: untranslated text {words[:5]}"


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
