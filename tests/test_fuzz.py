"""Fuzzing the ingest path: mutated real and synthetic instances in, and every
one either stored whole (readable, indexed, de-identified) or refused with a
failure status; never an exception, a hang or a partial file.

`make test` runs a short, derandomised pass; `make fuzz` a long random one
(FUZZ_EXAMPLES, default 5,000).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnode.config import Config
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming, Ingestor, Outcome
from dicomnode.node import open_archive
from dicomnode.ops.samples import PATIENTS, sample_file, xa_instance
from storage.archive import Archive
from tests.conftest import encode, make_config
from tests.test_ingest import instance

LONG = os.environ.get("FUZZ_LONG") == "1"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5000")) if LONG else 150


def _nested(depth: int) -> Dataset:
    ds = instance(PATIENTS[2])
    inner = ds
    for _ in range(depth):
        item = Dataset()
        item.CodeMeaning = "level"
        inner.ContentSequence = Sequence([item])
        inner = item
    return ds


def _seeds() -> list[tuple[bytes, str]]:
    seeds = [encode(instance(PATIENTS[n])) for n in range(3)]
    seeds.append(encode(_nested(12)))  # sequences to cut and corrupt
    xa = xa_instance(
        PATIENTS[3], frames=2, rows=32, cols=32, transfer_syntax=ExplicitVRLittleEndian
    )
    seeds.append(encode(xa))
    implicit = instance(PATIENTS[4])
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    seeds.append(encode(implicit))
    seeds.append(split_file(sample_file("US1_J2KR.dcm").read_bytes()))
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    data, syntax = SEEDS[draw(st.integers(0, len(SEEDS) - 1))]
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "length", "vr", "charset", "append"]))
        at = draw(st.integers(0, max(0, len(buffer) - 1)))
        if kind == "truncate":
            del buffer[at:]
        elif kind == "flip" and buffer:
            buffer[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "length" and len(buffer) > at + 4:
            absurd = draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 3, 1]))
            buffer[at : at + 4] = struct.pack("<L", absurd)
        elif kind == "vr" and len(buffer) > at + 2:
            buffer[at : at + 2] = draw(
                st.sampled_from([b"SQ", b"UN", b"OB", b"US", b"??", b"\0\0"])
            )
        elif kind == "charset":
            position = buffer.find(b"ISO_IR")
            if position >= 0:
                junk = draw(st.sampled_from([b"ISO_XX", b"\xff\xfe\x00\x01\x02\x03", b"GB1803"]))
                buffer[position : position + 6] = junk
        elif kind == "append":
            buffer += draw(st.binary(max_size=64))
    return bytes(buffer), syntax


@pytest.fixture(scope="module")
def fuzz_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Ingestor, Archive, Config]]:
    config = make_config(tmp_path_factory.mktemp("fuzz"), duplicates="replace")
    archive = open_archive(config)
    yield Ingestor(config, archive), archive, config
    archive.close()


def _no_partial_files(root: Path) -> None:
    assert list((root / "blobs" / ".tmp").rglob("*.part")) == []
    assert list((root / "quarantine" / ".tmp").rglob("*.part")) == []


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=mutated())
def test_mutated_instances_are_stored_whole_or_refused(
    fuzz_node: tuple[Ingestor, Archive, Config], case: tuple[bytes, str]
) -> None:
    ingestor, archive, config = fuzz_node
    data, syntax = case
    result = ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO"))
    if result.outcome is Outcome.REJECTED:
        assert result.status >= 0xA000 or result.status in (0x0110, 0x0122, 0x0124)
        assert result.comment and "\n" not in result.comment
    else:
        assert result.status in (0x0000, 0xB000, 0xB007, 0xB006)
    if result.outcome in (Outcome.STORED, Outcome.REPLACED):
        blob_key = _newest_blob(archive)
        assert blob_key is not None, "Success without an index row"
        stored = dcmread(BytesIO(archive.blobs.read(blob_key)))
        assert stored.PatientIdentityRemoved == "YES"
    _no_partial_files(config.data_dir)


def _newest_blob(archive: Archive) -> str | None:
    from sqlalchemy import select

    from storage.schema import instances

    with archive.index.engine.connect() as conn:
        query = select(instances.c.blob_key).order_by(instances.c.pk.desc()).limit(1)
        return conn.execute(query).scalar_one_or_none()


def _deep(depth: int, defined: bool) -> bytes:
    """(0040,A730) sequences nested ``depth`` deep, built byte by byte (pydicom
    itself cannot write them that deep)."""
    item, tag = (0xFFFE, 0xE000), (0x0040, 0xA730)
    if defined:
        inner = b""
        for _ in range(depth):
            inner = struct.pack("<HHL", *item, len(inner)) + inner
            inner = struct.pack("<HH2sHL", *tag, b"SQ", 0, len(inner)) + inner
        return inner
    opening = struct.pack("<HH2sHL", *tag, b"SQ", 0, 0xFFFFFFFF)
    opening += struct.pack("<HHL", *item, 0xFFFFFFFF)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return opening * depth + closing * depth


@pytest.mark.parametrize("defined", [True, False])
@pytest.mark.parametrize(("depth", "stored"), [(40, True), (500, False), (20000, False)])
def test_deep_sequences_are_refused_at_once(
    tmp_path: Path, defined: bool, depth: int, stored: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the nesting limit, 500 defined-length levels cost pydicom minutes
    # and gigabytes (a 10 kB denial of service). "At once" is counted, not
    # timed: the structure walk stops at the limit, whatever the depth sent,
    # and pydicom never reads what is refused.
    from dicomnode.ingest import pipeline
    from dicomnode.media import integrity

    walks, reads = [], []
    walk, read = integrity._Walker.walk, pipeline.read_dataset
    monkeypatch.setattr(integrity._Walker, "walk", lambda *a, **k: walks.append(1) or walk(*a, **k))
    monkeypatch.setattr(pipeline, "read_dataset", lambda *a, **k: reads.append(1) or read(*a, **k))
    config = make_config(tmp_path)
    archive = open_archive(config)
    data, syntax = encode(instance(PATIENTS[1]))
    pixels = data.find(struct.pack("<HH", 0x7FE0, 0x0010))
    data = data[:pixels] + _deep(depth, defined) + data[pixels:]
    result = Ingestor(config, archive).ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO"))
    archive.close()
    assert 0 < len(walks) < 3 * integrity.MAX_NESTING, len(walks)
    if stored:
        assert result.outcome is Outcome.STORED, result
        assert reads
    else:
        assert reads == []
        assert (result.status, result.comment) == (
            0xC001,
            "truncated or malformed: sequences nested deeper than 64 levels",
        )
