"""Login, sessions, roles and CSRF: all but login, health, static files and the icon need a user.

The session cookie (Flask's, signed; HttpOnly, SameSite=Lax; Secure under
TLS) holds a random session id and a CSRF token. The session itself lives in
the index (`Accounts.open_session`, only a hash of the id), checked on every
request: it ends at logout, when the password changes or the account is
disabled, after inactivity and at a maximum age, on every node process; a
copied cookie then opens nothing. Every state-changing request must carry the
CSRF token (form field or X-CSRF-Token). Roles come from `permissions.RULES`, checked here.

Every password check (login form, DICOMweb HTTP Basic) is first reserved in
the index (`storage.throttle`), per user name and per client address
(`viewer.address`), so parallel guesses cannot outrun the limit on any node
process. Past the free attempts a key waits a growing delay (429 with
Retry-After), never a lock-out: the account's owner gets in after the wait.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from functools import cache
from typing import Any, NoReturn

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash, generate_password_hash

from dicomnode.config import Config
from dicomnode.net.connections import source_key
from storage.accounts import PARTNER, Accounts, SessionLimits, User
from storage.audit import MINOR_FAILURE, SUCCESS, AuditFilter, AuditTrail
from storage.throttle import Backoff, Key, LoginThrottle, retry_after
from viewer import services
from viewer.address import client_address
from viewer.i18n import gettext, translate
from viewer.permissions import allowed, is_open
from viewer.security import same_origin_path

bp = Blueprint("auth", __name__)
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
BASIC_REMEMBER_SECONDS = 300
BASIC_CHALLENGE = 'Basic realm="CHD node DICOMweb", charset="UTF-8"'
MAX_CSRF_TOKEN = 128  # characters; the node's own are 43
# Seconds of the first wait after the free attempts, and of the longest;
# failures further apart than THROTTLE_WINDOW start afresh.
BACKOFF_FIRST = 2.0
BACKOFF_LONGEST = 60.0
THROTTLE_WINDOW = 900.0
clock: Callable[[], float] = time.time  # the throttle's time (tests move it)


@cache
def _dummy_hash() -> str:
    """Checked for unknown users too, so timing does not tell them apart."""
    return generate_password_hash(secrets.token_hex(16))


def accounts() -> Accounts:
    return services.archive().index.accounts


def trail() -> AuditTrail:
    return services.archive().index.audit


def throttle() -> LoginThrottle:
    return services.archive().index.throttle


def audit(kind: str, user: str, **fields: Any) -> None:
    """An audit record of this request: who, from which client address."""
    role = fields.pop("role", getattr(g.get("user"), "role", ""))
    trail().record(kind, user=user, role=role, source=client_address(), **fields)


def csrf_token() -> str:
    if not isinstance(session.get("csrf"), str):
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_valid(sent: object) -> bool:
    """Whether ``sent`` is this session's CSRF token. Any text may arrive
    (non-ASCII, megabytes): compared as UTF-8 bytes, bounded, never raising."""
    expected = session.get("csrf")
    if not isinstance(sent, str) or not sent or len(sent) > MAX_CSRF_TOKEN:
        return False
    if not isinstance(expected, str) or not expected:
        return False
    given = sent.encode("utf-8", "surrogatepass")
    return secrets.compare_digest(given, expected.encode("utf-8", "surrogatepass"))


def _check_password(username: str, password: str) -> User | None:
    user = accounts().get(username)
    return user if _password_matches(user, password) else None


def _password_matches(user: User | None, password: str) -> bool:
    """Whether ``password`` opens ``user``'s account (and it is enabled)."""
    valid = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    return user is not None and valid and not user.disabled


def backoff() -> Backoff:
    """The configured free attempts and the module's delays."""
    free = services.config().login_attempts
    return Backoff(free, BACKOFF_FIRST, BACKOFF_LONGEST, THROTTLE_WINDOW)


def _keys(username: str) -> tuple[Key, Key]:
    """What an attempt counts against: the account and the client's address
    (an IPv6 client by its /64, as the connection caps count it: one host
    has a whole /64 to take fresh addresses from)."""
    return Key("user", username), Key("address", source_key(client_address()))


def _reserve(username: str) -> int:
    """Seconds to wait before a password for ``username`` may be checked
    from here (then nothing was counted), or 0: one attempt reserved."""
    wait = throttle().reserve(_keys(username), backoff(), clock())
    return retry_after(wait) if wait else 0


def _succeeded(username: str) -> None:
    account, address = _keys(username)
    throttle().succeeded(account, [address], backoff())


def _too_many_basic(username: str, seconds: int) -> None:
    """429 for a DICOMweb client: when to try again, never "wrong password"."""
    audit("login", username, role="", outcome=MINOR_FAILURE, detail="throttled")
    text = translate(f"too many failed logins: try again in {seconds} seconds")
    answer = jsonify(error="Too Many Requests", message=text)
    answer.status_code = 429
    answer.headers["Retry-After"] = str(seconds)
    abort(answer)


def _basic_check(username: str, password: str) -> User | None:
    """`_check_password`, remembered for a while: a DICOMweb client sends
    its password with every request, and a deliberately slow hash per
    request would cost ~90 ms each. Only a keyed digest of (user, password,
    stored hash) is kept, in memory, so a password change or a new hash
    forgets it at once; a disabled account is refused from its fresh row.

    While the account or the address must wait, nothing is checked, not
    even against the remembered digest (else a throttled guesser would
    still learn which guess is right: 200 against 429); a check that is not
    remembered is reserved first, like a login."""
    if wait := throttle().waiting(_keys(username), clock()):
        _too_many_basic(username, retry_after(wait))
    user = accounts().get(username)
    verified: dict[bytes, float] = current_app.extensions.setdefault("basic_verified", {})
    key = b""
    if user is not None and not user.disabled:
        token = f"{username}\0{password}\0{user.password_hash}".encode("utf-8", "surrogatepass")
        secret = current_app.secret_key
        secret = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
        key = hmac.new(secret, token, hashlib.sha256).digest()
        if verified.get(key, 0.0) > time.monotonic():
            return user
    if seconds := _reserve(username):
        _too_many_basic(username, seconds)
    if not _password_matches(user, password):  # None or disabled: the same time
        return None
    _succeeded(username)
    if len(verified) > 1000:
        verified.clear()
    verified[key] = time.monotonic() + BASIC_REMEMBER_SECONDS
    return user


def _unauthorized(message: str) -> NoReturn:
    """401 for DICOMweb with the challenge RFC 9110 requires on every 401:
    a client without a browser session is told to use HTTP Basic."""
    answer = jsonify(error="Unauthorized", message=translate(message))
    answer.status_code = 401
    answer.headers["WWW-Authenticate"] = BASIC_CHALLENGE
    abort(answer)


def _basic_user() -> Any:
    """HTTP Basic on DICOMweb, for clients without a browser session."""
    given = request.authorization if request.path.startswith("/dicom-web/") else None
    if given is None or given.type != "basic":
        return None
    username = (given.username or "")[:64]
    user = _basic_check(username, given.password or "")
    if user is None:
        audit("login", username, outcome=MINOR_FAILURE, detail="DICOMweb basic authentication")
        _unauthorized("wrong user name or password")
    return user


def session_limits(config: Config) -> SessionLimits:
    """The configured idle and maximum session lifetimes, in seconds."""
    return SessionLimits(config.session_idle_minutes * 60, config.session_max_hours * 3600)


def _limits() -> SessionLimits:
    return session_limits(services.config())


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
        if request.method in _UNSAFE and request.url_rule is not None:
            # (No route, no handler to forge a request to: routing answers 404/405.)
            sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
            if not _csrf_valid(sent):
                abort(400, description="missing or wrong CSRF token")
        if is_open(request.endpoint):
            return None
        user = _session_user()
        if user is None:
            session.pop("sid", None)  # the CSRF token stays: a login form uses it
            if request.path.startswith("/dicom-web/"):
                _unauthorized("log in first")
            if request.path.startswith("/api/"):
                abort(401, description="log in first")
            back = request.full_path if request.query_string else request.path  # keeps ?query
            return redirect(url_for("auth.login", next=back))
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


def _last_login(username: str) -> str:
    """When the user last logged in (ISO 8601 UTC), or "" for a first login."""
    rows = services.archive().index.audit.rows(AuditFilter(user=username, event="login"), limit=20)
    return next((str(r["at"]) for r in rows if r["outcome"] == SUCCESS), "")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        username = request.form.get("username", "")[:64]
        if seconds := _reserve(username):
            # Told to wait, whether or not the password would have been right:
            # nothing was checked.
            audit("login", username, role="", outcome=MINOR_FAILURE, detail="throttled")
            error = gettext(
                "Too many failed logins. Try again in {seconds} seconds.", seconds=seconds
            )
            page = render_template("login.html", error=error)
            return page, 429, {"Retry-After": str(seconds)}
        user = _check_password(username, request.form.get("password", ""))
        if user is not None:
            _succeeded(username)
            if isinstance(earlier := session.get("sid"), str):
                accounts().end_session(earlier)
            session.clear()  # a new id and CSRF token: none planted before login survives
            session.permanent = True  # the cookie expires with session_max_hours
            session["sid"] = accounts().open_session(user.username, _limits())
            csrf_token()
            if last := _last_login(user.username):
                session["since"] = last  # what moved since is told on the first page
            audit("login", user.username, role=user.role)
            # A partner hospital's cardiologist comes for the answers.
            home = url_for("cases.index" if user.role == PARTNER else "studies.index")
            return redirect(same_origin_path(request.args.get("next"), home))
        audit("login", username, role="", outcome=MINOR_FAILURE, detail="wrong password")
        error = gettext("Wrong user name or password.")
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> Any:
    # Every session of the account ends, on every device and node process: a
    # cookie copied from another browser must not outlive its owner's logout.
    audit("logout", g.user.username)
    accounts().end_sessions(g.user.username)
    session.clear()
    return redirect(url_for("auth.login"))
