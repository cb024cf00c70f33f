"""Orthanc 1.10 with its DICOMweb plugin (Debian orthanc-dicomweb) as a
DICOMweb client of the node, at the plugin's defaults: it searches the node
(QIDO-RS), retrieves a study into itself (WADO-RS) and stores into the node
(STOW-RS), all through Orthanc's own REST API and HTTP Basic."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from werkzeug.security import generate_password_hash

from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance
from storage.keys import Level
from storage.query import Query
from tests.conftest import (
    DCMTK_ENV,
    PortTaken,
    free_port,
    incoming,
    make_config,
    on_free_ports,
    port_taken,
)

pytestmark = [pytest.mark.peers, pytest.mark.slow]

PASSWORD = "correct horse battery"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class OrthancWeb:
    """Orthanc with the DICOMweb plugin, the node configured as server "node"."""

    def __init__(self, work: Path, node_url: str) -> None:
        if not PLUGIN.exists():
            pytest.fail(f"{PLUGIN} is missing: run `make peers` (Debian orthanc-dicomweb)")
        self.http_port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        config = work / "orthanc.json"
        config.write_text(
            json.dumps(
                {
                    "Name": "peer",
                    "StorageDirectory": str(work / "storage"),
                    "IndexDirectory": str(work / "index"),
                    "DicomAet": "ORTHANC",
                    "DicomPort": free_port(),
                    "HttpPort": self.http_port,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "Plugins": [str(PLUGIN)],
                    "DicomWeb": {
                        "Enable": True,
                        "Root": "/dicom-web/",
                        "Servers": {"node": [node_url, "pacs", PASSWORD]},
                    },
                }
            )
        )
        self.log: list[str] = []
        self._started = threading.Event()
        self.process = subprocess.Popen(
            ["Orthanc", "--verbose", str(config)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Its log is drained all along (a full pipe would stall it) and kept
        # to tell why a request failed.
        threading.Thread(target=self._drain, daemon=True).start()
        self._started.wait()
        if self.process.poll() is not None:
            said = "".join(self.log[-30:])
            raise (PortTaken if port_taken(said) else RuntimeError)(
                "Orthanc did not start:\n" + said
            )

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if "Orthanc has started" in line:
                self._started.set()
        self._started.set()  # it exited

    def call(self, method: str, path: str, body: bytes | dict | None = None) -> object:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            log = "".join(
                line for line in self.log[-40:] if "HttpClient" in line or "E" in line[:1]
            )
            raise AssertionError(f"Orthanc {method} {path}: {exc.code} {detail}\n{log}") from None
        return json.loads(payload) if payload.strip() else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[Node, OrthancWeb]]:
    config = make_config(tmp_path / "node", http_host="127.0.0.1")
    with Node(replace(config), web=True) as node:
        accounts = node.archive.index.accounts
        accounts.add("pacs", generate_password_hash(PASSWORD), "cardiologist", "NCC Bishkek")
        url = f"http://127.0.0.1:{node.http_port}/dicom-web/"
        # Its ports are probed (reserved) inside: again on others if one was taken.
        orthanc = on_free_ports(lambda: OrthancWeb(tmp_path / "orthanc", url), count=0)
        try:
            yield node, orthanc
        finally:
            orthanc.stop()


def node_instances(node: Node) -> dict[str, str]:
    """SOP Instance UID -> Study Instance UID of everything the node holds."""
    keys = {"SOPInstanceUID": "", "StudyInstanceUID": ""}
    rows = node.archive.index.find(Query(level=Level.IMAGE, keys=keys))
    return {r["SOPInstanceUID"]: r["StudyInstanceUID"] for r in rows}


def pixels(data: bytes) -> np.ndarray:
    return dcmread(BytesIO(data)).pixel_array


def test_orthanc_searches_and_retrieves_from_the_node(peers) -> None:
    node, orthanc = peers
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    run = {"rows": 32, "cols": 32, "study_uid": study, "series_uid": series}
    sent = [  # one run as the cath lab stored it (RLE), one uncompressed
        xa_instance(PATIENTS[1], frames=3, seed=1, **run),
        xa_instance(
            PATIENTS[1], frames=2, seed=2, transfer_syntax=ExplicitVRLittleEndian,
            instance_number=2, **run,
        ),
    ]  # fmt: skip
    for ds in sent:
        assert node.ingestor.ingest(incoming(ds, "BISHKEK_CATH")).status in (0x0000, 0xB000)
    held = node_instances(node)
    (new_study,) = set(held.values())

    # QIDO-RS through Orthanc's REST API, as its Explorer does (Orthanc
    # answers in its own JSON: one value as a string).
    studies = orthanc.call("POST", "/dicom-web/servers/node/qido", {"Uri": "/studies"})
    assert [s["0020000D"]["Value"] for s in studies] == [new_study]
    assert studies[0]["00100020"]["Value"].startswith("CHD-")
    found = orthanc.call(
        "POST", "/dicom-web/servers/node/qido", {"Uri": f"/studies/{new_study}/series"}
    )
    assert len(found) == 1 and found[0]["00080060"]["Value"] == "XA"

    # WADO-RS: the study retrieved into Orthanc, every instance, same pixels.
    orthanc.call("POST", "/dicom-web/servers/node/retrieve", {"Resources": [{"Study": new_study}]})
    arrived = orthanc.call("GET", "/instances?expand")
    assert {i["MainDicomTags"]["SOPInstanceUID"] for i in arrived} == set(held)
    for item in arrived:
        uid = item["MainDicomTags"]["SOPInstanceUID"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{orthanc.http_port}/instances/{item['ID']}/file"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            received = response.read()
        assert np.array_equal(pixels(received), pixels(node.archive.read(uid)))
        assert PATIENTS[1].patient_id.encode() not in received


def test_orthanc_stores_into_the_node_de_identified(peers, tmp_path: Path) -> None:
    node, orthanc = peers
    sent = xa_instance(PATIENTS[3], frames=3, rows=32, cols=32, seed=4)
    buffer = BytesIO()
    sent.save_as(buffer, enforce_file_format=True)
    uploaded = orthanc.call("POST", "/instances", buffer.getvalue())

    # STOW-RS from Orthanc to the node.
    orthanc.call("POST", "/dicom-web/servers/node/stow", {"Resources": [uploaded["ID"]]})
    (uid,) = node_instances(node)
    assert uid != sent.SOPInstanceUID and uid.startswith("2.25.")
    stored_bytes = node.archive.read(uid)
    stored = dcmread(BytesIO(stored_bytes))
    assert str(stored.PatientID).startswith("CHD-")
    for word in (PATIENTS[3].patient_id, "Nazarov", "Timur", PATIENTS[3].birth_date):
        assert word.encode() not in stored_bytes
    assert stored.StudyInstanceUID != sent.StudyInstanceUID
    assert np.array_equal(stored.pixel_array, sent.pixel_array)
