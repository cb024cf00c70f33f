"""The demo's worked examples: one made-up child per defect, with images
whose answers are known, so docs/worked-examples.md can be followed in the
browser after `make run` (tests/test_worked_examples.py measures every
number that page states and checks it against what the node gives).

The images are drawings, not scans: echo planes with the atrial or
ventricular septum as a bright band and the defect a gap in it, on a
region of 0.1 mm a pixel; a spectral Doppler sweep of a restrictive VSD
jet; a lateral angiogram of a conical duct with the header's imager
spacing and magnification. Fixed UIDs: loading the demo twice finds
duplicates, not new studies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomnode.ops.ecgwave import synthetic_ecg, with_ecg
from dicomnode.ops.samples import (
    SyntheticPatient,
    demo_uid,
    small_instance,
    ultrasound_region,
    xa_instance,
)

WIDTH, HEIGHT = 640, 480
TOP = 40  # the echo region starts under the banner rows
ECHO_CM_PER_PX = 0.01  # 0.1 mm a pixel
# The Doppler sweep: seconds and cm/s a pixel; the baseline's row; the jet.
SWEEP_S_PER_PX, SWEEP_CMS_PER_PX, BASELINE = 0.005, -2.5, 420
JET_PEAK_CMS, JET_S, JET_START = 460.0, 0.36, 200
SECONDS, CM_PER_S, CW = 4, 7, 4  # PS3.3 C.8.5.5.1.15 unit codes; CW spectral data
# The angiogram: 0.2 mm at the detector, magnified 1.25 at the duct.
XA_SIZE, XA_IMAGER_MM, XA_MAGNIFICATION = 512, 0.2, 1.25


@dataclass(frozen=True)
class Child:
    patient: SyntheticPatient
    weight_kg: str
    height_m: str


def _child(name: str, number: str, born: str, sex: str, what: str) -> SyntheticPatient:
    return SyntheticPatient(name, number, born, sex, "ISO_IR 100", f"Worked example: {what}")


CHILDREN = {
    # Names none of whose words is in a description: the de-identification
    # takes the child's name out of free text, and "Worked example" must stay.
    "secundum ASD": Child(
        _child("Abdieva^Asel", "DEMO-ASD-01", "20210301", "F", "secundum ASD"), "18", "1.08"
    ),
    "PDA": Child(_child("Karimov^Bakyt", "DEMO-PDA-01", "20240815", "M", "PDA"), "11.5", "0.86"),
    "perimembranous VSD": Child(
        _child("Sydykova^Dana", "DEMO-PMVSD-01", "20230410", "F", "perimembranous VSD"),
        "13",
        "0.95",
    ),
    "muscular VSD": Child(
        _child("Nurlanov^Erlan", "DEMO-MVSD-01", "20220105", "M", "muscular VSD"), "15.5", "1.02"
    ),
}


def _speckle(seed: int) -> np.ndarray:
    """An echo plane's dark blood pool and faint speckle."""
    rng = np.random.default_rng(seed)
    image = rng.normal(18, 5, (HEIGHT, WIDTH))
    image[:TOP] = 0  # the banner rows, left black
    return image


def _band(image: np.ndarray, row: int, x0: int, x1: int, thick: int = 8) -> None:
    """A bright septum along ``row`` from column x0 to x1 (its ends at the
    columns' left edges: x0 to x1 is (x1 - x0) pixels long)."""
    image[row - thick // 2 : row + thick // 2, x0:x1] = 190


def _dot(image: np.ndarray, x: int, y: int) -> None:
    """A bright landmark (a valve's hinge point, the apex) centred on (x, y)."""
    image[y - 4 : y + 4, x - 4 : x + 4] = 230


def _echo(child: Child, key: str, number: int, view: str, image: np.ndarray) -> Dataset:
    ds = small_instance(
        child.patient,
        study_uid=demo_uid("worked", key),
        series_uid=demo_uid("worked", key, "series", number),
        instance_number=1,
    )
    uid = UID(demo_uid("worked", key, number))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.Rows, ds.Columns = HEIGHT, WIDTH
    region = ultrasound_region(0, TOP, WIDTH - 1, HEIGHT - 1)
    region.PhysicalDeltaX = region.PhysicalDeltaY = ECHO_CM_PER_PX
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = np.clip(image, 0, 255).astype(np.uint8).tobytes()
    ds.SeriesNumber = number
    ds.SeriesDescription = view
    _sized(ds, child)
    return ds


def _sized(ds: Dataset, child: Child) -> None:
    ds.PatientWeight, ds.PatientSize = child.weight_kg, child.height_m


def asd() -> list[Dataset]:
    """Three planes of the atrial septum: bicaval (SVC and IVC rims),
    short axis (aortic and posterior rims), four-chamber (AV-valve rim)."""
    child = CHILDREN["secundum ASD"]
    bicaval = _speckle(1)
    _band(bicaval, 240, 120, 220)  # SVC rim 10.0 mm
    _band(bicaval, 240, 350, 500)  # defect 13.0 mm, IVC rim 15.0 mm; septum 38.0 mm
    short_axis = _speckle(2)
    _band(short_axis, 260, 150, 190)  # aortic rim 4.0 mm
    _band(short_axis, 260, 330, 470)  # defect 14.0 mm, posterior rim 14.0 mm
    four_chamber = _speckle(3)
    _band(four_chamber, 250, 100, 200)
    _band(four_chamber, 250, 320, 400)  # defect 12.0 mm, AV-valve rim 8.0 mm
    return [
        _echo(child, "asd", 1, "Subcostal bicaval", bicaval),
        _echo(child, "asd", 2, "Parasternal short axis", short_axis),
        _echo(child, "asd", 3, "Apical four-chamber", four_chamber),
    ]


def _funnel(image: np.ndarray, lv_row: int, rv_row: int, centre: int, lv: int, rv: int) -> None:
    """A septum from lv_row to rv_row with a defect narrowing from ``lv``
    pixels on its left-ventricular face to ``rv`` on its right."""
    for row in range(lv_row, rv_row):
        share = (row - lv_row) / max(rv_row - lv_row - 1, 1)
        half = (lv + (rv - lv) * share) / 2
        image[row, 60 : round(centre - half)] = 190
        image[row, round(centre + half) : 580] = 190


def pm_vsd() -> list[Dataset]:
    """A five-chamber plane of a perimembranous VSD (LV face 6.4 mm, RV face
    4.2 mm; the aortic valve's hinge 3.0 mm from the LV face's edge, the
    tricuspid's 2.5 mm from the RV face's) and the CW Doppler of its
    restrictive jet (4.6 m/s)."""
    child = CHILDREN["perimembranous VSD"]
    plane = _speckle(4)
    _funnel(plane, 220, 260, 320, 64, 42)  # LV face 288 to 352, RV face 299 to 341
    _dot(plane, 254, 220)  # the aortic valve's hinge: its edge at 258
    _dot(plane, 370, 259)  # the tricuspid valve's hinge: its edge at 366
    return [
        _echo(child, "pmvsd", 1, "Apical five-chamber", plane),
        _sweep(child, "pmvsd", 2),
    ]


def jet_envelope(x: float) -> float:
    """The jet's velocity (cm/s) at sweep column x: a systolic arch."""
    t = (x - JET_START) * SWEEP_S_PER_PX
    return JET_PEAK_CMS * math.sin(math.pi * t / JET_S) if 0 <= t <= JET_S else 0.0


def _sweep(child: Child, key: str, number: int) -> Dataset:
    image = np.full((HEIGHT, WIDTH), 12.0)
    image[:TOP] = 0
    image[BASELINE, :] = 120  # the baseline
    for x in range(WIDTH):
        for beat in (0, 140):  # two beats, 0.7 s apart
            top = BASELINE + jet_envelope(x - beat) / SWEEP_CMS_PER_PX
            if top < BASELINE:
                image[round(top) : BASELINE, x] = 200  # the spectrum under its envelope
    ds = _echo(child, key, number, "CW Doppler across the VSD", image)
    region = ultrasound_region(0, 200, WIDTH - 1, HEIGHT - 1)
    region.RegionSpatialFormat, region.RegionDataType = 3, CW  # spectral
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = SECONDS, CM_PER_S
    region.ReferencePixelX0, region.ReferencePixelY0 = 0, BASELINE - 200
    region.ReferencePixelPhysicalValueX = region.ReferencePixelPhysicalValueY = 0.0
    region.PhysicalDeltaX, region.PhysicalDeltaY = SWEEP_S_PER_PX, SWEEP_CMS_PER_PX
    ds.SequenceOfUltrasoundRegions = [region]
    return ds


def muscular_vsd() -> list[Dataset]:
    """A four-chamber plane of a mid-muscular VSD at end-diastole (7.0 mm
    across; the nearest valve's hinge 8.0 mm from its edge, the apex 10.0 mm
    from the other) and at end-systole (5.0 mm)."""
    child = CHILDREN["muscular VSD"]
    planes = []
    for seed, (left, right) in ((5, (285, 355)), (6, (295, 345))):
        plane = _speckle(seed)
        _funnel(plane, 200, 260, (left + right) // 2, right - left, right - left)
        _dot(plane, 201, 230)  # the tricuspid valve's hinge: its edge at 205
        _dot(plane, 459, 230)  # the apex: its edge at 455
        planes.append(plane)
    return [
        _echo(child, "mvsd", 1, "Apical four-chamber, end-diastole", planes[0]),
        _echo(child, "mvsd", 2, "Apical four-chamber, end-systole", planes[1]),
    ]


def _duct_width(y: np.ndarray) -> np.ndarray:
    """A conical duct (Krichenko A): 60 px at its aortic end (row 200),
    narrowing to 15 px at row 250 and so to its pulmonary end (row 256)."""
    share = np.clip((y - 200) / 50, 0, 1)
    return 60 - 45 * share


def pda() -> list[Dataset]:
    """A lateral angiogram of a conical duct from the descending aorta (rows
    100 to 200) to the pulmonary artery (rows 256 to 330): narrowest 15 px,
    ampulla 60 px, 56 px long, at 0.16 mm a pixel."""
    child = CHILDREN["PDA"]
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:XA_SIZE, 0:XA_SIZE].astype(float) + 0.5
    image = 175 + 20 * np.sin(x / 120) * np.cos(y / 90) + rng.normal(0, 3, (XA_SIZE, XA_SIZE))
    dark = np.zeros_like(image)
    dark[(y >= 100) & (y < 200)] = 1  # the aorta
    dark[(y >= 256) & (y < 330) & (x >= 150) & (x < 420)] = 1  # the pulmonary artery
    half = _duct_width(y) / 2
    inside = np.clip(half - np.abs(x - 256) + 0.5, 0, 1)  # partial-volume edges
    dark = np.maximum(dark, np.where((y >= 200) & (y < 256), inside, 0))
    image -= 110 * dark
    ds = xa_instance(
        child.patient,
        frames=1,
        rows=XA_SIZE,
        cols=XA_SIZE,
        transfer_syntax=ExplicitVRLittleEndian,
        study_uid=demo_uid("worked", "pda"),
        series_uid=demo_uid("worked", "pda", "series"),
        sop_instance_uid=demo_uid("worked", "pda", 1),
    )
    ds.PixelData = np.clip(image, 0, 255).astype(np.uint8).tobytes()
    ds.SeriesDescription = "Lateral descending aortogram"
    ds.ImagerPixelSpacing = [XA_IMAGER_MM, XA_IMAGER_MM]
    ds.EstimatedRadiographicMagnificationFactor = XA_MAGNIFICATION
    for gone in ("PixelSpacing", "DistanceSourceToDetector", "DistanceSourceToPatient"):
        if gone in ds:
            delattr(ds, gone)
    _sized(ds, child)
    return [*earlier_pda(), ds, _cine(child, "pda", "20261103", 15, 30, 115, seed=21)]


def _cine(
    child: Child, study: str, date: str, fps: float, frames: int, rate: float, seed: int
) -> Dataset:
    """A lateral angio run of ``study`` carrying its lead II (``rate`` a
    minute): what "In step" and "One beat" play."""
    ds = xa_instance(
        child.patient,
        frames=frames,
        rows=128,
        cols=128,
        transfer_syntax=ExplicitVRLittleEndian,
        study_uid=demo_uid("worked", study),
        series_uid=demo_uid("worked", study, "cine"),
        sop_instance_uid=demo_uid("worked", study, "cine", 1),
        seed=seed,
    )
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.FrameTime = 1000 / fps
    ds.SeriesDescription = "Lateral aortogram, cine with ECG"
    ds.SeriesNumber = 2
    lead, _ = synthetic_ecg(rate, 500, frames / fps, seed=seed)
    _sized(ds, child)
    return with_ecg(ds, {"II": lead}, 500)


def earlier_pda() -> list[Dataset]:
    """The same child's study of a year before, sent by the same hospital:
    a run to set beside this one ("Compare"), at its own frame and heart rate."""
    younger = Child(CHILDREN["PDA"].patient, "9.6", "0.76")
    return [_cine(younger, "pda-earlier", "20251104", 25, 40, 130, seed=22)]


EXAMPLES: dict[str, Callable[[], list[Dataset]]] = {
    "secundum ASD": asd,
    "PDA": pda,
    "perimembranous VSD": pm_vsd,
    "muscular VSD": muscular_vsd,
}


def datasets() -> list[Dataset]:
    """Every worked example's images, as the demo stores them."""
    return [ds for make in EXAMPLES.values() for ds in make()]
