"""Web users, their roles and their browser sessions (the people, not the
DICOM peers)."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    or_,
    select,
)
from sqlalchemy.engine import Connection, Engine

from storage.schema import metadata
from storage.values import normalise_issuer

ROLES = ("cardiologist", "researcher", "admin", "partner")
# A partner hospital's cardiologist: sees its own hospital's children only,
# always (`checked_partner`), reads their cases and the centre's answers.
PARTNER = "partner"
ISSUER_LENGTH = 256

users = Table(
    "users",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(32), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("language", String(8)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The hospital whose PatientIDs this account uploads (STOW-RS): the same
    # issuer as that hospital's [[remote_ae]] devices, so its patients meet.
    # NULL: the account may not store (revision 0006).
    Column("issuer", String(ISSUER_LENGTH)),
    # Whose patients the account may see: a JSON list of issuers; NULL for
    # all (revision 0011: accounts from before it keep seeing all).
    Column("sees", Text),
)


# One row per live browser session (revision 0010), so a session ends on the
# server: at logout, when the password changes or the account is disabled,
# after inactivity or at its maximum age, in every node process sharing the
# index. Only a SHA-256 of the random session id is kept (the id itself is in
# the signed cookie): a copy of the table opens no session. Times are Unix
# seconds.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("pk", Integer, primary_key=True),  # in order of login
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("username", String(64), nullable=False, index=True),
    Column("started", BigInteger, nullable=False),
    Column("seen", BigInteger, nullable=False),
)
# Live sessions per user (several browsers, a workstation and a laptop): a
# new login beyond it ends that user's oldest, so logins with the right
# password cannot grow the table without bound.
SESSIONS_PER_USER = 8
# A request refreshes its session's last-seen time at most this often: no
# write per cine frame, and inactivity is still measured to within a minute.
SEEN_RESOLUTION = 60


@dataclass(frozen=True)
class SessionLimits:
    """How long a session lasts: idle and in all, in seconds."""

    idle: int
    lifetime: int

    def expired(self, now: int) -> ColumnElement[bool]:
        """SQL condition: a row past either limit at ``now``."""
        return or_(
            web_sessions.c.seen < now - self.idle,
            web_sessions.c.started < now - self.lifetime,
        )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_USER_COLUMNS = (
    users.c.username,
    users.c.password_hash,
    users.c.role,
    users.c.disabled,
    users.c.language,
    users.c.issuer,
    users.c.sees,
)


# Passwords seen first in breach lists, refused whatever their length.
COMMON_PASSWORDS = frozenset(
    {
        "123456789012",
        "password1234",
        "passwordpassword",
        "qwertyuiopasdf",
        "1q2w3e4r5t6y",
        "administrator",
        "cardiologist",
        "iloveyou1234",
        "letmein12345",
        "welcome12345",
    }
)


def password_problem(password: str, username: str, min_length: int) -> str | None:
    """Why a password is refused, or None (NIST SP 800-63B: length and a
    blocklist, no composition rules)."""
    if len(password) < min_length:
        return f"a password needs at least {min_length} characters"
    folded = password.casefold()
    if username and username.casefold() in folded:
        return "a password must not contain the user name"
    if folded in COMMON_PASSWORDS or len(set(folded)) < 4:
        return "this password is too common or too simple"
    return None


class AccountError(ValueError):
    """The request about an account cannot be done; the message says why."""


def checked_issuer(issuer: str | None) -> str | None:
    """An account's hospital as stored: normalised as every door normalises
    it (`normalise_issuer`: patients are keyed by it, so "NCC Bishkek " is
    not a second hospital), None for none; AccountError if it cannot be one."""
    issuer = (issuer or "").strip()
    if not issuer:
        return None
    if len(issuer) > ISSUER_LENGTH or not issuer.isprintable():
        raise AccountError(f"issuer must be 1-{ISSUER_LENGTH} printable characters")
    return normalise_issuer(issuer)


# What an account sees: None is every hospital's patients (the regional
# centre); else a set of issuers. OWN, for a new account: its own hospital's
# patients if it has a hospital, else all.
ALL: Final = None


class _Own:
    def __repr__(self) -> str:
        return "OWN"


OWN: Final = _Own()


def checked_sees(issuers: Iterable[str] | None) -> frozenset[str] | None:
    """Issuers an account may see, each as `checked_issuer` stores it; None
    (ALL) for all; AccountError if none is named or one cannot be an issuer."""
    if issuers is None:
        return None
    if isinstance(issuers, str):
        raise AccountError("sees: a list of issuers, not one string")
    found = {checked_issuer(issuer) for issuer in issuers}
    found.discard(None)
    if not found:
        raise AccountError("sees: name at least one hospital, or all")
    return frozenset(i for i in found if i)


def checked_partner(role: str, issuer: str | None, sees: frozenset[str] | None) -> None:
    """A partner account belongs to one hospital and sees that hospital's
    children only: anything wider is refused, at creation and at any change."""
    if role == PARTNER and (issuer is None or sees != frozenset({issuer})):
        raise AccountError("a partner account needs its hospital (issuer) and sees it alone")


def _stored_sees(sees: frozenset[str] | None) -> str | None:
    return None if sees is None else json.dumps(sorted(sees), ensure_ascii=False)


def _loaded_sees(text: str | None) -> frozenset[str] | None:
    """A stored scope; one that cannot be read sees nothing (fails closed)."""
    if text is None:
        return None
    try:
        values = json.loads(text)
    except ValueError:
        return frozenset()
    if not isinstance(values, list):
        return frozenset()
    return frozenset(v for v in values if isinstance(v, str))


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str
    role: str
    disabled: bool
    language: str | None = None
    issuer: str | None = None  # the hospital; None: no uploads (STOW-RS)
    # Whose patients it sees: issuers, or None (ALL) for every hospital's.
    sees: frozenset[str] | None = None


def _user(row: Any) -> User:
    username, password_hash, role, disabled, language, issuer, sees = row[: len(_USER_COLUMNS)]
    return User(username, password_hash, role, disabled, language, issuer, sees=_loaded_sees(sees))


class Accounts:
    """Users in the index database. Hashing is the caller's (werkzeug's) job."""

    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock

    def add(
        self,
        username: str,
        password_hash: str,
        role: str,
        issuer: str | None = None,
        sees: Iterable[str] | _Own | None = OWN,
    ) -> None:
        """A new account; ``sees`` by default its own hospital's patients
        (all of them for an account without a hospital)."""
        issuer = checked_issuer(issuer)
        if isinstance(sees, _Own):
            scope = None if issuer is None else frozenset({issuer})
        else:
            scope = checked_sees(sees)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        checked_partner(role, issuer, scope)
        if not username or len(username) > 64 or not username.isprintable():
            raise AccountError("user name must be 1-64 printable characters")
        with self._lock, self.engine.begin() as conn:
            if conn.execute(select(users.c.pk).where(users.c.username == username)).first():
                raise AccountError(f"user {username!r} exists")
            conn.execute(
                users.insert().values(
                    username=username,
                    password_hash=password_hash,
                    role=role,
                    disabled=False,
                    created_at=datetime.now(UTC),
                    issuer=issuer,
                    sees=_stored_sees(scope),
                )
            )

    def get(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_USER_COLUMNS).where(users.c.username == username)).first()
        return None if row is None else _user(row)

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_USER_COLUMNS).order_by(users.c.username)).all()
        return [_user(row) for row in rows]

    def update(self, username: str, **values: object) -> None:
        """Change an account; a new password or disabling it ends every
        session of the user in the same transaction. ``sees``: issuers, or
        None (ALL) for every hospital; it applies from the next request."""
        if "issuer" in values:
            values["issuer"] = checked_issuer(str(values["issuer"] or ""))
        if "sees" in values:
            sees = values["sees"]
            if sees is not None and not isinstance(sees, Iterable):
                raise AccountError("sees: a list of issuers, or None for all")
            values["sees"] = _stored_sees(checked_sees(sees))
        with self._lock, self.engine.begin() as conn:
            now = conn.execute(select(*_USER_COLUMNS).where(users.c.username == username)).first()
            if now is not None:
                was = _user(now)
                checked_partner(
                    str(values.get("role", was.role)),
                    values.get("issuer", was.issuer),  # type: ignore[arg-type]
                    _loaded_sees(values["sees"]) if "sees" in values else was.sees,  # type: ignore[arg-type]
                )
            result = conn.execute(
                users.update().where(users.c.username == username).values(**values)
            )
            if result.rowcount == 0:
                raise AccountError(f"no user {username!r}")
            if "password_hash" in values or values.get("disabled"):
                self._end_sessions(conn, username)

    def open_session(self, username: str, limits: SessionLimits) -> str:
        """A new session of ``username``; its random id, for the cookie only.

        Expired sessions (anyone's) go first, then the user's oldest beyond
        `SESSIONS_PER_USER` - 1, so the table holds live sessions only."""
        token = secrets.token_urlsafe(32)
        now = int(time.time())
        with self._lock, self.engine.begin() as conn:
            conn.execute(web_sessions.delete().where(limits.expired(now)))
            kept = conn.execute(
                select(web_sessions.c.pk)
                .where(web_sessions.c.username == username)
                .order_by(web_sessions.c.pk.desc())
            ).scalars()
            dropped = list(kept)[SESSIONS_PER_USER - 1 :]
            if dropped:
                conn.execute(web_sessions.delete().where(web_sessions.c.pk.in_(dropped)))
            conn.execute(
                web_sessions.insert().values(
                    token_hash=_token_hash(token), username=username, started=now, seen=now
                )
            )
        return token

    def session_account(self, token: str, limits: SessionLimits) -> User | None:
        """The account of the live session ``token``, or None (unknown, ended
        or expired: an expired row is removed). Refreshes its last-seen time.
        One read (session joined with its user): it runs on every request."""
        key, now = _token_hash(token), int(time.time())
        query = (
            select(*_USER_COLUMNS, web_sessions.c.started, web_sessions.c.seen)
            .select_from(web_sessions.join(users, users.c.username == web_sessions.c.username))
            .where(web_sessions.c.token_hash == key)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        if now - row.seen > limits.idle or now - row.started > limits.lifetime:
            self.end_session(token)
            return None
        if now - row.seen >= SEEN_RESOLUTION:
            with self._lock, self.engine.begin() as conn:
                conn.execute(
                    web_sessions.update().where(web_sessions.c.token_hash == key).values(seen=now)
                )
        return _user(row)

    def session_user(self, token: str, limits: SessionLimits) -> str | None:
        """Whose live session ``token`` is, or None."""
        account = self.session_account(token, limits)
        return None if account is None else account.username

    def end_session(self, token: str) -> None:
        """Logout: this session's row goes, so its cookie opens nothing."""
        ended = web_sessions.delete().where(web_sessions.c.token_hash == _token_hash(token))
        with self._lock, self.engine.begin() as conn:
            conn.execute(ended)

    def end_sessions(self, username: str) -> None:
        """Every session of ``username`` ends (on every node process)."""
        with self._lock, self.engine.begin() as conn:
            self._end_sessions(conn, username)

    @staticmethod
    def _end_sessions(conn: Connection, username: str) -> None:
        conn.execute(web_sessions.delete().where(web_sessions.c.username == username))
