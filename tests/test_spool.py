"""The spool and what reads from it: encrypted nameless files, bounded
inflation, the streamed ingest (the same result as in memory, byte for byte),
streamed blob writes, and C-STORE data sets received into the spool."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from dicomnode.config import Config, RemoteAE
from dicomnode.ingest.pipeline import Incoming, Ingestor, IngestResult, Outcome
from dicomnode.ingest.validate import OUT_OF_RESOURCES, UNREADABLE, Rejection
from dicomnode.media.deflate import inflate
from dicomnode.media.spool import Pieces, Spilling, Spool
from dicomnode.node import Node, open_archive
from dicomnode.ops.check import verify
from dicomnode.ops.samples import (
    PATIENTS,
    UID_ROOT,
    sample_file,
    small_instance,
    ultrasound_region,
    xa_instance,
)
from storage.archive import Archive
from storage.fileblobs import FileBlobStore
from tests.conftest import REMOTES, encode, make_config
from tests.test_fuzz import mutated

MIB = 1 << 20
MARKER = b"Spoolmarker^Zarina"


# -- the spool ------------------------------------------------------------------
def test_spool_files_are_encrypted_nameless_and_read_anywhere(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    content = (MARKER + bytes(range(256)) * 40) * 300  # about 3 MB
    with spool.open() as spooled:
        for start in range(0, len(content), 100_003):
            spooled.write(content[start : start + 100_003])
        assert spooled.size == len(content)
        assert not any(p.is_file() for p in (tmp_path / "spool").rglob("*"))  # nameless
        on_disk = Path(f"/proc/self/fd/{spooled._file.fileno()}").read_bytes()
        assert len(on_disk) == len(content) and MARKER not in on_disk
        for offset, length in ((0, 10), (17, 1000), (1_000_001, 70_000), (len(content) - 5, 99)):
            assert spooled.read_at(offset, length) == content[offset : offset + length]
        assert b"".join(spooled.chunks(5, 2_000_005)) == content[5:2_000_005]
        reader = spooled.reader()
        reader.seek(123_457)
        assert reader.read(50_000) == content[123_457:173_457]
        assert spooled.view()[1_000_000:1_000_008] == content[1_000_000:1_000_008]
    spool.close()
    assert not (spool.directory).exists()


def test_a_new_spool_wipes_what_ended_processes_left(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    left = root / f"{ended.stdout.strip()}-abcd1234"
    left.mkdir(parents=True)
    (left / "tmpx").write_bytes(MARKER)
    alive = Spool(root)
    assert not left.exists()
    second = Spool(root)  # a live process's folder stays
    assert alive.directory.exists() and second.directory.exists()
    assert oct(root.stat().st_mode & 0o777) == "0o700"


def test_spilling_keeps_small_in_memory_and_large_in_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    small = Spilling(spool, MIB)
    small.write(b"x" * 1000)
    assert small.result() == b"x" * 1000
    large = Spilling(spool, MIB)
    for _ in range(3):
        large.write(b"y" * MIB)
    result = large.result()
    assert not isinstance(result, bytes) and result.getvalue() == b"y" * (3 * MIB)
    pieces = Pieces([b"ab", (result, 0, 3), result, b"", b"z"], owns=[result])
    assert len(pieces) == 2 + 3 + 3 * MIB + 1
    assert pieces.getvalue() == b"ab" + b"yyy" + b"y" * (3 * MIB) + b"z"
    pieces.close()


# -- deflate, bounded -------------------------------------------------------------
def _deflated(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.slow
def test_a_deflate_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    bomb = _deflated(bytes(200 * MIB))
    assert len(bomb) < MIB
    with pytest.raises(Rejection) as refused:
        inflate(bomb, limit=16 * MIB)
    assert refused.value.status == OUT_OF_RESOURCES
    assert "16 MiB" in refused.value.comment
    spool = Spool(tmp_path / "spool")
    with pytest.raises(Rejection):
        inflate(bomb, limit=16 * MIB, spool=spool, threshold=MIB)
    spilled = inflate(bomb, limit=300 * MIB, spool=spool, threshold=MIB)
    assert not isinstance(spilled, bytes) and spilled.size == 200 * MIB
    spilled.close()
    assert inflate(_deflated(b"small") + b"\x00", limit=MIB) == b"small"
    for broken in (bomb[:1000], b"\xff" * 20):
        with pytest.raises(Rejection) as refused:
            inflate(broken, limit=MIB)
        assert refused.value.status == UNREADABLE


# -- the streamed ingest: the same as in memory ------------------------------------
@dataclass
class Side:
    config: Config
    archive: Archive
    ingestor: Ingestor

    def stored(self) -> dict[str, bytes]:
        return {key: self.archive.blobs.read(key) for key, _ in self.archive.blobs.listing()}

    def held(self) -> dict[str, bytes]:
        return {
            row["sopinstanceuid"]: self.archive.read_held(row["sopinstanceuid"]) or b""
            for row in self.archive.index.quarantined()
        }


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side]]:
    """Two archives under one set of keys: one ingests in memory, the other
    from the spool (shared by the module's cases: each adds instances of its
    own, and both sides must always hold the same)."""
    tmp_path = tmp_path_factory.mktemp("pair")
    remotes = (
        *REMOTES,
        RemoteAE("RECT_AE", "127.0.0.1", 11116, "NCC Bishkek", blank_rectangles=((0, 0, 9, 4),)),
    )
    sides = []
    for name in ("memory", "spooled"):
        config = make_config(
            tmp_path / name,
            key_dir=tmp_path / "secrets",
            remote_aes=remotes,
            spool_dir=tmp_path / f"spool-{name}",
            spool_threshold_mb=1 if name == "spooled" else 4096,
        )
        archive = open_archive(config)
        sides.append(Side(config, archive, Ingestor(config, archive)))
    yield sides[0], sides[1]
    for side in sides:
        side.archive.close()


def both_ways(
    pair: tuple[Side, Side], data: bytes, syntax: str, calling_ae: str = "BISHKEK_ECHO"
) -> tuple[IngestResult, IngestResult]:
    memory, spooled = pair
    first = memory.ingestor.ingest(Incoming(data, syntax, calling_ae=calling_ae))
    with spooled.ingestor.spool.open() as body:
        body.write(data)
        second = spooled.ingestor.ingest(Incoming(body, syntax, calling_ae=calling_ae))
    return first, second


def assert_same(pair: tuple[Side, Side], first: IngestResult, second: IngestResult) -> None:
    memory, spooled = pair
    assert first.outcome is not Outcome.REJECTED, first
    assert (second.outcome, second.status, second.comment) == (
        first.outcome,
        first.status,
        first.comment,
    )
    assert spooled.stored() == memory.stored()
    assert spooled.held() == memory.held()


def _us(frames: int, *, photometric: str = "RGB", syntax: str = ExplicitVRLittleEndian) -> Dataset:
    ds = small_instance(
        PATIENTS[0], study_uid=generate_uid(UID_ROOT), series_uid=generate_uid(UID_ROOT),
        instance_number=1, size=64,
    )  # fmt: skip
    rows, columns = 96, 128
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SequenceOfUltrasoundRegions = [ultrasound_region(0, 20, columns - 1, rows - 1)]
    y, x = np.mgrid[0:rows, 0:columns]
    frame = np.stack([(x * 2) % 256, (y * 2) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    frame[:15] = 240
    clip = np.stack([np.roll(frame, i, axis=1) for i in range(frames)])
    if photometric == "RGB":
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.PixelData = clip.tobytes()
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = clip[..., 0].tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False)
    return ds


def _jpeg_clip(frames: int, fragments: int, has_bot: bool = False) -> Dataset:
    """JPEG baseline ultrasound, each frame in ``fragments`` items, no offset table."""
    from PIL import Image

    ds = _us(frames)
    arrays = np.frombuffer(ds.PixelData, np.uint8).reshape(frames, 96, 128, 3)
    encoded = []
    for array in arrays:
        buffer = BytesIO()
        Image.fromarray(array, "RGB").save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    ds.PixelData = encapsulate(encoded, fragments_per_frame=fragments, has_bot=has_bot)
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds


def _stray_bits() -> Dataset:
    ds = xa_instance(frames=3, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian)
    pixels = np.frombuffer(ds.PixelData, np.uint8).astype("<u2") | 0xF000
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = pixels.tobytes()
    return ds


def _excess() -> Dataset:
    ds = xa_instance(frames=3, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian)
    ds.PixelData = ds.PixelData + MARKER * 10
    return ds


def _odd() -> Dataset:
    ds = xa_instance(frames=3, rows=5, cols=7, transfer_syntax=ExplicitVRLittleEndian)
    ds.BitsStored, ds.HighBit = 7, 6
    ds.PixelData = bytes(ds.PixelData) + b"\xff"  # a pad byte with a bit above BitsStored
    return ds


def _after_pixels() -> Dataset:
    ds = xa_instance(frames=2, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian)
    ds.BurnedInAnnotation = "NO"
    ds.Modality = "OT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"
    ds.add_new(0x7FE10010, "LO", "ACME 1.0")
    ds.add_new(0x7FE11001, "OB", MARKER * 4)
    ds.add_new(0xFFFCFFFC, "OB", bytes(16))
    return ds


def _deflated_clip(us: bool) -> Dataset:
    """Deflated, above the spool threshold once inflated."""
    ds = (
        _us(40)
        if us
        else xa_instance(frames=12, rows=512, cols=512, transfer_syntax=ExplicitVRLittleEndian)
    )
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


def _capture_in_fragments() -> Dataset:
    """A screen capture (OCR reads it, nothing cleans it) in JPEG fragments."""
    ds = _jpeg_clip(3, 3)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"  # multi-frame true colour SC
    ds.Modality = "OT"
    ds.BurnedInAnnotation = "NO"
    del ds.SequenceOfUltrasoundRegions
    return ds


def _sample(name: str) -> Dataset:
    return dcmread(sample_file(name))


CASES = {
    "xa native": lambda: xa_instance(
        frames=4, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian
    ),
    "xa rle": lambda: xa_instance(frames=4, rows=64, cols=64),
    "us rgb blanked": lambda: _us(5),
    "us grey blanked": lambda: _us(3, photometric="MONOCHROME2"),
    "us rle re-encoded": lambda: _us(3, syntax=RLELossless),
    "us jpeg re-encoded": lambda: _jpeg_clip(4, 1, has_bot=True),
    "us jpeg in fragments": lambda: _jpeg_clip(3, 2),
    "capture in fragments": _capture_in_fragments,
    "deflated xa": lambda: _deflated_clip(False),
    "deflated us blanked": lambda: _deflated_clip(True),
    "stray bits": _stray_bits,
    "bytes after the frames": _excess,
    "odd length, pad byte": _odd,
    "elements after pixel data": _after_pixels,
    "big endian": lambda: _sample("emri_small_big_endian.dcm"),
    "big endian rgb": lambda: _sample("ExplVR_BigEnd.dcm"),
    "implicit": lambda: _sample("MR_small_implicit.dcm"),
    "deflated": lambda: _sample("image_dfl.dcm"),
    "palette": lambda: _sample("OBXXXX1A.dcm"),
    "ybr native": lambda: _sample("SC_ybr_full_uncompressed.dcm"),
    "jpeg 2000 us": lambda: _sample("US1_J2KR.dcm"),
    "jpeg ybr us clip": lambda: _sample("examples_ybr_color.dcm"),
    "one bit": lambda: _sample("liver.dcm"),
}


@pytest.mark.parametrize("case", CASES)
def test_spooled_ingest_stores_what_memory_stores(pair: tuple[Side, Side], case: str) -> None:
    ds = CASES[case]()
    data, syntax = encode(ds)
    first, second = both_ways(pair, data, syntax)
    assert_same(pair, first, second)
    assert first.outcome in (Outcome.STORED, Outcome.QUARANTINED), first


def test_sender_rectangles_are_blanked_alike(pair: tuple[Side, Side]) -> None:
    ds = xa_instance(frames=3, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian)
    data, syntax = encode(ds)
    before = set(pair[1].stored())
    first, second = both_ways(pair, data, syntax, calling_ae="RECT_AE")
    assert_same(pair, first, second)
    (key,) = set(pair[1].stored()) - before
    stored = dcmread(BytesIO(pair[1].stored()[key]))
    assert not stored.pixel_array[:, 0:5, 0:10].any() and stored.pixel_array[:, 5:, 10:].any()


def test_a_held_spooled_instance_is_sealed_like_any_other(pair: tuple[Side, Side]) -> None:
    ds = _us(4)
    del ds.SequenceOfUltrasoundRegions  # nothing says where the banner is: held
    data, syntax = encode(ds)
    spooled = pair[1]
    before = {row["sopinstanceuid"] for row in spooled.archive.index.quarantined()}
    first, second = both_ways(pair, data, syntax)
    assert second.outcome is Outcome.QUARANTINED
    assert_same(pair, first, second)
    (row,) = [r for r in spooled.archive.index.quarantined() if r["sopinstanceuid"] not in before]
    sealed = spooled.archive.held.read(row["blob_key"])
    assert MARKER not in sealed and hashlib.sha256(sealed).hexdigest() == row["sha256"]
    report = verify(spooled.archive)  # (deflated blobs it cannot read yet aside)
    assert row["sopinstanceuid"] not in {uid for uid, _ in report.damaged}
    assert report.plaintext == [] and report.missing == []


def test_a_spooled_header_beyond_the_bound_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path, spool_threshold_mb=1)
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    ds = xa_instance(frames=2, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian)
    ds.add_new(0x00091010, "LO", "ACME")
    ds.add_new(0x00091011, "OB", bytes(65 * MIB))  # a private blob before the pixels
    data, syntax = encode(ds)
    with ingestor.spool.open() as body:
        body.write(data)
        result = ingestor.ingest(Incoming(body, syntax, calling_ae="BISHKEK_ECHO"))
    assert (result.outcome, result.status) == (Outcome.REJECTED, OUT_OF_RESOURCES)
    assert "beyond its Pixel Data" in result.comment
    assert list(archive.blobs.listing()) == []
    archive.close()


@pytest.mark.slow
def test_deflated_data_inflating_past_the_limit_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_instance_mb=8, spool_threshold_mb=1)
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    ds = xa_instance(frames=1, rows=512, cols=512, transfer_syntax=ExplicitVRLittleEndian)
    ds.NumberOfFrames = 40
    ds.PixelData = bytes(40 * 512 * 512)  # 10 MB of zeros: past the 8 MiB limit
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data, syntax = encode(ds)
    assert len(data) < MIB
    result = ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO"))
    assert (result.outcome, result.status) == (Outcome.REJECTED, OUT_OF_RESOURCES)
    assert list(archive.blobs.listing()) == []
    archive.close()


# -- streamed blob writes ------------------------------------------------------------
def test_file_blobs_are_written_chunk_by_chunk(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    key = store.key_for("1.2.3")
    chunks = [os.urandom(1000) for _ in range(50)]
    ref = store.put_stream(key, iter(chunks))
    content = b"".join(chunks)
    assert store.read(key) == content
    assert (ref.size, ref.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert list((tmp_path / "blobs" / ".tmp").rglob("*.part")) == []

    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("disk gone")

    with pytest.raises(OSError):
        store.put_stream(store.key_for("1.2.4"), failing())
    assert not store.exists(store.key_for("1.2.4"))
    assert list((tmp_path / "blobs" / ".tmp").rglob("*.part")) == []


@pytest.mark.slow
def test_s3_blobs_are_uploaded_in_parts(s3: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage import s3blobs
    from tests.s3server import CREDENTIALS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(s3blobs, "PART_SIZE", 5 * MIB)  # S3's smallest part
    bucket = s3.bucket("spool-" + os.urandom(4).hex())  # type: ignore[attr-defined]
    store = s3blobs.S3BlobStore(bucket, "archive/blobs", s3.endpoint)  # type: ignore[attr-defined]
    content = os.urandom(12 * MIB + 7)
    key = store.key_for("1.2.3")
    ref = store.put_stream(key, (content[i : i + MIB] for i in range(0, len(content), MIB)))
    assert store.read(key) == content
    assert ref.sha256 == hashlib.sha256(content).hexdigest()
    small = store.put_stream(store.key_for("1.2.4"), iter([b"abc"]))
    assert store.read(store.key_for("1.2.4")) == b"abc" and small.size == 3


# -- C-STORE into the spool (a node in this process) ----------------------------------
@pytest.fixture
def small_threshold_node(tmp_path: Path) -> Iterator[Node]:
    config = make_config(tmp_path, spool_threshold_mb=1, spool_dir=tmp_path / "spool")
    with Node(config, web=False) as node:
        yield node


@pytest.mark.slow
def test_c_store_data_sets_above_the_threshold_go_to_the_spool(
    small_threshold_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = small_threshold_node
    seen: list[object] = []
    ingest = node.ingestor.ingest

    def spy(incoming: Incoming) -> IngestResult:
        seen.append(type(incoming.data).__name__)
        return ingest(incoming)

    monkeypatch.setattr(node.ingestor, "ingest", spy)
    large = xa_instance(frames=12, rows=512, cols=512, transfer_syntax=ExplicitVRLittleEndian)
    small = xa_instance(frames=1, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian)
    ae = AE(ae_title="BISHKEK_CATH")
    ae.add_requested_context(large.SOPClassUID, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.dicom.port, ae_title="CHDNODE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(large).Status == 0x0000
        assert assoc.send_c_store(small).Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        answers = [
            s for s, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        ]
        assert [int(s.Status) for s in answers][-1] == 0x0000 and len(answers) == 3
    finally:
        assoc.release()
    assert seen == ["SpoolFile", "bytes"]
    stored = sorted(
        (dcmread(node.archive.blobs.path(key)) for key, _ in node.archive.blobs.listing()),
        key=lambda ds: int(ds.NumberOfFrames),
    )
    assert stored[1].PixelData == large.PixelData
    assert str(stored[1].PatientName) != str(large.PatientName)
    assert not [p for p in node.spool.directory.rglob("*")]


@pytest.mark.slow
def test_a_spooled_deflated_instance_is_stored_deflated(
    small_threshold_node: Node,
) -> None:
    node = small_threshold_node
    ds = xa_instance(frames=12, rows=512, cols=512, transfer_syntax=ExplicitVRLittleEndian)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data, syntax = encode(ds)
    result = node.ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_CATH"))
    assert result.status == 0x0000, result
    ((key, _),) = list(node.archive.blobs.listing())
    stored = dcmread(node.archive.blobs.path(key))
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert stored.PixelData == ds.PixelData


# -- mutated instances: the spool's way never stores what memory's way would not --
@pytest.fixture(scope="module")
def fuzz_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side]]:
    tmp_path = tmp_path_factory.mktemp("fuzz-pair")
    sides = []
    for name, threshold in (("memory", 4096), ("spooled", 1)):
        config = make_config(
            tmp_path / name,
            key_dir=tmp_path / "secrets",
            spool_dir=tmp_path / f"spool-{name}",
            spool_threshold_mb=threshold,
            duplicates="replace",
        )
        archive = open_archive(config)
        sides.append(Side(config, archive, Ingestor(config, archive)))
    yield sides[0], sides[1]
    for side in sides:
        side.archive.close()


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=os.environ.get("FUZZ_LONG") != "1",
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=mutated())
def test_mutated_instances_are_never_stored_otherwise(
    fuzz_pair: tuple[Side, Side], case: tuple[bytes, str]
) -> None:
    data, syntax = case
    first, second = both_ways(fuzz_pair, data, syntax)
    stored = (Outcome.STORED, Outcome.REPLACED)  # a re-send replaces on one side only
    if second.outcome in stored:  # never stored unless memory stores it, and alike
        assert (first.outcome in stored, first.status, first.comment) == (
            True,
            second.status,
            second.comment,
        )
    elif first.outcome in stored:
        # Only damaged data sets (attributes missing or absurd, tags out of
        # order) are answered otherwise: the spool's way refuses or holds them.
        assert second.outcome in (Outcome.REJECTED, Outcome.QUARANTINED)
        return
    if first.outcome in stored:  # this instance's file is the last written on each side
        memory, spooled = fuzz_pair
        assert _last_written(spooled.archive) == _last_written(memory.archive)


def _last_written(archive: Archive) -> bytes:
    key, _ = max(archive.blobs.listing(), key=lambda entry: entry[1])
    return archive.blobs.read(key)


def test_a_frame_too_large_to_read_is_held_unread(tmp_path: Path) -> None:
    """A small JPEG whose header claims 20000 x 20000 RGB frames: reading one
    would take 1.2 GB (the region mask alone 400 MB)."""
    import tracemalloc

    config = make_config(tmp_path)
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    ds = _jpeg_clip(1, 1, has_bot=True)
    ds.Rows = ds.Columns = 20_000
    ds.SequenceOfUltrasoundRegions = [ultrasound_region(0, 2000, 19_999, 19_999)]
    data, syntax = encode(ds)
    tracemalloc.start()
    try:
        result = ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        archive.close()
    assert (result.outcome, result.comment) == (
        Outcome.QUARANTINED,
        "frames over 256 MiB: not read in bounded memory",
    )
    assert peak < 64 * MIB


def test_a_spool_dir_on_someone_elses_folder_takes_nothing_from_it(tmp_path: Path) -> None:
    """spool_dir pointed at a folder holding other things (the data folder's
    parent, a home folder): the spool keeps to its own entries, and does not
    change the folder's mode."""
    shared = tmp_path / "shared"
    (shared / "var" / "blobs").mkdir(parents=True)
    (shared / "README").write_text("someone else's")
    (shared / "12-notes").mkdir()  # looks like a pid, not a spool entry
    stale = shared / f"{2**22 + 7}-0123abcd"  # a spool entry of a process that ended
    stale.mkdir()
    shared.chmod(0o755)
    spool = Spool(shared)
    try:
        names = sorted(p.name for p in shared.iterdir())
        assert {"var", "README", "12-notes"} <= set(names)
        assert stale.name not in names
        assert stat.S_IMODE(shared.stat().st_mode) == 0o755
        assert stat.S_IMODE(spool.directory.stat().st_mode) == 0o700
    finally:
        spool.close()


@pytest.mark.parametrize("where", ["data_dir", "key_dir", "parent"])
def test_a_spool_dir_over_the_archive_or_keys_is_refused(tmp_path: Path, where: str) -> None:
    from dicomnode.config import ConfigError, load

    spool = {"data_dir": "var", "key_dir": "secrets", "parent": ""}[where]
    text = (
        f'[node]\ndata_dir = "{tmp_path}/var"\nkey_dir = "{tmp_path}/secrets"\n'
        f'spool_dir = "{tmp_path}/{spool}"\n'
    )
    (tmp_path / "dicomnode.toml").write_text(text)
    with pytest.raises(ConfigError, match="spool_dir"):
        load(tmp_path / "dicomnode.toml", env={})
