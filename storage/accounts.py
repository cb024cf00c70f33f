"""Web users and their roles (the people, not the DICOM peers)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Boolean, Column, DateTime, Integer, String, Table, select
from sqlalchemy.engine import Engine

from storage.schema import metadata
from storage.values import normalise_issuer

ROLES = ("cardiologist", "researcher", "admin")
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
)


_USER_COLUMNS = (
    users.c.username,
    users.c.password_hash,
    users.c.role,
    users.c.disabled,
    users.c.language,
    users.c.issuer,
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


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str
    role: str
    disabled: bool
    language: str | None = None
    issuer: str | None = None  # the hospital; None: no uploads (STOW-RS)


class Accounts:
    """Users in the index database. Hashing is the caller's (werkzeug's) job."""

    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock

    def add(self, username: str, password_hash: str, role: str, issuer: str | None = None) -> None:
        issuer = checked_issuer(issuer)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
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
                )
            )

    def get(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_USER_COLUMNS).where(users.c.username == username)).first()
        return None if row is None else User(*row)

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_USER_COLUMNS).order_by(users.c.username)).all()
        return [User(*row) for row in rows]

    def update(self, username: str, **values: object) -> None:
        if "issuer" in values:
            values["issuer"] = checked_issuer(str(values["issuer"] or ""))
        with self._lock, self.engine.begin() as conn:
            result = conn.execute(
                users.update().where(users.c.username == username).values(**values)
            )
            if result.rowcount == 0:
                raise AccountError(f"no user {username!r}")
