"""Synthetic and sample-wheel DICOM data for the demo set, tests and benchmarks.

Everything here is made up: names in several scripts exercise character sets,
and no file is committed; X-ray angiography (which no sample wheel carries)
is generated as moving dark vessels over a noisy background.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from dicomnode import UID_ROOT as PROJECT_UID_ROOT

XA_STORAGE = UID("1.2.840.10008.5.1.4.1.1.12.1")
US_STORAGE = UID("1.2.840.10008.5.1.4.1.1.6.1")
UID_ROOT = PROJECT_UID_ROOT + ".9."  # synthetic data only


@dataclass(frozen=True)
class SyntheticPatient:
    name: str
    patient_id: str
    birth_date: str
    sex: str
    charset: str
    # A study description in the hospital's language: free text that survives
    # de-identification, so character sets stay testable end to end.
    description: str = "Catheterisation ASD closure"


PATIENTS = (
    SyntheticPatient(
        "Иванов^Алишер", "KG-000101", "20190314", "M", "ISO_IR 192", "Закрытие ДМПП окклюдером"
    ),
    SyntheticPatient(
        "Раҳимова^Фарангис", "TJ-000202", "20200921", "F", "ISO_IR 192", "Пӯшидани ОАП"
    ),
    SyntheticPatient("王^小明", "CN-000303", "20180102", "M", "GB18030", "房间隔缺损封堵术"),
    SyntheticPatient("Nazarov^Timur", "KZ-000404", "20210611", "M", "ISO_IR 100"),
    SyntheticPatient(
        "Петрова^Айгерим", "KZ-000505", "20170730", "F", "ISO_IR 144", "Закрытие ОАП спиралью"
    ),
)


def angio_frames(frames: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Frames of contrast filling a branching vessel (uint8, MONOCHROME2)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    background = 150 + 40 * np.sin(x / cols * 3.1) * np.cos(y / rows * 2.3)
    paths = [
        np.abs(x - (cols * 0.5 + cols * 0.15 * np.sin(y / rows * 6.0))) < cols * 0.018,
        np.abs(y - (rows * 0.4 + (x - cols * 0.5) * 0.6)) < rows * 0.012,
        np.abs(y - (rows * 0.7 - (x - cols * 0.5) * 0.4)) < rows * 0.010,
    ]
    out = np.empty((frames, rows, cols), dtype=np.uint8)
    for index in range(frames):
        fill = (index + 1) / frames
        image = background.copy()
        for vessel in paths:
            image[vessel & (y < rows * fill * 1.2)] -= 90
        image += rng.normal(0, 6, size=(rows, cols))
        out[index] = np.clip(image, 0, 255).astype(np.uint8)
    return out


def base_dataset(
    patient: SyntheticPatient,
    sop_class: UID,
    *,
    study_uid: str,
    series_uid: str,
    modality: str,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SpecificCharacterSet = patient.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid or generate_uid(UID_ROOT)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientWeight = "14.5"
    ds.PatientSize = "0.96"
    ds.StudyDate = "20261103"
    ds.StudyTime = "093000"
    ds.SeriesDate = "20261103"
    ds.SeriesTime = "093512"
    ds.ContentDate = "20261103"
    ds.ContentTime = "093512"
    ds.AccessionNumber = "ACC" + patient.patient_id[-4:]
    ds.StudyID = "1"
    ds.StudyDescription = patient.description
    latin = patient.charset == "ISO_IR 100"
    ds.ReferringPhysicianName = "Osmonov^Bakyt" if latin else "Осмонов^Бакыт"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    # Type 2C: empty (unknown) satisfies dciodvfy for the heart.
    ds.PatientOrientation = ""
    ds.Laterality = ""
    ds.Manufacturer = "SyntheticVendor"
    ds.InstitutionName = "Synthetic Children's Hospital"
    return ds


def xa_instance(
    patient: SyntheticPatient = PATIENTS[0],
    *,
    frames: int = 30,
    rows: int = 512,
    cols: int = 512,
    transfer_syntax: UID = RLELossless,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    seed: int = 0,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """A multi-frame X-ray angiography run at 15 frames/s."""
    ds = base_dataset(
        patient,
        XA_STORAGE,
        study_uid=study_uid or generate_uid(UID_ROOT),
        series_uid=series_uid or generate_uid(UID_ROOT),
        modality="XA",
        instance_number=instance_number,
        sop_instance_uid=sop_instance_uid,
    )
    ds.SeriesDescription = "LAO 30 CRA 20"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "66.67"
    ds.CineRate = 15
    ds.RecommendedDisplayFrameRate = 15
    ds.PositionerPrimaryAngle = "30"
    ds.PositionerSecondaryAngle = "20"
    ds.DistanceSourceToDetector = "1100"
    ds.DistanceSourceToPatient = "750"
    ds.ImagerPixelSpacing = ["0.154", "0.154"]
    ds.KVP = "70"
    ds.XRayTubeCurrent = 250
    ds.ExposureTime = 8
    ds.Exposure = 2
    ds.PositionerMotion = "STATIC"
    ds.RadiationSetting = "GR"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelData = angio_frames(frames, rows, cols, seed).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    return ds


def ultrasound_region(x0: int, y0: int, x1: int, y1: int) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.02
    return region


def small_instance(
    patient: SyntheticPatient,
    *,
    study_uid: str,
    series_uid: str,
    instance_number: int,
    size: int = 64,
) -> Dataset:
    """A small single-frame ultrasound image (a few kB), for many-instance loads."""
    ds = base_dataset(
        patient,
        US_STORAGE,
        study_uid=study_uid,
        series_uid=series_uid,
        modality="US",
        instance_number=instance_number,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIOLOGY"]
    # Where the echo image is; the top rows are the banner (burned-in text).
    ds.SequenceOfUltrasoundRegions = [ultrasound_region(0, size // 8, size - 1, size - 1)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    value = (np.arange(size * size, dtype=np.uint32) * (instance_number + 1)) % 251
    ds.PixelData = value.astype(np.uint8).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def us_phantom(patient: SyntheticPatient = PATIENTS[0]) -> Dataset:
    """A calibration phantom: 640x480 grey echo, one region of 0.05 cm/px and
    a bright 20 mm bar from (200, 240) to (240, 240)."""
    ds = small_instance(
        patient,
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        instance_number=1,
        size=64,
    )
    ds.Rows, ds.Columns = 480, 640
    region = ultrasound_region(20, 40, 619, 459)
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.05
    ds.SequenceOfUltrasoundRegions = [region]
    image = np.full((480, 640), 30, dtype=np.uint8)
    image[238:243, 200:241] = 255
    ds.PixelData = image.tobytes()
    ds.SeriesDescription = "Calibration phantom"
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def sample_dirs() -> list[Path]:
    """Folders of the sample-data wheels that are installed."""
    dirs = []
    for package, sub in (
        ("pydicom", "data/test_files"),
        ("data_store", "data"),
        ("deid_data", "data"),
    ):
        spec = find_spec(package)
        if spec is not None and spec.origin is not None:
            folder = Path(spec.origin).parent / sub
            if folder.is_dir():
                dirs.append(folder)
    return dirs


def sample_file(name: str) -> Path:
    """A file of the sample wheels by name (e.g. ``ultrasounds/RGB_IMAGE.dcm``)."""
    for folder in sample_dirs():
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} is not in the installed sample-data wheels")


DEMO_US = (
    "ultrasounds/ultrasound-multiframe.dcm",
    "ultrasounds/GREYSCALE_IMAGE.dcm",
    "ultrasounds/RGB_IMAGE.dcm",
    "color3d_jpeg_baseline.dcm",
    "examples_ybr_color.dcm",
    "US1_J2KR.dcm",
)
DEMO_ZIPPED = ("ultrasounds/RGB_CINE.zip", "ultrasounds/GREYSCALE_CINE.zip")


def demo_uid(*parts: object) -> str:
    return generate_uid(UID_ROOT, entropy_srcs=["chd-demo", *map(str, parts)])


@contextmanager
def demo_files() -> Iterator[list[Path]]:
    """Echo clips from the wheels plus synthetic angio runs and the worked
    examples' studies (`worked`), in a temp folder."""
    with tempfile.TemporaryDirectory(prefix="chd-demo-") as tmp:
        folder = Path(tmp)
        paths = [sample_file(name) for name in DEMO_US]
        for name in DEMO_ZIPPED:
            with zipfile.ZipFile(sample_file(name)) as archive:
                for member in archive.namelist():
                    if member.endswith(".dcm"):
                        paths.append(Path(archive.extract(member, folder / "zips")))
        for index, (patient, syntax) in enumerate(
            (
                (PATIENTS[0], RLELossless),
                (PATIENTS[1], JPEG2000Lossless),
                (PATIENTS[2], RLELossless),
            )
        ):
            # Fixed UIDs: loading the demo twice finds duplicates, not new studies.
            study = demo_uid("study", index)
            series = demo_uid("series", index)
            for run in range(2):
                ds = xa_instance(
                    patient,
                    frames=24,
                    transfer_syntax=syntax,
                    study_uid=study,
                    series_uid=series,
                    instance_number=run + 1,
                    seed=index * 10 + run,
                    sop_instance_uid=demo_uid("instance", index, run),
                )
                paths.append(save(ds, folder / f"xa-{index}-{run}.dcm"))
        from dicomnode.ops.worked import datasets  # it draws on this module

        for number, ds in enumerate(datasets()):
            paths.append(save(ds, folder / f"worked-{number}.dcm"))
        yield paths
