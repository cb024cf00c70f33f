"""Scale-out benchmark: 4 concurrent senders into 1 or 2 node processes.

    python -m bench.scaleout         # (or `make bench`)

The small set of `bench.ingest` (2,000 instances of a few kB) is split in
four; four dcmsend (TCP_NODELAY=1) send their quarter at the same time.
Targets, each fresh: one process on SQLite, one process on PostgreSQL, two
processes on one PostgreSQL and one data folder (two senders each), and
Orthanc (four senders) as the reference, in the same run. Printed:
instances/s and the ratio of two processes to one.
"""

from __future__ import annotations

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


def node_processes(work: Path, index_url: str, count: int) -> tuple[list, list[int]]:
    """``count`` node processes on one index and one data folder."""
    ports = [free_port() for _ in range(count)]
    processes = [
        start_node(
            node_env(work, index_url=index_url, dimse_port=port, http_port=free_port()),
            work / f"node{n}.log",
        )
        for n, port in enumerate(ports)
    ]
    return processes, ports


def stored(index_url: str) -> int:
    from storage.index import Index

    index = Index(index_url)
    try:
        return index.stats()["instances"]
    finally:
        index.close()


def main() -> int:
    OUT.mkdir(exist_ok=True)
    folder = build_sets(OUT / "sets", 2000, 16, 60)["small"]
    total = len(list(folder.glob("*.dcm")))
    rows: list[tuple[str, float]] = []
    postgres = LocalPostgres().start()
    try:
        targets = [
            ("node, 1 process, SQLite", "sqlite", 1),
            ("node, 1 process, PostgreSQL", "postgresql", 1),
            ("node, 2 processes, PostgreSQL", "postgresql", 2),
        ]
        for label, backend, count in targets:
            with tempfile.TemporaryDirectory(dir=OUT) as tmp:
                work = Path(tmp)
                (work / "var").mkdir()
                url = (
                    postgres.database()
                    if backend == "postgresql"
                    else f"sqlite:///{work / 'var' / 'index.sqlite'}"
                )
                parts = split(folder, work)
                processes, ports = node_processes(work, url, count)
                try:
                    seconds = send_all(ports, "CHDNODE", parts)
                finally:
                    for process in processes:
                        process.terminate()
                        process.wait(timeout=60)
                if stored(url) != total:
                    raise RuntimeError(f"{label}: stored {stored(url)} of {total}")
                rows.append((label, seconds))
                print(f"{label}: {seconds:.2f} s", flush=True)
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            work = Path(tmp)
            parts = split(folder, work)
            with orthanc(work / "orthanc") as peer:
                rows.append(("Orthanc", send_all([peer.dicom_port], "ORTHANC", parts)))
    finally:
        postgres.stop()
    one = dict(rows)["node, 1 process, PostgreSQL"]
    print(f"\n{total} small instances, {SENDERS} senders at once\n")
    print("| target | s | instances/s | × 1 process (PostgreSQL) |")
    print("|---|---:|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {total / seconds:.0f} | {one / seconds:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
