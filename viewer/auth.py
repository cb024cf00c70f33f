"""Login, sessions, roles and CSRF: all but login, health, static files and the icon need a user.

The session cookie (Flask's, signed; HttpOnly, SameSite=Lax; Secure under
TLS) holds a random session id and a CSRF token. The session itself lives in
the index (`Accounts.open_session`, only a hash of the id), checked on every
request: it ends at logout, when the password changes or the account is
disabled, after inactivity and at a maximum age, on every node process; a
copied cookie then opens nothing. Every state-changing request must carry the
CSRF token (form field or X-CSRF-Token). Roles come from `permissions.RULES`, checked here.
Failed logins are counted from the audit trail itself (per user name and per
address over 15 minutes), so the limit holds across node processes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
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

from dicomnode.config import Config
from storage.accounts import Accounts, SessionLimits, User
from storage.audit import MINOR_FAILURE, AuditFilter, AuditTrail
from viewer.i18n import gettext
from viewer.permissions import allowed, is_open

bp = Blueprint("auth", __name__)
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
THROTTLE_WINDOW = timedelta(minutes=15)
BASIC_REMEMBER_SECONDS = 300


@cache
def _dummy_hash() -> str:
    """Checked for unknown users too, so timing does not tell them apart."""
    return generate_password_hash(secrets.token_hex(16))


def accounts() -> Accounts:
    return current_app.extensions["archive"].index.accounts


def trail() -> AuditTrail:
    return current_app.extensions["archive"].index.audit


def audit(kind: str, user: str, **fields: Any) -> None:
    """An audit record of this request: who, from which address."""
    role = fields.pop("role", getattr(g.get("user"), "role", ""))
    trail().record(kind, user=user, role=role, source=request.remote_addr or "", **fields)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _check_password(username: str, password: str) -> User | None:
    user = accounts().get(username)
    return user if _password_matches(user, password) else None


def _password_matches(user: User | None, password: str) -> bool:
    """Whether ``password`` opens ``user``'s account (and it is enabled)."""
    valid = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    return user is not None and valid and not user.disabled


def _throttled(username: str) -> bool:
    """Too many failed logins lately for this user name or from this address."""
    limit = current_app.config["NODE_CONFIG"].login_attempts
    since = (datetime.now(UTC) - THROTTLE_WINDOW).strftime("%Y-%m-%dT%H:%M:%S")
    failures = AuditFilter(event="login", failures_only=True, since=since)
    by_user = trail().count(replace(failures, user=username))
    by_address = trail().count(replace(failures, source=request.remote_addr or ""))
    return by_user >= limit or by_address >= limit


def _basic_check(username: str, password: str) -> User | None:
    """`_check_password`, remembered for a while: a DICOMweb client sends
    its password with every request, and a deliberately slow hash per
    request would cost ~90 ms each. Only a keyed digest of (user, password,
    stored hash) is kept, in memory, so a password change or a new hash
    forgets it at once; a disabled account is refused from its fresh row."""
    user = accounts().get(username)
    if user is None or user.disabled:
        _password_matches(user, password)  # the same time as a real check
        return None
    token = f"{username}\0{password}\0{user.password_hash}".encode()
    secret = current_app.secret_key
    secret = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
    key = hmac.new(secret, token, hashlib.sha256).digest()
    verified: dict[bytes, float] = current_app.extensions.setdefault("basic_verified", {})
    if verified.get(key, 0.0) > time.monotonic():
        return user
    if not _password_matches(user, password):
        return None
    if len(verified) > 1000:
        verified.clear()
    verified[key] = time.monotonic() + BASIC_REMEMBER_SECONDS
    return user


def _basic_user() -> Any:
    """HTTP Basic on DICOMweb, for clients without a browser session."""
    given = request.authorization if request.path.startswith("/dicom-web/") else None
    if given is None or given.type != "basic":
        return None
    username = (given.username or "")[:64]
    user = None if _throttled(username) else _basic_check(username, given.password or "")
    if user is None:
        audit("login", username, outcome=MINOR_FAILURE, detail="DICOMweb basic authentication")
        abort(
            Response(
                "wrong user name or password",
                401,
                {"WWW-Authenticate": 'Basic realm="CHD node DICOMweb"'},
            )
        )
    return user


def session_limits(config: Config) -> SessionLimits:
    """The configured idle and maximum session lifetimes, in seconds."""
    return SessionLimits(config.session_idle_minutes * 60, config.session_max_hours * 3600)


def _limits() -> SessionLimits:
    return session_limits(current_app.config["NODE_CONFIG"])


def _session_user() -> User | None:
    """The enabled user whose live server-side session the cookie names."""
    token = session.get("sid")
    user = accounts().session_account(token, _limits()) if isinstance(token, str) else None
    return None if user is None or user.disabled else user


@bp.before_app_request
def require_login_and_csrf() -> Any:
    if (user := _basic_user()) is not None:
        g.user = user  # no cookie involved: nothing for CSRF to forge
    else:
        if request.method in _UNSAFE:
            sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
            if not sent or not secrets.compare_digest(sent, session.get("csrf", "")):
                abort(400, description="missing or wrong CSRF token")
        if is_open(request.endpoint):
            return None
        user = _session_user()
        if user is None:
            session.pop("sid", None)  # the CSRF token stays: a login form uses it
            if request.path.startswith(("/api/", "/dicom-web/")):
                abort(401, description="log in first")
            return redirect(url_for("auth.login", next=request.path))
        g.user = user
    if request.url_rule is None:
        # No such page (a browser's guess such as /apple-touch-icon.png, a
        # mistyped URL): the routing error answers 404 or 405. Nothing was
        # refused, so nothing goes to the audit trail as an access failure.
        return None
    if not allowed(request.endpoint, g.user.role):
        audit("access-denied", g.user.username, obj=request.endpoint or "", outcome=MINOR_FAILURE)
        abort(403, description=f"the role {g.user.role} may not do this")
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        username = request.form.get("username", "")[:64]
        if _throttled(username):
            audit("login", username, role="", outcome=MINOR_FAILURE, detail="throttled")
            error = gettext("Too many failed logins. Try again in 15 minutes.")
            return render_template("login.html", error=error), 429
        user = _check_password(username, request.form.get("password", ""))
        if user is not None:
            if isinstance(earlier := session.get("sid"), str):
                accounts().end_session(earlier)
            session.clear()  # a new id and CSRF token: none planted before login survives
            session.permanent = True  # the cookie expires with session_max_hours
            session["sid"] = accounts().open_session(user.username, _limits())
            csrf_token()
            audit("login", user.username, role=user.role)
            target = request.args.get("next", "")
            return redirect(
                target
                if target.startswith("/") and not target.startswith("//")
                else url_for("studies.index")
            )
        audit("login", username, role="", outcome=MINOR_FAILURE, detail="wrong password")
        error = gettext("Wrong user name or password.")
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> Any:
    audit("logout", g.user.username)
    if isinstance(token := session.get("sid"), str):
        accounts().end_session(token)
    session.clear()
    return redirect(url_for("auth.login"))
