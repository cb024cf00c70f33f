"""Starting the peers the benchmarks measure against, one way for all."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENV = {**os.environ, "TCP_NODELAY": "1"}
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


_RESERVED: list[socket.socket] = []


def free_port() -> int:
    """A port held bound (SO_REUSEADDR, never listening) until the benchmark
    ends: no other process's probe gets it, yet the peer or node it is for,
    which binds with SO_REUSEADDR too, can (tests/conftest.py reserve_port)."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    _RESERVED.append(held)
    return held.getsockname()[1]


def wait_for_echo(port: int, ae_title: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{ae_title} exited with {process.returncode}")
        echo = subprocess.run(
            ["echoscu", "-to", "2", "-aec", ae_title, "127.0.0.1", str(port)],
            env=ENV,
            capture_output=True,
        )
        # A refusal of echoscu's own AE title also means the server is up.
        if echo.returncode == 0 or b"Association Rejected" in echo.stderr:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{ae_title} did not answer C-ECHO within 60 s")


def wait_for_http(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/")
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers HTTP on port {port}")


NODE_CLI = [sys.executable, "-m", "dicomnode.cli"]


def node_env(work: Path, **settings: object) -> dict[str, str]:
    """The environment of a benchmark's `dicomnode`: data and keys under
    ``work``, no configuration file, any calling AE; ``settings`` become
    ``DICOMNODE_<KEY>`` overrides."""
    env = {
        **ENV,
        "DICOMNODE_CONFIG": os.devnull,
        "DICOMNODE_DATA_DIR": str(work / "var"),
        "DICOMNODE_KEY_DIR": str(work / "keys"),
        "DICOMNODE_LOG_LEVEL": "WARNING",
        "DICOMNODE_MIN_FREE_DISK_MB": "64",
        "DICOMNODE_REQUIRE_KNOWN_AE": "false",
    }
    env.update({f"DICOMNODE_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def start_node(env: dict[str, str], log: Path) -> subprocess.Popen:
    """`dicomnode serve`, logging to a file (a pipe nobody reads would fill
    up and block it), once it answers C-ECHO."""
    with log.open("w") as handle:
        process = subprocess.Popen(
            [*NODE_CLI, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=handle
        )
    wait_for_echo(int(env["DICOMNODE_DIMSE_PORT"]), "CHDNODE", process)
    return process


@dataclass(frozen=True)
class Orthanc:
    dicom_port: int
    http_port: int
    pid: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@contextmanager
def orthanc(
    work: Path, *, dicomweb: bool = False, modalities: dict | None = None, sync: bool = True
) -> Iterator[Orthanc]:
    """Orthanc with its storage under ``work``, syncing its storage area like
    the node does (unless a load is only there to be queried); with the
    DICOMweb plugin when asked (and installed)."""
    peer = Orthanc(free_port(), free_port())
    plugins = [DICOMWEB_PLUGIN] if dicomweb and Path(DICOMWEB_PLUGIN).exists() else []
    work.mkdir(parents=True, exist_ok=True)
    config = work / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(work / "orthanc" / "storage"),
                "IndexDirectory": str(work / "orthanc" / "index"),
                "DicomAet": "ORTHANC",
                "DicomPort": peer.dicom_port,
                "HttpPort": peer.http_port,
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "StorageCompression": False,
                "SyncStorageArea": sync,
                "DicomCheckCalledAet": True,
                "Plugins": plugins,
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                "DicomModalities": modalities or {},
            }
        )
    )
    process = subprocess.Popen(
        ["Orthanc", str(config)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_echo(peer.dicom_port, "ORTHANC", process)
        wait_for_http(peer.http_port)
        yield Orthanc(peer.dicom_port, peer.http_port, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
