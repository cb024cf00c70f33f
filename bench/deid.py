"""De-identification throughput: the node's step against deid, dicognito and
Orthanc's /anonymize, on the same files in one run.

    python -m bench.deid            # (or `make bench`)

Each tool reads the file, de-identifies it in memory and encodes the result;
nothing is written to disk (Orthanc keeps its own storage: the upload is not
timed, only the anonymize calls). The node's step also cleans ultrasound
pixels and seals the original identity (into a temporary index), which the
others do not do. Sets: echo and angio clips, and many small instances.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from pydicom import dcmread

from bench.ingest import OUT, build_sets
from bench.peers import orthanc
from dicomnode.config import Config
from dicomnode.deid.pipeline import Deidentifier
from dicomnode.importer import split_file
from dicomnode.ingest import Incoming, inspect
from storage.index import Index

log = logging.getLogger(__name__)


def node_step(tmp: Path) -> Callable[[Path], bytes]:
    config = Config(data_dir=tmp / "var", key_dir=tmp / "keys")
    config.data_dir.mkdir(parents=True)
    index = Index(f"sqlite:///{tmp / 'index.sqlite'}")
    deidentify = Deidentifier(config, index)

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
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    OUT.mkdir(exist_ok=True)
    sets = build_sets(OUT / "sets", args.small, args.runs, args.frames)
    rows = []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp, orthanc(Path(tmp)) as peer:
        orthanc_run = orthanc_step(peer.base)
        for name, folder in sets.items():
            files = sorted(folder.glob("*.dcm"))
            megabytes = sum(p.stat().st_size for p in files) / 1e6
            for path in files:
                orthanc_run.upload(path)  # type: ignore[attr-defined]
            steps = {
                "node": node_step(Path(tmp) / f"node-{name}"),
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
