"""Export benchmark: a research package of the demo archive, node vs Orthanc.

    python -m bench.export        # (or `make bench`)

The demo studies (`dicomnode demo`'s set: wheel echo clips and synthetic
angio runs) go into a fresh node (`dicomnode import`) and a fresh Orthanc
(REST upload). The node runs `dicomnode export` (second de-identification
pass, DICOMDIR, manifest, identity scan, ZIP) as its own process; Orthanc is
restarted on its storage and asked for `/tools/create-archive` of the same
studies (a plain ZIP: no de-identification, no scan). Printed: wall time,
instances/s, MB/s of input, and each process's peak RSS.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import OUT
from bench.peers import ENV, orthanc
from bench.retrieve import peak_rss_mb
from dicomnode.ops.samples import demo_files


def node_export(folder_files: list[Path], work: Path) -> tuple[float, float]:
    env = {
        **ENV,
        "DICOMNODE_DATA_DIR": str(work / "var"),
        "DICOMNODE_KEY_DIR": str(work / "keys"),
        "DICOMNODE_LOG_LEVEL": "WARNING",
        "DICOMNODE_MIN_FREE_DISK_MB": "64",
    }
    cli = [sys.executable, "-m", "dicomnode.cli", "-c", os.devnull]
    subprocess.run(
        [*cli, "import", "--no-progress", *map(str, folder_files)],
        env=env,
        check=True,
        capture_output=True,
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [*cli, "export", "--no-progress", "--out", str(work / "node.zip")],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"dicomnode export failed with status {status}")
    return seconds, usage.ru_maxrss / 1024


def orthanc_export(files: list[Path], work: Path) -> tuple[float, float]:
    with orthanc(work / "o1") as peer:
        connection = http.client.HTTPConnection("127.0.0.1", peer.http_port)
        for path in files:
            connection.request("POST", "/instances", body=path.read_bytes())
            connection.getresponse().read()
    (work / "o1").rename(work / "o2")
    # Restarted on the same storage, so the peak RSS counts the export only.
    with orthanc(work / "o2") as peer:
        connection = http.client.HTTPConnection("127.0.0.1", peer.http_port)
        connection.request("GET", "/studies")
        studies = json.loads(connection.getresponse().read())
        body = json.dumps({"Resources": studies, "Synchronous": True})
        started = time.perf_counter()
        connection.request("POST", "/tools/create-archive", body=body)
        response = connection.getresponse()
        with (work / "orthanc.zip").open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        seconds = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"Orthanc create-archive answered {response.status}")
        return seconds, peak_rss_mb(peer.pid)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    with demo_files() as files, tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = Path(tmp)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        node_s, node_rss = node_export(files, work)
        orthanc_s, orthanc_rss = orthanc_export(files, work)
        count = len(files)
        print(f"demo archive: {count} instances, {megabytes:.0f} MB\n")
        print("| exporter | s | instances/s | MB/s | peak RSS MB |")
        print("|---|---:|---:|---:|---:|")
        for name, seconds, rss in (
            ("node (deid pass + DICOMDIR + scan)", node_s, node_rss),
            ("Orthanc /tools/create-archive", orthanc_s, orthanc_rss),
        ):
            print(
                f"| {name} | {seconds:.2f} | {count / seconds:.0f} | "
                f"{megabytes / seconds:.1f} | {rss:.0f} |"
            )
        print(f"\nnode/Orthanc time ratio: {node_s / orthanc_s:.2f} (target <= 1.00)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
