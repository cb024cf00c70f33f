"""The user interface in English, Russian and Chinese.

Catalogues are JSON files in `viewer/translations/` (English text -> text),
one per language, read once; templates call ``_()`` and the scripts ``t()``
with the English text. The language is the user's choice (kept in the
session and the account), else the browser's, else English. Sentences the
server composes in English (a scale source with its number, an error, a
quarantine reason) are translated at display time by the catalogue entry
whose {placeholders} match them (`translate`), numbers in them rewritten
for the language; `viewer.presentation` formats values, dates and times.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from importlib.resources import files
from typing import Any

from babel.numbers import format_decimal
from flask import Blueprint, abort, g, redirect, request, session

LANGUAGES = {"en": "English", "ru": "Русский", "zh": "中文"}
bp = Blueprint("i18n", __name__)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_NUMBER = re.compile(r"-?\d+\.\d+")
MAX_SENTENCE = 400  # patterns with several {placeholders} cost more on longer texts


@cache
def catalogue(language: str) -> dict[str, str]:
    if language == "en":
        return {}
    text = files("viewer").joinpath("translations", f"{language}.json").read_text("utf-8")
    return json.loads(text)


def language() -> str:
    chosen = session.get("lang") or getattr(g.get("user"), "language", None)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or "en"


def gettext(text: str, **values: Any) -> str:
    translated = catalogue(language()).get(text) or text
    return translated.format(**values) if values else translated


def number(value: Any, digits: int = 1) -> str:
    """A number in the page's language (decimal comma in Russian); nothing
    for what is not a finite number."""
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(parsed):
        return ""
    pattern = f"#,##0.{'0' * digits}" if digits else "#,##0"
    return format_decimal(parsed, format=pattern, locale=language())


def js_catalogue() -> dict[str, str]:
    """What the scripts need: every entry (a few kB); English needs none."""
    return catalogue(language())


@cache
def _patterns(language: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Catalogue entries with placeholders as patterns, the most literal
    text first, so "deficient {name} rim" wins over "{rim} rim"."""
    found = []
    for english in catalogue(language):
        parts = _PLACEHOLDER.split(english)
        if len(parts) < 2 or not all(name.isidentifier() for name in parts[1::2]):
            continue
        seen: set[str] = set()
        regex = ""
        for i, part in enumerate(parts):
            if i % 2 == 0:
                regex += re.escape(part)
            else:
                regex += f"(?P={part})" if part in seen else f"(?P<{part}>.+?)"
                seen.add(part)
        literal = sum(len(p) for p in parts[::2])
        found.append((literal, re.compile(regex, re.S), english))
    found.sort(key=lambda item: -item[0])
    return tuple((pattern, english) for _, pattern, english in found)


def _fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def _local_number(text: str) -> str:
    """A decimal written by the server (12.5) in the page's language (12,5)."""
    fraction = text.partition(".")[2]
    pattern = "0." + "0" * len(fraction)
    return format_decimal(float(text), format=pattern, locale=language())


def _value(text: str, depth: int) -> str:
    """A value caught by a pattern: a term of the catalogue, a number, a list
    of terms, a sentence of its own, or as it is (a name, a DICOM value)."""
    if _NUMBER.fullmatch(text):
        return _local_number(text)
    return translate(text, depth + 1)


def translate(text: str | None, depth: int = 0) -> str:
    """An English sentence the server composed (a scale source, an error, a
    quarantine reason), in the user's language: its catalogue entry, else
    the entry whose placeholders match it, else the text unchanged."""
    if not isinstance(text, str):
        return "" if text is None else str(text)
    table = catalogue(language())
    if not text or not table:
        return text
    if exact := table.get(text):
        return exact
    if depth > 2 or len(text) > MAX_SENTENCE:
        return text  # a message is a line: a longer text (quoting input) is not matched
    for pattern, english in _patterns(language()):
        if match := pattern.fullmatch(text):
            values = {k: _value(v, depth) for k, v in match.groupdict().items()}
            return _fill(table[english], values)
    if ", " in text:  # a list of terms ("date, name") or of counts ("2 find, 1 echo")
        return ", ".join(translate(item, depth + 1) for item in text.split(", "))
    return text


def message(given: Any) -> str:
    """A server message for display: English text, or {text, values} with
    numbers formatted for the page's language (decimal comma in Russian)."""
    if isinstance(given, str):
        return translate(given)
    if not isinstance(given, dict) or not isinstance(given.get("text"), str):
        return ""
    given_values = given.get("values")
    values = given_values if isinstance(given_values, dict) else {}
    shown: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            shown[str(name)] = translate(str(value))
        elif isinstance(value, int):
            shown[str(name)] = str(value)
        else:
            shown[str(name)] = format_decimal(value, format="#,##0.0##", locale=language())
    text = given["text"]
    return _fill(catalogue(language()).get(text) or text, shown)


@bp.post("/language")
def choose() -> Any:
    chosen = request.form.get("language", "")
    if chosen not in LANGUAGES:
        abort(400, description="unknown language")
    session["lang"] = chosen
    if g.get("user") is not None:
        from viewer.auth import accounts

        accounts().update(g.user.username, language=chosen)
    from viewer.security import same_origin_path

    target = request.referrer or "/"
    if target.startswith(request.host_url):
        target = "/" + target[len(request.host_url) :]
    return redirect(same_origin_path(target, "/"))


def install(app: Any) -> None:
    from viewer import presentation

    app.register_blueprint(bp)
    app.jinja_env.globals.update(
        _=gettext,
        tr=translate,
        message=message,
        language=language,
        js_catalogue=js_catalogue,
        languages=LANGUAGES,
    )
    presentation.install(app)
