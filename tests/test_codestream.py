"""A compressed frame whose codestream claims another size than its header.

An outside tester stored a 5 KB JPEG 2000 file whose header said 64 x 64 and
whose codestream said 16384 x 16384: the node held 2.2 GiB while checking
its pixels, because the size bounds read the header and the decoder
allocates what the codestream says. `dicomnode.media.codestream` reads the
codestream's own size first; these cases are the generators of such lies.
"""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicomnode.config import Config
from dicomnode.media import transcode
from dicomnode.media.codestream import check_dataset, check_frame, declared

ROOT = Path(__file__).resolve().parents[1]

# What the node transcodes whole by default (transcode_max_mb).
LIMIT = Config().transcode_max_mb << 20


def j2k(rows: int, columns: int, bits: int = 16) -> bytes:
    from openjpeg import encode

    array = np.full((rows, columns), 1234 if bits == 16 else 123, dtype=f"uint{bits}")
    return bytes(encode(array, photometric_interpretation=2, use_mct=False))


def jpeg(rows: int, columns: int) -> bytes:
    out = BytesIO()
    Image.new("L", (columns, rows), 90).save(out, "JPEG")
    return out.getvalue()


def jpeg_ls(rows: int, columns: int) -> bytes:
    from jpeg_ls import encode

    return bytes(encode(np.full((rows, columns), 7, dtype=np.uint8)))


def lying(frame: bytes, syntax: str, rows: int, columns: int, bits: int) -> Dataset:
    """A secondary capture whose header says rows x columns around ``frame``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "LIE^CODESTREAM", "CS-1", "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


@pytest.mark.parametrize(
    ("make", "syntax"),
    [(j2k, JPEG2000Lossless), (jpeg, JPEGBaseline8Bit), (jpeg_ls, JPEGLSLossless)],
)
def test_the_codestream_size_is_read_for_every_family(make, syntax) -> None:
    for rows, columns in ((64, 48), (48, 300)):
        frame = make(rows, columns)
        assert declared(frame, syntax) == (rows, columns)
        check_frame(frame, syntax, rows, columns)
        with pytest.raises(ValueError, match="codestream says"):
            check_frame(frame, syntax, columns, rows)
    assert declared(b"\x00" * 10, RLELossless) is None  # RLE decodes by the header's size


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"\xff\x4f\xff\x51\x00", b"\x00" * 70_000],
)
def test_a_frame_without_a_readable_size_is_refused_not_decoded(garbage: bytes) -> None:
    for syntax in (JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless):
        with pytest.raises(ValueError):
            check_frame(garbage, syntax, 64, 64)


def test_every_frame_of_a_data_set_is_checked() -> None:
    good, bad = j2k(32, 32), j2k(64, 64)
    ds = lying(good, JPEG2000Lossless, 32, 32, 16)
    check_dataset(ds)
    ds.PixelData = encapsulate([good, bad, good])
    ds.NumberOfFrames = 3
    with pytest.raises(ValueError, match="64 x 64"):
        check_dataset(ds)


def test_the_senders_decoders_never_see_a_lying_frame() -> None:
    """The one decoder (WADO-RS, C-GET, C-MOVE, forwarding) refuses it."""
    ds = lying(j2k(256, 256), JPEG2000Lossless, 64, 64, 16)
    with pytest.raises(transcode.TranscodeError):
        transcode.decompressed(ds, limit=LIMIT)
    with pytest.raises(transcode.TranscodeError):
        transcode.decode_frame(ds, bytes(j2k(256, 256)))


INGEST = """
import resource, sys
from pathlib import Path
from pydicom import dcmread
from tests.conftest import incoming, make_config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.node import open_archive

config = make_config(Path(sys.argv[1]))
archive = open_archive(config)
ingestor = Ingestor(config, archive)
ds = dcmread(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = ingestor.ingest(incoming(ds, calling_ae="OSH_CATH"))
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
print(result.outcome.value, grown)
print(result.comment)
"""

MAKE = """
import sys, numpy as np
from openjpeg import encode
n = int(sys.argv[2])
frame = encode(np.full((n, n), 1234, dtype="uint16"), photometric_interpretation=2, use_mct=False)
open(sys.argv[1], "wb").write(bytes(frame))
"""


@pytest.mark.slow
def test_a_lying_header_is_quarantined_without_decoding_the_codestream(tmp_path: Path) -> None:
    """8192 x 8192 16-bit in the codestream (1.2 KB; 128 MiB decoded, several
    times that inside the decoder), 64 x 64 in the header: held for review,
    and the ingest's peak memory does not grow by the decoded size. Each
    step runs in a process of its own, so its peak is its own."""
    frame_file, instance = tmp_path / "big.j2k", tmp_path / "lie.dcm"
    subprocess.run([sys.executable, "-c", MAKE, frame_file, "8192"], check=True)
    ds = lying(frame_file.read_bytes(), JPEG2000Lossless, 64, 64, 16)
    ds.save_as(instance, enforce_file_format=True)
    run = subprocess.run(
        [sys.executable, "-c", INGEST, tmp_path / "node", instance],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    first, comment = run.stdout.strip().splitlines()[-2:]
    outcome, grown = first.split()
    assert outcome != "stored", (outcome, comment)  # held or refused, never stored as sent
    assert int(grown) < 64, f"the ingest grew by {grown} MiB: the codestream was decoded"
