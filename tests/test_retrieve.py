"""C-MOVE and C-GET with DCMTK's movescu and getscu: what comes back is the
archive's own bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.config import RemoteAE
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, sample_file, xa_instance
from tests.conftest import REMOTES, dcmtk, free_port, incoming, make_config

pytestmark = pytest.mark.peers


@pytest.fixture
def retrieval(tmp_path: Path):
    port = free_port()
    config = make_config(
        tmp_path,
        remote_aes=(
            *REMOTES,
            RemoteAE("MOVESCU", "127.0.0.1", port, "-", query_issuers=("NCC Bishkek",)),
        ),
    )
    with Node(config, web=False) as node:
        data, syntax = split_file(sample_file("color3d_jpeg_baseline.dcm").read_bytes())
        assert node.ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
        for seed in range(2):
            xa = xa_instance(PATIENTS[0], frames=4, rows=64, cols=64, seed=seed)
            assert node.ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
        yield node, port


def stored_by_uid(node: Node) -> dict[str, bytes]:
    blobs = {}
    for path in node.archive.blobs.root.rglob("*.dcm"):
        blobs[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path.read_bytes()
    return blobs


def assert_identical(received: list[Path], stored: dict[str, bytes]) -> None:
    for path in received:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        got, got_syntax = split_file(path.read_bytes())
        kept, kept_syntax = split_file(stored[uid])
        assert (got, got_syntax) == (kept, kept_syntax), path.name


def test_movescu_receives_every_instance_as_stored(retrieval, tmp_path: Path) -> None:
    node, port = retrieval
    stored = stored_by_uid(node)
    out = tmp_path / "moved"
    out.mkdir()
    studies = {
        str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in stored_paths(node)
    }
    # movescu is its own move destination: it listens before it asks. Both
    # studies by a list of UIDs: a retrieve names what it moves.
    result = dcmtk(
        "movescu",
        "-S",
        "+xa",
        "-aet",
        "MOVESCU",
        "-aem",
        "MOVESCU",
        "-aec",
        "CHDNODE",
        "--port",
        str(port),
        "-od",
        out,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID=" + "\\".join(sorted(studies)),
        "127.0.0.1",
        str(node.dicom.port),
    )
    assert result.returncode == 0, result.stderr
    received = sorted(out.iterdir())
    assert len(received) == len(stored) == 3
    assert_identical(received, stored)


def test_movescu_asking_for_everything_is_refused(retrieval, tmp_path: Path) -> None:
    node, port = retrieval
    result = dcmtk(
        "movescu", "-d", "-P", "-aet", "MOVESCU", "-aem", "MOVESCU", "-aec", "CHDNODE",
        "--port", str(port), "-od", tmp_path,
        "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=*",
        "127.0.0.1", str(node.dicom.port),
    )  # fmt: skip
    said = result.stdout + result.stderr
    assert "datasetdoesnotmatchsopclass" in said.lower(), said
    assert "PatientID: no wildcards in a retrieve" in said  # the Error Comment
    assert not list(tmp_path.glob("*.dcm"))


def stored_paths(node: Node) -> list[Path]:
    return list(node.archive.blobs.root.rglob("*.dcm"))


def test_move_to_an_unknown_destination_is_refused(retrieval, tmp_path: Path) -> None:
    node, port = retrieval
    result = dcmtk(
        "movescu",
        "-S",
        "-aet",
        "MOVESCU",
        "-aem",
        "NOBODY",
        "-aec",
        "CHDNODE",
        "--port",
        str(port),
        "-od",
        tmp_path,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID=1.2.3",
        "127.0.0.1",
        str(node.dicom.port),
    )
    assert "movedestinationunknown" in (result.stdout + result.stderr).lower()
    assert not list(tmp_path.glob("*.dcm"))


def test_getscu_retrieves_a_series_as_stored(retrieval, tmp_path: Path) -> None:
    node, _ = retrieval
    stored = stored_by_uid(node)
    xa = [dcmread(p, stop_before_pixels=True) for p in node.archive.blobs.root.rglob("*.dcm")]
    run = next(ds for ds in xa if ds.Modality == "XA")
    series = run.SeriesInstanceUID
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu",
        "-S",
        "+xr",  # RLE is how the angio runs are stored
        "+B",  # write what arrives, bit for bit
        "-aet",
        "BISHKEK_CATH",  # an AE of the hospital whose child it is
        "-aec",
        "CHDNODE",
        "-od",
        out,
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={run.StudyInstanceUID}",
        "-k",
        f"SeriesInstanceUID={series}",
        "127.0.0.1",
        str(node.dicom.port),
    )
    assert result.returncode == 0, result.stderr
    received = sorted(out.iterdir())
    assert len(received) == sum(1 for ds in xa if ds.SeriesInstanceUID == series)
    assert_identical(received, stored)
