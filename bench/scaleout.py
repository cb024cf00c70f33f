"""Scale-out benchmark: 4 concurrent senders into 1 or 2 node processes.

    python -m bench.scaleout         # (or `make bench`)

The small set of `bench.ingest` (2,000 instances of a few kB) is split in
four; four dcmsend (TCP_NODELAY=1) send their quarter at the same time.
Targets, each fresh, all four senders to one DICOM port: the node on SQLite
(one process), on PostgreSQL with one receiving process and with its
default (one per core, sharing the port), and Orthanc as the reference, in
the same run. Printed: seconds to answer everything and until deferred OCR
has read everything (settled), instances/s, and ratios against Orthanc.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.ingest import OUT, build_sets
from bench.peers import ENV, free_port, node_env, orthanc, start_node
from tests.postgres import LocalPostgres

SENDERS = 4


def split(folder: Path, work: Path) -> list[Path]:
    """The set in four folders of links, one per sender."""
    parts = [work / f"part{n}" for n in range(SENDERS)]
    for part in parts:
        part.mkdir()
    for n, path in enumerate(sorted(folder.glob("*.dcm"))):
        (parts[n % SENDERS] / path.name).symlink_to(path)
    return parts


def send_all(ports: list[int], called: str, parts: list[Path]) -> float:
    """Seconds for the four senders to finish (sender n to ports[n % len])."""
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["dcmsend", "-aec", called, "127.0.0.1", str(ports[n % len(ports)]), "+sd", str(part)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, part in enumerate(parts)
    ]
    for sender in senders:
        _, errors = sender.communicate()
        if sender.returncode != 0:
            raise RuntimeError(f"dcmsend failed: {errors[-1000:]}")
    return time.perf_counter() - start


def node_process(work: Path, index_url: str, **settings: object) -> tuple[subprocess.Popen, int]:
    """`dicomnode serve` on ``index_url`` (its receiving processes as
    ``settings`` say, by default one per core on PostgreSQL)."""
    port = free_port()
    env = node_env(work, index_url=index_url, dimse_port=port, http_port=free_port(), **settings)
    return start_node(env, work / "node.log"), port


def settled(index_url: str) -> int:
    """Instances stored or held once deferred OCR has read everything."""
    from storage.index import Index

    index = Index(index_url)
    try:
        while (stats := index.stats())["awaiting_ocr"]:
            time.sleep(0.2)
        return int(stats["instances"] + stats["held"])
    finally:
        index.close()


def main() -> int:
    OUT.mkdir(exist_ok=True)
    folder = build_sets(OUT / "sets", 2000, 16, 60)["small"]
    total = len(list(folder.glob("*.dcm")))
    rows: list[tuple[str, float, float]] = []
    postgres = LocalPostgres().start()
    cores = os.cpu_count() or 1
    try:
        targets: list[tuple[str, str, dict[str, object]]] = [
            ("node, SQLite (1 process, the default)", "sqlite", {}),
            ("node, PostgreSQL, receivers = 1", "postgresql", {"receivers": 1}),
            (f"node, PostgreSQL, receivers = {cores} (the default)", "postgresql", {}),
        ]
        for label, backend, settings in targets:
            with tempfile.TemporaryDirectory(dir=OUT) as tmp:
                work = Path(tmp)
                (work / "var").mkdir()
                url = (
                    postgres.database()
                    if backend == "postgresql"
                    else f"sqlite:///{work / 'var' / 'index.sqlite'}"
                )
                parts = split(folder, work)
                process, port = node_process(work, url, **settings)
                try:
                    start = time.perf_counter()
                    seconds = send_all([port], "CHDNODE", parts)
                    count = settled(url)
                    after = time.perf_counter() - start
                finally:
                    process.terminate()
                    process.wait(timeout=60)
                if count != total:
                    raise RuntimeError(f"{label}: stored {count} of {total}")
                rows.append((label, seconds, after))
                print(f"{label}: {seconds:.2f} s (settled {after:.2f} s)", flush=True)
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            work = Path(tmp)
            parts = split(folder, work)
            with orthanc(work / "orthanc") as peer:
                seconds = send_all([peer.dicom_port], "ORTHANC", parts)
                rows.append(("Orthanc", seconds, seconds))
    finally:
        postgres.stop()
    theirs = rows[-1][1]
    print(f"\n{total} small instances, {SENDERS} senders at once to one port\n")
    print("| target | s | settled s | instances/s | vs Orthanc | settled vs Orthanc |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, seconds, after in rows:
        print(
            f"| {label} | {seconds:.2f} | {after:.2f} | {total / seconds:.0f} "
            f"| {theirs / seconds:.2f}x | {theirs / after:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
