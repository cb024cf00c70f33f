"""The web app against each role, forged requests, password guessing, stale,
replayed and revoked sessions, framing and script injection, and what errors
reveal."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor, Outcome
from storage.accounts import ROLES, SESSIONS_PER_USER, web_sessions
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_viewer import PASSWORD, as_user
from viewer import create_app
from viewer.permissions import OPEN, RULES


@pytest.fixture
def app(config: Config, archive: Archive) -> Flask:
    for role in ROLES:
        # Each belongs to a hospital, so an allowed STOW-RS is not refused for
        # lack of one (that 403 is tested in test_dicomweb).
        archive.index.accounts.add(
            f"{role}-user", generate_password_hash(PASSWORD), role, issuer="NCC Bishkek"
        )
    return create_app(config, archive, b"k" * 32)


def _url(rule: str) -> str:
    """A concrete URL for a rule: variables become harmless values."""
    return re.sub(r"<(?:int:|path:)?(\w+)>", lambda m: "1" if "int" in m.group(0) else "9.9", rule)


@pytest.mark.slow
def test_every_route_has_a_rule(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - set(RULES) == set(), "a route without an access rule (viewer/permissions.py)"
    assert set(RULES) - endpoints == set(), "a rule for a route that no longer exists"


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_exactly_what_its_rules_allow(app: Flask, role: str) -> None:
    client = app.test_client()
    as_user(client, f"{role}-user")
    for rule in app.url_map.iter_rules():
        method = "POST" if "POST" in rule.methods else "GET"
        if rule.endpoint in ("auth.login", "auth.logout", "i18n.choose"):
            continue  # open, or they end the session: checked elsewhere
        response = client.open(_url(rule.rule), method=method, headers={"X-CSRF-Token": "token"})
        granted = RULES[rule.endpoint] is OPEN or role in RULES[rule.endpoint]
        assert (response.status_code != 403) == granted, (rule.rule, role, response.status_code)
        assert response.status_code != 401, rule.rule
        assert response.status_code < 500, (rule.rule, response.get_data(as_text=True)[:200])
    denied = app.extensions["archive"].index.audit.rows()
    assert role == "admin" or any(r["event"] == "access-denied" for r in denied)


@pytest.mark.slow
def test_no_login_no_access_and_csrf(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/api/stats").status_code == 401
    assert client.get("/").status_code == 302
    as_user(client, "cardiologist-user")
    assert client.post("/api/studies/9.9/plans", json={}).status_code == 400  # no token
    assert "CSRF" in client.post("/logout").get_json()["message"]


def _attempt(client: FlaskClient, user: str, password: str, address: str) -> int:
    with client.session_transaction() as session:
        session["csrf"] = "token"
    return client.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": "token"},
        environ_base={"REMOTE_ADDR": address},
    ).status_code


@pytest.mark.slow
def test_password_guessing_is_throttled_per_user_and_per_address(
    app: Flask, config: Config
) -> None:
    client = app.test_client()
    for n in range(config.login_attempts):
        assert _attempt(client, "researcher-user", f"guess {n} is wrong", "10.0.0.66") == 401
    # The right password no longer helps, from the same or another address...
    assert _attempt(client, "researcher-user", PASSWORD, "10.0.0.66") == 429
    assert _attempt(client, "researcher-user", PASSWORD, "10.0.0.7") == 429
    # ...and the guessing address cannot move on to another account.
    assert _attempt(client, "admin-user", PASSWORD, "10.0.0.66") == 429
    assert _attempt(client, "cardiologist-user", PASSWORD, "10.0.0.8") == 302
    trail = app.extensions["archive"].index.audit
    logins = [(r["user"], r["outcome"], r["detail"]) for r in trail.rows() if r["event"] == "login"]
    assert ("researcher-user", 4, "throttled") in logins
    assert ("cardiologist-user", 0, "") in logins
    assert all(PASSWORD not in str(row) for row in trail.rows())


def _rows(app: Flask) -> list[dict[str, object]]:
    with app.extensions["archive"].index.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(web_sessions))]


def _age(app: Flask, **seconds: int) -> None:
    """Every session row ``seconds`` older (started=…, seen=…)."""
    with app.extensions["archive"].index.engine.begin() as conn:
        for column, by in seconds.items():
            conn.execute(web_sessions.update().values({column: web_sessions.c[column] - by}))


@pytest.mark.slow
def test_sessions_end_after_inactivity_and_at_their_maximum_age(app: Flask) -> None:
    client = app.test_client()
    as_user(client, "cardiologist-user")
    assert client.get("/api/stats").status_code == 200
    _age(app, seen=31 * 60)
    assert client.get("/api/stats").status_code == 401
    assert _rows(app) == []  # the expired row went with it
    as_user(client, "cardiologist-user")
    _age(app, started=13 * 3600)
    assert client.get("/api/stats").status_code == 401
    # Times written into the cookie change nothing: the server's count.
    as_user(client, "cardiologist-user")
    _age(app, seen=31 * 60)
    with client.session_transaction() as session:
        session.update(since=time.time(), seen=time.time())
    assert client.get("/api/stats").status_code == 401


def _log_in(client: FlaskClient, user: str) -> tuple[str, str]:
    """Through the form; the session cookie and its CSRF token."""
    assert _attempt(client, user, PASSWORD, "10.0.0.5") == 302
    cookie = client.get_cookie("session")
    assert cookie is not None
    with client.session_transaction() as session:
        return cookie.value, session["csrf"]


def _replay(client: FlaskClient, cookie: str) -> None:
    client.set_cookie("session", cookie)


@pytest.mark.slow
def test_a_copied_cookie_opens_nothing_after_logout(app: Flask) -> None:
    """The reviewer's attack: copy the cookie, log out, replay it, sign."""
    client = app.test_client()
    cookie, csrf = _log_in(client, "cardiologist-user")
    sign = "/api/studies/9.9/plans/7/versions/1/sign"
    headers = {"X-CSRF-Token": csrf}
    assert client.get("/").status_code == 200
    assert client.post(sign, headers=headers).status_code == 404  # past the login: no study
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    _replay(client, cookie)
    assert client.get("/").status_code == 302  # to the login
    assert client.get("/api/stats").status_code == 401
    assert client.post(sign, headers=headers).status_code == 401
    assert client.post(sign, data={"csrf_token": csrf}).status_code == 401
    assert _rows(app) == []
    # Another node process sharing the index refuses it as well.
    other = create_app(app.config["NODE_CONFIG"], app.extensions["archive"], b"k" * 32)
    elsewhere = other.test_client()
    _replay(elsewhere, cookie)
    assert elsewhere.get("/api/stats").status_code == 401
    events = [r["event"] for r in app.extensions["archive"].index.audit.rows()]
    assert "plan-sign" not in events


@pytest.mark.slow
def test_a_cookie_naming_a_user_but_no_live_session_is_refused(app: Flask) -> None:
    """Forged with the key (or from before revision 0010): no session row, no entry."""
    client = app.test_client()
    with client.session_transaction() as session:
        session.update(user="admin-user", csrf="token", since=time.time(), seen=time.time())
    assert client.get("/api/stats").status_code == 401
    for sid in ("", "not-a-session", 7, ["x"]):
        with client.session_transaction() as session:
            session.update(sid=sid, csrf="token")
        assert client.get("/api/stats").status_code == 401, sid
    # A logged-in session does not lend itself to another user's name.
    _log_in(client, "researcher-user")
    with client.session_transaction() as session:
        session["user"] = "admin-user"
    assert client.get("/admin/audit").status_code == 403


@pytest.mark.slow
def test_a_new_password_or_disabling_ends_every_session_of_the_user(app: Flask) -> None:
    accounts = app.extensions["archive"].index.accounts
    ward, office, colleague = app.test_client(), app.test_client(), app.test_client()
    _log_in(ward, "cardiologist-user")
    cookie, _ = _log_in(office, "cardiologist-user")
    _log_in(colleague, "researcher-user")
    accounts.update("cardiologist-user", issuer="NCC Bishkek Cath")  # not a credential
    assert ward.get("/api/stats").status_code == 200
    # `dicomnode user passwd` (the command calls exactly this)
    accounts.update("cardiologist-user", password_hash=generate_password_hash("n3w passphrase!"))
    assert ward.get("/api/stats").status_code == 401
    assert office.get("/api/stats").status_code == 401
    assert colleague.get("/api/stats").status_code == 200  # only that user's sessions
    accounts.update("cardiologist-user", password_hash=generate_password_hash(PASSWORD))
    _log_in(ward, "cardiologist-user")
    accounts.update("cardiologist-user", disabled=True)  # `dicomnode user disable`
    accounts.update("cardiologist-user", disabled=False)  # enabled again: still logged out
    assert ward.get("/api/stats").status_code == 401
    _replay(office, cookie)
    assert office.get("/api/stats").status_code == 401
    assert {r["username"] for r in _rows(app)} == {"researcher-user"}


@pytest.mark.slow
def test_logins_with_the_right_password_do_not_grow_the_session_table(app: Flask) -> None:
    """Scripted logins (the password known, one address each: no throttle)
    keep at most SESSIONS_PER_USER rows; the oldest go, the newest work."""
    client = app.test_client()
    cookies = []
    for n in range(3 * SESSIONS_PER_USER):
        _attempt(client, "cardiologist-user", PASSWORD, f"10.1.0.{n}")
        cookie = client.get_cookie("session")
        assert cookie is not None
        cookies.append(cookie.value)
        client.delete_cookie("session")  # a new browser each time
    rows = _rows(app)
    assert len(rows) == SESSIONS_PER_USER
    for n, cookie in enumerate(cookies):
        _replay(client, cookie)
        expected = 200 if n >= len(cookies) - SESSIONS_PER_USER else 401
        assert client.get("/api/stats").status_code == expected, n
    # Only a hash of each id is stored: no cookie's id appears in the table.
    with client.session_transaction() as session:
        sid = session["sid"]
    assert all(sid not in str(row) for row in rows)
    # Expired sessions of anyone go at the next login, not only when replayed.
    _age(app, seen=31 * 60)
    _log_in(app.test_client(), "admin-user")
    assert [r["username"] for r in _rows(app)] == ["admin-user"]


@pytest.mark.slow
def test_logging_in_again_ends_the_session_the_browser_had(app: Flask) -> None:
    """A workstation handed over: the next login replaces the previous user's session."""
    client = app.test_client()
    cookie, _ = _log_in(client, "cardiologist-user")
    _log_in(client, "researcher-user")
    _replay(client, cookie)
    assert client.get("/api/stats").status_code == 401
    assert [r["username"] for r in _rows(app)] == ["researcher-user"]


@pytest.mark.slow
def test_headers_forbid_inline_script_framing_and_sniffing(
    app: Flask, config: Config, archive: Archive
) -> None:
    client = app.test_client()
    page = client.get("/login")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in page.headers
    for template in app.jinja_loader.list_templates() if app.jinja_loader else []:
        source = app.jinja_loader.get_source(app.jinja_env, template)[0]  # type: ignore[union-attr]
        assert not re.search(r"<script(?![^>]*\b(src|type=\"application/json\"))", source), template
        assert not re.search(r"\son[a-z]+=", source), template
        assert "style=" not in source, template
    tls = replace(config, http_tls=True, tls_certificate="c.pem", tls_private_key="k.pem")
    hsts = create_app(tls, archive, b"k" * 32).test_client().get("/login")
    assert hsts.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.slow
def test_errors_carry_no_stack_trace_or_data(
    app: Flask, ingestor: Ingestor, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_ingest import instance

    ds = instance()
    assert ingestor.ingest(incoming(ds)).outcome is Outcome.STORED

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"patient {ds.PatientName} broke it")

    RULES["boom"] = frozenset(ROLES)
    try:
        client = app.test_client()
        as_user(client, "admin-user")
        response = client.get("/boom")
    finally:
        del RULES["boom"]
    body = response.get_data(as_text=True)
    assert response.status_code == 500 and "Traceback" not in body and "patient" not in body
    assert "patient" not in caplog.text and "RuntimeError" in caplog.text


@pytest.mark.slow
def test_admins_read_filter_verify_and_export_the_trail(app: Flask) -> None:
    client = app.test_client()
    _attempt(client, "nobody", "wrong password guess", "10.0.0.9")
    as_user(client, "admin-user")
    page = client.get("/admin/audit?failures=1").get_data(as_text=True)
    assert 'id="chain"' in page and "nobody" in page and "10.0.0.9" in page
    csv = client.get("/admin/audit.csv?user=nobody")
    assert csv.mimetype == "text/csv"
    lines = csv.get_data(as_text=True).splitlines()
    assert len(lines) == 2 and ",110114,User Authentication,login," in lines[1]
    events = [r["event"] for r in app.extensions["archive"].index.audit.rows()]
    assert events.count("audit-read") == 2


def test_held_instances_cannot_be_reached_by_their_uid(
    app: Flask, ingestor: Ingestor, archive: Archive
) -> None:
    from tests.test_ingest import instance

    held = instance()
    del held.SequenceOfUltrasoundRegions
    assert ingestor.ingest(incoming(held)).outcome is Outcome.QUARANTINED
    (row,) = archive.index.quarantined()
    uid, study = row["sopinstanceuid"], row["studyinstanceuid"]
    client = app.test_client()
    as_user(client, "admin-user")  # not even an admin, not through any door
    for url in (
        f"/studies/{study}",
        f"/api/instances/{uid}/meta",
        f"/api/instances/{uid}/frames/1",
        f"/api/instances/{uid}/thumbnail",
        f"/dicom-web/studies/{study}/metadata",
        f"/dicom-web/studies/{study}/series/9.9/instances/{uid}",
    ):
        assert client.get(url).status_code in (404, 204), url
    (hold,) = [r for r in archive.index.audit.rows() if r["event"] == "quarantine-hold"]
    assert hold["object"] == uid and hold["detail"]


@pytest.mark.slow
def test_password_policy() -> None:
    from storage.accounts import password_problem

    assert password_problem("short", "amina", 12) == "a password needs at least 12 characters"
    assert "user name" in (password_problem("my name is Amina!", "amina", 12) or "")
    assert "common" in (password_problem("password1234", "x", 12) or "")
    assert "common" in (password_problem("aaaaaaaaaaaaaaa", "x", 12) or "")
    assert password_problem("Тоғай ва дарё 2026", "amina", 12) is None


@pytest.mark.slow
def test_browser_icon_and_missing_assets_are_not_access_failures(app: Flask) -> None:
    """Every page load asks for /favicon.ico: answered, never audited as refused."""
    from io import BytesIO

    from PIL import Image

    trail = app.extensions["archive"].index.audit
    client = app.test_client()
    icon = client.get("/favicon.ico")  # before login, as on the login page
    assert icon.status_code == 200 and icon.mimetype == "image/x-icon"
    assert Image.open(BytesIO(icon.data)).format == "ICO"
    assert "max-age" in icon.headers["Cache-Control"]
    assert client.get("/static/nothing-here.js").status_code == 404
    # Anonymous guesses still lead to the login, never to a map of the site.
    assert client.get("/apple-touch-icon.png").status_code == 302
    assert client.get("/api/no-such-thing").status_code == 401
    for role in ROLES:
        as_user(client, f"{role}-user")
        for _ in range(3):
            assert client.get("/favicon.ico").status_code == 200
        assert client.get("/apple-touch-icon.png").status_code == 404
        assert client.get("/apple-touch-icon-precomposed.png").status_code == 404
        assert client.get("/static/style.css.map").status_code == 404
        assert client.get("/robots.txt").status_code == 404
        wrong_method = client.post("/favicon.ico", headers={"X-CSRF-Token": "token"})
        assert wrong_method.status_code == 405
    assert [r for r in trail.rows() if r["outcome"] != 0] == []
    # A real refusal is still audited: the exemption is for missing pages only.
    as_user(client, "researcher-user")
    assert client.get("/admin/audit").status_code == 403
    (denied,) = [r for r in trail.rows() if r["event"] == "access-denied"]
    assert (denied["user"], denied["object"]) == ("researcher-user", "admin.audit_page")
