"""Retrieve benchmark: C-MOVE and WADO-RS from the node and from Orthanc.

    python -m bench.retrieve        # (or `make bench`)

The multi-frame set of `bench.ingest` (echo clips and angio runs, ~430 MB)
is put into a fresh node (`dicomnode import`) and a fresh Orthanc (REST
upload); both servers are then restarted so their peak memory counts only
the serving. Each is asked for everything by C-MOVE (DCMTK movescu as its own
destination, TCP_NODELAY=1) and by WADO-RS (one multipart request per study).
Printed: wall time, MB/s and the server's peak RSS (VmHWM).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import OUT, build_sets
from bench.peers import ENV, free_port, orthanc, wait_for_echo, wait_for_http

PASSWORD = "cine timing run 2026"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wado(http_port: int, prefix: str, studies: list[str], auth: str | None) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", http_port)
    headers = {"Accept": 'multipart/related; type="application/dicom"'}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    start = time.perf_counter()
    for study in studies:
        connection.request("GET", f"{prefix}/studies/{study}", headers=headers)
        response = connection.getresponse()
        while response.read(1 << 20):
            pass
        if response.status != 200:
            print(f"WADO-RS {prefix}/studies/{study}: HTTP {response.status}", file=sys.stderr)
    return time.perf_counter() - start


def move_studies(port: int, ae: str, own: int, studies: list[str], out: Path) -> float:
    """C-MOVE study by study (Orthanc moves by unique keys only), to movescu itself."""
    out.mkdir()
    start = time.perf_counter()
    for study in studies:
        subprocess.run(
            [
                "movescu",
                "-S",
                "+xa",
                "-aet",
                "MOVESCU",
                "-aem",
                "MOVESCU",
                "-aec",
                ae,
                "--port",
                str(own),
                "-od",
                str(out),
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study}",
                "127.0.0.1",
                str(port),
            ],
            env=ENV,
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - start


def qido_studies(http_port: int, prefix: str, auth: str | None) -> list[str]:
    connection = http.client.HTTPConnection("127.0.0.1", http_port)
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    connection.request("GET", f"{prefix}/studies", headers=headers)
    return [s["0020000D"]["Value"][0] for s in json.loads(connection.getresponse().read())]


def main() -> int:
    OUT.mkdir(exist_ok=True)
    folder = build_sets(OUT / "sets", 2000, 16, 60)["multiframe"]
    megabytes = sum(p.stat().st_size for p in folder.glob("*.dcm")) / 1e6
    rows = []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = Path(tmp)
        dimse, web = free_port(), free_port()
        env = {
            **ENV,
            "DICOMNODE_DATA_DIR": str(work / "var"),
            "DICOMNODE_KEY_DIR": str(work / "keys"),
            "DICOMNODE_DIMSE_PORT": str(dimse),
            "DICOMNODE_HTTP_PORT": str(web),
            "DICOMNODE_LOG_LEVEL": "WARNING",
            "DICOMNODE_MIN_FREE_DISK_MB": "64",
            "DICOMNODE_CONFIG": str(work / "node.toml"),
        }
        cli = [sys.executable, "-m", "dicomnode.cli"]
        subprocess.run(
            [*cli, "-c", os.devnull, "import", "--no-progress", str(folder)],
            env={**env, "DICOMNODE_CONFIG": os.devnull},
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*cli, "-c", os.devnull, "user", "add", "bench", "--password-stdin"],
            env={**env, "DICOMNODE_CONFIG": os.devnull},
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        own = free_port()
        (work / "node.toml").write_text(
            f'[[remote_ae]]\nae_title = "MOVESCU"\nhost = "127.0.0.1"\nport = {own}\n'
            'query_issuers = ["*"]\n'  # it retrieves every hospital's studies
        )
        with (work / "node.log").open("w") as log:
            node = subprocess.Popen([*cli, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for_echo(dimse, "CHDNODE", node)
            wait_for_http(web)
            studies = qido_studies(web, "/dicom-web", f"bench:{PASSWORD}")
            out = work / "moved-node"
            seconds = move_studies(dimse, "CHDNODE", own, studies, out)
            rows.append(("node", "C-MOVE", seconds, len(list(out.iterdir()))))
            rows.append(
                (
                    "node",
                    "WADO-RS",
                    wado(web, "/dicom-web", studies, f"bench:{PASSWORD}"),
                    len(studies),
                )
            )
            node_rss = peak_rss_mb(node.pid)
        finally:
            node.terminate()
            node.wait(timeout=60)
        with orthanc(work / "o1", dicomweb=True) as peer:
            connection = http.client.HTTPConnection("127.0.0.1", peer.http_port)
            for path in folder.glob("*.dcm"):
                connection.request("POST", "/instances", body=path.read_bytes())
                connection.getresponse().read()
        (work / "o1").rename(work / "o2")
        orthanc_rows, orthanc_rss = [], float("nan")
        # Restart on the same storage so the peak RSS counts the serving only.
        destination = {"MOVESCU": ["MOVESCU", "127.0.0.1", own]}
        with orthanc(work / "o2", dicomweb=True, modalities=destination) as peer:
            studies = qido_studies(peer.http_port, "/dicom-web", None)
            out = work / "moved-orthanc"
            seconds = move_studies(peer.dicom_port, "ORTHANC", own, studies, out)
            orthanc_rows.append(("Orthanc", "C-MOVE", seconds, len(list(out.iterdir()))))
            orthanc_rows.append(
                (
                    "Orthanc",
                    "WADO-RS",
                    wado(peer.http_port, "/dicom-web", studies, None),
                    len(studies),
                )
            )
            orthanc_rss = peak_rss_mb(peer.pid)
        rows += orthanc_rows
    print("| server | service | items | s | MB/s |")
    print("|---|---|---:|---:|---:|")
    for server, service, seconds, items in rows:
        print(f"| {server} | {service} | {items} | {seconds:.2f} | {megabytes / seconds:.0f} |")
    print(f"\npeak RSS while serving: node {node_rss:.0f} MB, Orthanc {orthanc_rss:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
