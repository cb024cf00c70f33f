"""Burned-in text, verified rather than assumed: OCR over what will be stored.

Cleaning blanks where the rules say text is (ultrasound regions, a sender's
rectangles). Whether that was enough is checked here, on the pixels as they
will be written: OCR reads a sample of frames, and identity text anywhere
(the descriptor cleaner's matcher decides what is identity), or any text in
an area the node claims it blanked, sends the instance to quarantine. Only
an instance that was cleaned and passed this check is marked
BurnedInAnnotation NO with Clean Pixel Data (113101).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array
from pydicom.uid import UID, JPEGBaseline8Bit

from dicomnode.deid import ocr
from dicomnode.deid.identity import IdentityMatcher
from dicomnode.deid.names import find_identifiers, find_names
from dicomnode.media.codestream import check_frame
from dicomnode.media.sopclasses import ACCEPTED_STORAGE

# Image types whose pixels may carry burned-in text whatever the header says
# (echo, angio, fluoroscopy, screen captures, endoscopy, photographs).
TEXT_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "SC", "OT", "ES", "XC", "DX", "CR"})
_CJK_GAP = re.compile(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])")
# Image types that say the pixels are a screen or a capture of one.
TEXT_IMAGE_TYPES = frozenset({"SECONDARY", "SCREEN SAVE", "SCREEN CAPTURE", "CAPTURE"})
# ... and SOP classes that do, whatever Modality says (a sender can write CT
# into an angio image): the class is what the pixels are.
TEXT_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture, all kinds
    "1.2.840.10008.5.1.4.1.1.77.1",  # visible light (endoscopy, photographs)
    "1.2.840.10008.5.1.4.1.1.12.",  # X-ray angiography and fluoroscopy, all kinds
    "1.2.840.10008.5.1.4.1.1.6.",  # ultrasound, single and enhanced
    "1.2.840.10008.5.1.4.1.1.3.",  # ultrasound multi-frame
    "1.2.840.10008.5.1.4.1.1.1.",  # digital X-ray, mammography, intra-oral
)
TEXT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",  # computed radiography
        "1.2.840.10008.5.1.4.1.1.6",  # ultrasound (retired)
        "1.2.840.10008.5.1.4.1.1.3",  # ultrasound multi-frame (retired)
    }
)


@dataclass(frozen=True)
class OcrSettings:
    """The OCR check as configured (``ocr``, ``ocr_frames``,
    ``ocr_budget_seconds``): no defaults here, the configuration's stand."""

    enabled: bool
    most_frames: int
    budget_seconds: float
    deferred: bool = False  # read after the instance is answered (held meanwhile)

    @classmethod
    def of(cls, config: Any) -> OcrSettings:
        """The node's configured settings (``ocr``, ``ocr_frames``, ...)."""
        return cls(config.ocr, config.ocr_frames, config.ocr_budget_seconds, config.ocr_deferred)


def must_read(ds: Dataset, settings: OcrSettings, pixels_elsewhere: bool = False) -> bool:
    """Whether OCR reads this image (`check` would): it has pixels (in
    ``ds``, or elsewhere: a spool, bytes passed through) and may carry text."""
    return settings.enabled and may_carry_text(ds) and (pixels_elsewhere or "PixelData" in ds)


def may_carry_text(ds: Dataset) -> bool:
    """An image OCR must read: a modality or SOP class that carries burned-in
    text, an image type that says secondary or screen capture, or any image
    whose BurnedInAnnotation is YES or absent. Asked of a
    header read without its pixels too, so it does not look for Pixel Data."""
    modality = str(ds.get("Modality", "")).upper()
    sop_class = str(ds.get("SOPClassUID", ""))
    burned = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    image_type = ds.get("ImageType") or []
    kinds = {
        str(v).strip().upper()
        for v in (image_type if isinstance(image_type, list | MultiValue) else [image_type])
    }
    return (
        modality in TEXT_MODALITIES
        or bool(kinds & TEXT_IMAGE_TYPES)
        or sop_class.startswith(TEXT_SOP_PREFIXES)
        or sop_class in TEXT_SOP_CLASSES
        or sop_class not in ACCEPTED_STORAGE  # unknown class: its header vouches for nothing
        or burned in ("", "YES")
    )


def _frame_reader(ds: Dataset, syntax: UID) -> Callable[[int], np.ndarray]:
    """Frame ``i`` as 8-bit pixels for OCR, decoded only when asked for."""
    count = int(ds.get("NumberOfFrames") or 1)
    photometric = str(ds.PhotometricInterpretation)
    bits = int(ds.get("BitsStored") or 8)

    def read(index: int) -> np.ndarray:
        if syntax.is_encapsulated:  # its codestream's size, before a decoder allocates it
            fragment = get_frame(ds.PixelData, index, number_of_frames=count)
            check_frame(fragment, syntax, int(ds.Rows), int(ds.Columns))
        if syntax == JPEGBaseline8Bit:
            image = Image.open(BytesIO(fragment))
            return np.asarray(image.convert("RGB" if image.mode != "L" else "L"))
        frame = pixel_array(ds, index=index)
        shown = "RGB" if photometric.startswith("YBR") else photometric
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            frame, shown, bits_now = apply_color_lut(frame, ds), "RGB", 16
            return ocr.to_display(frame, bits_stored=bits_now, photometric=shown)
        return ocr.to_display(frame, bits_stored=bits, photometric=shown)

    return read


def check(
    ds: Dataset,
    syntax: UID,
    *,
    blanked: np.ndarray | None,
    matcher: IdentityMatcher,
    settings: OcrSettings,
    frames: Callable[[int], Dataset] | None = None,
    always: bool = False,
) -> str | None:
    """Why the stored pixels cannot be trusted, or None when OCR found nothing.
    ``frames`` gives frame i as a one-frame data set when ``ds`` holds no
    Pixel Data (a spooled instance, read a frame at a time). ``always``:
    read whatever the settings and the header say now (deferred OCR: the
    ingest decided it must be read, and nothing else will)."""
    if not always and (not settings.enabled or not may_carry_text(ds)):
        return None
    if frames is None and "PixelData" not in ds:
        return None
    count = int(ds.get("NumberOfFrames") or 1)

    def identity(text: str) -> list[str]:
        kinds = set()
        for variant in {text, _CJK_GAP.sub("", text)}:  # OCR spaces out Han characters
            kinds |= {hit.kind for hit in matcher.find(variant)}
            kinds |= {"name" for _ in find_names(variant)}
            kinds |= {kind for _, _, kind in find_identifiers(variant, numbers=False)}
        return sorted(kinds)

    try:
        reader = (
            _frame_reader(ds, syntax)
            if frames is None
            else lambda index: _frame_reader(frames(index), syntax)(0)
        )
        verdict = ocr.verify(
            reader,
            count,
            blanked=blanked,
            is_identity=identity,
            most_frames=settings.most_frames,
            budget_seconds=settings.budget_seconds,
        )
    except Exception as exc:  # a frame the decoders cannot read
        return f"pixels could not be read for verification ({type(exc).__name__})"
    return verdict.reason
