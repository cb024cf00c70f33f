"""De-identification throughput: the node's step with OCR verification on and
off, the node as it was before issue #14, deid, dicognito and Orthanc's
/anonymize, on the same files in one run.

    python -m bench.deid            # (or `make bench`)
    python -m bench.deid --before 0506045   # the earlier node, from a git worktree

Each tool reads the file, de-identifies it in memory and encodes the result;
nothing is written to disk (Orthanc keeps its own storage: the upload is not
timed, only the anonymize calls). The node's step also cleans ultrasound
pixels, verifies them by OCR (when on) and seals the original identity (into
a temporary index), which the others do not do. Sets: echo and angio clips,
and many small instances. Last, the cost of OCR alone: per instance (the
node's verification as configured) and per frame (one recognition).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from pydicom import dcmread

from bench.ingest import OUT, build_sets
from bench.peers import orthanc
from dicomnode.config import Config, deid_setup
from dicomnode.deid.pipeline import Deidentifier
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming, inspect
from storage.index import Index

log = logging.getLogger(__name__)


def node_step(tmp: Path, ocr: bool = True) -> Callable[[Path], bytes]:
    # Offline, as `dicomnode import`: OCR (when on) reads before the result.
    config = Config(data_dir=tmp / "var", key_dir=tmp / "keys", ocr=ocr, ocr_deferred=False)
    config.data_dir.mkdir(parents=True)
    index = Index(f"sqlite:///{tmp / 'index.sqlite'}")
    deidentify = Deidentifier(deid_setup(config), index)

    def run(path: Path) -> bytes:
        data, syntax = split_file(path.read_bytes())
        ds, layout = inspect(Incoming(data, syntax))  # the checks the node makes first
        return deidentify(
            data,
            syntax,
            issuer="BENCH",
            patient_key=str(ds.get("PatientID") or ds.StudyInstanceUID),
            calling_ae="BENCH",
            header=ds,
            layout=layout,
        ).data

    return run


def dicognito_step(tmp: Path) -> Callable[[Path], bytes]:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()

    def run(path: Path) -> bytes:
        ds = dcmread(path)
        anonymizer.anonymize(ds)
        buffer = BytesIO()
        ds.save_as(buffer)
        return buffer.getvalue()

    return run


def deid_step(tmp: Path) -> Callable[[Path], bytes]:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers
    from deid.logger import bot

    bot.level = 0  # its default recipe warns on every file
    recipe = DeidRecipe()

    def run(path: Path) -> bytes:
        (ds,) = replace_identifiers([str(path)], deid=recipe, save=False, remove_private=True)
        buffer = BytesIO()
        ds.save_as(buffer)
        return buffer.getvalue()

    return run


def orthanc_step(base: str) -> Callable[[Path], bytes]:
    ids: dict[Path, str] = {}

    def upload(path: Path) -> None:
        request = urllib.request.Request(f"{base}/instances", data=path.read_bytes())
        with urllib.request.urlopen(request) as response:
            ids[path] = json.load(response)["ID"]

    def run(path: Path) -> bytes:
        request = urllib.request.Request(
            f"{base}/instances/{ids[path]}/anonymize", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request) as response:
            return response.read()

    run.upload = upload  # type: ignore[attr-defined]
    return run


BEFORE_SCRIPT = """
import sys, time, logging
from pathlib import Path
logging.disable(logging.WARNING)
from bench.deid import node_step
files = sorted(Path(sys.argv[1]).glob("*.dcm"))
step = node_step(Path(sys.argv[2]))
start = time.perf_counter()
for path in files:
    step(path)
print(time.perf_counter() - start)
"""


def before_step(revision: str, tmp: Path) -> Callable[[Path], float]:
    """The node's step as of ``revision`` (a git worktree run in a subprocess,
    on the same files): the figures before this change, measured in this run."""
    tree = tmp / f"before-{revision}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), revision],
        check=True,
        capture_output=True,
    )

    def run(folder: Path) -> float:
        work = tmp / f"before-work-{folder.name}"
        work.mkdir()
        done = subprocess.run(
            [sys.executable, "-c", BEFORE_SCRIPT, str(folder), str(work)],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            check=True,
            capture_output=True,
            text=True,
        )
        return float(done.stdout.strip().splitlines()[-1])

    return run


def ocr_costs(files: list[Path]) -> tuple[float, float, int]:
    """Seconds of OCR verification per instance (as the node runs it) and per
    recognised frame, over the images of ``files`` that may carry text."""
    from pydicom.uid import UID

    from dicomnode.deid.identity import IdentityMatcher
    from dicomnode.deid.ocr import read_words
    from dicomnode.deid.verify import OcrSettings, _frame_reader, check, may_carry_text

    settings = OcrSettings.of(Config())  # the node's defaults
    per_instance, per_frame, count = 0.0, 0.0, 0
    for path in files:
        ds = dcmread(path)
        if "PixelData" not in ds or not may_carry_text(ds):
            continue
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        matcher = IdentityMatcher.from_dataset(ds)
        start = time.perf_counter()
        check(ds, syntax, blanked=None, matcher=matcher, settings=settings)
        per_instance += time.perf_counter() - start
        frame = _frame_reader(ds, syntax)(0)
        start = time.perf_counter()
        read_words(frame)
        per_frame += time.perf_counter() - start
        count += 1
    return per_instance / max(count, 1), per_frame / max(count, 1), count


def measure(step: Callable[[Path], bytes], files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        step(path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument(
        "--before", default="", help="a git revision of the node to measure too (e.g. 0506045)"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    OUT.mkdir(exist_ok=True)
    sets = build_sets(OUT / "sets", args.small, args.runs, args.frames)
    rows = []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp, orthanc(Path(tmp)) as peer:
        orthanc_run = orthanc_step(peer.base)
        before = before_step(args.before, Path(tmp)) if args.before else None
        for name, folder in sets.items():
            files = sorted(folder.glob("*.dcm"))
            megabytes = sum(p.stat().st_size for p in files) / 1e6
            for path in files:
                orthanc_run.upload(path)  # type: ignore[attr-defined]
            steps = {
                "node": node_step(Path(tmp) / f"node-{name}"),
                "node, OCR off": node_step(Path(tmp) / f"node-off-{name}", ocr=False),
                "dicognito": dicognito_step(Path(tmp)),
                "deid": deid_step(Path(tmp)),
                "orthanc": orthanc_run,
            }
            for tool, step in steps.items():
                seconds = measure(step, files)
                rows.append((name, tool, len(files), megabytes, seconds))
                print(
                    f"{name:>10} {tool:>9}: {seconds:7.2f} s {len(files) / seconds:8.0f} inst/s "
                    f"{megabytes / seconds:7.1f} MB/s",
                    flush=True,
                )
            if before is not None:
                seconds = before(folder)
                rows.append((name, f"node {args.before}", len(files), megabytes, seconds))
                print(f"{name:>10} node {args.before}: {seconds:7.2f} s", flush=True)
        per_instance, per_frame, images = ocr_costs(sorted(sets["multiframe"].glob("*.dcm")))
        print(
            f"\nOCR alone on the {images} clips: {per_instance:.2f} s per instance "
            f"(verification as configured), {per_frame:.2f} s per frame (one recognition)"
        )
    if args.before:
        subprocess.run(["git", "worktree", "prune"], check=False)  # its folder is gone
    clip = OUT / "sets" / "multiframe" / "color3d_jpeg_baseline.dcm"
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        step = node_step(Path(tmp))
        best = min(measure(step, [clip]) for _ in range(3))
    print(f"\n120-frame JPEG baseline echo clip, header + pixels cleaned: {best:.2f} s\n")
    print("| set | tool | instances | MB | s | instances/s | MB/s | node speed vs tool |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, tool, count, megabytes, seconds in rows:
        node_seconds = next(r[4] for r in rows if r[0] == name and r[1] == "node")
        print(
            f"| {name} | {tool} | {count} | {megabytes:.0f} | {seconds:.2f} | "
            f"{count / seconds:.0f} | {megabytes / seconds:.1f} | "
            f"{seconds / node_seconds:.2f}x |"
        )
    shutil.rmtree(OUT / "tmp", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
