"""Phantoms of known geometry for the viewer's measuring tests.

One synthetic study ("Geometry phantom") whose every scale is known, so a
test can compute the true length of any line from the phantom alone:

- an echo (640 x 480) with one ultrasound region of 0.05 cm/px and a bright
  bar at columns 200-240, rows 238-242;
- an X-ray series of two runs (512 x 512, 3 frames; 384 x 512, 9 frames),
  Imager Pixel Spacing 0.308 mm and magnification 1.47, a bright 20 px
  square marker at columns 150-169, rows 200-219;
- an X-ray run (512 x 512, 4 frames, same spacing) with a 6F "catheter": a
  dark band 24 px wide (columns 250-273), so a 6F calibration across it
  makes 2 mm / 24 px;
- a stack of three single-frame echoes (64 x 64, a region of 0.02 cm/px
  from row 8 down), one series shown as one clip.

Points are continuous image coordinates: pixel i spans [i, i + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance, us_phantom, xa_instance

PATIENT = PATIENTS[3]
DESCRIPTION = "Geometry phantom"
US_MM_PER_PX = 0.5
XA_SPACING, XA_MAGNIFICATION = 0.308, 1.47
XA_MM_PER_PX = XA_SPACING / XA_MAGNIFICATION
CATHETER = (250, 274)  # columns [start, end): 24 px
CATHETER_FRENCH = 6
CATHETER_MM_PER_PX = CATHETER_FRENCH / 3 / (CATHETER[1] - CATHETER[0])
MARKER = (150, 200, 20)  # column, row, size of the X-ray marker


@dataclass(frozen=True)
class Image:
    """What a test needs of one phantom image: its size and a bright and a
    dark point (to check what is drawn where)."""

    columns: int
    rows: int
    mm_per_px: float
    bright: tuple[float, float]
    dark: tuple[float, float]


US = Image(640, 480, US_MM_PER_PX, bright=(220.5, 240.5), dark=(220.5, 234.5))
XA_RUN1 = Image(512, 512, XA_MM_PER_PX, bright=(160.0, 210.0), dark=(160.0, 190.0))
XA_RUN2 = Image(384, 512, XA_MM_PER_PX, bright=(160.0, 210.0), dark=(140.0, 210.0))
XA_CATHETER = Image(512, 512, XA_MM_PER_PX, bright=(160.0, 210.0), dark=(262.0, 300.0))
STACK = Image(64, 64, 0.2, bright=(0, 0), dark=(0, 0))  # no probes: a noise pattern


def _xa(study: str, series: str, number: int, frames: int, cols: int, catheter: bool) -> Dataset:
    ds = xa_instance(
        PATIENT,
        frames=frames,
        rows=512,
        cols=cols,
        transfer_syntax=ExplicitVRLittleEndian,
        study_uid=study,
        series_uid=series,
        instance_number=number,
    )
    ds.StudyDescription = DESCRIPTION
    ds.SeriesNumber = 3 if catheter else 2
    ds.SeriesDescription = "Catheter phantom" if catheter else "Calibrated phantom"
    ds.ImagerPixelSpacing = [XA_SPACING, XA_SPACING]
    ds.EstimatedRadiographicMagnificationFactor = XA_MAGNIFICATION
    y, x = np.mgrid[0:512, 0:cols]
    image = (60 + (x + y) % 40).astype(np.uint8)
    column, row, size = MARKER
    image[row : row + size, column : column + size] = 250
    if catheter:
        image[50:460, CATHETER[0] : CATHETER[1]] = 5
    ds.PixelData = np.repeat(image[np.newaxis], frames, axis=0).tobytes()
    return ds


def study() -> list[Dataset]:
    """The phantom study's instances, in the order a sender would send them."""
    uid = generate_uid(UID_ROOT)
    echo = us_phantom(PATIENT)
    echo.StudyInstanceUID = uid
    echo.StudyDescription = DESCRIPTION
    echo.SeriesNumber = 1
    calibrated, stack = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    stills = [
        small_instance(PATIENT, study_uid=uid, series_uid=stack, instance_number=n)
        for n in (1, 2, 3)
    ]
    for still in stills:
        still.StudyDescription = DESCRIPTION
        still.SeriesNumber = 4
        still.SeriesDescription = "Stack phantom"
    return [
        echo,
        _xa(uid, calibrated, 1, 3, 512, catheter=False),
        _xa(uid, calibrated, 2, 9, 384, catheter=False),
        _xa(uid, generate_uid(UID_ROOT), 1, 4, 512, catheter=True),
        *stills,
    ]
