"""A throw-away PostgreSQL server for the tests and benchmarks.

Debian's `postgresql` package puts initdb and pg_ctl under
/usr/lib/postgresql/<version>/bin; the server refuses to run as root, so as
root the cluster belongs to the package's `postgres` user. It listens on
loopback on a free port (reserved, see `_reserve`), trusts local
connections, and is stopped (fast shutdown) when the fixture ends.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def available() -> bool:
    return _bindir() is not None


def _reserve() -> socket.socket:
    """A free port held bound (SO_REUSEADDR, never listening) while the server
    runs: no other process's probe or port 0 gets it, yet PostgreSQL, which
    binds with SO_REUSEADDR too, can (tests/conftest.py's reserve_port)."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    return held


class LocalPostgres:
    """One cluster in a new directory under the system temp dir.

    Not under pytest's tmp_path: as root that is private to root, and the
    server runs as ``postgres``. `database()` hands out a fresh database each.
    """

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="dicomnode-pg-"))
        self.data = self.root / "pgdata"
        self._held = _reserve()
        self.port = self._held.getsockname()[1]
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        if self._as_owner:
            shutil.chown(self.root, "postgres")

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as_owner, str(self.bindir / tool), *args]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root)

    def start(self, attempts: int = 5) -> LocalPostgres:
        """initdb, then the server on a probed port: PostgreSQL cannot take
        port 0 and say which it got, so when another process took the port
        between the probe and the bind (its log says so), again on a new one."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        log = self.root / "log"
        for attempt in range(attempts):
            if attempt:
                self._held.close()
                self._held = _reserve()
                self.port = self._held.getsockname()[1]
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200 -c fsync=on"
            )
            before = log.stat().st_size if log.exists() else 0
            try:
                # -w waits until the server accepts connections (pg_ctl polls it).
                self._run(
                    "pg_ctl", "-D", str(self.data), "-w", "-l", str(log), "-o", options, "start"
                )
                return self
            except subprocess.CalledProcessError:
                said = log.read_text(errors="replace")[before:] if log.exists() else ""
                if "already in use" not in said:
                    raise RuntimeError(f"PostgreSQL did not start:\n{said[-2000:]}") from None
        raise RuntimeError(f"PostgreSQL found no free port in {attempts} attempts")

    def restart(self) -> None:
        """Stop and start again (same options): every client connection is cut."""
        log = str(self.root / "log")  # else the server keeps our output pipe open
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        """Fast shutdown and the folder removed; again, a no-op."""
        if not self.data.exists():
            return
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self._held.close()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
