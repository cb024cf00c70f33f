"""The PostgreSQL index in a backup: pg_dump's custom format, pg_restore back.

The password (if the URL has one) goes to the tools through PGPASSWORD,
never on their command line, where any local user could read it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url

from storage.index import create_index_engine
from storage.schema import instances


class DumpError(RuntimeError):
    """pg_dump or pg_restore failed or is missing; the message says why."""


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The DSN for the tools' command line, with no password in it (in the
    user part or a ``password`` parameter: both go through PGPASSWORD)."""
    parsed = make_url(url)
    env = dict(os.environ)
    query = dict(parsed.query)
    if any(k.lower() == "sslpassword" for k in query):
        raise DumpError(
            "index_url carries sslpassword, which the tools would show on their command line:"
            " give the client key without a passphrase, or back up with pg_dump yourself"
        )
    password = parsed.password or next(
        (str(v) for k, v in query.items() if k.lower() == "password"), None
    )
    if password:
        env["PGPASSWORD"] = password
    query = {k: v for k, v in query.items() if k.lower() != "password"}
    # URL.set ignores None ("no change"): the password stayed on the command
    # line. The URL is a named tuple; _replace does remove it.
    plain = parsed._replace(password=None).set(drivername="postgresql", query=query)
    return plain.render_as_string(hide_password=False), env


def _run(tool: str, *args: str, env: dict[str, str]) -> None:
    if shutil.which(tool) is None:
        raise DumpError(f"{tool} is not installed (Debian package postgresql-client)")
    done = subprocess.run([tool, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        # The tools' messages name tables and the server, not patient data.
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise DumpError(f"{tool}: {last}")


def dump(url: str, target: Path) -> None:
    """A consistent snapshot of the whole index while the node runs."""
    dsn, env = _libpq(url)
    _run("pg_dump", "--format=custom", "--no-owner", f"--file={target}", f"--dbname={dsn}", env=env)


def holds_instances(url: str) -> bool:
    """Looked at without opening the index, which would migrate (create
    tables in) the database a restore is about to fill."""
    engine = create_index_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("instances"):
                return False
            return conn.execute(select(instances.c.pk).limit(1)).first() is not None
    finally:
        engine.dispose()


def restore(url: str, source: Path) -> None:
    """Replace the index's tables with the dump's, in one transaction."""
    dsn, env = _libpq(url)
    _run(
        "pg_restore",
        "--clean",
        "--if-exists",
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        f"--dbname={dsn}",
        str(source),
        env=env,
    )
