"""Burned-in identity an outside attacker got past the node, each as sent.

Every case goes through the real ingest with real OCR (Tesseract): an image
that still shows identity must not be stored among the clean ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicomnode.deid.verify import may_carry_text
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.ops.samples import (
    PATIENTS,
    UID_ROOT,
    SyntheticPatient,
    base_dataset,
    small_instance,
    ultrasound_region,
)
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_ocr import CJK_FONT, LATIN_FONT

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def _header(name: str, sop_class: str, modality: str) -> Dataset:
    patient = SyntheticPatient(name, "KG-7201010", "20190802", "M", "ISO_IR 192")
    ds = base_dataset(
        patient,
        sop_class,
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        modality=modality,
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _drawn(size: tuple[int, int], text: str, *, font: str = str(LATIN_FONT)) -> np.ndarray:
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    draw.rectangle([40, 40, size[0] - 40, size[1] - 40], fill=2)
    draw.text((60, size[1] // 2), text, fill=1, font=ImageFont.truetype(font, 22))
    return np.asarray(image)


def _grey(ds: Dataset, pixels: np.ndarray) -> Dataset:
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.where(pixels == 1, 255, pixels * 40).astype(np.uint8).tobytes()
    return ds


def palette_index_text() -> Dataset:
    """Text is palette index 1 (white through the table) on a dark red box."""
    ds = _header("Mamatov^Eldiyar", SecondaryCaptureImageStorage, "OT")
    ds.ConversionType = "WSD"
    indices = _drawn((512, 384), "MAMATOV ELDIYAR 02.08.2019")
    ds = _grey(ds, indices)
    ds.PixelData = indices.astype(np.uint8).tobytes()
    ds.PhotometricInterpretation = "PALETTE COLOR"
    lut = np.zeros((3, 256), dtype="<u2")
    lut[:, 1] = 0xFFFF
    lut[0, 2] = 0x4000
    for colour, values in zip(("Red", "Green", "Blue"), lut, strict=True):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", values.tobytes())
    return ds


def staff_and_phone_only_in_pixels() -> Dataset:
    """Names and numbers that no attribute holds: by context and by shape."""
    ds = _header("Asanov^Bolot", "1.2.840.10008.5.1.4.1.1.12.1", "XA")
    return _grey(ds, _drawn((640, 480), "Dr SADYKOV N. +996 700 123 456"))


def chinese_name_under_a_latin_header() -> Dataset:
    ds = _header("Zhang^Wei", SecondaryCaptureImageStorage, "OT")
    ds.ConversionType = "WSD"
    return _grey(ds, _drawn((512, 384), "患者 张伟 3岁", font=str(CJK_FONT)))


def angio_that_calls_itself_ct() -> Dataset:
    """The SOP class says X-ray angiography; Modality and the flag say otherwise."""
    ds = _header("Temirbekov^Ilyas", "1.2.840.10008.5.1.4.1.1.12.1", "CT")
    ds.BurnedInAnnotation = "NO"
    return _grey(ds, _drawn((512, 512), "TEMIRBEKOV ILYAS 17.04.2020"))


def screen_save_that_says_no_annotation() -> Dataset:
    ds = _header("Ibraimov^Timur", CT_IMAGE, "CT")
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.BurnedInAnnotation = "NO"
    return _grey(ds, _drawn((512, 384), "IBRAIMOV TIMUR 02.08.2019"))


@pytest.mark.parametrize(
    "build",
    [
        palette_index_text,
        staff_and_phone_only_in_pixels,
        chinese_name_under_a_latin_header,
        angio_that_calls_itself_ct,
        screen_save_that_says_no_annotation,
    ],
)
def test_burned_in_identity_is_held(
    ingestor: Ingestor, archive: Archive, build: Callable[[], Dataset]
) -> None:
    ds = build()
    assert may_carry_text(ds)
    result = ingestor.ingest(incoming(ds))
    assert (result.outcome, result.status) == (Outcome.QUARANTINED, 0xB000), result
    assert result.comment.startswith("OCR found identity text")
    assert list(archive.blobs.root.rglob("*.dcm")) == []


def test_bytes_after_the_last_frame_are_not_stored(ingestor: Ingestor, archive: Archive) -> None:
    ds = _header("Bekmuratov^Elnur", US_IMAGE, "US")
    ds = _grey(ds, np.zeros((240, 320), dtype=np.uint8))
    ds.SequenceOfUltrasoundRegions = [ultrasound_region(20, 30, 299, 219)]
    hidden = b"BEKMURATOV^ELNUR KG-7201022 20190802"
    ds.PixelData = ds.PixelData + hidden  # a trailer nobody declared
    assert ingestor.ingest(incoming(ds)).outcome is Outcome.STORED
    (path,) = archive.blobs.root.rglob("*.dcm")
    assert len(dcmread(path).PixelData) == 320 * 240
    assert b"BEKMURATOV" not in path.read_bytes()


@pytest.mark.slow
def test_noise_ocr_reads_is_not_taken_for_a_name(ingestor: Ingestor, archive: Archive) -> None:
    # OCR reads garbage from patterned pixels ("тЕТЕТЕтЕЕ РЕРРЕРРЕ..."): a
    # context word must stand alone to count, or clean images are held.
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    for number in range(1, 41):
        ds = small_instance(
            PATIENTS[number % 4], study_uid=study, series_uid=series, instance_number=number
        )
        result = ingestor.ingest(incoming(ds))
        assert result.outcome is Outcome.STORED, (number, result.comment)
