"""CPU per ingest stage, in-process (no network): the scaling model's figures.

    python -m bench.stages            # small set (400) and the clips

Each stage of the answer path and the deferred-OCR verifier is wrapped
with a timer of the calling thread's CPU (`time.thread_time`), so what
other processes do barely moves the figures. pynetdicom's DIMSE work is
not in here (no network): add about 1.3 ms per message.
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import dicomnode.deid.pipeline as deid_pipeline
import dicomnode.ingest.pipeline as ingest_pipeline
import dicomnode.jobs.verifying as verifying
import storage.archive as archive_module
from bench.ingest import OUT, build_sets
from dicomnode.config import Config
from dicomnode.ingest.importer import split_file
from dicomnode.node import open_archive

SPENT: collections.defaultdict[str, float] = collections.defaultdict(float)


def _timed(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[label] += time.thread_time() - start

    setattr(owner, name, timed)


def instrument() -> None:
    """Stages that do not nest in one another, so their times add up."""
    _timed(ingest_pipeline, "inspect", "inspect: structure check, header read")
    _timed(deid_pipeline.Deidentifier, "_header", "header: de-identify, claim UIDs")
    _timed(deid_pipeline, "clean_and_verify", "pixels: clean by the rules")
    _timed(deid_pipeline, "encode", "encode the data set")
    _timed(archive_module.Archive, "quarantine", "hold: seal, blob write, transaction")
    _timed(archive_module.Archive, "store", "store: blob write, transaction")
    _timed(verifying, "check", "verifier: OCR reading")


def run(folder: Path, limit: int, label: str) -> None:
    work = Path(tempfile.mkdtemp(dir=OUT))
    config = Config(data_dir=work / "var", key_dir=work / "keys", min_free_disk_mb=0)
    archive = open_archive(config)
    ingestor = ingest_pipeline.Ingestor(config, archive)
    blobs = [split_file(p.read_bytes()) for p in sorted(folder.glob("*.dcm"))[:limit]]
    ingestor.ingest(ingest_pipeline.Incoming(*blobs[0], calling_ae="BENCH"))  # warm
    SPENT.clear()
    start, wall = time.thread_time(), time.perf_counter()
    for data, syntax in blobs[1:]:
        ingestor.ingest(ingest_pipeline.Incoming(data, syntax, calling_ae="BENCH"))
    count = len(blobs) - 1
    cpu, wall = time.thread_time() - start, time.perf_counter() - wall
    print(f"## {label}: {count} instances")
    print(f"answer path: CPU {cpu / count * 1e3:.2f} ms, wall {wall / count * 1e3:.2f} ms each")
    for stage, seconds in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"  {stage}: {seconds / count * 1e3:.2f} ms")
    SPENT.clear()
    verifier = verifying.Verifier(ingestor, 1)
    rows = archive.index.ocr_queue.claim(verifier.owner, limit=10**6)
    start, wall = time.thread_time(), time.perf_counter()
    for row in rows:  # in this thread, so its CPU is counted
        verifier.verify(row)
    read = max(1, len(rows))
    cpu, wall = time.thread_time() - start, time.perf_counter() - wall
    each = f"CPU {cpu / read * 1e3:.2f} ms, wall {wall / read * 1e3:.2f} ms each"
    print(f"verifier: {len(rows)} read, {each}")
    for stage, seconds in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"  {stage}: {seconds / read * 1e3:.2f} ms")
    verifier.stop()
    archive.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=400, help="small instances to ingest (400)")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    sets = build_sets(OUT / "sets", 2000, 16, 60)
    instrument()
    run(sets["small"], args.small, "small 64x64 US")
    run(sets["multiframe"], 21, "multi-frame clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
