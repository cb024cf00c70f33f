"""Shared fixtures: a node on ephemeral ports, DCMTK helpers, synthetic data."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import expect
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from dicomnode.config import Config, RemoteAE
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming, Ingestor
from dicomnode.node import Node, open_archive
from dicomnode.ops.samples import PATIENTS, UID_ROOT, save, xa_instance
from storage.archive import Archive
from tests.postgres import LocalPostgres
from tests.s3server import LocalS3

# What a person reads appears when the node has answered: on a loaded machine
# (four workers on two cores) that can take longer than Playwright's 5 s, so
# assertions wait for their condition with a generous ceiling instead.
expect.set_options(timeout=30_000)

T = TypeVar("T")

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
REMOTES = (
    RemoteAE("BISHKEK_ECHO", "127.0.0.1", 11113, "NCC Bishkek"),
    RemoteAE("BISHKEK_CATH", "127.0.0.1", 11114, "NCC Bishkek"),
    RemoteAE("DUSHANBE_ECHO", "127.0.0.1", 11115, "RCC Dushanbe"),
)


_RESERVED: list[socket.socket] = []


def reserve_port() -> socket.socket:
    """A socket bound to a free port with SO_REUSEADDR and never listening:
    while it is open no other process's probe or port 0 gets that port, yet
    a server that binds with SO_REUSEADDR too (DCMTK, Orthanc, PostgreSQL,
    pynetdicom, cheroot) can, and connections to it are refused until one does."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    return held


def free_port() -> int:
    """A port for an external peer that cannot bind port 0 and say which it
    got (start it with `on_free_ports`); the node and pynetdicom servers bind
    port 0 and are asked. Reserved (`reserve_port`) until this test process
    ends: a probe that let go of the port would race with other processes."""
    held = reserve_port()
    _RESERVED.append(held)
    return held.getsockname()[1]


class PortTaken(RuntimeError):
    """A peer could not bind its probed port: another process took it first."""


def port_taken(output: str) -> bool:
    """Whether a peer's output says its port was in use (DCMTK, Orthanc,
    PostgreSQL and the kernel's EADDRINUSE text all say "already in use")."""
    return "already in use" in output.lower()


def on_free_ports(start: Callable[..., T], count: int = 1, attempts: int = 5) -> T:
    """``start(*ports)`` on ``count`` probed ports, again on new ones while it
    raises PortTaken (the race between the probe and the peer's bind)."""
    for _ in range(attempts - 1):
        try:
            return start(*(free_port() for _ in range(count)))
        except PortTaken:
            continue
    return start(*(free_port() for _ in range(count)))


def listening(process: subprocess.Popen, port: int, patience: float = 120) -> None:
    """Wait until ``process`` listens on ``port`` (its own socket, read from
    /proc). PortTaken if it ended saying its port was in use; RuntimeError
    if it ended otherwise."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if process.poll() is None:
            if _listens(process.pid, port):
                return
            time.sleep(0.05)
            continue
        output = _said(process)
        if port_taken(output):
            raise PortTaken(output[-2000:])
        raise RuntimeError(f"{process.args[0]} ended ({process.returncode}):\n{output[-2000:]}")
    process.kill()
    raise RuntimeError(f"{process.args[0]} did not listen on {port} in {patience} s")


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds a socket listening on ``port``
    (a connection could reach another process that took the port)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    try:
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it ended meanwhile
        return False


def _said(process: subprocess.Popen) -> str:
    """What an ended process wrote to the pipes the test did not read."""
    parts = []
    for stream in (process.stdout, process.stderr):
        if stream is not None and not stream.closed:
            data = stream.read()
            parts.append(data.decode(errors="replace") if isinstance(data, bytes) else data)
    return "".join(parts)


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port nothing listens on for as long as the block runs (bound, never
    listening: connections are refused), for "the peer is down" tests."""
    with reserve_port() as held:
        yield held.getsockname()[1]


BANNER = re.compile(r"on DICOM port (\d+), web (https?://\S+?)/? ;")


def served(banner: str) -> tuple[int, str]:
    """The DICOM port and web address `dicomnode serve` bound, from its first
    line (started with DICOMNODE_DIMSE_PORT=0 and DICOMNODE_HTTP_PORT=0)."""
    found = BANNER.search(banner)
    assert found, banner
    return int(found.group(1)), found.group(2)


def make_config(tmp_path: Path, **overrides: object) -> Config:
    values: dict[str, object] = {
        "data_dir": tmp_path / "var",
        "key_dir": tmp_path / "secrets",
        "dimse_host": "127.0.0.1",
        "dimse_port": 0,
        "http_port": 0,
        "min_free_disk_mb": 0,
        "remote_aes": REMOTES,
        # DCMTK's and pynetdicom's default calling AE titles are not listed:
        # tests of the known-AE table turn this on.
        "require_known_ae": False,
        # OCR before the answer, so a test sees a hold in the status it
        # asserts on; tests/test_deferred_ocr.py runs the default (after it).
        "ocr_deferred": False,
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One PostgreSQL server for the session (Debian package; `make test` installs it)."""
    server = LocalPostgres().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    """One S3-compatible server for the session (moto's standalone server)."""
    server = LocalS3().start()
    yield server
    server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start PostgreSQL are slow (initdb and a server: seconds),
    whether by the ``postgres`` fixture or a "postgresql" parameter: `make
    check` keeps their SQLite twins, `make test` runs both."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "postgres" in getattr(item, "fixturenames", ()) or "postgresql" in map(
            str, params.values()
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_index_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """The node's configuration on each index back end in turn."""
    if request.param == "sqlite":
        return make_config(tmp_path)
    server: LocalPostgres = request.getfixturevalue("postgres")
    return make_config(tmp_path, index_url=server.database())


@pytest.fixture
def archive(config: Config) -> Iterator[Archive]:
    archive = open_archive(config)
    yield archive
    archive.close()


@pytest.fixture
def ingestor(config: Config, archive: Archive) -> Ingestor:
    return Ingestor(config, archive)


@pytest.fixture
def node(config: Config) -> Iterator[Node]:
    with Node(config, web=False) as running:
        yield running


def dcmtk(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool with TCP_NODELAY (else each message waits for a delayed ACK)."""
    if shutil.which(str(args[0])) is None:
        pytest.fail(f"{args[0]} is not installed: run `make peers`")
    return subprocess.run(
        [str(a) for a in args],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


@pytest.fixture(scope="session")
def xa_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic multi-frame XA runs in the syntaxes cath labs send.

    RLE and JPEG 2000 are encoded by pydicom; JPEG Lossless (SV1, NH14) and
    JPEG-LS by DCMTK's dcmcjpeg / dcmcjpls, as a cath lab's DCMTK would.
    """
    folder = tmp_path_factory.mktemp("xa")
    study = generate_uid(UID_ROOT)
    encoders = {
        "rle": (RLELossless, None),
        "j2k": (JPEG2000Lossless, None),
        "jpeg-sv1": (ExplicitVRLittleEndian, ("dcmcjpeg", "+e1")),
        "jpeg-nh14": (ExplicitVRLittleEndian, ("dcmcjpeg", "+el")),
        "jpeg-ls": (ExplicitVRLittleEndian, ("dcmcjpls", "+el")),
    }
    files: dict[str, Path] = {}
    for seed, (name, (syntax, tool)) in enumerate(encoders.items()):
        ds = xa_instance(
            PATIENTS[seed % len(PATIENTS)],
            frames=12,
            rows=256,
            cols=256,
            transfer_syntax=syntax,
            study_uid=study,
            instance_number=seed + 1,
            seed=seed,
        )
        target = folder / f"{name}.dcm"
        if tool is None:
            save(ds, target)
        else:
            raw = save(ds, folder / f"{name}-raw.dcm")
            result = dcmtk(*tool, raw, target)
            assert result.returncode == 0, result.stderr
        files[name] = target
    return files


def round_trip(ds: Dataset) -> Dataset:
    """Written and read back, as the data set would arrive from a file."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue()))


def encode(ds: Dataset) -> tuple[bytes, str]:
    """The dataset as a peer would send it: encoded bytes and transfer syntax."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return split_file(buffer.getvalue())


def incoming(ds: Dataset, calling_ae: str | None = "BISHKEK_ECHO", **extra: object) -> Incoming:
    data, syntax = encode(ds)
    return Incoming(data=data, transfer_syntax=syntax, calling_ae=calling_ae, **extra)  # type: ignore[arg-type]


def dicomweb_world(folder: Path, password: str, **overrides: object) -> Iterator[tuple]:
    """A DICOMweb app and its archive, with one cardiologist "pacs" of NCC
    Bishkek who sees every hospital: the module-scoped world of the
    DICOMweb tests (a fixture yields from it)."""
    from werkzeug.security import generate_password_hash

    from viewer import create_app

    config = make_config(folder, **overrides)
    archive = open_archive(config)
    archive.index.accounts.add(
        "pacs", generate_password_hash(password), "cardiologist", "NCC Bishkek", sees=None
    )
    yield create_app(config, archive, b"k" * 32), archive
    archive.close()
