"""A web account belongs to a hospital (its issuer): the schema revision that
adds it to existing indexes, and the `dicomnode user` commands that set it."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, text
from werkzeug.security import check_password_hash, generate_password_hash

from dicomnode.cli.main import main
from dicomnode.config import Config
from dicomnode.node import open_archive
from storage.accounts import SESSIONS_PER_USER, AccountError, SessionLimits, web_sessions
from storage.index import Index, create_index_engine
from storage.migrate import _config, current
from tests.conftest import make_config
from tests.postgres import LocalPostgres
from tests.test_scale_out import _head
from viewer import create_app

PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    server: LocalPostgres = request.getfixturevalue("postgres")
    return server.database()


@pytest.mark.slow
def test_an_index_of_revision_0005_keeps_its_accounts_without_a_hospital(
    tmp_path: Path, index_url: str
) -> None:
    """Accounts (and held instances) from before 0006/0007: upgraded at open,
    still able to log in, no issuer until an administrator sets one."""
    engine = create_index_engine(index_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0005")
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, role, disabled, created_at) "
                "VALUES ('amina', :hash, 'cardiologist', false, :now)"
            ),
            {"hash": generate_password_hash(PASSWORD), "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO quarantine (sopinstanceuid, studyinstanceuid, pseudonym, issuer, "
                "reason, blob_key, size, received_at) VALUES ('2.25.5', '2.25.6', 'CHD-0000-0000',"
                " 'NCC Bishkek', 'old', 'ab/cd/x.dcm', 1, :now)"
            ),
            {"now": now},
        )
    engine.dispose()

    index = Index(index_url)
    try:
        assert current(index.engine) == _head()
        (user,) = index.accounts.list()
        assert (user.username, user.role, user.issuer, user.disabled) == (
            "amina",
            "cardiologist",
            None,
            False,
        )
        assert check_password_hash(user.password_hash, PASSWORD)
        index.accounts.update("amina", issuer="  NCC Bishkek ")
        assert index.accounts.get("amina").issuer == "NCC Bishkek"  # type: ignore[union-attr]
        # The held row of before: its blob is plaintext until the next start seals it.
        assert index.unsealed_quarantined() == ["2.25.5"]
    finally:
        index.close()

    # And the migrated account logs in to the web app.
    config = make_config(tmp_path, index_url=index_url)
    archive = open_archive(config)
    try:
        client = create_app(config, archive, b"k" * 32).test_client()
        with client.session_transaction() as session:
            session["csrf"] = "token"
        answer = client.post(
            "/login", data={"username": "amina", "password": PASSWORD, "csrf_token": "token"}
        )
        assert answer.status_code == 302 and "/login" not in answer.headers["Location"]
    finally:
        archive.close()


def test_an_issuer_is_normalised_and_must_be_text(config: Config) -> None:
    archive = open_archive(config)
    try:
        accounts = archive.index.accounts
        accounts.add("a", "hash", "cardiologist", " RCC Dushanbe ")
        assert accounts.get("a").issuer == "RCC Dushanbe"  # type: ignore[union-attr]
        accounts.update("a", issuer="RCC  Dushanbe ")  # one hospital, not a second
        assert accounts.get("a").issuer == "RCC Dushanbe"  # type: ignore[union-attr]
        accounts.add("b", "hash", "researcher", "")
        assert accounts.get("b").issuer is None  # type: ignore[union-attr]
        for bad in ("x" * 257, "NCC\nBishkek"):
            with pytest.raises(AccountError, match="issuer"):
                accounts.update("a", issuer=bad)
    finally:
        archive.close()


def test_user_commands_set_show_and_change_the_hospital(
    tmp_path: Path,
    config: Config,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\ndata_dir = "{config.data_dir}"\nkey_dir = "{config.key_dir}"\n\n'
        '[[remote_ae]]\nae_title = "BISHKEK_ECHO"\nhost = "127.0.0.1"\nport = 11113\n'
        'issuer = "NCC Bishkek"\n',
        encoding="utf-8",
    )

    def user(*args: str) -> int:
        return main(["-c", str(path), "user", *args])

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert user("add", "aigul", "--issuer", "NCC Bishkek", "--password-stdin") == 0
    assert capsys.readouterr().err == ""  # a configured issuer: no note
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert user("add", "timur", "--role", "admin", "--password-stdin") == 0
    capsys.readouterr()
    assert user("list") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{'aigul':<24} {'cardiologist':<13} {'active':<9} NCC Bishkek  sees NCC Bishkek",
        f"{'timur':<24} {'admin':<13} {'active':<9} -  sees *",
    ]

    assert user("issuer", "timur") == 2  # which hospital?
    assert "--issuer" in capsys.readouterr().err
    assert user("issuer", "nobody", "--issuer", "NCC Bishkek") == 3
    assert user("issuer", "timur", "--issuer", "NCC Bishkek Cath") == 0
    note = capsys.readouterr().err
    assert "no [[remote_ae]] has issuer 'NCC Bishkek Cath'" in note and "'NCC Bishkek'" in note
    assert user("issuer", "aigul", "--issuer", "") == 0  # removed: may view, not upload
    capsys.readouterr()
    assert user("list") == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].endswith(" -  sees NCC Bishkek")  # the scope stays
    assert "NCC Bishkek Cath" in listing

    archive = open_archive(config)
    try:
        changes = [
            (r["object"], r["detail"])
            for r in reversed(archive.index.audit.rows())
            if r["event"] == "user-change"
        ]
    finally:
        archive.close()
    assert changes == [
        ("aigul", "add, role cardiologist, issuer 'NCC Bishkek'"),
        ("timur", "add, role admin"),
        ("timur", "issuer 'NCC Bishkek Cath'"),
        ("aigul", "issuer removed"),
    ]


def test_sessions_live_in_the_index_shared_by_every_process(index_url: str) -> None:
    """Two node processes (two Index objects) on one index, SQLite or
    PostgreSQL, from an index of revision 0009: a session opened by one is
    known to the other and ended for both; only hashes are stored; a user's
    rows stay bounded, expired ones are purged."""
    engine = create_index_engine(index_url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0009")
    engine.dispose()
    limits = SessionLimits(idle=1800, lifetime=12 * 3600)
    first, second = Index(index_url), Index(index_url)
    try:
        first.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
        first.accounts.add("li", generate_password_hash(PASSWORD), "researcher")
        token = first.accounts.open_session("amina", limits)
        assert second.accounts.session_user(token, limits) == "amina"
        assert second.accounts.session_user(token + "x", limits) is None
        with first.engine.connect() as conn:
            stored = conn.execute(select(web_sessions.c.token_hash)).scalars().all()
        assert stored == [hashlib.sha256(token.encode()).hexdigest()]
        second.accounts.end_session(token)  # logout on the other process
        assert first.accounts.session_user(token, limits) is None

        tokens = [first.accounts.open_session("amina", limits) for _ in range(20)]
        other = second.accounts.open_session("li", limits)
        alive = [t for t in tokens if second.accounts.session_user(t, limits)]
        assert alive == tokens[-SESSIONS_PER_USER:]  # the newest, in order of login
        first.accounts.update("amina", password_hash=generate_password_hash("an0ther phrase"))
        assert [t for t in tokens if second.accounts.session_user(t, limits)] == []
        assert first.accounts.session_user(other, limits) == "li"

        with first.engine.begin() as conn:  # li idle for 31 minutes
            conn.execute(web_sessions.update().values(seen=web_sessions.c.seen - 31 * 60))
        first.accounts.open_session("amina", limits)  # any login purges it
        with first.engine.connect() as conn:
            owners = conn.execute(select(web_sessions.c.username)).scalars().all()
        assert owners == ["amina"]
        first.accounts.update("amina", disabled=True)
        with first.engine.connect() as conn:
            assert conn.execute(select(web_sessions.c.pk)).all() == []
    finally:
        first.close()
        second.close()
