"""Login, sessions, roles and CSRF: everything but login and health needs a user.

Sessions are Flask's signed cookies (HttpOnly, SameSite=Lax; Secure when the
node is served over TLS) holding only the user name and a CSRF token; every
state-changing request must carry that token (form field or X-CSRF-Token).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import cache, wraps
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash, generate_password_hash

from storage.accounts import Accounts
from viewer.i18n import gettext

bp = Blueprint("auth", __name__)
OPEN_ENDPOINTS = {"auth.login", "health", "static"}
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@cache
def _dummy_hash() -> str:
    """Checked for unknown users too, so timing does not tell them apart."""
    return generate_password_hash(secrets.token_hex(16))


def accounts() -> Accounts:
    return current_app.extensions["archive"].index.accounts


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _basic_user() -> Any:
    """HTTP Basic on DICOMweb, for clients without a browser session."""
    given = request.authorization if request.path.startswith("/dicom-web/") else None
    if given is None or given.type != "basic":
        return None
    user = accounts().get(given.username or "")
    valid = check_password_hash(user.password_hash if user else _dummy_hash(), given.password or "")
    if user is None or not valid or user.disabled:
        abort(
            Response(
                "wrong user name or password",
                401,
                {"WWW-Authenticate": 'Basic realm="CHD node DICOMweb"'},
            )
        )
    return user


@bp.before_app_request
def require_login_and_csrf() -> Any:
    if (user := _basic_user()) is not None:
        g.user = user  # no cookie involved: nothing for CSRF to forge
        return None
    if request.method in _UNSAFE:
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if not sent or not secrets.compare_digest(sent, session.get("csrf", "")):
            abort(400, description="missing or wrong CSRF token")
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    user = accounts().get(session.get("user", "")) if session.get("user") else None
    if user is None or user.disabled:
        session.pop("user", None)
        if request.path.startswith(("/api/", "/dicom-web/")):
            abort(401, description="log in first")
        return redirect(url_for("auth.login", next=request.path))
    g.user = user
    return None


def role_required(*roles: str) -> Callable:
    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if g.user.role not in roles:
                abort(403, description=f"needs the role {' or '.join(roles)}")
            return view(*args, **kwargs)

        return wrapped

    return decorate


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        user = accounts().get(request.form.get("username", ""))
        password = request.form.get("password", "")
        valid = check_password_hash(user.password_hash if user else _dummy_hash(), password)
        if user is not None and valid and not user.disabled:
            session.clear()
            session["user"] = user.username
            csrf_token()
            target = request.args.get("next", "")
            return redirect(
                target
                if target.startswith("/") and not target.startswith("//")
                else url_for("studies.index")
            )
        error = gettext("Wrong user name or password.")
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
