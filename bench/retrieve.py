"""Retrieve benchmark: C-MOVE and WADO-RS from the node and from Orthanc.

    python -m bench.retrieve        # (or `make bench`)

The multi-frame set of `bench.ingest` (echo clips and angio runs, ~430 MB)
is put into a fresh node (`dicomnode import`) and a fresh Orthanc (REST
upload); both servers are then restarted so their peak memory counts only
the serving. Each is asked for everything by C-MOVE (DCMTK movescu, to a DCMTK storescp,
TCP_NODELAY=1) and by WADO-RS (one multipart request per study). Two sets:
the multi-frame clips and 200 small ultrasound instances. Printed: wall
time, MB/s, the C-MOVE ratio against Orthanc and each server's peak RSS
(VmHWM).
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


def move_studies(port: int, ae: str, destination: int, studies: list[str], out: Path) -> float:
    """C-MOVE study by study (Orthanc moves by unique keys only) to a DCMTK
    storescp at its defaults plus every syntax (``+xa``): a destination far
    faster than either server, so the figure is the server's sending.
    (movescu as its own destination costs ~25 ms an instance itself.)"""
    out.mkdir()
    scp = subprocess.Popen(
        ["storescp", "+xa", "-aet", "DEST", "-od", str(out), str(destination)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_echo(destination, "DEST", scp)
        start = time.perf_counter()
        for study in studies:
            subprocess.run(
                [
                    "movescu", "-S", "-aet", "MOVESCU", "-aem", "DEST", "-aec", ae,
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                    "127.0.0.1", str(port),
                ],
                env=ENV,
                check=True,
                capture_output=True,
            )  # fmt: skip
        return time.perf_counter() - start
    finally:
        scp.terminate()
        scp.wait(timeout=60)


def qido_studies(http_port: int, prefix: str, auth: str | None) -> list[str]:
    connection = http.client.HTTPConnection("127.0.0.1", http_port)
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    connection.request("GET", f"{prefix}/studies", headers=headers)
    return [s["0020000D"]["Value"][0] for s in json.loads(connection.getresponse().read())]


def node_rows(folder: Path, work: Path) -> tuple[list[tuple], float]:
    """The node: imported, restarted, asked by C-MOVE and WADO-RS."""
    dimse, web, destination = free_port(), free_port(), free_port()
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
    offline = {**env, "DICOMNODE_CONFIG": os.devnull}
    subprocess.run(
        [*cli, "import", "--no-progress", str(folder)], env=offline, check=True, capture_output=True
    )
    subprocess.run(
        [*cli, "user", "add", "bench", "--password-stdin"],
        env=offline,
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    (work / "node.toml").write_text(
        '[[remote_ae]]\nae_title = "MOVESCU"\nhost = "127.0.0.1"\nport = 1\n'
        'query_issuers = ["*"]\nmove_destinations = ["DEST"]\n'  # every hospital's studies
        f'[[remote_ae]]\nae_title = "DEST"\nhost = "127.0.0.1"\nport = {destination}\n'
    )
    with (work / "node.log").open("w") as log:
        node = subprocess.Popen([*cli, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for_echo(dimse, "CHDNODE", node)
        wait_for_http(web)
        studies = qido_studies(web, "/dicom-web", f"bench:{PASSWORD}")
        out = work / "moved-node"
        seconds = move_studies(dimse, "CHDNODE", destination, studies, out)
        rows = [("node", "C-MOVE", seconds, len(list(out.iterdir())))]
        wado_seconds = wado(web, "/dicom-web", studies, f"bench:{PASSWORD}")
        rows.append(("node", "WADO-RS", wado_seconds, len(studies)))
        return rows, peak_rss_mb(node.pid)
    finally:
        node.terminate()
        node.wait(timeout=60)


def orthanc_rows(folder: Path, work: Path) -> tuple[list[tuple], float]:
    """Orthanc: uploaded, restarted on the same storage (peak RSS of the
    serving only), asked alike."""
    with orthanc(work / "o1", dicomweb=True) as peer:
        connection = http.client.HTTPConnection("127.0.0.1", peer.http_port)
        for path in folder.glob("*.dcm"):
            connection.request("POST", "/instances", body=path.read_bytes())
            connection.getresponse().read()
    (work / "o1").rename(work / "o2")
    destination = free_port()
    # The caller must be known too: Orthanc refuses C-MOVE from unknown AEs.
    modalities = {
        "DEST": ["DEST", "127.0.0.1", destination],
        "MOVESCU": ["MOVESCU", "127.0.0.1", free_port()],
    }
    with orthanc(work / "o2", dicomweb=True, modalities=modalities) as peer:
        studies = qido_studies(peer.http_port, "/dicom-web", None)
        out = work / "moved-orthanc"
        seconds = move_studies(peer.dicom_port, "ORTHANC", destination, studies, out)
        rows = [("Orthanc", "C-MOVE", seconds, len(list(out.iterdir())))]
        wado_seconds = wado(peer.http_port, "/dicom-web", studies, None)
        rows.append(("Orthanc", "WADO-RS", wado_seconds, len(studies)))
        return rows, peak_rss_mb(peer.pid)


def small_subset(small: Path, count: int) -> Path:
    """The first ``count`` small instances, in a folder of their own."""
    folder = small.parent / f"small-first-{count}"
    if not folder.exists():
        folder.mkdir()
        for path in sorted(small.glob("*.dcm"))[:count]:
            os.link(path, folder / path.name)
    return folder


def main() -> int:
    OUT.mkdir(exist_ok=True)
    sets = build_sets(OUT / "sets", 2000, 16, 60)
    chosen = {"multiframe": sets["multiframe"], "small-200": small_subset(sets["small"], 200)}
    print("| set | server | service | items | s | MB/s | C-MOVE vs Orthanc |")
    print("|---|---|---|---:|---:|---:|---:|")
    memory = []
    for name, folder in chosen.items():
        megabytes = sum(p.stat().st_size for p in folder.glob("*.dcm")) / 1e6
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            work = Path(tmp)
            (work / "node").mkdir()
            node, node_rss = node_rows(folder, work / "node")
            theirs, orthanc_rss = orthanc_rows(folder, work)
        memory.append(f"{name}: node {node_rss:.0f} MB, Orthanc {orthanc_rss:.0f} MB")
        move = {
            server: seconds for server, service, seconds, _ in node + theirs if service == "C-MOVE"
        }
        for server, service, seconds, items in node + theirs:
            ratio = f"{move['Orthanc'] / seconds:.2f}x" if service == "C-MOVE" else ""
            print(
                f"| {name} | {server} | {service} | {items} | {seconds:.2f} "
                f"| {megabytes / seconds:.0f} | {ratio} |",
                flush=True,
            )
    print("\npeak RSS while serving: " + "; ".join(memory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
