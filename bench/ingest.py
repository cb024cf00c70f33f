"""Ingest benchmark: the node against DCMTK storescp and Orthanc, in one run.

    python -m bench.ingest                 # (or `make bench`)
    python -m bench.ingest --senders 4     # four dcmsend processes at once

Each target starts empty, receives the same set from DCMTK's dcmsend (one
association per sender, TCP_NODELAY=1 on both ends) and is stopped; the
wall time of the send is the figure. Rounds alternate the targets, and each
round's ratios (node time against each peer's) are taken, so a load that
comes and goes hits all alike; the table gives the median round. The node
answers an image OCR must read before reading it (deferred OCR): its
*settled* time is until every instance is read and stored or held.
storescp is the reference for raw speed (it writes files and nothing else,
without fsync); Orthanc is the archive users would pick (configured to sync
its storage area, as the node does). Two sets: echo and angio multi-frame
clips (hundreds of MB) and many small instances.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import RLELossless, generate_uid

from bench.peers import ENV, free_port, wait_for_echo
from bench.peers import orthanc as orthanc_peer
from dicomnode.ops.samples import PATIENTS, UID_ROOT, sample_file, save, small_instance, xa_instance

# Bump when the generators in dicomnode.ops.samples change, so cached sets are rebuilt.
SET_VERSION = 3
OUT = Path(__file__).resolve().parent / "out"
WHEEL_CLIPS = (
    "ultrasounds/ultrasound-multiframe.dcm",
    "color3d_jpeg_baseline.dcm",
    "examples_ybr_color.dcm",
)
WHEEL_ZIPPED = ("ultrasounds/RGB_CINE.zip", "ultrasounds/GREYSCALE_CINE.zip")


@dataclass
class Result:
    target: str
    dataset: str
    instances: int
    megabytes: float
    seconds: float
    # The node: until OCR had read everything it answered (else the send).
    settled: float = 0.0

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.megabytes / self.seconds


def drop_repeated_instances(folder: Path) -> None:
    """Some wheel clips are one instance twice: keep each SOP Instance UID once."""
    seen = set()
    for path in sorted(folder.glob("*.dcm")):
        uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        if uid in seen:
            path.unlink()
        seen.add(uid)


def build_sets(root: Path, small: int, runs: int, frames: int) -> dict[str, Path]:
    """The two sets, generated once and reused by later runs."""
    sets = {"multiframe": root / "multiframe", "small": root / f"small-{small}"}
    marker = root / f"multiframe-{runs}-{frames}-v{SET_VERSION}.complete"
    if not marker.exists():
        shutil.rmtree(sets["multiframe"], ignore_errors=True)
        sets["multiframe"].mkdir(parents=True)
        for name in WHEEL_CLIPS:
            shutil.copy(sample_file(name), sets["multiframe"] / Path(name).name)
        for name in WHEEL_ZIPPED:
            with zipfile.ZipFile(sample_file(name)) as archive:
                archive.extractall(sets["multiframe"])
        drop_repeated_instances(sets["multiframe"])
        # One angio study per patient: a study never spans children.
        studies = [generate_uid(UID_ROOT) for _ in PATIENTS]
        for run in range(runs):
            ds = xa_instance(
                PATIENTS[run % len(PATIENTS)],
                frames=frames,
                study_uid=studies[run % len(PATIENTS)],
                transfer_syntax=RLELossless,
                instance_number=run + 1,
                seed=run,
            )
            save(ds, sets["multiframe"] / f"xa-{run:03d}.dcm")
        marker.touch()
    marker = root / f"small-{small}-v{SET_VERSION}.complete"
    if not marker.exists():
        shutil.rmtree(sets["small"], ignore_errors=True)
        studies = [generate_uid(UID_ROOT) for _ in PATIENTS]
        series: dict[tuple[int, int], str] = {}
        for number in range(small):
            child = number % len(PATIENTS)
            block = series.setdefault((child, number // 100), generate_uid(UID_ROOT))
            ds = small_instance(
                PATIENTS[child],
                study_uid=studies[child],
                series_uid=block,
                instance_number=number + 1,
            )
            save(ds, sets["small"] / f"{number:05d}.dcm")
        marker.touch()
    return sets


@contextmanager
def node(work: Path) -> Iterator[tuple[int, str, Callable[[], int]]]:
    port = free_port()
    env = {
        **ENV,
        "DICOMNODE_DATA_DIR": str(work / "node"),
        "DICOMNODE_DIMSE_PORT": str(port),
        "DICOMNODE_HTTP_PORT": str(free_port()),
        "DICOMNODE_LOG_LEVEL": "WARNING",
        "DICOMNODE_MIN_FREE_DISK_MB": "64",
        "DICOMNODE_CONFIG": os.devnull,
        # dcmsend calls as DCMSEND, which no [[remote_ae]] lists here.
        "DICOMNODE_REQUIRE_KNOWN_AE": "false",
        "DICOMNODE_KEY_DIR": str(work / "keys"),
    }
    # Logs to a file: a pipe nobody reads fills up and blocks the node.
    with (work / "node.log").open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomnode.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        wait_for_echo(port, "CHDNODE", process)

        def count() -> int:
            """Instances stored or held once OCR has read all: a clip whose
            burned-in text OCR finds is held for review, an answer too."""
            while True:
                stats = json.loads(
                    subprocess.run(
                        [sys.executable, "-m", "dicomnode.cli", "stats", "--json"],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                if not stats["awaiting_ocr"]:
                    return stats["instances"] + stats["held"]
                time.sleep(0.2)

        yield port, "CHDNODE", count
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextmanager
def storescp(work: Path) -> Iterator[tuple[int, str, Callable[[], int]]]:
    port, folder = free_port(), work / "storescp"
    folder.mkdir()
    process = subprocess.Popen(
        ["storescp", "+xa", "-od", str(folder), str(port)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_echo(port, "ANY-SCP", process)
        yield port, "ANY-SCP", lambda: sum(1 for _ in folder.iterdir())
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextmanager
def orthanc(work: Path) -> Iterator[tuple[int, str, Callable[[], int]]]:
    with orthanc_peer(work) as peer:

        def count() -> int:
            with urllib.request.urlopen(f"{peer.base}/statistics") as response:
                return json.load(response)["CountInstances"]

        yield peer.dicom_port, "ORTHANC", count


TARGETS = {"node": node, "storescp": storescp, "orthanc": orthanc}


def send(ae_title: str, port: int, files: list[Path], senders: int) -> list[str]:
    """dcmsend the files from ``senders`` processes at once (one association
    each, files dealt round-robin); the errors of those that failed."""
    shares = [files[i::senders] for i in range(senders)]
    processes = [
        subprocess.Popen(
            ["dcmsend", "-aec", ae_title, "127.0.0.1", str(port), *map(str, share)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in shares
        if share
    ]
    errors = []
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            errors.append(stderr[-2000:])
    return errors


def measure(target: str, name: str, folder: Path, senders: int = 1) -> Result:
    files = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{target}-", dir=OUT) as tmp,
        TARGETS[target](Path(tmp)) as (port, ae_title, count),
    ):
        start = time.perf_counter()
        errors = send(ae_title, port, files, senders)
        seconds = time.perf_counter() - start
        stored = count()
        settled = time.perf_counter() - start
    if errors or stored != len(files):
        raise RuntimeError(f"{target} stored {stored} of {len(files)}: {errors}")
    return Result(target, name, len(files), megabytes, seconds, settled)


def _ratio(rounds: list[list[Result]], mine: Result, peer: str, settled: bool = False) -> str:
    """Median over the rounds of the peer's time over this target's."""
    values = []
    for rnd in rounds:
        this = next(r for r in rnd if (r.dataset, r.target) == (mine.dataset, mine.target))
        other = [r for r in rnd if (r.dataset, r.target) == (mine.dataset, peer)]
        if not other:
            return "-"
        values.append(other[0].seconds / (this.settled if settled else this.seconds))
    return f"{statistics.median(values):.2f}x"


def table(rounds: list[list[Result]]) -> str:
    """One row per set and target: median seconds over the rounds, and the
    median of each round's ratio of peer time to this target's time (for
    the node, of its answer and of its settling)."""
    lines = [
        "| set | target | instances | MB | s (median) | settled s | instances/s"
        " | vs storescp | vs Orthanc | settled vs Orthanc |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in rounds[0]:
        same = [
            r
            for rnd in rounds
            for r in rnd
            if (r.dataset, r.target) == (result.dataset, result.target)
        ]
        seconds = statistics.median(r.seconds for r in same)
        settled = statistics.median(r.settled for r in same)
        lines.append(
            f"| {result.dataset} | {result.target} | {result.instances} | {result.megabytes:.0f} "
            f"| {seconds:.2f} | {settled:.2f} | {result.instances / seconds:.0f} "
            f"| {_ratio(rounds, result, 'storescp')} | {_ratio(rounds, result, 'orthanc')} "
            f"| {_ratio(rounds, result, 'orthanc', True)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000, help="small instances (2000)")
    parser.add_argument("--runs", type=int, default=16, help="synthetic angio runs (16)")
    parser.add_argument("--frames", type=int, default=60, help="frames per angio run (60)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of alternating targets (3)")
    parser.add_argument("--targets", default="node,storescp,orthanc")
    parser.add_argument("--senders", type=int, default=1, help="dcmsend processes at once (1)")
    parser.add_argument("--sets", default="multiframe,small", help="which sets (both)")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    sets = build_sets(OUT / "sets", args.small, args.runs, args.frames)
    rounds: list[list[Result]] = []
    for number in range(args.repeat):
        results = []
        for name in args.sets.split(","):
            for target in args.targets.split(","):
                result = measure(target, name, sets[name], args.senders)
                print(
                    f"round {number + 1} {name:>10} {target:>8}: {result.seconds:7.2f} s "
                    f"(settled {result.settled:7.2f} s) {result.per_second:8.0f} inst/s",
                    flush=True,
                )
                results.append(result)
        rounds.append(results)
    print()
    print(f"{args.senders} sender(s), median of {args.repeat} rounds")
    print(table(rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
