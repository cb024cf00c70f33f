"""Memory independent of instance size (issue #16): large instances are
received into the encrypted spool and de-identified from there.

Each case sends to `dicomnode serve` in a subprocess and measures that
process's peak resident memory (VmHWM, reset through ``clear_refs`` after a
warm-up) against its resident memory before: what one instance costs. Test
files are written to disk in chunks and sent with pynetdicom reading them in
chunks, so the test process never holds an instance either.
"""

from __future__ import annotations

import itertools
import os
import re
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.sop_class import UltrasoundMultiFrameImageStorage, XRayAngiographicImageStorage

from dicomnode.ops.samples import UID_ROOT, SyntheticPatient, base_dataset, ultrasound_region
from tests.conftest import served
from tests.test_cli import DICOMNODE

MIB = 1 << 20
# What one large instance may cost the node beyond its memory before, with
# the module's node (8 MiB spool threshold), whatever the instance's size.
BOUND_MB = 160
# The target: a 1 GB instance under the default configuration.
GIGABYTE_BOUND_MB = 300
MARKER = "Spoolmarker^Zarina"
PATIENT = SyntheticPatient(MARKER, "KG-8807711", "20190802", "F", "ISO_IR 192")


# -- files written in chunks ---------------------------------------------------
def _header(sop_class: UID, modality: str, **values: object) -> Dataset:
    ds = base_dataset(
        PATIENT,
        sop_class,
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        modality=modality,
    )
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _meta(ds: Dataset, syntax: UID) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def write_instance(
    path: Path,
    ds: Dataset,
    frames: Iterator[bytes],
    length: int,
    *,
    syntax: UID = ExplicitVRLittleEndian,
) -> Path:
    """A Part 10 file: ``ds`` (no Pixel Data), then native Pixel Data of
    ``length`` bytes from ``frames``, deflated as a whole for a deflated syntax."""
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    pixel_header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, length)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS) if syntax.is_deflated else None
    with path.open("wb") as out:
        start = out.write(_meta(ds, syntax))
        for piece in itertools.chain([body.getvalue() + pixel_header], frames):
            out.write(packer.compress(piece) if packer else piece)
        if packer:
            out.write(packer.flush())
        if (out.tell() - start) % 2:
            out.write(b"\x00")
    return path


def _frames(count: int, frame: np.ndarray, roll: int = 3) -> Iterator[bytes]:
    for index in range(count):
        yield np.roll(frame, index * roll, axis=1).tobytes()


def gradient(rows: int, columns: int, samples: int = 1) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    grey = ((x * 3 + y * 2) % 200 + 20).astype(np.uint8)
    return np.repeat(grey[..., None], samples, axis=2) if samples > 1 else grey


def us_clip(path: Path, frames: int) -> tuple[Path, Dataset, np.ndarray]:
    """Native RGB ultrasound with a bright banner above its one region."""
    rows, columns = 480, 640
    ds = _header(
        UltrasoundMultiFrameImageStorage,
        "US",
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        Rows=rows,
        Columns=columns,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        NumberOfFrames=frames,
        FrameTime="33.3",
        BurnedInAnnotation="YES",
        SequenceOfUltrasoundRegions=[ultrasound_region(0, 60, columns - 1, rows - 1)],
    )
    frame = gradient(rows, columns, 3)
    frame[:40] = 250  # the banner, where an echo machine prints the name
    write_instance(path, ds, _frames(frames, frame), rows * columns * 3 * frames)
    return path, ds, frame


def xa_run(path: Path, frames: int, rows: int = 1024, columns: int = 1024) -> Path:
    ds = _header(
        XRayAngiographicImageStorage,
        "XA",
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        Rows=rows,
        Columns=columns,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        NumberOfFrames=frames,
        BurnedInAnnotation="NO",
        ImageType=["ORIGINAL", "PRIMARY", "SINGLE PLANE"],
    )
    return write_instance(
        path, ds, _frames(frames, gradient(rows, columns)), rows * columns * frames
    )


def deflate_bomb(path: Path, inflated_mb: int) -> Path:
    """A few hundred kB of deflate that inflate to ``inflated_mb`` of black XA."""
    rows = columns = 1024
    frames = inflated_mb
    ds = _header(
        XRayAngiographicImageStorage,
        "XA",
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        Rows=rows,
        Columns=columns,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        NumberOfFrames=frames,
        BurnedInAnnotation="NO",
    )
    zero = bytes(rows * columns)
    return write_instance(
        path,
        ds,
        (zero for _ in range(frames)),
        rows * columns * frames,
        syntax=DeflatedExplicitVRLittleEndian,
    )


# -- the node, as a process ---------------------------------------------------
class NodeProcess:
    def __init__(self, root: Path, **settings: object) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "var"
        self.spool_dir = root / "spool"
        env = {
            **os.environ,
            "DICOMNODE_CONFIG": os.devnull,
            "DICOMNODE_DATA_DIR": str(self.data_dir),
            "DICOMNODE_KEY_DIR": str(root / "secrets"),
            "DICOMNODE_SPOOL_DIR": str(self.spool_dir),
            "DICOMNODE_DIMSE_HOST": "127.0.0.1",
            "DICOMNODE_DIMSE_PORT": "0",  # the banner says which it bound
            "DICOMNODE_HTTP_PORT": "0",
            "DICOMNODE_MIN_FREE_DISK_MB": "0",
            "DICOMNODE_REQUIRE_KNOWN_AE": "false",
            "DICOMNODE_LOG_LEVEL": "WARNING",
            # OCR before the answer: what a send stored is on disk when it returns.
            "DICOMNODE_OCR_DEFERRED": "false",
            **{f"DICOMNODE_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.log = (root / "node.log").open("w")
        self.process = subprocess.Popen(
            [*DICOMNODE, "serve"], env=env, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()
        assert "DICOM port" in banner, banner + (root / "node.log").read_text()
        self.port = served(banner)[0]

    def status(self, field: str) -> int:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert match, field
        return int(match.group(1)) * 1024

    def reset_peak(self) -> int:
        """Reset the peak to the present; return resident memory now."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return self.status("VmRSS")

    def peak_since(self, before: int) -> int:
        return (self.status("VmHWM") - before) // MIB

    def spool_files(self) -> list[Path]:
        """Open files of the node inside its spool directory (nameless ones too)."""
        found = []
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(self.spool_dir.resolve())):
                found.append(fd)
        return found

    def stored(self) -> list[Path]:
        return sorted((self.data_dir / "blobs").glob("??/??/*.dcm"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def send(port: int, path: Path, syntax: UID = ExplicitVRLittleEndian) -> int:
    """C-STORE the file at ``path`` read in chunks; the status (-1: none)."""
    ae = AE(ae_title="BIG_SENDER")
    ae.dimse_timeout = ae.network_timeout = 600
    sop_class = dcmread(path, stop_before_pixels=True).SOPClassUID
    ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHDNODE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
        return int(status.Status) if status else -1
    finally:
        if assoc.is_established:
            assoc.release()


@pytest.fixture(autouse=True)
def chunked_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("large-files")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, files: Path) -> Iterator[NodeProcess]:
    """A node with an 8 MiB spool threshold and a 256 MiB instance limit,
    warmed up (OCR loaded, first instances stored) before anything is measured."""
    process = NodeProcess(
        tmp_path_factory.mktemp("node"), spool_threshold_mb=8, max_instance_mb=256
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
            assert send(process.port, us_clip(files / "warm-us.dcm", 2)[0]) == 0
            assert send(process.port, xa_run(files / "warm-xa.dcm", 2, 256, 256)) == 0
        yield process
    finally:
        process.stop()


def _measured(node: NodeProcess, work: Callable[[], object]) -> tuple[object, int]:
    """What ``work`` returned, and the node's peak memory meanwhile (MB over before)."""
    before = node.reset_peak()
    result = work()
    peak = node.peak_since(before)
    print(f"node peak +{peak} MB over {before // MIB} MB resident before")
    return result, peak


def _pixels_of(path: Path) -> tuple[Dataset, int, int]:
    """The stored header, and where its Pixel Data value lies in the file."""
    with path.open("rb") as handle:
        header = dcmread(handle, stop_before_pixels=True)
        start = handle.tell()
    with path.open("rb") as handle:
        handle.seek(start)
        group, element, _, _, length = struct.unpack("<HH2sHL", handle.read(12))
    assert (group, element) == (0x7FE0, 0x0010)
    return header, start + 12, length


def _frame(path: Path, start: int, size: int, index: int) -> np.ndarray:
    with path.open("rb") as handle:
        handle.seek(start + index * size)
        return np.frombuffer(handle.read(size), dtype=np.uint8)


# -- the cases ------------------------------------------------------------------
@pytest.mark.slow
def test_a_deflate_bomb_is_refused_without_inflating_it(node: NodeProcess, files: Path) -> None:
    bomb = deflate_bomb(files / "bomb.dcm", inflated_mb=300)
    assert bomb.stat().st_size < 2 * MIB
    stored = len(node.stored())
    status, peak = _measured(node, lambda: send(node.port, bomb, DeflatedExplicitVRLittleEndian))
    assert status == 0xA700, hex(status)  # out of resources: beyond the instance limit
    assert len(node.stored()) == stored
    assert peak < BOUND_MB, f"+{peak} MB for a deflate bomb"
    assert node.spool_files() == []
    assert node.process.poll() is None


@pytest.mark.slow
def test_deflated_data_above_the_threshold_inflates_into_the_spool(
    node: NodeProcess, files: Path
) -> None:
    path = deflate_bomb(files / "deflated-200.dcm", inflated_mb=200)
    stored = set(node.stored())
    status, peak = _measured(node, lambda: send(node.port, path, DeflatedExplicitVRLittleEndian))
    assert status == 0x0000, hex(status)
    assert peak < BOUND_MB, f"+{peak} MB for 200 MB inflated"
    (new,) = set(node.stored()) - stored
    header = dcmread(new, stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert str(header.PatientName) != MARKER
    assert node.spool_files() == []


def test_an_ultrasound_clip_is_cleaned_frame_by_frame(node: NodeProcess, files: Path) -> None:
    frames = 220  # 203 MB of RGB
    path, _, frame = us_clip(files / "us-200.dcm", frames)
    stored = set(node.stored())
    status, peak = _measured(node, lambda: send(node.port, path))
    assert status == 0x0000, hex(status)
    assert peak < BOUND_MB, f"+{peak} MB for a 203 MB clip"
    (new,) = set(node.stored()) - stored
    header, start, length = _pixels_of(new)
    size = 480 * 640 * 3
    assert length == size * frames
    assert str(header.PatientName) != MARKER and header.BurnedInAnnotation == "NO"
    for index in (0, frames // 2, frames - 1):
        stored_frame = _frame(new, start, size, index).reshape(480, 640, 3)
        sent = np.roll(frame, index * 3, axis=1)
        assert not stored_frame[:60].any()  # the banner is black on every frame
        assert np.array_equal(stored_frame[60:], sent[60:])  # the image is as sent
    assert node.spool_files() == []


@pytest.mark.slow
def test_nothing_is_in_the_clear_while_it_is_received(node: NodeProcess, files: Path) -> None:
    path = xa_run(files / "xa-marker.dcm", 160)
    marker = MARKER.encode()
    seen: list[int] = []
    clear: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for fd in node.spool_files():
                try:
                    content = fd.read_bytes()
                except OSError:
                    continue
                seen.append(len(content))
                if marker in content:
                    clear.append(str(fd))
            for root in (node.spool_dir, node.data_dir):
                for file in root.rglob("*"):
                    try:
                        if file.is_file() and marker in file.read_bytes():
                            clear.append(str(file))
                    except OSError:
                        continue
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert send(node.port, path) == 0
    finally:
        done.set()
        watcher.join()
    assert clear == []
    assert seen and max(seen) > 8 * MIB  # the instance was in the spool, encrypted
    assert node.spool_files() == []
    assert list(node.spool_dir.rglob("*.*")) == []


@pytest.mark.slow
def test_two_large_instances_at_once(node: NodeProcess, files: Path) -> None:
    paths = [xa_run(files / f"xa-{n}.dcm", 200, 1024, 1024) for n in range(2)]
    statuses: list[int] = []

    def both() -> None:
        threads = [
            threading.Thread(target=lambda p=p: statuses.append(send(node.port, p))) for p in paths
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    _, peak = _measured(node, both)
    assert statuses == [0, 0]
    assert peak < 2 * BOUND_MB, f"+{peak} MB for two 200 MB instances at once"


@pytest.mark.slow
def test_a_one_gigabyte_instance_in_bounded_memory(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The default configuration (64 MiB threshold, 4 GiB limit)."""
    folder = tmp_path_factory.mktemp("gigabyte")
    node = NodeProcess(folder / "node")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
            assert send(node.port, xa_run(folder / "warm.dcm", 2, 256, 256)) == 0
            frames = 1024
            path = xa_run(folder / "xa-1g.dcm", frames)
            status, peak = _measured(node, lambda: send(node.port, path))
        print(f"\n1 GiB XA over DIMSE: node peak +{peak} MB over its resident memory before")
        assert status == 0x0000, hex(status)
        assert peak < GIGABYTE_BOUND_MB, f"+{peak} MB for 1 GiB"
        stored = [p for p in node.stored() if p.stat().st_size > MIB]
        assert len(stored) == 1
        header, start, length = _pixels_of(stored[0])
        assert str(header.PatientName) != MARKER
        assert length == frames * MIB
        _, sent_start, _ = _pixels_of(path)
        for index in (0, 1, frames // 2, frames - 1):
            assert np.array_equal(
                _frame(stored[0], start, MIB, index), _frame(path, sent_start, MIB, index)
            )
        assert node.spool_files() == []
    finally:
        node.stop()
