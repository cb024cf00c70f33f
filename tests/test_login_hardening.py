"""Issue #16, an attacker's findings on login and sessions: parallel guesses
outrunning the throttle, anyone locking any account out, one proxy address
for everyone, a correct login told "wrong password", open redirects after
login, 500s from odd CSRF tokens, and sessions or remembered HTTP Basic
checks outliving a logout, a new password or a disabled account on another
node process sharing the index."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.security import generate_password_hash

import viewer.auth as auth
from dicomnode.cli.main import main
from dicomnode.config import Config, parse_networks
from dicomnode.node import open_archive
from storage.archive import Archive
from storage.throttle import Backoff, Key, login_throttle
from tests.conftest import make_config
from tests.test_viewer import PASSWORD
from viewer import create_app
from viewer.address import client_from

SECRET = b"k" * 32
USERS = {"admin-user": "admin", "cardiologist-user": "cardiologist", "pacs": "cardiologist"}
PROXY = "10.9.0.1"
FAST = "pbkdf2:sha256:1000"  # a cheap hash: the tests count checks, not their cost


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown user names are checked against a dummy hash: a cheap one here."""
    dummy = generate_password_hash("not anyone's", method=FAST)
    monkeypatch.setattr(auth, "_dummy_hash", lambda: dummy)


class Clock:
    """The throttle's time, moved by the test instead of waited for."""

    def __init__(self, start: float = 1.9e9) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    frozen = Clock()
    monkeypatch.setattr(auth, "clock", frozen, raising=False)
    return frozen


class Checks:
    """Counts password hash checks (the work an attempt that got through did)."""

    def __init__(self, real: Callable[[str, str], bool]) -> None:
        self.real, self.count, self._lock = real, 0, threading.Lock()

    def __call__(self, stored: str, given: str) -> bool:
        with self._lock:
            self.count += 1
        return self.real(stored, given)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Checks:
    counter = Checks(auth.check_password_hash)
    monkeypatch.setattr(auth, "check_password_hash", counter)
    return counter


def _add_users(archive: Archive) -> None:
    for name, role in USERS.items():
        hashed = generate_password_hash(PASSWORD, method=FAST)
        archive.index.accounts.add(name, hashed, role, "NCC Bishkek")


@pytest.fixture
def app(config: Config, archive: Archive) -> Flask:
    _add_users(archive)
    return create_app(config, archive, SECRET)


@pytest.fixture
def elsewhere(config: Config, app: Flask) -> Iterator[Flask]:
    """Another node process on the same index: its own Index, engine, caches."""
    archive = open_archive(config)
    yield create_app(config, archive, SECRET)
    archive.close()


def attempt(
    client: FlaskClient,
    user: str,
    password: str,
    address: str = "10.0.0.5",
    forwarded: str | None = None,
    query: str = "",
) -> object:
    with client.session_transaction() as session:
        session["csrf"] = "token"
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return client.post(
        "/login" + query,
        data={"username": user, "password": password, "csrf_token": "token"},
        environ_base={"REMOTE_ADDR": address},
        headers=headers,
    )


def basic(user: str, password: str) -> dict[str, str]:
    pair = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def logins(app: Flask) -> list[tuple[str, str, str]]:
    """(user, source, detail) of every login record, oldest first."""
    rows = app.extensions["archive"].index.audit.rows()
    return [(r["user"], r["source"], r["detail"]) for r in reversed(rows) if r["event"] == "login"]


# --- parallel guesses ------------------------------------------------------


def _guess_in_parallel(apps: list[Flask], n: int) -> list[object]:
    """``n`` wrong guesses for admin-user at once, from ``n`` addresses, spread
    over the apps (node processes); their answers."""
    start = threading.Barrier(n)
    answers: list[object] = [None] * n

    def guess(i: int) -> None:
        client = apps[i % len(apps)].test_client()
        with client.session_transaction() as session:
            session["csrf"] = "token"
        start.wait()
        answers[i] = client.post(
            "/login",
            data={"username": "admin-user", "password": f"guess {i}", "csrf_token": "token"},
            environ_base={"REMOTE_ADDR": f"198.51.100.{i + 1}"},
        )

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_thirty_parallel_guesses_check_no_more_passwords_than_the_limit(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, clock: Clock, checks: Checks
) -> None:
    """The attacker's race: 30 guesses at once on two apps sharing the index
    (on PostgreSQL two node processes: two Index objects). Each is reserved
    before its password is checked, so exactly `login_attempts` hashes are
    checked; the rest are told when to retry."""
    url = request.getfixturevalue("postgres").database() if backend == "postgresql" else ""
    config = make_config(tmp_path, index_url=url)
    first = open_archive(config)
    # SQLite: one process (the audit trail's chain is not written from two).
    second = open_archive(config) if url else first
    try:
        _add_users(first)
        # A node records its start before any login; the trail's very first
        # record is not written by two processes at once (see the report).
        first.index.audit.record("node-start", user="test")
        apps = [create_app(config, first, SECRET), create_app(config, second, SECRET)]
        answers = _guess_in_parallel(apps, 30)
        codes = sorted(a.status_code for a in answers)  # type: ignore[attr-defined]
        limit = config.login_attempts
        assert checks.count == limit, codes
        assert codes == [401] * limit + [429] * (30 - limit)
        assert all(
            int(a.headers["Retry-After"]) >= 1  # type: ignore[attr-defined]
            for a in answers
            if a.status_code == 429  # type: ignore[attr-defined]
        )
        details = [detail for _, _, detail in logins(apps[0])]
        assert details.count("wrong password") == limit
        assert details.count("throttled") == 30 - limit
    finally:
        first.close()
        if second is not first:
            second.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reservations_are_atomic_across_processes(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """The storage itself: 40 threads on two Index objects reserve one key at
    the same instant; the free attempts and no more are granted."""
    url = request.getfixturevalue("postgres").database() if backend == "postgresql" else ""
    config = make_config(tmp_path, index_url=url)
    archives = [open_archive(config), open_archive(config)]
    backoff = Backoff(free=5)
    start = threading.Barrier(40)
    granted: list[int] = []

    def reserve(i: int) -> None:
        start.wait()
        wait = archives[i % 2].index.throttle.reserve([Key("user", "amina")], backoff, 1.9e9)
        if wait == 0:
            granted.append(i)

    try:
        threads = [threading.Thread(target=reserve, args=(i,)) for i in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(granted) == 5
    finally:
        for archive in archives:
            archive.close()


def test_failures_far_apart_start_afresh_and_idle_rows_are_swept(archive: Archive) -> None:
    """A counter is about recent guessing: failures more than a window
    apart count from one again, and keys idle that long leave the table."""
    throttle, backoff = archive.index.throttle, Backoff(free=2, window=900.0)
    amina, elsewhere = [Key("user", "amina")], [Key("address", "192.0.2.1")]
    start = 1.9e9
    assert [throttle.reserve(amina, backoff, start) for _ in range(3)] == [0, 0, 2000]
    later = start + 901
    assert throttle.reserve(amina, backoff, later) == 0
    assert throttle.reserve(amina, backoff, later) == 0  # the 2nd of a fresh count
    assert throttle.reserve(amina, backoff, later) == 2000
    throttle._swept = 0.0  # the next reservation sweeps (at most every few minutes)
    assert throttle.reserve(elsewhere, backoff, later + 902) == 0
    with archive.index.engine.connect() as conn:
        keys = conn.execute(select(login_throttle.c.key)).scalars().all()
    assert keys == [elsewhere[0].digest]  # amina's row went; no name or address stored
    assert "192.0.2.1" not in keys[0]


# --- back-off, not lock-out ------------------------------------------------


def test_an_attacker_slows_the_admin_but_cannot_lock_them_out(
    app: Flask, config: Config, clock: Clock
) -> None:
    client, admin = app.test_client(), app.test_client()
    for n in range(config.login_attempts):
        assert attempt(client, "admin-user", f"guess {n}", "203.0.113.9").status_code == 401
    # The admin, from their own workstation, is told to wait, not "wrong password".
    told = attempt(admin, "admin-user", PASSWORD, "10.0.0.5")
    assert told.status_code == 429
    page = told.get_data(as_text=True)
    seconds = int(told.headers["Retry-After"])
    assert f"Try again in {seconds} seconds" in page and "Wrong user name" not in page
    # The attacker keeps guessing after every wait: the waits grow, capped.
    waits = []
    for n in range(12):
        blocked = attempt(client, "admin-user", f"more {n}", "203.0.113.9")
        assert blocked.status_code == 429
        waits.append(int(blocked.headers["Retry-After"]))
        clock.advance(waits[-1])
        assert attempt(client, "admin-user", f"more {n}", "203.0.113.9").status_code == 401
    assert waits == sorted(waits) and waits[-1] <= auth.BACKOFF_LONGEST
    assert waits[-1] > waits[0]
    # An early retry changes nothing; after the wait the right password logs in.
    wait = int(attempt(admin, "admin-user", PASSWORD, "10.0.0.5").headers["Retry-After"])
    clock.advance(wait - 1)
    assert attempt(admin, "admin-user", PASSWORD, "10.0.0.5").status_code == 429
    clock.advance(1)
    assert attempt(admin, "admin-user", PASSWORD, "10.0.0.5").status_code == 302
    assert admin.get("/api/stats").status_code == 200
    # Which starts the account afresh: a typo now costs no wait.
    assert attempt(admin, "admin-user", "typo", "10.0.0.5").status_code == 401
    assert attempt(admin, "admin-user", PASSWORD, "10.0.0.5").status_code == 302


def test_throttled_http_basic_is_told_to_wait_not_wrong_password(
    app: Flask, config: Config, clock: Clock, checks: Checks
) -> None:
    client = app.test_client()
    address = {"REMOTE_ADDR": "10.0.0.20"}
    assert client.get("/dicom-web/studies", headers=basic("pacs", PASSWORD)).status_code in (
        200,
        204,
    )
    for n in range(config.login_attempts):
        wrong = client.get("/dicom-web/studies", headers=basic("pacs", f"guess {n}"))
        assert wrong.status_code == 401
    before = checks.count
    for password in (PASSWORD, "another guess"):  # even the remembered right one
        answer = client.get("/dicom-web/studies", headers=basic("pacs", password))
        assert answer.status_code == 429, password
        assert int(answer.headers["Retry-After"]) >= 1
        assert "try again in" in answer.get_json()["message"]
    assert checks.count == before  # nothing was checked while it must wait
    # Another DICOMweb client of the same account, elsewhere, waits too (the
    # account is what is guessed at), then gets in.
    clock.advance(int(answer.headers["Retry-After"]))
    ok = client.get("/dicom-web/studies", headers=basic("pacs", PASSWORD), environ_base=address)
    assert ok.status_code in (200, 204)


# --- client address behind a reverse proxy ---------------------------------


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Flask]:
    config = make_config(tmp_path, trusted_proxies=f"{PROXY}, 10.9.1.0/24")
    archive = open_archive(config)
    _add_users(archive)
    yield create_app(config, archive, SECRET)
    archive.close()


def test_behind_a_trusted_proxy_clients_are_throttled_apart(proxied: Flask, clock: Clock) -> None:
    attacker, nurse = proxied.test_client(), proxied.test_client()
    limit = proxied.config["NODE_CONFIG"].login_attempts
    for n in range(limit):  # a spray over many names: only the address repeats
        assert attempt(attacker, f"name{n}", "x", PROXY, "198.51.100.7").status_code == 401
    assert attempt(attacker, "other", "x", PROXY, "198.51.100.7").status_code == 429
    # Writing another address to the left does not escape: the proxy appended the real one.
    spoof = "192.0.2.1, 198.51.100.7"
    assert attempt(attacker, "other", "x", PROXY, spoof).status_code == 429
    # Another client behind the same proxy logs in at once.
    answer = attempt(nurse, "cardiologist-user", PASSWORD, PROXY, "198.51.100.8")
    assert answer.status_code == 302
    # Two proxies in a row (both trusted): still the client's address.
    chain = "198.51.100.9, 10.9.1.7"
    assert attempt(nurse, "admin-user", PASSWORD, PROXY, chain).status_code == 302
    sources = {(user, source) for user, source, _ in logins(proxied)}
    assert ("cardiologist-user", "198.51.100.8") in sources
    assert ("admin-user", "198.51.100.9") in sources
    assert ("name0", "198.51.100.7") in sources
    assert all(source != PROXY for _, source in sources)


@pytest.mark.slow
def test_a_forwarded_for_header_from_an_untrusted_peer_is_ignored(
    proxied: Flask, clock: Clock
) -> None:
    attacker = proxied.test_client()
    limit = proxied.config["NODE_CONFIG"].login_attempts
    for n in range(limit):  # a new made-up address each time
        answer = attempt(attacker, f"name{n}", "x", "203.0.113.5", f"198.51.100.{n + 1}")
        assert answer.status_code == 401
    assert attempt(attacker, "other", "x", "203.0.113.5", "198.51.100.99").status_code == 429
    assert {source for _, source, _ in logins(proxied)} == {"203.0.113.5"}


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.9.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("10.9.0.1", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
        ("10.9.0.1", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),  # header sent twice
        ("10.9.0.1", ["198.51.100.7, 10.9.1.3"], "198.51.100.7"),  # two proxies
        ("10.9.0.1", ["10.9.1.3"], "10.9.1.3"),  # only proxies: the farthest
        ("10.9.0.1", [], "10.9.0.1"),  # the proxy itself asks
        ("10.9.0.1", ["not-an-address"], "10.9.0.1"),
        ("10.9.0.1", ["198.51.100.7, 10.9.1.3:8080"], "198.51.100.7"),
        ("10.9.0.1", ["[2001:db8::7]:443"], "2001:db8::7"),
        ("10.9.0.1", ["::ffff:198.51.100.7"], "198.51.100.7"),
        ("203.0.113.5", ["198.51.100.7"], "203.0.113.5"),  # not a trusted peer
        ("203.0.113.5", [], "203.0.113.5"),
    ],
)
def test_the_client_address_is_the_rightmost_untrusted_hop(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert client_from(peer, forwarded, parse_networks("10.9.0.1, 10.9.1.0/24")) == client


# --- redirects after login -------------------------------------------------

OPEN_REDIRECTS = [
    "//evil.example",
    "///evil.example",
    "////evil.example/x",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/%09/evil.example",
    "/\t/evil.example",
    "/%0a/evil.example",
    "/\r\n/evil.example",
    " //evil.example",
    "/%2F%2Fevil.example",
    "/%252F%252Fevil.example",
    "/%5Cevil.example",
    "/%5C%5Cevil.example",
    "/.//evil.example",
    "/./\\evil.example",
    "/../../evil.example",
    "https:evil.example",
    "https://evil.example",
    "HTTPS://evil.example/",
    "//evil.example@node",
    "http:/\\/evil.example",
    "javascript:alert(1)",
    "java\tscript:alert(1)",
    "java%09script:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    "/\u3000/evil.example",
    "/\x00/evil.example",
]


def _as_a_browser_reads(location: str) -> tuple[str, str]:
    """(scheme, host) a browser would go to from this Location, read the
    forgiving way browsers do: tabs and newlines dropped, backslashes as
    slashes, escapes decoded."""
    text = location
    for _ in range(3):
        text = text.replace("%09", "\t").replace("%0a", "\n").replace("%2F", "/")
        text = text.replace("%2f", "/").replace("%5C", "\\").replace("%5c", "\\")
    text = "".join(c for c in text if c not in "\t\n\r").strip().replace("\\", "/")
    parts = urlsplit(text)
    return parts.scheme, parts.netloc


@pytest.mark.slow
def test_after_login_the_browser_stays_on_the_node(app: Flask) -> None:
    for target in OPEN_REDIRECTS:
        query = "?next=" + quote(target)
        answer = attempt(app.test_client(), "cardiologist-user", PASSWORD, query=query)
        assert answer.status_code == 302, target
        location = answer.headers["Location"]
        assert _as_a_browser_reads(location) in (("", ""), ("http", "localhost")), target
        assert location in ("/", "http://localhost/"), target  # the study list
    for target in ("/studies/1.2.3", "/studies?q=CHD-1&page=2", "/admin/audit", "/"):
        query = "?next=" + quote(target)
        answer = attempt(app.test_client(), "cardiologist-user", PASSWORD, query=query)
        assert answer.headers["Location"] == target  # a path on the node is followed


# --- CSRF tokens of any shape ----------------------------------------------


def test_odd_csrf_tokens_are_refused_with_400_not_500(app: Flask) -> None:
    client = app.test_client()
    with client.session_transaction() as session:
        session["csrf"] = "token"
    for sent in ("tökén", "\xff\xfe", "token\x00", "a" * 100_000, "токен", "令牌", "tökén" * 9):
        answers = [client.post("/logout", data={"csrf_token": sent})]
        if sent.encode("latin-1", "ignore").decode("latin-1") == sent:  # a header can carry it
            answers.append(client.post("/logout", headers={"X-CSRF-Token": sent}))
            answers.append(client.post("/api/studies/9.9/plans", headers={"X-CSRF-Token": sent}))
        for answer in answers:
            assert answer.status_code == 400, sent[:20]
            assert answer.get_json()["message"] == "missing or wrong CSRF token"


# --- sessions and remembered checks end everywhere -------------------------


def _log_in(client: FlaskClient, user: str) -> str:
    assert attempt(client, user, PASSWORD).status_code == 302
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _user_command(config: Config, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`dicomnode user …` as an administrator runs it: another process."""
    path = config.data_dir.parent / "node.toml"
    path.write_text(
        f'[node]\ndata_dir = "{config.data_dir}"\nkey_dir = "{config.key_dir}"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("a n3w long passphrase\n"))
    return main(["-c", str(path), "user", *args])


def test_logout_ends_the_session_on_every_process(app: Flask, elsewhere: Flask) -> None:
    client, other = app.test_client(), elsewhere.test_client()
    cookie = _log_in(client, "cardiologist-user")
    other.set_cookie("session", cookie)  # the copied cookie, on another node process
    assert other.get("/api/stats").status_code == 200
    with client.session_transaction() as session:
        csrf = session["csrf"]
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert other.get("/api/stats").status_code == 401
    client.set_cookie("session", cookie)
    assert client.get("/api/stats").status_code == 401


def test_logout_on_one_device_ends_the_sessions_of_the_others(app: Flask, elsewhere: Flask) -> None:
    """A session opened on a shared ward computer ends when its owner logs
    out at home: logout ends every session of the account; others keep theirs."""
    ward, home, colleague = app.test_client(), elsewhere.test_client(), app.test_client()
    _log_in(ward, "cardiologist-user")
    _log_in(home, "cardiologist-user")
    _log_in(colleague, "admin-user")
    with home.session_transaction() as session:
        csrf = session["csrf"]
    assert home.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert ward.get("/api/stats").status_code == 401
    assert colleague.get("/api/stats").status_code == 200


@pytest.mark.parametrize(
    "command",
    [("passwd", "cardiologist-user", "--password-stdin"), ("disable", "cardiologist-user")],
)
def test_a_password_change_or_disabling_ends_every_session_and_basic_check_at_once(
    app: Flask,
    elsewhere: Flask,
    config: Config,
    checks: Checks,
    monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...],
) -> None:
    """`dicomnode user passwd|disable` in a third process: both node
    processes refuse every session of the user and its remembered HTTP
    Basic check on the very next request; other users keep theirs."""
    ward, office, colleague = app.test_client(), elsewhere.test_client(), app.test_client()
    copied = _log_in(ward, "cardiologist-user")
    _log_in(office, "cardiologist-user")
    _log_in(colleague, "admin-user")
    credentials = basic("cardiologist-user", PASSWORD)
    for client in (ward, office):
        assert client.get("/dicom-web/studies", headers=credentials).status_code in (200, 204)
    remembered = checks.count
    for client in (ward, office):
        assert client.get("/dicom-web/studies", headers=credentials).status_code in (200, 204)
    assert checks.count == remembered  # answered from the remembered check

    assert _user_command(config, monkeypatch, *command) == 0

    for client in (ward, office):
        assert client.get("/api/stats").status_code == 401
        assert client.get("/dicom-web/studies", headers=credentials).status_code == 401
    thief = elsewhere.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/api/stats").status_code == 401
    assert colleague.get("/api/stats").status_code == 200
    if command[0] == "passwd":
        new = basic("cardiologist-user", "a n3w long passphrase")
        assert office.get("/dicom-web/studies", headers=new).status_code in (200, 204)


def test_no_web_route_changes_a_password_without_ending_sessions(app: Flask) -> None:
    """Password changes happen only through `dicomnode user passwd`
    (`Accounts.update`, which ends the sessions): a web route for it would
    need the same test as above."""
    rules = [rule.rule for rule in app.url_map.iter_rules()]
    assert not [rule for rule in rules if "passw" in rule or "account" in rule]


def test_an_ipv6_host_cannot_escape_the_address_counter_with_fresh_addresses(
    app: Flask, clock: Clock
) -> None:
    """Found by an outside reviewer: one IPv6 host has a whole /64 to take
    addresses from; each new one had a fresh counter. The counter is the /64."""
    attacker = app.test_client()
    limit = app.config["NODE_CONFIG"].login_attempts
    for n in range(limit):
        answer = attempt(attacker, f"name{n}", "x", f"2001:db8:7:1::{n + 1:x}")
        assert answer.status_code == 401
    assert attempt(attacker, "other", "x", "2001:db8:7:1::ffff").status_code == 429
    assert attempt(attacker, "other", "x", "2001:db8:7:2::1").status_code == 401  # another /64
