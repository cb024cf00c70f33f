"""The user interface in English, Russian and Chinese.

Catalogues are JSON files in `viewer/translations/` (English text -> text),
one per language, read once; templates call ``_()`` and the scripts ``t()``
with the English text. The language is the user's choice (kept in the
session and the account), else the browser's, else English. Numbers and
dates are formatted by Babel for that locale.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import cache
from importlib.resources import files
from typing import Any

from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from flask import Blueprint, abort, g, redirect, request, session

LANGUAGES = {"en": "English", "ru": "Русский", "zh": "中文"}
bp = Blueprint("i18n", __name__)


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


def js_catalogue() -> dict[str, str]:
    """What the scripts need: every entry (a few kB); English needs none."""
    return catalogue(language())


def number(value: Any, digits: int = 1) -> str:
    if value in (None, ""):
        return ""
    try:
        return format_decimal(float(value), format=f"#,##0.{'0' * digits}", locale=language())
    except (TypeError, ValueError):
        return str(value)


def dicom_date(value: str | None) -> str:
    if not value or len(value) != 8:
        return value or ""
    return format_date(date(int(value[:4]), int(value[4:6]), int(value[6:])), locale=language())


def timestamp(value: datetime | None) -> str:
    return format_datetime(value, "short", locale=language()) if value else ""


@bp.post("/language")
def choose() -> Any:
    chosen = request.form.get("language", "")
    if chosen not in LANGUAGES:
        abort(400, description="unknown language")
    session["lang"] = chosen
    if g.get("user") is not None:
        from viewer.auth import accounts

        accounts().update(g.user.username, language=chosen)
    target = request.referrer or "/"
    return redirect(
        target if target.startswith(request.host_url) or target.startswith("/") else "/"
    )


def install(app: Any) -> None:
    app.register_blueprint(bp)
    app.jinja_env.globals.update(
        _=gettext,
        language=language,
        js_catalogue=js_catalogue,
        number=number,
        dicom_date=dicom_date,
        timestamp=timestamp,
        languages=LANGUAGES,
    )
