"""The node's one decoder (`transcode.decompressed`): what WADO-RS, C-GET,
C-MOVE and forwarding send when a peer takes only uncompressed data."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicomnode.config import Config
from dicomnode.media import transcode
from dicomnode.media.transcode import TranscodeError, decompressed
from dicomnode.net.retrieve_syntax import NOT_MADE_HERE, UNDECODABLE, Plan, decoded, plan

# What the node transcodes whole by default (transcode_max_mb).
LIMIT = Config().transcode_max_mb << 20


def sample(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, f"{name} not in pydicom-data"
    return dcmread(path)


def without_lossy_history(ds: Dataset) -> Dataset:
    for keyword in (
        "LossyImageCompression",
        "LossyImageCompressionMethod",
        "LossyImageCompressionRatio",
    ):
        ds.pop(keyword, None)
    return ds


def test_retrieve_and_wado_share_one_decoder() -> None:
    assert decoded is decompressed


@pytest.mark.parametrize(
    ("name", "stored", "photometric", "made"),
    [
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", JPEGBaseline8Bit, "YBR_FULL_422", "RGB"),  # subsampled
        ("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit, "YBR_FULL", "YBR_FULL"),  # kept, no rounding
        ("US1_J2KI.dcm", JPEG2000, "YBR_ICT", "RGB"),  # the J2K transform undone
        ("GDCMJ2K_TextGBR.dcm", None, "YBR_RCT", "RGB"),
        ("SC_rgb_rle_2frame.dcm", RLELossless, "RGB", "RGB"),
    ],
)
def test_colour_says_what_the_decoded_pixels_are(
    name: str, stored: str | None, photometric: str, made: str
) -> None:
    ds = sample(name)
    assert ds.PhotometricInterpretation == photometric
    if stored:
        assert ds.file_meta.TransferSyntaxUID == stored
    expected = ds.pixel_array.copy()  # what a receiver of the stored file sees
    out = decompressed(ds, limit=LIMIT)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (out.PhotometricInterpretation, out.PlanarConfiguration) == (made, 0)
    again = dcmread(BytesIO(_saved(out)))
    assert np.array_equal(again.pixel_array, expected)
    assert again.SOPInstanceUID == ds.SOPInstanceUID


def test_rle_colour_stored_planar_is_sent_interleaved() -> None:
    """RLE ignores Planar Configuration; a sender that wrote 1 must not make
    the decoded (interleaved) bytes be read as planar."""
    ds = sample("SC_rgb_rle_2frame.dcm")
    expected = ds.pixel_array.copy()
    ds.PlanarConfiguration = 1
    out = decompressed(ds, limit=LIMIT)
    assert out.PlanarConfiguration == 0
    assert np.array_equal(dcmread(BytesIO(_saved(out))).pixel_array, expected)


def test_lossy_history_told_only_by_the_syntax_survives_every_path() -> None:
    """A JPEG baseline file without Lossy Image Compression: decoded for a
    peer, or remade losslessly for a DICOMweb client, it stays marked lossy."""
    ds = without_lossy_history(sample("SC_rgb_jpeg_dcmtk.dcm"))
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    for target in (ExplicitVRLittleEndian, RLELossless):
        made = dcmread(BytesIO(transcode.transcode(buffer.getvalue(), target, limit=LIMIT)))
        assert made.file_meta.TransferSyntaxUID == target
        assert made.LossyImageCompression == "01", target
        assert made.LossyImageCompressionMethod == "ISO_10918_1"
        assert float(made.LossyImageCompressionRatio) > 1


def test_a_lossy_history_already_told_is_not_rewritten() -> None:
    ds = sample("SC_rgb_jpeg_dcmtk.dcm")
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.pop("LossyImageCompressionRatio", None)
    out = decompressed(ds, limit=LIMIT)
    assert "LossyImageCompressionRatio" not in out  # not invented for another step's method
    lossless = decompressed(sample("SC_rgb_rle_2frame.dcm"), limit=LIMIT)
    assert lossless.get("LossyImageCompression") != "01"


def _damaged() -> Dataset:
    ds = sample("SC_rgb_rle_2frame.dcm")
    ds.PatientName = "Ivanova^Aigerim"
    ds.PixelData = encapsulate([b"Ivanova^Aigerim" * 4] * int(ds.NumberOfFrames))
    return ds


def test_undecodable_data_fail_with_a_text_that_quotes_nothing() -> None:
    ds = _damaged()
    with pytest.raises(TranscodeError) as failed:
        decompressed(ds, limit=LIMIT)
    assert "RLE Lossless" in str(failed.value)
    assert "Ivanova" not in str(failed.value) and ds.SOPInstanceUID not in str(failed.value)
    assert isinstance(failed.value, ValueError)  # what retrieve catches
    buffer = BytesIO()
    _damaged().save_as(buffer, enforce_file_format=True)
    with pytest.raises(TranscodeError) as failed:
        transcode.transcode(buffer.getvalue(), ExplicitVRLittleEndian, limit=LIMIT)
    assert "Ivanova" not in str(failed.value)


def test_big_endian_pixel_data_are_refused_clearly() -> None:
    ds = sample("MR_small_bigendian.dcm")
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    with pytest.raises(TranscodeError, match="Big Endian"):
        decompressed(ds, limit=LIMIT)


def test_without_pixel_data_only_the_label_changes() -> None:
    ds = sample("SC_rgb_jpeg_dcmtk.dcm")
    del ds.PixelData
    out = decompressed(ds, limit=LIMIT)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PhotometricInterpretation == "YBR_FULL"


def _saved(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_what_no_decoder_here_can_read_is_not_read_for_nothing() -> None:
    """Video and unknown syntaxes: the plan says why before any file is read
    (and a syntax the node does not know does not crash the retrieve)."""
    assert plan(MPEG2MPML, {ExplicitVRLittleEndian}) == Plan(send=False, reason=UNDECODABLE)
    assert plan("1.3.6.1.4.1.99999.1", {ImplicitVRLittleEndian}).reason == NOT_MADE_HERE
    ds = sample("SC_rgb_rle_2frame.dcm")
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    with pytest.raises(TranscodeError, match="no decoder"):
        decompressed(ds, limit=LIMIT)
