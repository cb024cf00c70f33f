"""Orthanc as a peer: it stores to the node, queries and retrieves from it,
and receives what the node forwards."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomnode.config import RemoteAE
from dicomnode.jobs.forwarding import Forwarder
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, save, xa_instance
from storage.keys import Level
from storage.query import Query
from tests.conftest import (
    DCMTK_ENV,
    REMOTES,
    PortTaken,
    free_port,
    make_config,
    on_free_ports,
    port_taken,
)

pytestmark = [pytest.mark.peers, pytest.mark.slow]


class Orthanc:
    def __init__(self, work: Path, dicom_port: int, node_port: int) -> None:
        self.dicom_port, self.http_port = dicom_port, free_port()
        config = work / "orthanc.json"
        work.mkdir(parents=True, exist_ok=True)
        config.write_text(
            json.dumps(
                {
                    "Name": "peer",
                    "StorageDirectory": str(work / "storage"),
                    "IndexDirectory": str(work / "index"),
                    "DicomAet": "ORTHANC",
                    "DicomPort": self.dicom_port,
                    "HttpPort": self.http_port,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "Plugins": [],
                    "DicomModalities": {"chdnode": ["CHDNODE", "127.0.0.1", node_port]},
                }
            )
        )
        self.process = subprocess.Popen(
            ["Orthanc", str(config)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        said = []
        for line in self.process.stderr:  # its own word that it listens, no polling
            said.append(line)
            if "Orthanc has started" in line:
                break
        else:
            raise (PortTaken if port_taken("".join(said)) else RuntimeError)(
                "Orthanc did not start:\n" + "".join(said[-20:])
            )

    def call(self, method: str, path: str, body: bytes | dict | None = None) -> object:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[Node, Orthanc]]:
    orthanc_port = free_port()  # reserved: Orthanc cannot bind port 0 and say so
    config = make_config(
        tmp_path / "node",
        remote_aes=(*REMOTES, RemoteAE("ORTHANC", "127.0.0.1", orthanc_port, "Orthanc peer")),
    )
    with Node(config, web=False) as node:  # on port 0: asked which it bound
        # Its HTTP port is probed (reserved) inside: again on another if taken.
        orthanc = on_free_ports(
            lambda: Orthanc(tmp_path / "orthanc", orthanc_port, node.dicom.port), count=0
        )
        try:
            yield node, orthanc
        finally:
            orthanc.stop()


def study_uids(node: Node) -> list[str]:
    rows = node.archive.index.find(Query(level=Level.STUDY, keys={"StudyInstanceUID": ""}))
    return [r["StudyInstanceUID"] for r in rows]


def test_orthanc_stores_queries_retrieves_and_receives(peers, tmp_path: Path) -> None:
    node, orthanc = peers
    path = save(xa_instance(PATIENTS[2], frames=3, rows=32, cols=32), tmp_path / "xa.dcm")
    uploaded = orthanc.call("POST", "/instances", path.read_bytes())
    # Orthanc stores to the node (C-STORE through its REST API).
    orthanc.call("POST", "/modalities/chdnode/store", {"Resources": [uploaded["ID"]]})
    (study,) = study_uids(node)
    # Orthanc queries the node (C-FIND) and retrieves from it (C-MOVE to itself).
    orthanc.call("DELETE", f"/instances/{uploaded['ID']}")
    query = orthanc.call(
        "POST", "/modalities/chdnode/query", {"Level": "Study", "Query": {"PatientID": "CHD-*"}}
    )
    answers = orthanc.call("GET", f"/queries/{query['ID']}/answers?expand")
    assert [a["0020,000d"]["Value"] for a in answers] == [study]
    orthanc.call("POST", f"/queries/{query['ID']}/answers/0/retrieve", {"TargetAet": "ORTHANC"})
    assert orthanc.call("GET", "/statistics")["CountInstances"] == 1
    (instance,) = orthanc.call("GET", "/instances?expand")
    assert instance["MainDicomTags"]["SOPInstanceUID"].startswith("2.25.")  # de-identified
    # The node forwards to Orthanc (its queue, a C-STORE association).
    orthanc.call("DELETE", f"/instances/{instance['ID']}")
    forwarder = Forwarder(node.config, node.archive)
    assert forwarder.enqueue_study(study, "ORTHANC") == 1
    assert forwarder.run_once() == {"sent": 1, "waiting": 0}
    assert orthanc.call("GET", "/statistics")["CountInstances"] == 1
